"""State-space duality: the chunked SSD, its quadratic (attention-like) form and Mamba-1's selective scan run
with a per-head scalar A are one computation."""

import pytest
import torch

from ssmkit.ops import selective_scan, ssd, ssd_quadratic


@pytest.mark.parametrize(("l", "g", "chunk"), [(1, 1, 4), (7, 2, 4), (63, 1, 16), (257, 2, 64)])
def test_ssd_chunked_equals_quadratic_equals_selective_scan(l, g, chunk):
    b, h, p, n = 2, 4, 3, 5
    x, z = torch.randn(b, l, h, p), torch.randn(b, l, h, p)
    dt = torch.randn(b, l, h) - 1
    A = -torch.rand(h) * 3 - 0.1
    B, C = torch.randn(b, l, g, n), torch.randn(b, l, g, n)
    D, dt_bias = torch.randn(h), torch.randn(h) * 0.5
    h0 = torch.randn(b, h, p, n)
    kw = dict(D=D, z=z, dt_bias=dt_bias, dt_softplus=True, initial_state=h0, return_final_state=True)

    y_chunked, s_chunked = ssd(x, dt, A, B, C, chunk_size=chunk, **kw)
    y_quadratic, s_quadratic = ssd_quadratic(x, dt, A, B, C, **kw)
    # Mamba-1 view: every channel of head j is its own SSM with A[c, :] = A[j] and dt[c] = dt[j]
    d = h * p
    y_scan, s_scan = selective_scan(
        x.reshape(b, l, d),
        dt.repeat_interleave(p, dim=-1),
        A.repeat_interleave(p)[:, None].expand(d, n),
        B,
        C,
        D=D.repeat_interleave(p),
        z=z.reshape(b, l, d),
        dt_bias=dt_bias.repeat_interleave(p),
        dt_softplus=True,
        initial_state=h0.reshape(b, d, n),
        return_final_state=True,
    )
    torch.testing.assert_close(y_chunked, y_quadratic, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(y_chunked.reshape(b, l, d), y_scan, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(s_chunked, s_quadratic, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(s_chunked.reshape(b, d, n), s_scan, rtol=1e-4, atol=1e-4)
