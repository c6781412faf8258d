import pytest
import torch

from ssmkit.ops.norms import gated_rms_norm, rms_norm
from tests.rules import assert_by_rule


def _check(fn, tensors: dict, **kw):
    fast = {k: v.clone().requires_grad_(True) for k, v in tensors.items()}
    same = {k: v.clone().requires_grad_(True) for k, v in tensors.items()}
    exact = {k: v.double().requires_grad_(True) for k, v in tensors.items()}
    y = fn(**fast, backend="torch", **kw)
    y32 = fn(**same, backend="reference", **kw)
    y64 = fn(**exact, backend="reference", **kw)
    assert_by_rule("y", y, y32, y64)
    gy = torch.randn_like(y)
    names = list(tensors)
    g = torch.autograd.grad(y, [fast[k] for k in names], gy)
    g32 = torch.autograd.grad(y32, [same[k] for k in names], gy)
    g64 = torch.autograd.grad(y64, [exact[k] for k in names], gy.double())
    for name, a, b, c in zip(names, g, g32, g64):
        assert_by_rule(f"grad {name}", a, b, c)


@pytest.mark.parametrize("shape", [(1, 16), (3, 7, 64)])
def test_rms_norm_fast_matches_reference(shape):
    _check(rms_norm, {"x": torch.randn(shape) * 3, "weight": torch.rand(shape[-1]) + 0.5}, eps=1e-5)


@pytest.mark.parametrize("norm_before_gate", [False, True])
@pytest.mark.parametrize("group_size", [None, 8])
def test_gated_rms_norm_fast_matches_reference(norm_before_gate, group_size):
    tensors = {"x": torch.randn(2, 7, 32), "z": torch.randn(2, 7, 32), "weight": torch.rand(32) + 0.5}
    _check(gated_rms_norm, tensors, eps=1e-5, group_size=group_size, norm_before_gate=norm_before_gate)


def test_bfloat16_keeps_dtype():
    x = torch.randn(4, 16, dtype=torch.bfloat16)
    assert rms_norm(x, torch.ones(16)).dtype == torch.bfloat16


def test_bad_inputs():
    with pytest.raises(ValueError, match=r"weight: expected shape \(d,\)"):
        rms_norm(torch.randn(2, 8), torch.ones(7))
    with pytest.raises(ValueError, match="must be divisible by group_size"):
        gated_rms_norm(torch.randn(2, 8), group_size=3)
    with pytest.raises(ValueError, match="z: expected shape"):
        gated_rms_norm(torch.randn(2, 8), torch.randn(2, 4))
    with pytest.raises(TypeError, match="x: expected a floating dtype"):
        rms_norm(torch.ones(2, 8, dtype=torch.long))
