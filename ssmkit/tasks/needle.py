"""Needle in a haystack, on synthetic text.

A haystack of filler sentences (random words from a small filler vocabulary, ended by periods) hides one key fact,
the sentence "the magic word is X .", at a random depth; the sequence ends with the question
"what is the magic word ?", where the model must output X. Depth is the needle's start as a fraction of the room
the haystack leaves for it (0 = first token, 1 = right before the question), drawn uniformly from `depth_range`;
give (d, d) to probe one depth, as in the usual depth-by-length grid.

Vocabulary (vocab_size = 7 + num_values + num_filler):
    0 "."   1 "the"   2 "magic"   3 "word"   4 "is"   5 "what"   6 "?"
    7 .. 6+num_values                  x0 .. x{num_values-1}, the values; only the needle carries one
    7+num_values ..                    w0 .. w{num_filler-1}, the filler words

Layout (seq_len = haystack + 6):
    inputs    w w . w w w . the magic word is X . w w . w .. w   what is the magic word ?
    targets   -100 ...                                                                   X

extras: "value_position" (b,), where X sits in the haystack; "depth" (b,) float, the drawn depth.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from ._sampling import end_sentences_before, filler_text, randint, uniform, write_blocks
from .base import IGNORE_INDEX, Task, TaskBatch, check_fits, check_int

PERIOD, THE, MAGIC, WORD, IS, WHAT, QUESTION = range(7)
NEEDLE = (THE, MAGIC, WORD, IS)  # then the value, then PERIOD
ASK = (WHAT, IS, THE, MAGIC, WORD, QUESTION)
SPECIAL_NAMES = (".", "the", "magic", "word", "is", "what", "?")


@dataclass(frozen=True)
class Needle(Task):
    seq_len: int = 128
    num_values: int = 16
    num_filler: int = 32
    mean_sentence_len: int = 8
    depth_range: tuple[float, float] = (0.0, 1.0)

    name: ClassVar[str] = "needle"
    FIRST_VALUE: ClassVar[int] = len(SPECIAL_NAMES)
    NEEDLE_LEN: ClassVar[int] = len(NEEDLE) + 2
    ASK_LEN: ClassVar[int] = len(ASK)

    def __post_init__(self) -> None:
        check_int("seq_len", self.seq_len, 1)
        check_int("num_values", self.num_values, 1)
        check_int("num_filler", self.num_filler, 1)
        check_int("mean_sentence_len", self.mean_sentence_len, 2)
        depth = self.depth_range
        if not isinstance(depth, tuple | list) or len(depth) != 2 or not all(isinstance(d, int | float) for d in depth):
            raise TypeError(f"depth_range: expected a pair of floats (low, high), got {depth!r}")
        low, high = float(depth[0]), float(depth[1])
        if not 0.0 <= low <= high <= 1.0:
            raise ValueError(f"depth_range = {depth!r} must satisfy 0 <= low <= high <= 1")
        object.__setattr__(self, "depth_range", (low, high))
        check_fits(
            self.name,
            self.seq_len,
            self.NEEDLE_LEN + self.ASK_LEN,
            f"the {self.NEEDLE_LEN}-token needle and the {self.ASK_LEN}-token question",
        )

    @property
    def first_filler(self) -> int:
        return self.FIRST_VALUE + self.num_values

    @property
    def vocab_size(self) -> int:
        return self.first_filler + self.num_filler

    @property
    def num_answers(self) -> int:
        return 1

    def token_names(self) -> list[str]:
        values = (f"x{i}" for i in range(self.num_values))
        return [*SPECIAL_NAMES, *values, *(f"w{i}" for i in range(self.num_filler))]

    def _sample(self, batch_size: int, generator: torch.Generator) -> TaskBatch:
        b, haystack = batch_size, self.seq_len - self.ASK_LEN
        inputs = torch.empty((b, self.seq_len), dtype=torch.long, device=generator.device)
        inputs[:, :haystack] = filler_text(
            b, haystack, self.first_filler, self.num_filler, PERIOD, self.mean_sentence_len, generator
        )
        inputs[:, haystack:] = torch.tensor(ASK, device=inputs.device)

        low, high = self.depth_range
        depth = low + (high - low) * uniform((b,), generator)  # (b,)
        room = haystack - self.NEEDLE_LEN
        start = (depth * room).floor().long().clamp(max=room).unsqueeze(1)  # (b, 1)
        value = randint(self.FIRST_VALUE, self.first_filler, (b, 1), generator)  # (b, 1)
        prefix = torch.tensor(NEEDLE, device=inputs.device).expand(b, -1)  # (b, 4)
        period = torch.full_like(value, PERIOD)
        end_sentences_before(inputs, start, PERIOD)
        write_blocks(inputs, start, torch.cat([prefix, value, period], dim=1).unsqueeze(1))  # (b, 1, 6)

        targets = torch.full_like(inputs, IGNORE_INDEX)
        targets[:, -1:] = value
        answer_positions = torch.full((b, 1), self.seq_len - 1, dtype=torch.long, device=inputs.device)
        extras = {"value_position": start.squeeze(1) + len(NEEDLE), "depth": depth}
        return TaskBatch(inputs, targets, answer_positions, extras)
