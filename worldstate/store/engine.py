"""One SQLAlchemy async engine per store URL, set up for SERIALIZABLE transactions.

- ``cockroachdb+psycopg://`` — production. CockroachDB runs every transaction SERIALIZABLE.
- ``postgresql+psycopg://`` — same SQL, ``isolation_level="SERIALIZABLE"`` on the engine.
- ``sqlite+aiosqlite:///file.db`` — the embedded default. pysqlite's own transaction
  handling is switched off and every transaction starts with ``BEGIN IMMEDIATE`` (the
  documented SQLAlchemy recipe), so concurrent writers queue on the file lock instead of
  failing to upgrade a read lock (read-only transactions begin DEFERRED); WAL journal,
  ``synchronous=FULL`` so an acknowledged
  write survives a power cut.
"""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

from psycopg.types.array import ListBinaryDumper
from sqlalchemy import event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DisconnectionError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import StaticPool

from worldstate.errors import ValidationError
from worldstate.security._redact import redact_url

READ_OPTION = "worldstate_read"
"""Execution option marking a read-only transaction: on SQLite it begins DEFERRED, so WAL
readers never wait for the write lock."""

SUPPORTED = ("cockroachdb+psycopg", "postgresql+psycopg", "sqlite+aiosqlite")


def parse_store_url(url: str) -> URL:
    if not isinstance(url, str) or not url:
        raise ValidationError("store URL must be a non-empty string")
    try:
        u = make_url(url)
    except ArgumentError:
        raise ValidationError(f"store URL {redact_url(url)!r} is not a SQLAlchemy URL") from None
    if u.drivername not in SUPPORTED:
        raise ValidationError(
            f"store URL scheme {u.drivername!r} is not supported; use one of "
            + ", ".join(f"{s}://" for s in SUPPORTED)
        )
    _check_ssl(u)
    return u


SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
SSL_FILES = ("sslrootcert", "sslcert", "sslkey", "sslcrl")


def _check_ssl(u: URL) -> None:
    """TLS to PostgreSQL / CockroachDB (secure mode): ``?sslmode=verify-full&sslrootcert=
    ca.crt&sslcert=client.app.crt&sslkey=client.app.key`` is handed to psycopg as it is
    (libpq's parameters); we check the values so a typo fails here, not as a vague
    connection error."""
    q = u.query
    if not q:
        return
    if dialect_of(u) == "sqlite":
        bad = sorted(k for k in q if k.startswith("ssl"))
        if bad:
            raise ValidationError(f"store URL: {', '.join(bad)} do not apply to SQLite")
        return
    mode = q.get("sslmode")
    if mode is not None and mode not in SSL_MODES:
        raise ValidationError(f"store URL: sslmode={mode!r} is not one of {', '.join(SSL_MODES)}")
    for name in SSL_FILES:
        path = q.get(name)
        if isinstance(path, str) and not os.path.isfile(path):
            raise ValidationError(f"store URL: {name}={path!r} is not a readable file")


def dialect_of(url: URL) -> str:
    """``cockroachdb``, ``postgresql`` or ``sqlite``."""
    return url.get_backend_name()


def make_engine(
    url: str,
    *,
    pool_size: int = 10,
    read_only: bool = False,
    async_creator: Callable[[], Awaitable[Any]] | None = None,
) -> AsyncEngine:
    """The engine for ``url``. ``async_creator`` (SQLite only) makes the driver-level
    connection instead of aiosqlite — the deterministic simulation passes one that runs
    sqlite3 in the event loop's thread (see ``tests/sim/store_sim.py``)."""
    u = parse_store_url(url)
    if dialect_of(u) == "sqlite":
        return _sqlite_engine(u, read_only=read_only, async_creator=async_creator)
    if async_creator is not None:
        raise ValidationError("async_creator is only supported for sqlite+aiosqlite:// stores")
    kwargs: dict[str, Any] = {
        "isolation_level": "SERIALIZABLE",
        "pool_size": pool_size,
        "max_overflow": pool_size,
    }
    if dialect_of(u) == "postgresql":
        kwargs["connect_args"] = {"options": _pg_options(u)}
    engine = create_async_engine(u, **kwargs)
    _ping_when_idle(engine)
    _binary_arrays(engine)
    if read_only:

        @event.listens_for(engine.sync_engine, "begin")
        def _ro(conn: Any) -> None:
            conn.exec_driver_sql("SET TRANSACTION READ ONLY")

    return engine


PG_SESSION = "-c enable_seqscan=off"
"""PostgreSQL session settings of every connection (libpq ``options``). At SERIALIZABLE a
sequential scan takes a predicate lock on the whole table, so a statement that scans a small
table (``ws_regions``, ``ws_leases``, ``ws_resources`` hold a few rows per region, and the
planner prefers scanning them to using the primary key) conflicts with every other server's
write to any row of it, and one of the two transactions fails with 40001. With sequential
scans priced out, every keyed statement takes its predicate locks on the rows and index
pages it reads, so servers writing different regions no longer abort each other (the
PostgreSQL manual, "Serializable Isolation Level", recommends encouraging index scans for
this). Tables read whole (exports) still scan them. CockroachDB has no predicate locks and
no such setting."""


def _pg_options(u: URL) -> str:
    """`PG_SESSION`, followed by any ``options`` the store URL gives (which then win)."""
    given = u.query.get("options")
    extra = given if isinstance(given, str) else " ".join(given or ())
    return f"{PG_SESSION} {extra}".strip()


def _binary_arrays(engine: AsyncEngine) -> None:
    """Send list parameters (the ``unnest`` arrays every group write binds) in PostgreSQL's
    binary array format. psycopg's text format escapes element by element in Python — a
    ``bytea`` element costs ~7.6 µs to dump as text, ~0.24 µs as binary, and an int ~1.1
    against ~0.2 — which made array adaptation the largest part of a group commit's CPU.
    Registering the binary dumper for ``list`` on each connection makes it the one the
    ``%s`` placeholders SQLAlchemy renders use (psycopg: the dumper registered last is the
    automatic one); scalars keep their usual adaptation. CockroachDB decodes binary arrays
    too (pgwire)."""

    @event.listens_for(engine.sync_engine, "connect")
    def _connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.driver_connection.adapters.register_dumper(list, ListBinaryDumper)


PING_AFTER_IDLE = 1.0
"""Seconds a pooled connection may sit idle and still be handed out without a ping."""


def _ping_when_idle(engine: AsyncEngine) -> None:
    """Pessimistic disconnect handling for connections that sat idle, not for every
    checkout (`pool_pre_ping` costs a round trip per transaction, ~a third of a strong
    group commit's): a connection idle for more than `PING_AFTER_IDLE` is pinged when it is
    checked out, and one that fails the ping is replaced (``DisconnectionError`` makes the
    pool take another). A connection that dies while in steady use fails its statement,
    which the transaction retry loop (`worldstate.store.retry`) retries on a fresh one."""

    @event.listens_for(engine.sync_engine, "checkin")
    def _checkin(_dbapi_conn: Any, record: Any) -> None:
        record.info["ws_idle_since"] = time.monotonic()

    @event.listens_for(engine.sync_engine, "checkout")
    def _checkout(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        since = record.info.get("ws_idle_since")
        if since is None or time.monotonic() - since <= PING_AFTER_IDLE:
            return
        try:
            cur = dbapi_conn.cursor()
            try:
                cur.execute("SELECT 1")
            finally:
                cur.close()
        except Exception as e:
            raise DisconnectionError(f"pooled connection failed its ping: {e}") from e


def _sqlite_engine(
    u: URL, *, read_only: bool, async_creator: Callable[[], Awaitable[Any]] | None = None
) -> AsyncEngine:
    memory = u.database in (None, "", ":memory:")
    kwargs: dict[str, Any] = {"connect_args": {"timeout": 30.0}}
    if async_creator is not None:
        kwargs = {"async_creator": async_creator}
    if memory:
        kwargs["poolclass"] = StaticPool
    engine = create_async_engine(u, **kwargs)

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
        cur = dbapi_conn.cursor()
        if not memory:
            cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=FULL")
        cur.execute("PRAGMA busy_timeout=30000")
        if read_only:
            cur.execute("PRAGMA query_only=ON")
        cur.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        reader = read_only or conn.get_execution_options().get(READ_OPTION, False)
        conn.exec_driver_sql("BEGIN" if reader else "BEGIN IMMEDIATE")

    return engine
