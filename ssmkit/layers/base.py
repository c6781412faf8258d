"""The token-mixer protocol every sequence layer follows (S4D, Mamba, Mamba2, Attention).

    y, state = mixer(x, state=None, seq_idx=None)   # x, y: (b, l, d_model)
    state = mixer.init_state(batch_size, device, dtype)
    y_t, state = mixer.step(x_t, state)              # x_t, y_t: (b, d_model)

`forward` with state=None runs a fresh sequence and returns (y, None). With a state it continues from it (a
prefill) and returns the state after the last token. `step` may update the state's tensors in place and returns
it; running `step` over a sequence equals `forward` on it. `seq_idx` (b, l) int marks packed sequences: the
mixer's memory resets wherever it changes along l.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch


@runtime_checkable
class TokenMixer(Protocol):
    def forward(
        self, x: torch.Tensor, state: Any | None = None, *, seq_idx: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, Any | None]: ...

    def init_state(
        self, batch_size: int, device: torch.device | None = None, dtype: torch.dtype | None = None
    ) -> Any: ...

    def step(self, x_t: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any]: ...
