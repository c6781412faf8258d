"""Cost measurements: row contents, state bytes from shapes, the CPU peak tracker on known allocations, the
log-log slope, the synthetic KV fill. Timings are never asserted."""

import dataclasses
import math

import pytest
import torch

from ssmkit import LanguageModel, ModelConfig
from ssmkit.compare import (
    DecodeCostRow,
    ForwardCostRow,
    cpu_peak_bytes,
    decode_cost,
    fill_kv_synthetic,
    fit_loglog_slope,
    forward_cost,
    kv_caches,
    peak_memory,
    state_bytes,
)

SUB = dict(mamba={"d_state": 4}, mamba2={"d_state": 8, "headdim": 16, "chunk_size": 16}, attention={"n_heads": 4})
D_MODEL, N_LAYER, VOCAB = 32, 2, 64
F32 = 4


def tiny(pattern: str) -> LanguageModel:
    return LanguageModel(ModelConfig(d_model=D_MODEL, n_layer=N_LAYER, vocab_size=VOCAB, layer_pattern=pattern, **SUB))


# bytes per layer, from the configs above (fp32 weights, fp32 SSM states)
MAMBA_BYTES = (64 * 3 + 64 * 4) * F32  # conv (b, d_inner, d_conv - 1) + ssm (b, d_inner, d_state)
MAMBA2_BYTES = ((64 + 2 * 8) * 3 + 4 * 16 * 8) * F32  # conv (b, d_inner + 2 G N, 3) + ssm (b, H, P, N)
KV_BYTES_PER_TOKEN = 2 * 4 * 8 * F32  # k and v: (b, h_kv, 1, head_dim)
INITIAL_CACHE = 256


def kv_capacity(context: int) -> int:
    capacity = INITIAL_CACHE
    while capacity < context:
        capacity *= 2
    return capacity


# ---- the CPU peak-memory tracker ---------------------------------------------------------------------------------
def test_cpu_peak_counts_a_known_allocation():
    def fn():
        return torch.empty(1000, 1000)  # 4e6 bytes, returned: still live at the end

    out, peak = cpu_peak_bytes(fn)
    assert out.shape == (1000, 1000)
    assert peak == 4_000_000


def test_cpu_peak_follows_allocations_and_frees_in_order():
    def fn():
        a = torch.empty(1000, 1000)  # 4e6
        b = torch.empty(500, 1000)  # 2e6: 6e6 live, the peak
        del a
        c = torch.empty(250, 1000)  # 1e6: 3e6 live
        del b
        return c

    _, peak = cpu_peak_bytes(fn)
    assert peak == 6_000_000


def test_cpu_peak_counts_only_bytes_allocated_during_the_call():
    before = torch.empty(2000, 1000)  # live before and after: not counted
    holder = [torch.empty(3000, 1000)]  # freed inside the call: the profiler cannot size it, so not subtracted

    def fn():
        holder.pop()
        return torch.empty(1000, 1000)  # 4e6

    _, peak = cpu_peak_bytes(fn)
    assert peak == 4_000_000 and before.numel() == 2_000_000
    _, peak = peak_memory(lambda: torch.empty(100, dtype=torch.float64), "cpu")
    assert peak == 800


# ---- slope -------------------------------------------------------------------------------------------------------
def test_fit_loglog_slope_recovers_the_exponent():
    lengths = [256, 512, 1024, 2048, 4096]
    assert fit_loglog_slope(lengths, [3e-6 * n**2 for n in lengths]) == pytest.approx(2.0, abs=1e-12)
    assert fit_loglog_slope(lengths, [0.7 * n for n in lengths], tail=None) == pytest.approx(1.0, abs=1e-12)


def test_fit_loglog_slope_uses_the_longest_lengths_and_drops_skipped():
    lengths = [4096, 64, 128, 256, 512, 1024, 2048]
    times = [None] + [5.0, 5.0, 5.0] + [1e-4 * n**2 for n in (512, 1024, 2048)]  # flat, then quadratic
    assert fit_loglog_slope(lengths, times, tail=3) == pytest.approx(2.0, abs=1e-12)
    with pytest.raises(ValueError, match="tail"):
        fit_loglog_slope(lengths, times, tail=1)
    with pytest.raises(ValueError, match="lengths, times"):
        fit_loglog_slope([1, 2], [1.0])
    with pytest.raises(ValueError, match="distinct"):
        fit_loglog_slope([8, 8, 16], [1.0, 2.0, None])


# ---- forward -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("pattern", ["M", "D", "A", "MA"])
def test_forward_cost_rows(pattern):
    rows = forward_cost(tiny(pattern), [32, 16], batch_size=2, repeats=1, warmup=0)
    assert [f.name for f in dataclasses.fields(ForwardCostRow)] == [
        "length",
        "batch_size",
        "forward_ms",
        "forward_min_ms",
        "peak_bytes",
        "repeats",
        "device",
        "skipped",
    ]
    assert [r.length for r in rows] == [16, 32]
    for r in rows:
        assert r.skipped is None and r.device == "cpu" and r.batch_size == 2 and r.repeats == 1
        assert r.forward_ms > 0 and r.forward_min_ms > 0
        assert r.peak_bytes >= 2 * r.length * VOCAB * F32  # the logits are live at the end


def test_forward_cost_skips_over_budget_lengths():
    rows = forward_cost(tiny("A"), [8, 1 << 20, 1 << 22], repeats=1, warmup=0, time_budget_s=0.0)
    assert rows[0].skipped is None and rows[0].forward_ms > 0
    for r in rows[1:]:
        assert r.forward_ms is None and r.peak_bytes is None
        assert "time budget" in r.skipped


def test_forward_cost_checks_arguments():
    with pytest.raises(ValueError, match="lengths"):
        forward_cost(tiny("M"), [])
    with pytest.raises(ValueError, match="lengths"):
        forward_cost(tiny("M"), [0, 8])
    with pytest.raises(ValueError, match="repeats"):
        forward_cost(tiny("M"), [8], repeats=0)
    with pytest.raises(TypeError, match="model"):
        forward_cost(torch.nn.Linear(2, 2), [8])


# ---- decode ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("pattern", "per_layer"), [("M", MAMBA_BYTES), ("D", MAMBA2_BYTES)])
def test_ssm_state_bytes_are_constant_across_contexts(pattern, per_layer):
    rows = decode_cost(tiny(pattern), [0, 7, 70], steps=2, warmup=0, prefill_chunk=32)
    assert [r.context for r in rows] == [0, 7, 70]
    for r in rows:
        assert isinstance(r, DecodeCostRow) and r.skipped is None and r.prefill == "real"
        assert r.decode_ms_per_token > 0 and r.steps == 2
        assert r.state_bytes == r.state_used_bytes == N_LAYER * per_layer
        assert r.kv_tokens == r.kv_capacity_tokens == 0
    assert rows[1].prefill_ms > 0


@pytest.mark.parametrize("prefill", ["synthetic-kv", "real"])
def test_attention_state_bytes_grow_with_context(prefill):
    contexts = [0, 100, 300]
    rows = decode_cost(tiny("A"), contexts, steps=2, warmup=0, prefill=prefill)
    for r, context in zip(rows, contexts):
        assert r.prefill == prefill and r.decode_ms_per_token > 0
        assert r.kv_tokens == context and r.kv_capacity_tokens == kv_capacity(context)
        assert r.state_used_bytes == N_LAYER * context * KV_BYTES_PER_TOKEN
        assert r.state_bytes == N_LAYER * kv_capacity(context) * KV_BYTES_PER_TOKEN
    assert rows[0].state_bytes < rows[2].state_bytes


def test_hybrid_decode_defaults_to_synthetic_kv():
    rows = decode_cost(tiny("MA"), [0, 300], steps=2, warmup=0)
    for r, context in zip(rows, [0, 300]):
        assert r.prefill == "synthetic-kv" and r.prefill_ms is None
        assert r.state_used_bytes == MAMBA_BYTES + context * KV_BYTES_PER_TOKEN
        assert r.state_bytes == MAMBA_BYTES + kv_capacity(context) * KV_BYTES_PER_TOKEN


def test_decode_cost_checks_arguments():
    with pytest.raises(ValueError, match="prefill"):
        decode_cost(tiny("M"), [0], prefill="fake")
    with pytest.raises(ValueError, match="contexts"):
        decode_cost(tiny("M"), [-1])
    with pytest.raises(ValueError, match="steps"):
        decode_cost(tiny("M"), [0], steps=0)


# ---- synthetic KV fill -------------------------------------------------------------------------------------------
def test_synthetic_fill_sets_lengths_and_a_step_runs():
    model = tiny("MA")
    state = model.init_state(2)
    fill_kv_synthetic(state, 300, generator=torch.Generator().manual_seed(1))
    (cache,) = kv_caches(state)
    assert cache.length == state.seqlen == 300 and cache.capacity == 512
    assert cache.k.shape == (2, 4, 512, 8) and cache.k.dtype == torch.float32
    assert torch.isfinite(cache.k[:, :, :300]).all() and torch.isfinite(cache.v[:, :, :300]).all()
    with torch.no_grad():
        logits = model.step(torch.tensor([1, 2]), state)
    assert logits.shape == (2, VOCAB) and torch.isfinite(logits).all()
    assert cache.length == state.seqlen == 301
    counted = state_bytes(state)
    assert counted.used_bytes == MAMBA_BYTES * 2 + 301 * KV_BYTES_PER_TOKEN * 2


def test_synthetic_fill_refuses_a_used_state():
    model = tiny("A")
    state = model.init_state(1)
    with torch.no_grad():
        model(torch.tensor([[1, 2, 3]]), state=state)
    with pytest.raises(ValueError, match="fresh state"):
        fill_kv_synthetic(state, 10)
    with pytest.raises(ValueError, match="context"):
        fill_kv_synthetic(model.init_state(1), -1)


def test_synthetic_fill_matches_a_real_prefill_in_shape():
    model = tiny("A")
    real, synthetic = model.init_state(1), model.init_state(1)
    with torch.no_grad():
        model(torch.randint(0, VOCAB, (1, 300)), state=real)
    fill_kv_synthetic(synthetic, 300)
    assert state_bytes(real) == state_bytes(synthetic)
    assert real.seqlen == synthetic.seqlen == 300
    for a, b in zip(kv_caches(real), kv_caches(synthetic)):
        assert a.k.shape == b.k.shape and a.v.shape == b.v.shape and a.length == b.length
    assert not math.isclose(float(kv_caches(real)[0].k[0, 0, 0, 0]), float(kv_caches(synthetic)[0].k[0, 0, 0, 0]))
