"""The fault network: a sans-I/O model of the links between bus clients.

`FaultNetwork` decides what happens to each (message, receiver) delivery — refused by a
partition or a one-way block, dropped, duplicated, held back (reordered), delayed — and
keeps the deliveries on their way until they are due. It does no I/O and owns no timer: the
caller passes the time (``now``) to `FaultNetwork.send` and `FaultNetwork.due`, and asks
`FaultNetwork.next_due` when to come back. All randomness comes from one injected
`random.Random`. The in-process bus (`worldstate.bus.memory.Hub`) drives it with its event
loop's clock; the deterministic simulation (``tests/sim``) drives that loop with virtual time.

Semantics:

- Partitions split client ids into groups; ids not listed form one more group. A one-way
  `block` refuses the deliveries from one client to another only. Refused deliveries are
  counted (``partitioned``) and lost, as over a cut network; deliveries already on their way
  still arrive.
- Each publisher→receiver link stays FIFO under ``delay`` (like a TCP connection); only
  ``reorder`` breaks the order: a delivery is held back and released after the next one on
  the same link, or after ``reorder_window`` seconds if none comes.
- Determinism: given the rng's seed and the order of calls, the faults drawn and the order of
  `due` deliveries are the same on every run. Draws happen per (message, receiver), in the
  order the caller sends them; `due` returns deliveries ordered by (due time, send order).
"""

from __future__ import annotations

import math
import random
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Generic, TypeVar

from worldstate.errors import ValidationError

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Faults:
    """What the network does to each (message, receiver) delivery. Probabilities in [0, 1].

    drop: the delivery is lost.
    duplicate: the delivery happens twice.
    reorder: the delivery is held back and released after the next one on the same
        publisher→receiver link (or after ``reorder_window`` seconds if none comes).
    delay: a uniform random latency in ``[lo, hi]`` seconds; each link stays FIFO (like a
        TCP connection), so delay alone never reorders one publisher's messages.
    seed: seeds the network's random generator (reset by every `FaultNetwork.set_faults`
        that is given no rng of its own).
    """

    drop: float = 0.0
    duplicate: float = 0.0
    reorder: float = 0.0
    delay: tuple[float, float] = (0.0, 0.0)
    reorder_window: float = 0.05
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("drop", "duplicate", "reorder"):
            p = getattr(self, name)
            if isinstance(p, bool) or not isinstance(p, int | float) or not 0.0 <= p <= 1.0:
                raise ValidationError(f"{name} must be a probability in [0, 1], got {p!r}")
        lo, hi = self.delay
        if not (math.isfinite(lo) and math.isfinite(hi) and 0.0 <= lo <= hi):
            raise ValidationError(f"delay must be (lo, hi) with 0 <= lo <= hi, got {self.delay!r}")
        if not (math.isfinite(self.reorder_window) and self.reorder_window > 0):
            raise ValidationError(f"reorder_window must be > 0, got {self.reorder_window!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ValidationError(f"seed must be an int, got {self.seed!r}")

    @property
    def any(self) -> bool:
        return bool(self.drop or self.duplicate or self.reorder or self.delay[1] > 0)


@dataclass(frozen=True, slots=True)
class NetStats:
    """A snapshot of a network's counters (deliveries, not messages)."""

    sent: int = 0
    """Deliveries handed to `FaultNetwork.send` and admitted by the partition."""
    dropped: int = 0
    duplicated: int = 0
    reordered: int = 0
    partitioned: int = 0
    """Deliveries refused by a partition or a one-way block."""


@dataclass(slots=True)
class _Queued(Generic[T]):
    due: float
    seq: int
    item: T


class _Link(Generic[T]):
    """The path from one sender to one receiver, where reorder and delay happen."""

    __slots__ = ("held", "held_until", "last_due", "pending")

    def __init__(self) -> None:
        self.held: T | None = None
        self.held_until = 0.0
        self.pending: deque[_Queued[T]] = deque()
        self.last_due = 0.0

    @property
    def idle(self) -> bool:
        return self.held is None and not self.pending

    def __len__(self) -> int:
        return len(self.pending) + (self.held is not None)


class FaultNetwork(Generic[T]):
    """Links between named clients with partitions and per-delivery faults (see module doc).

    Args:
        rng: the random generator every fault draw uses (default ``random.Random(0)``).
    """

    def __init__(self, *, rng: random.Random | None = None) -> None:
        self._faults = Faults()
        self._rng = rng if rng is not None else random.Random(0)
        self._group_of: dict[str, int] | None = None
        self._blocked: set[tuple[str, str]] = set()
        self._links: dict[tuple[str, str], _Link[T]] = {}
        self._seq = 0
        self._sent = 0
        self._dropped = 0
        self._duplicated = 0
        self._reordered = 0
        self._partitioned = 0

    # -- inspection -------------------------------------------------------------------------

    @property
    def faults(self) -> Faults:
        return self._faults

    @property
    def rng(self) -> random.Random:
        return self._rng

    @property
    def stats(self) -> NetStats:
        return NetStats(
            sent=self._sent,
            dropped=self._dropped,
            duplicated=self._duplicated,
            reordered=self._reordered,
            partitioned=self._partitioned,
        )

    @property
    def in_flight(self) -> int:
        """Deliveries held back or delayed on their way."""
        return sum(len(link) for link in self._links.values())

    @property
    def direct(self) -> bool:
        """No fault is on and nothing is on its way: a delivery may skip the links (and
        arrive at once) without overtaking anything."""
        return not self._faults.any and not self._links

    # -- partitions -------------------------------------------------------------------------

    def partition(self, groups: Iterable[Iterable[str]]) -> None:
        """Split the clients into groups that cannot exchange messages, until `heal`.

        ``groups`` lists disjoint sets of client ids. Every client id not listed (now or
        later) belongs to one more group, "the rest", with all other unlisted ids."""
        group_of: dict[str, int] = {}
        for index, group in enumerate(groups):
            if isinstance(group, str):
                raise ValidationError("each partition group must be a set of client ids, not a str")
            for client_id in group:
                if not isinstance(client_id, str):
                    raise ValidationError(f"client ids are str, got {client_id!r}")
                if client_id in group_of:
                    raise ValidationError(f"client {client_id!r} is listed in two partition groups")
                group_of[client_id] = index
        self._group_of = group_of

    def block(self, sender: str, receiver: str) -> None:
        """Refuse deliveries from ``sender`` to ``receiver`` (one way) until `heal` or
        `unblock`."""
        for name in (sender, receiver):
            if not isinstance(name, str):
                raise ValidationError(f"client ids are str, got {name!r}")
        self._blocked.add((sender, receiver))

    def unblock(self, sender: str, receiver: str) -> None:
        self._blocked.discard((sender, receiver))

    def heal(self) -> None:
        """End the partition and every one-way block."""
        self._group_of = None
        self._blocked.clear()

    def can_reach(self, sender: str, receiver: str) -> bool:
        """Whether a delivery from ``sender`` can reach ``receiver`` now."""
        if (sender, receiver) in self._blocked:
            return False
        if self._group_of is None:
            return True
        return self._group_of.get(sender, -1) == self._group_of.get(receiver, -1)

    def admit(self, sender: str, receiver: str) -> bool:
        """`can_reach`, counting a refusal (``partitioned``)."""
        if self.can_reach(sender, receiver):
            return True
        self._partitioned += 1
        return False

    # -- faults -----------------------------------------------------------------------------

    def set_faults(self, faults: Faults, *, rng: random.Random | None = None) -> None:
        """Apply ``faults`` to every delivery from now on; the rng becomes ``rng`` or, if
        None, ``random.Random(faults.seed)``. Idle links go when no fault is left on, so
        delivery takes the direct path again (busy links keep carrying: nothing overtakes
        a delivery on its way)."""
        self._faults = faults
        self._rng = rng if rng is not None else random.Random(faults.seed)
        if not faults.any:
            for key in [k for k, link in self._links.items() if link.idle]:
                del self._links[key]

    def send(self, sender: str, receiver: str, item: T, now: float) -> None:
        """Put one delivery on the sender→receiver link at time ``now`` (after `admit`):
        the faults are drawn here; `due` hands it over when its time comes."""
        self._sent += 1
        faults, rng = self._faults, self._rng
        if faults.drop and rng.random() < faults.drop:
            self._dropped += 1
            return
        copies = 1
        if faults.duplicate and rng.random() < faults.duplicate:
            self._duplicated += 1
            copies = 2
        link = self._links.get((sender, receiver))
        if link is None:
            link = self._links[(sender, receiver)] = _Link()
        for _ in range(copies):
            self._push(link, item, now)

    def _push(self, link: _Link[T], item: T, now: float) -> None:
        faults = self._faults
        if faults.reorder and link.held is None and self._rng.random() < faults.reorder:
            self._reordered += 1
            link.held = item
            link.held_until = now + faults.reorder_window
            return
        self._queue(link, item, now)
        self._release_held(link, now)

    def _release_held(self, link: _Link[T], now: float) -> None:
        held, link.held = link.held, None
        if held is not None:
            self._queue(link, held, now)

    def _queue(self, link: _Link[T], item: T, now: float) -> None:
        lo, hi = self._faults.delay
        latency = self._rng.uniform(lo, hi) if hi > 0 else 0.0
        due = max(link.last_due, now + latency)
        link.last_due = due
        self._seq += 1
        link.pending.append(_Queued(due, self._seq, item))

    def due(self, now: float) -> list[tuple[str, T]]:
        """Remove and return the deliveries due at ``now`` as ``(receiver, item)``, ordered
        by (due time, send order). Held-back deliveries whose window has passed are
        released first."""
        out: list[_Queued[T]] = []
        receivers: dict[int, str] = {}
        for (_, receiver), link in self._links.items():
            if link.held is not None and link.held_until <= now:
                self._release_held(link, now)
            while link.pending and link.pending[0].due <= now:
                q = link.pending.popleft()
                receivers[q.seq] = receiver
                out.append(q)
        out.sort(key=lambda q: (q.due, q.seq))
        if not self._faults.any:
            for key in [k for k, link in self._links.items() if link.idle]:
                del self._links[key]
        return [(receivers[q.seq], q.item) for q in out]

    def next_due(self) -> float | None:
        """When `due` has something next (a delayed delivery or a held one's release)."""
        best: float | None = None
        for link in self._links.values():
            if link.pending and (best is None or link.pending[0].due < best):
                best = link.pending[0].due
            if link.held is not None and (best is None or link.held_until < best):
                best = link.held_until
        return best

    def forget(self, client_id: str) -> None:
        """Drop every link from or to ``client_id`` with what is on it (a crash, a cut)."""
        for key in [k for k in self._links if client_id in k]:
            del self._links[key]


__all__ = ["FaultNetwork", "Faults", "NetStats"]
