"""Measured costs of a language model, per architecture, on the device its weights are on: the seed documents'
claims (attention: forward quadratic in length, KV cache linear in context; SSM: forward linear, decode time and
state size constant) checked by measurement rather than asserted.

    rows = forward_cost(model, [1024, 2048, 4096])       # median no-grad forward ms and peak bytes per length
    slope = fit_loglog_slope([r.length for r in rows], [r.forward_ms for r in rows])   # ~2 attention, ~1 SSM
    rows = decode_cost(model, [0, 4096, 65536])          # ms per `model.step` token and state bytes per context

Lengths whose extrapolated cost exceeds `time_budget_s` are skipped and say why, instead of hanging.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial

import torch

from ..bench.timing import time_fn
from ..models.lm import LanguageModel, ModelState
from .costs_memory import peak_memory
from .costs_state import fill_kv_synthetic, kv_caches, state_bytes

PREFILL_METHODS = ("auto", "real", "synthetic-kv")


@dataclass(frozen=True)
class ForwardCostRow:
    length: int
    batch_size: int
    forward_ms: float | None  # median wall time of one no-grad forward; None when skipped
    forward_min_ms: float | None
    peak_bytes: int | None  # peak allocated above the bytes live before the forward, logits included
    repeats: int
    device: str
    skipped: str | None = None  # why the length was not run


@dataclass(frozen=True)
class DecodeCostRow:
    context: int  # tokens in the state before the timed steps (each step then adds one)
    batch_size: int
    decode_ms_per_token: float | None  # median wall time of one model.step; None when skipped
    state_bytes: int | None  # every state tensor, KV caches at their allocated capacity
    state_used_bytes: int | None  # KV caches counted at their valid `length` tokens
    kv_tokens: int | None  # KV cache length (0 without attention)
    kv_capacity_tokens: int | None  # KV cache capacity: doubles when full
    prefill: str  # "real": the context was run through the model; "synthetic-kv": see fill_kv_synthetic
    prefill_ms: float | None  # wall time of the real prefill (None for synthetic-kv)
    steps: int
    device: str
    skipped: str | None = None


def forward_cost(
    model: LanguageModel,
    lengths: Sequence[int],
    batch_size: int = 1,
    repeats: int = 5,
    *,
    warmup: int = 1,
    time_budget_s: float = 60.0,
    seed: int = 0,
) -> list[ForwardCostRow]:
    """Median wall time and peak memory of `model(ids)` under no_grad at each length, shortest first.

    Timing: `ssmkit.bench.timing.time_fn` (CUDA events on CUDA, perf_counter on CPU), `warmup` untimed runs then
    `repeats` timed ones. Memory: one more run under `peak_memory` (CUDA: max_memory_allocated minus baseline;
    CPU: the running peak of the profiler's allocation events). Before each length its time is extrapolated from
    the two previous lengths (log-log slope clamped to [1, 3]; with one previous length, exponent 2 for a model
    with attention, 1 without); if (warmup + repeats + 1) forwards would exceed `time_budget_s`, it and every
    longer length are skipped. A CUDA out-of-memory error skips the length and the longer ones too.
    """
    lengths = _check_lengths("lengths", lengths, minimum=1)
    _check_positive_int("batch_size", batch_size)
    _check_positive_int("repeats", repeats)
    device = _device(model)
    nominal = 2.0 if _has_attention(model) else 1.0
    gen = torch.Generator().manual_seed(seed)
    measured: list[tuple[int, float]] = []
    rows: list[ForwardCostRow] = []
    skip: str | None = None
    for length in lengths:
        if skip is None and measured:
            est_ms = _extrapolate_ms(measured, length, nominal)
            est_s = est_ms * (warmup + repeats + 1) / 1e3
            if est_s > time_budget_s:
                skip = f"estimated {est_s:.1f} s > time budget {time_budget_s:g} s (forward ~{est_ms:.0f} ms)"
        if skip is not None:
            rows.append(ForwardCostRow(length, batch_size, None, None, None, repeats, str(device), skip))
            continue
        ids = torch.randint(0, model.config.vocab_size, (batch_size, length), generator=gen).to(device)  # (b, l)
        try:
            with torch.no_grad():
                timing = time_fn(partial(model, ids), device, warmup=warmup, repeats=repeats)
                _, peak = peak_memory(partial(model, ids), device)
        except _OOM_ERRORS as e:
            skip = f"out of memory at length {length}: {str(e).splitlines()[0]}"
            _release(device)
            rows.append(ForwardCostRow(length, batch_size, None, None, None, repeats, str(device), skip))
            continue
        measured.append((length, timing.median_ms))
        rows.append(
            ForwardCostRow(length, batch_size, timing.median_ms, timing.min_ms, peak, timing.repeats, str(device))
        )
    return rows


def fit_loglog_slope(lengths: Sequence[float], times: Sequence[float | None], tail: int | None = 3) -> float:
    """Least-squares slope of log(time) against log(length) over the `tail` longest lengths (all when None).

    The asymptotic exponent: about 2 for attention once its L^2 term dominates, about 1 for an SSM. Pairs whose
    time is None (skipped rows) are dropped first.
    """
    if len(lengths) != len(times):
        raise ValueError(f"lengths, times: expected the same number of entries, got {len(lengths)} and {len(times)}")
    if tail is not None and (not isinstance(tail, int) or isinstance(tail, bool) or tail < 2):
        raise ValueError(f"tail: expected an int >= 2 or None, got {tail!r}")
    pairs = sorted((float(n), float(t)) for n, t in zip(lengths, times) if t is not None)
    for n, t in pairs:
        if not (n > 0 and t > 0 and math.isfinite(n) and math.isfinite(t)):
            raise ValueError(f"lengths, times: expected finite positive values, got length {n}, time {t}")
    if tail is not None:
        pairs = pairs[-tail:]
    xs = [math.log(n) for n, _ in pairs]
    ys = [math.log(t) for _, t in pairs]
    if len(set(xs)) < 2:
        raise ValueError(f"lengths: expected at least 2 distinct lengths with a time, got {[n for n, _ in pairs]}")
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys))
    return sxy / sxx


def decode_cost(
    model: LanguageModel,
    contexts: Sequence[int],
    steps: int = 32,
    batch_size: int = 1,
    *,
    warmup: int = 2,
    prefill: str = "auto",
    prefill_chunk: int = 4096,
    time_budget_s: float = 120.0,
    seed: int = 0,
) -> list[DecodeCostRow]:
    """Median time of one `model.step` token once the state holds `context` tokens, and that state's bytes.

    prefill="real": the context is run through the model (`model(ids, state=state)` in pieces of
    `prefill_chunk` tokens, so the logits stay small). prefill="synthetic-kv": `fill_kv_synthetic` writes random
    keys/values of `context` tokens into every KV cache and sets the lengths (SSM states stay initial), since a
    real prefill of attention is quadratic. "auto": real for models without attention, synthetic-kv with it.
    The bytes are counted from the state objects right after the prefill (`state_bytes`); then `warmup` untimed
    and `steps` timed steps run, each adding one token. Contexts whose extrapolated prefill + decode time exceeds
    `time_budget_s` are skipped, and every longer one too.
    """
    contexts = _check_lengths("contexts", contexts, minimum=0)
    _check_positive_int("steps", steps)
    _check_positive_int("batch_size", batch_size)
    _check_positive_int("prefill_chunk", prefill_chunk)
    if prefill not in PREFILL_METHODS:
        raise ValueError(f"prefill: expected one of {PREFILL_METHODS}, got {prefill!r}")
    device = _device(model)
    attention = _has_attention(model)
    method = ("synthetic-kv" if attention else "real") if prefill == "auto" else prefill
    gen = torch.Generator().manual_seed(seed)
    prefills: list[tuple[int, float]] = []
    last: tuple[int, float] | None = None  # (context, ms per token) of the previous row
    rows: list[DecodeCostRow] = []
    skip: str | None = None
    for context in contexts:
        if skip is None and (prefills or last):
            est_s = 0.0
            if method == "real" and prefills:
                est_s += _extrapolate_ms(prefills, context, 2.0 if attention else 1.0) / 1e3
            if last is not None:
                # attention's step reads the whole cache: linear in the context once it dominates
                growth = max(1.0, context / last[0]) if attention and last[0] > 0 else 1.0
                est_s += last[1] * growth * (warmup + steps) / 1e3
            if est_s > time_budget_s:
                skip = f"estimated {est_s:.1f} s > time budget {time_budget_s:g} s"
        if skip is not None:
            rows.append(_skipped_decode_row(context, batch_size, method, steps, device, skip))
            continue
        try:
            with torch.no_grad():
                state = model.init_state(batch_size)
                prefill_ms = None
                if method == "real":
                    prefill_ms = _real_prefill(model, state, batch_size, context, prefill_chunk, gen, device)
                    if context:
                        prefills.append((context, prefill_ms))
                else:
                    fill_kv_synthetic(state, context)
                counted = state_bytes(state)
                token = torch.randint(0, model.config.vocab_size, (batch_size,), generator=gen).to(device)  # (b,)
                timing = time_fn(partial(model.step, token, state), device, warmup=warmup, repeats=steps)
        except _OOM_ERRORS as e:
            skip = f"out of memory at context {context}: {str(e).splitlines()[0]}"
            _release(device)
            rows.append(_skipped_decode_row(context, batch_size, method, steps, device, skip))
            continue
        last = (context, timing.median_ms)
        rows.append(
            DecodeCostRow(
                context=context,
                batch_size=batch_size,
                decode_ms_per_token=timing.median_ms,
                state_bytes=counted.allocated_bytes,
                state_used_bytes=counted.used_bytes,
                kv_tokens=counted.kv_tokens,
                kv_capacity_tokens=counted.kv_capacity_tokens,
                prefill=method,
                prefill_ms=prefill_ms,
                steps=timing.repeats,
                device=str(device),
            )
        )
    return rows


# ---- helpers ---------------------------------------------------------------------------------------------------
_OOM_ERRORS = (getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError),)


def _real_prefill(
    model: LanguageModel,
    state: ModelState,
    batch_size: int,
    context: int,
    chunk: int,
    gen: torch.Generator,
    device: torch.device,
) -> float:
    """Run `context` random tokens through the model into `state`; returns the wall time in ms."""
    _sync(device)
    t0 = time.perf_counter()
    for start in range(0, context, chunk):
        n = min(chunk, context - start)
        ids = torch.randint(0, model.config.vocab_size, (batch_size, n), generator=gen).to(device)  # (b, n)
        model(ids, state=state)
    _sync(device)
    return (time.perf_counter() - t0) * 1e3


def _extrapolate_ms(measured: list[tuple[int, float]], length: int, nominal_exponent: float) -> float:
    """Time at `length` from the last measured (length, ms) points, as a power law with a clamped exponent."""
    exponent = nominal_exponent
    if len(measured) >= 2:
        (n0, t0), (n1, t1) = measured[-2:]
        if n1 > n0 and t0 > 0 and t1 > 0:
            exponent = math.log(t1 / t0) / math.log(n1 / n0)
    exponent = min(max(exponent, 1.0), 3.0)
    n1, t1 = measured[-1]
    return t1 * (length / n1) ** exponent


def _skipped_decode_row(
    context: int, batch_size: int, method: str, steps: int, device: torch.device, reason: str
) -> DecodeCostRow:
    return DecodeCostRow(context, batch_size, None, None, None, None, None, method, None, steps, str(device), reason)


def _has_attention(model: LanguageModel) -> bool:
    return bool(kv_caches(model.init_state(1)))


def _device(model: LanguageModel) -> torch.device:
    if not isinstance(model, LanguageModel):
        raise TypeError(f"model: expected a LanguageModel, got {type(model).__name__}")
    return model.embedding.weight.device


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _release(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _check_positive_int(name: str, value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{name}: expected a positive int, got {value!r}")


def _check_lengths(name: str, values: Sequence[int], *, minimum: int) -> list[int]:
    """Sorted, de-duplicated ints >= minimum."""
    if isinstance(values, (int, str)) or not isinstance(values, Sequence) or not values:
        raise ValueError(f"{name}: expected a non-empty sequence of ints >= {minimum}, got {values!r}")
    for v in values:
        if not isinstance(v, int) or isinstance(v, bool) or v < minimum:
            raise ValueError(f"{name}: expected ints >= {minimum}, got {v!r} in {list(values)}")
    return sorted(set(values))
