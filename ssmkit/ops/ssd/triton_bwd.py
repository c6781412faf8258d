"""SSD Triton backward of the chunk outputs and chunk states (stages 1, 2 and 4), per chunk.

With dy = d out * silu(z), M_ts = exp(cum_t - cum_s) (C_t . B_s) for s <= t, xdt_s = dt_s x_s and dE = d of the
state after the chunk (from triton_state's reverse pass), w_s = exp(cum_last - cum_s):

    d xdt_s = sum_{t >= s} M_ts dy_t + w_s B_s dE^T          dx_s = dt_s d xdt_s + D dy_s,  d dt_s = <x_s, d xdt_s>
    dB_s    = sum_{t >= s} (dy_t . xdt_s) L_ts C_t + w_s dE^T xdt_s
    dC_t    = sum_{s <= t} (dy_t . xdt_s) L_ts B_s + exp(cum_t) dy_t S_in
    d cum_t = sum_s W_ts - sum_s W_st + (terms of the entering state and of w),   W_ts = (dy_t . xdt_s) M_ts

Two kernels, one by rows s (dx, dB, d dt) and one by rows t (dC). B and C are shared by the h/g heads of a group:
one program loops over those heads and writes dB / dC once, with no atomics (deterministic).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .triton_state import _chunk_segments, _dot, _dot32, upcast_dots

# launch settings of the two kernels (None: Triton's default), settable by benchmarks
BLOCK_S = 32  # rows s (or t) per program, at most the chunk (H200, W2: 32 took 29.7 ms fwd+bwd, 64 took 43.9)
NUM_WARPS = None
NUM_STAGES = None


@triton.jit
def _xdy(a, b, PREC: tl.constexpr, UPCAST: tl.constexpr, DY32: tl.constexpr):
    """x against dy: dy is fp32 when it carries the silu(z) gate (DY32), else x's dtype."""
    if DY32:  # noqa: SIM108 (a constexpr branch: only the taken side is compiled)
        out = _dot32(a, b, PREC)
    else:
        out = _dot(a, b, PREC, UPCAST)
    return out


@triton.jit
def _bwd_dx_db_kernel(
    x_ptr, B_ptr, C_ptr, dy_ptr, dtp_ptr, cum_ptr, cumlo_ptr, seg_ptr, dend_ptr, D_ptr,
    dx_ptr, dB_ptr, ddt_ptr, da_ptr, dD_ptr, wtot_ptr,
    l, h, p, n, Lp, hg, g,
    sx_b, sx_l, sx_h, sx_p, sB_b, sB_l, sB_g, sB_n, sC_b, sC_l, sC_g, sC_n, sy_b, sy_l, sy_h, sy_p,
    sdx_b, sdx_l, sdx_h, sdx_p, sdB_b, sdB_l, sdB_g, sdB_n, sD_h, sD_p,
    Q: tl.constexpr, BS: tl.constexpr, BP: tl.constexpr, BN: tl.constexpr,
    HAS_D: tl.constexpr, HAS_SEG: tl.constexpr, CUM_LO: tl.constexpr, PREC: tl.constexpr, UPCAST: tl.constexpr,
    DY32: tl.constexpr,
):  # fmt: skip
    pid_bcg, pid_s = tl.program_id(0).to(tl.int64), tl.program_id(1)
    nc = Lp // Q
    gi = pid_bcg % g
    bi, ci = (pid_bcg // g) // nc, (pid_bcg // g) % nc
    n_sblocks = tl.num_programs(1)
    ls = pid_s * BS + tl.arange(0, BS)
    rs = ci * Q + ls
    rp, rn = tl.arange(0, BP), tl.arange(0, BN)
    smask, pmask, nmask = rs < l, rp < p, rn < n
    sp_mask = smask[:, None] & pmask[None, :]

    Bs = tl.load(
        B_ptr + bi * sB_b + rs[:, None] * sB_l + gi * sB_g + rn[None, :] * sB_n,
        mask=smask[:, None] & nmask[None, :],
        other=0.0,
    )  # (BS, BN)
    if HAS_SEG:
        seg_s = tl.load(seg_ptr + bi * Lp + rs)
        seg_last, _ = _chunk_segments(seg_ptr, bi, ci, Lp, Q)
    dB = tl.zeros((BS, BN), dtype=tl.float32)
    for j in range(hg):
        hi = gi * hg + j
        row = (bi * h + hi) * Lp
        cum_s = tl.load(cum_ptr + row + rs)
        if CUM_LO:
            lo_s = tl.load(cumlo_ptr + row + rs)
        dt_s = tl.load(dtp_ptr + row + rs)
        xs = tl.load(x_ptr + bi * sx_b + rs[:, None] * sx_l + hi * sx_h + rp[None, :] * sx_p, mask=sp_mask, other=0.0)
        dys = tl.load(dy_ptr + bi * sy_b + rs[:, None] * sy_l + hi * sy_h + rp[None, :] * sy_p, mask=sp_mask, other=0.0)
        xs_in, xs = xs, xs.to(tl.float32)
        dxdt = tl.zeros((BS, BP), dtype=tl.float32)
        da = tl.zeros((BS,), dtype=tl.float32)
        col = tl.zeros((BS,), dtype=tl.float32)
        for k in range(pid_s * BS, Q, BS):
            lt = k + tl.arange(0, BS)
            rt = ci * Q + lt
            tmask = rt < l
            Ct = tl.load(
                C_ptr + bi * sC_b + rt[:, None] * sC_l + gi * sC_g + rn[None, :] * sC_n,
                mask=tmask[:, None] & nmask[None, :],
                other=0.0,
            )  # (BT, BN)
            dyt = tl.load(
                dy_ptr + bi * sy_b + rt[:, None] * sy_l + hi * sy_h + rp[None, :] * sy_p,
                mask=tmask[:, None] & pmask[None, :],
                other=0.0,
            )  # (BT, BP)
            diff = tl.load(cum_ptr + row + rt)[None, :] - cum_s[:, None]  # (BS, BT): cum_t - cum_s
            if CUM_LO:
                diff += tl.load(cumlo_ptr + row + rt)[None, :] - lo_s[:, None]
            causal = lt[None, :] >= ls[:, None]
            if HAS_SEG:
                causal = causal & (tl.load(seg_ptr + bi * Lp + rt)[None, :] == seg_s[:, None])
            LT = tl.exp(tl.where(causal, diff, float("-inf")))  # (BS, BT)
            cbT = _dot(Bs, tl.trans(Ct.to(Bs.dtype)), PREC, UPCAST)  # (BS, BT): B_s . C_t
            MT = cbT * LT
            dxdt += _dot32(MT, dyt, PREC)
            dLC = _xdy(xs_in, tl.trans(dyt), PREC, UPCAST, DY32) * (dt_s[:, None] * LT)  # (BS, BT): (dy_t . xdt_s) L_ts
            dB += _dot32(dLC, Ct, PREC)
            WT = dLC * cbT  # (BS, BT): W^T
            # the diagonal tile: d a_u += sum_{s < u <= t} W_ts, an exclusive prefix over s, then t >= u; a later
            # tile: its column sums (arithmetic on a scalar condition: no branch inside the loop)
            on_diagonal = k == pid_s * BS
            PT = tl.cumsum(WT, axis=0) - WT
            da += tl.where(on_diagonal, tl.sum(tl.where(lt[None, :] >= ls[:, None], PT, 0.0), axis=1), 0.0)
            col += tl.where(on_diagonal, 0.0, tl.sum(WT, axis=1))
        # tiles with t in a later block: every s < u in this block
        da += tl.cumsum(col, axis=0) - col
        # the state after the chunk: w_s = exp(cum_last - cum_s) for the chunk's last segment
        last = row + ci * Q + Q - 1
        log_w = tl.load(cum_ptr + last) - cum_s
        if CUM_LO:
            log_w += tl.load(cumlo_ptr + last) - lo_s
        w = tl.exp(log_w)
        if HAS_SEG:
            w = tl.where(seg_s == seg_last, w, 0.0)
        # d_end (p, n) of this head and chunk
        dE = tl.load(
            dend_ptr + ((bi * nc + ci) * h + hi) * p * n + rp[:, None] * n + rn[None, :],
            mask=pmask[:, None] & nmask[None, :],
            other=0.0,
        )  # (BP, BN)
        BdE = _dot32(Bs, tl.trans(dE), PREC)  # (BS, BP)
        w_term = w * dt_s * tl.sum(xs * BdE, axis=1)  # (BS,)
        da += tl.cumsum(w_term, axis=0) - w_term  # w_s reaches a_u for s < u <= last
        tl.store(wtot_ptr + ((bi * h + hi) * nc + ci) * n_sblocks + pid_s, tl.sum(w_term))
        dxdt += w[:, None] * BdE
        dB += (w * dt_s)[:, None] * _dot32(xs_in, dE, PREC)

        dx = dxdt * dt_s[:, None]
        dysf = dys.to(tl.float32)
        if HAS_D:
            D = tl.load(D_ptr + hi * sD_h + rp * sD_p, mask=pmask, other=0.0).to(tl.float32)
            dx += dysf * D[None, :]
            part = ((bi * nc + ci) * n_sblocks + pid_s) * h + hi
            tl.store(dD_ptr + part * BP + rp, tl.sum(dysf * xs, axis=0))
        dx_at = bi * sdx_b + rs[:, None] * sdx_l + hi * sdx_h + rp[None, :] * sdx_p
        tl.store(dx_ptr + dx_at, dx.to(dx_ptr.dtype.element_ty), mask=sp_mask)
        tl.store(ddt_ptr + row + rs, tl.sum(xs * dxdt, axis=1))
        tl.store(da_ptr + row + rs, da)
    dB_at = bi * sdB_b + rs[:, None] * sdB_l + gi * sdB_g + rn[None, :] * sdB_n
    tl.store(dB_ptr + dB_at, dB.to(dB_ptr.dtype.element_ty), mask=smask[:, None] & nmask[None, :])


@triton.jit
def _bwd_dc_kernel(
    x_ptr, B_ptr, C_ptr, dy_ptr, dtp_ptr, cum_ptr, cumlo_ptr, seg_ptr, enter_ptr, dC_ptr, dcum_ptr, da_ptr, T_ptr,
    l, h, p, n, Lp, hg, g,
    sx_b, sx_l, sx_h, sx_p, sB_b, sB_l, sB_g, sB_n, sC_b, sC_l, sC_g, sC_n, sy_b, sy_l, sy_h, sy_p,
    sdC_b, sdC_l, sdC_g, sdC_n,
    Q: tl.constexpr, BT: tl.constexpr, BP: tl.constexpr, BN: tl.constexpr,
    HAS_SEG: tl.constexpr, CUM_LO: tl.constexpr, PREC: tl.constexpr, UPCAST: tl.constexpr,
    DY32: tl.constexpr,
):  # fmt: skip
    pid_bcg, pid_t = tl.program_id(0).to(tl.int64), tl.program_id(1)
    nc = Lp // Q
    gi = pid_bcg % g
    bi, ci = (pid_bcg // g) // nc, (pid_bcg // g) % nc
    n_tblocks = tl.num_programs(1)
    lt = pid_t * BT + tl.arange(0, BT)
    rt = ci * Q + lt
    rp, rn = tl.arange(0, BP), tl.arange(0, BN)
    tmask, pmask, nmask = rt < l, rp < p, rn < n

    Ct = tl.load(
        C_ptr + bi * sC_b + rt[:, None] * sC_l + gi * sC_g + rn[None, :] * sC_n,
        mask=tmask[:, None] & nmask[None, :],
        other=0.0,
    )  # (BT, BN)
    if HAS_SEG:
        seg_t = tl.load(seg_ptr + bi * Lp + rt)
        _, seg_before = _chunk_segments(seg_ptr, bi, ci, Lp, Q)
    dC = tl.zeros((BT, BN), dtype=tl.float32)
    for j in range(hg):
        hi = gi * hg + j
        row = (bi * h + hi) * Lp
        cum_t = tl.load(cum_ptr + row + rt)
        if CUM_LO:
            lo_t = tl.load(cumlo_ptr + row + rt)
        dyt = tl.load(
            dy_ptr + bi * sy_b + rt[:, None] * sy_l + hi * sy_h + rp[None, :] * sy_p,
            mask=tmask[:, None] & pmask[None, :],
            other=0.0,
        )  # (BT, BP)
        rows = tl.zeros((BT,), dtype=tl.float32)
        for k in range(0, (pid_t + 1) * BT, BT):
            ls = k + tl.arange(0, BT)
            rs = ci * Q + ls
            smask = rs < l
            Bs = tl.load(
                B_ptr + bi * sB_b + rs[:, None] * sB_l + gi * sB_g + rn[None, :] * sB_n,
                mask=smask[:, None] & nmask[None, :],
                other=0.0,
            )  # (BS, BN)
            xs = tl.load(
                x_ptr + bi * sx_b + rs[:, None] * sx_l + hi * sx_h + rp[None, :] * sx_p,
                mask=smask[:, None] & pmask[None, :],
                other=0.0,
            )
            diff = cum_t[:, None] - tl.load(cum_ptr + row + rs)[None, :]
            if CUM_LO:
                diff += lo_t[:, None] - tl.load(cumlo_ptr + row + rs)[None, :]
            causal = lt[:, None] >= ls[None, :]
            if HAS_SEG:
                causal = causal & (seg_t[:, None] == tl.load(seg_ptr + bi * Lp + rs)[None, :])
            L = tl.exp(tl.where(causal, diff, float("-inf")))  # (BT, BS)
            dLC = _xdy(dyt, tl.trans(xs), PREC, UPCAST, DY32) * (tl.load(dtp_ptr + row + rs)[None, :] * L)  # (BT, BS)
            dC += _dot32(dLC, Bs, PREC)
            # a tile with s in an earlier block: W_ts reaches a_u for u <= t in this block (the rest of the
            # rectangle s < u <= t is the tile total, added per block by the caller)
            earlier = k < pid_t * BT
            W = dLC * _dot(Ct, tl.trans(Bs.to(Ct.dtype)), PREC, UPCAST)
            rows += tl.where(earlier, tl.sum(W, axis=1), 0.0)
            T_at = (((bi * h + hi) * nc + ci) * n_tblocks + pid_t) * n_tblocks + k // BT
            tl.store(T_ptr + T_at, tl.sum(W), mask=earlier)
        # the entering state: y_t += exp(cum_t) C_t S_in^T
        e = tl.exp(cum_t + lo_t) if CUM_LO else tl.exp(cum_t)
        if HAS_SEG:
            e = tl.where(seg_t == seg_before, e, 0.0)
        S = tl.load(
            enter_ptr + ((bi * nc + ci) * h + hi) * p * n + rp[:, None] * n + rn[None, :],
            mask=pmask[:, None] & nmask[None, :],
            other=0.0,
        )  # (BP, BN)
        dC_in = _dot32(dyt, S, PREC) * e[:, None]  # (BT, BN)
        dC += dC_in
        tl.store(dcum_ptr + row + rt, tl.sum(dC_in * Ct.to(tl.float32), axis=1))
        da = tl.load(da_ptr + row + rt) + tl.cumsum(rows, axis=0, reverse=True)
        tl.store(da_ptr + row + rt, da)
    dC_at = bi * sdC_b + rt[:, None] * sdC_l + gi * sdC_g + rn[None, :] * sdC_n
    tl.store(dC_ptr + dC_at, dC.to(dC_ptr.dtype.element_ty), mask=tmask[:, None] & nmask[None, :])


def chunk_bwd(x, B, C, dy, dtp, cum, cum_lo, segp, enter, dend, D, Q, prec):
    """-> dx, dB, dC (inputs' layouts and dtypes), d dt (b, h, Lp) fp32 (the direct part), d a (b, h, Lp) fp32 for
    a_u = dt_u A (the rectangle sums), d cum (b, h, Lp) fp32 (terms still to be summed over t >= u), dD (h, p).

    d a from the decays exp(cum_t - cum_s) is summed over the rectangle s < u <= t directly rather than as a
    running sum of row sums minus column sums, which cancel badly in fp32.
    """
    b, l, h, p = x.shape
    g, n = B.shape[-2:]
    Lp = dtp.shape[-1]
    nc = Lp // Q
    BS = min(BLOCK_S, Q)
    nb = Q // BS
    BP, BN = max(16, triton.next_power_of_2(p)), max(16, triton.next_power_of_2(n))
    dx = torch.empty_like(x, memory_format=torch.contiguous_format)
    dB = torch.empty_like(B, memory_format=torch.contiguous_format)
    dC = torch.empty_like(C, memory_format=torch.contiguous_format)
    ddt, da, dcum = torch.empty_like(dtp), torch.empty_like(dtp), torch.empty_like(dtp)
    wtot = torch.empty(b, h, nc, nb, device=x.device, dtype=torch.float32)
    T = torch.zeros(b, h, nc, nb, nb, device=x.device, dtype=torch.float32)  # [tau, sigma], sigma < tau written
    dD = torch.empty(b * nc * nb, h, BP, device=x.device, dtype=torch.float32) if D is not None else None
    if D is None:
        Dp, sD = x, (0, 0)
    else:
        Dp, sD = D, ((D.stride(0), 0) if D.dim() == 1 else tuple(D.stride()))
    grid = (b * nc * g, nb)
    launch = {k: v for k, v in (("num_warps", NUM_WARPS), ("num_stages", NUM_STAGES)) if v is not None}
    cum_lo_ = cum_lo if cum_lo is not None else cum
    seg_ = segp if segp is not None else cum
    upcast = upcast_dots(x.dtype)
    _bwd_dx_db_kernel[grid](
        x, B, C, dy, dtp, cum, cum_lo_, seg_, dend, Dp, dx, dB, ddt, da, dD if dD is not None else da, wtot,
        l, h, p, n, Lp, h // g, g,
        *x.stride(), *B.stride(), *C.stride(), *dy.stride(), *dx.stride(), *dB.stride(), *sD,
        Q=Q, BS=BS, BP=BP, BN=BN, HAS_D=D is not None, HAS_SEG=segp is not None, CUM_LO=cum_lo is not None,
        PREC=prec, UPCAST=upcast, DY32=dy.dtype != x.dtype, **launch,
    )  # fmt: skip
    _bwd_dc_kernel[grid](
        x, B, C, dy, dtp, cum, cum_lo_, seg_, enter, dC, dcum, da, T,
        l, h, p, n, Lp, h // g, g,
        *x.stride(), *B.stride(), *C.stride(), *dy.stride(), *dC.stride(),
        Q=Q, BT=BS, BP=BP, BN=BN, HAS_SEG=segp is not None, CUM_LO=cum_lo is not None, PREC=prec, UPCAST=upcast,
        DY32=dy.dtype != x.dtype, **launch,
    )  # fmt: skip
    if nb > 1:
        # whole tiles and whole blocks of w around block beta: T[tau, sigma] for sigma < beta < tau, w of sigma < beta
        blk = torch.arange(nb, device=x.device)
        around = (blk[None, :, None] > blk[:, None, None]) & (blk[None, None, :] < blk[:, None, None])
        extra = torch.einsum("bhcts,uts->bhcu", T, around.float())
        extra += torch.cumsum(wtot, dim=-1) - wtot
        da.view(b, h, nc, nb, BS).add_(extra[..., None])
    dD = dD.sum(0)[:, :p] if dD is not None else None
    return dx, dB, dC, ddt, da, dcum, dD
