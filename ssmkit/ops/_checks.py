"""Argument validation shared by every op.

Errors name the argument, what it got and what it expected, so a user can fix the call without reading code.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def check_tensor(name: str, value: object) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(value).__name__}")
    return value


def check_shape(name: str, tensor: torch.Tensor, expected: Sequence[int | None], layout: str) -> None:
    """Raise unless `tensor` has `expected` shape; None entries match any size.

    `layout` spells the dimensions for the message, e.g. "(b, l, d)".
    """
    check_tensor(name, tensor)
    shape = tuple(tensor.shape)
    ok = len(shape) == len(expected) and all(e is None or e == s for e, s in zip(expected, shape))
    if not ok:
        parts = ["?" if e is None else str(e) for e in expected]
        want = "(" + ", ".join(parts) + ("," if len(parts) == 1 else "") + ")"
        raise ValueError(f"{name}: expected shape {layout} = {want}, got {shape}")


def check_float(name: str, tensor: torch.Tensor) -> None:
    if tensor.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name}: expected a floating dtype (float16, bfloat16, float32, float64), got {tensor.dtype}")


def check_dtype(name: str, tensor: torch.Tensor, dtype: torch.dtype) -> None:
    if tensor.dtype != dtype:
        raise TypeError(f"{name}: expected dtype {dtype}, got {tensor.dtype}")


def check_seq_idx(seq_idx: torch.Tensor | None, batch: int, length: int) -> None:
    if seq_idx is None:
        return
    check_shape("seq_idx", seq_idx, (batch, length), "(b, l)")
    if seq_idx.dtype.is_floating_point or seq_idx.dtype == torch.bool:
        raise TypeError(f"seq_idx: expected an integer dtype, got {seq_idx.dtype}")


def check_divides(name: str, value: int, divisor_name: str, divisor: int) -> None:
    if divisor <= 0 or value % divisor != 0:
        raise ValueError(f"{name} = {value} must be divisible by {divisor_name} = {divisor}")


def same_device(**tensors: torch.Tensor | None) -> None:
    devices = {n: t.device for n, t in tensors.items() if t is not None}
    if len(set(devices.values())) > 1:
        raise ValueError(f"all tensors must be on one device, got {devices}")


def check_out_state(out_state: torch.Tensor | None, expected: tuple, layout: str, dtype: torch.dtype) -> None:
    """A decoding step's optional output buffer for the new state: its shape and the state's dtype."""
    if out_state is None:
        return
    check_shape("out_state", out_state, expected, layout)
    if out_state.dtype != dtype:
        raise TypeError(f"out_state: expected dtype {dtype} (the state's dtype), got {out_state.dtype}")


def needs_grad(*tensors: torch.Tensor | None) -> bool:
    """Whether autograd would record an op on these tensors (the inference-only kernels then step aside)."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)
