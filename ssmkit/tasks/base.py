"""The batch every task returns, the task base class, and the checks shared by the task configs.

    task = make_task("mqar", seq_len=128)            # a frozen, validated config that is also the sampler
    batch = task.sample(64, torch.Generator().manual_seed(0))
    batch.inputs                                     # (b, l) long, every id < task.vocab_size
    batch.targets                                    # (b, l) long, IGNORE_INDEX except at the answer positions
    loss = task.loss(model(batch.inputs), batch)     # next-token cross-entropy on the answers only
    task.evaluate(logits, batch)                     # {"exact_match", "token_accuracy", ...}

`targets[i, t]` is the token the model must emit at position t, i.e. the label of the logits at t, having seen
`inputs[i, :t+1]`. No shift is needed: loss = cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=-100).
Every example of a task has the same number k of answers, so their positions fit one (b, k) tensor.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100


@dataclass
class TaskBatch:
    """One batch of a synthetic task.

    inputs: (b, l) long token ids. targets: (b, l) long, IGNORE_INDEX except at `answer_positions`.
    answer_positions: (b, k) long, increasing along k. extras: task-specific metadata (named per task), e.g. where
    the data tokens, the needle or the queried fact sit; tests and analyses use it, training does not.
    """

    inputs: torch.Tensor
    targets: torch.Tensor
    answer_positions: torch.Tensor
    extras: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def answers(self) -> torch.Tensor:
        return self.targets.gather(1, self.answer_positions)  # (b, k)

    @property
    def answer_mask(self) -> torch.Tensor:
        return self.targets != IGNORE_INDEX  # (b, l) bool

    def to(self, device: torch.device | str) -> TaskBatch:
        return TaskBatch(
            inputs=self.inputs.to(device),
            targets=self.targets.to(device),
            answer_positions=self.answer_positions.to(device),
            extras={k: v.to(device) for k, v in self.extras.items()},
        )


class Task(ABC):
    """A synthetic task: a frozen dataclass of its settings that samples batches and scores logits.

    Subclasses are frozen dataclasses with a `seq_len` field (the length of `inputs`) and validate themselves in
    `__post_init__`. The vocabulary never depends on `seq_len`, so a model trained at one length can be evaluated
    at others: `task.sample(b, gen, seq_len=4 * task.seq_len)` or `task.with_seq_len(n)`.
    """

    name: ClassVar[str]
    # Named settings besides the class defaults ("small", CPU-sized); each maps field names to values.
    presets: ClassVar[dict[str, dict[str, Any]]] = {}
    seq_len: int

    @property
    @abstractmethod
    def vocab_size(self) -> int: ...

    @property
    @abstractmethod
    def num_answers(self) -> int:
        """k: answer positions per example."""

    @abstractmethod
    def token_names(self) -> list[str]:
        """A readable name for every id, in id order (len == vocab_size)."""

    @abstractmethod
    def _sample(self, batch_size: int, generator: torch.Generator) -> TaskBatch: ...

    @classmethod
    def from_preset(cls, preset: str = "small", **overrides: Any) -> Task:
        known = ["small", *cls.presets]
        if preset not in known:
            raise ValueError(f"{cls.name}: unknown preset {preset!r}; known presets: {', '.join(known)}")
        settings = {**cls.presets.get(preset, {}), **overrides}
        names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
        unknown = [k for k in settings if k not in names]
        if unknown:
            raise ValueError(f"{cls.name}: unknown setting(s) {', '.join(unknown)}; settings are: {', '.join(names)}")
        return cls(**settings)

    def with_seq_len(self, seq_len: int) -> Task:
        return dataclasses.replace(self, seq_len=seq_len)  # type: ignore[type-var]

    def sample(self, batch_size: int, generator: torch.Generator, *, seq_len: int | None = None) -> TaskBatch:
        """A batch on the generator's device; the same generator state gives the same batch."""
        check_int("batch_size", batch_size, 1)
        if not isinstance(generator, torch.Generator):
            raise TypeError(f"generator: expected a torch.Generator, got {type(generator).__name__}")
        task = self if seq_len is None or seq_len == self.seq_len else self.with_seq_len(seq_len)
        return task._sample(batch_size, generator)

    def loss(self, logits: torch.Tensor, batch: TaskBatch) -> torch.Tensor:
        self._check_logits(logits, batch)
        targets = batch.targets.to(logits.device)
        return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=IGNORE_INDEX)

    @torch.no_grad()
    def evaluate(self, logits: torch.Tensor, batch: TaskBatch) -> dict[str, float]:
        """Greedy (argmax) scoring of the answer positions.

        exact_match: fraction of examples whose every answer is right. token_accuracy: fraction of answers right.
        """
        self._check_logits(logits, batch)
        targets = batch.targets.to(logits.device)
        mask = targets != IGNORE_INDEX  # (b, l)
        correct = (logits.argmax(-1) == targets) & mask  # (b, l)
        exact = (correct | ~mask).all(dim=1)  # (b,)
        num_answers = int(mask.sum().item())
        return {
            "exact_match": exact.float().mean().item(),
            "token_accuracy": correct.sum().item() / max(num_answers, 1),
            "num_examples": float(targets.shape[0]),
            "num_answers": float(num_answers),
        }

    def decode(self, ids: torch.Tensor | Sequence[int]) -> str:
        """Space-joined token names of a 1-D id sequence (IGNORE_INDEX shows as `_`), for debugging."""
        names = self.token_names()
        values = ids.tolist() if isinstance(ids, torch.Tensor) else list(ids)
        return " ".join("_" if i == IGNORE_INDEX else names[i] for i in values)

    def _check_logits(self, logits: torch.Tensor, batch: TaskBatch) -> None:
        if not isinstance(logits, torch.Tensor):
            raise TypeError(f"logits: expected a torch.Tensor, got {type(logits).__name__}")
        b, l = batch.targets.shape
        if logits.dim() != 3 or tuple(logits.shape[:2]) != (b, l) or logits.shape[2] < self.vocab_size:
            raise ValueError(
                f"logits: expected shape (b, l, vocab) = ({b}, {l}, >= {self.vocab_size}), got {tuple(logits.shape)}"
            )


def check_int(name: str, value: object, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name}: expected an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} = {value} must be at least {minimum}")


def check_fits(task: str, seq_len: int, needed: int, what: str) -> None:
    if seq_len < needed:
        raise ValueError(f"{task}: seq_len = {seq_len} is too short: {what} needs seq_len >= {needed}")
