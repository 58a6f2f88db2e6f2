"""`SpatialIndex` against a brute-force model: box/sphere queries, batched queries, nearest,
insert/delete/move, bulk loading, and refusal of bad input."""

from __future__ import annotations

import copy
import math
import pickle
from collections.abc import Hashable
from fractions import Fraction
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from regions import Box, GeometryError, SpatialIndex, Sphere

# The costlier properties run a third of the profile's examples (10 at least).
FEW = settings(max_examples=max(10, settings().max_examples // 3))

BBox6 = tuple[float, float, float, float, float, float]

# Small integer coordinates make touching faces, shared corners and distance ties common.
TINY = Fraction(1, 10**290)
grid = st.integers(0, 20).map(float)
wide = st.floats(-1000, 1000, allow_subnormal=False)
coord = st.one_of(grid, wide)


@st.composite
def bboxes(draw: st.DrawFn, c: st.SearchStrategy[float] = coord) -> BBox6:
    pairs = [sorted((draw(c), draw(c))) for _ in range(3)]
    return (pairs[0][0], pairs[1][0], pairs[2][0], pairs[0][1], pairs[1][1], pairs[2][1])


ids = st.integers(0, 15)
entries = st.dictionaries(ids, bboxes(), max_size=12)


def brute(model: dict[Any, BBox6], q: BBox6) -> set[Any]:
    """Ids whose closed boxes share a point with the closed query box."""
    return {
        k for k, b in model.items() if all(b[i] <= q[i + 3] and q[i] <= b[i + 3] for i in range(3))
    }


def box_dist2(b: BBox6, p: tuple[float, float, float]) -> Fraction:
    """Exact squared distance from ``p`` to the closed box ``b``."""
    d2 = Fraction(0)
    for i in range(3):
        x = Fraction(p[i])
        d2 += (x - min(max(x, Fraction(b[i])), Fraction(b[i + 3]))) ** 2
    return d2


def build(model: dict[Any, BBox6], *, bulk: bool) -> SpatialIndex[Any]:
    index: SpatialIndex[Any] = SpatialIndex()
    if bulk:
        index.bulk_load(
            list(model), np.array(list(model.values()), dtype=np.float64).reshape(-1, 6)
        )
    else:
        for k, b in model.items():
            index.insert(k, b)
    return index


def assert_matches(index: SpatialIndex[Any], model: dict[Any, BBox6]) -> None:
    assert len(index) == len(model)
    assert set(index.ids()) == set(model)
    for k, b in model.items():
        assert k in index
        assert index.bbox(k) == b
    everything = (-1e9, -1e9, -1e9, 1e9, 1e9, 1e9)
    got = index.intersection(everything)
    assert sorted(got, key=repr) == sorted(model, key=repr)  # each id exactly once


# ---------------------------------------------------------------- box queries


@FEW
@given(entries, st.lists(bboxes(), min_size=1, max_size=8), st.booleans())
def test_intersection_equals_brute_force(
    model: dict[int, BBox6], queries: list[BBox6], bulk: bool
) -> None:
    index = build(model, bulk=bulk)
    assert_matches(index, model)
    for q in queries:
        got = index.intersection(q)
        assert len(got) == len(set(got))
        assert set(got) == brute(model, q)
        assert set(index.intersection(Box(q[:3], q[3:]))) == set(got)


@settings(max_examples=8)
@given(st.integers(0, 2**32 - 1), st.booleans())
def test_many_random_boxes_against_numpy(seed: int, bulk: bool) -> None:
    rng = np.random.default_rng(seed)
    n, m = 2000, 60
    lo = rng.uniform(0, 1000, (n, 3)).round(rng.integers(0, 3))  # rounding makes ties
    hi = lo + rng.exponential(10, (n, 3)).round(1)
    qlo = rng.uniform(-50, 1000, (m, 3)).round(1)
    qhi = qlo + rng.exponential(40, (m, 3)).round(1)
    index: SpatialIndex[int] = SpatialIndex()
    if bulk:
        index.bulk_load(range(n), np.concatenate([lo, hi], axis=1))
    else:
        for i in range(n):
            index.insert(i, (*lo[i].tolist(), *hi[i].tolist()))
    handles, offsets = index.intersection_many(qlo, qhi)
    assert offsets.shape == (m + 1,) and offsets[0] == 0 and offsets[-1] == len(handles)
    for j in range(m):
        want = set(np.flatnonzero((lo <= qhi[j]).all(axis=1) & (hi >= qlo[j]).all(axis=1)).tolist())
        q = (*qlo[j].tolist(), *qhi[j].tolist())
        assert set(index.intersection(q)) == want
        batch = [index.id_of_handle(h) for h in handles[offsets[j] : offsets[j + 1]]]
        assert len(batch) == len(want) and set(batch) == want


@FEW
@given(entries, st.lists(bboxes(), max_size=10), st.booleans())
def test_intersection_many_equals_per_query(
    model: dict[int, BBox6], queries: list[BBox6], bulk: bool
) -> None:
    index = build(model, bulk=bulk)
    q = np.array(queries, dtype=np.float64).reshape(-1, 6)
    handles, offsets = index.intersection_many(q[:, :3], q[:, 3:])
    assert handles.dtype == np.int64 and offsets.dtype == np.int64
    assert offsets.shape == (len(queries) + 1,)
    assert offsets[0] == 0 and (np.diff(offsets) >= 0).all() and offsets[-1] == len(handles)
    for j, query in enumerate(queries):
        got = [index.id_of_handle(int(h)) for h in handles[offsets[j] : offsets[j + 1]]]
        assert sorted(got) == sorted(index.intersection(query))
        assert all(
            index.handle_of(k) == h
            for k, h in zip(got, handles[offsets[j] : offsets[j + 1]], strict=True)
        )


def test_intersection_many_edge_cases() -> None:
    index: SpatialIndex[str] = SpatialIndex()
    h, off = index.intersection_many(np.zeros((2, 3)), np.ones((2, 3)))
    assert h.size == 0 and off.tolist() == [0, 0, 0]
    index.insert("a", (0, 0, 0, 1, 1, 1))
    h, off = index.intersection_many(np.zeros((0, 3)), np.zeros((0, 3)))
    assert h.size == 0 and off.tolist() == [0]
    h, off = index.intersection_many([[1, 1, 1], [2, 2, 2]], [[1, 1, 1], [3, 3, 3]])
    assert [index.id_of_handle(x) for x in h] == ["a"] and off.tolist() == [0, 1, 1]
    bad: list[tuple[Any, Any]] = [
        (np.zeros((1, 3)), np.zeros((2, 3))),
        (np.zeros((1, 2)), np.zeros((1, 2))),
        (np.zeros(3), np.ones(3)),
        ([[0, 0, math.nan]], [[1, 1, 1]]),
        ([[0, 0, 0]], [[1, math.inf, 1]]),
        ([[0, 0, 2]], [[1, 1, 1]]),
    ]
    for lo, hi in bad:
        with pytest.raises(GeometryError):
            index.intersection_many(lo, hi)


# ---------------------------------------------------------------- sphere queries


@FEW
@given(
    st.dictionaries(ids, bboxes(grid), max_size=12),
    st.tuples(grid, grid, grid),
    st.integers(0, 15).map(float),
    st.booleans(),
)
def test_sphere_query_exact(
    model: dict[int, BBox6], c: tuple[float, float, float], r: float, bulk: bool
) -> None:
    index = build(model, bulk=bulk)
    want = {k for k, b in model.items() if box_dist2(b, c) <= Fraction(r) ** 2}  # closed
    got = index.intersection(Sphere(c, r))
    assert len(got) == len(set(got))
    assert set(got) == want


@FEW
@given(entries, st.tuples(wide, wide, wide), st.floats(0, 1500, allow_subnormal=False))
def test_sphere_query_floats(
    model: dict[int, BBox6], c: tuple[float, float, float], r: float
) -> None:
    index = build(model, bulk=False)
    got = set(index.intersection(Sphere(c, r)))
    r2 = Fraction(r) ** 2
    for k, b in model.items():
        d2 = box_dist2(b, c)
        if d2 < r2 * Fraction(999_999_999, 10**9):
            assert k in got
        elif d2 > r2 * Fraction(10**9 + 1, 10**9) + TINY:  # squares of ~1e-160 underflow
            assert k not in got


# ---------------------------------------------------------------- nearest


@FEW
@given(entries, st.tuples(coord, coord, coord), st.integers(1, 8), st.booleans())
def test_nearest(
    model: dict[int, BBox6], p: tuple[float, float, float], k: int, bulk: bool
) -> None:
    index = build(model, bulk=bulk)
    got = index.nearest(p, k)
    assert len(got) == len(set(got))
    assert set(got) <= set(model)
    if not model:
        assert got == []
        return
    dists = {key: box_dist2(b, p) for key, b in model.items()}
    kth = sorted(dists.values())[min(k, len(model)) - 1]
    tol = kth * Fraction(1, 10**9) + Fraction(1, 10**12)
    assert len(got) >= min(k, len(model))  # ties at the k-th distance may add more
    for key in got:
        assert dists[key] <= kth + tol
    for key, d in dists.items():
        if d < kth - tol:
            assert key in got


def test_nearest_examples() -> None:
    index: SpatialIndex[str] = SpatialIndex()
    index.insert("a", (0, 0, 0, 1, 1, 1))
    index.insert("b", (10, 0, 0, 11, 1, 1))
    index.insert("c", (4, 0, 0, 5, 1, 1))
    assert index.nearest((0.5, 0.5, 0.5)) == ["a"]
    assert index.nearest((9, 0, 0), 1) == ["b"]
    assert set(index.nearest((9, 0, 0), 2)) == {"b", "c"}
    assert set(index.nearest((9, 0, 0), 10)) == {"a", "b", "c"}
    assert set(index.nearest((2.5, 0.5, 0.5), 1)) == {"a", "c"}  # a tie returns both
    assert index.nearest(np.array([10.5, 0.5, 0.5]), 1) == ["b"]
    for bad_k in (0, -1, True, 1.5, "1", None):
        with pytest.raises(GeometryError, match="k must be"):
            index.nearest((0, 0, 0), bad_k)  # type: ignore[arg-type]
    for bad_p in ((0, 0), (math.nan, 0, 0), "abc", None):
        with pytest.raises(GeometryError):
            index.nearest(bad_p, 1)


# ---------------------------------------------------------------- mutation


op = st.one_of(
    st.tuples(st.just("insert"), ids, bboxes()),
    st.tuples(st.just("insert_box"), ids, bboxes()),
    st.tuples(st.just("delete"), ids),
    st.tuples(st.just("delete_bbox"), ids),
    st.tuples(st.just("bulk_load"), st.dictionaries(ids, bboxes(), max_size=8)),
    st.tuples(st.just("clear")),
    st.tuples(st.just("query"), bboxes()),
    st.tuples(st.just("nearest"), st.tuples(coord, coord, coord)),
)


@given(st.lists(op, max_size=25))
def test_operations_against_model(ops: list[tuple[Any, ...]]) -> None:
    index: SpatialIndex[int] = SpatialIndex()
    model: dict[int, BBox6] = {}
    for o in ops:
        kind = o[0]
        if kind == "insert":  # inserting an existing id moves it
            index.insert(o[1], o[2])
            model[o[1]] = o[2]
        elif kind == "insert_box":
            index.insert(o[1], Box(o[2][:3], o[2][3:]))
            model[o[1]] = o[2]
        elif kind == "delete":
            assert index.delete(o[1]) == (o[1] in model)
            model.pop(o[1], None)
        elif kind == "delete_bbox":
            if o[1] in model:
                assert index.delete(o[1], model.pop(o[1]))
            else:
                assert not index.delete(o[1], (0, 0, 0, 1, 1, 1))
        elif kind == "bulk_load":
            new: dict[int, BBox6] = o[1]
            index.bulk_load(list(new), np.array(list(new.values())).reshape(-1, 6))
            model = dict(new)
        elif kind == "clear":
            index.clear()
            model.clear()
        elif kind == "query":
            assert set(index.intersection(o[1])) == brute(model, o[1])
        elif kind == "nearest":
            got = index.nearest(o[1], 1)
            if model:
                best = min(box_dist2(b, o[1]) for b in model.values())
                assert got and all(
                    box_dist2(model[g], o[1]) <= best * (1 + Fraction(1, 10**9)) + TINY  # underflow
                    for g in got
                )
            else:
                assert got == []
        assert len(index) == len(model)
    assert_matches(index, model)
    # handles stay a bijection with the ids
    handles = {index.handle_of(k) for k in model}
    assert len(handles) == len(model)
    assert all(index.id_of_handle(index.handle_of(k)) == k for k in model)


def test_move_and_delete() -> None:
    index: SpatialIndex[tuple[int, str]] = SpatialIndex()
    a = (1, "tree")
    index.insert(a, (0, 0, 0, 1, 1, 1))
    index.insert(a, (50, 50, 50, 51, 51, 51))  # a move, not a second entry
    assert len(index) == 1
    assert index.intersection((0, 0, 0, 1, 1, 1)) == []
    assert index.intersection((50, 50, 50, 50, 50, 50)) == [a]
    assert index.bbox(a) == (50.0, 50.0, 50.0, 51.0, 51.0, 51.0)
    with pytest.raises(GeometryError, match="differs"):
        index.delete(a, (0, 0, 0, 1, 1, 1))  # the old box
    assert a in index  # untouched by the refused delete
    assert index.delete(a, Box((50, 50, 50), (51, 51, 51)))
    assert a not in index and len(index) == 0
    assert not index.delete(a)
    assert index.intersection((-1e9, -1e9, -1e9, 1e9, 1e9, 1e9)) == []


def test_bulk_load_then_incremental() -> None:
    rng = np.random.default_rng(7)
    n = 500
    lo = rng.uniform(0, 100, (n, 3))
    boxes = np.concatenate([lo, lo + rng.uniform(0, 5, (n, 3))], axis=1)
    index: SpatialIndex[str] = SpatialIndex()
    names = [f"o{i}" for i in range(n)]
    index.bulk_load(names, boxes)
    model: dict[str, BBox6] = {k: tuple(b) for k, b in zip(names, boxes.tolist(), strict=True)}
    for i in range(0, n, 3):  # move a third
        b = (*(boxes[i, :3] + 50).tolist(), *(boxes[i, 3:] + 50).tolist())
        index.insert(names[i], b)
        model[names[i]] = b
    for i in range(1, n, 5):  # delete a fifth
        assert index.delete(names[i], model.pop(names[i]))
    for i in range(100):  # add new ones
        b = (float(i), 0.0, 0.0, float(i) + 0.5, 1.0, 1.0)
        index.insert(f"new{i}", b)
        model[f"new{i}"] = b
    assert_matches(index, model)
    for q in rng.uniform(0, 150, (50, 3)):
        qb = (*q.tolist(), *(q + 10).tolist())
        assert set(index.intersection(qb)) == brute(model, qb)
    # a second bulk_load replaces everything
    index.bulk_load(["x"], [[0, 0, 0, 1, 1, 1]])
    assert index.ids() == ["x"]
    assert index.intersection((0, 0, 0, 200, 200, 200)) == ["x"]
    index.bulk_load([], np.zeros((0, 6)))
    assert len(index) == 0 and index.intersection((0, 0, 0, 1, 1, 1)) == []
    index.bulk_load([], [])
    assert len(index) == 0


@pytest.mark.parametrize(
    ("ids_", "boxes"),
    [
        (["a", "a"], [[0, 0, 0, 1, 1, 1], [2, 2, 2, 3, 3, 3]]),  # duplicate ids
        (["a", "b"], [[0, 0, 0, 1, 1, 1]]),  # count mismatch
        (["a"], [[0, 0, 0, 1, 1]]),  # 5 numbers
        (["a"], [[0, 0, 0, 1, 1, 1, 1]]),  # 7 numbers
        (["a"], [0, 0, 0, 1, 1, 1]),  # not 2-D
        (["a"], [[0, 0, math.nan, 1, 1, 1]]),
        (["a"], [[0, 0, 0, 1, 1, math.inf]]),
        (["a"], [[2, 0, 0, 1, 1, 1]]),  # inverted
    ],
)
def test_bulk_load_rejects_and_keeps_contents(ids_: list[str], boxes: list[Any]) -> None:
    index: SpatialIndex[str] = SpatialIndex()
    index.insert("keep", (5, 5, 5, 6, 6, 6))
    with pytest.raises(GeometryError):
        index.bulk_load(ids_, boxes)
    assert index.ids() == ["keep"]
    assert index.intersection((5, 5, 5, 5, 5, 5)) == ["keep"]


BAD_BBOXES: list[object] = [
    (0, 0, 0, 1, 1),
    (0, 0, 0, 1, 1, 1, 1),
    (math.nan, 0, 0, 1, 1, 1),
    (0, 0, 0, 1, 1, math.inf),
    (0, 0, -math.inf, 1, 1, 1),
    (1, 0, 0, 0, 1, 1),  # inverted on x
    (0, 0, 1, 1, 1, 0.5),  # inverted on z
    ("0", 0, 0, 1, 1, 1),
    (True, 0, 0, 1, 1, 1),
    "abcdef",
    None,
    np.zeros(6),  # only sequences are taken (an array row: use tuple(row) or a Box)
]


@pytest.mark.parametrize("bad", BAD_BBOXES)
def test_bad_bboxes_are_refused(bad: object) -> None:
    index: SpatialIndex[str] = SpatialIndex()
    index.insert("a", (0, 0, 0, 1, 1, 1))
    with pytest.raises(GeometryError):
        index.insert("b", bad)  # type: ignore[arg-type]
    with pytest.raises(GeometryError):
        index.insert("a", bad)  # type: ignore[arg-type]
    with pytest.raises(GeometryError):
        index.intersection(bad)  # type: ignore[arg-type]
    if bad is not None:  # delete(id, None) means "whatever box it has"
        with pytest.raises(GeometryError):
            index.delete("a", bad)  # type: ignore[arg-type]
    # nothing changed: "a" was neither moved nor deleted, "b" not added
    assert index.ids() == ["a"]
    assert index.bbox("a") == (0.0, 0.0, 0.0, 1.0, 1.0, 1.0)
    assert index.intersection((0, 0, 0, 0, 0, 0)) == ["a"]


def test_degenerate_and_touching_boxes() -> None:
    index: SpatialIndex[str] = SpatialIndex()
    index.insert("point", (1, 1, 1, 1, 1, 1))
    index.insert("cube", (1, 0, 0, 2, 1, 1))
    assert set(index.intersection((1, 1, 1, 1, 1, 1))) == {"point", "cube"}
    assert index.intersection((0, 0, 0, 0.999, 0.999, 0.999)) == []
    assert index.intersection((2, 1, 1, 3, 3, 3)) == ["cube"]  # a shared corner
    assert set(index.intersection(Sphere((1, 1, 3), 2.0))) == {"point", "cube"}  # tangent
    assert index.intersection(Sphere((1, 1, 3), 1.999)) == []


def test_hashable_ids() -> None:
    index: SpatialIndex[Hashable] = SpatialIndex()
    keys: list[Hashable] = [(1, "a"), "b", 3, frozenset({4}), None, 2.5]
    for i, k in enumerate(keys):
        index.insert(k, (i, 0, 0, i, 0, 0))
    assert set(index.intersection((0, 0, 0, 10, 0, 0))) == set(keys)
    assert index.nearest((5, 0, 0), 1) == [2.5]


def test_pickling_refused() -> None:
    index: SpatialIndex[int] = SpatialIndex()
    index.insert(1, (0, 0, 0, 1, 1, 1))
    with pytest.raises(TypeError, match="pickled"):
        pickle.dumps(index)
    with pytest.raises(TypeError):
        pickle.dumps(index, protocol=2)
    with pytest.raises(TypeError):
        copy.deepcopy(index)
    with pytest.raises(TypeError):
        copy.copy(index)
    assert index.intersection((0, 0, 0, 1, 1, 1)) == [1]  # still usable
