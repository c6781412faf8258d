import json

import pytest
import torch
from safetensors import safe_open

from ssmkit.training import Trainer, latest_checkpoint, load_checkpoint, load_weights, train
from ssmkit.training import checkpoint as ckpt


def test_tied_weights_are_stored_once_and_restored(tmp_path, task, make_model, quick):
    trainer = Trainer(make_model(), task, quick(steps=2, out_dir=tmp_path))
    trainer.fit()
    path = latest_checkpoint(tmp_path)
    assert path.name == "step-00000002"
    with safe_open(path / "model.safetensors", framework="pt") as f:
        names = set(f.keys())
        assert "embedding.weight" in names and "lm_head.weight" not in names
        assert json.loads(f.metadata()["aliases"]) == {"lm_head.weight": "embedding.weight"}
    model = make_model()
    state, configs = load_checkpoint(path, model)
    assert model.lm_head.weight is model.embedding.weight
    for name, value in trainer.model.state_dict().items():
        assert torch.equal(model.state_dict()[name], value), name
    assert state["step"] == 2 and configs["train"]["steps"] == 2
    assert set(load_weights(path / "model.safetensors")) == set(model.state_dict())


def test_untied_model_round_trips(tmp_path, task, make_model, quick):
    model = make_model(tie_embeddings=False)
    train(model, task, quick(steps=1, out_dir=tmp_path))
    loaded = load_weights(latest_checkpoint(tmp_path) / "model.safetensors")
    assert all(torch.equal(loaded[k], v) for k, v in model.state_dict().items())


def test_a_failed_save_keeps_the_previous_checkpoint(tmp_path, task, make_model, quick, monkeypatch):
    trainer = Trainer(make_model(), task, quick(steps=4, checkpoint_every=2, out_dir=tmp_path))
    real_save = ckpt.torch.save

    def failing_save(obj, f):
        real_save(obj, f)
        if obj["step"] == 4:
            raise OSError("disk full")  # the second save fails with its folder half written

    monkeypatch.setattr(ckpt.torch, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        trainer.fit()
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["latest", "step-00000002"]
    state, _ = load_checkpoint(latest_checkpoint(tmp_path), make_model())
    assert state["step"] == 2 and len(state["history"]["loss"]) == 2


def test_only_the_latest_checkpoint_is_kept(tmp_path, task, make_model, quick):
    train(make_model(), task, quick(steps=5, checkpoint_every=2, out_dir=tmp_path))
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["latest", "step-00000005"]
    assert latest_checkpoint(tmp_path / "nowhere") is None
