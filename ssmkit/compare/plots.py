"""The report's PNG plots (matplotlib, Agg backend: no display needed).

    files = write_plots(results, folder)    # the names written: accuracy.png, forward_time.png, ...

Each plot is written only when the run measured what it shows (no accuracy plot with --skip-training).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from typing import Any

ARCH_COLORS = {
    "s4d": "#8c564b",
    "mamba": "#1f77b4",
    "mamba2": "#2ca02c",
    "transformer": "#d62728",
    "hybrid": "#9467bd",
}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _color(arch: str) -> str:
    return ARCH_COLORS.get(arch, "#7f7f7f")


def _save(fig, folder: str, name: str) -> str:
    fig.tight_layout()
    fig.savefig(os.path.join(folder, name), dpi=110, bbox_inches="tight")
    _pyplot().close(fig)
    return name


def accuracy_plot(results: dict[str, Any], folder: str) -> str | None:
    accuracy = results.get("accuracy") or {}
    tasks = [t for t, row in accuracy.items() if any(v is not None for v in row.values())]
    if not tasks:
        return None
    archs = results["archs"]
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(6.4, 2.0 + 1.8 * len(tasks)), 4.6))
    width = 0.8 / len(archs)
    for j, arch in enumerate(archs):
        xs = [i + (j - (len(archs) - 1) / 2) * width for i in range(len(tasks))]
        values = [accuracy[t].get(arch) for t in tasks]
        heights = [0.0 if v is None else 100 * v for v in values]
        bars = ax.bar(xs, heights, width, label=results["labels"].get(arch, arch), color=_color(arch))
        for bar, v in zip(bars, values):
            text = "n/a" if v is None else f"{100 * v:.0f}"
            ax.annotate(
                text, (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center", va="bottom", fontsize=7
            )
    ax.axhline(90, color="gray", lw=0.8, ls="--")
    ax.axhline(50, color="gray", lw=0.8, ls=":")
    ax.set_xticks(range(len(tasks)), [t.replace("_", " ") for t in tasks])
    ax.set_ylim(0, 109)
    ax.set_ylabel("exact match on held-out examples (%)")
    ax.set_title(
        f"Exact match by task and architecture\n({results['scale']} scale, matched parameter counts)", fontsize=10
    )
    ax.legend(fontsize=8, ncol=min(5, len(archs)), loc="upper center", bbox_to_anchor=(0.5, -0.12))
    return _save(fig, folder, "accuracy.png")


def _series_plot(
    results: dict[str, Any],
    folder: str,
    name: str,
    rows: list[dict[str, Any]],
    x: str,
    y: str,
    scale_y: float,
    ylabel: str,
    xlabel: str,
    title: str,
    legend: Callable[[str], str],
) -> str | None:
    plotted = False
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for arch in results["archs"]:
        points = sorted((r[x], r[y] * scale_y) for r in rows if r["arch"] == arch and r[y] is not None and r[y] > 0)
        if not points:
            continue
        xs, ys = zip(*points)
        ax.plot(xs, ys, "o-", color=_color(arch), label=legend(arch), ms=4)
        plotted = True
    if not plotted:
        plt.close(fig)
        return None
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, folder, name)


def _slope_legend(results: dict[str, Any], which: str) -> Callable[[str], str]:
    slopes = (results.get("costs") or {}).get("slopes", {}).get(which, {})

    def legend(arch: str) -> str:
        label = results["labels"].get(arch, arch)
        s = slopes.get(arch)
        return label if s is None or not math.isfinite(s) else f"{label} (slope {s:.2f})"

    return legend


def cost_plots(results: dict[str, Any], folder: str) -> list[str]:
    costs = results.get("costs")
    if not costs:
        return []
    meta = results["meta"]
    where = f"{meta['device_name']}, {meta['threads']} thread{'s' if meta['threads'] != 1 else ''}"
    labels = lambda arch: results["labels"].get(arch, arch)
    made = [
        _series_plot(
            results,
            folder,
            "forward_time.png",
            costs["forward"],
            "length_tokens",
            "forward_ms",
            1.0,
            "forward time (ms, median)",
            "sequence length (tokens)",
            f"Forward time vs length, log-log ({where})\nslope fitted over the longest lengths",
            _slope_legend(results, "forward_time"),
        ),
        _series_plot(
            results,
            folder,
            "forward_memory.png",
            costs["forward"],
            "length_tokens",
            "peak_memory_bytes",
            2**-20,
            "peak memory of one forward (MiB)",
            "sequence length (tokens)",
            f"Forward peak memory vs length ({where})",
            _slope_legend(results, "forward_memory"),
        ),
        _series_plot(
            results,
            folder,
            "decode_latency.png",
            costs["decode"],
            "context_tokens",
            "decode_ms_per_token",
            1.0,
            "time per generated token (ms, median)",
            "context already in the state (tokens)",
            f"Decode latency vs context ({where})",
            labels,
        ),
        _series_plot(
            results,
            folder,
            "state_size.png",
            costs["decode"],
            "context_tokens",
            "state_used_bytes",
            2**-20,
            "decoding state: SSM states + KV cache in use (MiB)",
            "context already in the state (tokens)",
            "State / KV-cache size vs context",
            labels,
        ),
    ]
    return [m for m in made if m is not None]


def length_plot(results: dict[str, Any], folder: str) -> list[str]:
    """Accuracy vs evaluated length, for tasks scored at several lengths (induction heads, MQAR)."""
    made = []
    plt = _pyplot()
    for task, row in (results.get("accuracy_by_setting") or {}).items():
        series = {arch: by for arch, by in row.items() if by and len(by) > 1}
        if not series:
            continue
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        for arch, by in series.items():
            labels = list(by)
            ys = [None if v is None else 100 * v for v in by.values()]
            ax.plot(range(len(labels)), ys, "o-", color=_color(arch), label=results["labels"].get(arch, arch))
        ax.set_xticks(range(len(labels)), labels, rotation=30)
        ax.set_ylim(-3, 103)
        ax.set_ylabel("exact match (%)")
        ax.set_title(f"{task.replace('_', ' ')}: accuracy by evaluated length (first = trained)", fontsize=10)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
        made.append(_save(fig, folder, f"{task}_by_length.png"))
    return made


def write_plots(results: dict[str, Any], folder: str) -> list[str]:
    made = [accuracy_plot(results, folder), *length_plot(results, folder), *cost_plots(results, folder)]
    return [m for m in made if m is not None]
