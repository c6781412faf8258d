"""causal_conv1d: torch path == reference (outputs, final states, gradients), packing, decoding step."""

from __future__ import annotations

import itertools

import pytest
import torch

from ssmkit.ops.causal_conv1d import causal_conv1d, causal_conv1d_grads, causal_conv1d_update
from tests.rules import assert_by_rule, grads

LENGTHS = (1, 2, 7, 63, 257)
# (activation, bias, initial_state, seq_idx)
CASES = {
    "plain": (None, False, False, False),
    "silu_bias": ("silu", True, False, False),
    "state": (None, False, True, False),
    "silu_bias_state": ("silu", True, True, False),
    "seq_idx": ("silu", True, True, True),
}


def make_inputs(b: int, l: int, d: int, w: int, bias: bool, state: bool, packed: bool, seed: int) -> dict:
    gen = torch.Generator().manual_seed(seed)
    out = {
        "x": torch.randn(b, l, d, generator=gen),
        "weight": torch.randn(d, w, generator=gen) / w**0.5,
        "bias": torch.randn(d, generator=gen) if bias else None,
        "initial_state": torch.randn(b, d, w - 1, generator=gen) if state else None,
        "seq_idx": None,
    }
    if packed:
        # sequence starts at random places, several of length 1, plus a value that comes back (0, 1, 0)
        starts = torch.rand(b, l, generator=gen) < 0.3
        out["seq_idx"] = torch.cumsum(starts.long(), dim=1) % 3
    return out


def cast(inputs: dict, dtype: torch.dtype) -> dict:
    return {k: v if v is None or k == "seq_idx" else v.detach().to(dtype).requires_grad_() for k, v in inputs.items()}


def run(inputs: dict, activation: str | None, backend: str) -> tuple[torch.Tensor, torch.Tensor]:
    return causal_conv1d(**inputs, activation=activation, return_final_state=True, backend=backend)


def assert_torch_matches_reference(base: dict, activation: str | None) -> None:
    """Torch path on fp32 vs the reference on fp64 copies; outputs, final states and every gradient."""
    fast, ref32, ref64 = cast(base, torch.float32), cast(base, torch.float32), cast(base, torch.float64)
    fast_out = run(fast, activation, "torch")
    ref32_out, ref64_out = run(ref32, activation, "reference"), run(ref64, activation, "reference")
    for name, f, r32, r64 in zip(("y", "final_state"), fast_out, ref32_out, ref64_out):
        if f.numel():  # w = 1 has an empty state
            assert_by_rule(name, f, r32, r64)
    gen = torch.Generator().manual_seed(7)
    seeds = tuple(torch.randn(o.shape, generator=gen) for o in fast_out)
    names = ["x", "weight", "bias", "initial_state"]
    g_fast = grads(fast_out, [fast[n] for n in names], seeds)
    g_32 = grads(ref32_out, [ref32[n] for n in names], seeds)
    g_64 = grads(ref64_out, [ref64[n] for n in names], tuple(s.double() for s in seeds))
    for name, f, r32, r64 in zip(names, g_fast, g_32, g_64):
        if f is not None and f.numel():
            assert_by_rule(f"grad {name}", f, r32, r64)


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("l", LENGTHS)
@pytest.mark.parametrize("w", (2, 4))
def test_torch_matches_reference(case: str, l: int, w: int):
    activation, bias, state, packed = CASES[case]
    assert_torch_matches_reference(make_inputs(2, l, 6, w, bias, state, packed, seed=l * 10 + w), activation)


@pytest.mark.parametrize("w", (1, 3, 5))
def test_other_widths(w: int):
    assert_torch_matches_reference(make_inputs(2, 9, 3, w, True, True, True, seed=w), "silu")


def separate_runs(inputs: dict, activation: str | None, backend: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Each packed sequence run on its own: the first of a row from initial_state, the others from zeros."""
    x, seq_idx, init = inputs["x"], inputs["seq_idx"], inputs["initial_state"]
    ys, finals = [], []
    for i in range(x.shape[0]):
        change = torch.nonzero(seq_idx[i, 1:] != seq_idx[i, :-1]).flatten() + 1
        bounds = [0, *change.tolist(), x.shape[1]]
        pieces = []
        for j, (s, e) in enumerate(itertools.pairwise(bounds)):
            state = init[i : i + 1] if j == 0 else torch.zeros_like(init[i : i + 1])
            y, final = causal_conv1d(
                x[i : i + 1, s:e], inputs["weight"], inputs["bias"], activation, state, True, backend=backend
            )
            pieces.append(y)
        ys.append(torch.cat(pieces, dim=1))
        finals.append(final)
    return torch.cat(ys), torch.cat(finals)


@pytest.mark.parametrize("backend", ("torch", "reference"))
def test_packed_equals_separate(backend: str):
    base = make_inputs(3, 40, 4, 4, True, True, True, seed=3)
    base["seq_idx"][0, :3] = torch.tensor([5, 6, 6])  # a sequence of length 1 at the start
    fast, ref32, ref64 = cast(base, torch.float32), cast(base, torch.float32), cast(base, torch.float64)
    packed = run(fast, "silu", backend)
    ref32_out, ref64_out = separate_runs(ref32, "silu", "reference"), separate_runs(ref64, "silu", "reference")
    for name, f, r32, r64 in zip(("y", "final_state"), packed, ref32_out, ref64_out):
        assert_by_rule(name, f, r32, r64)


@pytest.mark.parametrize("l", (1, 7, 63))
@pytest.mark.parametrize("w", (2, 4))
def test_update_loop_equals_forward(l: int, w: int):
    base = make_inputs(2, l, 5, w, True, True, False, seed=l + w)
    fast, ref32, ref64 = cast(base, torch.float32), cast(base, torch.float32), cast(base, torch.float64)
    state = fast["initial_state"]
    ys = []
    for t in range(l):
        y_t, state = causal_conv1d_update(fast["x"][:, t], state, fast["weight"], fast["bias"], "silu")
        ys.append(y_t)
    stepped = (torch.stack(ys, dim=1), state)
    ref32_out, ref64_out = run(ref32, "silu", "reference"), run(ref64, "silu", "reference")
    for name, f, r32, r64 in zip(("y", "final_state"), stepped, ref32_out, ref64_out):
        assert_by_rule(name, f, r32, r64)


@pytest.mark.parametrize("backend", ["reference", "torch"])
def test_grads_from_x_alone(backend: str):
    # causal_conv1d_grads off the kernels: the forward with a graph, differentiated; no bias -> no dbias
    gen = torch.Generator().manual_seed(3)
    x, weight, dy = torch.randn(2, 9, 5, generator=gen), torch.randn(5, 4, generator=gen), torch.randn(2, 9, 5)
    dx, dweight, dbias = causal_conv1d_grads(x, weight, None, dy, "silu", needs=(True, True, True), backend=backend)
    leaves = [x.clone().requires_grad_(), weight.clone().requires_grad_()]
    want = torch.autograd.grad(causal_conv1d(*leaves, activation="silu", backend=backend), leaves, dy)
    assert dbias is None
    assert torch.equal(dx, want[0]) and torch.equal(dweight, want[1])
    assert causal_conv1d_grads(x, weight, None, dy, needs=(False, False, True), backend=backend) == (None,) * 3


def test_final_state_keeps_initial_entries_for_short_inputs():
    x = torch.randn(1, 1, 2)
    init = torch.randn(1, 2, 3)
    _, final = causal_conv1d(x, torch.randn(2, 4), initial_state=init, return_final_state=True)
    assert torch.equal(final, torch.cat([init[..., 1:], x.transpose(1, 2)], dim=-1))


def test_dtype_follows_x():
    x = torch.randn(2, 5, 3, dtype=torch.bfloat16)
    y, final = causal_conv1d(x, torch.randn(3, 4), torch.randn(3), "silu", return_final_state=True)
    assert y.dtype == final.dtype == torch.bfloat16


@pytest.mark.parametrize(
    ("kwargs", "error", "words"),
    [
        ({"x": torch.randn(5, 3)}, ValueError, ["x", "(b, l, d)", "(5, 3)"]),
        ({"x": torch.randn(2, 0, 3)}, ValueError, ["x", "l >= 1"]),
        ({"x": torch.ones(2, 5, 3, dtype=torch.long)}, TypeError, ["x", "int64"]),
        ({"weight": torch.randn(4, 4)}, ValueError, ["weight", "(d, w)", "(4, 4)"]),
        ({"weight": torch.randn(3)}, ValueError, ["weight", "(d, w)"]),
        ({"bias": torch.randn(4)}, ValueError, ["bias", "(d,)"]),
        ({"initial_state": torch.randn(2, 3, 4)}, ValueError, ["initial_state", "(b, d, w-1)", "(2, 3, 3)"]),
        ({"seq_idx": torch.zeros(2, 5)}, TypeError, ["seq_idx", "integer"]),
        ({"seq_idx": torch.zeros(2, 4, dtype=torch.long)}, ValueError, ["seq_idx", "(b, l)"]),
        ({"activation": "relu"}, ValueError, ["activation", "relu"]),
        ({"backend": "cuda"}, ValueError, ["backend", "cuda"]),
    ],
)
def test_bad_inputs_raise(kwargs: dict, error: type, words: list[str]):
    args = {"x": torch.randn(2, 5, 3), "weight": torch.randn(3, 4)} | kwargs
    with pytest.raises(error) as info:
        causal_conv1d(**args)
    for word in words:
        assert word in str(info.value)


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA tensors are accepted there")
def test_triton_backend_on_cpu_tensors_raises(without_interpreter):
    with pytest.raises(ValueError, match="triton"):
        causal_conv1d(torch.randn(2, 5, 3), torch.randn(3, 4), backend="triton")


def test_update_bad_inputs_raise():
    with pytest.raises(ValueError, match="conv_state"):
        causal_conv1d_update(torch.randn(2, 3), torch.randn(2, 3, 2), torch.randn(3, 4))
    with pytest.raises(ValueError, match="x_t"):
        causal_conv1d_update(torch.randn(2, 1, 3), torch.randn(2, 3, 3), torch.randn(3, 4))
