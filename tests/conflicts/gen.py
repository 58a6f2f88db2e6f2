"""Hypothesis strategies for conflict candidates, and reference (brute-force) oracles.

Coordinates come from a small integer grid plus halves, so that overlapping, touching and
degenerate boxes are all common; HLCs, server ids and priorities come from small pools, so
that ties (and the tie-breaks) are exercised constantly. Server ids include prefixes of
each other ("gs-1", "gs-10") to exercise string ordering.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from hypothesis import strategies as st

from conflicts import (
    Candidate,
    CreatureClaim,
    ItemPickup,
    ResourceClaim,
    StructurePlacement,
    TerrainEdit,
)

SERVERS = ("gs-1", "gs-10", "gs-2", "a", "b")
ITEMS = ("sword", "shield", "gem")
RESOURCES = ("ore-1", "ore-2", "wood")
CREATURES = ("wolf", "bear")

T = TypeVar("T")

coord = st.integers(0, 24).map(lambda v: v / 2)
size = st.sampled_from([0.0, 0.5, 1.0, 2.0, 3.0, 5.0])


@st.composite
def common(draw: st.DrawFn) -> dict[str, Any]:
    return {
        "server_id": draw(st.sampled_from(SERVERS)),
        "hlc": draw(st.integers(0, 4)),
        "priority": draw(st.integers(-1, 2)),
    }


@st.composite
def structure(draw: st.DrawFn) -> dict[str, Any]:
    lo = (draw(coord), draw(coord), draw(coord))
    hi = tuple(c + draw(size) for c in lo)
    return {
        "kind": StructurePlacement,
        "structure_id": f"st-{draw(st.integers(0, 40))}",
        "lo": lo,
        "hi": hi,
        **draw(common()),
    }


@st.composite
def terrain(draw: st.DrawFn) -> dict[str, Any]:
    return {
        "kind": TerrainEdit,
        "center": (draw(coord), draw(coord), draw(coord)),
        "radius": draw(st.sampled_from([0.0, 0.5, 1.0, 2.5, 4.0])),
        "delta": draw(st.sampled_from([-2.0, -0.5, 0.25, 1.0, 3.0, 1e-3])),
        **draw(common()),
    }


@st.composite
def resource(draw: st.DrawFn) -> dict[str, Any]:
    return {
        "kind": ResourceClaim,
        "resource_id": draw(st.sampled_from(RESOURCES)),
        "amount": draw(st.sampled_from([0.1, 0.2, 0.3, 1.0, 2.5, 4.0, 7.0])),
        **draw(common()),
    }


@st.composite
def pickup(draw: st.DrawFn) -> dict[str, Any]:
    return {"kind": ItemPickup, "item_id": draw(st.sampled_from(ITEMS)), **draw(common())}


@st.composite
def creature(draw: st.DrawFn) -> dict[str, Any]:
    return {
        "kind": CreatureClaim,
        "creature_id": draw(st.sampled_from(CREATURES)),
        "claimant": draw(st.sampled_from(SERVERS)),
        **draw(common()),
    }


def _build(specs: list[dict[str, Any]], ids: list[str]) -> list[Any]:
    out = []
    for spec, op_id in zip(specs, ids, strict=True):
        fields = dict(spec)
        kind = fields.pop("kind")
        out.append(kind(op_id=op_id, **fields))
    return out


op_ids = st.text(alphabet="0123456789abcdef-", min_size=1, max_size=6)


def batch_of(spec: st.SearchStrategy[dict[str, Any]], max_size: int = 30) -> st.SearchStrategy[Any]:
    """Lists of candidates with distinct op ids (op ids drawn, so their order varies)."""

    @st.composite
    def build(draw: st.DrawFn) -> list[Any]:
        specs = draw(st.lists(spec, max_size=max_size))
        ids = draw(st.lists(op_ids, min_size=len(specs), max_size=len(specs), unique=True))
        return _build(specs, ids)

    return build()


structures = batch_of(structure(), 40)
terrains = batch_of(terrain(), 25)
resources = batch_of(resource(), 25)
pickups = batch_of(pickup(), 25)
creatures = batch_of(creature(), 25)
mixed = batch_of(st.one_of(structure(), terrain(), resource(), pickup(), creature()), 50)


@st.composite
def arrivals(draw: st.DrawFn, batch: Sequence[T]) -> list[T]:
    """The same set in another arrival: split into per-server chunks in any order, shuffled
    within, with some records delivered twice (retries)."""
    items = list(draw(st.permutations(list(batch))))
    cuts = sorted(draw(st.lists(st.integers(0, len(items)), max_size=4)))
    chunks = [items[a:b] for a, b in itertools.pairwise([0, *cuts, len(items)])]
    chunks = draw(st.permutations(chunks))
    out = [c for chunk in chunks for c in chunk]
    if out:
        out += draw(st.lists(st.sampled_from(out), max_size=3))
    return out


# ---- reference oracles: written independently of the library, pair by pair ----


def boxes_overlap(a: StructurePlacement, b: StructurePlacement) -> bool:
    return all(max(a.lo[k], b.lo[k]) < min(a.hi[k], b.hi[k]) for k in range(3))


def balls_overlap(a: TerrainEdit, b: TerrainEdit) -> bool:
    dx, dy, dz = (a.center[k] - b.center[k] for k in range(3))
    s = a.radius + b.radius
    return dx * dx + dy * dy + dz * dz <= s * s


def brute_pairs(items: Sequence[T], overlap: Callable[[T, T], bool]) -> list[tuple[str, str]]:
    out = []
    for a, b in itertools.combinations(items, 2):
        if overlap(a, b):
            x, y = sorted((a.op_id, b.op_id))  # type: ignore[attr-defined]
            out.append((x, y))
    return sorted(out)


def greedy(
    items: Sequence[T],
    key: Callable[[Any], Any],
    conflict: Callable[[T, T], bool],
    blocked: Callable[[T], bool] = lambda _: False,
) -> list[T]:
    """The batch rule, naively: in key order, admit what conflicts with nothing admitted."""
    admitted: list[T] = []
    for c in sorted(items, key=key):
        if not blocked(c) and not any(conflict(c, w) for w in admitted):
            admitted.append(c)
    return admitted


def tuple_key(strategy: str) -> Callable[[Candidate], tuple[Any, ...]]:
    """The documented total orders, spelled out independently of the library."""
    return {
        "timestamp": lambda c: (c.hlc, c.server_id, c.op_id),
        "merge": lambda c: (c.hlc, c.server_id, c.op_id),
        "lowest_server": lambda c: (c.server_id, c.hlc, c.op_id),
        "priority": lambda c: (-c.priority, c.hlc, c.server_id, c.op_id),
        "lww": lambda c: (-c.hlc, c.server_id, c.op_id),
    }[strategy]
