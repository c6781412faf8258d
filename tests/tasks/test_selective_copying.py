from __future__ import annotations

import pytest
import torch

from ssmkit.tasks import SelectiveCopying, make_task


def test_targets_are_the_data_tokens_in_order():
    task = make_task("selective_copying", seq_len=40, num_tokens=6, num_symbols=5)
    batch = task.sample(32, torch.Generator().manual_seed(0))
    region = task.region_len
    assert region == 34 and task.vocab_size == 7
    assert (batch.inputs[:, region:] == SelectiveCopying.COPY).all()
    assert torch.equal(batch.answer_positions, torch.arange(region, 40).expand(32, 6))
    for inputs, answers, positions in zip(batch.inputs, batch.answers, batch.extras["data_positions"]):
        body = inputs[:region]
        is_data = body >= SelectiveCopying.FIRST_SYMBOL
        assert (body[~is_data] == SelectiveCopying.NOISE).all()
        assert torch.equal(is_data.nonzero().squeeze(1), positions)
        assert torch.equal(body[is_data], answers)


def test_data_positions_vary():
    batch = make_task("selective_copying").sample(64, torch.Generator().manual_seed(1))
    positions = batch.extras["data_positions"]
    assert len({tuple(p) for p in positions.tolist()}) == 64
    assert positions.min() < 8 and positions.max() > 56  # spread over the whole 64-token region


def test_paper_preset():
    task = make_task("selective_copying", preset="paper")
    assert (task.region_len, task.num_tokens, task.num_symbols) == (4096, 16, 16)


def test_bad_configs():
    with pytest.raises(ValueError, match=r"seq_len = 15 is too short: num_tokens = 8 .* seq_len >= 16"):
        SelectiveCopying(seq_len=15, num_tokens=8)
    with pytest.raises(ValueError, match="num_tokens = 0 must be at least 1"):
        SelectiveCopying(num_tokens=0)
    with pytest.raises(ValueError, match="num_symbols = 0"):
        make_task("selective_copying", num_symbols=0)
