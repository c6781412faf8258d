"""Selective scan backward in Triton as a per-step recurrence: one channel per thread, its n states in registers.

One program (a single warp) owns (batch row, chunk, BD <= 32 channels) and walks its chunk backwards, in the
forward's layout ((BD, NP) tiles, `_state_index` order). The state's adjoint G_t = dL/dh_t = C_t dys_t +
Abar_{t+1} G_{t+1} runs in registers, as h does in the forward; the states h_t it needs are recomputed from the
forward's checkpoints (one entering state per tile of TT steps):
  1. from the tile's checkpoint, TT - SUB steps forward, each SUB-step sub-tile's entering state written to a
     small per-program scratch buffer (it stays in L1/L2: registers are the scarce resource here),
  2. sub-tiles last to first: SUB states recomputed into registers, then SUB steps backwards.
So a state is never written per step, and each element costs 1.75 exps (TT = 16, SUB = 4; the backward steps reuse
the sub-tile's decays, still in registers). Each sub-tile's loads from memory (u, dt, z, dy) are issued together
at its start, before its first store: the compiler does not move a load ahead of a store it cannot tell apart from
it, and one load round trip per step (two warps per scheduler at 255 registers) was most of the time. For the same
reason each backward step loads the next one's B, C before its own stores.

Per step t (everything per thread except dB, dC, which sum over the warp's channels):
  G_t = carry + C_t dys_t,  Abar_t = exp(Delta_t A),  gd = G_t Abar_t h_{t-1}  (= dL/dAbar_t * Abar_t)
  dA += gd Delta_t,  dDelta_t = u_t (G_t . B_t) + sum_n gd A,  du_t = Delta_t (G_t . B_t) + D dys_t
  dB_t = sum_d G_t Delta_t u_t,  dC_t = sum_d dys_t h_t,  carry <- Abar_t G_t
The sums over n are within a thread. dB_t, dC_t (2 NP values, each summed over BD lanes) go through a
reduce-scatter (`_reduce_scatter`): 31 lane exchanges a step for NP = 16 where summing each value over the warp
would take 160; each lane then adds its one value into dB, dC (b, l, g, 2, n) by an fp32 atomic, or, when torch's
deterministic mode is on, stores it into per-channel-block partials (b, l, d / BD, 2, n), summed afterwards.

`_bwd_local_seq_kernel` gives, per chunk, its own part of dL/dH_in (the adjoint leaving its start when nothing
arrives at its end) and its decay, for the cross-chunk combine (`_chunk_combine_kernel`, run in reverse). When the
forward was told this dy beforehand (`grad_hint`, the fused Mamba block's recompute), it formed them already.
"""

from __future__ import annotations

import triton
import triton.language as tl

from .._triton_math import exp2_fast, prefetch_l1, sigmoid_fast
from .triton_fwd import (
    _bc_rows,
    _channel_loads,
    _delta,
    _group_loads,
    _lane_order,
    _state_index,
    _store,
    _tile_pointers,
)


@triton.jit
def _lane_xor(x, m: tl.constexpr):
    """x (R, K) with row r replaced by row r ^ m: a lane exchange (shuffle) when rows are a warp's lanes."""
    idx = (tl.arange(0, x.shape[0]) ^ m)[:, None] + tl.zeros(x.shape, tl.int32)
    return tl.gather(x, idx, axis=0)


@triton.jit
def _exchange_half(acc, ids, rows, m: tl.constexpr):
    """One reduce-scatter stage over lane pairs (r, r ^ m): each keeps one half of its values (even or odd
    positions, by bit m of r), adds its partner's copy of that half, and hands over the other half. Once one value
    is left, the remaining stages add both lanes' (the lanes then hold equal sums)."""
    if acc.shape[1] > 1:
        x0, x1 = tl.split(tl.reshape(acc, (acc.shape[0], acc.shape[1] // 2, 2)))
        i0, i1 = tl.split(tl.reshape(ids, (ids.shape[0], ids.shape[1] // 2, 2)))
        hi = ((rows & m) != 0)[:, None]
        acc = tl.where(hi, x1, x0) + _lane_xor(tl.where(hi, x0, x1), m)
        ids = tl.where(hi, i1, i0)  # the partner handed over the values with these ids
    else:
        acc = acc + _lane_xor(acc, m)
    return acc, ids


@triton.jit
def _reduce_scatter(a, b, offs_n, BD: tl.constexpr):
    """a, b (BD, NP) per-channel terms, position p holding state offs_n[p] -> (sums (BD, K), ids (BD, K)) with
    K = max(1, 2 NP / BD): lane r holds the sums over all BD rows of the values ids[r] (id < NP: a's state id, else
    b's state id - NP). With 2 NP < BD, BD / (2 NP) lanes in a row hold each sum (`_scatter_owner`)."""
    NP: tl.constexpr = a.shape[1]
    rows = tl.arange(0, BD)
    acc = tl.reshape(tl.join(a, b), (BD, 2 * NP))  # position 2 p + s: a's (s = 0) or b's (s = 1) position p
    ids = tl.reshape(tl.join(offs_n, offs_n + NP), (1, 2 * NP)) + tl.zeros((BD, 2 * NP), tl.int32)
    if BD > 16:
        acc, ids = _exchange_half(acc, ids, rows, 16)
    if BD > 8:
        acc, ids = _exchange_half(acc, ids, rows, 8)
    if BD > 4:
        acc, ids = _exchange_half(acc, ids, rows, 4)
    if BD > 2:
        acc, ids = _exchange_half(acc, ids, rows, 2)
    if BD > 1:
        acc, ids = _exchange_half(acc, ids, rows, 1)
    return acc, ids


@triton.jit
def _scatter_owner(ids, NP: tl.constexpr, BD: tl.constexpr):
    """(BD, K) bool: the lanes that add a reduce-scatter sum to memory (one per value when lanes hold copies)."""
    rows = tl.arange(0, BD)[:, None] + tl.zeros(ids.shape, tl.int32)
    if 2 * NP < BD:  # noqa: SIM108 (a constexpr branch)
        own = (rows & (BD // (2 * NP) - 1)) == 0
    else:
        own = rows >= 0
    return own


@triton.jit
def _bwd_seq_kernel(
    u_ptr, dt_ptr, z_ptr, B_ptr, C_ptr, A_ptr, D_ptr, bias_ptr, seq_ptr, ckpt_ptr, dy_ptr, carry_ptr, scratch_ptr,
    du_ptr, ddt_ptr, dz_ptr, dBC_ptr, dA_ptr, dD_ptr, dbias_ptr, dh0_ptr,
    L, chunk_len, n_chunks, n_tiles,
    D_MODEL: tl.constexpr, G: tl.constexpr, N: tl.constexpr, NP: tl.constexpr, BD: tl.constexpr,
    TT: tl.constexpr, SUB: tl.constexpr, CARRY_MODE: tl.constexpr, Z_ROW: tl.constexpr, HAS_Z: tl.constexpr,
    HAS_D: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, HAS_SEQ: tl.constexpr,
    WRITE_DH0: tl.constexpr, ATOMIC_BC: tl.constexpr,
):  # fmt: skip
    """Gradients for one chunk. CARRY_MODE: 0 none, 1 dL/dfinal_state (b, d, n), 2 per chunk (b, nc, d, n).

    ckpt_ptr: (b, n_tiles, n, d) states entering each tile of TT steps; scratch_ptr: (programs, TT / SUB, NP, BD);
    B_ptr, C_ptr: (b, L + TT, g, n) fp32 (`_tile_pointers`); dBC_ptr: (b, l, g, 2, n) fp32 sums with ATOMIC_BC
    (zeroed by the caller), else (b, l, d / BD, 2, n) partials; dA_ptr: (b, nc, d, n); dD_ptr, dbias_ptr:
    (b, nc, d); z rows Z_ROW elements apart (z may be a view of xz); du, ddt, dz, dy: (b, l, d).
    """
    tl.static_assert(BD <= 32, "one warp per program: dB, dC are summed over the warp's lanes")
    pid_d = tl.program_id(0)
    pid_c = tl.program_id(1)
    b64 = tl.program_id(2).to(tl.int64)
    n_blk = D_MODEL // BD
    K: tl.constexpr = TT // SUB  # sub-tiles per tile
    offs_d = pid_d * BD + tl.arange(0, BD)
    grp = (pid_d * BD) // (D_MODEL // G)
    offs_n = _state_index(NP, N)
    mask_n = offs_n < N
    offs_dn = offs_d[:, None] * N + offs_n[None, :]  # (BD, NP): element (d, n) of a (d, n) state
    mask_dn = mask_n[None, :]
    zeros_d = tl.zeros((BD,), dtype=tl.int32)
    A2 = tl.load(A_ptr + offs_dn, mask=mask_dn, other=0.0).to(tl.float32) * 1.4426950408889634  # A log2(e)
    if CARRY_MODE == 1:
        carry = tl.load(carry_ptr + b64 * D_MODEL * N + offs_dn, mask=mask_dn, other=0.0).to(tl.float32)
    elif CARRY_MODE == 2:
        carry = tl.load(carry_ptr + (b64 * n_chunks + pid_c) * D_MODEL * N + offs_dn, mask=mask_dn, other=0.0)
    else:
        carry = tl.zeros((BD, NP), dtype=tl.float32)
    Dv = tl.zeros((BD,), dtype=tl.float32)
    if HAS_D:
        Dv = tl.load(D_ptr + offs_d).to(tl.float32)
    bias = tl.zeros((BD,), dtype=tl.float32)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + offs_d).to(tl.float32)
    dA_acc = tl.zeros((BD, NP), dtype=tl.float32)
    dD_acc = tl.zeros((BD,), dtype=tl.float32)
    dbias_acc = tl.zeros((BD,), dtype=tl.float32)
    # where this warp's reduce-scatter sums go: value id -> (B or C, state); the ids are the same every step (the
    # sums of this call are not used)
    _unused, ids = _reduce_scatter(carry, carry, offs_n, BD)
    own = _scatter_owner(ids, NP, BD) & ((ids % NP) < N)
    which = ids // NP  # 0: dB, 1: dC
    if ATOMIC_BC:
        bc_offs = (grp * 2 + which) * N + ids % NP  # (BD, K) within a row of (b, l, g, 2, n)
        bc_row = G * 2 * N
    else:
        bc_offs = (pid_d * 2 + which) * N + ids % NP  # within a row of (b, l, d / BD, 2, n)
        bc_row = n_blk * 2 * N
    # this program's scratch: K sub-tile entering states, each (NP, BD): a warp's lanes write d-contiguous runs
    prog = (b64 * n_chunks + pid_c) * n_blk + pid_d
    offs_scr = prog * (K * NP * BD) + offs_n[None, :] * BD + _lane_order(tl.arange(0, BD), BD)[:, None]  # (BD, NP)
    offs_ck = offs_n[None, :] * D_MODEL + _lane_order(offs_d, BD)[:, None]  # (BD, NP) in a checkpoint (n, d)
    bc_rows = _bc_rows(BD, TT, G, N)
    t_start = pid_c * chunk_len
    t_stop = tl.minimum(t_start + chunk_len, L)
    n_t = tl.cdiv(t_stop - t_start, TT)
    for i in range(0, n_t):
        t0 = t_start + (n_t - 1 - i) * TT
        pu, pdt, pz, pdy, pB, pC = _tile_pointers(
            u_ptr, dt_ptr, z_ptr, dy_ptr, B_ptr, C_ptr, b64, t0, L, offs_d, grp, D_MODEL, Z_ROW, G, N, TT
        )  # fmt: skip
        o_tile = (b64 * L + t0) * D_MODEL + offs_d  # (BD,) step t0 in (b, l, d)
        pdu, pddt, pdz = du_ptr + o_tile, ddt_ptr + o_tile, dz_ptr + o_tile
        if t0 > t_start:  # the next tile's inputs (it comes before this one), on their way to L1
            for j in tl.static_range(TT):
                prefetch_l1(pu + (j - TT) * D_MODEL)
                prefetch_l1(pdt + (j - TT) * D_MODEL)
                prefetch_l1(pdy + (j - TT) * D_MODEL)
                if HAS_Z:
                    prefetch_l1(pz + (j - TT) * Z_ROW)
            prefetch_l1(pB + bc_rows - TT * G * N)  # its B, C rows, one per lane (each row's first line)
            prefetch_l1(pC + bc_rows - TT * G * N)
        h = tl.load(ckpt_ptr + (b64 * n_tiles + t0 // TT) * N * D_MODEL + offs_ck, mask=mask_dn, other=0.0)
        # 1. entering states of the sub-tiles. Within a sub-tile the steps are unrolled, so their loads can all be
        # issued at its start: a store may alias them as far as the compiler knows, and none comes between them.
        tl.store(scratch_ptr + offs_scr, h)
        for k in range(0, K - 1):
            for j in tl.static_range(SUB):
                uu, _raw, dd, Bt, dA = _step_decay(
                    pu, pdt, pB, k * SUB + j, seq_ptr, bias, A2, b64, t0 + k * SUB + j, t_stop, L, offs_n, mask_n,
                    zeros_d, D_MODEL, G, N, HAS_BIAS, SOFTPLUS, HAS_SEQ,
                )  # fmt: skip
                h = dA * h + Bt * (dd * uu)[:, None]
            tl.store(scratch_ptr + offs_scr + (k + 1) * NP * BD, h)
        # 2. sub-tiles last to first
        for kk in range(0, K):
            s0 = (K - 1 - kk) * SUB  # the sub-tile's first step, from t0
            slot = offs_scr + (K - 1 - kk) * NP * BD
            h = tl.load(scratch_ptr + slot)
            # the sub-tile's SUB states, and each step's per-channel inputs, in registers (static indices): the
            # loads from memory of the whole sub-tile come before its first store, and are issued together
            hs = ()
            u_sub = ()
            raw_sub = ()
            dd_sub = ()
            z_sub = ()
            dy_sub = ()
            for j in tl.static_range(SUB):
                ok_j = (zeros_d + t0 + s0 + j) < t_stop
                uu, raw, dd, Bt, dA = _step_decay(
                    pu, pdt, pB, s0 + j, seq_ptr, bias, A2, b64, t0 + s0 + j, t_stop, L, offs_n, mask_n, zeros_d,
                    D_MODEL, G, N, HAS_BIAS, SOFTPLUS, HAS_SEQ,
                )  # fmt: skip
                h = dA * h + Bt * (dd * uu)[:, None]
                zz = tl.zeros_like(uu)
                if HAS_Z:
                    zz = tl.load(pz + (s0 + j) * Z_ROW, mask=ok_j, other=0.0).to(tl.float32)
                dyy = tl.load(pdy + (s0 + j) * D_MODEL, mask=ok_j, other=0.0).to(tl.float32)
                # a tuple per statement: Triton's jit takes no starred tuples, and a name reused as a tensor later
                # in the loop would not stay a tuple
                hs = hs + (h,)  # noqa: RUF005
                u_sub = u_sub + (uu,)  # noqa: RUF005
                raw_sub = raw_sub + (raw,)  # noqa: RUF005
                dd_sub = dd_sub + (dd,)  # noqa: RUF005
                z_sub = z_sub + (zz,)  # noqa: RUF005
                dy_sub = dy_sub + (dyy,)  # noqa: RUF005
            # each backward step's B, C (and the sub-tile's entering state, for its first step) are loaded by the step
            # before it, ahead of that step's stores
            Bt, Ct, keep = _group_loads(
                pB, pC, s0 + SUB - 1, seq_ptr, b64, t0 + s0 + SUB - 1, t_stop, L, offs_n, mask_n, zeros_d, G, N,
                HAS_SEQ, True,
            )  # fmt: skip
            h_enter = tl.zeros_like(h)  # the sub-tile's entering state, for its first step: loaded by the second
            if SUB == 1:
                h_enter = tl.load(scratch_ptr + slot)
            for jj in tl.static_range(SUB):
                j = SUB - 1 - jj
                s = s0 + j
                t = t0 + s
                uu, raw, dd = u_sub[SUB - 1 - jj], raw_sub[SUB - 1 - jj], dd_sub[SUB - 1 - jj]
                zz, dyy = z_sub[SUB - 1 - jj], dy_sub[SUB - 1 - jj]
                dA = exp2_fast(dd[:, None] * A2)  # the same as the forward's just above: the compiler reuses those
                if HAS_SEQ:
                    dA = dA * keep[:, None]
                ok_d = (zeros_d + t) < t_stop  # (BD,)
                h_t = hs[SUB - 1 - jj]
                if j == 0:  # noqa: SIM108 (a static branch on constexpr j)
                    h_prev = h_enter
                else:
                    h_prev = hs[SUB - 2 - jj]
                dys = dyy
                dz = dyy
                if HAS_Z:
                    sz = sigmoid_fast(zz)
                    dys = dyy * zz * sz
                    ypre = tl.sum(h_t * Ct, axis=1) + Dv * uu  # (BD,)
                    dz = dyy * ypre * sz * (1.0 + zz * (1.0 - sz))
                Gt = carry + Ct * dys[:, None]  # (BD, NP)
                gd = Gt * dA * h_prev
                dA_acc += gd * dd[:, None]
                GB = tl.sum(Gt * Bt, axis=1)  # (BD,)
                ddelta = uu * GB + tl.sum(gd * A2, axis=1) * 0.6931471805599453  # A = A2 ln 2
                du = dd * GB + Dv * dys
                ddt = ddelta
                if SOFTPLUS:
                    ddt = ddelta * sigmoid_fast(raw)
                ddt = tl.where(ok_d, ddt, 0.0)
                dD_acc += dys * uu
                dbias_acc += ddt
                sums, _ids = _reduce_scatter(Gt * (dd * uu)[:, None], h_t * dys[:, None], offs_n, BD)
                carry = dA * Gt
                if j > 0:
                    Bt, Ct, keep = _group_loads(
                        pB, pC, s - 1, seq_ptr, b64, t - 1, t_stop, L, offs_n, mask_n, zeros_d, G, N, HAS_SEQ, True
                    )  # fmt: skip
                if j == 1:
                    h_enter = tl.load(scratch_ptr + slot)  # from L1
                if HAS_Z:
                    _store(pdz, s * D_MODEL, dz, ok_d)
                _store(pdu, s * D_MODEL, du, ok_d)
                _store(pddt, s * D_MODEL, ddt, ok_d)
                ok = own & ((ids * 0 + t) < t_stop)
                bc = dBC_ptr + (b64 * L + t) * bc_row + bc_offs
                if ATOMIC_BC:
                    tl.atomic_add(bc, sums, mask=ok, sem="relaxed")
                else:
                    tl.store(bc, sums, mask=ok)
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


@triton.jit
def _step_decay(
    pu, pdt, pB, s, seq_ptr, bias, A2, b64, t, t_stop, L, offs_n, mask_n, zeros_d,
    D_MODEL: tl.constexpr, G: tl.constexpr, N: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
    HAS_SEQ: tl.constexpr,
):  # fmt: skip
    """Step t = the tile's + s: u, dt + bias, Delta (BD,), B and the decay Abar_t = exp(Delta_t A) (BD, NP) in fp32.
    Past t_stop Delta and u are 0: the step changes nothing."""
    ok_d = (zeros_d + t) < t_stop
    uu, raw, _zz = _channel_loads(pu, pdt, pu, s, ok_d, D_MODEL, 0, False, False)
    raw, dd = _delta(raw, bias, t, t_stop, zeros_d, HAS_BIAS, SOFTPLUS)
    Bt, _Ct, keep = _group_loads(pB, pB, s, seq_ptr, b64, t, t_stop, L, offs_n, mask_n, zeros_d, G, N, HAS_SEQ, False)
    dA = exp2_fast(dd[:, None] * A2)
    if HAS_SEQ:
        dA = dA * keep[:, None]
    return uu, raw, dd, Bt, dA


@triton.jit
def _bwd_local_seq_kernel(
    dt_ptr, z_ptr, C_ptr, A_ptr, bias_ptr, seq_ptr, dy_ptr, Lc_ptr, dec_ptr,
    L, chunk_len, n_chunks,
    D_MODEL: tl.constexpr, G: tl.constexpr, N: tl.constexpr, NP: tl.constexpr, BD: tl.constexpr,
    TT: tl.constexpr, Z_ROW: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
    HAS_SEQ: tl.constexpr,
):  # fmt: skip
    """Chunk c's own part of dL/dH_in[c] (lam = Abar_t (lam + C_t dys_t), t from the end) and its decay Dec_c;
    tiles of TT steps last to first, in `_bwd_seq_kernel`'s layout. C_ptr: (b, L + TT, g, n) fp32."""
    pid_d = tl.program_id(0)
    pid_c = tl.program_id(1)
    b64 = tl.program_id(2).to(tl.int64)
    offs_d = pid_d * BD + tl.arange(0, BD)
    grp = (pid_d * BD) // (D_MODEL // G)
    offs_n = _state_index(NP, N)
    mask_n = offs_n < N
    offs_dn = offs_d[:, None] * N + offs_n[None, :]  # (BD, NP)
    mask_dn = mask_n[None, :]
    zeros_d = tl.zeros((BD,), dtype=tl.int32)
    A2 = tl.load(A_ptr + offs_dn, mask=mask_dn, other=0.0).to(tl.float32) * 1.4426950408889634
    bias = tl.zeros((BD,), dtype=tl.float32)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + offs_d).to(tl.float32)
    lam = tl.zeros((BD, NP), dtype=tl.float32)
    dsum = tl.zeros((BD,), dtype=tl.float32)
    alive = tl.full((BD,), 1.0, tl.float32)
    t_start = pid_c * chunk_len
    t_stop = tl.minimum(t_start + chunk_len, L)
    n_t = tl.cdiv(t_stop - t_start, TT)
    for i in range(0, n_t):
        t0 = t_start + (n_t - 1 - i) * TT
        # dy in u's place: `_channel_loads` then reads dy, dt and z
        pdy, pdt, pz, _pdy, pC, _pC = _tile_pointers(
            dy_ptr, dt_ptr, z_ptr, dy_ptr, C_ptr, C_ptr, b64, t0, L, offs_d, grp, D_MODEL, Z_ROW, G, N, TT
        )  # fmt: skip
        if t0 > t_start:  # as in `_bwd_seq_kernel`
            for j in tl.static_range(TT):
                prefetch_l1(pdy + (j - TT) * D_MODEL)
                prefetch_l1(pdt + (j - TT) * D_MODEL)
                if HAS_Z:
                    prefetch_l1(pz + (j - TT) * Z_ROW)
            prefetch_l1(pC + _bc_rows(BD, TT, G, N) - TT * G * N)
        for jj in tl.static_range(TT):
            j = TT - 1 - jj
            t = t0 + j
            dys, raw, zz = _channel_loads(pdy, pdt, pz, j, (zeros_d + t) < t_stop, D_MODEL, Z_ROW, HAS_Z, True)
            _raw, dd = _delta(raw, bias, t, t_stop, zeros_d, HAS_BIAS, SOFTPLUS)  # 0 past t_stop
            if HAS_Z:
                dys = dys * zz * sigmoid_fast(zz)
            # C in B's place (C only is needed)
            Ct, _none, keep = _group_loads(
                pC, pC, j, seq_ptr, b64, t, t_stop, L, offs_n, mask_n, zeros_d, G, N, HAS_SEQ, False
            )  # fmt: skip
            dA = exp2_fast(dd[:, None] * A2)
            if HAS_SEQ:
                dA = dA * keep[:, None]
                alive = alive * keep
            lam = dA * (lam + Ct * dys[:, None])
            dsum += dd
    out = (b64 * n_chunks + pid_c) * D_MODEL * N + offs_dn
    tl.store(Lc_ptr + out, lam, mask=mask_dn)
    tl.store(dec_ptr + out, exp2_fast(dsum[:, None] * A2) * alive[:, None], mask=mask_dn)
