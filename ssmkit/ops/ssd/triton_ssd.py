"""SSD on the GPU through Triton: the autograd Function that runs the stage kernels, forward and backward.

Forward:  triton_cumsum (dt transform, cumulative decay per chunk) -> triton_cb (C_t . B_s per chunk and group,
kept for the backward) -> triton_state (chunk states in parallel, then the passing; the state entering each
chunk) -> triton_scan (chunk outputs, D, silu(z)). When b * h programs fill the GPU, triton_fused does the last
two in one kernel that walks the chunks in order, stepping the state every 64 tokens (the same results up to the
order of fp32 sums); with fewer programs a long sequence is walked in segments (`walk_plan`, triton_segments).
Backward: silu(z) gate in torch -> triton_state (each chunk's d of its entering state, then the reverse passing:
d of the state after each chunk, d initial_state; one reverse walk when the forward walked whole sequences) ->
triton_bwd (dCB, dx, dB, dC, d dt, d cum) -> triton_cumsum backward (d dt through softplus and the limit, dA,
d dt_bias).

Matmul operands are in x's dtype: bf16 / fp16 on the tensor cores, fp32 as exact fp32 products ("ieee"). With
16-bit inputs the products with an fp32 operand whose rounding the tolerance rule sees (the scores M, x dt w in the
state steps, dCB, the backward's scores) split it into two bf16 parts (_dot_hilo; fp16: tf32): rounded once, the
errors sum up past the rule (d dt_bias and dA, final_state at p = 128, n = 256) or close to it (y at W2's size).
Four products of a state with C, B or dy round the state once (_dot_once): the forward's C_t S, dx's B dE, and
dB's and dC's state terms; there the rule's margins did not move (scripts/gpu/ssd_notes.md, sessions 16-17). The
state, the decays and every accumulation are fp32. With fp32 inputs the cumulative decay is summed in fp64 and kept
as two fp32 numbers (triton_cumsum), so the fp32 path is as accurate as the fp32 reference.
"""

from __future__ import annotations

import torch
import triton

from .triton_bwd import chunk_bwd
from .triton_cb import chunk_scores
from .triton_cumsum import dt_cumsum_bwd, dt_cumsum_fwd
from .triton_fused import ssd_fused_fwd, walk_plan
from .triton_scan import chunk_scan_fwd
from .triton_state import state_bwd, state_fwd

_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
_CHUNKS = (16, 32, 64, 128, 256)


def unsupported_reason(dtype: torch.dtype, p: int, n: int, chunk_size: int) -> str | None:
    """Why these kernels cannot take this call, or None. "auto" then runs the torch path instead, with a warning."""
    if dtype not in _DTYPES:
        return f"x: expects float32, bfloat16 or float16, got {dtype}"
    if chunk_size not in _CHUNKS:
        return f"chunk_size: expects one of {_CHUNKS}, got {chunk_size}"
    if p > 128 or n > 256:
        # the largest tiles: at p = 128, n = 256 the backward's dx kernel needs 160 KiB of shared memory in bf16 and
        # 192 KiB in fp32 (compiled for sm_90 with Triton 3.6), under the H100 / H200's 227 KiB
        return f"x, B: expects head dim p <= 128 and state size n <= 256, got p = {p}, n = {n}"
    return None


def _check_supported(x: torch.Tensor, p: int, n: int, chunk_size: int) -> None:
    if x.dtype not in _DTYPES:
        raise TypeError(f"x: backend='triton' for ssd expects float32, bfloat16 or float16, got {x.dtype}")
    if chunk_size not in _CHUNKS:
        raise ValueError(f"chunk_size: backend='triton' for ssd expects one of {_CHUNKS}, got {chunk_size}")
    if p > 128:
        raise ValueError(f"x: backend='triton' for ssd expects head dim p <= 128, got p = {p}")
    if n > 256:
        raise ValueError(f"B: backend='triton' for ssd expects state size n <= 256, got n = {n}")


def _chunking(l: int, chunk_size: int) -> tuple[int, int]:
    """(Q, chunks): a sequence shorter than the chunk runs as one chunk of the next power of two (>= 16)."""
    Q = min(chunk_size, max(16, triton.next_power_of_2(l)))
    return Q, triton.cdiv(l, Q)


def _padded_segments(seg: torch.Tensor | None, Lp: int) -> torch.Tensor | None:
    """(b, l) segment ids -> (b, Lp) int32, padded tokens in the last segment."""
    if seg is None:
        return None
    pad = Lp - seg.shape[1]
    seg = seg.to(torch.int32)
    return torch.cat([seg, seg[:, -1:].expand(-1, pad)], dim=1).contiguous() if pad else seg.contiguous()


class _SSDTriton(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, dt, A, B, C, D, z, dt_bias, initial_state, seg, dt_softplus, dt_limit, chunk_size):
        Q, nc = _chunking(x.shape[1], chunk_size)
        precise = x.dtype == torch.float32
        prec = "ieee" if precise else "tf32"  # only fp32 operands read it
        dtp, cum, cum_lo = dt_cumsum_fwd(dt, dt_bias, A, dt_softplus, dt_limit, Q, nc, precise)
        segp = _padded_segments(seg, nc * Q)
        cb = chunk_scores(B, C, Q, nc, prec)
        store_ypre = z is not None and ctx.needs_input_grad[6]
        b, _, h, p = x.shape
        plan = walk_plan(b, h, p, B.shape[-1], nc)
        if plan is not None:
            store_enter = any(ctx.needs_input_grad)
            out, ypre, enter, final = ssd_fused_fwd(
                x, z, cb, B, C, dtp, cum, cum_lo, segp, initial_state, D, Q, prec, store_ypre, store_enter, plan
            )
        else:
            enter, final = state_fwd(x, B, dtp, cum, cum_lo, segp, initial_state, Q, prec)
            out, ypre = chunk_scan_fwd(x, z, cb, C, dtp, cum, cum_lo, segp, enter, D, Q, prec, store_ypre)
        ctx.save_for_backward(x, dt, A, B, C, D, z, dt_bias, dtp, cum, cum_lo, segp, cb, enter, ypre)
        # the backward walks whole sequences too when the forward did
        walk_back = plan is not None and plan.segments == 1
        ctx.config = (dt_softplus, dt_limit, Q, prec, initial_state is not None, walk_back)
        ctx.set_materialize_grads(False)
        return out, final

    @staticmethod
    def backward(ctx, dout, dfinal):
        x, dt, A, B, C, D, z, dt_bias, dtp, cum, cum_lo, segp, cb, enter, ypre = ctx.saved_tensors
        dt_softplus, dt_limit, Q, prec, has_init, walk_back = ctx.config
        if dout is None:
            dout = torch.zeros_like(x)
        dz = None
        if z is not None:
            zf = z.float()
            sig = torch.sigmoid(zf)
            dy = dout.float() * zf * sig  # fp32: d out * silu(z) is not rounded again
            if ypre is not None:
                dz = (dout.float() * ypre.float() * sig * (1 + zf * (1 - sig))).to(z.dtype)
        else:
            dy = dout.to(x.dtype)
        dend, dinit, dT = state_bwd(dy, C, dtp, cum, cum_lo, segp, enter, dfinal, Q, prec, walk=walk_back)
        dx, dB, dC, ddt_direct, da, dcum, dD = chunk_bwd(
            x, B, C, dy, dtp, cum, cum_lo, segp, cb, enter, dend, D, Q, prec
        )
        dcum.view(*dcum.shape[:2], -1, Q)[..., Q - 1] += dT
        ddt, dA, dbias = dt_cumsum_bwd(dcum, da, ddt_direct, dt, dt_bias, A, dtp, dt_softplus, dt_limit, Q)
        if dD is not None:
            dD = (dD.sum(-1) if D.dim() == 1 else dD).to(D.dtype)
        return (
            dx.to(x.dtype),
            ddt,
            dA.to(A.dtype),
            dB,
            dC,
            dD,
            dz,
            dbias.to(dt_bias.dtype) if dbias is not None else None,
            dinit if has_init else None,
            None,
            None,
            None,
            None,
        )


def ssd_triton(
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None,
    z: torch.Tensor | None,
    dt_bias: torch.Tensor | None,
    dt_softplus: bool,
    dt_limit: tuple[float, float],
    initial_state: torch.Tensor | None,
    seg: torch.Tensor | None,
    chunk_size: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Same arguments as the reference plus chunk_size; returns (y in x's dtype, final state fp32)."""
    _check_supported(x, x.shape[-1], B.shape[-1], chunk_size)
    if initial_state is not None and initial_state.dtype != torch.float32:
        initial_state = initial_state.float()
    return _SSDTriton.apply(x, dt, A, B, C, D, z, dt_bias, initial_state, seg, dt_softplus, tuple(dt_limit), chunk_size)
