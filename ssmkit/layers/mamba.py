"""Mamba (Mamba-1) block: the selective SSM (S6) mixer.

Glossary (paper <-> code): D <-> d_model, E <-> expand (d_inner = E * D), N <-> d_state, Delta <-> dt,
R <-> dt_rank, x <-> the conv branch, z <-> the gate branch.

    x, z = in_proj(u)                         (b, l, d_inner) each
    x = silu(causal_conv1d(x))                depthwise, width d_conv
    dt, B, C = x_proj(x)                      dt: (b, l, R) -> dt_proj -> (b, l, d_inner); B, C: (b, l, N)
    y = selective_scan(x, dt, A, B, C, D, z)  Delta = softplus(dt + dt_bias); y *= silu(z)
    out = out_proj(y)

Training without state or seq_idx runs everything after in_proj as one autograd Function (mamba_inner.py) that
keeps only xz for backward and recomputes the rest there; `MambaConfig(fused=False)` keeps the plain ops.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from ..ops.causal_conv1d import causal_conv1d_update
from ..ops.selective_scan import selective_scan_step
from .mamba_inner import mamba_branch, mamba_inner, ssm_inputs
from .splits import split_linear


@dataclass
class MambaConfig:
    d_state: int = 16
    d_conv: int = 4
    expand: int = 2
    dt_rank: int | None = None  # None: ceil(d_model / 16), as in the paper
    dt_min: float = 1e-3
    dt_max: float = 1e-1
    dt_init_floor: float = 1e-4
    dt_scale: float = 1.0
    conv_bias: bool = True
    bias: bool = False
    backend: str = "auto"
    # training (grad on) without state/seq_idx: recompute conv, dt and the scan in backward, keeping only xz
    fused: bool = True


@dataclass
class MambaState:
    conv: torch.Tensor  # (b, d_inner, d_conv - 1): the last inputs of the causal conv
    ssm: torch.Tensor  # (b, d_inner, d_state), fp32

    def nbytes(self) -> int:
        return self.conv.numel() * self.conv.element_size() + self.ssm.numel() * self.ssm.element_size()


def inverse_softplus(y: torch.Tensor) -> torch.Tensor:
    return y + torch.log(-torch.expm1(-y))  # softplus(inverse_softplus(y)) == y


def init_dt_bias(d: int, dt_min: float, dt_max: float, floor: float, device=None) -> torch.Tensor:
    """Biases whose softplus is log-uniform in [dt_min, dt_max]: each channel starts at its own time scale."""
    u = torch.rand(d, device=device)
    dt = torch.exp(u * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)).clamp(min=floor)
    return inverse_softplus(dt)


class Mamba(nn.Module):
    def __init__(self, d_model: int, config: MambaConfig | None = None, *, layer_idx: int = 0, device=None, dtype=None):
        super().__init__()
        cfg = config or MambaConfig()
        self.config, self.layer_idx, self.d_model = cfg, layer_idx, d_model
        self.d_inner = cfg.expand * d_model
        self.dt_rank = cfg.dt_rank or math.ceil(d_model / 16)
        kw = dict(device=device, dtype=dtype)
        di, n = self.d_inner, cfg.d_state
        self.in_proj = nn.Linear(d_model, 2 * di, bias=cfg.bias, **kw)
        # nn.Conv1d only as the parameter holder (weight (d_inner, 1, d_conv)), for checkpoint compatibility
        self.conv1d = nn.Conv1d(di, di, cfg.d_conv, groups=di, padding=cfg.d_conv - 1, bias=cfg.conv_bias, **kw)
        self.x_proj = nn.Linear(di, self.dt_rank + 2 * n, bias=False, **kw)
        self.dt_proj = nn.Linear(self.dt_rank, di, bias=True, **kw)
        # S4D-Real: A = -(1, 2, ..., N) for every channel, stored as log(-A) so A stays negative
        self.A_log = nn.Parameter(torch.log(torch.arange(1, n + 1, dtype=torch.float32, device=device)).repeat(di, 1))
        self.D = nn.Parameter(torch.ones(di, device=device))
        self.out_proj = nn.Linear(di, d_model, bias=cfg.bias, **kw)
        self.reset_ssm_parameters()

    def reset_ssm_parameters(self) -> None:
        cfg = self.config
        std = self.dt_rank**-0.5 * cfg.dt_scale
        with torch.no_grad():
            nn.init.uniform_(self.dt_proj.weight, -std, std)
            self.dt_proj.bias.copy_(init_dt_bias(self.d_inner, cfg.dt_min, cfg.dt_max, cfg.dt_init_floor))
            n = cfg.d_state
            self.A_log.copy_(torch.log(torch.arange(1, n + 1, dtype=torch.float32)).repeat(self.d_inner, 1))
            self.D.fill_(1.0)
        for p in (self.A_log, self.D, self.dt_proj.bias):
            p._no_weight_decay = True
        self.dt_proj.bias._no_reinit = True

    def _branch_weights(self):
        """The weights after in_proj, in `mamba_branch`'s order."""
        conv_w = self.conv1d.weight[:, 0, :]  # (d_inner, d_conv)
        return conv_w, self.conv1d.bias, self.x_proj.weight, self.dt_proj.weight, self.dt_proj.bias, self.A_log, self.D

    def forward(self, x: torch.Tensor, state: MambaState | None = None, *, seq_idx: torch.Tensor | None = None):
        if x.dim() != 3 or x.shape[-1] != self.d_model:
            raise ValueError(f"x: expected shape (b, l, d_model={self.d_model}), got {tuple(x.shape)}")
        weights = self._branch_weights()
        backend = self.config.backend
        out_wb = (self.out_proj.weight, self.out_proj.bias)
        needs_grad = (x, *self.in_proj.parameters(), *weights, *out_wb)
        training = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in needs_grad)
        # (b, l, d_inner) each; in backward in_proj takes their gradients apart, without joining them
        xi, z = split_linear(self.in_proj, x, [self.d_inner, self.d_inner])
        if self.config.fused and training and state is None and seq_idx is None:
            return mamba_inner(xi, z, *weights, *out_wb, backend=backend), None
        with_state = state is not None
        y, conv_final, ssm_final = mamba_branch(
            xi,
            z,
            *weights,
            conv_state=state.conv if with_state else None,
            ssm_state=state.ssm if with_state else None,
            seq_idx=seq_idx,
            backend=backend,
        )
        out = self.out_proj(y)
        return out, (MambaState(conv_final, ssm_final) if with_state else None)

    def init_state(self, batch_size: int, device=None, dtype=None) -> MambaState:
        device = device or self.in_proj.weight.device
        dtype = dtype or self.in_proj.weight.dtype
        conv = torch.zeros(batch_size, self.d_inner, self.config.d_conv - 1, device=device, dtype=dtype)
        ssm = torch.zeros(batch_size, self.d_inner, self.config.d_state, device=device, dtype=torch.float32)
        return MambaState(conv, ssm)

    def step(self, x_t: torch.Tensor, state: MambaState) -> tuple[torch.Tensor, MambaState]:
        if x_t.dim() != 2 or x_t.shape[-1] != self.d_model:
            raise ValueError(f"x_t: expected shape (b, d_model={self.d_model}), got {tuple(x_t.shape)}")
        backend = self.config.backend
        xi, z = self.in_proj(x_t).chunk(2, dim=-1)  # (b, d_inner) each
        conv_w = self.conv1d.weight[:, 0, :]
        xc, conv = causal_conv1d_update(xi, state.conv, conv_w, self.conv1d.bias, activation="silu", backend=backend)
        dt, B, C = ssm_inputs(xc, self.x_proj.weight, self.dt_proj.weight, self.config.d_state)
        A = -torch.exp(self.A_log.float())
        # the new state is written into state.ssm (in place on the Triton path) when it has the step's state dtype
        in_place = state.ssm.dtype == (torch.float64 if xc.dtype == torch.float64 else torch.float32)
        y, ssm = selective_scan_step(
            xc,
            dt,
            A,
            B,
            C,
            state.ssm,
            D=self.D.float(),
            z_t=z,
            dt_bias=self.dt_proj.bias.float(),
            dt_softplus=True,
            backend=backend,
            out_state=state.ssm if in_place else None,
        )
        state.conv.copy_(conv)
        if not in_place:
            state.ssm.copy_(ssm)
        return self.out_proj(y), state
