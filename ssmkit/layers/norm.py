"""RMSNorm layer: y = x / sqrt(mean(x^2) + eps) * weight over the last dimension.

The math runs in fp32 inside `ssmkit.ops.norms.rms_norm` (fp64 kept); the output has the input's dtype.
"""

from __future__ import annotations

import torch
from torch import nn

from ..ops._checks import check_float, check_tensor
from ..ops.norms import rms_norm


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
