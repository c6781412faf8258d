"""Timing and memory measurement: medians of repeated runs, in-run device ceilings, peak memory."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass
class Timing:
    median_ms: float
    min_ms: float
    repeats: int


def time_cpu(fn: Callable[[], object], *, warmup: int = 1, repeats: int = 5, min_seconds: float = 0.0) -> Timing:
    """Median wall time of `fn` on the host; runs at least `repeats` times and at least `min_seconds` in all."""
    for _ in range(warmup):
        fn()
    times = []
    start = time.perf_counter()
    while len(times) < repeats or time.perf_counter() - start < min_seconds:
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return Timing(statistics.median(times), min(times), len(times))


def time_cuda(fn: Callable[[], object], *, warmup: int = 3, repeats: int = 20) -> Timing:
    """Median of CUDA-event timings (the device's own clock), after warmup; caches are not flushed."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return Timing(statistics.median(times), min(times), len(times))


def time_fn(fn: Callable[[], object], device: torch.device, **kw) -> Timing:
    return time_cuda(fn, **kw) if device.type == "cuda" else time_cpu(fn, **kw)


def peak_rss_bytes() -> int:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def current_rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    import os

    return pages * os.sysconf("SC_PAGE_SIZE")
