"""W1 on the GPU machine: the Triton selective scan, fwd and fwd+bwd, against the in-run ceilings.

    python3 scripts/gpu/bench_scan.py [--out DIR] [--quick]

W1: d = 4096, n = 16, g = 1, z gate, D, dt_bias + softplus, bf16, B * L = 65,536 tokens. Medians of
triton.testing.do_bench. Ceilings: a 2 GiB device-to-device copy (bytes read + written). Also sweeps a few tile
configurations at two lengths and reports the exp throughput the forward implies (one exp per token, channel,
state: 4.3e9 of them; the backward does two more).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch
import triton

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))
from ssmkit.ops.selective_scan import selective_scan, triton_scan

D_MODEL, N, TOKENS = 4096, 16, 65536


def bench(fn):
    return triton.testing.do_bench(fn, warmup=25, rep=200, return_mode="median")


def copy_ceiling() -> float:
    src = torch.randn(1 << 30, dtype=torch.bfloat16, device="cuda")
    dst = torch.empty_like(src)
    ms = bench(lambda: dst.copy_(src))
    return 2 * src.numel() * 2 / ms / 1e9  # TB/s


def w1_inputs(L: int):
    b = TOKENS // L
    g = torch.Generator(device="cuda").manual_seed(0)

    def r(*s, dtype=torch.bfloat16):
        return torch.randn(*s, device="cuda", generator=g).to(dtype)

    return dict(
        u=r(b, L, D_MODEL),
        dt=r(b, L, D_MODEL) * 0.5 - 2.0,
        A=-torch.rand(D_MODEL, N, device="cuda", generator=g) * 15 - 1,
        B=r(b, L, 1, N),
        C=r(b, L, 1, N),
        D=r(D_MODEL, dtype=torch.float32),
        z=r(b, L, D_MODEL),
        dt_bias=r(D_MODEL, dtype=torch.float32) * 0.1,
    )


def time_w1(L: int) -> dict:
    x = w1_inputs(L)
    fwd = bench(lambda: selective_scan(**x, dt_softplus=True, backend="triton"))
    leaves = {k: v.requires_grad_(True) for k, v in x.items()}
    dy = torch.randn_like(x["u"])

    def fb():
        y = selective_scan(**leaves, dt_softplus=True, backend="triton")
        y.backward(dy)

    fwdbwd = bench(fb)
    torch.cuda.reset_peak_memory_stats()
    fb()
    peak = torch.cuda.max_memory_allocated() / 2**30
    return {"L": L, "b": TOKENS // L, "fwd_ms": fwd, "fwdbwd_ms": fwdbwd, "peak_gib": peak}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.environ.get("OUT", "."))
    ap.add_argument("--quick", action="store_true", help="no config sweep")
    args = ap.parse_args()
    t_start = time.time()
    res = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "triton": triton.__version__}
    res["copy_TBps"] = copy_ceiling()
    bytes_fwd = 4 * TOKENS * D_MODEL * 2  # u, dt, z read, y written (bf16)
    res["fwd_floor_ms"] = bytes_fwd / res["copy_TBps"] / 1e9
    print(f"device copy: {res['copy_TBps']:.2f} TB/s; W1 fwd byte floor {res['fwd_floor_ms']:.3f} ms", flush=True)
    rows = []
    for L in (1024, 4096, 16384, 65536):
        row = time_w1(L)
        rows.append(row)
        print(
            f"L={L:6d} b={row['b']:3d} fwd {row['fwd_ms']:.3f} ms fwd+bwd {row['fwdbwd_ms']:.3f} ms "
            f"peak {row['peak_gib']:.2f} GiB  ({time.time() - t_start:.0f}s)",
            flush=True,
        )
    res["w1"] = rows
    sweep = []
    if not args.quick:
        base = {k: getattr(triton_scan, k) for k in ("TT", "BD_FWD", "BD_BWD", "NUM_WARPS_FWD", "ATOMIC_DBC")}
        configs = [
            dict(BD_FWD=32, NUM_WARPS_FWD=4),
            dict(BD_FWD=16, NUM_WARPS_FWD=2),
            dict(ATOMIC_DBC=False, BD_BWD=8),
            dict(TT=32, BD_FWD=8, BD_BWD=4),
        ]
        for cfg in configs:
            for k, v in base.items():
                setattr(triton_scan, k, v)
            for k, v in cfg.items():
                setattr(triton_scan, k, v)
            for L in (4096, 65536):
                try:
                    row = dict(time_w1(L), **cfg)
                except Exception as exc:  # a config that fails to compile is reported, not fatal
                    row = dict(L=L, error=repr(exc)[:300], **cfg)
                sweep.append(row)
                print("sweep", row, f"({time.time() - t_start:.0f}s)", flush=True)
        for k, v in base.items():
            setattr(triton_scan, k, v)
    res["sweep"] = sweep
    exps = TOKENS * D_MODEL * N
    print("\n| L | b | fwd ms | fwd+bwd ms | fwd: copy-floor fraction | fwd exp rate (1e12/s) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        frac = res["fwd_floor_ms"] / r["fwd_ms"]
        rate = exps / r["fwd_ms"] / 1e9
        print(f"| {r['L']} | {r['b']} | {r['fwd_ms']:.3f} | {r['fwdbwd_ms']:.3f} | {frac:.2f} | {rate:.2f} |")
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "bench_scan.json"), "w") as f:
        json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
