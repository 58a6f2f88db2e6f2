"""Structure placements: overlap detection (R-tree) and batch resolution."""

from __future__ import annotations

from collections.abc import Iterable
from itertools import compress
from operator import attrgetter

import numpy as np
import numpy.typing as npt

from conflicts._admit import admit
from conflicts._candidates import StructurePlacement, unique_candidates
from conflicts._committed import CommittedState, as_committed
from conflicts._decisions import ConflictDecision, trusted_decision
from conflicts._errors import ConflictInputError
from conflicts._kinds import AnyStrategy, ConflictType, Rule, Strategy, as_any_strategy
from conflicts._overlap import Boxes, index_hits, join
from conflicts._policy import canonical_key, precedence_key_fn, strategy_text
from conflicts._resolution import Resolution, make_resolution

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

_TYPE = ConflictType.STRUCTURE_OVERLAP
_structure_id = attrgetter("structure_id")
_packed = attrgetter("packed_bbox")


def _boxes(items: list[StructurePlacement]) -> Boxes:
    n = len(items)
    flat = np.frombuffer(b"".join(map(_packed, items)), dtype=np.float64).reshape(n, 6)
    return Boxes(np.ascontiguousarray(flat[:, :3]), np.ascontiguousarray(flat[:, 3:]))


def _same_id_pairs(items: list[StructurePlacement]) -> tuple[I64, I64]:
    """Index pairs ``(i, j)``, ``i < j``, of placements that reuse one structure id."""
    ids = list(map(_structure_id, items))
    if len(set(ids)) == len(ids):
        return np.empty(0, np.int64), np.empty(0, np.int64)
    rows: dict[str, list[int]] = {}
    for i, sid in enumerate(ids):
        rows.setdefault(sid, []).append(i)
    pairs = [(a, b) for r in rows.values() for x, a in enumerate(r) for b in r[x + 1 :]]
    arr = np.array(pairs, dtype=np.int64).reshape(-1, 2)
    return arr[:, 0], arr[:, 1]


def _committed_hits(
    items: list[StructurePlacement], boxes: Boxes, state: CommittedState
) -> dict[int, list[str]]:
    """Row -> committed structure ids the placement overlaps or whose id it reuses."""
    index = state.structures
    hits: dict[int, list[str]] = {}
    if index is None or len(index) == 0:
        return hits
    for row, sid in index_hits(index, boxes.lo, boxes.hi):
        hits.setdefault(row, []).append(sid)
    for row, p in enumerate(items):
        if p.structure_id in index:
            found = hits.setdefault(row, [])
            if p.structure_id not in found:
                found.append(p.structure_id)
                found.sort()
    return hits


def detect_structure_overlaps(
    placements: Iterable[StructurePlacement], *, method: str = "rtree"
) -> list[tuple[str, str]]:
    """Pairs of op ids of placements whose boxes share interior volume, each pair and the
    list sorted. ``method``: ``"rtree"`` (the R-tree join) or ``"pairwise"`` (the O(n^2)
    reference); both return the same pairs. Reuse of a structure id is not an overlap, but
    `resolve_structures` treats it as a conflict too."""
    items = unique_candidates(placements, (StructurePlacement,), "detect_structure_overlaps")
    first, second = join(_boxes(items), method)
    out = []
    for i, j in zip(first.tolist(), second.tolist(), strict=True):
        a, b = items[i].op_id, items[j].op_id
        out.append((a, b) if a < b else (b, a))
    out.sort()
    return out


def detect_committed_overlaps(
    placements: Iterable[StructurePlacement], committed: CommittedState
) -> dict[str, tuple[str, ...]]:
    """For each placement that conflicts with committed structures (shares interior volume
    with them, or reuses a committed id): op id -> those structure ids, sorted."""
    if not isinstance(committed, CommittedState):
        raise ConflictInputError(f"committed must be a CommittedState, got {type(committed)}")
    items = unique_candidates(placements, (StructurePlacement,), "detect_committed_overlaps")
    hits = _committed_hits(items, _boxes(items), committed)
    return {items[r].op_id: tuple(hits[r]) for r in sorted(hits, key=lambda r: items[r].op_id)}


def _reason(loser: StructurePlacement, winners: list[StructurePlacement], s: AnyStrategy) -> str:
    w = winners[0]
    if w.structure_id == loser.structure_id:
        what = f"reuses structure id {w.structure_id!r} placed by op {w.op_id}"
    else:
        what = f"overlaps structure {w.structure_id!r} placed by op {w.op_id}"
    more = f" (and {len(winners) - 1} more)" if len(winners) > 1 else ""
    return f"structure {loser.structure_id!r} {what}{more}; {strategy_text(s)}"


def resolve_structures_checked(
    items: list[StructurePlacement], strategy: AnyStrategy, state: CommittedState, method: str
) -> Resolution[StructurePlacement]:
    """`resolve_structures` on already-validated, de-duplicated input."""
    if strategy is Strategy.MERGE:
        raise ConflictInputError("structures cannot be merged; choose another strategy")
    key = precedence_key_fn(strategy)
    ordered = sorted(items, key=key)
    n = len(ordered)
    boxes = _boxes(ordered)
    first, second = join(boxes, method)
    dup_first, dup_second = _same_id_pairs(ordered)
    if len(dup_first):
        # a pair may both overlap and share an id: list each conflicting pair once
        pairs = np.unique(np.concatenate([first * n + second, dup_first * n + dup_second]))
        first, second = pairs // n, pairs % n
    committed_hits = _committed_hits(ordered, boxes, state)
    blocked = np.zeros(n, dtype=bool)
    blocked[list(committed_hits)] = True
    admitted, beaten = admit(blocked, first, second)

    rule = Rule.of(strategy)
    decisions: list[ConflictDecision] = []
    for row, ids in committed_hits.items():
        p = ordered[row]
        why = "reuses the id of" if p.structure_id in ids else "overlaps"
        decisions.append(
            trusted_decision(
                conflict_type=_TYPE,
                rule=Rule.COMMITTED,
                subject=p.structure_id,
                losers=(p.op_id,),
                committed_ids=tuple(ids),
                reason=f"structure {p.structure_id!r} {why} committed structure(s) "
                + ", ".join(repr(i) for i in ids),
            )
        )
    for row, wins in beaten.items():
        p = ordered[row]
        winners = [ordered[i] for i in wins]
        decisions.append(
            trusted_decision(
                conflict_type=_TYPE,
                rule=rule,
                subject=p.structure_id,
                winners=tuple(w.op_id for w in winners),
                losers=(p.op_id,),
                reason=_reason(p, winners, strategy),
            )
        )
    winners = list(compress(ordered, admitted.tolist()))
    losers = list(compress(ordered, (~admitted).tolist()))
    return make_resolution(
        winners,
        losers,
        decisions,
        {_TYPE: rule},
        presorted=key is canonical_key,
    )


def resolve_structures(
    placements: Iterable[StructurePlacement],
    *,
    strategy: AnyStrategy | str = Strategy.TIMESTAMP,
    committed: CommittedState | None = None,
    method: str = "rtree",
) -> Resolution[StructurePlacement]:
    """Choose which placements of a concurrent batch are built.

    Placements conflict when their boxes share interior volume or they reuse a structure
    id. Walking the batch in ``strategy``'s precedence order, a placement is admitted unless
    it conflicts with committed structures (it loses with rule ``committed``, naming them)
    or with a placement already admitted (it loses to it). So no two winners conflict, no
    winner conflicts with committed state, and the winners depend only on the set of
    placements. ``method="pairwise"`` uses the O(n^2) reference detector (same answer).
    """
    items = unique_candidates(placements, (StructurePlacement,), "resolve_structures")
    return resolve_structures_checked(
        items, as_any_strategy(strategy), as_committed(committed), method
    )
