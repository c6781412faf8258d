"""Pieces every SSD path shares: the compute dtype, the dt transform, segment ids for packed sequences."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

DEFAULT_DT_LIMIT = (0.0, math.inf)


def compute_dtype(x: torch.Tensor) -> torch.dtype:
    """fp32 inside, fp64 kept (so the fp64 reference is exact enough to judge the others)."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def process_dt(
    dt: torch.Tensor,
    dt_bias: torch.Tensor | None,
    dt_softplus: bool,
    dt_limit: tuple[float, float],
    ct: torch.dtype,
) -> torch.Tensor:
    """dt <- clamp(softplus(dt + dt_bias), *dt_limit); dt: (..., h), dt_bias: (h,). Returns ct."""
    dt = dt.to(ct)
    if dt_bias is not None:
        dt = dt + dt_bias.to(ct)
    if dt_softplus:
        dt = F.softplus(dt)
    if tuple(dt_limit) != DEFAULT_DT_LIMIT:
        dt = dt.clamp(min=dt_limit[0], max=dt_limit[1])
    return dt


def segment_ids(seq_idx: torch.Tensor) -> torch.Tensor:
    """(b, l) int labels -> (b, l) int64 ids 0, 1, 2, ... that step up wherever the label changes along l."""
    changes = seq_idx[:, 1:] != seq_idx[:, :-1]  # (b, l - 1)
    return F.pad(changes.long().cumsum(dim=1), (1, 0))


def seq_idx_from_cu_seqlens(cu_seqlens: torch.Tensor, length: int) -> torch.Tensor:
    """(num_seqs + 1,) cumulative lengths -> (1, l) sequence labels."""
    positions = torch.arange(length, device=cu_seqlens.device, dtype=cu_seqlens.dtype)
    return torch.searchsorted(cu_seqlens[1:].contiguous(), positions, right=True)[None]


def skip_and_gate(
    y: torch.Tensor,
    xf: torch.Tensor,
    D: torch.Tensor | None,
    z: torch.Tensor | None,
    ct: torch.dtype,
    inplace: bool = False,
) -> torch.Tensor:
    """y + D x, then times silu(z). y, xf, z: (..., h, p); D: (h,) or (h, p). inplace: y may be overwritten."""
    if D is not None:
        Df = D.to(ct)
        Df = Df[:, None] if Df.dim() == 1 else Df  # (h, 1) or (h, p)
        y = y.addcmul_(xf, Df) if inplace else torch.addcmul(y, xf, Df)
    if z is not None:
        gate = F.silu(z.to(ct))
        y = y.mul_(gate) if inplace else y * gate
    return y


def segsum(a: torch.Tensor) -> torch.Tensor:
    """(..., l) -> (..., l, l): out[t, s] = a[s+1] + ... + a[t] for s <= t, -inf above the diagonal."""
    l = a.shape[-1]
    lower = torch.ones(l, l, dtype=torch.bool, device=a.device).tril()  # (t, s): s <= t
    strictly_lower = lower.tril(-1)
    terms = a[..., :, None].expand(*a.shape, l).masked_fill(~strictly_lower, 0)  # (..., t, s) = a[t] if s < t
    return terms.cumsum(dim=-2).masked_fill_(~lower, float("-inf"))
