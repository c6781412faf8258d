"""Chunked selective scan: the pure-PyTorch fast path for CPU (and GPU without Triton).

The sequence is cut into chunks of T tokens. Chunks run side by side, so each Python step of the time loop
updates the states of every chunk at once:
  1. each chunk scans from a zero state and keeps only its final state,
  2. a short sequential pass over chunks turns those into each chunk's incoming state
     (H_in[c+1] = decay[c] * H_in[c] + local[c], decay[c] = exp(A * sum of Delta over chunk c)),
  3. each chunk scans again from its true incoming state and emits y_t = C_t . h_t.
Chunks are processed in blocks sized to keep the per-step state (b, chunks, d, n) near 2^20 elements, so no
(b, l, d, n) tensor ever exists: memory is O(b l d + b (l / T) d n). Plain differentiable torch ops.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .reference import compute_dtype, prepare_dt, reset_mask

CHUNK = 64
BLOCK_ELEMENTS = 1 << 20


def _scan_chunks(h, delta, A2, dtu, B, keep, C=None, inplace=False):
    """Run the recurrence over the T steps of every chunk at once.

    h: (b, c, g, e, n) starting states; delta, dtu: (b, c, T, g, e); A2 = A * log2(e): (g, e, n) (exp2 is
    cheaper than exp on CPU); B, C: (b, c, T, g, n); keep: (b, c, T) or None.
    Returns the final states and, if C is given, y: (b, c, T, g, e).
    """
    if inplace:
        return _scan_chunks_inplace(h.clone(), delta, A2, dtu, B, keep, C)
    ys = []
    for t in range(delta.shape[2]):
        A_bar = torch.exp2(delta[:, :, t, :, :, None] * A2)  # (b, c, g, e, n)
        if keep is not None:
            A_bar = A_bar * keep[:, :, t, None, None, None]
        h = torch.addcmul(A_bar * h, dtu[:, :, t, :, :, None], B[:, :, t, :, None, :])
        if C is not None:
            ys.append((h * C[:, :, t, :, None, :]).sum(-1))  # (b, c, g, e)
    return h, (torch.stack(ys, dim=2) if C is not None else None)


def _scan_chunks_inplace(h, delta, A2, dtu, B, keep, C):
    """Same as `_scan_chunks` without autograd, writing into reused buffers.

    Large CPU allocations are fresh pages every time (the allocator does not cache them), which costs more than
    the arithmetic, so each step reuses two buffers.
    """
    A_bar = torch.empty_like(h)  # (b, c, g, e, n)
    prod = torch.empty_like(h)
    y = None if C is None else h.new_empty(delta.shape)  # (b, c, T, g, e)
    for t in range(delta.shape[2]):
        torch.mul(delta[:, :, t, :, :, None], A2, out=A_bar)
        torch.exp2(A_bar, out=A_bar)
        if keep is not None:
            A_bar.mul_(keep[:, :, t, None, None, None])
        h.mul_(A_bar).addcmul_(dtu[:, :, t, :, :, None], B[:, :, t, :, None, :])
        if C is not None:
            torch.mul(h, C[:, :, t, :, None, :], out=prod)
            torch.sum(prod, dim=-1, out=y[:, :, t])
    return h, y


def _block(h0, delta, A2, dtu, B, C, keep, inplace):
    """One block of chunks. h0: (b, g, e, n) state entering the block. Returns (y, state leaving the block)."""
    b, c = delta.shape[:2]
    if c == 1:  # one chunk: its entering state is known, so the zero-state pass that finds it is not needed
        state, y = _scan_chunks(h0[:, None], delta, A2, dtu, B, keep, C, inplace=inplace)
        return y, state[:, 0]
    local, _ = _scan_chunks(h0.new_zeros((b, c, *h0.shape[1:])), delta, A2, dtu, B, keep, inplace=inplace)
    # decay across a whole chunk: exp(A * sum Delta), zeroed if a packed sequence starts inside the chunk
    decay = torch.exp2(delta.sum(dim=2)[..., None] * A2)  # (b, c, g, e, n)
    if keep is not None:
        decay = decay * keep.prod(dim=2)[:, :, None, None, None]
    incoming = []
    state = h0
    for j in range(c):
        incoming.append(state)
        state = decay[:, j] * state + local[:, j]
    _, y = _scan_chunks(torch.stack(incoming, dim=1), delta, A2, dtu, B, keep, C, inplace=inplace)
    return y, state


def selective_scan_chunked(u, dt, A, B, C, D, z, dt_bias, dt_softplus, initial_state, seq_idx, chunk=CHUNK):
    ct = compute_dtype(u)
    b, l, d = u.shape
    g, n = B.shape[2], B.shape[3]
    e = d // g  # channels per group of B/C
    delta = prepare_dt(dt, dt_bias, dt_softplus, ct)  # (b, l, d)
    uf = u.to(ct)
    T = min(chunk, l)
    pad = (-l) % T
    # padded steps have Delta = 0: the state passes through unchanged and receives nothing
    delta_p = F.pad(delta, (0, 0, 0, pad)).unflatten(1, (-1, T)).unflatten(-1, (g, e))  # (b, nc, T, g, e)
    dtu_p = F.pad(delta * uf, (0, 0, 0, pad)).unflatten(1, (-1, T)).unflatten(-1, (g, e))  # (b, nc, T, g, e)
    B_p = F.pad(B.to(ct), (0, 0, 0, 0, 0, pad)).unflatten(1, (-1, T))  # (b, nc, T, g, n)
    C_p = F.pad(C.to(ct), (0, 0, 0, 0, 0, pad)).unflatten(1, (-1, T))  # (b, nc, T, g, n)
    keep_p = None
    if seq_idx is not None:
        keep_p = F.pad(reset_mask(seq_idx, ct), (0, pad), value=1.0).unflatten(1, (-1, T))  # (b, nc, T)
    A2 = (A.to(ct) * math.log2(math.e)).unflatten(0, (g, e))  # (g, e, n)
    tensors = (u, dt, A, B, C, D, z, dt_bias, initial_state)
    inplace = not (torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors))

    state = u.new_zeros(b, g, e, n, dtype=ct) if initial_state is None else initial_state.to(ct).unflatten(1, (g, e))
    nc = delta_p.shape[1]
    per_block = max(1, BLOCK_ELEMENTS // (b * d * n))
    ys = []
    for s in range(0, nc, per_block):
        sl = slice(s, s + per_block)
        keep_b = None if keep_p is None else keep_p[:, sl]
        y_b, state = _block(state, delta_p[:, sl], A2, dtu_p[:, sl], B_p[:, sl], C_p[:, sl], keep_b, inplace)
        ys.append(y_b)
    y = torch.cat(ys, dim=1).flatten(1, 2)[:, :l].flatten(2)  # (b, l, d)
    if D is not None:
        y = y + D.to(ct) * uf
    if z is not None:
        y = y * F.silu(z.to(ct))
    return y.to(u.dtype), state.flatten(1, 2)
