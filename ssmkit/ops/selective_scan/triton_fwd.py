"""Selective scan forward in Triton: the recurrence run step by step, one channel per lane, its n states in registers.

One program owns (batch row, chunk of the sequence, BD channels). The state h (BD, NP) never goes to memory per
step; every TT steps it is written as a checkpoint when the backward will need it (one state per tile, laid out
(n, d) so that a warp's stores are d-contiguous).

When b * d / BD programs are too few to fill the GPU (batch 1 at 64K tokens), the sequence is cut into chunks:
  1. `_fwd_seq_kernel` with LOCAL: each chunk runs from a zero state; keeps its end state S_c and its decay
     Dec_c = exp(A sum Delta) (0 if a packed sequence starts inside the chunk),
  2. `_chunk_combine_kernel`: H_in[c+1] = Dec_c H_in[c] + S_c, sequential over chunks (tiny),
  3. `_fwd_seq_kernel`: each chunk runs again from its H_in, writing y, checkpoints and the final state.
With one chunk, only step 3 runs.

Glossary: u <-> x, dt <-> Delta (softplus(dt + dt_bias) when dt_softplus), A2 = A log2(e) (exp2 is the native op).
"""

from __future__ import annotations

import triton
import triton.language as tl

from .._triton_math import exp2_fast, load_f32x4, prefetch_l1, round_bf16, sigmoid_fast, softplus_fast


@triton.jit
def _state_index(NP: tl.constexpr, N: tl.constexpr):
    """(NP,) the states n in the order a thread holds them: pairs of pairs swapped (2, 3, 0, 1, 6, 7, 4, 5, ...)
    when B, C are read as 128-bit quads (QUADS, as in `_group_loads`), else neighbours swapped (1, 0, 3, 2, ...).

    Any order is right (every (..., n) tensor is read and written through this index, and sums over n do not care
    about order); this one hides the contiguity along n from the compiler. Seen contiguous, n was split over 4 lanes
    (16-byte loads), and each step's per-channel inputs crossed to that layout through shared memory and a barrier.
    Now a thread holds all n states of its channel: C_t . h_t and G_t . B_t sum in registers, and the addresses of
    B_t, C_t are constant offsets."""
    QUADS: tl.constexpr = (NP == N) & (NP >= 4)
    if QUADS:
        idx = tl.arange(0, NP) ^ 2
    elif NP > 1:
        idx = tl.arange(0, NP) ^ 1
    else:
        idx = tl.arange(0, NP)
    return idx


@triton.jit
def _lane_order(idx, BD: tl.constexpr):
    """Channel offsets idx (BD,) with neighbours swapped (for BD > 1), used where a (.., n, d) buffer private to the
    kernels is indexed: a warp's lanes then write d-contiguous runs (4 sectors per instruction, not 32), and the
    compiler, seeing no contiguity, keeps the state tile's layout instead of regrouping the lanes. Readers and
    writers agree: each kernel's BD is the largest power of two dividing d / g up to its cap, so BD is 1 in all of
    them or even in all (then blocks start at even channels, and channel c is slot c ^ 1 whatever the block)."""
    if BD > 1:  # noqa: SIM108 (a constexpr branch)
        out = idx ^ 1
    else:
        out = idx
    return out


@triton.jit
def _load_quads(ptrs):
    """(BD, NP) fp32 from the (BD, NP / 4) 128-bit words at ptrs (fp32 pointers, 16-byte aligned), in
    `_state_index`'s order: positions 4 k .. 4 k + 3 hold word k's states 2, 3, 0, 1."""
    q0, q1, q2, q3 = load_f32x4(ptrs)
    quad = tl.join(tl.join(q2, q0), tl.join(q3, q1))  # (BD, NP / 4, 2, 2): [k, a, b] = state 4 k + ((2 a + b) ^ 2)
    return tl.reshape(quad, (quad.shape[0], 4 * quad.shape[1]))


@triton.jit
def _store(ptr, offs, val, mask):
    """Store fp32 `val` in ptr's dtype, rounded to nearest even."""
    if ptr.dtype.element_ty == tl.float32:
        tl.store(ptr + offs, val, mask=mask)
    elif ptr.dtype.element_ty == tl.bfloat16:
        tl.store(ptr + offs, round_bf16(val), mask=mask)
    else:
        tl.store(ptr + offs, val.to(ptr.dtype.element_ty), mask=mask)


@triton.jit
def _chunk_combine_kernel(
    S_ptr, dec_ptr, h0_ptr, hin_ptr, n_chunks,
    DN: tl.constexpr, BLOCK: tl.constexpr, REVERSE: tl.constexpr, HAS_H0: tl.constexpr,
):  # fmt: skip
    """Sequential pass over chunks on flattened (b, nc, d*n) buffers: hin[c] = state; state = dec[c] state + S[c].

    Forward: c = 0..nc-1 from h0 (the initial state). REVERSE (the backward's adjoints): c = nc-1..0 from h0 (the
    gradient of the final state); hin[c] is then the adjoint arriving at the end of chunk c.
    """
    pid = tl.program_id(0)
    b64 = tl.program_id(1).to(tl.int64)
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    mask = offs < DN
    if HAS_H0:
        state = tl.load(h0_ptr + b64 * DN + offs, mask=mask, other=0.0).to(tl.float32)
    else:
        state = tl.zeros((BLOCK,), dtype=tl.float32)
    for i in range(0, n_chunks):
        c = i
        if REVERSE:
            c = n_chunks - 1 - i
        k = (b64 * n_chunks + c) * DN + offs
        tl.store(hin_ptr + k, state, mask=mask)
        state = tl.load(dec_ptr + k, mask=mask, other=0.0) * state + tl.load(S_ptr + k, mask=mask, other=0.0)


@triton.jit
def _fwd_seq_kernel(
    u_ptr, dt_ptr, z_ptr, B_ptr, C_ptr, A_ptr, D_ptr, bias_ptr, seq_ptr, h0_ptr, y_ptr, final_ptr, ckpt_ptr,
    S_ptr, dec_ptr, dy_ptr, lam_ptr, bdec_ptr,
    L, chunk_len, n_chunks, n_tiles, bwd_chunk_len, bwd_n_chunks,
    D_MODEL: tl.constexpr, G: tl.constexpr, N: tl.constexpr, NP: tl.constexpr, BD: tl.constexpr,
    TT: tl.constexpr, H0_MODE: tl.constexpr, Z_ROW: tl.constexpr, HAS_Z: tl.constexpr, HAS_D: tl.constexpr,
    HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, HAS_SEQ: tl.constexpr, WRITE_CKPT: tl.constexpr,
    LOCAL: tl.constexpr, AHEAD: tl.constexpr, BWD_LOCAL: tl.constexpr,
):  # fmt: skip
    """The forward as a plain recurrence: one channel per thread, its n states in registers, TT steps unrolled.

    LOCAL: from a zero state, writing only the chunk's end state S and decay Dec (step 1 above).
    BWD_LOCAL (not with LOCAL; one forward chunk): y's gradient dy (b, l, d) is known already (a backward that
    re-runs this forward), so the backward's per-chunk pieces are formed here, in the same pass as the decays:
    for each backward chunk of bwd_chunk_len steps, lam = sum_t P_t C_t dys_t with P_t = Abar_start ... Abar_t
    (what `_bwd_local_seq_kernel` sums from the chunk's end) and its decay P_end, into lam_ptr, bdec_ptr
    (b, bwd_n_chunks, d, n).
    The state is a (BD, NP) tile, channels along the lanes, so C_t . h_t sums within a thread.
    """
    pid_d = tl.program_id(0)
    pid_c = tl.program_id(1)
    b64 = tl.program_id(2).to(tl.int64)
    offs_d = pid_d * BD + tl.arange(0, BD)
    grp = (pid_d * BD) // (D_MODEL // G)
    offs_n = _state_index(NP, N)
    offs_dn = offs_d[:, None] * N + offs_n[None, :]  # (BD, NP): element (d, n) of a (d, n) state
    mask_dn = offs_n[None, :] < N
    mask_n = offs_n < N
    offs_ck = offs_n[None, :] * D_MODEL + _lane_order(offs_d, BD)[:, None]  # (BD, NP) in a checkpoint (n, d)
    A2 = tl.load(A_ptr + offs_dn, mask=mask_dn, other=0.0).to(tl.float32) * 1.4426950408889634
    if H0_MODE == 1:
        h = tl.load(h0_ptr + b64 * D_MODEL * N + offs_dn, mask=mask_dn, other=0.0).to(tl.float32)
    elif H0_MODE == 2:
        h = tl.load(h0_ptr + (b64 * n_chunks + pid_c) * D_MODEL * N + offs_dn, mask=mask_dn, other=0.0)
    else:
        h = tl.zeros((BD, NP), dtype=tl.float32)
    Dv = tl.zeros((BD,), dtype=tl.float32)
    if HAS_D:
        Dv = tl.load(D_ptr + offs_d).to(tl.float32)
    bias = tl.zeros((BD,), dtype=tl.float32)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + offs_d).to(tl.float32)
    dsum = tl.zeros((BD,), dtype=tl.float32)
    alive = tl.full((BD,), 1.0, tl.float32)
    lam = tl.zeros((BD, NP), dtype=tl.float32)
    decay_run = tl.full((BD, NP), 1.0, tl.float32)
    t_start = pid_c * chunk_len
    t_stop = tl.minimum(t_start + chunk_len, L)
    zeros_d = tl.zeros((BD,), dtype=tl.int32)
    # Loads run ahead of their step: u, dt, z (streamed from memory) AHEAD steps, B, C (shared by the block, from
    # L1/L2) one step; issued before the previous step's store to y, which may alias the inputs as far as the
    # compiler knows, so it would not move them early by itself. Tuples hold the steps in flight, oldest first.
    # Addresses are per tile: a step's are the tile's plus a constant (an immediate offset in the load instruction).
    pu, pdt, pz, py, pB, pC = _tile_pointers(
        u_ptr, dt_ptr, z_ptr, y_ptr, B_ptr, C_ptr, b64, t_start, L, offs_d, grp, D_MODEL, Z_ROW, G, N, TT
    )  # fmt: skip
    ring_u, ring_dt, ring_z = (), (), ()
    for k in tl.static_range(AHEAD):
        uu_k, raw_k, zz_k = _channel_loads(
            pu, pdt, pz, k, zeros_d + t_start + k < t_stop, D_MODEL, Z_ROW, HAS_Z, not LOCAL
        )  # fmt: skip
        ring_u, ring_dt, ring_z = ring_u + (uu_k,), ring_dt + (raw_k,), ring_z + (zz_k,)  # noqa: RUF005
    ring_dy = ()
    if BWD_LOCAL:
        pdy = dy_ptr + (b64 * L + t_start) * D_MODEL + offs_d
        for k in tl.static_range(AHEAD):
            dy_k = tl.load(pdy + k * D_MODEL, mask=zeros_d + t_start + k < t_stop, other=0.0).to(tl.float32)
            ring_dy = ring_dy + (dy_k,)  # noqa: RUF005
    Bt_n, Ct_n, keep_n = _group_loads(
        pB, pC, 0, seq_ptr, b64, t_start, t_stop, L, offs_n, mask_n, zeros_d, G, N, HAS_SEQ, not LOCAL,
    )  # fmt: skip
    bc_rows = _bc_rows(BD, TT, G, N)
    for t0 in range(t_start, t_stop, TT):
        pu, pdt, pz, py, pB, pC = _tile_pointers(
            u_ptr, dt_ptr, z_ptr, y_ptr, B_ptr, C_ptr, b64, t0, L, offs_d, grp, D_MODEL, Z_ROW, G, N, TT
        )  # fmt: skip
        if t0 + TT < t_stop:  # the next tile's inputs, on their way to L1 while this tile runs
            for j in tl.static_range(TT):
                row = b64 * L + tl.minimum(t0 + TT + j, t_stop - 1)  # rows past the chunk: its last (in bounds)
                prefetch_l1(u_ptr + row * D_MODEL + offs_d)
                prefetch_l1(dt_ptr + row * D_MODEL + offs_d)
                if HAS_Z and not LOCAL:
                    prefetch_l1(z_ptr + row * Z_ROW + offs_d)
                if BWD_LOCAL:
                    prefetch_l1(dy_ptr + row * D_MODEL + offs_d)
            # B, C rows of the next tile (each row's first line), one row per lane: in the padded rows (in bounds)
            prefetch_l1(pB + TT * G * N + bc_rows)
            if not LOCAL:
                prefetch_l1(pC + TT * G * N + bc_rows)
        if WRITE_CKPT:
            tl.store(ckpt_ptr + (b64 * n_tiles + t0 // TT) * N * D_MODEL + offs_ck, h, mask=mask_dn)
        if BWD_LOCAL:
            pdy = dy_ptr + (b64 * L + t0) * D_MODEL + offs_d
        for j in tl.static_range(TT):
            t = t0 + j
            uu, raw, zz = ring_u[0], ring_dt[0], ring_z[0]
            Bt, Ct, keep = Bt_n, Ct_n, keep_n
            uu_k, raw_k, zz_k = _channel_loads(
                pu, pdt, pz, j + AHEAD, zeros_d + t + AHEAD < t_stop, D_MODEL, Z_ROW, HAS_Z, not LOCAL
            )  # fmt: skip
            ring_u, ring_dt, ring_z = ring_u[1:] + (uu_k,), ring_dt[1:] + (raw_k,), ring_z[1:] + (zz_k,)  # noqa: RUF005
            if BWD_LOCAL:
                dyy = ring_dy[0]
                dy_k = tl.load(pdy + (j + AHEAD) * D_MODEL, mask=zeros_d + t + AHEAD < t_stop, other=0.0).to(tl.float32)
                ring_dy = ring_dy[1:] + (dy_k,)  # noqa: RUF005
            Bt_n, Ct_n, keep_n = _group_loads(
                pB, pC, j + 1, seq_ptr, b64, t + 1, t_stop, L, offs_n, mask_n, zeros_d, G, N, HAS_SEQ, not LOCAL,
            )  # fmt: skip
            _, dd = _delta(raw, bias, t, t_stop, zeros_d, HAS_BIAS, SOFTPLUS)
            dA = exp2_fast(dd[:, None] * A2)  # (BD, NP)
            if HAS_SEQ:
                dA = dA * keep[:, None]
                alive = alive * keep
            h = dA * h + Bt * (dd * uu)[:, None]
            if LOCAL:
                dsum += dd
            else:
                yy = tl.sum(h * Ct, axis=1)  # (BD,): within each thread
                if HAS_D:
                    yy += Dv * uu
                gate = tl.full((BD,), 1.0, tl.float32)
                if HAS_Z:
                    gate = zz * sigmoid_fast(zz)
                    yy *= gate
                _store(py, j * D_MODEL, yy, (zeros_d + t) < t_stop)
                if BWD_LOCAL:  # past t_stop dy is 0 and Abar 1: nothing changes
                    decay_run = decay_run * dA
                    lam += decay_run * (Ct * (dyy * gate)[:, None])
        if BWD_LOCAL:
            t_end = t0 + TT
            if (t_end % bwd_chunk_len == 0) | (t_end >= t_stop):
                out = (b64 * bwd_n_chunks + t0 // bwd_chunk_len) * D_MODEL * N + offs_dn
                tl.store(lam_ptr + out, lam, mask=mask_dn)
                tl.store(bdec_ptr + out, decay_run, mask=mask_dn)
                lam = tl.zeros((BD, NP), dtype=tl.float32)
                decay_run = tl.full((BD, NP), 1.0, tl.float32)
    if LOCAL:
        out = (b64 * n_chunks + pid_c) * D_MODEL * N + offs_dn
        tl.store(S_ptr + out, h, mask=mask_dn)
        tl.store(dec_ptr + out, exp2_fast(dsum[:, None] * A2) * alive[:, None], mask=mask_dn)
    else:
        if pid_c == n_chunks - 1:
            tl.store(final_ptr + b64 * D_MODEL * N + offs_dn, h, mask=mask_dn)


@triton.jit
def _tile_pointers(
    u_ptr, dt_ptr, z_ptr, y_ptr, B_ptr, C_ptr, b64, t0, L, offs_d, grp,
    D_MODEL: tl.constexpr, Z_ROW: tl.constexpr, G: tl.constexpr, N: tl.constexpr, TT: tl.constexpr,
):  # fmt: skip
    """Step t0's addresses: u, dt, z, y (BD,) at each channel; B, C (scalars) at the group's row, in rows of
    (L + TT) per batch (the caller pads each batch's B, C with TT zero rows: steps past L read those, no clamp)."""
    row = b64 * L + t0
    pu = u_ptr + row * D_MODEL + offs_d
    pdt = dt_ptr + row * D_MODEL + offs_d
    pz = z_ptr + row * Z_ROW + offs_d
    py = y_ptr + row * D_MODEL + offs_d
    bc_row = ((row + b64 * TT) * G + grp) * N
    return pu, pdt, pz, py, B_ptr + bc_row, C_ptr + bc_row


@triton.jit
def _bc_rows(BD: tl.constexpr, TT: tl.constexpr, G: tl.constexpr, N: tl.constexpr):
    """(BD,) offsets of a tile's B, C rows from its first (lane i: row i % TT), for one-instruction prefetches."""
    return (tl.arange(0, BD) % TT) * (G * N)


@triton.jit
def _channel_loads(
    pu, pdt, pz, k, ok, D_MODEL: tl.constexpr, Z_ROW: tl.constexpr, HAS_Z: tl.constexpr,
    LOAD_Z: tl.constexpr,
):  # fmt: skip
    """u, raw dt and z (z only with HAS_Z and LOAD_Z, else zeros) k steps after the tile pointers', (BD,) fp32;
    0 where not ok (BD,) (past the chunk)."""
    uu = tl.load(pu + k * D_MODEL, mask=ok, other=0.0).to(tl.float32)
    raw = tl.load(pdt + k * D_MODEL, mask=ok, other=0.0).to(tl.float32)
    zz = tl.zeros_like(uu)
    if HAS_Z and LOAD_Z:
        zz = tl.load(pz + k * Z_ROW, mask=ok, other=0.0).to(tl.float32)
    return uu, raw, zz


@triton.jit
def _group_loads(
    pB, pC, k, seq_ptr, b64, t, t_stop, L, offs_n, mask_n, zeros_d,
    G: tl.constexpr, N: tl.constexpr, HAS_SEQ: tl.constexpr, LOAD_C: tl.constexpr,
):  # fmt: skip
    """Step t's B, C (BD, NP) fp32, each channel's copy (C only with LOAD_C, else zeros), and keep (BD,): 1.0, or
    0.0 where seq_idx changes at t > 0. pB, pC point at the tile's row of the group, and step t is k rows on. B, C
    (b, L + TT, g, n) are fp32 (converted and padded once by the caller): no conversions in the loop. They are fresh
    buffers, so with QUADS every row of N >= 4 states starts 16-byte aligned, as a 128-bit load needs. Every thread
    loads its own B, C (one address per state across the warp: a broadcast), so they arrive in the state's layout.
    Past t_stop they are the next rows' (zeros past L), and keep is 1: Delta is 0 there (`_delta`), so the step
    leaves the state unchanged, and nothing is stored."""
    NP: tl.constexpr = offs_n.shape[0]
    # B_t, C_t as NP / 4 128-bit words (four fp32 states each: a quarter of the load instructions). A constexpr, so
    # that only the branch taken is compiled (NP / 4 is 0 below 4 states: n = 1, 2 failed to compile on the GPU)
    QUADS: tl.constexpr = (NP == N) & (NP >= 4)
    if QUADS:
        words = k * G * N + zeros_d[:, None] + 4 * tl.arange(0, NP // 4)[None, :]  # (BD, NP / 4): word k at 4 k
        Bt = _load_quads(pB + words)
        Ct = tl.zeros_like(Bt)
        if LOAD_C:
            Ct = _load_quads(pC + words)
    else:
        offs = k * G * N + zeros_d[:, None] + offs_n[None, :]  # (BD, NP)
        Bt = tl.load(pB + offs, mask=mask_n[None, :], other=0.0)
        Ct = tl.zeros_like(Bt)
        if LOAD_C:
            Ct = tl.load(pC + offs, mask=mask_n[None, :], other=0.0)
    keep = tl.zeros((zeros_d.shape[0],), dtype=tl.float32) + 1.0
    if HAS_SEQ:
        ok_d = (zeros_d + t) < t_stop  # (BD,)
        row = b64 * L + t
        cur = tl.load(seq_ptr + row + zeros_d, mask=ok_d, other=0)
        prev = tl.load(seq_ptr + row - 1 + zeros_d, mask=ok_d & (zeros_d + t > 0), other=0)
        keep = tl.where((cur == prev) | (zeros_d + t == 0) | (~ok_d), 1.0, 0.0)  # (BD,)
    return Bt, Ct, keep


@triton.jit
def _delta(raw, bias, t, t_stop, zeros_d, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr):
    """raw dt (BD,) -> (raw + bias, Delta = softplus of that when SOFTPLUS, 0 past t_stop)."""
    if HAS_BIAS:
        raw += bias
    dd = raw
    if SOFTPLUS:
        dd = softplus_fast(raw)
    return raw, tl.where((zeros_d + t) < t_stop, dd, 0.0)
