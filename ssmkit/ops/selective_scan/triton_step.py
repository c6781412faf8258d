"""One decoding step of the selective scan in Triton (inference only: no backward).

One program owns (batch row, block of BD channels): it reads the (BD, n) fp32 state once, updates it
    h <- exp(Delta A) h + Delta u B,   y = C . h + D u,   y *= silu(z)
and writes it once, to a new buffer or in place (`out_state` may be `state`: each program reads its block before
writing it, and blocks do not overlap). The step is memory bound on the state, 8 b d n bytes in all; inputs are
read through their strides, so slices of a fused projection need no copy.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .._triton_math import sigmoid_fast, softplus_fast
from .triton_fwd import _store

# elements of the (BD, n) state block per program: BD = STEP_TILE / next_pow2(n) channels
STEP_TILE = 512
NUM_WARPS_STEP = 4


def _empty(*shape, dtype, device):
    """Every output buffer comes from here (tests replace it with a NaN fill to catch unwritten elements)."""
    return torch.empty(*shape, dtype=dtype, device=device)


@triton.jit
def _step_kernel(
    u_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, s_ptr, D_ptr, z_ptr, bias_ptr, y_ptr, out_ptr,
    su_b, su_d, sdt_b, sdt_d, sz_b, sz_d, sA_d, sA_n, sB_b, sB_g, sB_n, sC_b, sC_g, sC_n,
    ss_b, ss_d, ss_n, so_b, so_d, so_n,
    D_MODEL: tl.constexpr, E: tl.constexpr, N: tl.constexpr, BD: tl.constexpr, NP: tl.constexpr,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, IN_PLACE: tl.constexpr,
):  # fmt: skip
    bb = tl.program_id(1).to(tl.int64)
    offs_d = tl.program_id(0) * BD + tl.arange(0, BD)  # (BD,) channels
    offs_n = tl.arange(0, NP)
    mask_d = offs_d < D_MODEL
    mask = mask_d[:, None] & (offs_n < N)[None, :]  # (BD, NP)
    grp = offs_d // E  # channel c reads group c // (d / g) of B and C

    u = tl.load(u_ptr + bb * su_b + offs_d * su_d, mask=mask_d, other=0.0).to(tl.float32)
    delta = tl.load(dt_ptr + bb * sdt_b + offs_d * sdt_d, mask=mask_d, other=0.0).to(tl.float32)
    if HAS_BIAS:
        delta += tl.load(bias_ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32)
    if SOFTPLUS:
        delta = softplus_fast(delta)
    A = tl.load(A_ptr + offs_d[:, None] * sA_d + offs_n[None, :] * sA_n, mask=mask, other=0.0).to(tl.float32)
    Bt = tl.load(B_ptr + bb * sB_b + grp[:, None] * sB_g + offs_n[None, :] * sB_n, mask=mask, other=0.0)
    Ct = tl.load(C_ptr + bb * sC_b + grp[:, None] * sC_g + offs_n[None, :] * sC_n, mask=mask, other=0.0)
    s_offs = bb * ss_b + offs_d[:, None] * ss_d + offs_n[None, :] * ss_n
    h = tl.load(s_ptr + s_offs, mask=mask, other=0.0).to(tl.float32)  # (BD, NP)

    h = tl.exp(delta[:, None] * A) * h + (delta * u)[:, None] * Bt.to(tl.float32)
    y = tl.sum(h * Ct.to(tl.float32), axis=1)  # (BD,)
    if HAS_D:
        y += tl.load(D_ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32) * u
    if HAS_Z:
        z = tl.load(z_ptr + bb * sz_b + offs_d * sz_d, mask=mask_d, other=0.0).to(tl.float32)
        y = y * (z * sigmoid_fast(z))
    if IN_PLACE:
        # out may be the state: every thread holding a copy of an element must have read it before one writes it
        tl.debug_barrier()
    tl.store(out_ptr + bb * so_b + offs_d[:, None] * so_d + offs_n[None, :] * so_n, h, mask=mask)
    _store(y_ptr, bb * D_MODEL + offs_d, y, mask_d)


def selective_scan_step_triton(u_t, dt_t, A, B_t, C_t, state, D, z_t, dt_bias, dt_softplus, out_state=None):
    """Shapes as `selective_scan_step`. Returns (y_t (b, d) in u_t's dtype, new_state (b, d, n) fp32)."""
    b, d = u_t.shape
    n = A.shape[1]
    g = B_t.shape[1]
    NP = triton.next_power_of_2(n)
    BD = max(1, min(STEP_TILE // NP, triton.next_power_of_2(d)))
    y = _empty(b, d, dtype=u_t.dtype, device=u_t.device)
    out = _empty(b, d, n, dtype=torch.float32, device=u_t.device) if out_state is None else out_state
    D_c = D.contiguous() if D is not None else y
    bias = dt_bias.contiguous() if dt_bias is not None else y
    z = z_t if z_t is not None else u_t
    _step_kernel[(triton.cdiv(d, BD), b)](
        u_t, dt_t, A, B_t, C_t, state, D_c, z, bias, y, out,
        *u_t.stride(), *dt_t.stride(), *z.stride(), *A.stride(), *B_t.stride(), *C_t.stride(),
        *state.stride(), *out.stride(),
        D_MODEL=d, E=d // g, N=n, BD=BD, NP=NP,
        HAS_D=D is not None, HAS_Z=z_t is not None, HAS_BIAS=dt_bias is not None, SOFTPLUS=bool(dt_softplus),
        IN_PLACE=out_state is not None, num_warps=NUM_WARPS_STEP,
    )  # fmt: skip
    return y, out
