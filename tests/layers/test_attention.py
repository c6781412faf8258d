"""Attention token mixer: a plain reference (explicit softmax over a causal mask, RoPE written with complex
numbers), the protocol invariants (step loop == forward, prefill + step == forward), KV-cache growth, packed
sequences == separate sequences, RoPE's relative-position property and argument errors."""

from __future__ import annotations

import copy
import dataclasses
import itertools
import math

import pytest
import torch

from ssmkit.layers.attention import Attention, AttentionConfig, KVCache
from ssmkit.layers.rotary import RotaryEmbedding, positions_from_seq_idx
from tests.rules import assert_by_rule, grads

D_MODEL = 32


def rope_ref(t: torch.Tensor, positions: torch.Tensor, theta: float, r: int) -> torch.Tensor:
    """t (b, l, h, p), positions (b, l): channel pair (i, i + r/2) as one complex number times e^(i pos w_i)."""
    freqs = theta ** (-torch.arange(0, r, 2, dtype=t.dtype) / r)  # (r/2,)
    angle = positions.to(t.dtype)[:, :, None, None] * freqs  # (b, l, 1, r/2)
    z = torch.complex(t[..., : r // 2], t[..., r // 2 : r]) * torch.polar(torch.ones_like(angle), angle)
    return torch.cat((z.real, z.imag, t[..., r:]), dim=-1)


def reference_attention(attn: Attention, x: torch.Tensor, seq_idx: torch.Tensor | None = None) -> torch.Tensor:
    """softmax(q k^T / sqrt(p) + mask) v per query head, kv head i // (h / h_kv), in x's dtype."""
    b, length, _ = x.shape
    h, h_kv, p = attn.n_heads, attn.n_kv_heads, attn.head_dim
    q = attn.q_proj(x).view(b, length, h, p)
    k = attn.k_proj(x).view(b, length, h_kv, p)
    v = attn.v_proj(x).view(b, length, h_kv, p)
    if seq_idx is None:
        seq_idx = torch.zeros(b, length, dtype=torch.long)
    pos = torch.zeros(b, length, dtype=torch.long)
    for i in range(b):
        for j in range(1, length):
            pos[i, j] = pos[i, j - 1] + 1 if seq_idx[i, j] == seq_idx[i, j - 1] else 0
    if attn.rotary is not None:
        q = rope_ref(q, pos, attn.config.rope_theta, attn.rotary.rotary_dim)
        k = rope_ref(k, pos, attn.config.rope_theta, attn.rotary.rotary_dim)
    kv_of = torch.arange(h) // (h // h_kv)  # (h,)
    scores = torch.einsum("bihp,bjhp->bhij", q, k[:, :, kv_of]) / math.sqrt(p)  # (b, h, l, l)
    allowed = torch.ones(length, length, dtype=torch.bool).tril() & (seq_idx[:, :, None] == seq_idx[:, None, :])
    scores = scores.masked_fill(~allowed[:, None], float("-inf"))
    out = torch.einsum("bhij,bjhp->bihp", scores.softmax(dim=-1), v[:, :, kv_of])  # (b, l, h, p)
    return attn.o_proj(out.reshape(b, length, h * p))


def make_attention(config: AttentionConfig, seed: int = 0) -> Attention:
    torch.manual_seed(seed)
    return Attention(D_MODEL, config, layer_idx=1)


CONFIGS = {
    "mha": AttentionConfig(n_heads=4),
    "gqa": AttentionConfig(n_heads=4, n_kv_heads=2),
    "mqa_partial_rotary_bias": AttentionConfig(n_heads=4, n_kv_heads=1, rotary_fraction=0.5, bias=True),
    "no_rotary_head_dim": AttentionConfig(n_heads=2, head_dim=12, rotary=False),
}


@pytest.mark.parametrize("length", [1, 7, 33])
@pytest.mark.parametrize("name", list(CONFIGS))
def test_forward_matches_reference(name: str, length: int) -> None:
    attn = make_attention(CONFIGS[name])
    same, exact = copy.deepcopy(attn), copy.deepcopy(attn).double()
    x = torch.randn(2, length, D_MODEL, requires_grad=True)
    xs, x64 = x.detach().clone().requires_grad_(), x.detach().double().requires_grad_()
    y, state = attn(x)
    assert state is None
    y_same, y_exact = reference_attention(same, xs), reference_attention(exact, x64)
    assert_by_rule("y", y, y_same, y_exact)

    names = ["x"] + [n for n, _ in attn.named_parameters()]
    g = torch.randn_like(x)
    got = grads((y,), [x, *attn.parameters()], (g,))
    want_same = grads((y_same,), [xs, *same.parameters()], (g,))
    want = grads((y_exact,), [x64, *exact.parameters()], (g.double(),))
    for n, a, b, c in zip(names, got, want_same, want):
        assert_by_rule(f"d{n}", a, b, c)


@pytest.mark.parametrize("name", ["mha", "gqa", "mqa_partial_rotary_bias"])
def test_step_loop_equals_forward_and_cache_grows(name: str) -> None:
    config = dataclasses.replace(CONFIGS[name], initial_cache_len=4)
    attn = make_attention(config)
    exact = copy.deepcopy(attn).double()
    x = torch.randn(3, 20, D_MODEL)
    state = attn.init_state(3)
    assert isinstance(state, KVCache) and state.capacity == 4 and state.length == 0
    with torch.no_grad():
        ys = []
        for t in range(20):
            y_t, state = attn.step(x[:, t], state)
            ys.append(y_t)
        y_steps = torch.stack(ys, dim=1)
        y_fwd, _ = attn(x)
        y_exact, _ = exact(x.double())
    assert_by_rule("y", y_steps, y_fwd, y_exact)
    assert state.length == 20 and state.capacity == 32  # 4 -> 8 -> 16 -> 32
    assert state.k.shape == (3, attn.n_kv_heads, 32, attn.head_dim)
    assert state.nbytes() == 2 * 3 * attn.n_kv_heads * 32 * attn.head_dim * 4


@pytest.mark.parametrize("split", [1, 5, 12])
def test_prefill_then_step_and_chunked_prefill_equal_forward(split: int) -> None:
    attn = make_attention(dataclasses.replace(CONFIGS["gqa"], initial_cache_len=8))
    exact = copy.deepcopy(attn).double()
    x = torch.randn(2, 17, D_MODEL)
    with torch.no_grad():
        y_fwd, _ = attn(x)
        y_exact, _ = exact(x.double())

        state = attn.init_state(2)
        y_pre, state = attn(x[:, :split], state)
        ys = [y_pre]
        for t in range(split, 17):
            y_t, state = attn.step(x[:, t], state)
            ys.append(y_t[:, None])
        assert_by_rule("prefill + steps", torch.cat(ys, dim=1), y_fwd, y_exact)

        state = attn.init_state(2)
        y1, state = attn(x[:, :split], state)
        y2, state = attn(x[:, split:], state)
        assert state.length == 17
        assert_by_rule("two prefills", torch.cat((y1, y2), dim=1), y_fwd, y_exact)


def test_prefill_with_grad_matches_forward() -> None:
    """With autograd on, a prefill over a cache gives the full forward's values and, for its own tokens, the
    full forward's gradients (the cached tokens are constants)."""
    attn = make_attention(CONFIGS["gqa"])
    exact = copy.deepcopy(attn).double()
    x = torch.randn(2, 11, D_MODEL)
    g = torch.randn(2, 5, D_MODEL)
    x2 = x[:, 6:].clone().requires_grad_()
    state = attn.init_state(2)
    with torch.no_grad():
        _, state = attn(x[:, :6], state)
    y2, state = attn(x2, state)
    _, state = attn(torch.randn(2, 3, D_MODEL), state)  # a later append must not break the earlier backward

    def full_tail(module: Attention, xx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        tail = xx[:, 6:].clone().requires_grad_()
        y, _ = module(torch.cat((xx[:, :6], tail), dim=1))
        return y[:, 6:], tail

    y_same, tail_same = full_tail(attn, x)
    y_exact, tail_exact = full_tail(exact, x.double())
    assert_by_rule("y", y2, y_same, y_exact)
    (dx,) = grads((y2,), [x2], (g,))
    (dx_same,) = grads((y_same,), [tail_same], (g,))
    (dx_exact,) = grads((y_exact,), [tail_exact], (g.double(),))
    assert_by_rule("dx", dx, dx_same, dx_exact)


@pytest.mark.parametrize("name", ["gqa", "no_rotary_head_dim"])
def test_packed_equals_separate(name: str) -> None:
    attn = make_attention(CONFIGS[name])
    exact = copy.deepcopy(attn).double()
    seq_idx = torch.tensor([[0, 0, 0, 1, 1, 1, 1, 2, 2], [3, 3, 3, 3, 3, 3, 3, 3, 7]])
    x = torch.randn(2, 9, D_MODEL)
    with torch.no_grad():
        y_packed, state = attn(x, seq_idx=seq_idx)
        assert state is None

        def separate(module: Attention, xx: torch.Tensor) -> torch.Tensor:
            out = torch.empty_like(xx)
            for row, bounds in enumerate([(0, 3, 7, 9), (0, 8, 9)]):
                for lo, hi in itertools.pairwise(bounds):
                    out[row : row + 1, lo:hi] = module(xx[row : row + 1, lo:hi])[0]
            return out

        y_sep, y_exact = separate(attn, x), separate(exact, x.double())
    assert_by_rule("y", y_packed, y_sep, y_exact)
    assert_by_rule("y vs reference", y_packed, reference_attention(attn, x, seq_idx), y_exact)


def test_positions_from_seq_idx() -> None:
    seq_idx = torch.tensor([[0, 0, 1, 1, 1, 2], [4, 4, 4, 4, 4, 4]])
    want = torch.tensor([[0, 1, 0, 1, 2, 0], [0, 1, 2, 3, 4, 5]])
    assert torch.equal(positions_from_seq_idx(seq_idx), want)
    assert torch.equal(positions_from_seq_idx(seq_idx, offset=10)[:, :2], torch.tensor([[10, 11], [10, 11]]))


@pytest.mark.parametrize("fraction", [1.0, 0.5])
def test_rotary_score_depends_only_on_distance(fraction: float) -> None:
    torch.manual_seed(0)
    rope = RotaryEmbedding(16, theta=10000.0, fraction=fraction)
    q = torch.randn(1, 6, 2, 16, dtype=torch.float64)
    k = torch.randn(1, 6, 2, 16, dtype=torch.float64)
    pos = torch.tensor([0, 3, 4, 9, 20, 21])

    def scores(shift: int) -> torch.Tensor:
        qr, kr = rope(q, k, pos + shift)
        return torch.einsum("bihp,bjhp->bhij", qr, kr)  # (1, 2, 6, 6)

    base = scores(0)
    exact = torch.einsum(
        "bihp,bjhp->bhij", rope_ref(q, pos[None], 1e4, rope.rotary_dim), rope_ref(k, pos[None], 1e4, rope.rotary_dim)
    )
    assert_by_rule("unshifted vs complex reference", base, base, exact)
    for shift in (1, 57, 1000):
        assert_by_rule(f"shift {shift}", scores(shift), base, exact)
    # and rotation preserves each vector's norm
    qr, _ = rope(q, k, pos + 1000)
    torch.testing.assert_close(qr.norm(dim=-1), q.norm(dim=-1))


def test_bad_inputs() -> None:
    attn = make_attention(CONFIGS["gqa"])
    x = torch.randn(2, 5, D_MODEL)
    with pytest.raises(ValueError, match=r"x: expected shape \(b, l, d_model\) = \(\?, \?, 32\), got \(2, 5, 16\)"):
        attn(torch.randn(2, 5, 16))
    with pytest.raises(ValueError, match=r"x: expected shape \(b, l, d_model\).*got \(5, 32\)"):
        attn(torch.randn(5, D_MODEL))
    with pytest.raises(TypeError, match="x: expected a floating dtype"):
        attn(torch.ones(2, 5, D_MODEL, dtype=torch.long))
    with pytest.raises(ValueError, match=r"seq_idx: expected shape \(b, l\) = \(2, 5\), got \(2, 4\)"):
        attn(x, seq_idx=torch.zeros(2, 4, dtype=torch.long))
    with pytest.raises(TypeError, match="seq_idx: expected an integer dtype"):
        attn(x, seq_idx=torch.zeros(2, 5))
    with pytest.raises(TypeError, match="state: expected a KVCache"):
        attn(x, state=(torch.zeros(1), torch.zeros(1)))
    with pytest.raises(
        ValueError, match=r"state: expected KV buffers \(b, h_kv, capacity, head_dim\) = \(2, 2, \?, 8\)"
    ):
        attn(x, state=attn.init_state(3))
    with pytest.raises(ValueError, match="seq_idx: packed sequences are supported with state=None only"):
        attn(x, attn.init_state(2), seq_idx=torch.zeros(2, 5, dtype=torch.long))
    with pytest.raises(ValueError, match=r"x_t: expected shape \(b, d_model\) = \(\?, 32\), got \(2, 1, 32\)"):
        attn.step(torch.randn(2, 1, D_MODEL), attn.init_state(2))
    with pytest.raises(ValueError, match="state: step needs a KVCache"):
        attn.step(torch.randn(2, D_MODEL), None)
    with pytest.raises(ValueError, match="n_kv_heads: expected a positive int dividing n_heads = 4, got 3"):
        AttentionConfig(n_heads=4, n_kv_heads=3)
    with pytest.raises(ValueError, match="d_model = 30 must be divisible by n_heads = 4"):
        Attention(30, AttentionConfig(n_heads=4))
    with pytest.raises(ValueError, match=r"positions: expected shape \(l,\) = \(5,\)"):
        RotaryEmbedding(8)(torch.randn(1, 5, 2, 8), torch.randn(1, 5, 2, 8), torch.arange(4))
