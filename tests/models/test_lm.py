import dataclasses
import math

import pytest
import torch

from ssmkit import LanguageModel, ModelConfig


def tiny_config(**kw) -> ModelConfig:
    base = dict(
        d_model=32,
        n_layer=4,
        vocab_size=50,
        pad_vocab_size_multiple=16,
        layer_pattern="SMDA",
        mlp_pattern="-GE",
        s4d={"d_state": 8},
        mamba={"d_state": 4},
        mamba2={"d_state": 8, "headdim": 16, "chunk_size": 8},
        attention={"n_heads": 4, "n_kv_heads": 2},
        moe={"num_experts": 4, "top_k": 2},
    )
    base.update(kw)
    return ModelConfig.from_dict(base)


def test_forward_shapes_and_vocab_padding():
    model = LanguageModel(tiny_config())
    assert model.embedding.weight.shape == (64, 32)
    logits = model(torch.randint(0, 50, (2, 11)))
    assert logits.shape == (2, 11, 50)


@pytest.mark.parametrize("shared", [0, 2])
def test_hybrid_token_by_token_equals_full_forward(shared):
    torch.manual_seed(0)
    model = LanguageModel(tiny_config(shared_attention_every=shared)).eval()
    ids = torch.randint(0, 50, (2, 19))
    with torch.no_grad():
        full = model(ids)
        state = model.init_state(2)
        stepped = torch.stack([model.step(ids[:, t], state) for t in range(ids.shape[1])], 1)
        assert state.seqlen == 19
        state2 = model.init_state(2)
        prefill = model(ids[:, :12], state=state2)
        rest = torch.stack([model.step(ids[:, t], state2) for t in range(12, 19)], 1)
    torch.testing.assert_close(stepped, full, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(torch.cat([prefill, rest], 1), full, rtol=1e-4, atol=1e-4)


def test_residual_stream_in_fp32_with_bf16_weights():
    model = LanguageModel(tiny_config(layer_pattern="M", mlp_pattern="G"), dtype=torch.bfloat16)
    logits = model(torch.randint(0, 50, (1, 6)))
    assert logits.dtype == torch.bfloat16 and torch.isfinite(logits.float()).all()


def test_init_follows_mamba_ssm():
    cfg = tiny_config(layer_pattern="M", mlp_pattern="-", tie_embeddings=False)
    model = LanguageModel(cfg)
    layer = model.layers[0].mixer
    bound = 1 / math.sqrt(layer.d_inner) / math.sqrt(cfg.n_layer)  # kaiming_uniform(a=sqrt(5)) then / sqrt(n_layer)
    assert layer.out_proj.weight.abs().max() <= bound + 1e-6
    assert layer.out_proj.weight.abs().max() > 0.5 * bound
    assert torch.nn.functional.softplus(layer.dt_proj.bias).min() >= 1e-4  # dt bias kept, not zeroed
    assert model.lm_head.weight is not model.embedding.weight


def test_tied_embeddings_and_param_groups():
    model = LanguageModel(tiny_config())
    assert model.lm_head.weight is model.embedding.weight
    decay, no_decay = model.param_groups(0.1)
    no_decay_ids = {id(p) for p in no_decay["params"]}
    for block in model.layers:
        mixer = block.mixer
        for name in ("A_log", "D"):
            if hasattr(mixer, name):
                assert id(getattr(mixer, name)) in no_decay_ids
        assert id(block.norm.weight) in no_decay_ids
    assert id(model.layers[1].mixer.A_log) in no_decay_ids  # Mamba's A_log is 2-D: marked, not guessed
    assert id(model.layers[1].mixer.dt_proj.bias) in no_decay_ids
    assert id(model.embedding.weight) in {id(p) for p in decay["params"]}
    total = sum(p.numel() for g in (decay, no_decay) for p in g["params"])
    assert total == model.num_parameters()


def test_moe_aux_loss_exposed():
    model = LanguageModel(tiny_config())
    model(torch.randint(0, 50, (2, 5)))
    assert torch.is_tensor(model.aux_loss) and model.aux_loss > 0


def test_bad_input_ids():
    model = LanguageModel(tiny_config())
    with pytest.raises(TypeError, match="input_ids: expected an integer dtype"):
        model(torch.randn(2, 3))
    with pytest.raises(ValueError, match=r"input_ids: expected shape \(b, l\)"):
        model(torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match=r"input_ids: expected token ids in \[0, 50\)"):
        model(torch.full((1, 3), 50))
    with pytest.raises(TypeError, match="config: expected a ModelConfig"):
        LanguageModel({"d_model": 3})


def test_state_bytes_count_every_layer():
    model = LanguageModel(tiny_config(shared_attention_every=2))
    state = model.init_state(1)
    assert len(state.shared) == 2  # sites before layers 0 and 2, each with its own KV cache
    # counted independently: every tensor field of every layer's and site's state
    expected = sum(
        t.numel() * t.element_size()
        for s in (*state.layers, *state.shared)
        for t in (getattr(s, f.name) for f in dataclasses.fields(s))
        if isinstance(t, torch.Tensor)
    )
    assert state.nbytes() == expected > 0
