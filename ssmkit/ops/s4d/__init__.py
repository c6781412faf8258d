"""S4D, the classic time-invariant diagonal SSM: discretization, kernel, FFT convolution, recurrence, inits.

Conjugate-pair convention: each channel d has n = N/2 complex states; the real system's output is 2 Re(...).

    A_bar, B_bar = discretize_zoh(dt, A, B)            # A_bar = exp(dt A), B_bar = (exp(dt A) - 1) / A * B
    K = s4d_kernel(dt, A, B, C, length)                # K[:, k] = 2 Re(sum_n C_n B_bar_n A_bar_n^k)
    y = fft_conv(u, K, D=None)                         # y_t = sum_{s <= t} K[:, t-s] u_s + D u_t
    y, h = s4d_conv(u, dt, A, B, C, D, initial_state, return_final_state=True, seq_idx=None)
    y, h = s4d_scan(u, dt, A, B, C, D, ...)            # the same, as the recurrence (the reference)
    y_t, h = s4d_step(u_t, state, A_bar, B_bar, C, D)  # h_t = A_bar h_{t-1} + B_bar u_t, y_t = 2 Re(C h_t) + D u_t
    y_h0 = s4d_state_output(initial_state, dt, A, C, length)   # what a nonzero h_{-1} adds to y
    h = s4d_final_state(u, dt, A, B, initial_state=None)       # the state after u, without a loop over l

Shapes: u, y: (b, l, d) real   u_t: (b, d)   dt, D: (d,) real   A, B, C, A_bar, B_bar: (d, n) complex
        K: (d, l) real   initial_state / final_state / state: (b, d, n) complex
Math in fp32 / complex64, or fp64 / complex128 when any input is 64-bit; y keeps u's dtype, states come back in
the complex compute dtype. seq_idx (b, l) int: the state resets to zero wherever it changes; initial_state feeds
the first sequence of each row and the final state is the last sequence's.
"""

from __future__ import annotations

import torch

from .._backend import register_op, resolve_backend
from .._checks import check_float, check_seq_idx, check_shape, check_tensor, same_device
from . import fast
from .init import hippo_legs, s4d_legs_init, s4d_lin_init, s4d_real_init
from .reference import discretize_zoh as _discretize
from .reference import s4d_kernel_ref, s4d_scan_ref, s4d_step_ref

register_op("s4d_kernel", "reference", "torch")
register_op("s4d_conv", "reference", "torch")

COMPLEX_DTYPES = (torch.complex64, torch.complex128)


def _check_complex(name: str, tensor: torch.Tensor) -> None:
    if tensor.dtype not in COMPLEX_DTYPES:
        raise TypeError(f"{name}: expected a complex dtype (complex64, complex128), got {tensor.dtype}")


def _check_real(name: str, tensor: torch.Tensor | None, shape: tuple, layout: str) -> None:
    if tensor is not None:
        check_shape(name, tensor, shape, layout)
        check_float(name, tensor)


def _check_complex_params(d: int | None, **params: torch.Tensor) -> tuple[int, int]:
    """Every param (d, n) complex, all of the first one's (d, n); returns it."""
    first_name, first = next(iter(params.items()))
    check_shape(first_name, first, (d, None), "(d, n)")
    d, n = first.shape
    for name, tensor in params.items():
        check_shape(name, tensor, (d, n), "(d, n)")
        _check_complex(name, tensor)
    return d, n


def _check_state(name: str, state: torch.Tensor | None, b: int, d: int, n: int) -> None:
    if state is not None:
        check_shape(name, state, (b, d, n), "(b, d, n)")
        _check_complex(name, state)


def _check_sequence(u: torch.Tensor) -> tuple[int, int, int]:
    check_tensor("u", u)
    check_float("u", u)
    if u.dim() != 3 or u.shape[1] < 1:
        raise ValueError(f"u: expected shape (b, l, d) with l >= 1, got {tuple(u.shape)}")
    return tuple(u.shape)  # type: ignore[return-value]


def _check_length(length: int) -> None:
    if not isinstance(length, int) or isinstance(length, bool) or length < 1:
        raise ValueError(f"length: expected a positive int, got {length!r}")


def discretize_zoh(dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero-order hold: (A_bar, B_bar), each (d, n) complex."""
    d, _ = _check_complex_params(None, A=A, B=B)
    _check_real("dt", dt, (d,), "(d,)")
    same_device(dt=dt, A=A, B=B)
    return _discretize(dt, A, B)


def s4d_kernel(
    dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor, length: int, backend: str = "auto"
) -> torch.Tensor:
    """The convolution kernel K (d, length), real."""
    d, _ = _check_complex_params(None, A=A, B=B, C=C)
    _check_real("dt", dt, (d,), "(d,)")
    _check_length(length)
    same_device(dt=dt, A=A, B=B, C=C)
    chosen = resolve_backend("s4d_kernel", backend, dt.device)
    fn = s4d_kernel_ref if chosen == "reference" else fast.s4d_kernel_torch
    return fn(dt, A, B, C, length)


def fft_conv(u: torch.Tensor, K: torch.Tensor, D: torch.Tensor | None = None) -> torch.Tensor:
    """Causal convolution of u (b, l, d) with K (d, l) by rFFT of size >= 2l, plus D u; returns u's dtype."""
    _, l, d = _check_sequence(u)
    _check_real("K", K, (d, l), "(d, l)")
    _check_real("D", D, (d,), "(d,)")
    same_device(u=u, K=K, D=D)
    return fast.fft_conv(u, K, D)


def _check_conv_args(
    u: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None,
    initial_state: torch.Tensor | None,
    seq_idx: torch.Tensor | None,
) -> None:
    b, l, d = _check_sequence(u)
    _, n = _check_complex_params(d, A=A, B=B, C=C)
    _check_real("dt", dt, (d,), "(d,)")
    _check_real("D", D, (d,), "(d,)")
    _check_state("initial_state", initial_state, b, d, n)
    check_seq_idx(seq_idx, b, l)
    same_device(u=u, dt=dt, A=A, B=B, C=C, D=D, initial_state=initial_state, seq_idx=seq_idx)


def s4d_conv(
    u: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    initial_state: torch.Tensor | None = None,
    return_final_state: bool = False,
    seq_idx: torch.Tensor | None = None,
    backend: str = "auto",
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """S4D over a whole sequence; y (b, l, d), or (y, final_state (b, d, n) complex).

    "torch": kernel + FFT convolution (+ Vandermonde products for the states); "reference": the recurrence."""
    _check_conv_args(u, dt, A, B, C, D, initial_state, seq_idx)
    chosen = resolve_backend("s4d_conv", backend, u.device)
    fn = s4d_scan_ref if chosen == "reference" else fast.s4d_conv_torch
    return fn(u, dt, A, B, C, D, initial_state, return_final_state, seq_idx)


def s4d_scan(
    u: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    initial_state: torch.Tensor | None = None,
    return_final_state: bool = False,
    seq_idx: torch.Tensor | None = None,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """The recurrence h_t = A_bar h_{t-1} + B_bar u_t, y_t = 2 Re(C h_t) + D u_t, one token at a time."""
    return s4d_conv(u, dt, A, B, C, D, initial_state, return_final_state, seq_idx, backend="reference")


def s4d_step(
    u_t: torch.Tensor,
    state: torch.Tensor,
    A_bar: torch.Tensor,
    B_bar: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One token: (y_t (b, d) in u_t's dtype, new state (b, d, n) in state's dtype); state is not modified."""
    check_tensor("u_t", u_t)
    check_float("u_t", u_t)
    if u_t.dim() != 2:
        raise ValueError(f"u_t: expected shape (b, d), got {tuple(u_t.shape)}")
    b, d = u_t.shape
    _, n = _check_complex_params(d, A_bar=A_bar, B_bar=B_bar, C=C)
    _check_real("D", D, (d,), "(d,)")
    _check_state("state", state, b, d, n)
    same_device(u_t=u_t, state=state, A_bar=A_bar, B_bar=B_bar, C=C, D=D)
    return s4d_step_ref(u_t, state, A_bar, B_bar, C, D)


def s4d_state_output(
    initial_state: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, C: torch.Tensor, length: int
) -> torch.Tensor:
    """What a nonzero initial state h_{-1} adds to y: 2 Re(sum_n C_n A_bar_n^{t+1} h_n), (b, length, d) real."""
    d, n = _check_complex_params(None, A=A, C=C)
    _check_real("dt", dt, (d,), "(d,)")
    check_tensor("initial_state", initial_state)
    _check_state("initial_state", initial_state, initial_state.shape[0], d, n)
    _check_length(length)
    same_device(initial_state=initial_state, dt=dt, A=A, C=C)
    return fast.state_output(initial_state, dt, A, C, length)


def s4d_final_state(
    u: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor, initial_state: torch.Tensor | None = None
) -> torch.Tensor:
    """The state after u: A_bar^l h_{-1} + sum_t A_bar^{l-1-t} B_bar u_t, (b, d, n) complex."""
    b, _, d = _check_sequence(u)
    _, n = _check_complex_params(d, A=A, B=B)
    _check_real("dt", dt, (d,), "(d,)")
    _check_state("initial_state", initial_state, b, d, n)
    same_device(u=u, dt=dt, A=A, B=B, initial_state=initial_state)
    return fast.final_state(u, dt, A, B, initial_state)


__all__ = [
    "discretize_zoh",
    "fft_conv",
    "hippo_legs",
    "s4d_conv",
    "s4d_final_state",
    "s4d_kernel",
    "s4d_legs_init",
    "s4d_lin_init",
    "s4d_real_init",
    "s4d_scan",
    "s4d_state_output",
    "s4d_step",
]
