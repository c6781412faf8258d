"""Backend choice for ops: "auto" | "reference" | "torch" | "triton".

Each op registers the backends it has. "auto" picks triton on CUDA tensors when the op has a Triton path and
Triton imports, else torch. A fallback is never silent: `backend_report()` says what "auto" picks and why, and
`ssmkit env` and the benchmarks print it.
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass, field

import torch

BACKENDS = ("auto", "reference", "torch", "triton")


@dataclass
class OpBackends:
    """The backends one op has; `triton` is filled in by the op's Triton module when it exists."""

    name: str
    available: set[str] = field(default_factory=lambda: {"reference", "torch"})


_REGISTRY: dict[str, OpBackends] = {}


def register_op(name: str, *backends: str) -> OpBackends:
    entry = _REGISTRY.setdefault(name, OpBackends(name))
    entry.available.update(backends)
    return entry


@functools.cache
def triton_status() -> tuple[bool, str]:
    """(usable, reason): Triton needs the package and either a CUDA device or TRITON_INTERPRET=1."""
    import os

    try:
        import triton  # noqa: F401
    except Exception as exc:  # ImportError, or a broken install raising anything at import
        return False, f"triton does not import ({type(exc).__name__}: {exc})"
    if os.environ.get("TRITON_INTERPRET") == "1":
        return True, "TRITON_INTERPRET=1 (kernels interpreted on CPU)"
    if not torch.cuda.is_available():
        return False, "no CUDA device"
    return True, "CUDA device present"


def resolve_backend(op: str, backend: str, device: torch.device) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"backend: expected one of {BACKENDS}, got {backend!r}")
    entry = _REGISTRY[op]
    if backend == "auto":
        if device.type == "cuda" and "triton" in entry.available and triton_status()[0]:
            return "triton"
        return "torch"
    if backend not in entry.available:
        raise ValueError(f"backend={backend!r} is not implemented for {op}; it has {sorted(entry.available)}")
    if backend == "triton":
        usable, reason = triton_status()
        if not usable:
            raise ValueError(f"backend='triton' for {op} cannot run: {reason}")
        if device.type != "cuda" and reason.startswith("CUDA"):
            raise ValueError(f"backend='triton' for {op} needs CUDA tensors, got tensors on {device}")
    return backend


def float64_reason(name: str, t: torch.Tensor) -> str | None:
    """Why the Triton kernels refuse `t` (they take float16, bfloat16 and float32), or None."""
    if t.dtype != torch.float64:
        return None
    return f"{name} is float64; the kernels take float16, bfloat16 or float32 (use backend='torch' or 'reference')"


@functools.cache
def _warn_fallback(op: str, reason: str) -> None:
    warnings.warn(f"{op}: the Triton kernels cannot take this call ({reason}); running the torch path", stacklevel=4)


def away_from_triton(op: str, backend: str, chosen: str, reason: str | None) -> str:
    """The backend that runs when the Triton kernels cannot take a call (`reason`; None: they can): asked for by
    name, an error naming the reason; under "auto", the torch path with a warning (once per reason)."""
    if chosen != "triton" or reason is None:
        return chosen
    if backend == "triton":
        raise ValueError(f"backend='triton' for {op}: {reason}")
    _warn_fallback(op, reason)
    return "torch"


def backend_report() -> list[dict[str, str]]:
    """For every op and device type: what "auto" picks and why (for `ssmkit env` and benchmark output)."""
    rows = []
    usable, reason = triton_status()
    for name, entry in sorted(_REGISTRY.items()):
        for device in ("cpu", "cuda"):
            chosen = resolve_backend(name, "auto", torch.device(device))
            if chosen == "triton":
                why = "Triton kernel"
            elif device == "cpu":
                why = "pure-PyTorch path (Triton kernels are for CUDA tensors)"
            elif "triton" not in entry.available:
                why = "fallback: no Triton kernel for this op yet"
            else:
                why = f"fallback: {reason}" if not usable else "pure-PyTorch path"
            rows.append({"op": name, "device": device, "backend": chosen, "why": why})
    return rows
