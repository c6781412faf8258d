"""Peer implementations measured in the same run, when installed (dev-only; the library never needs them).

Each builder returns a model with the same shapes as ours, or None with the reason it is unavailable.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn


@dataclass
class Peer:
    name: str
    model: nn.Module | None
    note: str


def transformers_mamba(d_model: int, n_layer: int, vocab_size: int) -> Peer:
    try:
        from transformers import MambaConfig, MambaForCausalLM
    except Exception as exc:  # not installed, or an incompatible version
        return Peer("transformers Mamba", None, f"unavailable: {type(exc).__name__}: {exc}")
    cfg = MambaConfig(
        vocab_size=vocab_size,
        hidden_size=d_model,
        num_hidden_layers=n_layer,
        state_size=16,
        expand=2,
        conv_kernel=4,
        use_mambapy=False,
    )
    return Peer("transformers Mamba", MambaForCausalLM(cfg).eval(), "MambaForCausalLM, PyTorch path")


def transformers_mamba2(d_model: int, n_layer: int, vocab_size: int) -> Peer:
    try:
        from transformers import Mamba2Config, Mamba2ForCausalLM
    except Exception as exc:
        return Peer("transformers Mamba2", None, f"unavailable: {type(exc).__name__}: {exc}")
    head_dim = 64
    cfg = Mamba2Config(
        vocab_size=vocab_size,
        hidden_size=d_model,
        num_hidden_layers=n_layer,
        state_size=128,
        expand=2,
        head_dim=head_dim,
        num_heads=2 * d_model // head_dim,
        n_groups=1,
        chunk_size=256,
    )
    return Peer("transformers Mamba2", Mamba2ForCausalLM(cfg).eval(), "Mamba2ForCausalLM, PyTorch path")


class _MambapyLM(nn.Module):
    """mambapy's Mamba stack between an embedding and an LM head (its own LM class needs mamba_ssm for Mamba-2)."""

    def __init__(self, backbone: nn.Module, d_model: int, vocab_size: int):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, d_model)
        self.backbone = backbone
        self.lm_head = nn.Linear(d_model, vocab_size, bias=False)

    def forward(self, input_ids):
        return self.lm_head(self.backbone(self.embedding(input_ids)))


def mambapy_mamba(d_model: int, n_layer: int, vocab_size: int) -> Peer:
    try:
        from mambapy.mamba import Mamba, MambaConfig
    except Exception as exc:
        return Peer("mambapy Mamba", None, f"unavailable: {type(exc).__name__}: {exc}")
    cfg = MambaConfig(d_model=d_model, n_layers=n_layer, d_state=16, expand_factor=2, d_conv=4, pscan=True)
    model = _MambapyLM(Mamba(cfg), d_model, vocab_size).eval()
    return Peer("mambapy Mamba", model, "mambapy Mamba (parallel scan) with embedding and head")
