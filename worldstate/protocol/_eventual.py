"""The eventual path's bus message: one region's batch of entity moves and state changes.

A batch is what one server sends for one region at one tick, on topic
``eventual/{morton}``. It is compact binary, little-endian, with numpy arrays written raw::

    header   40 bytes  struct "<4sBBHqqdII"
             magic b"WSEB", version 1, flags, server-id length (bytes),
             region Morton code, batch HLC, sender wall time (s), rows, state-section bytes
    server   the sender's id, UTF-8, zero-padded to a multiple of 8 bytes
    ids      rows x int64                     entity ids (>= 0)
    hlcs     rows x int64                     only with FLAG_ROW_HLC; else every row has the
                                              batch HLC
    pos      rows x 3 x float64               positions (finite, inside the world and inside
                                              the batch's region)
    vel      rows x 3 x float64               only with FLAG_VELOCITIES; else all zero
    states   state-section bytes of JSON      a list of records
             [kind, op_type, entity_id, hlc, x, y, z, state]

Every array starts on an 8-byte boundary (header and server id are padded), so a receiver
reads them with `numpy.frombuffer` without realignment. The batch HLC is at least every row's
and every state record's HLC: a receiver feeds it to its hybrid clock (which refuses
far-future stamps) and so vouches for the whole batch at once.

`encode_batch` trusts its caller (our own tick) and checks only what it needs to lay the
bytes out; tests use that to forge bad messages. `decode_batch` trusts nothing: any
truncation, padding, wrong count, bad magic or version, unknown flag, negative id, non-finite
or out-of-region position, non-finite or too fast (`worldstate.MAX_SPEED`) velocity,
malformed server id, HLC out of range or above the batch HLC, or
ill-formed state JSON raises `MalformedBatch` (a `ValidationError`, so a `ValueError`) with a
short ``reason`` for the drop counters. It never raises anything else.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from consistency import check_server_id
from consistency.hlc import MAX_TIMESTAMP
from regions import REGION_SIZE, GeometryError, RegionKey, Vec3, WorldBounds
from worldstate._validation import check_id, check_velocities
from worldstate.errors import ValidationError

MAGIC = b"WSEB"
VERSION = 1
FLAG_ROW_HLC = 0x01
"""The batch carries one HLC per row (rows of several local writes in one tick)."""
FLAG_VELOCITIES = 0x02
"""The batch carries velocities (else every velocity is zero)."""
_KNOWN_FLAGS = FLAG_ROW_HLC | FLAG_VELOCITIES

HEADER = struct.Struct("<4sBBHqqdII")
assert HEADER.size % 8 == 0

STATE_KINDS = ("effect", "automation", "power")
"""Kinds of eventual entity state (CosmeticEffect, SetAutomation, SetPowerGrid); also the
object kinds their snapshot objects get."""

INT64_MAX = (1 << 63) - 1
MAX_STATE_DEPTH = 32
DEFAULT_MAX_STATES = 4096
DEFAULT_MAX_STATE_BYTES = 64 * 1024
"""Largest state mapping per record, encoded as JSON (`Config.max_object_data_bytes`)."""
DEFAULT_MAX_STATE_SECTION = 1024 * 1024
MAX_OP_TYPE_LENGTH = 100

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]


class MalformedBatch(ValidationError):
    """A bus message that is not a valid eventual batch; it was refused whole.

    ``reason`` is a short stable word for counters (``truncated``, ``magic``, ``length``,
    ``server_id``, ``hlc``, ``ids``, ``positions``, ``region``, ``velocities``, ``states``,
    ``limits``, ``payload``)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"malformed eventual batch ({reason}): {message}")
        self.reason = reason


@dataclass(frozen=True, slots=True)
class StateRecord:
    """The eventual state of one entity (one CosmeticEffect/SetAutomation/SetPowerGrid write)."""

    kind: str
    """``effect``, ``automation`` or ``power``: which LWW map (and snapshot kind) it is."""
    op_type: str
    """The operation's type name, as `StateChange.op_type` reports it."""
    entity_id: int
    hlc: int
    position: Vec3
    state: Mapping[str, Any]


@dataclass(frozen=True, slots=True, eq=False)
class Batch:
    """A decoded (and fully validated) eventual batch."""

    region: RegionKey
    server_id: str
    hlc: int
    """At least every row's and every state record's HLC."""
    sent_at: float
    """The sender's wall clock when it sent the batch (seconds); for staleness measures only."""
    ids: IntArray
    positions: FloatArray
    hlcs: IntArray | None = None
    """One HLC per row, or None when every row has `hlc`."""
    velocities: FloatArray | None = None
    """None when every velocity is zero."""
    states: tuple[StateRecord, ...] = field(default_factory=tuple)

    def __len__(self) -> int:
        return int(self.ids.size)

    def row_hlcs(self) -> int | IntArray:
        """What `EntityTable.apply_batch_mask` takes: the batch HLC or the per-row array."""
        return self.hlc if self.hlcs is None else self.hlcs


def _pad8(n: int) -> int:
    return (n + 7) & ~7


def encode_states(states: Sequence[StateRecord]) -> bytes:
    """The JSON state section of a batch (empty bytes for no states)."""
    if not states:
        return b""
    return orjson.dumps(
        [
            [
                s.kind,
                s.op_type,
                s.entity_id,
                s.hlc,
                s.position[0],
                s.position[1],
                s.position[2],
                dict(s.state),
            ]
            for s in states
        ]
    )


def encode_batch(
    *,
    server_id: str,
    region: RegionKey | int,
    hlc: int,
    sent_at: float,
    ids: npt.ArrayLike,
    positions: npt.ArrayLike,
    hlcs: npt.ArrayLike | None = None,
    velocities: npt.ArrayLike | None = None,
    states: Sequence[StateRecord] | bytes = (),
) -> bytes:
    """The bytes of one batch. Values are not validated (the receiver does that); only the
    shapes are, so that the layout is what the header says. ``states`` may be given already
    encoded (`encode_states`)."""
    id_arr = np.asarray(ids).astype("<i8", copy=False).reshape(-1)
    n = id_arr.size
    pos = np.asarray(positions).astype("<f8", copy=False).reshape(n, 3)
    flags = 0
    parts: list[bytes] = []
    server = server_id.encode("utf-8")
    morton = region.morton if isinstance(region, RegionKey) else int(region)
    state_bytes = states if isinstance(states, bytes) else encode_states(states)
    parts.append(id_arr.tobytes())
    if hlcs is not None:
        flags |= FLAG_ROW_HLC
        parts.append(np.asarray(hlcs).astype("<i8", copy=False).reshape(n).tobytes())
    parts.append(pos.tobytes())
    if velocities is not None:
        flags |= FLAG_VELOCITIES
        parts.append(np.asarray(velocities).astype("<f8", copy=False).reshape(n, 3).tobytes())
    head = HEADER.pack(
        MAGIC, VERSION, flags, len(server), morton, hlc, sent_at, n, len(state_bytes)
    )
    padding = b"\x00" * (_pad8(len(server)) - len(server))
    return b"".join((head, server, padding, *parts, state_bytes))


def peek_server_id(payload: bytes) -> str | None:
    """The sender id a payload claims, read from the header only (cheap), or None if the
    header is unreadable. For skipping our own echoes before a full decode: it proves
    nothing about the rest of the message."""
    if len(payload) < HEADER.size or payload[:4] != MAGIC:
        return None
    server_len = int.from_bytes(payload[6:8], "little")
    raw = payload[HEADER.size : HEADER.size + server_len]
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None


def decode_batch(
    payload: bytes | bytearray | memoryview,
    *,
    bounds: WorldBounds,
    max_rows: int,
    region_size: float = REGION_SIZE,
    max_states: int = DEFAULT_MAX_STATES,
    max_state_bytes: int = DEFAULT_MAX_STATE_BYTES,
    max_state_section: int = DEFAULT_MAX_STATE_SECTION,
    max_id_length: int = 200,
) -> Batch:
    """Parse and validate a batch; raise `MalformedBatch` on anything wrong (see the module
    docs). The returned arrays are private copies (the payload may be reused)."""
    if not isinstance(payload, (bytes, bytearray, memoryview)):
        raise MalformedBatch("payload", f"payload must be bytes, got {type(payload).__name__}")
    view = memoryview(payload).cast("B")
    size = len(view)
    if size < HEADER.size:
        raise MalformedBatch("truncated", f"{size} bytes is shorter than the header")
    magic, version, flags, server_len, morton, hlc, sent_at, n, state_len = HEADER.unpack_from(
        view, 0
    )
    if magic != MAGIC:
        raise MalformedBatch("magic", "not an eventual batch (bad magic)")
    if version != VERSION:
        raise MalformedBatch("magic", f"unsupported version {version} (this server reads 1)")
    if flags & ~_KNOWN_FLAGS:
        raise MalformedBatch("magic", f"unknown flags {flags:#x}")
    if n > max_rows:
        raise MalformedBatch("limits", f"{n} rows; the limit is {max_rows}")
    if state_len > max_state_section:
        raise MalformedBatch("limits", f"state section of {state_len} bytes is too large")
    row_bytes = 8 + 24
    if flags & FLAG_ROW_HLC:
        row_bytes += 8
    if flags & FLAG_VELOCITIES:
        row_bytes += 24
    expected = HEADER.size + _pad8(server_len) + n * row_bytes + state_len
    if size != expected:
        raise MalformedBatch(
            "truncated" if size < expected else "length",
            f"{size} bytes, but the header describes {expected}",
        )

    offset = HEADER.size
    raw_server = bytes(view[offset : offset + server_len])
    if any(view[offset + server_len : offset + _pad8(server_len)]):
        raise MalformedBatch("length", "non-zero padding after the server id")
    offset += _pad8(server_len)
    try:
        server_id = check_server_id(
            check_id(raw_server.decode("utf-8"), "server id", max_id_length)
        )
    except (UnicodeDecodeError, ValueError) as e:
        raise MalformedBatch("server_id", str(e)) from None

    try:
        region = RegionKey.from_morton(morton)
    except (ValueError, OverflowError) as e:
        raise MalformedBatch("region", f"bad region code {morton}: {e}") from None
    if not 0 <= hlc <= MAX_TIMESTAMP:
        raise MalformedBatch("hlc", f"batch hlc {hlc} is not a valid timestamp")
    if not (math.isfinite(sent_at) and sent_at >= 0):
        raise MalformedBatch("hlc", f"send time {sent_at!r} is not a finite time")

    ids = np.frombuffer(view, "<i8", n, offset).astype(np.int64)
    offset += 8 * n
    if n and int(ids.min()) < 0:
        raise MalformedBatch("ids", "negative entity id")

    hlcs: IntArray | None = None
    if flags & FLAG_ROW_HLC:
        hlcs = np.frombuffer(view, "<i8", n, offset).astype(np.int64)
        offset += 8 * n
        if n and (int(hlcs.min()) < 0 or int(hlcs.max()) > hlc):
            raise MalformedBatch("hlc", "a row hlc is negative or above the batch hlc")

    positions = np.frombuffer(view, "<f8", 3 * n, offset).astype(np.float64).reshape(n, 3)
    offset += 24 * n
    _check_positions(positions, bounds, region, region_size, "positions")

    velocities: FloatArray | None = None
    if flags & FLAG_VELOCITIES:
        velocities = np.frombuffer(view, "<f8", 3 * n, offset).astype(np.float64).reshape(n, 3)
        offset += 24 * n
        try:
            check_velocities(velocities)
        except ValidationError as e:
            raise MalformedBatch("velocities", str(e)) from None

    states: tuple[StateRecord, ...] = ()
    if state_len:
        states = _decode_states(
            bytes(view[offset : offset + state_len]),
            batch_hlc=hlc,
            bounds=bounds,
            region=region,
            region_size=region_size,
            max_states=max_states,
            max_state_bytes=max_state_bytes,
            max_id_length=max_id_length,
        )
    return Batch(region, server_id, hlc, sent_at, ids, positions, hlcs, velocities, states)


def check_points(positions: FloatArray, bounds: WorldBounds, what: str = "positions") -> None:
    """`WorldBounds.check_points` with a fast path: six reductions when all is well (a NaN
    fails the comparisons too), the detailed check only to word the error."""
    if not positions.size:
        return
    if bool((positions.min(axis=0) >= bounds.lo).all()) and bool(
        (positions.max(axis=0) < bounds.hi).all()
    ):
        return
    bounds.check_points(positions, what)
    raise GeometryError(f"{what} are non-finite or outside the world bounds")  # pragma: no cover


def region_cells(positions: FloatArray, size: float) -> FloatArray:
    """``floor(position / size)`` per axis: the region indices `regions.region_keys` and
    `regions.region_of` compute (same division, so the same answer), as floats."""
    cells: FloatArray = np.floor(positions / size)
    return cells


def _check_positions(
    positions: FloatArray, bounds: WorldBounds, region: RegionKey, size: float, what: str
) -> None:
    if not positions.size:
        return
    try:
        check_points(positions, bounds, what)
    except GeometryError as e:
        raise MalformedBatch("positions", str(e)) from None
    cells = region_cells(positions, size)
    want = (region.ix, region.iy, region.iz)
    # every row in the region <=> the per-axis min and max cell are both the region's
    if not (bool((cells.min(axis=0) == want).all()) and bool((cells.max(axis=0) == want).all())):
        raise MalformedBatch("region", f"{what} lie outside the batch's region {region}")


def _decode_states(
    raw: bytes,
    *,
    batch_hlc: int,
    bounds: WorldBounds,
    region: RegionKey,
    region_size: float,
    max_states: int,
    max_state_bytes: int,
    max_id_length: int,
) -> tuple[StateRecord, ...]:
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise MalformedBatch("states", f"state section is not JSON: {e}") from None
    if not isinstance(doc, list) or not doc:
        raise MalformedBatch("states", "state section must be a non-empty JSON list")
    if len(doc) > max_states:
        raise MalformedBatch("limits", f"{len(doc)} state records; the limit is {max_states}")
    out: list[StateRecord] = []
    for i, rec in enumerate(doc):
        if not isinstance(rec, list) or len(rec) != 8:
            raise MalformedBatch("states", f"state record {i} is not an 8-item list")
        kind, op_type, entity_id, hlc, x, y, z, state = rec
        if kind not in STATE_KINDS:
            raise MalformedBatch("states", f"state record {i}: unknown kind {kind!r:.40}")
        try:
            check_id(op_type, "op_type", min(max_id_length, MAX_OP_TYPE_LENGTH))
        except ValidationError as e:
            raise MalformedBatch("states", f"state record {i}: {e}") from None
        if type(entity_id) is not int or not 0 <= entity_id <= INT64_MAX:
            raise MalformedBatch("states", f"state record {i}: bad entity id {entity_id!r:.40}")
        if type(hlc) is not int or not 0 <= hlc <= batch_hlc:
            raise MalformedBatch("hlc", f"state record {i}: hlc {hlc!r:.40} is out of range")
        if not all(type(c) in (int, float) for c in (x, y, z)):
            raise MalformedBatch("states", f"state record {i}: position must be 3 numbers")
        position = (float(x), float(y), float(z))
        if not isinstance(state, dict):
            raise MalformedBatch("states", f"state record {i}: state must be a JSON object")
        _check_json(state, i, 0)
        if len(orjson.dumps(state)) > max_state_bytes:
            raise MalformedBatch("limits", f"state record {i} is over {max_state_bytes} bytes")
        out.append(StateRecord(kind, op_type, entity_id, hlc, position, state))
    _check_positions(
        np.array([s.position for s in out], dtype=np.float64),
        bounds,
        region,
        region_size,
        "state positions",
    )
    return tuple(out)


def _check_json(v: object, i: int, depth: int) -> None:
    if depth > MAX_STATE_DEPTH:
        raise MalformedBatch("states", f"state record {i} nests deeper than {MAX_STATE_DEPTH}")
    if isinstance(v, dict):
        for k, x in v.items():
            if not isinstance(k, str):  # orjson only yields str keys; belt and braces
                raise MalformedBatch("states", f"state record {i} has a non-str key")
            _check_json(x, i, depth + 1)
    elif isinstance(v, list):
        for x in v:
            _check_json(x, i, depth + 1)
    elif isinstance(v, float) and not math.isfinite(v):
        raise MalformedBatch("states", f"state record {i} holds a non-finite number")


__all__ = [
    "FLAG_ROW_HLC",
    "FLAG_VELOCITIES",
    "HEADER",
    "MAGIC",
    "STATE_KINDS",
    "VERSION",
    "Batch",
    "MalformedBatch",
    "StateRecord",
    "check_points",
    "decode_batch",
    "encode_batch",
    "encode_states",
    "peek_server_id",
    "region_cells",
]
