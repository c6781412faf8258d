"""SSD's Triton kernels against the reference recurrence, by the one tolerance rule (tests/rules.py).

Without a GPU the kernels run in Triton's interpreter at small sizes (tests/conftest.py sets TRITON_INTERPRET=1 for
the session before triton is imported); the `cuda` tests run the compiled kernels at full sizes on the GPU machine.
Every comparison covers the output, the final state and the gradient of every input. fp32 runs (exact fp32 products)
are judged against the fp32 reference; bf16 runs against the reference run on the same bf16 inputs, the exact one on
fp64 copies of those inputs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import pytest
import torch

pytest.importorskip("triton")

from ssmkit.ops._views import joined_view
from ssmkit.ops.ssd import ssd
from tests.rules import assert_by_rule, grads

CUDA = torch.cuda.is_available()
NAMES = ("x", "dt", "A", "B", "C", "D", "z", "dt_bias", "initial_state")


pytestmark = pytest.mark.usefixtures("fresh_triton_status")  # tests/conftest.py


@dataclass(frozen=True)
class Case:
    b: int = 2
    h: int = 4
    p: int = 16
    g: int = 2
    n: int = 16
    D: str | None = "channel"  # "head" -> (h,), "channel" -> (h, p)
    z: bool = True
    softplus: bool = True  # with dt_bias and a dt_limit that clamps some values
    init: bool = True


FULL = Case()
PLAIN = Case(b=1, h=2, g=1, D=None, z=False, softplus=False, init=False)
PER_HEAD = Case(h=4, g=4, n=32, D="head", z=False)


def make_inputs(case: Case, l: int, seed: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    b, h, p, g, n = case.b, case.h, case.p, case.g, case.n

    def rnd(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen, dtype=torch.float64)

    raw_dt = rnd(b, l, h) * 0.5 - 1.0 if case.softplus else 0.02 + 0.58 * torch.rand(b, l, h, generator=gen).double()
    inputs = {
        "x": rnd(b, l, h, p),
        "dt": raw_dt,
        "A": -(0.3 + 1.2 * torch.rand(h, generator=gen).double()),
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
    return {"dt_softplus": True, "dt_limit": (0.15, 0.9)} if case.softplus else {}


@dataclass
class Result:
    y: torch.Tensor
    state: torch.Tensor
    grads: dict[str, torch.Tensor]


def run(inputs, dtype, device, seeds, **kwargs) -> Result:
    """ssd on copies of `inputs` in `dtype` (the state in fp32 unless fp64) that require grad."""
    state_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    args = {
        k: v.to(device=device, dtype=state_dtype if k == "initial_state" else dtype).requires_grad_()
        for k, v in inputs.items()
    }
    y, state = ssd(**args, return_final_state=True, **kwargs)
    gy, gs = seeds
    got = grads((y, state), list(args.values()), (gy.to(device, y.dtype), gs.to(device, state.dtype)))
    return Result(y.detach(), state.detach(), dict(zip(args, got)))


def seeds_for(case: Case, l: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed + 1000)
    gy = torch.randn(case.b, l, case.h, case.p, generator=gen, dtype=torch.float64)
    gs = torch.randn(case.b, case.h, case.p, case.n, generator=gen, dtype=torch.float64)
    return gy, gs


def assert_results(tag: str, fast: Result, ref: Result, ref64: Result, state_dtype: torch.dtype) -> None:
    """state_dtype: the precision the fp32 state outputs (final state, d initial_state) are judged at.

    With bf16 inputs the kernels feed the state through bf16 tensor-core products (x dt decay, dy decay), so the
    state carries bf16 accuracy: it is judged after rounding to bf16, against the references rounded alike.
    """

    def judge(name: str, got: torch.Tensor, want: torch.Tensor, exact: torch.Tensor) -> None:
        if got.dtype == torch.float32 and state_dtype != torch.float32:
            got, want = got.to(state_dtype), want.to(state_dtype)
        assert_by_rule(f"{tag} {name}", got.cpu(), want.cpu(), exact.cpu())

    judge("y", fast.y, ref.y, ref64.y)
    judge("final_state", fast.state, ref.state, ref64.state)
    for name in NAMES:
        if name in ref64.grads:
            got = fast.grads[name]
            assert got is not None, f"{tag}: no gradient for {name}"
            assert got.dtype == ref.grads[name].dtype, f"{tag}: grad {name} dtype {got.dtype}"
            judge(f"grad {name}", got, ref.grads[name], ref64.grads[name])


def check(case: Case, l: int, chunk_size: int, dtype: torch.dtype, device: str, seed: int, **extra) -> None:
    """Triton against the reference by the rule. bf16: inputs rounded to bf16 first, fp64 copies of those."""
    inputs = make_inputs(case, l, seed)
    if dtype != torch.float32:
        inputs = {k: v if k == "initial_state" else v.to(dtype).double() for k, v in inputs.items()}
    gy, gs = seeds_for(case, l, seed)
    seeds = (gy.to(dtype).double(), gs.float().double())  # every run gets the same upstream gradients
    kw = {**options(case), **extra}
    ref64 = run(inputs, torch.float64, device, seeds, backend="reference", **kw)
    ref = run(inputs, dtype, device, seeds, backend="reference", **kw)
    fast = run(inputs, dtype, device, seeds, backend="triton", chunk_size=chunk_size, **kw)
    assert_results(f"{dtype} l={l} chunk={chunk_size}", fast, ref, ref64, state_dtype=dtype)


@pytest.fixture(params=["staged", "fused", "segmented"])
def forward_path(request, monkeypatch):
    """The forward's paths: stage kernels over all chunks at once, the one kernel walking whole sequences, or
    walking segments of them from entering states computed first (3 segments, fine segments of 2 chunks: at the
    tests' lengths, segments of one chunk and of several, the last one shorter)."""
    from ssmkit.ops.ssd import triton_fused

    monkeypatch.setattr(triton_fused, "FUSED_MIN_PROGRAMS", 0 if request.param == "fused" else 2**62)
    if request.param == "segmented":
        monkeypatch.setattr(triton_fused, "WALK_SEGMENTS", 3)
        monkeypatch.setattr(triton_fused, "SEGMENT_CHUNKS", 2)
    return request.param


@pytest.fixture
def interpreter(monkeypatch):
    """Triton's interpreter on CPU, with every buffer the kernels allocate filled with NaN first."""
    if CUDA:
        pytest.skip("a GPU is present: the cuda tests run the compiled kernels")
    empty, empty_like = torch.empty, torch.empty_like

    def poisoned(t: torch.Tensor) -> torch.Tensor:
        return t.fill_(float("nan")) if t.is_floating_point() else t.fill_(-(2**30))

    monkeypatch.setattr(torch, "empty", lambda *a, **k: poisoned(empty(*a, **k)))
    monkeypatch.setattr(torch, "empty_like", lambda *a, **k: poisoned(empty_like(*a, **k)))
    return "cpu"


@pytest.fixture
def interpret(interpreter, forward_path):
    """The interpreter, each test run with every forward path."""
    return interpreter


@pytest.mark.triton_interpret
@pytest.mark.parametrize(("l", "chunk_size"), [(1, 64), (7, 64), (63, 16), (257, 128), (300, 256)])
def test_fp32_full(interpret, l, chunk_size):
    # chunk 256: four blocks of 64 rows in the backward, so d a also takes whole tiles strictly around a block
    check(FULL, l, chunk_size, torch.float32, interpret, seed=l)


@pytest.mark.triton_interpret
@pytest.mark.parametrize(("l", "chunk_size", "seed"), [(63, 16, 64), (130, 64, 131), (130, 64, 9)])
def test_bf16_full(interpret, l, chunk_size, seed):
    # seed 9: the gated d y, rounded to bf16 for dC's state term, put dA at 1.46x the rule's bound there
    check(FULL, l, chunk_size, torch.bfloat16, interpret, seed=seed)


@pytest.mark.triton_interpret
def test_bf16_without_gate(interpret):
    # without z, d out reaches the kernels in bf16 and the score products round to bf16 (W2's path)
    check(Case(z=False, init=False), 130, 64, torch.bfloat16, interpret, seed=7)


@pytest.mark.triton_interpret
def test_largest_tiles(interpret):
    # p = 128, n = 256, two chunks: every kernel at its largest tiles
    check(Case(b=1, h=2, p=128, g=1, n=256, z=False), 40, 32, torch.float32, interpret, seed=11)


@pytest.mark.triton_interpret
def test_fp32_plain_and_per_head(interpret):
    check(PLAIN, 63, 16, torch.float32, interpret, seed=3)
    check(PER_HEAD, 40, 32, torch.float32, interpret, seed=4)


def packed_seq_idx(b: int, l: int) -> torch.Tensor:
    seq_idx = torch.zeros(b, l, dtype=torch.long)
    seq_idx[0, 5:] = 3
    seq_idx[0, 25:] = 4
    seq_idx[0, 26:] = 9
    if b > 1:
        seq_idx[1, 32:] = 2  # a border on a chunk border (chunk 16)
    return seq_idx


@pytest.mark.triton_interpret
def test_packed_seq_idx(interpret):
    l = 63
    check(FULL, l, 16, torch.float32, interpret, seed=21, seq_idx=packed_seq_idx(FULL.b, l))


@pytest.mark.triton_interpret
def test_packed_seq_idx_across_blocks(interpret):
    # chunk 128: the fused forward steps the state every 64 tokens; borders inside a 64-token block, on one (64),
    # on the chunk border (128) and in the second chunk
    l = 150
    seq_idx = torch.zeros(2, l, dtype=torch.long)
    seq_idx[0, 40:] = 1
    seq_idx[0, 64:] = 2
    seq_idx[0, 128:] = 3
    seq_idx[1, 100:] = 1
    seq_idx[1, 141:] = 2
    check(FULL, l, 128, torch.float32, interpret, seed=22, seq_idx=seq_idx)


@pytest.mark.triton_interpret
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_segments_of_several_chunks(interpreter, monkeypatch, dtype):
    # 10 chunks walked in 3 segments of 4, 4 and 2 chunks, entering states from fine segments of 2 chunks; in the
    # packed run a sequence starts inside a fine segment, one on a segment's border (chunk 4) and one inside the last
    from ssmkit.ops.ssd import triton_fused

    monkeypatch.setattr(triton_fused, "FUSED_MIN_PROGRAMS", 2**62)
    monkeypatch.setattr(triton_fused, "WALK_SEGMENTS", 3)
    monkeypatch.setattr(triton_fused, "SEGMENT_CHUNKS", 2)
    assert triton_fused.walk_plan(FULL.b, FULL.h, FULL.p, FULL.n, 10) == triton_fused.WalkPlan(3, 4, 2)
    l = 300
    seq_idx = torch.zeros(FULL.b, l, dtype=torch.long)
    seq_idx[0, 70:] = 1
    seq_idx[0, 128:] = 2
    seq_idx[1, 290:] = 1
    check(FULL, l, 32, dtype, interpreter, seed=61)
    check(FULL, l, 32, dtype, interpreter, seed=62, seq_idx=seq_idx)


@pytest.mark.triton_interpret
def test_cu_seqlens(interpret):
    case = Case(b=1)
    cu_seqlens = torch.tensor([0, 5, 25, 26, 63], dtype=torch.int32)
    check(case, 63, 16, torch.bfloat16, interpret, seed=31, cu_seqlens=cu_seqlens)


@pytest.mark.triton_interpret
def test_split_inputs_get_their_gradients_in_one_buffer(interpret):
    """x, B, C as side-by-side views of one tensor (Mamba-2 splits its conv output so): d x, d B, d C are right and
    lie side by side in one buffer, which the layer's split hands back without a copy (ssmkit/layers/splits.py)."""
    case = Case(b=2, h=2, p=16, g=1, n=16, z=False, init=False)
    inputs = make_inputs(case, 40, seed=51)
    widths = [case.h * case.p, case.g * case.n, case.g * case.n]
    xbc = torch.cat([inputs.pop(k).flatten(2) for k in ("x", "B", "C")], dim=-1)  # (b, l, h p + 2 g n)
    gy = torch.randn(case.b, 40, case.h, case.p, generator=torch.Generator().manual_seed(52), dtype=torch.float64)

    def run_split(dtype, **kw):
        x, B, C = xbc.to(dtype).requires_grad_().split(widths, dim=-1)
        x, B, C = (
            x.unflatten(-1, (case.h, case.p)),
            B.unflatten(-1, (case.g, case.n)),
            C.unflatten(-1, (case.g, case.n)),
        )
        rest = {k: v.to(dtype) for k, v in inputs.items()}
        y = ssd(x, rest.pop("dt"), rest.pop("A"), B, C, **rest, **options(case), **kw)
        return (y, *torch.autograd.grad(y, [x, B, C], gy.to(dtype)))

    fast = run_split(torch.float32, chunk_size=16, backend="triton")
    same = run_split(torch.float32, backend="reference")
    exact = run_split(torch.float64, backend="reference")
    for name, a, b, c in zip(("y", "grad x", "grad B", "grad C"), fast, same, exact):
        assert_by_rule(name, a, b, c)
    assert joined_view([d.flatten(2) for d in fast[1:]]) is not None


@pytest.mark.triton_interpret
def test_no_grad_and_no_final_state(interpret):
    inputs = {k: v.float() for k, v in make_inputs(FULL, 20, seed=41).items()}
    with torch.no_grad():
        y = ssd(**inputs, chunk_size=16, backend="triton", **options(FULL))
        want = ssd(**inputs, backend="reference", **options(FULL))
    assert_by_rule("no_grad y", y, want, ssd(**{k: v.double() for k, v in inputs.items()}, **options(FULL)))


@pytest.mark.triton_interpret
@pytest.mark.parametrize(
    ("change", "error", "message"),
    [
        ({"chunk_size": 48}, ValueError, "chunk_size: backend='triton' for ssd expects one of"),
        ({"x": torch.randn(1, 8, 2, 160)}, ValueError, "x: backend='triton' for ssd expects head dim p <= 128"),
        ({"dtype": torch.float64}, TypeError, "x: backend='triton' for ssd expects float32, bfloat16 or float16"),
    ],
)
def test_unsupported_sizes_raise(interpret, change, error, message):
    change = dict(change)  # the parameter's dict is shared by every forward path's run
    dtype = change.pop("dtype", torch.float32)
    x = change.pop("x", torch.randn(1, 8, 2, 16))
    b, l, h = x.shape[:3]
    args = {
        "x": x.to(dtype),
        "dt": torch.rand(b, l, h, dtype=dtype),
        "A": -torch.rand(h, dtype=dtype),
        "B": torch.randn(b, l, 1, 16, dtype=dtype),
        "C": torch.randn(b, l, 1, 16, dtype=dtype),
    }
    with pytest.raises(error, match=re.escape(message)):
        ssd(**args, backend="triton", **change)


def test_cpu_tensors_without_interpreter_raise(without_interpreter):
    if CUDA:
        pytest.skip("with a GPU the CPU-tensor error is the one below")
    x = torch.randn(1, 8, 2, 16)
    args = {"x": x, "dt": torch.rand(1, 8, 2), "A": -torch.rand(2), "B": torch.randn(1, 8, 1, 16)}
    with pytest.raises(ValueError, match=re.escape("backend='triton' for ssd cannot run: no CUDA device")):
        ssd(**args, C=args["B"], backend="triton")


# ---- full sizes on the GPU machine, each with every forward path

cuda = pytest.mark.skipif(not CUDA, reason="needs an NVIDIA GPU")
every_path = pytest.mark.usefixtures("forward_path")
BIG = Case(b=2, h=8, p=64, g=2, n=128)


@pytest.mark.cuda
@cuda
@every_path
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(("l", "chunk_size"), [(1, 256), (7, 64), (63, 64), (257, 256), (1000, 256), (777, 128)])
def test_cuda_full(dtype, l, chunk_size):
    check(BIG, l, chunk_size, dtype, "cuda", seed=l)


@pytest.mark.cuda
@cuda
@every_path
@pytest.mark.parametrize("case", [Case(b=1, h=4, p=32, g=1, n=16), Case(b=2, h=4, p=128, g=4, n=128, D="head")])
def test_cuda_sizes(case):
    check(case, 300, 64, torch.bfloat16, "cuda", seed=5)


@pytest.mark.cuda
@cuda
@every_path
@pytest.mark.parametrize("z", [False, True])
def test_cuda_many_heads_per_group(z):
    # 32 heads in a group, as W2 and the Mamba2 block have (64): Triton specializes integer arguments divisible by
    # 16, and a dCB kernel once failed to compile at 32 and 64 heads per group while the tests above (1-4) passed
    check(Case(b=1, h=32, p=64, g=1, n=128, D="head", z=z, init=False), 600, 256, torch.bfloat16, "cuda", seed=8)


@pytest.mark.cuda
@cuda
@pytest.mark.parametrize(("p", "n"), [(16, 128), (32, 128), (32, 256), (64, 16), (64, 256), (128, 64)])
def test_cuda_fused_head_and_state_sizes(monkeypatch, p, n):
    # the one-kernel forward's state tile (p-block, n) at several shapes: p 16 / 32 with n 128 gave wrong outputs
    # on the H200 (not in the interpreter) when the kernel kept the state untransposed
    from ssmkit.ops.ssd import triton_fused

    monkeypatch.setattr(triton_fused, "FUSED_MIN_PROGRAMS", 0)
    check(Case(b=1, h=2, p=p, g=1, n=n), 300, 256, torch.bfloat16, "cuda", seed=p + n)


@pytest.mark.cuda
@cuda
def test_cuda_batch_one_walked_in_segments():
    # W2's heads at batch 1: 64 programs, so the default plan walks 4 segments of 4 chunks (fine segments of 4)
    from ssmkit.ops.ssd import triton_fused

    case = Case(b=1, h=64, p=64, g=1, n=128, D="head", z=False)
    assert triton_fused.walk_plan(1, case.h, case.p, case.n, 16) == triton_fused.WalkPlan(4, 4, 4)
    check(case, 4096, 256, torch.bfloat16, "cuda", seed=71)


@pytest.mark.cuda
@cuda
@every_path
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cuda_largest_tiles(dtype):
    # p = 128 with n = 256: the largest tiles (the dx kernel's whole (p, n) d_end tile in shared memory)
    check(Case(b=1, h=2, p=128, g=1, n=256), 300, 256, dtype, "cuda", seed=5)


@pytest.mark.cuda
@cuda
@every_path
def test_cuda_packed_and_cpu_error():
    l = 700
    seq_idx = torch.zeros(BIG.b, l, dtype=torch.long)
    seq_idx[0, 100:] = 1
    seq_idx[0, 256:] = 2
    seq_idx[1, 300:] = 5
    check(BIG, l, 256, torch.bfloat16, "cuda", seed=9, seq_idx=seq_idx.cuda())
    args = {k: v.float() for k, v in make_inputs(PLAIN, 8, seed=1).items()}
    with pytest.raises(ValueError, match=re.escape("backend='triton' for ssd needs CUDA tensors")):
        ssd(**args, backend="triton")


@pytest.mark.cuda
@cuda
def test_cuda_auto_picks_triton():
    from ssmkit.ops._backend import resolve_backend

    assert resolve_backend("ssd", "auto", torch.device("cuda")) == "triton"


def test_sizes_the_kernels_cannot_take_are_named():
    from ssmkit.ops.ssd.triton_ssd import unsupported_reason

    assert unsupported_reason(torch.bfloat16, 64, 128, 256) is None
    assert unsupported_reason(torch.bfloat16, 128, 256, 256) is None
    assert "p <= 128" in unsupported_reason(torch.bfloat16, 256, 64, 256)
    assert "n <= 256" in unsupported_reason(torch.bfloat16, 64, 512, 256)
    assert "chunk_size" in unsupported_reason(torch.float32, 64, 64, 100)
    assert "float16" in unsupported_reason(torch.float64, 64, 64, 256)
