"""Training settings: one typed dataclass, validated on construction, with a JSON round trip.

cfg = TrainConfig(steps=2000, lr=3e-3, out_dir="runs/mamba")
cfg.to_json("train_config.json");  TrainConfig.from_json("train_config.json") == cfg
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from dataclasses import dataclass, fields
from typing import Any

from ..models.config import atomic_write_text

DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "fp32", "bf16")


@dataclass
class TrainConfig:
    """Every setting of a training run; defaults live here and nowhere else.

    steps: optimizer updates. lr: peak learning rate, reached after `warmup_steps` (linear), then a cosine down to
    lr * min_lr_ratio at `steps`. grad_clip: max global grad norm (0 = no clipping; the norm is reported either way).
    eval_every: steps between evaluations (0 = never), each over `eval_batches` batches. log_every: steps per
    metrics record. checkpoint_every: steps between checkpoints (0 = only at the end); checkpoints and
    metrics.jsonl need `out_dir` (None = write no files). device: "auto" (CUDA when present) | "cpu" | "cuda" |
    "cuda:N". precision: "auto" (bf16 autocast on CUDA, fp32 on CPU) | "fp32" | "bf16" (autocast; weights stay fp32).
    batch_size is used when the batch source is a task; a callable source picks its own batch size.
    """

    steps: int = 1000
    batch_size: int = 32
    lr: float = 1e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 100
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float = 1.0
    eval_every: int = 100
    eval_batches: int = 4
    log_every: int = 10
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"
    checkpoint_every: int = 0
    out_dir: str | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        _int("steps", self.steps, 1)
        _int("batch_size", self.batch_size, 1)
        _float("lr", self.lr, 0.0, inclusive=False)
        _float("min_lr_ratio", self.min_lr_ratio, 0.0, 1.0)
        _int("warmup_steps", self.warmup_steps, 0)
        _float("weight_decay", self.weight_decay, 0.0)
        if not isinstance(self.betas, (tuple, list)) or len(self.betas) != 2:
            raise ValueError(f"betas: expected two numbers in [0, 1), got {self.betas!r}")
        for b in self.betas:
            _float("betas", b, 0.0, 1.0, upper_open=True)
        self.betas = (float(self.betas[0]), float(self.betas[1]))
        _float("grad_clip", self.grad_clip, 0.0)
        _int("eval_every", self.eval_every, 0)
        _int("eval_batches", self.eval_batches, 1)
        _int("log_every", self.log_every, 1)
        _int("seed", self.seed, 0, 2**63 - 1)
        _int("checkpoint_every", self.checkpoint_every, 0)
        if not isinstance(self.device, str) or not (self.device in DEVICES or re.fullmatch(r"cuda:\d+", self.device)):
            raise ValueError(f"device: expected one of {', '.join(DEVICES)} or 'cuda:N', got {self.device!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision: expected one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if isinstance(self.out_dir, os.PathLike):
            self.out_dir = os.fspath(self.out_dir)
        if self.out_dir is not None and (not isinstance(self.out_dir, str) or not self.out_dir):
            raise ValueError(f"out_dir: expected a non-empty path or None, got {self.out_dir!r}")
        if not isinstance(self.progress, bool):
            raise ValueError(f"progress: expected a bool, got {self.progress!r}")
        for name in ("lr", "min_lr_ratio", "weight_decay", "grad_clip"):
            setattr(self, name, float(getattr(self, name)))

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["betas"] = list(self.betas)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        if not isinstance(data, dict):
            raise TypeError(f"TrainConfig: expected a dict of fields, got {type(data).__name__}")
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise ValueError(f"TrainConfig: unknown field(s) {unknown}; known: {known}")
        return cls(**data)

    def to_json(self, path: str | os.PathLike | None = None) -> str:
        text = json.dumps(self.to_dict(), indent=2)
        if path is not None:
            atomic_write_text(path, text + "\n")
        return text

    @classmethod
    def from_json(cls, text_or_path: str | os.PathLike) -> TrainConfig:
        text = str(text_or_path)
        if not text.lstrip().startswith("{"):
            with open(text_or_path) as f:
                text = f.read()
        return cls.from_dict(json.loads(text))

    def replace(self, **overrides: Any) -> TrainConfig:
        return dataclasses.replace(self, **overrides)


def _int(name: str, value: object, low: int, high: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name}: expected an int, got {value!r} ({type(value).__name__})")
    if value < low or (high is not None and value > high):
        bound = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise ValueError(f"{name}: expected an int {bound}, got {value}")


def _float(
    name: str,
    value: object,
    low: float,
    high: float | None = None,
    *,
    inclusive: bool = True,
    upper_open: bool = False,
) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name}: expected a finite number, got {value!r}")
    too_low = value < low if inclusive else value <= low
    too_high = high is not None and (value >= high if upper_open else value > high)
    if too_low or too_high:
        left = "[" if inclusive else "("
        right = "inf)" if high is None else f"{high})" if upper_open else f"{high}]"
        raise ValueError(f"{name}: expected a number in {left}{low}, {right}, got {value}")
