"""RMSNorm layer against the plain formula x / sqrt(mean(x^2) + eps) * weight."""

from __future__ import annotations

import pytest
import torch

from ssmkit.layers.norm import RMSNorm
from tests.rules import assert_by_rule, grads


def formula(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    return x / torch.sqrt(x.pow(2).mean(dim=-1, keepdim=True) + eps) * weight


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape", [(2, 7, 48), (3, 48), (1, 1, 1, 48)])
def test_rms_norm_matches_formula(dtype: torch.dtype, shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    norm = RMSNorm(shape[-1], eps=1e-5, dtype=dtype)
    with torch.no_grad():
        norm.weight.copy_(torch.randn(shape[-1]) + 1.0)
    x = (torch.randn(shape) * 3.0).to(dtype).requires_grad_()
    y = norm(x)
    assert y.dtype == dtype

    x64 = x.detach().double().requires_grad_()
    w64 = norm.weight.detach().double().requires_grad_()
    xs = x.detach().clone().requires_grad_()
    ws = norm.weight.detach().clone().requires_grad_()
    ref = formula(x64, w64, 1e-5)
    ref_same = formula(xs, ws, 1e-5)
    assert_by_rule("y", y, ref_same, ref)

    g = torch.randn(shape).to(dtype)
    got = grads((y,), [x, norm.weight], (g,))
    want_same = grads((ref_same,), [xs, ws], (g,))
    want = grads((ref,), [x64, w64], (g.double(),))
    for name, a, b, c in zip(("dx", "dweight"), got, want_same, want):
        assert_by_rule(name, a, b, c)


def test_rms_norm_defaults_and_bad_input() -> None:
    norm = RMSNorm(16)
    assert norm.eps == 1e-5
    assert torch.equal(norm.weight, torch.ones(16))
    with pytest.raises(ValueError, match=r"x: expected shape \(\.\.\., d\) = \(\.\.\., 16\), got \(2, 3, 8\)"):
        norm(torch.randn(2, 3, 8))
    with pytest.raises(TypeError, match="x: expected a floating dtype"):
        norm(torch.ones(2, 16, dtype=torch.long))
    with pytest.raises(TypeError, match=r"x: expected a torch\.Tensor"):
        norm([1.0] * 16)


def test_gated_rms_norm_groups_and_gate():
    from ssmkit.layers.norm import GatedRMSNorm

    d, group = 12, 4
    norm = GatedRMSNorm(d, eps=1e-5, group_size=group)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
    x, z = torch.randn(2, 3, d), torch.randn(2, 3, d)
    gated = (x * torch.nn.functional.silu(z)).view(2, 3, d // group, group)
    expected = (gated * torch.rsqrt(gated.pow(2).mean(-1, keepdim=True) + 1e-5)).view(2, 3, d) * norm.weight
    torch.testing.assert_close(norm(x, z), expected)
    before = GatedRMSNorm(d, group_size=group, norm_before_gate=True)
    xg = x.view(2, 3, d // group, group)
    normed = (xg * torch.rsqrt(xg.pow(2).mean(-1, keepdim=True) + 1e-5)).view(2, 3, d)
    torch.testing.assert_close(before(x, z), normed * torch.nn.functional.silu(z))
    with pytest.raises(ValueError, match="group_size = 5 must divide d = 12"):
        GatedRMSNorm(d, group_size=5)
