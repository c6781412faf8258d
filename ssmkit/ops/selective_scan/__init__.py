"""Mamba-1 selective scan (S6): `selective_scan` over a sequence and `selective_scan_step` for one token.

Layouts (batch first): u, dt, z: (b, l, d); A: (d, n); B, C: (b, l, g, n) with d % g == 0 (channel c reads group
c // (d / g)); D, dt_bias: (d,); states: (b, d, n) fp32 (fp64 for fp64 inputs).
"""

from __future__ import annotations

import importlib.util

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
from .chunked import selective_scan_chunked
from .reference import selective_scan_ref
from .step import selective_scan_step_torch

register_op("selective_scan", "reference", "torch")
if importlib.util.find_spec("triton") is not None:
    # the kernels themselves are imported on first use, so TRITON_INTERPRET set after `import ssmkit` still counts
    register_op("selective_scan", "triton")
register_op("selective_scan_step", "reference", "torch", *(("triton",) if importlib.util.find_spec("triton") else ()))


def _check_params(A, D, dt_bias, d: int) -> int:
    check_shape("A", A, (d, None), "(d, n)")
    if A.is_complex():
        raise TypeError(f"A: expected a real tensor (Mamba's A is real and negative), got {A.dtype}")
    if D is not None:
        check_shape("D", D, (d,), "(d,)")
    if dt_bias is not None:
        check_shape("dt_bias", dt_bias, (d,), "(d,)")
    return A.shape[1]


def selective_scan(
    u: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    dt_bias: torch.Tensor | None = None,
    dt_softplus: bool = False,
    initial_state: torch.Tensor | None = None,
    return_final_state: bool = False,
    seq_idx: torch.Tensor | None = None,
    backend: str = "auto",
    grad_hint: torch.Tensor | None = None,
):
    """h_t = exp(dt_t A) h_{t-1} + dt_t B_t u_t;  y_t = C_t . h_t + D u_t;  y *= silu(z).

    Returns y (b, l, d) in u's dtype, or (y, final_state (b, d, n)) when return_final_state.
    seq_idx (b, l) int: the state resets to zero wherever it changes along l.
    grad_hint (b, l, d), contiguous: the gradient y will get, for callers that know it before the forward (a
    backward that recomputes this op, as the fused Mamba block does). The Triton path then does part of the
    backward's work in the forward pass; it is used only if the backward receives this very tensor, unmodified.
    Other backends ignore it. Results are the same either way.
    """
    check_tensor("u", u)
    check_float("u", u)
    if u.dim() != 3:
        raise ValueError(f"u: expected shape (b, l, d), got {tuple(u.shape)}")
    b, l, d = u.shape
    check_shape("dt", dt, (b, l, d), "(b, l, d)")
    n = _check_params(A, D, dt_bias, d)
    check_shape("B", B, (b, l, None, n), "(b, l, g, n)")
    g = B.shape[2]
    check_divides("d", d, "g (groups of B)", g)
    check_shape("C", C, (b, l, g, n), "(b, l, g, n)")
    if z is not None:
        check_shape("z", z, (b, l, d), "(b, l, d)")
    if initial_state is not None:
        check_shape("initial_state", initial_state, (b, d, n), "(b, d, n)")
    check_seq_idx(seq_idx, b, l)
    same_device(u=u, dt=dt, A=A, B=B, C=C, D=D, z=z, dt_bias=dt_bias, initial_state=initial_state, seq_idx=seq_idx)

    chosen = resolve_backend("selective_scan", backend, u.device)
    if chosen == "triton" and l == 0:
        chosen = "torch"  # nothing to launch
    chosen = away_from_triton("selective_scan", backend, chosen, float64_reason("u", u))
    if chosen == "triton":
        from .triton_scan import selective_scan_triton

        y, final = selective_scan_triton(
            u, dt, A, B, C, D, z, dt_bias, dt_softplus, initial_state, seq_idx, grad_hint
        )  # fmt: skip
    else:
        impl = selective_scan_ref if chosen == "reference" else selective_scan_chunked
        y, final = impl(u, dt, A, B, C, D, z, dt_bias, dt_softplus, initial_state, seq_idx)
    return (y, final) if return_final_state else y


def selective_scan_step(
    u_t: torch.Tensor,
    dt_t: torch.Tensor,
    A: torch.Tensor,
    B_t: torch.Tensor,
    C_t: torch.Tensor,
    state: torch.Tensor,
    D: torch.Tensor | None = None,
    z_t: torch.Tensor | None = None,
    dt_bias: torch.Tensor | None = None,
    dt_softplus: bool = False,
    backend: str = "auto",
    out_state: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One token: u_t, dt_t, z_t: (b, d); B_t, C_t: (b, g, n); state (b, d, n). Returns (y_t, new_state).

    new_state is fp32 (fp64 for fp64 inputs); the input state is not modified unless it is passed as `out_state`.
    out_state (b, d, n), that dtype: the new state is written there (it may be `state` itself) and returned.
    The Triton kernel ("auto" on CUDA) is inference only: when grad mode is on and an input requires grad, the
    torch path runs instead, so the step stays differentiable. float64 runs the torch path ("auto" warns once).
    """
    check_tensor("u_t", u_t)
    check_float("u_t", u_t)
    if u_t.dim() != 2:
        raise ValueError(f"u_t: expected shape (b, d), got {tuple(u_t.shape)}")
    b, d = u_t.shape
    check_shape("dt_t", dt_t, (b, d), "(b, d)")
    n = _check_params(A, D, dt_bias, d)
    check_shape("B_t", B_t, (b, None, n), "(b, g, n)")
    g = B_t.shape[1]
    check_divides("d", d, "g (groups of B)", g)
    check_shape("C_t", C_t, (b, g, n), "(b, g, n)")
    check_shape("state", state, (b, d, n), "(b, d, n)")
    if z_t is not None:
        check_shape("z_t", z_t, (b, d), "(b, d)")
    state_dtype = torch.float64 if u_t.dtype == torch.float64 else torch.float32
    check_out_state(out_state, (b, d, n), "(b, d, n)", state_dtype)
    same_device(
        u_t=u_t, dt_t=dt_t, A=A, B_t=B_t, C_t=C_t, state=state, D=D, z_t=z_t, dt_bias=dt_bias, out_state=out_state
    )
    chosen = resolve_backend("selective_scan_step", backend, u_t.device)
    chosen = away_from_triton("selective_scan_step", backend, chosen, float64_reason("u_t", u_t))
    if chosen == "triton" and not needs_grad(u_t, dt_t, A, B_t, C_t, state, D, z_t, dt_bias) and state.numel():
        from .triton_step import selective_scan_step_triton

        return selective_scan_step_triton(u_t, dt_t, A, B_t, C_t, state, D, z_t, dt_bias, dt_softplus, out_state)
    # one token has nothing to parallelize: the reference and the fast path are the same arithmetic
    y, new_state = selective_scan_step_torch(u_t, dt_t, A, B_t, C_t, state, D, z_t, dt_bias, dt_softplus)
    if out_state is not None:
        new_state = out_state.copy_(new_state)
    return y, new_state
