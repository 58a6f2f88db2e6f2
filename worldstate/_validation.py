"""The one rule set for what callers and the bus hand in: ids, kinds, data payloads, object
snapshots and per-operation limits. Everything passes through here before anything is
written; a failure is a `ValidationError` and no change."""

from __future__ import annotations

import dataclasses
import math
import unicodedata
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any, Protocol

import orjson

from regions import Box, GeometryError, RegionKey, WorldBounds, as_vec3
from worldstate.errors import ValidationError
from worldstate.objects import BASE_OBJECT_KINDS, WorldObject
from worldstate.operations import Operation


class OpLimits(Protocol):
    """The settings `check_op_limits` reads (a `worldstate.Config` has them)."""

    @property
    def max_id_length(self) -> int: ...
    @property
    def max_object_data_bytes(self) -> int: ...


MAX_DATA_DEPTH = 32


def check_id(value: object, name: str, max_length: int = 200) -> str:
    """Return ``value`` if it is a usable id, else raise `ValidationError`.

    Ids are stored and compared literally: quotes, semicolons and any printable unicode are
    allowed (SQL always uses bound parameters). Refused: non-strings, empty strings, strings
    longer than ``max_length`` characters, and control characters (which break logs, MQTT
    topics and terminal output). ``/``, ``+`` and ``#`` are refused too: ids appear in MQTT
    topic levels.
    """
    if not isinstance(value, str):
        raise ValidationError(f"{name} must be a str, got {type(value).__name__}")
    if not value:
        raise ValidationError(f"{name} must not be empty")
    if len(value) > max_length:
        raise ValidationError(f"{name} is {len(value)} characters long; the limit is {max_length}")
    for ch in value:
        if ch in "/+#" or unicodedata.category(ch) in ("Cc", "Cs"):
            raise ValidationError(f"{name} {value!r:.60} contains a forbidden character {ch!r}")
    return value


def geometry(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Call a `regions` function, turning its `GeometryError` into `ValidationError`."""
    try:
        return fn(*args, **kwargs)
    except GeometryError as e:
        raise ValidationError(str(e)) from None


def check_data(data: object, name: str, max_bytes: int) -> Mapping[str, Any]:
    """A JSON-serialisable mapping with str keys, finite numbers, bounded depth and size."""
    if not isinstance(data, Mapping):
        raise ValidationError(f"{name} must be a mapping, got {type(data).__name__}")
    _check_json(data, name, 0)
    try:
        encoded = orjson.dumps(dict(data))
    except TypeError as e:
        raise ValidationError(f"{name} is not JSON-serialisable: {e}") from None
    if len(encoded) > max_bytes:
        raise ValidationError(f"{name} is {len(encoded)} bytes encoded; the limit is {max_bytes}")
    return MappingProxyType(orjson.loads(encoded)) if data else MappingProxyType({})


def _check_json(v: object, name: str, depth: int) -> None:
    if depth > MAX_DATA_DEPTH:
        raise ValidationError(f"{name} nests deeper than {MAX_DATA_DEPTH} levels")
    if isinstance(v, Mapping):
        for k, x in v.items():
            if not isinstance(k, str):
                raise ValidationError(f"{name} keys must be str, got {type(k).__name__}")
            _check_json(x, name, depth + 1)
    elif isinstance(v, (list, tuple)):
        for x in v:
            _check_json(x, name, depth + 1)
    elif isinstance(v, float) and not math.isfinite(v):
        raise ValidationError(f"{name} holds a non-finite number {v}")
    elif v is not None and not isinstance(v, (str, int, float, bool)):
        raise ValidationError(f"{name} holds a {type(v).__name__}, which is not JSON")


def check_kind(kind: object, kinds: Iterable[str]) -> str:
    known = kinds if isinstance(kinds, (set, frozenset)) else frozenset(kinds)
    if not isinstance(kind, str) or kind not in known:
        raise ValidationError(
            f"unknown object kind {kind!r}; known kinds: {', '.join(sorted(known))} "
            "(add game kinds with Config(extra_object_kinds=...))"
        )
    return kind


def check_object(
    obj: object,
    *,
    bounds: WorldBounds,
    kinds: frozenset[str],
    max_id_length: int,
    max_data_bytes: int,
) -> WorldObject:
    """A validated, normalised copy of ``obj`` (floats, tuples, read-only data)."""
    if not isinstance(obj, WorldObject):
        raise ValidationError(f"expected a WorldObject, got {type(obj).__name__}")
    oid = check_id(obj.id, "object id", max_id_length)
    kind = check_kind(obj.kind, kinds)
    lo = geometry(as_vec3, obj.lo, f"object {oid!r} lo")
    hi = geometry(as_vec3, obj.hi, f"object {oid!r} hi")
    box = geometry(Box, lo, hi)
    geometry(bounds.check_box, box, f"object {oid!r}")
    data = check_data(obj.data, f"object {oid!r} data", max_data_bytes)
    return WorldObject(oid, kind, box.lo, box.hi, data)


def check_region_objects(
    key: RegionKey,
    objects: object,
    *,
    region_size: float,
    bounds: WorldBounds,
    kinds: frozenset[str],
    max_objects: int,
    max_id_length: int,
    max_data_bytes: int,
) -> tuple[WorldObject, ...]:
    """Validate a region's objects: each valid, ids unique, each centred in ``key``."""
    if isinstance(objects, (str, bytes)) or not isinstance(objects, Iterable):
        raise ValidationError("snapshot objects must be a sequence of WorldObject")
    out: list[WorldObject] = []
    seen: set[str] = set()
    lo, hi = key.bounds_for(region_size)
    for o in objects:
        if len(out) >= max_objects:
            raise ValidationError(
                f"region {key} holds more than {max_objects} objects "
                "(Config.max_objects_per_region)"
            )
        v = check_object(
            o,
            bounds=bounds,
            kinds=kinds,
            max_id_length=max_id_length,
            max_data_bytes=max_data_bytes,
        )
        if v.id in seen:
            raise ValidationError(f"object id {v.id!r} appears twice in region {key}")
        seen.add(v.id)
        c = v.center
        if not all(a <= x < b for a, x, b in zip(lo, c, hi, strict=True)):
            raise ValidationError(
                f"object {v.id!r} is centred at {c}, outside region {key} ({lo}..{hi}); "
                "store it in the region that holds its centre"
            )
        out.append(v)
    return tuple(out)


def kinds_of(extra: Iterable[str]) -> frozenset[str]:
    return BASE_OBJECT_KINDS | frozenset(extra)


ID_FIELDS = frozenset(
    {
        "structure_id",
        "resource_id",
        "claimant",
        "inventory_id",
        "item",
        "from_inventory",
        "to_inventory",
        "item_id",
        "picker",
        "stream",
        "to_server",
        "owner",
    }
)
DATA_FIELDS = frozenset({"data", "payload", "state"})


_FIELDS: dict[type[Operation], tuple[tuple[str, ...], tuple[str, ...]]] = {}


def _checked_fields(cls: type[Operation]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    got = _FIELDS.get(cls)
    if got is None:
        names = [f.name for f in dataclasses.fields(cls)]
        got = _FIELDS[cls] = (
            tuple(n for n in names if n in ID_FIELDS),
            tuple(n for n in names if n in DATA_FIELDS),
        )
    return got


def check_op_limits(op: Operation, config: OpLimits) -> None:
    """Ids well-formed and short enough, data JSON-safe and small enough."""
    ids, datas = _checked_fields(type(op))
    for name in ids:
        v = getattr(op, name)
        if not (name == "owner" and v == ""):
            check_id(v, name, config.max_id_length)
    for name in datas:
        v = getattr(op, name)
        if isinstance(v, Mapping) and v:
            check_data(v, name, config.max_object_data_bytes)
