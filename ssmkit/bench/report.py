"""Benchmark results: run metadata, a printed table, JSON written atomically."""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import subprocess

import torch

from ..models.config import atomic_write_text
from ..ops._backend import backend_report


def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            cwd=os.path.dirname(os.path.abspath(__file__)),
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=False,
            cwd=os.path.dirname(os.path.abspath(__file__)),
        )
        return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def device_name() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name()
    return f"CPU {platform.processor() or platform.machine()}, {os.cpu_count()} cores"


# the columns a row may have, in print order; a table shows those that some row fills
COLUMNS = [
    "workload",
    "impl",
    "mode",
    "L",
    "batch",
    "median_ms",
    "target_ms",
    "met",
    "peak_gib",
    "peak_rss_gib",
    "copy_frac",
    "mm_frac",
    "exp_frac",
    "tokens_per_s",
    "note",
]


def triton_version() -> str | None:
    try:
        import triton
    except Exception:  # not installed, or a broken install
        return None
    return triton.__version__


def metadata(threads: int) -> dict:
    return {
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": git_commit(),
        "device": device_name(),
        "torch": torch.__version__,
        "triton": triton_version(),
        "threads": threads,
        "backends": [r for r in backend_report() if r["device"] == ("cuda" if torch.cuda.is_available() else "cpu")],
    }


def _present(rows: list[dict]) -> list[str]:
    return [c for c in COLUMNS if any(r.get(c) is not None for r in rows)]


def format_table(rows: list[dict]) -> str:
    present = _present(rows)
    cells = [[("" if r.get(c) is None else str(r.get(c))) for c in present] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(present)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(present, widths))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)


def format_ceilings(ceilings: dict) -> str:
    return (
        f"in-run ceilings: device copy {ceilings['copy_TBps']} TB/s (bytes read + written), bf16 matmul "
        f"{ceilings['matmul_TFLOPs']} TFLOP/s, exp2 {ceilings['exp_Tper_s']}e12/s ({ceilings['exp_source']})"
    )


def format_markdown(rows: list[dict], meta: dict, summary: list[str] = ()) -> str:
    """A section for docs/benchmarks.md: the run's date, commit and device, the ceilings, the table, the summary."""
    present = _present(rows)
    triton = f", triton {meta['triton']}" if meta.get("triton") else ""
    lines = [
        f"### {meta['date']}, commit {meta['commit']}, {meta['device']}, torch {meta['torch']}{triton}, "
        f"{meta['threads']} threads",
        "",
    ]
    if meta.get("ceilings"):
        lines += [format_ceilings(meta["ceilings"]) + ".", ""]
    lines += ["| " + " | ".join(present) + " |", "|" + "---|" * len(present)]
    lines += ["| " + " | ".join("" if r.get(c) is None else str(r[c]) for c in present) + " |" for r in rows]
    if summary:
        lines += ["", *(f"- {line}" for line in summary)]
    return "\n".join(lines) + "\n"


def write_text(path: str, text: str) -> None:
    """Atomically, creating the folder first (`--out bench-out/gpu.json` on a fresh checkout)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    atomic_write_text(path, text)


def write_json(path: str, payload: dict) -> None:
    write_text(path, json.dumps(payload, indent=2) + "\n")
