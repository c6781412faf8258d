"""`ssmkit bench`: the guide's standard workloads, a printed table and a JSON file."""

from __future__ import annotations

import argparse

import torch

from ..bench import report, workloads
from ..models.config import atomic_write_text

WORKLOADS = ("W0",)


def register(sub) -> None:
    p = sub.add_parser("bench", help="run the standard benchmark workloads (guide section 5)")
    p.add_argument(
        "--workload", "-w", action="append", choices=WORKLOADS, help="workload id (repeatable; default: all)"
    )
    p.add_argument("--lengths", type=int, nargs="+", default=[512, 2048], help="sequence lengths for W0")
    p.add_argument("--threads", type=int, default=2, help="CPU threads (W0 is defined at 2)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--long-length", type=int, default=65536, help="length of the one-layer memory run (0: skip)")
    p.add_argument("--no-peers", action="store_true", help="skip transformers / mambapy even when installed")
    p.add_argument("--out", default="bench.json", help="where to write the JSON results")
    p.add_argument("--markdown", help="also write the results as a markdown section (for docs/benchmarks.md)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if any(n <= 0 for n in args.lengths):
        raise ValueError(f"--lengths: expected positive lengths, got {args.lengths}")
    if args.threads <= 0:
        raise ValueError(f"--threads: expected a positive count, got {args.threads}")
    torch.set_num_threads(args.threads)
    chosen = args.workload or list(WORKLOADS)
    meta = report.metadata(args.threads)
    print(f"ssmkit bench: {meta['device']}, torch {meta['torch']}, {args.threads} threads, commit {meta['commit']}")
    for row in meta["backends"]:
        print(f"  {row['op']}: {row['backend']} ({row['why']})")
    rows: list[dict] = []
    if "W0" in chosen:
        rows += workloads.w0(args.lengths, with_peers=not args.no_peers, repeats=args.repeats)
        if args.long_length:
            print(f"  W0-long: one Mamba layer at L = {args.long_length} in a fresh process ...")
            rows.append(workloads.w0_long(args.long_length, args.threads))
    print()
    print(report.format_table(rows))
    report.write_json(args.out, {"meta": meta, "results": rows})
    print(f"\nwrote {args.out}")
    if args.markdown:
        atomic_write_text(args.markdown, report.format_markdown(rows, meta))
        print(f"wrote {args.markdown}")
    return 0
