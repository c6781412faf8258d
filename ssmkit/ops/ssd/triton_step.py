"""One SSD decoding step in Triton (inference only: no backward).

One program owns (batch row, head, block of BP head channels): it reads the (BP, n) fp32 state once, updates it
    dt <- clamp(softplus(dt + dt_bias), *dt_limit),   h <- exp(dt A) h + dt x B^T,   y = h C + D x,   y *= silu(z)
and writes it once, to a new buffer or in place (`out_state` may be `state`: each program reads its block before
writing it, and blocks do not overlap). The step is memory bound on the state, 8 b h p n bytes in all; inputs are
read through their strides, so slices of a fused projection need no copy.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .._triton_math import sigmoid_fast, softplus_fast
from ..selective_scan.triton_fwd import _store
from ._common import DEFAULT_DT_LIMIT

# elements of the (BP, n) state block per program: BP = STEP_TILE / next_pow2(n) channels of one head
STEP_TILE = 2048
NUM_WARPS_STEP = 4


def _empty(*shape, dtype, device):
    """Every output buffer comes from here (tests replace it with a NaN fill to catch unwritten elements)."""
    return torch.empty(*shape, dtype=dtype, device=device)


@triton.jit
def _ssd_step_kernel(
    x_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, s_ptr, D_ptr, z_ptr, bias_ptr, y_ptr, out_ptr, dt_min, dt_max,
    sx_b, sx_h, sx_p, sdt_b, sdt_h, sz_b, sz_h, sz_p, sB_b, sB_g, sB_n, sC_b, sC_g, sC_n,
    ss_b, ss_h, ss_p, ss_n, so_b, so_h, so_p, so_n,
    H: tl.constexpr, P: tl.constexpr, N: tl.constexpr, HPG: tl.constexpr, BP: tl.constexpr, NP: tl.constexpr,
    HAS_D: tl.constexpr, D_PER_P: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr,
    SOFTPLUS: tl.constexpr, HAS_LIMIT: tl.constexpr, IN_PLACE: tl.constexpr,
):  # fmt: skip
    head = tl.program_id(1)
    bb = tl.program_id(2).to(tl.int64)
    grp = head // HPG  # group j of B/C serves heads [j h/g, (j + 1) h/g)
    offs_p = tl.program_id(0) * BP + tl.arange(0, BP)  # (BP,)
    offs_n = tl.arange(0, NP)
    mask_p = offs_p < P
    mask_n = offs_n < N
    mask = mask_p[:, None] & mask_n[None, :]  # (BP, NP)

    dt = tl.load(dt_ptr + bb * sdt_b + head * sdt_h).to(tl.float32)
    if HAS_BIAS:
        dt += tl.load(bias_ptr + head).to(tl.float32)
    if SOFTPLUS:
        dt = softplus_fast(dt)
    if HAS_LIMIT:
        dt = tl.minimum(tl.maximum(dt, dt_min), dt_max)
    decay = tl.exp(dt * tl.load(A_ptr + head).to(tl.float32))
    x = tl.load(x_ptr + bb * sx_b + head * sx_h + offs_p * sx_p, mask=mask_p, other=0.0).to(tl.float32)
    Bt = tl.load(B_ptr + bb * sB_b + grp * sB_g + offs_n * sB_n, mask=mask_n, other=0.0).to(tl.float32)
    Ct = tl.load(C_ptr + bb * sC_b + grp * sC_g + offs_n * sC_n, mask=mask_n, other=0.0).to(tl.float32)
    s_offs = bb * ss_b + head * ss_h + offs_p[:, None] * ss_p + offs_n[None, :] * ss_n
    h = tl.load(s_ptr + s_offs, mask=mask, other=0.0).to(tl.float32)  # (BP, NP)

    h = decay * h + (dt * x)[:, None] * Bt[None, :]
    y = tl.sum(h * Ct[None, :], axis=1)  # (BP,)
    if HAS_D:
        if D_PER_P:
            y += tl.load(D_ptr + head * P + offs_p, mask=mask_p, other=0.0).to(tl.float32) * x
        else:
            y += tl.load(D_ptr + head).to(tl.float32) * x
    if HAS_Z:
        z = tl.load(z_ptr + bb * sz_b + head * sz_h + offs_p * sz_p, mask=mask_p, other=0.0).to(tl.float32)
        y = y * (z * sigmoid_fast(z))
    if IN_PLACE:
        # out may be the state: every thread holding a copy of an element must have read it before one writes it
        tl.debug_barrier()
    tl.store(out_ptr + bb * so_b + head * so_h + offs_p[:, None] * so_p + offs_n[None, :] * so_n, h, mask=mask)
    _store(y_ptr, (bb * H + head) * P + offs_p, y, mask_p)


def ssd_step_triton(x_t, dt_t, A, B_t, C_t, state, D, z_t, dt_bias, dt_softplus, dt_limit, out_state=None):
    """Shapes as `ssd_step`. Returns (y_t (b, h, p) in x_t's dtype, new_state (b, h, p, n) fp32)."""
    b, h, p = x_t.shape
    g, n = B_t.shape[1:]
    NP = triton.next_power_of_2(n)
    BP = max(1, min(STEP_TILE // NP, triton.next_power_of_2(p)))
    y = _empty(b, h, p, dtype=x_t.dtype, device=x_t.device)
    out = _empty(b, h, p, n, dtype=torch.float32, device=x_t.device) if out_state is None else out_state
    A_c = A.contiguous()
    D_c = D.contiguous() if D is not None else y
    bias = dt_bias.contiguous() if dt_bias is not None else y
    z = z_t if z_t is not None else x_t
    has_limit = tuple(dt_limit) != DEFAULT_DT_LIMIT
    _ssd_step_kernel[(triton.cdiv(p, BP), h, b)](
        x_t, dt_t, A_c, B_t, C_t, state, D_c, z, bias, y, out, float(dt_limit[0]), float(dt_limit[1]),
        *x_t.stride(), *dt_t.stride(), *z.stride(), *B_t.stride(), *C_t.stride(), *state.stride(), *out.stride(),
        H=h, P=p, N=n, HPG=h // g, BP=BP, NP=NP,
        HAS_D=D is not None, D_PER_P=D is not None and D.dim() == 2, HAS_Z=z_t is not None,
        HAS_BIAS=dt_bias is not None, SOFTPLUS=bool(dt_softplus), HAS_LIMIT=has_limit,
        IN_PLACE=out_state is not None, num_warps=NUM_WARPS_STEP,
    )  # fmt: skip
    return y, out
