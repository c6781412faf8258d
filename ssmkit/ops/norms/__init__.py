"""RMSNorm and grouped gated RMSNorm: dispatcher over the reference and the fast paths."""

from __future__ import annotations

import torch

from .._backend import register_op, resolve_backend
from .._checks import check_divides, check_float, check_shape, check_tensor
from .fast import gated_rms_norm_torch, rms_norm_torch
from .reference import gated_rms_norm_ref, rms_norm_ref

register_op("rms_norm", "reference", "torch")
register_op("gated_rms_norm", "reference", "torch")


def _check_weight(weight: torch.Tensor | None, d: int) -> None:
    if weight is not None:
        check_shape("weight", weight, (d,), "(d,)")


def rms_norm(
    x: torch.Tensor, weight: torch.Tensor | None = None, eps: float = 1e-6, backend: str = "auto"
) -> torch.Tensor:
    """RMSNorm over the last dimension. x: (..., d), weight: (d,) -> (..., d) in x's dtype."""
    check_tensor("x", x)
    check_float("x", x)
    _check_weight(weight, x.shape[-1])
    chosen = resolve_backend("rms_norm", backend, x.device)
    if chosen == "reference":
        return rms_norm_ref(x, weight, eps)
    return rms_norm_torch(x, weight, eps)


def gated_rms_norm(
    x: torch.Tensor,
    z: torch.Tensor | None = None,
    weight: torch.Tensor | None = None,
    eps: float = 1e-6,
    group_size: int | None = None,
    norm_before_gate: bool = False,
    backend: str = "auto",
) -> torch.Tensor:
    """Grouped RMSNorm gated by silu(z), as before Mamba-2's out_proj.

    x, z: (..., d); weight: (d,); group_size divides d (None: one group of d).
    norm_before_gate=False (Mamba-2): norm(x * silu(z)) * weight; True: norm(x) * weight * silu(z).
    """
    check_tensor("x", x)
    check_float("x", x)
    d = x.shape[-1]
    if z is not None:
        check_shape("z", z, tuple(x.shape), "same as x")
    _check_weight(weight, d)
    group_size = d if group_size is None else group_size
    check_divides("d (last dim of x)", d, "group_size", group_size)
    chosen = resolve_backend("gated_rms_norm", backend, x.device)
    if chosen == "reference":
        return gated_rms_norm_ref(x, z, weight, eps, group_size, norm_before_gate)
    return gated_rms_norm_torch(x, z, weight, eps, group_size, norm_before_gate)
