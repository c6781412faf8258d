"""Which output of the Triton SSD drifts, and for which shapes: relative L2 error of y, the final state and every
gradient against the torch chunked path in fp64, for a few shapes that single out chunks, blocks and groups.

    python3 scripts/gpu/ssd_diag.py
"""

from __future__ import annotations

import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))
from ssmkit.ops.ssd import ssd

DEV = "cuda" if torch.cuda.is_available() else "cpu"  # cpu: TRITON_INTERPRET=1, the last shape only
NAMES = ("x", "dt", "A", "B", "C", "D", "z", "dt_bias", "initial_state")


def inputs(b, l, h, p, g, n, seed):
    gen = torch.Generator().manual_seed(seed)

    def rnd(*s):
        return torch.randn(*s, generator=gen, dtype=torch.float64)

    return {
        "x": rnd(b, l, h, p),
        "dt": rnd(b, l, h) * 0.5 - 1.0,
        "A": -(0.3 + 1.2 * torch.rand(h, generator=gen).double()),
        "B": rnd(b, l, g, n) * 0.5,
        "C": rnd(b, l, g, n) * 0.5,
        "D": rnd(h, p),
        "z": rnd(b, l, h, p),
        "dt_bias": rnd(h) * 0.5,
        "initial_state": rnd(b, h, p, n),
    }


def run(args, dtype, backend, chunk, gy, gs):
    leaves = {
        k: v.to(DEV).to(torch.float32 if (k == "initial_state" and dtype != torch.float64) else dtype).requires_grad_()
        for k, v in args.items()
    }
    y, s = ssd(**leaves, chunk_size=chunk, dt_softplus=True, dt_limit=(0.15, 0.9), return_final_state=True,
               backend=backend)  # fmt: skip
    got = torch.autograd.grad((y, s), list(leaves.values()), (gy.to(DEV).to(y.dtype), gs.to(DEV).to(s.dtype)))
    return {"y": y, "state": s, **{f"d{k}": t for k, t in zip(leaves, got)}}


def main() -> None:
    shapes = [  # (b, l, h, p, g, n, chunk)
        (2, 257, 8, 64, 2, 128, 256),
        (1, 257, 2, 64, 1, 128, 256),
        (1, 257, 2, 16, 1, 16, 64),
        (1, 128, 2, 16, 1, 16, 128),
        (1, 256, 2, 16, 1, 16, 128),
        (2, 200, 4, 32, 2, 32, 64),
    ]
    for b, l, h, p, g, n, chunk in shapes if DEV == "cuda" else shapes[-1:]:
        args = inputs(b, l, h, p, g, n, seed=l)
        gen = torch.Generator().manual_seed(1)
        gy = torch.randn(b, l, h, p, generator=gen, dtype=torch.float64)
        gs = torch.randn(b, h, p, n, generator=gen, dtype=torch.float64)
        for dtype in (torch.float32, torch.bfloat16):
            a = {k: v if k == "initial_state" else v.to(dtype).double() for k, v in args.items()}
            exact = run(a, torch.float64, "torch", chunk, gy.to(dtype).double(), gs)
            fast = run(a, dtype, "triton", chunk, gy.to(dtype).double(), gs)
            errs = {k: ((fast[k].double() - exact[k]).norm() / exact[k].norm()).item() for k in exact}
            worst = max(errs, key=errs.get)
            line = " ".join(f"{k}={v:.1e}" for k, v in errs.items())
            print(f"b{b} l{l} h{h} p{p} g{g} n{n} Q{chunk} {str(dtype)[6:]:8s} worst {worst}: {line}", flush=True)


if __name__ == "__main__":
    main()
