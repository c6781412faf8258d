"""RMSNorm and grouped gated RMSNorm: dispatcher over the reference and the fast paths."""

from __future__ import annotations

import importlib.util

import torch

from .._backend import away_from_triton, float64_reason, register_op, resolve_backend
from .._checks import check_divides, check_float, check_shape, check_tensor, same_device
from .fast import gated_rms_norm_torch, rms_norm_torch
from .reference import gated_rms_norm_ref, rms_norm_ref

register_op("rms_norm", "reference", "torch")
register_op("gated_rms_norm", "reference", "torch")
if importlib.util.find_spec("triton") is not None:
    # the kernels are imported on first use, so TRITON_INTERPRET set after `import ssmkit` still counts
    register_op("rms_norm", "triton")
    register_op("gated_rms_norm", "triton")


def _backend_for(op: str, backend: str, x: torch.Tensor) -> str:
    """resolve_backend, then away from Triton for what the kernels do not take (float64: an error if asked for)."""
    chosen = away_from_triton(op, backend, resolve_backend(op, backend, x.device), float64_reason("x", x))
    return "torch" if chosen == "triton" and x.numel() == 0 else chosen


def _check_weight(weight: torch.Tensor | None, d: int) -> None:
    if weight is not None:
        check_shape("weight", weight, (d,), "(d,)")


def rms_norm(
    x: torch.Tensor, weight: torch.Tensor | None = None, eps: float = 1e-6, backend: str = "auto"
) -> torch.Tensor:
    """RMSNorm over the last dimension. x: (..., d), weight: (d,) -> (..., d) in x's dtype.

    backend "auto" runs the Triton kernels on CUDA tensors (float64 falls back to torch with a warning).
    """
    check_tensor("x", x)
    check_float("x", x)
    _check_weight(weight, x.shape[-1])
    same_device(x=x, weight=weight)
    chosen = _backend_for("rms_norm", backend, x)
    if chosen == "reference":
        return rms_norm_ref(x, weight, eps)
    if chosen == "triton":
        from .triton_norm import rms_norm_triton

        return rms_norm_triton(x, weight, eps)
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
    same_device(x=x, z=z, weight=weight)
    chosen = _backend_for("gated_rms_norm", backend, x)
    if chosen == "reference":
        return gated_rms_norm_ref(x, z, weight, eps, group_size, norm_before_gate)
    if chosen == "triton":
        from .triton_norm import gated_rms_norm_triton

        return gated_rms_norm_triton(x, z, weight, eps, group_size, norm_before_gate)
    return gated_rms_norm_torch(x, z, weight, eps, group_size, norm_before_gate)
