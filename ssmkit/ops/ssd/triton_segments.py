"""SSD Triton forward for long sequences at small batch: the states entering segments of the sequence.

The one-kernel forward (triton_fused) walks a sequence's chunks in order, one program per (batch, head, p-block).
At batch 1 that is too few programs for the GPU (W2 at L 64K: 64). So the sequence is cut into segments of whole
chunks, each walked by its own program, and the state entering each segment is computed first:

    1. each fine segment's own end state (zero entering state), all fine segments before the last coarse
       segment's start in parallel:
           T <- exp(cum_last[k]) T + st[k]      over the segment's chunks k (st[k] as in triton_state)
    2. the passing over fine segments (triton_state's passing kernel, each fine segment taken as one "chunk" whose
       decay is the sum of its chunks' log decays): the state entering each fine segment;
    3. the walk (triton_fused) over coarse segments, each a whole number of fine segments, from those states.

Fine segments are short (SEGMENT_CHUNKS chunks) so that step 1 has enough programs; coarse ones are long, since
each walk program pays for its start. Against the staged path (every chunk's state written, passed over in place
and read back: 1 GiB of fp32 traffic at W2's size) this writes one state per fine segment. Packed sequences: a
chunk in which a new segment id starts stops the state (decay 0), as in the passing.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from .triton_state import (
    LAUNCH,
    _chunk_state_acc,
    _decay_across,
    _pass_fwd_kernel,
    _pass_grid,
    state_tiles,
    upcast_dots,
)


@triton.jit
def _segment_state_kernel(
    u_ptr, V_ptr, dtp_ptr, cum_ptr, cumlo_ptr, seg_ptr, out_ptr,
    l, h, p, n, Lp, hg, n_seg, seg_chunks,
    su_b, su_l, su_h, su_p, sV_b, sV_l, sV_g, sV_n,
    Q: tl.constexpr, BK: tl.constexpr, BP: tl.constexpr, BN: tl.constexpr,
    HAS_SEG: tl.constexpr, CUM_LO: tl.constexpr, PREC: tl.constexpr, UPCAST: tl.constexpr,
):  # fmt: skip
    """One program per (batch, fine segment, head, p-tile, n-tile): the segment's end state from a zero start."""
    pid_bsh, pid_p, pid_n = tl.program_id(0).to(tl.int64), tl.program_id(1), tl.program_id(2)
    nc = Lp // Q
    hi = pid_bsh % h
    bs = pid_bsh // h
    bi, si = bs // n_seg, bs % n_seg
    rp = pid_p * BP + tl.arange(0, BP)
    rn = pid_n * BN + tl.arange(0, BN)
    row = (bi * h + hi) * Lp
    acc = tl.zeros((BP, BN), dtype=tl.float32)
    for ci in range(si * seg_chunks, tl.minimum(si * seg_chunks + seg_chunks, nc)):
        acc = _chunk_state_acc(
            acc * _decay_across(cum_ptr, seg_ptr, row, bi, ci, Lp, Q, HAS_SEG), u_ptr, V_ptr, dtp_ptr, cum_ptr,
            cumlo_ptr, seg_ptr, bi, ci, 0, hi, rp, rn, l, h, p, n, Lp, hg, su_b, su_l, su_h, su_p, sV_b, sV_l, sV_g,
            sV_n, Q, Q, BK, True, HAS_SEG, CUM_LO, PREC, UPCAST, False,
        )  # fmt: skip
    out_at = ((bi * n_seg + si) * h + hi) * p * n + rp[:, None] * n + rn[None, :]
    tl.store(out_ptr + out_at, acc, mask=(rp < p)[:, None] & (rn < n)[None, :])


def _segment_log_decays(cum, segp, Q: int, seg_chunks: int, n_seg: int) -> torch.Tensor:
    """(b, h, n_seg) fp32: the log decay of each of the first n_seg fine segments, the sum of its chunks' (-inf
    where a packed sequence starts inside it, so that no state crosses it)."""
    b, h, Lp = cum.shape
    nc = Lp // Q
    per_chunk = cum.view(b, h, nc, Q)[..., Q - 1]  # (b, h, nc)
    if segp is not None:
        last = segp[:, Q - 1 :: Q]  # (b, nc): segment id of each chunk's last token
        before = F.pad(last[:, :-1], (1, 0))  # of the token before each chunk (0 before the first)
        per_chunk = per_chunk.masked_fill((last != before)[:, None, :], float("-inf"))
    return per_chunk[..., : n_seg * seg_chunks].reshape(b, h, n_seg, seg_chunks).sum(-1).contiguous()


def segment_starts(x, B, dtp, cum, cum_lo, segp, initial_state, Q, prec, seg_chunks, every, segments):
    """-> (b, segments, h, p, n) fp32: the states entering fine segments 0, every, 2 every, ... (of seg_chunks
    chunks each); the first is initial_state, or zeros."""
    b, l, h, p = x.shape
    g, n = B.shape[-2:]
    Lp = dtp.shape[-1]
    n_seg = (segments - 1) * every  # the fine segments before the last start; none after it is needed
    states = torch.empty(b, n_seg, h, p, n, device=x.device, dtype=torch.float32)
    BP, BN = state_tiles(p, n)
    grid = (b * n_seg * h, triton.cdiv(p, BP), triton.cdiv(n, BN))
    _segment_state_kernel[grid](
        x, B, dtp, cum, cum_lo if cum_lo is not None else cum, segp if segp is not None else dtp, states,
        l, h, p, n, Lp, h // g, n_seg, seg_chunks, *x.stride(), *B.stride(),
        Q=Q, BK=min(64, Q), BP=BP, BN=BN, HAS_SEG=segp is not None, CUM_LO=cum_lo is not None, PREC=prec,
        UPCAST=upcast_dots(B.dtype), **LAUNCH["state"],
    )  # fmt: skip
    # the passing, in place: a fine segment is one step of decay exp(its log decay) (Q = 1: the kernel reads the
    # (b, h, n_seg) log decays one per step); its final state is the state entering the last segment
    decays = _segment_log_decays(cum, segp, Q, seg_chunks, n_seg)
    last_start = torch.empty(b, h, p, n, device=x.device, dtype=torch.float32)
    init = initial_state.contiguous() if initial_state is not None else last_start
    grid, block = _pass_grid(b, h, p * n)
    _pass_fwd_kernel[grid](
        states, decays, decays, init, last_start, h, p * n, n_seg,
        Q=1, BLOCK=block, HAS_INIT=initial_state is not None, HAS_SEG=False, **LAUNCH["pass"],
    )  # fmt: skip
    return torch.cat([states[:, ::every], last_start[:, None]], dim=1)
