"""SSD Triton backward of the chunk outputs and chunk states (stages 1, 2 and 4), per chunk.

With dy = d out * silu(z), CB_ts = C_t . B_s (triton_cb), L_ts = exp(cum_t - cum_s) for s <= t (same segment),
xdt_s = dt_s x_s, dE = d of the state after the chunk and S_in = the state entering it (triton_state),
w_s = exp(cum_last - cum_s), e_t = exp(cum_t):

    d xdt_s = sum_{t >= s} CB_ts L_ts dy_t + w_s B_s dE^T     dx_s = dt_s d xdt_s + D dy_s,  d dt_s = <x_s, d xdt_s>
    dCB_ts  = sum_{heads of the group} (dy_t . x_s) dt_s L_ts                         (one (Q, Q) per group)
    dB_s    = sum_t dCB_ts C_t + sum_heads w_s dt_s x_s dE        dC_t = sum_s dCB_ts B_s + sum_heads e_t dy_t S_in
    d a_u   = sum_{s < u <= t} W_ts,  W_ts = (dy_t . x_s) dt_s L_ts CB_ts        (a_u = dt_u A, per head)
              + sum_{s < u} w_s dt_s <x_s, B_s dE^T>,      d cum_t += e_t <dy_t S_in, C_t>

Three kernels: per group over tile pairs (t-block, s-block) looping over the group's heads (dCB and the d a
rectangle pieces), per head by rows s (dx, d dt, the state's d a term, dD), and per group by rows (dB, dC, the
entering state's d cum). Every output is written once or as partial sums added after: no atomics (deterministic).
d a is summed over the rectangle s < u <= t directly (per tile pair: prefix and suffix sums of its column and row
sums), not as a running sum of row sums minus column sums, which cancel badly in fp32.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .._triton_math import exp_fast
from .._views import empty_like_pieces
from .triton_cb import _pair
from .triton_state import _chunk_segments, _dot, _dot32, _dot_hilo, _dot_once, _round_to, d_operand, upcast_dots

# launch settings, settable by benchmarks: rows per program, and num_warps / num_stages per kernel (empty:
# Triton's defaults)
BLOCK_T = 64  # tile of the dCB kernel
BLOCK_S = 64  # rows s of the dx kernel
BLOCK_R = 64  # rows of the dB / dC kernel
BLOCK_N = 64  # state columns of the dB / dC kernel
# H200, W2 (sweep of warps 2-8, stages 1-3): one stage for dB / dC; Triton's default (3) for dCB, 2 at p > 64 (with
# its two loops over heads, 3 stages asked 256 KiB of shared memory at p = 128); dx two stages (2.49 -> 2.39 ms at W2,
# session 12) up to (p, n) tiles of DX_LARGE_TILE, one above (the larger tiles' shared memory)
LAUNCH = {
    "dcb": {},
    "dcb_wide_heads": {"num_stages": 2},
    "dx": {"num_warps": 4, "num_stages": 2},
    "dx_large_tiles": {"num_warps": 4, "num_stages": 1},
    "dbc": {"num_warps": 4, "num_stages": 1},
}
DX_LARGE_TILE = 64 * 128


@triton.jit
def _log_decay(cum_ptr, cumlo_ptr, at_t, at_s, CUM_LO: tl.constexpr):
    """(len t, len s) -> cum_t - cum_s (BT, BS), fp32; with CUM_LO the low parts too."""
    diff = tl.load(cum_ptr + at_t)[:, None] - tl.load(cum_ptr + at_s)[None, :]
    if CUM_LO:
        diff += tl.load(cumlo_ptr + at_t)[:, None] - tl.load(cumlo_ptr + at_s)[None, :]
    return diff


@triton.jit
def _decay_from(cum_ptr, cumlo_ptr, at, at_ref, CUM_LO: tl.constexpr):
    """exp(cum_at - cum_ref), fp32, for positions at and at_ref of which one is a vector and the other a scalar."""
    diff = tl.load(cum_ptr + at) - tl.load(cum_ptr + at_ref)
    if CUM_LO:
        diff += tl.load(cumlo_ptr + at) - tl.load(cumlo_ptr + at_ref)
    return exp_fast(diff)


@triton.jit
def _dcb_head(
    dcb, cb, causal, x_ptr, dy_ptr, dtp_ptr, cum_ptr, cumlo_ptr, part_ptr, bi, ci, hi, tau, sig, i, lt, ls, rt, rs,
    rp, pmask, l, h, nc, Lp, sx_b, sx_l, sx_h, sx_p, sy_b, sy_l, sy_h, sy_p,
    Q: tl.constexpr, BT: tl.constexpr, DIAG: tl.constexpr, HAS_SEG: tl.constexpr, CUM_LO: tl.constexpr,
    PREC: tl.constexpr, UPCAST: tl.constexpr,
):  # fmt: skip
    """Head hi's share of the tile pair (tau, sig) (DIAG: tau == sig): returns dcb + G and stores its d a parts."""
    NB: tl.constexpr = Q // BT
    row = (bi * h + hi) * Lp
    dyt = tl.load(
        dy_ptr + bi * sy_b + rt[:, None] * sy_l + hi * sy_h + rp[None, :] * sy_p,
        mask=(rt < l)[:, None] & pmask[None, :],
        other=0.0,
    )  # (BT, BP)
    xs = tl.load(
        x_ptr + bi * sx_b + rs[:, None] * sx_l + hi * sx_h + rp[None, :] * sx_p,
        mask=(rs < l)[:, None] & pmask[None, :],
        other=0.0,
    )  # (BS, BP)
    G = _dot(dyt, tl.trans(xs.to(dyt.dtype)), PREC, UPCAST)  # (BT, BS): dy_t . x_s
    dt_s = tl.load(dtp_ptr + row + rs)
    if DIAG:
        diff = _log_decay(cum_ptr, cumlo_ptr, row + rt, row + rs, CUM_LO)
        # masked before exp: above the diagonal the exponent can be large and positive
        G *= exp_fast(tl.where(causal, diff, float("-inf"))) * dt_s[None, :]
    else:
        # every s is before every t: L_ts = exp(cum_t - cum_t0) exp(cum_t0 - cum_s) with t0 the t-block's first
        # row, both factors <= 1 (as the chunked form's own decays): BT + BT exps instead of BT * BT
        t0 = row + ci * Q + tau * BT
        r_t = _decay_from(cum_ptr, cumlo_ptr, row + rt, t0, CUM_LO)
        c_s = _decay_from(cum_ptr, cumlo_ptr, t0, row + rs, CUM_LO) * dt_s
        G *= r_t[:, None] * c_s[None, :]
        if HAS_SEG:
            G = tl.where(causal, G, 0.0)
    # G (BT, BS): (dy_t . x_s) dt_s L_ts
    W = G * cb
    # d a_u over s < u <= t, the part in this tile pair, stored at part[tau', sigma', u] of this head:
    # diagonal: sum_{t >= u} sum_{s < u} W_ts at [tau, tau]; below it, u in the s-block: prefix over s of the
    # column sums at [tau, sigma]; u in the t-block: suffix over t of the row sums at [sigma, tau]
    part = part_ptr + ((bi * h + hi) * nc + ci) * NB * NB * BT
    if DIAG:
        P = tl.cumsum(W, axis=1) - W
        at_s = tl.sum(tl.where(lt[:, None] >= ls[None, :], P, 0.0), axis=0)
        at_t = at_s  # both slots are [tau, tau]: the same values go there twice
    else:
        col = tl.sum(W, axis=0)
        at_s = tl.cumsum(col, axis=0) - col
        at_t = tl.cumsum(tl.sum(W, axis=1), axis=0, reverse=True)
    tl.store(part + (tau * NB + sig) * BT + i, at_s)
    tl.store(part + (sig * NB + tau) * BT + i, at_t)
    return dcb + G


@triton.jit
def _bwd_dcb_kernel(
    x_ptr, dy_ptr, dtp_ptr, cum_ptr, cumlo_ptr, seg_ptr, cb_ptr, dcb_ptr, part_ptr,
    l, h, p, Lp, hg, g,
    sx_b, sx_l, sx_h, sx_p, sy_b, sy_l, sy_h, sy_p,
    Q: tl.constexpr, BT: tl.constexpr, BP: tl.constexpr,
    HAS_SEG: tl.constexpr, CUM_LO: tl.constexpr, PREC: tl.constexpr, UPCAST: tl.constexpr,
):  # fmt: skip
    # one program per (b, chunk, group) and tile pair, the pairs of one chunk launched together (L2 reuse of x, dy)
    NPAIRS: tl.constexpr = (Q // BT) * (Q // BT + 1) // 2
    pid = tl.program_id(0).to(tl.int64)
    pid_bcg = pid // NPAIRS
    tau, sig = _pair((pid % NPAIRS).to(tl.int32))
    nc = Lp // Q
    gi = pid_bcg % g
    bc = pid_bcg // g
    bi, ci = bc // nc, bc % nc
    i = tl.arange(0, BT)
    lt, ls = tau * BT + i, sig * BT + i
    rt, rs = ci * Q + lt, ci * Q + ls
    rp = tl.arange(0, BP)
    pmask = rp < p
    tile = pid_bcg * Q * Q + lt[:, None] * Q + ls[None, :]
    causal = lt[:, None] >= ls[None, :]
    cb = tl.load(cb_ptr + tile, mask=causal, other=0.0)
    if HAS_SEG:
        causal &= tl.load(seg_ptr + bi * Lp + rt)[:, None] == tl.load(seg_ptr + bi * Lp + rs)[None, :]
    dcb = tl.zeros((BT, BT), dtype=tl.float32)
    # one loop per kind of tile pair: with the decay's branch (and its loads) inside the loop over heads, Triton
    # 3.6's software pipeliner failed to compile the kernel for 16 or more heads per group (H200)
    if tau == sig:
        for j in range(hg):
            dcb = _dcb_head(
                dcb, cb, causal, x_ptr, dy_ptr, dtp_ptr, cum_ptr, cumlo_ptr, part_ptr, bi, ci, gi * hg + j, tau,
                sig, i, lt, ls, rt, rs, rp, pmask, l, h, nc, Lp, sx_b, sx_l, sx_h, sx_p, sy_b, sy_l, sy_h, sy_p,
                Q, BT, True, HAS_SEG, CUM_LO, PREC, UPCAST,
            )  # fmt: skip
    else:
        for j in range(hg):
            dcb = _dcb_head(
                dcb, cb, causal, x_ptr, dy_ptr, dtp_ptr, cum_ptr, cumlo_ptr, part_ptr, bi, ci, gi * hg + j, tau,
                sig, i, lt, ls, rt, rs, rp, pmask, l, h, nc, Lp, sx_b, sx_l, sx_h, sx_p, sy_b, sy_l, sy_h, sy_p,
                Q, BT, False, HAS_SEG, CUM_LO, PREC, UPCAST,
            )  # fmt: skip
    tl.store(dcb_ptr + tile, dcb)


@triton.jit
def _bwd_dx_kernel(
    x_ptr, B_ptr, dy_ptr, dtp_ptr, cum_ptr, cumlo_ptr, seg_ptr, cb_ptr, dend_ptr, D_ptr,
    dx_ptr, ddt_ptr, wterm_ptr, dD_ptr,
    l, h, p, n, Lp, hg,
    sx_b, sx_l, sx_h, sx_p, sB_b, sB_l, sB_g, sB_n, sy_b, sy_l, sy_h, sy_p, sdx_b, sdx_l, sdx_h, sdx_p, sD_h, sD_p,
    Q: tl.constexpr, BS: tl.constexpr, BP: tl.constexpr, BN: tl.constexpr,
    HAS_D: tl.constexpr, HAS_SEG: tl.constexpr, CUM_LO: tl.constexpr, PREC: tl.constexpr, UPCAST: tl.constexpr,
):  # fmt: skip
    # one program per (b, chunk, head) and block of rows s, the blocks of one (chunk, head) launched together
    NS: tl.constexpr = Q // BS
    pid = tl.program_id(0).to(tl.int64)
    pid_bch, pid_s = pid // NS, (pid % NS).to(tl.int32)
    nc = Lp // Q
    hi = pid_bch % h
    bc = pid_bch // h
    bi, ci = bc // nc, bc % nc
    gi = hi // hg
    row = (bi * h + hi) * Lp
    ls = pid_s * BS + tl.arange(0, BS)
    rs = ci * Q + ls
    rp, rn = tl.arange(0, BP), tl.arange(0, BN)
    smask, pmask, nmask = rs < l, rp < p, rn < n
    sp_mask = smask[:, None] & pmask[None, :]
    xs = tl.load(x_ptr + bi * sx_b + rs[:, None] * sx_l + hi * sx_h + rp[None, :] * sx_p, mask=sp_mask, other=0.0)
    dys = tl.load(dy_ptr + bi * sy_b + rs[:, None] * sy_l + hi * sy_h + rp[None, :] * sy_p, mask=sp_mask, other=0.0)
    if HAS_SEG:
        seg_s = tl.load(seg_ptr + bi * Lp + rs)
        seg_last, _ = _chunk_segments(seg_ptr, bi, ci, Lp, Q)

    # sum_{t >= s} CB_ts L_ts dy_t, by blocks of t at or after this block
    cum_s = tl.load(cum_ptr + row + rs)
    if CUM_LO:
        lo_s = tl.load(cumlo_ptr + row + rs)
    acc = tl.zeros((BS, BP), dtype=tl.float32)
    cb_col = cb_ptr + (bc * (h // hg) + gi) * Q * Q + ls[:, None]
    for k in range(pid_s * BS, Q, BS):
        lt = k + tl.arange(0, BS)
        rt = ci * Q + lt
        if k == pid_s * BS:  # the diagonal block
            causal = lt[None, :] >= ls[:, None]  # (BS, BT)
            cbT = tl.load(cb_col + lt[None, :] * Q, mask=causal, other=0.0)
            if HAS_SEG:
                causal &= tl.load(seg_ptr + bi * Lp + rt)[None, :] == seg_s[:, None]
            diffT = tl.load(cum_ptr + row + rt)[None, :] - cum_s[:, None]  # (BS, BT): cum_t - cum_s
            if CUM_LO:
                diffT += tl.load(cumlo_ptr + row + rt)[None, :] - lo_s[:, None]
            MT = cbT * exp_fast(tl.where(causal, diffT, float("-inf")))
        else:
            # every t after every s: L_ts = exp(cum_t - cum_k) exp(cum_k - cum_s), both <= 1 (as in the dCB kernel)
            MT = tl.load(cb_col + lt[None, :] * Q)
            c_s = _decay_from(cum_ptr, cumlo_ptr, row + ci * Q + k, row + rs, CUM_LO)
            r_t = _decay_from(cum_ptr, cumlo_ptr, row + rt, row + ci * Q + k, CUM_LO)
            MT *= c_s[:, None] * r_t[None, :]
            if HAS_SEG:
                MT = tl.where(tl.load(seg_ptr + bi * Lp + rt)[None, :] == seg_s[:, None], MT, 0.0)
        dyt = tl.load(
            dy_ptr + bi * sy_b + rt[:, None] * sy_l + hi * sy_h + rp[None, :] * sy_p,
            mask=(rt < l)[:, None] & pmask[None, :],
            other=0.0,
        )  # (BT, BP)
        # 16 bits of MT: rounding it to bf16 sums up in d dt_bias past the tolerance rule
        acc += _dot_hilo(MT, dyt, PREC, UPCAST)  # dy fp32 (with the silu(z) gate): tf32, else x's dtype

    # the state after the chunk: w_s B_s dE^T, w_s = exp(cum_last - cum_s) for the chunk's last segment
    last = row + ci * Q + Q - 1
    log_w = tl.load(cum_ptr + last) - cum_s
    if CUM_LO:
        log_w += tl.load(cumlo_ptr + last) - lo_s
    w = exp_fast(log_w)
    if HAS_SEG:
        w = tl.where(seg_s == seg_last, w, 0.0)
    Bs = tl.load(
        B_ptr + bi * sB_b + rs[:, None] * sB_l + gi * sB_g + rn[None, :] * sB_n,
        mask=smask[:, None] & nmask[None, :],
        other=0.0,
    )  # (BS, BN)
    dE = tl.load(
        dend_ptr + (bc * h + hi) * p * n + rp[None, :] * n + rn[:, None],
        mask=nmask[:, None] & pmask[None, :],
        other=0.0,
    )  # (BN, BP): dE^T
    BdE = _dot_once(Bs, dE, PREC, UPCAST)  # (BS, BP)
    dt_s = tl.load(dtp_ptr + row + rs)
    xsf = xs.to(tl.float32)
    tl.store(wterm_ptr + row + rs, w * dt_s * tl.sum(xsf * BdE, axis=1))  # reaches a_u for s < u <= last
    dxdt = acc + w[:, None] * BdE
    dx = dxdt * dt_s[:, None]
    if HAS_D:
        dysf = dys.to(tl.float32)
        D = tl.load(D_ptr + hi * sD_h + rp * sD_p, mask=pmask, other=0.0).to(tl.float32)
        dx += dysf * D[None, :]
        tl.store(dD_ptr + ((bc * NS + pid_s) * h + hi) * BP + rp, tl.sum(dysf * xsf, axis=0))
    dx_at = bi * sdx_b + rs[:, None] * sdx_l + hi * sdx_h + rp[None, :] * sdx_p
    tl.store(dx_ptr + dx_at, _round_to(dx, dx_ptr.dtype.element_ty, UPCAST), mask=sp_mask)
    tl.store(ddt_ptr + row + rs, tl.sum(xsf * dxdt, axis=1))


@triton.jit
def _dscore_dot(
    acc, tile, lr, k, V_ptr, bi, ci, gi, rn, nmask, l, sV_b, sV_l, sV_g, sV_n,
    Q: tl.constexpr, BR: tl.constexpr, TRANS: tl.constexpr, DIAG: tl.constexpr, PREC: tl.constexpr,
    UPCAST: tl.constexpr,
):  # fmt: skip
    """acc (BR, BN) + dCB's block of k + [0, BR) against V's rows there: TRANS, sum_t dCB_tr V_t (t >= r, for dB);
    else sum_s dCB_rs V_s (s <= r, for dC). DIAG: the block holding the diagonal, loaded masked; the others are
    causal throughout and load unmasked."""
    lk = k + tl.arange(0, BR)
    rk = ci * Q + lk
    if TRANS:
        at = tile + lk[None, :] * Q + lr[:, None]
        causal = lk[None, :] >= lr[:, None]
    else:
        at = tile + lr[:, None] * Q + lk[None, :]
        causal = lr[:, None] >= lk[None, :]
    d = tl.load(at, mask=causal, other=0.0) if DIAG else tl.load(at)
    V = tl.load(
        V_ptr + bi * sV_b + rk[:, None] * sV_l + gi * sV_g + rn[None, :] * sV_n,
        mask=(rk < l)[:, None] & nmask[None, :],
        other=0.0,
    )  # (BR, BN)
    return acc + _dot_hilo(d, V, PREC, UPCAST)


@triton.jit
def _bwd_dbc_kernel(
    x_ptr, B_ptr, C_ptr, dy_ptr, dtp_ptr, cum_ptr, cumlo_ptr, seg_ptr, dcb_ptr, enter_ptr, dend_ptr,
    dB_ptr, dC_ptr, dcum_ptr,
    l, h, p, n, Lp, hg, g, bhl,
    sx_b, sx_l, sx_h, sx_p, sB_b, sB_l, sB_g, sB_n, sC_b, sC_l, sC_g, sC_n, sy_b, sy_l, sy_h, sy_p,
    sdB_b, sdB_l, sdB_g, sdB_n, sdC_b, sdC_l, sdC_g, sdC_n,
    Q: tl.constexpr, BR: tl.constexpr, BP: tl.constexpr, BN: tl.constexpr,
    HAS_SEG: tl.constexpr, CUM_LO: tl.constexpr, PREC: tl.constexpr, UPCAST: tl.constexpr, LOW: tl.constexpr,
):  # fmt: skip
    n_nblocks = tl.cdiv(n, BN)
    pid_r, pid_n = tl.program_id(0) // n_nblocks, tl.program_id(0) % n_nblocks
    pid_bcg = tl.program_id(1).to(tl.int64)
    nc = Lp // Q
    gi = pid_bcg % g
    bc = pid_bcg // g
    bi, ci = bc // nc, bc % nc
    lr = pid_r * BR + tl.arange(0, BR)
    rr = ci * Q + lr
    rp = tl.arange(0, BP)
    rn = pid_n * BN + tl.arange(0, BN)
    rmask, pmask, nmask = rr < l, rp < p, rn < n
    rn_mask = rmask[:, None] & nmask[None, :]

    # dB_r = sum_{t >= r} dCB_tr C_t and dC_r = sum_{s <= r} dCB_rs B_s, the diagonal block peeled off
    tile = dcb_ptr + pid_bcg * Q * Q
    dB = _dscore_dot(
        tl.zeros((BR, BN), dtype=tl.float32), tile, lr, pid_r * BR, C_ptr, bi, ci, gi, rn, nmask, l,
        sC_b, sC_l, sC_g, sC_n, Q, BR, True, True, PREC, UPCAST,
    )  # fmt: skip
    for k in range((pid_r + 1) * BR, Q, BR):
        dB = _dscore_dot(
            dB, tile, lr, k, C_ptr, bi, ci, gi, rn, nmask, l, sC_b, sC_l, sC_g, sC_n, Q, BR, True, False, PREC, UPCAST
        )
    dC = tl.zeros((BR, BN), dtype=tl.float32)
    for k in range(0, pid_r * BR, BR):
        dC = _dscore_dot(
            dC, tile, lr, k, B_ptr, bi, ci, gi, rn, nmask, l, sB_b, sB_l, sB_g, sB_n, Q, BR, False, False, PREC,
            UPCAST,
        )  # fmt: skip
    dC = _dscore_dot(
        dC, tile, lr, pid_r * BR, B_ptr, bi, ci, gi, rn, nmask, l, sB_b, sB_l, sB_g, sB_n, Q, BR, False, True, PREC,
        UPCAST,
    )  # fmt: skip

    # the states of every head of the group: dB_r += w_r dt_r x_r dE, dC_r += e_r dy_r S_in
    Cr = tl.load(C_ptr + bi * sC_b + rr[:, None] * sC_l + gi * sC_g + rn[None, :] * sC_n, mask=rn_mask, other=0.0)
    if HAS_SEG:
        seg_r = tl.load(seg_ptr + bi * Lp + rr)
        seg_last, seg_before = _chunk_segments(seg_ptr, bi, ci, Lp, Q)
    rp_mask = rmask[:, None] & pmask[None, :]
    pn_mask = pmask[:, None] & nmask[None, :]
    for j in range(hg):
        hi = gi * hg + j
        row = (bi * h + hi) * Lp
        last = row + ci * Q + Q - 1
        cum_r = tl.load(cum_ptr + row + rr)
        log_w = tl.load(cum_ptr + last) - cum_r
        log_e = cum_r
        if CUM_LO:
            lo_r = tl.load(cumlo_ptr + row + rr)
            log_w += tl.load(cumlo_ptr + last) - lo_r
            log_e += lo_r
        w = exp_fast(log_w) * tl.load(dtp_ptr + row + rr)
        e = exp_fast(log_e)
        if HAS_SEG:
            w = tl.where(seg_r == seg_last, w, 0.0)
            e = tl.where(seg_r == seg_before, e, 0.0)
        xr = tl.load(x_ptr + bi * sx_b + rr[:, None] * sx_l + hi * sx_h + rp[None, :] * sx_p, mask=rp_mask, other=0.0)
        dyr = tl.load(dy_ptr + bi * sy_b + rr[:, None] * sy_l + hi * sy_h + rp[None, :] * sy_p, mask=rp_mask, other=0.0)
        state = (bc * h + hi) * p * n + rp[:, None] * n + rn[None, :]
        dE = tl.load(dend_ptr + state, mask=pn_mask, other=0.0)  # (BP, BN)
        S_in = tl.load(enter_ptr + state, mask=pn_mask, other=0.0)
        xw = xr.to(tl.float32) * w[:, None]
        if LOW:  # 16-bit inputs: x dt w rounded to x's dtype, the fp32 states once (the rule's margins held)
            dB += _dot_once(_round_to(xw, xr.dtype, UPCAST), dE, PREC, UPCAST)
        else:
            dB += _dot32(xw, dE, PREC)
        # dy as it comes: with the silu(z) gate it is fp32 (then tf32, as in dx). Rounded to bf16 here, it put dA at
        # 1.46x the tolerance rule's bound (test_bf16_full, seed 9). Without the gate S_in is rounded once
        Y = _dot_once(dyr, S_in, PREC, UPCAST) * e[:, None]  # (BR, BN): e_r dy_r S_in
        dC += Y
        tl.store(dcum_ptr + pid_n.to(tl.int64) * bhl + row + rr, tl.sum(Y * Cr.to(tl.float32), axis=1))

    tl.store(
        dB_ptr + bi * sdB_b + rr[:, None] * sdB_l + gi * sdB_g + rn[None, :] * sdB_n,
        _round_to(dB, dB_ptr.dtype.element_ty, UPCAST),
        mask=rn_mask,
    )
    tl.store(
        dC_ptr + bi * sdC_b + rr[:, None] * sdC_l + gi * sdC_g + rn[None, :] * sdC_n,
        _round_to(dC, dC_ptr.dtype.element_ty, UPCAST),
        mask=rn_mask,
    )


def _grad_buffers(x, B, C):
    """Empty d x, d B, d C. When x, B, C are side-by-side views of one tensor (Mamba-2 splits its conv output so),
    their gradients are laid out alike in one buffer, which the layer's split then returns without a copy."""
    try:
        flat = [t.view(*t.shape[:2], -1) for t in (x, B, C)]  # (b, l, h p), (b, l, g n) twice, no copies
    except RuntimeError:  # a layout that cannot be viewed so is no split of one tensor
        flat = None
    pieces = empty_like_pieces(flat) if flat is not None else None
    if pieces is None:
        return tuple(torch.empty_like(t, memory_format=torch.contiguous_format) for t in (x, B, C))
    return tuple(piece.view(t.shape) for piece, t in zip(pieces, (x, B, C)))


def chunk_bwd(x, B, C, dy, dtp, cum, cum_lo, segp, cb, enter, dend, D, Q, prec):
    """-> dx, dB, dC (inputs' layouts and dtypes), d dt (b, h, Lp) fp32 (the direct part), d a (b, h, Lp) fp32 for
    a_u = dt_u A (the rectangle sums and the state's term), d cum (b, h, Lp) fp32 (terms still to be summed over
    t >= u), dD (h, p) or None. dy in x's dtype, or fp32 when it carries the silu(z) gate."""
    b, l, h, p = x.shape
    g, n = B.shape[-2:]
    Lp = dtp.shape[-1]
    nc = Lp // Q
    upcast = upcast_dots(x.dtype)
    cum_lo_ = cum_lo if cum_lo is not None else cum
    seg_ = segp if segp is not None else cum
    BP = max(16, triton.next_power_of_2(p))
    BN_full = max(16, triton.next_power_of_2(n))

    BT = min(BLOCK_T, Q)
    nb = Q // BT
    dcb = torch.empty(b, nc, g, Q, Q, device=x.device, dtype=torch.float32)
    part = torch.empty(b, h, nc, nb, nb, BT, device=x.device, dtype=torch.float32)
    _bwd_dcb_kernel[(b * nc * g * (nb * (nb + 1) // 2),)](
        x, dy, dtp, cum, cum_lo_, seg_, cb, dcb, part,
        l, h, p, Lp, h // g, g, *x.stride(), *dy.stride(),
        Q=Q, BT=BT, BP=BP, HAS_SEG=segp is not None, CUM_LO=cum_lo is not None, PREC=prec, UPCAST=upcast,
        **LAUNCH["dcb" if BP <= 64 else "dcb_wide_heads"],
    )  # fmt: skip

    BS = min(BLOCK_S, Q)
    dx, dB, dC = _grad_buffers(x, B, C)
    ddt, wterm = torch.empty_like(dtp), torch.empty_like(dtp)
    dD = torch.empty(b * nc * (Q // BS), h, BP, device=x.device, dtype=torch.float32) if D is not None else None
    Dp, sD = d_operand(D, x)
    _bwd_dx_kernel[(b * nc * h * (Q // BS),)](
        x, B, dy, dtp, cum, cum_lo_, seg_, cb, dend, Dp, dx, ddt, wterm, dD if dD is not None else ddt,
        l, h, p, n, Lp, h // g,
        *x.stride(), *B.stride(), *dy.stride(), *dx.stride(), *sD,
        Q=Q, BS=BS, BP=BP, BN=BN_full, HAS_D=D is not None, HAS_SEG=segp is not None, CUM_LO=cum_lo is not None,
        PREC=prec, UPCAST=upcast, **LAUNCH["dx" if BP * BN_full <= DX_LARGE_TILE else "dx_large_tiles"],
    )  # fmt: skip

    BR = min(BLOCK_R, Q)
    BN = max(16, min(BLOCK_N, BN_full))
    n_nblocks = triton.cdiv(n, BN)
    dcum = torch.empty(n_nblocks, b, h, Lp, device=x.device, dtype=torch.float32)
    _bwd_dbc_kernel[((Q // BR) * n_nblocks, b * nc * g)](
        x, B, C, dy, dtp, cum, cum_lo_, seg_, dcb, enter, dend, dB, dC, dcum,
        l, h, p, n, Lp, h // g, g, b * h * Lp,
        *x.stride(), *B.stride(), *C.stride(), *dy.stride(), *dB.stride(), *dC.stride(),
        Q=Q, BR=BR, BP=BP, BN=BN, HAS_SEG=segp is not None, CUM_LO=cum_lo is not None, PREC=prec, UPCAST=upcast,
        LOW=x.dtype != torch.float32,
        **LAUNCH["dbc"],
    )  # fmt: skip

    # d a: the pieces of every tile pair at u's block (part[:, beta]), whole tiles strictly around it
    # (sigma < beta < tau: the tile's total, its t-block suffix at the block's first row), the state's term
    da = part.sum(3)  # (b, h, nc, nb, BT)
    if nb > 2:
        blk = torch.arange(nb, device=x.device)
        around = (blk[:, None, None] < blk[None, None, :]) & (blk[None, None, :] < blk[None, :, None])  # [s, t, u]
        da += torch.einsum("bhcst,stu->bhcu", part[..., 0], around.float())[..., None]
    wterm = wterm.view(b, h, nc, Q)
    da = da.view(b, h, nc, Q) + (torch.cumsum(wterm, dim=-1) - wterm)
    dD = dD.sum(0)[:, :p] if dD is not None else None
    return dx, dB, dC, ddt, da.view(b, h, Lp), dcum.sum(0), dD
