"""What `World.submit` returns."""

from __future__ import annotations

import uuid
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Committed:
    """A strong operation is durable: it is in the store at region ``version`` (0 for
    non-spatial operations such as inventory changes)."""

    op_id: uuid.UUID
    version: int


@dataclass(frozen=True, slots=True)
class Rejected:
    """A deterministic decision against the operation (a conflict it lost, an inventory that
    would go negative, an unknown resource). ``winner_op_id`` names the operation that won,
    when one did."""

    op_id: uuid.UUID
    reason: str
    winner_op_id: uuid.UUID | None = None


@dataclass(frozen=True, slots=True)
class Accepted:
    """A causal or eventual operation was applied locally and queued for delivery (causal:
    already appended to the durable event log)."""

    op_id: uuid.UUID


Result = Committed | Rejected | Accepted
