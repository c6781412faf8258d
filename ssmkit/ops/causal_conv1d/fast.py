"""Pure-PyTorch fast path: one grouped F.conv1d over the state-prefixed input, in fp32 (fp64 kept).

With seq_idx, the conv runs unmasked and the taps that reach across a change of seq_idx are subtracted again:
those are at most w-1 per sequence start, and the correction is a few elementwise products, so the conv itself
stays one dense call.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .reference import apply_activation, compute_dtype, final_state_of, padded_input, padded_segments


def causal_conv1d_torch(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    activation: str | None,
    initial_state: torch.Tensor | None,
    return_final_state: bool,
    seq_idx: torch.Tensor | None,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    ct = compute_dtype(x)
    _, l, d = x.shape
    w = weight.shape[1]
    xp = padded_input(x, initial_state, w, ct)  # (b, w-1+l, d)
    wf = weight.to(ct)
    bf = None if bias is None else bias.to(ct)
    y = F.conv1d(xp.transpose(1, 2), wf.unsqueeze(1), bf, groups=d).transpose(1, 2)  # (b, l, d)
    segments = None
    if seq_idx is not None:
        segments = padded_segments(seq_idx, w)
        # the last tap (k = w-1) reads x_t itself and is never masked
        for k in range(w - 1):
            cross = segments[:, k : k + l] != segments[:, w - 1 :]  # (b, l)
            y = y - xp[:, k : k + l] * wf[:, k] * cross.unsqueeze(-1).to(ct)
    y = apply_activation(y, activation).to(x.dtype)
    if not return_final_state:
        return y
    return y, final_state_of(xp, segments, w, x.dtype)
