import pytest
import torch

from ssmkit.layers.mamba import Mamba, MambaConfig
from tests.layers.mixer_checks import (
    check_all_parameters_get_gradients,
    check_packed_equals_separate,
    check_prefill_then_steps,
    check_step_equals_forward,
)


def small_mamba(**kw):
    torch.manual_seed(0)
    layer = Mamba(16, MambaConfig(d_state=4, **kw))
    with torch.no_grad():  # a trained-looking layer: nonzero conv bias and larger dt so every path matters
        layer.conv1d.bias.normal_()
        layer.dt_proj.bias.add_(2.0)
    return layer


def test_step_loop_equals_forward():
    check_step_equals_forward(small_mamba(), torch.randn(2, 13, 16))


def test_prefill_then_steps_equals_forward():
    check_prefill_then_steps(small_mamba(), torch.randn(2, 70, 16), split=66)


def test_packed_sequences_equal_separate():
    check_packed_equals_separate(small_mamba(), [3, 9, 1, 20], 16)


def test_gradients_reach_every_parameter():
    check_all_parameters_get_gradients(small_mamba(), torch.randn(2, 9, 16))


def test_paper_initialization():
    layer = Mamba(64, MambaConfig(d_state=16))
    assert layer.dt_rank == 4  # ceil(64 / 16)
    dt = torch.nn.functional.softplus(layer.dt_proj.bias)
    assert dt.min() >= 1e-4 and dt.max() <= 0.1 + 1e-6
    torch.testing.assert_close(-torch.exp(layer.A_log[0]), -torch.arange(1, 17.0))
    assert torch.all(layer.D == 1)
    assert layer.A_log._no_weight_decay and layer.dt_proj.bias._no_reinit


def test_reference_backend_agrees():
    layer = small_mamba()
    x = torch.randn(1, 20, 16)
    y_fast, _ = layer(x)
    layer.config.backend = "reference"
    y_ref, _ = layer(x)
    torch.testing.assert_close(y_fast, y_ref, rtol=1e-4, atol=1e-5)


def test_bad_input_names_shape():
    with pytest.raises(ValueError, match=r"x: expected shape \(b, l, d_model=16\)"):
        small_mamba()(torch.randn(2, 5, 8))
    with pytest.raises(ValueError, match=r"x_t: expected shape \(b, d_model=16\)"):
        layer = small_mamba()
        layer.step(torch.randn(2, 1, 16), layer.init_state(2))
