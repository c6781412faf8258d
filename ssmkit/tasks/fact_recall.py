"""Fact recall among distractors.

Filler sentences hold `num_facts` facts "name lives_in city ." about distinct names and `num_distractors`
facts "name visited city ." about the same names (random name among them, random city), all at random places and
in random order; the sequence ends with the query "where name lives_in", where the model must output that name's
city. A distractor can pair the queried name with another city, so matching the name alone is not enough: the
model has to bind name, relation and city.

Vocabulary (vocab_size = 4 + num_names + num_cities + num_filler):
    0 "."   1 "lives_in"   2 "visited"   3 "where"
    4 ..                         n0 .. n{num_names-1}
    4+num_names ..               c0 .. c{num_cities-1}    (a fact's city is uniform, repeats allowed)
    4+num_names+num_cities ..    w0 .. w{num_filler-1}    filler words

Layout (seq_len = context + 3):
    inputs    w w . n3 lives_in c7 . w . n1 visited c2 . w w . n1 lives_in c5 . w ..   where n1 lives_in
    targets   -100 ...                                                                          c5

extras: "fact_position" (b,), where the queried "name lives_in city" fact starts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from ._sampling import (
    end_sentences_before,
    filler_text,
    place_blocks,
    randint,
    random_permutation,
    random_subset,
    write_blocks,
)
from .base import IGNORE_INDEX, Task, TaskBatch, check_fits, check_int

PERIOD, LIVES_IN, VISITED, WHERE = range(4)
SPECIAL_NAMES = (".", "lives_in", "visited", "where")
FACT_LEN = 4  # name relation city "."
QUERY_LEN = 3  # where name lives_in


@dataclass(frozen=True)
class FactRecall(Task):
    seq_len: int = 128
    num_facts: int = 4
    num_distractors: int = 4
    num_names: int = 16
    num_cities: int = 16
    num_filler: int = 32
    mean_sentence_len: int = 8

    name: ClassVar[str] = "fact_recall"
    FIRST_NAME: ClassVar[int] = len(SPECIAL_NAMES)

    def __post_init__(self) -> None:
        check_int("seq_len", self.seq_len, 1)
        check_int("num_facts", self.num_facts, 1)
        check_int("num_distractors", self.num_distractors, 0)
        check_int("num_names", self.num_names, 1)
        check_int("num_cities", self.num_cities, 1)
        check_int("num_filler", self.num_filler, 1)
        check_int("mean_sentence_len", self.mean_sentence_len, 2)
        if self.num_facts > self.num_names:
            raise ValueError(
                f"{self.name}: num_facts = {self.num_facts} must be at most num_names = {self.num_names} "
                "(each fact is about a different name)"
            )
        blocks = self.num_facts + self.num_distractors
        check_fits(
            self.name,
            self.seq_len,
            FACT_LEN * blocks + QUERY_LEN,
            f"{blocks} facts of {FACT_LEN} tokens (num_facts + num_distractors) and the {QUERY_LEN}-token query",
        )

    @property
    def first_city(self) -> int:
        return self.FIRST_NAME + self.num_names

    @property
    def first_filler(self) -> int:
        return self.first_city + self.num_cities

    @property
    def vocab_size(self) -> int:
        return self.first_filler + self.num_filler

    @property
    def num_answers(self) -> int:
        return 1

    def token_names(self) -> list[str]:
        names = (f"n{i}" for i in range(self.num_names))
        cities = (f"c{i}" for i in range(self.num_cities))
        return [*SPECIAL_NAMES, *names, *cities, *(f"w{i}" for i in range(self.num_filler))]

    def _facts(self, names: torch.Tensor, relation: int, generator: torch.Generator) -> torch.Tensor:
        cities = randint(self.first_city, self.first_filler, names.shape, generator)  # (b, m)
        fixed = torch.full_like(names, relation), torch.full_like(names, PERIOD)
        return torch.stack([names, fixed[0], cities, fixed[1]], dim=-1)  # (b, m, 4)

    def _sample(self, batch_size: int, generator: torch.Generator) -> TaskBatch:
        b, f, context = batch_size, self.num_facts, self.seq_len - QUERY_LEN
        m = f + self.num_distractors
        names = random_subset(b, self.num_names, f, generator, ordered=False) + self.FIRST_NAME  # (b, f)
        facts = self._facts(names, LIVES_IN, generator)  # (b, f, 4)
        distractor_names = names.gather(1, randint(0, f, (b, self.num_distractors), generator))  # (b, m - f)
        blocks = torch.cat([facts, self._facts(distractor_names, VISITED, generator)], dim=1)  # (b, m, 4)
        order = random_permutation(b, m, generator)  # (b, m): slot j holds block order[j]
        blocks = blocks.gather(1, order.unsqueeze(-1).expand(-1, -1, FACT_LEN))
        starts = place_blocks(b, context, m, FACT_LEN, generator)  # (b, m)

        inputs = torch.empty((b, self.seq_len), dtype=torch.long, device=generator.device)
        inputs[:, :context] = filler_text(
            b, context, self.first_filler, self.num_filler, PERIOD, self.mean_sentence_len, generator
        )
        end_sentences_before(inputs, starts, PERIOD)
        write_blocks(inputs, starts, blocks)

        asked = randint(0, f, (b, 1), generator)  # (b, 1): which "lives_in" fact is queried
        city = facts[:, :, 2].gather(1, asked)  # (b, 1)
        inputs[:, context] = WHERE
        inputs[:, context + 1 : context + 2] = names.gather(1, asked)
        inputs[:, context + 2] = LIVES_IN
        targets = torch.full_like(inputs, IGNORE_INDEX)
        targets[:, -1:] = city
        answer_positions = torch.full((b, 1), self.seq_len - 1, dtype=torch.long, device=inputs.device)
        slot = order.argsort(dim=1).gather(1, asked)  # (b, 1): where the queried fact landed
        return TaskBatch(inputs, targets, answer_positions, {"fact_position": starts.gather(1, slot).squeeze(1)})
