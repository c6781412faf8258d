"""The project's one tolerance rule (guide section 4).

A fast path's error against the exact reference (fp64) may be at most twice the error of the reference run in the
fast path's own dtype, plus a small floor relative to the output's scale. No per-test tolerances.
"""

from __future__ import annotations

import torch

FLOOR = {torch.float64: 1e-12, torch.float32: 1e-6, torch.bfloat16: 1e-3, torch.float16: 1e-4}


def max_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.double() - b.double()).abs().max().item()


def rule_bound(err_ref: float, ref_exact: torch.Tensor, dtype: torch.dtype) -> float:
    """The largest error allowed a fast path in `dtype` whose same-dtype reference is err_ref off the exact one."""
    return 2.0 * err_ref + FLOOR[dtype] * max(1.0, ref_exact.abs().max().item())


def assert_by_rule(name: str, fast: torch.Tensor, ref_same_dtype: torch.Tensor, ref_exact: torch.Tensor) -> None:
    """fast and ref_same_dtype ran in the same dtype; ref_exact is the fp64 reference."""
    assert fast.shape == ref_exact.shape, f"{name}: shape {tuple(fast.shape)} != {tuple(ref_exact.shape)}"
    assert not torch.isnan(fast).any(), f"{name}: NaN in the fast path's output"
    err_fast = max_err(fast, ref_exact)
    err_ref = max_err(ref_same_dtype, ref_exact)
    bound = rule_bound(err_ref, ref_exact, fast.dtype)
    assert err_fast <= bound, f"{name}: error {err_fast:.3e} > bound {bound:.3e} (reference's own error {err_ref:.3e})"


def grads(outputs: tuple[torch.Tensor, ...], inputs: list[torch.Tensor | None], seed_grads: tuple) -> list:
    """Gradients of sum(out * g) for fixed random g, one per input (None stays None)."""
    present = [t for t in inputs if t is not None]
    got = torch.autograd.grad(outputs, present, grad_outputs=seed_grads, allow_unused=True)
    it = iter(got)
    return [None if t is None else next(it) for t in inputs]
