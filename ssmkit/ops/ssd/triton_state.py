"""SSD Triton stages 2 + 3: chunk states (all chunks in parallel) and the state passing between chunks.

Chunk states, one program per (batch, chunk, head, p-tile, n-tile), weights in natural log (cum as in
triton_cumsum):
    forward:   st[k]  = sum_s exp(cum_last - cum_s) dt_s x_s B_s^T       (the state the chunk adds at its end)
    backward:  loc[k] = sum_t exp(cum_t) dy_t C_t^T                       (d of the state entering the chunk, via y)
With 16-bit inputs the weighted rows (x dt decay forward, dy decay backward) keep 16 bits of mantissa (_dot_hilo:
rounded once, final_state missed the tolerance rule in bf16 at p = 128, n = 256, and d initial_state needs it too);
fp32 inputs take exact fp32 products.

State passing, one program per (batch, head, block of the p*n state) walking the chunks in order; elementwise, so
each step is one load and one store (the next chunk's load is issued before the current one is used):
    forward:   entering[k] = S;   S <- exp(cum_last[k]) S + st[k]          (in place: st becomes entering)
    backward:  d_end[k] = dS;     dS <- exp(cum_last[k]) dS + loc[k]       (in place: loc becomes d_end)
               d cum_last[k] += exp(cum_last[k]) <dS, entering[k]>   (partial sums per block; the caller adds them)
When the forward walked whole sequences (triton_fused), the backward's chunk states and reverse passing run as one
walk (`_state_bwd_walk_kernel`), loc[k] formed in registers rather than written and read back.
Packed sequences (segment ids): only tokens of the chunk's last segment reach its end, only tokens of the
segment before the chunk see the entering state, and the state crosses a chunk border only within a segment.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from .._triton_math import exp_fast


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
    """a @ b where one operand is an fp32 sum (states, score gradients): both as fp32, the product in PREC
    ("ieee" for fp32 inputs; "tf32" with 16-bit inputs, 4x finer than rounding the operand to bf16)."""
    return tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision=PREC)


@triton.jit
def _round_to(v, DTYPE: tl.constexpr, UPCAST: tl.constexpr):
    """fp32 v rounded to DTYPE (to nearest even, as the GPU does). The interpreter truncates fp32 -> bf16 casts, so
    there (UPCAST) the bits are rounded first and the cast is then exact."""
    if UPCAST and DTYPE == tl.bfloat16:  # noqa: SIM300 (DTYPE is the constexpr)
        bits = v.to(tl.uint32, bitcast=True)
        bits = bits + 0x7FFF + ((bits >> 16) & 1)
        out = ((bits >> 16) << 16).to(tl.float32, bitcast=True).to(DTYPE)
    else:
        out = v.to(DTYPE)
    return out


@triton.jit
def _dot_parts(a, b, PREC: tl.constexpr, UPCAST: tl.constexpr, TWO: tl.constexpr):
    """a @ b where one operand is fp32 (a sum: states, decay-weighted scores) and the other bf16: the fp32 one rounded
    to bf16 (hi) and, with TWO, also its remainder (lo = bf16(v - hi)), each part one product on the bf16 tensor
    cores. Two parts keep 16 bits of its mantissa, against tf32's 11, at one tf32 product's cost. Other dtypes:
    _dot32."""
    if a.dtype == tl.float32 and b.dtype == tl.bfloat16:
        hi = _round_to(a, tl.bfloat16, UPCAST)
        if TWO:
            lo = _round_to(a - hi.to(tl.float32), tl.bfloat16, UPCAST)
            out = _dot(hi, b, PREC, UPCAST) + _dot(lo, b, PREC, UPCAST)
        else:
            out = _dot(hi, b, PREC, UPCAST)
    elif a.dtype == tl.bfloat16 and b.dtype == tl.float32:
        hi = _round_to(b, tl.bfloat16, UPCAST)
        if TWO:
            lo = _round_to(b - hi.to(tl.float32), tl.bfloat16, UPCAST)
            out = _dot(a, hi, PREC, UPCAST) + _dot(a, lo, PREC, UPCAST)
        else:
            out = _dot(a, hi, PREC, UPCAST)
    else:
        out = _dot32(a, b, PREC)
    return out


@triton.jit
def _dot_hilo(a, b, PREC: tl.constexpr, UPCAST: tl.constexpr):
    """a @ b with the fp32 operand in two bf16 parts (_dot_parts): the products whose rounding the rule sees."""
    return _dot_parts(a, b, PREC, UPCAST, True)


@triton.jit
def _dot_once(a, b, PREC: tl.constexpr, UPCAST: tl.constexpr):
    """a @ b with the fp32 operand rounded once to bf16 (one product): for the sites that keep the tolerance rule
    without a second part (scripts/gpu/ssd_notes.md, sessions 16-17)."""
    return _dot_parts(a, b, PREC, UPCAST, False)


def upcast_dots(dtype: torch.dtype) -> bool:
    return dtype != torch.float32 and os.environ.get("TRITON_INTERPRET") == "1"


def d_operand(D: torch.Tensor | None, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
    """D (h,) or (h, p) as the kernels read it: (pointer, (head stride, column stride)); x stands in when D is
    absent (never read: HAS_D is off)."""
    if D is None:
        return x, (0, 0)
    return D, ((D.stride(0), 0) if D.dim() == 1 else tuple(D.stride()))


@triton.jit
def _chunk_segments(seg_ptr, bi, ci, Lp, Q: tl.constexpr):
    """(segment of the chunk's last token, segment of the token before the chunk; 0 before the first)."""
    last = tl.load(seg_ptr + bi * Lp + ci * Q + Q - 1)
    before = tl.load(seg_ptr + bi * Lp + tl.maximum(ci * Q - 1, 0))
    return last, tl.where(ci > 0, before, 0)


@triton.jit
def _chunk_state_kernel(
    u_ptr, V_ptr, dtp_ptr, cum_ptr, cumlo_ptr, seg_ptr, out_ptr,
    l, h, p, n, Lp, hg,
    su_b, su_l, su_h, su_p, sV_b, sV_l, sV_g, sV_n,
    Q: tl.constexpr, BK: tl.constexpr, BP: tl.constexpr, BN: tl.constexpr,
    TO_END: tl.constexpr, HAS_SEG: tl.constexpr, CUM_LO: tl.constexpr, PREC: tl.constexpr, UPCAST: tl.constexpr,
):  # fmt: skip
    pid_bch, pid_p, pid_n = tl.program_id(0).to(tl.int64), tl.program_id(1), tl.program_id(2)
    nc = Lp // Q
    hi = pid_bch % h
    bc = pid_bch // h
    bi, ci = bc // nc, bc % nc
    rp = pid_p * BP + tl.arange(0, BP)
    rn = pid_n * BN + tl.arange(0, BN)
    acc = _chunk_state_acc(
        tl.zeros((BP, BN), dtype=tl.float32), u_ptr, V_ptr, dtp_ptr, cum_ptr, cumlo_ptr, seg_ptr,
        bi, ci, 0, hi, rp, rn, l, h, p, n, Lp, hg, su_b, su_l, su_h, su_p, sV_b, sV_l, sV_g, sV_n,
        Q, Q, BK, TO_END, HAS_SEG, CUM_LO, PREC, UPCAST, False,
    )  # fmt: skip
    out_at = ((bi * nc + ci) * h + hi) * p * n + rp[:, None] * n + rn[None, :]
    tl.store(out_ptr + out_at, acc, mask=(rp < p)[:, None] & (rn < n)[None, :])


@triton.jit
def _chunk_state_acc(
    acc, u_ptr, V_ptr, dtp_ptr, cum_ptr, cumlo_ptr, seg_ptr,
    bi, ci, t0, hi, rp, rn, l, h, p, n, Lp, hg, su_b, su_l, su_h, su_p, sV_b, sV_l, sV_g, sV_n,
    Q: tl.constexpr, SPAN: tl.constexpr, BK: tl.constexpr, TO_END: tl.constexpr, HAS_SEG: tl.constexpr,
    CUM_LO: tl.constexpr, PREC: tl.constexpr, UPCAST: tl.constexpr, TRANSPOSED: tl.constexpr,
):  # fmt: skip
    """acc (BP, BN) + the weighted outer products of tokens t0 + [0, SPAN) of chunk ci for head hi, rows rp of p
    and columns rn of n: st[k] (TO_END: weights to the span's last token) or loc[k] (the whole chunk, t0 = 0; see
    the module docstring). TRANSPOSED: acc and the result are (BN, BP)."""
    gi = hi // hg
    row = (bi * h + hi) * Lp  # this head's row of the (b, h, Lp) dt / cum arrays
    pmask, nmask = rp < p, rn < n
    last = row + ci * Q + t0 + SPAN - 1
    if TO_END:
        cum_last = tl.load(cum_ptr + last)
        if CUM_LO:
            lo_last = tl.load(cumlo_ptr + last)
    if HAS_SEG:
        seg_last = tl.load(seg_ptr + bi * Lp + ci * Q + t0 + SPAN - 1)
        _, seg_before = _chunk_segments(seg_ptr, bi, ci, Lp, Q)
    tok0 = tl.cast(ci * Q, tl.int64)  # in int64 once, as in triton_scan's _block_out
    for k in range(t0, t0 + SPAN, BK):
        lt = k + tl.arange(0, BK)  # positions in the chunk
        rt = ci * Q + lt
        cum_t = tl.load(cum_ptr + row + rt)
        if TO_END:
            log_w = cum_last - cum_t
            if CUM_LO:
                log_w += lo_last - tl.load(cumlo_ptr + row + rt)
            w = exp_fast(log_w) * tl.load(dtp_ptr + row + rt)
            if HAS_SEG:
                w = tl.where(tl.load(seg_ptr + bi * Lp + rt) == seg_last, w, 0.0)
        else:
            log_w = cum_t
            if CUM_LO:
                log_w += tl.load(cumlo_ptr + row + rt)
            w = exp_fast(log_w)
            if HAS_SEG:
                w = tl.where(tl.load(seg_ptr + bi * Lp + rt) == seg_before, w, 0.0)
        tmask = rt < l
        us = tl.load(
            u_ptr + bi * su_b + tok0 * su_l + lt[:, None] * su_l + hi * su_h + rp[None, :] * su_p,
            mask=tmask[:, None] & pmask[None, :],
            other=0.0,
        )  # (BK, BP)
        Vs = tl.load(
            V_ptr + bi * sV_b + tok0 * sV_l + lt[:, None] * sV_l + gi * sV_g + rn[None, :] * sV_n,
            mask=tmask[:, None] & nmask[None, :],
            other=0.0,
        )  # (BK, BN)
        uw = us.to(tl.float32) * w[:, None]
        # 16 bits of x dt decay / dy decay: rounded once to bf16, final_state missed the tolerance rule at p 128, n 256
        if TRANSPOSED:
            acc += _dot_hilo(tl.trans(Vs), uw, PREC, UPCAST)
        else:
            acc += _dot_hilo(tl.trans(uw), Vs, PREC, UPCAST)
    return acc


@triton.jit
def _decay_across(cum_ptr, seg_ptr, row, bi, ci, Lp, Q: tl.constexpr, HAS_SEG: tl.constexpr):
    """exp(cum_last) of chunk ci: the factor on the state across the chunk (0 where a new segment starts in it)."""
    decay = exp_fast(tl.load(cum_ptr + row + ci * Q + Q - 1))
    if HAS_SEG:
        seg_last, seg_before = _chunk_segments(seg_ptr, bi, ci, Lp, Q)
        decay = tl.where(seg_last == seg_before, decay, 0.0)
    return decay


@triton.jit
def _pass_fwd_kernel(
    st_ptr, cum_ptr, seg_ptr, init_ptr, final_ptr, h, pn, Lp,
    Q: tl.constexpr, BLOCK: tl.constexpr, HAS_INIT: tl.constexpr, HAS_SEG: tl.constexpr,
):  # fmt: skip
    pid_bh, pid_e = tl.program_id(0).to(tl.int64), tl.program_id(1)
    bi, hi = pid_bh // h, pid_bh % h
    nc = Lp // Q
    re = pid_e * BLOCK + tl.arange(0, BLOCK)
    mask = re < pn
    if HAS_INIT:  # noqa: SIM108 (a constexpr branch: only the taken side is compiled)
        S = tl.load(init_ptr + pid_bh * pn + re, mask=mask, other=0.0)
    else:
        S = tl.zeros((BLOCK,), dtype=tl.float32)
    row = pid_bh * Lp
    step = (bi * 0 + h) * pn  # from one chunk's state to the next; int64: ci * step passes 2^31 at 1M tokens
    base = (bi * nc * h + hi) * pn + re
    nxt = tl.load(st_ptr + base, mask=mask, other=0.0)
    for ci in range(nc):
        st = nxt
        # the next chunk's state (the last chunk reads its own again, unused)
        nxt = tl.load(st_ptr + base + tl.minimum(ci + 1, nc - 1) * step, mask=mask, other=0.0)
        tl.store(st_ptr + base + ci * step, S, mask=mask)
        S = S * _decay_across(cum_ptr, seg_ptr, row, bi, ci, Lp, Q, HAS_SEG) + st
    tl.store(final_ptr + pid_bh * pn + re, S, mask=mask)


@triton.jit
def _pass_bwd_kernel(
    loc_ptr, enter_ptr, cum_ptr, seg_ptr, dfinal_ptr, dinit_ptr, dT_ptr, h, pn, Lp,
    Q: tl.constexpr, BLOCK: tl.constexpr, HAS_DFINAL: tl.constexpr, HAS_SEG: tl.constexpr,
):  # fmt: skip
    pid_bh, pid_e = tl.program_id(0).to(tl.int64), tl.program_id(1)
    bi, hi = pid_bh // h, pid_bh % h
    nc = Lp // Q
    n_blocks = tl.num_programs(1)
    re = pid_e * BLOCK + tl.arange(0, BLOCK)
    mask = re < pn
    if HAS_DFINAL:
        dS = tl.load(dfinal_ptr + pid_bh * pn + re, mask=mask, other=0.0)
    else:
        dS = tl.zeros((BLOCK,), dtype=tl.float32)
    row = pid_bh * Lp
    step = (bi * 0 + h) * pn  # int64, as in the forward
    base = (bi * nc * h + hi) * pn + re
    nxt_loc = tl.load(loc_ptr + base + (nc - 1) * step, mask=mask, other=0.0)
    nxt_in = tl.load(enter_ptr + base + (nc - 1) * step, mask=mask, other=0.0)
    for i in range(nc):
        ci = nc - 1 - i
        loc, S_in = nxt_loc, nxt_in
        # the previous chunk's (the first chunk reads its own again, unused)
        prev = base + tl.maximum(ci - 1, 0) * step
        nxt_loc = tl.load(loc_ptr + prev, mask=mask, other=0.0)
        nxt_in = tl.load(enter_ptr + prev, mask=mask, other=0.0)
        tl.store(loc_ptr + base + ci * step, dS, mask=mask)
        decay = _decay_across(cum_ptr, seg_ptr, row, bi, ci, Lp, Q, HAS_SEG)
        tl.store(dT_ptr + (pid_bh * nc + ci) * n_blocks + pid_e, tl.sum(dS * S_in) * decay)
        dS = dS * decay + loc
    tl.store(dinit_ptr + pid_bh * pn + re, dS, mask=mask)


@triton.jit
def _state_bwd_walk_kernel(
    dy_ptr, C_ptr, dtp_ptr, cum_ptr, cumlo_ptr, seg_ptr, enter_ptr, dfinal_ptr, dend_ptr, dinit_ptr, dT_ptr,
    l, h, p, n, Lp, hg,
    sy_b, sy_l, sy_h, sy_p, sC_b, sC_l, sC_g, sC_n,
    Q: tl.constexpr, BK: tl.constexpr, BP: tl.constexpr, BN: tl.constexpr, HAS_DFINAL: tl.constexpr,
    HAS_SEG: tl.constexpr, CUM_LO: tl.constexpr, PREC: tl.constexpr, UPCAST: tl.constexpr,
):  # fmt: skip
    """The backward's chunk states and reverse passing in one walk, one program per (batch, head, p-tile, n-tile),
    chunks last to first, dS in registers: d_end[k] = dS; dS <- exp(cum_last[k]) dS + loc[k] (the module
    docstring), with loc[k] formed in place instead of written and read back."""
    pid_bh, pid_p, pid_n = tl.program_id(0).to(tl.int64), tl.program_id(1), tl.program_id(2)
    bi, hi = pid_bh // h, pid_bh % h
    nc = Lp // Q
    n_blocks = tl.num_programs(1) * tl.num_programs(2)
    rp = pid_p * BP + tl.arange(0, BP)
    rn = pid_n * BN + tl.arange(0, BN)
    tile_mask = (rp < p)[:, None] & (rn < n)[None, :]
    at = rp[:, None] * n + rn[None, :]  # (BP, BN) within one (p, n) state
    if HAS_DFINAL:
        dS = tl.load(dfinal_ptr + pid_bh * p * n + at, mask=tile_mask, other=0.0)
    else:
        dS = tl.zeros((BP, BN), dtype=tl.float32)
    row = pid_bh * Lp
    for i in range(nc):
        ci = nc - 1 - i
        state_at = ((bi * nc + ci) * h + hi) * p * n + at
        tl.store(dend_ptr + state_at, dS, mask=tile_mask)
        decay = _decay_across(cum_ptr, seg_ptr, row, bi, ci, Lp, Q, HAS_SEG)
        S_in = tl.load(enter_ptr + state_at, mask=tile_mask, other=0.0)
        tl.store(dT_ptr + (pid_bh * nc + ci) * n_blocks + pid_p * tl.num_programs(2) + pid_n, tl.sum(dS * S_in) * decay)
        dS = _chunk_state_acc(
            dS * decay, dy_ptr, C_ptr, dtp_ptr, cum_ptr, cumlo_ptr, seg_ptr, bi, ci, 0, hi, rp, rn,
            l, h, p, n, Lp, hg, sy_b, sy_l, sy_h, sy_p, sC_b, sC_l, sC_g, sC_n,
            Q, Q, BK, False, HAS_SEG, CUM_LO, PREC, UPCAST, False,
        )  # fmt: skip
    tl.store(dinit_ptr + pid_bh * p * n + at, dS, mask=tile_mask)


# launch settings, settable by benchmarks
STATE_BN = 128  # n-tile of the chunk-state kernel
PASS_BLOCK = 1024  # state elements per passing program
# num_warps / num_stages per kernel (empty: Triton's defaults). H200, W2 at 4K, both chunk-state calls of a fwd+bwd:
# 1.23 ms with 4 warps and 2 stages, 1.45 with 2 (8 warps: 2.51; n-tiles of 64 with 4 warps: 1.53)
LAUNCH = {"state": {"num_warps": 4, "num_stages": 2}, "pass": {}}


def state_tiles(p: int, n: int) -> tuple[int, int]:
    """(BP, BN): the (p, n) tile of one program of the chunk-state kernels (and their walks)."""
    return max(16, min(64, triton.next_power_of_2(p))), max(16, min(STATE_BN, triton.next_power_of_2(n)))


def _chunk_states(u, V, dtp, cum, cum_lo, segp, Q, prec, to_end):
    b, l, h, p = u.shape
    g, n = V.shape[-2:]
    Lp = dtp.shape[-1]
    nc = Lp // Q
    out = torch.empty(b, nc, h, p, n, device=u.device, dtype=torch.float32)
    BP, BN = state_tiles(p, n)
    grid = (b * nc * h, triton.cdiv(p, BP), triton.cdiv(n, BN))
    _chunk_state_kernel[grid](
        u, V, dtp, cum, cum_lo if cum_lo is not None else cum, segp if segp is not None else dtp, out,
        l, h, p, n, Lp, h // g, *u.stride(), *V.stride(),
        Q=Q, BK=min(64, Q), BP=BP, BN=BN, TO_END=to_end, HAS_SEG=segp is not None, CUM_LO=cum_lo is not None,
        PREC=prec, UPCAST=upcast_dots(V.dtype), **LAUNCH["state"],
    )  # fmt: skip
    return out


def _pass_grid(b, h, pn):
    block = min(PASS_BLOCK, triton.next_power_of_2(pn))
    return (b * h, triton.cdiv(pn, block)), block


def state_fwd(x, B, dtp, cum, cum_lo, segp, initial_state, Q, prec):
    """-> entering (b, nc, h, p, n) fp32, the state entering each chunk; final (b, h, p, n) fp32."""
    b, _, h, p = x.shape
    n = B.shape[-1]
    enter = _chunk_states(x, B, dtp, cum, cum_lo, segp, Q, prec, to_end=True)
    final = torch.empty(b, h, p, n, device=x.device, dtype=torch.float32)
    init = initial_state.contiguous() if initial_state is not None else final
    grid, block = _pass_grid(b, h, p * n)
    _pass_fwd_kernel[grid](
        enter, cum, segp if segp is not None else cum, init, final, h, p * n, cum.shape[-1],
        Q=Q, BLOCK=block, HAS_INIT=initial_state is not None, HAS_SEG=segp is not None, **LAUNCH["pass"],
    )  # fmt: skip
    return enter, final


def state_bwd(dy, C, dtp, cum, cum_lo, segp, enter, dfinal, Q, prec, walk=False):
    """-> d_end (b, nc, h, p, n): d of the state after each chunk; d initial_state (b, h, p, n); dT (b, h, nc).

    walk: one kernel walking each sequence's chunks in reverse (for calls whose b * h fill the GPU), instead of the
    chunk states in parallel, written, then passed over."""
    b, _, h, p = dy.shape
    n = C.shape[-1]
    nc = enter.shape[1]
    if walk:
        dend = torch.empty(b, nc, h, p, n, device=dy.device, dtype=torch.float32)
        dinit = torch.empty(b, h, p, n, device=dy.device, dtype=torch.float32)
        BP, BN = state_tiles(p, n)
        grid = (b * h, triton.cdiv(p, BP), triton.cdiv(n, BN))
        dT = torch.empty(b, h, nc, grid[1] * grid[2], device=dy.device, dtype=torch.float32)
        dfin = dfinal.contiguous() if dfinal is not None else dinit
        _state_bwd_walk_kernel[grid](
            dy, C, dtp, cum, cum_lo if cum_lo is not None else cum, segp if segp is not None else dtp, enter, dfin,
            dend, dinit, dT, dy.shape[1], h, p, n, cum.shape[-1], h // C.shape[-2], *dy.stride(), *C.stride(),
            Q=Q, BK=min(64, Q), BP=BP, BN=BN, HAS_DFINAL=dfinal is not None, HAS_SEG=segp is not None,
            CUM_LO=cum_lo is not None, PREC=prec, UPCAST=upcast_dots(C.dtype), **LAUNCH["state"],
        )  # fmt: skip
        return dend, dinit, dT.sum(-1)
    dend = _chunk_states(dy, C, dtp, cum, cum_lo, segp, Q, prec, to_end=False)
    dinit = torch.empty(b, h, p, n, device=dy.device, dtype=torch.float32)
    grid, block = _pass_grid(b, h, p * n)
    dT = torch.empty(b, h, nc, grid[1], device=dy.device, dtype=torch.float32)
    dfin = dfinal.contiguous() if dfinal is not None else dinit
    _pass_bwd_kernel[grid](
        dend, enter, cum, segp if segp is not None else cum, dfin, dinit, dT, h, p * n, cum.shape[-1],
        Q=Q, BLOCK=block, HAS_DFINAL=dfinal is not None, HAS_SEG=segp is not None, **LAUNCH["pass"],
    )  # fmt: skip
    return dend, dinit, dT.sum(-1)
