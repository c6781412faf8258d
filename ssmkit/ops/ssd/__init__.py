"""Mamba-2 state-space duality (SSD): dispatcher over the reference recurrence and the chunked fast path.

    x, z: (b, l, h, p)   dt: (b, l, h)   A: (h,) negative   B, C: (b, l, g, n), h % g == 0
    D: (h,) or (h, p)    dt_bias: (h,)   initial_state / final_state: (b, h, p, n), fp32 (fp64 with fp64 inputs)
    group j of B/C serves heads [j*h/g, (j+1)*h/g)

    dt <- clamp(softplus(dt + dt_bias), *dt_limit)     (each part only when asked for)
    h_t = exp(dt_t A) h_{t-1} + dt_t x_t B_t^T          y_t = h_t C_t + D x_t;  y <- y * silu(z)

Packed sequences: `seq_idx` (b, l) int, the state resets wherever it changes along l, or `cu_seqlens`
(num_seqs + 1,) cumulative lengths with b == 1. The initial state applies to the first sequence only; the
final state is the one after the last token (of the last sequence).
"""

from __future__ import annotations

import itertools
import math
import numbers
from importlib.util import find_spec

import torch

from .._backend import away_from_triton, float64_reason, register_op, resolve_backend
from .._checks import (
    check_divides,
    check_float,
    check_out_state,
    check_seq_idx,
    check_shape,
    check_tensor,
    needs_grad,
    same_device,
)
from ._common import DEFAULT_DT_LIMIT, segment_ids, seq_idx_from_cu_seqlens
from .chunked import ssd_chunked
from .quadratic import ssd_quadratic_form
from .reference import ssd_reference
from .step import ssd_step_torch

__all__ = ["ssd", "ssd_quadratic", "ssd_step"]

register_op("ssd", "reference", "torch")
if find_spec("triton") is not None:
    # the kernels import on first use: Triton reads TRITON_INTERPRET when a kernel is defined
    register_op("ssd", "triton")
register_op("ssd_step", "reference", "torch", *(("triton",) if find_spec("triton") else ()))

_STATE_DTYPES = (torch.float32, torch.float64)


def _check_float_tensor(name: str, t: torch.Tensor | None, expected: tuple, layout: str) -> None:
    if t is not None:
        check_shape(name, t, expected, layout)
        check_float(name, t)


def _check_D(D: torch.Tensor | None, h: int, p: int) -> None:
    if D is None:
        return
    check_tensor("D", D)
    if tuple(D.shape) not in ((h,), (h, p)):
        raise ValueError(f"D: expected shape (h,) = ({h},) or (h, p) = ({h}, {p}), got {tuple(D.shape)}")
    check_float("D", D)


def _check_state(name: str, state: torch.Tensor | None, expected: tuple) -> None:
    if state is None:
        return
    check_shape(name, state, expected, "(b, h, p, n)")
    if state.dtype not in _STATE_DTYPES:
        raise TypeError(f"{name}: expected dtype torch.float32 (or torch.float64), got {state.dtype}")


def _check_dt_limit(dt_limit: object) -> None:
    ok = (
        isinstance(dt_limit, (tuple, list))
        and len(dt_limit) == 2
        and all(isinstance(v, numbers.Real) and not math.isnan(v) for v in dt_limit)
        and dt_limit[0] <= dt_limit[1]
    )
    if not ok:
        raise ValueError(f"dt_limit: expected a pair (low, high) of numbers with low <= high, got {dt_limit!r}")


def _check_chunk_size(chunk_size: object) -> None:
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, numbers.Integral):
        raise TypeError(f"chunk_size: expected an int >= 1, got {type(chunk_size).__name__}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size: expected an int >= 1, got {chunk_size}")


def _segments(seq_idx: torch.Tensor | None, cu_seqlens: torch.Tensor | None, b: int, l: int) -> torch.Tensor | None:
    """Validate the packing arguments; return (b, l) monotone segment ids, or None for one sequence per row."""
    if seq_idx is not None and cu_seqlens is not None:
        raise ValueError("seq_idx and cu_seqlens: expected at most one of them, got both")
    if cu_seqlens is not None:
        check_tensor("cu_seqlens", cu_seqlens)
        if cu_seqlens.dim() != 1 or cu_seqlens.numel() < 2:
            raise ValueError(
                f"cu_seqlens: expected shape (num_seqs + 1,) with num_seqs >= 1, got {tuple(cu_seqlens.shape)}"
            )
        if cu_seqlens.dtype.is_floating_point or cu_seqlens.dtype.is_complex or cu_seqlens.dtype == torch.bool:
            raise TypeError(f"cu_seqlens: expected an integer dtype, got {cu_seqlens.dtype}")
        if b != 1:
            raise ValueError(f"cu_seqlens: expected batch size b == 1 (packed into one row), got b = {b}; use seq_idx")
        cu = cu_seqlens.tolist()
        if cu[0] != 0 or cu[-1] != l or any(hi < lo for lo, hi in itertools.pairwise(cu)):
            raise ValueError(f"cu_seqlens: expected non-decreasing values from 0 to l = {l}, got {cu}")
        seq_idx = seq_idx_from_cu_seqlens(cu_seqlens, l)
    if seq_idx is None:
        return None
    check_seq_idx(seq_idx, b, l)
    return segment_ids(seq_idx)


def _check_sequence(x, dt, A, B, C, D, z, dt_bias, dt_limit, initial_state, seq_idx, cu_seqlens) -> torch.Tensor | None:
    """Validate ssd / ssd_quadratic arguments; return the segment ids (or None)."""
    check_shape("x", x, (None, None, None, None), "(b, l, h, p)")
    check_float("x", x)
    b, l, h, p = x.shape
    if l < 1:
        raise ValueError(f"x: expected a sequence length l >= 1, got shape {tuple(x.shape)}")
    _check_float_tensor("dt", dt, (b, l, h), "(b, l, h)")
    _check_float_tensor("A", A, (h,), "(h,)")
    _check_float_tensor("B", B, (b, l, None, None), "(b, l, g, n)")
    g, n = B.shape[2:]
    check_divides("h (heads, dim 2 of x)", h, "g (groups, dim 2 of B)", g)
    _check_float_tensor("C", C, (b, l, g, n), "(b, l, g, n)")
    _check_D(D, h, p)
    _check_float_tensor("z", z, (b, l, h, p), "(b, l, h, p)")
    _check_float_tensor("dt_bias", dt_bias, (h,), "(h,)")
    _check_dt_limit(dt_limit)
    _check_state("initial_state", initial_state, (b, h, p, n))
    same_device(
        x=x,
        dt=dt,
        A=A,
        B=B,
        C=C,
        D=D,
        z=z,
        dt_bias=dt_bias,
        initial_state=initial_state,
        seq_idx=seq_idx,
        cu_seqlens=cu_seqlens,
    )
    return _segments(seq_idx, cu_seqlens, b, l)


def ssd(
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    chunk_size: int = 256,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    dt_bias: torch.Tensor | None = None,
    dt_softplus: bool = False,
    dt_limit: tuple[float, float] = DEFAULT_DT_LIMIT,
    initial_state: torch.Tensor | None = None,
    return_final_state: bool = False,
    seq_idx: torch.Tensor | None = None,
    cu_seqlens: torch.Tensor | None = None,
    backend: str = "auto",
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Mamba-2 SSD over a sequence. Returns y (b, l, h, p) in x's dtype, or (y, final_state (b, h, p, n)).

    backend: "reference" runs the recurrence token by token; "torch" (and "auto" here) the chunked algorithm,
    chunks of `chunk_size` tokens (any l works: the last chunk is padded). The result does not depend on
    chunk_size beyond rounding; on CPU, 64 or 128 run faster than 256 (the (Q x Q) work grows with the chunk,
    the state work does not).
    """
    _check_chunk_size(chunk_size)
    seg = _check_sequence(x, dt, A, B, C, D, z, dt_bias, dt_limit, initial_state, seq_idx, cu_seqlens)
    chosen = resolve_backend("ssd", backend, x.device)
    if chosen == "triton" and backend == "auto":  # by name, ssd_triton raises the kernels' own errors
        from .triton_ssd import unsupported_reason

        reason = unsupported_reason(x.dtype, x.shape[-1], B.shape[-1], chunk_size)
        chosen = away_from_triton("ssd", backend, chosen, reason)
    args = (x, dt, A, B, C, D, z, dt_bias, dt_softplus, dt_limit, initial_state, seg)
    if chosen == "reference":
        y, final_state = ssd_reference(*args)
    elif chosen == "triton":
        from .triton_ssd import ssd_triton

        y, final_state = ssd_triton(*args, chunk_size=chunk_size)
    else:
        y, final_state = ssd_chunked(*args, chunk_size=chunk_size)
    return (y, final_state) if return_final_state else y


def ssd_quadratic(
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    dt_bias: torch.Tensor | None = None,
    dt_softplus: bool = False,
    dt_limit: tuple[float, float] = DEFAULT_DT_LIMIT,
    initial_state: torch.Tensor | None = None,
    return_final_state: bool = False,
    seq_idx: torch.Tensor | None = None,
    cu_seqlens: torch.Tensor | None = None,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """SSD as its dual masked-attention form, (l x l) per head: the invariant the chunked path is tested against."""
    seg = _check_sequence(x, dt, A, B, C, D, z, dt_bias, dt_limit, initial_state, seq_idx, cu_seqlens)
    y, final_state = ssd_quadratic_form(x, dt, A, B, C, D, z, dt_bias, dt_softplus, dt_limit, initial_state, seg)
    return (y, final_state) if return_final_state else y


def ssd_step(
    x_t: torch.Tensor,
    dt_t: torch.Tensor,
    A: torch.Tensor,
    B_t: torch.Tensor,
    C_t: torch.Tensor,
    state: torch.Tensor,
    D: torch.Tensor | None = None,
    z_t: torch.Tensor | None = None,
    dt_bias: torch.Tensor | None = None,
    dt_softplus: bool = False,
    dt_limit: tuple[float, float] = DEFAULT_DT_LIMIT,
    backend: str = "auto",
    out_state: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One token: x_t, z_t (b, h, p); dt_t (b, h); B_t, C_t (b, g, n); state (b, h, p, n) fp32.

    Returns (y_t (b, h, p) in x_t's dtype, new_state). The input state is not modified unless it is passed as
    `out_state` (b, h, p, n), in new_state's dtype (fp32; fp64 for fp64 inputs): the new state is written there
    and returned. The Triton kernel ("auto" on CUDA) is inference only: when grad mode is on and an input requires
    grad, the torch path runs instead, so the step stays differentiable. float64 runs the torch path ("auto" warns
    once). "reference" and "torch" are the same arithmetic here.
    """
    check_shape("x_t", x_t, (None, None, None), "(b, h, p)")
    check_float("x_t", x_t)
    b, h, p = x_t.shape
    _check_float_tensor("dt_t", dt_t, (b, h), "(b, h)")
    _check_float_tensor("A", A, (h,), "(h,)")
    _check_float_tensor("B_t", B_t, (b, None, None), "(b, g, n)")
    g, n = B_t.shape[1:]
    check_divides("h (heads, dim 1 of x_t)", h, "g (groups, dim 1 of B_t)", g)
    _check_float_tensor("C_t", C_t, (b, g, n), "(b, g, n)")
    check_tensor("state", state)
    _check_state("state", state, (b, h, p, n))
    _check_D(D, h, p)
    _check_float_tensor("z_t", z_t, (b, h, p), "(b, h, p)")
    _check_float_tensor("dt_bias", dt_bias, (h,), "(h,)")
    _check_dt_limit(dt_limit)
    state_dtype = torch.float64 if x_t.dtype == torch.float64 else torch.float32
    check_out_state(out_state, (b, h, p, n), "(b, h, p, n)", state_dtype)
    same_device(
        x_t=x_t, dt_t=dt_t, A=A, B_t=B_t, C_t=C_t, state=state, D=D, z_t=z_t, dt_bias=dt_bias, out_state=out_state
    )
    chosen = resolve_backend("ssd_step", backend, x_t.device)
    chosen = away_from_triton("ssd_step", backend, chosen, float64_reason("x_t", x_t))
    if chosen == "triton" and not needs_grad(x_t, dt_t, A, B_t, C_t, state, D, z_t, dt_bias) and state.numel():
        from .triton_step import ssd_step_triton

        return ssd_step_triton(x_t, dt_t, A, B_t, C_t, state, D, z_t, dt_bias, dt_softplus, dt_limit, out_state)
    y, new_state = ssd_step_torch(x_t, dt_t, A, B_t, C_t, state, D, z_t, dt_bias, dt_softplus, dt_limit)
    if out_state is not None:
        new_state = out_state.copy_(new_state)
    return y, new_state
