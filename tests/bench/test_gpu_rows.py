"""The GPU workloads' rows, built from fake timings on the CPU: fractions of the ceilings, targets, failures, the
summary and the report. Nothing here times anything or needs a GPU; the cases' setups are never called unless a
test gives its own."""

import pytest

from ssmkit.bench import report
from ssmkit.bench.gpu import GPU_WORKLOADS, GpuPeers, cases_for, check_lengths, describe, scan, ssd
from ssmkit.bench.gpu.common import TOKENS, Case, Ceilings, build_row, crossover, ratio_lines, run_case
from ssmkit.bench.gpu.summary import summarize

CEILINGS = Ceilings(copy_TBps=4.0, matmul_TFLOPs=800.0, exp_per_s=4e12)


class FakeTimer:
    """Stands in for DeviceTimer: every call 'takes' ms_per_call; the peak is 1 GiB."""

    def __init__(self, ms_per_call=2.0):
        self.ms_per_call, self.calls = ms_per_call, 0

    def allocated(self):
        return 0

    def peak_bytes(self, fn, base):
        fn()
        return 2**30

    def graph(self, fn):
        return fn

    def time_ms(self, fn):
        fn()
        self.calls += 1
        return self.ms_per_call

    def cleanup(self):
        pass


@pytest.fixture
def no_peers(tmp_path):
    return GpuPeers(str(tmp_path / "missing"), allow_installed=False)


def test_row_reports_fractions_of_each_ceiling_and_the_target():
    case = Case(
        "W9", "impl", "fwd", 1024, 64, setup=None, bytes_moved=4e9, flops=4e11, exps=2e9, target_ms=1.5, tokens=64
    )
    row = build_row(case, 2.0, 3 * 2**30, CEILINGS)
    assert row["median_ms"] == 2.0 and row["target_ms"] == 1.5 and row["met"] == "no"
    assert row["copy_frac"] == 0.5  # 4e9 bytes in 2 ms = 2 TB/s of 4
    assert row["mm_frac"] == 0.25  # 4e11 FLOPs in 2 ms = 200 TFLOP/s of 800
    assert row["exp_frac"] == 0.25  # 2e9 exps in 2 ms = 1e12/s of 4e12
    assert row["peak_gib"] == 3.0 and row["tokens_per_s"] == 32000
    assert build_row(case, 1.0, None, CEILINGS)["met"] == "yes"


def test_target_may_depend_on_the_measured_ceilings():
    case = Case("W5", "m", "decode", None, 1, setup=None, target_ms=lambda c: 1e9 / (c.copy_TBps * 1e12) * 1e3)
    row = build_row(case, 0.5, None, CEILINGS)
    assert row["target_ms"] == 0.25 and row["met"] == "no"


class OutOfResources(Exception):
    """Named like Triton's: the runner must record it, not stop."""


def test_a_failing_implementation_becomes_a_note_and_the_run_goes_on():
    def broken():
        raise OutOfResources("out of resource: shared memory, Required: 262144, Hardware limit: 232448")

    cases = [
        Case("W1", "broken", "fwd", 1024, 64, setup=broken, target_ms=1.2),
        Case("W1", "works", "fwd", 1024, 64, setup=lambda: lambda: None, target_ms=1.2),
        Case("W1", "peer", "fwd", 1024, 64, setup=None, note="not available: no mamba_ssm/ folder"),
    ]
    rows = [run_case(c, FakeTimer(), CEILINGS) for c in cases]
    assert rows[0]["note"].startswith("failed: OutOfResources: out of resource: shared memory")
    assert rows[0].get("median_ms") is None and rows[0]["target_ms"] == 1.2
    assert rows[1]["median_ms"] == 2.0 and rows[1]["met"] == "no" and rows[1]["peak_gib"] == 1.0
    assert rows[2]["note"].startswith("not available") and "median_ms" not in rows[2]
    assert "not available" in describe(rows[2]) and "2.0 ms (target 1.2: no)" in describe(rows[1])


def test_a_failing_graph_capture_falls_back_to_eager_timing():
    class NoGraphs(FakeTimer):
        def graph(self, fn):
            raise RuntimeError("operation not permitted when stream is capturing")

    case = Case("W5", "step", "step", None, 1, setup=lambda: lambda: None, graph=True, note="CUDA graph")
    row = run_case(case, NoGraphs(), CEILINGS)
    assert row["median_ms"] == 2.0 and "capture failed (RuntimeError" in row["note"]


def test_a_check_adds_to_the_note_and_a_failing_check_keeps_the_timing():
    ok = Case("W2", "a", "fwd", 1024, 64, setup=lambda: lambda: None, check=lambda: "rel err 1.0e-03")
    bad = Case("W2", "b", "fwd", 1024, 64, setup=lambda: lambda: None, check=lambda: 1 / 0)
    assert run_case(ok, FakeTimer(), CEILINGS)["note"].endswith("rel err 1.0e-03")
    row = run_case(bad, FakeTimer(), CEILINGS)
    assert row["median_ms"] == 2.0 and "check failed (ZeroDivisionError" in row["note"]


def test_w1_cases_keep_the_token_count_and_the_guide_targets(no_peers):
    cases = scan.cases([1024, 4096], no_peers)
    assert [(c.impl, c.mode, c.L, c.batch) for c in cases[:4]] == [
        ("ssmkit triton", "fwd", 1024, 64),
        ("mamba_ssm selective_scan_fn", "fwd", 1024, 64),
        ("ssmkit triton", "fwd+bwd", 1024, 64),
        ("mamba_ssm selective_scan_fn", "fwd+bwd", 1024, 64),
    ]
    assert all(c.L * c.batch == TOKENS for c in cases)
    ours = [c for c in cases if c.impl == "ssmkit triton"]
    assert {c.mode: c.target_ms for c in ours} == {"fwd": 1.2, "fwd+bwd": 6.0}
    peer = [c for c in cases if c.impl.startswith("mamba_ssm")]
    assert all(c.setup is None and c.note.startswith("not available") for c in peer)
    # one exp per (token, channel, state): 65,536 * 4096 * 16 = 4.3e9 in the forward
    fwd = build_row(ours[0], 1.0, None, Ceilings(4.0, 800.0, 4.294967296e12))
    assert fwd["exp_frac"] == 1.0
    assert fwd["copy_frac"] == pytest.approx((4 * 4096 + 2 * 16) * 2 * TOKENS / 1e-3 / 4e12, rel=1e-3)


def test_w2_lists_both_peers_and_checks_each_forward_once(no_peers):
    cases = ssd.cases([1024, 2048], no_peers)
    impls = {c.impl for c in cases}
    assert impls == {"ssmkit triton", "mamba_ssm chunk_scan_combined", "fla chunk_simple_gla"}
    assert [c.impl for c in cases if c.check is not None] == ["ssmkit triton"]  # peers absent: nothing to check
    assert {c.target_ms for c in cases if c.impl == "ssmkit triton"} == {1.0, 4.0}


@pytest.mark.parametrize("workload", GPU_WORKLOADS)
def test_every_gpu_workload_builds_its_cases_without_a_gpu(workload, no_peers):
    cases = cases_for(workload, [1024, 4096], no_peers)
    assert cases and all(c.workload == workload for c in cases)
    rows = [build_row(c, 1.0, 2**30, CEILINGS) if c.setup else run_case(c, FakeTimer(), CEILINGS) for c in cases]
    assert all(r["note"] for r in rows)
    assert any(r.get("target_ms") for r in rows) == (workload != "W3")


def test_gpu_lengths_must_divide_the_token_count():
    check_lengths([1024, 65536])
    with pytest.raises(ValueError, match="L must divide 65536; got \\[3000\\]"):
        check_lengths([1024, 3000])


def _rows(impl, workload, times, mode="fwd"):
    return [{"workload": workload, "impl": impl, "mode": mode, "L": L, "median_ms": ms} for L, ms in times.items()]


def test_crossover_is_the_shortest_length_from_which_ours_stays_faster():
    ours = _rows("ssmkit triton", "W2", {1024: 2.0, 2048: 2.0, 4096: 2.0, 16384: 2.0})
    attention = _rows("torch SDPA", "W3", {1024: 0.6, 2048: 2.5, 4096: 1.9, 16384: 7.4})
    line = crossover(ours + attention, ("W2", "ssmkit triton"), ("W3", "torch SDPA"), "fwd")
    assert "faster from L = 16384 on" in line
    slow = _rows("ssmkit triton", "W2", {1024: 9.0, 2048: 9.0})
    pair = (("W2", "ssmkit triton"), ("W3", "torch SDPA"))
    assert "slower at every measured L" in crossover(slow + attention, *pair, "fwd")
    assert crossover(ours, *pair, "fwd") is None


def test_summary_gives_peer_ratios_and_the_block_memory_verdict():
    rows = _rows("ssmkit triton", "W2", {1024: 1.0}) + _rows("mamba_ssm chunk_scan_combined", "W2", {1024: 2.5})
    block = {"workload": "W6", "mode": "fwd+bwd", "L": 8192}
    rows += [
        {**block, "impl": "ssmkit Mamba2", "median_ms": 20.0, "peak_gib": 6.5},
        {**block, "impl": "mamba_ssm Mamba2", "median_ms": 28.0, "peak_gib": 7.0},
    ]
    assert ratio_lines(rows, "W2", "ssmkit triton", "mamba_ssm chunk_scan_combined") == [
        "W2 ssmkit triton speed vs mamba_ssm chunk_scan_combined (their time / ours): fwd L=1024: 2.50x"
    ]
    memory = [x for x in summarize(rows) if x.startswith("W6 Mamba2 fwd+bwd peak memory")]
    assert memory == [
        "W6 Mamba2 fwd+bwd peak memory: ssmkit Mamba2 6.5 GiB, mamba_ssm 7.0 GiB "
        "(target: no more than mamba_ssm's): met"
    ]
    # without a mamba_ssm Mamba row the guide's figure stands in; the unfused layer gets its own line
    rows += [
        {**block, "impl": "ssmkit Mamba", "median_ms": 60.0, "peak_gib": 6.4},
        {**block, "impl": "ssmkit Mamba unfused", "median_ms": 52.0, "peak_gib": 5.9},
    ]
    assert [x for x in summarize(rows) if x.startswith("W6 Mamba fwd+bwd peak memory")] == [
        "W6 Mamba fwd+bwd peak memory: ssmkit Mamba 6.4 GiB, mamba_ssm (guide's H200 run) 5.98 GiB "
        "(target: no more than mamba_ssm's): not met",
        "W6 Mamba fwd+bwd peak memory: ssmkit Mamba unfused 5.9 GiB, mamba_ssm (guide's H200 run) 5.98 GiB "
        "(target: no more than mamba_ssm's): met",
    ]


def test_report_prints_and_writes_gpu_rows_with_ceilings_and_summary():
    case = Case("W1", "ssmkit triton", "fwd", 1024, 64, setup=None, bytes_moved=4e9, target_ms=1.2)
    rows = [build_row(case, 2.0, 2**30, CEILINGS)]
    table = report.format_table(rows)
    for column in ("mode", "median_ms", "target_ms", "met", "peak_gib", "copy_frac"):
        assert column in table.splitlines()[0]
    assert "mm_frac" not in table  # no row has it
    meta = {
        "date": "2026-11-22 12:00 UTC",
        "commit": "abc1234",
        "device": "NVIDIA H200",
        "torch": "2.11.0",
        "triton": "3.6.0",
        "threads": 2,
        "ceilings": CEILINGS.as_dict(),
    }
    markdown = report.format_markdown(rows, meta, ["W2 ssmkit triton vs W3 torch SDPA, fwd: faster from L = 2048 on"])
    assert markdown.startswith("### 2026-11-22 12:00 UTC, commit abc1234, NVIDIA H200, torch 2.11.0, triton 3.6.0")
    assert "device copy 4.0 TB/s" in markdown and "measured: Triton exp2 kernel" in markdown
    assert "| W1 | ssmkit triton | fwd | 1024 | 64 | 2.0 | 1.2 | no | 1.0 | 0.5 |" in markdown
    assert markdown.rstrip().endswith("- W2 ssmkit triton vs W3 torch SDPA, fwd: faster from L = 2048 on")
