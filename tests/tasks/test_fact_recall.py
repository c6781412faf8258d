from __future__ import annotations

import pytest
import torch

from ssmkit.tasks import FactRecall, make_task
from ssmkit.tasks.fact_recall import LIVES_IN, PERIOD, VISITED, WHERE


def facts(inputs: torch.Tensor, relation: int) -> list[tuple[int, int, int]]:
    """(position, name, city) of every `name relation city .` in a 1-D id tensor, the query excluded."""
    found = []
    for t in (inputs[:-3] == relation).nonzero().squeeze(1).tolist():
        assert inputs[t + 2] == PERIOD
        found.append((t - 1, inputs[t - 1].item(), inputs[t + 1].item()))
    return found


def test_answer_is_the_queried_names_city():
    task = make_task("fact_recall", seq_len=100, num_facts=5, num_distractors=6)
    batch = task.sample(32, torch.Generator().manual_seed(0))
    assert (batch.inputs[:, -3] == WHERE).all() and (batch.inputs[:, -1] == LIVES_IN).all()
    confounded = 0
    for inputs, answer, fact_position in zip(batch.inputs, batch.answers, batch.extras["fact_position"]):
        lives = facts(inputs, LIVES_IN)
        visited = facts(inputs, VISITED)
        assert len(lives) == 5 and len(visited) == 6
        names = [name for _, name, _ in lives]
        assert len(set(names)) == 5
        assert all(name in names for _, name, _ in visited)  # distractors are about the same people
        query = inputs[-2].item()
        (match,) = [(p, city) for p, name, city in lives if name == query]
        assert match == (fact_position.item(), answer.item())
        confounded += any(name == query and city != answer.item() for _, name, city in visited)
    assert confounded > 0


def test_without_distractors():
    task = make_task("fact_recall", seq_len=23, num_facts=5, num_distractors=0)  # no room for filler
    batch = task.sample(4, torch.Generator().manual_seed(1))
    assert batch.inputs.max() < task.first_filler
    assert ((batch.inputs == LIVES_IN).sum(dim=1) == 6).all()


def test_bad_configs():
    with pytest.raises(ValueError, match=r"fact_recall: seq_len = 34 is too short: 8 facts .* seq_len >= 35"):
        FactRecall(seq_len=34)
    with pytest.raises(ValueError, match="num_facts = 5 must be at most num_names = 4"):
        FactRecall(num_facts=5, num_names=4)
    with pytest.raises(ValueError, match="num_distractors = -1 must be at least 0"):
        FactRecall(num_distractors=-1)
