"""Deterministic conflict detection and resolution for concurrent world operations.

Pure functions over values, no I/O: the strong commit pipeline resolves each batch with
`resolve`, the eventual path and the operator read the `ConflictDecision` records. Every
resolver is a function of the *set* of operations: the same winners, in the same order,
whatever order the operations arrived in, on every server.

- Candidates: `StructurePlacement`, `TerrainEdit`, `ResourceClaim`, `ItemPickup`,
  `CreatureClaim` (frozen records, validated on construction).
- Strategies and policy: `Strategy`, `CustomStrategy` (a game's key function, then the
  full tie-break), `ConflictType`, `Policy`, `DEFAULT_POLICY`, `precedence_key` (each
  strategy's total order, ending in server id then op id).
- Resolution: `resolve` (mixed batch) and `resolve_structures`, `resolve_terrain`,
  `merge_terrain`, `resolve_claims`, `resolve_pickups`, `resolve_creatures`, against an
  optional `CommittedState`; results are `Resolution` values holding `ConflictDecision`s.
- Detection: `detect_structure_overlaps`, `detect_committed_overlaps`,
  `detect_terrain_overlaps`, `detect_resource_collisions`, `detect_pickup_races`,
  `detect_creature_disputes`.
- Split brain: `decide_partition`, `surviving_side`, `PartitionVerdict`.

- Input rules shared with `worldstate`: `id_problem`, `magnitude_problem`, `MAX_ID_LENGTH`,
  `MAX_MAGNITUDE` (pure predicates: one rule, each layer raising its own error).

Imports only `regions`. Bad input raises `ConflictInputError` (a `ValueError`), never a
wrong answer; `worldstate` surfaces it as `worldstate.ValidationError`.
"""

from conflicts._candidates import (
    Candidate,
    CreatureClaim,
    ItemPickup,
    ResourceClaim,
    StructurePlacement,
    TerrainEdit,
)
from conflicts._committed import EMPTY_STATE, CommittedState
from conflicts._creatures import detect_creature_disputes, resolve_creatures
from conflicts._decisions import ConflictDecision, Outcome
from conflicts._errors import ConflictInputError
from conflicts._items import detect_pickup_races, resolve_pickups
from conflicts._kinds import AnyStrategy, ConflictType, CustomStrategy, Rule, Strategy
from conflicts._merge import TerrainGroup, TerrainMerge, detect_terrain_overlaps, merge_terrain
from conflicts._policy import DEFAULT_POLICY, Policy, precedence_key
from conflicts._resolution import Resolution
from conflicts._resolve import resolve
from conflicts._resources import detect_resource_collisions, resolve_claims
from conflicts._split_brain import (
    PartitionRule,
    PartitionVerdict,
    decide_partition,
    surviving_side,
)
from conflicts._structures import (
    detect_committed_overlaps,
    detect_structure_overlaps,
    resolve_structures,
)
from conflicts._terrain import resolve_terrain
from conflicts._validate import MAX_ID_LENGTH, MAX_MAGNITUDE, id_problem, magnitude_problem

__all__ = [
    "DEFAULT_POLICY",
    "EMPTY_STATE",
    "MAX_ID_LENGTH",
    "MAX_MAGNITUDE",
    "AnyStrategy",
    "Candidate",
    "CommittedState",
    "ConflictDecision",
    "ConflictInputError",
    "ConflictType",
    "CreatureClaim",
    "CustomStrategy",
    "ItemPickup",
    "Outcome",
    "PartitionRule",
    "PartitionVerdict",
    "Policy",
    "Resolution",
    "ResourceClaim",
    "Rule",
    "Strategy",
    "StructurePlacement",
    "TerrainEdit",
    "TerrainGroup",
    "TerrainMerge",
    "decide_partition",
    "detect_committed_overlaps",
    "detect_creature_disputes",
    "detect_pickup_races",
    "detect_resource_collisions",
    "detect_structure_overlaps",
    "detect_terrain_overlaps",
    "id_problem",
    "magnitude_problem",
    "merge_terrain",
    "precedence_key",
    "resolve",
    "resolve_claims",
    "resolve_creatures",
    "resolve_pickups",
    "resolve_structures",
    "resolve_terrain",
    "surviving_side",
]
