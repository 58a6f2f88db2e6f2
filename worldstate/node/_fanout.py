"""`Fanout`: hands what other servers change to the open `updates()` streams."""

from __future__ import annotations

import logging
from collections.abc import Callable

from regions import RegionKey
from worldstate.errors import WorldStateError
from worldstate.updates import Update, UpdateStream

__all__ = ["Fanout"]

log = logging.getLogger("worldstate.fanout")


class Fanout:
    """The set of open update streams of one world, and the one way to feed them."""

    def __init__(self) -> None:
        self._streams: set[UpdateStream] = set()
        self._failed: WorldStateError | None = None
        self._listeners: list[Callable[[], None]] = []

    def on_change(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` when a stream opens or closes (the interest subscriptions
        follow the streams' interests)."""
        self._listeners.append(callback)

    def _changed(self) -> None:
        for cb in list(self._listeners):
            try:
                cb()
            except Exception:  # a listener bug must not break opening or closing a stream
                log.exception("a stream-change listener failed")

    def interests(self) -> list[frozenset[RegionKey] | None]:
        """The region sets of the open streams (None: a stream of the whole world)."""
        return [s.keys for s in self._streams if not s.failed]

    def open(self, keys: frozenset[RegionKey] | None, capacity: int) -> UpdateStream:
        stream = UpdateStream(keys, capacity, self._closed)
        if self._failed is not None:
            stream.fail(self._failed)
        else:
            self._streams.add(stream)
            self._changed()
        return stream

    def _closed(self, stream: UpdateStream) -> None:
        if stream in self._streams:
            self._streams.discard(stream)
            self._changed()

    def publish(self, region: RegionKey | None, update: Update) -> None:
        """Hand ``update`` to every stream interested in ``region`` (None: world-wide)."""
        ended = False
        for s in list(self._streams):
            if s.wants(region):
                s.put(update)
                if s.failed:  # overloaded: it hears nothing more, so neither need we
                    self._streams.discard(s)
                    ended = True
        if ended:
            self._changed()

    def fail_all(self, error: WorldStateError, *, final: bool = True) -> None:
        """End every open stream with ``error``; with ``final`` (the world closed or
        crashed) every later one too. Not ``final`` (a transient loss of the bus): the
        streams open now end, since they may have missed updates, but later ones open
        normally and hear everything again once the bus is back."""
        if final and self._failed is None:
            self._failed = error
        for s in list(self._streams):
            s.fail(error)
        if self._streams:
            self._streams.clear()
            self._changed()

    def __len__(self) -> int:
        return len(self._streams)
