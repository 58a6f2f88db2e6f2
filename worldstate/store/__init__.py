"""The durable store: one adapter over CockroachDB, PostgreSQL and SQLite (SQLAlchemy 2
async Core), every transaction SERIALIZABLE and retried (see `worldstate.store.retry`)."""

from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid
import weakref
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import desc, func, select
from sqlalchemy.exc import DBAPIError, IntegrityError, ProgrammingError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from regions import RegionKey
from worldstate.errors import StoreUnavailable, WorldStateError
from worldstate.objects import Lease, WorldObject
from worldstate.store import leases as lease_ops
from worldstate.store import region_scan, region_state, schema
from worldstate.store.diagnosis import permanent_problem
from worldstate.store.engine import dialect_of, make_engine, parse_store_url
from worldstate.store.region_scan import StoredVersion
from worldstate.store.region_state import LoadResult, StoredRow, WriteRequest
from worldstate.store.retry import RetryPolicy, RetryStats, transact

log = logging.getLogger("worldstate.store")

_SQLITE_WRITE_LOCKS: weakref.WeakValueDictionary[tuple[str, int], asyncio.Lock] = (
    weakref.WeakValueDictionary()
)

T = TypeVar("T")

__all__ = ["LoadResult", "RegionSummary", "Store", "StoredVersion"]


def _file_exists(path: str) -> bool:
    return os.path.exists(path)  # one stat at open: not worth a thread


@dataclass(frozen=True, slots=True)
class RegionSummary:
    key: RegionKey
    version: int
    object_count: int
    stored_at: float
    stored_by: str
    size: int
    owner: str | None
    epoch: int
    lease_expires_at: float | None


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    version: int
    epoch: int
    object_count: int
    stored_at: float
    stored_by: str
    valid: bool


class Store:
    """Region state, history, leases and incidents in one SQL database."""

    def __init__(
        self,
        url: str,
        *,
        policy: RetryPolicy | None = None,
        pool_size: int = 10,
        read_only: bool = False,
        clock: Callable[[], float] = time.time,
        engine: AsyncEngine | None = None,
    ) -> None:
        """``engine``: use this engine (made by `make_engine` for ``url``) rather than a
        new one — the deterministic simulation passes one that does no thread I/O."""
        self.url = parse_store_url(url)
        self.dialect = dialect_of(self.url)
        self.engine = (
            engine
            if engine is not None
            else make_engine(url, pool_size=pool_size, read_only=read_only)
        )
        self.policy = policy or RetryPolicy()
        self.stats = RetryStats()
        self.clock = clock
        self.read_only = read_only

    def _write_lock(self) -> asyncio.Lock | None:
        """SQLite only: one lock per database file and event loop, shared by every Store
        of this process (several worlds on one file queue here, not in busy-sleeps)."""
        if self.dialect != "sqlite":
            return None
        loop = asyncio.get_running_loop()
        key = (str(self.url.database), id(loop))
        lock = _SQLITE_WRITE_LOCKS.get(key)
        if lock is None:
            lock = _SQLITE_WRITE_LOCKS[key] = asyncio.Lock()
        return lock

    def describe(self) -> str:
        return self.url.render_as_string(hide_password=True)

    async def run(
        self, body: Callable[[AsyncConnection], Awaitable[T]], what: str, *, read: bool = False
    ) -> T:
        """Run ``body`` in a SERIALIZABLE transaction with retries (``read``: it only reads)."""
        try:
            return await transact(
                self.engine,
                body,
                policy=self.policy,
                what=what,
                stats=self.stats,
                read=read,
                write_lock=self._write_lock(),
            )
        except WorldStateError:
            raise
        except DBAPIError as e:
            problem = permanent_problem(e, self.url)
            if problem is not None:
                raise StoreUnavailable(f"{what}: {problem}") from e
            raise StoreUnavailable(
                f"{what}: the store at {self.describe()} failed: {str(e.orig).splitlines()[0]}"
            ) from e
        except OSError as e:
            raise StoreUnavailable(
                f"{what}: cannot reach the store at {self.describe()}: {e}"
            ) from e

    async def open(self) -> None:
        """Create the schema if missing (idempotent; safe with many servers starting)."""
        if self.read_only:
            if self.dialect == "sqlite":
                path = self.url.database
                if path and path != ":memory:" and not _file_exists(path):
                    raise StoreUnavailable(
                        f"no SQLite database at {path} — check the path in the store URL "
                        "(inspect never creates one)"
                    )
            # a world table every role may read (not ws_meta: the inspector role may not
            # read the bus keys kept there); a missing table means "no schema here"
            await self.run(
                lambda c: c.execute(select(schema.regions.c.region_key).limit(1)),
                "open the store",
            )
            return
        stored = 0
        for attempt in range(5):
            try:
                stored = await self.run(schema.create_schema, "create schema")
                break
            except StoreUnavailable as e:
                # several servers creating the schema at once: CREATE TABLE IF NOT EXISTS
                # can still collide in the catalog (a unique or duplicate-object error)
                if attempt == 4 or not isinstance(e.__cause__, (IntegrityError, ProgrammingError)):
                    raise
                await asyncio.sleep(0.05 * (attempt + 1))
        if stored > schema.SCHEMA_VERSION:
            raise StoreUnavailable(
                f"the store's schema version {stored} is newer than this worldstate's "
                f"({schema.SCHEMA_VERSION}); upgrade worldstate"
            )
        if stored < schema.SCHEMA_VERSION:
            # version 2 keys every spatial table by region (CockroachDB ranges follow space):
            # the tables of version 1 cannot be altered into that in place
            raise StoreUnavailable(
                f"the store holds schema version {stored}; this worldstate uses version "
                f"{schema.SCHEMA_VERSION} and has no in-place migration from it — open a "
                "fresh store (CHANGELOG, 0.2.0)"
            )

    async def close(self) -> None:
        await self.engine.dispose()

    async def ping(self) -> None:
        """One round trip to the store, not retried (health checks: fail fast)."""
        try:
            async with self.engine.connect() as conn:
                await conn.execute(select(1))
        except DBAPIError as e:
            raise StoreUnavailable(
                f"the store at {self.describe()} failed: {str(e.orig).splitlines()[0]}"
            ) from e

    # -- regions ---------------------------------------------------------------------------

    async def load_region(self, key: RegionKey, *, repair: bool = True) -> LoadResult:
        now = self.clock()

        async def body(conn: AsyncConnection) -> LoadResult | StoredRow:
            return await region_state.load(conn, key, now)

        got = await self.run(body, f"load region {key}", read=True)
        if isinstance(got, LoadResult):
            if got.tampered and not self.read_only:
                bad = got.tampered
                await self.run(
                    lambda c: region_state.record_tampered(c, key, bad, now),
                    f"record tampered rows of {key}",
                )
            return got
        fix_it = repair and not self.read_only

        async def fix(conn: AsyncConnection) -> LoadResult:
            return await region_state.recover(conn, key, now, repair=fix_it)

        result = await self.run(fix, f"recover region {key}")
        if not fix_it:
            log.warning(
                "region %s: current row fails its checksum; serving history version %s "
                "(read-only: not repaired)",
                key,
                result.recovered_from,
            )
        return result

    async def store_region(
        self,
        key: RegionKey,
        objects: Sequence[WorldObject],
        *,
        expected_version: int | None,
        epoch: int,
        writer: str,
        history_versions: int,
    ) -> int:
        req = WriteRequest(
            key,
            objects,
            expected_version,
            epoch,
            writer,
            str(uuid.uuid4()),
            history_versions,
        )
        now = self.clock()

        async def body(conn: AsyncConnection) -> int:
            return await region_state.store(conn, req, now)

        return await self.run(body, f"store region {key}")

    async def history(self, key: RegionKey) -> list[HistoryEntry]:
        async def body(conn: AsyncConnection) -> list[HistoryEntry]:
            h = schema.region_history
            rows = (
                await conn.execute(
                    select(h).where(h.c.region_key == key.morton).order_by(desc(h.c.version))
                )
            ).all()
            out = []
            for r in rows:
                row = StoredRow(
                    key,
                    r.version,
                    r.version,
                    r.epoch,
                    bytes(r.payload),
                    bytes(r.checksum),
                    r.stored_at,
                    r.stored_by,
                )
                out.append(
                    HistoryEntry(
                        r.version, r.epoch, r.object_count, r.stored_at, r.stored_by, row.valid()
                    )
                )
            return out

        return await self.run(body, f"history of region {key}", read=True)

    async def regions(self, *, limit: int = 1000, after: int = -1) -> list[RegionSummary]:
        """Stored regions in Morton order (``after`` a Morton code, for paging)."""
        now = self.clock()

        async def body(conn: AsyncConnection) -> list[RegionSummary]:
            r, le = schema.regions, schema.leases
            q = (
                select(
                    r.c.region_key,
                    r.c.version,
                    r.c.object_count,
                    r.c.stored_at,
                    r.c.stored_by,
                    func.length(r.c.payload).label("size"),
                    le.c.owner,
                    le.c.epoch,
                    le.c.expires_at,
                )
                .select_from(r.outerjoin(le, le.c.region_key == r.c.region_key))
                .where(r.c.region_key > after)
                .order_by(r.c.region_key)
                .limit(limit)
            )
            out = []
            for row in (await conn.execute(q)).all():
                live = row.expires_at is not None and row.expires_at > now
                out.append(
                    RegionSummary(
                        RegionKey.from_morton(row.region_key),
                        row.version,
                        row.object_count,
                        row.stored_at,
                        row.stored_by,
                        int(row.size or 0),
                        row.owner if live else None,
                        int(row.epoch or 0),
                        row.expires_at,
                    )
                )
            return out

        return await self.run(body, "list regions", read=True)

    async def regions_in_box(
        self, lo: RegionKey, hi: RegionKey, *, after: int = -1, limit: int = 1000
    ) -> tuple[list[StoredVersion], int | None]:
        """Stored regions (key, version) in the index box ``lo..hi``, in Morton order: a
        Morton-range scan that costs what exists, not the box's volume (see
        `worldstate.store.region_scan`). Returns one page and the ``after`` of the next
        (None at the end)."""

        async def body(conn: AsyncConnection) -> tuple[list[StoredVersion], int | None]:
            return await region_scan.regions_in_box(conn, lo, hi, after=after, limit=limit)

        return await self.run(body, f"list regions in {lo}..{hi}", read=True)

    async def region_checks(
        self, mortons: Sequence[int], *, verify: bool = True
    ) -> dict[int, tuple[int, bool]]:
        """For the operator views: per region (Morton code), the committed objects of the
        strong path (structures, items... in ``ws_objects``, not in the snapshot's count)
        and whether the current row's checksum holds (``verify=False``: not read, True).
        One transaction per call."""
        if not mortons:
            return {}
        codes = sorted(set(mortons))

        async def body(conn: AsyncConnection) -> dict[int, tuple[int, bool]]:
            o, r = schema.objects, schema.regions
            counts = {
                row.region_key: int(row.n)
                for row in await conn.execute(
                    select(o.c.region_key, func.count().label("n"))
                    .where(o.c.region_key.in_(codes))
                    .group_by(o.c.region_key)
                )
            }
            out: dict[int, tuple[int, bool]] = {}
            if not verify:
                return {m: (counts.get(m, 0), True) for m in codes}
            for row in await conn.execute(select(r).where(r.c.region_key.in_(codes))):
                stored = region_state._row(RegionKey.from_morton(row.region_key), row)
                out[row.region_key] = (counts.get(row.region_key, 0), stored.valid())
            return out

        return await self.run(body, "check regions", read=True)

    async def incidents(self, *, limit: int = 100) -> list[dict[str, Any]]:
        async def body(conn: AsyncConnection) -> list[dict[str, Any]]:
            i = schema.incidents
            rows = (await conn.execute(select(i).order_by(desc(i.c.at)).limit(limit))).all()
            return [
                {
                    "region": str(RegionKey.from_morton(r.region_key))
                    if r.region_key >= 0
                    else "world",  # a world-wide incident (a checkpoint restore)
                    "kind": r.kind,
                    "detail": r.detail,
                    "at": r.at,
                }
                for r in rows
            ]

        return await self.run(body, "list incidents", read=True)

    async def conflicts(self, *, limit: int = 100) -> list[dict[str, Any]]:
        """Recent conflict decisions of the strong pipeline, newest first."""
        import orjson

        async def body(conn: AsyncConnection) -> list[dict[str, Any]]:
            t = schema.conflicts
            rows = (await conn.execute(select(t).order_by(desc(t.c.at)).limit(limit))).all()
            return [
                {
                    "region": str(RegionKey.from_morton(r.region_key))
                    if r.region_key is not None
                    else None,
                    "conflict_type": r.conflict_type,
                    "rule": r.rule,
                    "subject": r.subject,
                    "winners": orjson.loads(r.winners),
                    "losers": orjson.loads(r.losers),
                    "reason": r.reason,
                    "server_id": r.server_id,
                    "at": r.at,
                }
                for r in rows
            ]

        return await self.run(body, "list conflicts", read=True)

    # -- leases ----------------------------------------------------------------------------

    async def acquire(self, key: RegionKey, owner: str, ttl: float) -> Lease:
        now = self.clock()
        return await self.run(
            lambda c: lease_ops.acquire(c, key, owner, ttl, now), f"acquire region {key}"
        )

    async def renew(self, key: RegionKey, owner: str, epoch: int, ttl: float) -> Lease:
        now = self.clock()
        return await self.run(
            lambda c: lease_ops.renew(c, key, owner, epoch, ttl, now), f"renew lease {key}"
        )

    async def release(self, key: RegionKey, owner: str, epoch: int) -> bool:
        return await self.run(
            lambda c: lease_ops.release(c, key, owner, epoch), f"release region {key}"
        )

    async def lease(self, key: RegionKey) -> Lease | None:
        return await self.run(lambda c: lease_ops.get(c, key), f"read lease {key}", read=True)

    async def leases(self, *, owner: str | None = None) -> list[Lease]:
        return await self.run(
            lambda c: lease_ops.all_leases(c, owner=owner), "list leases", read=True
        )
