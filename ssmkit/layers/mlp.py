"""Gated MLP (SwiGLU by default): y = down_proj(act(gate_proj(x)) * up_proj(x)).

Glossary: d_model <-> d, d_hidden <-> the MLP's inner width (HF `intermediate_size`).
Parameter names follow Hugging Face Llama/Jamba (gate_proj, up_proj, down_proj) so checkpoints map by name.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..ops._checks import check_float, check_tensor

ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "silu": F.silu,
    "gelu": F.gelu,
    "gelu_tanh": functools.partial(F.gelu, approximate="tanh"),
    "relu": F.relu,
}


@dataclass
class MLPConfig:
    """d_hidden=None: hidden_mult * d_model rounded up to a multiple of `multiple_of` (8/3 keeps the
    parameter count of a 4x ungated MLP)."""

    d_hidden: int | None = None
    hidden_mult: float = 8 / 3
    multiple_of: int = 64
    activation: str = "silu"
    bias: bool = False

    def __post_init__(self) -> None:
        if self.d_hidden is not None and (not isinstance(self.d_hidden, int) or self.d_hidden <= 0):
            raise ValueError(f"d_hidden: expected a positive int or None, got {self.d_hidden!r}")
        if not self.hidden_mult > 0:
            raise ValueError(f"hidden_mult: expected a positive number, got {self.hidden_mult!r}")
        if not isinstance(self.multiple_of, int) or self.multiple_of <= 0:
            raise ValueError(f"multiple_of: expected a positive int, got {self.multiple_of!r}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation: expected one of {sorted(ACTIVATIONS)}, got {self.activation!r}")

    def hidden_size(self, d_model: int) -> int:
        if self.d_hidden is not None:
            return self.d_hidden
        # round() first: float noise (64.00000000001) must not add a whole extra multiple
        raw = round(self.hidden_mult * d_model, 6)
        return self.multiple_of * math.ceil(raw / self.multiple_of)


class GatedMLP(nn.Module):
    """Position-wise gated MLP; works on any leading shape (..., d_model)."""

    def __init__(
        self,
        d_model: int,
        config: MLPConfig | None = None,
        *,
        layer_idx: int = 0,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(d_model, int) or d_model <= 0:
            raise ValueError(f"d_model: expected a positive int, got {d_model!r}")
        self.config = config = config if config is not None else MLPConfig()
        self.d_model = d_model
        self.d_hidden = config.hidden_size(d_model)
        self.layer_idx = layer_idx
        self.act = ACTIVATIONS[config.activation]
        kw = {"bias": config.bias, "device": device, "dtype": dtype}
        self.gate_proj = nn.Linear(d_model, self.d_hidden, **kw)
        self.up_proj = nn.Linear(d_model, self.d_hidden, **kw)
        self.down_proj = nn.Linear(self.d_hidden, d_model, **kw)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_tensor("x", x)
        check_float("x", x)
        if x.dim() == 0 or x.shape[-1] != self.d_model:
            raise ValueError(f"x: expected shape (..., d_model) = (..., {self.d_model}), got {tuple(x.shape)}")
        h = self.act(self.gate_proj(x)) * self.up_proj(x)  # (..., d_hidden)
        return self.down_proj(h)  # (..., d_model)
