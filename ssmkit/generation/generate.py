"""Autoregressive generation over a model's recurrent state: one prefill, then one `step` per token.

For the SSM layers each step costs the same whatever the context length; attention layers read their KV cache.
`stream` yields tokens as they are produced; `generate` collects them.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from .sampling import sample_next


@torch.inference_mode()
def stream(
    model,
    input_ids: torch.Tensor,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    eos_token_id: int | None = None,
    generator: torch.Generator | None = None,
) -> Iterator[torch.Tensor]:
    """Yields (b,) token ids, one per step. Rows that produced eos keep yielding eos until all have."""
    if not isinstance(max_new_tokens, int) or max_new_tokens < 0:
        raise ValueError(f"max_new_tokens: expected an int >= 0, got {max_new_tokens!r}")
    if input_ids.dim() != 2 or input_ids.shape[1] == 0:
        raise ValueError(f"input_ids: expected shape (b, l) with l >= 1, got {tuple(input_ids.shape)}")
    state = model.init_state(input_ids.shape[0])
    logits = model(input_ids, state=state)[:, -1]  # (b, V)
    finished = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
    for i in range(max_new_tokens):
        token = sample_next(logits, temperature, top_k, top_p, generator)
        if eos_token_id is not None:
            token = token.masked_fill(finished, eos_token_id)
            finished |= token == eos_token_id
        yield token
        if (eos_token_id is not None and bool(finished.all())) or i == max_new_tokens - 1:
            return
        logits = model.step(token, state)


def generate(model, input_ids: torch.Tensor, max_new_tokens: int, **kw) -> torch.Tensor:
    """(b, l) -> (b, l + new tokens): the prompt followed by what was generated."""
    new = list(stream(model, input_ids, max_new_tokens, **kw))
    return torch.cat([input_ids, torch.stack(new, 1)], 1) if new else input_ids.clone()
