"""One sequence of 1,048,576 tokens at batch 1 through the Triton scan and SSD, forward and backward (issues 4, 5).

    python3 scripts/gpu/long_sequence.py [--only scan|ssd]

Scan: d 4096, n 16, g 1, z, D, dt_bias + softplus. SSD: h 64, p 64, n 128, g 1, chunk 256, D, dt_bias + softplus.
bf16 inputs. Prints the wall time of the first call (compilation included), the peak memory and whether every
gradient is finite; for SSD also how far its forward (walked in segments) is from the staged path's. A check that
the lengths run without running out of memory and index right, not a timing benchmark.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))
from ssmkit.ops.selective_scan import selective_scan
from ssmkit.ops.ssd import ssd, triton_fused

L = 1 << 20


def _random(gen: torch.Generator):
    def r(*shape, dtype=torch.bfloat16):
        return torch.randn(*shape, device="cuda", generator=gen).to(dtype)

    return r


def _run(name: str, fn, leaves: dict) -> None:
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    y = fn()
    torch.cuda.synchronize()
    t_fwd = time.perf_counter() - start
    y.backward(torch.ones_like(y))
    torch.cuda.synchronize()
    t_all = time.perf_counter() - start
    finite = all(torch.isfinite(v.grad).all().item() for v in leaves.values() if v.grad is not None)
    peak = torch.cuda.max_memory_allocated() / 2**30
    print(f"{name} L={L}: fwd {t_fwd * 1e3:.0f} ms, fwd+bwd {t_all * 1e3:.0f} ms (first call), peak {peak:.1f} GiB, "
          f"grads finite: {finite}", flush=True)  # fmt: skip


def scan(r, gen) -> None:
    d, n = 4096, 16
    x = dict(
        u=r(1, L, d), dt=r(1, L, d) * 0.5 - 2.0, A=-torch.rand(d, n, device="cuda", generator=gen) * 15 - 1,
        B=r(1, L, 1, n), C=r(1, L, 1, n), D=r(d, dtype=torch.float32), z=r(1, L, d),
        dt_bias=r(d, dtype=torch.float32) * 0.1,
    )  # fmt: skip
    leaves = {k: v.requires_grad_(True) for k, v in x.items()}
    _run("selective_scan triton", lambda: selective_scan(**leaves, dt_softplus=True, backend="triton"), leaves)


def ssd_long(r, gen) -> None:
    h, p, n = 64, 64, 128
    x = dict(
        x=r(1, L, h, p), dt=r(1, L, h) * 0.5 - 2, A=-torch.rand(h, device="cuda", generator=gen) * 4 - 0.5,
        B=r(1, L, 1, n), C=r(1, L, 1, n), D=r(h, dtype=torch.float32), dt_bias=r(h, dtype=torch.float32) * 0.1,
    )  # fmt: skip
    leaves = {k: v.requires_grad_(True) for k, v in x.items()}
    _run("ssd triton", lambda: ssd(**leaves, dt_softplus=True, chunk_size=256, backend="triton"), leaves)
    # the forward walked in segments (the default at batch 1) against the staged path (every chunk in parallel):
    # offsets into x pass 2^31 elements here, which no test size reaches
    with torch.no_grad():
        walked = ssd(**x, dt_softplus=True, chunk_size=256, backend="triton").float()
        default = triton_fused.FUSED_MIN_PROGRAMS
        triton_fused.FUSED_MIN_PROGRAMS = 2**62
        try:
            staged = ssd(**x, dt_softplus=True, chunk_size=256, backend="triton").float()
        finally:
            triton_fused.FUSED_MIN_PROGRAMS = default
    diff = ((walked - staged).abs().max() / staged.abs().max()).item()
    print(f"ssd forward, walked in segments against staged: max difference {diff:.1e} of max |y|", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", choices=("scan", "ssd"))
    args = ap.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("long_sequence.py: needs a CUDA device (torch.cuda.is_available() is False)")
    gen = torch.Generator(device="cuda").manual_seed(0)
    r = _random(gen)
    if args.only in (None, "scan"):
        scan(r, gen)
        torch.cuda.empty_cache()
    if args.only in (None, "ssd"):
        ssd_long(r, gen)


if __name__ == "__main__":
    main()
