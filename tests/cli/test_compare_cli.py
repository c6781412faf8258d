"""`ssmkit compare` end to end at --quick size: the report folder, the accuracy structure, numbers that come from
the evaluation, and bad options that exit 2 with a message."""

import json
import os
import subprocess
import sys

import pytest

from ssmkit import LanguageModel, ModelConfig
from ssmkit.cli import main
from ssmkit.compare.accuracy import build_tasks, score
from ssmkit.compare.archs import ARCHITECTURES
from ssmkit.compare.settings import SCALES, TaskPlan
from ssmkit.training import latest_checkpoint, load_checkpoint

TASKS = ("selective_copying", "needle", "induction_heads")
PLOTS = ("accuracy.png", "forward_time.png", "forward_memory.png", "decode_latency.png", "state_size.png")


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("compare") / "report"
    assert main(["compare", "--quick", "--tasks", ",".join(TASKS), "--out", str(out)]) == 0
    return out


def test_quick_run_writes_the_report_folder(report):
    files = set(os.listdir(report))
    assert {"report.md", "results.json", "runs", "induction_heads_by_length.png", *PLOTS} <= files
    for png in PLOTS:
        assert (report / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = (report / "report.md").read_text()
    for heading in ("claims at this scale", "Accuracy", "Parameter counts", "Forward time", "Decode", "slopes"):
        assert heading in text
    assert "reproduced" in text and "![accuracy.png](accuracy.png)" in text


def test_results_json_structure(report):
    results = json.loads((report / "results.json").read_text())
    archs = list(ARCHITECTURES)
    assert results["archs"] == archs and results["tasks"] == list(TASKS)
    assert set(results["accuracy"]) == set(TASKS)
    for task in TASKS:
        assert set(results["accuracy"][task]) == set(archs)
        assert all(0.0 <= v <= 1.0 for v in results["accuracy"][task].values())
    meta = results["meta"]
    assert meta["threads"] == 1 and meta["device"] == "cpu" and meta["commit"] and meta["date"]
    assert meta["wall_time_s"] > 0 and results["seed"] == 0
    forward, decode = results["costs"]["forward"], results["costs"]["decode"]
    assert {"length_tokens", "forward_ms", "peak_memory_bytes"} <= set(forward[0])
    assert {"context_tokens", "decode_ms_per_token", "state_bytes", "state_used_bytes"} <= set(decode[0])
    assert set(results["costs"]["slopes"]["forward_time"]) == set(archs)
    for row in results["param_counts"].values():  # matched within the scale's tolerance
        assert all(abs(r["relative_error"]) <= SCALES["quick"].param_tolerance for r in row.values())
    assert set(results["configs"]["needle"]) == set(archs)
    ids = {c["id"] for c in results["claims"]}
    assert {"selective_copying", "needle_attention", "attention_quadratic_time", "ssm_constant_decode"} <= ids


def test_accuracy_is_what_the_saved_weights_score(report):
    """Reload each run's final weights and score them again on the same held-out examples: the numbers in
    results.json are the evaluation's, not constants."""
    results = json.loads((report / "results.json").read_text())
    scale = SCALES["quick"]
    for task in ("selective_copying", "induction_heads"):
        plan = TaskPlan(**{k: v for k, v in results["config"]["tasks"][task].items() if k != "train_tasks"})
        _, evals = build_tasks(task, plan)
        for arch in ("mamba", "transformer"):
            model = LanguageModel(ModelConfig.from_dict(results["configs"][task][arch]))
            load_checkpoint(latest_checkpoint(report / "runs" / task / arch), model)
            again = score(model, evals, plan, seed=results["seed"])
            assert [e.exact_match for e in again] == list(results["accuracy_by_setting"][task][arch].values())
            assert again[0].exact_match == results["accuracy"][task][arch]
            assert again[0].examples == scale.tasks[task].eval_examples


def test_a_failed_run_leaves_the_previous_report(report, tmp_path, monkeypatch):
    import ssmkit.compare.run as run_module

    before = (report / "results.json").read_text()

    def broken(*args, **kwargs):
        raise RuntimeError("measurement failed")

    monkeypatch.setattr(run_module, "measure_costs", broken)
    with pytest.raises(RuntimeError):
        main(["compare", "--quick", "--tasks", "needle", "--archs", "mamba", "--out", str(report)])
    assert (report / "results.json").read_text() == before
    assert not [p for p in os.listdir(report.parent) if p.startswith(".report")]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--tasks", "copying"], "--tasks: unknown task(s) copying; known: selective_copying"),
        (["--archs", "mamba,rwkv"], "--archs: unknown architecture(s) rwkv"),
        (["--tasks", "selective_copying", "--seq-len", "3"], "seq_len = 3 is too short"),
        (["--lengths", "64"], "--lengths: expected at least 2 different values"),
        (["--steps", "0"], "--steps: expected an integer >= 1"),
        (["--skip-training", "--skip-costs"], "leave nothing to run"),
    ],
)
def test_bad_options_exit_2_with_a_message(args, message, tmp_path, capsys):
    assert main(["compare", "--quick", "--out", str(tmp_path / "r"), *args]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_bad_option_from_the_shell_and_a_folder_that_is_not_a_report(tmp_path):
    (tmp_path / "notes.txt").write_text("keep me")
    done = subprocess.run(
        [sys.executable, "-m", "ssmkit", "compare", "--quick", "--out", str(tmp_path)], capture_output=True, text=True
    )
    assert done.returncode == 2 and "refusing to replace it" in done.stderr
    assert (tmp_path / "notes.txt").read_text() == "keep me"
    done = subprocess.run(
        [sys.executable, "-m", "ssmkit", "compare", "--scale", "huge"], capture_output=True, text=True
    )
    assert done.returncode == 2 and "invalid choice: 'huge'" in done.stderr
