"""Selective copying (Mamba, Gu & Dao 2023, section 3.1 and appendix E.1).

`num_tokens` data tokens sit at random positions in a stretch of noise; then come `num_tokens` copy markers, and
at the j-th marker the model must output the j-th data token in order of appearance. The spacing of the data
changes from example to example, so a time-invariant model (S4D) cannot solve it with one fixed convolution
kernel: it has to select by content.

Vocabulary (vocab_size = num_symbols + 2):
    0                    <noise>   fills the region
    1                    <copy>    marker: "the next data token goes here"
    2 .. num_symbols+1   d0 .. d{num_symbols-1}, the data symbols (drawn uniformly, repeats allowed)

Layout (seq_len = region_len + num_tokens):
    inputs    noise .. d_a .. noise .. d_b .. noise   <copy> <copy> ..
    targets   -100 ...                               d_a    d_b    ..

Paper setting: a 4096-token region, 16 symbols, 16 tokens to copy: `SelectiveCopying.from_preset("paper")`
(seq_len 4112). The paper's "vocabulary 16" is read here as 16 data symbols; noise and marker come on top.
extras: "data_positions" (b, num_tokens), increasing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from ._sampling import randint, random_subset
from .base import IGNORE_INDEX, Task, TaskBatch, check_fits, check_int


@dataclass(frozen=True)
class SelectiveCopying(Task):
    seq_len: int = 72
    num_tokens: int = 8
    num_symbols: int = 16

    name: ClassVar[str] = "selective_copying"
    presets: ClassVar[dict] = {"paper": {"seq_len": 4096 + 16, "num_tokens": 16, "num_symbols": 16}}
    NOISE: ClassVar[int] = 0
    COPY: ClassVar[int] = 1
    FIRST_SYMBOL: ClassVar[int] = 2

    def __post_init__(self) -> None:
        check_int("seq_len", self.seq_len, 1)
        check_int("num_tokens", self.num_tokens, 1)
        check_int("num_symbols", self.num_symbols, 1)
        check_fits(
            self.name,
            self.seq_len,
            2 * self.num_tokens,
            f"num_tokens = {self.num_tokens} data tokens in the region plus as many copy markers",
        )

    @property
    def vocab_size(self) -> int:
        return self.FIRST_SYMBOL + self.num_symbols

    @property
    def num_answers(self) -> int:
        return self.num_tokens

    @property
    def region_len(self) -> int:
        return self.seq_len - self.num_tokens

    def token_names(self) -> list[str]:
        return ["<noise>", "<copy>", *(f"d{i}" for i in range(self.num_symbols))]

    def _sample(self, batch_size: int, generator: torch.Generator) -> TaskBatch:
        b, k, region = batch_size, self.num_tokens, self.region_len
        data = randint(self.FIRST_SYMBOL, self.vocab_size, (b, k), generator)  # (b, k)
        positions = random_subset(b, region, k, generator)  # (b, k), increasing
        inputs = torch.full((b, self.seq_len), self.NOISE, dtype=torch.long, device=data.device)
        inputs.scatter_(1, positions, data)
        inputs[:, region:] = self.COPY
        targets = torch.full_like(inputs, IGNORE_INDEX)
        targets[:, region:] = data
        answer_positions = torch.arange(region, self.seq_len, device=data.device).expand(b, k)  # (b, k)
        return TaskBatch(inputs, targets, answer_positions.clone(), {"data_positions": positions})
