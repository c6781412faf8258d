"""The selective scan backward's reduce-scatter on its own: per group of 32 rows (a warp's lanes), every value of two
(BD, NP) tiles summed over the rows, each sum held by the lanes the ids name and added once (the owner mask)."""

import pytest
import torch

triton = pytest.importorskip("triton")
tl = triton.language

from ssmkit.ops.selective_scan.triton_bwd import _reduce_scatter, _scatter_owner  # noqa: E402
from ssmkit.ops.selective_scan.triton_fwd import _state_index  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@triton.jit
def _scatter_kernel(a_ptr, b_ptr, sums_ptr, ids_ptr, own_ptr, BD: tl.constexpr, NP: tl.constexpr):
    rows = tl.arange(0, BD)
    offs_n = _state_index(NP, NP)  # the kernels' order of the states within a thread
    a = tl.load(a_ptr + rows[:, None] * NP + offs_n[None, :])
    b = tl.load(b_ptr + rows[:, None] * NP + offs_n[None, :])
    sums, ids = _reduce_scatter(a, b, offs_n, BD)
    own = _scatter_owner(ids, NP, BD)
    K: tl.constexpr = sums.shape[1]
    out = rows[:, None] * K + tl.arange(0, K)[None, :]
    tl.store(sums_ptr + out, sums)
    tl.store(ids_ptr + out, ids)
    tl.store(own_ptr + out, own.to(tl.int32))


@pytest.mark.triton_interpret
@pytest.mark.parametrize(("bd", "np_"), [(32, 16), (32, 2), (8, 4), (4, 16), (2, 2)])
def test_every_value_summed_once(bd, np_):
    a = torch.randn(bd, np_, device=DEVICE)
    b = torch.randn(bd, np_, device=DEVICE)
    k = max(1, 2 * np_ // bd)
    sums = torch.empty(bd, k, device=DEVICE)
    ids = torch.empty(bd, k, dtype=torch.int32, device=DEVICE)
    own = torch.empty(bd, k, dtype=torch.int32, device=DEVICE)
    _scatter_kernel[(1,)](a, b, sums, ids, own, BD=bd, NP=np_, num_warps=max(1, bd // 32))
    want = torch.cat([a.sum(0), b.sum(0)]).cpu()  # id < NP: a's state id, else b's state id - NP
    got = torch.zeros(2 * np_)
    for s, i, o in zip(sums.flatten().cpu(), ids.flatten().cpu(), own.flatten().cpu()):
        assert 0 <= i < 2 * np_
        torch.testing.assert_close(s, want[i], rtol=1e-5, atol=1e-5)  # every lane's copy is the full sum
        got[i] += s * o
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)  # each value added exactly once
