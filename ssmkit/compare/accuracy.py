"""Train one architecture on one task with the trainer, then score exact-match accuracy on held-out batches.

    run = train_and_score(config, "selective_copying", plan, seed=0, device="cpu", out_dir=".../runs/sc/mamba")
    run.evals[0].exact_match          # fraction of held-out examples with every answer right

Training batches come from the trainer's generator (seeded with `seed`); the held-out batches from their own
generator, seeded with `eval_seed(seed, i)` for the i-th evaluation setting, so they are never the training
batches and the same call scores the same examples. The trainer writes config.json, metrics.jsonl and the final
weights under `out_dir`; `score` can re-score those weights later.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from ..models.config import ModelConfig
from ..models.lm import LanguageModel
from ..tasks import Task, make_task
from ..training import NonFiniteLossError, TrainConfig, Trainer
from .settings import TaskPlan

_OOM = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)


@dataclass
class EvalResult:
    label: str
    seq_len: int
    examples: int
    exact_matches: int  # examples whose every answer the greedy (argmax) prediction got right
    answers: int
    correct_answers: int
    seed: int
    error: str | None = None  # why this setting could not be scored (out of memory at a long length)

    @property
    def exact_match(self) -> float | None:
        return None if self.error else self.exact_matches / self.examples

    @property
    def token_accuracy(self) -> float | None:
        return None if self.error else self.correct_answers / max(self.answers, 1)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "exact_match": self.exact_match, "token_accuracy": self.token_accuracy}


@dataclass
class TrainRun:
    task: str
    arch: str
    steps: int
    train_seconds: float
    first_loss: float | None
    final_loss: float | None  # mean of the last 10% of updates
    losses: list[float] = field(default_factory=list)  # every update's loss
    evals: list[EvalResult] = field(default_factory=list)
    error: str | None = None  # why training stopped early (then no evals)

    @property
    def accuracy(self) -> float | None:
        return self.evals[0].exact_match if self.evals else None

    @property
    def still_improving(self) -> bool:
        """The loss was still falling in the second half of training: the mean over the last 10% of updates is
        over 10% (and over 0.05) below the mean over the 10% that end at the midpoint. Such a run had not
        converged, so a low accuracy may say more about the budget than about the architecture. (A converged
        run's tiny loss may still halve; the absolute floor keeps it from counting.)"""
        n = max(1, len(self.losses) // 10)
        half = len(self.losses) // 2
        if half < n:
            return False
        last = sum(self.losses[-n:]) / n
        middle = sum(self.losses[half - n : half]) / n
        return last < 0.9 * middle and middle - last > 0.05


def eval_seed(seed: int, index: int) -> int:
    """The held-out batches' seed: far from the training seed, one per evaluation setting."""
    return 1_000_003 + 7919 * seed + index


def build_tasks(name: str, plan: TaskPlan) -> tuple[list[Task], list[tuple[str, Task]]]:
    train = [make_task(name, preset=plan.preset, **settings) for settings in plan.train]
    evals = [(label, make_task(name, preset=plan.preset, **settings)) for label, settings in plan.evals]
    return train, evals


def _batch_source(tasks: list[Task], batch_size: int) -> Any:
    if len(tasks) == 1:
        return tasks[0]
    return lambda step, generator: tasks[step % len(tasks)].sample(batch_size, generator)


def train_and_score(
    config: ModelConfig,
    task_name: str,
    plan: TaskPlan,
    *,
    arch: str,
    seed: int,
    device: str,
    steps: int | None = None,
    out_dir: str | None = None,
    progress: bool = False,
) -> TrainRun:
    train_tasks, eval_tasks = build_tasks(task_name, plan)
    steps = plan.steps if steps is None else steps
    torch.manual_seed(seed)  # the weights' initialization
    model = LanguageModel(config)
    train_config = TrainConfig(
        steps=steps,
        batch_size=plan.batch_size,
        lr=plan.lr,
        warmup_steps=min(plan.warmup_steps, steps // 10),
        weight_decay=plan.weight_decay,
        eval_every=0,  # scored once, after training, on more examples than a periodic evaluation would use
        log_every=max(1, steps // 50),
        seed=seed,
        device=device,
        out_dir=out_dir,
        progress=progress,
    )
    trainer = Trainer(model, _batch_source(train_tasks, plan.batch_size), train_config)
    start = time.perf_counter()
    error = None
    try:
        result = trainer.fit()
        losses = result.losses
    except NonFiniteLossError as exc:
        error, losses = str(exc), exc.result.losses
    seconds = time.perf_counter() - start
    tail = losses[-max(1, len(losses) // 10) :]
    run = TrainRun(
        task=task_name,
        arch=arch,
        steps=len(losses),
        train_seconds=seconds,
        first_loss=losses[0] if losses else None,
        final_loss=sum(tail) / len(tail) if tail else None,
        losses=losses,
        error=error,
    )
    if error is None:
        run.evals = score(trainer.model, eval_tasks, plan, seed)
    return run


@torch.no_grad()
def score(model: LanguageModel, eval_tasks: list[tuple[str, Task]], plan: TaskPlan, seed: int) -> list[EvalResult]:
    """Greedy exact match of `model` on `plan.eval_examples` held-out examples of each evaluation task."""
    was_training = model.training
    model.eval()
    device = model.embedding.weight.device
    try:
        return [
            _score_one(model, label, task, plan.eval_examples, plan.eval_batch_size, eval_seed(seed, i), device)
            for i, (label, task) in enumerate(eval_tasks)
        ]
    finally:
        model.train(was_training)


def _score_one(
    model: Callable[[torch.Tensor], torch.Tensor],
    label: str,
    task: Task,
    examples: int,
    batch_size: int,
    seed: int,
    device: torch.device,
) -> EvalResult:
    generator = torch.Generator().manual_seed(seed)
    exact = answers = correct = done = 0
    try:
        while done < examples:
            n = min(batch_size, examples - done)
            batch = task.sample(n, generator).to(device)
            scores = task.evaluate(model(batch.inputs), batch)
            exact += round(scores["exact_match"] * n)
            answers += int(scores["num_answers"])
            correct += round(scores["token_accuracy"] * scores["num_answers"])
            done += n
    except _OOM as exc:
        if device.type == "cuda":
            torch.cuda.empty_cache()
        reason = f"out of memory at batch {batch_size} x {task.seq_len} tokens: {str(exc).splitlines()[0]}"
        return EvalResult(label, task.seq_len, done, exact, answers, correct, seed, reason)
    return EvalResult(label, task.seq_len, examples, exact, answers, correct, seed)
