"""RMSNorm and the grouped, gated RMSNorm of Mamba-2, written as the formulas (fp32 inside, fp64 kept)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def rms_norm_ref(x: torch.Tensor, weight: torch.Tensor | None, eps: float) -> torch.Tensor:
    # y = x / sqrt(mean(x^2) + eps) * weight, over the last dimension
    ct = _compute_dtype(x)
    xf = x.to(ct)
    y = xf / torch.sqrt(xf.pow(2).mean(dim=-1, keepdim=True) + eps)
    if weight is not None:
        y = y * weight.to(ct)
    return y.to(x.dtype)


def gated_rms_norm_ref(
    x: torch.Tensor,
    z: torch.Tensor | None,
    weight: torch.Tensor | None,
    eps: float,
    group_size: int,
    norm_before_gate: bool,
) -> torch.Tensor:
    # Mamba-2: the channels are split into groups of group_size; each group is normalized on its own.
    # norm_before_gate=False: y = norm(x * silu(z)) * w;  True: y = norm(x) * w * silu(z)
    ct = _compute_dtype(x)
    xf = x.to(ct)
    zf = None if z is None else z.to(ct)
    if zf is not None and not norm_before_gate:
        xf = xf * F.silu(zf)
    groups = xf.unflatten(-1, (-1, group_size))  # (..., d / group_size, group_size)
    y = groups / torch.sqrt(groups.pow(2).mean(dim=-1, keepdim=True) + eps)
    y = y.flatten(-2)
    if weight is not None:
        y = y * weight.to(ct)
    if zf is not None and norm_before_gate:
        y = y * F.silu(zf)
    return y.to(x.dtype)
