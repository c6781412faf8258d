from __future__ import annotations

import pytest
import torch

from ssmkit.tasks import Needle, make_task
from ssmkit.tasks.needle import ASK, NEEDLE, PERIOD


def find_needles(inputs: torch.Tensor) -> list[int]:
    """Start positions of the sequence `the magic word is` in a 1-D id tensor."""
    windows = inputs.unfold(0, len(NEEDLE), 1)  # (l - 3, 4)
    return (windows == torch.tensor(NEEDLE)).all(dim=1).nonzero().squeeze(1).tolist()


def test_answer_is_the_hidden_value():
    task = make_task("needle", seq_len=96)
    batch = task.sample(32, torch.Generator().manual_seed(0))
    assert (batch.inputs[:, -len(ASK) :] == torch.tensor(ASK)).all()
    for inputs, answer, value_position in zip(batch.inputs, batch.answers, batch.extras["value_position"]):
        (start,) = find_needles(inputs)
        assert start + len(NEEDLE) == value_position
        assert inputs[value_position] == answer
        assert start == 0 or inputs[start - 1] == PERIOD
        assert inputs[value_position + 1] == PERIOD
        is_value = (inputs >= task.FIRST_VALUE) & (inputs < task.first_filler)
        assert is_value.sum() == 1  # the filler carries no value token


@pytest.mark.parametrize("depth", [0.0, 0.5, 1.0])
def test_fixed_depth(depth):
    task = make_task("needle", seq_len=106, depth_range=(depth, depth))
    batch = task.sample(8, torch.Generator().manual_seed(1))
    room = 106 - task.ASK_LEN - task.NEEDLE_LEN  # 94 possible starts after the first
    assert (batch.extras["value_position"] == int(depth * room) + len(NEEDLE)).all()


def test_depth_range_and_long_contexts():
    task = make_task("needle", depth_range=[0.25, 0.5])
    assert task.depth_range == (0.25, 0.5)
    batch = task.sample(64, torch.Generator().manual_seed(2), seq_len=4096)
    depth = batch.extras["depth"]
    assert (depth >= 0.25).all() and (depth <= 0.5).all()
    start = batch.extras["value_position"] - len(NEEDLE)
    room = 4096 - task.ASK_LEN - task.NEEDLE_LEN
    assert (start >= 0.25 * room).all() and (start <= 0.5 * room).all()


def test_bad_configs():
    with pytest.raises(ValueError, match=r"needle: seq_len = 11 is too short: .* seq_len >= 12"):
        Needle(seq_len=11)
    with pytest.raises(ValueError, match=r"depth_range = \(0.6, 0.4\) must satisfy 0 <= low <= high <= 1"):
        Needle(depth_range=(0.6, 0.4))
    with pytest.raises(ValueError, match="depth_range"):
        Needle(depth_range=(0.0, 1.5))
    with pytest.raises(TypeError, match="depth_range: expected a pair"):
        Needle(depth_range=0.5)
    with pytest.raises(ValueError, match="mean_sentence_len = 1 must be at least 2"):
        Needle(mean_sentence_len=1)
