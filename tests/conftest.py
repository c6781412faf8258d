import os

import pytest
import torch

# Without a GPU, Triton kernels run in its interpreter. Triton reads TRITON_INTERPRET when it is imported and when
# each kernel is defined, so the variable is set here, before any test module imports triton or a kernel module.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def without_interpreter(monkeypatch):
    """Triton as on a machine with neither a GPU nor the interpreter (for the 'no CUDA device' errors)."""
    from ssmkit.ops import _backend

    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    _backend.triton_status.cache_clear()
    yield
    monkeypatch.undo()
    _backend.triton_status.cache_clear()


@pytest.fixture(scope="module")
def fresh_triton_status():
    """Triton's status as the session's environment gives it, whatever an earlier module cached."""
    from ssmkit.ops import _backend

    _backend.triton_status.cache_clear()
    yield
    _backend.triton_status.cache_clear()
