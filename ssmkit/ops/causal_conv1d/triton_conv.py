"""Depthwise causal conv1d in Triton: one streaming pass forward, one backward, tied into autograd.

Forward: a program walks SPAN steps of BLOCK_D channels (contiguous, so every load coalesces), ROWS rows a loop
step, and loads each row of x once: the last W-1 rows ride along in registers (a tuple, shifted by renaming in the
unrolled loop), so the W taps cost no further loads; only the W-1 rows before the span are read again. The compiler
pipelines the row groups, STAGES-1 groups ahead through shared memory. fp32 accumulate, bias and silu fused.

Backward, with g_t = dy_t * act'(pre_t) (pre recomputed from x, never stored), the same streaming walk:
    dx_s        = sum_j weight[:, W-1-j] g_{s+j}          (lookahead: lags j = 0..W-1)
    dweight_k   = sum_t g_t x_{t-(W-1)+k},   dbias = sum_t g_t   (per-program fp32 partials, summed by torch)
    dinit_state = dx at the W-1 positions before 0
plus, where final_state got a gradient, dfinal added to the inputs it copied. A program owns a span of outputs
(its dweight and dbias terms, taps reading initial_state included) and the span's inputs (their dx), and walks t
from the span's start to W-2 past its end, loading rows of x and dy once: the x window gives pre_t as in the
forward, and g_t is added at once into the W-1 dx sums still open, dx_{t-1} .. dx_{t-(W-1)}, and a new one for
dx_t (registers, shifted like the window), so dx_{t-(W-1)} is complete and stored at step t. The first W-1 steps
only open sums (the earlier g belong to the previous span) and the last W-1 only close them; in the first span
the sums closed at those first steps are dinit_state, whose g before 0 do not exist. (The earlier backward held
tiles of rows and recomputed each g_{s+j} for every lag from W^2 shifted loads of x: 3.2 ms at W4 on the H200,
against the forward's 0.29.)

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

from .._triton_math import sigmoid_fast
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
# backward: the same walk over the outputs of SPAN_BWD steps and the W-1 after them (the lookahead the span's last
# inputs reach), ROWS_BWD rows of x and of dy a loop step, pipelined over STAGES_BWD stages. It holds about 4W fp32
# values a channel (taps, x window, dx partials, dweight partials) against the forward's 2W, hence 256 channels on
# 2 warps (4 a thread). H200, W4 fwd+bwd (2026-11-22, 84913b3): 1.158 ms (the tiled backward's: 3.50); 128 channels
# on 1 warp 1.153, 512 on 4 warps 1.161, 512 on 2 warps 1.189, ROWS_BWD 8 1.163, ROWS_BWD 2 1.334, STAGES_BWD 1 1.259.
SPAN_BWD = 256
ROWS_BWD = 4
STAGES_BWD = 3
BLOCK_D_BWD = 256
NUM_WARPS_BWD = 2
# widths the kernels take; every tap, window row and partial is its own register tuple element, unrolled by W
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
    """(silu(z), silu'(z)) in fp32."""
    s = sigmoid_fast(z)
    return z * s, s * (1.0 + z * (1.0 - s))


@triton.jit
def _load_rows(
    x_ptr, h0_ptr, b64, rows, lo, ok, offs_d, mask_d, L,
    D: tl.constexpr, SX: tl.constexpr, W: tl.constexpr, HAS_H0: tl.constexpr,
):  # fmt: skip
    """x (rows SX elements apart) at time `rows` (R,) as (R, BD) fp32, zero where ~ok. rows < 0 read the initial
    state, here (b, W-1, d), at row rows + W-1 (zeros without one), rows >= L read zeros. lo <= min(rows) (a scalar)
    skips the state when >= 0."""
    in_x = ok & (rows >= 0) & (rows < L)
    ptr = x_ptr + (b64 * L + rows)[:, None] * SX + offs_d[None, :]  # (R, BD)
    v = tl.load(ptr, mask=in_x[:, None] & mask_d[None, :], other=0.0).to(tl.float32)
    if HAS_H0:  # noqa: SIM102 (a constexpr and a run-time condition do not combine in Triton)
        if lo < 0:
            in_h0 = ok & (rows < 0) & (rows >= -(W - 1))
            hptr = h0_ptr + (b64 * (W - 1) + rows + (W - 1))[:, None] * D + offs_d[None, :]  # (R, BD)
            v += tl.load(hptr, mask=in_h0[:, None] & mask_d[None, :], other=0.0).to(tl.float32)
    return v


@triton.jit
def _and(mask, cond):
    """mask (R,) and a scalar condition (`mask & cond` fails in Triton 3.9's interpreter)."""
    return tl.where(cond, mask, False)


@triton.jit
def _load_row(
    x_ptr, h0_ptr, b64, t, offs_d, mask_d, L,
    D: tl.constexpr, SX: tl.constexpr, W: tl.constexpr, HAS_H0: tl.constexpr,
):  # fmt: skip
    """x (rows SX elements apart) at time t (a scalar) as (BD,) fp32: t < 0 reads the initial state (b, W-1, d) at
    row t + W-1 (zeros without one), t >= L reads zeros."""
    v = tl.load(x_ptr + (b64 * L + t) * SX + offs_d, mask=_and(mask_d, (t >= 0) & (t < L)), other=0.0).to(tl.float32)
    if HAS_H0:  # noqa: SIM102 (a constexpr and a run-time condition do not combine in Triton)
        if t < 0:
            hptr = h0_ptr + (b64 * (W - 1) + t + (W - 1)) * D + offs_d
            v += tl.load(hptr, mask=_and(mask_d, t >= -(W - 1)), other=0.0).to(tl.float32)
    return v


@triton.jit
def _taps_and_window(x_ptr, w_ptr, h0_ptr, b64, t0, offs_d, mask_d, L, D: tl.constexpr, SX: tl.constexpr,
                     W: tl.constexpr, HAS_H0: tl.constexpr):  # fmt: skip
    """(taps, win) for a walk from t0: taps[j] (BD,) multiplies x_{t-j} (weight[:, W-1-j]), win[j-1] = x_{t0-j},
    j = 1..W-1 (tuples: no starred ones in Triton's jit, hence the noqa)."""
    taps = ()
    for j in tl.static_range(W):
        wj = tl.load(w_ptr + offs_d * W + (W - 1 - j), mask=mask_d, other=0.0).to(tl.float32)
        taps = taps + (wj,)  # noqa: RUF005
    win = ()
    for j in tl.static_range(1, W):
        win = win + (_load_row(x_ptr, h0_ptr, b64, t0 - j, offs_d, mask_d, L, D, SX, W, HAS_H0),)  # noqa: RUF005
    return taps, win


@triton.jit
def _load_group(x_ptr, b64, t, t_end, offs_d, mask_d, L, ROW: tl.constexpr, ROWS: tl.constexpr):
    """x (or dy), rows ROW elements apart, at times t .. t+ROWS-1 (t >= 0), zeros from t_end on: a tuple of ROWS
    (BD,) fp32 rows."""
    rows = ()
    for u in tl.static_range(ROWS):
        ptr = x_ptr + (b64 * L + t + u) * ROW + offs_d
        row = tl.load(ptr, mask=_and(mask_d, t + u < t_end), other=0.0)
        rows = rows + (row.to(tl.float32),)  # noqa: RUF005 (Triton's jit takes no starred tuples)
    return rows


@triton.jit
def _fwd_kernel(
    x_ptr, w_ptr, bias_ptr, h0_ptr, reach_ptr, y_ptr, final_ptr, L,
    D: tl.constexpr, SX: tl.constexpr, W: tl.constexpr, WS: tl.constexpr, SPAN: tl.constexpr, ROWS: tl.constexpr,
    BLOCK_D: tl.constexpr, HAS_H0: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_SEQ: tl.constexpr, SILU: tl.constexpr,
    STORE_FINAL: tl.constexpr, STAGES: tl.constexpr,
):  # fmt: skip
    """y (b, l, d) for SPAN steps of BLOCK_D channels, ROWS rows a step; the last span of a row also writes
    final_state, as (b, W-1, d), when STORE_FINAL. x's rows are SX elements apart."""
    pid_s = tl.program_id(0)
    b64 = tl.program_id(2).to(tl.int64)
    offs_d = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)  # (BD,)
    mask_d = offs_d < D
    t0 = pid_s * SPAN
    t_end = tl.minimum(t0 + SPAN, L)
    taps, win = _taps_and_window(x_ptr, w_ptr, h0_ptr, b64, t0, offs_d, mask_d, L, D, SX, W, HAS_H0)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32)
    # the compiler pipelines the group loads: STAGES-1 groups ahead through shared memory (cp.async)
    for tt in tl.range(t0, t_end, ROWS, num_stages=STAGES):
        cur = _load_group(x_ptr, b64, tt, t_end, offs_d, mask_d, L, SX, ROWS)
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
            v = _load_rows(x_ptr, h0_ptr, b64, lo + jf, lo, keep, offs_d, mask_d, L, D, SX, W, HAS_H0)  # (WS, BD)
            offs_f = (b64 * (W - 1) + jf)[:, None] * D + offs_d[None, :]  # (WS, BD)
            _store(final_ptr, offs_f, v, (jf < W - 1)[:, None] & mask_d[None, :])


@triton.jit
def _bwd_kernel(
    x_ptr, w_ptr, bias_ptr, h0_ptr, reach_ptr, dy_ptr, dfinal_ptr, dx_ptr, dh0_ptr, dw_ptr, db_ptr, L,
    D: tl.constexpr, SX: tl.constexpr, W: tl.constexpr, SPAN: tl.constexpr, ROWS: tl.constexpr,
    BLOCK_D: tl.constexpr,
    HAS_H0: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_SEQ: tl.constexpr, SILU: tl.constexpr,
    HAS_DFINAL: tl.constexpr, STORE_DX: tl.constexpr, STORE_DH0: tl.constexpr, STORE_DW: tl.constexpr,
    STORE_DB: tl.constexpr, STAGES: tl.constexpr,
):  # fmt: skip
    """dx (b, l, d) at the SPAN input positions of a span, BLOCK_D channels, walking the outputs t from the span's
    start to W-2 past its end, ROWS rows a step; the first span also writes dh0 (b, W-1, d), the positions -(W-1)
    .. -1. Partials over the span's own outputs: dw (b, n_spans, W, d) by lag j, db (b, n_spans, d). x's rows are SX
    elements apart (dy, dx: contiguous)."""
    pid_s = tl.program_id(0)
    b64 = tl.program_id(2).to(tl.int64)
    offs_d = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)  # (BD,)
    mask_d = offs_d < D
    t0 = pid_s * SPAN
    t_end = tl.minimum(t0 + SPAN, L)  # the span's own outputs (dw, db) and inputs (dx)
    t_stop = tl.minimum(t_end + (W - 1), L)  # rows read: the span and the lookahead its last inputs reach
    taps, win = _taps_and_window(x_ptr, w_ptr, h0_ptr, b64, t0, offs_d, mask_d, L, D, SX, W, HAS_H0)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32)
    zero = tl.zeros((BLOCK_D,), dtype=tl.float32)
    part = ()  # part[j-1] = dx_{t-j} summed over g_{t-j} .. g_{t-1}, j = 1..W-1, for the next t
    for _j in tl.static_range(1, W):
        part = part + (zero,)  # noqa: RUF005
    dw = ()  # dw[j] = sum of g_t x_{t-j} over the span's outputs: lag j, tap W-1-j
    for _j in tl.static_range(W):
        dw = dw + (zero,)  # noqa: RUF005
    db = zero
    if HAS_DFINAL and HAS_SEQ:
        reach_last = tl.load(reach_ptr + b64 * L + L - 1)
    # the compiler pipelines the group loads (x and dy): STAGES-1 groups ahead through shared memory
    for tt in tl.range(t0, t_end + (W - 1), ROWS, num_stages=STAGES):
        xs = _load_group(x_ptr, b64, tt, t_stop, offs_d, mask_d, L, SX, ROWS)
        dys = _load_group(dy_ptr, b64, tt, t_stop, offs_d, mask_d, L, D, ROWS)  # zero from L on: g_t = 0 there
        for u in tl.static_range(ROWS):
            t = tt + u
            if HAS_SEQ:
                reach = tl.load(reach_ptr + b64 * L + t, mask=t < L, other=0)
            xm = (xs[u],)  # xm[j] = x_{t-j} where the tap of lag j counts (reaches no earlier sequence), else 0
            for j in tl.static_range(1, W):
                xj = win[j - 1]
                if HAS_SEQ:
                    xj = tl.where(reach >= j, xj, 0.0)
                xm = xm + (xj,)  # noqa: RUF005
            g = dys[u]
            if SILU:
                pre = taps[0] * xm[0]
                if HAS_BIAS:
                    pre += bias
                for j in tl.static_range(1, W):
                    pre += taps[j] * xm[j]
                _, dsilu = _silu_and_grad(pre)
                g = g * dsilu
            own = tl.where(t < t_end, g, 0.0)  # the lookahead's g belong to the next span's partials
            if STORE_DB:
                db += own
            if STORE_DW:
                dw_new = ()
                for j in tl.static_range(W):
                    dw_new = dw_new + (dw[j] + own * xm[j],)  # noqa: RUF005
                dw = dw_new
            # g_t reaches back to the inputs x_{t-j} through the taps that count: add it to their dx
            acc = (taps[0] * g,)  # acc[j] = dx_{t-j} summed over g_{t-j} .. g_t
            for j in tl.static_range(1, W):
                gj = taps[j] * g
                if HAS_SEQ:
                    gj = tl.where(reach >= j, gj, 0.0)
                acc = acc + (part[j - 1] + gj,)  # noqa: RUF005
            s = t - (W - 1)  # dx_s is complete (g_{s+W-1} was its last term)
            dx_s = acc[W - 1]
            if HAS_DFINAL:
                # final[jf] copied the input at s = L-(W-1)+jf (jf = t-L) when the last position reached back to it;
                # the last row group may run past jf = W-2
                ok = (t >= L) & (t < L + (W - 1))
                if HAS_SEQ:
                    ok = ok & (L - 1 - s <= reach_last)
                offs_f = (b64 * (W - 1) + t - L) * D + offs_d
                dx_s += tl.load(dfinal_ptr + offs_f, mask=_and(mask_d, ok), other=0.0).to(tl.float32)
            if STORE_DX:
                _store(dx_ptr, (b64 * L + s) * D + offs_d, dx_s, _and(mask_d, (s >= t0) & (s < t_end)))
            if STORE_DH0:  # the initial_state positions: only the first span saw every g they reach
                _store(dh0_ptr, (b64 * (W - 1) + s + (W - 1)) * D + offs_d, dx_s, _and(mask_d, (t0 == 0) & (s < 0)))
            if W > 1:
                part = acc[: W - 1]
                win = (xs[u],) + win[: W - 2]  # noqa: RUF005
    part_id = b64 * tl.num_programs(0) + pid_s
    if STORE_DW:
        for j in tl.static_range(W):
            tl.store(dw_ptr + (part_id * W + j) * D + offs_d, dw[j], mask=mask_d)
    if STORE_DB:
        tl.store(db_ptr + part_id * D + offs_d, db, mask=mask_d)


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
        D=d, SX=x.stride(1), WS=triton.next_power_of_2(max(w - 1, 1)), SPAN=SPAN, ROWS=ROWS, BLOCK_D=BLOCK_D,
        HAS_H0=has_h0,
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
    if not (need_dx or need_dw or need_db or need_dh0):
        return None, None, None, None
    has_dfinal = dfinal is not None and w > 1
    # dh0 alone needs the first span only (its lookahead reaches every g that the state positions feed)
    n_spans = triton.cdiv(l, SPAN_BWD) if need_dx or need_dw or need_db else 1
    f32 = torch.float32
    dx = _empty(b, l, d, dtype=x.dtype, device=x.device) if need_dx else None
    dh0 = _empty(b, w - 1, d, dtype=initial_state.dtype, device=x.device) if need_dh0 else None
    dw_part = _empty(b, n_spans, w, d, dtype=f32, device=x.device) if need_dw else None  # by lag j = w-1-k
    db_part = _empty(b, n_spans, d, dtype=f32, device=x.device) if need_db else None
    bufs = [x if t is None else t for t in (bias, reach, dx, dh0, dw_part, db_part)]  # x: a pointer left unused
    bias_p, reach_p, dx_p, dh0_p, dw_p, db_p = bufs
    h0_p, dfinal_p = initial_state if has_h0 else x, dfinal if has_dfinal else x
    _bwd_kernel[(n_spans, triton.cdiv(d, BLOCK_D_BWD), b)](
        x, weight, bias_p, h0_p, reach_p, dy, dfinal_p, dx_p, dh0_p, dw_p, db_p, l,
        D=d, SX=x.stride(1), SPAN=SPAN_BWD, ROWS=ROWS_BWD, BLOCK_D=BLOCK_D_BWD, HAS_H0=has_h0, HAS_DFINAL=has_dfinal,
        STORE_DX=need_dx, STORE_DH0=need_dh0, STORE_DW=need_dw, STORE_DB=need_db, STAGES=STAGES_BWD, **flags,
        num_warps=NUM_WARPS_BWD,
    )  # fmt: skip
    dweight = dw_part.sum((0, 1)).flip(0).t().to(weight.dtype) if need_dw else None  # (d, w): tap k is lag w-1-k
    dbias = db_part.sum((0, 1)).to(bias.dtype) if need_db else None
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


def _rows(x):
    """x as it is when its rows are evenly spaced with contiguous channels (xz[..., :d] or Mamba-2's xBC slice of
    in_proj's output is read in place: the kernels take x's row stride), else a contiguous copy."""
    return x if x.stride(2) == 1 and x.stride(0) == x.shape[1] * x.stride(1) else x.contiguous()


def causal_conv1d_triton(x, weight, bias, activation, initial_state, return_final_state, seq_idx):
    """Same arguments and results as `causal_conv1d_ref`."""
    reach = None if seq_idx is None else reach_of(seq_idx, weight.shape[1])
    h0 = None if initial_state is None else initial_state.transpose(1, 2)  # (b, w-1, d)
    args = [_rows(x)] + [_contiguous(t) for t in (weight, bias, h0)]
    out = _CausalConv1dFn.apply(*args, reach, activation, bool(return_final_state))
    if not return_final_state:
        return out
    y, final = out
    return y, final.transpose(1, 2).contiguous()  # (b, d, w-1)


def causal_conv1d_grads_triton(x, weight, bias, dy, activation, needs):
    """`causal_conv1d_grads` on the kernels: the backward kernel alone, from x (no forward run)."""
    dx, dweight, dbias, _ = conv_bwd(
        _rows(x), weight.contiguous(), _contiguous(bias), None, None, activation, dy.contiguous(), None, (*needs, False)
    )
    return dx, dweight, dbias
