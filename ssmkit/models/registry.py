"""Layer letters -> constructors. Adding a mixer: one file in ssmkit/layers and one entry here."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from ..layers.attention import Attention
from ..layers.mamba import Mamba
from ..layers.mamba2 import Mamba2
from ..layers.mlp import GatedMLP
from ..layers.moe import MoE
from ..layers.s4d import S4D
from .config import ModelConfig

MixerFactory = Callable[..., nn.Module]

MIXERS: dict[str, MixerFactory] = {
    "S": lambda cfg, i, **kw: S4D(cfg.d_model, cfg.s4d, layer_idx=i, **kw),
    "M": lambda cfg, i, **kw: Mamba(cfg.d_model, cfg.mamba, layer_idx=i, **kw),
    "D": lambda cfg, i, **kw: Mamba2(cfg.d_model, cfg.mamba2, layer_idx=i, **kw),
    "A": lambda cfg, i, **kw: Attention(cfg.d_model, cfg.attention, layer_idx=i, **kw),
}

FEEDFORWARDS: dict[str, MixerFactory | None] = {
    "-": None,
    "G": lambda cfg, i, **kw: GatedMLP(cfg.d_model, cfg.mlp, layer_idx=i, **kw),
    "E": lambda cfg, i, **kw: MoE(cfg.d_model, cfg.moe, layer_idx=i, **kw),
}


def build_mixer(cfg: ModelConfig, letter: str, layer_idx: int, **kw) -> nn.Module:
    return MIXERS[letter](cfg, layer_idx, **kw)


def build_feedforward(cfg: ModelConfig, letter: str, layer_idx: int, **kw) -> nn.Module | None:
    factory = FEEDFORWARDS[letter]
    return None if factory is None else factory(cfg, layer_idx, **kw)
