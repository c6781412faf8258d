"""RMSNorm layers: y = x / sqrt(mean(x^2) + eps) * weight over the last dimension, and Mamba-2's grouped,
gated variant applied before its out_proj.

The math runs in fp32 inside `ssmkit.ops.norms` (fp64 kept); the output has the input's dtype.
"""

from __future__ import annotations

import torch
from torch import nn

from ..ops._checks import check_float, check_tensor
from ..ops.norms import gated_rms_norm, rms_norm


class RMSNorm(nn.Module):
    """RMSNorm with a learned scale `weight` (d,), named as in Hugging Face Llama/Mamba/Jamba checkpoints."""

    def __init__(
        self, d: int, eps: float = 1e-5, device: torch.device | None = None, dtype: torch.dtype | None = None
    ) -> None:
        super().__init__()
        if not isinstance(d, int) or d <= 0:
            raise ValueError(f"d: expected a positive int, got {d!r}")
        if not eps > 0:
            raise ValueError(f"eps: expected a positive float, got {eps!r}")
        self.d = d
        self.eps = float(eps)
        self.weight = nn.Parameter(torch.ones(d, device=device, dtype=dtype))  # (d,)

    def reset_parameters(self) -> None:
        nn.init.ones_(self.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_tensor("x", x)
        check_float("x", x)
        if x.dim() == 0 or x.shape[-1] != self.d:
            raise ValueError(f"x: expected shape (..., d) = (..., {self.d}), got {tuple(x.shape)}")
        return rms_norm(x, self.weight, self.eps)  # (..., d), x's dtype

    def extra_repr(self) -> str:
        return f"{self.d}, eps={self.eps}"


class GatedRMSNorm(RMSNorm):
    """Mamba-2's norm: RMSNorm over groups of `group_size` channels, gated by silu(z).

    norm_before_gate=False (Mamba-2): norm(x * silu(z)) * weight; True: norm(x) * weight * silu(z).
    """

    def __init__(
        self,
        d: int,
        eps: float = 1e-5,
        group_size: int | None = None,
        norm_before_gate: bool = False,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(d, eps=eps, device=device, dtype=dtype)
        self.group_size = d if group_size is None else group_size
        if d % self.group_size != 0:
            raise ValueError(f"group_size = {self.group_size} must divide d = {d}")
        self.norm_before_gate = norm_before_gate

    def forward(self, x: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        check_tensor("x", x)
        if x.dim() == 0 or x.shape[-1] != self.d:
            raise ValueError(f"x: expected shape (..., d) = (..., {self.d}), got {tuple(x.shape)}")
        return gated_rms_norm(x, z, self.weight, self.eps, self.group_size, self.norm_before_gate)

    def extra_repr(self) -> str:
        return f"{self.d}, eps={self.eps}, group_size={self.group_size}, norm_before_gate={self.norm_before_gate}"
