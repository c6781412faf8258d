"""SSD's chunked algorithm in plain PyTorch (fp32 inside, fp64 kept), CPU and GPU.

The sequence is cut into chunks of Q tokens (the last one zero-padded). Inside a chunk the dual, attention-like
form runs as matmuls; between chunks only a (p, n) state per head is passed, so the cost is linear in l and
nothing larger than (b, chunks, h, Q, Q) or (b, chunks, h, p, n) is built. The stages, as in the paper:

1. intra-chunk outputs      y_diag[t] = sum_{s <= t in the chunk} exp(cum_t - cum_s) (C_t . B_s) dt_s x_s
2. chunk states             st_k = sum_{s in chunk k} exp(cum_last - cum_s) dt_s x_s B_s^T
3. state passing            S_{k+1} = exp(cum_last of chunk k) S_k + st_k          (S_0 = initial state)
4. state-to-output          y_off[t] = exp(cum_t) C_t S_k

cum is the within-chunk running sum of dt * A, kept in log2 units (exp2 is several times faster than exp on
CPU) and summed in fp64 (small tensors) so that each exponent carries one rounding. Packed sequences: segment
ids mask every stage, so a token only sees the tokens, and the states, of its own segment.

Chunks are flattened to N = b * chunks for stages 1, 2 and 4. Without autograd the big intermediates are
reused in place (no second (Q x Q) buffer per block, no fresh (b, l, h, p) buffer per step).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ._common import compute_dtype, process_dt, segsum, skip_and_gate

# (Q x Q) work runs a few chunks at a time. On CPU, blocks near 4 MB (fp32) stay in cache and measured fastest
# (2 threads, h=24, Q=256, l=2048: about 34 ms against 40-46 ms with 16-32 MB blocks); on GPUs, big blocks
# keep kernel launches few.
_BLOCK_ELEMENTS = {"cpu": 1 << 20}
_BLOCK_ELEMENTS_OTHER = 1 << 26
_LOG2_E = 1.0 / math.log(2.0)
_NEG_INF = float("-inf")


def _pad_time(t: torch.Tensor, pad: int) -> torch.Tensor:
    """Zero-pad dim 1 (time) of a (b, l, ...) tensor at the end."""
    return F.pad(t, (0, 0) * (t.dim() - 2) + (0, pad)) if pad else t


def _intra_chunk(
    dtA: torch.Tensor,
    cum: torch.Tensor,
    cum_lo: torch.Tensor | None,
    Cc: torch.Tensor,
    Bc: torch.Tensor,
    xdt: torch.Tensor,
    segc: torch.Tensor | None,
    inplace: bool,
) -> torch.Tensor:
    """Stage 1. dtA, cum, cum_lo: (N, h, Q); Cc, Bc: (N, g, Q, n); xdt: (N, Q, h, p); segc: (N, Q).

    cum + cum_lo is the fp64 running sum as two fp32 numbers (cum_lo is None in fp64). Returns (N, h, Q, p).
    """
    N, h, Q = cum.shape
    g, p = Cc.shape[1], xdt.shape[-1]
    # additive masks (0 or -inf): exponents above the diagonal can be large and positive, so they are masked
    # before exp2, never after (inf * 0 = nan)
    above = torch.ones(Q, Q, dtype=torch.bool, device=cum.device).triu(1)
    causal = torch.zeros(Q, Q, dtype=cum.dtype, device=cum.device).masked_fill_(above, _NEG_INF)  # (Q, Q)
    # exponent differences cum_t - cum_s are cheap, and exact to fp32 once the low parts are added: cum_t and
    # cum_s round alike when close (Sterbenz), and when far apart the rounding is small against the difference.
    # But their gradient is row sums minus column sums of a (Q x Q) matrix, which cancel badly in fp32: when
    # dtA needs a gradient the exponents are summed directly instead (slower).
    summed = torch.is_grad_enabled() and dtA.requires_grad
    step = max(1, _BLOCK_ELEMENTS.get(cum.device.type, _BLOCK_ELEMENTS_OTHER) // (h * Q * Q))
    if inplace:
        work = cum.new_empty(min(step, N) * h * Q * Q)
        out = cum.new_empty(N, h, Q, p)
    outs = []
    for i in range(0, N, step):
        k = min(step, N - i)
        blk = slice(i, i + k)
        CB = torch.matmul(Cc[blk], Bc[blk].transpose(-1, -2))  # (k, g, Q, Q), shared by a group's heads
        mask = causal
        if segc is not None:
            other = segc[blk, None, :, None] != segc[blk, None, None, :]  # (k, 1, Q, Q)
            mask = causal.masked_fill(other, _NEG_INF)
        if summed:
            log_decay = segsum(dtA[blk])  # (k, h, Q, Q)
        else:
            buffer = work[: k * h * Q * Q].view(k, h, Q, Q) if inplace else None
            log_decay = torch.sub(cum[blk, :, :, None], cum[blk, :, None, :], out=buffer)  # (k, h, Q, Q)
            if cum_lo is not None:
                log_decay.add_(cum_lo[blk, :, :, None]).sub_(cum_lo[blk, :, None, :])
        decay = log_decay.add_(mask).exp2_().view(k, g, h // g, Q, Q)
        M = (decay.mul_(CB[:, :, None]) if inplace else decay * CB[:, :, None]).view(k, h, Q, Q)
        X = xdt[blk].transpose(1, 2)  # (k, h, Q, p)
        if inplace:
            torch.matmul(M, X, out=out[blk])
        else:
            outs.append(torch.matmul(M, X))
    return out if inplace else torch.cat(outs)


def _chunk_states(
    to_end: torch.Tensor, Bc: torch.Tensor, xdt: torch.Tensor, segc: torch.Tensor | None, inplace: bool
) -> torch.Tensor:
    """Stage 2. to_end: (N, h, Q) log2 decay from each token to its chunk's end -> (N, h, p, n).

    Each chunk's final state from a zero start. With `inplace`, xdt is overwritten.
    """
    N, h, Q = to_end.shape
    g, n, p = Bc.shape[1], Bc.shape[-1], xdt.shape[-1]
    w = torch.exp2(to_end)  # (N, h, Q)
    if segc is not None:
        w = w * (segc == segc[:, -1:])[:, None, :]  # only the chunk's last segment reaches its end
    w = w.transpose(1, 2)[..., None]  # (N, Q, h, 1)
    xw = xdt.mul_(w) if inplace else xdt * w  # (N, Q, h, p)
    states = torch.matmul(xw.reshape(N, Q, g, (h // g) * p).permute(0, 2, 3, 1), Bc)  # (N, g, h/g * p, n)
    return states.view(N, h, p, n)


def _pass_states(
    states: torch.Tensor, chunk_decay: torch.Tensor, initial_state: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Stage 3. states: (b, c, h, p, n); chunk_decay: (b, c, h) -> (state entering each chunk, final state)."""
    S = torch.zeros_like(states[:, 0]) if initial_state is None else initial_state  # (b, h, p, n)
    entering = []
    for k in range(states.shape[1]):
        entering.append(S)
        S = chunk_decay[:, k, :, None, None] * S + states[:, k]
    return torch.stack(entering, dim=1), S  # (b, c, h, p, n), (b, h, p, n)


def _state_to_output(
    cum_in: torch.Tensor, Cc: torch.Tensor, entering: torch.Tensor, y_diag: torch.Tensor, inplace: bool
) -> torch.Tensor:
    """Stage 4, plus stage 1's output. cum_in: (N, h, Q), -inf where the entering state does not reach.

    Cc: (N, g, Q, n); entering: (N, h, p, n); y_diag: (N, h, Q, p). Returns (N, Q, h, p).
    """
    N, h, Q = cum_in.shape
    g, p = Cc.shape[1], entering.shape[-2]
    S = entering.view(N, g, (h // g) * p, -1).transpose(-1, -2)  # (N, g, n, h/g * p)
    y = torch.matmul(Cc, S).view(N, g, Q, h // g, p).transpose(1, 2).reshape(N, Q, h, p)
    decay = torch.exp2(cum_in).transpose(1, 2)[..., None]  # (N, Q, h, 1)
    y = y.mul_(decay) if inplace else y * decay
    return y.add_(y_diag.transpose(1, 2))


def ssd_chunked(
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None,
    z: torch.Tensor | None,
    dt_bias: torch.Tensor | None,
    dt_softplus: bool,
    dt_limit: tuple[float, float],
    initial_state: torch.Tensor | None,
    seg: torch.Tensor | None,
    chunk_size: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Same arguments as the reference, plus chunk_size; returns (y in x's dtype, final state in fp32/fp64)."""
    ct = compute_dtype(x)
    b, l, h, p = x.shape
    g, n = B.shape[-2:]
    Q = min(chunk_size, l)  # one short chunk needs no padding
    c = -(-l // Q)
    N, pad = b * c, c * Q - l
    tensors = (x, dt, A, B, C, D, z, dt_bias, initial_state)
    inplace = not (torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors))

    dt = process_dt(dt, dt_bias, dt_softplus, dt_limit, ct)  # (b, l, h)
    xf = x.to(ct)
    # padded tokens have dt = 0: they neither decay nor feed the state, so the final state is the one at l
    dt_pad = _pad_time(dt, pad)  # (b, c * Q, h)
    xdt = (_pad_time(xf, pad) * dt_pad[..., None]).contiguous().view(N, Q, h, p)
    Bc = _pad_time(B.to(ct), pad).reshape(N, Q, g, n).transpose(1, 2).contiguous()  # (N, g, Q, n)
    Cc = _pad_time(C.to(ct), pad).reshape(N, Q, g, n).transpose(1, 2).contiguous()  # (N, g, Q, n)
    segc = None
    if seg is not None:
        segc = (torch.cat([seg, seg[:, -1:].expand(b, pad)], dim=1) if pad else seg).reshape(N, Q)
    dtA64 = (dt_pad.double() * (A.double() * _LOG2_E)).reshape(N, Q, h).transpose(1, 2).contiguous()  # (N, h, Q)
    cum64 = torch.cumsum(dtA64, dim=-1)  # (N, h, Q)
    dtA, cum = dtA64.to(ct), cum64.to(ct)
    cum_lo = None if ct == torch.float64 else (cum64 - cum.double()).to(ct)  # what fp32 cum leaves out
    # the decay to the chunk's end is a difference too: taken in fp64, where its gradient does not cancel
    to_end, chunk_total = (cum64[..., -1:] - cum64).to(ct), cum64[..., -1].to(ct)  # (N, h, Q), (N, h)

    y_diag = _intra_chunk(dtA, cum, cum_lo, Cc, Bc, xdt, segc, inplace)  # (N, h, Q, p)
    states = _chunk_states(to_end, Bc, xdt, segc, inplace).view(b, c, h, p, n)

    h0 = None if initial_state is None else initial_state.to(ct)
    if c == 1 and h0 is None:
        y = y_diag.transpose(1, 2)  # (N, Q, h, p): nothing enters the only chunk
        final_state = states[:, 0]
    else:
        chunk_decay = torch.exp2(chunk_total).view(b, c, h)
        cum_in = cum
        if segc is not None:
            segs = segc.view(b, c, Q)
            # segment of the token before each chunk (0 before the first: the initial state's sequence)
            before = F.pad(segs[:, :-1, -1], (1, 0))  # (b, c)
            chunk_decay = chunk_decay * (segs[..., -1] == before)[..., None]
            reached = (segs == before[..., None]).view(N, 1, Q)
            cum_in = cum.masked_fill(~reached, _NEG_INF)
        entering, final_state = _pass_states(states, chunk_decay, h0)
        y = _state_to_output(cum_in, Cc, entering.view(N, h, p, n), y_diag, inplace)  # (N, Q, h, p)

    y = y.reshape(b, c * Q, h, p)[:, :l]  # (b, l, h, p)
    y = skip_and_gate(y, xf, D, z, ct, inplace=inplace)
    return y.to(x.dtype).contiguous(), final_state
