"""The exp2 ceiling: a Triton kernel that does nothing but chains of exp2 in registers.

Each element runs CHAINS independent chains x <- exp2(-x) for ITERS steps (x stays in [0.5, 1]), so the
special-function units, not memory or latency, bound it. Imported on use: it needs Triton.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

CHAINS = 4


@triton.jit
def _exp2_chains(out_ptr, ITERS: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    a = (offs % 1024).to(tl.float32) * (1.0 / 1024.0)  # (BLOCK,) distinct starting points in [0, 1)
    b = a + 0.125
    c = a + 0.25
    d = a + 0.375
    for _ in range(ITERS):
        a = tl.exp2(-a)
        b = tl.exp2(-b)
        c = tl.exp2(-c)
        d = tl.exp2(-d)
    tl.store(out_ptr + offs, a + b + c + d)


def exp2_chains(out: torch.Tensor, iters: int, block: int = 1024) -> int:
    """Fill out (numel a multiple of `block`, fp32) with the sum of the chains' ends; returns the exp2 count."""
    if out.numel() % block:
        raise ValueError(f"out: expected a multiple of {block} elements, got {out.numel()}")
    _exp2_chains[(out.numel() // block,)](out, ITERS=iters, BLOCK=block, num_warps=4)
    return out.numel() * iters * CHAINS


def exp2_chains_ref(numel: int, iters: int) -> torch.Tensor:
    """The same chains in fp64 on the host (for the interpreter test)."""
    a = (torch.arange(numel, dtype=torch.float64) % 1024) / 1024.0
    xs = [a, a + 0.125, a + 0.25, a + 0.375]
    for _ in range(iters):
        xs = [torch.exp2(-x) for x in xs]
    return sum(xs)
