"""A fault-injecting wrapper around a store's database connections (a pytest plugin).

`StoreFaults.attach(store)` wraps the engine's COMMIT and adds latency to every statement:

- ``"40003"``: the COMMIT happens, then the client gets SQLSTATE 40003
  (statement_completion_unknown — CockroachDB's "result is ambiguous").
- ``"lost-after"``: the COMMIT happens, then the client sees the connection drop.
- ``"lost-before"``: the connection "drops" before the COMMIT: nothing is committed (the
  transaction is rolled back), and the client cannot tell this case from the one above.

Every ``every``-th COMMIT gets the next kind in ``kinds`` (a fixed cycle, so a run is
reproducible); every statement first waits a seeded random delay in ``latency`` seconds
(awaited on the event loop through SQLAlchemy's greenlet bridge, so other tasks run
meanwhile). The errors are the driver's own (psycopg), raised where the driver would raise
them, so the store's retry and idempotency code sees exactly what a real fault produces.

Use the ``store_faults`` fixture: ``faults = store_faults(every=3)``, then
``faults.attach(world.store)``; everything is detached at the end of the test.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import psycopg
import psycopg.errors
import pytest
from sqlalchemy import event
from sqlalchemy.util import await_only

from worldstate.store import Store

KINDS = ("40003", "lost-after", "lost-before")


class StoreFaults:
    """Ambiguous commits and latency on the stores it is attached to (PostgreSQL or
    CockroachDB engines: the errors are psycopg's)."""

    def __init__(
        self,
        *,
        every: int = 3,
        kinds: Sequence[str] = KINDS,
        latency: tuple[float, float] = (0.0, 0.0),
        seed: int = 0,
    ) -> None:
        if every < 1 or not kinds or any(k not in KINDS for k in kinds):
            raise ValueError(f"every >= 1 and kinds from {KINDS}")
        self.every, self.kinds, self.latency = every, tuple(kinds), latency
        self.enabled = True
        self.commits = 0
        self.injected: Counter[str] = Counter()
        self._rng = random.Random(seed)
        self._undo: list[Callable[[], None]] = []

    def attach(self, store: Store) -> None:
        engine = store.engine.sync_engine
        dialect = engine.dialect
        if dialect.name not in ("postgresql", "cockroachdb"):
            raise ValueError(f"StoreFaults injects psycopg errors; {dialect.name} is not served")
        original = dialect.do_commit

        def do_commit(dbapi_connection: Any) -> None:
            kind = self._next()
            if kind == "lost-before":
                self.injected[kind] += 1
                raise psycopg.OperationalError(
                    "server closed the connection unexpectedly (injected before COMMIT)"
                )
            original(dbapi_connection)
            if kind is None:
                return
            self.injected[kind] += 1
            if kind == "40003":
                raise psycopg.errors.StatementCompletionUnknown(
                    "result is ambiguous (injected after COMMIT)"
                )
            raise psycopg.OperationalError(
                "server closed the connection unexpectedly (injected after COMMIT)"
            )

        dialect.do_commit = do_commit  # type: ignore[method-assign]
        event.listen(engine, "before_cursor_execute", self._delay)

        def undo() -> None:
            dialect.do_commit = original  # type: ignore[method-assign]
            event.remove(engine, "before_cursor_execute", self._delay)

        self._undo.append(undo)

    def detach(self) -> None:
        while self._undo:
            self._undo.pop()()

    def _next(self) -> str | None:
        if not self.enabled:
            return None
        self.commits += 1
        if self.commits % self.every:
            return None
        return self.kinds[(self.commits // self.every - 1) % len(self.kinds)]

    def _delay(self, *_: Any) -> None:
        lo, hi = self.latency
        if self.enabled and hi > 0:
            await_only(asyncio.sleep(self._rng.uniform(lo, hi)))


@pytest.fixture
def store_faults() -> Iterator[Callable[..., StoreFaults]]:
    """A factory of `StoreFaults`; all of them are detached after the test."""
    made: list[StoreFaults] = []

    def make(**kwargs: Any) -> StoreFaults:
        f = StoreFaults(**kwargs)
        made.append(f)
        return f

    yield make
    for f in made:
        f.detach()
