"""SSD's dual "attention" form, fully materialized: l x l per head (fp32 inside, fp64 kept). For tests.

    y = (L o C B^T) (dt x)      L[t, s] = exp(dt_{s+1} A + ... + dt_t A) for s <= t, else 0

L is the 1-semiseparable decay mask. Its exponents are summed directly, never as differences of one running
sum, so L is as accurate as the recurrence's own products of decays, however long the sequence.
"""

from __future__ import annotations

import torch

from ._common import compute_dtype, process_dt, segsum, skip_and_gate


def ssd_quadratic_form(
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
    ct = compute_dtype(x)
    h, g = x.shape[2], B.shape[2]
    dt = process_dt(dt, dt_bias, dt_softplus, dt_limit, ct)  # (b, l, h)
    xf = x.to(ct)
    Bh = B.to(ct).repeat_interleave(h // g, dim=2)  # (b, l, h, n)
    Ch = C.to(ct).repeat_interleave(h // g, dim=2)  # (b, l, h, n)
    dtA = (dt * A.to(ct)).transpose(1, 2)  # (b, h, l)

    log_L = segsum(dtA)  # (b, h, l, l)
    if seg is not None:
        other_sequence = seg[:, None, :, None] != seg[:, None, None, :]  # (b, 1, l, l)
        log_L = log_L.masked_fill(other_sequence, float("-inf"))
    L = torch.exp(log_L)  # (b, h, l, l)
    scores = torch.einsum("bthn,bshn->bhts", Ch, Bh) * L  # (b, h, l, l)
    y = torch.einsum("bhts,bshp->bthp", scores, xf * dt[..., None])  # (b, l, h, p)
    # state after the last token: sum_s L[l-1, s] dt_s x_s B_s^T (+ the decayed initial state)
    weight_last = (L[:, :, -1, :] * dt.transpose(1, 2)).transpose(1, 2)  # (b, l, h)
    final_state = torch.einsum("bsh,bshp,bshn->bhpn", weight_last, xf, Bh)  # (b, h, p, n)

    if initial_state is not None:
        h0 = initial_state.to(ct)
        from_start = torch.exp(torch.cumsum(dtA, dim=-1))  # (b, h, l): decay from before token 0 through t
        if seg is not None:
            from_start = from_start * (seg == 0)[:, None, :]  # only the first sequence sees the initial state
        y = y + torch.einsum("bthn,bhpn->bthp", Ch, h0) * from_start.transpose(1, 2)[..., None]
        final_state = final_state + from_start[:, :, -1, None, None] * h0

    y = skip_and_gate(y, xf, D, z, ct)
    return y.to(x.dtype), final_state
