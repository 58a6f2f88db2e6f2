"""`bench.query_bench` at a tiny size: it runs, reads only the stored regions and finds every
straddler from both sides (no timing is asserted)."""

from __future__ import annotations

from bench.query_bench import run


async def test_query_bench_runs_small() -> None:
    res = await run(regions=3, objects=5, queries=10)
    assert res["big_box"]["regions_read"] == 3
    assert res["big_box"]["objects"] == 3 * 6
    assert res["straddlers"] == {"found_from_both_sides": 3, "expected": 3}
