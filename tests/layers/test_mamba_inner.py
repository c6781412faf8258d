"""The fused Mamba path (ssmkit/layers/mamba_inner.py): same values and gradients as the plain ops, less kept.

Fused (fp32) is checked against the unfused layer in fp32 and an fp64 copy by the tolerance rule; the bytes kept for
backward are counted with saved_tensors_hooks (unique storages that are not parameters). The last two tests cover
the steps' state update for fp64 layers, whose fp32 state is copied into rather than written in place.
"""

import copy

import pytest
import torch

from ssmkit.layers.mamba import Mamba, MambaConfig
from ssmkit.layers.mamba2 import Mamba2, Mamba2Config
from tests.layers.mixer_checks import check_step_equals_forward
from tests.rules import assert_by_rule, grads
from tests.scan_chunks import one_pass_forward_chunked_backward


def make_layer(d_model=16, **kw):
    torch.manual_seed(0)
    layer = Mamba(d_model, MambaConfig(d_state=4, **kw))
    with torch.no_grad():  # a trained-looking layer: every parameter away from its initial value
        for p in layer.parameters():
            p.add_(0.1 * torch.randn_like(p))
        layer.dt_proj.bias.add_(2.0)
    return layer


def unfused(layer):
    other = copy.deepcopy(layer)
    other.config.fused = False
    return other


def compare(layer, x, autocast=None):
    """Fused `layer` vs its unfused copy (same dtype) vs an unfused fp64 copy: output and every gradient."""
    same, exact = unfused(layer), unfused(layer).double()
    if exact.config.backend == "triton":  # the kernels take no fp64
        exact.config.backend = "torch"
    xs, x64 = x.detach().clone().requires_grad_(x.requires_grad), x.detach().double().requires_grad_(x.requires_grad)
    ctx = torch.autocast("cpu", dtype=autocast) if autocast else torch.autocast("cpu", enabled=False)
    with ctx:
        y, _ = layer(x)
        y_same, _ = same(xs)
    y_exact, _ = exact(x64)
    assert y.grad_fn.name() == "MambaInnerFnBackward"
    assert y_same.grad_fn.name() != "MambaInnerFnBackward"
    assert_by_rule("y", y, y_same, y_exact)

    names = ["x"] + [n for n, _ in layer.named_parameters()]
    g = torch.randn_like(y)
    inputs = [x if x.requires_grad else None, *layer.parameters()]
    got = grads((y,), [t if t is None or t.requires_grad else None for t in inputs], (g,))
    same_in = [xs if x.requires_grad else None, *same.parameters()]
    want_same = grads((y_same,), [t if t is None or t.requires_grad else None for t in same_in], (g,))
    exact_in = [x64 if x.requires_grad else None, *exact.parameters()]
    want = grads((y_exact,), [t if t is None or t.requires_grad else None for t in exact_in], (g.double(),))
    for n, a, b, c in zip(names, got, want_same, want, strict=True):
        if c is None:
            assert a is None and b is None, n
            continue
        assert_by_rule(f"d{n}", a, b, c)


@pytest.mark.parametrize("length", [1, 7, 63, 257])
def test_fused_matches_unfused(length):
    compare(make_layer(), torch.randn(2, length, 16, requires_grad=True))


def test_fused_with_biases_and_no_conv_bias():
    compare(make_layer(bias=True, conv_bias=False), torch.randn(2, 33, 16, requires_grad=True))


def test_fused_with_frozen_parameters_and_input_without_grad():
    layer = make_layer(bias=True)
    for p in (*layer.in_proj.parameters(), layer.A_log, layer.out_proj.bias):
        p.requires_grad_(False)
    compare(layer, torch.randn(2, 20, 16))


def test_fused_under_autocast():
    compare(make_layer(bias=True), torch.randn(2, 19, 16, requires_grad=True), autocast=torch.bfloat16)


def test_unfused_path_where_fused_does_not_apply():
    layer = make_layer()
    x = torch.randn(1, 10, 16, requires_grad=True)
    with torch.no_grad():
        assert layer(x)[0].grad_fn is None
    state = layer.init_state(1)
    assert layer(x, state)[0].grad_fn.name() != "MambaInnerFnBackward"
    seq_idx = torch.zeros(1, 10, dtype=torch.long)
    assert layer(x, seq_idx=seq_idx)[0].grad_fn.name() != "MambaInnerFnBackward"
    assert unfused(layer)(x)[0].grad_fn.name() != "MambaInnerFnBackward"


def test_fused_backward_frees_the_scan_output_before_the_scan_backward(monkeypatch):
    """y (b, l, E) goes once out_proj's gradients are taken: the scan's backward runs without it."""
    import weakref

    from ssmkit.layers import mamba_inner

    seen = []

    def watched(xc, *args, **kw):
        y, final = branch(xc, *args, **kw)
        if torch.is_grad_enabled():  # the recompute inside backward
            ref = weakref.ref(y)
            xc.register_hook(lambda g: seen.append(ref() is None))  # runs during the scan's backward
        return y, final

    branch = mamba_inner.scan_branch
    monkeypatch.setattr(mamba_inner, "scan_branch", watched)
    layer = make_layer()
    layer(torch.randn(1, 9, 16, requires_grad=True))[0].sum().backward()
    assert seen == [True]


def saved_activation_bytes(layer, x) -> int:
    """Bytes of the unique storages autograd keeps for backward, parameters left out."""
    params = {p.untyped_storage().data_ptr() for p in layer.parameters()}
    storages = {}

    def pack(t):
        s = t.untyped_storage()
        if s.data_ptr() not in params:
            storages[s.data_ptr()] = s.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        y, _ = layer(x)
    y.sum().backward()  # the kept graph is a working one
    return sum(storages.values())


def check_fused_keeps_less(backend, b, l, d_model):
    layer = Mamba(d_model, MambaConfig(backend=backend))  # d_state 16, expand 2
    x = torch.randn(b, l, d_model, requires_grad=True)
    fused = saved_activation_bytes(layer, x)
    plain = saved_activation_bytes(unfused(layer), x)
    e, s, tokens = layer.d_inner, x.element_size(), b * l
    # fused: in_proj's input u (d_model) and the in_proj output xz (2 E) per token, nothing else
    assert fused == tokens * (d_model + 2 * e) * s
    # unfused keeps at least those plus, per token, the conv output (x_proj's input), a dt-sized scan input and the
    # scan output (out_proj's input): 3 E
    assert plain - fused >= tokens * 3 * e * s, (plain, fused)
    return fused


def test_fused_keeps_fewer_bytes():
    assert check_fused_keeps_less("torch", 1, 256, 64) == 256 * 1280  # 1,280 B/token (fp32, d_model 64)


@pytest.mark.triton_interpret
def test_fused_triton_matches_and_keeps_fewer_bytes(fresh_triton_status):
    pytest.importorskip("triton")
    compare(make_layer(backend="triton"), torch.randn(1, 20, 16, requires_grad=True))
    check_fused_keeps_less("triton", 1, 32, 16)


def test_mamba_step_equals_forward_fp64():
    layer = make_layer().double()  # its fp32 state cannot take the step's fp64 state in place: copied instead
    check_step_equals_forward(layer, torch.randn(2, 9, 16, dtype=torch.float64))


def test_mamba2_step_equals_forward_fp64():
    layer = Mamba2(16, Mamba2Config(d_state=4, headdim=8, chunk_size=4)).double()
    check_step_equals_forward(layer, torch.randn(2, 9, 16, dtype=torch.float64))


@pytest.mark.triton_interpret
def test_fused_triton_backward_takes_the_scan_pieces_from_the_recompute(fresh_triton_status, monkeypatch):
    """The fused backward tells the scan's recompute y's gradient: with the forward in one pass and the backward in
    chunks, the recompute forms the chunks' pieces and the backward's own local pass does not run; the values and
    gradients are those of the unfused layer."""
    pytest.importorskip("triton")
    from ssmkit.ops.selective_scan import triton_scan

    launches = one_pass_forward_chunked_backward(triton_scan, monkeypatch)
    layer, x = make_layer(backend="triton"), torch.randn(1, 40, 16, requires_grad=True)
    layer(x)[0].sum().backward()
    assert launches == []
    compare(layer, x)
