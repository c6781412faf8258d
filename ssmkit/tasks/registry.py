"""The task registry: names to task classes, and `make_task` to build one from a preset plus overrides."""

from __future__ import annotations

from typing import Any

from .base import Task
from .fact_recall import FactRecall
from .induction_heads import InductionHeads
from .mqar import MQAR
from .needle import Needle
from .selective_copying import SelectiveCopying

TASKS: dict[str, type[Task]] = {cls.name: cls for cls in (SelectiveCopying, InductionHeads, MQAR, Needle, FactRecall)}


def make_task(name: str, *, preset: str = "small", **overrides: Any) -> Task:
    """The task `name` at `preset` ("small": the CPU-sized class defaults; "paper" where a paper fixes a setting),
    with field overrides, e.g. make_task("mqar", seq_len=512, num_pairs=128)."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; known tasks: {', '.join(TASKS)}")
    return TASKS[name].from_preset(preset, **overrides)
