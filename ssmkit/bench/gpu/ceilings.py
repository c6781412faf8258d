"""The in-run ceilings every GPU row is a fraction of (guide section 5): a 2 GiB device-to-device copy
(bytes read + bytes written per second), an 8192^3 bf16 matmul on random data, and an exp2 kernel.
"""

from __future__ import annotations

import torch

from .common import Ceilings, DeviceTimer

COPY_BYTES = 2 * 2**30
MATMUL_N = 8192


def _copy_ms(timer: DeviceTimer) -> float:
    src = torch.empty(COPY_BYTES // 2, device="cuda", dtype=torch.bfloat16).normal_()
    dst = torch.empty_like(src)
    return timer.time_ms(lambda: dst.copy_(src))


def _matmul_ms(timer: DeviceTimer) -> float:
    a = torch.randn(MATMUL_N, MATMUL_N, device="cuda", dtype=torch.bfloat16)  # random data: zeros run faster
    b = torch.randn(MATMUL_N, MATMUL_N, device="cuda", dtype=torch.bfloat16)
    return timer.time_ms(lambda: a @ b)


def measure(timer: DeviceTimer) -> Ceilings:
    copy_ms = _copy_ms(timer)
    timer.cleanup()
    mm_ms = _matmul_ms(timer)
    timer.cleanup()
    exp_per_s, source = exp_ceiling(timer)
    timer.cleanup()
    return Ceilings(
        copy_TBps=2 * COPY_BYTES / (copy_ms * 1e-3) / 1e12,
        matmul_TFLOPs=2 * MATMUL_N**3 / (mm_ms * 1e-3) / 1e12,
        exp_per_s=exp_per_s,
        exp_source=source,
    )


def exp_ceiling(timer: DeviceTimer) -> tuple[float, str]:
    """exp2 per second from the chains kernel; if it cannot run, an estimate from the SM count and clock."""
    props = torch.cuda.get_device_properties(0)
    try:
        from .exp_kernel import exp2_chains

        out = torch.empty(props.multi_processor_count * 16 * 1024, device="cuda", dtype=torch.float32)
        count = exp2_chains(out, iters=512)
        ms = timer.time_ms(lambda: exp2_chains(out, iters=512))
        return count / (ms * 1e-3), "measured: Triton exp2 kernel (independent chains in registers)"
    except Exception as exc:
        # 16 exp2 per clock per SM (the special-function units of sm_80 / sm_90) at an assumed 1.98 GHz
        estimate = props.multi_processor_count * 16 * 1.98e9
        return estimate, f"estimated (16/clock/SM at 1.98 GHz): the exp2 kernel failed ({type(exc).__name__})"
