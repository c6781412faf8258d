import pytest
import torch

from ssmkit import LanguageModel, ModelConfig
from ssmkit.generation import filter_top_k, filter_top_p, sample_next


def tiny_model(pattern="MD"):
    cfg = ModelConfig(
        d_model=32,
        n_layer=2,
        vocab_size=40,
        layer_pattern=pattern,
        mamba={"d_state": 4},
        mamba2={"d_state": 8, "headdim": 16, "chunk_size": 8},
        attention={"n_heads": 4},
    )
    torch.manual_seed(0)
    return LanguageModel(cfg).eval()


def test_greedy_generation_matches_full_forward_argmax():
    model = tiny_model("MDA")
    prompt = torch.randint(0, 40, (2, 5))
    out = model.generate(prompt, max_new_tokens=6, temperature=0)
    assert out.shape == (2, 11) and torch.equal(out[:, :5], prompt)
    with torch.no_grad():
        for t in range(5, 11):  # each generated token is the argmax of a full forward over what came before
            assert torch.equal(model(out[:, :t])[:, -1].argmax(-1), out[:, t])


def test_stream_yields_tokens_one_by_one_and_stops_at_eos():
    model = tiny_model()
    prompt = torch.randint(0, 40, (1, 4))
    tokens = list(model.stream(prompt, max_new_tokens=5, temperature=0))
    assert len(tokens) == 5 and all(t.shape == (1,) for t in tokens)
    eos = int(tokens[1])
    stopped = list(model.stream(prompt, max_new_tokens=5, temperature=0, eos_token_id=eos))
    assert int(stopped[-1]) == eos and len(stopped) <= 2


def test_sampling_is_seeded():
    model = tiny_model()
    prompt = torch.randint(0, 40, (1, 4))
    a = model.generate(prompt, 8, temperature=1.0, top_k=10, generator=torch.Generator().manual_seed(1))
    b = model.generate(prompt, 8, temperature=1.0, top_k=10, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b)


def test_filters():
    logits = torch.tensor([[1.0, 3.0, 2.0, 0.0]])
    assert torch.isinf(filter_top_k(logits, 2)).tolist() == [[True, False, False, True]]
    probs = torch.softmax(logits, -1)[0]  # 0.64, 0.24, 0.09, 0.03 for tokens 1, 2, 0, 3
    kept = ~torch.isinf(filter_top_p(logits, 0.7))
    assert kept.tolist() == [[False, True, True, False]] and probs[1] < 0.7 < probs[1] + probs[2]
    assert sample_next(logits, temperature=0).item() == 1
    assert sample_next(logits, top_k=1).item() == 1


def test_bad_sampling_arguments():
    with pytest.raises(ValueError, match="temperature"):
        sample_next(torch.zeros(1, 3), temperature=-1)
    with pytest.raises(ValueError, match="top_p"):
        sample_next(torch.zeros(1, 3), top_p=1.5)
    with pytest.raises(ValueError, match="max_new_tokens"):
        tiny_model().generate(torch.zeros(1, 2, dtype=torch.long), -1)
