"""Depthwise causal conv1d in Triton: one streaming pass forward, one backward, tied into autograd.

Forward: a program walks SPAN steps of BLOCK_D channels (contiguous, so every load coalesces), ROWS rows a loop
step, and loads each row of x once: the last W-1 rows ride along in registers (a tuple, shifted by renaming in the
unrolled loop), so the W taps cost no further loads; only the W-1 rows before the span are read again. The compiler
pipelines the row groups, STAGES-1 groups ahead through shared memory. fp32 accumulate, bias and silu fused.

Backward, with g_t = dy_t * act'(pre_t) (pre recomputed from x, never stored):
    dx_s        = sum_j weight[:, W-1-j] g_{s+j}          (lookahead of j = 0..W-1 rows, each g recomputed)
    dweight_k   = sum_s x_s g_{s+W-1-k},   dbias = sum_t g_t   (per-program fp32 partials, summed by torch)
    dinit_state = dx at the W-1 positions before 0 (a small kernel of its own, with their share of dweight)
plus, where final_state got a gradient, dfinal added to the inputs it copied. Recomputing pre_{s+j} for each lag j
takes W^2 shifted loads of the x tile per tile; all but the first of each address should be L1 hits. (Holding
g_{s+j} as one (W, rows, channels) tile instead, each shifted x tile loaded once, compiled to many shared-memory
layout conversions and register spills for sm_90: the 3D layouts are the compiler's choice.)

The kernels see the states time-major, (b, W-1, d) like x, so their loads and stores coalesce too; the
transposes to and from the public (b, d, W-1) are small torch copies, differentiated by autograd.

Packed sequences: the host turns seq_idx into `reach` (b, l) int32, how many steps back position t may read
(t - start of its sequence, plus W-1 in the first sequence of a row, which reads initial_state). A tap of lag j
(it reads x_{t-j}) counts iff j <= reach[t]: one int per row instead of comparing seq_idx along the window.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..selective_scan.triton_fwd import _store

# tile sizes, settable by benchmarks. Forward: SPAN rows x BLOCK_D channels per program, ROWS rows a step, STAGES
# pipeline stages; a bf16 row of 512 channels on 2 warps is one 16-byte load per thread (96 registers and 8 KiB of
# shared memory at w = 4). At W4 on the H200: 0.294 ms, 0.86 of the copy bandwidth (the earlier 32 x 128 tile
# kernel, reading W shifted tiles: 0.365 ms); 1024 channels on 4 warps 0.298, 256 on 1 0.294, SPAN 128 to 512 and
# STAGES 3 or 4 within 2%; at 1024 channels, without the pipelining (STAGES 1) 0.387 ms, ROWS 2 0.526, ROWS 8 0.315.
SPAN = 256
ROWS = 4
STAGES = 3
BLOCK_D = 512
NUM_WARPS = 2
# backward: a program walks BWD_TILES tiles of BLOCK_L_BWD rows (one dweight/dbias partial per program). The W^2
# shifted loads are hoisted by ptxas. 32 x 128 with 4 warps spills a little (176 bytes) but measured fastest on
# the H200 at W4 (fwd+bwd 3.88 ms, against 5.13 ms at 16 rows and 7.70 ms at 8).
BLOCK_L_BWD = 32
BLOCK_D_BWD = 128
BWD_TILES = 8
NUM_WARPS_BWD = 4
# initial_state gradient: channels per program of the small state kernel
BLOCK_D_STATE = 128
# widths the kernels take; the backward unrolls W x W shifted loads, so wider filters compile slowly
MAX_WIDTH = 8

_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def unsupported_reason(dtype: torch.dtype, w: int) -> str | None:
    """Why these kernels cannot take a call, or None ("auto" then runs the torch path, with a warning)."""
    if dtype not in _DTYPES:
        return f"x: expects float32, bfloat16 or float16, got {dtype}"
    if w > MAX_WIDTH:
        return f"weight: expects a width w <= {MAX_WIDTH}, got w = {w}"
    return None


def _empty(*shape, dtype, device):
    """Every output buffer comes from here (tests replace it with a NaN fill to catch unwritten elements)."""
    return torch.empty(*shape, dtype=dtype, device=device)


@triton.jit
def _silu_and_grad(z):
    """(silu(z), silu'(z)) in fp32, the sigmoid through exp2."""
    s = 1.0 / (1.0 + tl.exp2(z * -1.4426950408889634))
    return z * s, s * (1.0 + z * (1.0 - s))


@triton.jit
def _load_rows(
    x_ptr, h0_ptr, b64, rows, lo, ok, offs_d, mask_d, L,
    D: tl.constexpr, W: tl.constexpr, HAS_H0: tl.constexpr,
):  # fmt: skip
    """x at time `rows` (R,) as (R, BD) fp32, zero where ~ok. rows < 0 read the initial state, here (b, W-1, d), at
    row rows + W-1 (zeros without one), rows >= L read zeros. lo <= min(rows) (a scalar) skips the state when >= 0."""
    in_x = ok & (rows >= 0) & (rows < L)
    ptr = x_ptr + (b64 * L + rows)[:, None] * D + offs_d[None, :]  # (R, BD)
    v = tl.load(ptr, mask=in_x[:, None] & mask_d[None, :], other=0.0).to(tl.float32)
    if HAS_H0:  # noqa: SIM102 (a constexpr and a run-time condition do not combine in Triton)
        if lo < 0:
            in_h0 = ok & (rows < 0) & (rows >= -(W - 1))
            hptr = h0_ptr + (b64 * (W - 1) + rows + (W - 1))[:, None] * D + offs_d[None, :]  # (R, BD)
            v += tl.load(hptr, mask=in_h0[:, None] & mask_d[None, :], other=0.0).to(tl.float32)
    return v


@triton.jit
def _preact(
    x_ptr, h0_ptr, w_ptr, bias_ptr, reach_ptr, b64, rows, lo, offs_d, mask_d, L,
    D: tl.constexpr, W: tl.constexpr, HAS_H0: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_SEQ: tl.constexpr,
):  # fmt: skip
    """pre_t = bias + sum_k weight[:, k] x_{t-(W-1)+k} for t in `rows` (R,): (R, BD) fp32."""
    all_rows = rows == rows  # (R,) True
    if HAS_SEQ:
        reach = tl.load(reach_ptr + b64 * L + rows, mask=(rows >= 0) & (rows < L), other=0)  # (R,)
    acc = tl.zeros((rows.shape[0], offs_d.shape[0]), dtype=tl.float32)
    for k in tl.static_range(W):
        ok = all_rows
        if HAS_SEQ:
            ok = reach >= W - 1 - k  # the tap's lag reaches no earlier sequence
        xk = _load_rows(x_ptr, h0_ptr, b64, rows - (W - 1) + k, lo - (W - 1) + k, ok, offs_d, mask_d, L, D, W, HAS_H0)
        wk = tl.load(w_ptr + offs_d * W + k, mask=mask_d, other=0.0).to(tl.float32)  # (BD,)
        acc += xk * wk[None, :]
    if HAS_BIAS:
        acc += tl.load(bias_ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32)[None, :]
    return acc


@triton.jit
def _and(mask, cond):
    """mask (R,) and a scalar condition (`mask & cond` fails in Triton 3.9's interpreter)."""
    return tl.where(cond, mask, False)


@triton.jit
def _load_row(
    x_ptr, h0_ptr, b64, t, offs_d, mask_d, L,
    D: tl.constexpr, W: tl.constexpr, HAS_H0: tl.constexpr,
):  # fmt: skip
    """x at time t (a scalar) as (BD,) fp32: t < 0 reads the initial state (b, W-1, d) at row t + W-1 (zeros without
    one), t >= L reads zeros."""
    v = tl.load(x_ptr + (b64 * L + t) * D + offs_d, mask=_and(mask_d, (t >= 0) & (t < L)), other=0.0).to(tl.float32)
    if HAS_H0:  # noqa: SIM102 (a constexpr and a run-time condition do not combine in Triton)
        if t < 0:
            hptr = h0_ptr + (b64 * (W - 1) + t + (W - 1)) * D + offs_d
            v += tl.load(hptr, mask=_and(mask_d, t >= -(W - 1)), other=0.0).to(tl.float32)
    return v


@triton.jit
def _load_group(x_ptr, b64, t, t_end, offs_d, mask_d, L, D: tl.constexpr, ROWS: tl.constexpr):
    """x at times t .. t+ROWS-1 (t >= 0), zeros from t_end on: a tuple of ROWS (BD,) fp32 rows."""
    rows = ()
    for u in tl.static_range(ROWS):
        ptr = x_ptr + (b64 * L + t + u) * D + offs_d
        row = tl.load(ptr, mask=_and(mask_d, t + u < t_end), other=0.0)
        rows = rows + (row.to(tl.float32),)  # noqa: RUF005 (Triton's jit takes no starred tuples)
    return rows


@triton.jit
def _fwd_kernel(
    x_ptr, w_ptr, bias_ptr, h0_ptr, reach_ptr, y_ptr, final_ptr, L,
    D: tl.constexpr, W: tl.constexpr, WS: tl.constexpr, SPAN: tl.constexpr, ROWS: tl.constexpr,
    BLOCK_D: tl.constexpr, HAS_H0: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_SEQ: tl.constexpr, SILU: tl.constexpr,
    STORE_FINAL: tl.constexpr, STAGES: tl.constexpr,
):  # fmt: skip
    """y (b, l, d) for SPAN steps of BLOCK_D channels, ROWS rows a step; the last span of a row also writes
    final_state, as (b, W-1, d), when STORE_FINAL."""
    pid_s = tl.program_id(0)
    b64 = tl.program_id(2).to(tl.int64)
    offs_d = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)  # (BD,)
    mask_d = offs_d < D
    t0 = pid_s * SPAN
    t_end = tl.minimum(t0 + SPAN, L)
    taps = ()  # taps[j] multiplies x_{t-j}: weight[:, W-1-j]  (tuples: no starred ones in Triton's jit, hence noqa)
    for j in tl.static_range(W):
        wj = tl.load(w_ptr + offs_d * W + (W - 1 - j), mask=mask_d, other=0.0).to(tl.float32)
        taps = taps + (wj,)  # noqa: RUF005
    if HAS_BIAS:
        bias = tl.load(bias_ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32)
    win = ()  # win[j-1] = x_{t-j}, j = 1..W-1, for the next t
    for j in tl.static_range(1, W):
        win = win + (_load_row(x_ptr, h0_ptr, b64, t0 - j, offs_d, mask_d, L, D, W, HAS_H0),)  # noqa: RUF005
    # the compiler pipelines the group loads: STAGES-1 groups ahead through shared memory (cp.async)
    for tt in tl.range(t0, t_end, ROWS, num_stages=STAGES):
        cur = _load_group(x_ptr, b64, tt, t_end, offs_d, mask_d, L, D, ROWS)
        for u in tl.static_range(ROWS):
            t = tt + u
            xt = cur[u]
            acc = taps[0] * xt
            if HAS_BIAS:
                acc += bias
            if HAS_SEQ:
                reach = tl.load(reach_ptr + b64 * L + t, mask=t < L, other=0)
            for j in tl.static_range(1, W):
                if HAS_SEQ:  # the tap of lag j counts iff it reaches no earlier sequence
                    acc += tl.where(reach >= j, taps[j] * win[j - 1], 0.0)
                else:
                    acc += taps[j] * win[j - 1]
            if SILU:
                acc, _ = _silu_and_grad(acc)
            _store(y_ptr, (b64 * L + t) * D + offs_d, acc, _and(mask_d, t < t_end))
            if W > 1:
                win = (xt,) + win[: W - 2]  # noqa: RUF005
    if STORE_FINAL:  # noqa: SIM102 (a constexpr and a run-time condition do not combine in Triton)
        if pid_s == tl.num_programs(0) - 1:
            # final[jf] = input at time L-(W-1)+jf, kept when the last position's reach covers its lag W-2-jf
            jf = tl.arange(0, WS)
            keep = jf < W - 1
            if HAS_SEQ:
                keep = keep & (W - 2 - jf <= tl.load(reach_ptr + b64 * L + L - 1))
            lo = L - (W - 1)
            v = _load_rows(x_ptr, h0_ptr, b64, lo + jf, lo, keep, offs_d, mask_d, L, D, W, HAS_H0)  # (WS, BD)
            offs_f = (b64 * (W - 1) + jf)[:, None] * D + offs_d[None, :]  # (WS, BD)
            _store(final_ptr, offs_f, v, (jf < W - 1)[:, None] & mask_d[None, :])


@triton.jit
def _grad_out(
    x_ptr, h0_ptr, w_ptr, bias_ptr, reach_ptr, dy_ptr, b64, t, lo, offs_d, mask_d, L,
    D: tl.constexpr, W: tl.constexpr, HAS_H0: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_SEQ: tl.constexpr,
    SILU: tl.constexpr,
):  # fmt: skip
    """g_t = dy_t * act'(pre_t) for the outputs t (R,), t[0] = lo: (R, BD) fp32, zero outside [0, L)."""
    in_l = (t >= 0) & (t < L)
    offs = (b64 * L + t)[:, None] * D + offs_d[None, :]
    g = tl.load(dy_ptr + offs, mask=in_l[:, None] & mask_d[None, :], other=0.0).to(tl.float32)
    if SILU:
        pre = _preact(
            x_ptr, h0_ptr, w_ptr, bias_ptr, reach_ptr, b64, t, lo, offs_d, mask_d, L, D, W, HAS_H0, HAS_BIAS, HAS_SEQ
        )  # fmt: skip
        _, dsilu = _silu_and_grad(pre)
        g = g * dsilu
    return g


@triton.jit
def _bwd_rows(
    x_ptr, h0_ptr, w_ptr, bias_ptr, reach_ptr, dy_ptr, dfinal_ptr, b64, rows, lo, own, offs_d, mask_d, L,
    D: tl.constexpr, W: tl.constexpr, WP: tl.constexpr, HAS_H0: tl.constexpr, HAS_BIAS: tl.constexpr,
    HAS_SEQ: tl.constexpr, SILU: tl.constexpr, HAS_DFINAL: tl.constexpr,
):  # fmt: skip
    """Gradients through the input positions s in `rows` (R,), rows[0] = lo (negative: initial_state positions).

    x_s feeds y_{s+j} through tap W-1-j, j = 0..W-1; each g_{s+j} is recomputed from x (W shifted loads, from L1).
    Returns dx_s (R, BD), gx (WP, BD) = sum over the `own` rows of g_{s+j} x_s (row j: dweight of tap W-1-j) and
    gs (BD,) = sum_s g_s (dbias; zero rows beyond L, and the state kernel drops it).
    """
    lags = tl.arange(0, WP)  # (WP,)
    x0 = _load_rows(x_ptr, h0_ptr, b64, rows, lo, own, offs_d, mask_d, L, D, W, HAS_H0)  # (R, BD) x_s
    dx = tl.zeros((rows.shape[0], offs_d.shape[0]), dtype=tl.float32)
    gx = tl.zeros((WP, offs_d.shape[0]), dtype=tl.float32)
    gs = tl.zeros((offs_d.shape[0],), dtype=tl.float32)
    for j in tl.static_range(W):
        g = _grad_out(
            x_ptr, h0_ptr, w_ptr, bias_ptr, reach_ptr, dy_ptr, b64, rows + j, lo + j, offs_d, mask_d, L,
            D, W, HAS_H0, HAS_BIAS, HAS_SEQ, SILU,
        )  # fmt: skip
        if j == 0:
            gs = tl.sum(g, axis=0)  # every g_t with t in [0, L) once over the main kernel's tiles
        if HAS_SEQ:  # x_s reaches y_{s+j} inside its sequence only
            reach = tl.load(reach_ptr + b64 * L + rows + j, mask=(rows + j >= 0) & (rows + j < L), other=0)
            g = tl.where((reach >= j)[:, None], g, 0.0)
        wk = tl.load(w_ptr + offs_d * W + (W - 1 - j), mask=mask_d, other=0.0).to(tl.float32)  # (BD,)
        dx += g * wk[None, :]
        gx += tl.where((lags == j)[:, None], tl.sum(g * x0, axis=0)[None, :], 0.0)
    if HAS_DFINAL:  # noqa: SIM102 (a constexpr and a run-time condition do not combine in Triton)
        if lo + rows.shape[0] > L - (W - 1):
            # final[jf] copied the input at s = L-(W-1)+jf, when the last position reached back to it
            jf = rows - (L - (W - 1))  # (R,)
            ok = (jf >= 0) & (rows < L)
            if HAS_SEQ:
                ok = ok & (L - 1 - rows <= tl.load(reach_ptr + b64 * L + L - 1))
            offs_f = (b64 * (W - 1) + jf)[:, None] * D + offs_d[None, :]  # (R, BD)
            dx += tl.load(dfinal_ptr + offs_f, mask=ok[:, None] & mask_d[None, :], other=0.0).to(tl.float32)
    return dx, gx, gs


@triton.jit
def _bwd_kernel(
    x_ptr, w_ptr, bias_ptr, h0_ptr, reach_ptr, dy_ptr, dfinal_ptr, dx_ptr, dw_ptr, db_ptr, L, n_progs,
    D: tl.constexpr, W: tl.constexpr, WP: tl.constexpr, BLOCK_L: tl.constexpr, BLOCK_D: tl.constexpr,
    TILES: tl.constexpr, HAS_H0: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_SEQ: tl.constexpr, SILU: tl.constexpr,
    HAS_DFINAL: tl.constexpr, STORE_DX: tl.constexpr, STORE_DW: tl.constexpr, STORE_DB: tl.constexpr,
):  # fmt: skip
    """dx for TILES tiles of rows; partials over them: dw (b, n_progs, W, d) by lag j, db (b, n_progs, d)."""
    pid_l = tl.program_id(0)
    b64 = tl.program_id(2).to(tl.int64)
    offs_d = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)  # (BD,)
    mask_d = offs_d < D
    lags = tl.arange(0, WP)  # (WP,)
    gx = tl.zeros((WP, BLOCK_D), dtype=tl.float32)
    gs = tl.zeros((BLOCK_D,), dtype=tl.float32)
    for i in range(TILES):
        row0 = (pid_l * TILES + i) * BLOCK_L
        rows = row0 + tl.arange(0, BLOCK_L)  # (BL,)
        dx, gx_i, gs_i = _bwd_rows(
            x_ptr, h0_ptr, w_ptr, bias_ptr, reach_ptr, dy_ptr, dfinal_ptr, b64, rows, row0, rows < L, offs_d,
            mask_d, L, D, W, WP, HAS_H0, HAS_BIAS, HAS_SEQ, SILU, HAS_DFINAL,
        )  # fmt: skip
        if STORE_DX:
            offs = (b64 * L + rows)[:, None] * D + offs_d[None, :]
            _store(dx_ptr, offs, dx, (rows < L)[:, None] & mask_d[None, :])
        gx += gx_i
        gs += gs_i
    part = b64 * n_progs + pid_l
    offs_w = (part * W + lags[:, None]) * D + offs_d[None, :]  # (WP, BD)
    if STORE_DW:
        tl.store(dw_ptr + offs_w, gx, mask=(lags < W)[:, None] & mask_d[None, :])
    if STORE_DB:
        tl.store(db_ptr + part * D + offs_d, gs, mask=mask_d)


@triton.jit
def _bwd_state_kernel(
    x_ptr, w_ptr, bias_ptr, h0_ptr, reach_ptr, dy_ptr, dfinal_ptr, dh0_ptr, dw_ptr, L,
    D: tl.constexpr, W: tl.constexpr, WP: tl.constexpr, WS: tl.constexpr, BLOCK_D: tl.constexpr,
    HAS_BIAS: tl.constexpr, HAS_SEQ: tl.constexpr, SILU: tl.constexpr, HAS_DFINAL: tl.constexpr,
    STORE_DH0: tl.constexpr, STORE_DW: tl.constexpr,
):  # fmt: skip
    """Through the W-1 positions s = -(W-1) .. -1 that initial_state (b, W-1, d) stands for: dh0 (b, W-1, d) and
    their dweight partial (b, W, d) by lag j."""
    b64 = tl.program_id(1).to(tl.int64)
    offs_d = tl.program_id(0) * BLOCK_D + tl.arange(0, BLOCK_D)  # (BD,)
    mask_d = offs_d < D
    j = tl.arange(0, WS)  # (WS,) row of the state
    rows = j - (W - 1)
    dh0, gx, _ = _bwd_rows(
        x_ptr, h0_ptr, w_ptr, bias_ptr, reach_ptr, dy_ptr, dfinal_ptr, b64, rows, -(W - 1), rows < 0, offs_d,
        mask_d, L, D, W, WP, True, HAS_BIAS, HAS_SEQ, SILU, HAS_DFINAL,
    )  # fmt: skip
    if STORE_DH0:
        offs = (b64 * (W - 1) + j)[:, None] * D + offs_d[None, :]  # (WS, BD)
        _store(dh0_ptr, offs, dh0, (j < W - 1)[:, None] & mask_d[None, :])
    if STORE_DW:
        lags = tl.arange(0, WP)
        offs_w = (b64 * W + lags[:, None]) * D + offs_d[None, :]  # (WP, BD)
        tl.store(dw_ptr + offs_w, gx, mask=(lags < W)[:, None] & mask_d[None, :])


def reach_of(seq_idx: torch.Tensor, w: int) -> torch.Tensor:
    """(b, l) int32: how many steps back each position may read (capped at w-1); see the module docstring."""
    b, l = seq_idx.shape
    pos = torch.arange(l, device=seq_idx.device).expand(b, l)
    change = torch.zeros(b, l, dtype=torch.bool, device=seq_idx.device)
    change[:, 1:] = seq_idx[:, 1:] != seq_idx[:, :-1]
    start = torch.where(change, pos, 0).cummax(dim=1).values  # (b, l) first position of each one's sequence
    reach = pos - start + (start == 0).long() * (w - 1)
    return reach.clamp_(max=max(w - 1, 0)).to(torch.int32).contiguous()


def _flags(weight, bias, initial_state, reach, activation):
    w = weight.shape[1]
    return dict(
        W=w,
        HAS_BIAS=bias is not None,
        HAS_SEQ=reach is not None,
        SILU=activation == "silu",
    ), initial_state is not None and w > 1


def conv_fwd(x, weight, bias, initial_state, reach, activation, store_final):
    """y (b, l, d) and, when store_final, the final state (b, w-1, d), both in x's dtype; h0: (b, w-1, d)."""
    b, l, d = x.shape
    flags, has_h0 = _flags(weight, bias, initial_state, reach, activation)
    w = flags["W"]
    y = _empty(b, l, d, dtype=x.dtype, device=x.device)
    final = _empty(b, w - 1, d, dtype=x.dtype, device=x.device) if store_final else None
    grid = (triton.cdiv(l, SPAN), triton.cdiv(d, BLOCK_D), b)
    _fwd_kernel[grid](
        x, weight, x if bias is None else bias, initial_state if has_h0 else x, x if reach is None else reach,
        y, final if store_final and w > 1 else y, l,
        D=d, WS=triton.next_power_of_2(max(w - 1, 1)), SPAN=SPAN, ROWS=ROWS, BLOCK_D=BLOCK_D, HAS_H0=has_h0,
        STORE_FINAL=store_final and w > 1, STAGES=STAGES, **flags, num_warps=NUM_WARPS,
    )  # fmt: skip
    return y, final


def conv_bwd(x, weight, bias, initial_state, reach, activation, dy, dfinal, needs):
    """(dx, dweight, dbias, dh0 (b, w-1, d)), each None unless `needs` (four bools) asks for it; dfinal (b, w-1, d)."""
    b, l, d = x.shape
    flags, has_h0 = _flags(weight, bias, initial_state, reach, activation)
    w = flags["W"]
    need_dx, need_dw, need_db, need_dh0 = needs
    need_db = need_db and bias is not None
    need_dh0 = need_dh0 and has_h0
    has_dfinal = dfinal is not None and w > 1
    dummy = x
    ptrs = (
        x, weight, dummy if bias is None else bias, initial_state if has_h0 else dummy,
        dummy if reach is None else reach, dy, dfinal if has_dfinal else dummy,
    )  # fmt: skip
    wp = triton.next_power_of_2(w)
    f32 = torch.float32
    dx = dweight = dbias = dh0 = None
    by_lag = []  # dweight partials (..., w, d), indexed by lag j = w-1-k
    if need_dx or need_dw or need_db:
        n_progs = triton.cdiv(l, BLOCK_L_BWD * BWD_TILES)
        dx = _empty(b, l, d, dtype=x.dtype, device=x.device) if need_dx else dummy
        dw_part = _empty(b, n_progs, w, d, dtype=f32, device=x.device) if need_dw else dummy
        db_part = _empty(b, n_progs, d, dtype=f32, device=x.device) if need_db else dummy
        grid = (n_progs, triton.cdiv(d, BLOCK_D_BWD), b)
        _bwd_kernel[grid](
            *ptrs, dx, dw_part, db_part, l, n_progs,
            D=d, WP=wp, BLOCK_L=BLOCK_L_BWD, BLOCK_D=BLOCK_D_BWD, TILES=BWD_TILES, HAS_H0=has_h0,
            HAS_DFINAL=has_dfinal, STORE_DX=need_dx, STORE_DW=need_dw, STORE_DB=need_db, **flags,
            num_warps=NUM_WARPS_BWD,
        )  # fmt: skip
        dx = dx if need_dx else None
        dbias = db_part.sum((0, 1)).to(bias.dtype) if need_db else None
        if need_dw:
            by_lag.append(dw_part.sum((0, 1)))
    if has_h0 and (need_dh0 or need_dw):  # the taps that read initial_state
        dh0 = _empty(b, w - 1, d, dtype=initial_state.dtype, device=x.device) if need_dh0 else dummy
        dw_state = _empty(b, w, d, dtype=f32, device=x.device) if need_dw else dummy
        _bwd_state_kernel[(triton.cdiv(d, BLOCK_D_STATE), b)](
            *ptrs, dh0, dw_state, l,
            D=d, WP=wp, WS=triton.next_power_of_2(w - 1), BLOCK_D=BLOCK_D_STATE, HAS_DFINAL=has_dfinal,
            STORE_DH0=need_dh0, STORE_DW=need_dw, **flags, num_warps=NUM_WARPS_BWD,
        )  # fmt: skip
        dh0 = dh0 if need_dh0 else None
        if need_dw:
            by_lag.append(dw_state.sum(0))
    if need_dw:
        dweight = sum(by_lag).flip(0).t().to(weight.dtype)  # (d, w): tap k is lag w-1-k
    return dx, dweight, dbias, dh0


class _CausalConv1dFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, initial_state, reach, activation, return_final_state):
        # initial_state and the final state here are (b, w-1, d)
        y, final = conv_fwd(x, weight, bias, initial_state, reach, activation, return_final_state)
        ctx.save_for_backward(x, weight, bias, initial_state, reach)
        ctx.activation = activation
        ctx.set_materialize_grads(False)
        return (y, final) if return_final_state else y

    @staticmethod
    def backward(ctx, dy, dfinal=None):
        x, weight, bias, initial_state, reach = ctx.saved_tensors
        dy = torch.zeros_like(x) if dy is None else dy.contiguous()
        dfinal = None if dfinal is None else dfinal.contiguous()
        needs = tuple(ctx.needs_input_grad[:4])
        dx, dweight, dbias, dh0 = conv_bwd(x, weight, bias, initial_state, reach, ctx.activation, dy, dfinal, needs)
        if needs[3] and dh0 is None:  # w = 1: an empty state
            dh0 = torch.zeros_like(initial_state)
        return dx, dweight, dbias, dh0, None, None, None


def _contiguous(t):
    return None if t is None else t.contiguous()


def causal_conv1d_triton(x, weight, bias, activation, initial_state, return_final_state, seq_idx):
    """Same arguments and results as `causal_conv1d_ref`."""
    reach = None if seq_idx is None else reach_of(seq_idx, weight.shape[1])
    h0 = None if initial_state is None else initial_state.transpose(1, 2)  # (b, w-1, d)
    args = [_contiguous(t) for t in (x, weight, bias, h0)]
    out = _CausalConv1dFn.apply(*args, reach, activation, bool(return_final_state))
    if not return_final_state:
        return out
    y, final = out
    return y, final.transpose(1, 2).contiguous()  # (b, d, w-1)
