"""Causal multi-head attention with grouped-query heads, RoPE and a growing KV cache: the token mixer that the
hybrids interleave with SSM layers and the baseline the seed documents compare against.

    q, k, v = q_proj(x), k_proj(x), v_proj(x)       # (b, l, h, p), (b, l, h_kv, p), (b, l, h_kv, p)
    q, k = rope(q, positions), rope(k, positions)   # when rotary (Jamba's attention layers use none)
    y = o_proj(softmax(q k^T / sqrt(p) + causal mask) v)

Glossary: n_heads <-> h, n_kv_heads <-> h_kv (query head i reads kv head i // (h / h_kv)), head_dim <-> p.
Parameter names follow Hugging Face Llama/Jamba (q_proj, k_proj, v_proj, o_proj) so checkpoints map by name.
The protocol (forward / init_state / step) is the one in `ssmkit.layers.base`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..ops._checks import check_float, check_seq_idx, check_tensor
from .rotary import RotaryEmbedding, positions_from_seq_idx


@dataclass
class AttentionConfig:
    """n_kv_heads=None: n_heads (plain multi-head); head_dim=None: d_model // n_heads.

    rotary_fraction: the share of head_dim that RoPE rotates (HF `partial_rotary_factor`).
    initial_cache_len: the KV cache's first capacity in tokens; it doubles whenever it is full.
    """

    n_heads: int = 8
    n_kv_heads: int | None = None
    head_dim: int | None = None
    rope_theta: float = 10000.0
    rotary: bool = True
    rotary_fraction: float = 1.0
    bias: bool = False
    initial_cache_len: int = 256

    def __post_init__(self) -> None:
        if not isinstance(self.n_heads, int) or self.n_heads <= 0:
            raise ValueError(f"n_heads: expected a positive int, got {self.n_heads!r}")
        kv = self.kv_heads
        if not isinstance(kv, int) or kv <= 0 or self.n_heads % kv != 0:
            raise ValueError(f"n_kv_heads: expected a positive int dividing n_heads = {self.n_heads}, got {kv!r}")
        if self.head_dim is not None and (not isinstance(self.head_dim, int) or self.head_dim <= 0):
            raise ValueError(f"head_dim: expected a positive int or None, got {self.head_dim!r}")
        if not isinstance(self.initial_cache_len, int) or self.initial_cache_len <= 0:
            raise ValueError(f"initial_cache_len: expected a positive int, got {self.initial_cache_len!r}")

    @property
    def kv_heads(self) -> int:
        return self.n_heads if self.n_kv_heads is None else self.n_kv_heads

    def head_size(self, d_model: int) -> int:
        if self.head_dim is not None:
            return self.head_dim
        if d_model % self.n_heads != 0:
            raise ValueError(f"d_model = {d_model} must be divisible by n_heads = {self.n_heads} (or set head_dim)")
        return d_model // self.n_heads


@dataclass
class KVCache:
    """Keys and values of the tokens seen so far, in preallocated buffers that double when full.

    k, v: (b, h_kv, capacity, p); entries [:, :, :length] are valid. Positions continue from `length`.
    The cached tensors hold no autograd history: gradients flow through the tokens of the current call only.
    """

    k: torch.Tensor
    v: torch.Tensor
    length: int = 0

    @property
    def capacity(self) -> int:
        return self.k.shape[2]

    @property
    def batch_size(self) -> int:
        return self.k.shape[0]

    def nbytes(self) -> int:
        """Memory held by the k and v buffers (the full capacity, not just the valid length)."""
        return self.k.numel() * self.k.element_size() + self.v.numel() * self.v.element_size()

    def append(self, k_new: torch.Tensor, v_new: torch.Tensor) -> None:
        """Write k_new, v_new (b, h_kv, n, p) after the valid entries; the capacity doubles until they fit."""
        n = k_new.shape[2]
        needed = self.length + n
        if needed > self.capacity:
            capacity = self.capacity
            while capacity < needed:
                capacity *= 2
            self.k = self._grown(self.k, capacity)
            self.v = self._grown(self.v, capacity)
        with torch.no_grad():
            self.k[:, :, self.length : needed] = k_new
            self.v[:, :, self.length : needed] = v_new
        self.length = needed

    def _grown(self, buf: torch.Tensor, capacity: int) -> torch.Tensor:
        b, h, _, p = buf.shape
        new = buf.new_empty(b, h, capacity, p)
        new[:, :, : self.length] = buf[:, :, : self.length]
        return new


class Attention(nn.Module):
    """Causal self-attention token mixer: forward(x, state=None, *, seq_idx=None) -> (y, state)."""

    def __init__(
        self,
        d_model: int,
        config: AttentionConfig | None = None,
        *,
        layer_idx: int = 0,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(d_model, int) or d_model <= 0:
            raise ValueError(f"d_model: expected a positive int, got {d_model!r}")
        self.config = config = config if config is not None else AttentionConfig()
        self.d_model = d_model
        self.layer_idx = layer_idx
        self.n_heads = config.n_heads
        self.n_kv_heads = config.kv_heads
        self.head_dim = config.head_size(d_model)
        kw = {"bias": config.bias, "device": device, "dtype": dtype}
        self.q_proj = nn.Linear(d_model, self.n_heads * self.head_dim, **kw)
        self.k_proj = nn.Linear(d_model, self.n_kv_heads * self.head_dim, **kw)
        self.v_proj = nn.Linear(d_model, self.n_kv_heads * self.head_dim, **kw)
        self.o_proj = nn.Linear(self.n_heads * self.head_dim, d_model, **kw)
        self.rotary = (
            RotaryEmbedding(self.head_dim, config.rope_theta, config.rotary_fraction) if config.rotary else None
        )

    def init_state(
        self, batch_size: int, device: torch.device | None = None, dtype: torch.dtype | None = None
    ) -> KVCache:
        """An empty KV cache of initial_cache_len tokens; device and dtype default to the layer's weights'."""
        if not isinstance(batch_size, int) or batch_size <= 0:
            raise ValueError(f"batch_size: expected a positive int, got {batch_size!r}")
        weight = self.o_proj.weight
        device = weight.device if device is None else device
        dtype = weight.dtype if dtype is None else dtype
        shape = (batch_size, self.n_kv_heads, self.config.initial_cache_len, self.head_dim)
        k = torch.empty(shape, device=device, dtype=dtype)
        v = torch.empty(shape, device=device, dtype=dtype)
        return KVCache(k, v, 0)

    def step(self, x_t: torch.Tensor, state: KVCache) -> tuple[torch.Tensor, KVCache]:
        """One token: x_t (b, d_model) -> y_t (b, d_model); appends to `state` in place and returns it."""
        check_tensor("x_t", x_t)
        if x_t.dim() != 2 or x_t.shape[-1] != self.d_model:
            raise ValueError(f"x_t: expected shape (b, d_model) = (?, {self.d_model}), got {tuple(x_t.shape)}")
        if state is None:
            raise ValueError("state: step needs a KVCache from init_state(batch_size, device, dtype), got None")
        y, state = self.forward(x_t[:, None], state)
        return y[:, 0], state

    def forward(
        self, x: torch.Tensor, state: KVCache | None = None, *, seq_idx: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, KVCache | None]:
        """x: (b, l, d_model) -> y: (b, l, d_model).

        state=None: a fresh sequence, returns (y, None). With a KVCache: a prefill that attends over the
        cached tokens plus x, continues positions from the cache length, appends x's keys and values and
        returns the cache. seq_idx (b, l) int: packed sequences; a token attends only within its own sequence
        and positions restart at each sequence start (state=None only).
        """
        self._check_inputs(x, state, seq_idx)
        length = x.shape[1]
        offset = 0 if state is None else state.length
        q = self.q_proj(x).unflatten(-1, (self.n_heads, self.head_dim))  # (b, l, h, p)
        k = self.k_proj(x).unflatten(-1, (self.n_kv_heads, self.head_dim))  # (b, l, h_kv, p)
        v = self.v_proj(x).unflatten(-1, (self.n_kv_heads, self.head_dim))  # (b, l, h_kv, p)
        if self.rotary is not None:
            if seq_idx is not None:
                positions = positions_from_seq_idx(seq_idx)  # (b, l)
            else:
                positions = torch.arange(offset, offset + length, device=x.device)  # (l,)
            q, k = self.rotary(q, k, positions)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # (b, heads, l, p)

        mask = None
        causal = length > 1
        if seq_idx is not None:
            same_seq = seq_idx[:, :, None] == seq_idx[:, None, :]  # (b, l, l)
            mask = (same_seq & _causal_mask(length, 0, x.device))[:, None]  # (b, 1, l, l)
            causal = False
        if state is not None:
            if torch.is_grad_enabled() and (k.requires_grad or v.requires_grad):
                # concatenate rather than attend over the buffer: later appends write the buffer in place,
                # which would invalidate a view saved for backward
                k_all = torch.cat((state.k[:, :, :offset].to(k.dtype), k), dim=2)  # (b, h_kv, offset + l, p)
                v_all = torch.cat((state.v[:, :, :offset].to(v.dtype), v), dim=2)
                state.append(k, v)
            else:
                state.append(k, v)
                # the cache may be kept in another dtype than the activations (an fp32 cache under autocast)
                k_all = state.k[:, :, : state.length].to(q.dtype)  # (b, h_kv, offset + l, p)
                v_all = state.v[:, :, : state.length].to(q.dtype)
            k, v = k_all, v_all
            if offset > 0 and causal:
                # SDPA's is_causal aligns the mask top-left; query i sits at offset + i among the keys
                mask, causal = _causal_mask(length, offset, x.device), False  # (l, offset + l)
        k, v = self._repeat_kv(k), self._repeat_kv(v)  # (b, h, offset + l, p)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal)  # (b, h, l, p)
        y = self.o_proj(y.transpose(1, 2).flatten(2))  # (b, l, d_model)
        return y, state

    def _repeat_kv(self, t: torch.Tensor) -> torch.Tensor:
        """(b, h_kv, s, p) -> (b, h, s, p): query head i reads kv head i // (h / h_kv)."""
        rep = self.n_heads // self.n_kv_heads
        if rep == 1:
            return t
        b, h_kv, s, p = t.shape
        return t[:, :, None].expand(b, h_kv, rep, s, p).reshape(b, h_kv * rep, s, p)

    def _check_inputs(self, x: torch.Tensor, state: KVCache | None, seq_idx: torch.Tensor | None) -> None:
        check_tensor("x", x)
        check_float("x", x)
        if x.dim() != 3 or x.shape[-1] != self.d_model:
            raise ValueError(f"x: expected shape (b, l, d_model) = (?, ?, {self.d_model}), got {tuple(x.shape)}")
        b, length, _ = x.shape
        check_seq_idx(seq_idx, b, length)
        if state is None:
            return
        if not isinstance(state, KVCache):
            raise TypeError(f"state: expected a KVCache from init_state or None, got {type(state).__name__}")
        if seq_idx is not None:
            raise ValueError("seq_idx: packed sequences are supported with state=None only (got a KVCache too)")
        want = (b, self.n_kv_heads, self.head_dim)
        got = (state.batch_size, state.k.shape[1], state.k.shape[3])
        if got != want:
            raise ValueError(
                f"state: expected KV buffers (b, h_kv, capacity, head_dim) = ({want[0]}, {want[1]}, ?,"
                f" {want[2]}), got {tuple(state.k.shape)}"
            )


def _causal_mask(length: int, offset: int, device: torch.device) -> torch.Tensor:
    """(l, offset + l) bool, True where query i (at position offset + i) may attend key j: j <= offset + i."""
    q_pos = torch.arange(offset, offset + length, device=device)[:, None]
    k_pos = torch.arange(offset + length, device=device)[None, :]
    return k_pos <= q_pos
