"""The seed documents' claims, each checked against this run's measurements with a stated threshold.

    verdicts = check_claims(accuracy, costs)     # [{"id", "claim", "source", "test", "measured", "status"}, ...]

status: "reproduced", "not reproduced", or "not run" (its task, architecture or cost measurement was not part of
this run). The thresholds are fixed here, before any run, and never adjusted to a result.
"""

from __future__ import annotations

import math
from typing import Any

from .costs import fit_loglog_slope

REPRODUCED, NOT_REPRODUCED, NOT_RUN = "reproduced", "not reproduced", "not run"

HIGH = 0.90  # "solves the task": exact match at least this
LOW = 0.50  # "fails the task": exact match at most this
QUADRATIC = (1.6, 2.4)  # "near 2"
LINEAR = (0.7, 1.3)  # "near 1"
FLAT_RATIO = 1.5  # decode time at the longest context / at the shortest, on the fitted line: "flat" at most this
GROWS_RATIO = 2.0  # ... "grows" at least this
SSMS = ("s4d", "mamba", "mamba2")
ATTENTION = ("transformer", "hybrid")

Accuracy = dict[str, dict[str, Any]]  # task -> arch -> {"accuracy": float | None, "by_setting": {label: float}}


def _acc(accuracy: Accuracy, task: str, arch: str) -> float | None:
    entry = accuracy.get(task, {}).get(arch)
    return None if entry is None else entry.get("accuracy")


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0%}"


def _measured(accuracy: Accuracy, task: str, arch: str) -> str:
    """'mamba 97%', with a note when its loss was still falling at the end of training."""
    entry = accuracy.get(task, {}).get(arch) or {}
    note = " (loss still falling)" if entry.get("still_improving") else ""
    return f"{arch} {_fmt(entry.get('accuracy'))}{note}"


def _verdict(
    claim: dict[str, str], measured: list[str], ok: bool | None, unconverged: list[str] | None = None
) -> dict[str, Any]:
    """unconverged: the architectures of an accuracy claim still learning (see TrainRun.still_improving)."""
    status = NOT_RUN if ok is None else REPRODUCED if ok else NOT_REPRODUCED
    caveat = None
    if ok is not None and unconverged:
        caveat = (
            f"at this training budget only: the loss of {', '.join(unconverged)} was still falling in the second "
            "half of training, so more steps may change this verdict"
        )
    measured_text = "; ".join(measured) if measured else "not measured in this run"
    return {**claim, "measured": measured_text, "status": status, "caveat": caveat}


def _unconverged(accuracy: Accuracy, task: str, low: tuple[str, ...], high: tuple[str, ...] = ()) -> list[str]:
    """The architectures whose score more training could move across a threshold of the claim: those expected to
    stay low, and those expected to be high that are not yet, when their loss was still falling."""
    entries = {a: accuracy.get(task, {}).get(a) or {} for a in (*low, *high)}
    return [
        a
        for a, e in entries.items()
        if e.get("still_improving") and (a in low or (e.get("accuracy") is not None and e["accuracy"] < HIGH))
    ]


def _accuracy_claim(
    claim: dict[str, str], accuracy: Accuracy, task: str, high: tuple[str, ...], low: tuple[str, ...]
) -> dict[str, Any]:
    """Every arch in `high` at least HIGH and every arch in `low` at most LOW (the ones that ran)."""
    values = {arch: _acc(accuracy, task, arch) for arch in (*high, *low)}
    measured = [_measured(accuracy, task, arch) for arch, v in values.items() if v is not None]
    if any(values[a] is None for a in (*high, *low)):
        return _verdict(claim, measured, None)
    ok = all(values[a] >= HIGH for a in high) and all(values[a] <= LOW for a in low)
    return _verdict(claim, measured, ok, _unconverged(accuracy, task, low, high))


def accuracy_claims(accuracy: Accuracy) -> list[dict[str, Any]]:
    out = [
        _accuracy_claim(
            {
                "id": "selective_copying",
                "claim": "A time-invariant SSM (S4) cannot choose what to remember and fails selective copying; "
                "Mamba's input-dependent B, C and Delta solve it (Mamba-2 too).",
                "source": "seeds 001, 002, 003",
                "test": f"selective copying exact match after the same training budget: Mamba and Mamba-2 >= "
                f"{HIGH:.0%}, S4D <= {LOW:.0%}",
            },
            accuracy,
            "selective_copying",
            ("mamba", "mamba2"),
            ("s4d",),
        ),
        _accuracy_claim(
            {
                "id": "needle_attention",
                "claim": "Attention retrieves a key fact hidden in filler text (the magic word) exactly; hybrids "
                "with a few attention layers keep that ability.",
                "source": "seed 002",
                "test": f"needle exact match: Transformer and hybrid >= {HIGH:.0%}",
            },
            accuracy,
            "needle",
            ATTENTION,
            (),
        ),
    ]
    mamba, transformer = _acc(accuracy, "needle", "mamba"), _acc(accuracy, "needle", "transformer")
    ran = mamba is not None and transformer is not None
    out.append(
        _verdict(
            {
                "id": "needle_mamba",
                "claim": "Mamba-1 struggles on the needle in a haystack, where Transformers ace it (state "
                "compression loses exact values).",
                "source": "seed 002",
                "test": f"needle exact match after the same training budget: Mamba < {HIGH:.0%} while the "
                f"Transformer >= {HIGH:.0%}",
            },
            [_measured(accuracy, "needle", "mamba"), _measured(accuracy, "needle", "transformer")] if ran else [],
            (mamba < HIGH <= transformer) if ran else None,
            _unconverged(accuracy, "needle", ("mamba",), ("transformer",)),
        )
    )
    out.append(_induction_claim(accuracy))
    for task, claim in (
        (
            "mqar",
            "Precise recall of many key-value pairs: attention keeps every pair; a fixed-size recurrent state "
            "degrades (S4 worst).",
        ),
        ("fact_recall", "'Alice lives in Paris ... Where does Alice live?': attention answers, S4 forgets."),
    ):
        out.append(
            _accuracy_claim(
                {
                    "id": task,
                    "claim": claim,
                    "source": "seeds 002, 003",
                    "test": f"{task} exact match after the same training budget: Transformer >= {HIGH:.0%}, "
                    f"S4D <= {LOW:.0%}",
                },
                accuracy,
                task,
                ("transformer",),
                ("s4d",),
            )
        )
    return out


def _induction_claim(accuracy: Accuracy) -> dict[str, Any]:
    claim = {
        "id": "induction_extrapolation",
        "claim": "Mamba's selective SSM learns induction heads and extrapolates far beyond its training length.",
        "source": "issue 3 (Mamba paper, section 4.1.2)",
        "test": f"induction heads: Mamba >= {HIGH:.0%} at the longest evaluated length",
    }
    entry = accuracy.get("induction_heads", {}).get("mamba")
    if not entry or not entry.get("by_setting"):
        return _verdict(claim, [], None)
    label, value = list(entry["by_setting"].items())[-1]
    others = [
        f"{arch} {_fmt(list(e['by_setting'].values())[-1])}"
        for arch, e in accuracy["induction_heads"].items()
        if arch != "mamba" and e.get("by_setting")
    ]
    ok = value is not None and value >= HIGH
    return _verdict(
        claim,
        [f"mamba {_fmt(value)} at {label}", *others],
        ok,
        _unconverged(accuracy, "induction_heads", (), ("mamba",)),
    )


def cost_claims(costs: dict[str, Any] | None) -> list[dict[str, Any]]:
    slopes = (costs or {}).get("slopes", {})
    decode = (costs or {}).get("decode", [])
    time_slopes = slopes.get("forward_time", {})
    memory_slopes = slopes.get("forward_memory", {})

    def slope_claim(claim: dict[str, str], archs: tuple[str, ...], bounds: tuple[float, float], which: dict):
        values = {a: which[a] for a in archs if a in which}
        measured = [f"{a} {'n/a' if v is None else f'{v:.2f}'}" for a, v in values.items()]
        if not values or any(v is None for v in values.values()):
            return _verdict(claim, measured, None)
        return _verdict(claim, measured, all(bounds[0] <= v <= bounds[1] for v in values.values()))

    out = [
        slope_claim(
            {
                "id": "attention_quadratic_time",
                "claim": "Attention's compute grows as O(n^2) with sequence length.",
                "source": "seeds 000, 001, 002",
                "test": f"Transformer forward time vs length, log-log slope over the longest lengths in "
                f"[{QUADRATIC[0]}, {QUADRATIC[1]}]",
            },
            ("transformer",),
            QUADRATIC,
            time_slopes,
        ),
        slope_claim(
            {
                "id": "ssm_linear_time",
                "claim": "SSMs (S4, Mamba, Mamba-2) run in O(n) time.",
                "source": "seeds 000, 001, 002",
                "test": f"forward time slope of each pure SSM in [{LINEAR[0]}, {LINEAR[1]}]",
            },
            tuple(a for a in SSMS if a in time_slopes),
            LINEAR,
            time_slopes,
        ),
        slope_claim(
            {
                "id": "attention_quadratic_memory",
                "claim": "Attention's memory explodes: the full n x n attention matrix must be stored.",
                "source": "seeds 000, 002",
                "test": f"Transformer forward peak-memory slope in [{QUADRATIC[0]}, {QUADRATIC[1]}]",
            },
            ("transformer",),
            QUADRATIC,
            memory_slopes,
        ),
    ]
    out += _decode_claims(decode)
    return out


def _decode_series(decode: list[dict[str, Any]], arch: str) -> list[dict[str, Any]]:
    rows = [r for r in decode if r["arch"] == arch and r["decode_ms_per_token"] is not None]
    return sorted(rows, key=lambda r: r["context_tokens"])


def _fitted_ratio(rows: list[dict[str, Any]]) -> float:
    """Decode time at the longest context over the shortest, read off the least-squares log-log line through every
    context (two single medians would carry all of a shared machine's noise)."""
    contexts = [max(r["context_tokens"], 1) for r in rows]
    slope = fit_loglog_slope(contexts, [r["decode_ms_per_token"] for r in rows], tail=None)
    return math.exp(slope * math.log(contexts[-1] / contexts[0]))


def _decode_claims(decode: list[dict[str, Any]]) -> list[dict[str, Any]]:
    flat_claim = {
        "id": "ssm_constant_decode",
        "claim": "SSM inference is O(1) per token: the state has one size whatever the context, and so has the "
        "work per generated token.",
        "source": "seeds 000, 001, 002",
        "test": f"each pure SSM: state bytes identical at every context, and decode time at the longest context <= "
        f"{FLAT_RATIO}x the shortest (on the log-log line fitted through all contexts)",
    }
    grow_claim = {
        "id": "attention_growing_decode",
        "claim": "Attention's per-token inference grows with the context, and its KV cache grows linearly.",
        "source": "seeds 000, 002",
        "test": f"Transformer: decode time at the longest context >= {GROWS_RATIO}x the shortest (fitted line), "
        "and the KV cache's used bytes in proportion to the context (within 10%)",
    }
    measured, checks = [], []
    for arch in SSMS:
        rows = _decode_series(decode, arch)
        if len(rows) < 2:
            continue
        first, last = rows[0], rows[-1]
        ratio = _fitted_ratio(rows)
        same_state = len({r["state_bytes"] for r in rows}) == 1
        measured.append(
            f"{arch} {first['decode_ms_per_token']:.3g} -> {last['decode_ms_per_token']:.3g} ms (fitted "
            f"x{ratio:.2f}), state {'constant' if same_state else 'varies'} at {first['state_bytes']:,} B "
            f"({first['context_tokens']:,} -> {last['context_tokens']:,} tokens)"
        )
        checks.append(same_state and ratio <= FLAT_RATIO)
    out = [_verdict(flat_claim, measured, all(checks) if checks else None)]
    rows = _decode_series(decode, "transformer")
    if len(rows) < 2:
        return [*out, _verdict(grow_claim, [], None)]
    first, last = rows[0], rows[-1]
    ratio = _fitted_ratio(rows)
    context_ratio = last["context_tokens"] / max(first["context_tokens"], 1)
    used_ratio = last["state_used_bytes"] / max(first["state_used_bytes"], 1)
    measured = [
        f"transformer {first['decode_ms_per_token']:.3g} -> {last['decode_ms_per_token']:.3g} ms (fitted "
        f"x{ratio:.1f}); KV cache {first['state_used_bytes']:,} -> {last['state_used_bytes']:,} B (x{used_ratio:.1f} "
        f"for x{context_ratio:.0f} context)"
    ]
    linear_cache = abs(used_ratio / context_ratio - 1) <= 0.10
    return [*out, _verdict(grow_claim, measured, ratio >= GROWS_RATIO and linear_cache)]


def check_claims(accuracy: Accuracy, costs: dict[str, Any] | None) -> list[dict[str, Any]]:
    return accuracy_claims(accuracy) + cost_claims(costs)
