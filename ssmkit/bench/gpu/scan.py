"""W1: the Mamba-1 selective scan. d = 4096, n = 16, g = 1, z gate, D, dt_bias + softplus, bf16,
B * L = 65,536 tokens; ssmkit's Triton kernels against mamba_ssm's CUDA `selective_scan_fn` when it imports.

Work counted (each tensor read or written once per pass, bf16):
  fwd:     read u, dt, z (3d), B, C (2n); write y (d)                      -> (4d + 2n) * 2 bytes per token
  fwd+bwd: fwd, then read u, dt, z, dy, B, C; write du, ddt, dz, dB, dC    -> (11d + 6n) * 2 bytes per token
  exps:    one exp(dt A) per (token, channel, state) in each pass: b l d n (fwd), 2 b l d n (fwd+bwd).
"""

from __future__ import annotations

import torch

from . import common
from .common import BF16, TOKENS, Case, forward_backward
from .peers_gpu import GpuPeers

D, N = 4096, 16
TARGET_MS = {"fwd": 1.2, "fwd+bwd": 6.0}
MODES = ("fwd", "fwd+bwd")


def inputs(length: int, grad: bool) -> dict:
    b = TOKENS // length
    gen = torch.Generator(device=common.DEVICE).manual_seed(0)

    def randn(*shape, dtype=torch.bfloat16, scale=1.0, shift=0.0):
        t = torch.randn(*shape, device=common.DEVICE, generator=gen) * scale + shift
        return t.to(dtype).requires_grad_(grad)

    A = -(torch.rand(D, N, device=common.DEVICE, generator=gen) * 15 + 1)  # (d, n) in [-16, -1]
    return {
        "u": randn(b, length, D),
        "dt": randn(b, length, D, scale=0.5, shift=-2.0),  # softplus(dt + dt_bias) ~ 0.13
        "A": A.requires_grad_(grad),
        "B": randn(b, length, 1, N),
        "C": randn(b, length, 1, N),
        "D": randn(D, dtype=torch.float32),
        "z": randn(b, length, D),
        "dt_bias": randn(D, dtype=torch.float32, scale=0.1),
    }


def work(length: int, mode: str) -> dict:
    per_token = (4 * D + 2 * N) if mode == "fwd" else (11 * D + 6 * N)
    exps = TOKENS * D * N * (1 if mode == "fwd" else 2)
    return {"bytes_moved": per_token * BF16 * TOKENS, "exps": exps}


def _ssmkit(length: int, mode: str):
    from ...ops import selective_scan

    def call(**x):
        return selective_scan(**x, dt_softplus=True, backend="triton")

    return lambda: forward_backward(call, inputs(length, mode == "fwd+bwd"), mode)


def _mamba_ssm(fn, length: int, mode: str):
    # mamba_ssm's layout: u, delta, z (b, d, l); B, C (b, g, n, l) -- the same op on transposed views
    def call(u, dt, A, B, C, D, z, dt_bias):
        y = fn(
            u.transpose(1, 2),
            dt.transpose(1, 2),
            A,
            B.permute(0, 2, 3, 1),
            C.permute(0, 2, 3, 1),
            D=D,
            z=z.transpose(1, 2),
            delta_bias=dt_bias,
            delta_softplus=True,
        )
        return y.transpose(1, 2)

    return lambda: forward_backward(call, inputs(length, mode == "fwd+bwd"), mode)


def cases(lengths: list[int], peers: GpuPeers) -> list[Case]:
    peer_fn, peer_note = peers.get("mamba_ssm", "mamba_ssm.ops.selective_scan_interface", "selective_scan_fn")
    out = []
    for length in lengths:
        for mode in MODES:
            shared = dict(workload="W1", mode=mode, L=length, batch=TOKENS // length, **work(length, mode))
            out.append(
                Case(
                    impl="ssmkit triton",
                    setup=_ssmkit(length, mode),
                    target_ms=TARGET_MS[mode],
                    note="ssmkit.ops.selective_scan(backend='triton')",
                    **shared,
                )
            )
            out.append(
                Case(
                    impl="mamba_ssm selective_scan_fn",
                    setup=None if peer_fn is None else _mamba_ssm(peer_fn, length, mode),
                    note=peer_note,
                    **shared,
                )
            )
    return out
