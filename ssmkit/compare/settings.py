"""What `ssmkit compare` runs at each scale: the models' shapes and target size, each task's training and evaluation,
and the lengths the costs are measured at. Defaults live here and nowhere else.

    scale = SCALES["cpu"]                    # "cpu" (default: at most 10 minutes on a 2-core CPU), "paper", "quick"
    plan = scale.tasks["selective_copying"]  # task settings trained on, evaluated on, steps, lr, batch size

Every scale has a plan for every task of `ssmkit.tasks.TASKS`; `--tasks` picks which ones run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..tasks import TASKS


@dataclass(frozen=True)
class TaskPlan:
    """How one task is trained and scored.

    train: task settings (make_task overrides) of the training batches; with several, step i draws from
    train[i % len(train)] (a mix of lengths). evals: (label, task settings) scored after training on
    `eval_examples` fresh held-out examples each; the first is the task's headline accuracy (the training
    setting), the others probe other lengths (induction heads: longer than trained).
    """

    train: tuple[dict[str, Any], ...]
    evals: tuple[tuple[str, dict[str, Any]], ...]
    steps: int
    lr: float
    batch_size: int
    warmup_steps: int = 50
    weight_decay: float = 0.1
    eval_examples: int = 512
    eval_batch_size: int = 64
    preset: str = "small"


@dataclass(frozen=True)
class Scale:
    """target_params: every architecture's d_model is searched to land within `param_tolerance` of it.
    n_layer and model: the depth and nested layer settings shared by all architectures; arch_overrides: per
    architecture changes on top (a deeper, Jamba-like hybrid). forward_lengths: forward time and memory, the
    log-log slope fitted over the `slope_tail` longest; decode_contexts: per-token decode time and state size.
    cost_vocab: the vocabulary of the models timed (their weights are untrained: speed does not depend on them).
    """

    name: str
    description: str
    target_params: int
    n_layer: int
    model: dict[str, Any]
    tasks: dict[str, TaskPlan]
    forward_lengths: tuple[int, ...]
    decode_contexts: tuple[int, ...]
    arch_overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    param_tolerance: float = 0.10
    cost_vocab: int = 64
    forward_batch_size: int = 1
    forward_repeats: int = 3
    decode_steps: int = 32
    slope_tail: int = 3
    cost_time_budget_s: float = 60.0


def _same(settings: dict[str, Any], label: str = "trained length") -> tuple[tuple[str, dict[str, Any]], ...]:
    return ((label, settings),)


_SMALL_MODEL = {
    "s4d": {"d_state": 16},
    "mamba": {"d_state": 16},
    "mamba2": {"d_state": 16, "headdim": 16, "chunk_size": 64},
    "attention": {"n_heads": 4},
}

# ---- cpu: the default, sized to finish in at most 10 minutes on a 2-core CPU --------------------------------------
_CPU_SC = {"seq_len": 40, "num_tokens": 8, "num_symbols": 16}
_CPU_NEEDLE = {"seq_len": 32}
_CPU_INDUCTION = {"seq_len": 64, "num_symbols": 16}
_CPU_MQAR = {"seq_len": 64, "num_pairs": 8, "num_queries": 8}
_CPU_FACTS = {"seq_len": 64}

CPU = Scale(
    name="cpu",
    description="CPU-sized: 2 layers, ~66K non-embedding parameters, short sequences; at most 10 minutes on a "
    "2-core CPU",
    target_params=66_000,
    n_layer=2,
    model=_SMALL_MODEL,
    tasks={
        "selective_copying": TaskPlan((_CPU_SC,), _same(_CPU_SC), steps=1400, lr=1e-2, batch_size=32),
        "needle": TaskPlan((_CPU_NEEDLE,), _same(_CPU_NEEDLE), steps=200, lr=1e-2, batch_size=32),
        "induction_heads": TaskPlan(
            (_CPU_INDUCTION,),
            tuple((f"L={n}", {**_CPU_INDUCTION, "seq_len": n}) for n in (64, 256, 1024, 4096)),
            steps=600,
            lr=3e-3,
            batch_size=32,
            eval_examples=256,
            eval_batch_size=16,
        ),
        "mqar": TaskPlan((_CPU_MQAR,), _same(_CPU_MQAR), steps=600, lr=3e-3, batch_size=32),
        "fact_recall": TaskPlan((_CPU_FACTS,), _same(_CPU_FACTS), steps=600, lr=3e-3, batch_size=32),
    },
    forward_lengths=(1024, 2048, 4096, 8192, 16384, 32768),
    decode_contexts=(1024, 2048, 4096, 8192, 16384, 32768, 65536),
    decode_steps=64,
    cost_time_budget_s=20.0,
)

# ---- paper: the seed papers' settings (a GPU run) ----------------------------------------------------------------
_PAPER_MQAR = tuple({"seq_len": n, "num_pairs": n // 4, "num_queries": n // 4} for n in (256, 512, 1024))
_PAPER_INDUCTION_EVAL = tuple(2**k for k in range(8, 17))  # 256 .. 65,536

PAPER = Scale(
    name="paper",
    description=(
        "the papers' settings: selective copying at L = 4096 (16 data symbols, 16 tokens), 2 layers, Mamba at "
        "d_model 64 sets the size; induction heads trained at 256 and evaluated up to 2^16; MQAR at L = 256-1024 "
        "with L/4 pairs; a Jamba-like 8-layer hybrid (1 attention layer in 8)"
    ),
    target_params=66_000,
    n_layer=2,
    model={
        "s4d": {"d_state": 16},
        "mamba": {"d_state": 16},
        "mamba2": {"d_state": 64, "headdim": 32, "chunk_size": 256},
        # a head dim that is a multiple of 8, so CUDA's fused (flash / memory-efficient) attention takes it: the
        # unfused fallback would materialize the L x L scores (128 GiB at L = 2^16, batch 8)
        "attention": {"n_heads": 4, "head_dim": 16},
    },
    arch_overrides={
        "hybrid": {
            "n_layer": 8,
            "layer_pattern": "MMMMAMMM",
            "mlp_pattern": "----G---",
            "attention": {"n_heads": 2, "head_dim": 16},
        }
    },
    tasks={
        "selective_copying": TaskPlan(
            ({},), _same({}), steps=20_000, lr=1e-3, batch_size=64, warmup_steps=500, preset="paper"
        ),
        "needle": TaskPlan(
            ({"seq_len": 1024},), _same({"seq_len": 1024}), steps=5_000, lr=1e-3, batch_size=64, warmup_steps=200
        ),
        "induction_heads": TaskPlan(
            ({},),
            tuple((f"L={n}", {"seq_len": n}) for n in _PAPER_INDUCTION_EVAL),
            steps=10_000,
            lr=1e-3,
            batch_size=64,
            warmup_steps=200,
            eval_examples=64,
            eval_batch_size=8,
            preset="paper",
        ),
        "mqar": TaskPlan(
            _PAPER_MQAR,
            tuple((f"L={s['seq_len']}", s) for s in _PAPER_MQAR),
            steps=20_000,
            lr=1e-3,
            batch_size=64,
            warmup_steps=500,
            eval_examples=256,
            eval_batch_size=32,
            preset="paper",
        ),
        "fact_recall": TaskPlan(
            ({"seq_len": 1024},), _same({"seq_len": 1024}), steps=5_000, lr=1e-3, batch_size=64, warmup_steps=200
        ),
    },
    forward_lengths=(1024, 2048, 4096, 8192, 16384, 32768, 65536),
    decode_contexts=(1024, 4096, 16384, 65536, 131072),
    forward_batch_size=1,
    forward_repeats=10,
    decode_steps=64,
    cost_time_budget_s=120.0,
)

# ---- quick: tiny everything, for tests -------------------------------------------------------------------------------
_QUICK = {
    "selective_copying": {"seq_len": 12, "num_tokens": 2, "num_symbols": 4},
    "needle": {"seq_len": 16, "num_values": 4, "num_filler": 4},
    "induction_heads": {"seq_len": 8, "num_symbols": 4},
    "mqar": {"seq_len": 16, "num_pairs": 2, "num_queries": 2, "num_keys": 4, "num_values": 4},
    "fact_recall": {
        "seq_len": 24,
        "num_facts": 2,
        "num_distractors": 1,
        "num_names": 2,
        "num_cities": 4,
        "num_filler": 4,
    },
}

QUICK = Scale(
    name="quick",
    description="tiny everything, for tests: seconds, not a measurement",
    target_params=6_000,
    n_layer=2,
    model={
        "s4d": {"d_state": 4},
        "mamba": {"d_state": 4},
        "mamba2": {"d_state": 4, "headdim": 4, "chunk_size": 8},
        "attention": {"n_heads": 2, "initial_cache_len": 16},
    },
    param_tolerance=0.15,
    tasks={
        name: TaskPlan(
            (settings,),
            _same(settings)
            if name != "induction_heads"
            else (("L=8", settings), ("L=16", {**settings, "seq_len": 16})),
            steps=4,
            lr=1e-2,
            batch_size=4,
            warmup_steps=1,
            eval_examples=8,
            eval_batch_size=4,
        )
        for name, settings in _QUICK.items()
    },
    forward_lengths=(16, 32, 64),
    decode_contexts=(16, 64),
    forward_repeats=1,
    decode_steps=2,
    slope_tail=2,
    cost_time_budget_s=10.0,
)

SCALES: dict[str, Scale] = {s.name: s for s in (CPU, PAPER, QUICK)}
DEFAULT_TASKS = ("selective_copying", "needle")

for _scale in SCALES.values():  # every scale plans every registered task
    assert set(_scale.tasks) == set(TASKS), (_scale.name, sorted(_scale.tasks))
