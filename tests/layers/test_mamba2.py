import pytest
import torch

from ssmkit.layers.mamba2 import Mamba2, Mamba2Config
from tests.layers.mixer_checks import (
    check_all_parameters_get_gradients,
    check_packed_equals_separate,
    check_prefill_then_steps,
    check_step_equals_forward,
)


def small_mamba2(**kw):
    torch.manual_seed(0)
    cfg = Mamba2Config(**{"d_state": 8, "headdim": 8, "ngroups": 2, "chunk_size": 16, **kw})
    layer = Mamba2(16, cfg)
    with torch.no_grad():  # a trained-looking layer: nonzero conv bias, larger dt, non-unit norm weights
        layer.conv1d.bias.normal_()
        layer.dt_bias.add_(1.0)
        layer.norm.weight.uniform_(0.5, 1.5)
    return layer


def test_step_loop_equals_forward():
    check_step_equals_forward(small_mamba2(), torch.randn(2, 21, 16))


def test_prefill_then_steps_equals_forward():
    check_prefill_then_steps(small_mamba2(), torch.randn(2, 40, 16), split=33)


def test_packed_sequences_equal_separate():
    check_packed_equals_separate(small_mamba2(), [5, 17, 1, 30], 16)


def test_gradients_reach_every_parameter():
    check_all_parameters_get_gradients(small_mamba2(), torch.randn(2, 19, 16))


def test_dt_limit_and_norm_before_gate_paths_run():
    layer = small_mamba2(dt_limit=(0.01, 0.5), norm_before_gate=True)
    check_step_equals_forward(layer, torch.randn(1, 9, 16))


def test_initialization_and_shapes():
    layer = Mamba2(64, Mamba2Config(d_state=16, headdim=32, ngroups=2))
    assert layer.nheads == 4 and layer.in_proj.out_features == 2 * 128 + 2 * 2 * 16 + 4
    A = torch.exp(layer.A_log)
    assert torch.all((A >= 1) & (A <= 16))
    dt = torch.nn.functional.softplus(layer.dt_bias)
    assert dt.min() >= 1e-4 and dt.max() <= 0.1 + 1e-6
    assert layer.norm.group_size == 64


def test_reference_backend_agrees():
    layer = small_mamba2()
    x = torch.randn(1, 37, 16)
    y_fast, _ = layer(x)
    layer.config.backend = "reference"
    y_ref, _ = layer(x)
    torch.testing.assert_close(y_fast, y_ref, rtol=1e-4, atol=1e-5)


def test_bad_configs():
    with pytest.raises(ValueError, match="must be divisible by headdim"):
        Mamba2(16, Mamba2Config(headdim=7))
    with pytest.raises(ValueError, match="must be divisible by ngroups"):
        Mamba2(16, Mamba2Config(headdim=8, ngroups=3))
    with pytest.raises(ValueError, match=r"x: expected shape \(b, l, d_model=16\)"):
        small_mamba2()(torch.randn(1, 4, 8))
