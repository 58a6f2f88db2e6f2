"""Immutable vector clocks: server id → event counter, with the happens-before partial order."""

from __future__ import annotations

import enum
import numbers
from collections.abc import ItemsView, Iterator, Mapping
from typing import Any

from consistency.classes import ConsistencyInputError

MAX_SERVER_ID_LEN = 256
"""Longest server id accepted in a vector clock."""
MAX_COUNTER = (1 << 63) - 1
"""Largest counter (fits a signed 64-bit column)."""
MAX_ENTRIES = 4096
"""Most non-zero entries `VectorClock.from_dict` accepts from untrusted input."""


class Ordering(enum.Enum):
    """How two vector clocks relate: ``a.compare(b)``."""

    BEFORE = "before"
    """``a`` happened before ``b`` (``a < b``)."""
    AFTER = "after"
    """``b`` happened before ``a`` (``a > b``)."""
    EQUAL = "equal"
    CONCURRENT = "concurrent"
    """Neither happened before the other."""


def check_server_id(server: object) -> str:
    """``server`` if it is a well-formed server id (a non-empty printable str of at most
    `MAX_SERVER_ID_LEN` characters), else `ConsistencyInputError`."""
    if type(server) is str and 0 < len(server) <= MAX_SERVER_ID_LEN and server.isprintable():
        return server  # the common case, checked in one line
    if not isinstance(server, str):
        raise ConsistencyInputError(f"server id must be a str, got {type(server).__name__}")
    if not 0 < len(server) <= MAX_SERVER_ID_LEN or not server.isprintable():
        raise ConsistencyInputError(
            f"server id must be 1..{MAX_SERVER_ID_LEN} printable characters, got {server!r}"
        )
    return server


def check_counter(value: object, what: str = "counter") -> int:
    if type(value) is int and 0 <= value <= MAX_COUNTER:
        return value  # the common case (bool is not int here: type(True) is bool)
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ConsistencyInputError(f"{what} must be an int, got {type(value).__name__}")
    counter = int(value)
    if not 0 <= counter <= MAX_COUNTER:
        raise ConsistencyInputError(f"{what} must be in 0..{MAX_COUNTER}, got {counter}")
    return counter


class VectorClock:
    """An immutable vector clock.

    Conceptually a total function from server id to a non-negative counter, zero for every
    server not mentioned; only non-zero entries are stored, so two clocks are equal exactly
    when they agree on every server. ``vc[server]`` is that counter (0 when absent);
    iteration, ``len`` and ``in`` see only the non-zero entries.

    Ordered by happens-before: ``a <= b`` when every counter of ``a`` is at most the same
    counter of ``b``; ``a < b`` when ``a <= b`` and ``a != b``. This is a partial order: for
    concurrent clocks all four comparisons are false. Hashable; safe to share.
    """

    __slots__ = ("_entries", "_hash")

    _entries: dict[str, int]
    _hash: int | None

    def __init__(self, entries: Mapping[str, int] | None = None) -> None:
        clean: dict[str, int] = {}
        if entries is not None:
            if not isinstance(entries, Mapping):
                raise ConsistencyInputError(
                    f"a vector clock is built from a mapping, got {type(entries).__name__}"
                )
            for server, counter in entries.items():
                if type(counter) is int and 0 <= counter <= MAX_COUNTER:
                    value = counter
                else:
                    value = check_counter(counter, f"counter of {server!r}")
                if value:
                    clean[check_server_id(server)] = value
        self._entries = clean
        self._hash = None

    @classmethod
    def _trusted(cls, entries: dict[str, int]) -> VectorClock:
        """Wrap an already-valid dict with no zero entries; the dict must not be mutated after."""
        vc = cls.__new__(cls)
        vc._entries = entries
        vc._hash = None
        return vc

    # -- construction from and to plain data -------------------------------------------------

    @classmethod
    def from_dict(cls, data: object) -> VectorClock:
        """A clock from untrusted plain data (e.g. a decoded bus message): a dict of server id
        → int counter. Raises `ConsistencyInputError` saying what was wrong."""
        if not isinstance(data, dict):
            raise ConsistencyInputError(
                f"a vector clock must be a dict of server id -> counter, got {type(data).__name__}"
            )
        if len(data) > MAX_ENTRIES:
            raise ConsistencyInputError(
                f"a vector clock may have at most {MAX_ENTRIES} entries, got {len(data)}"
            )
        return cls(data)

    def to_dict(self) -> dict[str, int]:
        """The non-zero entries, sorted by server id (a fresh dict)."""
        return dict(sorted(self._entries.items()))

    # -- reading -----------------------------------------------------------------------------

    def __getitem__(self, server: str) -> int:
        return self._entries.get(server, 0)

    def get(self, server: str) -> int:
        """The counter of ``server`` (0 when absent)."""
        return self._entries.get(server, 0)

    def __contains__(self, server: object) -> bool:
        return server in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._entries))

    def __len__(self) -> int:
        return len(self._entries)

    def items(self) -> ItemsView[str, int]:
        """The non-zero ``(server, counter)`` entries (unordered view; do not rely on order)."""
        return self._entries.items()

    def total(self) -> int:
        """Sum of all counters: the number of events this clock covers."""
        return sum(self._entries.values())

    # -- building new clocks -----------------------------------------------------------------

    def increment(self, server: str) -> VectorClock:
        """A copy with ``server``'s counter one higher."""
        check_server_id(server)
        entries = dict(self._entries)
        value = entries.get(server, 0) + 1
        if value > MAX_COUNTER:
            raise ConsistencyInputError(f"counter of {server!r} would overflow")
        entries[server] = value
        return VectorClock._trusted(entries)

    def with_counter(self, server: str, counter: int) -> VectorClock:
        """A copy with ``server``'s counter set to ``counter`` (0 removes the entry)."""
        check_server_id(server)
        value = check_counter(counter)
        entries = dict(self._entries)
        if value:
            entries[server] = value
        else:
            entries.pop(server, None)
        return VectorClock._trusted(entries)

    def trusted_with(self, server: str, counter: int) -> VectorClock:
        """`with_counter` for a server id and a positive counter that were checked already
        (a delivered event's origin and seq): the same clock, without checking them again."""
        entries = dict(self._entries)
        entries[server] = counter
        return VectorClock._trusted(entries)

    def merge(self, other: VectorClock) -> VectorClock:
        """The pointwise maximum (least upper bound) of the two clocks."""
        _check_clock(other)
        if len(other._entries) > len(self._entries):
            small, large = self._entries, other._entries
        else:
            small, large = other._entries, self._entries
        entries = dict(large)
        for server, counter in small.items():
            if counter > entries.get(server, 0):
                entries[server] = counter
        return VectorClock._trusted(entries)

    # -- ordering ----------------------------------------------------------------------------

    def _le(self, other: VectorClock) -> bool:
        theirs = other._entries
        return all(counter <= theirs.get(server, 0) for server, counter in self._entries.items())

    def compare(self, other: VectorClock) -> Ordering:
        """How this clock relates to ``other`` by happens-before."""
        _check_clock(other)
        le, ge = self._le(other), other._le(self)
        if le and ge:
            return Ordering.EQUAL
        if le:
            return Ordering.BEFORE
        if ge:
            return Ordering.AFTER
        return Ordering.CONCURRENT

    def happens_before(self, other: VectorClock) -> bool:
        """``self < other``: every counter ``<=`` and the clocks differ."""
        _check_clock(other)
        return self._le(other) and self._entries != other._entries

    def concurrent(self, other: VectorClock) -> bool:
        """Neither clock happened before the other, and they differ."""
        return self.compare(other) is Ordering.CONCURRENT

    def __le__(self, other: object) -> bool:
        if not isinstance(other, VectorClock):
            return NotImplemented
        return self._le(other)

    def __ge__(self, other: object) -> bool:
        if not isinstance(other, VectorClock):
            return NotImplemented
        return other._le(self)

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, VectorClock):
            return NotImplemented
        return self.happens_before(other)

    def __gt__(self, other: object) -> bool:
        if not isinstance(other, VectorClock):
            return NotImplemented
        return other.happens_before(self)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, VectorClock):
            return NotImplemented
        return self._entries == other._entries

    def __hash__(self) -> int:
        if self._hash is None:
            self._hash = hash(frozenset(self._entries.items()))
        return self._hash

    def __repr__(self) -> str:
        return f"VectorClock({self.to_dict()!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (VectorClock, (self.to_dict(),))


def _check_clock(other: object) -> None:
    if not isinstance(other, VectorClock):
        raise ConsistencyInputError(f"expected a VectorClock, got {type(other).__name__}")
