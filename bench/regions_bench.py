"""Benchmark of the `regions` package.

1. Position -> region mapping: numpy batch `region_keys` against a pure-Python loop of
   ``region_of(...).morton`` on the same positions (per-position rates and their ratio).
   Targets: >= 5 M positions/s, and >= 30x the loop.
2. `SpatialIndex` box queries over 100,000 objects against a numpy brute force (every box
   compared per query, vectorised), for 1,000 small query boxes (target: >= 10x the brute
   force) and 1,000 larger area-of-interest boxes (reported), plus `bulk_load` and
   one-insert-at-a-time build times.

Every timed answer is checked against its reference. Results go to bench/results/regions.json.

    python -m bench.regions_bench           # full sizes
    python -m bench.regions_bench --quick   # a tenth of them (smoke run)
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from bench.common import format_table, timeit_best, write_result
from regions import SpatialIndex, region_keys, region_of
from regions.spatial_index import NODE_CAPACITY

F64 = npt.NDArray[np.float64]

MAPPING_RATE_TARGET = 5e6
MAPPING_RATIO_TARGET = 30.0
RTREE_RATIO_TARGET = 10.0


def bench_mapping(n_numpy: int, n_loop: int, seed: int = 0) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    # +-100 km around the origin: every sign, many regions, some exact multiples of 2 km
    pos = rng.uniform(-1e5, 1e5, (n_numpy, 3))
    pos[::97] = np.round(pos[::97] / 2000.0) * 2000.0

    codes = region_keys(pos)
    t_numpy = timeit_best(lambda: region_keys(pos), repeat=5)

    pts = pos[:n_loop].tolist()

    def loop() -> list[int]:
        return [region_of(x, y, z).morton for x, y, z in pts]

    loop_codes = loop()
    if loop_codes != codes[:n_loop].tolist():
        raise AssertionError("numpy and scalar mapping disagree")
    t_loop = timeit_best(loop, repeat=3)

    numpy_rate = n_numpy / t_numpy
    loop_rate = n_loop / t_loop
    ratio = numpy_rate / loop_rate
    return {
        "numpy_positions": n_numpy,
        "numpy_seconds": t_numpy,
        "numpy_positions_per_s": numpy_rate,
        "loop_positions": n_loop,
        "loop_seconds": t_loop,
        "loop_positions_per_s": loop_rate,
        "speedup": ratio,
        "target_positions_per_s": MAPPING_RATE_TARGET,
        "target_speedup": MAPPING_RATIO_TARGET,
        "meets_targets": bool(numpy_rate >= MAPPING_RATE_TARGET and ratio >= MAPPING_RATIO_TARGET),
    }


# The R-tree scene: an 8 km x 8 km patch of terrain, 200 m deep, holding small objects
# (0.5-10 m across). Two sets of query boxes: "small" ones, 10-50 m across and 10-30 m tall
# (proximity and collision checks; the headline figure), and "interest" boxes, 50-200 m
# across and 20-100 m tall (area-of-interest queries).
SCENE_XY = 8000.0
SCENE_Z = 200.0
QUERY_SETS = {
    "small": ((5.0, 5.0, 5.0), (25.0, 25.0, 15.0)),
    "interest": ((25.0, 25.0, 10.0), (100.0, 100.0, 50.0)),
}


def make_scene(n: int, rng: np.random.Generator) -> tuple[F64, F64]:
    centre = rng.uniform((0.0, 0.0, 0.0), (SCENE_XY, SCENE_XY, SCENE_Z), (n, 3))
    half = rng.uniform(0.25, 5.0, (n, 3))
    return centre - half, centre + half


def make_queries(
    m: int, rng: np.random.Generator, half_lo: Sequence[float], half_hi: Sequence[float]
) -> tuple[F64, F64]:
    centre = rng.uniform((0.0, 0.0, 0.0), (SCENE_XY, SCENE_XY, SCENE_Z), (m, 3))
    half = rng.uniform(half_lo, half_hi, (m, 3))
    return centre - half, centre + half


def bench_queries(index: SpatialIndex[int], lo: F64, hi: F64, qlo: F64, qhi: F64) -> dict[str, Any]:
    """R-tree queries (one by one and batched) against the numpy brute force, all checked."""
    n_queries = len(qlo)
    queries = [(*a, *b) for a, b in zip(qlo.tolist(), qhi.tolist(), strict=True)]

    def rtree_queries() -> list[list[int]]:
        return [index.intersection(q) for q in queries]

    def rtree_batch() -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        return index.intersection_many(qlo, qhi)

    # brute force: one vectorised pass over every box per query, on contiguous columns
    lox, loy, loz = (np.ascontiguousarray(lo[:, i]) for i in range(3))
    hix, hiy, hiz = (np.ascontiguousarray(hi[:, i]) for i in range(3))

    def brute() -> list[npt.NDArray[np.intp]]:
        out = []
        for qx0, qy0, qz0, qx1, qy1, qz1 in queries:
            m = lox <= qx1
            m &= hix >= qx0
            m &= loy <= qy1
            m &= hiy >= qy0
            m &= loz <= qz1
            m &= hiz >= qz0
            out.append(np.flatnonzero(m))
        return out

    # every answer checked against the brute force (ids are the row numbers here)
    want = brute()
    got = rtree_queries()
    handles, offsets = rtree_batch()
    hits = 0
    for j, w in enumerate(want):
        if sorted(got[j]) != w.tolist():
            raise AssertionError(f"R-tree query {j} disagrees with the brute force")
        batch = sorted(index.id_of_handle(h) for h in handles[offsets[j] : offsets[j + 1]])
        if batch != w.tolist():
            raise AssertionError(f"batched R-tree query {j} disagrees with the brute force")
        hits += len(w)

    rtree_qps = n_queries / timeit_best(rtree_queries, repeat=5)
    batch_qps = n_queries / timeit_best(rtree_batch, repeat=5)
    brute_qps = n_queries / timeit_best(brute, repeat=3)
    return {
        "queries": n_queries,
        "mean_hits_per_query": hits / n_queries,
        "rtree_queries_per_s": rtree_qps,
        "rtree_batch_queries_per_s": batch_qps,
        "brute_force_queries_per_s": brute_qps,
        "speedup": rtree_qps / brute_qps,
        "batch_speedup": batch_qps / brute_qps,
    }


def bench_rtree(n_objects: int, n_queries: int, seed: int = 0) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    lo, hi = make_scene(n_objects, rng)
    boxes = np.concatenate([lo, hi], axis=1)
    ids = list(range(n_objects))

    index: SpatialIndex[int] = SpatialIndex()
    t_bulk = timeit_best(lambda: index.bulk_load(ids, boxes), repeat=3)

    incremental: SpatialIndex[int] = SpatialIndex()
    rows = boxes.tolist()
    t0 = time.perf_counter()
    for i, row in zip(ids, rows, strict=True):
        incremental.insert(i, row)
    t_insert = time.perf_counter() - t0
    probe = (*lo[0].tolist(), *hi[0].tolist())
    if sorted(incremental.intersection(probe)) != sorted(index.intersection(probe)):
        raise AssertionError("incrementally built index disagrees with the bulk-loaded one")
    del incremental

    out: dict[str, Any] = {
        "objects": n_objects,
        "node_capacity": NODE_CAPACITY,
        "bulk_load_seconds": t_bulk,
        "insert_build_seconds": t_insert,
    }
    for name, (half_lo, half_hi) in QUERY_SETS.items():
        qlo, qhi = make_queries(n_queries, rng, half_lo, half_hi)
        out[name] = bench_queries(index, lo, hi, qlo, qhi) | {
            "query_half_size_range_m": [list(half_lo), list(half_hi)]
        }
    out["target_speedup"] = RTREE_RATIO_TARGET
    out["meets_targets"] = bool(out["small"]["speedup"] >= RTREE_RATIO_TARGET)
    return out


def summary(mapping: dict[str, Any], rtree: dict[str, Any]) -> str:
    def ok(flag: bool) -> str:
        return "ok" if flag else "MISSED"

    rows: list[Sequence[object]] = [
        ("map: numpy region_keys", f"{mapping['numpy_positions_per_s']:,.0f} pos/s", "", ""),
        ("map: Python region_of loop", f"{mapping['loop_positions_per_s']:,.0f} pos/s", "", ""),
        (
            "map: numpy vs loop",
            f"{mapping['speedup']:.0f}x",
            f">= {MAPPING_RATE_TARGET / 1e6:.0f} M/s, >= {MAPPING_RATIO_TARGET:.0f}x",
            ok(mapping["meets_targets"]),
        ),
        (
            f"rtree: bulk_load {rtree['objects']:,}",
            f"{rtree['bulk_load_seconds'] * 1e3:,.0f} ms",
            f"(one insert at a time: {rtree['insert_build_seconds'] * 1e3:,.0f} ms)",
            "",
        ),
    ]
    for name in QUERY_SETS:
        r = rtree[name]
        target = f">= {RTREE_RATIO_TARGET:.0f}x" if name == "small" else "(reported)"
        rows += [
            (f"{name}: rtree intersection()", f"{r['rtree_queries_per_s']:,.0f} q/s", "", ""),
            (
                f"{name}: rtree intersection_many()",
                f"{r['rtree_batch_queries_per_s']:,.0f} q/s",
                "",
                "",
            ),
            (f"{name}: numpy brute force", f"{r['brute_force_queries_per_s']:,.0f} q/s", "", ""),
            (
                f"{name}: rtree vs brute force",
                f"{r['speedup']:.1f}x (batched {r['batch_speedup']:.1f}x)",
                target,
                ok(rtree["meets_targets"]) if name == "small" else "",
            ),
            (f"{name}: mean hits per query", f"{r['mean_hits_per_query']:.1f}", "", ""),
        ]
    return format_table(("measurement", "result", "target", ""), rows)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a tenth of the sizes (smoke run)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-write", action="store_true", help="do not write bench/results")
    ap.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    args = ap.parse_args(argv)
    scale = 10 if args.quick else 1
    mapping = bench_mapping(2_000_000 // scale, 100_000 // scale, args.seed)
    rtree = bench_rtree(100_000 // scale, 1_000, args.seed)
    print(summary(mapping, rtree))
    if not args.no_write:
        path = write_result(
            "regions", {"quick": args.quick, "seed": args.seed, "mapping": mapping, "rtree": rtree}
        )
        print(f"\nwrote {path}")
    if args.check and not (mapping["meets_targets"] and rtree["meets_targets"]):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
