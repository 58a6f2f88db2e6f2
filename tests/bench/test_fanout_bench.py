"""The fan-out bench's pure parts: the weak-scaling layout and the expected traffic per
server (what tells a saturated run from a kept-up one)."""

from __future__ import annotations

import pytest

from bench.fanout_bench import _expected, _layout
from regions import RegionKey


def test_layout_gives_each_server_one_square_block() -> None:
    blocks = _layout(4, 2)
    assert len(blocks) == 4 and all(len(b) == 4 for b in blocks)
    every = [k for b in blocks for k in b]
    assert len(set(every)) == 16  # the 4x4 world, each region owned once
    assert {(k.ix, k.iy, k.iz) for k in every} == {(x, y, 0) for x in range(4) for y in range(4)}
    assert blocks[0] == [
        RegionKey(0, 0, 0),
        RegionKey(0, 1, 0),
        RegionKey(1, 0, 0),
        RegionKey(1, 1, 0),
    ]
    with pytest.raises(SystemExit):
        _layout(8, 2)


def test_expected_foreign_batches() -> None:
    # 4 servers of 2x2 in a 4x4 world: each is a corner and borders 5 foreign regions
    assert _expected(_layout(4, 2), "interest", 1.0) == 5.0
    # 16 in 8x8: 4 corners (5), 8 edges (8), 4 interior (12)
    assert _expected(_layout(16, 2), "interest", 2.0) == 2.0 * (4 * 5 + 8 * 8 + 4 * 12) / 16
    # world-wide: every other server's regions
    assert _expected(_layout(16, 2), "world", 2.0) == 2.0 * 60
