import json
import math
import sys

import pytest
import torch

from ssmkit.training import NonFiniteLossError, TrainConfig, Trainer, token_windows, train


def test_training_lowers_the_loss(task, make_model, quick):
    result = train(make_model(), task, quick(steps=40, batch_size=16, warmup_steps=4, eval_every=20, eval_batches=2))
    first, last = sum(result.losses[:5]) / 5, sum(result.losses[-5:]) / 5
    assert first - last > 0.2, (first, last)
    assert result.steps == 40 and len(result.losses) == len(result.grad_norms) == 40
    assert all(g > 0 for g in result.grad_norms)
    assert [e["step"] for e in result.evals] == [20, 40]
    assert result.metrics["step"] == 40 and 0.0 <= result.metrics["eval_token_accuracy"] <= 1.0
    assert result.metrics["eval_loss"] < first


def test_metrics_jsonl_and_config(tmp_path, task, make_model, quick):
    result = train(make_model(), task, quick(steps=5, eval_every=4, out_dir=tmp_path))
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [2, 4, 5]
    for r in records:
        assert {"step", "loss", "lr", "grad_norm", "tokens_per_s"} <= set(r)
        assert all(math.isfinite(v) for v in r.values())
    assert "eval_exact_match" in records[1] and "eval_exact_match" not in records[0]
    assert records[0]["loss"] == pytest.approx(sum(result.losses[:2]) / 2)
    assert records[-1] == result.metrics
    configs = json.loads((tmp_path / "config.json").read_text())
    assert TrainConfig.from_dict(configs["train"]).steps == 5
    assert configs["model"]["d_model"] == 32


def test_same_seed_same_losses(task, make_model, quick):
    a = train(make_model(), task, quick(steps=4))
    b = train(make_model(), task, quick(steps=4))
    c = train(make_model(), task, quick(steps=4, seed=1))
    assert a.losses == b.losses and a.grad_norms == b.grad_norms
    assert a.losses != c.losses


class Crash(RuntimeError):
    pass


def test_resume_equals_an_uninterrupted_run(tmp_path, task, make_model, quick):
    uninterrupted = Trainer(make_model(), task, quick(out_dir=tmp_path / "a", checkpoint_every=3))
    straight = uninterrupted.fit()

    def crashing(step, generator):
        if step == 3:
            raise Crash
        return task.sample(8, generator)

    cfg = quick(out_dir=tmp_path / "b", checkpoint_every=3)
    with pytest.raises(Crash):
        train(make_model(), crashing, cfg)
    with pytest.raises(ValueError, match="out_dir"):  # a fresh run would overwrite that checkpoint
        train(make_model(), task, cfg)
    resumed = Trainer(make_model(), task, cfg)
    result = resumed.fit(resume=True)
    assert result.losses == straight.losses and result.grad_norms == straight.grad_norms
    lines = lambda path: path.read_text().splitlines()
    strip = lambda path: [{k: v for k, v in json.loads(line).items() if k != "tokens_per_s"} for line in lines(path)]
    assert strip(tmp_path / "b" / "metrics.jsonl") == strip(tmp_path / "a" / "metrics.jsonl")
    for (name, a), b in zip(uninterrupted.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name


def test_resume_needs_out_dir_and_starts_fresh_without_a_checkpoint(tmp_path, task, make_model, quick):
    with pytest.raises(ValueError, match="out_dir"):
        train(make_model(), task, quick(), resume=True)
    a = train(make_model(), task, quick(steps=3, out_dir=tmp_path), resume=True)
    assert a.losses == train(make_model(), task, quick(steps=3)).losses


def test_callable_source_custom_loss_and_evaluator(make_model, quick):
    tokens = torch.randint(0, 10, (500,), generator=torch.Generator().manual_seed(0))
    seen = []

    def loss_fn(logits, targets):
        seen.append(targets.shape)
        return torch.nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten())

    def evaluate(model):
        assert not model.training and not torch.is_grad_enabled()
        return {"mean_logit": model(tokens[None, :16]).mean()}

    cfg = quick(steps=3, eval_every=3)
    result = train(make_model(vocab_size=10), token_windows(tokens, 16, 4), cfg, loss_fn=loss_fn, evaluate=evaluate)
    assert seen == [(4, 16)] * 3
    assert set(result.evals[0]) == {"step", "mean_logit"} and "eval_mean_logit" in result.metrics


def test_moe_aux_loss_is_added_and_reported(task, make_model, quick):
    model = make_model(mlp_pattern="E", moe={"num_experts": 2, "top_k": 1})
    result = train(model, task, quick(steps=2))
    assert all(a > 0 for a in result.aux_losses) and result.metrics["aux_loss"] > 0


def test_non_finite_loss_stops_the_run(task, make_model, quick):
    calls = []

    def loss_fn(logits, targets):
        calls.append(1)
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1).float(), targets.flatten())
        return loss * float("nan") if len(calls) == 2 else loss

    with pytest.raises(NonFiniteLossError, match="step 2") as info:
        train(make_model(), task, quick(steps=6, log_every=4), loss_fn=loss_fn)
    assert info.value.step == 2 and len(info.value.result.losses) == 4


def test_optimizer_groups_exclude_ssm_parameters_from_decay(task, make_model, quick):
    model = make_model()
    trainer = Trainer(model, task, quick(weight_decay=0.05))
    no_decay = {id(p) for g in trainer.optimizer.param_groups if g["weight_decay"] == 0 for p in g["params"]}
    for name, p in model.named_parameters():
        if name.endswith(("A_log", ".D", "dt_proj.bias", "norm.weight", "norm_f.weight")):
            assert id(p) in no_decay, name
        if name.endswith(("in_proj.weight", "embedding.weight")):
            assert id(p) not in no_decay, name


def test_progress_bar_and_plain_lines(task, make_model, quick, capsys, monkeypatch):
    train(make_model(), task, quick(steps=2, progress=True))
    assert "train" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "tqdm", None)  # import fails: plain lines instead
    train(make_model(), task, quick(steps=2, progress=True))
    err = capsys.readouterr().err
    assert "step 2/2 | loss" in err and "tok/s" in err


def test_bad_arguments(task, make_model, quick):
    with pytest.raises(TypeError, match="batches"):
        Trainer(make_model(), 42, quick())
    with pytest.raises(TypeError, match="config"):
        Trainer(make_model(), task, {"steps": 3})
    with pytest.raises(ValueError, match="loss_fn"):
        train(make_model(), task, quick(steps=1), loss_fn=lambda logits, targets: logits.mean(-1))
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="device"):
            Trainer(make_model(), task, quick(device="cuda"))
