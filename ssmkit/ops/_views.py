"""Tensors that are side-by-side pieces of one buffer along the last dimension.

A layer that splits one projection into pieces (Mamba-2's x, B, C from the conv output) gets one gradient per
piece back, and autograd's split backward concatenates them: a full copy of the activation. When the kernels
that produce those gradients write them into one buffer laid out like the forward's, the buffer itself is the
concatenation; these helpers find it and hand out such layouts.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import torch


def joined_view(pieces: Sequence[torch.Tensor | None]) -> torch.Tensor | None:
    """The contiguous tensor whose last dimension is `pieces` side by side, when they are views into exactly that
    layout of one storage (same leading shape, dtype and strides, each piece starting where the previous ends);
    else None. pieces: (..., d_i) each -> (..., sum d_i)."""
    if not pieces or any(t is None for t in pieces):
        return None
    first = pieces[0]
    lead, stride = first.shape[:-1], first.stride()
    widths = [t.shape[-1] for t in pieces]
    whole_shape = (*lead, sum(widths))
    contiguous = _contiguous_strides(whole_shape)
    if not _same_strides(whole_shape[:-1], stride[:-1], contiguous[:-1]) or stride[-1] != 1 or first.numel() == 0:
        return None
    storage, offset = first.untyped_storage().data_ptr(), first.storage_offset()
    starts = itertools.accumulate(widths[:-1], initial=0)
    for t, start in zip(pieces, starts):
        same_place = t.untyped_storage().data_ptr() == storage and t.storage_offset() == offset + start
        same_layout = t.shape[:-1] == lead and _same_strides(lead, t.stride()[:-1], stride[:-1]) and t.stride(-1) == 1
        if not same_place or not same_layout or t.dtype != first.dtype:
            return None
    if (offset + math.prod(whole_shape)) * first.element_size() > first.untyped_storage().nbytes():
        return None
    return first.as_strided(whole_shape, contiguous, offset)


def empty_like_pieces(pieces: Sequence[torch.Tensor]) -> list[torch.Tensor] | None:
    """New uninitialised tensors shaped like `pieces` (each (b, l, ...) with its trailing dims folded into one
    last dimension by the caller) that are side by side in one fresh buffer, when `pieces` themselves are
    (joined_view is not None); else None."""
    joined = joined_view(pieces)
    if joined is None:
        return None
    whole = torch.empty_like(joined, memory_format=torch.contiguous_format)
    widths = [t.shape[-1] for t in pieces]
    return list(whole.split(widths, dim=-1))


def _contiguous_strides(shape: Sequence[int]) -> tuple[int, ...]:
    strides, step = [], 1
    for size in reversed(shape):
        strides.append(step)
        step *= size
    return tuple(reversed(strides))


def _same_strides(shape: Sequence[int], a: Sequence[int], b: Sequence[int]) -> bool:
    """Strides that address the same elements: a dimension of size 1 may carry any stride."""
    return all(size == 1 or sa == sb for size, sa, sb in zip(shape, a, b))
