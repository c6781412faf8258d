"""Weight initialization as in mamba_ssm (the GPT-2 scheme for pre-norm residual stacks).

- every Linear bias starts at zero, except those marked `_no_reinit` (Mamba's dt bias carries its time scales);
- embeddings ~ N(0, initializer_range);
- the projections that write into the residual stream (out_proj, o_proj, down_proj) are rescaled by
  1 / sqrt(residuals per layer * n_layer), so the stream's variance does not grow with depth.
Mixer-specific parameters (A_log, D, dt bias, S4D's A) keep the initialization their layer gave them.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .config import ModelConfig

RESIDUAL_OUTPUTS = ("out_proj.weight", "o_proj.weight", "down_proj.weight")


def init_weights(model: nn.Module, cfg: ModelConfig) -> None:
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Linear) and module.bias is not None:
                if not getattr(module.bias, "_no_reinit", False):
                    module.bias.zero_()
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, std=cfg.initializer_range)
        if not cfg.rescale_prenorm_residual:
            return
        residuals_per_layer = 2 if any(ch != "-" for ch in cfg.mlps) else 1
        scale = math.sqrt(residuals_per_layer * cfg.n_layer)
        for name, p in model.named_parameters():
            if name.endswith(RESIDUAL_OUTPUTS):
                nn.init.kaiming_uniform_(p, a=math.sqrt(5))
                p.div_(scale)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups: no weight decay on biases, norms, A_log, D, dt bias (anything 1-D or marked)."""
    decay, no_decay = [], []
    for p in model.parameters():
        if not p.requires_grad:
            continue
        if p.ndim < 2 or getattr(p, "_no_weight_decay", False):
            no_decay.append(p)
        else:
            decay.append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
