"""Selective scan backward in Triton as a per-step recurrence: one channel per lane, its n states in registers.

One program (a single warp) owns (batch row, chunk, BD = 32 channels) and walks its chunk backwards. The state's
adjoint G_t = dL/dh_t = C_t dys_t + Abar_{t+1} G_{t+1} runs in registers, as h does in the forward; the
states h_t it needs are recomputed from the forward's checkpoints (one entering state per tile of TT steps):
  1. from the tile's checkpoint, TT - SUB steps forward, each SUB-step sub-tile's entering state written to a
     small per-program scratch buffer (it stays in L1/L2: registers are the scarce resource here),
  2. sub-tiles last to first: SUB states recomputed into registers, then SUB steps backwards.
So a state is never written per step, and each element costs 1.75 + 1 exps (TT = 16, SUB = 4).

Per step t (everything per lane except dB, dC, which sum over channels across the warp's lanes):
  G_t = carry + C_t dys_t,  Abar_t = exp(Delta_t A),  gd = G_t Abar_t h_{t-1}  (= dL/dAbar_t * Abar_t)
  dA += gd Delta_t,  dDelta_t = u_t (G_t . B_t) + sum_n gd A,  du_t = Delta_t (G_t . B_t) + D dys_t
  dB_t = sum_d G_t Delta_t u_t,  dC_t = sum_d dys_t h_t,  carry <- Abar_t G_t
dB, dC are added up across channel blocks by fp32 atomics into (b, l, g, n), or, when torch's deterministic mode is
on, written as per-channel-block partials (b, l, d / BD, n) and summed afterwards (1 GiB each at W1's 64K tokens).

`_bwd_local_seq_kernel` gives, per chunk, its own part of dL/dH_in (the adjoint leaving its start when nothing
arrives at its end) and its decay, for the cross-chunk combine (`_chunk_combine_kernel`, run in reverse).
"""

from __future__ import annotations

import triton
import triton.language as tl

from .._triton_math import exp2_fast, sigmoid_fast, softplus_fast
from .triton_fwd import _delta, _store


@triton.jit
def _channel_loads(
    u_ptr, dt_ptr, z_ptr, b64, t, t_stop, L, offs_d, zeros_d,
    D_MODEL: tl.constexpr, Z_ROW: tl.constexpr, HAS_Z: tl.constexpr, LOAD_Z: tl.constexpr,
):  # fmt: skip
    """Step t's u, raw dt and z (z only with HAS_Z and LOAD_Z, else zeros), (BD,) fp32; 0 past t_stop."""
    ok_d = (zeros_d + t) < t_stop  # (BD,)
    row = b64 * L + t
    uu = tl.load(u_ptr + row * D_MODEL + offs_d, mask=ok_d, other=0.0).to(tl.float32)
    raw = tl.load(dt_ptr + row * D_MODEL + offs_d, mask=ok_d, other=0.0).to(tl.float32)
    zz = tl.zeros_like(uu)
    if HAS_Z and LOAD_Z:
        zz = tl.load(z_ptr + row * Z_ROW + offs_d, mask=ok_d, other=0.0).to(tl.float32)
    return uu, raw, zz


@triton.jit
def _group_row_loads(
    B_ptr, C_ptr, seq_ptr, b64, t, t_stop, L, offs_n, mask_n, grp, zeros_d,
    G: tl.constexpr, N: tl.constexpr, HAS_SEQ: tl.constexpr, LOAD_C: tl.constexpr,
):  # fmt: skip
    """Step t's B, C (NP,) fp32 (C only with LOAD_C, else zeros) and keep (BD,): 1.0, or 0.0 where seq_idx changes
    at t > 0; past t_stop B, C are 0 and keep is 1, so the step leaves the state unchanged. The forward's
    `_group_loads` gives each channel its own (BD, NP) copy instead: here the compiler splits n over 4 lanes of
    the (NP, BD) tiles, which makes the per-step sums over channels (dB_t, dC_t) cheaper (H200, W1 at L = 1K: the
    backward took 24.5 ms this way, 26.3 ms with a channel's n states in one thread, 5 shuffles per value)."""
    ok_d = (zeros_d + t) < t_stop  # (BD,)
    ok_n = (offs_n * 0 + t < t_stop) & mask_n  # (NP,)
    row = b64 * L + t
    Bt = tl.load(B_ptr + (row * G + grp) * N + offs_n, mask=ok_n, other=0.0).to(tl.float32)
    Ct = tl.zeros_like(Bt)
    if LOAD_C:
        Ct = tl.load(C_ptr + (row * G + grp) * N + offs_n, mask=ok_n, other=0.0).to(tl.float32)
    keep = tl.zeros((zeros_d.shape[0],), dtype=tl.float32) + 1.0
    if HAS_SEQ:
        cur = tl.load(seq_ptr + row + zeros_d, mask=ok_d, other=0)
        prev = tl.load(seq_ptr + row - 1 + zeros_d, mask=ok_d & (zeros_d + t > 0), other=0)
        keep = tl.where((cur == prev) | (zeros_d + t == 0) | (~ok_d), 1.0, 0.0)  # (BD,)
    return Bt, Ct, keep


@triton.jit
def _step_inputs(
    u_ptr, dt_ptr, z_ptr, B_ptr, C_ptr, seq_ptr, bias, b64, t, t_stop, L, offs_d, offs_n, mask_n, grp, zeros_d,
    D_MODEL: tl.constexpr, G: tl.constexpr, N: tl.constexpr, Z_ROW: tl.constexpr, HAS_Z: tl.constexpr,
    HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, HAS_SEQ: tl.constexpr, LOAD_CZ: tl.constexpr,
):  # fmt: skip
    """Step t's u, raw dt (+ bias), Delta, B, C, z, (BD,) / (NP,) in fp32, and keep (see `_group_loads`).
    C and z are loaded only with LOAD_CZ (else zeros)."""
    uu, raw, zz = _channel_loads(
        u_ptr, dt_ptr, z_ptr, b64, t, t_stop, L, offs_d, zeros_d, D_MODEL, Z_ROW, HAS_Z, LOAD_CZ
    )  # fmt: skip
    raw, dd = _delta(raw, bias, t, t_stop, zeros_d, HAS_BIAS, SOFTPLUS)
    Bt, Ct, keep = _group_row_loads(
        B_ptr, C_ptr, seq_ptr, b64, t, t_stop, L, offs_n, mask_n, grp, zeros_d, G, N, HAS_SEQ, LOAD_CZ
    )  # fmt: skip
    return uu, raw, dd, Bt, Ct, zz, keep


@triton.jit
def _step_decay(
    u_ptr, dt_ptr, z_ptr, B_ptr, C_ptr, seq_ptr, bias, A2, b64, t, t_stop, L, offs_d, offs_n, mask_n, grp, zeros_d,
    D_MODEL: tl.constexpr, G: tl.constexpr, N: tl.constexpr, Z_ROW: tl.constexpr, HAS_Z: tl.constexpr,
    HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, HAS_SEQ: tl.constexpr, LOAD_CZ: tl.constexpr,
):  # fmt: skip
    """`_step_inputs` of step t with the decay Abar_t = exp(Delta_t A) (NP, BD) in place of keep."""
    uu, raw, dd, Bt, Ct, zz, keep = _step_inputs(
        u_ptr, dt_ptr, z_ptr, B_ptr, C_ptr, seq_ptr, bias, b64, t, t_stop, L, offs_d, offs_n, mask_n, grp, zeros_d,
        D_MODEL, G, N, Z_ROW, HAS_Z, HAS_BIAS, SOFTPLUS, HAS_SEQ, LOAD_CZ,
    )  # fmt: skip
    dA = exp2_fast(dd[None, :] * A2)
    if HAS_SEQ:
        dA = dA * keep[None, :]
    return uu, raw, dd, Bt, Ct, zz, dA


@triton.jit
def _bwd_seq_kernel(
    u_ptr, dt_ptr, z_ptr, B_ptr, C_ptr, A_ptr, D_ptr, bias_ptr, seq_ptr, ckpt_ptr, dy_ptr, carry_ptr, scratch_ptr,
    du_ptr, ddt_ptr, dz_ptr, dB_ptr, dC_ptr, dA_ptr, dD_ptr, dbias_ptr, dh0_ptr,
    L, chunk_len, n_chunks, n_tiles,
    D_MODEL: tl.constexpr, G: tl.constexpr, N: tl.constexpr, NP: tl.constexpr, BD: tl.constexpr,
    TT: tl.constexpr, SUB: tl.constexpr, CARRY_MODE: tl.constexpr, Z_ROW: tl.constexpr, HAS_Z: tl.constexpr,
    HAS_D: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, HAS_SEQ: tl.constexpr,
    WRITE_DH0: tl.constexpr, ATOMIC_BC: tl.constexpr,
):  # fmt: skip
    """Gradients for one chunk. CARRY_MODE: 0 none, 1 dL/dfinal_state (b, d, n), 2 per chunk (b, nc, d, n).

    ckpt_ptr: (b, n_tiles, d, n) states entering each tile of TT steps; scratch_ptr: (programs, TT / SUB, NP, BD);
    dB_ptr, dC_ptr: (b, l, g, n) fp32 sums with ATOMIC_BC (zeroed by the caller), else (b, l, d / BD, n) partials;
    dA_ptr: (b, nc, d, n); dD_ptr, dbias_ptr: (b, nc, d); z rows Z_ROW elements apart (z may be a view of xz).
    """
    pid_d = tl.program_id(0)
    pid_c = tl.program_id(1)
    b64 = tl.program_id(2).to(tl.int64)
    n_blk = D_MODEL // BD
    K: tl.constexpr = TT // SUB  # sub-tiles per tile
    offs_d = pid_d * BD + tl.arange(0, BD)
    grp = (pid_d * BD) // (D_MODEL // G)
    offs_n = tl.arange(0, NP)
    mask_n = offs_n < N
    offs_nd = offs_d[None, :] * N + offs_n[:, None]  # (NP, BD): element (d, n) of a (d, n) state
    mask_nd = mask_n[:, None]
    zeros_d = tl.zeros((BD,), dtype=tl.int32)
    A2 = tl.load(A_ptr + offs_nd, mask=mask_nd, other=0.0).to(tl.float32) * 1.4426950408889634  # A log2(e)
    if CARRY_MODE == 1:
        carry = tl.load(carry_ptr + b64 * D_MODEL * N + offs_nd, mask=mask_nd, other=0.0).to(tl.float32)
    elif CARRY_MODE == 2:
        carry = tl.load(carry_ptr + (b64 * n_chunks + pid_c) * D_MODEL * N + offs_nd, mask=mask_nd, other=0.0)
    else:
        carry = tl.zeros((NP, BD), dtype=tl.float32)
    Dv = tl.zeros((BD,), dtype=tl.float32)
    if HAS_D:
        Dv = tl.load(D_ptr + offs_d).to(tl.float32)
    bias = tl.zeros((BD,), dtype=tl.float32)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + offs_d).to(tl.float32)
    dA_acc = tl.zeros((NP, BD), dtype=tl.float32)
    dD_acc = tl.zeros((BD,), dtype=tl.float32)
    dbias_acc = tl.zeros((BD,), dtype=tl.float32)
    # this program's scratch: K sub-tile entering states, each (NP, BD) laid out as its lanes read it back
    prog = (b64 * n_chunks + pid_c) * n_blk + pid_d
    offs_scr = prog * (K * NP * BD) + offs_n[:, None] * BD + tl.arange(0, BD)[None, :]  # (NP, BD)
    sidx = tl.arange(0, SUB)[:, None, None]  # (SUB, 1, 1): which register slot holds which step's state
    t_start = pid_c * chunk_len
    t_stop = tl.minimum(t_start + chunk_len, L)
    n_t = tl.cdiv(t_stop - t_start, TT)
    for i in range(0, n_t):
        t0 = t_start + (n_t - 1 - i) * TT
        h = tl.load(ckpt_ptr + (b64 * n_tiles + t0 // TT) * D_MODEL * N + offs_nd, mask=mask_nd, other=0.0)
        # 1. entering states of the sub-tiles (loops left rolled where no register slot is indexed: small code)
        for k in range(0, K):
            tl.store(scratch_ptr + offs_scr + k * NP * BD, h)
            if k < K - 1:
                for j in range(0, SUB):
                    uu, _raw, dd, Bt, _Ct, _zz, dA = _step_decay(
                        u_ptr, dt_ptr, z_ptr, B_ptr, C_ptr, seq_ptr, bias, A2, b64, t0 + k * SUB + j, t_stop, L,
                        offs_d, offs_n, mask_n, grp, zeros_d, D_MODEL, G, N, Z_ROW, HAS_Z, HAS_BIAS, SOFTPLUS, HAS_SEQ,
                        False,
                    )  # fmt: skip
                    h = dA * h + Bt[:, None] * (dd * uu)[None, :]
        # 2. sub-tiles last to first
        for kk in range(0, K):
            ts = t0 + (K - 1 - kk) * SUB
            slot = offs_scr + (K - 1 - kk) * NP * BD
            h = tl.load(scratch_ptr + slot)
            hs = tl.zeros((SUB, NP, BD), dtype=tl.float32)
            for j in tl.static_range(SUB):
                uu, _raw, dd, Bt, _Ct, _zz, dA = _step_decay(
                    u_ptr, dt_ptr, z_ptr, B_ptr, C_ptr, seq_ptr, bias, A2, b64, ts + j, t_stop, L,
                    offs_d, offs_n, mask_n, grp, zeros_d, D_MODEL, G, N, Z_ROW, HAS_Z, HAS_BIAS, SOFTPLUS, HAS_SEQ,
                        False,
                )  # fmt: skip
                h = dA * h + Bt[:, None] * (dd * uu)[None, :]
                hs = tl.where(sidx == j, h[None, :, :], hs)  # static slot: a register move
            for jj in tl.static_range(SUB):
                j = SUB - 1 - jj
                t = ts + j
                uu, raw, dd, Bt, Ct, zz, dA = _step_decay(
                    u_ptr, dt_ptr, z_ptr, B_ptr, C_ptr, seq_ptr, bias, A2, b64, t, t_stop, L,
                    offs_d, offs_n, mask_n, grp, zeros_d, D_MODEL, G, N, Z_ROW, HAS_Z, HAS_BIAS, SOFTPLUS, HAS_SEQ,
                    True,
                )  # fmt: skip
                ok_d = (zeros_d + t) < t_stop  # (BD,)
                ok_n = (offs_n * 0 + t < t_stop) & mask_n  # (NP,)
                row = b64 * L + t
                h_t = tl.sum(tl.where(sidx == j, hs, -0.0), axis=0)  # x + (-0.0) == x: exact, folds away
                if j == 0:  # noqa: SIM108 (a static branch on constexpr j)
                    h_prev = tl.load(scratch_ptr + slot)  # the sub-tile's entering state, from L1
                else:
                    h_prev = tl.sum(tl.where(sidx == j - 1, hs, -0.0), axis=0)
                dyy = tl.load(dy_ptr + row * D_MODEL + offs_d, mask=ok_d, other=0.0).to(tl.float32)
                dys = dyy
                if HAS_Z:
                    sz = sigmoid_fast(zz)
                    dys = dyy * zz * sz
                    ypre = tl.sum(h_t * Ct[:, None], axis=0) + Dv * uu  # (BD,)
                    _store(dz_ptr, row * D_MODEL + offs_d, dyy * ypre * sz * (1.0 + zz * (1.0 - sz)), ok_d)
                Gt = carry + Ct[:, None] * dys[None, :]  # (NP, BD)
                gd = Gt * dA * h_prev
                dA_acc += gd * dd[None, :]
                GB = tl.sum(Gt * Bt[:, None], axis=0)  # (BD,)
                ddelta = uu * GB + tl.sum(gd * A2, axis=0) * 0.6931471805599453  # A = A2 ln 2
                du = dd * GB + Dv * dys
                ddt = ddelta
                if SOFTPLUS:
                    ddt = ddelta * sigmoid_fast(raw)
                ddt = tl.where(ok_d, ddt, 0.0)
                dD_acc += dys * uu
                dbias_acc += ddt
                _store(du_ptr, row * D_MODEL + offs_d, du, ok_d)
                _store(ddt_ptr, row * D_MODEL + offs_d, ddt, ok_d)
                dB_t = tl.sum(Gt * (dd * uu)[None, :], axis=1)  # (NP,): this block's channels
                dC_t = tl.sum(h_t * dys[None, :], axis=1)
                if ATOMIC_BC:
                    part = (row * G + grp) * N + offs_n  # (NP,) into (b, l, g, n)
                    tl.atomic_add(dB_ptr + part, dB_t, mask=ok_n, sem="relaxed")
                    tl.atomic_add(dC_ptr + part, dC_t, mask=ok_n, sem="relaxed")
                else:
                    part = (row * n_blk + pid_d) * N + offs_n  # (NP,) into (b, l, d / BD, n)
                    tl.store(dB_ptr + part, dB_t, mask=ok_n)
                    tl.store(dC_ptr + part, dC_t, mask=ok_n)
                carry = dA * Gt
    out = (b64 * n_chunks + pid_c) * D_MODEL * N + offs_nd
    tl.store(dA_ptr + out, dA_acc, mask=mask_nd)
    out_d = (b64 * n_chunks + pid_c) * D_MODEL + offs_d
    if HAS_D:
        tl.store(dD_ptr + out_d, dD_acc)
    if HAS_BIAS:
        tl.store(dbias_ptr + out_d, dbias_acc)
    if WRITE_DH0:  # noqa: SIM102 (a constexpr and a run-time condition do not combine in Triton)
        if pid_c == 0:  # the carry out of chunk 0 is the initial state's gradient
            tl.store(dh0_ptr + b64 * D_MODEL * N + offs_nd, carry, mask=mask_nd)


@triton.jit
def _bwd_local_seq_kernel(
    dt_ptr, z_ptr, C_ptr, A_ptr, bias_ptr, seq_ptr, dy_ptr, Lc_ptr, dec_ptr,
    L, chunk_len, n_chunks,
    D_MODEL: tl.constexpr, G: tl.constexpr, N: tl.constexpr, NP: tl.constexpr, BD: tl.constexpr,
    Z_ROW: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, HAS_SEQ: tl.constexpr,
):  # fmt: skip
    """Chunk c's own part of dL/dH_in[c] (lam = Abar_t (lam + C_t dys_t), t from the end) and its decay Dec_c."""
    pid_d = tl.program_id(0)
    pid_c = tl.program_id(1)
    b64 = tl.program_id(2).to(tl.int64)
    offs_d = pid_d * BD + tl.arange(0, BD)
    grp = (pid_d * BD) // (D_MODEL // G)
    offs_n = tl.arange(0, NP)
    mask_n = offs_n < N
    offs_nd = offs_d[None, :] * N + offs_n[:, None]
    mask_nd = mask_n[:, None]
    zeros_d = tl.zeros((BD,), dtype=tl.int32)
    A2 = tl.load(A_ptr + offs_nd, mask=mask_nd, other=0.0).to(tl.float32) * 1.4426950408889634
    bias = tl.zeros((BD,), dtype=tl.float32)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + offs_d).to(tl.float32)
    lam = tl.zeros((NP, BD), dtype=tl.float32)
    dsum = tl.zeros((BD,), dtype=tl.float32)
    alive = tl.full((BD,), 1.0, tl.float32)
    t_start = pid_c * chunk_len
    t_stop = tl.minimum(t_start + chunk_len, L)
    for i in range(0, t_stop - t_start):
        t = t_stop - 1 - i
        row = b64 * L + t
        dd = tl.load(dt_ptr + row * D_MODEL + offs_d).to(tl.float32)
        if HAS_BIAS:
            dd += bias
        if SOFTPLUS:
            dd = softplus_fast(dd)
        dys = tl.load(dy_ptr + row * D_MODEL + offs_d).to(tl.float32)
        if HAS_Z:
            zz = tl.load(z_ptr + row * Z_ROW + offs_d).to(tl.float32)
            dys = dys * zz * sigmoid_fast(zz)
        Ct = tl.load(C_ptr + (row * G + grp) * N + offs_n, mask=mask_n, other=0.0).to(tl.float32)
        dA = exp2_fast(dd[None, :] * A2)
        if HAS_SEQ:
            cur = tl.load(seq_ptr + row + zeros_d)
            prev = tl.load(seq_ptr + row - 1 + zeros_d, mask=zeros_d + t > 0, other=0)
            keep = tl.where((cur == prev) | (zeros_d + t == 0), 1.0, 0.0)
            dA = dA * keep[None, :]
            alive = alive * keep
        lam = dA * (lam + Ct[:, None] * dys[None, :])
        dsum += dd
    out = (b64 * n_chunks + pid_c) * D_MODEL * N + offs_nd
    tl.store(Lc_ptr + out, lam, mask=mask_nd)
    tl.store(dec_ptr + out, exp2_fast(dsum[None, :] * A2) * alive[None, :], mask=mask_nd)
