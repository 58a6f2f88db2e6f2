"""Causal delivery of broadcast events (Birman-Schiper-Stephenson), as a pure state machine.

Event semantics
---------------
Each origin server numbers its causal events 1, 2, 3, … within one causal stream (the driver
chooses the scope, e.g. one stream per region). A `CausalEvent(origin, seq, deps, payload)`
is the origin's ``seq``-th event, and ``deps`` is the origin's *delivered* clock at the moment
it emitted the event: for every server ``k``, ``deps[k]`` events of ``k`` had been delivered
at the origin (its own earlier events included, so normally ``deps[origin] == seq - 1``;
any ``deps[origin] < seq`` is accepted, FIFO per origin is implied by ``seq`` anyway).
The event's own vector clock is ``deps`` with the origin's entry set to ``seq``
(`CausalEvent.clock`), and ``a`` happened before ``b`` iff ``a.clock < b.clock``.

A receiver whose delivered clock is ``D`` may deliver the event when

    D[origin] == seq - 1   and   deps[k] <= D[k] for every k != origin,

and delivering it sets ``D[origin] = seq``. `CausalBuffer.emit` builds events with exactly
these semantics and delivers them locally at once.

Overflow policy
---------------
At most ``max_pending`` events wait in the buffer. An event that is deliverable on arrival is
always accepted (delivering can only shrink the buffer). An event that would have to wait while
the buffer is full is *dropped and counted* (`CausalBuffer.overflowed`), and its ``(origin,
seq)`` — and its ``deps`` — are still remembered as known to exist, so it shows up in `missing`
and the driver fetches it again from the durable log. Progress is never lost: the causally
earliest undelivered event is always deliverable on arrival, so repair rounds drain the backlog
whatever the bound.

Gaps
----
The receiver knows that event ``(o, s)`` exists when some offered event came from ``o`` with a
seq ``>= s`` or has ``deps[o] >= s``. A gap is a known, undelivered, unbuffered event;
`missing` lists them per origin, with how long the origin has continuously had a gap. Time is
a parameter (``now``, any monotonic seconds the driver uses), never read from a clock here.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from consistency.classes import ConsistencyInputError
from consistency.vector_clock import VectorClock, check_counter, check_server_id

DEFAULT_MAX_PENDING = 10_000


class CausalOrderError(ConsistencyInputError):
    """A causal-stream operation that would break causal order (e.g. emitting while this
    server's own earlier events are known to exist but are not delivered here)."""


@dataclass(frozen=True, slots=True)
class CausalEvent:
    """The ``seq``-th causal event of ``origin``; ``deps`` is the origin's delivered clock when
    it emitted the event (see the module docstring). ``payload`` is opaque here: equality and
    hashing use ``(origin, seq, deps)`` only."""

    origin: str
    seq: int
    deps: VectorClock
    payload: Any = field(default=None, compare=False)

    def __post_init__(self) -> None:
        check_server_id(self.origin)
        seq = check_counter(self.seq, "seq")
        if seq < 1:
            raise ConsistencyInputError(f"seq must be >= 1, got {seq}")
        object.__setattr__(self, "seq", seq)
        if not isinstance(self.deps, VectorClock):
            raise ConsistencyInputError(
                f"deps must be a VectorClock, got {type(self.deps).__name__}"
            )
        if self.deps[self.origin] >= seq:
            raise ConsistencyInputError(
                f"event {self.origin}:{seq} cannot depend on its own seq "
                f"{self.deps[self.origin]} (deps[origin] must be < seq)"
            )

    @classmethod
    def trusted(cls, origin: str, seq: int, deps: VectorClock, payload: Any = None) -> CausalEvent:
        """An event from parts the caller has already validated exactly as the constructor
        would (a well-formed origin, an int ``seq >= 1``, a `VectorClock` with ``deps[origin]
        < seq``): the same event, without checking them again (a receiver that validated a
        whole message builds thousands of these a second)."""
        event = object.__new__(cls)
        object.__setattr__(event, "origin", origin)
        object.__setattr__(event, "seq", seq)
        object.__setattr__(event, "deps", deps)
        object.__setattr__(event, "payload", payload)
        return event

    @property
    def key(self) -> tuple[str, int]:
        """``(origin, seq)``: identifies the event within its stream."""
        return self.origin, self.seq

    @property
    def clock(self) -> VectorClock:
        """The event's own vector clock: ``deps`` with the origin's entry set to ``seq``."""
        return self.deps.with_counter(self.origin, self.seq)

    def happens_before(self, other: CausalEvent) -> bool:
        return self.clock.happens_before(other.clock)

    def to_dict(self) -> dict[str, Any]:
        """Plain data for the wire/log: ``{"origin", "seq", "deps", "payload"}``."""
        return {
            "origin": self.origin,
            "seq": self.seq,
            "deps": self.deps.to_dict(),
            "payload": self.payload,
        }

    @classmethod
    def from_dict(cls, data: object) -> CausalEvent:
        """An event from untrusted plain data (the inverse of `to_dict`); the payload is passed
        through unchecked. Raises `ConsistencyInputError` saying what was wrong."""
        if not isinstance(data, dict):
            raise ConsistencyInputError(f"a causal event must be a dict, got {type(data).__name__}")
        missing = {"origin", "seq", "deps"} - data.keys()
        if missing:
            raise ConsistencyInputError(f"causal event lacks {sorted(missing)}")
        extra = data.keys() - {"origin", "seq", "deps", "payload"}
        if extra:
            names = sorted(map(str, extra))
            raise ConsistencyInputError(f"causal event has unknown fields {names}")
        return cls(
            origin=data["origin"],
            seq=data["seq"],
            deps=VectorClock.from_dict(data["deps"]),
            payload=data.get("payload"),
        )


@dataclass(frozen=True, slots=True)
class Gap:
    """Events of one origin that this receiver knows exist but has neither delivered nor
    buffered.

    ``holes`` are the exact missing seqs as ascending, disjoint ranges; ``seqs`` is the one
    range covering them all (lowest missing .. highest missing), convenient for a single
    log-range fetch (already buffered events it returns are dropped as duplicates).
    ``since`` is when the origin's gap was first seen (the ``now`` of the offer or query that
    first saw it), ``age = now - since`` as of the query.
    """

    origin: str
    holes: tuple[range, ...]
    since: float
    age: float

    @property
    def seqs(self) -> range:
        return range(self.holes[0].start, self.holes[-1].stop)

    @property
    def count(self) -> int:
        return sum(len(r) for r in self.holes)

    def __contains__(self, seq: object) -> bool:
        return any(seq in r for r in self.holes)


def _check_now(now: object) -> float:
    if type(now) is float and math.isfinite(now):
        return now  # the common case (a loop's monotonic time)
    if isinstance(now, bool) or not isinstance(now, numbers.Real) or not math.isfinite(now):
        raise ConsistencyInputError(f"now must be a finite number of seconds, got {now!r}")
    return float(now)


class CausalBuffer:
    """Causal delivery at one receiver (see the module docstring for the exact semantics).

    Feed every received event to `offer`; it returns the events that became deliverable, in a
    causal order (each one's dependencies precede it). Duplicates — already delivered or
    already buffered — are dropped and counted, so at-least-once broadcast and overlapping
    log repair are harmless. Pure: no I/O, no clock, not thread-safe.
    """

    __slots__ = (
        "_buffer",
        "_delivered",
        "_delivered_vc",
        "_duplicates",
        "_gap_since",
        "_known",
        "_max_pending",
        "_overflowed",
        "_pending",
        "_self_id",
    )

    def __init__(
        self,
        self_id: str,
        *,
        max_pending: int = DEFAULT_MAX_PENDING,
        delivered: VectorClock | None = None,
    ) -> None:
        """``self_id``: this server's id (the origin of events it `emit`s).
        ``max_pending``: most events buffered while waiting for dependencies (>= 1).
        ``delivered``: start from this delivered clock, as `seed` does."""
        self._self_id = check_server_id(self_id)
        if isinstance(max_pending, bool) or not isinstance(max_pending, int) or max_pending < 1:
            raise ConsistencyInputError(f"max_pending must be an int >= 1, got {max_pending!r}")
        self._max_pending = max_pending
        self._delivered: dict[str, int] = {}
        self._delivered_vc: VectorClock | None = None
        self._known: dict[str, int] = {}
        self._buffer: dict[str, dict[int, CausalEvent]] = {}
        self._pending = 0
        self._duplicates = 0
        self._overflowed = 0
        self._gap_since: dict[str, float] = {}
        if delivered is not None:
            self.seed(delivered)

    # -- state -------------------------------------------------------------------------------

    @property
    def self_id(self) -> str:
        return self._self_id

    @property
    def max_pending(self) -> int:
        return self._max_pending

    @property
    def delivered(self) -> VectorClock:
        """How many events of each origin have been delivered here (a prefix per origin)."""
        if self._delivered_vc is None:
            self._delivered_vc = VectorClock._trusted(dict(self._delivered))
        return self._delivered_vc

    @property
    def known(self) -> VectorClock:
        """The highest seq of each origin known to exist (delivered, buffered or referenced)."""
        return VectorClock._trusted(dict(self._known))

    @property
    def duplicates(self) -> int:
        """Offered events dropped because they were already delivered or buffered."""
        return self._duplicates

    @property
    def overflowed(self) -> int:
        """Offered events dropped because the buffer was full (they stay in `missing`)."""
        return self._overflowed

    def pending(self) -> int:
        """Events buffered, waiting for their dependencies."""
        return self._pending

    def buffered(self) -> list[CausalEvent]:
        """The buffered events, by origin then seq (a copy, for inspection)."""
        return [q[s] for o in sorted(self._buffer) for q in (self._buffer[o],) for s in sorted(q)]

    # -- emitting and receiving --------------------------------------------------------------

    def emit(self, payload: Any = None) -> CausalEvent:
        """A new event of this server, depending on everything delivered here so far; it is
        delivered locally at once (its echo from the bus will be dropped as a duplicate).

        Raises `CausalOrderError` when earlier events of this server are known to exist but
        are not delivered here (after a restart: `seed` from the log first), since a new event
        would reuse their seqs.
        """
        me = self._self_id
        done = self._delivered.get(me, 0)
        if self._known.get(me, 0) > done:
            raise CausalOrderError(
                f"events {me}:{done + 1}..{self._known[me]} exist but are not delivered here; "
                "seed this buffer from the durable log before emitting"
            )
        event = CausalEvent(me, done + 1, self.delivered, payload)
        self._deliver(event)
        return event

    def offer(self, event: CausalEvent, *, now: float | None = None) -> list[CausalEvent]:
        """Receive one event; return every event that became deliverable (this one and any
        buffered ones it unblocks), in causal order. May return ``[]`` (buffered, duplicate, or
        dropped on overflow). ``now``, when given, timestamps any gap this event reveals;
        otherwise the gap is timestamped by the next `missing`/`oldest_gap_age` call.
        """
        if not isinstance(event, CausalEvent):
            raise ConsistencyInputError(f"expected a CausalEvent, got {type(event).__name__}")
        when = None if now is None else _check_now(now)
        origin, seq = event.origin, event.seq
        delivered = self._delivered
        # the common case: nothing waits and the event is next from its origin with its
        # dependencies delivered. It is delivered alone (nothing buffered to unblock) and
        # reveals no other origin's events (each dep is at most what is delivered, hence
        # known), so only its own origin's gap can change.
        if (
            not self._buffer
            and seq == delivered.get(origin, 0) + 1
            and all(
                counter <= delivered.get(server, 0)
                for server, counter in event.deps.items()
                if server != origin
            )
        ):
            self._deliver(event)
            if self._known.get(origin, 0) <= seq:
                self._gap_since.pop(origin, None)
            elif when is not None and origin not in self._gap_since:
                self._gap_since[origin] = when
            return [event]
        touched = self._learn(event)
        queue = self._buffer.get(origin)
        if seq <= self._delivered.get(origin, 0) or (queue is not None and seq in queue):
            self._duplicates += 1
            self._refresh_gaps(touched, when)
            return []
        out: list[CausalEvent] = []
        if self._deliverable(event):
            self._deliver(event)
            out.append(event)
            self._drain(out)
        elif self._pending >= self._max_pending:
            self._overflowed += 1
        else:
            self._buffer.setdefault(origin, {})[seq] = event
            self._pending += 1
        touched.update(e.origin for e in out)
        self._refresh_gaps(touched, when)
        return out

    def offer_many(
        self, events: Iterable[CausalEvent], *, now: float | None = None
    ) -> list[CausalEvent]:
        """`offer` each event in turn; all deliveries, in causal order."""
        out: list[CausalEvent] = []
        for event in events:
            out.extend(self.offer(event, now=now))
        return out

    def seed(self, delivered: VectorClock, *, now: float | None = None) -> list[CausalEvent]:
        """Treat everything up to ``delivered`` as delivered (merged with the current clock;
        the clock never goes back): after restoring state from a snapshot or the log. Buffered
        events now covered are discarded; returns the buffered events that became
        deliverable, in causal order."""
        if not isinstance(delivered, VectorClock):
            raise ConsistencyInputError(f"seed takes a VectorClock, got {type(delivered).__name__}")
        when = None if now is None else _check_now(now)
        touched: set[str] = set()
        for origin, count in delivered.items():
            if count > self._delivered.get(origin, 0):
                self._delivered[origin] = count
                touched.add(origin)
                if count > self._known.get(origin, 0):
                    self._known[origin] = count
                queue = self._buffer.get(origin)
                if queue:
                    for s in [s for s in queue if s <= count]:
                        del queue[s]
                        self._pending -= 1
                    if not queue:
                        del self._buffer[origin]
        if touched:
            self._delivered_vc = None
        out: list[CausalEvent] = []
        self._drain(out)
        touched.update(e.origin for e in out)
        self._refresh_gaps(touched, when)
        return out

    # -- gaps --------------------------------------------------------------------------------

    def missing(self, now: float) -> dict[str, Gap]:
        """Per origin, the events known to exist but neither delivered nor buffered, with how
        long that origin has had a gap. Empty when nothing is known to be missing."""
        when = _check_now(now)
        result: dict[str, Gap] = {}
        for origin in sorted(self._known):
            holes = self._holes(origin)
            if not holes:
                self._gap_since.pop(origin, None)
                continue
            since = self._gap_since.setdefault(origin, when)
            result[origin] = Gap(origin, holes, since, max(0.0, when - since))
        return result

    def oldest_gap_age(self, now: float) -> float:
        """Age in seconds of the oldest current gap (0.0 when there is none)."""
        return max((g.age for g in self.missing(now).values()), default=0.0)

    # -- internals ---------------------------------------------------------------------------

    def _learn(self, event: CausalEvent) -> set[str]:
        known = self._known
        touched = {event.origin}
        if event.seq > known.get(event.origin, 0):
            known[event.origin] = event.seq
        for server, counter in event.deps.items():
            if counter > known.get(server, 0):
                known[server] = counter
                touched.add(server)
        return touched

    def _deliverable(self, event: CausalEvent) -> bool:
        delivered = self._delivered
        if event.seq != delivered.get(event.origin, 0) + 1:
            return False
        origin = event.origin
        return all(
            counter <= delivered.get(server, 0)
            for server, counter in event.deps.items()
            if server != origin
        )

    def _deliver(self, event: CausalEvent) -> None:
        self._delivered[event.origin] = event.seq
        if event.seq > self._known.get(event.origin, 0):
            self._known[event.origin] = event.seq
        self._delivered_vc = None

    def _drain(self, out: list[CausalEvent]) -> None:
        """Deliver buffered events until none is deliverable, appending them to ``out``."""
        progress = True
        while progress and self._buffer:
            progress = False
            for origin in list(self._buffer):
                queue = self._buffer[origin]
                nxt = self._delivered.get(origin, 0) + 1
                event = queue.get(nxt)
                while event is not None and self._deliverable(event):
                    del queue[nxt]
                    self._pending -= 1
                    self._deliver(event)
                    out.append(event)
                    progress = True
                    nxt += 1
                    event = queue.get(nxt)
                if not queue:
                    del self._buffer[origin]

    def _has_gap(self, origin: str) -> bool:
        # Every buffered seq of ``origin`` lies in (delivered, known], so the origin has a gap
        # exactly when that interval holds more seqs than the buffer does.
        queue = self._buffer.get(origin)
        held = len(queue) if queue else 0
        return self._known.get(origin, 0) - self._delivered.get(origin, 0) > held

    def _holes(self, origin: str) -> tuple[range, ...]:
        if not self._has_gap(origin):
            return ()
        top = self._known[origin]
        start = self._delivered.get(origin, 0) + 1
        holes: list[range] = []
        for s in sorted(self._buffer.get(origin, ())):
            if s > start:
                holes.append(range(start, s))
            start = s + 1
        if start <= top:
            holes.append(range(start, top + 1))
        return tuple(holes)

    def _refresh_gaps(self, origins: Iterable[str], now: float | None) -> None:
        for origin in origins:
            if self._has_gap(origin):
                if now is not None and origin not in self._gap_since:
                    self._gap_since[origin] = now
            else:
                self._gap_since.pop(origin, None)

    def __repr__(self) -> str:
        return (
            f"CausalBuffer(self_id={self._self_id!r}, delivered={self.delivered.to_dict()}, "
            f"pending={self._pending}, duplicates={self._duplicates}, "
            f"overflowed={self._overflowed})"
        )
