"""Cost measurements of every architecture, as rows whose keys carry their units, plus the fitted slopes.

    costs = measure_costs({"mamba": config, ...}, scale, lengths=..., contexts=..., device="cpu")
    costs["forward"]      # rows: arch, length_tokens, forward_ms, peak_memory_bytes, ...
    costs["decode"]       # rows: arch, context_tokens, decode_ms_per_token, state_bytes, ...
    costs["slopes"]       # {"forward_time": {arch: slope}, "forward_memory": {arch: slope}}

The models are freshly initialized (speed and state size do not depend on the weights' values), in eval mode,
on `device`. See `costs.py` for how each number is taken.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict
from typing import Any

import torch

from ..models.config import ModelConfig
from ..models.lm import LanguageModel
from .costs import DecodeCostRow, ForwardCostRow, decode_cost, fit_loglog_slope, forward_cost
from .settings import Scale


def forward_row(arch: str, row: ForwardCostRow) -> dict[str, Any]:
    return {
        "arch": arch,
        "length_tokens": row.length,
        "batch_size": row.batch_size,
        "forward_ms": row.forward_ms,
        "forward_min_ms": row.forward_min_ms,
        "peak_memory_bytes": row.peak_bytes,
        "repeats": row.repeats,
        "device": row.device,
        "skipped": row.skipped,
    }


def decode_row(arch: str, row: DecodeCostRow) -> dict[str, Any]:
    data = asdict(row)
    return {
        "arch": arch,
        "context_tokens": data.pop("context"),
        **{k: v for k, v in data.items() if k not in ("state_bytes", "state_used_bytes")},
        "state_bytes": row.state_bytes,  # as allocated (a KV cache at its capacity)
        "state_used_bytes": row.state_used_bytes,  # a KV cache at its valid tokens
    }


@contextlib.contextmanager
def _quiet_profiler() -> Iterator[None]:
    """Drops the lines the Kineto profiler (the CPU peak-memory tracker) prints to stderr at every start and stop
    ("USDT: ... profiler_start"); every other line written to stderr meanwhile is passed on."""
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # a replaced sys.stderr (pytest's capture): nothing to filter
        yield
        return
    sys.stderr.flush()
    saved = os.dup(fd)
    with tempfile.TemporaryFile(mode="w+b") as sink:
        os.dup2(sink.fileno(), fd)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, fd)
            os.close(saved)
            sink.seek(0)
            kept = [line for line in sink.read().decode(errors="replace").splitlines(True) if "profiler_st" not in line]
            sys.stderr.write("".join(kept))


def slope(rows: list[dict[str, Any]], x: str, y: str, tail: int) -> float | None:
    """The log-log slope of y against x over the `tail` longest measured rows; None with fewer than 2."""
    points = [(r[x], r[y]) for r in rows if r[y] is not None and r[y] > 0]
    if len({p[0] for p in points}) < 2:
        return None
    xs, ys = zip(*points)
    return fit_loglog_slope(list(xs), list(ys), tail=max(2, min(tail, len(points))))


def measure_costs(
    configs: dict[str, ModelConfig],
    scale: Scale,
    *,
    lengths: Sequence[int],
    contexts: Sequence[int],
    device: str,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    forward: list[dict[str, Any]] = []
    decode: list[dict[str, Any]] = []
    slopes: dict[str, dict[str, float | None]] = {"forward_time": {}, "forward_memory": {}}
    for arch, config in configs.items():
        torch.manual_seed(0)
        model = LanguageModel(config).to(device).eval()
        log(f"  {arch}: forward at L = {', '.join(map(str, lengths))}")
        with _quiet_profiler():
            measured = forward_cost(
                model,
                list(lengths),
                batch_size=scale.forward_batch_size,
                repeats=scale.forward_repeats,
                time_budget_s=scale.cost_time_budget_s,
            )
        rows = [forward_row(arch, r) for r in measured]
        forward += rows
        slopes["forward_time"][arch] = slope(rows, "length_tokens", "forward_ms", scale.slope_tail)
        slopes["forward_memory"][arch] = slope(rows, "length_tokens", "peak_memory_bytes", scale.slope_tail)
        log(f"  {arch}: decode at context {', '.join(map(str, contexts))}")
        decode += [
            decode_row(arch, r)
            for r in decode_cost(
                model, list(contexts), steps=scale.decode_steps, time_budget_s=scale.cost_time_budget_s * 2
            )
        ]
        del model
    return {"forward": forward, "decode": decode, "slopes": slopes}
