"""Typed model configuration: one dataclass, nested per-layer configs, JSON round trip, named presets.

`layer_pattern` letters choose each layer's token mixer (S S4D, M Mamba, D Mamba-2, A attention); `mlp_pattern`
letters choose what follows it in the same residual block (- nothing, G gated MLP, E mixture of experts). Both
are tiled to n_layer, so "MMMMAMMM" with "-E" is Jamba's 1-in-8 attention with MoE every other layer.
`shared_attention_every` > 0 adds a Zamba-style shared attention + MLP block, one set of weights applied before
every k-th layer.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import tempfile
from dataclasses import dataclass, field, fields
from typing import Any, get_type_hints

from ..layers.attention import AttentionConfig
from ..layers.mamba import MambaConfig
from ..layers.mamba2 import Mamba2Config
from ..layers.mlp import MLPConfig
from ..layers.moe import MoEConfig
from ..layers.s4d import S4DConfig

MIXER_LETTERS = {"S": "S4D", "M": "Mamba", "D": "Mamba2", "A": "Attention"}
MLP_LETTERS = {"-": "none", "G": "gated MLP", "E": "mixture of experts"}


@dataclass
class ModelConfig:
    d_model: int = 768
    n_layer: int = 24
    vocab_size: int = 50277
    pad_vocab_size_multiple: int = 8
    layer_pattern: str = "M"
    mlp_pattern: str = "-"
    shared_attention_every: int = 0
    norm_eps: float = 1e-5
    residual_in_fp32: bool = True
    tie_embeddings: bool = True
    initializer_range: float = 0.02
    rescale_prenorm_residual: bool = True
    s4d: S4DConfig = field(default_factory=S4DConfig)
    mamba: MambaConfig = field(default_factory=MambaConfig)
    mamba2: Mamba2Config = field(default_factory=Mamba2Config)
    attention: AttentionConfig = field(default_factory=AttentionConfig)
    mlp: MLPConfig = field(default_factory=MLPConfig)
    moe: MoEConfig = field(default_factory=MoEConfig)

    def __post_init__(self) -> None:
        hints = get_type_hints(type(self))
        for f in fields(self):  # nested configs may be given as plain dicts: ModelConfig(mamba={"d_state": 8})
            value = getattr(self, f.name)
            if isinstance(value, dict) and dataclasses.is_dataclass(hints[f.name]):
                setattr(self, f.name, _build(hints[f.name], value))
        for name in ("d_model", "n_layer", "vocab_size", "pad_vocab_size_multiple"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name}: expected a positive int, got {value!r}")
        _check_pattern("layer_pattern", self.layer_pattern, MIXER_LETTERS)
        _check_pattern("mlp_pattern", self.mlp_pattern, MLP_LETTERS)
        if not isinstance(self.shared_attention_every, int) or self.shared_attention_every < 0:
            raise ValueError(f"shared_attention_every: expected an int >= 0, got {self.shared_attention_every!r}")

    @property
    def padded_vocab_size(self) -> int:
        m = self.pad_vocab_size_multiple
        return math.ceil(self.vocab_size / m) * m

    @property
    def mixers(self) -> str:
        """The layer pattern tiled to n_layer: one letter per layer."""
        return _tile(self.layer_pattern, self.n_layer)

    @property
    def mlps(self) -> str:
        return _tile(self.mlp_pattern, self.n_layer)

    # ---- serialization -------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        return _build(cls, data)

    def to_json(self, path: str | os.PathLike | None = None) -> str:
        text = json.dumps(self.to_dict(), indent=2, default=_json_default)
        if path is not None:
            atomic_write_text(path, text + "\n")
        return text

    @classmethod
    def from_json(cls, text_or_path: str | os.PathLike) -> ModelConfig:
        text = str(text_or_path)
        if not text.lstrip().startswith("{"):
            with open(text_or_path) as f:
                text = f.read()
        return cls.from_dict(json.loads(text, parse_constant=_parse_constant))

    # ---- presets ---------------------------------------------------------------------------------------------
    @classmethod
    def from_name(cls, name: str, **overrides: Any) -> ModelConfig:
        """A preset with the published shapes, then overrides (nested configs as dicts: mamba={"d_state": 8})."""
        if name not in PRESETS:
            raise ValueError(f"unknown model name {name!r}; known: {', '.join(sorted(PRESETS))}")
        base = _merge(PRESETS[name], overrides)
        return cls.from_dict(base)

    def replace(self, **overrides: Any) -> ModelConfig:
        return ModelConfig.from_dict(_merge(self.to_dict(), overrides))


def _tile(pattern: str, n: int) -> str:
    return (pattern * (n // len(pattern) + 1))[:n]


def _check_pattern(name: str, pattern: str, letters: dict[str, str]) -> None:
    if not isinstance(pattern, str) or not pattern or any(ch not in letters for ch in pattern):
        known = ", ".join(f"{k} ({v})" for k, v in letters.items())
        raise ValueError(f"{name}: expected a non-empty string of the letters {known}; got {pattern!r}")


def _merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    out = json.loads(json.dumps(base, default=_json_default), parse_constant=_parse_constant)
    for key, value in overrides.items():
        if dataclasses.is_dataclass(value):
            value = dataclasses.asdict(value)
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = {**out[key], **value}
        else:
            out[key] = value
    return out


def _build(cls: type, data: dict[str, Any]):
    if not isinstance(data, dict):
        raise TypeError(f"{cls.__name__}: expected a dict of fields, got {type(data).__name__}")
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown field(s) {unknown}; known: {sorted(known)}")
    hints = get_type_hints(cls)
    kwargs = {}
    for key, value in data.items():
        hint = hints[key]
        if dataclasses.is_dataclass(hint) and isinstance(value, dict):
            value = _build(hint, value)
        elif isinstance(value, list):
            value = tuple(value)  # JSON has no tuples (dt_limit, A_init_range)
        kwargs[key] = value
    return cls(**kwargs)


def _json_default(obj: Any):
    raise TypeError(f"cannot serialize {type(obj).__name__} in a config")


def _parse_constant(name: str) -> float:
    return {"Infinity": math.inf, "-Infinity": -math.inf, "NaN": math.nan}[name]


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write via a temporary file in the same folder and rename, so a failed write leaves the old file intact."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".json")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _mamba(d_model: int, n_layer: int) -> dict[str, Any]:
    return {
        "d_model": d_model,
        "n_layer": n_layer,
        "vocab_size": 50277,
        "pad_vocab_size_multiple": 8,
        "layer_pattern": "M",
    }


def _mamba2(d_model: int, n_layer: int) -> dict[str, Any]:
    return {
        "d_model": d_model,
        "n_layer": n_layer,
        "vocab_size": 50277,
        "pad_vocab_size_multiple": 16,
        "layer_pattern": "D",
        "mamba2": {"d_state": 128, "headdim": 64, "ngroups": 1, "chunk_size": 256},
    }


# Published shapes: state-spaces/mamba-* and mamba2-* (GPT-NeoX tokenizer, vocab 50277), a GPT-2-small-sized
# transformer baseline, and small hybrids in the Jamba (1 attention in 8, MoE every other layer) and Zamba
# (one shared attention block) styles.
PRESETS: dict[str, dict[str, Any]] = {
    "mamba-130m": _mamba(768, 24),
    "mamba-370m": _mamba(1024, 48),
    "mamba-790m": _mamba(1536, 48),
    "mamba-1.4b": _mamba(2048, 48),
    "mamba-2.8b": _mamba(2560, 64),
    "mamba2-130m": _mamba2(768, 24),
    "mamba2-370m": _mamba2(1024, 48),
    "mamba2-780m": _mamba2(1536, 48),
    "mamba2-1.3b": _mamba2(2048, 48),
    "mamba2-2.7b": _mamba2(2560, 64),
    "transformer-130m": {
        "d_model": 768,
        "n_layer": 12,
        "vocab_size": 50277,
        "layer_pattern": "A",
        "mlp_pattern": "G",
        "attention": {"n_heads": 12},
        "mlp": {"d_hidden": 2048},
    },
    "jamba-tiny": {
        "d_model": 512,
        "n_layer": 8,
        "vocab_size": 32000,
        "layer_pattern": "MMMMAMMM",
        "mlp_pattern": "GE",
        "attention": {"n_heads": 8, "n_kv_heads": 2, "rotary": False},
        "moe": {"num_experts": 8, "top_k": 2},
    },
    "zamba-tiny": {
        "d_model": 512,
        "n_layer": 12,
        "vocab_size": 32000,
        "layer_pattern": "M",
        "shared_attention_every": 6,
        "attention": {"n_heads": 8},
    },
}
