"""SSD written as the paper's recurrence, one token at a time (fp32 inside, fp64 kept).

Glossary (Mamba-2 paper <-> code): Delta <-> dt, A <-> A (a negative scalar per head), B, C <-> B, C (shared by
the heads of a group), X <-> x, h <-> state (p, n) per head, N <-> n (d_state), P <-> p (head dim).

    h_t = exp(dt_t A) h_{t-1} + dt_t x_t B_t^T        y_t = h_t C_t + D x_t        y <- y * silu(z)
"""

from __future__ import annotations

import torch

from ._common import compute_dtype, process_dt, skip_and_gate


def ssd_reference(
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
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sequential recurrence over l. seg: (b, l) segment ids (the state resets where they change) or None."""
    ct = compute_dtype(x)
    b, l, h, p = x.shape
    g, n = B.shape[-2:]
    dt = process_dt(dt, dt_bias, dt_softplus, dt_limit, ct)  # (b, l, h)
    xf, Af = x.to(ct), A.to(ct)
    Bh = B.to(ct).repeat_interleave(h // g, dim=2)  # (b, l, h, n): group j serves heads j*h/g ... (j+1)*h/g-1
    Ch = C.to(ct).repeat_interleave(h // g, dim=2)  # (b, l, h, n)
    state = x.new_zeros(b, h, p, n, dtype=ct) if initial_state is None else initial_state.to(ct)

    ys = []
    for t in range(l):
        if seg is not None and t > 0:
            same_sequence = (seg[:, t] == seg[:, t - 1]).to(ct)  # (b,)
            state = state * same_sequence[:, None, None, None]
        decay = torch.exp(dt[:, t] * Af)  # (b, h)
        inject = (dt[:, t, :, None] * xf[:, t])[..., None] * Bh[:, t, :, None, :]  # (b, h, p, n)
        state = decay[..., None, None] * state + inject  # (b, h, p, n)
        ys.append(torch.einsum("bhpn,bhn->bhp", state, Ch[:, t]))
    y = torch.stack(ys, dim=1)  # (b, l, h, p)

    y = skip_and_gate(y, xf, D, z, ct)
    return y.to(x.dtype), state
