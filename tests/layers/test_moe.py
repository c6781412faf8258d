"""MoE: the grouped-by-expert forward equals a naive per-token loop over the chosen experts (outputs and every
gradient, by the tolerance rule), each token reaches exactly top_k experts, and the aux loss is sane."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from ssmkit.layers.moe import MoE, MoEConfig
from tests.rules import assert_by_rule, grads


def naive_moe(moe: MoE, x: torch.Tensor) -> torch.Tensor:
    """One token at a time: softmax over all experts, top-k, weighted sum of the chosen experts' outputs."""
    cfg = moe.config
    route_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    rows = []
    for xt in x.reshape(-1, x.shape[-1]):
        probs = torch.softmax(xt @ moe.router.weight.T, dim=-1, dtype=route_dtype)  # (E,)
        w, chosen = probs.topk(cfg.top_k)
        if cfg.normalize_top_k:
            w = w / w.sum()
        yt = torch.zeros_like(xt)
        for wj, e in zip(w, chosen.tolist()):
            ex = moe.experts[e]
            hidden = F.silu(F.linear(xt, ex.gate_proj.weight)) * F.linear(xt, ex.up_proj.weight)
            yt = yt + wj.to(x.dtype) * F.linear(hidden, ex.down_proj.weight)
        rows.append(yt)
    return torch.stack(rows).reshape(x.shape)


def make_moe(config: MoEConfig, d_model: int = 16, seed: int = 0) -> MoE:
    torch.manual_seed(seed)
    moe = MoE(d_model, config)
    with torch.no_grad():
        moe.router.weight.mul_(4.0)  # spread the router's probabilities so top-k choices are clear-cut
    return moe


@pytest.mark.parametrize(
    ("shape", "config"),
    [
        ((2, 7, 16), MoEConfig(num_experts=4, top_k=2, d_hidden=24)),
        ((3, 16), MoEConfig(num_experts=4, top_k=2, d_hidden=24)),  # single tokens (b, d)
        ((1, 9, 16), MoEConfig(num_experts=5, top_k=1, d_hidden=20)),
        ((2, 5, 16), MoEConfig(num_experts=6, top_k=3, d_hidden=24, normalize_top_k=True)),
    ],
)
def test_moe_matches_naive_loop(shape: tuple[int, ...], config: MoEConfig) -> None:
    moe = make_moe(config)
    moe_same = copy.deepcopy(moe)
    moe_exact = copy.deepcopy(moe).double()
    x = torch.randn(shape, requires_grad=True)
    xs = x.detach().clone().requires_grad_()
    x64 = x.detach().double().requires_grad_()

    y = moe(x)
    y_same = naive_moe(moe_same, xs)
    y_exact = naive_moe(moe_exact, x64)
    assert y.shape == x.shape
    assert_by_rule("y", y, y_same, y_exact)

    names = ["x"] + [n for n, _ in moe.named_parameters()]
    g = torch.randn(shape)
    got = grads((y,), [x, *moe.parameters()], (g,))
    want_same = grads((y_same,), [xs, *moe_same.parameters()], (g,))
    want = grads((y_exact,), [x64, *moe_exact.parameters()], (g.double(),))
    for name, a, b, c in zip(names, got, want_same, want):
        assert (a is None) == (c is None), f"{name}: used by one path only"
        if a is not None:
            assert_by_rule(f"d{name}", a, b, c)


def test_each_token_reaches_top_k_experts() -> None:
    config = MoEConfig(num_experts=5, top_k=2, d_hidden=16)
    moe = make_moe(config)
    x = torch.randn(3, 11, 16)
    seen = [0] * config.num_experts
    for e, expert in enumerate(moe.experts):
        expert.register_forward_hook(lambda _m, args, _out, e=e: seen.__setitem__(e, seen[e] + args[0].shape[0]))
    _, chosen = torch.softmax(x @ moe.router.weight.T, dim=-1).topk(config.top_k)  # (3, 11, k)
    moe(x)
    assert sum(seen) == 3 * 11 * config.top_k
    assert seen == torch.bincount(chosen.flatten(), minlength=config.num_experts).tolist()


def test_aux_loss() -> None:
    config = MoEConfig(num_experts=4, top_k=2, d_hidden=16, aux_loss_coef=0.01)
    moe = make_moe(config)
    x = torch.randn(2, 9, 16)
    moe(x)
    aux = moe.aux_loss
    assert aux.dim() == 0 and torch.isfinite(aux) and aux > 0
    probs = torch.softmax(x.reshape(-1, 16) @ moe.router.weight.T, dim=-1)  # (t, E)
    frac = torch.bincount(probs.topk(2).indices.flatten(), minlength=4) / probs.shape[0]  # (E,) sums to k
    torch.testing.assert_close(aux, 0.01 * 4 * (frac * probs.mean(0)).sum())
    aux.backward()
    assert moe.router.weight.grad is not None and moe.router.weight.grad.abs().sum() > 0

    with torch.no_grad():
        moe.router.weight.zero_()  # uniform router probabilities: sum_e f_e / E * E = k
    moe(x)
    torch.testing.assert_close(moe.aux_loss, torch.tensor(0.01 * 2))


def test_bad_config_and_input() -> None:
    with pytest.raises(ValueError, match="top_k: expected an int in"):
        MoEConfig(num_experts=4, top_k=5)
    with pytest.raises(ValueError, match="activation"):
        MoEConfig(activation="nope")
    moe = MoE(16, MoEConfig(num_experts=2, top_k=1, d_hidden=8))
    assert [n for n, _ in moe.named_parameters()][:2] == ["router.weight", "experts.0.gate_proj.weight"]
    with pytest.raises(ValueError, match=r"x: expected shape \(\.\.\., d_model\) = \(\.\.\., 16\), got \(2, 3, 4\)"):
        moe(torch.randn(2, 3, 4))
