"""Batch sources and evaluators the trainer accepts, whatever produces the data.

A batch source is a callable `next_batch(step, generator) -> (inputs, targets)` (a TaskBatch-like object with
`.inputs` and `.targets` is accepted too). `step` is the 0-based update index; `generator` is the trainer's CPU
torch.Generator, saved in checkpoints, so drawing every random number from it makes a resumed run see the same
batches. A task (anything with `sample(batch_size, generator)`, e.g. `ssmkit.tasks.make_task(...)`) is turned into
one by `as_batch_source`. An evaluator is a callable `evaluate(model) -> {name: float}`; the trainer runs it in eval
mode, without gradients, under the run's autocast.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

Batch = tuple[torch.Tensor, Any]
BatchSource = Callable[[int, torch.Generator], Any]
Evaluator = Callable[[nn.Module], dict[str, float]]


def is_task(source: object) -> bool:
    return callable(getattr(source, "sample", None))


def as_batch_source(source: object, batch_size: int) -> BatchSource:
    if is_task(source):
        return lambda step, generator: source.sample(batch_size, generator)
    if callable(source):
        return source
    raise TypeError(
        f"batches: expected a callable next_batch(step, generator) -> (inputs, targets) or a task with "
        f".sample(batch_size, generator), got {type(source).__name__}"
    )


def split_batch(batch: object) -> Batch:
    """(inputs, targets) from a pair or from an object with `.inputs` and `.targets` (a TaskBatch)."""
    if hasattr(batch, "inputs") and hasattr(batch, "targets"):
        return batch.inputs, batch.targets
    if isinstance(batch, (tuple, list)) and len(batch) == 2:
        return batch[0], batch[1]
    raise TypeError(f"next_batch: expected (inputs, targets) or a TaskBatch, got {type(batch).__name__}")


def task_evaluator(task: Any, batch_size: int, num_batches: int, seed: int, device: torch.device | str) -> Evaluator:
    """Scores the model on the same `num_batches` task batches at every call (their own generator, `seed`).

    Returns the mean over batches of "loss" and of every `task.evaluate` metric (counts named num_* are summed).
    """

    def evaluate(model: nn.Module) -> dict[str, float]:
        generator = torch.Generator().manual_seed(seed)
        totals: dict[str, float] = {}
        for _ in range(num_batches):
            batch = task.sample(batch_size, generator).to(device)
            logits = model(batch.inputs)  # (b, l, vocab)
            scores = {"loss": task.loss(logits, batch).item(), **task.evaluate(logits, batch)}
            for name, value in scores.items():
                totals[name] = totals.get(name, 0.0) + float(value)
        return {k: v if k.startswith("num_") else v / num_batches for k, v in totals.items()}

    return evaluate


def token_windows(tokens: torch.Tensor, seq_len: int, batch_size: int) -> BatchSource:
    """Language modelling on one long 1-D tensor of token ids: random windows, targets = inputs shifted by one."""
    if not isinstance(tokens, torch.Tensor) or tokens.dim() != 1 or tokens.dtype.is_floating_point:
        raise ValueError(f"tokens: expected a 1-D integer tensor, got {getattr(tokens, 'shape', type(tokens))}")
    for name, value in (("seq_len", seq_len), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}: expected an int >= 1, got {value!r}")
    if tokens.numel() < seq_len + 1:
        raise ValueError(f"tokens: expected at least seq_len + 1 = {seq_len + 1} tokens, got {tokens.numel()}")

    def next_batch(step: int, generator: torch.Generator) -> Batch:
        starts = torch.randint(0, tokens.numel() - seq_len, (batch_size,), generator=generator)  # (b,)
        index = starts[:, None] + torch.arange(seq_len + 1)  # (b, l + 1)
        window = tokens[index].long()  # (b, l + 1)
        return window[:, :-1], window[:, 1:]

    return next_batch
