"""Owner-resident region state, and the pure decision of a group of batches against it.

The owner of a region loads its committed strong state once (when it acquires the region,
or after a commit failed or was ambiguous) and keeps it in memory: placed structures (with
an R-tree and the op that placed each), picked items (with the op that picked each) and the
remaining amount of every resource node it has seen claimed. Each group of batches is
decided here, without I/O, by `conflicts.resolve` against that state; only the changes go to
the store. The store stays the truth: a write that finds the store different from memory
rolls back, and the state is reloaded (see `worldstate.store.strong_rows`).

Boundary candidates: a structure is stored in the region of its centre and is at most
``Config.max_structure_size`` across, so a placement can only meet structures of the
regions within half that size of its box. Regions this server holds are checked in
memory; the others' committed rows are read inside the commit's transaction
(`read_structures_near`), so that two owners placing across their common boundary are
serialized by the store and the overlap has one winner.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

import conflicts as cf
from regions import RegionKey, SpatialIndex
from worldstate.errors import ValidationError, WorldStateError
from worldstate.operations import (
    ClaimResource,
    ModifyTerrain,
    Operation,
    PickUpItem,
    PlaceStructure,
)
from worldstate.store.object_rows import Box6
from worldstate.store.strong_commit import OpOutcome, candidate, structure_data
from worldstate.store.strong_rows import LoadedRegion

__all__ = [
    "Decision",
    "NearRows",
    "RegionDelta",
    "RegionState",
    "boundary_needs",
    "decide",
    "slab",
]


RowFields = tuple[str, str, Box6, str, str]
"""An `ObjectRow`'s fields as a plain tuple: object id, kind, box, data, op id."""


class RegionState:
    """One owned region's committed strong state, as of ``version`` under ``epoch``."""

    def __init__(self, key: RegionKey, epoch: int, loaded: LoadedRegion) -> None:
        self.key = key
        self.epoch = epoch
        self.version = loaded.version
        self.index: SpatialIndex[str] = SpatialIndex()
        # plain tuples (the fields of `ObjectRow`), which the garbage collector stops
        # tracking: a region of a million structures adds nothing to a full collection
        self.structures: dict[str, RowFields] = {
            r.object_id: (r.object_id, r.kind, r.box, r.data, r.op_id) for r in loaded.structures
        }
        if loaded.structures:
            self.index.bulk_load(
                [r.object_id for r in loaded.structures], [r.box for r in loaded.structures]
            )
        self.items: dict[str, str] = dict(loaded.items)
        self.resources: dict[str, float] = {}

    def hits_many(self, boxes: Sequence[Box6]) -> set[str]:
        """Ids of the structures overlapping any of ``boxes`` (one vectorised R-tree query
        for the lot: a group's placements are looked up together, not one call each)."""
        if not self.structures or not boxes:
            return set()
        if len(boxes) == 1:
            return set(self.index.intersection(boxes[0]))
        arr = np.asarray(boxes, dtype=np.float64)
        handles, _ = self.index.intersection_many(arr[:, :3], arr[:, 3:])
        id_of = self.index.id_of_handle
        return {id_of(h) for h in set(handles.tolist())}

    def apply(self, delta: RegionDelta, version: int, remaining: Mapping[str, float]) -> None:
        """Take a committed delta in (after the store said yes)."""
        self.version = version
        for o in delta.structures:
            box: Box6 = (*o.lo, *o.hi)
            self.structures[o.structure_id] = (
                o.structure_id,
                o.kind,
                box,
                structure_data(o),
                str(o.op_id),
            )
            self.index.insert(o.structure_id, box)
        for p in delta.pickups:
            self.items[p.item_id] = str(p.op_id)
        self.resources.update(remaining)


@dataclass(slots=True)
class RegionDelta:
    """What a group changes in one region."""

    structures: list[PlaceStructure] = field(default_factory=list)
    pickups: list[PickUpItem] = field(default_factory=list)
    terrain: list[ModifyTerrain] = field(default_factory=list)
    claims: dict[str, float] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.structures or self.pickups or self.terrain or self.claims)


@dataclass(slots=True)
class Decision:
    outcomes: dict[str, OpOutcome] = field(default_factory=dict)
    """op id -> outcome, for every op that was decided"""
    errors: dict[str, WorldStateError] = field(default_factory=dict)
    """op id -> why the op cannot be applied at all (it fails alone)"""
    deltas: dict[RegionKey, RegionDelta] = field(default_factory=dict)
    decisions: list[cf.ConflictDecision] = field(default_factory=list)
    region_of: dict[str, RegionKey] = field(default_factory=dict)


@functools.lru_cache(maxsize=65536)
def _offset(key: RegionKey, dx: int, dy: int, dz: int) -> RegionKey | None:
    try:
        return RegionKey(key.ix + dx, key.iy + dy, key.iz + dz)
    except ValueError:  # beyond the edge of the key space
        return None


def reachable(
    key: RegionKey, op: PlaceStructure, reach: float, region_size: float
) -> list[RegionKey]:
    """``key`` and the neighbour regions whose structures can meet ``op``: a structure is
    stored under the region of its centre and is at most ``2 * reach`` across, so only the
    neighbours across a face that ``op``'s box comes within ``reach`` of. Float compares,
    no key enumeration (this runs for every placement)."""
    steps: list[tuple[int, ...]] = []
    base = (key.ix * region_size, key.iy * region_size, key.iz * region_size)
    for i in range(3):
        axis = [0]
        if op.lo[i] - reach < base[i]:
            axis.append(-1)
        if op.hi[i] + reach > base[i] + region_size:
            axis.append(1)
        steps.append(tuple(axis))
    out = [key]
    for dx in steps[0]:
        for dy in steps[1]:
            for dz in steps[2]:
                if dx or dy or dz:
                    k = _offset(key, dx, dy, dz)
                    if k is not None:
                        out.append(k)
    return out


def boundary_needs(
    batches: Sequence[tuple[RegionState, Sequence[Operation]]],
    held: Mapping[RegionKey, RegionState],
    max_structure_size: float,
    region_size: float,
) -> tuple[set[tuple[int, RegionKey]], list[Box6]]:
    """The (foreign region code, held region) pairs whose committed structures the group's
    placements could meet — regions not held here, next to the held region a placement is
    in — and the boxes of those placements."""
    pairs: set[tuple[int, RegionKey]] = set()
    boxes: list[Box6] = []
    half = max_structure_size / 2
    for state, ops in batches:
        for op in ops:
            if not isinstance(op, PlaceStructure):
                continue
            foreign = [
                k.morton for k in reachable(state.key, op, half, region_size)[1:] if k not in held
            ]
            if foreign:
                pairs.update((m, state.key) for m in foreign)
                boxes.append((*op.lo, *op.hi))
    return pairs, boxes


def slab(key: RegionKey, max_structure_size: float, region_size: float) -> Box6:
    """The box a foreign neighbour's structure must meet to overlap a placement in ``key``
    (a placement is centred in its region and at most ``max_structure_size`` across)."""
    half = max_structure_size / 2
    lo, hi = key.bounds_for(region_size)
    return (lo[0] - half, lo[1] - half, lo[2] - half, hi[0] + half, hi[1] + half, hi[2] + half)


class NearRows:
    """A foreign neighbour's committed structures within one held region's `slab`, as read
    at the neighbour's region ``version`` (an owner-side cache: every use is validated by
    the commit, which reads that version in the same statement and refuses a moved one)."""

    __slots__ = ("boxes", "ids", "ops", "version")

    def __init__(self, version: int, rows: Mapping[str, tuple[Box6, str]]) -> None:
        self.version = version
        self.ids = list(rows)
        self.ops = [rows[i][1] for i in self.ids]
        self.boxes = np.asarray([rows[i][0] for i in self.ids], dtype=np.float64).reshape(-1, 6)

    def meeting(self, q: np.ndarray) -> dict[str, tuple[Box6, str]]:
        """The rows whose boxes share interior volume with any of the ``(N, 6)`` boxes ``q``
        (touching faces do not conflict)."""
        if not self.ids or len(q) == 0:
            return {}
        b = self.boxes[:, None, :]
        hit = (
            (b[..., 0] < q[None, :, 3])
            & (b[..., 3] > q[None, :, 0])
            & (b[..., 1] < q[None, :, 4])
            & (b[..., 4] > q[None, :, 1])
            & (b[..., 2] < q[None, :, 5])
            & (b[..., 5] > q[None, :, 2])
        ).any(axis=1)
        return {
            self.ids[i]: (tuple(self.boxes[i].tolist()), self.ops[i])
            for i in np.flatnonzero(hit).tolist()
        }


def decide(
    batches: Sequence[tuple[RegionState, Sequence[Operation]]],
    held: Mapping[RegionKey, RegionState],
    *,
    near: Mapping[str, tuple[Box6, str]],
    resources: Mapping[str, float],
    taken: Mapping[str, str],
    policy: cf.Policy,
    max_structure_size: float,
    region_size: float,
) -> Decision:
    """Decide a group of batches (each region's ops, already de-duplicated and new) against
    the owner's state (``held``: every region this server holds and has loaded), the
    committed structures of foreign neighbours (``near``), the remaining amount of every
    resource node claimed (``resources``) and ids known to be taken elsewhere (``taken``:
    op id -> reason). Pure: the states are not changed.

    Raises `conflicts.ConflictInputError` only for input the batch as a whole cannot be
    resolved with (the caller splits the batch); an op that cannot even become a
    candidate fails alone (``errors``)."""
    out = Decision()
    cands: list[cf.Candidate] = []
    committed_boxes: dict[str, Box6] = {}
    placed_by: dict[str, str] = {}  # committed structure or item id -> op id that placed it
    picked: set[str] = set()
    lookups: dict[RegionKey, list[Box6]] = {}  # held region -> the placement boxes to look up
    half = max_structure_size / 2
    for state, ops in batches:
        for op in ops:
            oid = str(op.op_id)
            out.region_of[oid] = state.key
            if oid in taken:
                out.outcomes[oid] = OpOutcome(oid, False, None, taken[oid], None)
                continue
            try:
                c = candidate(op)
            except (TypeError, ValueError) as e:
                out.errors[oid] = ValidationError(
                    f"{op.op_type} {oid} cannot be applied by the strong path: {e}"
                )
                continue
            cands.append(c)
            if isinstance(op, PlaceStructure):
                box: Box6 = (*op.lo, *op.hi)
                for k in reachable(state.key, op, half, region_size):
                    st = held.get(k)
                    if st is None:
                        continue
                    lookups.setdefault(k, []).append(box)
                    same = st.structures.get(op.structure_id)
                    if same is not None:
                        committed_boxes[op.structure_id] = same[2]
                        placed_by[op.structure_id] = same[4]
            elif isinstance(op, PickUpItem):
                by = state.items.get(op.item_id)
                if by is not None:
                    picked.add(op.item_id)
                    placed_by[op.item_id] = by
    for k, boxes in lookups.items():  # the held regions' committed structures they meet
        st = held[k]
        for sid in st.hits_many(boxes):
            row = st.structures[sid]
            committed_boxes[sid] = row[2]
            placed_by[sid] = row[4]
    for sid, (box, by) in near.items():
        committed_boxes[sid] = box
        placed_by[sid] = by
    claimed = {c.resource_id for c in cands if isinstance(c, cf.ResourceClaim)}
    committed = cf.CommittedState(
        structures=committed_boxes or None,
        resources={r: resources[r] for r in claimed if r in resources},
        picked_items=picked,
    )
    resolution = cf.resolve(cands, policy=policy, committed=committed)
    winners = {c.op_id for c in resolution.winners}
    out.decisions = [d for d in resolution.decisions if d.losers]
    versions = {state.key: state.version + 1 for state, _ in batches}
    for state, ops in batches:
        delta = out.deltas.setdefault(state.key, RegionDelta())
        for op in ops:
            oid = str(op.op_id)
            if oid in out.errors or oid in out.outcomes:
                continue
            if oid in winners:
                if isinstance(op, PlaceStructure):
                    delta.structures.append(op)
                elif isinstance(op, PickUpItem):
                    delta.pickups.append(op)
                elif isinstance(op, ModifyTerrain):
                    delta.terrain.append(op)
                elif isinstance(op, ClaimResource):
                    delta.claims[op.resource_id] = delta.claims.get(op.resource_id, 0.0) + op.amount
                out.outcomes[oid] = OpOutcome(oid, True, versions[state.key])
                continue
            d = resolution.decision_of(oid)
            o = resolution.outcome_of(oid)
            reason = d.reason if d is not None else f"lost ({o.rule})"
            winner = o.winner_op_id
            if winner is None and d is not None and d.committed_ids:
                winner = next((placed_by[i] for i in d.committed_ids if i in placed_by), None)
            if winner is not None and not _is_uuid(winner):
                winner = None
            out.outcomes[oid] = OpOutcome(oid, False, None, reason, winner)
    return out


def _is_uuid(v: str) -> bool:
    try:
        uuid.UUID(v)
    except ValueError:
        return False
    return True
