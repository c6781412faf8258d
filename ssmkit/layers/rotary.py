"""Rotary position embedding (RoPE), with positions passed explicitly.

Channel pair (i, i + r/2) of the first r = rotary_dim channels of each head is rotated by the angle
pos * theta^(-2i/r) (the "rotate half" pairing of Hugging Face Llama / GPT-NeoX, so their weights work as is);
channels past r pass through unchanged (partial rotary). A query at position m and a key at position n then
score q . k as a function of m - n only.

Positions are a (b, l) or (l,) int tensor, so packed sequences (`positions_from_seq_idx`) and KV-cache offsets
need nothing special. cos/sin and the rotation run in fp32 (fp64 kept): bf16 angles are wrong after a few
hundred positions. Nothing is cached in a buffer, so `model.to(bfloat16)` cannot round the frequencies.

Glossary: head_dim <-> p, rotary_dim <-> r, theta <-> the RoPE base.
"""

from __future__ import annotations

import torch
from torch import nn

from ..ops._checks import check_tensor


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def rotary_dim_for(head_dim: int, fraction: float = 1.0) -> int:
    """The number of rotated channels: fraction * head_dim rounded down to an even number."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"rotary fraction: expected a number in (0, 1], got {fraction!r}")
    r = int(head_dim * fraction) // 2 * 2
    if r == 0:
        raise ValueError(f"rotary fraction {fraction} of head_dim {head_dim} rotates no channel pair")
    return r


def check_positions(positions: torch.Tensor, length: int, batch: int | None = None) -> None:
    check_tensor("positions", positions)
    if positions.dtype.is_floating_point or positions.dtype.is_complex or positions.dtype == torch.bool:
        raise TypeError(f"positions: expected an integer dtype, got {positions.dtype}")
    shape = tuple(positions.shape)
    ok = shape == (length,) or (len(shape) == 2 and shape[1] == length and batch in (None, shape[0]))
    if not ok:
        b = "b" if batch is None else str(batch)
        raise ValueError(f"positions: expected shape (l,) = ({length},) or (b, l) = ({b}, {length}), got {shape}")


def rotary_cos_sin(
    positions: torch.Tensor, rotary_dim: int, theta: float = 10000.0, dtype: torch.dtype = torch.float32
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin of the rotation angles: positions (..., l) int -> two (..., l, rotary_dim / 2) in `dtype`."""
    # the frequencies in fp64 then rounded once, so fp32 and fp64 runs use the same angles up to rounding
    exponent = torch.arange(0, rotary_dim, 2, device=positions.device, dtype=torch.float64) / rotary_dim
    inv_freq = (1.0 / theta**exponent).to(dtype)  # (r/2,)
    angles = positions.to(dtype)[..., None] * inv_freq  # (..., l, r/2)
    return angles.cos(), angles.sin()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate the first r = 2 * cos.shape[-1] channels of x (b, l, h, p); cos, sin: (b, l, r/2) or (l, r/2).

    The result has x's dtype; the rotation runs in cos's dtype.
    """
    half = cos.shape[-1]
    r = 2 * half
    cos = cos[..., None, :]  # (b, l, 1, r/2): the same angle for every head
    sin = sin[..., None, :]
    x1 = x[..., :half].to(cos.dtype)  # (b, l, h, r/2)
    x2 = x[..., half:r].to(cos.dtype)
    rotated = torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1).to(x.dtype)  # (b, l, h, r)
    if r == x.shape[-1]:
        return rotated
    return torch.cat((rotated, x[..., r:]), dim=-1)  # (b, l, h, p)


def positions_from_seq_idx(seq_idx: torch.Tensor, offset: int = 0) -> torch.Tensor:
    """Positions (b, l) that restart at 0 wherever seq_idx (b, l) changes along l; the first sequence of each
    row starts at `offset` (it may continue a cached prefix)."""
    b, length = seq_idx.shape
    idx = torch.arange(length, device=seq_idx.device).expand(b, length)  # (b, l)
    starts = torch.ones_like(seq_idx, dtype=torch.bool)
    starts[:, 1:] = seq_idx[:, 1:] != seq_idx[:, :-1]
    last_start = torch.where(starts, idx, 0).cummax(dim=1).values  # (b, l) where each token's sequence began
    first = last_start == 0  # (b, l) tokens of the row's first sequence
    return idx - last_start + torch.where(first, offset, 0)


class RotaryEmbedding(nn.Module):
    """Applies RoPE to queries and keys laid out (b, l, h, p); holds no parameters or buffers."""

    def __init__(self, head_dim: int, theta: float = 10000.0, fraction: float = 1.0) -> None:
        super().__init__()
        if not theta > 1.0:
            raise ValueError(f"theta: expected a number > 1, got {theta!r}")
        self.head_dim = head_dim
        self.theta = float(theta)
        self.rotary_dim = rotary_dim_for(head_dim, fraction)

    def forward(self, q: torch.Tensor, k: torch.Tensor, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """q: (b, l, h, p), k: (b, l, h_kv, p), positions: (b, l) or (l,) int -> rotated q, k."""
        for name, t in (("q", q), ("k", k)):
            check_tensor(name, t)
            if t.dim() != 4 or t.shape[-1] != self.head_dim:
                want = f"(b, l, h, head_dim) = (?, ?, ?, {self.head_dim})"
                raise ValueError(f"{name}: expected shape {want}, got {tuple(t.shape)}")
        check_positions(positions, q.shape[1], q.shape[0])
        cos, sin = rotary_cos_sin(positions, self.rotary_dim, self.theta, _compute_dtype(q))
        return apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)

    def extra_repr(self) -> str:
        return f"head_dim={self.head_dim}, rotary_dim={self.rotary_dim}, theta={self.theta}"
