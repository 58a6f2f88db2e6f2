"""The one rule set for what callers and the bus hand in: ids, kinds, numbers, data payloads,
object snapshots, per-operation limits and operation registration. Everything passes through
here before anything is written; a failure is a `ValidationError` and no change.

The primitive rules (the id rule, the coordinate/radius/delta magnitude) live in `conflicts`
(``conflicts.id_problem``, ``conflicts.MAX_MAGNITUDE``), which sits below worldstate and
applies them to every candidate it resolves: both layers use the same predicate, so nothing
worldstate accepts can be refused deeper down (where a refusal would fail a whole commit).
Errors of the inner packages (`regions.GeometryError`, `conflicts.ConflictInputError`,
`consistency.ConsistencyInputError`) become `ValidationError` at one seam: `inner` and
`inner_errors` here.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import numbers
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from types import MappingProxyType
from typing import Any, Protocol, TypeVar

import numpy as np
import numpy.typing as npt
import orjson

from conflicts import MAX_ID_LENGTH, MAX_MAGNITUDE, ConflictInputError, id_problem
from consistency import ConsistencyClass, ConsistencyInputError
from regions import Box, GeometryError, RegionKey, WorldBounds, as_vec3
from worldstate.errors import ValidationError
from worldstate.objects import BASE_OBJECT_KINDS, WorldObject
from worldstate.operations import (
    MAX_ITEM_DELTA,
    MAX_KIND_LENGTH,
    ChangeInventory,
    ClaimResource,
    CosmeticEffect,
    ModifyTerrain,
    MoveCreature,
    Operation,
    PickUpItem,
    PlaceStructure,
    SetAutomation,
    SetPowerGrid,
    TransferItems,
)


class OpLimits(Protocol):
    """The settings `check_op_limits` reads (a `worldstate.Config` has them)."""

    @property
    def max_id_length(self) -> int: ...
    @property
    def max_object_data_bytes(self) -> int: ...


class OpRules(OpLimits, Protocol):
    """The settings `check_operation` reads (a `worldstate.Config` has them)."""

    @property
    def max_structure_size(self) -> float: ...


class KindSettings(Protocol):
    """The settings `KindRule.of` reads (a `worldstate.Config` has them)."""

    @property
    def structure_kinds(self) -> tuple[str, ...] | None: ...
    @property
    def extra_object_kinds(self) -> tuple[str, ...]: ...


__all__ = [
    "INT64_MAX",
    "INT64_MIN",
    "MAX_COUNT",
    "MAX_DATA_DEPTH",
    "MAX_ID_LENGTH",
    "MAX_ITEM_DELTA",
    "MAX_KIND_LENGTH",
    "MAX_MAGNITUDE",
    "MAX_OPS_PER_CALL",
    "MAX_SPEED",
    "MAX_STREAM_CAPACITY",
    "KindRule",
    "KindSettings",
    "OpLimits",
    "OpRules",
    "check_data",
    "check_id",
    "check_int",
    "check_kind",
    "check_kind_filter",
    "check_kind_name",
    "check_object",
    "check_op_limits",
    "check_operation",
    "check_ops",
    "check_region_objects",
    "check_registration",
    "check_velocities",
    "geometry",
    "inner",
    "inner_errors",
    "would_overflow",
]


MAX_DATA_DEPTH = 32

INT64_MIN = -(1 << 63)
INT64_MAX = (1 << 63) - 1

MAX_COUNT = INT64_MAX
"""Largest item count an inventory may hold (the store's column is a signed 64-bit int)."""

MAX_OPS_PER_CALL = 100_000
"""Most operations one `submit_many` call takes."""

MAX_SPEED = 10_000.0
"""Largest velocity magnitude (m/s) an eventual move may carry: five 2 km regions a second.
Anything faster is a bug or an attack (a client extrapolating with it would fling the
entity out of the world), not a game; `check_velocities` refuses it."""

MAX_STREAM_CAPACITY = 10_000_000
"""Largest ``capacity`` of one `World.updates` stream."""

_TOPIC_CHARS = frozenset("/+#")

T = TypeVar("T")


def check_id(value: object, name: str, max_length: int = 200) -> str:
    """Return ``value`` if it is a usable id, else raise `ValidationError`.

    The id rule is `conflicts.id_problem` (shared with the conflict resolver): a non-empty
    `str` of at most ``max_length`` (and never more than `MAX_ID_LENGTH`) printable
    characters — no control characters, no separators but the ASCII space (U+00A0 and other
    spaces are refused), no format or private-use characters. Quotes, semicolons and any
    other printable unicode are allowed (SQL always uses bound parameters). ``/``, ``+`` and
    ``#`` are refused too: ids appear in MQTT topic levels.
    """
    problem = id_problem(value, name, max_length)
    if problem is not None:
        raise ValidationError(problem)
    assert isinstance(value, str)
    if "/" in value or "+" in value or "#" in value:
        ch = next(c for c in value if c in _TOPIC_CHARS)
        raise ValidationError(
            f"{name} {value!r:.60} contains a forbidden character {ch!r} "
            "(ids appear in bus topic levels)"
        )
    return value


def check_kind_name(kind: object, name: str = "kind") -> str:
    """A kind is checked like an id: a printable, non-empty `str` of at most
    `MAX_KIND_LENGTH` characters (no control characters)."""
    problem = id_problem(kind, name, MAX_KIND_LENGTH)
    if problem is not None:
        raise ValidationError(problem)
    assert isinstance(kind, str)
    return kind


def check_int(value: object, name: str, lo: int = INT64_MIN, hi: int = INT64_MAX) -> int:
    """A plain `int` (numpy integers accepted, bool refused) within ``lo..hi``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValidationError(f"{name} must be an int, got {type(value).__name__}")
    i = int(value)
    if not lo <= i <= hi:
        raise ValidationError(f"{name} must be in [{lo}, {hi}], got {i}")
    return i


def would_overflow(count: int, delta: int) -> bool:
    """True when adding ``delta`` to an item ``count`` would leave ``0..MAX_COUNT`` upward
    (the strong commit turns that into a `Rejected` with a reason; below zero is its own
    rule)."""
    return count + delta > MAX_COUNT


# -- the seam for the inner packages' errors ---------------------------------------------------

_INNER_ERRORS = (GeometryError, ConflictInputError, ConsistencyInputError)


@contextmanager
def inner_errors() -> Iterator[None]:
    """Re-raise an inner package's input error (`regions.GeometryError`,
    `conflicts.ConflictInputError`, `consistency.ConsistencyInputError`) as
    `ValidationError` with the same message. The one seam: every public call that hands
    caller input to those packages does it through here (or `inner`/`geometry`)."""
    try:
        yield
    except ValidationError:
        raise
    except _INNER_ERRORS as e:
        raise ValidationError(str(e)) from None


def inner(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Call a `regions`, `conflicts` or `consistency` function, translating its input error
    into `ValidationError` (see `inner_errors`; a plain ``try``: this runs for every op)."""
    try:
        return fn(*args, **kwargs)
    except ValidationError:
        raise
    except _INNER_ERRORS as e:
        raise ValidationError(str(e)) from None


def geometry(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Call a `regions` function, turning its `GeometryError` into `ValidationError` (the
    untyped form of `inner`, kept for its many call sites)."""
    try:
        return fn(*args, **kwargs)
    except ValidationError:
        raise
    except _INNER_ERRORS as e:
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


def check_data_limits(data: Mapping[str, Any], name: str, max_bytes: int) -> None:
    """What `check_data` checks of a mapping, without building the normalised copy it
    returns: `ValidationError` unless ``data`` is JSON-safe and at most ``max_bytes``
    encoded."""
    _check_json(data, name, 0)
    try:
        size = len(orjson.dumps(dict(data)))
    except TypeError as e:
        raise ValidationError(f"{name} is not JSON-serialisable: {e}") from None
    if size > max_bytes:
        raise ValidationError(f"{name} is {size} bytes encoded; the limit is {max_bytes}")


def _check_json(v: object, name: str, depth: int) -> None:
    if depth > MAX_DATA_DEPTH:
        raise ValidationError(f"{name} nests deeper than {MAX_DATA_DEPTH} levels")
    t = type(v)
    if t is str or t is int or t is bool or v is None:
        return  # the common leaves
    if t is float:
        if not math.isfinite(v):  # type: ignore[arg-type]
            raise ValidationError(f"{name} holds a non-finite number {v}")
        return
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


@dataclasses.dataclass(frozen=True, slots=True)
class KindRule:
    """Which object and structure kinds a world accepts (built by `KindRule.of(config)`).

    Every kind is first checked like an id (`check_kind_name`). Then:

    - ``Config.structure_kinds`` not declared (None): the vocabulary is open — every
      well-formed kind is accepted, for placed structures and for stored objects alike (a
      structure of a game's kind lands in its region's snapshot, which must stay storable).
    - declared: a `PlaceStructure` must use one of them (``"structure"``, its default, is
      always allowed), and a stored object's kind must be one of the built-in kinds,
      ``Config.extra_object_kinds`` or the declared structure kinds; any other is refused.
    """

    structure_kinds: frozenset[str] | None = None
    object_kinds: frozenset[str] | None = None
    """None: open (any well-formed kind)."""

    @classmethod
    def of(cls, config: KindSettings) -> KindRule:
        declared = config.structure_kinds
        if declared is None:
            return cls(None, None)
        structures = frozenset(declared) | {"structure"}
        return cls(
            structures, BASE_OBJECT_KINDS | frozenset(config.extra_object_kinds) | structures
        )

    def check_object_kind(self, kind: object, name: str = "object kind") -> str:
        k = check_kind_name(kind, name)
        if self.object_kinds is not None and k not in self.object_kinds:
            raise ValidationError(
                f"unknown {name} {k!r}; known kinds: {', '.join(sorted(self.object_kinds))} "
                "(declare game kinds with Config(structure_kinds=...) or "
                "Config(extra_object_kinds=...))"
            )
        return k

    def check_structure_kind(self, kind: object) -> str:
        k = check_kind_name(kind, "structure kind")
        if self.structure_kinds is not None and k not in self.structure_kinds:
            raise ValidationError(
                f"structure kind {k!r} is not one this world declares "
                f"({', '.join(sorted(self.structure_kinds))}; Config.structure_kinds)"
            )
        return k


def check_kind(kind: object, kinds: KindRule | Iterable[str]) -> str:
    """An object kind: well-formed, and known by ``kinds`` (a `KindRule`, or a closed set)."""
    if isinstance(kinds, KindRule):
        return kinds.check_object_kind(kind)
    known = kinds if isinstance(kinds, (set, frozenset)) else frozenset(kinds)
    return KindRule(None, frozenset(known)).check_object_kind(kind)


def check_kind_filter(kinds: object, rule: KindRule) -> frozenset[str] | None:
    """The ``kinds=`` argument of a query: None (every kind) or an iterable of kinds (not a
    bare string: ``kinds=["wall"]``), each checked by ``rule``."""
    if kinds is None:
        return None
    if isinstance(kinds, (str, bytes, bytearray, Mapping)) or not isinstance(kinds, Iterable):
        raise ValidationError(
            f"kinds must be None or an iterable of kind names (e.g. kinds=['wall']), "
            f"got {type(kinds).__name__}"
        )
    out = []
    for k in itertools.islice(kinds, 1025):
        out.append(rule.check_object_kind(k))
    if len(out) > 1024:
        raise ValidationError("kinds holds more than 1024 kind names")
    return frozenset(out)


def check_object(
    obj: object,
    *,
    bounds: WorldBounds,
    kinds: KindRule | frozenset[str],
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
    kinds: KindRule | frozenset[str],
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
    """Ids well-formed and short enough, data JSON-safe and small enough, a creature's
    velocity at most `MAX_SPEED`."""
    if isinstance(op, MoveCreature):
        check_velocities(np.array([op.velocity], np.float64), "velocity")
    ids, datas = _checked_fields(type(op))
    for name in ids:
        v = getattr(op, name)
        if not (name == "owner" and v == ""):
            check_id(v, name, config.max_id_length)
    for name in datas:
        v = getattr(op, name)
        if isinstance(v, Mapping) and v:
            check_data_limits(v, name, config.max_object_data_bytes)


def check_velocities(values: npt.NDArray[np.float64], name: str = "velocities") -> None:
    """Every row of an ``(N, 3)`` float array finite with magnitude at most `MAX_SPEED`
    (vectorised: one pass of squares and a reduction when all is well)."""
    if not values.size:
        return
    speed2 = np.einsum("ij,ij->i", values, values)  # NaN/inf rows give NaN/inf here
    if bool(speed2.max() <= MAX_SPEED * MAX_SPEED):
        return
    bad = int(np.flatnonzero(~(speed2 <= MAX_SPEED * MAX_SPEED))[0])
    row = values[bad].tolist()
    if not np.isfinite(values[bad]).all():
        raise ValidationError(f"{name}[{bad}] = {row} is not finite")
    raise ValidationError(
        f"{name}[{bad}] = {row} is faster than {MAX_SPEED:g} m/s (worldstate.MAX_SPEED)"
    )


def check_operation(op: Operation, config: OpRules, kinds: KindRule) -> None:
    """Every world-dependent rule for one operation, wherever it comes from (a local
    `submit`, an op forwarded over the bus, a causal event): ids and data (`check_op_limits`),
    the structure kind (`KindRule`) and size (``Config.max_structure_size``). Field types,
    finiteness and magnitudes were checked when the operation was built; its position
    against the world bounds is checked where its region is found."""
    check_op_limits(op, config)
    if isinstance(op, PlaceStructure):
        kinds.check_structure_kind(op.kind)
        size = max(h - lo for lo, h in zip(op.lo, op.hi, strict=True))
        if size > config.max_structure_size:
            raise ValidationError(
                f"structure {op.structure_id!r} is {size:.1f} m across; the limit is "
                f"{config.max_structure_size} m (Config.max_structure_size)"
            )


def check_ops(ops: object) -> list[Any]:
    """The ``ops`` of `submit_many`: an iterable (not a string, mapping or single op) of at
    most `MAX_OPS_PER_CALL` items, as a list (each item is checked as an op later)."""
    if (
        ops is None
        or isinstance(ops, (str, bytes, bytearray, Mapping))
        or not isinstance(ops, Iterable)
    ):
        raise ValidationError(
            f"submit_many takes an iterable of operations, got {type(ops).__name__}"
        )
    items = list(itertools.islice(ops, MAX_OPS_PER_CALL + 1))
    if len(items) > MAX_OPS_PER_CALL:
        raise ValidationError(
            f"submit_many takes at most {MAX_OPS_PER_CALL} operations per call; split the batch"
        )
    return items


def _executable_bases(consistency: ConsistencyClass) -> tuple[type[Operation], ...]:
    if consistency is ConsistencyClass.STRONG:
        return (
            PlaceStructure,
            ClaimResource,
            ModifyTerrain,
            ChangeInventory,
            TransferItems,
            PickUpItem,
        )
    if consistency is ConsistencyClass.EVENTUAL:
        return (MoveCreature, CosmeticEffect, SetAutomation, SetPowerGrid)
    return (Operation,)  # the causal path logs and delivers any operation as an event


def check_registration(
    cls: object, consistency: object, known: Mapping[str, type[Operation]]
) -> ConsistencyClass:
    """Check ``register_operation(cls, consistency)`` before anything is registered; return
    the parsed class. Refused (`ValidationError`):

    - ``cls`` not an `Operation` subclass, or named like another registered type (the bus
      and the causal log name types by class name);
    - a class the chosen path cannot execute: STRONG needs a subclass of a built-in strong
      operation (the commit applies its effect), EVENTUAL a subclass of `MoveCreature`,
      `CosmeticEffect`, `SetAutomation` or `SetPowerGrid`; CAUSAL carries any operation;
    - a consistency that is not a `ConsistencyClass` or one's name.
    """
    if not isinstance(cls, type) or not issubclass(cls, Operation) or cls is Operation:
        raise ValidationError(f"{cls!r} is not an Operation subclass")
    if not dataclasses.is_dataclass(cls):
        raise ValidationError(f"{cls.__name__} must be a dataclass (decorate it like Operation)")
    with inner_errors():
        parsed = ConsistencyClass.parse(consistency)  # type: ignore[arg-type]
    name = cls.__name__
    other = known.get(name)
    if other is not None and other is not cls:
        raise ValidationError(
            f"another operation type is already registered as {name!r} "
            f"({other.__module__}.{other.__qualname__}); operation type names must be unique"
        )
    problem = id_problem(name, "operation type name", MAX_ID_LENGTH)
    if problem is not None:
        raise ValidationError(problem)
    bases = _executable_bases(parsed)
    if not issubclass(cls, bases):
        names = ", ".join(b.__name__ for b in bases)
        raise ValidationError(
            f"{name} cannot be routed {parsed.value.upper()}: that path only executes "
            f"subclasses of {names}; subclass one of them or choose another class"
        )
    return parsed
