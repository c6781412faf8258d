"""S4D layer: convolution mode == recurrent mode, continuation from a state, packing, gradients, bad inputs."""

from __future__ import annotations

import copy
import dataclasses
import itertools

import pytest
import torch

from ssmkit.layers.base import TokenMixer
from ssmkit.layers.s4d import S4D, S4DConfig, S4DState
from tests.rules import assert_by_rule, grads

INITS = ("legs", "lin", "real")
D_MODEL, D_STATE = 6, 8


def make_layer(init: str, seed: int = 0) -> S4D:
    torch.manual_seed(seed)
    return S4D(D_MODEL, S4DConfig(d_state=D_STATE, init=init))


def three_layers(layer: S4D) -> tuple[S4D, S4D, S4D]:
    """(fast fp32, reference fp32, reference fp64): same weights; the references run the recurrence."""
    ref32 = copy.deepcopy(layer)
    ref32.config = dataclasses.replace(layer.config, backend="reference")
    return layer, ref32, copy.deepcopy(ref32).double()


def random_state(batch: int, seed: int) -> S4DState:
    gen = torch.Generator().manual_seed(seed)
    return S4DState(torch.randn(batch, D_MODEL, D_STATE // 2, generator=gen, dtype=torch.complex64))


def wide(state: S4DState | None) -> S4DState | None:
    return None if state is None else S4DState(state.ssm.to(torch.complex128))


def real_view(t: torch.Tensor) -> torch.Tensor:
    return torch.view_as_real(t) if t.is_complex() else t


def assert_outputs(names, fast_out, ref32_out, ref64_out) -> None:
    for name, f, r32, r64 in zip(names, fast_out, ref32_out, ref64_out):
        assert_by_rule(name, real_view(f), real_view(r32), real_view(r64))


def assert_param_and_input_grads(layers, inputs, outputs) -> None:
    """Gradients of every parameter and of the input, fast vs the references."""
    gen = torch.Generator().manual_seed(3)
    seed = torch.randn(outputs[0].shape, generator=gen)
    got = []
    for layer, x, y in zip(layers, inputs, outputs):
        params = [p for _, p in sorted(layer.named_parameters())]
        got.append(grads((y,), [x, *params], (seed.to(y.dtype),)))
    names = ["x"] + [n for n, _ in sorted(layers[0].named_parameters())]
    for name, f, r32, r64 in zip(names, *got):
        assert_by_rule(f"grad {name}", f, r32, r64)


def inputs_for(batch: int, length: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    x = torch.randn(batch, length, D_MODEL, generator=torch.Generator().manual_seed(seed))
    return x.clone().requires_grad_(), x.clone().requires_grad_(), x.double().requires_grad_()


@pytest.mark.parametrize("init", INITS)
@pytest.mark.parametrize("l", (1, 7, 63))
def test_forward_matches_recurrence(init: str, l: int):
    layers = three_layers(make_layer(init, seed=l))
    xs = inputs_for(2, l, seed=l)
    outs = [layer(x)[0] for layer, x in zip(layers, xs)]
    assert_outputs(["y"], *[(o,) for o in outs])
    assert_param_and_input_grads(layers, xs, outs)


@pytest.mark.parametrize("init", INITS)
def test_forward_with_state_and_seq_idx_matches_recurrence(init: str):
    layers = three_layers(make_layer(init, seed=1))
    xs = inputs_for(2, 40, seed=1)
    seq_idx = torch.cumsum((torch.rand(2, 40, generator=torch.Generator().manual_seed(1)) < 0.1).long(), dim=1)
    state = random_state(2, seed=1)
    outs = [
        layer(x, S4DState(s.ssm.clone()), seq_idx=seq_idx)
        for layer, x, s in zip(layers, xs, (state, state, wide(state)))
    ]
    assert_outputs(["y", "final_state"], *[(y, s.ssm) for y, s in outs])
    assert_param_and_input_grads(layers, xs, [y for y, _ in outs])


@pytest.mark.parametrize("init", INITS)
def test_step_loop_equals_forward(init: str):
    """Recurrent mode (step) == convolution mode (forward), from a nonzero state."""
    fast, ref32, ref64 = three_layers(make_layer(init, seed=2))
    x = torch.randn(2, 25, D_MODEL, generator=torch.Generator().manual_seed(2))
    state0 = random_state(2, seed=2)
    state, ys = S4DState(state0.ssm.clone()), []
    with torch.no_grad():
        for t in range(x.shape[1]):
            y_t, state = fast.step(x[:, t], state)
            ys.append(y_t)
        ref32_out = ref32(x, S4DState(state0.ssm.clone()))
        ref64_out = ref64(x.double(), wide(state0))
    assert_outputs(
        ["y", "final_state"],
        (torch.stack(ys, dim=1), state.ssm),
        (ref32_out[0], ref32_out[1].ssm),
        (ref64_out[0], ref64_out[1].ssm),
    )


@pytest.mark.parametrize("init", INITS)
def test_forward_continues_from_its_state(init: str):
    """forward(x1, s) then forward(x2, state) == forward(cat(x1, x2), s)."""
    fast, ref32, ref64 = three_layers(make_layer(init, seed=3))
    x = torch.randn(2, 50, D_MODEL, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        y1, s1 = fast(x[:, :17], fast.init_state(2))
        y2, s2 = fast(x[:, 17:], s1)
        ref32_out = ref32(x, ref32.init_state(2))
        ref64_out = ref64(x.double(), ref64.init_state(2))
    assert_outputs(
        ["y", "final_state"],
        (torch.cat([y1, y2], dim=1), s2.ssm),
        (ref32_out[0], ref32_out[1].ssm),
        (ref64_out[0], ref64_out[1].ssm),
    )


def test_packed_equals_separate():
    fast, ref32, ref64 = three_layers(make_layer("legs", seed=4))
    lengths = [[5, 1, 20, 4], [30]]
    x = torch.randn(2, 30, D_MODEL, generator=torch.Generator().manual_seed(4))
    seq_idx = torch.stack([torch.repeat_interleave(torch.arange(len(row)), torch.tensor(row)) for row in lengths])

    def separate(layer: S4D, x: torch.Tensor) -> torch.Tensor:
        rows = []
        for i, row in enumerate(lengths):
            bounds = list(itertools.accumulate([0, *row]))
            rows.append(torch.cat([layer(x[i : i + 1, s:e])[0] for s, e in itertools.pairwise(bounds)], dim=1))
        return torch.cat(rows)

    with torch.no_grad():
        packed, state = fast(x, seq_idx=seq_idx)
        assert state is None
        assert_outputs(["y"], (packed,), (separate(ref32, x),), (separate(ref64, x.double()),))


@pytest.mark.parametrize("init", INITS)
def test_gradients_reach_every_parameter(init: str):
    layer = make_layer(init, seed=5)
    y, _ = layer(torch.randn(2, 16, D_MODEL))
    y.square().sum().backward()
    for name, p in layer.named_parameters():
        assert p.grad is not None, f"{name}: no gradient"
        assert torch.isfinite(p.grad).all(), f"{name}: non-finite gradient"
        assert p.grad.abs().max() > 0, f"{name}: zero gradient"


def test_protocol_dtypes_and_init():
    layer = make_layer("lin")
    assert isinstance(layer, TokenMixer)
    assert layer.init_state(3).ssm.dtype == torch.complex64
    assert layer.init_state(3).ssm.shape == (3, D_MODEL, D_STATE // 2)
    assert make_layer("lin").double().init_state(1).ssm.dtype == torch.complex128
    y, _ = layer(torch.randn(2, 5, D_MODEL, dtype=torch.bfloat16))
    assert y.dtype == torch.bfloat16 and torch.isfinite(y).all()
    bf16 = S4D(D_MODEL, S4DConfig(d_state=D_STATE), dtype=torch.bfloat16)
    y, state = bf16(torch.randn(2, 5, D_MODEL, dtype=torch.bfloat16), bf16.init_state(2))
    assert y.dtype == torch.bfloat16 and state.ssm.dtype == torch.complex64
    # A's real part is negative and dt within [dt_min, dt_max] at init
    assert (layer.log_A_real.exp() > 0).all()
    dt = layer.log_dt.exp()
    assert (dt >= layer.config.dt_min * (1 - 1e-6)).all() and (dt <= layer.config.dt_max * (1 + 1e-6)).all()


def test_bad_inputs_raise():
    layer = make_layer("lin")
    with pytest.raises(ValueError, match=r"x: expected shape \(b, l, d_model=6\), got \(2, 5, 4\)"):
        layer(torch.randn(2, 5, 4))
    with pytest.raises(ValueError, match="x: expected shape"):
        layer(torch.randn(5, D_MODEL))
    with pytest.raises(TypeError, match="state: expected an S4DState"):
        layer(torch.randn(2, 5, D_MODEL), torch.zeros(2, D_MODEL, D_STATE // 2))
    with pytest.raises(ValueError, match=r"state.ssm: expected shape .* = \(2, 6, 4\), got \(3, 6, 4\)"):
        layer(torch.randn(2, 5, D_MODEL), layer.init_state(3))
    with pytest.raises(ValueError, match="x_t: expected shape"):
        layer.step(torch.randn(2, 1, D_MODEL), layer.init_state(2))
    with pytest.raises(TypeError, match="seq_idx"):
        layer(torch.randn(2, 5, D_MODEL), seq_idx=torch.zeros(2, 5))


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"d_state": 7}, "d_state"),
        ({"init": "hippo"}, "init"),
        ({"dt_min": 0.2, "dt_max": 0.1}, "dt_min"),
        ({"dropout": 1.5}, "dropout"),
    ],
)
def test_bad_config_raises(kwargs: dict, words: str):
    with pytest.raises(ValueError, match=words):
        S4DConfig(**kwargs)
