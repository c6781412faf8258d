import pytest
import torch

from ssmkit.ops.selective_scan import chunked, selective_scan, selective_scan_step
from tests.rules import assert_by_rule


def make_inputs(b, l, d, n, g, *, dtype=torch.float32):
    return dict(
        u=torch.randn(b, l, d, dtype=dtype),
        dt=torch.randn(b, l, d, dtype=dtype) - 1.0,
        A=-torch.rand(d, n, dtype=dtype) * 4 - 0.1,
        B=torch.randn(b, l, g, n, dtype=dtype),
        C=torch.randn(b, l, g, n, dtype=dtype),
        D=torch.randn(d, dtype=dtype),
        z=torch.randn(b, l, d, dtype=dtype),
        dt_bias=torch.randn(d, dtype=dtype) * 0.5,
        initial_state=torch.randn(b, d, n, dtype=dtype),
    )


def run(inputs, backend, **kw):
    return selective_scan(**inputs, dt_softplus=True, return_final_state=True, backend=backend, **kw)


def compare_with_grads(inputs, **kw):
    leaves = {k: v.clone().requires_grad_(True) for k, v in inputs.items()}
    exact = {k: v.detach().double().requires_grad_(True) for k, v in inputs.items()}
    same = {k: v.clone().requires_grad_(True) for k, v in inputs.items()}
    y, h = run(leaves, "torch", **kw)
    y64, h64 = run(exact, "reference", **kw)
    y32, h32 = run(same, "reference", **kw)
    assert_by_rule("y", y, y32, y64)
    assert_by_rule("final_state", h, h32, h64)
    gy, gh = torch.randn_like(y), torch.randn_like(h)
    names = list(inputs)
    g_fast = torch.autograd.grad((y, h), [leaves[k] for k in names], (gy, gh))
    g_exact = torch.autograd.grad((y64, h64), [exact[k] for k in names], (gy.double(), gh.double()))
    g_same = torch.autograd.grad((y32, h32), [same[k] for k in names], (gy, gh))
    for name, a, b, c in zip(names, g_fast, g_same, g_exact):
        assert_by_rule(f"grad {name}", a, b, c)


@pytest.mark.parametrize("l", [1, 7, 63, 257])
@pytest.mark.parametrize("g", [1, 2])
def test_fast_matches_reference(l, g, monkeypatch):
    # blocks of 2 chunks (and a last block of 1 at l = 257): both block paths, state carried between blocks
    monkeypatch.setattr(chunked, "BLOCK_ELEMENTS", 128)
    compare_with_grads(make_inputs(2, l, 8, 4, g))


def test_seq_idx_matches_reference_and_separate_sequences(monkeypatch):
    monkeypatch.setattr(chunked, "BLOCK_ELEMENTS", 64)
    lengths = [5, 70, 1, 30]
    inputs = make_inputs(1, sum(lengths), 6, 3, 3)
    seq_idx = torch.cat([torch.full((n,), i) for i, n in enumerate(lengths)])[None]
    compare_with_grads(inputs, seq_idx=seq_idx)

    y_packed, h_packed = run(inputs, "torch", seq_idx=seq_idx)
    start = 0
    for i, n in enumerate(lengths):
        part = {k: (v[:, start : start + n] if v.dim() >= 3 and k != "initial_state" else v) for k, v in inputs.items()}
        if i > 0:
            part["initial_state"] = None
        y, h = run(part, "reference")
        torch.testing.assert_close(y_packed[:, start : start + n], y, rtol=1e-4, atol=1e-5)
        start += n
    torch.testing.assert_close(h_packed, h, rtol=1e-4, atol=1e-5)


def test_small_chunks_cross_resets():
    inputs = make_inputs(2, 45, 4, 3, 1)
    seq_idx = torch.tensor([[0] * 9 + [1] * 17 + [2] * 19, [0] * 45])
    args = [inputs[k] for k in ("u", "dt", "A", "B", "C", "D", "z", "dt_bias")]
    with torch.no_grad():
        y_fast, h_fast = chunked.selective_scan_chunked(*args, True, inputs["initial_state"], seq_idx, chunk=4)
    y_ref, h_ref = run(inputs, "reference", seq_idx=seq_idx)
    torch.testing.assert_close(y_fast, y_ref, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(h_fast, h_ref, rtol=1e-4, atol=1e-5)


def test_step_loop_equals_forward():
    inputs = make_inputs(2, 9, 6, 4, 2)
    y_full, h_full = run(inputs, "torch")
    state = inputs["initial_state"]
    for t in range(9):
        y_t, state = selective_scan_step(
            inputs["u"][:, t],
            inputs["dt"][:, t],
            inputs["A"],
            inputs["B"][:, t],
            inputs["C"][:, t],
            state,
            D=inputs["D"],
            z_t=inputs["z"][:, t],
            dt_bias=inputs["dt_bias"],
            dt_softplus=True,
        )
        torch.testing.assert_close(y_t, y_full[:, t], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(state, h_full, rtol=1e-4, atol=1e-5)


def test_without_optional_inputs():
    inputs = make_inputs(1, 20, 4, 2, 1)
    y = selective_scan(inputs["u"], inputs["dt"].abs(), inputs["A"], inputs["B"], inputs["C"])
    y_ref = selective_scan(inputs["u"], inputs["dt"].abs(), inputs["A"], inputs["B"], inputs["C"], backend="reference")
    torch.testing.assert_close(y, y_ref, rtol=1e-4, atol=1e-5)
    assert y.dtype == torch.float32 and y.shape == (1, 20, 4)


def test_bfloat16_input_keeps_dtype_and_fp32_state():
    inputs = make_inputs(1, 10, 4, 2, 1, dtype=torch.bfloat16)
    y, h = run(inputs, "torch")
    assert y.dtype == torch.bfloat16 and h.dtype == torch.float32


@pytest.mark.parametrize(
    ("field", "bad", "message"),
    [
        ("dt", torch.randn(2, 7, 5), "dt: expected shape (b, l, d)"),
        ("A", torch.randn(8), "A: expected shape (d, n)"),
        ("B", torch.randn(2, 7, 3, 4), "d = 8 must be divisible by g"),
        ("C", torch.randn(2, 7, 2, 5), "C: expected shape (b, l, g, n)"),
        ("D", torch.randn(3), "D: expected shape (d,)"),
        ("initial_state", torch.randn(2, 8), "initial_state: expected shape (b, d, n)"),
        ("u", torch.randint(0, 3, (2, 7, 8)), "u: expected a floating dtype"),
    ],
)
def test_bad_inputs_name_the_argument(field, bad, message):
    inputs = make_inputs(2, 7, 8, 4, 2)
    inputs[field] = bad
    with pytest.raises((ValueError, TypeError), match=message.replace("(", r"\(").replace(")", r"\)")):
        selective_scan(**inputs)


def test_bad_backend_and_seq_idx():
    inputs = make_inputs(1, 7, 8, 4, 1)
    with pytest.raises(ValueError, match="backend"):
        selective_scan(**inputs, backend="cuda")
    with pytest.raises(TypeError, match="seq_idx: expected an integer dtype"):
        selective_scan(**inputs, seq_idx=torch.zeros(1, 7))
    with pytest.raises(ValueError, match="seq_idx: expected shape"):
        selective_scan(**inputs, seq_idx=torch.zeros(1, 6, dtype=torch.long))
