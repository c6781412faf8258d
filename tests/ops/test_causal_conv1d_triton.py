"""Triton causal conv1d (and its decoding step) against the reference by the tolerance rule: outputs, final states
and every gradient.

Without a GPU the kernels run in Triton's interpreter with tiny tiles, so short sequences still cross tile
boundaries (tests/conftest.py sets TRITON_INTERPRET=1 for the session before triton is imported); with one, the same
tests run compiled and the `cuda` tests add the W4 size.
"""

import sys

import pytest
import torch

pytest.importorskip("triton")

from ssmkit.ops import _backend
from ssmkit.ops.causal_conv1d import causal_conv1d, causal_conv1d_grads, causal_conv1d_update
from tests.buffers import nan_empty
from tests.rules import assert_by_rule

HAS_CUDA = torch.cuda.is_available()
DEVICE = "cuda" if HAS_CUDA else "cpu"
NAMES = ("x", "weight", "bias", "initial_state")


pytestmark = pytest.mark.usefixtures("fresh_triton_status")  # tests/conftest.py


@pytest.fixture
def kernels(monkeypatch):
    """Every buffer the kernels write starts as NaN (an unwritten element fails the comparison), and the tiles are
    tiny: a sequence of 19 spans several forward programs (8 rows each, 4 a step) and backward programs (6 rows
    each, 4 a step, so the last step of a span runs past it; the last span, of 1 row, is shorter than the lookahead
    at w >= 3). Channels fit one block (the interpreter's cost grows with the number of programs);
    test_matches_reference splits them."""
    from ssmkit.ops.causal_conv1d import triton_conv, triton_update

    monkeypatch.setattr(triton_conv, "_empty", nan_empty)
    monkeypatch.setattr(triton_update, "_empty", nan_empty)
    for name, value in dict(
        SPAN=8, ROWS=4, BLOCK_D=8, SPAN_BWD=6, ROWS_BWD=4, BLOCK_D_BWD=8
    ).items():  # fmt: skip
        monkeypatch.setattr(triton_conv, name, value)
    monkeypatch.setattr(triton_update, "BLOCK_D", 8)
    return triton_conv


def make_inputs(b, l, d, w, *, bias=True, state=True, seed=0, device=DEVICE):
    """fp64 inputs; the tests cast them to the dtype under test."""
    gen = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=gen, dtype=torch.float64)
    out = {
        "x": r(b, l, d),
        "weight": r(d, w) / w**0.5,
        "bias": r(d) if bias else None,
        "initial_state": r(b, d, w - 1) if state else None,
    }
    return {k: None if v is None else v.to(device) for k, v in out.items()}


def packed(lengths_per_row, device=DEVICE):
    """seq_idx (b, l) from each row's sequence lengths; values repeat (0, 1, 0, ...) so a value can come back."""
    rows = [torch.cat([torch.full((n,), i % 2) for i, n in enumerate(lengths)]) for lengths in lengths_per_row]
    return torch.stack(rows).to(device)


def leaves(inputs, dtype=None):
    return {k: None if v is None else v.to(dtype or v.dtype).requires_grad_() for k, v in inputs.items()}


def cast(inputs, dtype, param_dtype=None):
    """x (or x_t) in dtype; weight, bias and the state in param_dtype (default: dtype too)."""
    xs = ("x", "x_t")
    return {k: None if v is None else v.to(dtype if k in xs else param_dtype or dtype) for k, v in inputs.items()}


def compare(inputs, dtype, activation, seq_idx=None, final=True, grad_y=True, grad_final=True, param_dtype=None):
    """Triton in `dtype` vs the reference in `dtype` vs the reference in fp64: y, final_state, every gradient."""
    base = cast(inputs, dtype, param_dtype)  # the values all three runs see
    fast, same, exact = leaves(base), leaves(base), leaves(base, torch.float64)

    def run(x, backend):
        out = causal_conv1d(**x, activation=activation, return_final_state=final, seq_idx=seq_idx, backend=backend)
        return out if final else (out,)

    outs = run(fast, "triton"), run(same, "reference"), run(exact, "reference")
    for name, f, s, e in zip(("y", "final_state"), *outs):
        assert f.dtype == dtype, name
        if e.numel():
            assert_by_rule(name, f, s, e)
    gen = torch.Generator().manual_seed(1)
    seeds = [torch.randn(o.shape, generator=gen).to(o.device, dtype) for o in outs[0]]
    used = [i for i, on in enumerate((grad_y, grad_final)[: len(seeds)]) if on]
    names = [k for k in NAMES if fast[k] is not None]
    grads = []
    for run_leaves, out, seed_dtype in zip((fast, same, exact), outs, (dtype, dtype, torch.float64)):
        outputs, seed = [out[i] for i in used], [seeds[i].to(seed_dtype) for i in used]
        grads.append(torch.autograd.grad(outputs, [run_leaves[k] for k in names], seed, allow_unused=True))
    for name, f, s, e in zip(names, *grads):
        if e is None:  # final_state alone does not depend on weight and bias: the kernel's gradient is zero
            assert f is None or not f.any(), name
        elif e.numel():
            assert f.dtype == base[name].dtype, name
            assert_by_rule(f"grad {name}", f, s, e)


CASES = {  # (activation, bias, initial_state)
    "plain": (None, False, False),
    "silu_bias_state": ("silu", True, True),
}


@pytest.mark.triton_interpret
@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("w", (2, 3, 4))
@pytest.mark.parametrize("dtype", (torch.float32, torch.bfloat16))
def test_matches_reference(case, w, dtype, kernels, monkeypatch):
    activation, bias, state = CASES[case]
    if w == 4:  # d = 6 in two blocks of channels, the second one partly masked
        for name in ("BLOCK_D", "BLOCK_D_BWD"):
            monkeypatch.setattr(kernels, name, 4)
    compare(make_inputs(2, 19, 6, w, bias=bias, state=state, seed=w), dtype, activation)


@pytest.mark.triton_interpret
@pytest.mark.parametrize(("activation", "bias"), [("silu", False), (None, True)])
def test_bias_and_silu_apart(activation, bias, kernels):
    compare(make_inputs(1, 11, 5, 4, bias=bias, state=True, seed=3), torch.float32, activation)


@pytest.mark.triton_interpret
@pytest.mark.parametrize(
    ("w", "dtype"), [(2, torch.float32), (3, torch.float32), (4, torch.float32), (4, torch.bfloat16)]
)
def test_seq_idx(w, dtype, kernels):
    # row 0: a sequence of 1 at t = 0 (shorter than w-1), a value coming back, a last sequence of 2;
    # row 1: a long first sequence, then a last sequence of 1
    seq_idx = packed([[1, 5, 2, 9, 2], [12, 6, 1]])
    compare(make_inputs(2, 19, 6, w, seed=10 + w), dtype, "silu", seq_idx=seq_idx)


@pytest.mark.triton_interpret
@pytest.mark.parametrize("l", (1, 2, 3))
def test_shorter_than_the_filter(l, kernels):
    """l < w: the output and the final state read initial_state; with seq_idx only while the first sequence lasts."""
    inputs = make_inputs(2, l, 5, 4, seed=l)
    compare(inputs, torch.float32, "silu")
    compare(inputs, torch.float32, "silu", seq_idx=packed([[l], [1] * l]))


@pytest.mark.triton_interpret
@pytest.mark.parametrize("w", (1, 5, 8))
def test_other_widths(w, kernels):
    compare(make_inputs(2, 13, 3, w, seed=w), torch.float32, "silu", seq_idx=packed([[4, 9], [13]]))


@pytest.mark.triton_interpret
@pytest.mark.parametrize(("w", "l"), [(1, 7), (2, 1), (2, 64), (4, 7), (4, 63), (5, 11)])
def test_backward_span_borders(w, l, kernels, monkeypatch):
    """Backward spans of 3 rows, 2 a step (a span is not a whole number of steps, and at w = 5 the lookahead
    crosses two span borders); in row 0 sequences start on, before and after span borders (the last one of 1 at
    l = 7 and 63), row 1 is one sequence; initial_state is read and final_state gets a gradient. Then the
    gradient of initial_state alone, for which the backward launches the first span only."""
    monkeypatch.setattr(kernels, "SPAN_BWD", 3)
    monkeypatch.setattr(kernels, "ROWS_BWD", 2)
    starts = torch.zeros(2, l, dtype=torch.long)
    starts[0, [s for s in (4, 6, 7, 12, 15, 17, 29, 30, 31, 62) if s < l]] = 1
    seq_idx = (starts.cumsum(1) % 2).to(DEVICE)
    inputs = make_inputs(2, l, 5, w, seed=30 + l)
    compare(inputs, torch.float32, "silu", seq_idx=seq_idx)
    if w > 1:
        dh0 = []
        for dtype, backend in ((torch.float32, "triton"), (torch.float32, "reference"), (torch.float64, "reference")):
            args = {k: v.to(dtype) for k, v in inputs.items()}  # only initial_state requires a gradient
            state = args.pop("initial_state").requires_grad_()
            y = causal_conv1d(**args, initial_state=state, activation="silu", seq_idx=seq_idx, backend=backend)
            dh0.append(torch.autograd.grad(y, state, torch.ones_like(y))[0])
        assert_by_rule("grad initial_state alone", *dh0)


@pytest.mark.triton_interpret
def test_float16(kernels):
    compare(make_inputs(1, 21, 6, 4, seed=5), torch.float16, "silu", seq_idx=packed([[7, 14]]))


@pytest.mark.triton_interpret
def test_fp32_parameters_with_bf16_x(kernels):
    """weight, bias and initial_state in fp32 beside bf16 x: each gradient in its own input's dtype."""
    compare(make_inputs(2, 10, 6, 4, seed=6), torch.bfloat16, "silu", param_dtype=torch.float32)


@pytest.mark.triton_interpret
@pytest.mark.parametrize(("final", "grad_y", "grad_final"), [(False, True, False), (True, False, True)])
def test_gradient_through_one_output(final, grad_y, grad_final, kernels):
    """y alone (no final_state), or a loss on final_state alone (autograd hands the backward no dy)."""
    compare(make_inputs(2, 9, 4, 3, seed=8), torch.float32, "silu", final=final, grad_y=grad_y, grad_final=grad_final)


@pytest.mark.triton_interpret
def test_gradients_of_some_inputs(kernels):
    """weight and bias only (no dx, no dh0 stored): their share from the taps that read initial_state too."""
    inputs = {k: v.float() for k, v in make_inputs(2, 11, 6, 4, seed=4).items()}
    weight, bias = (inputs[k].clone().requires_grad_() for k in ("weight", "bias"))
    args = dict(activation="silu", initial_state=inputs["initial_state"])
    y = causal_conv1d(inputs["x"], weight, bias, **args, backend="triton")
    y_ref = causal_conv1d(inputs["x"].double(), weight.double(), bias.double(), **args, backend="reference")
    y_same = causal_conv1d(inputs["x"], weight, bias, **args, backend="reference")
    gy = torch.randn_like(y)
    got = torch.autograd.grad(y, (weight, bias), gy)
    exact = torch.autograd.grad(y_ref, (weight, bias), gy.double())
    same = torch.autograd.grad(y_same, (weight, bias), gy)
    for name, f, s, e in zip(("weight", "bias"), got, same, exact):
        assert_by_rule(f"grad {name}", f, s, e)


@pytest.mark.triton_interpret
@pytest.mark.parametrize("needs", [(True, True, True), (True, False, False), (False, True, True)])
@pytest.mark.parametrize("dtype", (torch.float32, torch.bfloat16))
def test_grads_from_x_alone(needs, dtype, kernels):
    # causal_conv1d_grads runs the backward kernel alone (Mamba's fused block): the gradients autograd gets through
    # the forward, bit for bit (the same kernel), None where not asked for; x a strided slice of a wider tensor
    b, l, d, w = 2, 19, 6, 4
    inputs = make_inputs(b, l, d, w, state=False, seed=13)
    wide = torch.randn(b, l, 2 * d, generator=torch.Generator().manual_seed(6)).to(DEVICE, dtype)
    wide[..., :d] = inputs["x"].to(dtype)
    x = wide[..., :d]
    weight, bias = inputs["weight"].float(), inputs["bias"].float()
    dy = torch.randn(b, l, d, generator=torch.Generator().manual_seed(7)).to(DEVICE, dtype)
    got = causal_conv1d_grads(x, weight, bias, dy, "silu", needs=needs, backend="triton")
    leaves = [t.clone().requires_grad_() for t in (x, weight, bias)]
    y = causal_conv1d(*leaves, activation="silu", backend="triton")
    want = torch.autograd.grad(y, leaves, dy)
    for name, need, g, ref in zip(("dx", "dweight", "dbias"), needs, got, want):
        assert (g is not None) == need, name
        if need:
            assert g.dtype == ref.dtype and torch.equal(g, ref), name
    with pytest.raises(ValueError, match=r"dy: expected shape \(b, l, d\), x's shape"):
        causal_conv1d_grads(x, weight, bias, dy[:, :-1], "silu", backend="triton")


@pytest.mark.triton_interpret
def test_no_grad_and_non_contiguous_inputs(kernels):
    inputs = make_inputs(2, 10, 6, 4, seed=9)
    x = inputs["x"].float().transpose(1, 2).contiguous().transpose(1, 2)  # (b, l, d) view with channels strided
    weight = inputs["weight"].float().t().contiguous().t()
    state = inputs["initial_state"].float().transpose(1, 2).contiguous().transpose(1, 2)
    assert not x.is_contiguous() and not weight.is_contiguous() and not state.is_contiguous()
    args = dict(bias=inputs["bias"].float(), activation="silu", initial_state=state, return_final_state=True)
    y, final = causal_conv1d(x, weight, **args, backend="triton")
    y_ref, final_ref = causal_conv1d(x.double(), weight.double(), **args, backend="reference")
    y_same, final_same = causal_conv1d(x, weight, **args, backend="reference")
    assert_by_rule("y", y, y_same, y_ref)
    assert_by_rule("final_state", final, final_same, final_ref)


@pytest.mark.triton_interpret
@pytest.mark.parametrize("w", (2, 4))
def test_strided_rows_read_in_place(w, kernels):
    # x as a slice of a wider projection (Mamba's xz[..., :d], Mamba-2's xBC): the kernels read it with its row
    # stride; values and gradients equal those from a contiguous copy, bit for bit (the same arithmetic)
    b, l, d = 2, 23, 6
    inputs = make_inputs(b, l, d, w, bias=True, state=True, seed=12)
    wide = torch.randn(b, l, 2 * d + 3, generator=torch.Generator().manual_seed(5)).to(DEVICE)
    wide[..., 1 : d + 1] = inputs["x"].float()
    seq_idx = packed([[9, 14], [23]])
    args = dict(bias=inputs["bias"].float(), activation="silu", initial_state=inputs["initial_state"].float())
    seeds = [torch.randn(b, l, d, device=DEVICE), torch.randn(b, d, w - 1, device=DEVICE)]
    got = []
    for strided in (True, False):
        leaf = wide.clone().requires_grad_()
        x = leaf[..., 1 : d + 1] if strided else leaf[..., 1 : d + 1].contiguous()
        assert x.is_contiguous() != strided
        weight = inputs["weight"].float().requires_grad_()
        y, final = causal_conv1d(x, weight, **args, return_final_state=True, seq_idx=seq_idx, backend="triton")
        dleaf, dweight = torch.autograd.grad((y, final), (leaf, weight), seeds)
        got.append((y, final, dleaf, dweight))
    for name, a, c in zip(("y", "final_state", "dx", "dweight"), *got):
        assert torch.equal(a, c), name


@pytest.mark.triton_interpret
def test_dispatch_and_clear_errors(kernels):
    inputs = {k: v.float() for k, v in make_inputs(1, 5, 4, 4, seed=2).items()}
    assert _backend.resolve_backend("causal_conv1d", "auto", torch.device(DEVICE)) == (
        "triton" if HAS_CUDA else "torch"
    )
    with pytest.raises(ValueError, match=r"backend='triton' for causal_conv1d: x: .*float64"):
        causal_conv1d(**{k: v.double() for k, v in inputs.items()}, backend="triton")
    wide = dict(inputs, weight=torch.randn(4, 9, device=DEVICE), initial_state=None)
    with pytest.raises(ValueError, match=r"weight: expects a width w <= 8, got w = 9"):
        causal_conv1d(**wide, backend="triton")


@pytest.mark.skipif(HAS_CUDA, reason="CUDA tensors are accepted there")
def test_cpu_tensors_without_interpreter_raise(without_interpreter):
    inputs = {k: v.float() for k, v in make_inputs(1, 5, 4, 4, seed=2).items()}
    for call in (
        lambda: causal_conv1d(**inputs, backend="triton"),
        lambda: causal_conv1d_update(inputs["x"][:, 0], inputs["initial_state"], inputs["weight"], backend="triton"),
    ):
        with pytest.raises(ValueError, match=r"backend='triton' for causal_conv1d.* cannot run: no CUDA"):
            call()


@pytest.mark.triton_interpret
def test_auto_falls_back_with_a_warning(monkeypatch):
    """ "auto" on a device where it picks Triton, with a call the kernels refuse: the torch path, and a warning."""
    op = sys.modules["ssmkit.ops.causal_conv1d"]  # the package (ssmkit.ops re-exports a function of that name)

    monkeypatch.setattr(op, "resolve_backend", lambda name, backend, device: "triton")
    _backend._warn_fallback.cache_clear()
    inputs = make_inputs(1, 6, 3, 9, seed=7)  # float64 and w = 9
    with pytest.warns(UserWarning, match=r"causal_conv1d: .*float64.*running the torch path"):
        y = causal_conv1d(**inputs, activation="silu")
    expected = causal_conv1d(**inputs, activation="silu", backend="reference")  # both in fp64
    assert_by_rule("y", y, expected, expected)
    with pytest.warns(UserWarning, match=r"causal_conv1d_update: .*float64"):
        causal_conv1d_update(**update_args(inputs))
    _backend._warn_fallback.cache_clear()


def update_args(inputs):
    """The arguments of causal_conv1d_update for the first token of `inputs`."""
    return dict(x_t=inputs["x"][:, 0], conv_state=inputs["initial_state"], weight=inputs["weight"], bias=inputs["bias"])


@pytest.mark.triton_interpret
@pytest.mark.parametrize("w", (1, 2, 3, 4))
@pytest.mark.parametrize("dtype", (torch.float32, torch.bfloat16))
@pytest.mark.parametrize(("activation", "bias"), [(None, True), ("silu", True), ("silu", False)])
def test_update_matches_reference(w, dtype, activation, bias, kernels):
    inputs = make_inputs(3, 1, 6, w, bias=bias, seed=w)
    # bf16 tokens with fp32 weight, bias and state, as a decoding cache may hold them
    base = cast(update_args(inputs), dtype, torch.float32 if dtype == torch.bfloat16 else None)
    fast, same, exact = leaves(base), leaves(base), leaves(base, torch.float64)
    outs = [causal_conv1d_update(**a, activation=activation, backend=be) for a, be in
            ((fast, "triton"), (same, "reference"), (exact, "reference"))]  # fmt: skip
    for name, f, s, e in zip(("y_t", "state"), *outs):
        assert f.dtype == s.dtype, name
        if e.numel():
            assert_by_rule(name, f, s, e)
    seeds = [torch.randn_like(o) for o in outs[0]]
    names = [k for k in base if base[k] is not None]
    grads = [
        torch.autograd.grad(out, [a[k] for k in names], [s.to(out[0].dtype) for s in seeds], allow_unused=True)
        for a, out in zip((fast, same, exact), outs)
    ]
    for name, f, s, e in zip(names, *grads):
        if e is not None and e.numel():
            assert f.dtype == base[name].dtype, name
            assert_by_rule(f"grad {name}", f, s, e)


@pytest.mark.triton_interpret
@pytest.mark.parametrize("w", (2, 4))
@pytest.mark.parametrize("dtype", (torch.float32, torch.bfloat16))
def test_update_loop_equals_forward(w, dtype, kernels):
    """Token by token through the Triton step == the full forward (reference and Triton), state included."""
    inputs = make_inputs(2, 9, 5, w, seed=20 + w)
    data = {k: v.to(dtype) for k, v in inputs.items()}
    state, ys = data["initial_state"], []
    with torch.no_grad():
        for t in range(data["x"].shape[1]):
            y_t, state = causal_conv1d_update(
                data["x"][:, t], state, data["weight"], data["bias"], "silu", backend="triton"
            )
            ys.append(y_t)
        stepped = torch.stack(ys, dim=1), state
        args = dict(activation="silu", return_final_state=True)
        same = causal_conv1d(**data, **args, backend="reference")
        exact = causal_conv1d(**{k: v.double() for k, v in data.items()}, **args, backend="reference")
        full = causal_conv1d(**data, **args, backend="triton")
    for name, f, s, e, t in zip(("y", "final_state"), stepped, same, exact, full):
        assert_by_rule(name, f, s, e)
        assert_by_rule(f"{name} (triton forward)", t, s, e)


# the W4 workload and other full sizes, compiled on the GPU with the module's own tile sizes
@pytest.mark.cuda
@pytest.mark.skipif(not HAS_CUDA, reason="needs an NVIDIA GPU")
def test_w4_size_cuda():
    compare(make_inputs(16, 4096, 4096, 4, seed=0), torch.bfloat16, "silu")


@pytest.mark.cuda
@pytest.mark.skipif(not HAS_CUDA, reason="needs an NVIDIA GPU")
@pytest.mark.parametrize(
    ("b", "l", "d", "w", "dtype"),
    [(4, 4096, 1536, 4, torch.bfloat16), (2, 4099, 1000, 3, torch.float32), (3, 777, 2048, 2, torch.float16)],
)
def test_full_size_packed_cuda(b, l, d, w, dtype):
    gen = torch.Generator().manual_seed(l)
    starts = torch.rand(b, l, generator=gen) < 1 / 300  # sequences of a few hundred tokens...
    starts[:, [1, 3, 4, l - 1]] = True  # ...and of 1, 2 and 1 at the start, 1 at the end
    seq_idx = (torch.cumsum(starts.long(), dim=1) % 2).to(DEVICE)  # values come back: a change is what counts
    compare(make_inputs(b, l, d, w, seed=1), dtype, "silu", seq_idx=seq_idx)


@pytest.mark.cuda
@pytest.mark.skipif(not HAS_CUDA, reason="needs an NVIDIA GPU")
@pytest.mark.parametrize("b", (1, 64))
def test_update_full_size_cuda(b):
    inputs = make_inputs(b, 1, 8192, 4, seed=b)
    base = {k: v.to(torch.bfloat16) for k, v in update_args(inputs).items()}
    with torch.no_grad():
        fast = causal_conv1d_update(**base, activation="silu", backend="triton")
        same = causal_conv1d_update(**base, activation="silu", backend="reference")
        exact = causal_conv1d_update(**{k: v.double() for k, v in base.items()}, activation="silu", backend="reference")
    for name, f, s, e in zip(("y_t", "state"), fast, same, exact):
        assert_by_rule(name, f, s, e)
