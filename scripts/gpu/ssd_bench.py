"""W2 on the GPU machine: ssd backend="triton" forward and forward+backward, SDPA (W3) and the in-run ceilings.

    python3 scripts/gpu/ssd_bench.py [--out DIR] [--lengths 1024 4096 16384 65536]

W2: h = 64, p = 64, n = 128, g = 1, chunk 256, D (h,), dt_bias + softplus, bf16, B * L = 65,536 tokens.
W3: F.scaled_dot_product_attention, causal, 16 heads x 128, bf16, the same token counts.
Medians of triton.testing.do_bench; prints a table and writes ssd_bench.json under --out.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import torch
import torch.nn.functional as F
import triton
from triton.testing import do_bench

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))
from ssmkit.ops.ssd import ssd

TOKENS = 65536


def ceilings() -> dict:
    n = (2 << 30) // 2  # 2 GiB of bf16
    a = torch.empty(n, device="cuda", dtype=torch.bfloat16).normal_()
    b = torch.empty_like(a)
    t_copy = do_bench(lambda: b.copy_(a), return_mode="median")
    m = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    k = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    t_mm = do_bench(lambda: m @ k, return_mode="median")
    return {"copy_TBps": 2 * (2 << 30) / t_copy / 1e9, "matmul_TFLOPs": 2 * 8192**3 / t_mm / 1e9}


def w2_inputs(L: int, grad: bool) -> dict:
    b, h, p, n, g = TOKENS // L, 64, 64, 128, 1
    dev, bf = "cuda", torch.bfloat16

    def leaf(t):
        return t.requires_grad_(grad)

    return {
        "x": leaf(torch.randn(b, L, h, p, device=dev, dtype=bf)),
        "dt": leaf((torch.randn(b, L, h, device=dev) * 0.5 - 2.0).to(bf)),
        "A": leaf(-torch.empty(h, device=dev).uniform_(1.0, 16.0)),
        "B": leaf(torch.randn(b, L, g, n, device=dev, dtype=bf)),
        "C": leaf(torch.randn(b, L, g, n, device=dev, dtype=bf)),
        "D": leaf(torch.randn(h, device=dev)),
        "dt_bias": leaf(torch.randn(h, device=dev) * 0.5),
    }


def bench_w2(L: int) -> dict:
    kw = {"chunk_size": 256, "dt_softplus": True, "backend": "triton"}
    with torch.no_grad():
        args = w2_inputs(L, grad=False)
        t_fwd = do_bench(lambda: ssd(**args, **kw), return_mode="median")
    args = w2_inputs(L, grad=True)
    y = ssd(**args, **kw)
    gy = torch.randn_like(y)

    def fwd_bwd():
        out = ssd(**args, **kw)
        torch.autograd.grad(out, list(args.values()), gy)

    t_fb = do_bench(fwd_bwd, return_mode="median")
    torch.cuda.reset_peak_memory_stats()
    fwd_bwd()
    peak = torch.cuda.max_memory_allocated() / 2**30
    return {"fwd_ms": t_fwd, "fwd_bwd_ms": t_fb, "peak_GiB": peak}


def bench_sdpa(L: int) -> dict:
    b = TOKENS // L
    q, k, v = (torch.randn(b, 16, L, 128, device="cuda", dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
    with torch.no_grad():
        t_fwd = do_bench(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True), return_mode="median")
    go = torch.randn(b, 16, L, 128, device="cuda", dtype=torch.bfloat16)

    def fb():
        o = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        torch.autograd.grad(o, (q, k, v), go)

    return {"fwd_ms": t_fwd, "fwd_bwd_ms": do_bench(fb, return_mode="median")}


def check_w2(L: int = 4096) -> dict:
    """Triton bf16 against the torch chunked path on fp32 copies (relative error of y and of each gradient)."""
    args = w2_inputs(L, grad=True)
    args = {k: v[:1] if v.dim() > 1 else v for k, v in args.items()}  # batch 1
    args = {k: v.detach().requires_grad_() for k, v in args.items()}
    ref_args = {k: v.detach().float().requires_grad_() for k, v in args.items()}
    kw = {"chunk_size": 256, "dt_softplus": True}
    y = ssd(**args, backend="triton", **kw)
    y_ref = ssd(**ref_args, backend="torch", **kw)
    gy = torch.randn_like(y_ref)
    g = torch.autograd.grad(y, list(args.values()), gy.to(y.dtype))
    g_ref = torch.autograd.grad(y_ref, list(ref_args.values()), gy)

    def rel(a, b):
        return ((a.float() - b.float()).norm() / b.float().norm()).item()

    out = {"y": rel(y, y_ref)}
    out.update({f"d{k}": rel(a, b) for k, a, b in zip(args, g, g_ref)})
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=os.environ.get("OUT", "bench-out"))
    parser.add_argument("--lengths", type=int, nargs="+", default=[1024, 4096, 16384, 65536])
    parser.add_argument("--commit", default="", help="the commit measured (the device tree has no .git)")
    opts = parser.parse_args()
    os.makedirs(opts.out, exist_ok=True)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    result = {
        "device": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "triton": triton.__version__,
        "commit": opts.commit or commit or "unknown",
        "date": time.strftime("%Y-%m-%d"),
        "ceilings": ceilings(),
        "check_vs_torch_fp32": check_w2(),
        "w2": {},
        "w3_sdpa": {},
    }
    for L in opts.lengths:
        result["w2"][L] = bench_w2(L)
        result["w3_sdpa"][L] = bench_sdpa(L)
        torch.cuda.empty_cache()
    with open(os.path.join(opts.out, "ssd_bench.json"), "w") as f:
        json.dump(result, f, indent=1)
    c = result["ceilings"]
    # W2 fwd moves at least x and y once (bf16): 2 * 65536 * 64 * 64 * 2 bytes
    floor_ms = 2 * TOKENS * 64 * 64 * 2 / (c["copy_TBps"] * 1e12) * 1e3
    print(f"{result['device']}  torch {result['torch']}  triton {result['triton']}  commit {result['commit']}")
    print(f"ceilings: copy {c['copy_TBps']:.2f} TB/s, bf16 matmul {c['matmul_TFLOPs']:.0f} TFLOP/s;"
          f" W2 fwd bytes floor {floor_ms:.3f} ms")  # fmt: skip
    print("check vs torch fp32 (relative L2):", {k: f"{v:.1e}" for k, v in result["check_vs_torch_fp32"].items()})
    print(f"{'L':>6} | {'W2 fwd':>8} {'fwd+bwd':>8} {'peak GiB':>8} | {'SDPA fwd':>8} {'fwd+bwd':>8}")
    for L in opts.lengths:
        w, a = result["w2"][L], result["w3_sdpa"][L]
        print(f"{L:>6} | {w['fwd_ms']:8.3f} {w['fwd_bwd_ms']:8.3f} {w['peak_GiB']:8.2f} |"
              f" {a['fwd_ms']:8.3f} {a['fwd_bwd_ms']:8.3f}")  # fmt: skip


if __name__ == "__main__":
    main()
