"""Selective scan backward in Triton: recomputation from the forward's tile checkpoints, reverse scan of the adjoint.

Adjoint of the state: G_t = dL/dh_t = C_t dys_t + Abar_{t+1} G_{t+1}, with dys = dy * silu(z) (the gradient of the
pre-gate output). One program owns (batch row, chunk, BD channels) and walks its chunk's tiles backwards. Per tile:
  - the forward tile scan again from the checkpointed entering state: states h (TT, BD, NP), Abar, x = Delta u B,
  - Abar shifted one step (Abar_{t+1}, recomputed from Delta at t+1; 1 on the tile's last row, where the carry
    from the next tile already holds Abar) and the reverse scan of (Abar_{t+1}, C_t dys_t): G,
  - the gradients, all from G and h with no division: dL/dx_t = G_t, and the decay term
    G_t * Abar_t * h_{t-1} = G_t * (h_t - x_t).
The carry passed to the previous tile is dL/dh_{t0-1} = Abar_{t0} G_{t0}; at t = 0 it is the initial state's grad.

Across chunks the carry is found first (as the forward finds H_in): `_bwd_local_kernel` gives each chunk's own
contribution to dL/dH_in[c], sum_t F_t C_t dys_t with F_t = exp(A sum_{q<=t} Delta_q), and its decay Dec_c; the
forward's `_chunk_combine_kernel`, run in reverse, gives the adjoint arriving at each chunk's end.

dB, dC sum over the channels of a group: each channel block writes its own partial (b, l, d / BD, n) in fp32,
summed afterwards in torch; dA, dD, dt_bias sum over time: partials per (b, chunk).
"""

from __future__ import annotations

import triton
import triton.language as tl

from .triton_fwd import _affine_combine, _load_keep, _softplus, _store


@triton.jit
def _dys(dy_ptr, z_ptr, offs_td, mask_td, HAS_Z: tl.constexpr):
    """dy and the gradient of the pre-gate output dy * silu(z), (TT, BD) fp32; with z also sigmoid(z) and z."""
    dyy = tl.load(dy_ptr + offs_td, mask=mask_td, other=0.0).to(tl.float32)
    if HAS_Z:
        zz = tl.load(z_ptr + offs_td, mask=mask_td, other=0.0).to(tl.float32)
        sz = tl.sigmoid(zz)
        return dyy, dyy * zz * sz, zz, sz
    return dyy, dyy, dyy, dyy


@triton.jit
def _bwd_local_kernel(
    dt_ptr, z_ptr, C_ptr, A_ptr, bias_ptr, seq_ptr, dy_ptr, Lc_ptr, dec_ptr,
    L, chunk_len, n_chunks,
    D_MODEL: tl.constexpr, G: tl.constexpr, N: tl.constexpr, NP: tl.constexpr, BD: tl.constexpr,
    TT: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, HAS_SEQ: tl.constexpr,
):  # fmt: skip
    """Chunk c's own part of dL/dH_in[c] and its decay Dec_c, both (b, nc, d, n) fp32."""
    pid_d = tl.program_id(0)
    pid_c = tl.program_id(1)
    b64 = tl.program_id(2).to(tl.int64)
    offs_d = pid_d * BD + tl.arange(0, BD)
    grp = (pid_d * BD) // (D_MODEL // G)
    offs_n = tl.arange(0, NP)
    offs_dn = offs_d[:, None] * N + offs_n[None, :]
    mask_dn = offs_n[None, :] < N
    A2 = tl.load(A_ptr + offs_dn, mask=mask_dn, other=0.0).to(tl.float32) * 1.4426950408889634
    F_in = tl.full((BD, NP), 1.0, tl.float32)  # decay from the chunk's start to the tile's start
    acc = tl.zeros((BD, NP), dtype=tl.float32)
    t_start = pid_c * chunk_len
    t_stop = tl.minimum(t_start + chunk_len, L)
    for t0 in range(t_start, t_stop, TT):
        offs_t = t0 + tl.arange(0, TT)
        mask_t = offs_t < t_stop
        rows = b64 * L + offs_t
        offs_td = rows[:, None] * D_MODEL + offs_d[None, :]
        mask_td = mask_t[:, None] & (offs_d[None, :] < D_MODEL)
        dd = tl.load(dt_ptr + offs_td, mask=mask_td, other=0.0).to(tl.float32)
        if HAS_BIAS:
            dd += tl.load(bias_ptr + offs_d).to(tl.float32)[None, :]
        if SOFTPLUS:
            dd = _softplus(dd)
        dd = tl.where(mask_td, dd, 0.0)
        F = tl.exp2(tl.cumsum(dd, axis=0)[:, :, None] * A2[None, :, :]) * F_in[None, :, :]  # (TT, BD, NP)
        if HAS_SEQ:
            keep = _load_keep(seq_ptr, rows, offs_t, mask_t)
            alive = tl.where(tl.cumsum(1.0 - keep, axis=0) == 0.0, 1.0, 0.0)  # (TT,)
            F = F * alive[:, None, None]
        _dyy, dys, _zz, _sz = _dys(dy_ptr, z_ptr, offs_td, mask_td, HAS_Z)
        offs_tn = (rows[:, None] * G + grp) * N + offs_n[None, :]
        Ct = tl.load(C_ptr + offs_tn, mask=mask_t[:, None] & (offs_n[None, :] < N), other=0.0).to(tl.float32)
        acc += tl.sum(F * dys[:, :, None] * Ct[:, None, :], axis=0)
        last = tl.arange(0, TT) == TT - 1
        F_in = tl.sum(tl.where(last[:, None, None], F, 0.0), axis=0)
    out = (b64 * n_chunks + pid_c) * D_MODEL * N + offs_dn
    tl.store(Lc_ptr + out, acc, mask=mask_dn)
    tl.store(dec_ptr + out, F_in, mask=mask_dn)


@triton.jit
def _bwd_kernel(
    u_ptr, dt_ptr, z_ptr, B_ptr, C_ptr, A_ptr, D_ptr, bias_ptr, seq_ptr, ckpt_ptr, dy_ptr, carry_ptr,
    du_ptr, ddt_ptr, dz_ptr, dB_ptr, dC_ptr, dA_ptr, dD_ptr, dbias_ptr, dh0_ptr,
    L, chunk_len, n_chunks, n_tiles,
    D_MODEL: tl.constexpr, G: tl.constexpr, N: tl.constexpr, NP: tl.constexpr, BD: tl.constexpr,
    TT: tl.constexpr, CARRY_MODE: tl.constexpr, HAS_Z: tl.constexpr, HAS_D: tl.constexpr,
    HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, HAS_SEQ: tl.constexpr, WRITE_DH0: tl.constexpr,
    ATOMIC_BC: tl.constexpr,
):  # fmt: skip
    """Gradients for one chunk. CARRY_MODE: 0 none, 1 dL/dfinal_state (b, d, n), 2 per chunk (b, nc, d, n).

    dB_ptr, dC_ptr: (b, l, d / BD, n) partials, or with ATOMIC_BC zeroed (b, l, g, n) fp32 sums that every
    channel block adds into; dA_ptr: (b, nc, d, n); dD_ptr, dbias_ptr: (b, nc, d).
    """
    pid_d = tl.program_id(0)
    pid_c = tl.program_id(1)
    b64 = tl.program_id(2).to(tl.int64)
    n_blk = D_MODEL // BD
    offs_d = pid_d * BD + tl.arange(0, BD)
    grp = (pid_d * BD) // (D_MODEL // G)
    offs_n = tl.arange(0, NP)
    offs_dn = offs_d[:, None] * N + offs_n[None, :]
    mask_dn = offs_n[None, :] < N
    A = tl.load(A_ptr + offs_dn, mask=mask_dn, other=0.0).to(tl.float32)
    A2 = A * 1.4426950408889634
    if CARRY_MODE == 1:
        carry = tl.load(carry_ptr + b64 * D_MODEL * N + offs_dn, mask=mask_dn, other=0.0).to(tl.float32)
    elif CARRY_MODE == 2:
        carry = tl.load(carry_ptr + (b64 * n_chunks + pid_c) * D_MODEL * N + offs_dn, mask=mask_dn, other=0.0)
    else:
        carry = tl.zeros((BD, NP), dtype=tl.float32)
    if HAS_D:
        Dv = tl.load(D_ptr + offs_d).to(tl.float32)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + offs_d).to(tl.float32)
    dA_acc = tl.zeros((BD, NP), dtype=tl.float32)
    dD_acc = tl.zeros((BD,), dtype=tl.float32)
    dbias_acc = tl.zeros((BD,), dtype=tl.float32)
    t_start = pid_c * chunk_len
    t_stop = tl.minimum(t_start + chunk_len, L)
    n_t = tl.cdiv(t_stop - t_start, TT)
    p = tl.arange(0, TT)
    for i in range(0, n_t):
        t0 = t_start + (n_t - 1 - i) * TT
        offs_t = t0 + p
        mask_t = offs_t < t_stop
        rows = b64 * L + offs_t
        offs_td = rows[:, None] * D_MODEL + offs_d[None, :]
        mask_td = mask_t[:, None] & (offs_d[None, :] < D_MODEL)
        offs_tn = (rows[:, None] * G + grp) * N + offs_n[None, :]
        mask_tn = mask_t[:, None] & (offs_n[None, :] < N)
        # forward tile again, from the checkpoint
        h_in = tl.load(ckpt_ptr + (b64 * n_tiles + t0 // TT) * D_MODEL * N + offs_dn, mask=mask_dn, other=0.0)
        uu = tl.load(u_ptr + offs_td, mask=mask_td, other=0.0).to(tl.float32)
        raw = tl.load(dt_ptr + offs_td, mask=mask_td, other=0.0).to(tl.float32)
        if HAS_BIAS:
            raw += bias[None, :]
        dd = raw
        if SOFTPLUS:
            dd = _softplus(raw)
        dd = tl.where(mask_td, dd, 0.0)
        Bt = tl.load(B_ptr + offs_tn, mask=mask_tn, other=0.0).to(tl.float32)
        Ct = tl.load(C_ptr + offs_tn, mask=mask_tn, other=0.0).to(tl.float32)
        dA = tl.exp2(dd[:, :, None] * A2[None, :, :])  # (TT, BD, NP)
        if HAS_SEQ:
            dA = dA * _load_keep(seq_ptr, rows, offs_t, mask_t)[:, None, None]
        x = (dd * uu)[:, :, None] * Bt[:, None, :]
        a_cum, x_cum = tl.associative_scan((dA, x), 0, _affine_combine)
        hs = a_cum * h_in[None, :, :] + x_cum  # (TT, BD, NP)
        # gate
        dyy, dys, zz, sz = _dys(dy_ptr, z_ptr, offs_td, mask_td, HAS_Z)
        if HAS_Z:
            ypre = tl.sum(hs * Ct[:, None, :], axis=2)
            if HAS_D:
                ypre += Dv[None, :] * uu
            dz = dyy * ypre * sz * (1.0 + zz * (1.0 - sz))
            _store(dz_ptr, offs_td, dz, mask_td)
        # Abar_{t+1}: 1 on the last row (the carry holds it) and past the chunk's end
        mask_1 = (p < TT - 1) & (offs_t + 1 < t_stop)
        mask_1d = mask_1[:, None] & (offs_d[None, :] < D_MODEL)
        dd1 = tl.load(dt_ptr + offs_td + D_MODEL, mask=mask_1d, other=0.0).to(tl.float32)
        if HAS_BIAS:
            dd1 += bias[None, :]
        if SOFTPLUS:
            dd1 = _softplus(dd1)
        dd1 = tl.where(mask_1d, dd1, 0.0)
        dA1 = tl.exp2(dd1[:, :, None] * A2[None, :, :])
        if HAS_SEQ:
            dA1 = dA1 * _load_keep(seq_ptr, rows + 1, offs_t + 1, mask_1)[:, None, None]
        s = dys[:, :, None] * Ct[:, None, :]
        c_cum, R = tl.associative_scan((dA1, s), 0, _affine_combine, reverse=True)
        Gs = R + c_cum * carry[None, :, :]  # (TT, BD, NP): dL/dh_t
        # gradients
        dtu = dd * uu
        dC_t = tl.sum(dys[:, :, None] * hs, axis=1)  # (TT, NP)
        dB_t = tl.sum(Gs * dtu[:, :, None], axis=1)
        if ATOMIC_BC:
            tl.atomic_add(dC_ptr + offs_tn, dC_t, mask=mask_tn, sem="relaxed")
            tl.atomic_add(dB_ptr + offs_tn, dB_t, mask=mask_tn, sem="relaxed")
        else:
            part = (rows[:, None] * n_blk + pid_d) * N + offs_n[None, :]  # (TT, NP) into (b, l, d / BD, n)
            tl.store(dC_ptr + part, dC_t, mask=mask_tn)
            tl.store(dB_ptr + part, dB_t, mask=mask_tn)
        gd = Gs * (hs - x)  # dL/d(Abar_t) * Abar_t
        dA_acc += tl.sum(gd * dd[:, :, None], axis=0)
        GB = tl.sum(Gs * Bt[:, None, :], axis=2)  # (TT, BD)
        ddelta = uu * GB + tl.sum(gd * A[None, :, :], axis=2)
        du = dd * GB
        if HAS_D:
            du += dys * Dv[None, :]
            dD_acc += tl.sum(dys * uu, axis=0)
        ddt = ddelta
        if SOFTPLUS:
            ddt = ddelta * tl.sigmoid(raw)
        ddt = tl.where(mask_td, ddt, 0.0)
        dbias_acc += tl.sum(ddt, axis=0)
        _store(du_ptr, offs_td, du, mask_td)
        _store(ddt_ptr, offs_td, ddt, mask_td)
        carry = tl.sum(tl.where((p == 0)[:, None, None], dA * Gs, 0.0), axis=0)
    out = (b64 * n_chunks + pid_c) * D_MODEL * N + offs_dn
    tl.store(dA_ptr + out, dA_acc, mask=mask_dn)
    out_d = (b64 * n_chunks + pid_c) * D_MODEL + offs_d
    if HAS_D:
        tl.store(dD_ptr + out_d, dD_acc)
    if HAS_BIAS:
        tl.store(dbias_ptr + out_d, dbias_acc)
    if WRITE_DH0:  # noqa: SIM102 (a constexpr and a run-time condition do not combine in Triton)
        if pid_c == 0:  # the carry out of chunk 0 is the initial state's gradient
            tl.store(dh0_ptr + b64 * D_MODEL * N + offs_dn, carry, mask=mask_dn)
