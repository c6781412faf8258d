"""W4: depthwise causal conv1d, width 4, d = 4096, L = 4096, B = 16, silu, bf16; against plain F.conv1d + silu.

Work counted: x read and y written (fwd), then x, dy read and dx written (bwd); the weights are negligible.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from . import common
from .common import BF16, Case, auto_backends, forward_backward

D, L, BATCH, WIDTH = 4096, 4096, 16, 4
TARGET_MS = {"fwd": 0.30}
MODES = ("fwd", "fwd+bwd")


def inputs(grad: bool, channels_first: bool = False) -> dict:
    gen = torch.Generator(device=common.DEVICE).manual_seed(0)
    shape = (BATCH, D, L) if channels_first else (BATCH, L, D)
    bf = torch.bfloat16
    return {
        "x": torch.randn(*shape, device=common.DEVICE, generator=gen).to(bf).requires_grad_(grad),
        "weight": (torch.randn(D, WIDTH, device=common.DEVICE, generator=gen) * 0.5).to(bf).requires_grad_(grad),
        "bias": (torch.randn(D, device=common.DEVICE, generator=gen) * 0.1).to(bf).requires_grad_(grad),
    }


def work(mode: str) -> dict:
    passes = 2 if mode == "fwd" else 5
    return {"bytes_moved": passes * BATCH * L * D * BF16}


def _ssmkit(mode: str):
    from ...ops import causal_conv1d

    def call(**x):
        return causal_conv1d(**x, activation="silu", backend="auto")

    return lambda: forward_backward(call, inputs(mode == "fwd+bwd"), mode)


def _conv1d(mode: str):
    def call(x, weight, bias):  # x: (b, d, l), its own layout
        return F.silu(F.conv1d(x, weight[:, None, :], bias, padding=WIDTH - 1, groups=D)[..., :L])

    return lambda: forward_backward(call, inputs(mode == "fwd+bwd", channels_first=True), mode)


def cases() -> list[Case]:
    backend = auto_backends("causal_conv1d")
    out = []
    for mode in MODES:
        shared = dict(workload="W4", mode=mode, L=L, batch=BATCH, **work(mode))
        out.append(
            Case(
                impl="ssmkit causal_conv1d",
                setup=_ssmkit(mode),
                target_ms=TARGET_MS.get(mode),
                note=f"ssmkit.ops.causal_conv1d(backend='auto'; {backend})",
                **shared,
            )
        )
        out.append(
            Case(
                impl="F.conv1d + silu",
                setup=_conv1d(mode),
                note="depthwise F.conv1d on (b, d, l) input, padded and cut, then F.silu",
                **shared,
            )
        )
    return out
