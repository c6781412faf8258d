"""The exp2 ceiling kernel computes what it claims (Triton's interpreter, in a fresh process so that
TRITON_INTERPRET=1 is set before triton is imported)."""

import os
import subprocess
import sys

import pytest

pytest.importorskip("triton")

CODE = """
import torch
from ssmkit.bench.gpu.exp_kernel import CHAINS, exp2_chains, exp2_chains_ref
out = torch.full((64,), float("nan"))
count = exp2_chains(out, iters=3, block=32)
assert count == 64 * 3 * CHAINS, count
err = (out.double() - exp2_chains_ref(64, 3)).abs().max().item()
assert err < 1e-5, err
print("ok")
"""


@pytest.mark.triton_interpret
def test_exp2_chains_match_the_host_computation():
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    done = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-2000:]
