"""Consistency classes, the routing table from operation type to class, and the input error
every pure part of `consistency` raises.

The operation classes themselves live in `worldstate`; this module only knows them as types
(or type names), so a game can register its own operation types without `consistency`
importing anything upward.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator, Mapping
from typing import Any

MAX_TYPE_NAME_LEN = 256
"""Longest operation type name accepted by `Registry.register`."""


class ConsistencyInputError(ValueError):
    """Bad input to the consistency machinery: a malformed clock, event, batch or routing entry.

    Every error `consistency` raises is one of these (a `ValueError`); `worldstate` surfaces it
    as `worldstate.ValidationError`, or drops and counts the bus message that carried it.
    """


class UnknownOperationType(ConsistencyInputError):
    """No consistency class is registered for an operation type (nor for any of its bases)."""

    def __init__(self, op_type: str) -> None:
        super().__init__(
            f"no consistency class registered for operation type {op_type!r}; register it "
            f"first, e.g. world.register_operation({op_type}, ConsistencyClass.STRONG)"
        )
        self.op_type = op_type

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.op_type,))


class ConsistencyClass(enum.Enum):
    """How an operation travels and what it guarantees (see DESIGN.md, "Consistency classes").

    - ``STRONG``: per-region commit pipeline, linearizable per key, acknowledged = durable.
    - ``CAUSAL``: vector-clocked events delivered in causal order at every receiver.
    - ``EVENTUAL``: applied locally, batched per tick, last-writer-wins by HLC.
    """

    STRONG = "strong"
    CAUSAL = "causal"
    EVENTUAL = "eventual"

    @classmethod
    def parse(cls, value: ConsistencyClass | str) -> ConsistencyClass:
        """A class from itself or from its name/value, case-insensitive (``"strong"``,
        ``"STRONG"``); anything else raises `ConsistencyInputError`."""
        if isinstance(value, cls):
            return value
        if isinstance(value, str):
            try:
                return cls(value.strip().lower())
            except ValueError:
                pass
        choices = ", ".join(repr(c.value) for c in cls)
        raise ConsistencyInputError(
            f"consistency class must be one of {choices} or a ConsistencyClass, got {value!r}"
        )


OpType = type | str
"""An operation type as the registry keys it: the class itself or its name."""


def _type_name(name: str) -> str:
    stripped = name.strip()
    if not stripped or len(stripped) > MAX_TYPE_NAME_LEN or not stripped.isprintable():
        raise ConsistencyInputError(
            f"operation type name must be 1..{MAX_TYPE_NAME_LEN} printable characters, got {name!r}"
        )
    return stripped


def _type_key(op_type: object) -> OpType:
    if isinstance(op_type, type):
        return op_type
    if isinstance(op_type, str):
        return _type_name(op_type)
    raise ConsistencyInputError(
        f"an operation type is a class or a type name, got {type(op_type).__name__}"
    )


class Registry:
    """Routing table: operation type → `ConsistencyClass`.

    Types are registered either as classes or by name. `of` looks an operation (or a type, or a
    type name) up as follows: a class is matched along its MRO, so a subclass of a registered
    operation routes like its base unless registered itself; at each step of the MRO the class
    object is tried first, then its ``__name__`` among names registered as strings. A type
    name is matched against names registered as strings, then against the ``__name__`` of
    registered classes. Registering a type again replaces its class (games may re-route the
    defaults). Each world holds its own copy (`copy`), so registrations never leak between
    worlds.
    """

    __slots__ = ("_by_name", "_by_type")

    def __init__(self, entries: Mapping[OpType, ConsistencyClass | str] | None = None) -> None:
        self._by_type: dict[type, ConsistencyClass] = {}
        self._by_name: dict[str, ConsistencyClass] = {}
        for op_type, consistency in (entries or {}).items():
            self.register(op_type, consistency)

    def register(self, op_type: OpType, consistency: ConsistencyClass | str) -> None:
        """Route ``op_type`` (a class or a type name) to ``consistency``."""
        key = _type_key(op_type)
        cls = ConsistencyClass.parse(consistency)
        if isinstance(key, type):
            self._by_type[key] = cls
        else:
            self._by_name[key] = cls

    def unregister(self, op_type: OpType) -> None:
        """Remove a registration; raises `UnknownOperationType` if there is none."""
        key = _type_key(op_type)
        table: dict[Any, ConsistencyClass] = (
            self._by_type if isinstance(key, type) else self._by_name
        )
        if key not in table:
            raise UnknownOperationType(_display(key))
        del table[key]

    def of(self, op_or_type: object) -> ConsistencyClass:
        """The consistency class of an operation instance, an operation type or a type name.

        Raises `UnknownOperationType` when nothing matches.
        """
        if isinstance(op_or_type, str):
            name = _type_name(op_or_type)
            found = self._lookup_name(name)
            if found is None:
                raise UnknownOperationType(name)
            return found
        cls = op_or_type if isinstance(op_or_type, type) else type(op_or_type)
        for base in cls.__mro__:
            if base in self._by_type:
                return self._by_type[base]
            if base.__name__ in self._by_name:
                return self._by_name[base.__name__]
        raise UnknownOperationType(cls.__name__)

    def _lookup_name(self, name: str) -> ConsistencyClass | None:
        if name in self._by_name:
            return self._by_name[name]
        matches = {c for t, c in self._by_type.items() if t.__name__ == name}
        if len(matches) > 1:
            raise ConsistencyInputError(
                f"operation type name {name!r} is ambiguous: several registered classes of "
                "that name route differently; look it up by class"
            )
        return next(iter(matches), None)

    def __contains__(self, op_or_type: object) -> bool:
        try:
            self.of(op_or_type)
        except ConsistencyInputError:
            return False
        return True

    def copy(self) -> Registry:
        """An independent registry with the same entries."""
        new = Registry()
        new._by_type = dict(self._by_type)
        new._by_name = dict(self._by_name)
        return new

    def __copy__(self) -> Registry:
        return self.copy()

    def __deepcopy__(self, memo: dict[int, Any]) -> Registry:
        return self.copy()

    def items(self) -> Iterator[tuple[OpType, ConsistencyClass]]:
        """Every registration: classes first (in registration order), then names."""
        yield from self._by_type.items()
        yield from self._by_name.items()

    def __len__(self) -> int:
        return len(self._by_type) + len(self._by_name)

    def __repr__(self) -> str:
        inner = ", ".join(f"{_display(k)}: {c.name}" for k, c in self.items())
        return f"Registry({{{inner}}})"


def _display(key: OpType) -> str:
    return key.__qualname__ if isinstance(key, type) else key
