"""`ssmkit compare` pieces: matched parameter counts, scoring that counts exact matches, the claims' verdicts, the
atomic report folder. The whole command is tested in tests/cli/test_compare_cli.py."""

import json
import os

import pytest
import torch
from torch import nn

from ssmkit.compare.accuracy import _OOM, TrainRun, score
from ssmkit.compare.archs import ARCHITECTURES, check_archs, count_params, match_params
from ssmkit.compare.claims import HIGH, LOW, NOT_REPRODUCED, NOT_RUN, REPRODUCED, check_claims
from ssmkit.compare.output import check_out_dir, staging
from ssmkit.compare.settings import SCALES, TaskPlan
from ssmkit.tasks import TASKS, SelectiveCopying, make_task


# ---- matched parameter counts -----------------------------------------------------------------------------------
@pytest.mark.parametrize("scale", ["cpu", "quick", "paper"])
def test_every_architecture_lands_within_tolerance_of_the_target(scale):
    s = SCALES[scale]
    for task, plan in s.tasks.items():
        vocab = make_task(task, preset=plan.preset, **plan.train[0]).vocab_size
        for arch in ARCHITECTURES.values():
            overrides = {**s.model, **s.arch_overrides.get(arch.name, {})}
            n_layer = overrides.pop("n_layer", s.n_layer)
            m = match_params(arch, s.target_params, vocab, n_layer, overrides, tolerance=s.param_tolerance)
            assert abs(m.params - s.target_params) <= s.param_tolerance * s.target_params
            model = _build(m.config)
            assert (
                m.params
                == count_params(m.config)
                == sum(p.numel() for p in model.parameters()) - (model.embedding.weight.numel())
            )
            assert m.config.layer_pattern == overrides.get("layer_pattern", arch.layer_pattern)


def _build(config):
    from ssmkit import LanguageModel

    return LanguageModel(config, device="meta")


def test_paper_scale_hybrid_is_jamba_like_and_matched():
    s = SCALES["paper"]
    overrides = {**s.model, **s.arch_overrides["hybrid"]}
    n_layer = overrides.pop("n_layer")
    m = match_params(ARCHITECTURES["hybrid"], s.target_params, 18, n_layer, overrides)
    assert m.config.mixers == "MMMMAMMM"  # one attention layer in eight
    assert abs(m.relative_error) <= 0.10


def test_a_target_out_of_reach_is_a_value_error_naming_both_counts():
    with pytest.raises(ValueError, match="within 10%"):
        match_params(ARCHITECTURES["mamba"], 10, 16, 2, {"mamba": {"d_state": 4}})


def test_unknown_architecture_is_named():
    with pytest.raises(ValueError, match=r"unknown architecture.*lstm.*known: s4d"):
        check_archs(["mamba", "lstm"])


def test_every_scale_plans_every_task():
    for s in SCALES.values():
        assert set(s.tasks) == set(TASKS)


# ---- scoring counts exact matches -------------------------------------------------------------------------------
class CopyOracle(nn.Module):
    """Answers selective copying from the inputs alone: at the j-th copy marker, the j-th data token. With `wrong`,
    the last answer of every example is replaced by another symbol, so no example is fully right."""

    def __init__(self, task: SelectiveCopying, wrong: bool = False):
        super().__init__()
        self.task, self.wrong = task, wrong
        self.embedding = nn.Embedding(1, 1)  # score() reads the device from here

    def forward(self, ids):
        t = self.task
        b, l = ids.shape
        data = ids[:, : t.region_len]
        picks = torch.stack([row[row >= t.FIRST_SYMBOL] for row in data])  # (b, k), in order
        if self.wrong:
            last = picks[:, -1] - t.FIRST_SYMBOL
            picks[:, -1] = (last + 1) % t.num_symbols + t.FIRST_SYMBOL
        logits = torch.zeros(b, l, t.vocab_size)
        logits[:, t.region_len :].scatter_(2, picks.unsqueeze(-1), 1.0)
        return logits


def test_score_counts_exact_matches_and_answers():
    task = make_task("selective_copying", seq_len=20, num_tokens=4, num_symbols=8)
    plan = TaskPlan(({},), (("a", {}),), steps=1, lr=1e-3, batch_size=4, eval_examples=10, eval_batch_size=4)
    right = score(CopyOracle(task), [("a", task)], plan, seed=0)[0]
    assert (right.examples, right.exact_matches, right.answers, right.correct_answers) == (10, 10, 40, 40)
    assert right.exact_match == 1.0
    wrong = score(CopyOracle(task, wrong=True), [("a", task)], plan, seed=0)[0]
    assert (wrong.exact_matches, wrong.correct_answers) == (0, 30)
    assert wrong.token_accuracy == 0.75


class OutOfMemoryAbove(CopyOracle):
    def forward(self, ids):
        if ids.shape[1] > 20:
            raise _OOM("CUDA out of memory. Tried to allocate 128.00 GiB")
        return super().forward(ids)


def test_a_setting_that_runs_out_of_memory_is_recorded_not_fatal():
    short = make_task("selective_copying", seq_len=20, num_tokens=4, num_symbols=8)
    plan = TaskPlan(({},), (("a", {}),), steps=1, lr=1e-3, batch_size=4, eval_examples=8, eval_batch_size=4)
    fine, failed = score(OutOfMemoryAbove(short), [("L=20", short), ("L=40", short.with_seq_len(40))], plan, seed=0)
    assert fine.exact_match == 1.0 and fine.error is None
    assert failed.exact_match is None and "out of memory" in failed.error


def test_still_improving_needs_a_real_drop_of_the_loss_in_the_second_half():
    def run(losses):
        return TrainRun("t", "a", len(losses), 1.0, losses[0], losses[-1], losses)

    assert run([2.8] * 60 + [2.2] * 40).still_improving  # left the plateau late
    assert not run([2.8] * 100).still_improving  # a plateau throughout
    assert not run([2.0] * 20 + [0.01] * 70 + [0.004] * 10).still_improving  # converged; the tiny loss halves


# ---- the claims --------------------------------------------------------------------------------------------------
def _acc(**values):
    return {arch: {"accuracy": v, "by_setting": {"trained length": v}} for arch, v in values.items()}


def _by_id(verdicts):
    return {v["id"]: v for v in verdicts}


def test_selective_copying_claim_uses_the_stated_thresholds():
    good = _by_id(check_claims({"selective_copying": _acc(s4d=LOW, mamba=HIGH, mamba2=0.99)}, None))
    assert good["selective_copying"]["status"] == REPRODUCED
    bad = _by_id(check_claims({"selective_copying": _acc(s4d=0.51, mamba=0.99, mamba2=0.99)}, None))
    assert bad["selective_copying"]["status"] == NOT_REPRODUCED
    assert "s4d 51%" in bad["selective_copying"]["measured"]
    falling = {"selective_copying": _acc(s4d=0.3, mamba=0.99, mamba2=0.95)}
    falling["selective_copying"]["s4d"]["still_improving"] = True
    falling["selective_copying"]["mamba"]["still_improving"] = True  # above the bar already: no caveat
    verdict = _by_id(check_claims(falling, None))["selective_copying"]
    assert (
        verdict["status"] == REPRODUCED and "the loss of s4d was still falling in the second half" in verdict["caveat"]
    )
    partial = _by_id(check_claims({"selective_copying": _acc(mamba=1.0)}, None))
    assert partial["selective_copying"]["status"] == NOT_RUN
    assert _by_id(check_claims({}, None))["needle_attention"]["status"] == NOT_RUN


def _decode(arch, times, state, used=None):
    contexts = [1024 * 4**i for i in range(len(times))]
    return [
        {
            "arch": arch,
            "context_tokens": c,
            "decode_ms_per_token": t,
            "state_bytes": state,
            "state_used_bytes": (used or (lambda c: state))(c),
        }
        for c, t in zip(contexts, times)
    ]


def test_cost_claims_from_slopes_and_decode_rows():
    costs = {
        "slopes": {
            "forward_time": {"transformer": 1.9, "mamba": 1.05, "s4d": 1.2},
            "forward_memory": {"transformer": 1.0},
        },
        "decode": _decode("mamba", [1.0, 1.2, 0.9, 1.1], 1000)
        + _decode("transformer", [1.0, 1.5, 3.0, 9.0], 0, used=lambda c: 64 * c),
    }
    v = _by_id(check_claims({}, costs))
    assert v["attention_quadratic_time"]["status"] == REPRODUCED
    assert v["ssm_linear_time"]["status"] == REPRODUCED
    assert v["attention_quadratic_memory"]["status"] == NOT_REPRODUCED
    assert v["ssm_constant_decode"]["status"] == REPRODUCED
    assert v["attention_growing_decode"]["status"] == REPRODUCED
    grown = _decode("mamba", [1.0] * 4, 2000)[3]  # the state grew: not O(1)
    costs["decode"] = [*_decode("mamba", [1.0] * 4, 1000)[:3], grown]
    assert _by_id(check_claims({}, costs))["ssm_constant_decode"]["status"] == NOT_REPRODUCED


# ---- the report folder -------------------------------------------------------------------------------------------
def _report(folder, text):
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "results.json"), "w") as f:
        json.dump({"generator": "ssmkit compare", "text": text}, f)


def _text(folder):
    with open(os.path.join(folder, "results.json")) as f:
        return json.load(f)["text"]


def test_staging_replaces_a_previous_report_only_when_complete(tmp_path):
    out = str(tmp_path / "report")
    _report(out, "old")
    with pytest.raises(RuntimeError), staging(out) as tmp:
        _report(tmp, "new")
        raise RuntimeError("the run failed")
    assert _text(out) == "old"
    with staging(out) as tmp:
        _report(tmp, "new")
    assert _text(out) == "new"
    assert sorted(os.listdir(tmp_path)) == ["report"]  # no temporary or old folder left behind
    mask = os.umask(0)
    os.umask(mask)
    assert os.stat(out).st_mode & 0o777 == 0o777 & ~mask  # as readable as any new folder, not mkdtemp's 0700


def test_a_folder_that_is_not_a_report_is_never_replaced(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="refusing to replace it"):
        check_out_dir(str(tmp_path))
    check_out_dir(str(tmp_path / "new"))  # absent: fine
