"""report.md: the claims and every table, from the results dict that results.json also holds."""

from __future__ import annotations

from typing import Any


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def _ms(value: float | None) -> str:
    if value is None:
        return "skipped"
    return f"{value:.3g}" if value < 100 else f"{value:,.0f}"


def _mib(value: int | None) -> str:
    return "skipped" if value is None else f"{value / 2**20:.3g}"


def _claims(results: dict[str, Any]) -> list[str]:
    claims = results["claims"]
    ran = [c for c in claims if c["status"] != "not run"]
    good = [c["id"] for c in ran if c["status"] == "reproduced"]
    bad = [c["id"] for c in ran if c["status"] == "not reproduced"]
    lines = ["## The seed documents' claims at this scale", ""]
    budget = [c["id"] for c in ran if c.get("caveat")]
    summary = f"Of the {len(ran)} claims this run tested, **{len(good)} reproduced**"
    summary += f" ({', '.join(good)})" if good else ""
    summary += f" and **{len(bad)} did not**" + (f" ({', '.join(bad)})" if bad else "") + "."
    if budget:
        summary += (
            f" The verdicts on {', '.join(budget)} hold at this training budget only: an architecture on the "
            "losing side was still learning (its loss still falling in the second half of training; see the caveat "
            "in the table)."
        )
    lines += [summary, ""]
    rows = []
    for c in claims:
        status = "NOT REPRODUCED" if c["status"] == "not reproduced" else c["status"]
        measured = c["measured"] + (f". Caveat: {c['caveat']}" if c.get("caveat") else "")
        rows.append([status, f"{c['claim']} ({c['source']})", c["test"], measured])
    lines += _table(["status", "claim (source)", "test", "measured"], rows)
    lines += [
        "",
        "Thresholds are fixed in `ssmkit/compare/claims.py` before any run; a claim that does not "
        'reproduce is reported as such, not retuned. "not run": its task, architecture or measurement was not '
        "part of this run.",
        "",
    ]
    return lines


def _accuracy(results: dict[str, Any]) -> list[str]:
    accuracy = results.get("accuracy") or {}
    if not accuracy:
        return ["## Accuracy", "", "Training was skipped (`--skip-training`).", ""]
    archs, labels = results["archs"], results["labels"]
    lines = ["## Accuracy (exact match on held-out examples)", ""]
    rows = [[t] + [_pct(accuracy[t].get(a)) for a in archs] for t in accuracy]
    lines += _table(["task"] + [labels[a] for a in archs], rows)
    lines.append("")
    for task, row in (results.get("accuracy_by_setting") or {}).items():
        settings = next((list(by) for by in row.values() if by), [])
        if len(settings) > 1:
            lines += [f"{task} at each evaluated setting (the first is the trained one):", ""]
            table = [[s] + [_pct((row.get(a) or {}).get(s)) for a in archs] for s in settings]
            lines += [*_table(["setting"] + [labels[a] for a in archs], table), ""]
    unscored = [e for e in results.get("evaluations", []) if e.get("error")]
    if unscored:
        lines += ["Settings that could not be scored (n/a above):", ""]
        lines += [f"- {e['task']} / {labels[e['arch']]} at {e['label']}: {e['error']}" for e in unscored] + [""]
    lines += ["Training runs (seeded; one run per cell):", ""]
    rows = []
    for run in results.get("training", []):
        losses = (
            "failed: " + run["error"] if run.get("error") else f"{run['first_loss']:.3f} -> {run['final_loss']:.4f}"
        )
        rows.append(
            [
                run["task"],
                labels.get(run["arch"], run["arch"]),
                str(run["steps"]),
                f"{run['train_seconds']:.1f}",
                losses,
                "yes" if run.get("still_improving") else "no",
            ]
        )
    header = ["task", "architecture", "steps", "train s", "loss first -> last 10%", "loss still falling"]
    lines += [*_table(header, rows), ""]
    lines += [
        '"loss still falling": the mean loss of the last 10% of updates is over 10% (and 0.05) below that of the '
        "10% ending at the midpoint: training had not converged, so more steps would likely raise that accuracy; "
        "a low score there measures this budget, not a limit of the architecture.",
        "",
    ]
    lines += ["Task settings:", ""]
    for task, plan in results["config"]["tasks"].items():
        lines.append(
            f"- {task}: trained on {' + '.join(_settings(t) for t in plan['train_tasks'])} for "
            f"{plan['steps']} steps, batch {plan['batch_size']}, "
            f"lr {plan['lr']:g} (warmup + cosine), weight decay {plan['weight_decay']:g}; scored on "
            f"{plan['eval_examples']} held-out examples per setting"
        )
    return [*lines, ""]


def _settings(settings: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in settings.items()) or "the preset's settings"


def _params(results: dict[str, Any]) -> list[str]:
    archs, labels = results["archs"], results["labels"]
    lines = ["## Parameter counts (matched)", ""]
    target = results["config"]["target_params"]
    lines.append(
        f"Target {target:,} non-embedding parameters, tolerance {results['config']['param_tolerance']:.0%}; "
        "d_model searched per architecture (and the gated MLP's width where there is one). Each cell: "
        "non-embedding count (difference to the target), d_model, total with the task's embedding."
    )
    lines.append("")
    rows = []
    for purpose, row in results["param_counts"].items():
        rows.append(
            [purpose]
            + [
                f"{row[a]['params']:,} ({row[a]['relative_error']:+.1%}), d {row[a]['d_model']}, "
                f"total {row[a]['total_params']:,}"
                if a in row
                else ""
                for a in archs
            ]
        )
    lines += _table(["model for"] + [labels[a] for a in archs], rows)
    patterns = results["config"]["patterns"]
    lines += [
        "",
        "Layers: " + "; ".join(f"{labels[a]} `{patterns[a]}`" for a in archs) + " (S S4D, M Mamba, D "
        "Mamba-2, A attention; a G after the letter: gated MLP in that block).",
        "",
    ]
    return lines


def _costs(results: dict[str, Any]) -> list[str]:
    costs = results.get("costs")
    if not costs:
        return ["## Costs", "", "Cost measurements were skipped (`--skip-costs`).", ""]
    archs, labels, meta = results["archs"], results["labels"], results["meta"]
    lines = ["## Costs", ""]
    lines.append(
        f"Measured on {meta['device_name']} with torch.set_num_threads({meta['threads']}), batch "
        f"{results['config']['forward_batch_size']}, fp32, untrained weights of the matched models "
        f"(vocabulary {results['config']['cost_vocab']})."
    )
    lines.append("")
    lengths = sorted({r["length_tokens"] for r in costs["forward"]})
    by = {(r["arch"], r["length_tokens"]): r for r in costs["forward"]}
    lines += ["Forward time (ms, median of repeats; no gradients):", ""]
    rows = [[labels[a]] + [_ms(by[(a, n)]["forward_ms"]) if (a, n) in by else "" for n in lengths] for a in archs]
    lines += [*_table(["architecture"] + [f"L={n:,}" for n in lengths], rows), ""]
    lines += ["Peak memory of one forward (MiB allocated during the call):", ""]
    rows = [
        [labels[a]] + [_mib(by[(a, n)]["peak_memory_bytes"]) if (a, n) in by else "" for n in lengths] for a in archs
    ]
    lines += [*_table(["architecture"] + [f"L={n:,}" for n in lengths], rows), ""]
    slopes = costs["slopes"]
    tail = results["config"]["slope_tail"]
    lines += [f"Log-log slopes fitted over the {tail} longest measured lengths (2: quadratic, 1: linear):", ""]
    rows = [
        [labels[a]]
        + [("n/a" if slopes[k].get(a) is None else f"{slopes[k][a]:.2f}") for k in ("forward_time", "forward_memory")]
        for a in archs
    ]
    lines += [*_table(["architecture", "time slope", "memory slope"], rows), ""]
    contexts = sorted({r["context_tokens"] for r in costs["decode"]})
    by = {(r["arch"], r["context_tokens"]): r for r in costs["decode"]}
    lines += ["Decode: time per generated token (ms, median of steps) at each context:", ""]
    rows = [
        [labels[a]] + [_ms(by[(a, c)]["decode_ms_per_token"]) if (a, c) in by else "" for c in contexts] for a in archs
    ]
    lines += [*_table(["architecture"] + [f"{c:,}" for c in contexts], rows), ""]
    lines += [
        "Decoding state: bytes in use (SSM states + KV cache at its valid tokens; allocated capacity in results.json):",
        "",
    ]
    rows = [
        [labels[a]]
        + [
            ("skipped" if by.get((a, c), {}).get("state_used_bytes") is None else f"{by[(a, c)]['state_used_bytes']:,}")
            for c in contexts
        ]
        for a in archs
    ]
    lines += [*_table(["architecture"] + [f"{c:,}" for c in contexts], rows), ""]
    skipped = [r for r in costs["forward"] + costs["decode"] if r.get("skipped")]
    if skipped:
        lines += ["Skipped measurements:", ""]
        for r in skipped:
            at = r.get("length_tokens", r.get("context_tokens"))
            lines.append(f"- {labels[r['arch']]} at {at:,}: {r['skipped']}")
        lines.append("")
    lines.append(
        "Decode contexts: the SSMs read the context for real (chunked prefill); attention's KV caches are "
        "filled with random keys and values of the context's length (a real prefill is quadratic), which "
        "costs the same per decoded token; a hybrid's Mamba states stay initial, which costs the same too."
    )
    return [*lines, ""]


def _plots(results: dict[str, Any]) -> list[str]:
    plots = results.get("plots", [])
    return ["## Plots", "", *[f"![{p}]({p})" for p in plots], ""] if plots else []


def render(results: dict[str, Any]) -> str:
    meta = results["meta"]
    lines = [
        "# ssmkit compare: S4D, Mamba, Mamba-2, a Transformer and a hybrid, side by side",
        "",
        f"`{meta['command']}`",
        "",
        f"Scale **{results['scale']}** ({results['config']['description']}). {meta['date']}, commit "
        f"{meta['commit']}, {meta['device_name']}, torch {meta['torch']}, {meta['threads']} thread(s), seed "
        f"{results['seed']}. Whole run: {meta['wall_time_s']:.0f} s.",
        "",
    ]
    lines += _claims(results) + _accuracy(results) + _params(results) + _costs(results) + _plots(results)
    return "\n".join(lines).rstrip() + "\n"
