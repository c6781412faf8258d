from __future__ import annotations

import pytest
import torch

from ssmkit.tasks import InductionHeads, make_task


@pytest.mark.parametrize("seq_len", [3, 64, 1000])
def test_target_follows_the_first_trigger(seq_len):
    task = make_task("induction_heads")
    batch = task.sample(32, torch.Generator().manual_seed(0), seq_len=seq_len)
    trigger = InductionHeads.TRIGGER
    assert (batch.inputs[:, -1] == trigger).all()
    assert ((batch.inputs == trigger).sum(dim=1) == 2).all()
    first = (batch.inputs == trigger).int().argmax(dim=1)  # (b,)
    assert torch.equal(first, batch.extras["trigger_position"])
    assert (first <= seq_len - 3).all()
    assert torch.equal(batch.answers.squeeze(1), batch.inputs.gather(1, first[:, None] + 1).squeeze(1))
    assert (batch.answer_positions == seq_len - 1).all()


def test_trigger_positions_spread():
    batch = make_task("induction_heads", seq_len=32).sample(256, torch.Generator().manual_seed(2))
    assert set(batch.extras["trigger_position"].tolist()) == set(range(30))


def test_bad_configs():
    with pytest.raises(ValueError, match=r"induction_heads: seq_len = 2 is too short"):
        InductionHeads(seq_len=2)
    with pytest.raises(ValueError, match="num_symbols = 0"):
        InductionHeads(num_symbols=0)
