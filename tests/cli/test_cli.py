import json
import subprocess
import sys

from ssmkit.cli import main


def test_env_lists_every_op_backend(capsys):
    assert main(["env"]) == 0
    out = capsys.readouterr().out
    for op in ("selective_scan", "ssd", "causal_conv1d", "rms_norm", "gated_rms_norm", "s4d_conv"):
        assert op in out
    assert "backend='auto' picks" in out


def test_bench_w0_small_run_writes_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    args = ["bench", "-w", "W0", "--lengths", "16", "--repeats", "1", "--no-peers", "--long-length", "64"]
    code = main([*args, "--out", str(out), "--markdown", str(tmp_path / "bench.md")])
    assert code == 0
    payload = json.loads(out.read_text())
    impls = {row["impl"] for row in payload["results"]}
    assert {"ssmkit Mamba", "ssmkit Mamba2", "ssmkit Mamba layer"} <= impls
    assert all(row["median_ms"] > 0 for row in payload["results"])
    assert payload["meta"]["commit"] and payload["meta"]["threads"] == 2
    assert "median_ms" in capsys.readouterr().out
    markdown = (tmp_path / "bench.md").read_text()
    assert markdown.startswith("### ") and "| ssmkit Mamba | 16 |" in markdown


def test_bad_options_exit_nonzero_with_a_message():
    done = subprocess.run([sys.executable, "-m", "ssmkit", "bench", "--lengths", "0"], capture_output=True, text=True)
    assert done.returncode == 2 and "--lengths: expected positive lengths" in done.stderr
    done = subprocess.run([sys.executable, "-m", "ssmkit", "bench", "-w", "W9"], capture_output=True, text=True)
    assert done.returncode == 2 and "invalid choice" in done.stderr
