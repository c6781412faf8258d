"""`ssmkit compare`: S4D, Mamba, Mamba-2, a Transformer and a hybrid at matched parameter counts, trained on the seed
documents' tasks and timed against sequence length; a report folder with tables, plots and the claims' verdicts."""

from __future__ import annotations

import argparse
import shlex
import sys

from ..compare.archs import ARCHITECTURES
from ..compare.run import DEVICES, CompareOptions, run_compare
from ..compare.settings import DEFAULT_TASKS, SCALES


def _names(text: str) -> list[str]:
    return [n.strip() for n in text.split(",") if n.strip()]


def register(sub) -> None:
    p = sub.add_parser(
        "compare",
        help="train and time S4D, Mamba, Mamba-2, a Transformer and a hybrid side by side; write a report",
        description=__doc__,
    )
    p.add_argument(
        "--tasks",
        type=_names,
        default=list(DEFAULT_TASKS),
        help="comma-separated: selective_copying, induction_heads, mqar, needle, fact_recall "
        f"(default: {','.join(DEFAULT_TASKS)})",
    )
    p.add_argument(
        "--archs",
        type=_names,
        default=list(ARCHITECTURES),
        help=f"comma-separated (default: {','.join(ARCHITECTURES)})",
    )
    p.add_argument("--out", default="compare-report", help="the report folder (default: compare-report)")
    p.add_argument("--device", choices=DEVICES, default="auto", help="auto: cuda when present (default: auto)")
    p.add_argument(
        "--scale",
        choices=[s for s in SCALES if s != "quick"],
        default="cpu",
        help="cpu: at most 10 minutes on a 2-core CPU (default); paper: the papers' settings (a GPU run)",
    )
    p.add_argument("--quick", action="store_true", help="tiny everything, seconds (for tests; not a measurement)")
    p.add_argument("--steps", type=int, default=None, help="training steps for every task (default: the scale's)")
    p.add_argument("--seed", type=int, default=0, help="seed of the weights and the batches (default: 0)")
    p.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default: 1 on CPU, for steady timings)"
    )
    p.add_argument("--seq-len", type=int, default=None, help="training length of every selected task")
    p.add_argument("--lengths", type=int, nargs="+", default=None, help="forward lengths to time")
    p.add_argument("--contexts", type=int, nargs="+", default=None, help="decode contexts to time")
    p.add_argument("--skip-costs", action="store_true", help="train and score only")
    p.add_argument("--skip-training", action="store_true", help="measure costs only")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    options = CompareOptions(
        out=args.out,
        tasks=args.tasks,
        archs=args.archs,
        scale=args.scale,
        device=args.device,
        steps=args.steps,
        seed=args.seed,
        threads=args.threads,
        seq_len=args.seq_len,
        lengths=args.lengths,
        contexts=args.contexts,
        skip_training=args.skip_training,
        skip_costs=args.skip_costs,
        quick=args.quick,
        progress=sys.stderr.isatty() and not args.quick,
        command="ssmkit " + shlex.join(sys.argv[1:]) if sys.argv[1:2] == ["compare"] else "ssmkit compare",
    )
    run_compare(options)
    return 0
