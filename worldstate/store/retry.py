"""The transaction retry loop: every transaction, retried on serialization failures.

CockroachDB and PostgreSQL (at SERIALIZABLE) both raise SQLSTATE 40001 when a transaction
must be restarted; PostgreSQL also raises 40P01 on deadlock; SQLite reports a busy file.
Those are retried with capped, fully-jittered exponential backoff, ending in an explicit
`StoreUnavailable` ("retries exhausted"). A connection lost mid-transaction is retried
too: the transaction body must be safe to run again, which is why every write carries an
idempotency key (``write_id`` or ``op_id``) that the body checks first — a commit whose
acknowledgement was lost (SQLSTATE 40003 or a dropped connection at COMMIT) is then
recognised on the next attempt instead of being applied twice.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from worldstate.errors import StoreUnavailable
from worldstate.store.diagnosis import permanent_problem
from worldstate.store.engine import READ_OPTION

log = logging.getLogger("worldstate.store")

T = TypeVar("T")

RETRY_SQLSTATES = frozenset({"40001", "40P01", "40003"})


class RetryTransaction(Exception):
    """Raised inside a transaction body to roll back and run it again (e.g. an INSERT …
    ON CONFLICT DO NOTHING that lost a race to a concurrent insert)."""


@dataclass
class RetryStats:
    transactions: int = 0
    retries: int = 0
    exhausted: int = 0
    by_reason: dict[str, int] = field(default_factory=dict)

    def count(self, reason: str) -> None:
        self.retries += 1
        self.by_reason[reason] = self.by_reason.get(reason, 0) + 1


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    attempts: int = 12
    base: float = 0.005
    cap: float = 0.5

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Full jitter: uniform in [0, min(cap, base * 2**attempt)]."""
        r = rng or random
        return r.uniform(0.0, min(self.cap, self.base * (2**attempt)))


def sqlstate_of(err: BaseException) -> str | None:
    orig = getattr(err, "orig", None)
    code = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    return str(code) if code else None


def retry_reason(err: BaseException) -> str | None:
    """Why ``err`` is worth another attempt, or None when it is not."""
    if isinstance(err, RetryTransaction):
        return "conflict"
    if not isinstance(err, DBAPIError):
        return None
    if permanent_problem(err) is not None:
        return None  # a missing database, refused credentials, no schema: fail at once
    code = sqlstate_of(err)
    if code in RETRY_SQLSTATES:
        return code
    if err.connection_invalidated:
        return "connection"
    if isinstance(err, (OperationalError, InterfaceError)):
        text = str(err.orig).lower()
        if "locked" in text or "busy" in text:
            return "sqlite-busy"
        if code is None or code.startswith("08") or code.startswith("57P"):
            return "connection"
    return None


async def transact(
    engine: AsyncEngine,
    body: Callable[[AsyncConnection], Awaitable[T]],
    *,
    policy: RetryPolicy,
    what: str,
    stats: RetryStats | None = None,
    on_retry: Callable[[int, str], None] | None = None,
    read: bool = False,
    write_lock: asyncio.Lock | None = None,
) -> T:
    """Run ``body`` in a transaction, retrying it as described in the module docstring.

    ``read`` marks a read-only body (SQLite then begins DEFERRED). ``write_lock``, when
    given, is held around each write attempt (SQLite: writers in one process queue on it
    rather than in SQLite's sleeping busy handler)."""
    last: BaseException | None = None
    last_reason = ""
    for attempt in range(policy.attempts):
        if stats is not None:
            stats.transactions += 1
        try:
            if write_lock is not None and not read:
                async with write_lock:
                    return await _attempt(engine, body, read)
            return await _attempt(engine, body, read)
        except (DBAPIError, RetryTransaction, OSError) as e:
            reason = "connection" if isinstance(e, OSError) else retry_reason(e)
            if reason is None:
                raise
            last, last_reason = e, reason
            if stats is not None:
                stats.count(reason)
            if on_retry is not None:
                on_retry(attempt, reason)
            log.debug("%s: attempt %d failed (%s); retrying", what, attempt + 1, reason)
            await asyncio.sleep(policy.delay(attempt))
    if stats is not None:
        stats.exhausted += 1
    last_text = str(last).splitlines()[0] if last else ""
    if "too many clients" in last_text or "connection slots" in last_text:
        advice = (
            "the store is up but refuses new connections (too many clients) — lower "
            "Config.pool_size across servers or raise the server's connection limit"
        )
    elif last_reason == "connection":
        advice = (
            "the store is unreachable — check that it runs and the host and port in the store URL"
        )
    else:
        advice = "the store is overloaded — retry later"
    raise StoreUnavailable(
        f"{what}: retries exhausted after {policy.attempts} attempts (last error: "
        f"{type(last).__name__}: {last_text}); {advice}",
        attempts=policy.attempts,
    ) from last


ABANDON_GRACE = 10.0
"""Seconds a transaction whose caller was cancelled may still take to commit or roll back."""


async def _attempt(
    engine: AsyncEngine, body: Callable[[AsyncConnection], Awaitable[T]], read: bool
) -> T:
    """One attempt, run to its end even when the caller is cancelled.

    A transaction cut off half-way (the caller's task cancelled inside the driver) can leave
    its connection checked out and, on SQLite, its write lock held, so that every later
    writer waits ``busy_timeout`` for it. The attempt therefore runs in its own task that a
    cancellation does not reach: the caller is cancelled at once, but only after the
    transaction has committed or rolled back (at most `ABANDON_GRACE` seconds).
    """
    # owned: awaited below, to its end even when the caller is cancelled
    task = asyncio.get_running_loop().create_task(_transaction(engine, body, read))  # owned
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        done, _ = await asyncio.wait([task], timeout=ABANDON_GRACE)
        if not done:
            task.cancel()
        elif not task.cancelled():
            task.exception()  # the caller is gone: its outcome is not reported
        raise


async def _transaction(
    engine: AsyncEngine, body: Callable[[AsyncConnection], Awaitable[T]], read: bool
) -> T:
    async with engine.connect() as conn:
        if read:
            conn = await conn.execution_options(**{READ_OPTION: True})
        async with conn.begin():
            return await body(conn)
