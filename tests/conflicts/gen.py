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

from hypothesis import settings
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

heavy = settings(max_examples=max(20, settings().max_examples // 2))
"""For the costliest properties (two batches, naive oracles): half the profile's examples,
so the default run stays short; ``HYPOTHESIS_PROFILE=long`` still scales them up."""

coord = st.integers(0, 24).map(lambda v: v / 2)
size = st.sampled_from([0.0, 0.5, 1.0, 2.0, 3.0, 5.0])


servers = st.sampled_from(SERVERS)
hlcs = st.integers(0, 4)
priorities = st.integers(-1, 2)


def _spec(kind: type, **fields: Any) -> dict[str, Any]:
    return {"kind": kind, **fields}


# Each record is one flat tuple of primitive draws, mapped to keyword arguments: much
# cheaper to generate than nested composites, and it shrinks just as well.
def structure() -> st.SearchStrategy[dict[str, Any]]:
    return st.tuples(
        coord, coord, coord, size, size, size, st.integers(0, 40), servers, hlcs, priorities
    ).map(
        lambda t: _spec(
            StructurePlacement,
            lo=(t[0], t[1], t[2]),
            hi=(t[0] + t[3], t[1] + t[4], t[2] + t[5]),
            structure_id=f"st-{t[6]}",
            server_id=t[7],
            hlc=t[8],
            priority=t[9],
        )
    )


def terrain() -> st.SearchStrategy[dict[str, Any]]:
    return st.tuples(
        coord,
        coord,
        coord,
        st.sampled_from([0.0, 0.5, 1.0, 2.5, 4.0]),
        st.sampled_from([-2.0, -0.5, 0.25, 1.0, 3.0, 1e-3]),
        servers,
        hlcs,
        priorities,
    ).map(
        lambda t: _spec(
            TerrainEdit,
            center=(t[0], t[1], t[2]),
            radius=t[3],
            delta=t[4],
            server_id=t[5],
            hlc=t[6],
            priority=t[7],
        )
    )


def resource() -> st.SearchStrategy[dict[str, Any]]:
    return st.tuples(
        st.sampled_from(RESOURCES),
        st.sampled_from([0.1, 0.2, 0.3, 1.0, 2.5, 4.0, 7.0]),
        servers,
        hlcs,
        priorities,
    ).map(
        lambda t: _spec(
            ResourceClaim,
            resource_id=t[0],
            amount=t[1],
            server_id=t[2],
            hlc=t[3],
            priority=t[4],
        )
    )


def pickup() -> st.SearchStrategy[dict[str, Any]]:
    return st.tuples(st.sampled_from(ITEMS), servers, hlcs, priorities).map(
        lambda t: _spec(ItemPickup, item_id=t[0], server_id=t[1], hlc=t[2], priority=t[3])
    )


def creature() -> st.SearchStrategy[dict[str, Any]]:
    return st.tuples(st.sampled_from(CREATURES), servers, servers, hlcs, priorities).map(
        lambda t: _spec(
            CreatureClaim,
            creature_id=t[0],
            claimant=t[1],
            server_id=t[2],
            hlc=t[3],
            priority=t[4],
        )
    )


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


structures = batch_of(structure(), 24)
terrains = batch_of(terrain(), 16)
resources = batch_of(resource(), 16)
pickups = batch_of(pickup(), 16)
creatures = batch_of(creature(), 16)
mixed = batch_of(st.one_of(structure(), terrain(), resource(), pickup(), creature()), 24)


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
