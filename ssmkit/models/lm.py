"""The language model: embedding -> residual blocks (+ optional shared attention) -> final norm -> LM head.

logits = model(input_ids)                    # (b, l) -> (b, l, vocab_size)
state = model.init_state(batch_size)         # per-layer recurrent states / KV caches
logits = model(prompt_ids, state=state)      # prefill: the state now holds the prompt
logits_t = model.step(token_ids, state)      # (b,) -> (b, vocab_size), one token, O(1) for SSM layers
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..layers.attention import Attention
from ..layers.mlp import GatedMLP
from ..layers.moe import MoE
from ..layers.norm import RMSNorm
from .block import Block
from .config import ModelConfig
from .init import init_weights, param_groups
from .registry import build_feedforward, build_mixer


@dataclass
class ModelState:
    """Everything a model carries between calls: one state per layer, one per shared-attention site."""

    layers: list[Any]
    shared: list[Any] = field(default_factory=list)
    seqlen: int = 0

    def nbytes(self) -> int:
        return sum(s.nbytes() for s in (*self.layers, *self.shared))


class LanguageModel(nn.Module):
    def __init__(self, config: ModelConfig, *, device=None, dtype=None):
        super().__init__()
        if not isinstance(config, ModelConfig):
            raise TypeError(f"config: expected a ModelConfig, got {type(config).__name__}")
        self.config = cfg = config
        kw = dict(device=device, dtype=dtype)
        self.embedding = nn.Embedding(cfg.padded_vocab_size, cfg.d_model, **kw)
        self.layers = nn.ModuleList(
            Block(
                cfg.d_model, build_mixer(cfg, letter, i, **kw), build_feedforward(cfg, ff, i, **kw), cfg.norm_eps, **kw
            )
            for i, (letter, ff) in enumerate(zip(cfg.mixers, cfg.mlps))
        )
        # Zamba-style: one attention + MLP block whose weights are shared by every site it is applied at
        self.shared_sites = (
            list(range(0, cfg.n_layer, cfg.shared_attention_every)) if cfg.shared_attention_every else []
        )
        self.shared = (
            Block(
                cfg.d_model,
                Attention(cfg.d_model, cfg.attention, **kw),
                GatedMLP(cfg.d_model, cfg.mlp, **kw),
                cfg.norm_eps,
                **kw,
            )
            if self.shared_sites
            else None
        )
        self.norm_f = RMSNorm(cfg.d_model, eps=cfg.norm_eps, **kw)
        self.lm_head = nn.Linear(cfg.d_model, cfg.padded_vocab_size, bias=False, **kw)
        init_weights(self, cfg)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.embedding.weight

    # ---- running ----------------------------------------------------------------------------------------
    def _check_ids(self, input_ids: torch.Tensor, ndim: int, layout: str) -> None:
        if not isinstance(input_ids, torch.Tensor):
            raise TypeError(f"input_ids: expected a torch.Tensor, got {type(input_ids).__name__}")
        if input_ids.dtype.is_floating_point or input_ids.dtype == torch.bool or input_ids.is_complex():
            raise TypeError(f"input_ids: expected an integer dtype, got {input_ids.dtype}")
        if input_ids.dim() != ndim:
            raise ValueError(f"input_ids: expected shape {layout}, got {tuple(input_ids.shape)}")
        if input_ids.numel() and (input_ids.min() < 0 or input_ids.max() >= self.config.vocab_size):
            raise ValueError(
                f"input_ids: expected token ids in [0, {self.config.vocab_size}), got range "
                f"[{int(input_ids.min())}, {int(input_ids.max())}]"
            )

    def _residual(self, x: torch.Tensor) -> torch.Tensor:
        return x.float() if self.config.residual_in_fp32 else x

    def _logits(self, h: torch.Tensor) -> torch.Tensor:
        dtype = self.lm_head.weight.dtype
        return self.lm_head(self.norm_f(h).to(dtype))[..., : self.config.vocab_size]

    def forward(
        self, input_ids: torch.Tensor, *, state: ModelState | None = None, seq_idx: torch.Tensor | None = None
    ) -> torch.Tensor:
        """input_ids (b, l) -> logits (b, l, vocab_size). With a state, continues from it and updates it."""
        self._check_ids(input_ids, 2, "(b, l)")
        h = self._residual(self.embedding(input_ids))  # (b, l, d_model)
        shared_i = 0
        for i, block in enumerate(self.layers):
            if self.shared is not None and i in self.shared_sites:
                s = None if state is None else state.shared[shared_i]
                h, s = self.shared(h, s, seq_idx)
                if state is not None:
                    state.shared[shared_i] = s
                shared_i += 1
            h, s = block(h, None if state is None else state.layers[i], seq_idx)
            if state is not None:
                state.layers[i] = s
        if state is not None:
            state.seqlen += input_ids.shape[1]
        return self._logits(h)

    def init_state(self, batch_size: int, device=None, dtype=None) -> ModelState:
        device = device or self.embedding.weight.device
        dtype = dtype or self.embedding.weight.dtype
        layers = [block.mixer.init_state(batch_size, device, dtype) for block in self.layers]
        shared = [self.shared.mixer.init_state(batch_size, device, dtype) for _ in self.shared_sites]
        return ModelState(layers, shared)

    def step(self, token_ids: torch.Tensor, state: ModelState) -> torch.Tensor:
        """One token per sequence: token_ids (b,) -> logits (b, vocab_size); the state advances in place."""
        self._check_ids(token_ids, 1, "(b,)")
        h = self._residual(self.embedding(token_ids))  # (b, d_model)
        shared_i = 0
        for i, block in enumerate(self.layers):
            if self.shared is not None and i in self.shared_sites:
                h, state.shared[shared_i] = self.shared.step(h, state.shared[shared_i])
                shared_i += 1
            h, state.layers[i] = block.step(h, state.layers[i])
        state.seqlen += 1
        return self._logits(h)

    # ---- generation (the generation package sits above models; imported on use) ----------------------------
    def generate(self, input_ids: torch.Tensor, max_new_tokens: int, **sampling) -> torch.Tensor:
        """(b, l) -> (b, l + new); sampling: temperature, top_k, top_p, eos_token_id, generator."""
        from ..generation import generate

        return generate(self, input_ids, max_new_tokens, **sampling)

    def stream(self, input_ids: torch.Tensor, max_new_tokens: int, **sampling):
        """Yields each new (b,) token as soon as it is sampled."""
        from ..generation import stream

        return stream(self, input_ids, max_new_tokens, **sampling)

    # ---- training helpers ------------------------------------------------------------------------------------
    @property
    def aux_loss(self) -> torch.Tensor | float:
        """Sum of the MoE load-balancing losses of the last forward (0.0 without MoE layers)."""
        losses = [m.aux_loss for m in self.modules() if isinstance(m, MoE) and m.aux_loss is not None]
        return torch.stack(losses).sum() if losses else 0.0

    def param_groups(self, weight_decay: float = 0.1) -> list[dict]:
        return param_groups(self, weight_decay)

    def num_parameters(self, exclude_embedding: bool = False) -> int:
        total = sum(p.numel() for p in self.parameters())
        return total - self.embedding.weight.numel() if exclude_embedding else total
