"""The pre-norm residual block shared by every architecture.

    h = h + mixer(norm(h))          mixer: S4D | Mamba | Mamba2 | Attention
    h = h + mlp(norm2(h))           only when the block has a feed-forward (gated MLP or MoE)

The residual stream h stays fp32 when residual_in_fp32, whatever the layers' dtype.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..layers.norm import RMSNorm


class Block(nn.Module):
    def __init__(self, d_model: int, mixer: nn.Module, mlp: nn.Module | None, eps: float, device=None, dtype=None):
        super().__init__()
        self.norm = RMSNorm(d_model, eps=eps, device=device, dtype=dtype)
        self.mixer = mixer
        self.norm2 = RMSNorm(d_model, eps=eps, device=device, dtype=dtype) if mlp is not None else None
        self.mlp = mlp

    def _feedforward(self, h: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        if self.mlp is None:
            return h
        return h + self.mlp(self.norm2(h).to(dtype))

    def forward(self, h: torch.Tensor, state: Any = None, seq_idx: torch.Tensor | None = None):
        dtype = self.norm.weight.dtype
        y, state = self.mixer(self.norm(h).to(dtype), state, seq_idx=seq_idx)
        return self._feedforward(h + y, dtype), state

    def step(self, h_t: torch.Tensor, state: Any):
        dtype = self.norm.weight.dtype
        y, state = self.mixer.step(self.norm(h_t).to(dtype), state)
        return self._feedforward(h_t + y, dtype), state
