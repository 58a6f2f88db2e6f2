"""Membership as one server sees it: who it has heard from lately, and whether its side of
a partition keeps authority. Pure state machines over values (time is a parameter), driven
by the asyncio code in `worldstate.mesh._agent` and, at full speed, by the deterministic
mesh simulation in the tests.

The authority rule itself is `conflicts.decide_partition`: a strict majority of the last
agreed membership keeps authority; exactly half keeps it only if it holds the lowest
server id of that membership; anything else demotes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import conflicts
from consistency.classes import ConsistencyInputError
from consistency.vector_clock import check_server_id


class MembershipView:
    """The servers this one has heard from within ``timeout`` seconds (itself always)."""

    def __init__(self, self_id: str, timeout: float) -> None:
        self.self_id = check_server_id(self_id)
        if not timeout > 0:
            raise ConsistencyInputError(f"timeout must be > 0, got {timeout!r}")
        self.timeout = float(timeout)
        self._last: dict[str, float] = {}
        self._incarnation: dict[str, int] = {}

    def heard(self, server_id: str, at: float, incarnation: int = 0) -> None:
        """A heartbeat (or any message) from ``server_id`` at time ``at``. A heartbeat of an
        older incarnation than one already seen (a delayed message from before a restart)
        is ignored."""
        sid = check_server_id(server_id)
        if incarnation < self._incarnation.get(sid, -1):
            return
        self._incarnation[sid] = incarnation
        if at > self._last.get(sid, float("-inf")):
            self._last[sid] = at

    def left(self, server_id: str, incarnation: int | None = None) -> None:
        """``server_id`` is gone (a clean leave, or its last will): forget it at once."""
        sid = check_server_id(server_id)
        if incarnation is not None and incarnation < self._incarnation.get(sid, -1):
            return
        self._last.pop(sid, None)

    def last_heard(self, server_id: str) -> float | None:
        return self._last.get(server_id)

    def view(self, now: float) -> frozenset[str]:
        alive = {s for s, t in self._last.items() if now - t <= self.timeout}
        alive.add(self.self_id)
        return frozenset(alive)


@dataclass
class PartitionState:
    """This server's standing over time: re-decided on every `update`; ``since`` is when
    the current standing (majority or not) began."""

    self_id: str
    majority: bool = True
    since: float = 0.0
    reason: str = "not yet decided: authoritative until membership is known"
    membership: frozenset[str] = field(default_factory=frozenset)
    view: frozenset[str] = field(default_factory=frozenset)
    changes: int = 0

    def update(self, membership: Iterable[str], view: Iterable[str], now: float) -> bool:
        """Decide again; returns True when the standing changed. An empty membership (none
        agreed yet) keeps the server authoritative: there is nothing to split from."""
        members = frozenset(membership)
        seen = frozenset(view) | {self.self_id}
        self.membership, self.view = members, seen
        if not members:
            keeps, reason = True, "no agreed membership yet"
        else:
            verdict = conflicts.decide_partition(members, seen, self_id=self.self_id)
            keeps, reason = verdict.keeps_authority, verdict.reason
        self.reason = reason
        if keeps != self.majority:
            self.majority = keeps
            self.since = now
            self.changes += 1
            return True
        return False

    def as_dict(self) -> dict[str, object]:
        return {
            "view": sorted(self.view),
            "membership": sorted(self.membership),
            "majority": self.majority,
            "since": self.since,
            "reason": self.reason,
        }
