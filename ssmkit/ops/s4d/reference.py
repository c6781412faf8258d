"""S4D written as the paper's formulas: zero-order hold, the kernel from explicit powers, the recurrence.

Symbols (per channel, n = N/2 conjugate pairs, the real output is 2 Re(...)):
    A_bar = exp(Delta A),  B_bar = (exp(Delta A) - 1) / A * B                      (zero-order hold)
    h_t = A_bar h_{t-1} + B_bar u_t,   y_t = 2 Re(C . h_t) + D u_t                 (recurrent mode)
    K_k = 2 Re(sum_n C_n B_bar_n A_bar_n^k),   y = K * u + D u                      (convolution mode)
Math in fp32 / complex64, or fp64 / complex128 when any input is 64-bit.
"""

from __future__ import annotations

import torch


def precision(*tensors: torch.Tensor | None) -> tuple[torch.dtype, torch.dtype]:
    """(real, complex) compute dtypes: 64-bit if any input is 64-bit, else 32-bit."""
    wide = any(t is not None and t.dtype in (torch.float64, torch.complex128) for t in tensors)
    return (torch.float64, torch.complex128) if wide else (torch.float32, torch.complex64)


def discretize_zoh(dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(A_bar, B_bar), each (d, n) complex; expm1 keeps B_bar accurate when Delta A is small."""
    _, cdt = precision(dt, A, B)
    dtA = dt.to(cdt).unsqueeze(-1) * A.to(cdt)  # (d, n)
    return torch.exp(dtA), torch.expm1(dtA) / A.to(cdt) * B.to(cdt)


def s4d_kernel_ref(dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor, length: int) -> torch.Tensor:
    rdt, cdt = precision(dt, A, B, C)
    A_bar, B_bar = discretize_zoh(dt, A, B)
    k = torch.arange(length, device=dt.device)
    powers = A_bar.unsqueeze(-1) ** k  # (d, n, length): A_bar^k
    K = 2 * torch.einsum("dn,dnk->dk", C.to(cdt) * B_bar, powers).real  # (d, length)
    return K.to(rdt)


def s4d_step_ref(
    u_t: torch.Tensor,
    state: torch.Tensor,
    A_bar: torch.Tensor,
    B_bar: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    rdt, cdt = precision(u_t, state, A_bar, B_bar, C, D)
    u = u_t.to(rdt)  # (b, d)
    h = A_bar.to(cdt) * state.to(cdt) + B_bar.to(cdt) * u.unsqueeze(-1)  # (b, d, n)
    y = 2 * (C.to(cdt) * h).sum(dim=-1).real  # (b, d)
    if D is not None:
        y = y + D.to(rdt) * u
    return y.to(u_t.dtype), h.to(state.dtype)


def s4d_scan_ref(
    u: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None,
    initial_state: torch.Tensor | None,
    return_final_state: bool,
    seq_idx: torch.Tensor | None,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """The recurrence one token at a time; the state resets to zero where seq_idx changes."""
    _, cdt = precision(u, dt, A, B, C, D, initial_state)
    b, l, d = u.shape
    A_bar, B_bar = discretize_zoh(dt, A, B)
    h = u.new_zeros(b, d, A.shape[1], dtype=cdt) if initial_state is None else initial_state.to(cdt)
    ys = []
    for t in range(l):
        if seq_idx is not None and t > 0:
            reset = (seq_idx[:, t] != seq_idx[:, t - 1]).view(b, 1, 1)
            h = torch.where(reset, torch.zeros_like(h), h)
        y_t, h = s4d_step_ref(u[:, t], h, A_bar, B_bar, C, D)
        ys.append(y_t)
    y = torch.stack(ys, dim=1)  # (b, l, d)
    return (y, h) if return_final_state else y
