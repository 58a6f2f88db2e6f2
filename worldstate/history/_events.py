"""The durable causal log (``ws_events``), read back in causal order.

Linearisation
-------------
The log holds each origin's events numbered 1, 2, 3, … with the delivered clock (``deps``)
each was emitted at. `read_events` yields the selected events in ONE deterministic order
that respects causality: repeatedly, among the next unread event of every origin, take the
*ready* ones — those no other origin's next event precedes (``next.seq <= deps[origin]``)
— and yield the one with the smallest ``(hlc, origin)`` (the op's hybrid logical clock at
emission, then the origin id). The order depends only on the set of events, never on how
they were read, so every reader of the same log (a PostgreSQL copy, a SQLite export) sees
the same sequence; it is a topological order of happens-before, so a consumer applying
events in it never sees an effect before its cause. Filters (stream, region) select a
subset and order it the same way.

Bounded memory: each origin is read in pages in seq order (keyset on the primary key);
only a page per origin is held. The upper bound is fixed at the start (each origin's head
then, or ``until``), which makes the set read causally closed: an event in it depends only
on events in it or before ``since``.

Resume points are `Cursor` s; a cursor the log was pruned past raises `CursorExpired`
(see `worldstate.history._retention`).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import orjson
from sqlalchemy import and_, func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from consistency import CausalEvent, VectorClock
from regions import RegionKey
from worldstate.errors import CursorExpired, ValidationError
from worldstate.operations import Operation
from worldstate.protocol import _causal as wire
from worldstate.store import Store
from worldstate.store import schema as s
from worldstate.store.event_log import GLOBAL_REGION
from worldstate.updates import CausalDelivery, Cursor

PAGE = 1000
"""Events read per origin per statement."""

PRUNED_META = "events_pruned"


@dataclass(frozen=True, slots=True)
class Watermark:
    """How far the log was pruned: every event of ``origin`` with seq <= ``seqs[origin]``
    may be gone; ``before`` is the newest time of a pruned event (a resume from a time at
    or before it would miss events)."""

    seqs: Mapping[str, int]
    before: float

    @classmethod
    def parse(cls, doc: object) -> Watermark:
        if not isinstance(doc, dict):
            return cls({}, 0.0)
        seqs = doc.get("seqs") if isinstance(doc.get("seqs"), dict) else {}
        return cls(
            {str(k): int(v) for k, v in (seqs or {}).items()}, float(doc.get("before") or 0.0)
        )

    def to_json(self) -> dict[str, Any]:
        return {"seqs": dict(self.seqs), "before": self.before}


async def watermark(conn: AsyncConnection) -> Watermark:
    m = s.meta
    v = (await conn.execute(select(m.c.value).where(m.c.name == PRUNED_META))).scalar()
    return Watermark.parse(orjson.loads(v)) if v else Watermark({}, 0.0)


def check_resume(mark: Watermark, since: Cursor | float | None) -> None:
    """`CursorExpired` when events after ``since`` were pruned."""
    if since is None:
        return
    if isinstance(since, Cursor):
        lost = {o: q for o, q in mark.seqs.items() if since.clock.get(o) < q}
        if lost:
            shown = ", ".join(f"{o} up to {q}" for o, q in sorted(lost.items())[:5])
            raise CursorExpired(
                f"the cursor is older than the causal log's retention ({shown} pruned)",
                cursor=str(since),
            )
    elif mark.before and since <= mark.before:
        raise CursorExpired(
            f"since={since:.3f} is older than the causal log's retention (events before "
            f"{mark.before:.3f} were pruned)",
            cursor=since,
        )


def _event_of(body: bytes) -> tuple[VectorClock, int, dict[str, Any]]:
    """Decode a log row's body: its deps, its HLC and its op record. The log is trusted
    (servers wrote it after validating each op): the body is parsed once, the clock taken
    as it is, and the op is not rebuilt (its fields are all a delivery needs)."""
    doc = orjson.loads(body)
    raw = doc.get("d")
    deps = VectorClock._trusted(
        {str(k): int(v) for k, v in raw.items() if v} if isinstance(raw, dict) else {}
    )
    record = doc.get("op") or {}
    hlc = int((record.get("f") or {}).get("hlc") or 0)
    return deps, hlc, record


_IDENTITY = ("op_id", "server_id", "hlc", "priority")


def _field(v: Any) -> Any:
    """A logged field as the operation holds it: lists are tuples, mappings read-only,
    region keys `RegionKey` (what `CausalDelivery.fields` carries live)."""
    if isinstance(v, list):
        return tuple(v)
    if isinstance(v, dict):
        if set(v) == {"__region__"}:
            with contextlib.suppress(TypeError, ValueError):
                return RegionKey(*v["__region__"])
        return MappingProxyType(v)
    return v


def delivery(
    origin: str,
    seq: int,
    region_key: int,
    deps: VectorClock,
    record: Mapping[str, Any],
    cursor: Cursor | None,
) -> CausalDelivery:
    """The `CausalDelivery` of a log row (what a live delivery of it looks like)."""
    region = None if region_key == GLOBAL_REGION else wire.region_of_morton(region_key)
    clock = {**deps.to_dict(), origin: seq}
    raw = record.get("f") or {}
    fields = {k: _field(v) for k, v in raw.items() if k not in _IDENTITY}
    return CausalDelivery(
        region,
        origin,
        seq,
        str(record.get("t") or "?"),
        str(raw.get("op_id", "")),
        MappingProxyType(fields),
        MappingProxyType(clock),
        cursor,
    )


@dataclass(slots=True)
class _Row:
    origin: str
    seq: int
    region_key: int
    at: float
    deps: VectorClock
    hlc: int
    record: dict[str, Any]


class _OriginQueue:
    """One origin's selected events in seq order, read a page at a time."""

    def __init__(self, origin: str, start: int, stop: int) -> None:
        self.origin, self.after, self.stop = origin, start, stop
        self.rows: list[_Row] = []
        self.pos = 0
        self.done = start >= stop

    def head(self) -> _Row | None:
        return self.rows[self.pos] if self.pos < len(self.rows) else None


async def read_events(
    store: Store,
    *,
    stream: str | None = None,
    regions: Iterable[int] | None = None,
    since: Cursor | float | None = None,
    until: Cursor | float | None = None,
    exclude_origin: str | None = None,
    op_types: Mapping[str, type[Operation]] | None = None,
    page: int = PAGE,
) -> AsyncIterator[CausalEvent]:
    """The causal log's events in the linearisation of the module docstring, each a
    `CausalEvent` (``origin``, ``seq``, ``deps``) whose ``payload`` is the `CausalDelivery`
    a live subscriber would have got, with its ``cursor``.

    ``stream``: only `EmitEvent` s of that stream. ``regions``: only events of these
    Morton codes (``-1``: the world-wide stream). ``since``: after a cursor, or at/after a
    time (seconds); ``until``: up to a cursor, or up to a time. ``exclude_origin``: skip
    one origin's events (a server's own, which it never delivers to itself).
    Raises `CursorExpired` (before yielding anything) when ``since`` is older than what the
    log still holds."""
    _ = op_types  # kept for callers: fields come from the trusted log, ops are not rebuilt
    region_set = frozenset(regions) if regions is not None else None
    start_clock = since.clock if isinstance(since, Cursor) else VectorClock()
    e = s.events

    async def bounds(c: AsyncConnection) -> tuple[Watermark, dict[str, int]]:
        mark = await watermark(c)
        rows = await c.execute(select(e.c.origin, func.max(e.c.seq)).group_by(e.c.origin))
        return mark, {str(o): int(q) for o, q in rows}

    mark, heads = await store.run(bounds, "read the causal log's bounds", read=True)
    check_resume(mark, since)
    if isinstance(until, Cursor):
        heads = {o: min(q, until.clock.get(o)) for o, q in heads.items()}
    queues = [
        _OriginQueue(o, start_clock.get(o), q)
        for o, q in sorted(heads.items())
        if o != exclude_origin
    ]
    since_time = since if isinstance(since, (int, float)) else None
    until_time = until if isinstance(until, (int, float)) else None

    async def fill(qu: _OriginQueue) -> None:
        while not qu.done and qu.pos >= len(qu.rows):

            async def body(c: AsyncConnection) -> list[Any]:
                conds = [e.c.origin == qu.origin, e.c.seq > qu.after, e.c.seq <= qu.stop]
                if region_set is not None and len(region_set) <= 512:
                    conds.append(e.c.region_key.in_(sorted(region_set)))
                if since_time is not None:
                    conds.append(e.c.at >= since_time)
                if until_time is not None:
                    conds.append(e.c.at <= until_time)
                q = select(e.c.seq, e.c.region_key, e.c.body, e.c.at).where(and_(*conds))
                return list((await c.execute(q.order_by(e.c.seq).limit(page))).all())

            got = await store.run(body, "read the causal log", read=True)
            if len(got) < page:
                qu.done = True
            if got:
                qu.after = int(got[-1].seq)
            rows: list[_Row] = []
            for r in got:
                rk = int(r.region_key)
                if region_set is not None and rk not in region_set:
                    continue
                deps, hlc, record = _event_of(bytes(r.body))
                if stream is not None and (record.get("f") or {}).get("stream") != stream:
                    continue  # only EmitEvents carry a stream
                rows.append(_Row(qu.origin, int(r.seq), rk, float(r.at), deps, hlc, record))
            qu.rows, qu.pos = rows, 0

    cursor = Cursor(start_clock)
    for qu in queues:
        await fill(qu)
    live = [qu for qu in queues if qu.head() is not None]
    while live:
        heads_now = {qu.origin: qu.head() for qu in live}
        best: _Row | None = None
        best_q: _OriginQueue | None = None
        for qu in live:
            h = heads_now[qu.origin]
            assert h is not None
            if any(
                o != qu.origin
                and (other := heads_now[o]) is not None
                and other.seq <= h.deps.get(o)
                for o in heads_now
            ):
                continue  # another origin's next event precedes it
            if best is None or (h.hlc, h.origin) < (best.hlc, best.origin):
                best, best_q = h, qu
        if best is None or best_q is None:  # cannot happen with a causally closed set
            raise ValidationError("the causal log is not causally consistent")
        cursor = cursor.after(best.origin, best.seq)
        yield CausalEvent(
            best.origin,
            best.seq,
            best.deps,
            delivery(best.origin, best.seq, best.region_key, best.deps, best.record, cursor),
        )
        best_q.pos += 1
        if best_q.head() is None:
            await fill(best_q)
            if best_q.head() is None:
                live.remove(best_q)


__all__ = ["Watermark", "check_resume", "delivery", "read_events", "watermark"]
