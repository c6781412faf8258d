"""Triton path of `selective_scan`: launches the forward and backward kernels and ties them into autograd.

Memory: besides the inputs, the forward keeps one fp32 (d, n) state per tile of TT steps for the backward
(b * l / TT * d * n * 4 bytes: 1 GiB at 64K tokens, d = 4096, n = 16, TT = 16) and never a (b, l, d, n) tensor;
the backward adds the dB, dC sums (b, l, g, 2, n) fp32 (per block of channels, (b, l, d / BD_BWD, 2, n), under
torch.use_deterministic_algorithms). B and C are read as fp32 copies with TT zero rows after each batch's sequence.
z may be a view with evenly spaced rows (xz[..., d:]): it is not copied.
Chunking (how many pieces the sequence is cut into) depends only on how many programs b * d / BD already gives.
"""

from __future__ import annotations

import torch
import triton

from .triton_bwd import _bwd_local_seq_kernel, _bwd_seq_kernel
from .triton_fwd import _chunk_combine_kernel, _fwd_seq_kernel

# settable by benchmarks. TT: steps between the forward's checkpoints (the backward's tile).
TT = 16
# forward: BD_FWD channels per program, one per thread (the n states of a channel in its registers)
BD_FWD = 128
# forward: how many steps ahead of their use u, dt and z are loaded (B, C: one step). H200, W1 fwd at L = 1K / 8K /
# 64K: 3.70 / 5.99 / 6.00 ms at 1, 3.67 / 5.93 / 5.93 at 2, 3.43 / 5.59 / 5.61 at 4, 4.46 / 6.45 / 6.47 at 8
# With the next tile's inputs prefetched into L2 (both kernels; W1 fwd at 1K / 16K / 64K 2.14 / 3.61 / 3.63 ms
# without, fwd+bwd at 1K / 64K 13.22 / 16.99 without): 2.00 / 3.51 / 3.54 at 2, 1.96 / 3.55 / 3.58 at 4, 2.03 / 3.63 /
# 3.65 at 6. Now into L1 (`prefetch_l1`), with the next tile's B, C rows too (W1 fwd 2.04 -> 1.94 ms at 1K, 3.46 ->
# 2.61 at b 8, L 8K; the B, C loads one step ahead had waited on L2); the per-channel rows alone: no change.
AHEAD = 4
# forward: register cap (ptxas -maxnreg) for n <= 16, the size it was measured at; larger states are left to the
# compiler. At n = 16 the (BD, NP) state tile, the loads in flight and the tile's addresses fit in 128 registers
# without spilling, so 4 blocks of 4 warps share an SM (146 uncapped: W1 fwd 2.84 against 2.05 ms at 1K). A grid of
# at most FWD_FEW_BLOCKS_PER_SM blocks per SM is resident at FWD_MAXNREG_FEW as well, and runs faster with the room
# (W1 fwd at b 8, L 8K, 256 blocks: 2.60 ms at 128, 2.27 at 168; at 1K, 2,048 blocks: 1.93 at 128, 1.96 at 168).
FWD_MAXNREG = 128
FWD_MAXNREG_FEW = 168
# the forward that also forms the backward's chunk pieces (grad_hint) holds two more (BD, NP) tiles; it runs with
# 256-511 programs (one pass forward, chunked backward), about 2-3 blocks per SM whatever the cap. H200, W6 fused
# Mamba block (256 programs), two rounds: 31.16 / 30.80 ms at 168, 31.06 / 30.51 at 208, 30.43 / 30.52 at 255
FWD_MAXNREG_BWD_LOCAL = 255
FWD_FEW_BLOCKS_PER_SM = 3
# backward: one warp of BD_BWD <= 32 channels per program (dB, dC are summed within the warp), the states recomputed
# in sub-tiles of SUB steps in registers. Session 5's kernel, H200, W1 fwd+bwd at L = 1K / 64K: SUB 4: 21.8 / 25.8 ms,
# SUB 2: 28.0 / 30.5; capping its 240 registers (ptxas -maxnreg 200 / 184 / 168) for more warps per SM: 22.1 / 22.5
# / 20.9 ms at 1K, 25.9 / 26.3 / 25.3 at 64K, against 21.8 / 25.3 uncapped: left to the compiler.
BD_BWD = 32
SUB = 4
# Chunking. Forward: one pass (no chunks) while b * d / BD_FWD gives at least FWD_UNCHUNKED_PROGRAMS programs, else
# chunks until FWD_TARGET_PROGRAMS: chunks cost a second pass over the sequence. H200 (132 SMs, 4 programs of
# 4 warps each at 128 registers), W1 fwd at 8de2ebb: L = 4K, b = 16 (512 programs) 2.07 ms in one pass against
# 3.65 in chunks; L = 8K (256) 3.33 against 3.65; L = 16K (128) 6.22 against 3.64. Backward: chunks until
# BWD_TARGET_PROGRAMS (W1 fwd+bwd with the sub-tile loads issued together, L = 8K / 64K: 16.82 / 16.79 ms at 8,192,
# 17.01 / 16.94 at 4,096, 17.28 / 17.23 at 2,048; W6 Mamba fused 35.66 / 36.03 / 36.18). 4,096 stays: at 8,192 W6's
# Mamba block peaks at 6.02 GiB, over mamba_ssm's 5.98 (5.96 at 4,096); freeing the local pass's two buffers right
# after the combine did not lower that peak (bdb9f74's tree), so what grows with the chunks there is not known yet.
# From BWD_UNCHUNKED_PROGRAMS programs on the backward runs in one pass: W1 fwd+bwd at L = 4K (b 16, 2,048 programs)
# 11.44 ms in one pass against 12.99-13.08 in two chunks (H200, f7d0727's kernels); at b 8, L 8K (1,024 programs)
# two chunks are slower than four (13.61 against 13.07), so the target above stays below it.
FWD_UNCHUNKED_PROGRAMS = 256
FWD_TARGET_PROGRAMS = 2048
BWD_UNCHUNKED_PROGRAMS = 2048
BWD_TARGET_PROGRAMS = 4096
COMBINE_BLOCK = 256


def _empty(*shape, dtype, device):
    """Every output buffer comes from here (tests replace it with a NaN fill to catch unwritten elements)."""
    return torch.empty(*shape, dtype=dtype, device=device)


def _fwd_maxnreg(programs: int, device: torch.device) -> int:
    """The forward's register cap for a grid of `programs` blocks (see FWD_MAXNREG); the interpreter ignores it."""
    if device.type != "cuda":
        return FWD_MAXNREG
    sms = torch.cuda.get_device_properties(device).multi_processor_count
    return FWD_MAXNREG_FEW if programs <= FWD_FEW_BLOCKS_PER_SM * sms else FWD_MAXNREG


def _block_d(e: int, cap: int) -> int:
    """Largest power of two <= cap dividing e (channels per group), so a block reads one group of B and C."""
    bd = 1
    while bd * 2 <= cap and e % (bd * 2) == 0:
        bd *= 2
    return bd


def _padded_fp32(x: torch.Tensor) -> torch.Tensor:
    """B or C (b, l, g, n) as fp32 (b, l + TT, g, n), TT zero rows after each batch's sequence: the forward's tiles
    read a step's B, C at constant offsets from the tile's row, up to TT rows past the chunk's end (b * l * g * n
    elements: small)."""
    b, l, g, n = x.shape
    out = torch.zeros(b, l + TT, g, n, dtype=torch.float32, device=x.device)
    out[:, :l] = x
    return out


def _chunking(b: int, l: int, blocks: int, target_programs: int) -> tuple[int, int]:
    """(chunk_len, n_chunks): chunk_len a multiple of TT, as few chunks as give target_programs programs."""
    tiles = triton.cdiv(l, TT)
    want = max(1, min(tiles, triton.cdiv(target_programs, b * blocks)))
    chunk_tiles = triton.cdiv(tiles, want)
    return chunk_tiles * TT, triton.cdiv(tiles, chunk_tiles)


def _flags(D, z, dt_bias, seq_idx, dt_softplus):
    return dict(
        Z_ROW=z.stride(1) if z is not None else 0,
        HAS_Z=z is not None,
        HAS_BIAS=dt_bias is not None,
        SOFTPLUS=bool(dt_softplus),
        HAS_SEQ=seq_idx is not None,
    ), D is not None


def _bwd_chunking(b: int, l: int, d: int, g: int) -> tuple[int, int]:
    """(chunk_len, n_chunks) of the backward (`scan_bwd`)."""
    blocks = d // _block_d(d // g, BD_BWD)
    target = 1 if b * blocks >= BWD_UNCHUNKED_PROGRAMS else BWD_TARGET_PROGRAMS
    return _chunking(b, l, blocks, target)


def scan_fwd(u, dt, A, B, C, D, z, dt_bias, dt_softplus, initial_state, seq_idx, need_ckpt, grad_hint=None):
    """Returns (y (b, l, d) in u's dtype, final state (b, d, n) fp32, checkpoints (b, tiles, n, d) fp32 or None,
    the backward's per-chunk pieces or None).

    grad_hint (b, l, d): y's gradient, when the caller knows it before this forward (a backward that re-runs it).
    If the forward runs in one pass and the backward will cut the sequence into chunks, the backward's local pass
    is then done here (`_fwd_seq_kernel` BWD_LOCAL): (lam, decay) (b, chunks, d, n) fp32 for `scan_bwd`."""
    b, l, d = u.shape
    g, n = B.shape[2], B.shape[3]
    B32, C32 = _padded_fp32(B), _padded_fp32(C)
    BD = _block_d(d // g, BD_FWD)
    blocks = d // BD
    target = 1 if b * blocks >= FWD_UNCHUNKED_PROGRAMS else FWD_TARGET_PROGRAMS
    chunk_len, nc = _chunking(b, l, blocks, target)
    n_tiles = triton.cdiv(l, TT)
    dev = u.device
    flags, has_D = _flags(D, z, dt_bias, seq_idx, dt_softplus)
    dummy = u  # stands for absent optional pointers (never read: their flags are off)
    seq = seq_idx if seq_idx is not None else dummy
    bias = dt_bias if dt_bias is not None else dummy
    zp = z if z is not None else dummy
    Dp = D if has_D else dummy
    y = _empty(b, l, d, dtype=u.dtype, device=dev)
    final = _empty(b, d, n, dtype=torch.float32, device=dev)
    ckpt = _empty(b, n_tiles, n, d, dtype=torch.float32, device=dev) if need_ckpt else final  # (n, d): coalesced
    local, bwd_len, bwd_nc = None, 1, 1  # (1, 1) unused: no compile variants of the plain forward from them
    if grad_hint is not None and nc == 1:
        bwd_len, bwd_nc = _bwd_chunking(b, l, d, g)
        if bwd_nc > 1:
            local = tuple(_empty(b, bwd_nc, d, n, dtype=torch.float32, device=dev) for _ in range(2))
    grid = (blocks, nc, b)
    common = dict(
        D_MODEL=d, G=g, N=n, NP=triton.next_power_of_2(n), BD=BD, TT=TT, AHEAD=AHEAD, HAS_D=has_D, **flags,
        num_warps=max(1, min(8, BD // 32)),
        **({"maxnreg": _fwd_maxnreg(blocks * nc * b, dev)} if n <= 16 else {}),
    )  # fmt: skip
    if nc == 1:
        start, h0_mode = (initial_state, 1) if initial_state is not None else (final, 0)
    else:
        S = _empty(b, nc, d, n, dtype=torch.float32, device=dev)
        dec = _empty(b, nc, d, n, dtype=torch.float32, device=dev)
        _fwd_seq_kernel[grid](
            u, dt, zp, B32, C32, A, Dp, bias, seq, final, y, final, final, S, dec, u, final, final,
            l, chunk_len, nc, n_tiles, 1, 1, **common, H0_MODE=0, WRITE_CKPT=False, LOCAL=True, BWD_LOCAL=False,
        )  # fmt: skip
        start = _empty(b, nc, d, n, dtype=torch.float32, device=dev)
        _combine(S, dec, initial_state, start, b, nc, d * n, reverse=False)
        h0_mode = 2
    lam, bdec = local if local is not None else (final, final)
    if local is not None and "maxnreg" in common:
        common["maxnreg"] = max(common["maxnreg"], FWD_MAXNREG_BWD_LOCAL)
    _fwd_seq_kernel[grid](
        u, dt, zp, B32, C32, A, Dp, bias, seq, start, y, final, ckpt, final, final,
        grad_hint if local is not None else u, lam, bdec, l, chunk_len, nc, n_tiles, bwd_len, bwd_nc,
        **common, H0_MODE=h0_mode, WRITE_CKPT=need_ckpt, LOCAL=False, BWD_LOCAL=local is not None,
    )  # fmt: skip
    return y, final, (ckpt if need_ckpt else None), local


def _combine(S, dec, h0, out, b, nc, dn, reverse):
    grid = (triton.cdiv(dn, COMBINE_BLOCK), b)
    _chunk_combine_kernel[grid](
        S, dec, h0 if h0 is not None else S, out, nc,
        DN=dn, BLOCK=COMBINE_BLOCK, REVERSE=reverse, HAS_H0=h0 is not None,
    )  # fmt: skip


def scan_bwd(u, dt, A, B, C, D, z, dt_bias, dt_softplus, seq_idx, ckpt, dy, dfinal, need_dh0, local=None):
    """Gradients (du, ddt, dA, dB, dC, dD, dz, ddt_bias, dinitial_state); None where the input is absent.
    local: the per-chunk pieces `scan_fwd` formed from this dy (grad_hint), or None: the local pass runs here."""
    b, l, d = u.shape
    g, n = B.shape[2], B.shape[3]
    B32, C32 = _padded_fp32(B), _padded_fp32(C)
    NP = triton.next_power_of_2(n)
    BD = _block_d(d // g, BD_BWD)
    blocks = d // BD
    chunk_len, nc = _bwd_chunking(b, l, d, g)
    n_tiles = triton.cdiv(l, TT)
    dev = u.device
    f32 = torch.float32
    flags, has_D = _flags(D, z, dt_bias, seq_idx, dt_softplus)
    dims = dict(D_MODEL=d, G=g, N=n, NP=NP, BD=BD)
    warps = max(1, BD // 32)
    dummy = u
    seq = seq_idx if seq_idx is not None else dummy
    bias = dt_bias if dt_bias is not None else dummy
    zp = z if z is not None else dummy
    grid = (blocks, nc, b)
    if nc == 1:
        carry, carry_mode = (dfinal, 1) if dfinal is not None else (dummy, 0)
    else:
        if local is not None:
            Lc, dec = local
        else:
            Lc = _empty(b, nc, d, n, dtype=f32, device=dev)
            dec = _empty(b, nc, d, n, dtype=f32, device=dev)
            _bwd_local_seq_kernel[grid](
                dt, zp, C32, A, bias, seq, dy, Lc, dec, l, chunk_len, nc,
                **dims, TT=TT, **flags, num_warps=warps,
            )  # fmt: skip
        carry = _empty(b, nc, d, n, dtype=f32, device=dev)
        _combine(Lc, dec, dfinal, carry, b, nc, d * n, reverse=True)
        carry_mode = 2
    du = _empty(b, l, d, dtype=u.dtype, device=dev)
    ddt = _empty(b, l, d, dtype=dt.dtype, device=dev)
    dz = _empty(b, l, d, dtype=z.dtype, device=dev) if z is not None else dummy
    atomic = not torch.are_deterministic_algorithms_enabled()
    if atomic:  # summed over channel blocks in the kernel
        dBC = torch.zeros(b, l, g, 2, n, dtype=f32, device=dev)
    else:  # one partial per channel block, summed below in a fixed order
        dBC = _empty(b, l, blocks, 2, n, dtype=f32, device=dev)
    dA_part = _empty(b, nc, d, n, dtype=f32, device=dev)
    dD_part = _empty(b, nc, d, dtype=f32, device=dev) if has_D else dummy
    dbias_part = _empty(b, nc, d, dtype=f32, device=dev) if dt_bias is not None else dummy
    dh0 = _empty(b, d, n, dtype=f32, device=dev) if need_dh0 else dummy
    scratch = torch.empty(b * nc * blocks * (TT // SUB) * BD * NP, dtype=f32, device=dev)
    _bwd_seq_kernel[grid](
        u, dt, zp, B32, C32, A, D if has_D else dummy, bias, seq, ckpt, dy, carry, scratch,
        du, ddt, dz, dBC, dA_part, dD_part, dbias_part, dh0,
        l, chunk_len, nc, n_tiles,
        **dims, TT=TT, SUB=SUB, CARRY_MODE=carry_mode, HAS_D=has_D, **flags, WRITE_DH0=need_dh0,
        ATOMIC_BC=atomic, num_warps=warps,
    )  # fmt: skip
    if not atomic:
        dBC = dBC.view(b, l, g, blocks // g, 2, n).sum(3)
    dB = dBC[:, :, :, 0].to(B.dtype, memory_format=torch.contiguous_format)
    dC = dBC[:, :, :, 1].to(C.dtype, memory_format=torch.contiguous_format)
    dA = dA_part.sum((0, 1)).to(A.dtype)
    dD = dD_part.sum((0, 1)).to(D.dtype) if has_D else None
    dbias = dbias_part.sum((0, 1)).to(dt_bias.dtype) if dt_bias is not None else None
    return (
        du, ddt, dA, dB, dC, dD, dz if z is not None else None, dbias,
        dh0 if need_dh0 else None,
    )  # fmt: skip


class _SelectiveScanFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, dt, A, B, C, D, z, dt_bias, initial_state, seq_idx, dt_softplus, grad_hint):
        need = ctx.needs_input_grad
        need_ckpt = any(need[:9])
        hint = grad_hint if need_ckpt else None
        y, final, ckpt, local = scan_fwd(
            u, dt, A, B, C, D, z, dt_bias, dt_softplus, initial_state, seq_idx, need_ckpt, hint
        )  # fmt: skip
        if need_ckpt:
            ctx.save_for_backward(u, dt, A, B, C, D, z, dt_bias, seq_idx, ckpt)
            ctx.dt_softplus = dt_softplus
            ctx.has_h0 = initial_state is not None
            # the pieces hold only for this very gradient: the backward checks it gets the hint, unchanged
            ctx.local = local
            ctx.hint = _identity(hint) if local is not None else None
        ctx.set_materialize_grads(False)
        return y, final

    @staticmethod
    def backward(ctx, dy, dfinal):
        u, dt, A, B, C, D, z, dt_bias, seq_idx, ckpt = ctx.saved_tensors
        if dy is None:
            dy = torch.zeros_like(u)
        dy = dy.contiguous()
        dfinal = None if dfinal is None else dfinal.contiguous()
        need_dh0 = ctx.has_h0 and ctx.needs_input_grad[8]
        local = ctx.local if ctx.hint is not None and _identity(dy) == ctx.hint else None
        grads = scan_bwd(u, dt, A, B, C, D, z, dt_bias, ctx.dt_softplus, seq_idx, ckpt, dy, dfinal, need_dh0, local)
        du, ddt, dA, dB, dC, dD, dz, dbias, dh0 = grads
        return du, ddt, dA, dB, dC, dD, dz, dbias, dh0, None, None, None


def _identity(t: torch.Tensor) -> tuple:
    """Where t's values live and their version: equal for the same, unmodified tensor (or a view of it alike)."""
    return t.data_ptr(), t._version, tuple(t.shape), t.stride(), t.dtype


def _contiguous(t):
    return None if t is None else t.contiguous()


def _rows(z):
    """z as it is when its rows are evenly spaced with contiguous channels (z = xz[..., d:], a view of in_proj's
    output, is not copied: the kernels take z's row stride), else a contiguous copy."""
    if z is None or (z.stride(2) == 1 and z.stride(0) == z.shape[1] * z.stride(1)):
        return z
    return z.contiguous()


def selective_scan_triton(u, dt, A, B, C, D, z, dt_bias, dt_softplus, initial_state, seq_idx, grad_hint=None):
    """Same arguments and results as `selective_scan_ref`: (y in u's dtype, final state (b, d, n) fp32).
    grad_hint: y's gradient, known before the forward (see `scan_fwd`); a contiguous (b, l, d) tensor or None."""
    u, dt, A, B, C, D, dt_bias, initial_state, seq_idx = [
        _contiguous(t) for t in (u, dt, A, B, C, D, dt_bias, initial_state, seq_idx)
    ]
    if grad_hint is not None and (grad_hint.shape != u.shape or not grad_hint.is_contiguous()):
        raise ValueError(f"grad_hint: expected a contiguous tensor of y's shape {tuple(u.shape)}")
    return _SelectiveScanFn.apply(
        u, dt, A, B, C, D, _rows(z), dt_bias, initial_state, seq_idx, bool(dt_softplus), grad_hint
    )  # fmt: skip
