"""`ssmkit bench` on a machine without CUDA: GPU workloads fail at once with a message naming the missing device."""

import json

import pytest
import torch

from ssmkit.cli import main

needs_no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")


@needs_no_cuda
def test_gpu_workloads_without_cuda_exit_2_naming_the_device(tmp_path, capsys):
    out = tmp_path / "gpu.json"
    code = main(["bench", "--workloads", "W1,W2", "--lengths", "1024,4096", "--out", str(out), "--peers-dir", "x"])
    assert code == 2
    err = capsys.readouterr().err
    assert "W1, W2: GPU workloads need a CUDA device" in err and "torch.cuda.is_available() is False" in err
    assert not out.exists()


@needs_no_cuda
def test_one_gpu_workload_among_cpu_ones_still_fails_before_running(tmp_path, capsys):
    assert main(["bench", "-w", "W0", "-w", "W5", "--out", str(tmp_path / "b.json")]) == 2
    assert "W5: GPU workloads need a CUDA device" in capsys.readouterr().err


def test_unknown_workload_in_a_list_is_rejected(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "--workloads", "W1,W7"])
    assert exit_info.value.code == 2
    assert "expected comma-separated ids from W0, W1" in capsys.readouterr().err


def test_lengths_take_commas_and_spaces(tmp_path):
    out = tmp_path / "w0.json"
    args = ["bench", "--workloads", "W0", "--lengths", "16,32", "24", "--repeats", "1", "--no-peers"]
    assert main([*args, "--long-length", "0", "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["results"]
    assert sorted({r["L"] for r in rows}) == [16, 24, 32]


def test_out_folder_is_created(tmp_path):
    out = tmp_path / "new" / "folder" / "w0.json"
    args = ["bench", "-w", "W0", "--lengths", "16", "--repeats", "1", "--no-peers", "--long-length", "0"]
    assert main([*args, "--out", str(out)]) == 0
    assert json.loads(out.read_text())["results"]
