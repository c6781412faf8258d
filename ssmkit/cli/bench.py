"""`ssmkit bench`: the guide's standard workloads, a printed table and a JSON file.

ssmkit bench                                   # W0 without CUDA; W1-W6 on a CUDA device
ssmkit bench --workloads W1,W2 --lengths 1024,4096 --out bench-out/gpu.json --peers-dir .peers
ssmkit bench -w W0 --lengths 512 2048 --markdown section.md
"""

from __future__ import annotations

import argparse

import torch

from ..bench import report, workloads
from ..bench.gpu import GPU_WORKLOADS, GpuPeers, check_lengths, require_cuda
from ..bench.gpu import run as run_gpu
from ..bench.gpu.common import DEFAULT_LENGTHS

WORKLOADS = ("W0", *GPU_WORKLOADS)
W0_LENGTHS = (512, 2048)


def _workload_list(text: str) -> list[str]:
    names = [w.strip().upper() for w in text.split(",") if w.strip()]
    unknown = [w for w in names if w not in WORKLOADS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"expected comma-separated ids from {', '.join(WORKLOADS)}, got {text!r}")
    return names


def _int_list(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers (comma- or space-separated), got {text!r}") from None


def register(sub) -> None:
    p = sub.add_parser("bench", help="run the standard benchmark workloads (guide section 5)")
    p.add_argument(
        "--workloads",
        type=_workload_list,
        help="comma-separated workload ids, e.g. W1,W2 (default: W0 without CUDA, W1-W6 with a CUDA device)",
    )
    p.add_argument("--workload", "-w", action="append", choices=WORKLOADS, help="one workload id (repeatable)")
    p.add_argument(
        "--lengths",
        type=_int_list,
        nargs="+",
        help="sequence lengths, comma- or space-separated (default: 512 2048 for W0; "
        "1024 2048 4096 16384 65536 for W1-W3, B * L = 65,536)",
    )
    p.add_argument("--threads", type=int, default=2, help="CPU threads (W0 is defined at 2)")
    p.add_argument("--repeats", type=int, default=5, help="W0 repeats (GPU timings are do_bench medians)")
    p.add_argument("--long-length", type=int, default=65536, help="W0: length of the one-layer memory run (0: skip)")
    p.add_argument("--no-peers", action="store_true", help="measure no peers, even when they are available")
    p.add_argument(
        "--peers-dir", default=".peers", help="folder of GPU peer sources: mamba_ssm/, fla/ (default: .peers)"
    )
    p.add_argument("--commit", help="the commit measured, where the tree has no .git (the GPU machine's copy)")
    p.add_argument("--out", default="bench.json", help="where to write the JSON results")
    p.add_argument("--markdown", help="also write the results as a markdown section (for docs/benchmarks.md)")
    p.set_defaults(run=run)


def _chosen(args: argparse.Namespace) -> list[str]:
    asked = [*(args.workloads or []), *(args.workload or [])]
    if not asked:
        return list(GPU_WORKLOADS) if torch.cuda.is_available() else ["W0"]
    return [w for w in WORKLOADS if w in asked]


def run(args: argparse.Namespace) -> int:
    chosen = _chosen(args)
    gpu = [w for w in chosen if w in GPU_WORKLOADS]
    if gpu:
        require_cuda(gpu)
    lengths = [n for group in args.lengths for n in group] if args.lengths else None
    if lengths is not None and (not lengths or any(n <= 0 for n in lengths)):
        raise ValueError(f"--lengths: expected positive lengths, got {lengths}")
    if gpu and lengths is not None:
        check_lengths(lengths)
    if args.threads <= 0:
        raise ValueError(f"--threads: expected a positive count, got {args.threads}")
    if "W0" in chosen:
        torch.set_num_threads(args.threads)
    meta = report.metadata(torch.get_num_threads())
    if args.commit:
        meta["commit"] = args.commit
    print(f"ssmkit bench {','.join(chosen)}: {meta['device']}, torch {meta['torch']}, commit {meta['commit']}")
    for row in meta["backends"]:
        print(f"  {row['op']}: {row['backend']} ({row['why']})")
    rows: list[dict] = []
    summary: list[str] = []
    if "W0" in chosen:
        rows += workloads.w0(lengths or list(W0_LENGTHS), with_peers=not args.no_peers, repeats=args.repeats)
        if args.long_length:
            print(f"  W0-long: one Mamba layer at L = {args.long_length} in a fresh process ...")
            rows.append(workloads.w0_long(args.long_length, args.threads))
    if gpu:
        w0_rows = list(rows)

        def save_partial(gpu_rows: list[dict], ceilings) -> None:
            partial = {**meta, "ceilings": ceilings.as_dict(), "partial": True}
            report.write_json(args.out, {"meta": partial, "results": w0_rows + gpu_rows})

        peers = GpuPeers(args.peers_dir, enabled=not args.no_peers)
        gpu_rows, summary, ceilings = run_gpu(gpu, lengths or list(DEFAULT_LENGTHS), peers, on_rows=save_partial)
        meta["ceilings"] = ceilings.as_dict()
        rows += gpu_rows
    print()
    if meta.get("ceilings"):
        print(report.format_ceilings(meta["ceilings"]))
    print(report.format_table(rows))
    if summary:
        print()
        print("\n".join(summary))
    report.write_json(args.out, {"meta": meta, "results": rows, "summary": summary})
    print(f"\nwrote {args.out}")
    if args.markdown:
        report.write_text(args.markdown, report.format_markdown(rows, meta, summary))
        print(f"wrote {args.markdown}")
    return 0
