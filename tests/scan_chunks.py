"""Shared setup for tests of the Triton scan's grad_hint path: a one-pass forward with a chunked backward."""

from __future__ import annotations


def one_pass_forward_chunked_backward(triton_scan, monkeypatch) -> list:
    """Makes the forward run in one pass and the backward in 16-step chunks, whatever the size, and records the
    backward's local-pass launches in the returned list."""
    monkeypatch.setattr(triton_scan, "FWD_UNCHUNKED_PROGRAMS", 1)
    monkeypatch.setattr(triton_scan, "BWD_UNCHUNKED_PROGRAMS", 1 << 30)
    monkeypatch.setattr(triton_scan, "BWD_TARGET_PROGRAMS", 1 << 20)
    kernel, launches = triton_scan._bwd_local_seq_kernel, []

    class Spy:
        def __getitem__(self, grid):
            return lambda *a, **kw: launches.append(grid) or kernel[grid](*a, **kw)

    monkeypatch.setattr(triton_scan, "_bwd_local_seq_kernel", Spy())
    return launches
