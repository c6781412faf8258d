"""SSD (Mamba-2): the chunked torch path, the quadratic dual form and the decoding step, judged by the one rule.

Every comparison: fast path in fp32 against the reference recurrence on fp64 copies of the same inputs, with the
bound taken from the reference run in fp32 (tests/rules.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import pytest
import torch

from ssmkit.ops.ssd import ssd, ssd_quadratic, ssd_step
from tests.rules import assert_by_rule, grads

LENGTHS = (1, 7, 63, 257)


@dataclass(frozen=True)
class Case:
    b: int = 2
    h: int = 4
    p: int = 8
    g: int = 2
    n: int = 8
    D: str | None = "channel"  # "head" -> (h,), "channel" -> (h, p)
    z: bool = True
    softplus: bool = True  # with dt_bias and a dt_limit that clamps some of the values
    init: bool = True
    a_max: float = 1.5  # A = -uniform(0.3, a_max)
    dt_shift: float = -1.0  # raw dt = N(dt_shift, 0.5^2) before softplus(dt + dt_bias)
    dt_limit: tuple[float, float] = (0.15, 0.9)


FULL = Case()
PLAIN = Case(b=1, h=2, g=1, D=None, z=False, softplus=False, init=False)
PER_HEAD = Case(h=4, g=4, p=4, D="head", z=False)
# dt near 1 over long chunks: exponents within a chunk reach hundreds while each step still remembers
STRONG = Case(a_max=2.0, dt_shift=0.5, dt_limit=(0.01, 4.0))

ARG_ORDER = ("x", "dt", "A", "B", "C", "D", "z", "dt_bias", "initial_state")


def make_inputs(case: Case, l: int, seed: int) -> dict[str, torch.Tensor]:
    """Fresh random fp64 inputs; nothing is zero."""
    gen = torch.Generator().manual_seed(seed)
    b, h, p, g, n = case.b, case.h, case.p, case.g, case.n

    def rnd(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen, dtype=torch.float64)

    def uniform(lo: float, hi: float, *shape: int) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(*shape, generator=gen, dtype=torch.float64)

    inputs = {
        "x": rnd(b, l, h, p),
        # raw dt goes through softplus(dt + dt_bias), then the limit; or is used as is (positive)
        "dt": rnd(b, l, h) * 0.5 + case.dt_shift if case.softplus else uniform(0.02, 0.6, b, l, h),
        "A": -uniform(0.3, case.a_max, h),
        "B": rnd(b, l, g, n) * 0.5,
        "C": rnd(b, l, g, n) * 0.5,
    }
    if case.D is not None:
        inputs["D"] = rnd(h) if case.D == "head" else rnd(h, p)
    if case.z:
        inputs["z"] = rnd(b, l, h, p)
    if case.softplus:
        inputs["dt_bias"] = rnd(h) * 0.5
    if case.init:
        inputs["initial_state"] = rnd(b, h, p, n)
    return inputs


def options(case: Case) -> dict:
    return {"dt_softplus": True, "dt_limit": case.dt_limit} if case.softplus else {}


def leaves(inputs: dict[str, torch.Tensor], dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Copies in `dtype` that require grad; the state stays fp32 unless the run is fp64."""
    state_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    out = {}
    for name, t in inputs.items():
        out[name] = t.to(state_dtype if name == "initial_state" else dtype).requires_grad_()
    return out


def cast(inputs: dict[str, torch.Tensor], dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Plain copies in `dtype` (no grad); the state stays fp32 unless the run is fp64."""
    return {k: v.detach() for k, v in leaves(inputs, dtype).items()}


@dataclass
class Result:
    y: torch.Tensor
    state: torch.Tensor
    grads: dict[str, torch.Tensor]


def run(fn, inputs, dtype, seeds, **kwargs) -> Result:
    args = leaves(inputs, dtype)
    y, state = fn(**args, return_final_state=True, **kwargs)
    gy, gs = seeds
    got = grads((y, state), list(args.values()), (gy.to(y.dtype), gs.to(state.dtype)))
    return Result(y.detach(), state.detach(), dict(zip(args, got)))


def output_seeds(case: Case, l: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed + 1000)
    gy = torch.randn(case.b, l, case.h, case.p, generator=gen, dtype=torch.float64)
    gs = torch.randn(case.b, case.h, case.p, case.n, generator=gen, dtype=torch.float64)
    return gy, gs


def assert_results(tag: str, fast: Result, ref32: Result, ref64: Result) -> None:
    assert_by_rule(f"{tag} y", fast.y, ref32.y, ref64.y)
    assert_by_rule(f"{tag} final_state", fast.state, ref32.state, ref64.state)
    for name in ARG_ORDER:
        if name in ref64.grads:
            assert fast.grads[name] is not None, f"{tag}: no gradient for {name}"
            assert_by_rule(f"{tag} grad {name}", fast.grads[name], ref32.grads[name], ref64.grads[name])


def check_torch_path(case: Case, l: int, chunk_size: int, seed: int) -> None:
    inputs = make_inputs(case, l, seed)
    seeds = output_seeds(case, l, seed)
    kw = options(case)
    ref64 = run(ssd, inputs, torch.float64, seeds, backend="reference", **kw)
    ref32 = run(ssd, inputs, torch.float32, seeds, backend="reference", **kw)
    fast = run(ssd, inputs, torch.float32, seeds, backend="torch", chunk_size=chunk_size, **kw)
    assert_results(f"l={l} chunk={chunk_size}", fast, ref32, ref64)
    with torch.no_grad():  # inference reuses buffers in place and takes exponent differences: judged alike
        y, state = ssd(**leaves(inputs, torch.float32), chunk_size=chunk_size, return_final_state=True, **kw)
    assert_by_rule(f"l={l} chunk={chunk_size} no_grad y", y, ref32.y, ref64.y)
    assert_by_rule(f"l={l} chunk={chunk_size} no_grad final_state", state, ref32.state, ref64.state)


@pytest.mark.parametrize("chunk_size", [16, 64])
@pytest.mark.parametrize("l", LENGTHS)
def test_torch_path_full(l, chunk_size):
    check_torch_path(FULL, l, chunk_size, seed=l * 100 + chunk_size)


@pytest.mark.parametrize("l", LENGTHS)
def test_torch_path_plain(l):
    check_torch_path(PLAIN, l, 16, seed=l + 1)


@pytest.mark.parametrize("l", [7, 63])
def test_torch_path_d_per_head_g_equals_h(l):
    check_torch_path(PER_HEAD, l, 16, seed=l + 2)


@pytest.mark.parametrize("chunk_size", [64, 256])
def test_torch_path_strong_decay(chunk_size):
    check_torch_path(STRONG, 257, chunk_size, seed=chunk_size + 7)


def test_default_chunk_and_auto_backend():
    inputs = make_inputs(FULL, 63, seed=5)
    seeds = output_seeds(FULL, 63, seed=5)
    ref64 = run(ssd, inputs, torch.float64, seeds, backend="reference", **options(FULL))
    ref32 = run(ssd, inputs, torch.float32, seeds, backend="reference", **options(FULL))
    fast = run(ssd, inputs, torch.float32, seeds, **options(FULL))
    assert_results("auto", fast, ref32, ref64)


@pytest.mark.parametrize("l", [7, 63, 257])
def test_torch_path_equals_quadratic_form(l):
    inputs = make_inputs(FULL, l, seed=l + 3)
    seq_idx = torch.zeros(FULL.b, l, dtype=torch.long)
    seq_idx[0, l // 3 :] = 1
    seq_idx[1, l // 2 :] = 4
    kw = {**options(FULL), "seq_idx": seq_idx}
    with torch.no_grad():
        ref64 = ssd(**cast(inputs, torch.float64), backend="reference", return_final_state=True, **kw)
        ref32 = ssd(**cast(inputs, torch.float32), backend="reference", return_final_state=True, **kw)
        quad64 = ssd_quadratic(**cast(inputs, torch.float64), return_final_state=True, **kw)
        quad32 = ssd_quadratic(**cast(inputs, torch.float32), return_final_state=True, **kw)
        fast = ssd(**cast(inputs, torch.float32), backend="torch", chunk_size=16, return_final_state=True, **kw)
    for i, what in enumerate(("y", "final_state")):
        assert_by_rule(f"quadratic {what}", quad32[i], ref32[i], ref64[i])
        assert_by_rule(f"torch vs quadratic {what}", fast[i], quad32[i], quad64[i])


def test_quadratic_form_gradients():
    inputs = make_inputs(FULL, 63, seed=11)
    seeds = output_seeds(FULL, 63, seed=11)
    kw = options(FULL)
    ref64 = run(ssd, inputs, torch.float64, seeds, backend="reference", **kw)
    ref32 = run(ssd, inputs, torch.float32, seeds, backend="reference", **kw)
    quad = run(ssd_quadratic, inputs, torch.float32, seeds, **kw)
    assert_results("quadratic", quad, ref32, ref64)


# packed sequences: (segment lengths, labels) per batch row; labels need not be sorted, only change at borders
PACKING = [([5, 20, 1, 37], [3, 7, 3, 1]), ([32, 31], [0, 2])]  # 32: a border on a chunk border (chunk 16)


def packed_seq_idx(l: int) -> torch.Tensor:
    rows = []
    for lengths, labels in PACKING:
        assert sum(lengths) == l
        rows.append(torch.repeat_interleave(torch.tensor(labels), torch.tensor(lengths)))
    return torch.stack(rows)  # (b, l)


def run_separately(fn, args: dict[str, torch.Tensor], kw: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Each packed sequence on its own; the initial state only for the first one of each row."""
    ys, states = [], []
    for row, (lengths, _) in enumerate(PACKING):
        start, row_ys, state = 0, [], None
        for k, length in enumerate(lengths):
            sl = slice(start, start + length)
            piece = {
                name: t[row : row + 1, sl] if name in ("x", "dt", "B", "C", "z") else t
                for name, t in args.items()
                if name != "initial_state"
            }
            init = args["initial_state"][row : row + 1] if k == 0 and "initial_state" in args else None
            y, state = fn(**piece, initial_state=init, return_final_state=True, **kw)
            row_ys.append(y)
            start += length
        ys.append(torch.cat(row_ys, dim=1))
        states.append(state)
    return torch.cat(ys), torch.cat(states)


@pytest.mark.parametrize("backend", ["torch", "reference"])
def test_packed_seq_idx_equals_separate_sequences(backend):
    l = 63
    inputs = make_inputs(FULL, l, seed=21)
    seeds = output_seeds(FULL, l, seed=21)
    kw = options(FULL)
    seq_idx = packed_seq_idx(l)

    def separate(dtype):
        args = leaves(inputs, dtype)
        y, state = run_separately(ssd, args, {**kw, "backend": "reference"})
        got = grads((y, state), list(args.values()), (seeds[0].to(y.dtype), seeds[1].to(state.dtype)))
        return Result(y.detach(), state.detach(), dict(zip(args, got)))

    packed = run(ssd, inputs, torch.float32, seeds, backend=backend, chunk_size=16, seq_idx=seq_idx, **kw)
    assert_results(f"packed {backend}", packed, separate(torch.float32), separate(torch.float64))


def test_cu_seqlens_equals_seq_idx():
    l = 63
    case = Case(b=1)
    inputs = make_inputs(case, l, seed=31)
    seeds = output_seeds(case, l, seed=31)
    kw = options(case)
    cu_seqlens = torch.tensor([0, 5, 25, 26, 63], dtype=torch.int32)
    seq_idx = torch.repeat_interleave(torch.arange(4), cu_seqlens.diff().long())[None]
    ref64 = run(ssd, inputs, torch.float64, seeds, backend="reference", seq_idx=seq_idx, **kw)
    ref32 = run(ssd, inputs, torch.float32, seeds, backend="reference", seq_idx=seq_idx, **kw)
    for backend in ("torch", "reference"):
        fast = run(ssd, inputs, torch.float32, seeds, backend=backend, chunk_size=16, cu_seqlens=cu_seqlens, **kw)
        assert_results(f"cu_seqlens {backend}", fast, ref32, ref64)
    quad = run(ssd_quadratic, inputs, torch.float32, seeds, cu_seqlens=cu_seqlens, **kw)
    assert_results("cu_seqlens quadratic", quad, ref32, ref64)


def test_step_loop_equals_forward():
    l = 20
    inputs = make_inputs(FULL, l, seed=41)
    kw = options(FULL)
    with torch.no_grad():
        ref64 = ssd(**cast(inputs, torch.float64), backend="reference", return_final_state=True, **kw)
        ref32 = ssd(**cast(inputs, torch.float32), backend="reference", return_final_state=True, **kw)
        a = cast(inputs, torch.float32)
        state = a["initial_state"]
        before = state.clone()
        ys = []
        for t in range(l):
            y_t, state = ssd_step(
                a["x"][:, t],
                a["dt"][:, t],
                a["A"],
                a["B"][:, t],
                a["C"][:, t],
                state,
                D=a["D"],
                z_t=a["z"][:, t],
                dt_bias=a["dt_bias"],
                **kw,
            )
            ys.append(y_t)
        assert torch.equal(a["initial_state"], before), "ssd_step modified its input state"
    assert_by_rule("step y", torch.stack(ys, dim=1), ref32[0], ref64[0])
    assert_by_rule("step final_state", state, ref32[1], ref64[1])


def test_dtypes_bf16_and_fp64():
    l = 63
    inputs = make_inputs(FULL, l, seed=51)
    bf = {k: v.to(torch.float32 if k == "initial_state" else torch.bfloat16) for k, v in inputs.items()}
    exact = {k: v.double() for k, v in bf.items()}  # fp64 copies of the bf16-rounded inputs
    kw = {**options(FULL), "return_final_state": True}
    with torch.no_grad():
        fast = ssd(**bf, backend="torch", chunk_size=16, **kw)
        ref_bf = ssd(**bf, backend="reference", **kw)
        ref64 = ssd(**exact, backend="reference", **kw)
        fast64 = ssd(**exact, backend="torch", chunk_size=16, **kw)
    assert fast[0].dtype == torch.bfloat16 and fast[1].dtype == torch.float32
    assert fast64[0].dtype == torch.float64 and fast64[1].dtype == torch.float64
    assert_by_rule("bf16 y", fast[0], ref_bf[0], ref64[0])
    assert_by_rule("bf16 final_state", fast[1], ref_bf[1], ref64[1])
    assert_by_rule("fp64 y", fast64[0], ref64[0], ref64[0])
    assert_by_rule("fp64 final_state", fast64[1], ref64[1], ref64[1])


def strided(t: torch.Tensor) -> torch.Tensor:
    """The same values in a non-contiguous layout: a permuted copy for 3-d/4-d tensors, else a slice."""
    if t.dim() >= 3:
        return t.transpose(1, 2).contiguous().transpose(1, 2)
    return torch.stack([t, t], dim=-1)[..., 0]


@pytest.mark.parametrize("grad", [False, True])
def test_non_contiguous_inputs(grad):
    inputs = make_inputs(FULL, 63, seed=71)
    wide = torch.cat([inputs["B"], inputs["C"]], dim=-1)  # (b, l, g, 2n): B and C as slices, as after a split
    n = FULL.n
    with torch.set_grad_enabled(grad):
        args = cast(inputs, torch.float32)
        odd = {k: strided(v) for k, v in args.items()}
        odd["B"], odd["C"] = wide.float()[..., :n], wide.float()[..., n:]
        assert not any(v.is_contiguous() for v in odd.values())
        for t in odd.values():
            t.requires_grad_(grad)
        for backend in ("torch", "reference"):
            kw = {**options(FULL), "backend": backend, "chunk_size": 16, "return_final_state": True}
            want = ssd(**args, **kw)
            got = ssd(**odd, **kw)
            for i, what in enumerate(("y", "final_state")):
                assert_by_rule(f"strided {backend} {what}", got[i].detach(), want[i].detach(), want[i].detach())


# ---- bad input: the error names the argument, what it got and what it expected


def good_args() -> dict:
    inputs = make_inputs(Case(b=2, h=4, p=8, g=2, n=16), 7, seed=61)
    return {k: v.float() for k, v in inputs.items()}


BAD_SSD = [
    ({"x": torch.randn(2, 7, 4)}, ValueError, "x: expected shape (b, l, h, p)"),
    ({"x": torch.ones(2, 7, 4, 8, dtype=torch.long)}, TypeError, "x: expected a floating dtype"),
    ({"dt": torch.randn(2, 7, 3)}, ValueError, "dt: expected shape (b, l, h) = (2, 7, 4), got (2, 7, 3)"),
    ({"A": torch.randn(4, 1)}, ValueError, "A: expected shape (h,) = (4"),
    ({"B": torch.randn(2, 7, 2)}, ValueError, "B: expected shape (b, l, g, n) = (2, 7, ?, ?), got (2, 7, 2)"),
    ({"B": torch.randn(2, 6, 2, 16)}, ValueError, "B: expected shape (b, l, g, n) = (2, 7, ?, ?), got (2, 6, 2, 16)"),
    ({"C": torch.randn(2, 7, 2, 8)}, ValueError, "C: expected shape (b, l, g, n) = (2, 7, 2, 16), got (2, 7, 2, 8)"),
    ({"B": torch.randn(2, 7, 3, 16), "C": torch.randn(2, 7, 3, 16)}, ValueError, "divisible by g"),
    ({"C": torch.ones(2, 7, 2, 16, dtype=torch.int32)}, TypeError, "C: expected a floating dtype"),
    ({"D": torch.randn(4, 3)}, ValueError, "D: expected shape (h,) = (4,) or (h, p) = (4, 8), got (4, 3)"),
    ({"z": torch.randn(2, 7, 4, 7)}, ValueError, "z: expected shape (b, l, h, p) = (2, 7, 4, 8), got (2, 7, 4, 7)"),
    ({"dt_bias": torch.randn(2)}, ValueError, "dt_bias: expected shape (h,) = (4"),
    ({"dt_limit": (1.0, 0.5)}, ValueError, "dt_limit: expected a pair"),
    (
        {"initial_state": torch.randn(2, 4, 8, 8)},
        ValueError,
        "initial_state: expected shape (b, h, p, n) = (2, 4, 8, 16)",
    ),
    ({"initial_state": torch.randn(2, 4, 8, 16).bfloat16()}, TypeError, "initial_state: expected dtype torch.float32"),
    ({"chunk_size": 0}, ValueError, "chunk_size: expected an int >= 1, got 0"),
    ({"chunk_size": 16.0}, TypeError, "chunk_size: expected an int >= 1, got float"),
    (
        {"seq_idx": torch.zeros(2, 6, dtype=torch.long)},
        ValueError,
        "seq_idx: expected shape (b, l) = (2, 7), got (2, 6)",
    ),
    ({"seq_idx": torch.zeros(2, 7)}, TypeError, "seq_idx: expected an integer dtype"),
    ({"cu_seqlens": torch.tensor([0, 3, 7])}, ValueError, "cu_seqlens: expected batch size b == 1"),
    (
        {"seq_idx": torch.zeros(2, 7, dtype=torch.long), "cu_seqlens": torch.tensor([0, 7])},
        ValueError,
        "seq_idx and cu_seqlens: expected at most one of them, got both",
    ),
    ({"backend": "bogus"}, ValueError, "backend: expected one of"),
]


@pytest.mark.parametrize(("change", "error", "message"), BAD_SSD)
def test_bad_input_raises_naming_the_argument(change, error, message):
    args = {**good_args(), **change}
    with pytest.raises(error, match=re.escape(message)):
        ssd(**args)


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA tensors are accepted there")
def test_triton_backend_on_cpu_tensors_raises(without_interpreter):
    with pytest.raises(ValueError, match=re.escape("backend='triton'")):
        ssd(**good_args(), backend="triton")


def one_row_args() -> dict:
    return {k: (v[:1] if k in ("x", "dt", "B", "C", "z", "initial_state") else v) for k, v in good_args().items()}


@pytest.mark.parametrize(
    ("cu_seqlens", "error", "message"),
    [
        (
            torch.tensor([0, 3, 6]),
            ValueError,
            "cu_seqlens: expected non-decreasing values from 0 to l = 7, got [0, 3, 6]",
        ),
        (torch.tensor([0, 5, 3, 7]), ValueError, "cu_seqlens: expected non-decreasing values"),
        (torch.tensor([[0, 7]]), ValueError, "cu_seqlens: expected shape (num_seqs + 1,)"),
        (torch.tensor([0.0, 7.0]), TypeError, "cu_seqlens: expected an integer dtype"),
    ],
)
def test_bad_cu_seqlens(cu_seqlens, error, message):
    with pytest.raises(error, match=re.escape(message)):
        ssd(**one_row_args(), cu_seqlens=cu_seqlens)


def test_quadratic_validates_like_ssd():
    args = {**good_args(), "C": torch.randn(2, 7, 2, 8)}
    with pytest.raises(ValueError, match=re.escape("C: expected shape (b, l, g, n) = (2, 7, 2, 16)")):
        ssd_quadratic(**args)


def step_args() -> dict:
    a = good_args()
    return {
        "x_t": a["x"][:, 0],
        "dt_t": a["dt"][:, 0],
        "A": a["A"],
        "B_t": a["B"][:, 0],
        "C_t": a["C"][:, 0],
        "state": a["initial_state"],
        "D": a["D"],
        "z_t": a["z"][:, 0],
        "dt_bias": a["dt_bias"],
    }


@pytest.mark.parametrize(
    ("change", "error", "message"),
    [
        ({"x_t": torch.randn(2, 1, 4, 8)}, ValueError, "x_t: expected shape (b, h, p)"),
        ({"dt_t": torch.randn(2, 4, 1)}, ValueError, "dt_t: expected shape (b, h) = (2, 4), got (2, 4, 1)"),
        ({"B_t": torch.randn(2, 16)}, ValueError, "B_t: expected shape (b, g, n) = (2, ?, ?), got (2, 16)"),
        ({"C_t": torch.randn(2, 1, 16)}, ValueError, "C_t: expected shape (b, g, n) = (2, 2, 16), got (2, 1, 16)"),
        ({"state": torch.randn(2, 4, 8)}, ValueError, "state: expected shape (b, h, p, n) = (2, 4, 8, 16)"),
        ({"state": torch.randn(2, 4, 8, 16).half()}, TypeError, "state: expected dtype torch.float32"),
        ({"state": None}, TypeError, "state: expected a torch.Tensor, got NoneType"),
        ({"z_t": torch.randn(2, 4, 7)}, ValueError, "z_t: expected shape (b, h, p) = (2, 4, 8), got (2, 4, 7)"),
        ({"D": torch.randn(5)}, ValueError, "D: expected shape (h,) = (4,)"),
    ],
)
def test_step_bad_input(change, error, message):
    with pytest.raises(error, match=re.escape(message)):
        ssd_step(**{**step_args(), **change})
