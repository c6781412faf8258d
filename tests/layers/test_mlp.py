"""GatedMLP: hidden-size rule, shapes, the formula down(act(gate(x)) * up(x)), gradients, bad inputs."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ssmkit.layers.mlp import GatedMLP, MLPConfig


@pytest.mark.parametrize(
    ("d_model", "config", "hidden"),
    [
        (64, MLPConfig(), 192),  # 8/3 * 64 = 170.7 -> 192
        (96, MLPConfig(), 256),  # exactly 256
        (100, MLPConfig(multiple_of=32), 288),  # 266.7 -> 288
        (64, MLPConfig(d_hidden=100), 100),
        (64, MLPConfig(hidden_mult=4.0, multiple_of=1), 256),
    ],
)
def test_hidden_size(d_model: int, config: MLPConfig, hidden: int) -> None:
    mlp = GatedMLP(d_model, config)
    assert mlp.d_hidden == hidden
    assert mlp.gate_proj.weight.shape == (hidden, d_model)
    assert mlp.up_proj.weight.shape == (hidden, d_model)
    assert mlp.down_proj.weight.shape == (d_model, hidden)
    assert mlp.gate_proj.bias is None


@pytest.mark.parametrize("shape", [(2, 7, 32), (3, 32), (32,)])
def test_shapes_formula_and_gradient(shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    mlp = GatedMLP(32, MLPConfig(d_hidden=48, bias=True), layer_idx=3)
    assert mlp.layer_idx == 3
    x = torch.randn(shape, requires_grad=True)
    y = mlp(x)
    assert y.shape == x.shape
    want = mlp.down_proj(F.silu(mlp.gate_proj(x)) * mlp.up_proj(x))
    assert torch.equal(y, want)
    y.square().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    for name, p in mlp.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


def test_activation_choice_and_dtype() -> None:
    mlp = GatedMLP(16, MLPConfig(d_hidden=8, activation="gelu"), dtype=torch.float64)
    x = torch.randn(2, 3, 16, dtype=torch.float64)
    assert torch.equal(mlp(x), mlp.down_proj(F.gelu(mlp.gate_proj(x)) * mlp.up_proj(x)))


def test_bad_config_and_input() -> None:
    with pytest.raises(ValueError, match="activation: expected one of"):
        MLPConfig(activation="swish2")
    with pytest.raises(ValueError, match="d_hidden: expected a positive int"):
        MLPConfig(d_hidden=0)
    mlp = GatedMLP(16)
    with pytest.raises(ValueError, match=r"x: expected shape \(\.\.\., d_model\) = \(\.\.\., 16\), got \(2, 5, 8\)"):
        mlp(torch.randn(2, 5, 8))
    with pytest.raises(TypeError, match="x: expected a floating dtype"):
        mlp(torch.ones(2, 16, dtype=torch.int32))
