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


def metadata(threads: int) -> dict:
    return {
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": git_commit(),
        "device": device_name(),
        "torch": torch.__version__,
        "threads": threads,
        "backends": [r for r in backend_report() if r["device"] == ("cuda" if torch.cuda.is_available() else "cpu")],
    }


def format_table(rows: list[dict]) -> str:
    cols = ["workload", "impl", "L", "batch", "median_ms", "target_ms", "peak_rss_gib", "note"]
    present = [c for c in cols if any(c in r and r[c] is not None for r in rows)]
    cells = [[("" if r.get(c) is None else str(r.get(c))) for c in present] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(present)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(present, widths))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)


def format_markdown(rows: list[dict], meta: dict) -> str:
    """A section for docs/benchmarks.md: the run's date, commit and device, then the table."""
    cols = ["workload", "impl", "L", "batch", "median_ms", "target_ms", "peak_rss_gib", "note"]
    present = [c for c in cols if any(r.get(c) is not None for r in rows)]
    lines = [
        f"### {meta['date']}, commit {meta['commit']}, {meta['device']}, torch {meta['torch']}, "
        f"{meta['threads']} threads",
        "",
        "| " + " | ".join(present) + " |",
        "|" + "---|" * len(present),
    ]
    lines += ["| " + " | ".join("" if r.get(c) is None else str(r[c]) for c in present) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def write_json(path: str, payload: dict) -> None:
    atomic_write_text(path, json.dumps(payload, indent=2) + "\n")
