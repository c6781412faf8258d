"""Triton selective scan against the reference by the tolerance rule: outputs, final states and every gradient.

Without a GPU the kernels run in Triton's interpreter at small sizes (tests/conftest.py sets TRITON_INTERPRET=1 for
the session before triton is imported); with one, the same small tests run compiled and the `cuda` tests add full
sizes.
"""

import pytest
import torch

pytest.importorskip("triton")

from ssmkit.ops import _backend
from ssmkit.ops.selective_scan import selective_scan
from tests.buffers import nan_empty
from tests.rules import assert_by_rule
from tests.scan_chunks import one_pass_forward_chunked_backward

HAS_CUDA = torch.cuda.is_available()
DEVICE = "cuda" if HAS_CUDA else "cpu"


pytestmark = pytest.mark.usefixtures("fresh_triton_status")  # tests/conftest.py


@pytest.fixture
def nan_outputs(monkeypatch):
    """Every buffer the kernels write starts as NaN, so an unwritten element fails the comparison."""
    from ssmkit.ops.selective_scan import triton_scan

    monkeypatch.setattr(triton_scan, "_empty", nan_empty)
    return triton_scan


def force_chunks(triton_scan, monkeypatch):
    """Cut the sequence into chunks even at test sizes: the cross-chunk combine in both directions."""
    monkeypatch.setattr(triton_scan, "FWD_UNCHUNKED_PROGRAMS", 1 << 30)
    monkeypatch.setattr(triton_scan, "FWD_TARGET_PROGRAMS", 1 << 20)
    monkeypatch.setattr(triton_scan, "BWD_UNCHUNKED_PROGRAMS", 1 << 30)
    monkeypatch.setattr(triton_scan, "BWD_TARGET_PROGRAMS", 1 << 20)


def make_inputs(b, l, d, n, g, *, dtype=torch.float32, device=DEVICE):
    def r(*s):
        return torch.randn(*s, device=device).to(dtype)

    return dict(
        u=r(b, l, d),
        dt=r(b, l, d) - 1.0,
        A=(-torch.rand(d, n, device=device) * 4 - 0.1).to(dtype),
        B=r(b, l, g, n),
        C=r(b, l, g, n),
        D=r(d),
        z=r(b, l, d),
        dt_bias=(torch.randn(d, device=device) * 0.5).to(dtype),
        initial_state=torch.randn(b, d, n, device=device),
    )


def compare(inputs, softplus=True, hint=None, **kw):
    """Triton vs fp64 reference vs reference in the inputs' own dtype: y, final state and all gradients.
    hint: the Triton forward is told y's gradient ("same": the one its backward then gets; "other": another)."""
    present = {k: v for k, v in inputs.items() if v is not None}

    def leaves(cast):
        return {k: cast(v).detach().requires_grad_(True) for k, v in present.items()}

    fast, exact, same = leaves(lambda t: t.clone()), leaves(lambda t: t.double()), leaves(lambda t: t.clone())

    def run(x, backend, grad_hint=None):
        return selective_scan(
            **x, dt_softplus=softplus, return_final_state=True, backend=backend, grad_hint=grad_hint, **kw
        )

    gy = torch.randn_like(inputs["u"])
    y, h = run(fast, "triton", {"same": gy, "other": gy + 1.0, None: None}[hint])
    y64, h64 = run(exact, "reference")
    y_s, h_s = run(same, "reference")
    assert y.dtype == inputs["u"].dtype and h.dtype == torch.float32
    assert_by_rule("y", y, y_s, y64)
    assert_by_rule("final_state", h, h_s, h64)
    gh = torch.randn_like(h)
    names = list(present)
    g_fast = torch.autograd.grad((y, h), [fast[k] for k in names], (gy, gh))
    g_exact = torch.autograd.grad((y64, h64), [exact[k] for k in names], (gy.double(), gh.double()))
    g_same = torch.autograd.grad((y_s, h_s), [same[k] for k in names], (gy, gh))
    for name, a, b, c in zip(names, g_fast, g_same, g_exact):
        assert a.dtype == present[name].dtype, name
        assert_by_rule(f"grad {name}", a, b, c)


# the interpreter runs a scan's combine once per element, so sizes stay small: b * l * d * n of a few thousand
@pytest.mark.triton_interpret
@pytest.mark.parametrize(
    ("b", "l", "d", "n", "g", "chunks"),
    [
        (2, 1, 8, 4, 1, False),
        (2, 7, 8, 4, 2, True),
        (1, 63, 8, 4, 1, False),
        (1, 63, 8, 3, 2, True),
        (1, 257, 4, 2, 1, True),
        (1, 257, 4, 2, 2, False),
        (1, 9, 32, 16, 1, False),  # the GPU's shape of the backward's reduce-scatter: 32 lanes, 32 values
        (1, 9, 32, 2, 1, True),  # fewer values than lanes: lanes hold copies of each sum, one adds it
    ],
)
def test_matches_reference(b, l, d, n, g, chunks, nan_outputs, monkeypatch):
    monkeypatch.setattr(nan_outputs, "SUB", 2 if l == 257 else 4)  # two sizes of the backward's sub-tiles
    monkeypatch.setattr(nan_outputs, "AHEAD", 3 if l == 257 else 1)  # and two of the forward's load distance
    if chunks:
        force_chunks(nan_outputs, monkeypatch)
    compare(make_inputs(b, l, d, n, g))


@pytest.mark.triton_interpret
def test_deterministic_mode_sums_per_block_partials(nan_outputs, monkeypatch):
    """Under torch.use_deterministic_algorithms dB and dC come from per-block partials (no atomics), by default from
    atomics: both by the same rule, and each launch takes the path it should."""
    monkeypatch.setattr(nan_outputs, "BD_BWD", 4)  # two channel blocks per group
    kernel, atomic = nan_outputs._bwd_seq_kernel, []

    class Spy:  # records which way each backward launch sums dB, dC
        def __getitem__(self, grid):
            return lambda *a, **kw: atomic.append(kw["ATOMIC_BC"]) or kernel[grid](*a, **kw)

    monkeypatch.setattr(nan_outputs, "_bwd_seq_kernel", Spy())
    was, warn = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        compare(make_inputs(1, 21, 8, 4, 1))
    finally:
        torch.use_deterministic_algorithms(was, warn_only=warn)
    compare(make_inputs(1, 21, 8, 4, 1))
    assert atomic == [False, True]


@pytest.mark.triton_interpret
def test_z_view_of_xz_is_read_in_place(monkeypatch):
    """z = xz[..., d:] (rows 2d apart) gives what a contiguous z gives, and is not copied."""
    from ssmkit.ops.selective_scan import triton_scan

    inputs = make_inputs(2, 19, 8, 4, 2)
    xz = torch.cat([inputs["u"], inputs["z"]], dim=-1)
    seen = []
    apply = triton_scan._SelectiveScanFn.apply
    monkeypatch.setattr(triton_scan._SelectiveScanFn, "apply", lambda *a: seen.append(a[6]) or apply(*a))
    results = []
    for z in (xz[..., 8:], inputs["z"].clone()):
        leaves = {k: v.detach().clone().requires_grad_(True) for k, v in inputs.items() if k != "z"}
        z_leaf = z.detach().requires_grad_(True)  # a view keeps its strides through detach
        y, h = selective_scan(**leaves, z=z_leaf, dt_softplus=True, return_final_state=True, backend="triton")
        grads = torch.autograd.grad((y, h), [*leaves.values(), z_leaf], (torch.ones_like(y), torch.ones_like(h)))
        results.append((y, h, *grads))
    assert seen[0].stride(1) == 16 and seen[0].data_ptr() == xz[..., 8:].data_ptr()
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


@pytest.mark.triton_interpret
@pytest.mark.parametrize("packed", [False, True])
def test_gradient_hint_does_the_backward_local_pass_in_the_forward(nan_outputs, monkeypatch, packed):
    """Told y's gradient, a one-pass forward forms the chunked backward's per-chunk pieces itself: the backward's
    local pass does not run, and every gradient is as without the hint. Another gradient than the hint: it runs."""
    launches = one_pass_forward_chunked_backward(nan_outputs, monkeypatch)
    lengths = [5, 20, 1, 14]
    seq_idx = torch.cat([torch.full((k,), i) for i, k in enumerate(lengths)])[None].to(DEVICE) if packed else None
    inputs = make_inputs(1, sum(lengths), 8, 4, 2)
    compare(inputs, hint="same", seq_idx=seq_idx)
    assert launches == []
    compare(inputs, hint="other", seq_idx=seq_idx)
    assert len(launches) == 1


@pytest.mark.triton_interpret
def test_seq_idx_resets_inside_tiles_and_chunks(nan_outputs, monkeypatch):
    force_chunks(nan_outputs, monkeypatch)
    lengths = [5, 20, 1, 14]
    seq_idx = torch.cat([torch.full((n,), i) for i, n in enumerate(lengths)])[None].repeat(2, 1).to(DEVICE)
    seq_idx[1] = 7  # the second row is one sequence
    compare(make_inputs(2, sum(lengths), 6, 2, 3), seq_idx=seq_idx)


@pytest.mark.triton_interpret
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_inputs_fp32_accumulation(dtype, nan_outputs):
    compare(make_inputs(1, 40, 4, 4, 1, dtype=dtype))


@pytest.mark.triton_interpret
def test_without_optional_inputs(nan_outputs):
    inputs = make_inputs(1, 33, 4, 5, 1)
    for k in ("D", "z", "dt_bias", "initial_state"):
        inputs[k] = None
    inputs["dt"] = inputs["dt"].abs() * 0.2
    compare(inputs, softplus=False)


@pytest.mark.triton_interpret
def test_auto_and_y_only():
    inputs = make_inputs(1, 9, 4, 2, 1)
    y = selective_scan(**inputs, dt_softplus=True, backend="triton")
    y_ref = selective_scan(**inputs, dt_softplus=True, backend="reference")
    torch.testing.assert_close(y, y_ref, rtol=1e-4, atol=1e-5)
    expected = "triton" if HAS_CUDA else "torch"  # auto picks Triton for CUDA tensors only
    assert _backend.resolve_backend("selective_scan", "auto", torch.device(DEVICE)) == expected


@pytest.mark.triton_interpret
def test_bad_inputs_get_clear_errors():
    inputs = make_inputs(1, 5, 4, 2, 1)
    with pytest.raises(ValueError, match="float64"):
        selective_scan(**{k: v.double() for k, v in inputs.items()}, backend="triton")


@pytest.mark.skipif(HAS_CUDA, reason="CUDA tensors are accepted there")
def test_cpu_tensors_without_interpreter_raise(without_interpreter):
    with pytest.raises(ValueError, match="backend='triton' for selective_scan cannot run: no CUDA"):
        selective_scan(**make_inputs(1, 5, 4, 2, 1), backend="triton")


@pytest.mark.cuda
@pytest.mark.skipif(not HAS_CUDA, reason="needs an NVIDIA GPU")
@pytest.mark.parametrize(
    ("b", "l", "d", "g", "dtype"),
    [  # the fp64 reference is a loop over time: lengths stay a few thousand (the whole file took 7 min at 8192)
        (2, 2048, 512, 1, torch.bfloat16),
        (1, 3001, 512, 2, torch.bfloat16),
        (2, 1000, 512, 4, torch.float32),
        (1, 2049, 512, 1, torch.float16),
        (1, 300, 4096, 1, torch.bfloat16),  # W1's width
    ],
)
def test_full_size_cuda(b, l, d, g, dtype, nan_outputs):
    compare(make_inputs(b, l, d, 16, g, dtype=dtype))


@pytest.mark.cuda
@pytest.mark.skipif(not HAS_CUDA, reason="needs an NVIDIA GPU")
@pytest.mark.parametrize("n", [8, 64])
def test_full_size_other_state_sizes_cuda(n, nan_outputs):
    """State sizes other than Mamba's 16: the forward's register cap is for n <= 16 only."""
    compare(make_inputs(1, 500, 512, n, 1, dtype=torch.bfloat16))


@pytest.mark.cuda
@pytest.mark.skipif(not HAS_CUDA, reason="needs an NVIDIA GPU")
def test_full_size_seq_idx_cuda(nan_outputs):
    lengths = torch.tensor([900, 1, 2000, 77, 64, 3000, 58], device="cuda")
    seq_idx = torch.repeat_interleave(torch.arange(7, device="cuda"), lengths)
    compare(make_inputs(1, seq_idx.numel(), 256, 16, 1, dtype=torch.bfloat16), seq_idx=seq_idx[None])
