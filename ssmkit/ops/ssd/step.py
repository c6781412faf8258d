"""One SSD token for decoding: the recurrence's single step on a (b, h, p, n) state (fp32 inside, fp64 kept)."""

from __future__ import annotations

import torch

from ._common import compute_dtype, process_dt, skip_and_gate


def ssd_step_torch(
    x_t: torch.Tensor,
    dt_t: torch.Tensor,
    A: torch.Tensor,
    B_t: torch.Tensor,
    C_t: torch.Tensor,
    state: torch.Tensor,
    D: torch.Tensor | None,
    z_t: torch.Tensor | None,
    dt_bias: torch.Tensor | None,
    dt_softplus: bool,
    dt_limit: tuple[float, float],
) -> tuple[torch.Tensor, torch.Tensor]:
    ct = compute_dtype(x_t)
    h, g = x_t.shape[1], B_t.shape[1]
    dt = process_dt(dt_t, dt_bias, dt_softplus, dt_limit, ct)  # (b, h)
    xf = x_t.to(ct)
    Bh = B_t.to(ct).repeat_interleave(h // g, dim=1)  # (b, h, n)
    Ch = C_t.to(ct).repeat_interleave(h // g, dim=1)  # (b, h, n)
    decay = torch.exp(dt * A.to(ct))  # (b, h)
    new_state = decay[..., None, None] * state.to(ct) + (dt[..., None] * xf)[..., None] * Bh[:, :, None, :]
    y = torch.einsum("bhpn,bhn->bhp", new_state, Ch)  # (b, h, p)
    y = skip_and_gate(y, xf, D, z_t, ct)
    return y.to(x_t.dtype), new_state
