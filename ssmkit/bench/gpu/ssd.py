"""W2: Mamba-2 SSD. h = 64, p = 64, n = 128, g = 1, chunk 256, D (h,), dt_bias + softplus, bf16,
B * L = 65,536 tokens; ssmkit's Triton kernels, mamba_ssm's `mamba_chunk_scan_combined` (Triton) and fla's
`chunk_simple_gla` (Triton), all in the same run.

Work counted (bf16 tensors read or written once per pass):
  fwd:     read x (hp), dt (h), B, C (2n); write y (hp)               -> (2hp + h + 2n) * 2 bytes per token
  fwd+bwd: fwd, then read x, dt, B, C, dy; write dx, ddt, dB, dC       -> (5hp + 3h + 6n) * 2 bytes per token
  FLOPs (chunked algorithm as written, full Q x Q blocks, Q = chunk):
    C B^T per group 2Qn, its product with x per head 2Qp, chunk states B^T x 2np, output C . state 2np
    -> g 2Qn + h (2Qp + 4np) per token forward; forward + backward counted as 3x the forward.
"""

from __future__ import annotations

from functools import partial

import torch

from . import common
from .common import BF16, TOKENS, Case, forward_backward
from .peers_gpu import GpuPeers

H, P, N, G, CHUNK = 64, 64, 128, 1, 256
TARGET_MS = {"fwd": 1.0, "fwd+bwd": 4.0}
MODES = ("fwd", "fwd+bwd")


def inputs(length: int, grad: bool) -> dict:
    b = TOKENS // length
    gen = torch.Generator(device=common.DEVICE).manual_seed(0)

    def leaf(t: torch.Tensor) -> torch.Tensor:
        return t.requires_grad_(grad)

    bf = torch.bfloat16
    return {
        "x": leaf(torch.randn(b, length, H, P, device=common.DEVICE, generator=gen).to(bf)),
        "dt": leaf((torch.randn(b, length, H, device=common.DEVICE, generator=gen) * 0.5 - 2.0).to(bf)),
        "A": leaf(-(torch.rand(H, device=common.DEVICE, generator=gen) * 15 + 1)),  # (h,) in [-16, -1]
        "B": leaf(torch.randn(b, length, G, N, device=common.DEVICE, generator=gen).to(bf)),
        "C": leaf(torch.randn(b, length, G, N, device=common.DEVICE, generator=gen).to(bf)),
        "D": leaf(torch.randn(H, device=common.DEVICE, generator=gen)),
        "dt_bias": leaf(torch.randn(H, device=common.DEVICE, generator=gen) * 0.5),
    }


def work(mode: str) -> dict:
    per_token_bytes = (2 * H * P + H + 2 * N) if mode == "fwd" else (5 * H * P + 3 * H + 6 * N)
    fwd_flops = G * 2 * CHUNK * N + H * (2 * CHUNK * P + 4 * N * P)
    return {
        "bytes_moved": per_token_bytes * BF16 * TOKENS,
        "flops": fwd_flops * TOKENS * (1 if mode == "fwd" else 3),
    }


def _ssmkit(length: int, mode: str):
    from ...ops import ssd

    def call(**x):
        return ssd(**x, chunk_size=CHUNK, dt_softplus=True, backend="triton")

    return lambda: forward_backward(call, inputs(length, mode == "fwd+bwd"), mode)


def _mamba_ssm(fn, length: int, mode: str):
    def call(x, dt, A, B, C, D, dt_bias):
        return fn(x, dt, A, B, C, CHUNK, D=D, dt_bias=dt_bias, dt_softplus=True)

    return lambda: forward_backward(call, inputs(length, mode == "fwd+bwd"), mode)


def fla_map(raw: dict) -> dict:
    """W2's inputs mapped onto simple GLA, which fla computes per head as
        S_t = exp(g_t) S_{t-1} + k_t^T v_t   (S: K x V)     o_t = scale * q_t S_t.
    SSD per head is  h_t = exp(dt_t A) h_{t-1} + dt_t x_t B_t^T  (h: p x n),  y_t = h_t C_t + D x_t,  so with
    S = h^T (K = n, V = p):  q = C,  k = B,  v = dt * x,  g = dt * A (the per-head log decay),  scale = 1,
    where dt = softplus(dt + dt_bias), and y = o + D x. fla has no groups: B and C are expanded to the h heads.
    The timed call is fla's alone: this mapping and D x are left out.
    """
    dt = torch.nn.functional.softplus(raw["dt"].float() + raw["dt_bias"])  # (b, l, h)
    b, length = raw["x"].shape[:2]
    return {
        "q": raw["C"].expand(b, length, H, N).contiguous(),  # (b, l, h, n)
        "k": raw["B"].expand(b, length, H, N).contiguous(),  # (b, l, h, n)
        "v": (raw["x"].float() * dt[..., None]).to(torch.bfloat16),  # (b, l, h, p)
        "g": dt * raw["A"],  # (b, l, h) fp32, <= 0
    }


def _fla_call(fn):
    return lambda q, k, v, g: fn(q, k, v, g=g, scale=1.0)[0]


def _fla(fn, length: int, mode: str):
    def setup():
        mapped = {k: v.requires_grad_(mode == "fwd+bwd") for k, v in fla_map(inputs(length, grad=False)).items()}
        return forward_backward(_fla_call(fn), mapped, mode)

    return setup


def _check(output, length: int):
    """The forward at this length against ssmkit's pure-PyTorch chunked path (fp32 inside): relative L2 error."""

    def check() -> str:
        from ...ops import ssd

        raw = inputs(length, grad=False)
        with torch.no_grad():
            ref = ssd(**raw, chunk_size=CHUNK, dt_softplus=True, backend="torch").float()
            err = ((output(raw).float() - ref).norm() / ref.norm()).item()
        return f"fwd vs ssmkit torch path: rel err {err:.1e}"

    return check


def _outputs(mamba_fn, fla_fn) -> dict:
    """impl -> (raw inputs -> y), for the correctness check."""
    from ...ops import ssd

    out = {"ssmkit triton": lambda raw: ssd(**raw, chunk_size=CHUNK, dt_softplus=True, backend="triton")}
    if mamba_fn is not None:
        out["mamba_ssm chunk_scan_combined"] = lambda raw: mamba_fn(
            raw["x"], raw["dt"], raw["A"], raw["B"], raw["C"], CHUNK, D=raw["D"], dt_bias=raw["dt_bias"],
            dt_softplus=True,
        )  # fmt: skip
    if fla_fn is not None:
        out["fla chunk_simple_gla"] = lambda raw: (
            _fla_call(fla_fn)(**fla_map(raw)) + raw["D"][:, None] * raw["x"]
        )  # (b, l, h, p)
    return out


def cases(lengths: list[int], peers: GpuPeers) -> list[Case]:
    mamba_fn, mamba_note = peers.get("mamba_ssm", "mamba_ssm.ops.triton.ssd_combined", "mamba_chunk_scan_combined")
    fla_fn, fla_note = peers.get("fla", "fla.ops.simple_gla.chunk", "chunk_simple_gla")
    if fla_fn is not None:
        fla_note += "; its kernel alone on mapped inputs (see fla_map), fla's chunk 64"
    outputs = _outputs(mamba_fn, fla_fn)
    impls = (
        ("ssmkit triton", _ssmkit, "ssmkit.ops.ssd(backend='triton')"),
        ("mamba_ssm chunk_scan_combined", mamba_fn and partial(_mamba_ssm, mamba_fn), mamba_note),
        ("fla chunk_simple_gla", fla_fn and partial(_fla, fla_fn), fla_note),
    )
    out = []
    for i, length in enumerate(lengths):
        for mode in MODES:
            for impl, setup, note in impls:
                # each implementation's forward is checked once, at the first length
                checked = i == 0 and mode == "fwd" and impl in outputs
                out.append(
                    Case(
                        workload="W2",
                        impl=impl,
                        mode=mode,
                        L=length,
                        batch=TOKENS // length,
                        setup=setup(length, mode) if setup else None,
                        target_ms=TARGET_MS[mode] if impl == "ssmkit triton" else None,
                        note=note,
                        check=_check(outputs[impl], length) if checked else None,
                        **work(mode),
                    )
                )
    return out
