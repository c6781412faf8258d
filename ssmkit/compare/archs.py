"""The five architectures `ssmkit compare` puts side by side, and the search that matches their parameter counts.

    arch = ARCHITECTURES["mamba"]
    match = match_params(arch, target=66_000, vocab_size=18, n_layer=2, overrides=...)   # d_model within tolerance
    model = LanguageModel(match.config)

Each architecture is a `layer_pattern` (S S4D, M Mamba, D Mamba-2, A attention) with its feed-forward pattern and
the sub-layer settings that every scale shares; a scale fixes the depth, the state sizes and the target count.
The search walks d_model over the multiples an architecture allows (heads must divide d_model, Mamba-2's heads
must divide d_inner) and keeps the one whose non-embedding parameter count is nearest the target: the embedding
(tied with the output head) depends on the task's vocabulary, which ranges from 17 tokens to 8,192, so the
layers are what is matched; total counts are recorded beside. Models are built on the meta device to be
counted, so the search allocates nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from ..models.config import ModelConfig
from ..models.lm import LanguageModel


@dataclass(frozen=True)
class Architecture:
    """name: the CLI name. layer_pattern / mlp_pattern: tiled to n_layer (see ModelConfig). d_multiple: d_model
    is searched over its multiples. needs_attention: has a KV cache (decode cost grows with context)."""

    name: str
    label: str
    layer_pattern: str
    mlp_pattern: str = "-"
    d_multiple: int = 2
    description: str = ""

    @property
    def has_attention(self) -> bool:
        return "A" in self.layer_pattern

    @property
    def is_ssm(self) -> bool:
        return not self.has_attention


ARCHITECTURES: dict[str, Architecture] = {
    a.name: a
    for a in (
        Architecture("s4d", "S4D", "S", description="time-invariant diagonal SSM (S4D), GLU output"),
        Architecture("mamba", "Mamba", "M", description="selective SSM (S6) blocks"),
        Architecture("mamba2", "Mamba-2", "D", description="state-space duality (SSD) blocks"),
        Architecture("transformer", "Transformer", "A", "G", description="attention + gated MLP blocks"),
        Architecture("hybrid", "Hybrid", "MA", "-G", description="Mamba blocks with attention (+ gated MLP) blocks"),
    )
}


@dataclass(frozen=True)
class ParamMatch:
    arch: str
    d_model: int
    params: int  # non-embedding: what is matched
    target: int
    config: ModelConfig = field(compare=False)

    @property
    def total_params(self) -> int:
        return LanguageModel(self.config, device="meta").num_parameters()

    @property
    def relative_error(self) -> float:
        return (self.params - self.target) / self.target


def check_archs(names: list[str]) -> list[str]:
    """The names, in the order given, de-duplicated; a ValueError names an unknown one and the known ones."""
    if not names:
        raise ValueError(f"--archs: expected at least one architecture of {', '.join(ARCHITECTURES)}")
    unknown = [n for n in names if n not in ARCHITECTURES]
    if unknown:
        raise ValueError(f"--archs: unknown architecture(s) {', '.join(unknown)}; known: {', '.join(ARCHITECTURES)}")
    return list(dict.fromkeys(names))


def build_config(
    arch: Architecture, d_model: int, vocab_size: int, n_layer: int, overrides: dict[str, Any] | None = None
) -> ModelConfig:
    """The ModelConfig of `arch` at `d_model`; `overrides` holds the scale's nested settings (mamba={...}, ...)
    and may replace the patterns (e.g. a Jamba-like hybrid at larger scale)."""
    settings = {"layer_pattern": arch.layer_pattern, "mlp_pattern": arch.mlp_pattern, **(overrides or {})}
    return ModelConfig(d_model=d_model, n_layer=n_layer, vocab_size=vocab_size, **settings)


def count_params(config: ModelConfig) -> int:
    """Non-embedding parameters (the embedding, tied to the output head, excluded)."""
    return LanguageModel(config, device="meta").num_parameters(exclude_embedding=True)


def d_model_multiple(arch: Architecture, overrides: dict[str, Any] | None = None) -> int:
    """The step of the d_model search: heads must divide d_model unless head_dim is fixed (rotary needs an even
    head dim), and Mamba-2's heads (d_inner / headdim) must divide d_inner."""
    overrides = overrides or {}
    patterns = overrides.get("layer_pattern", arch.layer_pattern)
    step = arch.d_multiple
    attention = overrides.get("attention", {})
    if "A" in patterns and attention.get("head_dim") is None:  # head_dim = d_model / n_heads, and even (rotary)
        step = math.lcm(step, 2 * attention.get("n_heads", 8))
    if "D" in patterns:
        m2 = overrides.get("mamba2", {})
        headdim, expand = m2.get("headdim", 64), m2.get("expand", 2)
        step = math.lcm(step, headdim // math.gcd(headdim, expand))
    return step


def match_params(
    arch: Architecture,
    target: int,
    vocab_size: int,
    n_layer: int,
    overrides: dict[str, Any] | None = None,
    *,
    tolerance: float = 0.10,
    max_d_model: int = 8192,
) -> ParamMatch:
    """The d_model (a multiple of `d_model_multiple`) whose parameter count is nearest `target`.

    Architectures with a gated MLP then set its hidden width (a multiple of 8) for the d_model just below and just
    above the target, since d_model alone moves the count in steps of ~2 step/d_model (15% for a transformer at
    d_model 48); the MLP width is the usual free knob for matching. Raises ValueError when even the nearest
    misses the target by more than `tolerance` (relative), naming both.
    """
    if not isinstance(target, int) or isinstance(target, bool) or target <= 0:
        raise ValueError(f"target: expected a positive parameter count, got {target!r}")
    overrides = dict(overrides or {})
    step = d_model_multiple(arch, overrides)
    bracket: list[int] = []
    d = step
    while d <= max_d_model:  # the count grows with d_model: stop at the first one past the target
        bracket = [*bracket[-1:], d]
        if count_params(build_config(arch, d, vocab_size, n_layer, overrides)) >= target:
            break
        d += step
    has_mlp = "G" in build_config(arch, step, vocab_size, n_layer, overrides).mlps
    candidates = [
        (d, _mlp_width(arch, d, target, vocab_size, n_layer, overrides) if has_mlp else None) for d in bracket
    ]
    matches = []
    for d, hidden in candidates:
        settings = overrides if hidden is None else _with_hidden(overrides, hidden)
        config = build_config(arch, d, vocab_size, n_layer, settings)
        matches.append(ParamMatch(arch.name, d, count_params(config), target, config))
    # within 2% of the target, prefer the MLP closest to its usual width; else the nearest count
    close = [m for m in matches if abs(m.relative_error) <= 0.02]
    if has_mlp and close:
        best = min(close, key=lambda m: abs(math.log(m.config.mlp.d_hidden / (m.d_model * 8 / 3))))
    else:
        best = min(matches, key=lambda m: abs(m.params - target))
    if abs(best.relative_error) > tolerance:
        raise ValueError(
            f"{arch.name}: no d_model (multiple of {step}) gives {target:,} parameters within {tolerance:.0%}: "
            f"the nearest, d_model {best.d_model}, gives {best.params:,}"
        )
    return best


def _with_hidden(overrides: dict[str, Any], hidden: int) -> dict[str, Any]:
    return {**overrides, "mlp": {**overrides.get("mlp", {}), "d_hidden": hidden}}


def _mlp_width(
    arch: Architecture, d_model: int, target: int, vocab_size: int, n_layer: int, overrides: dict[str, Any]
) -> int:
    """The gated MLP's hidden width (a multiple of 8, from 8 to 8 d_model) that brings the count nearest `target`:
    the count is linear in the width, so two counts give the slope."""
    counts = {
        h: count_params(build_config(arch, d_model, vocab_size, n_layer, _with_hidden(overrides, h))) for h in (8, 16)
    }
    per_unit = (counts[16] - counts[8]) / 8
    hidden = 8 + (target - counts[8]) / per_unit
    return int(min(max(round(hidden / 8) * 8, 8), 8 * d_model))
