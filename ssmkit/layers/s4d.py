"""S4D block: one diagonal time-invariant SSM per channel, then GELU and a GLU output projection.

Glossary (paper <-> code; Gu et al. 2022, "On the Parameterization and Initialization of Diagonal SSMs"):
    H <-> d_model (channels, one SSM each)      N <-> d_state (real state size; n = N/2 complex states are kept,
    Delta <-> dt = exp(log_dt), (d_model,)        the real output is 2 Re(C . h), the conjugate-pair convention)
    A <-> -exp(log_A_real) + i A_imag, (d_model, n): the real part stays negative, so the SSM is stable
    B <-> folded into C at init (B = 1 afterwards; the LegS init's B = V^* B_LegS scales C)
    C <-> C, complex (d_model, n), stored as a real view (d_model, n, 2)
    D <-> D, (d_model,): the skip term D u
    A_bar, B_bar <-> zero-order hold: exp(Delta A), (exp(Delta A) - 1) / A * B
    K <-> the SSM convolution kernel, K_k = 2 Re(C B_bar A_bar^k), (d_model, l)
    h <-> the paper's state x_t (here x is the layer input): (b, d_model, n) complex

    y = fft_conv(x, K) + D x                 convolution mode (forward); recurrent mode (step) gives the same
    y = dropout(gelu(y))
    out = glu(out_proj(y))                   Linear(d_model, 2 d_model), then the GLU halves it back

The SSM runs in fp32 (fp64 for fp64 inputs) whatever the parameters' dtype; the state is complex64 (complex128
for an fp64 layer).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from ..ops.s4d import discretize_zoh, s4d_conv, s4d_legs_init, s4d_lin_init, s4d_real_init, s4d_step

INITS = {"legs": s4d_legs_init, "lin": s4d_lin_init, "real": s4d_real_init}


@dataclass
class S4DConfig:
    d_state: int = 64  # N: even; N/2 complex states per channel
    init: Literal["legs", "lin", "real"] = "legs"
    dt_min: float = 1e-3  # Delta is log-uniform in [dt_min, dt_max] per channel at init
    dt_max: float = 1e-1
    dropout: float = 0.0  # after the GELU
    bias: bool = True  # out_proj's bias
    backend: str = "auto"

    def __post_init__(self) -> None:
        if not isinstance(self.d_state, int) or self.d_state < 2 or self.d_state % 2:
            raise ValueError(f"d_state: expected an even int >= 2 (N/2 conjugate pairs), got {self.d_state!r}")
        if self.init not in INITS:
            raise ValueError(f"init: expected one of {sorted(INITS)}, got {self.init!r}")
        if not 0 < self.dt_min <= self.dt_max:
            raise ValueError(f"dt_min, dt_max: expected 0 < dt_min <= dt_max, got {self.dt_min}, {self.dt_max}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout: expected a float in [0, 1), got {self.dropout}")


@dataclass
class S4DState:
    ssm: torch.Tensor  # (b, d_model, d_state/2) complex: h after the last token

    def nbytes(self) -> int:
        return self.ssm.numel() * self.ssm.element_size()


class S4D(nn.Module):
    def __init__(self, d_model: int, config: S4DConfig | None = None, *, layer_idx: int = 0, device=None, dtype=None):
        super().__init__()
        cfg = config or S4DConfig()
        self.config, self.layer_idx, self.d_model = cfg, layer_idx, d_model
        n = cfg.d_state // 2
        kw = dict(device=device, dtype=dtype)
        self.log_dt = nn.Parameter(torch.empty(d_model, **kw))
        self.log_A_real = nn.Parameter(torch.empty(d_model, n, **kw))
        self.A_imag = nn.Parameter(torch.empty(d_model, n, **kw))
        self.C = nn.Parameter(torch.empty(d_model, n, 2, **kw))
        self.D = nn.Parameter(torch.empty(d_model, **kw))
        self.dropout = nn.Dropout(cfg.dropout)
        self.out_proj = nn.Linear(d_model, 2 * d_model, bias=cfg.bias, **kw)
        self.reset_ssm_parameters()

    def reset_ssm_parameters(self) -> None:
        cfg, d = self.config, self.d_model
        A, B = INITS[cfg.init](d, cfg.d_state, dtype=torch.complex128)  # (d, n) each
        log_dt = torch.rand(d, dtype=torch.float64) * (math.log(cfg.dt_max) - math.log(cfg.dt_min))
        C = torch.randn(d, cfg.d_state // 2, dtype=torch.complex128) * B  # unit complex normal, B folded in
        with torch.no_grad():
            self.log_dt.copy_(log_dt + math.log(cfg.dt_min))
            self.log_A_real.copy_(torch.log(-A.real))
            self.A_imag.copy_(A.imag)
            self.C.copy_(torch.view_as_real(C))
            self.D.copy_(torch.randn(d))
        for p in (self.log_dt, self.log_A_real, self.A_imag):
            p._no_weight_decay = True  # the paper trains A and Delta without weight decay

    def _compute_dtype(self, x: torch.Tensor) -> torch.dtype:
        return torch.float64 if x.dtype == torch.float64 else torch.float32

    def _ssm_params(self, ct: torch.dtype) -> tuple[torch.Tensor, ...]:
        """dt (d,), A (d, n) complex, B = 1 (d, n), C (d, n) complex, D (d,), all in the compute precision."""
        dt = torch.exp(self.log_dt.to(ct))
        A = torch.complex(-torch.exp(self.log_A_real.to(ct)), self.A_imag.to(ct))
        C = torch.view_as_complex(self.C.to(ct).contiguous())
        return dt, A, torch.ones_like(A), C, self.D.to(ct)

    def _output(self, y: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        y = self.dropout(F.gelu(y)).to(self.out_proj.weight.dtype)
        return F.glu(self.out_proj(y), dim=-1).to(dtype)

    def _check_state(self, state: S4DState, batch: int) -> None:
        if not isinstance(state, S4DState):
            raise TypeError(f"state: expected an S4DState (from init_state), got {type(state).__name__}")
        want = (batch, self.d_model, self.config.d_state // 2)
        if tuple(state.ssm.shape) != want:
            raise ValueError(
                f"state.ssm: expected shape (b, d_model, d_state/2) = {want}, got {tuple(state.ssm.shape)}"
            )

    def forward(
        self, x: torch.Tensor, state: S4DState | None = None, *, seq_idx: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, S4DState | None]:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"x: expected a torch.Tensor, got {type(x).__name__}")
        if x.dim() != 3 or x.shape[-1] != self.d_model:
            raise ValueError(f"x: expected shape (b, l, d_model={self.d_model}), got {tuple(x.shape)}")
        if state is not None:
            self._check_state(state, x.shape[0])
        ct = self._compute_dtype(x)
        dt, A, B, C, D = self._ssm_params(ct)
        out = s4d_conv(
            x.to(ct), dt, A, B, C, D, initial_state=None if state is None else state.ssm,
            return_final_state=state is not None, seq_idx=seq_idx, backend=self.config.backend,
        )  # fmt: skip
        if state is None:
            return self._output(out, x.dtype), None
        y, final = out
        return self._output(y, x.dtype), S4DState(final.to(state.ssm.dtype))

    def init_state(self, batch_size: int, device=None, dtype=None) -> S4DState:
        """Zeros (batch_size, d_model, d_state/2), complex128 for dtype float64, else complex64."""
        device = device or self.log_dt.device
        cdt = torch.complex128 if (dtype or self.log_dt.dtype) == torch.float64 else torch.complex64
        return S4DState(torch.zeros(batch_size, self.d_model, self.config.d_state // 2, device=device, dtype=cdt))

    def step(self, x_t: torch.Tensor, state: S4DState) -> tuple[torch.Tensor, S4DState]:
        """One token in recurrent mode; updates state.ssm in place and returns it."""
        if not isinstance(x_t, torch.Tensor):
            raise TypeError(f"x_t: expected a torch.Tensor, got {type(x_t).__name__}")
        if x_t.dim() != 2 or x_t.shape[-1] != self.d_model:
            raise ValueError(f"x_t: expected shape (b, d_model={self.d_model}), got {tuple(x_t.shape)}")
        self._check_state(state, x_t.shape[0])
        ct = self._compute_dtype(x_t)
        dt, A, B, C, D = self._ssm_params(ct)
        A_bar, B_bar = discretize_zoh(dt, A, B)
        y, h = s4d_step(x_t.to(ct), state.ssm, A_bar, B_bar, C, D)
        state.ssm.copy_(h)
        return self._output(y, x_t.dtype), state
