"""`Fanout`: hands what other servers change to the open `updates()` streams."""

from __future__ import annotations

from regions import RegionKey
from worldstate.errors import WorldStateError
from worldstate.updates import Update, UpdateStream

__all__ = ["Fanout"]


class Fanout:
    """The set of open update streams of one world, and the one way to feed them."""

    def __init__(self) -> None:
        self._streams: set[UpdateStream] = set()
        self._failed: WorldStateError | None = None

    def open(self, keys: frozenset[RegionKey] | None, capacity: int) -> UpdateStream:
        stream = UpdateStream(keys, capacity, self._streams.discard)
        if self._failed is not None:
            stream.fail(self._failed)
        else:
            self._streams.add(stream)
        return stream

    def publish(self, region: RegionKey | None, update: Update) -> None:
        """Hand ``update`` to every stream interested in ``region`` (None: world-wide)."""
        for s in list(self._streams):
            if s.wants(region):
                s.put(update)

    def fail_all(self, error: WorldStateError) -> None:
        """End every open stream (and every later one) with ``error``."""
        if self._failed is None:
            self._failed = error
        for s in list(self._streams):
            s.fail(error)
        self._streams.clear()

    def __len__(self) -> int:
        return len(self._streams)
