"""Depthwise causal conv1d (the short convolution before Mamba's SSM): dispatcher and decoding step.

    y = causal_conv1d(x, weight, bias=None, activation=None, initial_state=None,
                      return_final_state=False, seq_idx=None, backend="auto")
    x: (b, l, d)   weight: (d, w)   bias: (d,)   activation: None | "silu"
    initial_state / final_state: (b, d, w-1), the w-1 inputs before x (oldest first), in x's dtype

    y_t = act(bias + sum_k weight[:, k] * x_{t-(w-1)+k});  positions before 0 read initial_state (zeros if None).
    seq_idx (b, l) int: no tap reaches across a change of seq_idx (it reads zero); initial_state feeds only the
    first sequence of each row, and final_state keeps only the last sequence's inputs (zeros before its start),
    so decoding can continue that sequence.

    dx, dweight, dbias = causal_conv1d_grads(x, weight, bias, dy, activation=None, needs=(True, True, True))
    the gradients of y for d y = dy, from x alone (no states, no seq_idx)

    y_t, state = causal_conv1d_update(x_t, conv_state, weight, bias=None, activation=None, backend="auto")
    x_t: (b, d)   conv_state: (b, d, w-1) -> y_t: (b, d), new state (b, d, w-1) in conv_state's dtype

Every path computes in fp32 (fp64 when x is fp64) and returns x's dtype; weight, bias and the state may have any
floating dtype. backend: "reference", "torch" (the update's torch path is the reference), "triton" (CUDA tensors;
float16/bfloat16/float32 x, widths w <= 8), or "auto": triton on CUDA tensors, else torch. When "auto" meets a
call the kernels cannot take (float64, w > 8) it runs the torch path and warns.
"""

from __future__ import annotations

from importlib.util import find_spec

import torch

from .._backend import away_from_triton, register_op, resolve_backend
from .._checks import check_float, check_seq_idx, check_shape, check_tensor, same_device
from .fast import causal_conv1d_torch
from .reference import causal_conv1d_ref, causal_conv1d_update_ref

register_op("causal_conv1d", "reference", "torch")
register_op("causal_conv1d_update", "reference", "torch")
if find_spec("triton") is not None:
    # the kernels import on first use: Triton reads TRITON_INTERPRET when it is imported
    register_op("causal_conv1d", "triton")
    register_op("causal_conv1d_update", "triton")

ACTIVATIONS = (None, "silu")


def _choose(op: str, backend: str, x: torch.Tensor, w: int) -> str:
    """The backend that runs: resolve_backend's choice, except that the Triton kernels refuse float64 and w > 8
    (an error when asked for by name, a warning and the torch path under "auto")."""
    chosen = resolve_backend(op, backend, x.device)
    if chosen != "triton":
        return chosen
    from .triton_conv import unsupported_reason

    chosen = away_from_triton(op, backend, chosen, unsupported_reason(x.dtype, w))
    return "torch" if chosen == "triton" and not x.numel() else chosen  # nothing to launch for an empty batch


def _check_common(weight: torch.Tensor, bias: torch.Tensor | None, activation: str | None, d: int) -> int:
    check_shape("weight", weight, (d, None), "(d, w)")
    check_float("weight", weight)
    w = weight.shape[1]
    if w < 1:
        raise ValueError(f"weight: expected shape (d, w) with w >= 1, got {tuple(weight.shape)}")
    if bias is not None:
        check_shape("bias", bias, (d,), "(d,)")
        check_float("bias", bias)
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation: expected one of {ACTIVATIONS}, got {activation!r}")
    return w


def causal_conv1d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    activation: str | None = None,
    initial_state: torch.Tensor | None = None,
    return_final_state: bool = False,
    seq_idx: torch.Tensor | None = None,
    backend: str = "auto",
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Depthwise causal conv over time; returns y (b, l, d), or (y, final_state (b, d, w-1))."""
    check_tensor("x", x)
    check_float("x", x)
    if x.dim() != 3 or x.shape[1] < 1:
        raise ValueError(f"x: expected shape (b, l, d) with l >= 1, got {tuple(x.shape)}")
    b, l, d = x.shape
    w = _check_common(weight, bias, activation, d)
    if initial_state is not None:
        check_shape("initial_state", initial_state, (b, d, w - 1), "(b, d, w-1)")
        check_float("initial_state", initial_state)
    check_seq_idx(seq_idx, b, l)
    same_device(x=x, weight=weight, bias=bias, initial_state=initial_state, seq_idx=seq_idx)
    chosen = _choose("causal_conv1d", backend, x, w)
    if chosen == "triton":
        from .triton_conv import causal_conv1d_triton as fn
    else:
        fn = causal_conv1d_ref if chosen == "reference" else causal_conv1d_torch
    return fn(x, weight, bias, activation, initial_state, return_final_state, seq_idx)


def causal_conv1d_grads(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    dy: torch.Tensor,
    activation: str | None = None,
    needs: tuple[bool, bool, bool] = (True, True, True),
    backend: str = "auto",
) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """(dx, dweight, dbias) of y = causal_conv1d(x, weight, bias, activation) for d y = dy (b, l, d), each None
    unless `needs` asks for it (dbias also without a bias); no states, no seq_idx.

    For a caller that kept x but not the conv's graph (Mamba's fused block recomputes in its backward): the Triton
    path runs the backward kernel alone (it recomputes what it needs from x), the others run the forward with a
    graph under the caller's autocast state and differentiate it."""
    check_tensor("x", x)
    check_float("x", x)
    if x.dim() != 3 or x.shape[1] < 1:
        raise ValueError(f"x: expected shape (b, l, d) with l >= 1, got {tuple(x.shape)}")
    w = _check_common(weight, bias, activation, x.shape[2])
    check_shape("dy", dy, tuple(x.shape), "(b, l, d), x's shape")
    same_device(x=x, weight=weight, bias=bias, dy=dy)
    chosen = _choose("causal_conv1d", backend, x, w)
    if chosen == "triton":
        from .triton_conv import causal_conv1d_grads_triton

        return causal_conv1d_grads_triton(x, weight, bias, dy, activation, needs)
    fn = causal_conv1d_ref if chosen == "reference" else causal_conv1d_torch
    leaves = [None if t is None else t.detach().requires_grad_(need) for t, need in zip((x, weight, bias), needs)]
    wanted = [t for t in leaves if t is not None and t.requires_grad]
    if not wanted:
        return None, None, None
    with torch.enable_grad():
        y = fn(*leaves, activation, None, False, None)
    got = iter(torch.autograd.grad(y, wanted, dy))
    return tuple(next(got) if t is not None and t.requires_grad else None for t in leaves)


def causal_conv1d_update(
    x_t: torch.Tensor,
    conv_state: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    activation: str | None = None,
    backend: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """One decoding step: returns (y_t (b, d), new conv_state (b, d, w-1)); conv_state is not modified."""
    check_tensor("x_t", x_t)
    check_float("x_t", x_t)
    if x_t.dim() != 2:
        raise ValueError(f"x_t: expected shape (b, d), got {tuple(x_t.shape)}")
    b, d = x_t.shape
    w = _check_common(weight, bias, activation, d)
    check_shape("conv_state", conv_state, (b, d, w - 1), "(b, d, w-1)")
    check_float("conv_state", conv_state)
    same_device(x_t=x_t, conv_state=conv_state, weight=weight, bias=bias)
    if _choose("causal_conv1d_update", backend, x_t, w) == "triton":
        from .triton_update import causal_conv1d_update_triton

        return causal_conv1d_update_triton(x_t, conv_state, weight, bias, activation)
    # one token has nothing to parallelize: the torch path is the reference's arithmetic
    return causal_conv1d_update_ref(x_t, conv_state, weight, bias, activation)


__all__ = ["causal_conv1d", "causal_conv1d_grads", "causal_conv1d_update"]
