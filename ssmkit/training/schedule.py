"""Learning-rate schedule: linear warmup to the peak, then a half cosine down to peak * min_lr_ratio.

    lr(s) = lr * (s + 1) / W                                          s < W      (s: 0-based update index)
    lr(s) = lr_min + (lr - lr_min) * (1 + cos(pi * (s - W) / (T - W))) / 2     W <= s <= T
    lr(s) = lr_min                                                    s >= T
with W = warmup_steps, T = total_steps, lr_min = lr * min_lr_ratio. The first update already moves (lr / W), the
W-th reaches the peak, and the curve would touch lr_min one step after the last update (s = T).
It is a pure function of the step, so a resumed run needs nothing but the step to continue the curve.
"""

from __future__ import annotations

import math


def warmup_cosine_lr(
    step: int, *, lr: float, total_steps: int, warmup_steps: int = 0, min_lr_ratio: float = 0.0
) -> float:
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise ValueError(f"step: expected an int >= 0, got {step!r}")
    if isinstance(total_steps, bool) or not isinstance(total_steps, int) or total_steps < 1:
        raise ValueError(f"total_steps: expected an int >= 1, got {total_steps!r}")
    if isinstance(warmup_steps, bool) or not isinstance(warmup_steps, int) or warmup_steps < 0:
        raise ValueError(f"warmup_steps: expected an int >= 0, got {warmup_steps!r}")
    if not 0.0 <= min_lr_ratio <= 1.0:
        raise ValueError(f"min_lr_ratio: expected a number in [0, 1], got {min_lr_ratio!r}")
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    min_lr = lr * min_lr_ratio
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_lr + (lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))
