"""S4D ops: kernel fast == reference, convolution mode == recurrent mode, packing, steps, inits, bad inputs."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from ssmkit.ops import s4d as s4d_ops
from ssmkit.ops.s4d import (
    discretize_zoh,
    fft_conv,
    hippo_legs,
    s4d_conv,
    s4d_final_state,
    s4d_kernel,
    s4d_legs_init,
    s4d_lin_init,
    s4d_real_init,
    s4d_scan,
    s4d_state_output,
    s4d_step,
)
from tests.rules import assert_by_rule, grads

INITS = {"legs": s4d_legs_init, "lin": s4d_lin_init, "real": s4d_real_init}
LENGTHS = (1, 7, 63, 257)


def real_view(t: torch.Tensor) -> torch.Tensor:
    return torch.view_as_real(t) if t.is_complex() else t


def to_precision(t: torch.Tensor | None, wide: bool) -> torch.Tensor | None:
    if t is None:
        return None
    if t.is_complex():
        return t.detach().to(torch.complex128 if wide else torch.complex64).requires_grad_()
    if t.dtype.is_floating_point:
        return t.detach().to(torch.float64 if wide else torch.float32).requires_grad_()
    return t


def make_params(init: str, d: int, N: int, seed: int) -> dict:
    gen = torch.Generator().manual_seed(seed)
    A, B = INITS[init](d, N, dtype=torch.complex128)
    # perturb A and B so channels differ, as after training
    A = torch.complex(A.real * (1 + 0.2 * torch.rand(A.shape, generator=gen, dtype=torch.float64)), A.imag)
    B = B * (1 + 0.1 * torch.randn(B.shape, generator=gen, dtype=torch.complex128))
    log_dt = torch.rand(d, generator=gen, dtype=torch.float64) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3)
    return {
        "dt": torch.exp(log_dt),
        "A": A,
        "B": B,
        "C": torch.randn(d, N // 2, generator=gen, dtype=torch.complex128),
    }


def make_sequence(b: int, l: int, d: int, N: int, state: bool, packed: bool, seed: int) -> dict:
    gen = torch.Generator().manual_seed(seed + 1)
    out = {
        "u": torch.randn(b, l, d, generator=gen, dtype=torch.float64),
        "D": torch.randn(d, generator=gen, dtype=torch.float64),
        "initial_state": torch.randn(b, d, N // 2, generator=gen, dtype=torch.complex128) if state else None,
        "seq_idx": None,
    }
    if packed:
        out["seq_idx"] = torch.cumsum((torch.rand(b, l, generator=gen) < 0.15).long(), dim=1) % 2
    return out


def three_copies(inputs: dict) -> tuple[dict, dict, dict]:
    """(fast fp32, reference fp32, reference fp64) copies, each a fresh leaf that requires grad. The fp64 copy is
    made from the fp32 values, so that it is exact for the inputs the fp32 paths see."""
    narrow = {k: to_precision(v, False) for k, v in inputs.items()}
    return tuple({k: to_precision(v, wide) for k, v in narrow.items()} for wide in (False, False, True))


def assert_all_by_rule(names, fast_out, ref32_out, ref64_out, fast, ref32, ref64, wrt) -> None:
    """Outputs and the gradients of every input in wrt."""
    for name, f, r32, r64 in zip(names, fast_out, ref32_out, ref64_out):
        assert_by_rule(name, real_view(f), real_view(r32), real_view(r64))
    gen = torch.Generator().manual_seed(11)
    seeds = tuple(torch.randn(o.shape, generator=gen, dtype=o.dtype) for o in fast_out)
    seeds64 = tuple(s.to(o.dtype) for s, o in zip(seeds, ref64_out))
    g_fast = grads(tuple(fast_out), [fast[n] for n in wrt], seeds)
    g_32 = grads(tuple(ref32_out), [ref32[n] for n in wrt], seeds)
    g_64 = grads(tuple(ref64_out), [ref64[n] for n in wrt], seeds64)
    for name, f, r32, r64 in zip(wrt, g_fast, g_32, g_64):
        if f is not None:
            assert_by_rule(f"grad {name}", real_view(f), real_view(r32), real_view(r64))


@pytest.fixture(params=["default", "tiny"])
def block(request, monkeypatch) -> None:
    """Run with the default Vandermonde block and with one so small that every product takes several chunks."""
    if request.param == "tiny":
        monkeypatch.setattr(s4d_ops.fast, "BLOCK_ELEMENTS", 40)


@pytest.mark.parametrize("init", sorted(INITS))
@pytest.mark.parametrize("l", LENGTHS)
def test_kernel_torch_matches_reference(init: str, l: int, block):
    fast, ref32, ref64 = three_copies(make_params(init, 3, 8, seed=l))
    outs = [(s4d_kernel(**p, length=l, backend=be),) for p, be in ((fast, "torch"), (ref32, "reference"))]
    outs.append((s4d_kernel(**ref64, length=l, backend="reference"),))
    assert_all_by_rule(["K"], *outs, fast, ref32, ref64, wrt=["dt", "A", "B", "C"])


CONV_CASES = {"plain": (False, False), "state": (True, False), "seq_idx": (False, True), "state_seq_idx": (True, True)}


@pytest.mark.parametrize("init", sorted(INITS))
@pytest.mark.parametrize("l", LENGTHS)
@pytest.mark.parametrize("case", sorted(CONV_CASES))
def test_convolution_mode_matches_recurrence(init: str, l: int, case: str, block):
    state, packed = CONV_CASES[case]
    inputs = make_params(init, 3, 6, seed=l) | make_sequence(2, l, 3, 6, state, packed, seed=l)
    fast, ref32, ref64 = three_copies(inputs)
    fast_out = s4d_conv(**fast, return_final_state=True, backend="torch")
    ref32_out = s4d_scan(**ref32, return_final_state=True)
    ref64_out = s4d_scan(**ref64, return_final_state=True)
    wrt = ["u", "dt", "A", "B", "C", "D"] + (["initial_state"] if state else [])
    assert_all_by_rule(["y", "final_state"], fast_out, ref32_out, ref64_out, fast, ref32, ref64, wrt)


def direct_causal_conv(u: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """y_t = sum_{s <= t} K[:, t-s] u_s, the sum written out over lags."""
    y = torch.zeros_like(u)
    for lag in range(u.shape[1]):
        y[:, lag:] += K[:, lag] * u[:, : u.shape[1] - lag]
    return y


@pytest.mark.parametrize("l", LENGTHS)
def test_fft_conv_matches_direct_sum(l: int):
    gen = torch.Generator().manual_seed(l)
    base = {"u": torch.randn(2, l, 4, generator=gen), "K": torch.randn(4, l, generator=gen) / l**0.5}
    D = torch.randn(4, generator=gen)
    fast, ref32, ref64 = three_copies(base)
    outs = [(fft_conv(fast["u"], fast["K"], D),)]
    outs += [(direct_causal_conv(r["u"], r["K"]) + D.to(r["u"].dtype) * r["u"],) for r in (ref32, ref64)]
    assert_all_by_rule(["y"], *outs, fast, ref32, ref64, wrt=["u", "K"])


def separate_scans(inputs: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Each packed sequence on its own: the first of a row from initial_state, the others from zeros."""
    u, seq_idx, h0 = inputs["u"], inputs["seq_idx"], inputs["initial_state"]
    params = {k: inputs[k] for k in ("dt", "A", "B", "C", "D")}
    ys, finals = [], []
    for i in range(u.shape[0]):
        bounds = [0, *(torch.nonzero(seq_idx[i, 1:] != seq_idx[i, :-1]).flatten() + 1).tolist(), u.shape[1]]
        pieces = []
        for j, (s, e) in enumerate(itertools.pairwise(bounds)):
            state = h0[i : i + 1] if j == 0 else torch.zeros_like(h0[i : i + 1])
            y, final = s4d_scan(u[i : i + 1, s:e], **params, initial_state=state, return_final_state=True)
            pieces.append(y)
        ys.append(torch.cat(pieces, dim=1))
        finals.append(final)
    return torch.cat(ys), torch.cat(finals)


def test_packed_equals_separate():
    inputs = make_params("lin", 3, 6, seed=5) | make_sequence(3, 50, 3, 6, True, True, seed=5)
    inputs["seq_idx"][0] = torch.tensor([0] * 49 + [1])  # a last sequence of length 1
    inputs["seq_idx"][1] = 7  # one sequence: the final state comes from initial_state
    fast, ref32, ref64 = three_copies(inputs)
    fast_out = s4d_conv(**fast, return_final_state=True)
    for name, f, r32, r64 in zip(("y", "final_state"), fast_out, separate_scans(ref32), separate_scans(ref64)):
        assert_by_rule(name, real_view(f), real_view(r32), real_view(r64))


@pytest.mark.parametrize("init", sorted(INITS))
def test_step_loop_equals_forward(init: str):
    inputs = make_params(init, 4, 8, seed=2) | make_sequence(2, 30, 4, 8, True, False, seed=2)
    fast, ref32, ref64 = three_copies(inputs)
    A_bar, B_bar = discretize_zoh(fast["dt"], fast["A"], fast["B"])
    state, ys = fast["initial_state"], []
    for t in range(30):
        y_t, state = s4d_step(fast["u"][:, t], state, A_bar, B_bar, fast["C"], fast["D"])
        ys.append(y_t)
    stepped = (torch.stack(ys, dim=1), state)
    ref32_out = s4d_conv(**ref32, return_final_state=True, backend="reference")
    ref64_out = s4d_conv(**ref64, return_final_state=True, backend="reference")
    wrt = ["u", "dt", "A", "B", "C", "D", "initial_state"]
    assert_all_by_rule(["y", "final_state"], stepped, ref32_out, ref64_out, fast, ref32, ref64, wrt)


def test_state_pieces_compose():
    """s4d_state_output and s4d_final_state are what a nonzero initial state adds, and the carried state."""
    p = make_params("legs", 3, 6, seed=9)
    seq = make_sequence(2, 20, 3, 6, True, False, seed=9)
    h0, u = seq["initial_state"], seq["u"]
    y_with, h_with = s4d_scan(u, **p, initial_state=h0, return_final_state=True)
    y_without = s4d_scan(u, **p)
    added = s4d_state_output(h0, p["dt"], p["A"], p["C"], 20)
    torch.testing.assert_close(y_without + added, y_with, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(s4d_final_state(u, p["dt"], p["A"], p["B"], h0), h_with, rtol=1e-12, atol=1e-12)


def test_discretize_zoh_is_the_exact_integral():
    p = make_params("lin", 2, 6, seed=1)
    A_bar, B_bar = discretize_zoh(p["dt"], p["A"], p["B"])
    dtA = p["dt"].unsqueeze(-1) * p["A"]
    torch.testing.assert_close(A_bar, torch.exp(dtA))
    # B_bar = int_0^dt exp(A s) ds B, by the trapezoid rule on a fine grid
    s = torch.linspace(0, 1, 20001, dtype=torch.float64).view(-1, 1, 1) * p["dt"].view(1, -1, 1)
    integral = torch.trapezoid(torch.exp(s * p["A"]), s.to(torch.complex128), dim=0) * p["B"]
    torch.testing.assert_close(B_bar, integral, rtol=1e-8, atol=1e-12)


def test_hippo_legs():
    A, B = hippo_legs(4)
    expected = -torch.tensor(
        [[1, 0, 0, 0], [3**0.5, 2, 0, 0], [5**0.5, 15**0.5, 3, 0], [7**0.5, 21**0.5, 35**0.5, 4]],
        dtype=torch.float64,
    )
    torch.testing.assert_close(A, expected)
    torch.testing.assert_close(B, torch.tensor([1.0, 3, 5, 7], dtype=torch.float64).sqrt())


def test_legs_init_is_the_normal_part_spectrum():
    N = 16
    A_legs, B_legs = hippo_legs(N)
    P = torch.sqrt(torch.arange(N, dtype=torch.float64) + 0.5)
    eig = torch.linalg.eigvals(A_legs + torch.outer(P, P))  # the normal part's eigenvalues
    A, B = s4d_legs_init(3, N, dtype=torch.complex128)
    assert A.shape == B.shape == (3, N // 2)
    torch.testing.assert_close(A.real, torch.full((3, N // 2), -0.5, dtype=torch.float64))
    upper = eig.imag[eig.imag > 0].sort().values
    torch.testing.assert_close(A[0].imag, upper)
    # B = V^* B_LegS with V unitary: the conjugate pairs share |B|, so the kept half holds half of |B_LegS|^2
    torch.testing.assert_close((B[0].abs() ** 2).sum(), B_legs.pow(2).sum() / 2)
    assert (B.imag == 0).all() and (B.real > 0).all()


def test_lin_and_real_inits():
    A, B = s4d_lin_init(2, 8)
    torch.testing.assert_close(A[1], torch.complex(torch.full((4,), -0.5), math.pi * torch.arange(4.0)))
    A, B = s4d_real_init(2, 8)
    torch.testing.assert_close(A[0], torch.complex(-torch.arange(1.0, 5.0), torch.zeros(4)))
    assert A.dtype == B.dtype == torch.complex64 and (B == 1).all()


def good_args() -> dict:
    p = {k: v.to(torch.complex64) if v.is_complex() else v.float() for k, v in make_params("lin", 3, 4, 0).items()}
    return p | {"u": torch.randn(2, 5, 3)}


@pytest.mark.parametrize(
    ("change", "error", "words"),
    [
        ({"u": torch.randn(5, 3)}, ValueError, ["u", "(b, l, d)", "(5, 3)"]),
        ({"u": torch.ones(2, 5, 3, dtype=torch.long)}, TypeError, ["u", "int64"]),
        ({"A": torch.randn(3, 2)}, TypeError, ["A", "complex", "float32"]),
        ({"C": torch.randn(3, 3, dtype=torch.complex64)}, ValueError, ["C", "(d, n)", "(3, 3)"]),
        ({"B": torch.randn(4, 2, dtype=torch.complex64)}, ValueError, ["B", "(d, n)", "(4, 2)"]),
        ({"dt": torch.rand(4)}, ValueError, ["dt", "(d,)"]),
        ({"D": torch.rand(3, 1)}, ValueError, ["D", "(d,)"]),
        ({"initial_state": torch.randn(2, 3, 2)}, TypeError, ["initial_state", "complex"]),
        ({"initial_state": torch.randn(2, 3, 3, dtype=torch.complex64)}, ValueError, ["initial_state", "(b, d, n)"]),
        ({"seq_idx": torch.zeros(2, 5)}, TypeError, ["seq_idx", "integer"]),
        ({"backend": "triton"}, ValueError, ["triton"]),
    ],
)
def test_conv_bad_inputs_raise(change: dict, error: type, words: list[str]):
    with pytest.raises(error) as info:
        s4d_conv(**(good_args() | change))
    for word in words:
        assert word in str(info.value)


def test_other_bad_inputs_raise():
    p = good_args()
    with pytest.raises(ValueError, match="length"):
        s4d_kernel(p["dt"], p["A"], p["B"], p["C"], 0)
    with pytest.raises(ValueError, match=r"K: expected shape \(d, l\)"):
        fft_conv(p["u"], torch.randn(3, 4))
    A_bar, B_bar = discretize_zoh(p["dt"], p["A"], p["B"])
    with pytest.raises(ValueError, match="state"):
        s4d_step(p["u"][:, 0], torch.zeros(2, 3, 5, dtype=torch.complex64), A_bar, B_bar, p["C"])
    with pytest.raises(ValueError, match="u_t"):
        s4d_step(p["u"], torch.zeros(2, 3, 2, dtype=torch.complex64), A_bar, B_bar, p["C"])
    with pytest.raises(ValueError, match="N: expected an even int"):
        s4d_lin_init(3, 7)
