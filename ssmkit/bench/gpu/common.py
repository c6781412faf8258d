"""What every GPU workload shares: a case to measure, the runner that measures it, and the row it becomes.

A `Case` names one measurement (workload, implementation, mode, L, batch) and carries a `setup` that builds
the inputs on the device and returns the callable to time, plus the work that callable does (bytes moved,
matmul FLOPs, exps) so the row can give its fraction of the in-run ceilings. The runner never lets one failing
implementation end the run: a Triton OutOfResources, an out-of-memory or a missing peer becomes the row's note.
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

DEVICE = "cuda"  # where the workloads run; a dry run of the cases' setups on small shapes may set "cpu"
TOKENS = 65_536  # B * L of W1, W2, W3 and W6 (guide section 5)
DEFAULT_LENGTHS = (1024, 2048, 4096, 16384, 65536)
BF16 = 2  # bytes per bf16 element
FP32 = 4


@dataclass
class Ceilings:
    """Measured in the same run: device copy (bytes read + written per second), bf16 matmul, exp2 throughput."""

    copy_TBps: float
    matmul_TFLOPs: float
    exp_per_s: float
    exp_source: str = "measured: Triton exp2 kernel"

    def as_dict(self) -> dict:
        return {
            "copy_TBps": round(self.copy_TBps, 3),
            "matmul_TFLOPs": round(self.matmul_TFLOPs, 1),
            "exp_Tper_s": round(self.exp_per_s / 1e12, 3),
            "exp_source": self.exp_source,
        }


Target = float | Callable[[Ceilings], float] | None


@dataclass
class Case:
    workload: str
    impl: str
    mode: str  # "fwd" | "fwd+bwd" | "step" | "decode"
    L: int | None
    batch: int | None
    setup: Callable[[], Callable[[], object]] | None  # None: the implementation is not available (see note)
    bytes_moved: float | None = None  # the fewest bytes the call must read and write
    flops: float | None = None  # matmul-type FLOPs, against the bf16 matmul ceiling
    exps: float | None = None  # exponentials, against the exp2 ceiling
    target_ms: Target = None
    note: str = ""
    graph: bool = False  # time replays of a CUDA graph of the call (decoding)
    measure_peak: bool = True
    tokens: int | None = None  # tokens produced per call: the row gets tokens_per_s
    extra: dict = field(default_factory=dict)
    check: Callable[[], str] | None = None  # after timing: a correctness line for the note (e.g. error vs a ref)


def require_cuda(workloads: list[str]) -> None:
    """Raise a ValueError naming the missing CUDA device when GPU workloads are asked for without one."""
    if torch.cuda.is_available():
        return
    built = torch.version.cuda
    why = f"torch {torch.__version__} was built without CUDA" if built is None else "no CUDA device is visible"
    raise ValueError(
        f"{', '.join(workloads)}: GPU workloads need a CUDA device, and torch.cuda.is_available() is False "
        f"({why}); run them on the GPU machine, or choose W0 (CPU)"
    )


def auto_backends(*ops: str) -> str:
    """What backend="auto" picks for these ops on the workloads' device, e.g. "selective_scan: triton"."""
    from ...ops._backend import resolve_backend

    picks = []
    for op in ops:
        try:
            picks.append(f"{op}: {resolve_backend(op, 'auto', torch.device(DEVICE))}")
        except KeyError:  # an op without a backend registry entry runs its one path
            picks.append(f"{op}: torch")
    return ", ".join(picks)


def _sig(x: float) -> float:
    return float(f"{x:.4g}")


def _frac(x: float) -> float:
    return float(f"{x:.3g}")


def base_row(case: Case) -> dict:
    return {"workload": case.workload, "impl": case.impl, "mode": case.mode, "L": case.L, "batch": case.batch}


def build_row(case: Case, ms: float, peak_bytes: int | None, ceilings: Ceilings, note: str | None = None) -> dict:
    """A measured case as a row: median, target and whether met, peak memory and fractions of the ceilings."""
    row = base_row(case)
    target = case.target_ms(ceilings) if callable(case.target_ms) else case.target_ms
    row["median_ms"] = _sig(ms)
    row["target_ms"] = None if target is None else _sig(target)
    row["met"] = None if target is None else ("yes" if ms <= target else "no")
    row["peak_gib"] = None if peak_bytes is None else round(peak_bytes / 2**30, 2)
    seconds = ms * 1e-3
    if case.bytes_moved:
        row["copy_frac"] = _frac(case.bytes_moved / seconds / (ceilings.copy_TBps * 1e12))
    if case.flops:
        row["mm_frac"] = _frac(case.flops / seconds / (ceilings.matmul_TFLOPs * 1e12))
    if case.exps:
        row["exp_frac"] = _frac(case.exps / seconds / ceilings.exp_per_s)
    if case.tokens:
        row["tokens_per_s"] = round(case.tokens / seconds)
    row.update(case.extra)
    row["note"] = case.note if note is None else note
    return row


def failed_row(case: Case, exc: BaseException, ceilings: Ceilings) -> dict:
    row = base_row(case)
    target = case.target_ms(ceilings) if callable(case.target_ms) else case.target_ms
    row["target_ms"] = None if target is None else _sig(target)
    message = " ".join(str(exc).split())[:240]
    row["note"] = f"failed: {type(exc).__name__}: {message}"
    return row


def unavailable_row(case: Case) -> dict:
    row = base_row(case)
    row["note"] = case.note
    return row


class DeviceTimer:
    """Medians of triton.testing.do_bench (it flushes L2 between calls), CUDA graphs, torch's peak allocation."""

    def __init__(self, warmup_ms: int = 25, rep_ms: int = 100):
        self.warmup_ms, self.rep_ms = warmup_ms, rep_ms

    def allocated(self) -> int:
        torch.cuda.synchronize()
        return torch.cuda.memory_allocated()

    def peak_bytes(self, fn: Callable[[], object], base: int) -> int:
        """Peak allocation during one call, over `base` (what was allocated before the case's setup)."""
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        fn()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base

    def graph(self, fn: Callable[[], object]) -> Callable[[], object]:
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(3):  # capture needs the allocator and any lazy state warmed on a side stream
                fn()
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            fn()
        return graph.replay

    def time_ms(self, fn: Callable[[], object]) -> float:
        from triton.testing import do_bench

        return float(do_bench(fn, warmup=self.warmup_ms, rep=self.rep_ms, return_mode="median"))

    def cleanup(self) -> None:
        gc.collect()
        torch.cuda.synchronize()
        torch.cuda.empty_cache()


def run_case(case: Case, timer, ceilings: Ceilings) -> dict:
    """Measure one case; any exception (compile failure, out of resources or memory) becomes the row's note."""
    if case.setup is None:
        return unavailable_row(case)
    fn = None
    try:
        base = timer.allocated()
        fn = case.setup()
        fn()  # compile and autotune outside the timed region
        peak = timer.peak_bytes(fn, base) if case.measure_peak else None
        note = case.note
        if case.graph:
            try:
                fn = timer.graph(fn)
            except Exception as exc:  # timed eagerly instead, and said so
                note = f"{note}; CUDA graph capture failed ({type(exc).__name__}: {exc}), eager launches timed"
                note = note.lstrip("; ")
        ms = timer.time_ms(fn)
        if case.check is not None:
            fn = None
            timer.cleanup()
            try:
                note = f"{note}; {case.check()}"
            except Exception as exc:
                note = f"{note}; check failed ({type(exc).__name__}: {exc})"
        return build_row(case, ms, peak, ceilings, note)
    except Exception as exc:
        return failed_row(case, exc, ceilings)
    finally:
        del fn
        timer.cleanup()


def forward_backward(
    call: Callable[..., torch.Tensor], inputs: dict, mode: str, params: list[torch.Tensor] = ()
) -> Callable[[], object]:
    """The callable to time: call(**inputs), and for "fwd+bwd" also the gradients of every input that needs one
    and of `params` (a module's parameters)."""
    if mode == "fwd":

        def fwd():
            with torch.no_grad():
                return call(**inputs)

        return fwd
    leaves = [v for v in inputs.values() if isinstance(v, torch.Tensor) and v.requires_grad] + list(params)
    with torch.no_grad():
        grad_out = torch.randn_like(call(**inputs))

    def fwd_bwd():
        return torch.autograd.grad(call(**inputs), leaves, grad_out)

    return fwd_bwd


def crossover(rows: list[dict], ours: tuple[str, str], theirs: tuple[str, str], mode: str) -> str | None:
    """The shortest measured L from which `ours` is faster than `theirs` at every longer measured L.

    ours / theirs: (workload, impl). None when either was not measured at two common lengths or more.
    """
    times = {}
    for key in (ours, theirs):
        times[key] = {
            r["L"]: r["median_ms"]
            for r in rows
            if (r["workload"], r["impl"]) == key and r.get("mode") == mode and r.get("median_ms") is not None
        }
    common = sorted(set(times[ours]) & set(times[theirs]))
    if not common:
        return None
    start = None
    for length in reversed(common):
        if times[ours][length] < times[theirs][length]:
            start = length
        else:
            break
    label = f"{ours[0]} {ours[1]} vs {theirs[0]} {theirs[1]}, {mode}"
    if start is None:
        return f"{label}: slower at every measured L ({', '.join(map(str, common))})"
    return f"{label}: faster from L = {start} on (measured: {', '.join(map(str, common))})"


def ratio_lines(rows: list[dict], workload: str, ours: str, peer: str) -> list[str]:
    """peer_ms / ours_ms per (mode, L) where both were measured in this run."""
    index = {
        (r["impl"], r.get("mode"), r.get("L"), r.get("batch")): r["median_ms"]
        for r in rows
        if r["workload"] == workload and r.get("median_ms") is not None
    }
    parts = []
    for (impl, mode, length, batch), ms in index.items():
        if impl != ours:
            continue
        other = index.get((peer, mode, length, batch))
        if other:
            where = f"L={length}" if length is not None else f"batch {batch}"
            parts.append(f"{mode} {where}: {other / ms:.2f}x")
    return [f"{workload} {ours} speed vs {peer} (their time / ours): " + ", ".join(parts)] if parts else []
