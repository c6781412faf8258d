"""Multi-query associative recall, MQAR (Zoology, Arora et al. 2023).

The sequence opens with `num_pairs` key-value pairs (distinct keys; keys and values from disjoint pools). Later,
`num_queries` of those keys (distinct, random order) reappear at random places in a filler stretch, each followed by
its value; the model must output the value at the query key. With several queries per sequence the model has to
hold every pair, not only the last one, which is what separates attention from fixed-size recurrent states.

Vocabulary (vocab_size = 1 + num_keys + num_values):
    0                                       <pad>  filler between queries
    1 .. num_keys                           k0 .. k{num_keys-1}
    num_keys+1 .. num_keys+num_values       v0 .. v{num_values-1}   (drawn uniformly, repeats allowed)

Layout (language-model style: the value follows its query in the inputs too):
    inputs    k v k v .. k v | <pad> .. k_q v_q <pad> .. k_r v_r ..
    targets   -100 ...              .. v_q            .. v_r       (at the query keys)

Paper scale: seq_len 256 with num_pairs = seq_len / 4 = 64 queried once each, vocabulary 8192:
`MQAR.from_preset("paper")`. Queries are placed uniformly (Zoology biases them by a power law; not done here).
extras: "query_pairs" (b, num_queries), the index in the opening list of the pair each query asks for.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from ._sampling import place_blocks, randint, random_subset, write_blocks
from .base import IGNORE_INDEX, Task, TaskBatch, check_fits, check_int


@dataclass(frozen=True)
class MQAR(Task):
    seq_len: int = 64
    num_pairs: int = 8
    num_queries: int = 8
    num_keys: int = 32
    num_values: int = 32

    name: ClassVar[str] = "mqar"
    presets: ClassVar[dict] = {
        "paper": {"seq_len": 256, "num_pairs": 64, "num_queries": 64, "num_keys": 4096, "num_values": 4095}
    }
    PAD: ClassVar[int] = 0
    FIRST_KEY: ClassVar[int] = 1

    def __post_init__(self) -> None:
        check_int("seq_len", self.seq_len, 1)
        check_int("num_pairs", self.num_pairs, 1)
        check_int("num_queries", self.num_queries, 1)
        check_int("num_keys", self.num_keys, 1)
        check_int("num_values", self.num_values, 1)
        if self.num_queries > self.num_pairs:
            raise ValueError(
                f"{self.name}: num_queries = {self.num_queries} must be at most num_pairs = {self.num_pairs} "
                "(each query asks for a different pair)"
            )
        if self.num_pairs > self.num_keys:
            raise ValueError(
                f"{self.name}: num_pairs = {self.num_pairs} must be at most num_keys = {self.num_keys} "
                "(the keys of one sequence are distinct)"
            )
        check_fits(
            self.name,
            self.seq_len,
            2 * (self.num_pairs + self.num_queries),
            f"num_pairs = {self.num_pairs} pairs and num_queries = {self.num_queries} queries of 2 tokens each",
        )

    @property
    def first_value(self) -> int:
        return self.FIRST_KEY + self.num_keys

    @property
    def vocab_size(self) -> int:
        return self.first_value + self.num_values

    @property
    def num_answers(self) -> int:
        return self.num_queries

    def token_names(self) -> list[str]:
        return ["<pad>", *(f"k{i}" for i in range(self.num_keys)), *(f"v{i}" for i in range(self.num_values))]

    def _sample(self, batch_size: int, generator: torch.Generator) -> TaskBatch:
        b, p, q = batch_size, self.num_pairs, self.num_queries
        keys = random_subset(b, self.num_keys, p, generator, ordered=False) + self.FIRST_KEY  # (b, p)
        values = randint(self.first_value, self.vocab_size, (b, p), generator)  # (b, p)
        asked = random_subset(b, p, q, generator, ordered=False)  # (b, q)
        starts = place_blocks(b, self.seq_len - 2 * p, q, 2, generator) + 2 * p  # (b, q)

        inputs = torch.full((b, self.seq_len), self.PAD, dtype=torch.long, device=keys.device)
        inputs[:, : 2 * p] = torch.stack([keys, values], dim=-1).flatten(1)  # (b, 2p)
        query_values = values.gather(1, asked)  # (b, q)
        write_blocks(inputs, starts, torch.stack([keys.gather(1, asked), query_values], dim=-1))  # (b, q, 2)
        targets = torch.full_like(inputs, IGNORE_INDEX)
        targets.scatter_(1, starts, query_values)
        return TaskBatch(inputs, targets, starts, {"query_pairs": asked})
