"""Mamba-1 selective scan (S6), the sequential recurrence as written in the paper.

Glossary: u <-> x (input), dt <-> Delta, A <-> A (d, n), B/C <-> B_t, C_t (input dependent), n <-> N (state size).
    Delta_t = softplus(dt_t + dt_bias)             (if dt_softplus)
    h_t     = exp(Delta_t A) h_{t-1} + Delta_t B_t u_t   (zero-order hold for A, Euler for B, as in Mamba)
    y_t     = C_t . h_t + D u_t,   y_t *= silu(z_t)
Computes in fp32 (fp64 when given fp64) and loops over time: slow, exact, the ground truth for every fast path.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def compute_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def prepare_dt(dt: torch.Tensor, dt_bias: torch.Tensor | None, dt_softplus: bool, ct: torch.dtype) -> torch.Tensor:
    dt = dt.to(ct)
    if dt_bias is not None:
        dt = dt + dt_bias.to(ct)
    return F.softplus(dt) if dt_softplus else dt


def reset_mask(seq_idx: torch.Tensor, ct: torch.dtype) -> torch.Tensor:
    """(b, l) -> (b, l): 0 where a new packed sequence starts (seq_idx changes), else 1."""
    keep = torch.ones(seq_idx.shape, dtype=ct, device=seq_idx.device)
    keep[:, 1:] = (seq_idx[:, 1:] == seq_idx[:, :-1]).to(ct)
    return keep


def selective_scan_ref(u, dt, A, B, C, D, z, dt_bias, dt_softplus, initial_state, seq_idx):
    ct = compute_dtype(u)
    b, l, d = u.shape
    g = B.shape[2]
    delta = prepare_dt(dt, dt_bias, dt_softplus, ct)  # (b, l, d)
    Bd = B.to(ct).repeat_interleave(d // g, dim=2)  # (b, l, d, n): channel c reads group c // (d / g)
    Cd = C.to(ct).repeat_interleave(d // g, dim=2)  # (b, l, d, n)
    uf, Af = u.to(ct), A.to(ct)
    keep = None if seq_idx is None else reset_mask(seq_idx, ct)
    h = u.new_zeros(b, d, A.shape[1], dtype=ct) if initial_state is None else initial_state.to(ct)
    ys = []
    for t in range(l):
        if keep is not None:
            h = h * keep[:, t, None, None]
        A_bar = torch.exp(delta[:, t, :, None] * Af)  # (b, d, n)
        h = A_bar * h + delta[:, t, :, None] * Bd[:, t] * uf[:, t, :, None]
        ys.append((h * Cd[:, t]).sum(-1))  # (b, d)
    y = torch.stack(ys, dim=1)  # (b, l, d)
    if D is not None:
        y = y + D.to(ct) * uf
    if z is not None:
        y = y * F.silu(z.to(ct))
    return y.to(u.dtype), h
