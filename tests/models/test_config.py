import json
import math

import pytest

from ssmkit import ModelConfig
from ssmkit.models.config import PRESETS


def test_json_round_trip(tmp_path):
    cfg = ModelConfig.from_name("jamba-tiny", n_layer=4, mamba2={"dt_limit": (0.01, math.inf)})
    path = tmp_path / "config.json"
    cfg.to_json(path)
    assert ModelConfig.from_json(path) == cfg
    assert ModelConfig.from_json(cfg.to_json()) == cfg
    assert json.loads(path.read_text())["layer_pattern"] == "MMMMAMMM"


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_build_and_round_trip(name):
    cfg = ModelConfig.from_name(name)
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    assert len(cfg.mixers) == cfg.n_layer


def test_published_shapes():
    assert (ModelConfig.from_name("mamba-2.8b").d_model, ModelConfig.from_name("mamba-2.8b").n_layer) == (2560, 64)
    m2 = ModelConfig.from_name("mamba2-1.3b")
    assert (m2.d_model, m2.n_layer, m2.mamba2.d_state, m2.layer_pattern) == (2048, 48, 128, "D")
    assert ModelConfig.from_name("mamba-130m").padded_vocab_size == 50280


def test_overrides_merge_nested_fields():
    cfg = ModelConfig.from_name("mamba-130m", n_layer=2, mamba={"d_state": 8})
    assert cfg.n_layer == 2 and cfg.mamba.d_state == 8 and cfg.mamba.d_conv == 4


def test_patterns_tile_to_n_layer():
    cfg = ModelConfig(n_layer=10, layer_pattern="MMMA", mlp_pattern="-E")
    assert cfg.mixers == "MMMAMMMAMM"
    assert cfg.mlps == "-E-E-E-E-E"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"layer_pattern": "MX"}, "layer_pattern: expected a non-empty string of the letters"),
        ({"mlp_pattern": ""}, "mlp_pattern"),
        ({"d_model": 0}, "d_model: expected a positive int"),
        ({"shared_attention_every": -1}, "shared_attention_every"),
    ],
)
def test_bad_configs_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ModelConfig(**kwargs)


def test_unknown_names_and_fields():
    with pytest.raises(ValueError, match="unknown model name 'mamba-7b'"):
        ModelConfig.from_name("mamba-7b")
    with pytest.raises(ValueError, match=r"unknown field\(s\) \['d_modle'\]"):
        ModelConfig.from_dict({"d_modle": 3})


def test_failed_write_keeps_old_file(tmp_path, monkeypatch):
    path = tmp_path / "config.json"
    ModelConfig(n_layer=3).to_json(path)
    before = path.read_text()

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr("os.replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        ModelConfig(n_layer=5).to_json(path)
    assert path.read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == ["config.json"]
