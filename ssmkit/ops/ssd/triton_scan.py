"""SSD Triton stages 1 + 4 fused: the output of each chunk, with the skip term D and the silu(z) gate.

`_block_out` computes the output of BM tokens t of one chunk and head from a state S before them (cum as in
triton_cumsum; ref = cum of the token before the state's position, 0 at the chunk's start):

    y_t = exp(cum_t - ref) C_t S^T                                      (the state, stage 4)
        + sum_{s <= t, s after the state} exp(cum_t - cum_s) (C_t . B_s) dt_s x_s     (the dual form, stage 1)
        + D x_t;            out_t = y_t * silu(z_t)

This module's kernel runs it on every (chunk, block of BM rows) in parallel from the state entering the chunk
(triton_state), so the dual form covers every block of s up to the diagonal. triton_fused steps the state across
each block instead, so it needs only the diagonal block. C_t . B_s is read from triton_cb (once per chunk and
group). The weights M_ts = exp(cum_t - cum_s) (C_t . B_s) dt_s are formed in fp32 and, with bf16 inputs, meet x_s
as two bf16 parts (_dot_hilo): rounded once to bf16, M put y at 0.94 of the tolerance rule's bound at W2's size on
the H200 (0.77 -> 0.39 in the interpreter at h 64, L 2048). The state's term rounds the fp32 state once to bf16
(_dot_once): the rule's margins stayed where they were (0.41-0.42 at W2's shape on the H200) and W2's fused forward
went 1.84 -> 1.57 ms. fp32 inputs: exact fp32 products.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .._triton_math import exp_fast, sigmoid_fast
from .triton_state import _chunk_segments, _dot_hilo, _dot_once, _round_to, d_operand, upcast_dots


@triton.jit
def _chunk_scan_fwd_kernel(
    x_ptr, z_ptr, cb_ptr, C_ptr, dtp_ptr, cum_ptr, cumlo_ptr, seg_ptr, enter_ptr, D_ptr, out_ptr, ypre_ptr,
    l, h, p, n, Lp, hg,
    sx_b, sx_l, sx_h, sx_p, sz_b, sz_l, sz_h, sz_p, sC_b, sC_l, sC_g, sC_n,
    so_b, so_l, so_h, so_p, sD_h, sD_p,
    Q: tl.constexpr, BM: tl.constexpr, BP: tl.constexpr, BN: tl.constexpr,
    HAS_Z: tl.constexpr, HAS_D: tl.constexpr, STORE_YPRE: tl.constexpr, HAS_SEG: tl.constexpr,
    CUM_LO: tl.constexpr, PREC: tl.constexpr, UPCAST: tl.constexpr,
):  # fmt: skip
    pid_bch, pid_m, pid_p = tl.program_id(0).to(tl.int64), tl.program_id(1), tl.program_id(2)
    nc = Lp // Q
    hi = pid_bch % h
    bi, ci = (pid_bch // h) // nc, (pid_bch // h) % nc
    rp = pid_p * BP + tl.arange(0, BP)
    rn = tl.arange(0, BN)
    # the entering state (p, n), read as its transpose (n, p)
    S_T = tl.load(
        enter_ptr + ((bi * nc + ci) * h + hi) * p * n + rp[None, :] * n + rn[:, None],
        mask=(rn < n)[:, None] & (rp < p)[None, :],
        other=0.0,
    )
    seg_before = 0
    if HAS_SEG:
        _, seg_before = _chunk_segments(seg_ptr, bi, ci, Lp, Q)
    _block_out(
        S_T, 0.0, 0.0, seg_before, x_ptr, z_ptr, cb_ptr, C_ptr, dtp_ptr, cum_ptr, cumlo_ptr, seg_ptr, D_ptr,
        out_ptr, ypre_ptr, bi, ci, hi, pid_m, rp, l, h, p, n, Lp, hg,
        sx_b, sx_l, sx_h, sx_p, sz_b, sz_l, sz_h, sz_p, sC_b, sC_l, sC_g, sC_n, so_b, so_l, so_h, so_p, sD_h, sD_p,
        Q, BM, BN, False, HAS_Z, HAS_D, STORE_YPRE, HAS_SEG, CUM_LO, PREC, UPCAST,
    )  # fmt: skip


@triton.jit
def _block_out(
    S_T, ref_cum, ref_lo, seg_ref, x_ptr, z_ptr, cb_ptr, C_ptr, dtp_ptr, cum_ptr, cumlo_ptr, seg_ptr, D_ptr,
    out_ptr, ypre_ptr, bi, ci, hi, pid_m, rp, l, h, p, n, Lp, hg,
    sx_b, sx_l, sx_h, sx_p, sz_b, sz_l, sz_h, sz_p, sC_b, sC_l, sC_g, sC_n, so_b, so_l, so_h, so_p, sD_h, sD_p,
    Q: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, SUB: tl.constexpr, HAS_Z: tl.constexpr,
    HAS_D: tl.constexpr, STORE_YPRE: tl.constexpr, HAS_SEG: tl.constexpr, CUM_LO: tl.constexpr,
    PREC: tl.constexpr, UPCAST: tl.constexpr,
):  # fmt: skip
    """Tokens pid_m * BM + [0, BM) of chunk ci, head hi, head-dim columns rp: out (and y before the gate) from S_T
    (BN, len(rp)) fp32, a state's transpose, and the dual form of the tokens after it.

    SUB: S_T is the state after the token before these (only their own block takes the dual form); else the state
    entering the chunk (every block of s up to the diagonal does). ref_cum (+ ref_lo) is cum at the token before
    the state's position (0 at the chunk's start), seg_ref that token's segment: rows of another segment do not
    see the state."""
    nc = Lp // Q
    gi = hi // hg
    row = (bi * h + hi) * Lp
    lm = pid_m * BM + tl.arange(0, BM)  # position inside the chunk
    rm = ci * Q + lm
    # the chunk's first token in int64 (a scalar): past 2^31 / (h p) tokens its offset in x passes 2^31, and int64
    # positions for every row cost the fused forward half its speed (H200, W2)
    tok0 = tl.cast(ci * Q, tl.int64)
    rn = tl.arange(0, BN)
    mmask, pmask, nmask = rm < l, rp < p, rn < n

    Ct = tl.load(
        C_ptr + bi * sC_b + tok0 * sC_l + lm[:, None] * sC_l + gi * sC_g + rn[None, :] * sC_n,
        mask=mmask[:, None] & nmask[None, :],
        other=0.0,
    )  # (BM, BN)
    cum_t = tl.load(cum_ptr + row + rm)
    if CUM_LO:
        lo_t = tl.load(cumlo_ptr + row + rm)
        e_t = exp_fast((cum_t - ref_cum) + (lo_t - ref_lo))
    else:
        e_t = exp_fast(cum_t - ref_cum)
    if HAS_SEG:
        seg_t = tl.load(seg_ptr + bi * Lp + rm)
        e_t = tl.where(seg_t == seg_ref, e_t, 0.0)

    # stage 4: the state before these rows
    acc = _dot_once(Ct, S_T, PREC, UPCAST) * e_t[:, None]  # (BM, BP)

    # stage 1: blocks of s at or below the diagonal, after the state's position. With SUB a loop of one block
    # still: as straight-line code the compiler hoists its loads above the state's product and the fused forward ran
    # 3-5% slower (H200, W2)
    cb_row = cb_ptr + ((bi * nc + ci) * (h // hg) + gi) * Q * Q + lm[:, None] * Q
    for k in range(pid_m * BM if SUB else 0, (pid_m + 1) * BM, BM):
        ls = k + tl.arange(0, BM)
        rs = ci * Q + ls
        causal = lm[:, None] >= ls[None, :]
        cb = tl.load(cb_row + ls[None, :], mask=causal, other=0.0)  # (BM, BM): C_t . B_s
        diff = cum_t[:, None] - tl.load(cum_ptr + row + rs)[None, :]
        if CUM_LO:
            diff += lo_t[:, None] - tl.load(cumlo_ptr + row + rs)[None, :]
        if HAS_SEG:
            causal &= seg_t[:, None] == tl.load(seg_ptr + bi * Lp + rs)[None, :]
        # masked before exp: above the diagonal the exponent can be large and positive
        decay = exp_fast(tl.where(causal, diff, float("-inf")))
        dt_s = tl.load(dtp_ptr + row + rs)
        xs = tl.load(
            x_ptr + bi * sx_b + tok0 * sx_l + ls[:, None] * sx_l + hi * sx_h + rp[None, :] * sx_p,
            mask=(rs < l)[:, None] & pmask[None, :],
            other=0.0,
        )  # (BM, BP)
        M = cb * decay * dt_s[None, :]
        acc += _dot_hilo(M, xs, PREC, UPCAST)

    omask = mmask[:, None] & pmask[None, :]
    if HAS_D:
        D = tl.load(D_ptr + hi * sD_h + rp * sD_p, mask=pmask, other=0.0).to(tl.float32)
        xt = tl.load(
            x_ptr + bi * sx_b + tok0 * sx_l + lm[:, None] * sx_l + hi * sx_h + rp[None, :] * sx_p, mask=omask, other=0.0
        )
        acc += xt.to(tl.float32) * D[None, :]
    out_at = bi * so_b + tok0 * so_l + lm[:, None] * so_l + hi * so_h + rp[None, :] * so_p
    if STORE_YPRE:
        tl.store(ypre_ptr + out_at, acc.to(ypre_ptr.dtype.element_ty), mask=omask)
    if HAS_Z:
        zt = tl.load(
            z_ptr + bi * sz_b + tok0 * sz_l + lm[:, None] * sz_l + hi * sz_h + rp[None, :] * sz_p, mask=omask, other=0.0
        )
        zt = zt.to(tl.float32)
        acc = acc * zt * sigmoid_fast(zt)
    tl.store(out_ptr + out_at, _round_to(acc, out_ptr.dtype.element_ty, UPCAST), mask=omask)


# rows t per program (at most the chunk) and launch settings (None: Triton's default), settable by benchmarks
BLOCK_M = 64
LAUNCH = {"num_warps": 4, "num_stages": 1}  # H200, W2: 2.05 ms per fwd+bwd against 3.5 with 3 stages


def chunk_scan_fwd(x, z, cb, C, dtp, cum, cum_lo, segp, enter, D, Q, prec, store_ypre):
    """-> out (b, l, h, p) in x's dtype, and y before the gate (same layout, fp32) when store_ypre, else None."""
    b, l, h, p = x.shape
    g, n = C.shape[-2:]
    Lp = dtp.shape[-1]
    nc = Lp // Q
    out = torch.empty_like(x, memory_format=torch.contiguous_format)
    ypre = torch.empty_like(out, dtype=torch.float32) if store_ypre else None  # d z needs y unrounded
    BM = min(BLOCK_M, Q)
    BP = max(16, min(64, triton.next_power_of_2(p)))
    BN = max(16, triton.next_power_of_2(n))
    zz = z if z is not None else x
    Dp, sD = d_operand(D, x)
    grid = (b * nc * h, Q // BM, triton.cdiv(p, BP))
    _chunk_scan_fwd_kernel[grid](
        x, zz, cb, C, dtp, cum, cum_lo if cum_lo is not None else cum, segp if segp is not None else dtp, enter,
        Dp, out, ypre if ypre is not None else out,
        l, h, p, n, Lp, h // g,
        *x.stride(), *zz.stride(), *C.stride(), *out.stride(), *sD,
        Q=Q, BM=BM, BP=BP, BN=BN, HAS_Z=z is not None, HAS_D=D is not None, STORE_YPRE=store_ypre,
        HAS_SEG=segp is not None, CUM_LO=cum_lo is not None, PREC=prec, UPCAST=upcast_dots(x.dtype),
        **LAUNCH,
    )  # fmt: skip
    return out, ypre
