"""HiPPO-LegS and the diagonal initializations of S4D (Gu, Gupta, Goel, Re 2022, "On the Parameterization and
Initialization of Diagonal State Space Models").

Symbols: N the state size of the real system; under the conjugate-pair convention only n = N/2 complex states
are kept and the output is 2 Re(C h), so every init returns A, B of shape (d, N/2), one copy per channel.

- HiPPO-LegS (`hippo_legs`): A_nk = -sqrt(2n+1) sqrt(2k+1) for n > k, -(n+1) for n = k, 0 for n < k;
  B_n = sqrt(2n+1). It is normal plus low rank: A = S - P P^T with P_n = sqrt(n + 1/2), where the normal part
  S = -1/2 I + (skew-symmetric), so S = V Lambda V^* with Lambda_n = -1/2 + i omega_n.
- S4D-LegS (`s4d_legs_init`): A = Lambda (the diagonal of the normal part, real part -1/2, imaginary parts the
  eigenvalues of the skew part), keeping the N/2 eigenvalues with omega_n > 0 in increasing order. B is HiPPO's
  B seen in that eigenbasis, B = V^* B_LegS; each eigenvector's phase is free, and we fix it so that B is real
  and positive. With this B, the diagonal kernel approximates the S4-LegS kernel (the paper's Theorem 3).
- S4D-Lin (`s4d_lin_init`): A_n = -1/2 + i pi n, B_n = 1 (the LegS frequencies' linear approximation).
- S4D-Real (`s4d_real_init`): A_n = -(n+1), B_n = 1 (the diagonal of HiPPO-LegS). With n = N/2 slots the
  states are A_1..A_{N/2}, each counted once by the 2 Re(...) output (the factor 2 is absorbed by C).
"""

from __future__ import annotations

import math

import torch


def _check_sizes(d: int, N: int) -> None:
    if not isinstance(d, int) or d < 1:
        raise ValueError(f"d: expected a positive int (channels), got {d!r}")
    if not isinstance(N, int) or N < 2 or N % 2:
        raise ValueError(f"N: expected an even int >= 2 (the state size; N/2 conjugate pairs are kept), got {N!r}")


def hippo_legs(N: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The full HiPPO-LegS matrices in fp64: A (N, N), B (N,)."""
    if not isinstance(N, int) or N < 1:
        raise ValueError(f"N: expected a positive int, got {N!r}")
    n = torch.arange(N, dtype=torch.float64)
    q = torch.sqrt(2 * n + 1)  # (N,)
    A = -torch.tril(torch.outer(q, q), diagonal=-1) - torch.diag(n + 1)
    return A, q.clone()


def _per_channel(A: torch.Tensor, B: torch.Tensor, d: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    return A.to(dtype).expand(d, -1).clone(), B.to(dtype).expand(d, -1).clone()  # (d, N/2) each


def s4d_legs_init(d: int, N: int, dtype: torch.dtype = torch.complex64) -> tuple[torch.Tensor, torch.Tensor]:
    """S4D-LegS: (A, B), each (d, N/2) complex."""
    _check_sizes(d, N)
    A_legs, B_legs = hippo_legs(N)
    P = torch.sqrt(torch.arange(N, dtype=torch.float64) + 0.5)
    skew = A_legs + torch.outer(P, P) + 0.5 * torch.eye(N, dtype=torch.float64)  # S + 1/2 I, skew-symmetric
    # i * skew is Hermitian: skew = V diag(-i mu) V^*, so S has eigenvalues -1/2 - i mu
    mu, V = torch.linalg.eigh(1j * skew.to(torch.complex128))  # mu ascending: the N/2 negative ones first
    keep = torch.arange(N // 2 - 1, -1, -1)  # omega = -mu > 0, in increasing order
    A = torch.complex(torch.full((N // 2,), -0.5, dtype=torch.float64), -mu[keep])
    B = (V[:, keep].conj().T @ B_legs.to(torch.complex128)).abs()  # (N/2,): phase of each eigenvector chosen
    return _per_channel(A, B.to(torch.complex128), d, dtype)


def s4d_lin_init(d: int, N: int, dtype: torch.dtype = torch.complex64) -> tuple[torch.Tensor, torch.Tensor]:
    """S4D-Lin: A_n = -1/2 + i pi n, B_n = 1; each (d, N/2) complex."""
    _check_sizes(d, N)
    n = torch.arange(N // 2, dtype=torch.float64)
    A = torch.complex(torch.full_like(n, -0.5), math.pi * n)
    return _per_channel(A, torch.ones_like(A), d, dtype)


def s4d_real_init(d: int, N: int, dtype: torch.dtype = torch.complex64) -> tuple[torch.Tensor, torch.Tensor]:
    """S4D-Real: A_n = -(n+1), B_n = 1; each (d, N/2) complex with zero imaginary part."""
    _check_sizes(d, N)
    n = torch.arange(N // 2, dtype=torch.float64)
    A = torch.complex(-(n + 1), torch.zeros_like(n))
    return _per_channel(A, torch.ones_like(A), d, dtype)
