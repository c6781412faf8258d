"""How close each SSD output is to the tolerance rule's bound: error / bound for y, the final state and every
gradient, bf16 inputs, per forward path (the tests pass below 1.0; a precision change should keep the worst well under).

    python3 scripts/gpu/rule_margins.py                              # on the GPU
    TRITON_INTERPRET=1 python3 scripts/gpu/rule_margins.py --device cpu --w2-lengths 512   # interpreter, minutes

The cases are the bf16 tests' full one (tests/ops/test_ssd_triton.py: silu(z) gate, D per channel, softplus with a
clamping dt_limit, an initial state, g 2; two seeds), one with p 128, n 128, g 4, and W2's head shape (h 64, p 64,
n 128, g 1) at batch 1, where margins are thinnest: they grow with the number of heads and the length (the forward's
scores rounded once to bf16 put y at 0.54 of the bound at the tests' sizes, 0.94 at W2's shape, L 4K, on the H200).
"""

from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))
from ssmkit.ops.ssd import triton_fused
from tests.ops.test_ssd_triton import NAMES, Case, make_inputs, options, run, seeds_for
from tests.rules import max_err, rule_bound

W2_HEADS = Case(b=1, h=64, p=64, g=1, n=128, D="head", z=False, softplus=True, init=False)
PATH_MIN_PROGRAMS = {"fused": 0, "staged": 2**62}  # triton_fused.FUSED_MIN_PROGRAMS for each forward path


def ratios(case: Case, l: int, chunk: int, seed: int, path: str, device: str) -> dict[str, float]:
    """{output name: error / the rule's bound} for one bf16 case, as the tests judge it."""
    triton_fused.FUSED_MIN_PROGRAMS = PATH_MIN_PROGRAMS[path]
    dtype = torch.bfloat16
    inputs = make_inputs(case, l, seed)
    inputs = {k: v if k == "initial_state" else v.to(dtype).double() for k, v in inputs.items()}
    gy, gs = seeds_for(case, l, seed)
    seeds = (gy.to(dtype).double(), gs.float().double())
    kw = options(case)
    exact = run(inputs, torch.float64, device, seeds, backend="reference", **kw)
    same_dtype = run(inputs, dtype, device, seeds, backend="reference", **kw)
    fast = run(inputs, dtype, device, seeds, backend="triton", chunk_size=chunk, **kw)
    pairs = {"y": (fast.y, same_dtype.y, exact.y), "state": (fast.state, same_dtype.state, exact.state)}
    pairs.update({k: (fast.grads[k], same_dtype.grads[k], exact.grads[k]) for k in NAMES if k in exact.grads})
    out = {}
    for name, (got, want, ref) in pairs.items():
        if got.dtype == torch.float32:  # fp32 states are judged at bf16, as in the tests
            got, want = got.to(dtype), want.to(dtype)
        out[name] = max_err(got, ref) / rule_bound(max_err(want, ref), ref, got.dtype)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--paths", default="fused,staged", help="forward paths, comma-separated")
    parser.add_argument("--w2-lengths", default="2048", help="lengths of the W2-shaped case (fused path)")
    args = parser.parse_args()
    wide = Case(b=2, h=4, p=128, g=4, n=128, D="head")
    cases = [(Case(), 1000, 256, 131), (Case(), 1000, 256, 9), (wide, 777, 128, 5)]
    runs = [(path, *c) for path in args.paths.split(",") for c in cases]
    runs += [("fused", W2_HEADS, int(v), 256, 3) for v in args.w2_lengths.split(",") if v]
    for path, case, l, chunk, seed in runs:
        got = ratios(case, l, chunk, seed, path, args.device)
        worst = max(got, key=got.get)
        shape = f"b {case.b} h {case.h} p {case.p} g {case.g} n {case.n}"
        print(
            f"{path} {shape} l {l} chunk {chunk} seed {seed}: worst {worst} {got[worst]:.2f} | "
            + " ".join(f"{k} {v:.2f}" for k, v in got.items()),
            flush=True,
        )


if __name__ == "__main__":
    main()
