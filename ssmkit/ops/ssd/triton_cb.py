"""SSD Triton: the scores C_t . B_s of every chunk and group, computed once and shared by the h/g heads of a group.

    CB[b, k, g, t, s] = C_t . B_s      for t, s in chunk k (positions inside the chunk), fp32

Only the tiles at or below the diagonal (t-block >= s-block) are written; readers load them masked by t >= s,
so any tiling of theirs reads written elements only. Products in x's dtype on the tensor cores (fp32 inputs:
exact fp32 products).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .triton_state import _dot, upcast_dots


@triton.jit
def _pair(k):
    """k -> (tau, sigma), the k-th tile at or below the diagonal in row order: (0,0), (1,0), (1,1), (2,0), ..."""
    tau = ((tl.sqrt((8 * k + 1).to(tl.float32)) - 1.0) * 0.5).to(tl.int32)
    # the float root can land one off for some k: correct it exactly
    tau = tl.where(tau * (tau + 1) // 2 > k, tau - 1, tau)
    tau = tl.where((tau + 1) * (tau + 2) // 2 <= k, tau + 1, tau)
    return tau, k - tau * (tau + 1) // 2


@triton.jit
def _cb_kernel(
    B_ptr, C_ptr, cb_ptr, l, n, Lp, g,
    sB_b, sB_l, sB_g, sB_n, sC_b, sC_l, sC_g, sC_n,
    Q: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr, PREC: tl.constexpr, UPCAST: tl.constexpr,
):  # fmt: skip
    pid_bcg = tl.program_id(0).to(tl.int64)
    tau, sig = _pair(tl.program_id(1))
    nc = Lp // Q
    gi = pid_bcg % g
    bc = pid_bcg // g
    bi, ci = bc // nc, bc % nc
    lt = tau * BT + tl.arange(0, BT)
    ls = sig * BT + tl.arange(0, BT)
    rt, rs = ci * Q + lt, ci * Q + ls
    acc = tl.zeros((BT, BT), dtype=tl.float32)
    for k in range(0, n, BK):
        rk = k + tl.arange(0, BK)
        kmask = rk < n
        Ct = tl.load(
            C_ptr + bi * sC_b + rt[:, None] * sC_l + gi * sC_g + rk[None, :] * sC_n,
            mask=(rt[:, None] < l) & kmask[None, :],
            other=0.0,
        )  # (BT, BK)
        Bs = tl.load(
            B_ptr + bi * sB_b + rs[:, None] * sB_l + gi * sB_g + rk[None, :] * sB_n,
            mask=(rs[:, None] < l) & kmask[None, :],
            other=0.0,
        )  # (BT, BK)
        acc += _dot(Ct, tl.trans(Bs.to(Ct.dtype)), PREC, UPCAST)
    tl.store(cb_ptr + pid_bcg * Q * Q + lt[:, None] * Q + ls[None, :], acc)


# rows per tile (at most the chunk) and the n-slice per step, settable by benchmarks
BLOCK_T = 64
BLOCK_K = 64
LAUNCH = {}  # num_warps / num_stages (empty: Triton's defaults)


def chunk_scores(B, C, Q, nc, prec):
    """-> CB (b, nc, g, Q, Q) fp32, tiles at or below the diagonal written."""
    b, l, g, n = B.shape
    BT = min(BLOCK_T, Q)
    BK = max(16, min(BLOCK_K, triton.next_power_of_2(n)))
    nb = Q // BT
    cb = torch.empty(b, nc, g, Q, Q, device=B.device, dtype=torch.float32)
    _cb_kernel[(b * nc * g, nb * (nb + 1) // 2)](
        B, C, cb, l, n, nc * Q, g, *B.stride(), *C.stride(),
        Q=Q, BT=BT, BK=BK, PREC=prec, UPCAST=upcast_dots(B.dtype), **LAUNCH,
    )  # fmt: skip
    return cb
