"""Triton decode steps (`selective_scan_step`, `ssd_step`) against the reference by the tolerance rule: y and state.

One step is judged against the step in fp64 and in the inputs' own dtype; N steps against the full forward
(torch backend) on the same inputs. Without a GPU the kernels run in Triton's interpreter (tests/conftest.py sets
TRITON_INTERPRET=1 for the session before triton is imported); the `cuda` tests add the benchmark sizes
(Mamba-1 d 4096 n 16, Mamba-2 h 64 p 64 n 128).
"""

import pytest
import torch

pytest.importorskip("triton")

from ssmkit.ops import _backend
from ssmkit.ops.selective_scan import selective_scan, selective_scan_step
from ssmkit.ops.ssd import ssd, ssd_step
from tests.buffers import nan_empty
from tests.rules import assert_by_rule

HAS_CUDA = torch.cuda.is_available()
DEVICE = "cuda" if HAS_CUDA else "cpu"


pytestmark = pytest.mark.usefixtures("fresh_triton_status")  # tests/conftest.py


@pytest.fixture
def nan_outputs(monkeypatch):
    """Every buffer the step kernels write starts as NaN, so an unwritten element fails the comparison."""
    from ssmkit.ops.selective_scan import triton_step as s6_step
    from ssmkit.ops.ssd import triton_step as ssd_step_mod

    monkeypatch.setattr(s6_step, "_empty", nan_empty)
    monkeypatch.setattr(ssd_step_mod, "_empty", nan_empty)
    return s6_step, ssd_step_mod


def _r(*shape, dtype):
    return torch.randn(*shape, device=DEVICE).to(dtype)


def s6_inputs(b, l, d, n, g, dtype=torch.float32, *, D=True, z=True, bias=True):
    """Sequence inputs for selective_scan; steps take time slices. Parameters in the inputs' dtype."""
    return dict(
        u=_r(b, l, d, dtype=dtype),
        dt=_r(b, l, d, dtype=dtype) - 1.0,
        A=(-torch.rand(d, n, device=DEVICE) * 4 - 0.1).to(dtype),
        B=_r(b, l, g, n, dtype=dtype),
        C=_r(b, l, g, n, dtype=dtype),
        D=_r(d, dtype=dtype) if D else None,
        z=_r(b, l, d, dtype=dtype) if z else None,
        dt_bias=(torch.randn(d, device=DEVICE) * 0.5).to(dtype) if bias else None,
        initial_state=torch.randn(b, d, n, device=DEVICE),
    )


def ssd_inputs(b, l, h, p, n, g, dtype=torch.float32, *, D_shape="h", z=True, bias=True):
    return dict(
        x=_r(b, l, h, p, dtype=dtype),
        dt=_r(b, l, h, dtype=dtype) - 1.0,
        A=(-torch.rand(h, device=DEVICE) * 4 - 0.1).to(dtype),
        B=_r(b, l, g, n, dtype=dtype),
        C=_r(b, l, g, n, dtype=dtype),
        D={"h": _r(h, dtype=dtype), "hp": _r(h, p, dtype=dtype), None: None}[D_shape],
        z=_r(b, l, h, p, dtype=dtype) if z else None,
        dt_bias=(torch.randn(h, device=DEVICE) * 0.5).to(dtype) if bias else None,
        initial_state=torch.randn(b, h, p, n, device=DEVICE),
    )


def _to64(inputs):
    return {k: None if v is None else v.double() for k, v in inputs.items()}


def s6_step_args(inp, t, state):
    return dict(
        u_t=inp["u"][:, t], dt_t=inp["dt"][:, t], A=inp["A"], B_t=inp["B"][:, t], C_t=inp["C"][:, t], state=state,
        D=inp["D"], z_t=None if inp["z"] is None else inp["z"][:, t], dt_bias=inp["dt_bias"],
    )  # fmt: skip


def ssd_step_args(inp, t, state):
    return dict(
        x_t=inp["x"][:, t], dt_t=inp["dt"][:, t], A=inp["A"], B_t=inp["B"][:, t], C_t=inp["C"][:, t], state=state,
        D=inp["D"], z_t=None if inp["z"] is None else inp["z"][:, t], dt_bias=inp["dt_bias"],
    )  # fmt: skip


def compare_one_step(step, args_of, inp, **kw):
    """One step from the initial state: Triton vs the step in fp64 and in the inputs' own dtype."""
    exact = _to64(inp)
    y, h = step(**args_of(inp, 0, inp["initial_state"]), backend="triton", **kw)
    y_s, h_s = step(**args_of(inp, 0, inp["initial_state"]), backend="reference", **kw)
    y64, h64 = step(**args_of(exact, 0, exact["initial_state"]), backend="reference", **kw)
    assert y.dtype == y_s.dtype and h.dtype == torch.float32
    assert_by_rule("y_t", y, y_s, y64)
    assert_by_rule("new_state", h, h_s, h64)


def compare_steps_with_forward(step, args_of, forward, inp, l, forward_kw=None, **kw):
    """l Triton steps == the full forward (torch backend) on the same inputs, judged against the fp64 reference."""
    state, ys = inp["initial_state"], []
    before = state.clone()
    for t in range(l):
        y_t, state = step(**args_of(inp, t, state), backend="triton", **kw)
        ys.append(y_t)
    assert torch.equal(inp["initial_state"], before), "the step modified its input state"
    fwd_kw = {**kw, **(forward_kw or {}), "return_final_state": True}
    y_s, h_s = forward(**inp, backend="torch", **fwd_kw)
    y64, h64 = forward(**_to64(inp), backend="reference", **fwd_kw)
    assert_by_rule("steps y", torch.stack(ys, dim=1), y_s, y64)
    assert_by_rule("steps final_state", state, h_s, h64)


# ---- Mamba-1: selective_scan_step


@pytest.mark.triton_interpret
@pytest.mark.parametrize(
    ("b", "d", "n", "g", "dtype", "optional"),
    [
        (3, 12, 5, 3, torch.float32, True),
        (2, 24, 16, 2, torch.float32, False),
        (1, 7, 3, 1, torch.bfloat16, True),
        (2, 40, 16, 4, torch.bfloat16, False),
        (2, 10, 4, 2, torch.float16, True),
    ],
)
def test_selective_scan_step(b, d, n, g, dtype, optional, nan_outputs):
    inp = s6_inputs(b, 1, d, n, g, dtype, D=optional, z=optional, bias=optional)
    if not optional:
        inp["dt"] = inp["dt"].abs() * 0.3  # no softplus: a positive step size as given
    compare_one_step(selective_scan_step, s6_step_args, inp, dt_softplus=optional)


@pytest.mark.triton_interpret
@pytest.mark.parametrize(("g", "dtype"), [(1, torch.float32), (3, torch.float32), (2, torch.bfloat16)])
def test_selective_scan_steps_equal_forward(g, dtype, nan_outputs):
    inp = s6_inputs(2, 9, 12, 6, g, dtype)
    compare_steps_with_forward(selective_scan_step, s6_step_args, selective_scan, inp, 9, dt_softplus=True)


# ---- Mamba-2: ssd_step


@pytest.mark.triton_interpret
@pytest.mark.parametrize(
    ("h", "p", "n", "g", "D_shape", "z", "dt_limit", "dtype"),
    [
        (6, 5, 7, 3, "h", True, (0.0, float("inf")), torch.float32),
        (6, 5, 7, 2, "hp", False, (0.05, 0.7), torch.float32),
        (4, 8, 16, 1, None, True, (0.1, float("inf")), torch.float32),
        (6, 12, 9, 3, "hp", True, (0.0, 0.5), torch.bfloat16),
        (2, 3, 4, 2, "h", False, (0.0, float("inf")), torch.float16),
    ],
)
def test_ssd_step(h, p, n, g, D_shape, z, dt_limit, dtype, nan_outputs):
    inp = ssd_inputs(2, 1, h, p, n, g, dtype, D_shape=D_shape, z=z)
    compare_one_step(ssd_step, ssd_step_args, inp, dt_softplus=True, dt_limit=dt_limit)


@pytest.mark.triton_interpret
def test_ssd_step_without_softplus_or_bias(nan_outputs):
    inp = ssd_inputs(3, 1, 4, 6, 5, 2, bias=False)
    inp["dt"] = inp["dt"].abs() * 0.3
    compare_one_step(ssd_step, ssd_step_args, inp)


@pytest.mark.triton_interpret
@pytest.mark.parametrize(
    ("g", "D_shape", "dt_limit", "dtype"),
    [
        (1, "h", (0.0, float("inf")), torch.float32),
        (3, "hp", (0.05, 0.8), torch.float32),
        (2, "h", (0.0, 0.6), torch.bfloat16),
    ],
)
def test_ssd_steps_equal_forward(g, D_shape, dt_limit, dtype, nan_outputs):
    inp = ssd_inputs(2, 11, 6, 5, 8, g, dtype, D_shape=D_shape)
    kw = dict(dt_softplus=True, dt_limit=dt_limit)
    compare_steps_with_forward(ssd_step, ssd_step_args, ssd, inp, 11, forward_kw={"chunk_size": 4}, **kw)


# ---- both: in-place state, strided inputs, the grad fallback, errors


@pytest.mark.triton_interpret
@pytest.mark.parametrize("backend", ["triton", "torch"])
def test_out_state_in_place(backend, nan_outputs):
    inp = s6_inputs(2, 1, 12, 5, 3)
    args = s6_step_args(inp, 0, inp["initial_state"])
    y, h = selective_scan_step(**args, dt_softplus=True, backend="torch")
    state = inp["initial_state"].clone()
    y2, h2 = selective_scan_step(**{**args, "state": state}, dt_softplus=True, backend=backend, out_state=state)
    assert h2 is state
    torch.testing.assert_close(y2, y, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(state, h, rtol=1e-5, atol=1e-6)

    inp = ssd_inputs(2, 1, 6, 5, 7, 3, D_shape="hp")
    args = ssd_step_args(inp, 0, inp["initial_state"])
    y, h = ssd_step(**args, dt_softplus=True, dt_limit=(0.0, 0.5), backend="torch")
    state = inp["initial_state"].clone()
    y2, h2 = ssd_step(
        **{**args, "state": state}, dt_softplus=True, dt_limit=(0.0, 0.5), backend=backend, out_state=state
    )
    assert h2 is state
    torch.testing.assert_close(y2, y, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(state, h, rtol=1e-5, atol=1e-6)


@pytest.mark.triton_interpret
def test_strided_inputs(nan_outputs):
    # slices of one fused projection, as the layers pass them: no input is contiguous
    b, d, n, g = 3, 12, 4, 2
    proj = torch.randn(b, 2 * d + 2 * g * n + d, device=DEVICE)
    u, z, dt = proj[:, :d], proj[:, d : 2 * d], proj[:, -d:]
    B = proj[:, 2 * d : 2 * d + g * n].unflatten(1, (g, n))
    C = proj[:, 2 * d + g * n : 2 * d + 2 * g * n].unflatten(1, (g, n))
    A = -torch.rand(n, d, device=DEVICE).t()  # (d, n), column-major
    state = torch.randn(b, n, d, device=DEVICE).transpose(1, 2)  # (b, d, n), strided
    args = dict(u_t=u, dt_t=dt, A=A, B_t=B, C_t=C, state=state, z_t=z, dt_softplus=True)
    y, h = selective_scan_step(**args, backend="triton")
    y_ref, h_ref = selective_scan_step(**args, backend="reference")
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(h, h_ref, rtol=1e-5, atol=1e-5)

    h_, p = 4, 3
    proj = torch.randn(b, 2 * h_ * p + 2 * g * n + h_, device=DEVICE)
    x, z = proj[:, : h_ * p].unflatten(1, (h_, p)), proj[:, h_ * p : 2 * h_ * p].unflatten(1, (h_, p))
    B = proj[:, 2 * h_ * p : 2 * h_ * p + g * n].unflatten(1, (g, n))
    C = proj[:, 2 * h_ * p + g * n : -h_].unflatten(1, (g, n))
    state = torch.randn(b, n, h_, p, device=DEVICE).permute(0, 2, 3, 1)  # (b, h, p, n), strided
    args = dict(x_t=x, dt_t=proj[:, -h_:], A=-torch.rand(h_, device=DEVICE), B_t=B, C_t=C, state=state, z_t=z)
    y, h = ssd_step(**args, dt_softplus=True, backend="triton")
    y_ref, h_ref = ssd_step(**args, dt_softplus=True, backend="reference")
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(h, h_ref, rtol=1e-5, atol=1e-5)


@pytest.mark.triton_interpret
def test_inputs_requiring_grad_run_the_torch_path(nan_outputs, monkeypatch):
    s6_kernel, ssd_kernel = nan_outputs
    s6 = s6_inputs(2, 1, 8, 4, 2)
    s6["A"].requires_grad_(True)
    m2 = ssd_inputs(2, 1, 4, 3, 5, 2)
    m2["A"].requires_grad_(True)
    with torch.no_grad():  # grad mode off: the kernels run, nothing to differentiate
        y, _ = selective_scan_step(**s6_step_args(s6, 0, s6["initial_state"]), backend="triton")
        y2, _ = ssd_step(**ssd_step_args(m2, 0, m2["initial_state"]), backend="triton")
    assert y.grad_fn is None and y2.grad_fn is None

    def refuse(*args, **kwargs):
        raise AssertionError("the Triton step ran on inputs that require grad")

    monkeypatch.setattr(s6_kernel, "selective_scan_step_triton", refuse)
    monkeypatch.setattr(ssd_kernel, "ssd_step_triton", refuse)
    y, h = selective_scan_step(**s6_step_args(s6, 0, s6["initial_state"]), backend="triton")
    (y.sum() + h.sum()).backward()
    assert s6["A"].grad is not None
    y, h = ssd_step(**ssd_step_args(m2, 0, m2["initial_state"]), backend="triton")
    (y.sum() + h.sum()).backward()
    assert m2["A"].grad is not None


@pytest.mark.triton_interpret
def test_auto_and_bad_inputs(nan_outputs):
    expected = "triton" if HAS_CUDA else "torch"  # auto picks Triton for CUDA tensors only
    for op in ("selective_scan_step", "ssd_step"):
        assert _backend.resolve_backend(op, "auto", torch.device(DEVICE)) == expected
    s6 = s6_inputs(2, 1, 8, 4, 2)
    m2 = ssd_inputs(2, 1, 4, 3, 5, 2)
    s6_args = s6_step_args(_to64(s6), 0, s6["initial_state"])
    m2_args = ssd_step_args(_to64(m2), 0, m2["initial_state"])
    with pytest.raises(ValueError, match="backend='triton' for selective_scan_step: u_t is float64"):
        selective_scan_step(**s6_args, backend="triton")
    with pytest.raises(ValueError, match="backend='triton' for ssd_step: x_t is float64"):
        ssd_step(**m2_args, backend="triton")
    if HAS_CUDA:  # auto: float64 runs the torch path, with a warning
        with pytest.warns(UserWarning, match="float64"):
            selective_scan_step(**s6_args)
        with pytest.warns(UserWarning, match="float64"):
            ssd_step(**m2_args)
    s6_args = s6_step_args(s6, 0, s6["initial_state"])
    m2_args = ssd_step_args(m2, 0, m2["initial_state"])
    with pytest.raises(ValueError, match=r"out_state: expected shape \(b, d, n\) = \(2, 8, 4\), got \(2, 8, 5\)"):
        selective_scan_step(**s6_args, backend="triton", out_state=torch.empty(2, 8, 5, device=DEVICE))
    with pytest.raises(TypeError, match=r"out_state: expected dtype torch\.float32"):
        ssd_step(**m2_args, backend="triton", out_state=torch.empty(2, 4, 3, 5, device=DEVICE).half())
    with pytest.raises(ValueError, match=r"D: expected shape \(h,\) = \(4,\) or \(h, p\) = \(4, 3\)"):
        ssd_step(**{**m2_args, "D": torch.randn(3, 4, device=DEVICE)}, backend="triton")
    with pytest.raises(ValueError, match="d = 8 must be divisible by g"):
        selective_scan_step(**{**s6_args, "B_t": torch.randn(2, 3, 4), "C_t": torch.randn(2, 3, 4)}, backend="triton")


@pytest.mark.cuda
@pytest.mark.skipif(not HAS_CUDA, reason="needs an NVIDIA GPU")
@pytest.mark.parametrize("b", [1, 16, 64])
def test_selective_scan_step_full_size_cuda(b, nan_outputs):
    inp = s6_inputs(b, 1, 4096, 16, 1, torch.bfloat16)
    compare_one_step(selective_scan_step, s6_step_args, inp, dt_softplus=True)
    inp = s6_inputs(b, 1, 4096, 16, 1, torch.float32)
    compare_one_step(selective_scan_step, s6_step_args, inp, dt_softplus=True)


@pytest.mark.cuda
@pytest.mark.skipif(not HAS_CUDA, reason="needs an NVIDIA GPU")
@pytest.mark.parametrize(("b", "g"), [(1, 1), (16, 8), (64, 1)])
def test_ssd_step_full_size_cuda(b, g, nan_outputs):
    inp = ssd_inputs(b, 1, 64, 64, 128, g, torch.bfloat16)
    compare_one_step(ssd_step, ssd_step_args, inp, dt_softplus=True, dt_limit=(0.0, 0.1))
    inp = ssd_inputs(b, 1, 64, 64, 128, g, torch.float32, D_shape="hp")
    compare_one_step(ssd_step, ssd_step_args, inp, dt_softplus=True)


@pytest.mark.cuda
@pytest.mark.skipif(not HAS_CUDA, reason="needs an NVIDIA GPU")
def test_steps_equal_forward_cuda(nan_outputs):
    inp = s6_inputs(4, 64, 4096, 16, 1, torch.bfloat16)
    compare_steps_with_forward(selective_scan_step, s6_step_args, selective_scan, inp, 64, dt_softplus=True)
    inp = ssd_inputs(4, 64, 64, 64, 128, 1, torch.bfloat16)
    compare_steps_with_forward(ssd_step, ssd_step_args, ssd, inp, 64, {"chunk_size": 64}, dt_softplus=True)
