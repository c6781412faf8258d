"""The Mamba-1 mixer between in_proj and out_proj, and a fused autograd path for it that keeps less for backward.

    xi, z = split(xz)                                    (b, l, E) each
    xc = silu(causal_conv1d(xi))
    dt, B, C = x_proj(xc);  dt = dt @ W_dt^T             dt: (b, l, E); B, C: (b, l, 1, N)
    y = selective_scan(xc, dt, A, B, C, D, z)            Delta = softplus(dt + dt_bias); y *= silu(z)
    out = out_proj(y)

`mamba_branch` is that pipeline as plain differentiable ops (the layer's unfused path). `mamba_inner` is the same
pipeline from xz to out as one `torch.autograd.Function` that stores, per token, only the in_proj output xz and
recomputes the conv output, x_proj, dt and the scan inside backward.

Memory (per token; D = d_model, E = d_inner = 2 D, R = dt_rank, N = d_state, s = bytes per activation element):
- fused: xz, 2 E s, plus in_proj's own input u, D s, kept by its nn.Linear: (D + 2 E) s = 5 D s.
  d_model 2048, bf16: 20,480 B/token. d_model 64, fp32: 1,280 B/token.
- mamba_ssm's mamba_inner_fn (checkpoint_lvl 1, its default): u, xz, x_proj's output (R + 2 N), contiguous copies of
  B and C (2 N), the scan output (E), (D + 3 E + R + 4 N) s, plus fp32 scan intermediates E 2N 4 / 2048:
  d_model 2048 (R 128, N 16), bf16: 29,312 B/token.
- unfused, Triton scan: u (D), xz (2 E: the conv's input and the scan's z read it in place), the conv output (E,
  x_proj's and the scan's input), x_proj's output (R + 2 N), dt (E), contiguous copies of B, C (2 N), the scan
  output (E, out_proj's input): (D + 5 E + R + 4 N) s, plus the scan's fp32 state checkpoints, one (E, N) state
  per 16 tokens (E N / 4 bytes): d_model 2048, bf16: 61,824 B/token; d_model 64, fp32: 3,600 B/token (measured, Triton
  interpreter). The torch scan (CPU) keeps (E, N) fp32 states per step under autograd: d_model 64, fp32:
  39,902 B/token measured at L 256 (tests/layers/test_mamba_inner.py counts both paths).

Storing the scan's checkpoints instead of re-running its forward would cost E N / 4 B/token (16 KiB at d_model
2048 with the scan's current 16-token tiles: nearly as much as xz and u together) plus the scan output for
out_proj's weight gradient, so backward re-runs the forward in stages, each freed before the next, because the
backward's peak memory is what this path is for:
  1. the conv output xc, without a graph (nothing of the conv is held through the scan's backward);
  2. x_proj without a graph, dt_proj and the scan with theirs, z read in place from xz (the Triton scan takes its
     row stride). d y (out_proj's input gradient, which needs no y) comes first and goes to the scan as its
     `grad_hint`: the Triton scan then forms its backward's per-chunk pieces during this forward instead of in a
     pass of its own. out_proj's weight gradient by hand on the recomputed y, after which y is dropped; one
     autograd.grad to xc, x_proj's output, z and the weights, from a scalar seed that hands d y to y without
     keeping y alive; x_proj's backward by hand, its input gradient added to the scan's d xc inside the matmul;
  3. the conv's backward from xi and d xc (`causal_conv1d_grads`: on GPU the backward kernel alone, which recomputes
     the conv's pre-activation itself; elsewhere the forward once more with its graph).
d xi and d z go back apart (in_proj's `split_linear` takes them so): no (b, l, 2E) concatenation.
Autocast state is captured in forward and restored for the recompute, so both see the same dtypes. On CPU (torch
scan) a layer's fwd+bwd took 1.1x-1.4x the unfused time (d_model 256, b 2, L 1024, 2 threads).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from ..ops.causal_conv1d import causal_conv1d, causal_conv1d_grads
from ..ops.selective_scan import selective_scan


def ssm_inputs(xc: torch.Tensor, x_proj_weight: torch.Tensor, dt_proj_weight: torch.Tensor, d_state: int):
    """xc: (..., E) conv output -> dt (..., E) before its bias, B and C (..., 1, N)."""
    return _split_proj(F.linear(xc, x_proj_weight), dt_proj_weight, d_state)


def _split_proj(proj: torch.Tensor, dt_proj_weight: torch.Tensor, d_state: int):
    """x_proj's output (..., R + 2N) -> dt (..., E) before its bias, B and C (..., 1, N)."""
    rank = dt_proj_weight.shape[1]
    dt, B, C = proj.split([rank, d_state, d_state], dim=-1)
    dt = F.linear(dt, dt_proj_weight)  # dt_proj's bias is added inside the scan, before the softplus
    return dt, B.unsqueeze(-2), C.unsqueeze(-2)


def conv_branch(
    xi: torch.Tensor,
    conv_weight: torch.Tensor,
    conv_bias: torch.Tensor | None,
    *,
    conv_state: torch.Tensor | None = None,
    seq_idx: torch.Tensor | None = None,
    backend: str = "auto",
):
    """xi (b, l, E) -> (xc = silu(causal_conv1d(xi)) (b, l, E), conv final state (b, E, w-1))."""
    return causal_conv1d(
        xi,
        conv_weight,
        conv_bias,
        activation="silu",
        initial_state=conv_state,
        return_final_state=True,
        seq_idx=seq_idx,
        backend=backend,
    )


def scan_branch(
    xc: torch.Tensor,
    proj: torch.Tensor,
    z: torch.Tensor,
    dt_proj_weight: torch.Tensor,
    dt_bias: torch.Tensor,
    A_log: torch.Tensor,
    D: torch.Tensor,
    *,
    ssm_state: torch.Tensor | None = None,
    seq_idx: torch.Tensor | None = None,
    backend: str = "auto",
    grad_hint: torch.Tensor | None = None,
):
    """xc, z (b, l, E) and x_proj's output proj (b, l, R + 2N) -> (y (b, l, E) before out_proj, ssm final state
    (b, E, N)): dt_proj and the scan. grad_hint: y's gradient when already known (`selective_scan`)."""
    dt, B, C = _split_proj(proj, dt_proj_weight, A_log.shape[1])
    return selective_scan(
        xc,
        dt,
        -torch.exp(A_log.float()),  # (E, N)
        B,
        C,
        D=D.float(),
        z=z,
        dt_bias=dt_bias.float(),
        dt_softplus=True,
        initial_state=ssm_state,
        return_final_state=True,
        seq_idx=seq_idx,
        backend=backend,
        grad_hint=grad_hint,
    )


def mamba_branch(
    xi: torch.Tensor,
    z: torch.Tensor,
    conv_weight: torch.Tensor,
    conv_bias: torch.Tensor | None,
    x_proj_weight: torch.Tensor,
    dt_proj_weight: torch.Tensor,
    dt_bias: torch.Tensor,
    A_log: torch.Tensor,
    D: torch.Tensor,
    *,
    conv_state: torch.Tensor | None = None,
    ssm_state: torch.Tensor | None = None,
    seq_idx: torch.Tensor | None = None,
    backend: str = "auto",
):
    """xi, z (b, l, E), the halves of in_proj's output -> (y (b, l, E) before out_proj, conv final state (b, E, w-1),
    ssm final state (b, E, N)).

    conv_weight: (E, w); x_proj_weight: (R + 2N, E); dt_proj_weight: (E, R); dt_bias, D: (E,); A_log: (E, N).
    """
    xc, conv_final = conv_branch(xi, conv_weight, conv_bias, conv_state=conv_state, seq_idx=seq_idx, backend=backend)
    proj = F.linear(xc, x_proj_weight)  # (b, l, R + 2N)
    y, ssm_final = scan_branch(
        xc, proj, z, dt_proj_weight, dt_bias, A_log, D, ssm_state=ssm_state, seq_idx=seq_idx, backend=backend
    )
    return y, conv_final, ssm_final


def _autocast_state(device_type: str) -> tuple[bool, torch.dtype, bool]:
    return (
        torch.is_autocast_enabled(device_type),
        torch.get_autocast_dtype(device_type),
        torch.is_autocast_cache_enabled(),
    )


def _leaf(t: torch.Tensor | None, need: bool) -> torch.Tensor | None:
    return None if t is None else t.detach().requires_grad_(need)


def _grads(outputs: torch.Tensor, inputs: list, grad_outputs: torch.Tensor) -> list:
    """torch.autograd.grad over the inputs that are tensors needing grad; None in the other places."""
    wanted = [t for t in inputs if t is not None and t.requires_grad]
    got = iter(torch.autograd.grad(outputs, wanted, grad_outputs) if wanted else ())
    return [next(got) if t is not None and t.requires_grad else None for t in inputs]


def _add_matmul(out: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """out (..., k) + a @ b for a (m, j), b (j, k) with m = out's rows: in place when the dtypes agree."""
    flat = out.reshape(-1, out.shape[-1])
    if flat.dtype == a.dtype:
        flat.addmm_(a, b)
    else:
        flat = flat + (a @ b).to(flat.dtype)
    return flat.view(out.shape)


class _GradSeed(torch.autograd.Function):
    """A scalar root whose backward hands `grad` to `t`. autograd.grad from it keeps no reference to t, so t's
    memory can go before the backward runs (from t itself as the root, t would stay alive throughout)."""

    @staticmethod
    def forward(ctx, t, grad):
        ctx.save_for_backward(grad)
        return t.new_zeros(())

    @staticmethod
    def backward(ctx, _):
        (grad,) = ctx.saved_tensors
        return grad, None


class MambaInnerFn(torch.autograd.Function):
    """(xi, z) -> out_proj(mamba_branch(xi, z)), keeping xi, z and the weights only (see the module docstring)."""

    @staticmethod
    def forward(ctx, xi, z, conv_w, conv_b, x_proj_w, dt_proj_w, dt_bias, A_log, D, out_w, out_b, backend):
        branch_in = (xi, z, conv_w, conv_b, x_proj_w, dt_proj_w, dt_bias, A_log, D)
        # detached: nested ops see no input that needs grad, so none of them keeps anything for a backward
        xi_, z_, conv_w_, conv_b_, x_proj_w_, *scan_weights = [None if t is None else t.detach() for t in branch_in]
        xc, _ = conv_branch(xi_, conv_w_, conv_b_, backend=backend)  # (b, l, E)
        y, _ = scan_branch(xc, F.linear(xc, x_proj_w_), z_, *scan_weights, backend=backend)  # (b, l, E)
        del xc
        out = F.linear(y, out_w.detach(), None if out_b is None else out_b.detach())  # (b, l, D)
        ctx.save_for_backward(*branch_in, out_w, out_b)
        ctx.backend = backend
        ctx.device_type = xi.device.type
        ctx.autocast = _autocast_state(xi.device.type)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, dout):
        xi, z, conv_w, conv_b, x_proj_w, dt_proj_w, dt_bias, A_log, D, out_w, out_b = ctx.saved_tensors
        needs = ctx.needs_input_grad
        E = xi.shape[-1]
        enabled, dtype, cache = ctx.autocast

        def autocast():
            return torch.autocast(ctx.device_type, dtype=dtype, enabled=enabled, cache_enabled=cache)

        # In stages, so that what each stage keeps is freed before the next (peak memory is the point here).
        # 1. the conv output, without a graph: nothing of the conv is held through the scan's backward
        with torch.no_grad(), autocast():
            xc, _ = conv_branch(xi, conv_w, conv_b, backend=ctx.backend)  # (b, l, E)
        # 2. x_proj without a graph (its backward by hand below), then dt_proj and the scan again with theirs; z is
        # read in place (in_proj's output)
        need_dxc = needs[0] or any(needs[2:4])  # xi's or the conv weights' gradients go through d xc
        xc.requires_grad_(need_dxc)
        with torch.no_grad(), autocast():
            proj = F.linear(xc, x_proj_w)  # (b, l, R + 2N)
        proj.requires_grad_(need_dxc or needs[4])
        z = _leaf(z, needs[1])
        scan_weights = [_leaf(t, need) for t, need in zip((dt_proj_w, dt_bias, A_log, D), needs[5:9])]
        # out_proj's input gradient first (its matmuls run in dout's dtype, the autocast dtype under autocast): the
        # scan's forward takes it as a hint and does its backward's per-chunk pass on the way
        dy = (dout @ out_w.to(dout.dtype)).to(xc.dtype)  # (b, l, E), in y's dtype (the scan's output is xc's)
        with torch.enable_grad(), autocast():
            y, _ = scan_branch(xc, proj, z, *scan_weights, backend=ctx.backend, grad_hint=dy)  # (b, l, E)
        with torch.enable_grad():
            seed = _GradSeed.apply(y, dy)
        del dy
        dout2 = dout.reshape(-1, dout.shape[-1])  # (b l, D)
        d_out_w = None
        if needs[9]:
            d_out_w = (dout2.t() @ y.detach().reshape(-1, E).to(dout.dtype)).to(out_w.dtype)  # (D, E)
        d_out_b = dout2.sum(0).to(out_b.dtype) if out_b is not None and needs[10] else None
        del y  # y's memory is free during the scan's backward, as autograd frees it in the unfused layer
        dxc, dproj, dz, *d_scan = _grads(seed, [xc, proj, z, *scan_weights], None)
        del seed
        # x_proj's backward: its input gradient is added to the scan's by the matmul itself (out += d proj W), which
        # saves a pass over (b, l, E) that autograd's sum of the two would take
        d_x_proj_w = None
        if dproj is not None:
            dproj2 = dproj.reshape(-1, dproj.shape[-1])  # (b l, R + 2N)
            if needs[4]:
                d_x_proj_w = (dproj2.t() @ xc.detach().reshape(-1, E).to(dproj.dtype)).to(x_proj_w.dtype)
            if need_dxc:
                dxc = _add_matmul(dxc, dproj2, x_proj_w.to(dproj.dtype))
        del xc, proj
        # 3. the conv's backward from xi (the Triton kernel recomputes what it needs; other paths rerun the forward)
        dxi, d_conv = None, [None, None]
        if need_dxc:
            with autocast():
                dxi, *d_conv = causal_conv1d_grads(
                    xi, conv_w, conv_b, dxc, "silu", needs=(needs[0], needs[2], needs[3]), backend=ctx.backend
                )
        # d xi and d z go back separately: in_proj's split backward takes them piece by piece, without joining
        return (dxi, dz, *d_conv, d_x_proj_w, *d_scan, d_out_w, d_out_b, None)


def mamba_inner(
    xi: torch.Tensor,
    z: torch.Tensor,
    conv_weight: torch.Tensor,
    conv_bias: torch.Tensor | None,
    x_proj_weight: torch.Tensor,
    dt_proj_weight: torch.Tensor,
    dt_bias: torch.Tensor,
    A_log: torch.Tensor,
    D: torch.Tensor,
    out_proj_weight: torch.Tensor,
    out_proj_bias: torch.Tensor | None = None,
    *,
    backend: str = "auto",
) -> torch.Tensor:
    """out (b, l, D) = out_proj(mamba_branch(xi, z)) for xi and z (b, l, E) each (the halves of in_proj's
    output, read in place); no states, no seq_idx.

    Same values and gradients as the unfused ops; backward recomputes the branch from xi and z (see the module
    docstring) and returns d xi and d z apart.
    """
    return MambaInnerFn.apply(
        xi, z, conv_weight, conv_bias, x_proj_weight, dt_proj_weight, dt_bias, A_log, D, out_proj_weight,
        out_proj_bias, backend,
    )  # fmt: skip
