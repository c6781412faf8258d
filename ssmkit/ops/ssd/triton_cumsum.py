"""SSD Triton stage 0: the dt transform and the per-chunk cumulative decay, forward and backward.

    dt <- clamp(softplus(dt + dt_bias), *dt_limit)      cum_t = sum_{u <= t in its chunk} dt_u A   (natural log)

Written (b, h, Lp) fp32 with Lp = chunks * Q; padded tokens (t >= l) get dt = 0, so they neither decay nor feed
the state. With `precise` (fp32 inputs) the running sum is taken in fp64 and kept as two fp32 numbers, hi + lo,
so that the exponent differences cum_t - cum_s of later stages carry one rounding, not two.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .triton_state import _round_to, upcast_dots


@triton.jit
def _dt_transform(raw, lo_lim, hi_lim, SOFTPLUS: tl.constexpr, HAS_LIMIT: tl.constexpr):
    """raw = dt + dt_bias (fp32) -> (dt, d dt / d raw)."""
    val = raw
    grad = tl.full(raw.shape, 1.0, tl.float32)
    if SOFTPLUS:
        e = tl.exp(tl.minimum(raw, 20.0))
        u = 1.0 + e
        # log1p(e) without the cancellation of log(1 + e) for small e (Goldberg's trick)
        log1p_e = tl.where(u == 1.0, e, tl.log(u) * (e / (u - 1.0)))
        val = tl.where(raw > 20.0, raw, log1p_e)
        grad = tl.where(raw > 20.0, 1.0, e / u)  # sigmoid(raw)
    if HAS_LIMIT:
        inside = (val >= lo_lim) & (val <= hi_lim)
        grad = tl.where(inside, grad, 0.0)
        val = tl.minimum(tl.maximum(val, lo_lim), hi_lim)
    return val, grad


@triton.jit
def _dt_cumsum_fwd_kernel(
    dt_ptr, bias_ptr, A_ptr, dtp_ptr, cum_ptr, cumlo_ptr,
    l, h, Lp, s_b, s_l, s_h, lo_lim, hi_lim,
    Q: tl.constexpr, BLOCK_H: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
    HAS_LIMIT: tl.constexpr, PRECISE: tl.constexpr,
):  # fmt: skip
    pid_bc, pid_h = tl.program_id(0).to(tl.int64), tl.program_id(1)
    nc = Lp // Q
    bi, ci = pid_bc // nc, pid_bc % nc
    t = ci * Q + tl.arange(0, Q)
    hh = pid_h * BLOCK_H + tl.arange(0, BLOCK_H)
    tmask, hmask = t < l, hh < h
    mask = tmask[:, None] & hmask[None, :]
    raw = tl.load(dt_ptr + bi * s_b + t[:, None] * s_l + hh[None, :] * s_h, mask=mask, other=0.0).to(tl.float32)
    if HAS_BIAS:
        raw += tl.load(bias_ptr + hh, mask=hmask, other=0.0).to(tl.float32)[None, :]
    dtv, _ = _dt_transform(raw, lo_lim, hi_lim, SOFTPLUS, HAS_LIMIT)
    dtv = tl.where(mask, dtv, 0.0)  # (Q, BLOCK_H)
    A = tl.load(A_ptr + hh, mask=hmask, other=0.0).to(tl.float32)
    out = bi * h * Lp + hh[None, :] * Lp + t[:, None]  # (b, h, Lp) layout
    smask = (t[:, None] < Lp) & hmask[None, :]
    tl.store(dtp_ptr + out, dtv, mask=smask)
    if PRECISE:
        cum64 = tl.cumsum(dtv.to(tl.float64) * A.to(tl.float64)[None, :], axis=0)
        hi = cum64.to(tl.float32)
        tl.store(cum_ptr + out, hi, mask=smask)
        tl.store(cumlo_ptr + out, (cum64 - hi.to(tl.float64)).to(tl.float32), mask=smask)
    else:
        tl.store(cum_ptr + out, tl.cumsum(dtv * A[None, :], axis=0), mask=smask)


@triton.jit
def _dt_cumsum_bwd_kernel(
    dcum_ptr, da_ptr, ddt_ptr, dt_ptr, bias_ptr, A_ptr, dtp_ptr, ddt_out_ptr, dA_part_ptr, dbias_part_ptr,
    l, h, Lp, s_b, s_l, s_h, so_b, so_l, so_h, lo_lim, hi_lim,
    Q: tl.constexpr, BLOCK_H: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
    HAS_LIMIT: tl.constexpr, UPCAST: tl.constexpr,
):  # fmt: skip
    pid_bc, pid_h = tl.program_id(0).to(tl.int64), tl.program_id(1)
    nc = Lp // Q
    bi, ci = pid_bc // nc, pid_bc % nc
    t = ci * Q + tl.arange(0, Q)
    hh = pid_h * BLOCK_H + tl.arange(0, BLOCK_H)
    tmask, hmask = t < l, hh < h
    mask = tmask[:, None] & hmask[None, :]
    pos = bi * h * Lp + hh[None, :] * Lp + t[:, None]
    pmask = hmask[None, :] & (t[:, None] < Lp)
    dcum = tl.load(dcum_ptr + pos, mask=pmask, other=0.0)
    # cum_t = sum_{u <= t} a_u  =>  d a_u = sum_{t >= u} d cum_t
    da = tl.cumsum(dcum, axis=0, reverse=True) + tl.load(da_ptr + pos, mask=pmask, other=0.0)  # (Q, BLOCK_H)
    A = tl.load(A_ptr + hh, mask=hmask, other=0.0).to(tl.float32)
    dtp = tl.load(dtp_ptr + pos, mask=pmask, other=0.0)
    tl.store(dA_part_ptr + pid_bc * h + hh, tl.sum(da * dtp, axis=0), mask=hmask)
    ddt = tl.load(ddt_ptr + pos, mask=pmask, other=0.0) + da * A[None, :]
    raw = tl.load(dt_ptr + bi * s_b + t[:, None] * s_l + hh[None, :] * s_h, mask=mask, other=0.0).to(tl.float32)
    if HAS_BIAS:
        raw += tl.load(bias_ptr + hh, mask=hmask, other=0.0).to(tl.float32)[None, :]
    _, dval = _dt_transform(raw, lo_lim, hi_lim, SOFTPLUS, HAS_LIMIT)
    draw = tl.where(mask, ddt * dval, 0.0)
    tl.store(
        ddt_out_ptr + bi * so_b + t[:, None] * so_l + hh[None, :] * so_h,
        _round_to(draw, ddt_out_ptr.dtype.element_ty, UPCAST),
        mask=mask,
    )
    tl.store(dbias_part_ptr + pid_bc * h + hh, tl.sum(draw, axis=0), mask=hmask)


def _limits(dt_limit: tuple[float, float]) -> tuple[bool, float, float]:
    lo, hi = float(dt_limit[0]), float(dt_limit[1])
    has = (lo, hi) != (0.0, float("inf"))
    # finite stand-ins: the kernels take plain fp32 scalars
    return has, max(lo, -3.0e38), min(hi, 3.0e38)


def dt_cumsum_fwd(dt, dt_bias, A, dt_softplus, dt_limit, Q, nc, precise):
    """dt (b, l, h) -> dtp, cum, cum_lo (b, h, nc * Q) fp32; cum_lo is None unless precise."""
    b, l, h = dt.shape
    Lp = nc * Q
    dtp = torch.empty(b, h, Lp, device=dt.device, dtype=torch.float32)
    cum = torch.empty_like(dtp)
    cum_lo = torch.empty_like(dtp) if precise else None
    has_limit, lo, hi = _limits(dt_limit)
    BLOCK_H = min(16, triton.next_power_of_2(h))
    grid = (b * nc, triton.cdiv(h, BLOCK_H))
    _dt_cumsum_fwd_kernel[grid](
        dt, dt_bias if dt_bias is not None else A, A, dtp, cum, cum_lo if precise else cum,
        l, h, Lp, *dt.stride(), lo, hi,
        Q=Q, BLOCK_H=BLOCK_H, HAS_BIAS=dt_bias is not None, SOFTPLUS=dt_softplus, HAS_LIMIT=has_limit,
        PRECISE=precise,
    )  # fmt: skip
    return dtp, cum, cum_lo


def dt_cumsum_bwd(dcum, da, ddt_direct, dt, dt_bias, A, dtp, dt_softplus, dt_limit, Q):
    """Gradients (d dt (b, l, h) in dt's dtype, dA (h,) fp32, d dt_bias (h,) fp32 or None)."""
    b, l, h = dt.shape
    Lp = dtp.shape[-1]
    nc = Lp // Q
    ddt = torch.empty_like(dt)
    dA_part = torch.empty(b * nc, h, device=dt.device, dtype=torch.float32)
    dbias_part = torch.empty_like(dA_part)
    has_limit, lo, hi = _limits(dt_limit)
    BLOCK_H = min(16, triton.next_power_of_2(h))
    grid = (b * nc, triton.cdiv(h, BLOCK_H))
    _dt_cumsum_bwd_kernel[grid](
        dcum, da, ddt_direct, dt, dt_bias if dt_bias is not None else A, A, dtp, ddt, dA_part, dbias_part,
        l, h, Lp, *dt.stride(), *ddt.stride(), lo, hi,
        Q=Q, BLOCK_H=BLOCK_H, HAS_BIAS=dt_bias is not None, SOFTPLUS=dt_softplus, HAS_LIMIT=has_limit,
        UPCAST=upcast_dots(dt.dtype),
    )  # fmt: skip
    return ddt, dA_part.sum(0), dbias_part.sum(0) if dt_bias is not None else None
