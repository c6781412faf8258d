"""Peak memory of one call: on CUDA the allocator's own counters, above what was live before; on CPU (which has no
peak counter) the profiler's allocation and free events during the call, summed in time order.

    result, peak_bytes = peak_memory(fn, device)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import torch
from torch.autograd import DeviceType
from torch.autograd.profiler import profile

T = TypeVar("T")

_CPU_DEVICE_TYPES = (DeviceType.CPU, DeviceType.MKLDNN, DeviceType.IDEEP)


def peak_memory(fn: Callable[[], T], device: torch.device | str) -> tuple[T, int]:
    """Run fn() once; return its result and the peak bytes allocated on `device` above the bytes live before.

    The result stays alive, so it counts. CUDA: torch.cuda.max_memory_allocated minus the baseline. CPU: see
    `cpu_peak_bytes`.
    """
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        out = fn()
        torch.cuda.synchronize(device)
        return out, torch.cuda.max_memory_allocated(device) - base
    if device.type == "cpu":
        return cpu_peak_bytes(fn)
    raise ValueError(f"device: expected a cpu or cuda device, got {device}")


def cpu_peak_bytes(fn: Callable[[], T]) -> tuple[T, int]:
    """Run fn() under the autograd profiler (Kineto, profile_memory=True); return its result and the peak of the
    running sum of the CPU allocation (+nbytes) and free (-nbytes) events, in time order, starting from 0.

    Every allocation through the CPU allocator is seen, kernel workspaces included (a TorchDispatchMode would
    see op outputs only). The profiler cannot size blocks allocated before it started, so frees of tensors that
    existed before the call are not subtracted: the figure is the peak of bytes allocated during the call and
    live at once, which equals the CUDA figure unless fn frees older tensors (then it is an upper bound).
    """
    with profile(profile_memory=True, use_kineto=True) as prof:
        out = fn()
    events = [e for e in prof.kineto_results.events() if e.name() == "[memory]"]
    events = [e for e in events if e.device_type() in _CPU_DEVICE_TYPES]
    events.sort(key=_start_time)
    live = peak = 0
    for e in events:
        live += e.nbytes()
        peak = max(peak, live)
    return out, peak


def _start_time(event) -> int:
    start_ns = getattr(event, "start_ns", None)
    return start_ns() if start_ns is not None else event.start_us() * 1000
