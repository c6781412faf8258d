"""`ssmkit compare` end to end: validate the options, match parameter counts, train and score every (task,
architecture), measure costs, check the seed claims, and write the report folder atomically.

    options = CompareOptions(out="compare-report")          # the defaults: cpu scale, selective copying + needle
    results = run_compare(options)                          # also written to out/results.json, report.md, *.png

Every option is checked before any training starts; a bad one raises ValueError (the CLI exits with status 2).
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from ..bench.report import device_name, git_commit
from ..tasks import TASKS
from ..training.trainer import resolve_device
from .accuracy import build_tasks, train_and_score
from .archs import ARCHITECTURES, ParamMatch, check_archs, match_params
from .claims import check_claims
from .measure import measure_costs
from .output import MARKER, check_out_dir, staging, write_json
from .plots import write_plots
from .report import render
from .settings import DEFAULT_TASKS, SCALES, Scale, TaskPlan

DEVICES = ("auto", "cpu", "cuda")


@dataclass
class CompareOptions:
    """threads: torch CPU threads for training and timing (None: 1 on CPU, where timings with more threads on a
    shared machine are unreliable; unchanged on CUDA). steps / seq_len: override every selected task's training
    steps / training length. lengths / contexts: override the scale's forward lengths / decode contexts."""

    out: str
    tasks: Sequence[str] = DEFAULT_TASKS
    archs: Sequence[str] = tuple(ARCHITECTURES)
    scale: str = "cpu"
    device: str = "auto"
    steps: int | None = None
    seed: int = 0
    threads: int | None = None
    seq_len: int | None = None
    lengths: Sequence[int] | None = None
    contexts: Sequence[int] | None = None
    skip_training: bool = False
    skip_costs: bool = False
    quick: bool = False
    progress: bool = False
    command: str = "ssmkit compare"


@dataclass
class Resolved:
    scale: Scale
    tasks: list[str]
    archs: list[str]
    plans: dict[str, TaskPlan]
    device: str
    threads: int
    lengths: list[int]
    contexts: list[int]
    matches: dict[str, dict[str, ParamMatch]] = field(default_factory=dict)  # purpose -> arch -> match


def _positive_ints(name: str, values: Sequence[int] | None, minimum: int, distinct: int) -> list[int] | None:
    if values is None:
        return None
    values = list(values)
    if any(isinstance(v, bool) or not isinstance(v, int) or v < minimum for v in values):
        raise ValueError(f"{name}: expected integers >= {minimum}, got {values}")
    if len(set(values)) < distinct:
        raise ValueError(f"{name}: expected at least {distinct} different values, got {values}")
    return sorted(set(values))


def _check_int(name: str, value: int | None, minimum: int) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < minimum):
        raise ValueError(f"{name}: expected an integer >= {minimum}, got {value!r}")


def resolve(options: CompareOptions) -> Resolved:
    """Checks every option and builds every task and model config once, so errors come before any work."""
    scale_name = "quick" if options.quick else options.scale
    if scale_name not in SCALES:
        raise ValueError(f"--scale: unknown scale {scale_name!r}; known: {', '.join(SCALES)}")
    scale = SCALES[scale_name]
    tasks = list(dict.fromkeys(options.tasks))
    unknown = [t for t in tasks if t not in TASKS]
    if unknown or not tasks:
        raise ValueError(f"--tasks: unknown task(s) {', '.join(unknown) or '(none given)'}; known: {', '.join(TASKS)}")
    archs = check_archs(list(options.archs))
    if options.device not in DEVICES:
        raise ValueError(f"--device: expected one of {', '.join(DEVICES)}, got {options.device!r}")
    device = resolve_device(options.device).type  # a ValueError when cuda is asked for and absent
    for name, value, minimum in (
        ("--steps", options.steps, 1),
        ("--seed", options.seed, 0),
        ("--threads", options.threads, 1),
        ("--seq-len", options.seq_len, 1),
    ):
        _check_int(name, value, minimum)
    if options.skip_training and options.skip_costs:
        raise ValueError("--skip-training and --skip-costs together leave nothing to run")
    check_out_dir(options.out)
    lengths = _positive_ints("--lengths", options.lengths, 1, 2) or list(scale.forward_lengths)
    contexts = _positive_ints("--contexts", options.contexts, 1, 1) or list(scale.decode_contexts)
    plans = {}
    for task in tasks:
        plan = scale.tasks[task]
        if options.steps is not None:
            plan = dataclasses.replace(plan, steps=options.steps)
        if options.seq_len is not None:  # the training length and the headline evaluation
            train = tuple({**s, "seq_len": options.seq_len} for s in plan.train)
            label, first = plan.evals[0]
            evals = ((label, {**first, "seq_len": options.seq_len}), *plan.evals[1:])
            plan = dataclasses.replace(plan, train=train, evals=evals)
        try:
            build_tasks(task, plan)
        except ValueError as exc:
            raise ValueError(f"--seq-len / --scale {scale.name}: {exc}") from exc
        plans[task] = plan
    threads = options.threads or (1 if device == "cpu" else torch.get_num_threads())
    resolved = Resolved(scale, tasks, archs, plans, device, threads, lengths, contexts)
    purposes = {} if options.skip_training else {t: build_tasks(t, plans[t])[0][0].vocab_size for t in tasks}
    if not options.skip_costs:
        purposes["costs"] = scale.cost_vocab
    for purpose, vocab in purposes.items():
        resolved.matches[purpose] = {a: _match(scale, a, vocab) for a in archs}
    return resolved


def _match(scale: Scale, arch: str, vocab_size: int) -> ParamMatch:
    overrides = {**scale.model, **scale.arch_overrides.get(arch, {})}
    n_layer = overrides.pop("n_layer", scale.n_layer)
    return match_params(
        ARCHITECTURES[arch], scale.target_params, vocab_size, n_layer, overrides, tolerance=scale.param_tolerance
    )


def _log_to_stdout(line: str) -> None:
    print(line, flush=True)


def run_compare(options: CompareOptions, log: Callable[[str], None] = _log_to_stdout) -> dict[str, Any]:
    start = time.perf_counter()
    r = resolve(options)
    torch.set_num_threads(r.threads)
    log(
        f"ssmkit compare: scale {r.scale.name}, tasks {', '.join(r.tasks)}, architectures {', '.join(r.archs)}, "
        f"device {r.device}, {r.threads} thread(s), seed {options.seed}"
    )
    if r.scale.name == "paper" and r.device == "cpu":
        log("  note: the paper scale trains at L = 4096 for 20,000 steps: hours to days on a CPU; use --device cuda")
    for purpose, row in r.matches.items():
        log(f"  params ({purpose}): " + ", ".join(f"{a} {m.params:,} (d_model {m.d_model})" for a, m in row.items()))
    with staging(options.out) as tmp:
        runs = [] if options.skip_training else _train_all(r, options, tmp, log, start)
        costs = None
        if not options.skip_costs:
            log(
                f"measuring costs: forward at {len(r.lengths)} lengths, decode at {len(r.contexts)} contexts "
                f"(at {time.perf_counter() - start:.0f} s)"
            )
            configs = {a: m.config for a, m in r.matches["costs"].items()}
            costs = measure_costs(configs, r.scale, lengths=r.lengths, contexts=r.contexts, device=r.device, log=log)
        results = _results(r, options, runs, costs)
        results["meta"]["wall_time_s"] = time.perf_counter() - start
        results["plots"] = write_plots(results, tmp)
        write_json(os.path.join(tmp, "results.json"), results)
        with open(os.path.join(tmp, "report.md"), "w") as f:
            f.write(render(results))
    log(
        f"wrote {options.out}: report.md, results.json, {', '.join(results['plots']) or 'no plots'} "
        f"({results['meta']['wall_time_s']:.0f} s)"
    )
    for claim in results["claims"]:
        log(f"  {claim['status']:>14}: {claim['id']} ({claim['measured']})")
    return results


def _train_all(r: Resolved, options: CompareOptions, tmp: str, log: Callable[[str], None], start: float) -> list:
    runs = []
    total = len(r.tasks) * len(r.archs)
    for task in r.tasks:
        plan = r.plans[task]
        for arch in r.archs:
            match = r.matches[task][arch]
            at = time.perf_counter() - start
            log(
                f"[{len(runs) + 1}/{total}] {task} / {arch}: {plan.steps} steps, {match.params:,} params, at {at:.0f} s"
            )
            run = train_and_score(
                match.config,
                task,
                plan,
                arch=arch,
                seed=options.seed,
                device=r.device,
                out_dir=os.path.join(tmp, "runs", task, arch),
                progress=options.progress,
            )
            scores = ", ".join(_score_text(e) for e in run.evals) or f"failed: {run.error}"
            loss = "" if run.first_loss is None else f", loss {run.first_loss:.3f} -> {run.final_loss:.4f}"
            log(f"    {run.train_seconds:.1f} s{loss}; exact match {scores}")
            runs.append(run)
    return runs


def _score_text(e) -> str:
    return f"{e.label} {e.exact_match:.1%}" if e.error is None else f"{e.label} not scored ({e.error})"


def _results(r: Resolved, options: CompareOptions, runs: list, costs: dict[str, Any] | None) -> dict[str, Any]:
    accuracy: dict[str, dict[str, float | None]] = {t: {} for t in r.tasks} if runs else {}
    by_setting: dict[str, dict[str, dict[str, float]]] = {t: {} for t in r.tasks} if runs else {}
    claim_input: dict[str, dict[str, Any]] = {t: {} for t in r.tasks}
    evaluations, training = [], []
    for run in runs:
        accuracy[run.task][run.arch] = run.accuracy
        by_setting[run.task][run.arch] = {e.label: e.exact_match for e in run.evals}
        claim_input[run.task][run.arch] = {
            "accuracy": run.accuracy,
            "by_setting": by_setting[run.task][run.arch],
            "still_improving": run.still_improving,
        }
        evaluations += [{"task": run.task, "arch": run.arch, **e.to_dict()} for e in run.evals]
        every = max(1, len(run.losses) // 100)
        training.append(
            {
                "task": run.task,
                "arch": run.arch,
                "steps": run.steps,
                "train_seconds": run.train_seconds,
                "first_loss": run.first_loss,
                "final_loss": run.final_loss,
                "still_improving": run.still_improving,
                "error": run.error,
                "loss_every_steps": every,
                "losses": run.losses[::every],
            }
        )
    scale = r.scale
    return {
        "generator": MARKER,
        "schema": 1,
        "scale": scale.name,
        "tasks": r.tasks,
        "archs": r.archs,
        "labels": {a: ARCHITECTURES[a].label for a in r.archs},
        "seed": options.seed,
        "accuracy": accuracy,
        "accuracy_by_setting": by_setting,
        "evaluations": evaluations,
        "training": training,
        "param_counts": {
            purpose: {
                a: {
                    "params": m.params,
                    "total_params": m.total_params,
                    "d_model": m.d_model,
                    "target": m.target,
                    "relative_error": m.relative_error,
                }
                for a, m in row.items()
            }
            for purpose, row in r.matches.items()
        },
        "configs": {purpose: {a: m.config.to_dict() for a, m in row.items()} for purpose, row in r.matches.items()},
        "config": {
            "description": scale.description,
            "target_params": scale.target_params,
            "param_tolerance": scale.param_tolerance,
            "patterns": {a: _pattern(m) for a, m in next(iter(r.matches.values()), {}).items()},
            "tasks": {t: _plan_dict(t, r.plans[t]) for t in r.tasks},
            "forward_lengths": r.lengths,
            "decode_contexts": r.contexts,
            "forward_batch_size": scale.forward_batch_size,
            "forward_repeats": scale.forward_repeats,
            "decode_steps": scale.decode_steps,
            "slope_tail": scale.slope_tail,
            "cost_vocab": scale.cost_vocab,
        },
        "costs": costs,
        "claims": check_claims(claim_input, costs),
        "meta": {
            "command": options.command,
            "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "commit": git_commit(),
            "device": r.device,
            "device_name": device_name() if r.device == "cuda" else f"CPU {platform.machine()}, {os.cpu_count()} cores",
            "threads": r.threads,
            "torch": torch.__version__,
            "python": sys.version.split()[0],
        },
    }


def _plan_dict(task: str, plan: TaskPlan) -> dict[str, Any]:
    """The plan, with every field of the tasks trained on spelled out (the preset's and the class defaults too)."""
    train, _ = build_tasks(task, plan)
    return {**dataclasses.asdict(plan), "train_tasks": [dataclasses.asdict(t) for t in train]}


def _pattern(match: ParamMatch) -> str:
    """The layer letters with a G after each block that has a gated MLP: 'MAG' is Mamba, then attention + MLP."""
    cfg = match.config
    return "".join(m + ("" if f == "-" else f) for m, f in zip(cfg.mixers, cfg.mlps))
