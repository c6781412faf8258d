"""What a decoding state holds, counted from the real state objects, and a synthetic KV-cache fill.

A KV cache doubles its capacity when full, so its allocated bytes are a step function of the context; the bytes
of its `length` valid tokens are the linear part. SSM states (S4D, Mamba, Mamba-2) have one size whatever the
context.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..layers.attention import KVCache
from ..models.lm import ModelState


@dataclass(frozen=True)
class StateBytes:
    allocated_bytes: int  # every tensor the state objects hold; KV caches at their full capacity
    used_bytes: int  # KV caches counted at their `length` valid tokens; other states in full
    kv_tokens: int  # the longest KV cache length (0 without attention)
    kv_capacity_tokens: int  # the largest KV cache capacity (0 without attention)


def kv_caches(state: ModelState) -> list[KVCache]:
    """The KV caches of a model state: attention layers and shared-attention sites."""
    return [s for s in (*state.layers, *state.shared) if isinstance(s, KVCache)]


def state_bytes(state: ModelState) -> StateBytes:
    """Bytes of every per-layer state, as each object reports them (`nbytes`), KV caches split by use."""
    if not isinstance(state, ModelState):
        raise TypeError(f"state: expected a ModelState from model.init_state, got {type(state).__name__}")
    allocated = used = 0
    for i, s in enumerate((*state.layers, *state.shared)):
        if s is None:
            continue
        if isinstance(s, KVCache):
            allocated += s.nbytes()
            used += s.length * _kv_bytes_per_token(s)
            continue
        if not hasattr(s, "nbytes"):
            raise TypeError(f"state: entry {i} ({type(s).__name__}) has no nbytes(); cannot count its bytes")
        n = s.nbytes()
        allocated += n
        used += n
    caches = kv_caches(state)
    return StateBytes(
        allocated_bytes=allocated,
        used_bytes=used,
        kv_tokens=max((c.length for c in caches), default=0),
        kv_capacity_tokens=max((c.capacity for c in caches), default=0),
    )


def fill_kv_synthetic(state: ModelState, context: int, *, generator: torch.Generator | None = None) -> ModelState:
    """Make a fresh state look as if it had read `context` tokens, without running attention over them.

    Every KV cache gets random N(0, 1) keys and values for `context` tokens, in buffers of the capacity a real
    prefill would leave (the initial capacity doubled until the context fits), same batch, heads, head dim,
    dtype and device; its `length` and `state.seqlen` become `context`. SSM layer states keep their initial
    values: their size and the cost of a step do not depend on the context. Decoding from this state costs
    what it would after a real prefill, because attention's work per token depends on the cache length only,
    never on the values; the logits are not those of any real text. In place; returns `state`.
    """
    if not isinstance(state, ModelState):
        raise TypeError(f"state: expected a ModelState from model.init_state, got {type(state).__name__}")
    if not isinstance(context, int) or isinstance(context, bool) or context < 0:
        raise ValueError(f"context: expected an int >= 0, got {context!r}")
    caches = kv_caches(state)
    if state.seqlen != 0 or any(c.length for c in caches):
        lengths = [c.length for c in caches]
        raise ValueError(
            f"state: expected a fresh state (seqlen 0, empty caches), got seqlen {state.seqlen},"
            f" cache lengths {lengths}"
        )
    for cache in caches:
        capacity = cache.capacity
        while capacity < context:
            capacity *= 2
        b, h_kv, _, p = cache.k.shape
        k = cache.k.new_empty(b, h_kv, capacity, p)  # (b, h_kv, capacity, p)
        v = cache.v.new_empty(b, h_kv, capacity, p)
        k[:, :, :context].normal_(generator=generator)
        v[:, :, :context].normal_(generator=generator)
        cache.k, cache.v, cache.length = k, v, context
    state.seqlen = context
    return state


def _kv_bytes_per_token(cache: KVCache) -> int:
    k, v = cache.k, cache.v
    per_token = k.shape[0] * k.shape[1] * k.shape[3] * k.element_size()
    return per_token + v.shape[0] * v.shape[1] * v.shape[3] * v.element_size()
