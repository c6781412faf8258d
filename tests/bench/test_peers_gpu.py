"""The GPU peers loader: a missing folder gives "not available", a package's own __init__ is never run, and the
library imports no peer anywhere but in this loader."""

import pathlib
import re
import sys

import pytest

import ssmkit
from ssmkit.bench.gpu import GpuPeers


def test_missing_folder_gives_not_available(tmp_path):
    peers = GpuPeers(str(tmp_path / "nope"), allow_installed=False)
    fn, note = peers.get("mamba_ssm", "mamba_ssm.ops.triton.ssd_combined", "mamba_chunk_scan_combined")
    assert fn is None
    assert note.startswith("not available: no mamba_ssm/ folder under") and "nope" in note


def test_disabled_peers_say_so(tmp_path):
    fn, note = GpuPeers(str(tmp_path), enabled=False).get("fla", "fla.ops.simple_gla.chunk", "chunk_simple_gla")
    assert fn is None and "--no-peers" in note


@pytest.fixture
def fake_peer(tmp_path):
    """tmp/peers/fakepeer_q7: an __init__ that would fail, a working submodule and one with a missing extension."""
    root = tmp_path / "peers" / "fakepeer_q7"
    (root / "ops").mkdir(parents=True)
    (root / "__init__.py").write_text('__version__ = "1.2.3"\nraise RuntimeError("the package __init__ ran")\n')
    (root / "ops" / "__init__.py").write_text("")
    (root / "ops" / "kernel.py").write_text("from fakepeer_q7.ops import helper\n\ndef f():\n    return helper.X\n")
    (root / "ops" / "helper.py").write_text("X = 42\n")
    (root / "ops" / "needs_ext.py").write_text("import fakepeer_q7_cuda\n")
    yield str(tmp_path / "peers")
    for name in [m for m in sys.modules if m.startswith("fakepeer_q7")]:
        del sys.modules[name]


def test_shim_imports_submodules_without_running_the_package_init(fake_peer):
    peers = GpuPeers(fake_peer, allow_installed=False)
    fn, note = peers.get("fakepeer_q7", "fakepeer_q7.ops.kernel", "f")
    assert fn() == 42
    assert "fakepeer_q7 1.2.3 from" in note
    missing, why = peers.get("fakepeer_q7", "fakepeer_q7.ops.needs_ext", "g")
    assert missing is None
    assert why.startswith("not available: g does not import (ModuleNotFoundError") and "fakepeer_q7_cuda" in why


def test_the_library_imports_peers_only_in_the_bench_loader():
    package = pathlib.Path(ssmkit.__file__).parent
    pattern = re.compile(r"^\s*(import|from)\s+(mamba_ssm|fla|causal_conv1d)\b", re.M)
    offenders = [str(p.relative_to(package)) for p in package.rglob("*.py") if pattern.search(p.read_text())]
    assert offenders == []
