"""Progress display of a training run: a tqdm bar with loss, lr and tokens/s, or plain lines."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable

logger = logging.getLogger("ssmkit.training")


class Progress:
    """A tqdm bar (progress=True and tqdm installed), else one plain line per record: printed to stderr when a bar
    was asked for but tqdm is missing, else sent to the "ssmkit.training" logger at INFO."""

    def __init__(self, total: int, initial: int, enabled: bool):
        self.bar = None
        self.emit: Callable[[str], None] = logger.info
        if not enabled:
            return
        try:
            from tqdm import tqdm
        except ImportError:
            self.emit = lambda line: print(line, file=sys.stderr, flush=True)
        else:
            self.bar = tqdm(total=total, initial=initial, desc="train", unit="step", dynamic_ncols=True)

    def advance(self) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def show(self, record: dict[str, float], total: int) -> None:
        if self.bar is None:
            self.emit(_format(record, total))
            return
        self.bar.set_postfix(
            loss=f"{record['loss']:.4f}", lr=f"{record['lr']:.2e}", tok_s=f"{record['tokens_per_s']:,.0f}"
        )
        if any(k.startswith("eval_") for k in record):
            self.bar.write(_format(record, total))

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _format(record: dict[str, float], total: int) -> str:
    parts = [f"step {record['step']}/{total}", f"loss {record['loss']:.4f}", f"lr {record['lr']:.2e}"]
    parts += [f"grad_norm {record['grad_norm']:.3f}", f"{record['tokens_per_s']:,.0f} tok/s"]
    shown = [k for k in record if k == "aux_loss" or (k.startswith("eval_") and not k.startswith("eval_num_"))]
    parts += [f"{k} {record[k]:.4g}" for k in shown]
    return " | ".join(parts)
