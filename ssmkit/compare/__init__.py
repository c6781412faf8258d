"""`ssmkit compare`: measured costs (forward time and memory, decode time and state size) per architecture."""

from .costs import DecodeCostRow, ForwardCostRow, decode_cost, fit_loglog_slope, forward_cost
from .costs_memory import cpu_peak_bytes, peak_memory
from .costs_state import StateBytes, fill_kv_synthetic, kv_caches, state_bytes

__all__ = [
    "DecodeCostRow",
    "ForwardCostRow",
    "StateBytes",
    "cpu_peak_bytes",
    "decode_cost",
    "fill_kv_synthetic",
    "fit_loglog_slope",
    "forward_cost",
    "kv_caches",
    "peak_memory",
    "state_bytes",
]
