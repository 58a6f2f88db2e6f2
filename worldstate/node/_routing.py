"""`Router`: which operation types exist, which class each goes through, where it lands,
and `prepare` — validate once, stamp once — for every op that enters a server (a local
submit, a forwarded op, an op decoded from the bus)."""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping

from consistency import ConsistencyClass, HybridClock, Registry
from regions import RegionKey, region_of
from worldstate._validation import (
    KindRule,
    check_id,
    check_operation,
    check_registration,
    geometry,
    inner,
    inner_errors,
)
from worldstate.config import Config
from worldstate.errors import ValidationError
from worldstate.operations import BUILTIN_OPERATIONS, Operation

__all__ = [
    "AT_LEAST_ONCE",
    "AT_MOST_ONCE",
    "DELIVERIES",
    "EFFECTIVELY_ONCE",
    "RELIABLE",
    "Prepared",
    "Router",
    "check_delivery",
]

AT_MOST_ONCE = "at-most-once"
"""Fire and forget: what the bus drops stays lost; nothing ever waits."""
AT_LEAST_ONCE = "at-least-once"
"""Acknowledged and redelivered until acknowledged; a receiver may see an op twice."""
EFFECTIVELY_ONCE = "effectively-once"
"""At-least-once plus deduplication by op_id."""
DELIVERIES = (AT_MOST_ONCE, AT_LEAST_ONCE, EFFECTIVELY_ONCE)
RELIABLE = frozenset({AT_LEAST_ONCE, EFFECTIVELY_ONCE})


def check_delivery(delivery: object) -> str:
    if delivery not in DELIVERIES:
        raise ValidationError(f"delivery must be one of {', '.join(DELIVERIES)}, got {delivery!r}")
    return str(delivery)


MAX_REMEMBERED_KEYS = 65_536
_PLAIN_COPY = frozenset(BUILTIN_OPERATIONS)
"""The built-in operations: plain frozen dataclasses, copied by their ``__dict__``
(what `copy.copy` does for them, without its protocol lookups)."""

Prepared = tuple[Operation, ConsistencyClass, RegionKey | None]
"""A validated op stamped with this server's id and HLC, its class, and its region."""


class Router:
    """The operation registry of one server (see the module docs)."""

    def __init__(self, server_id: str, config: Config, hlc: HybridClock) -> None:
        self.server_id = server_id
        self.config = config
        self.hlc = hlc
        self.kinds = KindRule.of(config)
        """The structure and object kinds this world accepts."""
        self.registry = Registry({t: t.default_consistency for t in BUILTIN_OPERATIONS})
        self._op_types: dict[str, type[Operation]] = {t.__name__: t for t in BUILTIN_OPERATIONS}
        self._deliveries: dict[type, str] = {}
        self._class_of: dict[type, ConsistencyClass] = {}
        """Operation type → class, remembered (`check` runs for every op that enters;
        emptied by `register`)."""
        self._keys: dict[tuple[int, int, int], RegionKey] = {}
        """Region indices → the (valid) key, remembered for `region_key_of`'s fast path."""

    @property
    def op_types(self) -> Mapping[str, type[Operation]]:
        """Type name → class, for decoding ops from the bus."""
        return self._op_types

    def check_travels(self, op: Operation, why: str) -> None:
        """`ValidationError` unless ``op``'s type is registered (a built-in, or passed to
        `register`): an op that must cross the bus (forwarded to its owner, or logged as a
        causal event) is decoded by its type name on every other server."""
        cls = type(op)
        if self._op_types.get(cls.__name__) is not cls:
            raise ValidationError(
                f"{cls.__name__} is not a registered operation type, so {why} cannot decode "
                "it: call world.register_operation() for it on every server first"
            )

    def register(
        self,
        cls: type[Operation],
        consistency: ConsistencyClass | str,
        *,
        delivery: str | None = None,
    ) -> None:
        """Route a game-defined operation type (a subclass of a built-in operation, so the
        world knows how to apply it) through ``consistency``, with a delivery guarantee
        (`DELIVERIES`; None: the class's default, see `delivery_of`). A type the chosen path
        cannot execute, or one named like another registered type, is refused here, at
        registration (`worldstate._validation.check_registration`)."""
        parsed = check_registration(cls, consistency, self._op_types)
        if delivery is not None:
            delivery = check_delivery(delivery)
            if parsed is ConsistencyClass.STRONG and delivery != EFFECTIVELY_ONCE:
                raise ValidationError(
                    "strong operations are committed once by op_id: their delivery is "
                    "effectively-once"
                )
            if parsed is ConsistencyClass.CAUSAL and delivery == AT_MOST_ONCE:
                raise ValidationError(
                    "causal operations are logged before they are acknowledged and repaired "
                    "from the log: at-most-once is not offered for them"
                )
        with inner_errors():
            self.registry.register(cls, parsed)
        self._class_of.clear()
        self._op_types[cls.__name__] = cls
        if delivery is not None:
            self._deliveries[cls] = delivery
        else:
            self._deliveries.pop(cls, None)

    def delivery_of(self, op_or_type: object) -> str:
        """The delivery guarantee of an operation (or type): as registered (a subclass
        inherits it), else its class's default — STRONG and CAUSAL effectively-once,
        EVENTUAL at-most-once."""
        cls = op_or_type if isinstance(op_or_type, type) else type(op_or_type)
        for c in cls.__mro__:
            got = self._deliveries.get(c)
            if got is not None:
                return got
        if self.consistency_of(cls) is ConsistencyClass.EVENTUAL:
            return AT_MOST_ONCE
        return EFFECTIVELY_ONCE

    def consistency_of(self, op_or_type: object) -> ConsistencyClass:
        return inner(self.registry.of, op_or_type)

    def region_key_of(self, op: Operation) -> RegionKey | None:
        """The region an operation belongs to (None for non-spatial ones); the position is
        checked against the world bounds."""
        where = op.where()
        if where is None:
            return None
        if type(where) is tuple and len(where) == 3:
            # the common case, without the general checks' conversions and error wrapping:
            # three floats (what operations hold) inside the bounds (NaN and inf fail the
            # comparisons and take the general path, which says what is wrong)
            x, y, z = where
            bounds = self.config.world_bounds
            lo, hi = bounds.lo, bounds.hi
            if (
                type(x) is float
                and type(y) is float
                and type(z) is float
                and lo[0] <= x < hi[0]
                and lo[1] <= y < hi[1]
                and lo[2] <= z < hi[2]
            ):
                size = self.config.region_size
                idx = (math.floor(x / size), math.floor(y / size), math.floor(z / size))
                found = self._keys.get(idx)
                if found is not None:
                    return found
                found = self._region_key_checked(op, where)
                if found is not None and (found.ix, found.iy, found.iz) == idx:
                    if len(self._keys) >= MAX_REMEMBERED_KEYS:
                        self._keys.clear()
                    self._keys[idx] = found
                return found
        return self._region_key_checked(op, where)

    def _region_key_checked(self, op: Operation, where: object) -> RegionKey:
        p = geometry(self.config.world_bounds.check_point, where, f"{op.op_type} position")
        key: RegionKey = geometry(region_of, *p, self.config.region_size)
        return key

    def check(self, op: object) -> tuple[Operation, ConsistencyClass, RegionKey | None]:
        """Validate ``op`` against this world's rules (limits, bounds, registry) without
        stamping it: `ValidationError` if it may not enter."""
        if not isinstance(op, Operation):
            raise ValidationError(f"expected an Operation, got {type(op).__name__}")
        cls = self._class_of.get(type(op))
        if cls is None:
            cls = self.consistency_of(op)
            self._class_of[type(op)] = cls
        key = self.region_key_of(op)
        check_operation(op, self.config, self.kinds)
        return op, cls, key

    def check_received(self, op: object) -> tuple[Operation, ConsistencyClass, RegionKey | None]:
        """`check` for an op that arrived over the bus (forwarded, or in a causal event):
        also its sender's stamp, which a local submit would replace — the ``server_id``
        follows the id rule (the conflict resolver orders by it)."""
        checked, cls, key = self.check(op)
        check_id(checked.server_id, "server_id", self.config.max_id_length)
        return checked, cls, key

    def prepare(self, op: object) -> Prepared:
        """`check` the op, then stamp a copy with this server's id and a fresh HLC."""
        checked, cls, key = self.check(op)
        # the op was validated when built: stamp a copy without validating it again
        if type(checked) in _PLAIN_COPY:
            stamped = object.__new__(type(checked))
            stamped.__dict__.update(checked.__dict__)
        else:
            stamped = copy.copy(checked)
        object.__setattr__(stamped, "server_id", self.server_id)
        object.__setattr__(stamped, "hlc", self.hlc.now())
        return stamped, cls, key
