"""State already committed in the store, against which a batch is resolved."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import Any

import numpy as np
import numpy.typing as npt

from conflicts._errors import ConflictInputError, geometry_as_input_errors
from conflicts._validate import check_id, check_real
from regions import Box, SpatialIndex, check_bbox

StructuresInput = (
    SpatialIndex[str]
    | Mapping[str, Sequence[float] | Box]
    | tuple[Sequence[str], npt.ArrayLike]
    | None
)


def _structure_index(structures: StructuresInput) -> SpatialIndex[str] | None:
    if structures is None:
        return None
    if isinstance(structures, SpatialIndex):
        return structures
    if isinstance(structures, Mapping):
        ids = [check_id(k, "committed structure id") for k in structures]
        with geometry_as_input_errors():
            rows = [check_bbox(b, f"committed structure {k!r}") for k, b in structures.items()]
        boxes: Any = np.array(rows, dtype=np.float64).reshape(-1, 6)
    elif isinstance(structures, tuple) and len(structures) == 2:
        raw_ids, raw_boxes = structures
        if isinstance(raw_ids, (str, bytes)) or not isinstance(raw_ids, Iterable):
            raise ConflictInputError("committed structure ids must be a sequence of str")
        ids = [check_id(k, "committed structure id") for k in raw_ids]
        boxes = raw_boxes
    else:
        raise ConflictInputError(
            "structures must be a SpatialIndex, a mapping id -> bbox, or (ids, (N, 6) boxes); "
            f"got {type(structures).__name__}"
        )
    index: SpatialIndex[str] = SpatialIndex()
    with geometry_as_input_errors():
        index.bulk_load(ids, boxes)
    return index


class CommittedState:
    """What the store already holds, as far as a batch can conflict with it.

    Keyword arguments (all optional):

    - ``structures``: existing structures, as a `regions.SpatialIndex` keyed by structure id
      (used as is, not copied: do not mutate it while a resolver runs), a mapping
      ``structure id -> bbox`` (6 numbers or a `regions.Box`), or ``(ids, boxes)`` with an
      ``(N, 6)`` array of interleaved boxes. A placement that shares interior volume with a
      committed structure, or reuses a committed structure id, loses.
    - ``resources``: remaining amount per resource node (finite and >= 0, or ``math.inf``
      for an inexhaustible node). A claim on a node *not listed* loses: an amount that cannot
      be checked is treated as exhausted, never as unlimited, so the pipeline must load every
      node a batch touches.
    - ``picked_items``: ids of items already picked up; a pickup of one of them loses.
    - ``creature_owners``: ``creature id -> owning server id``. A claim on an owned creature
      loses unless it comes from the owner (a hand-over) or names the owner as claimant.
      Unowned creatures (absent from the mapping) are free to claim; the pipeline should
      leave out creatures whose owner has been declared lost.

    Everything is validated here (`ConflictInputError`), and copied into read-only views.
    """

    __slots__ = ("_owners", "_picked", "_resources", "_structures")

    def __init__(
        self,
        *,
        structures: StructuresInput = None,
        resources: Mapping[str, float] | None = None,
        picked_items: Iterable[str] = (),
        creature_owners: Mapping[str, str] | None = None,
    ) -> None:
        self._structures = _structure_index(structures)
        self._resources = MappingProxyType(_resources(resources))
        if isinstance(picked_items, (str, bytes)) or not isinstance(picked_items, Iterable):
            raise ConflictInputError("picked_items must be an iterable of item ids")
        self._picked = frozenset(check_id(i, "picked item id") for i in picked_items)
        owners: dict[str, str] = {}
        if creature_owners is not None:
            if not isinstance(creature_owners, Mapping):
                raise ConflictInputError("creature_owners must be a mapping creature -> server")
            for k, v in creature_owners.items():
                owners[check_id(k, "creature id")] = check_id(v, f"owner of creature {k!r}")
        self._owners = MappingProxyType(owners)

    @property
    def structures(self) -> SpatialIndex[str] | None:
        return self._structures

    @property
    def resources(self) -> Mapping[str, float]:
        return self._resources

    @property
    def picked_items(self) -> frozenset[str]:
        return self._picked

    @property
    def creature_owners(self) -> Mapping[str, str]:
        return self._owners

    def __repr__(self) -> str:
        n = len(self._structures) if self._structures is not None else 0
        return (
            f"CommittedState(structures={n}, resources={len(self._resources)}, "
            f"picked_items={len(self._picked)}, creature_owners={len(self._owners)})"
        )


def _resources(resources: Mapping[str, float] | None) -> dict[str, float]:
    out: dict[str, float] = {}
    if resources is None:
        return out
    if not isinstance(resources, Mapping):
        raise ConflictInputError("resources must be a mapping resource id -> remaining amount")
    for k, v in resources.items():
        rid = check_id(k, "resource id")
        amount = check_real(v, f"remaining amount of {rid!r}", allow_inf=True)
        if amount < 0:
            raise ConflictInputError(f"remaining amount of {rid!r} must be >= 0, got {amount}")
        out[rid] = amount
    return out


EMPTY_STATE = CommittedState()
"""Nothing committed: no structures, no known resources, nothing picked, no owners."""


def as_committed(committed: CommittedState | None) -> CommittedState:
    """``committed``, or `EMPTY_STATE` for None; anything else is bad input."""
    if committed is None:
        return EMPTY_STATE
    if not isinstance(committed, CommittedState):
        raise ConflictInputError(
            f"committed must be a CommittedState or None, got {type(committed).__name__}"
        )
    return committed
