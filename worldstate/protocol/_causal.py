"""The causal path's formats: event bodies (the durable log and the bus share them) and the
two kinds of bus message. Pure: no I/O; everything read is untrusted until it passes here.

Topics, relative to the world's namespace (every server subscribes to ``causal/#``):

- ``causal/events/<origin>`` — one *group* of ``<origin>``'s events, QoS 1 (at-least-once).
  A group is what one append transaction wrote, split into several messages only when it
  exceeds `MAX_MESSAGE_BYTES`.
- ``causal/heads/<origin>`` — ``<origin>``'s highest event seq, QoS 0, every few seconds and
  once more on close: how a receiver learns of events whose message it never got when
  nothing later refers to them (the tail of a stream), so it can fetch them from the log.

Authentication is the bus's: every message travels in the `worldstate.bus.SignedBus`
envelope (per-sender key derived from the world's bus key, MAC over topic and body, sequence
and freshness against replay), and the signing bus lets only the server a
``causal/*/<origin>`` topic names publish there — so a message that reaches this module is
from a server of this world speaking in its own name. (Messages used to carry a second,
per-message HMAC under the world's causal key inside that envelope; it authenticated nothing
the envelope does not, and is gone.) Every event of a message must be the topic's origin's;
with a broker ACL (Mosquitto: ``pattern write <namespace>/causal/+/%c``,
``client_id = server_id``) the broker enforces the naming too.

Event body, JSON, stored as it is in ``ws_events.body`` and embedded as it is in messages::

    {"s": seq, "d": {server: counter, ...}, "r": morton | null, "op": {"t": type, "f": {...}}}

``d`` is the origin's delivered clock when it emitted the event (see
`consistency.causal_buffer`), ``r`` the region's Morton code (null: the world-wide stream),
``op`` the operation record of `worldstate.protocol._ops` (op_id, server_id = origin, hlc, fields).

Group message document: ``{"v": 1, "o": origin, "e": [body, ...]}``. Head message
document: ``{"v": 1, "o": origin, "s": seq}``.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import hmac
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from consistency import CausalEvent, ConsistencyInputError, VectorClock
from consistency.vector_clock import MAX_COUNTER
from regions import RegionKey
from worldstate._validation import check_id
from worldstate.errors import ValidationError
from worldstate.operations import BUILTIN_OPERATIONS, Operation
from worldstate.protocol import _topics as topics
from worldstate.protocol._ops import op_from_dict

WIRE_VERSION = 1
EVENTS_TOPIC = topics.CAUSAL_EVENTS
HEADS_TOPIC = topics.CAUSAL_HEADS
SUBSCRIPTION = topics.every(topics.CAUSAL)

MAX_MESSAGE_BYTES = 512 * 1024
"""Largest group message built or accepted (the bus's own limit is 1 MiB)."""
MAX_EVENTS_PER_MESSAGE = 4096
MAX_HEAD_BYTES = 1024
MAC_BYTES = 32

_BODY_KEYS = frozenset({"s", "d", "r", "op"})
_GROUP_KEYS = frozenset({"v", "o", "e"})
_HEAD_KEYS = frozenset({"v", "o", "s"})

RegionCheck = Callable[[Operation], RegionKey | None]
"""Checks an operation as a local submit would (type routed CAUSAL, ids, data, bounds) and
returns its region; raises `ValidationError`."""


class WireError(ValidationError):
    """A causal message or log body that is malformed or inconsistent; ``reason`` is a short
    tag for the drop counters (``json``, ``structure``, ``version``, ``origin``,
    ``seq``, ``clock``, ``region``, ``op``, ``size``)."""

    def __init__(self, reason: str, detail: str) -> None:
        self.reason = reason
        super().__init__(f"causal message dropped ({reason}): {detail}")


@dataclass(frozen=True, slots=True)
class WireEvent:
    """A decoded causal event: the ``seq``-th of ``origin``, with the delivered clock
    ``deps`` it was emitted at, its region (None: world-wide) and its operation."""

    origin: str
    seq: int
    deps: VectorClock
    region: RegionKey | None
    op: Operation

    @property
    def clock(self) -> VectorClock:
        """The event's own vector clock (``deps`` with ``origin`` set to ``seq``)."""
        return self.deps.with_counter(self.origin, self.seq)

    def causal(self) -> CausalEvent:
        """This event for a `CausalBuffer` (the payload is the event itself). Not checked
        again: a `WireEvent` comes from `decode_event`, which checked everything the
        `CausalEvent` constructor does, or from its origin's own append."""
        return CausalEvent.trusted(self.origin, self.seq, self.deps, self)


@functools.lru_cache(maxsize=65_536)
def morton_of(region: RegionKey) -> int:
    """``region.morton``, remembered (it is computed bit by bit, and every event needs it)."""
    return region.morton


@functools.lru_cache(maxsize=65_536)
def region_of_morton(code: int) -> RegionKey:
    """`RegionKey.from_morton`, remembered (raises `ValueError` for a bad code)."""
    return RegionKey.from_morton(code)


def _plain(v: object) -> object:
    # what orjson does not write by itself, written as `worldstate.protocol._ops` writes it
    if isinstance(v, Mapping):
        return dict(v)
    if isinstance(v, RegionKey):
        return {"__region__": [v.ix, v.iy, v.iz]}
    raise TypeError(f"cannot encode {type(v).__name__}")


def encode_body(seq: int, deps: VectorClock, region: RegionKey | None, op: Operation) -> bytes:
    """The JSON body of one event (stored in the log, embedded in messages). The op record
    is `worldstate.protocol._ops`'s format, written straight by orjson (UUIDs, tuples natively)."""
    return _body(seq, deps.to_dict(), region, op)


_PLAIN_OPS = frozenset(BUILTIN_OPERATIONS)
"""Built-in operation types: frozen dataclasses whose ``__dict__`` holds exactly their
fields, in declaration order (set by the generated ``__init__``; nothing caches into it)."""


def _body(seq: int, deps: dict[str, int], region: RegionKey | None, op: Operation) -> bytes:
    cls = type(op)
    fields = op.__dict__ if cls in _PLAIN_OPS else {n: getattr(op, n) for n in _field_names(op)}
    return orjson.dumps(
        {
            "s": seq,
            "d": deps,
            "r": morton_of(region) if region is not None else None,
            "op": {"t": cls.__name__, "f": fields},
        },
        default=_plain,
        option=orjson.OPT_PASSTHROUGH_DATACLASS,
    )


def body_encoder(
    origin: str, base: VectorClock
) -> Callable[[int, Operation, RegionKey | None], bytes]:
    """``encode(seq, op, region)`` for a run of ``origin``'s events that all depend on
    ``base`` (and on their predecessors): each body's ``d`` is ``base`` with ``origin`` at
    ``seq - 1`` — what `encode_body` writes for ``base.with_counter(origin, seq - 1)``,
    without building a clock per event."""
    template = base.to_dict()

    def encode(seq: int, op: Operation, region: RegionKey | None) -> bytes:
        deps = dict(template)
        if seq > 1:
            deps[origin] = seq - 1
        else:
            deps.pop(origin, None)
        return _body(seq, deps, region, op)

    return encode


def sign(key: bytes, topic: str, document: bytes) -> bytes:
    """``HMAC-SHA256(key, topic NUL document)`` then the document. The causal path no longer
    uses it (the signing bus authenticates its messages); the eventual path's reliable
    delivery (`worldstate.eventual._reliable`) still keys its messages this way."""
    mac = hmac.new(key, topic.encode() + b"\0" + document, hashlib.sha256).digest()
    return mac + document


def verify(key: bytes, topic: str, payload: bytes) -> bytes:
    """The document of a `sign`-ed message, or `WireError` (``auth``)."""
    if len(payload) < MAC_BYTES:
        raise WireError("auth", "message too short to carry a signature")
    document = payload[MAC_BYTES:]
    mac = hmac.new(key, topic.encode() + b"\0" + document, hashlib.sha256).digest()
    if not hmac.compare_digest(mac, payload[:MAC_BYTES]):
        raise WireError("auth", "bad signature: not published by a server of this world")
    return document


def encode_groups(
    origin: str, bodies: Sequence[bytes], max_bytes: int = MAX_MESSAGE_BYTES
) -> list[bytes]:
    """Group message documents carrying ``bodies`` in order: as few as fit ``max_bytes``
    each (one body always fits: bodies are bounded by the op data limit, far below it).
    Published as they are: the signing bus authenticates them."""
    head = b'{"v":%d,"o":%s,"e":[' % (WIRE_VERSION, orjson.dumps(origin))
    out: list[bytes] = []
    chunk: list[bytes] = []
    size = len(head) + 2
    for body in bodies:
        if chunk and (size + len(body) + 1 > max_bytes or len(chunk) >= MAX_EVENTS_PER_MESSAGE):
            out.append(head + b",".join(chunk) + b"]}")
            chunk, size = [], len(head) + 2
        chunk.append(body)
        size += len(body) + 1
    if chunk:
        out.append(head + b",".join(chunk) + b"]}")
    return out


def encode_head(origin: str, seq: int) -> bytes:
    return orjson.dumps({"v": WIRE_VERSION, "o": origin, "s": seq})


def topic_origin(topic: str) -> tuple[str, str] | None:
    """``(kind, origin)`` of a causal topic (kind ``events`` or ``heads``), or None."""
    parts = topic.split("/")
    if len(parts) != 3 or parts[0] != "causal" or parts[1] not in ("events", "heads"):
        return None
    return parts[1], parts[2]


def _loads(payload: bytes, max_bytes: int) -> Any:
    if len(payload) > max_bytes:
        raise WireError("size", f"{len(payload)} bytes; the limit is {max_bytes}")
    try:
        return orjson.loads(payload)
    except orjson.JSONDecodeError as e:
        raise WireError("json", str(e)) from None


def _envelope(doc: object, keys: frozenset[str], origin: str) -> dict[str, Any]:
    if not isinstance(doc, dict) or doc.keys() != keys:
        raise WireError("structure", f"expected an object with keys {sorted(keys)}")
    if doc["v"] != WIRE_VERSION or type(doc["v"]) is not int:
        raise WireError("version", f"unknown version {doc['v']!r:.40}")
    if doc["o"] != origin:
        raise WireError("origin", f"origin {doc['o']!r:.60} does not match the topic's {origin!r}")
    return doc


def check_origin(origin: object) -> str:
    try:
        return check_id(origin, "origin")
    except ValidationError as e:
        raise WireError("origin", str(e)) from None


def decode_group(
    document: bytes,
    origin: str,
    types: Mapping[str, type[Operation]],
    check: RegionCheck,
    *,
    max_bytes: int = MAX_MESSAGE_BYTES,
) -> list[WireEvent]:
    """The events of a group message document published on ``causal/events/<origin>``
    (authenticated by the signing bus); all of them or `WireError` (never half a message)."""
    check_origin(origin)
    doc = _envelope(_loads(document, max_bytes), _GROUP_KEYS, origin)
    events = doc["e"]
    if not isinstance(events, list) or not events:
        raise WireError("structure", "'e' must be a non-empty list of events")
    if len(events) > MAX_EVENTS_PER_MESSAGE:
        raise WireError("size", f"{len(events)} events; the limit is {MAX_EVENTS_PER_MESSAGE}")
    return [decode_event(origin, e, types, check) for e in events]


def decode_body(
    origin: str,
    body: bytes,
    types: Mapping[str, type[Operation]],
    check: RegionCheck,
    *,
    seq: int | None = None,
) -> WireEvent:
    """One event body read from the log (``seq``: the row's, which must match)."""
    event = decode_event(check_origin(origin), _loads(body, MAX_MESSAGE_BYTES), types, check)
    if seq is not None and event.seq != seq:
        raise WireError("seq", f"body says seq {event.seq}, the row {seq}")
    return event


def decode_event(
    origin: str, doc: object, types: Mapping[str, type[Operation]], check: RegionCheck
) -> WireEvent:
    """One event of ``origin`` from decoded JSON; `WireError` if anything is off."""
    if not isinstance(doc, dict) or doc.keys() != _BODY_KEYS:
        raise WireError("structure", f"an event must be an object with keys {sorted(_BODY_KEYS)}")
    seq = doc["s"]
    if type(seq) is not int or not 1 <= seq <= MAX_COUNTER:
        raise WireError("seq", f"seq must be an int in 1..{MAX_COUNTER}, got {seq!r:.40}")
    try:
        deps = VectorClock.from_dict(doc["d"])
    except ConsistencyInputError as e:
        raise WireError("clock", str(e)) from None
    if deps[origin] >= seq:
        raise WireError("clock", f"event {origin}:{seq} depends on its own seq {deps[origin]}")
    r = doc["r"]
    region: RegionKey | None = None
    if r is not None:
        if type(r) is not int:
            raise WireError("region", f"region must be a Morton code or null, got {r!r:.40}")
        try:
            region = region_of_morton(r)
        except ValueError as e:
            raise WireError("region", str(e)) from None
    try:
        op = op_from_dict(doc["op"], types)
    except ValidationError as e:
        raise WireError("op", str(e)) from None
    if op.server_id != origin:
        raise WireError("origin", f"operation of {op.server_id!r:.60} in {origin!r}'s stream")
    try:
        where = check(op)
    except ValidationError as e:
        raise WireError("op", str(e)) from None
    if where != region:
        raise WireError("region", f"event names region {region}, its operation lies in {where}")
    return WireEvent(origin, seq, deps, region, op)


def decode_head(document: bytes, origin: str) -> int:
    """The seq a head message document announces for ``origin``."""
    check_origin(origin)
    doc = _envelope(_loads(document, MAX_HEAD_BYTES), _HEAD_KEYS, origin)
    seq = doc["s"]
    if type(seq) is not int or not 0 <= seq <= MAX_COUNTER:
        raise WireError("seq", f"head seq must be an int in 0..{MAX_COUNTER}, got {seq!r:.40}")
    return seq


_IDENTITY_FIELDS = frozenset({"op_id", "server_id", "hlc", "priority"})


_FIELDS: dict[type[Operation], tuple[tuple[str, ...], tuple[str, ...]]] = {}


def _field_names(op: Operation, own: bool = False) -> tuple[str, ...]:
    cls = type(op)
    names = _FIELDS.get(cls)
    if names is None:
        every = tuple(f.name for f in dataclasses.fields(cls))
        names = _FIELDS[cls] = (every, tuple(n for n in every if n not in _IDENTITY_FIELDS))
    return names[own]


def op_fields(op: Operation) -> dict[str, Any]:
    """The operation's own fields (what `CausalDelivery.fields` carries): every field but
    ``op_id``, ``server_id``, ``hlc`` and ``priority``."""
    return {name: getattr(op, name) for name in _field_names(op, own=True)}


__all__ = [
    "EVENTS_TOPIC",
    "HEADS_TOPIC",
    "MAC_BYTES",
    "MAX_EVENTS_PER_MESSAGE",
    "MAX_MESSAGE_BYTES",
    "SUBSCRIPTION",
    "WIRE_VERSION",
    "RegionCheck",
    "WireError",
    "WireEvent",
    "body_encoder",
    "decode_body",
    "decode_event",
    "decode_group",
    "decode_head",
    "encode_body",
    "encode_groups",
    "encode_head",
    "morton_of",
    "op_fields",
    "region_of_morton",
    "sign",
    "topic_origin",
    "verify",
]
