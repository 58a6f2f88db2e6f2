"""Outcomes of strong ops: what a caller gets back, the digest that ties an op id to the
operation it was first submitted with, and the owner's memory of recent outcomes."""

from __future__ import annotations

import uuid
from collections import OrderedDict
from typing import Any

from worldstate.errors import ValidationError
from worldstate.operations import Operation
from worldstate.protocol._ops import op_digest as wire_digest
from worldstate.results import Committed, Rejected, Result
from worldstate.store.strong_commit import OpOutcome

__all__ = ["OpOutcome", "OutcomeMemory", "check_digest", "op_digest", "to_result"]

_STAMPED = frozenset({"op_id", "server_id", "hlc"})


def op_digest(op: Operation) -> str:
    """The hex digest of what the op asks for (`worldstate.protocol._ops.op_digest`: its
    type and fields, without the op id and what `submit` stamps), recorded with its outcome,
    so the same op resubmitted from anywhere matches and a reused op id does not."""
    return wire_digest(op).hex()


def check_digest(op: Operation, recorded: str | None) -> None:
    """`ValidationError` when ``op`` reuses the op id of a different operation."""
    if recorded is not None and recorded != op_digest(op):
        raise ValidationError(
            f"op_id {op.op_id} was already used for a different operation; an op_id names "
            "one operation — give this one a new op_id (resubmit only the same op with it)"
        )


def to_result(out: OpOutcome) -> Result:
    op_id = uuid.UUID(out.op_id)
    if out.committed:
        return Committed(op_id, out.version or 0)
    winner = uuid.UUID(out.winner_op_id) if out.winner_op_id else None
    return Rejected(op_id, out.reason or "rejected", winner)


class OutcomeMemory:
    """The owner's recent outcomes (op id -> outcome, digest), least recently used out.
    Only a fast path: an op id it forgot is still caught by the store's unique op id."""

    def __init__(self, capacity: int = 200_000) -> None:
        self.capacity = capacity
        # plain tuples of atomic values, which the garbage collector stops tracking: up to
        # `capacity` outcomes add nothing to a full collection's pause
        self._d: OrderedDict[str, tuple[Any, ...]] = OrderedDict()

    def get(self, op_id: str) -> tuple[OpOutcome, str | None] | None:
        got = self._d.get(op_id)
        if got is None:
            return None
        return OpOutcome._make(got[:5]), got[5]

    def put(self, out: OpOutcome, digest: str | None) -> None:
        self._d[out.op_id] = (*out, digest)
        if len(self._d) > self.capacity:
            self._d.popitem(last=False)

    def __len__(self) -> int:
        return len(self._d)


def outcome_row(
    op: Operation, res: OpOutcome, region_key: int | None, now: float, digest: str
) -> dict[str, object]:
    return {
        "op_id": res.op_id,
        "op_type": op.op_type,
        "status": "committed" if res.committed else "rejected",
        "version": res.version,
        "reason": res.reason,
        "winner_op_id": res.winner_op_id,
        "server_id": op.server_id,
        "region_key": region_key,
        "at": now,
        "digest": digest,
    }


def replace_version(out: OpOutcome, version: int) -> OpOutcome:
    return out._replace(version=version)
