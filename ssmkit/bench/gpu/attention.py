"""W3: causal attention through `F.scaled_dot_product_attention`, 16 heads x 128, bf16, B * L = 65,536 tokens:
the in-run comparison for W1 and W2 (the crossover lengths are in the run's summary).

Work counted: FLOPs of the causal half, 2 * 2 * b h L^2 p / 2 forward (QK^T and PV); the backward as 2.5x the
forward (five matmuls against two), so fwd+bwd is 3.5x. Bytes: q, k, v read and o written (fwd); then q, k, v,
o, do read and dq, dk, dv written (bwd).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from . import common
from .common import BF16, TOKENS, Case, forward_backward

HEADS, HEAD_DIM = 16, 128
MODES = ("fwd", "fwd+bwd")


def inputs(length: int, grad: bool) -> dict:
    b = TOKENS // length
    gen = torch.Generator(device=common.DEVICE).manual_seed(0)
    return {
        name: torch.randn(
            b, HEADS, length, HEAD_DIM, device=common.DEVICE, generator=gen, dtype=torch.bfloat16
        ).requires_grad_(grad)
        for name in ("query", "key", "value")
    }


def work(length: int, mode: str) -> dict:
    b = TOKENS // length
    fwd_flops = 2 * b * HEADS * length * length * HEAD_DIM
    elems = b * HEADS * length * HEAD_DIM
    return {
        "flops": fwd_flops * (1 if mode == "fwd" else 3.5),
        "bytes_moved": elems * BF16 * (4 if mode == "fwd" else 12),
    }


def _sdpa(length: int, mode: str):
    def call(**qkv):
        return F.scaled_dot_product_attention(**qkv, is_causal=True)

    return lambda: forward_backward(call, inputs(length, mode == "fwd+bwd"), mode)


def cases(lengths: list[int]) -> list[Case]:
    return [
        Case(
            workload="W3",
            impl="torch SDPA",
            mode=mode,
            L=length,
            batch=TOKENS // length,
            setup=_sdpa(length, mode),
            note=f"F.scaled_dot_product_attention(is_causal=True), torch {torch.__version__}",
            **work(length, mode),
        )
        for length in lengths
        for mode in MODES
    ]
