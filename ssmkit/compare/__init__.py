"""`ssmkit compare`: S4D, Mamba, Mamba-2, a Transformer and a hybrid at matched parameter counts, trained on the seed
documents' tasks and measured (forward time and memory per length, decode time and state size per context).

    from ssmkit.compare import CompareOptions, run_compare
    results = run_compare(CompareOptions(out="compare-report"))     # report.md, results.json, PNG plots
    results["accuracy"]["selective_copying"]["mamba"]                # exact match, a fraction
"""

from .archs import ARCHITECTURES, Architecture, ParamMatch, match_params
from .costs import DecodeCostRow, ForwardCostRow, decode_cost, fit_loglog_slope, forward_cost
from .costs_memory import cpu_peak_bytes, peak_memory
from .costs_state import StateBytes, fill_kv_synthetic, kv_caches, state_bytes
from .run import CompareOptions, run_compare
from .settings import SCALES, Scale, TaskPlan

__all__ = [
    "ARCHITECTURES",
    "SCALES",
    "Architecture",
    "CompareOptions",
    "DecodeCostRow",
    "ForwardCostRow",
    "ParamMatch",
    "Scale",
    "StateBytes",
    "TaskPlan",
    "cpu_peak_bytes",
    "decode_cost",
    "fill_kv_synthetic",
    "fit_loglog_slope",
    "forward_cost",
    "kv_caches",
    "match_params",
    "peak_memory",
    "run_compare",
    "state_bytes",
]
