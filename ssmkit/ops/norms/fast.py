"""Pure-PyTorch fast path: fp32 math with torch's fused rms_norm kernel where it applies."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def rms_norm_torch(x: torch.Tensor, weight: torch.Tensor | None, eps: float) -> torch.Tensor:
    ct = torch.float64 if x.dtype == torch.float64 else torch.float32
    w = None if weight is None else weight.to(ct)
    return F.rms_norm(x.to(ct), (x.shape[-1],), w, eps).to(x.dtype)


def gated_rms_norm_torch(
    x: torch.Tensor,
    z: torch.Tensor | None,
    weight: torch.Tensor | None,
    eps: float,
    group_size: int,
    norm_before_gate: bool,
) -> torch.Tensor:
    ct = torch.float64 if x.dtype == torch.float64 else torch.float32
    xf = x.to(ct)
    gate = None if z is None else F.silu(z.to(ct))
    if gate is not None and not norm_before_gate:
        xf = xf * gate
    y = F.rms_norm(xf.unflatten(-1, (-1, group_size)), (group_size,), None, eps).flatten(-2)  # (..., d)
    if weight is not None:
        y = y * weight.to(ct)
    if gate is not None and norm_before_gate:
        y = y * gate
    return y.to(x.dtype)
