"""Bad input raises ConflictInputError (a ValueError), never a wrong answer."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import conflicts
from conflicts import (
    CommittedState,
    ConflictDecision,
    ConflictInputError,
    ConflictType,
    CreatureClaim,
    ItemPickup,
    Policy,
    ResourceClaim,
    Rule,
    StructurePlacement,
    TerrainEdit,
)
from regions import GeometryError, SpatialIndex

C: dict[str, Any] = {"op_id": "op-1", "server_id": "gs-1", "hlc": 5}


def box(**kw: Any) -> StructurePlacement:
    fields: dict[str, Any] = {**C, "structure_id": "s", "lo": (0, 0, 0), "hi": (1, 1, 1)}
    return StructurePlacement(**{**fields, **kw})


def ball(**kw: Any) -> TerrainEdit:
    return TerrainEdit(**{**C, "center": (0, 0, 0), "radius": 1.0, "delta": 1.0, **kw})


def claim(**kw: Any) -> ResourceClaim:
    return ResourceClaim(**{**C, "resource_id": "ore", "amount": 1.0, **kw})


def good_decision() -> dict[str, Any]:
    return ConflictDecision(
        conflict_type=ConflictType.ITEM_PICKUP,
        rule=Rule.TIMESTAMP,
        subject="gem",
        winners=("a",),
        losers=("b",),
        reason="a was first",
    ).to_dict()


def fails(**changes: Any) -> Callable[[], object]:
    return lambda: ConflictDecision.from_dict({**good_decision(), **changes})


NAN = math.nan
CASES: list[tuple[str, Callable[[], object]]] = [
    # candidates: geometry
    ("NaN box corner", lambda: box(lo=(NAN, 0, 0))),
    ("infinite box corner", lambda: box(hi=(math.inf, 1, 1))),
    ("inverted box", lambda: box(lo=(0, 2, 0), hi=(1, 1, 1))),
    ("2-D box", lambda: box(lo=(0, 0), hi=(1, 1))),
    ("box corner not numbers", lambda: box(lo=("0", 0, 0))),
    ("box corner a str", lambda: box(lo="abc")),
    ("NaN sphere centre", lambda: ball(center=(0, NAN, 0))),
    ("centre beyond 1e12", lambda: ball(center=(0, 2e12, 0))),
    ("radius beyond 1e12", lambda: ball(radius=1e13)),
    ("delta beyond 1e12", lambda: ball(delta=-1e300)),
    ("box corner beyond 1e12", lambda: box(lo=(-1e200, 0, 0))),
    ("negative radius", lambda: ball(radius=-0.1)),
    ("NaN radius", lambda: ball(radius=NAN)),
    ("infinite radius", lambda: ball(radius=math.inf)),
    ("NaN delta", lambda: ball(delta=NAN)),
    ("radius a str", lambda: ball(radius="1")),
    # candidates: amounts
    ("negative amount", lambda: claim(amount=-1.0)),
    ("zero amount", lambda: claim(amount=0)),
    ("NaN amount", lambda: claim(amount=NAN)),
    ("infinite amount", lambda: claim(amount=math.inf)),
    ("bool amount", lambda: claim(amount=True)),
    # candidates: common fields
    ("empty op id", lambda: claim(op_id="")),
    ("op id not a str", lambda: claim(op_id=7)),
    ("op id with NUL", lambda: claim(op_id="a\x00b")),
    ("op id too long", lambda: claim(op_id="x" * 300)),
    ("empty server id", lambda: claim(server_id="")),
    ("hlc a float", lambda: claim(hlc=5.0)),
    ("hlc a bool", lambda: claim(hlc=True)),
    ("hlc a str", lambda: claim(hlc="5")),
    ("negative hlc", lambda: claim(hlc=-1)),
    ("hlc beyond int64", lambda: claim(hlc=2**63)),
    ("priority a float", lambda: claim(priority=1.5)),
    ("priority beyond int64", lambda: claim(priority=-(2**63) - 1)),
    ("empty item id", lambda: ItemPickup(**C, item_id="")),
    (
        "creature claimant not a str",
        lambda: CreatureClaim(**C, creature_id="w", claimant=3),  # type: ignore[arg-type]
    ),
    # policy and strategies
    ("unknown strategy", lambda: Policy(items="fastest")),  # type: ignore[arg-type]
    ("strategy not a str", lambda: Policy(items=3)),  # type: ignore[arg-type]
    ("merge for items", lambda: Policy(items="merge")),  # type: ignore[arg-type]
    ("unknown conflict type", lambda: Policy.from_mapping({"teleport": "lww"})),
    ("policy not a mapping", lambda: Policy.from_mapping([("items", "lww")])),  # type: ignore[arg-type]
    ("unknown strategy (per type)", lambda: conflicts.resolve_pickups([], strategy="oldest")),
    ("merge structures", lambda: conflicts.resolve_structures([], strategy="merge")),
    ("merge claims", lambda: conflicts.resolve_claims([], strategy="merge")),
    ("unknown precedence strategy", lambda: conflicts.precedence_key("nope", claim())),
    # resolver inputs
    ("not an iterable", lambda: conflicts.resolve(claim())),  # type: ignore[arg-type]
    ("a str", lambda: conflicts.resolve("abc")),  # type: ignore[arg-type]
    ("unknown kind", lambda: conflicts.resolve([claim(), object()])),  # type: ignore[list-item]
    ("a dict as candidate", lambda: conflicts.resolve([{"op_id": "x"}])),  # type: ignore[list-item]
    ("wrong kind for resolver", lambda: conflicts.resolve_structures([claim()])),  # type: ignore[list-item]
    (
        "one op id, two records",
        lambda: conflicts.resolve([claim(), claim(amount=2.0)]),
    ),
    ("policy not a Policy", lambda: conflicts.resolve([], policy={"items": "lww"})),  # type: ignore[arg-type]
    ("committed not a state", lambda: conflicts.resolve([], committed={})),  # type: ignore[arg-type]
    ("unknown method", lambda: conflicts.detect_structure_overlaps([box()], method="grid")),
    ("unknown terrain method", lambda: conflicts.merge_terrain([ball()], method="octree")),
    # committed state
    ("negative remaining", lambda: CommittedState(resources={"ore": -1.0})),
    ("NaN remaining", lambda: CommittedState(resources={"ore": NAN})),
    ("remaining a str", lambda: CommittedState(resources={"ore": "3"})),  # type: ignore[dict-item]
    ("resources not a mapping", lambda: CommittedState(resources=[1.0])),  # type: ignore[arg-type]
    ("picked items a str", lambda: CommittedState(picked_items="gem")),
    ("owner not a str", lambda: CommittedState(creature_owners={"wolf": 1})),  # type: ignore[dict-item]
    ("committed box inverted", lambda: CommittedState(structures={"s": (0, 0, 0, -1, 1, 1)})),
    ("committed box NaN", lambda: CommittedState(structures={"s": (0, 0, NAN, 1, 1, 1)})),
    (
        "committed arrays bad shape",
        lambda: CommittedState(structures=(["a", "b"], np.zeros((2, 5)))),
    ),
    ("committed structures junk", lambda: CommittedState(structures=42)),  # type: ignore[arg-type]
    # decisions
    ("decision unknown rule", fails(rule="coin_flip")),
    ("decision unknown type", fails(conflict_type="weather")),
    ("decision unknown key", fails(extra=1)),
    ("decision ids not a list", fails(losers="b")),
    ("decision without losers", fails(losers=[])),
    ("decision op wins and loses", fails(winners=["b"])),
    ("decision committed with winners", fails(rule="committed")),
    ("decision empty reason", fails(reason="")),
    ("decision not a mapping", lambda: ConflictDecision.from_dict([1, 2])),  # type: ignore[arg-type]
    # split brain
    ("empty membership", lambda: conflicts.decide_partition([], ["a"])),
    ("membership a str", lambda: conflicts.decide_partition("abc", ["a"])),
    ("self not in view", lambda: conflicts.decide_partition(["a", "b"], ["b"], self_id="a")),
    ("server id not a str", lambda: conflicts.decide_partition(["a", 2], ["a"])),  # type: ignore[list-item]
    ("sides overlap", lambda: conflicts.surviving_side("ab", [["a", "b"], ["b"]])),
    ("sides overlap (lists)", lambda: conflicts.surviving_side(["a", "b"], [["a", "b"], ["b"]])),
    ("sides miss a member", lambda: conflicts.surviving_side(["a", "b", "c"], [["a"], ["b"]])),
    ("sides add a stranger", lambda: conflicts.surviving_side(["a"], [["a"], ["z"]])),
    ("empty side", lambda: conflicts.surviving_side(["a"], [["a"], []])),
    # terrain fields
    ("field points bad shape", lambda: conflicts.merge_terrain([ball()]).delta_field([1, 2])),
    ("field point NaN", lambda: conflicts.merge_terrain([ball()]).delta_at((0, NAN, 0))),
]


@pytest.mark.parametrize(("what", "call"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_raises_conflict_input_error(what: str, call: Callable[[], object]) -> None:
    with pytest.raises(ConflictInputError):
        call()


def test_error_is_a_value_error_and_wraps_geometry_errors() -> None:
    assert issubclass(ConflictInputError, ValueError)
    with pytest.raises(ConflictInputError) as info:
        box(lo=(NAN, 0, 0))
    assert isinstance(info.value.__cause__, GeometryError)
    assert "non-finite" in str(info.value)


def test_committed_index_with_non_str_ids_is_refused_when_hit() -> None:
    index: SpatialIndex[Any] = SpatialIndex()
    index.insert(17, (0, 0, 0, 1, 1, 1))
    with pytest.raises(ConflictInputError, match="must be str"):
        conflicts.resolve_structures([box()], committed=CommittedState(structures=index))


def test_numpy_scalars_are_accepted_as_numbers() -> None:
    p = box(hlc=np.int64(7), lo=np.array([0.0, 0.0, 0.0]), hi=(np.float32(1), 1, 1))
    assert p.hlc == 7 and type(p.hlc) is int
    assert p.lo == (0.0, 0.0, 0.0) and p.hi == (1.0, 1.0, 1.0)
