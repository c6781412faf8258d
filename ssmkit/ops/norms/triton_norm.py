"""RMSNorm and grouped gated RMSNorm in Triton, forward and backward, tied into autograd.

The (..., d) input is viewed as rows of G = d / group_size contiguous groups of W = group_size channels; a
program owns (a block of BR rows, one group j) and normalizes each row's group j on its own:
    xg = x * silu(z)  (gate before the norm)  or  x;   rstd = 1 / sqrt(mean(xg^2) + eps)
    y  = xg * rstd * w  (* silu(z) when norm_before_gate)
RMSNorm is the case G = 1 without z. Statistics and arithmetic are fp32; y is stored in x's dtype.

A group of at most MAX_BLOCK_W channels is held in registers (one read of x and z, one write of y); a wider one
is walked in column blocks of COL_BLOCK twice (statistics, then output). The forward keeps rstd (one fp32 per row
and group) for the backward, which recomputes xg from x and z:
    n = xg * rstd,  dn = dy * w (* silu(z)),  dxg = rstd (dn - n mean(dn n)),  dw = sum over rows of dy n (* silu(z))
dw is summed per program over its rows into a (programs, d) fp32 buffer, then by torch: deterministic, no atomics.
Rows of x, z and dy may be strided (halves of a fused projection are read in place); y, dx, dz are contiguous.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .._triton_math import sigmoid_fast
from ..selective_scan.triton_fwd import _store

# block sizes, settable by benchmarks and tests
MAX_BLOCK_W = 8192  # widest group held in registers at once (channels, a power of two)
COL_BLOCK = 2048  # column block for wider groups
FWD_TILE = 4096  # elements per forward program: BR = FWD_TILE / next_pow2(W) rows
# backward: elements per iteration and programs (over rows and groups) at most, the dw partials being (programs, d)
# fp32, at most BWD_PARTIALS elements of them (64 MiB). H200, W6's gated norm (65,536 rows of one 4,096-wide group,
# z), fwd+bwd with the sigmoid computed once (d1d4593; out/s13/norm_sweep.py): tile 8,192 at 1,024 / 2,048 / 4,096
# programs 1.148 / 1.158 / 1.177 ms (16 warps; 8 warps 1.42, 32 warps 2.7); tile 4,096 1.35-1.52; 16,384 2.3-12
BWD_TILE = 8192
BWD_PROGRAMS = 1024
BWD_PARTIALS = 1 << 24


def _empty(*shape, dtype, device):
    """Every output buffer comes from here (tests replace it with a NaN fill to catch unwritten elements)."""
    return torch.empty(*shape, dtype=dtype, device=device)


@triton.jit
def _gated_input(x_ptr, z_ptr, xo, zo, mask, HAS_Z: tl.constexpr, GATE_AFTER: tl.constexpr):
    """(x, xg, z, gate, sig) in fp32 at offsets xo, zo: xg is what is normalized; z, gate = silu(z) and
    sig = sigmoid(z) (which the backward reuses) are x without z.

    GATE_AFTER (norm_before_gate with a z): the gate multiplies the normalized output, not the input.
    """
    x = tl.load(x_ptr + xo, mask=mask, other=0.0).to(tl.float32)
    xg = x
    z = x
    gate = x
    sig = x
    if HAS_Z:
        z = tl.load(z_ptr + zo, mask=mask, other=0.0).to(tl.float32)
        sig = sigmoid_fast(z)
        gate = z * sig
        if not GATE_AFTER:
            xg = x * gate
    return x, xg, z, gate, sig


@triton.jit
def _fwd_tile(w_ptr, y_ptr, xg, gate, rows, mask_r, rstd, c0, j, sy,
              W: tl.constexpr, BW: tl.constexpr, HAS_W: tl.constexpr, GATE_AFTER: tl.constexpr):  # fmt: skip
    """Store y for the (BR, BW) tile at columns c0 + [0, BW) of group j."""
    cols = c0 + tl.arange(0, BW)
    mask_c = cols < W
    y = xg * rstd[:, None]
    if HAS_W:
        y = y * tl.load(w_ptr + j * W + cols, mask=mask_c, other=0.0).to(tl.float32)[None, :]
    if GATE_AFTER:
        y = y * gate
    _store(y_ptr, rows[:, None] * sy + (j * W + cols)[None, :], y, mask_r[:, None] & mask_c[None, :])


@triton.jit
def _norm_fwd_kernel(
    x_ptr, z_ptr, w_ptr, y_ptr, rstd_ptr, M, sx, sz, sy, eps,
    G: tl.constexpr, W: tl.constexpr, BR: tl.constexpr, BW: tl.constexpr, SINGLE: tl.constexpr,
    HAS_Z: tl.constexpr, HAS_W: tl.constexpr, GATE_AFTER: tl.constexpr, STORE_RSTD: tl.constexpr,
):  # fmt: skip
    j = tl.program_id(1)
    rows = tl.program_id(0) * BR + tl.arange(0, BR)  # (BR,) rows of the (M, d) view
    mask_r = rows < M
    rows64 = rows.to(tl.int64)
    if SINGLE:
        cols = j * W + tl.arange(0, BW)  # (BW,) channels of group j
        mask = mask_r[:, None] & (tl.arange(0, BW) < W)[None, :]
        xo = rows64[:, None] * sx + cols[None, :]
        zo = rows64[:, None] * sz + cols[None, :]
        _, xg, _, gate, _ = _gated_input(x_ptr, z_ptr, xo, zo, mask, HAS_Z, GATE_AFTER)
        rstd = tl.rsqrt(tl.sum(xg * xg, axis=1) / W + eps)  # (BR,)
        _fwd_tile(w_ptr, y_ptr, xg, gate, rows64, mask_r, rstd, 0, j, sy,
                  W, BW, HAS_W, GATE_AFTER)  # fmt: skip
    else:
        ss = tl.zeros([BR], dtype=tl.float32)
        for c0 in range(0, W, BW):
            cols = j * W + c0 + tl.arange(0, BW)
            mask = mask_r[:, None] & (c0 + tl.arange(0, BW) < W)[None, :]
            xo = rows64[:, None] * sx + cols[None, :]
            zo = rows64[:, None] * sz + cols[None, :]
            _, xg, _, _, _ = _gated_input(x_ptr, z_ptr, xo, zo, mask, HAS_Z, GATE_AFTER)
            ss += tl.sum(xg * xg, axis=1)
        rstd = tl.rsqrt(ss / W + eps)
        for c0 in range(0, W, BW):
            cols = j * W + c0 + tl.arange(0, BW)
            mask = mask_r[:, None] & (c0 + tl.arange(0, BW) < W)[None, :]
            xo = rows64[:, None] * sx + cols[None, :]
            zo = rows64[:, None] * sz + cols[None, :]
            _, xg, _, gate, _ = _gated_input(x_ptr, z_ptr, xo, zo, mask, HAS_Z, GATE_AFTER)
            _fwd_tile(w_ptr, y_ptr, xg, gate, rows64, mask_r, rstd, c0, j, sy,
                      W, BW, HAS_W, GATE_AFTER)  # fmt: skip
    if STORE_RSTD:
        tl.store(rstd_ptr + rows64 * G + j, rstd, mask=mask_r)


@triton.jit
def _bwd_terms(x_ptr, z_ptr, w_ptr, dy_ptr, rows, mask_r, rstd, c0, j, sx, sz, sdy,
               W: tl.constexpr, BW: tl.constexpr, HAS_Z: tl.constexpr, HAS_W: tl.constexpr,
               GATE_AFTER: tl.constexpr):  # fmt: skip
    """(x, z, gate, sig, dy, dyw, n, dn) for the (BR, BW) tile at columns c0 + [0, BW) of group j, fp32:
    dyw = dy w, n = xg rstd, dn = dL/dn."""
    cols = c0 + tl.arange(0, BW)
    mask_c = cols < W
    mask = mask_r[:, None] & mask_c[None, :]
    ch = (j * W + cols)[None, :]
    x, xg, z, gate, sig = _gated_input(x_ptr, z_ptr, rows[:, None] * sx + ch, rows[:, None] * sz + ch, mask,
                                       HAS_Z, GATE_AFTER)  # fmt: skip
    dy = tl.load(dy_ptr + rows[:, None] * sdy + ch, mask=mask, other=0.0).to(tl.float32)
    n = xg * rstd[:, None]
    dyw = dy
    if HAS_W:
        dyw = dy * tl.load(w_ptr + j * W + cols, mask=mask_c, other=0.0).to(tl.float32)[None, :]
    dn = dyw
    if GATE_AFTER:
        dn = dyw * gate
    return x, z, gate, sig, dy, dyw, n, dn


@triton.jit
def _bwd_store(x, z, gate, sig, dy, dyw, n, dn, c, rstd, dx_ptr, dz_ptr, rows, mask_r, c0, j,
               D: tl.constexpr, W: tl.constexpr, BW: tl.constexpr, HAS_Z: tl.constexpr,
               GATE_AFTER: tl.constexpr):  # fmt: skip
    """Store dx, dz (contiguous (M, d)) of one tile; c (BR,) = mean(dn n) over the row's group.

    Returns the tile's dw terms (BR, BW)."""
    cols = c0 + tl.arange(0, BW)
    offs = rows[:, None] * D + (j * W + cols)[None, :]
    mask = mask_r[:, None] & (cols < W)[None, :]
    dxg = (dn - n * c[:, None]) * rstd[:, None]
    dw_terms = dy * n
    if HAS_Z:
        dsilu = sig * (1.0 + z * (1.0 - sig))
        if GATE_AFTER:
            _store(dx_ptr, offs, dxg, mask)
            _store(dz_ptr, offs, dyw * n * dsilu, mask)
            dw_terms = dw_terms * gate
        else:
            _store(dx_ptr, offs, dxg * gate, mask)
            _store(dz_ptr, offs, dxg * x * dsilu, mask)
    else:
        _store(dx_ptr, offs, dxg, mask)
    return dw_terms


@triton.jit
def _norm_bwd_kernel(
    x_ptr, z_ptr, w_ptr, dy_ptr, rstd_ptr, dx_ptr, dz_ptr, dw_ptr, M, rows_per_program, sx, sz, sdy,
    D: tl.constexpr, G: tl.constexpr, W: tl.constexpr, BR: tl.constexpr, BW: tl.constexpr, SINGLE: tl.constexpr,
    HAS_Z: tl.constexpr, HAS_W: tl.constexpr, GATE_AFTER: tl.constexpr, COMPUTE_DW: tl.constexpr,
):  # fmt: skip
    pid = tl.program_id(0)
    j = tl.program_id(1)
    row_start = pid * rows_per_program
    row_stop = tl.minimum(row_start + rows_per_program, M)
    dw_row = dw_ptr + pid.to(tl.int64) * D + j * W  # this program's partial sums of dw for group j
    if SINGLE:
        dw_acc = tl.zeros([BW], dtype=tl.float32)
        for r0 in range(row_start, row_stop, BR):
            rows = r0 + tl.arange(0, BR)
            mask_r = rows < row_stop
            rows = rows.to(tl.int64)
            rstd = tl.load(rstd_ptr + rows * G + j, mask=mask_r, other=0.0)
            x, z, gate, sig, dy, dyw, n, dn = _bwd_terms(x_ptr, z_ptr, w_ptr, dy_ptr, rows, mask_r, rstd, 0, j, sx,
                                                         sz, sdy, W, BW, HAS_Z, HAS_W, GATE_AFTER)  # fmt: skip
            c = tl.sum(dn * n, axis=1) / W
            dw_terms = _bwd_store(x, z, gate, sig, dy, dyw, n, dn, c, rstd, dx_ptr, dz_ptr, rows, mask_r, 0, j,
                                  D, W, BW, HAS_Z, GATE_AFTER)  # fmt: skip
            dw_acc += tl.sum(dw_terms, axis=0)
        if COMPUTE_DW:
            cols = tl.arange(0, BW)
            tl.store(dw_row + cols, dw_acc, mask=cols < W)
    else:
        # the (BW,) partials for every column block do not fit in registers: they accumulate in the program's
        # own row of the buffer (zero-filled by the caller), read and written only by this program
        for r0 in range(row_start, row_stop, BR):
            rows = r0 + tl.arange(0, BR)
            mask_r = rows < row_stop
            rows = rows.to(tl.int64)
            rstd = tl.load(rstd_ptr + rows * G + j, mask=mask_r, other=0.0)
            c = tl.zeros([BR], dtype=tl.float32)
            for c0 in range(0, W, BW):
                _, _, _, _, _, _, n, dn = _bwd_terms(x_ptr, z_ptr, w_ptr, dy_ptr, rows, mask_r, rstd, c0, j, sx, sz,
                                                  sdy, W, BW, HAS_Z, HAS_W, GATE_AFTER)  # fmt: skip
                c += tl.sum(dn * n, axis=1)
            c = c / W
            for c0 in range(0, W, BW):
                x, z, gate, sig, dy, dyw, n, dn = _bwd_terms(x_ptr, z_ptr, w_ptr, dy_ptr, rows, mask_r, rstd, c0,
                                                             j, sx, sz, sdy, W, BW, HAS_Z, HAS_W,
                                                             GATE_AFTER)  # fmt: skip
                dw_terms = _bwd_store(x, z, gate, sig, dy, dyw, n, dn, c, rstd, dx_ptr, dz_ptr, rows, mask_r, c0, j,
                                      D, W, BW, HAS_Z, GATE_AFTER)  # fmt: skip
                if COMPUTE_DW:
                    cols = c0 + tl.arange(0, BW)
                    acc = tl.load(dw_row + cols, mask=cols < W, other=0.0)
                    tl.store(dw_row + cols, acc + tl.sum(dw_terms, axis=0), mask=cols < W)
                    # a replicated element is stored by one thread and may be loaded next row by another
                    tl.debug_barrier()


def _blocks(W: int, M: int, tile: int) -> tuple[int, int, bool]:
    """(BR rows, BW columns, single): a whole group in registers when it fits, else column blocks of one row."""
    bw = triton.next_power_of_2(W)
    if bw <= MAX_BLOCK_W:
        return max(1, min(tile // bw, triton.next_power_of_2(M))), bw, True
    return 1, COL_BLOCK, False


def _num_warps(elements: int) -> int:
    return max(4, min(16, elements // 512))


def _rows(t: torch.Tensor, d: int) -> torch.Tensor:
    """(..., d) -> (M, d) with unit column stride; rows may be strided (slices of a fused projection: no copy)."""
    t2 = t.reshape(-1, d)
    return t2 if t2.stride(-1) == 1 or d == 1 else t2.contiguous()


class _GatedRMSNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, z, weight, eps, group_size, norm_before_gate, track):
        d = x.shape[-1]
        x2 = _rows(x, d)  # (M, d)
        z2 = None if z is None else _rows(z, d)
        zz = z2 if z2 is not None else x2
        w = None if weight is None else weight.contiguous()
        M, G, W = x2.shape[0], d // group_size, group_size
        BR, BW, single = _blocks(W, M, FWD_TILE)
        y = _empty(M, d, dtype=x.dtype, device=x.device)
        rstd = _empty(M, G, dtype=torch.float32, device=x.device) if track else y
        _norm_fwd_kernel[(triton.cdiv(M, BR), G)](
            x2, zz, w if w is not None else x2, y, rstd, M, x2.stride(0), zz.stride(0), d, float(eps),
            G=G, W=W, BR=BR, BW=BW, SINGLE=single, HAS_Z=z2 is not None, HAS_W=w is not None,
            GATE_AFTER=z2 is not None and bool(norm_before_gate), STORE_RSTD=track,
            num_warps=_num_warps(BR * BW),
        )  # fmt: skip
        if track:
            ctx.save_for_backward(x2, z2, w, rstd)
            ctx.shape, ctx.group_size, ctx.norm_before_gate = x.shape, group_size, bool(norm_before_gate)
        return y.view(x.shape)

    @staticmethod
    def backward(ctx, dy):
        x2, z2, w, rstd = ctx.saved_tensors
        M, d = x2.shape
        G, W = d // ctx.group_size, ctx.group_size
        dy2 = _rows(dy, d)
        zz = z2 if z2 is not None else x2
        BR, BW, single = _blocks(W, M, BWD_TILE)
        row_blocks = triton.cdiv(M, BR)
        programs = max(1, min(row_blocks, BWD_PROGRAMS // G, BWD_PARTIALS // d))
        rows_per_program = triton.cdiv(row_blocks, programs) * BR
        programs = triton.cdiv(M, rows_per_program)
        compute_dw = w is not None and ctx.needs_input_grad[2]
        dx = _empty(M, d, dtype=x2.dtype, device=x2.device)
        dz = None if z2 is None else _empty(M, d, dtype=z2.dtype, device=x2.device)
        if compute_dw:
            # the column-block path accumulates into the buffer, the other overwrites it
            alloc = _empty if single else torch.zeros
            dw_partial = alloc(programs, d, dtype=torch.float32, device=x2.device)
        else:
            dw_partial = dx
        _norm_bwd_kernel[(programs, G)](
            x2, zz, w if w is not None else x2, dy2, rstd, dx, dz if dz is not None else dx, dw_partial,
            M, rows_per_program, x2.stride(0), zz.stride(0), dy2.stride(0),
            D=d, G=G, W=W, BR=BR, BW=BW, SINGLE=single, HAS_Z=z2 is not None, HAS_W=w is not None,
            GATE_AFTER=z2 is not None and ctx.norm_before_gate, COMPUTE_DW=compute_dw,
            num_warps=_num_warps(BR * BW),
        )  # fmt: skip
        dw = dw_partial.sum(0).to(w.dtype) if compute_dw else None
        dz = None if dz is None else dz.view(ctx.shape)
        return dx.view(ctx.shape), dz, dw, None, None, None, None


def _tracked(*tensors: torch.Tensor | None) -> bool:
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def gated_rms_norm_triton(
    x: torch.Tensor,
    z: torch.Tensor | None,
    weight: torch.Tensor | None,
    eps: float,
    group_size: int,
    norm_before_gate: bool,
) -> torch.Tensor:
    """x, z: (..., d) with d % group_size == 0; weight: (d,). Returns (..., d) in x's dtype; differentiable."""
    return _GatedRMSNorm.apply(x, z, weight, eps, group_size, norm_before_gate, _tracked(x, z, weight))


def rms_norm_triton(x: torch.Tensor, weight: torch.Tensor | None, eps: float) -> torch.Tensor:
    return _GatedRMSNorm.apply(x, None, weight, eps, x.shape[-1], False, _tracked(x, weight))
