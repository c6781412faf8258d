import pytest
import torch

from ssmkit import LanguageModel, ModelConfig
from ssmkit.tasks import make_task
from ssmkit.training import TrainConfig


@pytest.fixture(autouse=True)
def _one_thread():
    # tiny models gain nothing from more threads, and on a busy machine threads that wait on each other crawl
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def task():
    return make_task("selective_copying", seq_len=24, num_tokens=4, num_symbols=4)


@pytest.fixture
def make_model(task):
    """Tiny Mamba LMs, each with the same initial weights."""

    def make(**overrides):
        torch.manual_seed(0)
        cfg = dict(d_model=32, n_layer=2, vocab_size=task.vocab_size, layer_pattern="M", mamba={"d_state": 4})
        return LanguageModel(ModelConfig(**{**cfg, **overrides}))

    return make


@pytest.fixture
def quick():
    """A CPU config for runs of a few steps; override what a test is about."""

    def make(**overrides):
        base = dict(
            steps=6, batch_size=8, lr=3e-3, warmup_steps=2, eval_every=0, log_every=2, device="cpu", progress=False
        )
        return TrainConfig(**{**base, **overrides})

    return make
