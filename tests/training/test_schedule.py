import itertools
import math

import pytest

from ssmkit.training import warmup_cosine_lr


def lr_at(step, lr=1.0, total=110, warmup=10, ratio=0.1):
    return warmup_cosine_lr(step, lr=lr, total_steps=total, warmup_steps=warmup, min_lr_ratio=ratio)


def test_linear_warmup_reaches_the_peak():
    assert [lr_at(s, lr=2.0) for s in range(10)] == pytest.approx([2.0 * (s + 1) / 10 for s in range(10)])
    assert lr_at(10, lr=2.0) == pytest.approx(2.0)


def test_cosine_decay_to_the_floor():
    assert lr_at(60) == pytest.approx(0.55)  # halfway through the decay: the mean of peak and floor
    assert lr_at(35) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi / 4)))
    assert lr_at(110) == pytest.approx(0.1)
    assert lr_at(500) == pytest.approx(0.1)
    values = [lr_at(s) for s in range(10, 111)]
    assert all(a > b for a, b in itertools.pairwise(values))


def test_no_warmup_and_zero_floor():
    assert lr_at(0, warmup=0, ratio=0.0) == pytest.approx(1.0)
    assert lr_at(109, warmup=0, ratio=0.0, total=110) == pytest.approx(0.5 * (1 + math.cos(math.pi * 109 / 110)))
    assert lr_at(110, warmup=0, ratio=0.0, total=110) == pytest.approx(0.0)


def test_constant_when_the_floor_is_the_peak():
    assert {lr_at(s, ratio=1.0) for s in range(10, 120)} == {1.0}


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(step=-1), "step"),
        (dict(total_steps=0), "total_steps"),
        (dict(warmup_steps=-1), "warmup_steps"),
        (dict(min_lr_ratio=1.5), "min_lr_ratio"),
    ],
)
def test_bad_arguments_name_themselves(kwargs, name):
    args = dict(step=0, lr=1.0, total_steps=10, warmup_steps=0, min_lr_ratio=0.0) | kwargs
    step = args.pop("step")
    with pytest.raises(ValueError, match=name):
        warmup_cosine_lr(step, **args)
