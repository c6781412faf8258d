"""Splits whose backward does not join the pieces' gradients (ssmkit/layers/splits.py, ssmkit/ops/_views.py).

split_linear against nn.Linear followed by a split: values and every gradient, by the tolerance rule, also with
pieces left unused and under autocast; split_joined hands back the pieces' buffer itself when they share one.
"""

import copy

import pytest
import torch
from torch import nn

from ssmkit.layers.splits import split_joined, split_linear
from ssmkit.ops._views import empty_like_pieces, joined_view
from tests.rules import assert_by_rule, grads

SIZES = [5, 7, 3]


def make_linear(bias: bool) -> nn.Linear:
    torch.manual_seed(0)
    return nn.Linear(6, sum(SIZES), bias=bias)


def pieces_and_grads(fn, linear, x, used, seeds):
    outs = fn(linear, x)
    kept = [o for o, u in zip(outs, used) if u]
    return outs, grads(tuple(kept), [x, *linear.parameters()], tuple(s for s, u in zip(seeds, used) if u))


def plain(linear, x):
    return linear(x).split(SIZES, dim=-1)


def ours(linear, x):
    return split_linear(linear, x, SIZES)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("used", [(True, True, True), (True, False, True), (False, True, False)])
def test_split_linear_matches_linear_then_split(bias, used):
    linear = make_linear(bias)
    x = torch.randn(2, 9, 6, requires_grad=True)
    gen = torch.Generator().manual_seed(1)
    seeds = [torch.randn(2, 9, s, generator=gen) for s in SIZES]
    exact = copy.deepcopy(linear).double()
    x64 = x.detach().double().requires_grad_()
    got_out, got = pieces_and_grads(ours, linear, x, used, seeds)
    want_out, want = pieces_and_grads(plain, linear, x.detach().clone().requires_grad_(), used, seeds)
    exact_out, exact_g = pieces_and_grads(plain, exact, x64, used, [s.double() for s in seeds])
    assert got_out[0].grad_fn.name() == "_SplitLinearBackward"
    for i, (a, b, c) in enumerate(zip(got_out, want_out, exact_out)):
        assert_by_rule(f"piece {i}", a, b, c)
    names = ["x", "weight", "bias"][: len(got)]
    for name, a, b, c in zip(names, got, want, exact_g, strict=True):
        assert a.dtype == b.dtype, name
        assert_by_rule(f"grad {name}", a, b, c)


def test_split_linear_under_autocast_keeps_linear_dtypes():
    linear = make_linear(True)
    x = torch.randn(3, 4, 6, requires_grad=True)
    seeds = [torch.randn(3, 4, s) for s in SIZES]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got_out, got = pieces_and_grads(ours, linear, x, (True,) * 3, seeds)
        want_out, want = pieces_and_grads(plain, linear, x.detach().clone().requires_grad_(), (True,) * 3, seeds)
    exact = copy.deepcopy(linear).double()
    exact_out, exact_g = pieces_and_grads(plain, exact, x.detach().double().requires_grad_(), (True,) * 3, seeds)
    for a, b, c in zip(got_out, want_out, exact_out):
        assert a.dtype == b.dtype == torch.bfloat16
        assert_by_rule("piece", a, b, c)
    for name, a, b, c in zip(["x", "weight", "bias"], got, want, exact_g, strict=True):
        assert a.dtype == b.dtype == torch.float32, name
        assert_by_rule(f"grad {name}", a, b, c)


def test_split_linear_calls_hooked_or_wrapped_modules():
    """A hooked module (a LoRA adapter's way in) runs its own forward: nothing bypasses it."""
    linear = make_linear(True)
    calls = []
    linear.register_forward_hook(lambda *_: calls.append(1))
    out = split_linear(linear, torch.randn(2, 6, requires_grad=True), SIZES)
    assert calls == [1] and out[0].grad_fn.name() != "_SplitLinearBackward"

    class Scaled(nn.Linear):
        def forward(self, x):
            return 2 * super().forward(x)

    wrapped = Scaled(6, sum(SIZES))
    x = torch.randn(2, 6)
    got = torch.cat(split_linear(wrapped, x, SIZES), dim=-1)
    torch.testing.assert_close(got, 2 * nn.functional.linear(x, wrapped.weight, wrapped.bias))


class _GradsInOneBuffer(torch.autograd.Function):
    """Identity on three pieces whose backward returns their gradients as views of one fresh buffer, as the SSD
    kernels do."""

    @staticmethod
    def forward(ctx, a, b, c):
        return a.clone(), b.clone(), c.clone()

    @staticmethod
    def backward(ctx, ga, gb, gc):
        widths = [g.shape[-1] for g in (ga, gb, gc)]
        out = torch.empty(*ga.shape[:-1], sum(widths)).split(widths, dim=-1)
        assert joined_view(empty_like_pieces(out)) is not None  # what chunk_bwd allocates for such pieces
        for o, g in zip(out, (ga, gb, gc)):
            o.copy_(g)
        _GradsInOneBuffer.buffers = out
        return tuple(out)


def test_split_joined_returns_the_shared_buffer():
    t = torch.randn(2, 4, sum(SIZES), requires_grad=True)
    pieces = split_joined(t, SIZES)
    seeds = [torch.randn(2, 4, s) for s in SIZES]
    # the seeds are separate tensors: the function's backward puts them side by side in one buffer
    merged = _GradsInOneBuffer.apply(*pieces)
    (dt,) = torch.autograd.grad(merged, [t], seeds)
    torch.testing.assert_close(dt, torch.cat(seeds, dim=-1), rtol=0, atol=0)
    assert dt.data_ptr() == _GradsInOneBuffer.buffers[0].data_ptr()


def test_split_joined_joins_separate_and_missing_gradients():
    t = torch.randn(3, sum(SIZES), requires_grad=True)
    a, _, c = split_joined(t, SIZES)
    ga, gc = torch.randn(3, SIZES[0]), torch.randn(3, SIZES[2])
    (dt,) = torch.autograd.grad((a, c), [t], (ga, gc))
    torch.testing.assert_close(dt, torch.cat([ga, torch.zeros(3, SIZES[1]), gc], dim=-1), rtol=0, atol=0)


def test_joined_view_only_for_side_by_side_pieces():
    buf = torch.randn(2, 5, 10)
    a, b, c = buf.split([4, 3, 3], dim=-1)
    assert joined_view([a, b, c]).data_ptr() == buf.data_ptr()
    assert joined_view([a, c, b]) is None  # out of order
    assert joined_view([a, b]) is None  # rows are 10 wide, the pieces 7
    assert joined_view([a, b, None]) is None
    assert joined_view([torch.randn(2, 5, 4), torch.randn(2, 5, 6)]) is None  # two storages
    assert joined_view([t.reshape(1, 10, t.shape[-1]) for t in buf.view(1, 10, 10).split([4, 6], -1)]) is not None


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU")
@pytest.mark.parametrize("kind", ["Mamba", "Mamba unfused", "Mamba2"])
def test_cuda_blocks_with_unjoined_splits(kind):
    """A bf16 block on the Triton kernels, whose in_proj runs through split_linear (and Mamba-2's x, B, C through
    split_joined), against the same block with in_proj called as a module (a forward hook sends it there) and an
    fp64 copy on the torch path: output and every gradient by the rule."""
    from ssmkit.layers.mamba import Mamba
    from ssmkit.layers.mamba2 import Mamba2

    torch.manual_seed(0)
    layer = {"Mamba": Mamba, "Mamba unfused": Mamba, "Mamba2": Mamba2}[kind](256, device="cuda", dtype=torch.bfloat16)
    if kind == "Mamba unfused":
        layer.config.fused = False
    plain_layer = copy.deepcopy(layer)
    plain_layer.in_proj.register_forward_hook(lambda *_: None)
    exact = copy.deepcopy(layer).double()
    exact.config.backend = "torch"
    x = torch.randn(2, 512, 256, device="cuda")
    g = torch.randn_like(x)
    results = []
    for block, dtype in ((layer, torch.bfloat16), (plain_layer, torch.bfloat16), (exact, torch.float64)):
        xin = x.to(dtype).requires_grad_()
        y = block(xin)[0]
        results.append((y, grads((y,), [xin, *block.parameters()], (g.to(dtype),))))
    (y, got), (y_plain, want), (y_exact, want_exact) = results
    assert_by_rule("y", y, y_plain, y_exact)
    names = ["x"] + [n for n, _ in layer.named_parameters()]
    for name, a, b, c in zip(names, got, want, want_exact, strict=True):
        assert_by_rule(f"grad {name}", a, b, c)
