from __future__ import annotations

import pytest
import torch

from ssmkit.tasks import MQAR, make_task


@pytest.mark.parametrize(("seq_len", "pairs", "queries"), [(64, 8, 8), (40, 10, 10), (100, 12, 5)])
def test_each_query_answers_its_keys_value(seq_len, pairs, queries):
    task = make_task("mqar", seq_len=seq_len, num_pairs=pairs, num_queries=queries, num_keys=16, num_values=20)
    batch = task.sample(16, torch.Generator().manual_seed(0))
    first_value = task.first_value
    assert task.vocab_size == 1 + 16 + 20
    for inputs, positions, answers, asked in zip(
        batch.inputs, batch.answer_positions, batch.answers, batch.extras["query_pairs"]
    ):
        keys, values = inputs[: 2 * pairs : 2], inputs[1 : 2 * pairs : 2]
        assert ((keys >= 1) & (keys < first_value)).all() and len(set(keys.tolist())) == pairs
        assert ((values >= first_value) & (values < task.vocab_size)).all()
        lookup = dict(zip(keys.tolist(), values.tolist()))
        query_keys = inputs[positions]
        assert len(set(query_keys.tolist())) == queries
        assert answers.tolist() == [lookup[k] for k in query_keys.tolist()]
        assert torch.equal(inputs[positions + 1], answers)  # the value follows its query, language-model style
        assert torch.equal(query_keys, keys[asked])
        # Outside the pairs and the queries there is only padding.
        rest = torch.ones(seq_len, dtype=torch.bool)
        rest[: 2 * pairs] = False
        rest[positions] = False
        rest[positions + 1] = False
        assert (inputs[rest] == MQAR.PAD).all()


def test_paper_preset():
    task = make_task("mqar", preset="paper")
    assert (task.seq_len, task.num_pairs, task.vocab_size) == (256, 64, 8192)
    batch = task.sample(2, torch.Generator().manual_seed(0))
    assert batch.answers.shape == (2, 64)


def test_bad_configs():
    with pytest.raises(ValueError, match=r"mqar: seq_len = 31 is too short: .* seq_len >= 32"):
        MQAR(seq_len=31, num_pairs=8, num_queries=8)
    with pytest.raises(ValueError, match="num_queries = 9 must be at most num_pairs = 8"):
        MQAR(num_pairs=8, num_queries=9)
    with pytest.raises(ValueError, match="num_pairs = 8 must be at most num_keys = 4"):
        MQAR(num_keys=4)
