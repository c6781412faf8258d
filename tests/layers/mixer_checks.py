"""Invariants every token mixer must satisfy (guide section 4), shared by the per-layer tests."""

from __future__ import annotations

import torch


def check_step_equals_forward(mixer, x: torch.Tensor, atol: float = 1e-5) -> None:
    y_full, none_state = mixer(x)
    assert none_state is None
    state = mixer.init_state(x.shape[0], x.device, x.dtype)
    outs = []
    for t in range(x.shape[1]):
        y_t, state = mixer.step(x[:, t], state)
        outs.append(y_t)
    torch.testing.assert_close(torch.stack(outs, 1), y_full, rtol=1e-4, atol=atol)


def check_prefill_then_steps(mixer, x: torch.Tensor, split: int, atol: float = 1e-5) -> None:
    """forward(x[:split], state) then step() over the rest == forward(x)."""
    y_full, _ = mixer(x)
    state = mixer.init_state(x.shape[0], x.device, x.dtype)
    y_pre, state = mixer(x[:, :split], state)
    outs = [y_pre]
    y_mid, state = mixer(x[:, split : split + 3], state)  # a second prefill continues the first
    outs.append(y_mid)
    for t in range(split + 3, x.shape[1]):
        y_t, state = mixer.step(x[:, t], state)
        outs.append(y_t[:, None])
    torch.testing.assert_close(torch.cat(outs, 1), y_full, rtol=1e-4, atol=atol)


def check_packed_equals_separate(mixer, lengths: list[int], d_model: int, atol: float = 1e-5) -> None:
    parts = [torch.randn(1, n, d_model) for n in lengths]
    seq_idx = torch.cat([torch.full((n,), i) for i, n in enumerate(lengths)])[None]
    y_packed, _ = mixer(torch.cat(parts, 1), seq_idx=seq_idx)
    y_separate = torch.cat([mixer(p)[0] for p in parts], 1)
    torch.testing.assert_close(y_packed, y_separate, rtol=1e-4, atol=atol)


def check_all_parameters_get_gradients(mixer, x: torch.Tensor) -> None:
    y, _ = mixer(x)
    y.square().mean().backward()
    missing = [n for n, p in mixer.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.abs().sum())]
    assert not missing, f"no gradient reached {missing}"
