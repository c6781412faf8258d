"""SSD Triton stages 2 + 3 fused: chunk states and the state passing between chunks, forward and backward.

One program owns a (p, n) tile of one head's state and walks the chunks in order, so the chunk states never go
through memory: each chunk's state from a zero start is built by tl.dot and folded in at once.

Forward (chunk k, decays in natural log, cum as in triton_cumsum):
    entering[k] = S;   S <- exp(cum_last) S + sum_s exp(cum_last - cum_s) dt_s x_s B_s^T
Backward, chunks in reverse, dS = d final_state at the start:
    d_end[k] = dS;     dS <- exp(cum_last) dS + sum_t exp(cum_t) dy_t C_t^T      (d initial_state = dS at the end)
    d cum_last[k] += exp(cum_last) <dS, entering[k]>       (partial sums per tile; the caller adds them up)
Packed sequences (segment ids): only tokens of the chunk's last segment reach its end, only tokens of the
segment before the chunk see the entering state, and the state crosses a chunk border only within a segment.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl


@triton.jit
def _dot(a, b, PREC: tl.constexpr, UPCAST: tl.constexpr):
    """a @ b for two operands of one dtype (fp32 results): 16-bit operands go to the tensor cores as they are.
    UPCAST: the interpreter's tl.dot mishandles bf16, so there the operands run as exact fp32 products."""
    # one return: the compiler does not stop at an early return, it would build the other branch too
    if UPCAST:
        out = tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision="ieee")
    else:
        out = tl.dot(a, b, input_precision=PREC)
    return out


@triton.jit
def _dot32(a, b, PREC: tl.constexpr):
    """a @ b where one operand is computed in fp32 (decay-weighted scores, states): both as fp32, the product in
    PREC ("ieee" for fp32 inputs; "tf32" with 16-bit inputs, 4x finer than rounding the operand to bf16)."""
    return tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision=PREC)


def upcast_dots(dtype: torch.dtype) -> bool:
    return dtype != torch.float32 and os.environ.get("TRITON_INTERPRET") == "1"


@triton.jit
def _chunk_segments(seg_ptr, bi, ci, Lp, Q: tl.constexpr):
    """(segment of the chunk's last token, segment of the token before the chunk; 0 before the first)."""
    last = tl.load(seg_ptr + bi * Lp + ci * Q + Q - 1)
    before = tl.load(seg_ptr + bi * Lp + tl.maximum(ci * Q - 1, 0))
    return last, tl.where(ci > 0, before, 0)


@triton.jit
def _state_fwd_kernel(
    x_ptr, B_ptr, dtp_ptr, cum_ptr, cumlo_ptr, seg_ptr, init_ptr, enter_ptr, final_ptr,
    l, h, p, n, Lp, hg,
    sx_b, sx_l, sx_h, sx_p, sB_b, sB_l, sB_g, sB_n, si_b, si_h, si_p, si_n,
    Q: tl.constexpr, BK: tl.constexpr, BP: tl.constexpr, BN: tl.constexpr,
    HAS_INIT: tl.constexpr, HAS_SEG: tl.constexpr, CUM_LO: tl.constexpr, PREC: tl.constexpr, UPCAST: tl.constexpr,
):  # fmt: skip
    pid_bh, pid_p, pid_n = tl.program_id(0).to(tl.int64), tl.program_id(1), tl.program_id(2)
    bi, hi = pid_bh // h, pid_bh % h
    gi = hi // hg
    rp = pid_p * BP + tl.arange(0, BP)
    rn = pid_n * BN + tl.arange(0, BN)
    pn_mask = (rp[:, None] < p) & (rn[None, :] < n)
    if HAS_INIT:
        init = init_ptr + bi * si_b + hi * si_h + rp[:, None] * si_p + rn[None, :] * si_n
        S = tl.load(init, mask=pn_mask, other=0.0).to(tl.float32)
    else:
        S = tl.zeros((BP, BN), dtype=tl.float32)
    nc = Lp // Q
    row = (bi * h + hi) * Lp  # this head's row of the (b, h, Lp) dt / cum arrays
    tile = rp[:, None] * n + rn[None, :]
    for ci in range(nc):
        tl.store(enter_ptr + ((bi * nc + ci) * h + hi) * p * n + tile, S, mask=pn_mask)
        last = row + ci * Q + Q - 1
        cum_last = tl.load(cum_ptr + last)
        if CUM_LO:
            lo_last = tl.load(cumlo_ptr + last)
        if HAS_SEG:
            seg_last, seg_before = _chunk_segments(seg_ptr, bi, ci, Lp, Q)
        st = tl.zeros((BP, BN), dtype=tl.float32)
        for k in range(0, Q, BK):
            rt = (ci * Q + k + tl.arange(0, BK)).to(tl.int64)  # rt * stride passes 2^31 at 1M tokens
            log_w = cum_last - tl.load(cum_ptr + row + rt)
            if CUM_LO:
                log_w += lo_last - tl.load(cumlo_ptr + row + rt)
            w = tl.exp(log_w) * tl.load(dtp_ptr + row + rt)  # (BK,)
            if HAS_SEG:
                w = tl.where(tl.load(seg_ptr + bi * Lp + rt) == seg_last, w, 0.0)
            tmask = rt < l
            xs = tl.load(
                x_ptr + bi * sx_b + rt[:, None] * sx_l + hi * sx_h + rp[None, :] * sx_p,
                mask=tmask[:, None] & (rp[None, :] < p),
                other=0.0,
            )  # (BK, BP)
            Bs = tl.load(
                B_ptr + bi * sB_b + rt[:, None] * sB_l + gi * sB_g + rn[None, :] * sB_n,
                mask=tmask[:, None] & (rn[None, :] < n),
                other=0.0,
            )  # (BK, BN)
            xw = xs.to(tl.float32) * w[:, None]
            st += _dot32(tl.trans(xw), Bs, PREC)
        decay = tl.exp(cum_last)
        if HAS_SEG:
            decay = tl.where(seg_last == seg_before, decay, 0.0)
        S = S * decay + st
    tl.store(final_ptr + (bi * h + hi) * p * n + tile, S, mask=pn_mask)


@triton.jit
def _state_bwd_kernel(
    dy_ptr, C_ptr, cum_ptr, cumlo_ptr, seg_ptr, enter_ptr, dfinal_ptr, dend_ptr, dinit_ptr, dT_ptr,
    l, h, p, n, Lp, hg,
    sy_b, sy_l, sy_h, sy_p, sC_b, sC_l, sC_g, sC_n, sf_b, sf_h, sf_p, sf_n,
    Q: tl.constexpr, BK: tl.constexpr, BP: tl.constexpr, BN: tl.constexpr,
    HAS_DFINAL: tl.constexpr, HAS_SEG: tl.constexpr, CUM_LO: tl.constexpr, PREC: tl.constexpr, UPCAST: tl.constexpr,
):  # fmt: skip
    pid_bh, pid_p, pid_n = tl.program_id(0).to(tl.int64), tl.program_id(1), tl.program_id(2)
    bi, hi = pid_bh // h, pid_bh % h
    gi = hi // hg
    rp = pid_p * BP + tl.arange(0, BP)
    rn = pid_n * BN + tl.arange(0, BN)
    pn_mask = (rp[:, None] < p) & (rn[None, :] < n)
    if HAS_DFINAL:
        dfin = dfinal_ptr + bi * sf_b + hi * sf_h + rp[:, None] * sf_p + rn[None, :] * sf_n
        dS = tl.load(dfin, mask=pn_mask, other=0.0).to(tl.float32)
    else:
        dS = tl.zeros((BP, BN), dtype=tl.float32)
    nc = Lp // Q
    n_tiles = tl.num_programs(1) * tl.num_programs(2)
    tile_id = pid_p * tl.num_programs(2) + pid_n
    row = (bi * h + hi) * Lp
    tile = rp[:, None] * n + rn[None, :]
    for i in range(nc):
        ci = nc - 1 - i
        state_at = ((bi * nc + ci) * h + hi) * p * n + tile
        tl.store(dend_ptr + state_at, dS, mask=pn_mask)
        cum_last = tl.load(cum_ptr + row + ci * Q + Q - 1)
        decay = tl.exp(cum_last)
        if HAS_SEG:
            seg_last, seg_before = _chunk_segments(seg_ptr, bi, ci, Lp, Q)
            decay = tl.where(seg_last == seg_before, decay, 0.0)
        S_in = tl.load(enter_ptr + state_at, mask=pn_mask, other=0.0)
        tl.store(dT_ptr + ((bi * h + hi) * nc + ci) * n_tiles + tile_id, tl.sum(dS * S_in) * decay)
        local = tl.zeros((BP, BN), dtype=tl.float32)
        for k in range(0, Q, BK):
            rt = (ci * Q + k + tl.arange(0, BK)).to(tl.int64)  # rt * stride passes 2^31 at 1M tokens
            log_e = tl.load(cum_ptr + row + rt)
            if CUM_LO:
                log_e += tl.load(cumlo_ptr + row + rt)
            e = tl.exp(log_e)  # (BK,) decay from the chunk's start to t
            if HAS_SEG:
                e = tl.where(tl.load(seg_ptr + bi * Lp + rt) == seg_before, e, 0.0)
            tmask = rt < l
            dys = tl.load(
                dy_ptr + bi * sy_b + rt[:, None] * sy_l + hi * sy_h + rp[None, :] * sy_p,
                mask=tmask[:, None] & (rp[None, :] < p),
                other=0.0,
            )  # (BK, BP)
            Cs = tl.load(
                C_ptr + bi * sC_b + rt[:, None] * sC_l + gi * sC_g + rn[None, :] * sC_n,
                mask=tmask[:, None] & (rn[None, :] < n),
                other=0.0,
            )  # (BK, BN)
            dye = dys.to(tl.float32) * e[:, None]
            local += _dot32(tl.trans(dye), Cs, PREC)
        dS = dS * decay + local
    tl.store(dinit_ptr + (bi * h + hi) * p * n + tile, dS, mask=pn_mask)


def _tiles(p: int, n: int) -> tuple[int, int]:
    return max(16, min(64, triton.next_power_of_2(p))), max(16, min(64, triton.next_power_of_2(n)))


def state_fwd(x, B, dtp, cum, cum_lo, segp, initial_state, Q, prec):
    """-> entering (b, nc, h, p, n) fp32, the state entering each chunk; final (b, h, p, n) fp32."""
    b, l, h, p = x.shape
    g, n = B.shape[-2:]
    Lp = dtp.shape[-1]
    nc = Lp // Q
    enter = torch.empty(b, nc, h, p, n, device=x.device, dtype=torch.float32)
    final = torch.empty(b, h, p, n, device=x.device, dtype=torch.float32)
    BP, BN = _tiles(p, n)
    init = initial_state if initial_state is not None else final
    grid = (b * h, triton.cdiv(p, BP), triton.cdiv(n, BN))
    _state_fwd_kernel[grid](
        x, B, dtp, cum, cum_lo if cum_lo is not None else cum, segp if segp is not None else dtp, init, enter, final,
        l, h, p, n, Lp, h // g, *x.stride(), *B.stride(), *init.stride(),
        Q=Q, BK=min(64, Q), BP=BP, BN=BN, HAS_INIT=initial_state is not None, HAS_SEG=segp is not None,
        CUM_LO=cum_lo is not None, PREC=prec,
        UPCAST=upcast_dots(x.dtype),
    )  # fmt: skip
    return enter, final


def state_bwd(dy, C, cum, cum_lo, segp, enter, dfinal, Q, prec):
    """-> d_end (b, nc, h, p, n): d of the state after each chunk; d initial_state (b, h, p, n); dT (b, h, nc)."""
    b, l, h, p = dy.shape
    g, n = C.shape[-2:]
    Lp = cum.shape[-1]
    nc = Lp // Q
    dend = torch.empty_like(enter)
    dinit = torch.empty(b, h, p, n, device=dy.device, dtype=torch.float32)
    BP, BN = _tiles(p, n)
    grid = (b * h, triton.cdiv(p, BP), triton.cdiv(n, BN))
    dT = torch.empty(b, h, nc, grid[1] * grid[2], device=dy.device, dtype=torch.float32)
    dfin = dfinal if dfinal is not None else dinit
    _state_bwd_kernel[grid](
        dy, C, cum, cum_lo if cum_lo is not None else cum, segp if segp is not None else cum, enter, dfin, dend,
        dinit, dT,
        l, h, p, n, Lp, h // g, *dy.stride(), *C.stride(), *dfin.stride(),
        Q=Q, BK=min(64, Q), BP=BP, BN=BN, HAS_DFINAL=dfinal is not None, HAS_SEG=segp is not None,
        CUM_LO=cum_lo is not None, PREC=prec,
        UPCAST=upcast_dots(dy.dtype),
    )  # fmt: skip
    return dend, dinit, dT.sum(-1)
