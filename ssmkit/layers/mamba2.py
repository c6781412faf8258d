"""Mamba-2 block: the SSD mixer (scalar A per head, multi-head, grouped B/C).

Glossary (paper <-> code): D <-> d_model, N <-> d_state, P <-> headdim, H <-> nheads = d_inner / P,
G <-> ngroups (heads share B, C within a group), Q <-> chunk_size, Delta <-> dt.

    z, xBC, dt = in_proj(u)            z: (b, l, d_inner), xBC: (b, l, d_inner + 2 G N), dt: (b, l, H)
    xBC = silu(causal_conv1d(xBC))     one depthwise conv over x, B and C together
    x, B, C = split(xBC)               x: (b, l, H, P), B, C: (b, l, G, N)
    y = ssd(x, dt, A, B, C, D)         A = -exp(A_log): (H,); Delta = softplus(dt + dt_bias)
    y = gated_rms_norm(y, z)           grouped (G groups), norm(y * silu(z)) * w
    out = out_proj(y)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from ..ops.causal_conv1d import causal_conv1d, causal_conv1d_update
from ..ops.ssd import ssd, ssd_step
from .mamba import init_dt_bias
from .norm import GatedRMSNorm
from .splits import split_joined, split_linear


@dataclass
class Mamba2Config:
    d_state: int = 128
    d_conv: int = 4
    expand: int = 2
    headdim: int = 64
    ngroups: int = 1
    chunk_size: int = 256
    A_init_range: tuple[float, float] = (1.0, 16.0)
    dt_min: float = 1e-3
    dt_max: float = 1e-1
    dt_init_floor: float = 1e-4
    dt_limit: tuple[float, float] = (0.0, math.inf)
    conv_bias: bool = True
    bias: bool = False
    norm_eps: float = 1e-5
    norm_before_gate: bool = False
    backend: str = "auto"


@dataclass
class Mamba2State:
    conv: torch.Tensor  # (b, d_inner + 2 G N, d_conv - 1)
    ssm: torch.Tensor  # (b, H, P, N), fp32

    def nbytes(self) -> int:
        return self.conv.numel() * self.conv.element_size() + self.ssm.numel() * self.ssm.element_size()


class Mamba2(nn.Module):
    def __init__(
        self, d_model: int, config: Mamba2Config | None = None, *, layer_idx: int = 0, device=None, dtype=None
    ):
        super().__init__()
        cfg = config or Mamba2Config()
        self.config, self.layer_idx, self.d_model = cfg, layer_idx, d_model
        self.d_inner = cfg.expand * d_model
        if self.d_inner % cfg.headdim != 0:
            raise ValueError(
                f"d_inner = expand * d_model = {self.d_inner} must be divisible by headdim = {cfg.headdim}"
            )
        self.nheads = self.d_inner // cfg.headdim
        if self.nheads % cfg.ngroups != 0:
            raise ValueError(f"nheads = {self.nheads} must be divisible by ngroups = {cfg.ngroups}")
        kw = dict(device=device, dtype=dtype)
        di, g, n, h = self.d_inner, cfg.ngroups, cfg.d_state, self.nheads
        self.conv_dim = di + 2 * g * n
        self.in_proj = nn.Linear(d_model, 2 * di + 2 * g * n + h, bias=cfg.bias, **kw)
        self.conv1d = nn.Conv1d(
            self.conv_dim,
            self.conv_dim,
            cfg.d_conv,
            groups=self.conv_dim,
            padding=cfg.d_conv - 1,
            bias=cfg.conv_bias,
            **kw,
        )
        self.dt_bias = nn.Parameter(torch.empty(h, device=device))
        self.A_log = nn.Parameter(torch.empty(h, device=device))
        self.D = nn.Parameter(torch.empty(h, device=device))
        self.norm = GatedRMSNorm(di, eps=cfg.norm_eps, group_size=di // g, norm_before_gate=cfg.norm_before_gate, **kw)
        self.out_proj = nn.Linear(di, d_model, bias=cfg.bias, **kw)
        self.reset_ssm_parameters()

    def reset_ssm_parameters(self) -> None:
        cfg = self.config
        lo, hi = cfg.A_init_range
        if not 0 < lo <= hi:
            raise ValueError(f"A_init_range: expected 0 < low <= high, got {cfg.A_init_range}")
        with torch.no_grad():
            self.dt_bias.copy_(init_dt_bias(self.nheads, cfg.dt_min, cfg.dt_max, cfg.dt_init_floor))
            self.A_log.copy_(torch.log(torch.empty(self.nheads).uniform_(lo, hi)))  # A = -exp(A_log) ~ -U[lo, hi]
            self.D.fill_(1.0)
        for p in (self.A_log, self.D, self.dt_bias):
            p._no_weight_decay = True
        self.dt_bias._no_reinit = True

    def _in_proj_split(self, u: torch.Tensor):
        """u (..., d_model) -> z (..., d_inner), xBC (..., conv_dim), dt (..., H): in_proj's output in pieces."""
        return split_linear(self.in_proj, u, [self.d_inner, self.conv_dim, self.nheads])

    def _split_xbc(self, xbc: torch.Tensor):
        """(..., conv_dim) -> x (..., H, P), B and C (..., G, N)."""
        cfg = self.config
        gn = cfg.ngroups * cfg.d_state
        x, B, C = split_joined(xbc, [self.d_inner, gn, gn])
        lead = xbc.shape[:-1]
        return (
            x.reshape(*lead, self.nheads, cfg.headdim),
            B.reshape(*lead, cfg.ngroups, cfg.d_state),
            C.reshape(*lead, cfg.ngroups, cfg.d_state),
        )

    def forward(self, x: torch.Tensor, state: Mamba2State | None = None, *, seq_idx: torch.Tensor | None = None):
        if x.dim() != 3 or x.shape[-1] != self.d_model:
            raise ValueError(f"x: expected shape (b, l, d_model={self.d_model}), got {tuple(x.shape)}")
        cfg = self.config
        b, l, _ = x.shape
        z, xbc, dt = self._in_proj_split(x)
        with_state = state is not None
        xbc, conv_final = causal_conv1d(
            xbc,
            self.conv1d.weight[:, 0, :],
            self.conv1d.bias,
            activation="silu",
            initial_state=state.conv if with_state else None,
            return_final_state=True,
            seq_idx=seq_idx,
            backend=cfg.backend,
        )
        xs, B, C = self._split_xbc(xbc)
        y, ssm_final = ssd(
            xs,
            dt,
            -torch.exp(self.A_log.float()),
            B,
            C,
            chunk_size=cfg.chunk_size,
            D=self.D.float(),
            dt_bias=self.dt_bias.float(),
            dt_softplus=True,
            dt_limit=cfg.dt_limit,
            initial_state=state.ssm if with_state else None,
            return_final_state=True,
            seq_idx=seq_idx,
            backend=cfg.backend,
        )
        y = self.norm(y.reshape(b, l, self.d_inner), z)
        out = self.out_proj(y)
        return out, (Mamba2State(conv_final, ssm_final) if with_state else None)

    def init_state(self, batch_size: int, device=None, dtype=None) -> Mamba2State:
        device = device or self.in_proj.weight.device
        dtype = dtype or self.in_proj.weight.dtype
        cfg = self.config
        conv = torch.zeros(batch_size, self.conv_dim, cfg.d_conv - 1, device=device, dtype=dtype)
        ssm = torch.zeros(batch_size, self.nheads, cfg.headdim, cfg.d_state, device=device, dtype=torch.float32)
        return Mamba2State(conv, ssm)

    def step(self, x_t: torch.Tensor, state: Mamba2State) -> tuple[torch.Tensor, Mamba2State]:
        if x_t.dim() != 2 or x_t.shape[-1] != self.d_model:
            raise ValueError(f"x_t: expected shape (b, d_model={self.d_model}), got {tuple(x_t.shape)}")
        cfg = self.config
        z, xbc, dt = self._in_proj_split(x_t)
        conv_w = self.conv1d.weight[:, 0, :]
        xbc, conv = causal_conv1d_update(xbc, state.conv, conv_w, self.conv1d.bias, "silu", backend=cfg.backend)
        xs, B, C = self._split_xbc(xbc)
        # the new state is written into state.ssm (in place on the Triton path) when it has the step's state dtype
        in_place = state.ssm.dtype == (torch.float64 if xs.dtype == torch.float64 else torch.float32)
        y, ssm = ssd_step(
            xs,
            dt,
            -torch.exp(self.A_log.float()),
            B,
            C,
            state.ssm,
            D=self.D.float(),
            dt_bias=self.dt_bias.float(),
            dt_softplus=True,
            dt_limit=cfg.dt_limit,
            backend=cfg.backend,
            out_state=state.ssm if in_place else None,
        )
        state.conv.copy_(conv)
        if not in_place:
            state.ssm.copy_(ssm)
        y = self.norm(y.reshape(x_t.shape[0], self.d_inner), z)
        return self.out_proj(y), state
