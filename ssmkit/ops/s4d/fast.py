"""Pure-PyTorch fast path for S4D's convolution mode (CPU and GPU).

- The kernel is a Vandermonde product computed a chunk of lengths at a time: one (d, n, chunk) block of powers
  exp(Delta A j), j < chunk, is reused for every chunk, scaled by A_bar^{k0} = exp(Delta A k0) per chunk.
  Powers are exp(Delta A k) with the exponent formed in fp64 and only the result rounded to the compute dtype:
  an fp32 exponent carries an absolute phase error of k |Delta A| eps (5e-6 rad at k = 256, Delta A ~ 0.3 i),
  which the gradients of Delta and A amplify by k; in fp64 they come out some 20x more accurate (at l = 257)
  than the fp32 recurrence's. The fp64 part is one (d, n, chunk) block and (d, n) scales.
- The convolution is an rFFT of size >= 2l (zero padding keeps it causal, not circular).
- A nonzero initial state adds 2 Re(C . A_bar^{t+1} h_{-1}) to y_t, and the final state is
  A_bar^l h_{-1} + sum_t A_bar^{l-1-t} B_bar u_t: both Vandermonde products, chunked the same way.
- Packed sequences (seq_idx) are gathered into one padded row each, convolved, and scattered back.
"""

from __future__ import annotations

import torch

from .reference import discretize_zoh, precision

# complex elements in one (d, n, chunk) block of powers: 2^20 complex64 = 8 MiB
BLOCK_ELEMENTS = 1 << 20


def _chunk(d: int, n: int, length: int) -> int:
    return max(1, min(length, BLOCK_ELEMENTS // max(1, d * n)))


def _log_A_bar(dt: torch.Tensor, A: torch.Tensor) -> torch.Tensor:
    return dt.to(torch.float64).unsqueeze(-1) * A.to(torch.complex128)  # (d, n): Delta A, in fp64


def _powers(dtA: torch.Tensor, exponents: torch.Tensor, cdt: torch.dtype) -> torch.Tensor:
    """A_bar^e = exp(Delta A e) for each integer e: (d, n, len(e)) in cdt, the exponent formed in fp64."""
    return torch.exp(dtA.unsqueeze(-1) * exponents).to(cdt)


def _power(dtA: torch.Tensor, e: int, cdt: torch.dtype) -> torch.Tensor:
    return torch.exp(dtA * e).to(cdt)  # (d, n): A_bar^e


def s4d_kernel_torch(dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor, length: int) -> torch.Tensor:
    rdt, cdt = precision(dt, A, B, C)
    d, n = A.shape
    dtA = _log_A_bar(dt, A)
    _, B_bar = discretize_zoh(dt, A, B)
    CB = C.to(cdt) * B_bar  # (d, n)
    c = _chunk(d, n, length)
    powers = _powers(dtA, torch.arange(c, device=dt.device), cdt)  # (d, n, c): A_bar^j
    pieces = []
    for k0 in range(0, length, c):
        ck = min(c, length - k0)
        scaled = (CB * _power(dtA, k0, cdt)).unsqueeze(1)  # (d, 1, n): C B_bar A_bar^{k0}
        pieces.append(2 * torch.bmm(scaled, powers[..., :ck]).squeeze(1).real)  # (d, ck)
    return torch.cat(pieces, dim=-1).to(rdt)  # (d, length)


def fft_conv(u: torch.Tensor, K: torch.Tensor, D: torch.Tensor | None) -> torch.Tensor:
    rdt, _ = precision(u, K, D)
    l = u.shape[1]
    size = 1 << (2 * l - 1).bit_length()  # a power of two >= 2l
    U = torch.fft.rfft(u.to(rdt), n=size, dim=1)  # (b, size/2+1, d)
    Kf = torch.fft.rfft(K.to(rdt), n=size, dim=-1).transpose(0, 1)  # (size/2+1, d)
    y = torch.fft.irfft(U * Kf, n=size, dim=1)[:, :l]  # (b, l, d)
    if D is not None:
        y = y + D.to(rdt) * u.to(rdt)
    return y.to(u.dtype)


def state_output(
    initial_state: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, C: torch.Tensor, length: int
) -> torch.Tensor:
    """y_t = 2 Re(sum_n C_n A_bar_n^{t+1} h_n) for t < length: (b, length, d), in the real compute dtype."""
    rdt, cdt = precision(initial_state, dt, A, C)
    d, n = A.shape
    dtA = _log_A_bar(dt, A)
    Ch = (C.to(cdt) * initial_state.to(cdt)).transpose(0, 1)  # (d, b, n)
    c = _chunk(d, n, length)
    powers = _powers(dtA, torch.arange(1, c + 1, device=dt.device), cdt)  # (d, n, c): A_bar^{j+1}
    pieces = []
    for t0 in range(0, length, c):
        ck = min(c, length - t0)
        scaled = Ch * _power(dtA, t0, cdt).unsqueeze(1)  # (d, b, n)
        pieces.append(2 * torch.bmm(scaled, powers[..., :ck]).real)  # (d, b, ck)
    return torch.cat(pieces, dim=-1).permute(1, 2, 0).to(rdt)  # (b, length, d)


def final_state(
    u: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor, initial_state: torch.Tensor | None
) -> torch.Tensor:
    """h_{l-1} = A_bar^l h_{-1} + sum_t A_bar^{l-1-t} B_bar u_t: (b, d, n) complex."""
    _, cdt = precision(u, dt, A, B, initial_state)
    _, l, _ = u.shape
    d, n = A.shape
    dtA = _log_A_bar(dt, A)
    _, B_bar = discretize_zoh(dt, A, B)
    c = _chunk(d, n, l)
    # (d, n, c): A_bar^{c-1-j}, so a chunk [t0, t0+ck) uses the last ck columns times A_bar^{l-t0-ck}
    powers = _powers(dtA, torch.arange(c - 1, -1, -1, device=dt.device), cdt)
    u_c = u.to(cdt).permute(2, 1, 0)  # (d, l, b)
    h = torch.zeros(d, n, u.shape[0], dtype=cdt, device=u.device)
    for t0 in range(0, l, c):
        ck = min(c, l - t0)
        part = torch.bmm(powers[..., c - ck :], u_c[:, t0 : t0 + ck])  # (d, n, b)
        h = h + part * _power(dtA, l - t0 - ck, cdt).unsqueeze(-1)
    h = (h * B_bar.unsqueeze(-1)).permute(2, 0, 1)  # (b, d, n)
    if initial_state is not None:
        h = h + _power(dtA, l, cdt) * initial_state.to(cdt)
    return h


def _conv_one_row_each(
    u: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None,
    initial_state: torch.Tensor | None,
) -> torch.Tensor:
    K = s4d_kernel_torch(dt, A, B, C, u.shape[1])  # (d, l)
    y = fft_conv(u, K, D)
    if initial_state is not None:
        y = y + state_output(initial_state, dt, A, C, u.shape[1]).to(y.dtype)
    return y


def s4d_conv_torch(
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
    rdt, _ = precision(u, dt, A, B, C, D, initial_state)
    uf = u.to(rdt)
    if seq_idx is None:
        y = _conv_one_row_each(uf, dt, A, B, C, D, initial_state)
        final = final_state(uf, dt, A, B, initial_state) if return_final_state else None
    else:
        y, final = _packed(uf, dt, A, B, C, D, initial_state, return_final_state, seq_idx)
    y = y.to(u.dtype)
    return (y, final) if return_final_state else y


def _packed(
    u: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None,
    initial_state: torch.Tensor | None,
    return_final_state: bool,
    seq_idx: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Each run of equal seq_idx becomes its own zero-padded row (S rows of the longest run's length), so the
    cost is that of S * max_len tokens; initial_state feeds the first run of each row."""
    b, l, d = u.shape
    starts = torch.ones(b, l, dtype=torch.bool, device=u.device)
    starts[:, 1:] = seq_idx[:, 1:] != seq_idx[:, :-1]
    flat_starts = starts.flatten()  # (b*l,)
    run = torch.cumsum(flat_starts.long(), dim=0) - 1  # (b*l,): which run each token is in
    run_start = torch.nonzero(flat_starts).squeeze(1)  # (S,)
    pos = torch.arange(b * l, device=u.device) - run_start[run]  # (b*l,): position inside its run
    max_len = int(pos.max().item()) + 1
    rows = u.new_zeros(run_start.shape[0], max_len, d).index_put((run, pos), u.flatten(0, 1))  # (S, max_len, d)
    y_rows = _conv_one_row_each(rows, dt, A, B, C, D, None)
    if initial_state is not None:
        first_run = run[torch.arange(b, device=u.device) * l]  # (b,)
        y_rows = y_rows.index_add(0, first_run, state_output(initial_state, dt, A, C, max_len).to(y_rows.dtype))
    y = y_rows[run, pos].view(b, l, d)
    if not return_final_state:
        return y, None
    # the last run of each row, from zeros unless it is the row's only run
    t = torch.arange(l, device=u.device)
    last_start = torch.where(starts, t, 0).amax(dim=1)  # (b,)
    in_last = (t >= last_start.unsqueeze(1)).unsqueeze(-1).to(u.dtype)  # (b, l, 1)
    h0 = None
    if initial_state is not None:
        h0 = initial_state * (last_start == 0).view(b, 1, 1).to(initial_state.dtype)
    return y, final_state(u * in_last, dt, A, B, h0)
