"""The one entry point for a mixed batch: `resolve`."""

from __future__ import annotations

from collections.abc import Iterable

from conflicts._candidates import (
    CANDIDATE_TYPES,
    Candidate,
    CreatureClaim,
    ItemPickup,
    ResourceClaim,
    StructurePlacement,
    TerrainEdit,
    unique_candidates,
)
from conflicts._committed import CommittedState, as_committed
from conflicts._creatures import resolve_creatures_checked
from conflicts._errors import ConflictInputError
from conflicts._items import resolve_pickups_checked
from conflicts._kinds import ConflictType
from conflicts._policy import DEFAULT_POLICY, Policy
from conflicts._resolution import Resolution, combine_resolutions
from conflicts._resources import resolve_claims_checked
from conflicts._structures import resolve_structures_checked
from conflicts._terrain import resolve_terrain_checked


def resolve(
    candidates: Iterable[Candidate],
    *,
    policy: Policy = DEFAULT_POLICY,
    committed: CommittedState | None = None,
    method: str = "rtree",
) -> Resolution[Candidate]:
    """Resolve a mixed batch of concurrent candidates, each type by its policy strategy.

    A pure function of the *set* of candidates (and of ``policy`` and ``committed``): any
    arrival order, any split of the batch across servers, and any verbatim repetition give
    the same `Resolution`. Types are resolved independently (a structure never conflicts
    with a pickup); see `resolve_structures`, `resolve_terrain`, `resolve_claims`,
    `resolve_pickups` and `resolve_creatures` for the rule of each. Candidates conflicting
    with ``committed`` lose with rule ``committed``.

    Raises `ConflictInputError` for anything that is not a candidate record, two different
    records sharing an op id, a policy that is not a `Policy`, or an unknown ``method``.
    """
    if not isinstance(policy, Policy):
        raise ConflictInputError(f"policy must be a Policy, got {type(policy).__name__}")
    state = as_committed(committed)
    items = unique_candidates(candidates, CANDIDATE_TYPES, "resolve")
    structures: list[StructurePlacement] = []
    terrain: list[TerrainEdit] = []
    claims: list[ResourceClaim] = []
    pickups: list[ItemPickup] = []
    creatures: list[CreatureClaim] = []
    for c in items:
        if type(c) is StructurePlacement:
            structures.append(c)
        elif type(c) is TerrainEdit:
            terrain.append(c)
        elif type(c) is ResourceClaim:
            claims.append(c)
        elif type(c) is ItemPickup:
            pickups.append(c)
        else:
            assert type(c) is CreatureClaim
            creatures.append(c)
    return combine_resolutions(
        [
            resolve_structures_checked(
                structures, policy[ConflictType.STRUCTURE_OVERLAP], state, method
            ),
            resolve_terrain_checked(terrain, policy[ConflictType.TERRAIN_OVERLAP], method),
            resolve_claims_checked(claims, policy[ConflictType.RESOURCE_CLAIM], state),
            resolve_pickups_checked(pickups, policy[ConflictType.ITEM_PICKUP], state),
            resolve_creatures_checked(creatures, policy[ConflictType.CREATURE_OWNERSHIP], state),
        ]
    )
