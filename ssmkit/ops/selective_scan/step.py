"""One decoding step of the selective scan: O(d n) work and memory whatever the context length."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .reference import compute_dtype, prepare_dt


def selective_scan_step_torch(u_t, dt_t, A, B_t, C_t, state, D, z_t, dt_bias, dt_softplus):
    ct = compute_dtype(u_t)
    d = u_t.shape[1]
    g = B_t.shape[1]
    delta = prepare_dt(dt_t, dt_bias, dt_softplus, ct)  # (b, d)
    uf = u_t.to(ct)
    h = state.to(ct).unflatten(1, (g, d // g))  # (b, g, e, n)
    A_bar = torch.exp(delta.unflatten(1, (g, -1))[..., None] * A.to(ct).unflatten(0, (g, -1)))  # (b, g, e, n)
    dtu = (delta * uf).unflatten(1, (g, -1))[..., None]  # (b, g, e, 1)
    h = torch.addcmul(A_bar * h, dtu, B_t.to(ct)[:, :, None, :])
    y = torch.matmul(h, C_t.to(ct)[:, :, :, None]).flatten(1)  # (b, d)
    if D is not None:
        y = y + D.to(ct) * uf
    if z_t is not None:
        y = y * F.silu(z_t.to(ct))
    return y.to(u_t.dtype), h.flatten(1, 2)
