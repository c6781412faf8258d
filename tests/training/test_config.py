import json

import pytest

from ssmkit.training import TrainConfig


def test_json_round_trip(tmp_path):
    cfg = TrainConfig(steps=7, betas=(0.8, 0.99), out_dir=tmp_path / "run", precision="bf16", device="cuda:1")
    assert cfg.out_dir == str(tmp_path / "run")
    assert TrainConfig.from_json(cfg.to_json()) == cfg
    cfg.to_json(tmp_path / "train.json")
    assert TrainConfig.from_json(tmp_path / "train.json") == cfg
    assert json.loads(cfg.to_json())["betas"] == [0.8, 0.99]
    assert cfg.replace(lr=1).lr == 1.0


@pytest.mark.parametrize(
    "field, value",
    [
        ("steps", 0),
        ("steps", 2.5),
        ("steps", True),
        ("batch_size", 0),
        ("lr", 0.0),
        ("lr", float("nan")),
        ("min_lr_ratio", 1.5),
        ("warmup_steps", -1),
        ("weight_decay", -0.1),
        ("betas", (0.9,)),
        ("betas", (0.9, 1.0)),
        ("grad_clip", -1.0),
        ("eval_every", -1),
        ("eval_batches", 0),
        ("log_every", 0),
        ("seed", -1),
        ("device", "tpu"),
        ("device", "cuda:x"),
        ("precision", "fp16"),
        ("checkpoint_every", -2),
        ("out_dir", ""),
        ("progress", "yes"),
    ],
)
def test_bad_values_raise_naming_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        TrainConfig(**{field: value})


def test_unknown_fields_are_named():
    with pytest.raises(ValueError, match="learning_rate"):
        TrainConfig.from_dict({"learning_rate": 1e-3})
