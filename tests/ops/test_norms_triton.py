"""Triton RMSNorm and grouped gated RMSNorm against the reference by the tolerance rule: outputs and every gradient.

Without a GPU the kernels run in Triton's interpreter at small sizes (tests/conftest.py sets TRITON_INTERPRET=1 for
the session before triton is imported); with one, the same small tests run compiled and the `cuda` tests add
Mamba-2's sizes.
"""

import pytest
import torch

pytest.importorskip("triton")

from ssmkit.ops import _backend
from ssmkit.ops.norms import gated_rms_norm, rms_norm
from tests.buffers import nan_empty
from tests.rules import assert_by_rule

HAS_CUDA = torch.cuda.is_available()
DEVICE = "cuda" if HAS_CUDA else "cpu"


pytestmark = pytest.mark.usefixtures("fresh_triton_status")  # tests/conftest.py


@pytest.fixture
def kernels(monkeypatch):
    """The kernel module, every buffer it writes starting as NaN, so an unwritten element fails the comparison."""
    from ssmkit.ops.norms import triton_norm

    monkeypatch.setattr(triton_norm, "_empty", nan_empty)
    return triton_norm


def compare(fn, tensors: dict, **kw):
    """Triton vs fp64 reference vs reference in the inputs' own dtype: y and the gradient of every input."""
    present = {k: v for k, v in tensors.items() if v is not None}

    def leaves(cast):
        return {k: cast(v).detach().requires_grad_(True) for k, v in present.items()}

    fast, same, exact = leaves(lambda t: t.clone()), leaves(lambda t: t.clone()), leaves(lambda t: t.double())
    y = fn(**fast, backend="triton", **kw)
    y_s = fn(**same, backend="reference", **kw)
    y64 = fn(**exact, backend="reference", **kw)
    assert y.dtype == tensors["x"].dtype
    assert_by_rule("y", y, y_s, y64)
    gy = torch.randn_like(y)
    names = list(present)
    g_fast = torch.autograd.grad(y, [fast[k] for k in names], gy)
    g_same = torch.autograd.grad(y_s, [same[k] for k in names], gy)
    g_exact = torch.autograd.grad(y64, [exact[k] for k in names], gy.double())
    for name, a, b, c in zip(names, g_fast, g_same, g_exact):
        assert a.dtype == present[name].dtype, name
        assert_by_rule(f"grad {name}", a, b, c)


def gated_inputs(shape, *, z=True, weight=True, dtype=torch.float32, weight_dtype=None):
    d = shape[-1]
    return {
        "x": (torch.randn(shape, device=DEVICE) * 2).to(dtype),
        "z": torch.randn(shape, device=DEVICE).to(dtype) if z else None,
        "weight": (torch.rand(d, device=DEVICE) + 0.5).to(weight_dtype or dtype) if weight else None,
    }


@pytest.mark.triton_interpret
@pytest.mark.parametrize(
    ("shape", "weight", "dtype"),
    [
        ((1, 16), True, torch.float32),
        ((3, 7, 48), True, torch.float32),
        ((5, 33), False, torch.float32),
        ((2, 3, 5, 40), True, torch.bfloat16),
    ],
)
def test_rms_norm(shape, weight, dtype, kernels):
    tensors = gated_inputs(shape, z=False, weight=weight, dtype=dtype)
    del tensors["z"]
    compare(rms_norm, tensors, eps=1e-5)


@pytest.mark.triton_interpret
@pytest.mark.parametrize("norm_before_gate", [False, True])
@pytest.mark.parametrize("group_size", [None, 12])
@pytest.mark.parametrize("has_z", [True, False])
def test_gated_rms_norm(norm_before_gate, group_size, has_z, kernels):
    tensors = gated_inputs((2, 5, 48), z=has_z)
    compare(gated_rms_norm, tensors, eps=1e-5, group_size=group_size, norm_before_gate=norm_before_gate)


@pytest.mark.triton_interpret
@pytest.mark.parametrize("norm_before_gate", [False, True])
def test_gated_half_inputs(norm_before_gate, kernels):
    # bf16 activations with a bf16 weight (a bf16 model) and with an fp32 weight (mixed precision)
    compare(gated_rms_norm, gated_inputs((3, 2, 36), dtype=torch.bfloat16), group_size=9)
    tensors = gated_inputs((7, 36), dtype=torch.bfloat16, weight_dtype=torch.float32)
    compare(gated_rms_norm, tensors, group_size=18, norm_before_gate=norm_before_gate)
    compare(gated_rms_norm, gated_inputs((4, 24), dtype=torch.float16), group_size=8)


@pytest.mark.triton_interpret
@pytest.mark.parametrize("norm_before_gate", [False, True])
def test_wide_groups_in_column_blocks(norm_before_gate, kernels, monkeypatch):
    # groups wider than MAX_BLOCK_W are walked in column blocks, the last one partly masked
    monkeypatch.setattr(kernels, "MAX_BLOCK_W", 16)
    monkeypatch.setattr(kernels, "COL_BLOCK", 16)
    compare(gated_rms_norm, gated_inputs((7, 40)), group_size=20, norm_before_gate=norm_before_gate)
    compare(gated_rms_norm, gated_inputs((3, 40), z=False, weight=False))
    compare(rms_norm, {"x": torch.randn(2, 3, 40, device=DEVICE), "weight": torch.rand(40, device=DEVICE) + 0.5})


@pytest.mark.triton_interpret
@pytest.mark.parametrize("wide", [False, True])
def test_backward_programs_loop_over_rows(wide, kernels, monkeypatch):
    # few backward programs, each summing dw over many rows; dw is the same, bit for bit, on every run
    monkeypatch.setattr(kernels, "BWD_PROGRAMS", 4)
    monkeypatch.setattr(kernels, "BWD_TILE", 32)
    if wide:
        monkeypatch.setattr(kernels, "MAX_BLOCK_W", 8)
        monkeypatch.setattr(kernels, "COL_BLOCK", 8)
    tensors = gated_inputs((13, 24))
    compare(gated_rms_norm, tensors, group_size=12)
    dws = []
    for _ in range(2):
        w = tensors["weight"].clone().requires_grad_(True)
        gated_rms_norm(tensors["x"], tensors["z"], w, group_size=12, backend="triton").square().sum().backward()
        dws.append(w.grad)
    assert torch.equal(dws[0], dws[1])


@pytest.mark.triton_interpret
@pytest.mark.parametrize("norm_before_gate", [False, True])
def test_strided_rows(norm_before_gate, kernels):
    # x and z are slices of projections, read in place (row strides 96 and 64, dy's 100): gradients flow back
    px, pz = torch.randn(4, 3, 96, device=DEVICE), torch.randn(4, 3, 64, device=DEVICE)
    gy = torch.randn(4, 3, 100, device=DEVICE)[..., 10:58]
    w = torch.rand(48, device=DEVICE) + 0.5
    results = []
    for cast, backend in [(torch.float32, "triton"), (torch.float32, "reference"), (torch.float64, "reference")]:
        lx, lz = px.to(cast).requires_grad_(True), pz.to(cast).requires_grad_(True)
        y = gated_rms_norm(
            lx[..., 48:], lz[..., 8:56], w.to(cast), group_size=16, norm_before_gate=norm_before_gate,
            backend=backend,
        )  # fmt: skip
        results.append((y, *torch.autograd.grad(y, (lx, lz), gy.to(cast))))
    for name, fast, same, exact in zip(("y", "grad x projection", "grad z projection"), *results):
        assert_by_rule(name, fast, same, exact)


@pytest.mark.triton_interpret
def test_no_grad_and_empty(kernels):
    x, z = torch.randn(5, 24, device=DEVICE), torch.randn(5, 24, device=DEVICE)
    w = (torch.rand(24, device=DEVICE) + 0.5).requires_grad_(True)
    with torch.no_grad():  # nothing kept for a backward
        y = gated_rms_norm(x, z, w, group_size=8, backend="triton")
    assert y.grad_fn is None
    y_ref = gated_rms_norm(x, z, w, group_size=8, backend="reference")
    y64 = gated_rms_norm(x.double(), z.double(), w.double(), group_size=8, backend="reference")
    assert_by_rule("y", y, y_ref, y64)
    empty = rms_norm(torch.randn(0, 8, device=DEVICE), torch.ones(8, device=DEVICE), backend="triton")
    assert empty.shape == (0, 8)


@pytest.mark.triton_interpret
def test_auto_and_bad_inputs(kernels):
    expected = "triton" if HAS_CUDA else "torch"  # auto picks Triton for CUDA tensors only
    for op in ("rms_norm", "gated_rms_norm"):
        assert _backend.resolve_backend(op, "auto", torch.device(DEVICE)) == expected
    x = torch.randn(2, 8, device=DEVICE, dtype=torch.float64)
    with pytest.raises(ValueError, match="backend='triton' for rms_norm: x is float64"):
        rms_norm(x, backend="triton")
    with pytest.raises(ValueError, match="backend='triton' for gated_rms_norm: x is float64"):
        gated_rms_norm(x, x, backend="triton")
    with pytest.raises(ValueError, match="must be divisible by group_size = 3"):
        gated_rms_norm(x.float(), group_size=3, backend="triton")
    with pytest.raises(ValueError, match=r"weight: expected shape \(d,\) = \(8,\)"):
        rms_norm(x.float(), torch.ones(7, device=DEVICE), backend="triton")
    if HAS_CUDA:
        with pytest.warns(UserWarning, match="float64"):
            y = rms_norm(x)  # auto: the torch path, with a warning
        assert y.dtype == torch.float64


@pytest.mark.cuda
@pytest.mark.skipif(not HAS_CUDA, reason="needs an NVIDIA GPU")
@pytest.mark.parametrize("norm_before_gate", [False, True])
def test_mamba2_size_cuda(norm_before_gate, kernels):
    # Mamba-2 2.7B-like: d_inner 4096 in 8 groups of 512, bf16 activations and weight
    tensors = gated_inputs((4, 1024, 4096), dtype=torch.bfloat16)
    compare(gated_rms_norm, tensors, eps=1e-5, group_size=512, norm_before_gate=norm_before_gate)


@pytest.mark.cuda
@pytest.mark.skipif(not HAS_CUDA, reason="needs an NVIDIA GPU")
@pytest.mark.parametrize(("d", "dtype"), [(2048, torch.bfloat16), (8192, torch.bfloat16), (20000, torch.float32)])
def test_rms_norm_full_size_cuda(d, dtype, kernels):
    # d = 20000 is wider than MAX_BLOCK_W: the column-block path
    tensors = gated_inputs((2, 1000, d), z=False, dtype=dtype)
    del tensors["z"]
    compare(rms_norm, tensors, eps=1e-5)
    compare(gated_rms_norm, gated_inputs((1, 77, d), dtype=dtype), eps=1e-5)
