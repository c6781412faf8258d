"""Contracts every task keeps: shapes, id ranges, answer bookkeeping, determinism, scoring and the registry."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ssmkit.tasks import IGNORE_INDEX, TASKS, Task, TaskBatch, make_task

NAMES = sorted(TASKS)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def perfect_logits(task: Task, batch: TaskBatch, vocab: int | None = None) -> torch.Tensor:
    labels = batch.targets.clamp(min=0)
    return 30.0 * F.one_hot(labels, vocab or task.vocab_size).float()  # (b, l, vocab)


@pytest.mark.parametrize("name", NAMES)
def test_batch_contract(name):
    task = make_task(name)
    batch = task.sample(16, gen(0))
    b, l, k = 16, task.seq_len, task.num_answers
    assert batch.inputs.shape == batch.targets.shape == (b, l)
    assert batch.inputs.dtype == batch.targets.dtype == torch.long
    assert batch.answer_positions.shape == (b, k)
    assert batch.inputs.min() >= 0 and batch.inputs.max() < task.vocab_size
    assert len(task.token_names()) == task.vocab_size
    # Targets are set exactly at the answer positions, increasing along k, and hold real token ids.
    mask = torch.zeros(b, l, dtype=torch.bool).scatter_(1, batch.answer_positions, True)
    assert torch.equal(batch.answer_mask, mask)
    assert (batch.answer_positions.diff(dim=1) > 0).all()
    assert (batch.answers >= 0).all() and (batch.answers < task.vocab_size).all()
    assert (batch.targets[~mask] == IGNORE_INDEX).all()


@pytest.mark.parametrize("name", NAMES)
def test_seeded(name):
    task = make_task(name)
    a, b, c = task.sample(8, gen(3)), task.sample(8, gen(3)), task.sample(8, gen(4))
    assert torch.equal(a.inputs, b.inputs) and torch.equal(a.targets, b.targets)
    assert a.extras.keys() == b.extras.keys() and all(torch.equal(a.extras[n], b.extras[n]) for n in a.extras)
    assert not torch.equal(a.inputs, c.inputs)


@pytest.mark.parametrize("name", NAMES)
def test_seq_len_per_call(name):
    task = make_task(name)
    longer = task.sample(4, gen(0), seq_len=3 * task.seq_len)
    assert longer.inputs.shape == (4, 3 * task.seq_len)
    assert longer.inputs.max() < task.vocab_size
    assert task.with_seq_len(3 * task.seq_len).vocab_size == task.vocab_size
    with pytest.raises(ValueError, match="seq_len"):
        task.sample(4, gen(0), seq_len=2)


@pytest.mark.parametrize("name", NAMES)
def test_evaluate_exact_match(name):
    task = make_task(name)
    batch = task.sample(8, gen(1))
    logits = perfect_logits(task, batch)
    assert task.evaluate(logits, batch) == {
        "exact_match": 1.0,
        "token_accuracy": 1.0,
        "num_examples": 8.0,
        "num_answers": float(8 * task.num_answers),
    }
    # A model vocabulary padded past the task's is fine.
    assert task.evaluate(perfect_logits(task, batch, task.vocab_size + 5), batch)["exact_match"] == 1.0
    assert task.loss(logits, batch).item() < 1e-3

    # One wrong answer token in example 2 fails that whole example, and only that token.
    t = batch.answer_positions[2, -1]
    wrong = (batch.targets[2, t] + 1) % task.vocab_size
    logits[2, t] = 0.0
    logits[2, t, wrong] = 30.0
    scores = task.evaluate(logits, batch)
    assert scores["exact_match"] == 7 / 8
    assert scores["token_accuracy"] == pytest.approx(1 - 1 / (8 * task.num_answers))

    # Wrong predictions off the answer positions do not count.
    noisy = perfect_logits(task, batch)
    off = ~batch.answer_mask
    noisy[off] = torch.randn(int(off.sum()), task.vocab_size)
    assert task.evaluate(noisy, batch)["exact_match"] == 1.0


def test_evaluate_rejects_bad_logits():
    task = make_task("mqar")
    batch = task.sample(2, gen(0))
    with pytest.raises(ValueError, match=r"logits: expected shape \(b, l, vocab\)"):
        task.evaluate(torch.zeros(2, task.seq_len - 1, task.vocab_size), batch)
    with pytest.raises(ValueError, match=f">= {task.vocab_size}"):
        task.evaluate(torch.zeros(2, task.seq_len, task.vocab_size - 1), batch)
    with pytest.raises(TypeError, match="logits"):
        task.evaluate(batch.inputs.tolist(), batch)


def test_sample_rejects_bad_arguments():
    task = make_task("induction_heads")
    with pytest.raises(ValueError, match="batch_size = 0"):
        task.sample(0, gen(0))
    with pytest.raises(TypeError, match="generator"):
        task.sample(2, 0)


def test_registry():
    assert set(TASKS) == {"selective_copying", "induction_heads", "mqar", "needle", "fact_recall"}
    assert make_task("mqar", num_pairs=4, num_queries=2).num_answers == 2
    assert make_task("induction_heads", preset="paper").seq_len == 256
    assert make_task("selective_copying", preset="paper", num_tokens=4).num_tokens == 4
    with pytest.raises(ValueError, match=r"unknown task 'copying'; known tasks: selective_copying, "):
        make_task("copying")
    with pytest.raises(ValueError, match=r"unknown setting\(s\) num_pair; settings are: seq_len, num_pairs"):
        make_task("mqar", num_pair=4)
    with pytest.raises(ValueError, match="unknown preset 'paper'; known presets: small"):
        make_task("needle", preset="paper")
    with pytest.raises(TypeError, match="seq_len: expected an int, got float"):
        make_task("needle", seq_len=100.0)


def test_batch_to_and_decode():
    task = make_task("needle", seq_len=16)
    batch = task.sample(1, gen(0)).to("cpu")
    text = task.decode(batch.inputs[0])
    assert text.endswith("what is the magic word ?") and "the magic word is x" in text
    assert task.decode(batch.targets[0]).split()[-1].startswith("x")
