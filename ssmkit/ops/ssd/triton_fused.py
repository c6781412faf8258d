"""SSD Triton forward in one kernel: each program walks its chunks in order, the state in registers.

One program per (batch, head, block of the head dim). Each chunk is walked in blocks of BM tokens (`_chunk_out`):
the block's output from the state before it and its own dual form (triton_scan's `_block_out`), then the state is
stepped across the block (cum as in triton_cumsum; ref = cum of the token before the block, 0 at the chunk's
start; end = the block's last token):

    S <- exp(cum_end - ref) S + sum_{s in the block} exp(cum_end - cum_s) dt_s x_s B_s^T

Stepping the state every BM tokens instead of once a chunk leaves the dual form only the (BM, BM) diagonal
blocks, whose scores are formed elementwise (exp, the CB load, the two-part rounding), while the state steps are
plain products: H200, W2 (chunk 256) forward 2.59 -> 1.87-1.90 ms. The chunk states are never written and read back,
and the passing between chunks costs no pass over memory (the staged path writes each chunk's state, passes over
them in place and reads them again: at W2's size 1 GiB of fp32 states). The state entering each chunk is still
written when the backward needs it (STORE_ENTER), at the chunk boundaries the backward works on.

Parallelism is b * h * (p / BP) programs, each serial over the chunks. When those do not fill the GPU (batch 1
at 64K: 64) and the sequence is long, it is cut into segments of whole chunks, walked in parallel from entering
states that triton_segments computes first (`walk_plan`); short sequences with few programs take the staged path
(which runs all chunks in parallel). Packed sequences follow
the staged path's rules at block granularity: a state reaches only the tokens of its segment, and crosses a
block only if no new segment starts in it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from .._triton_math import exp_fast
from .triton_scan import _block_out
from .triton_segments import segment_starts
from .triton_state import _chunk_state_acc, d_operand, upcast_dots


@triton.jit
def _ssd_fused_fwd_kernel(
    x_ptr, z_ptr, cb_ptr, B_ptr, C_ptr, dtp_ptr, cum_ptr, cumlo_ptr, seg_ptr, init_ptr, D_ptr,
    out_ptr, ypre_ptr, enter_ptr, final_ptr,
    l, h, p, n, Lp, hg, seg_chunks,
    sx_b, sx_l, sx_h, sx_p, sz_b, sz_l, sz_h, sz_p, sB_b, sB_l, sB_g, sB_n, sC_b, sC_l, sC_g, sC_n,
    so_b, so_l, so_h, so_p, sD_h, sD_p,
    Q: tl.constexpr, BM: tl.constexpr, BP: tl.constexpr, BN: tl.constexpr,
    HAS_Z: tl.constexpr, HAS_D: tl.constexpr, STORE_YPRE: tl.constexpr, HAS_SEG: tl.constexpr,
    CUM_LO: tl.constexpr, PREC: tl.constexpr, UPCAST: tl.constexpr, HAS_INIT: tl.constexpr,
    STORE_ENTER: tl.constexpr,
):  # fmt: skip
    pid_bh, pid_p, sid = tl.program_id(0).to(tl.int64), tl.program_id(1), tl.program_id(2)
    n_seg = tl.num_programs(2)
    bi, hi = pid_bh // h, pid_bh % h
    nc = Lp // Q
    rp = pid_p * BP + tl.arange(0, BP)
    rn = tl.arange(0, BN)
    # the state is kept as its transpose S^T (BN, BP): the output's product reads it so, and the step writes it so
    np_mask = (rn < n)[:, None] & (rp < p)[None, :]
    at = rp[None, :] * n + rn[:, None]  # (BN, BP) within one (p, n) state
    if HAS_INIT:  # (b, segments, h, p, n): the state entering each segment
        S_T = tl.load(init_ptr + ((bi * n_seg + sid) * h + hi) * p * n + at, mask=np_mask, other=0.0)
    else:
        S_T = tl.zeros((BN, BP), dtype=tl.float32)
    for ci in range(sid * seg_chunks, tl.minimum(sid * seg_chunks + seg_chunks, nc)):
        if STORE_ENTER:
            tl.store(enter_ptr + ((bi * nc + ci) * h + hi) * p * n + at, S_T, mask=np_mask)
        S_T = _chunk_out(
            S_T, x_ptr, z_ptr, cb_ptr, B_ptr, C_ptr, dtp_ptr, cum_ptr, cumlo_ptr, seg_ptr, D_ptr, out_ptr, ypre_ptr,
            bi, ci, hi, rp, rn, l, h, p, n, Lp, hg,
            sx_b, sx_l, sx_h, sx_p, sz_b, sz_l, sz_h, sz_p, sB_b, sB_l, sB_g, sB_n, sC_b, sC_l, sC_g, sC_n,
            so_b, so_l, so_h, so_p, sD_h, sD_p,
            Q, BM, BN, HAS_Z, HAS_D, STORE_YPRE, HAS_SEG, CUM_LO, PREC, UPCAST,
        )  # fmt: skip
    if sid == n_seg - 1:
        tl.store(final_ptr + pid_bh * p * n + at, S_T, mask=np_mask)


@triton.jit
def _chunk_out(
    S_T, x_ptr, z_ptr, cb_ptr, B_ptr, C_ptr, dtp_ptr, cum_ptr, cumlo_ptr, seg_ptr, D_ptr, out_ptr, ypre_ptr,
    bi, ci, hi, rp, rn, l, h, p, n, Lp, hg,
    sx_b, sx_l, sx_h, sx_p, sz_b, sz_l, sz_h, sz_p, sB_b, sB_l, sB_g, sB_n, sC_b, sC_l, sC_g, sC_n,
    so_b, so_l, so_h, so_p, sD_h, sD_p,
    Q: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, HAS_Z: tl.constexpr, HAS_D: tl.constexpr,
    STORE_YPRE: tl.constexpr, HAS_SEG: tl.constexpr, CUM_LO: tl.constexpr, PREC: tl.constexpr,
    UPCAST: tl.constexpr,
):  # fmt: skip
    """Chunk ci's out (and y before the gate) for head hi, head-dim rows rp, from S_T (len(rn), len(rp)) fp32 the
    transpose of the state entering it; returns the transpose of the state after the chunk."""
    row = (bi * h + hi) * Lp
    for mb in range(0, Q // BM):
        # ref: cum and segment of the token before the block (0 before the sequence, as in _chunk_segments)
        t0 = mb * BM
        prev = ci * Q + t0 - 1
        ref_cum = tl.where(t0 > 0, tl.load(cum_ptr + row + tl.maximum(prev, 0)), 0.0)
        ref_lo = 0.0
        if CUM_LO:
            ref_lo = tl.where(t0 > 0, tl.load(cumlo_ptr + row + tl.maximum(prev, 0)), 0.0)
        seg_ref = 0
        if HAS_SEG:
            seg_ref = tl.where(prev >= 0, tl.load(seg_ptr + bi * Lp + tl.maximum(prev, 0)), 0)
        _block_out(
            S_T, ref_cum, ref_lo, seg_ref, x_ptr, z_ptr, cb_ptr, C_ptr, dtp_ptr, cum_ptr, cumlo_ptr, seg_ptr,
            D_ptr, out_ptr, ypre_ptr, bi, ci, hi, mb, rp, l, h, p, n, Lp, hg,
            sx_b, sx_l, sx_h, sx_p, sz_b, sz_l, sz_h, sz_p, sC_b, sC_l, sC_g, sC_n, so_b, so_l, so_h, so_p,
            sD_h, sD_p, Q, BM, BN, True, HAS_Z, HAS_D, STORE_YPRE, HAS_SEG, CUM_LO, PREC, UPCAST,
        )  # fmt: skip
        # the state after the block: decayed across it (0 if a new segment starts in it), plus its tokens
        end = ci * Q + t0 + BM - 1
        log_decay = tl.load(cum_ptr + row + end) - ref_cum
        if CUM_LO:
            log_decay += tl.load(cumlo_ptr + row + end) - ref_lo
        decay = exp_fast(log_decay)
        if HAS_SEG:
            decay = tl.where(tl.load(seg_ptr + bi * Lp + end) == seg_ref, decay, 0.0)
        S_T = _chunk_state_acc(
            S_T * decay, x_ptr, B_ptr, dtp_ptr, cum_ptr, cumlo_ptr, seg_ptr, bi, ci, t0, hi, rp, rn,
            l, h, p, n, Lp, hg, sx_b, sx_l, sx_h, sx_p, sB_b, sB_l, sB_g, sB_n,
            Q, BM, BM, True, HAS_SEG, CUM_LO, PREC, UPCAST, True,
        )  # fmt: skip
    return S_T


# settable by benchmarks and tests: the fused kernel walks whole sequences from this many programs on (b * h *
# p-blocks); 0 sends every call to it. H200, W2 forward (h 64, p 64, n 128), measured before the block steps: 2.62
# ms at 256-4,096 programs (L 16K-1K) against 3.08-3.18 staged; 8.94 at 64 (L 64K, b 1) against 3.08.
FUSED_MIN_PROGRAMS = 256
# Below it, the sequence is walked in segments (triton_segments) that make up FUSED_MIN_PROGRAMS programs, each
# at least two chunks long (else the staged path); their entering states come from fine segments of this many
# chunks. WALK_SEGMENTS (tests) fixes the number of segments, of any length.
SEGMENT_CHUNKS = 8
WALK_SEGMENTS: int | None = None
BLOCK_M = 64  # tokens per block (H200, W2 at 1K: 2.00 ms against 2.21 at 32, same tree, before S was kept transposed)
LAUNCH = {"num_warps": 4, "num_stages": 1}  # H200, W2: 8 warps 5.0 ms against 2.6


def _block_p(p: int, n: int) -> tuple[int, int]:
    """(BP, BN): the state tile (BP, BN) fp32 lives in registers, so BP * BN is kept at most 8,192 (BP >= 16)."""
    BN = max(16, triton.next_power_of_2(n))
    BP = max(16, min(64, triton.next_power_of_2(p), 8192 // BN))
    return BP, BN


@dataclass(frozen=True)
class WalkPlan:
    segments: int  # walked in parallel, each by its own programs
    seg_chunks: int  # chunks per segment (the last may have fewer)
    fine_chunks: int  # chunks per fine segment of the entering-state pass (divides seg_chunks)


def walk_plan(b: int, h: int, p: int, n: int, nc: int) -> WalkPlan | None:
    """How the one-kernel forward takes a call of nc chunks, or None: the staged path takes it."""
    BP, _ = _block_p(p, n)
    programs = b * h * triton.cdiv(p, BP)
    if WALK_SEGMENTS is None and programs >= FUSED_MIN_PROGRAMS:
        return WalkPlan(1, nc, nc)
    per = triton.cdiv(nc, WALK_SEGMENTS or triton.cdiv(FUSED_MIN_PROGRAMS, programs))
    if per < 2 and WALK_SEGMENTS is None:
        return None  # walks of one chunk each are the staged path's chunk scan, which does that a little faster
    fine = min(SEGMENT_CHUNKS, per)
    per = triton.cdiv(per, fine) * fine
    return WalkPlan(triton.cdiv(nc, per), per, fine)


def ssd_fused_fwd(
    x, z, cb, B, C, dtp, cum, cum_lo, segp, initial_state, D, Q, prec, store_ypre, store_enter, plan: WalkPlan
):
    """-> out (b, l, h, p) in x's dtype, y before the gate (fp32) or None, the state entering each chunk
    (b, nc, h, p, n) fp32 or None (store_enter), the final state (b, h, p, n) fp32."""
    b, l, h, p = x.shape
    g, n = C.shape[-2:]
    Lp = dtp.shape[-1]
    nc = Lp // Q
    dev = x.device
    out = torch.empty_like(x, memory_format=torch.contiguous_format)
    ypre = torch.empty_like(out, dtype=torch.float32) if store_ypre else None
    enter = torch.empty(b, nc, h, p, n, device=dev, dtype=torch.float32) if store_enter else None
    final = torch.empty(b, h, p, n, device=dev, dtype=torch.float32)
    BP, BN = _block_p(p, n)
    if plan.segments > 1:  # (b, segments, h, p, n)
        every = plan.seg_chunks // plan.fine_chunks
        starts = segment_starts(
            x, B, dtp, cum, cum_lo, segp, initial_state, Q, prec, plan.fine_chunks, every, plan.segments
        )
    else:  # (b, h, p, n), the same layout with one segment
        starts = initial_state.contiguous() if initial_state is not None else None
    zz = z if z is not None else x
    Dp, sD = d_operand(D, x)
    _ssd_fused_fwd_kernel[(b * h, triton.cdiv(p, BP), plan.segments)](
        x, zz, cb, B, C, dtp, cum, cum_lo if cum_lo is not None else cum, segp if segp is not None else dtp,
        starts if starts is not None else final, Dp,
        out, ypre if ypre is not None else out, enter if enter is not None else final, final,
        l, h, p, n, Lp, h // g, plan.seg_chunks,
        *x.stride(), *zz.stride(), *B.stride(), *C.stride(), *out.stride(), *sD,
        Q=Q, BM=min(BLOCK_M, Q), BP=BP, BN=BN, HAS_Z=z is not None, HAS_D=D is not None,
        STORE_YPRE=store_ypre, HAS_SEG=segp is not None, CUM_LO=cum_lo is not None, PREC=prec,
        UPCAST=upcast_dots(x.dtype), HAS_INIT=starts is not None, STORE_ENTER=store_enter,
        **LAUNCH,
    )  # fmt: skip
    return out, ypre, enter, final
