"""Depthwise causal convolution written as its sum over taps (fp32 inside, fp64 kept).

    y_t = act(bias + sum_{k=0}^{w-1} weight[:, k] * x_{t-(w-1)+k})

Positions before 0 read the initial state; with seq_idx a tap reads zero when it reaches into another sequence.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def compute_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def padded_input(x: torch.Tensor, initial_state: torch.Tensor | None, w: int, ct: torch.dtype) -> torch.Tensor:
    """The input with the w-1 state positions in front: (b, w-1+l, d) in ct."""
    b, _, d = x.shape
    zeros = x.new_zeros(b, w - 1, d, dtype=ct)
    prefix = zeros if initial_state is None else initial_state.to(ct).transpose(1, 2)  # (b, w-1, d)
    return torch.cat([prefix, x.to(ct)], dim=1)


def padded_segments(seq_idx: torch.Tensor, w: int) -> torch.Tensor:
    """Segment numbers (b, w-1+l): they count the changes of seq_idx along l, so a value of seq_idx that comes
    back later is a new sequence; the w-1 state positions in front belong to the first one."""
    change = (seq_idx[:, 1:] != seq_idx[:, :-1]).long()  # (b, l-1)
    return torch.cumsum(F.pad(change, (w, 0)), dim=1)  # (b, w-1+l), zero over the state and the first run


def final_state_of(xp: torch.Tensor, segments: torch.Tensor | None, w: int, dtype: torch.dtype) -> torch.Tensor:
    """The last w-1 positions of the padded input as (b, d, w-1); with seq_idx, only those of the last sequence
    (the ones a continuation of that sequence would read)."""
    l = xp.shape[1] - (w - 1)
    tail = xp[:, l:]  # (b, w-1, d)
    if segments is not None:
        same = segments[:, l:] == segments[:, -1:]  # (b, w-1)
        tail = tail * same.unsqueeze(-1).to(tail.dtype)
    return tail.transpose(1, 2).to(dtype)


def apply_activation(y: torch.Tensor, activation: str | None) -> torch.Tensor:
    return F.silu(y) if activation == "silu" else y


def causal_conv1d_ref(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    activation: str | None,
    initial_state: torch.Tensor | None,
    return_final_state: bool,
    seq_idx: torch.Tensor | None,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    ct = compute_dtype(x)
    _, l, _ = x.shape
    w = weight.shape[1]
    xp = padded_input(x, initial_state, w, ct)  # (b, w-1+l, d)
    segments = None if seq_idx is None else padded_segments(seq_idx, w)
    wf = weight.to(ct)
    y = torch.zeros_like(xp[:, w - 1 :])  # (b, l, d)
    for k in range(w):
        tap = xp[:, k : k + l] * wf[:, k]  # (b, l, d): x_{t-(w-1)+k} for every t
        if segments is not None:
            same = segments[:, k : k + l] == segments[:, w - 1 :]  # (b, l)
            tap = tap * same.unsqueeze(-1).to(ct)
        y = y + tap
    if bias is not None:
        y = y + bias.to(ct)
    y = apply_activation(y, activation).to(x.dtype)
    if not return_final_state:
        return y
    return y, final_state_of(xp, segments, w, x.dtype)


def causal_conv1d_update_ref(
    x_t: torch.Tensor,
    conv_state: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    activation: str | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    ct = compute_dtype(x_t)
    window = torch.cat([conv_state.to(ct), x_t.to(ct).unsqueeze(-1)], dim=-1)  # (b, d, w)
    y = (window * weight.to(ct)).sum(dim=-1)  # (b, d)
    if bias is not None:
        y = y + bias.to(ct)
    y = apply_activation(y, activation).to(x_t.dtype)
    return y, window[..., 1:].to(conv_state.dtype)
