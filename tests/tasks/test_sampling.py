from __future__ import annotations

import torch

from ssmkit.tasks._sampling import place_blocks


def test_place_blocks_fit_without_overlap():
    starts = place_blocks(500, 30, 6, 4, torch.Generator().manual_seed(0))
    assert (starts.diff(dim=1) >= 4).all()
    assert starts.min() >= 0 and starts.max() <= 26
    assert starts[:, 0].min() == 0 and starts[:, -1].max() == 26


def test_place_blocks_uniform_over_arrangements():
    # Two 2-token blocks in 5 tokens: (0, 2), (0, 3), (1, 3), one third each.
    starts = place_blocks(6000, 5, 2, 2, torch.Generator().manual_seed(0))
    counts = {}
    for row in starts.tolist():
        counts[tuple(row)] = counts.get(tuple(row), 0) + 1
    assert set(counts) == {(0, 2), (0, 3), (1, 3)}
    assert all(abs(c - 2000) < 150 for c in counts.values())
