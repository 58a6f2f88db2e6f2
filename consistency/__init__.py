"""Consistency classes and their machinery (pure parts: routing, HLC, vector clocks, causal
delivery, last-writer-wins).

Everything here is a pure function or state machine over values: no I/O, no clocks read
except through an injected callable. `worldstate` drives it from asyncio. Bad input raises
`ConsistencyInputError` (a `ValueError`), which `worldstate` surfaces as
`worldstate.ValidationError`.
"""

from consistency.causal_buffer import (
    DEFAULT_MAX_PENDING,
    CausalBuffer,
    CausalEvent,
    CausalOrderError,
    Gap,
)
from consistency.classes import (
    ConsistencyClass,
    ConsistencyInputError,
    Registry,
    UnknownOperationType,
)
from consistency.hlc import (
    MAX_TIMESTAMP,
    MAX_WALL_MS,
    ClockDriftError,
    ClockError,
    HybridClock,
    check_timestamp,
    pack,
    unpack,
)
from consistency.lww import EntityTable, lww_wins, lww_wins_many
from consistency.membership import MembershipView, PartitionState
from consistency.vector_clock import Ordering, VectorClock, check_server_id

__all__ = [
    "DEFAULT_MAX_PENDING",
    "MAX_TIMESTAMP",
    "MAX_WALL_MS",
    "CausalBuffer",
    "CausalEvent",
    "CausalOrderError",
    "ClockDriftError",
    "ClockError",
    "ConsistencyClass",
    "ConsistencyInputError",
    "EntityTable",
    "Gap",
    "HybridClock",
    "MembershipView",
    "Ordering",
    "PartitionState",
    "Registry",
    "UnknownOperationType",
    "VectorClock",
    "check_server_id",
    "check_timestamp",
    "lww_wins",
    "lww_wins_many",
    "pack",
    "unpack",
]
