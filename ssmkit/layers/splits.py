"""Splits of a projection along its last dimension whose backward does not concatenate the pieces' gradients.

autograd's split backward concatenates the pieces' gradients into one tensor, a full copy of the activation. In
a Mamba block those copies are large: at d_model 2048, bf16, 65,536 tokens, Mamba-2's in_proj output is 1.1 GB,
and its backward copied it twice (in_proj's output, then the conv output into x, B, C).
- `split_linear`: in_proj followed by the split, as one Function whose backward runs in_proj's matmuls piece by
  piece (d input = sum_i d piece_i W_i, d W_i = d piece_i^T input), so the pieces never meet.
- `split_joined`: a split whose backward returns the joined buffer itself when the pieces' gradients already lie
  side by side in one (the SSD kernels write d x, d B, d C so), else the concatenation.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from ..ops._views import joined_view

_AUTOCAST_FROM = (torch.float32, torch.float16, torch.bfloat16)


class _SplitJoined(torch.autograd.Function):
    @staticmethod
    def forward(ctx, t, sizes):
        ctx.shape, ctx.dtype, ctx.sizes = t.shape, t.dtype, sizes
        ctx.set_materialize_grads(False)  # an unused piece's gradient stays None, not a tensor of zeros
        return t.split(sizes, dim=-1)

    @staticmethod
    @once_differentiable
    def backward(ctx, *grads):
        joined = joined_view(grads)
        if joined is not None:
            return joined, None
        lead = ctx.shape[:-1]
        like = next((g for g in grads if g is not None), None)
        pieces = [
            g if g is not None else torch.zeros(*lead, size, device=like.device, dtype=ctx.dtype)
            for g, size in zip(grads, ctx.sizes)
        ]
        return torch.cat(pieces, dim=-1), None


def split_joined(t: torch.Tensor, sizes: Sequence[int]) -> tuple[torch.Tensor, ...]:
    """t.split(sizes, dim=-1), whose backward hands back the pieces' gradients without a copy when they lie side
    by side in one buffer."""
    if not (torch.is_grad_enabled() and t.requires_grad):
        return t.split(list(sizes), dim=-1)
    return _SplitJoined.apply(t, tuple(sizes))


def _autocast_dtype(device_type: str) -> torch.dtype | None:
    return torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else None


def _cast(t: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    return t.to(dtype) if t is not None and t.dtype in _AUTOCAST_FROM else t


class _SplitLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, sizes):
        ctx.dtypes = (x.dtype, weight.dtype, None if bias is None else bias.dtype)
        cast = _autocast_dtype(x.device.type)
        if cast is not None:  # as autocast runs nn.Linear: 16/32-bit floats in its dtype, fp64 as it is
            x, weight, bias = (_cast(t, cast) for t in (x, weight, bias))
        with torch.autocast(x.device.type, enabled=False):
            out = F.linear(x, weight, bias)  # (..., sum sizes)
        ctx.save_for_backward(x, weight)
        ctx.sizes, ctx.has_bias = sizes, bias is not None
        ctx.set_materialize_grads(False)  # an unused piece costs no matmuls in backward
        return out.split(sizes, dim=-1)

    @staticmethod
    @once_differentiable
    def backward(ctx, *grads):
        x, weight = ctx.saved_tensors  # in the forward's compute dtype
        x_dtype, w_dtype, b_dtype = ctx.dtypes
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        starts = itertools.accumulate(ctx.sizes[:-1], initial=0)
        # (start of the piece in the output, its gradient as (tokens, d_i))
        present = [(start, g.reshape(-1, g.shape[-1])) for start, g in zip(starts, grads) if g is not None]
        dx = dw = db = None
        if need_x and present:
            # (tokens, d_in): one matmul per piece, summed in place; the narrowest first, because each later one
            # reads and writes the sum, which costs most next to a matmul of little work (Mamba-2's dt: 64 wide)
            for start, g in sorted(present, key=lambda piece: piece[1].shape[1]):
                w = weight[start : start + g.shape[1]].to(g.dtype)  # (d_i, d_in)
                dx = g @ w if dx is None else dx.addmm_(g, w)
            dx = dx.view(x.shape).to(x_dtype)
        if need_w:
            alloc = torch.empty if len(present) == len(grads) else torch.zeros
            dw = alloc(weight.shape, device=weight.device, dtype=weight.dtype)
            x2 = x.reshape(-1, x.shape[-1])  # (tokens, d_in)
            for start, g in present:
                torch.mm(g.t(), x2.to(g.dtype), out=dw[start : start + g.shape[1]])  # (d_i, d_in)
            dw = dw.to(w_dtype)
        if ctx.has_bias and need_b:
            db = torch.zeros(weight.shape[0], device=weight.device, dtype=torch.float32)
            for start, g in present:
                db[start : start + g.shape[1]] = g.float().sum(0)
            db = db.to(b_dtype)
        return dx, dw, db, None


def split_linear(linear: nn.Module, x: torch.Tensor, sizes: Sequence[int]) -> tuple[torch.Tensor, ...]:
    """linear(x).split(sizes, dim=-1) with a backward that never joins the pieces' gradients.

    Only a plain nn.Linear without hooks takes that path: anything else (a wrapped or hooked module, e.g. a LoRA
    adapter) is called as a module, so its own forward runs."""
    plain = type(linear) is nn.Linear and not (linear._forward_hooks or linear._forward_pre_hooks)
    wants_grad = torch.is_grad_enabled() and any(t.requires_grad for t in (x, *linear.parameters()))
    if not (plain and wants_grad):
        return linear(x).split(list(sizes), dim=-1)
    return _SplitLinear.apply(x, linear.weight, linear.bias, tuple(sizes))
