"""One decoding step of the causal conv1d in Triton: y_t = act(bias + window . weight), the state shifted by one.

A program owns BLOCK_D channels of one row and holds their window (BLOCK_D, W) in registers: columns 0..W-2 from
conv_state (b, d, W-1), column W-1 the new input x_t. The new state (window columns 1..W) goes to a fresh tensor;
conv_state is not modified. The backward (for the rare step under autograd) is a few elementwise torch ops.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..selective_scan.triton_fwd import _store
from .triton_conv import _silu_and_grad

BLOCK_D = 128
NUM_WARPS = 4


def _empty(*shape, dtype, device):
    """Every output buffer comes from here (tests replace it with a NaN fill to catch unwritten elements)."""
    return torch.empty(*shape, dtype=dtype, device=device)


@triton.jit
def _window(x_ptr, state_ptr, b64, offs_d, mask_d, cols, D: tl.constexpr, W: tl.constexpr):
    """(BD, WP) fp32: column c < W-1 is conv_state[:, c], column W-1 is x_t, later columns zero."""
    in_state = mask_d[:, None] & (cols < W - 1)[None, :]
    s = tl.load(state_ptr + (b64 * D + offs_d[:, None]) * (W - 1) + cols[None, :], mask=in_state, other=0.0)
    xv = tl.load(x_ptr + b64 * D + offs_d, mask=mask_d, other=0.0).to(tl.float32)  # (BD,)
    return tl.where((cols == W - 1)[None, :], xv[:, None], s.to(tl.float32))


@triton.jit
def _update_kernel(
    x_ptr, state_ptr, w_ptr, bias_ptr, y_ptr, new_state_ptr,
    D: tl.constexpr, W: tl.constexpr, WP: tl.constexpr, BLOCK_D: tl.constexpr,
    HAS_BIAS: tl.constexpr, SILU: tl.constexpr,
):  # fmt: skip
    b64 = tl.program_id(1).to(tl.int64)
    offs_d = tl.program_id(0) * BLOCK_D + tl.arange(0, BLOCK_D)  # (BD,)
    mask_d = offs_d < D
    cols = tl.arange(0, WP)  # (WP,)
    win = _window(x_ptr, state_ptr, b64, offs_d, mask_d, cols, D, W)  # (BD, WP)
    wmask = mask_d[:, None] & (cols < W)[None, :]
    wt = tl.load(w_ptr + offs_d[:, None] * W + cols[None, :], mask=wmask, other=0.0).to(tl.float32)
    pre = tl.sum(win * wt, axis=1)  # (BD,)
    if HAS_BIAS:
        pre += tl.load(bias_ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32)
    if SILU:
        y, _ = _silu_and_grad(pre)
    else:
        y = pre
    _store(y_ptr, b64 * D + offs_d, y, mask_d)
    if W > 1:
        shifted = _window(x_ptr, state_ptr, b64, offs_d, mask_d, cols + 1, D, W)  # new column c = old column c+1
        offs_s = (b64 * D + offs_d[:, None]) * (W - 1) + cols[None, :]
        _store(new_state_ptr, offs_s, shifted, mask_d[:, None] & (cols < W - 1)[None, :])


def update_fwd(x_t, conv_state, weight, bias, activation):
    """(y_t (b, d) in x_t's dtype, new state (b, d, w-1) in conv_state's dtype); inputs contiguous."""
    b, d = x_t.shape
    w = weight.shape[1]
    y = _empty(b, d, dtype=x_t.dtype, device=x_t.device)
    new_state = _empty(b, d, w - 1, dtype=conv_state.dtype, device=x_t.device)
    grid = (triton.cdiv(d, BLOCK_D), b)
    empty = w == 1  # a (b, d, 0) state has no storage to point at
    _update_kernel[grid](
        x_t, x_t if empty else conv_state, weight, x_t if bias is None else bias, y, y if empty else new_state,
        D=d, W=w, WP=triton.next_power_of_2(w), BLOCK_D=BLOCK_D, HAS_BIAS=bias is not None,
        SILU=activation == "silu", num_warps=NUM_WARPS,
    )  # fmt: skip
    return y, new_state


class _UpdateFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x_t, conv_state, weight, bias, activation):
        ctx.save_for_backward(x_t, conv_state, weight, bias)
        ctx.activation = activation
        ctx.set_materialize_grads(False)
        return update_fwd(x_t, conv_state, weight, bias, activation)

    @staticmethod
    def backward(ctx, dy, dstate):
        x_t, conv_state, weight, bias = ctx.saved_tensors
        window = torch.cat([conv_state.float(), x_t.float().unsqueeze(-1)], dim=-1)  # (b, d, w)
        wf = weight.float()
        g = torch.zeros_like(x_t, dtype=torch.float32) if dy is None else dy.float()  # (b, d)
        if ctx.activation == "silu":
            pre = (window * wf).sum(-1) + (0.0 if bias is None else bias.float())
            s = torch.sigmoid(pre)
            g = g * s * (1.0 + pre * (1.0 - s))
        dwindow = g.unsqueeze(-1) * wf  # (b, d, w)
        if dstate is not None:
            dwindow[..., 1:] += dstate.float()
        dweight = (g.unsqueeze(-1) * window).sum(0).to(weight.dtype)
        dbias = None if bias is None else g.sum(0).to(bias.dtype)
        return dwindow[..., -1].to(x_t.dtype), dwindow[..., :-1].to(conv_state.dtype), dweight, dbias, None


def causal_conv1d_update_triton(x_t, conv_state, weight, bias, activation):
    """Same arguments and results as `causal_conv1d_update_ref`."""
    args = [None if t is None else t.contiguous() for t in (x_t, conv_state, weight, bias)]
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in args):
        return _UpdateFn.apply(*args, activation)
    return update_fwd(*args, activation)
