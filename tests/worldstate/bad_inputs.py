"""A seeded generator of bad and edge inputs for every operation class.

`generate(seed, n)` returns ``n`` `Case` values: keyword arguments for one operation class,
each a valid base with one to three fields replaced by a hostile or edge value drawn from
the pools below (wrong types, NaN and infinities, huge and negative numbers, control
characters, non-printable spaces, topic characters, overlong strings, deep or huge data,
malformed vectors, booleans for numbers, numpy scalars, ...). The same seed gives the same
cases; the tests assert that each one ends as a `ValidationError` at construction or at
submit, or as a documented result (`Committed`, `Rejected`, `Accepted`) — never another
exception, never a hang.
"""

from __future__ import annotations

import math
import random
import uuid
from dataclasses import dataclass
from typing import Any

import numpy as np

from regions import DEFAULT_BOUNDS, RegionKey
from worldstate.operations import (
    BUILTIN_OPERATIONS,
    ChangeInventory,
    ClaimResource,
    CosmeticEffect,
    EmitEvent,
    ModifyTerrain,
    MoveCreature,
    Operation,
    PickUpItem,
    PlaceStructure,
    SetAutomation,
    SetPowerGrid,
    TransferCreature,
    TransferItems,
)

HOME = RegionKey(0, 0, 0)
"""The region the valid bases live in (the tests' world holds its lease)."""


def _deep(depth: int) -> dict[str, Any]:
    d: dict[str, Any] = {"leaf": 1}
    for _ in range(depth):
        d = {"d": d}
    return d


class _Weird:
    def __repr__(self) -> str:
        return "<weird>"


IDS_BAD: list[Any] = [
    None,
    "",
    "\x00",
    "a\x00b",
    "wall\u00a0x",  # NO-BREAK SPACE: not printable, refused by conflicts
    "zero\u200bwidth",
    "line\nbreak",
    "tab\there",
    "bell\x07",
    "del\x7f",
    "a/b",
    "a+b",
    "a#b",
    "\ud800",  # a lone surrogate
    "\u2028",
    "\ue000private",
    "x" * 201,
    "x" * 257,
    "x" * 10_000,
    5,
    5.0,
    b"bytes",
    ["list"],
    {"d": 1},
    True,
    _Weird(),
]
IDS_EDGE: list[Any] = [
    "x",
    "x" * 200,
    "城-1",
    "🧱-wall",
    "O'Brien; DROP TABLE ws_objects; --",
    'quote"d',
    "spa ce",
    "back\\slash",
    "%s%d{}",
    "Ω≈ç√",
]
KINDS_BAD: list[Any] = [
    "",
    "\x00",
    "k\x00",
    "k" * 65,
    "k" * 10_000,
    "wall\u00a0x",
    "line\n",
    None,
    7,
    b"wall",
]
KINDS_EDGE: list[Any] = ["structure", "wall", "k" * 64, "tower-2", "城"]
NUMBERS_BAD: list[Any] = [
    math.nan,
    math.inf,
    -math.inf,
    1e300,
    -1e300,
    1e13,
    -1e13,
    2**70,
    -(2**70),
    None,
    "1",
    True,
    False,
    [1],
    complex(1, 1),
    np.float64("nan"),
    _Weird(),
]
NUMBERS_EDGE: list[Any] = [
    0,
    0.0,
    -0.0,
    1,
    -1,
    1e-300,
    5e-324,
    1e12,
    -1e12,
    999_999_999_999.9,
    np.float32(1.5),
    np.int64(3),
    np.float64(2.5),
]
INTS_BAD: list[Any] = [
    -1,
    2**63,
    2**64,
    -(2**63) - 1,
    2**53 + 1,
    -(2**53) - 1,
    1.5,
    math.nan,
    None,
    "3",
    True,
    np.float64(1.0),
    _Weird(),
]
INTS_EDGE: list[Any] = [0, 1, -1, 2**53, -(2**53), 2**31 - 1, -(2**31), 2**63 - 1, np.int32(7)]
VECS_BAD: list[Any] = [
    None,
    (),
    (1, 2),
    (1, 2, 3, 4),
    "abc",
    b"abc",
    (math.nan, 0, 0),
    (0, math.inf, 0),
    (0, 0, -math.inf),
    (1e300, 0, 0),
    (1e13, 0, 0),
    ("1", 2, 3),
    (True, 0, 0),
    (None, None, None),
    {"x": 1, "y": 2, "z": 3},
    5,
    (DEFAULT_BOUNDS.hi[0], 0.0, 0.0),  # hi is exclusive
    (DEFAULT_BOUNDS.lo[0] - 1.0, 0.0, 0.0),
    (1e11, 0.0, 0.0),  # outside the world bounds, inside the magnitude limit
    np.array([np.nan, 0.0, 0.0]),
]
VECS_EDGE: list[Any] = [
    (0, 0, 0),
    (1999.999, 1999.999, 1999.999),
    [10, 10, 10],
    np.array([5.0, 6.0, 7.0]),
    (DEFAULT_BOUNDS.lo[0], DEFAULT_BOUNDS.lo[1], DEFAULT_BOUNDS.lo[2]),
    (math.nextafter(DEFAULT_BOUNDS.hi[0], 0.0), 0.0, 0.0),
    (-0.0, -0.0, -0.0),
    (-1.0, -1.0, -1.0),  # another region, nobody owns it
]
DATA_BAD: list[Any] = [
    None,
    5,
    "data",
    [1, 2],
    {"nan": math.nan},
    {"inf": [math.inf]},
    {1: "int key"},
    {"o": _Weird()},
    {"b": b"bytes"},
    {"s": {1, 2}},
    _deep(40),
    {"big": "x" * 70_000},
]
DATA_EDGE: list[Any] = [
    {},
    {"a": 1},
    {"nested": {"list": [1, 2.5, None, True, "s"]}},
    {"unicode": "城🧱", "quote": "'\";"},
    _deep(30),
    {"big": "x" * 60_000},
]
OP_IDS_BAD: list[Any] = ["not-a-uuid", "", 5, None, b"\x00" * 16, "x" * 10_000]
OP_IDS_EDGE: list[Any] = [uuid.UUID(int=0), str(uuid.uuid4()), uuid.UUID(int=2**128 - 1)]
PRIORITIES: list[Any] = [2**31, -(2**31) - 1, 1.5, None, True, "1", 2**31 - 1, -(2**31), 0]

POOLS: dict[str, tuple[list[Any], list[Any]]] = {
    "id": (IDS_BAD, IDS_EDGE),
    "kind": (KINDS_BAD, KINDS_EDGE),
    "number": (NUMBERS_BAD, NUMBERS_EDGE),
    "int": (INTS_BAD, INTS_EDGE),
    "vec": (VECS_BAD, VECS_EDGE),
    "data": (DATA_BAD, DATA_EDGE),
    "op_id": (OP_IDS_BAD, OP_IDS_EDGE),
    "priority": (PRIORITIES, [0, 1, -1]),
    "region": ([None, (0, 0, 0), "r", 5, 2**70], [HOME, RegionKey(-1, 0, 0)]),
}


def _field_pools(cls: type[Operation]) -> dict[str, str]:
    """Field name -> pool name, for the fields of ``cls``."""
    common = {"op_id": "op_id", "priority": "priority", "server_id": "id", "hlc": "int"}
    specific: dict[type[Operation], dict[str, str]] = {
        PlaceStructure: {
            "structure_id": "id",
            "kind": "kind",
            "lo": "vec",
            "hi": "vec",
            "owner": "id",
            "data": "data",
        },
        ClaimResource: {
            "resource_id": "id",
            "claimant": "id",
            "position": "vec",
            "amount": "number",
        },
        ModifyTerrain: {"center": "vec", "radius": "number", "delta": "number"},
        ChangeInventory: {"inventory_id": "id", "item": "id", "delta": "int"},
        TransferItems: {
            "from_inventory": "id",
            "to_inventory": "id",
            "item": "id",
            "quantity": "int",
        },
        PickUpItem: {"item_id": "id", "picker": "id", "position": "vec"},
        EmitEvent: {"position": "vec", "stream": "id", "payload": "data"},
        TransferCreature: {"creature_id": "int", "to_server": "id", "position": "vec"},
        MoveCreature: {"creature_id": "int", "position": "vec", "velocity": "vec"},
    }
    state = {"entity_id": "int", "state": "data", "position": "vec"}
    for c in (CosmeticEffect, SetAutomation, SetPowerGrid):
        specific[c] = state
    return {**common, **specific[cls]}


def base_kwargs(cls: type[Operation], rng: random.Random) -> dict[str, Any]:
    """Valid keyword arguments for ``cls``, inside region `HOME` (fresh ids each call)."""
    n = rng.randrange(1_000_000_000)
    p = (rng.uniform(1, 1999), rng.uniform(1, 1999), rng.uniform(1, 1999))
    if cls is PlaceStructure:
        lo = (rng.uniform(10, 1900), rng.uniform(10, 1900), rng.uniform(10, 1900))
        return {
            "structure_id": f"s-{n}",
            "lo": lo,
            "hi": (lo[0] + 2, lo[1] + 2, lo[2] + 2),
        }
    if cls is ClaimResource:
        return {"resource_id": f"r-{n % 5}", "claimant": "p", "position": p, "amount": 1.0}
    if cls is ModifyTerrain:
        return {"center": p, "radius": 3.0, "delta": 1.0}
    if cls is ChangeInventory:
        return {"inventory_id": f"inv-{n % 7}", "item": "gold", "delta": rng.choice([1, 5, -1])}
    if cls is TransferItems:
        return {"from_inventory": "inv-0", "to_inventory": "inv-1", "item": "gold", "quantity": 1}
    if cls is PickUpItem:
        return {"item_id": f"i-{n}", "picker": "p", "position": p}
    if cls is EmitEvent:
        return {"position": p, "stream": "quest", "payload": {"n": n}}
    if cls is TransferCreature:
        return {"creature_id": n, "to_server": "gs-2", "position": p}
    if cls is MoveCreature:
        return {"creature_id": n, "position": p}
    return {"entity_id": n, "state": {"on": True}, "position": p}


@dataclass(frozen=True)
class Case:
    """One generated input: build ``cls(**kwargs)`` and submit it."""

    index: int
    cls: type[Operation]
    kwargs: dict[str, Any]
    changed: tuple[tuple[str, str], ...]
    """(field, "bad" | "edge") for each replaced field."""

    def __repr__(self) -> str:
        shown = {k: self.kwargs[k] for k, _ in self.changed if k in self.kwargs}
        return f"Case#{self.index}({self.cls.__name__}, {shown!r:.200})"

    def build(self) -> Operation:
        return self.cls(**self.kwargs)


def generate(seed: int, n: int) -> list[Case]:
    """``n`` cases, round-robin over every built-in operation class, from one seed."""
    rng = random.Random(seed)
    out: list[Case] = []
    for i in range(n):
        cls = BUILTIN_OPERATIONS[i % len(BUILTIN_OPERATIONS)]
        kwargs = base_kwargs(cls, rng)
        pools = _field_pools(cls)
        changed = []
        for name in rng.sample(sorted(pools), k=rng.choice((1, 1, 1, 2, 3))):
            bad, edge = POOLS[pools[name]]
            tag = "bad" if rng.random() < 0.7 else "edge"
            value = rng.choice(bad if tag == "bad" else edge)
            state_op = cls in (CosmeticEffect, SetAutomation, SetPowerGrid)
            if name == "position" and state_op and rng.random() < 0.3:
                kwargs.pop("position", None)  # the other placement: a region instead
                name, value = "region", rng.choice(POOLS["region"][0] + POOLS["region"][1])
            kwargs[name] = value
            changed.append((name, tag))
        out.append(Case(i, cls, kwargs, tuple(changed)))
    return out
