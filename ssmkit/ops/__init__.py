"""Pure tensor ops, each with a reference, a pure-PyTorch fast path and a `backend=` dispatcher."""

from .causal_conv1d import causal_conv1d, causal_conv1d_update
from .norms import gated_rms_norm, rms_norm
from .s4d import (
    discretize_zoh,
    fft_conv,
    hippo_legs,
    s4d_conv,
    s4d_final_state,
    s4d_kernel,
    s4d_legs_init,
    s4d_lin_init,
    s4d_real_init,
    s4d_scan,
    s4d_state_output,
    s4d_step,
)
from .selective_scan import selective_scan, selective_scan_step
from .ssd import ssd, ssd_quadratic, ssd_step

__all__ = [
    "causal_conv1d",
    "causal_conv1d_update",
    "discretize_zoh",
    "fft_conv",
    "gated_rms_norm",
    "hippo_legs",
    "rms_norm",
    "s4d_conv",
    "s4d_final_state",
    "s4d_kernel",
    "s4d_legs_init",
    "s4d_lin_init",
    "s4d_real_init",
    "s4d_scan",
    "s4d_state_output",
    "s4d_step",
    "selective_scan",
    "selective_scan_step",
    "ssd",
    "ssd_quadratic",
    "ssd_step",
]
