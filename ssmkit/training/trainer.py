"""The training loop: AdamW with the model's parameter groups, warmup + cosine lr, clipping, autocast, metrics,
checkpoints and exact resume.

    trainer = Trainer(model, make_task("mqar"), TrainConfig(steps=2000, lr=3e-3, out_dir="runs/mqar"))
    result = trainer.fit()                   # result.losses (one per update), result.metrics (the last record)
    Trainer(model, task, cfg).fit(resume=True)   # after a crash: continues from out_dir's last checkpoint

Each update: lr from the schedule -> batch from `next_batch(step, generator)` -> forward under autocast ->
loss = loss_fn(outputs, targets) (+ model.aux_loss, the MoE load balancing, when the model has one) -> backward
-> clip the global grad norm -> AdamW step. The per-step loss and grad norm stay on the device until a record or
a checkpoint is due (no host sync per step); a non-finite loss or grad norm then stops the run with
NonFiniteLossError. Same seed and same batch source give the same losses on CPU, and a resumed run the same
losses as an uninterrupted one: checkpoints hold the weights, the optimizer, the step and every RNG state, and the
schedule is a function of the step alone.

out_dir gets config.json (train and model configs), metrics.jsonl (one JSON object per record: step, loss and
grad_norm averaged since the previous record, lr, tokens_per_s, aux_loss with MoE, eval_* after an evaluation)
and checkpoints/ (see checkpoint.py). A fresh run refuses an out_dir that already holds a checkpoint.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..models.config import atomic_write_text
from ..models.init import param_groups as default_param_groups
from .batches import Evaluator, as_batch_source, is_task, split_batch, task_evaluator
from .checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from .config import TrainConfig
from .progress import Progress
from .schedule import warmup_cosine_lr

IGNORE_INDEX = -100
METRICS_FILE = "metrics.jsonl"
CONFIG_FILE = "config.json"
LossFn = Callable[[Any, Any], torch.Tensor]
logger = logging.getLogger("ssmkit.training")


def cross_entropy_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over labelled positions: logits (b, l, vocab), targets (b, l) with -100 = ignore."""
    return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=IGNORE_INDEX)


@dataclass
class TrainResult:
    """steps: updates done. losses / aux_losses / grad_norms: one per update (losses without the aux loss).
    metrics: the last metrics record. evals: every evaluation, each with its "step"."""

    steps: int
    losses: list[float]
    aux_losses: list[float]
    grad_norms: list[float]
    metrics: dict[str, float] = field(default_factory=dict)
    evals: list[dict[str, float]] = field(default_factory=list)
    out_dir: str | None = None
    checkpoint: str | None = None


class NonFiniteLossError(FloatingPointError):
    """The loss or the grad norm of `step` (1-based) is NaN or infinite; `result` holds the run up to there."""

    def __init__(self, step: int, loss: float, grad_norm: float, result: TrainResult):
        super().__init__(
            f"step {step}: loss {loss}, grad norm {grad_norm}; training stopped (lower lr, or check the data)"
        )
        self.step, self.result = step, result


class Trainer:
    def __init__(
        self,
        model: nn.Module,
        batches: Any,
        config: TrainConfig | None = None,
        *,
        loss_fn: LossFn | None = None,
        evaluate: Evaluator | None = None,
    ):
        """batches: a callable next_batch(step, generator) -> (inputs, targets), or a task (`.sample`); a task
        without an `evaluate` given is scored by `task_evaluator` on config.eval_batches fixed batches.
        loss_fn(outputs, targets) -> 0-dim tensor; default `cross_entropy_loss`."""
        if not isinstance(model, nn.Module):
            raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
        config = TrainConfig() if config is None else config
        if not isinstance(config, TrainConfig):
            raise TypeError(f"config: expected a TrainConfig, got {type(config).__name__}")
        if loss_fn is not None and not callable(loss_fn):
            raise TypeError(f"loss_fn: expected a callable (outputs, targets) -> loss, got {type(loss_fn).__name__}")
        if evaluate is not None and not callable(evaluate):
            raise TypeError(f"evaluate: expected a callable (model) -> dict, got {type(evaluate).__name__}")
        self.config = cfg = config
        self.device = resolve_device(cfg.device)
        self.autocast_dtype = resolve_precision(cfg.precision, self.device)
        self.model = model.to(self.device)
        self.next_batch = as_batch_source(batches, cfg.batch_size)
        self.loss_fn = loss_fn or cross_entropy_loss
        if evaluate is None and is_task(batches) and callable(getattr(batches, "evaluate", None)):
            evaluate = task_evaluator(batches, cfg.batch_size, cfg.eval_batches, cfg.seed + 1, self.device)
        self.evaluate = evaluate
        make_groups = getattr(model, "param_groups", None)
        if not callable(make_groups):  # any nn.Module: no decay on 1-D and `_no_weight_decay` parameters
            make_groups = lambda weight_decay: default_param_groups(model, weight_decay)
        groups = make_groups(cfg.weight_decay)
        self.params = [p for g in groups for p in g["params"]]
        fused = True if self.device.type == "cuda" else None
        self.optimizer = torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, fused=fused)
        self.generator = torch.Generator().manual_seed(cfg.seed)  # draws every batch; CPU, so it checkpoints simply
        self.step = 0
        self.history: dict[str, list[float]] = {"loss": [], "aux_loss": [], "grad_norm": []}
        self.evals: list[dict[str, float]] = []
        self.metrics: dict[str, float] = {}
        self.checkpoint: Path | None = None
        self._pending: list[torch.Tensor] = []  # per update: (loss, aux_loss, grad_norm), still on the device

    # ---- the loop -------------------------------------------------------------------------------------------
    def fit(self, resume: bool = False) -> TrainResult:
        """Trains up to config.steps updates. resume=True first loads out_dir's last checkpoint, if it has one."""
        cfg = self.config
        out = Path(cfg.out_dir) if cfg.out_dir is not None else None
        if resume and out is None:
            raise ValueError("resume: needs config.out_dir (where the checkpoints are), got out_dir=None")
        found = latest_checkpoint(out) if out is not None else None
        if found is not None and not resume and self.step == 0:
            raise ValueError(
                f"out_dir: {out} already holds a checkpoint ({found.name}); pass resume=True to continue it, "
                "or give another out_dir"
            )
        if resume and found is not None:
            self._restore(found)
            logger.info("resumed from %s at step %d", found, self.step)
        elif self.step == 0:
            torch.manual_seed(cfg.seed)  # dropout, routing noise and the like
        if out is not None:
            out.mkdir(parents=True, exist_ok=True)
            atomic_write_text(out / CONFIG_FILE, json.dumps(self._configs(), indent=2) + "\n")
            _truncate_metrics(out / METRICS_FILE, self.step)

        progress = Progress(cfg.steps, self.step, cfg.progress)
        window_start, window_tokens = time.perf_counter(), 0
        last_record = int(self.metrics.get("step", self.step))  # a resumed run's first record spans the restart
        self.model.train()
        try:
            while self.step < cfg.steps:
                lr = warmup_cosine_lr(
                    self.step,
                    lr=cfg.lr,
                    total_steps=cfg.steps,
                    warmup_steps=cfg.warmup_steps,
                    min_lr_ratio=cfg.min_lr_ratio,
                )
                window_tokens += self._update(lr)
                self.step += 1
                progress.advance()
                last = self.step == cfg.steps
                do_eval = self.evaluate is not None and cfg.eval_every > 0 and (self.step % cfg.eval_every == 0 or last)
                do_log = do_eval or last or self.step % cfg.log_every == 0
                every = cfg.checkpoint_every
                do_save = out is not None and (last or (every > 0 and self.step % every == 0))
                if not (do_log or do_save):
                    continue
                self._sync()
                if do_log:
                    tokens_per_s = window_tokens / max(time.perf_counter() - window_start, 1e-9)
                    record = self._record(self.step - last_record, lr, tokens_per_s)
                    if do_eval:
                        scores = self.run_evaluation()
                        self.evals.append({"step": self.step, **scores})
                        record.update({f"eval_{k}": v for k, v in scores.items()})
                    if out is not None:
                        with open(out / METRICS_FILE, "a") as f:
                            f.write(json.dumps(record) + "\n")
                    progress.show(record, cfg.steps)
                    self.metrics, last_record = record, self.step
                if do_save:
                    self.save()
                window_start, window_tokens = time.perf_counter(), 0
        finally:
            progress.close()
        return self.result()

    def _update(self, lr: float) -> int:
        """One optimizer update; returns the number of input tokens."""
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        inputs, targets = split_batch(self.next_batch(self.step, self.generator))
        inputs, targets = _to_device(inputs, self.device), _to_device(targets, self.device)
        with self._autocast():
            outputs = self.model(inputs)
            loss = self.loss_fn(outputs, targets)
            aux = getattr(self.model, "aux_loss", None)
        if not isinstance(loss, torch.Tensor) or loss.dim() != 0:
            raise ValueError(f"loss_fn: expected a 0-dim tensor, got {getattr(loss, 'shape', type(loss).__name__)}")
        aux = aux.float() if isinstance(aux, torch.Tensor) else loss.new_zeros((), dtype=torch.float32)
        self.optimizer.zero_grad(set_to_none=True)
        (loss.float() + aux).backward()
        max_norm = self.config.grad_clip if self.config.grad_clip > 0 else math.inf
        grad_norm = nn.utils.clip_grad_norm_(self.params, max_norm)  # the norm before clipping
        self.optimizer.step()
        self._pending.append(torch.stack([loss.detach().float(), aux.detach(), grad_norm.detach().float()]))
        return inputs.numel() if isinstance(inputs, torch.Tensor) else 0

    def _sync(self) -> None:
        """Moves the pending per-update values to the history (one host sync); stops on a non-finite one."""
        if not self._pending:
            return
        rows = torch.stack(self._pending).tolist()  # (n, 3)
        self._pending.clear()
        first = self.step - len(rows)
        for loss, aux, grad_norm in rows:
            self.history["loss"].append(loss)
            self.history["aux_loss"].append(aux)
            self.history["grad_norm"].append(grad_norm)
        for i, (loss, aux, grad_norm) in enumerate(rows):
            if not all(math.isfinite(v) for v in (loss, aux, grad_norm)):
                raise NonFiniteLossError(first + i + 1, loss + aux, grad_norm, self.result())

    def _record(self, n: int, lr: float, tokens_per_s: float) -> dict[str, float]:
        """The metrics record of the last n updates."""
        mean = {k: sum(v[-n:]) / n for k, v in self.history.items()}
        record = {
            "step": self.step,
            "loss": mean["loss"],
            "lr": lr,
            "grad_norm": mean["grad_norm"],
            "tokens_per_s": tokens_per_s,
        }
        if any(self.history["aux_loss"][-n:]):
            record["aux_loss"] = mean["aux_loss"]
        return record

    def run_evaluation(self) -> dict[str, float]:
        """The evaluator's scores, in eval mode, without gradients, under the run's autocast."""
        if self.evaluate is None:
            raise ValueError("evaluate: this trainer has no evaluator (give evaluate=..., or a task as batches)")
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad(), self._autocast():
                scores = self.evaluate(self.model)
        finally:
            self.model.train(was_training)
        return {k: float(v) for k, v in scores.items()}

    def _autocast(self):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    # ---- checkpoints ----------------------------------------------------------------------------------------
    def save(self) -> Path:
        """Checkpoints the run as it stands into config.out_dir; returns the checkpoint folder."""
        if self.config.out_dir is None:
            raise ValueError("out_dir: a checkpoint needs config.out_dir, got None")
        self._sync()
        rng = {"torch": torch.get_rng_state(), "data": self.generator.get_state()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state_all()
        state = {
            "step": self.step,
            "optimizer": self.optimizer.state_dict(),
            "rng": rng,
            "history": {k: torch.tensor(v, dtype=torch.float64) for k, v in self.history.items()},
            "evals": self.evals,
            "metrics": self.metrics,
        }
        self.checkpoint = save_checkpoint(self.config.out_dir, self.step, self.model, state, self._configs())
        return self.checkpoint

    def _restore(self, path: Path) -> None:
        state, _ = load_checkpoint(path, self.model)
        self.optimizer.load_state_dict(state["optimizer"])
        self.step = int(state["step"])
        torch.set_rng_state(state["rng"]["torch"])
        self.generator.set_state(state["rng"]["data"])
        if self.device.type == "cuda" and len(state["rng"].get("cuda", [])) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])
        self.history = {k: v.tolist() for k, v in state["history"].items()}
        self.evals, self.metrics = list(state["evals"]), dict(state["metrics"])
        self._pending.clear()
        self.checkpoint = path

    def _configs(self) -> dict[str, Any]:
        model_config = getattr(self.model, "config", None)
        to_dict = getattr(model_config, "to_dict", None)
        return {"train": self.config.to_dict(), "model": to_dict() if callable(to_dict) else None}

    def result(self) -> TrainResult:
        return TrainResult(
            steps=self.step,
            losses=list(self.history["loss"]),
            aux_losses=list(self.history["aux_loss"]),
            grad_norms=list(self.history["grad_norm"]),
            metrics=dict(self.metrics),
            evals=list(self.evals),
            out_dir=self.config.out_dir,
            checkpoint=None if self.checkpoint is None else str(self.checkpoint),
        )


def train(
    model: nn.Module,
    batches: Any,
    config: TrainConfig | None = None,
    *,
    loss_fn: LossFn | None = None,
    evaluate: Evaluator | None = None,
    resume: bool = False,
) -> TrainResult:
    """Trainer(model, batches, config, loss_fn=..., evaluate=...).fit(resume=resume)."""
    return Trainer(model, batches, config, loss_fn=loss_fn, evaluate=evaluate).fit(resume=resume)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device: {name!r} asked for, but CUDA is not available here")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"device: {name!r} asked for, but there are {torch.cuda.device_count()} CUDA devices")
    return device


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype, or None for plain fp32."""
    if precision == "fp32" or (precision == "auto" and device.type != "cuda"):
        return None
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ValueError(f"precision: {precision!r} needs bf16, which this GPU does not support; use 'fp32'")
    return torch.bfloat16


def _to_device(x: Any, device: torch.device) -> Any:
    return x.to(device, non_blocking=True) if isinstance(x, torch.Tensor) else x


def _truncate_metrics(path: Path, step: int) -> None:
    """Keeps the records up to `step` (a resumed run rewrites what came after its checkpoint); none for step 0."""
    kept = []
    if step > 0 and path.is_file():
        kept = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line)["step"] <= step]
    atomic_write_text(path, "".join(line + "\n" for line in kept))
