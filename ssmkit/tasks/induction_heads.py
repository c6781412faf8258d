"""Induction heads (Olsson et al. 2022; the Mamba paper's length-generalisation test, section 4.1.2).

Random symbols; a trigger token appears once at a random position, followed by the target symbol; the sequence
ends with the trigger again, where the model must output the target ("after the trigger came X before, so X").
Trained at one length, evaluated at many times it: `task.sample(b, gen, seq_len=64 * task.seq_len)`.

Vocabulary (vocab_size = num_symbols + 1):
    0                    <trigger>  appears exactly twice: at trigger_position and at the last position
    1 .. num_symbols     s0 .. s{num_symbols-1}, uniform random symbols

Layout:
    inputs    s s s .. <trigger> X s s .. s <trigger>
    targets   -100 ...                     X          (at position seq_len - 1)

Paper setting: training length 256, vocabulary 16, evaluated up to 2^20: `InductionHeads.from_preset("paper")`.
extras: "trigger_position" (b,), the first trigger; the target sits right after it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from ._sampling import randint
from .base import IGNORE_INDEX, Task, TaskBatch, check_fits, check_int


@dataclass(frozen=True)
class InductionHeads(Task):
    seq_len: int = 64
    num_symbols: int = 16

    name: ClassVar[str] = "induction_heads"
    presets: ClassVar[dict] = {"paper": {"seq_len": 256, "num_symbols": 16}}
    TRIGGER: ClassVar[int] = 0
    FIRST_SYMBOL: ClassVar[int] = 1

    def __post_init__(self) -> None:
        check_int("seq_len", self.seq_len, 1)
        check_int("num_symbols", self.num_symbols, 1)
        check_fits(self.name, self.seq_len, 3, "the trigger, its target and the final trigger")

    @property
    def vocab_size(self) -> int:
        return self.FIRST_SYMBOL + self.num_symbols

    @property
    def num_answers(self) -> int:
        return 1

    def token_names(self) -> list[str]:
        return ["<trigger>", *(f"s{i}" for i in range(self.num_symbols))]

    def _sample(self, batch_size: int, generator: torch.Generator) -> TaskBatch:
        b, l = batch_size, self.seq_len
        inputs = randint(self.FIRST_SYMBOL, self.vocab_size, (b, l), generator)  # (b, l)
        # The first trigger may sit anywhere that leaves its target before the final trigger: [0, l - 3].
        trigger = randint(0, l - 2, (b, 1), generator)  # (b, 1)
        inputs.scatter_(1, trigger, self.TRIGGER)
        inputs[:, -1] = self.TRIGGER
        targets = torch.full_like(inputs, IGNORE_INDEX)
        targets[:, -1:] = inputs.gather(1, trigger + 1)
        answer_positions = torch.full((b, 1), l - 1, dtype=torch.long, device=inputs.device)
        return TaskBatch(inputs, targets, answer_positions, {"trigger_position": trigger.squeeze(1)})
