"""Checkpoints: a consistent copy of a world's durable state, kept in the store itself
(``ws_checkpoints`` + ``ws_checkpoint_chunks``), taken without stopping writes.

Taking one: every world table (`WORLD_TABLES`) is read inside ONE read-only snapshot —
PostgreSQL ``REPEATABLE READ, READ ONLY`` (a snapshot that never blocks writers nor
aborts them), CockroachDB ``AS OF SYSTEM TIME '-1s'`` (a historical read: no contention
with live writes), SQLite a deferred read transaction (WAL: writers go on beside it) — so the
copy is the store at one instant: a transfer between two inventories is in it whole or not
at all. The rows are written, while they are read, as zlib-compressed chunks of JSON lines
(`worldstate.history._tables`) by a second connection in short transactions; the checkpoint
row is "writing" until the last chunk is in and "complete" after. Memory stays bounded by a
page of rows and a chunk, whatever the size of the world.
"""

from __future__ import annotations

import contextlib
import functools
import getpass
import logging
import socket
import struct
import time
import uuid
import zlib
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from sqlalchemy import delete, desc, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from worldstate.errors import CheckpointNotFound, ValidationError
from worldstate.history._tables import WORLD_TABLES, Layout, Scope, scan
from worldstate.store import Store
from worldstate.store import schema as s
from worldstate.store.engine import READ_OPTION

log = logging.getLogger("worldstate.history")

CHUNK_ROWS = 2000
"""Most rows per stored chunk."""
CHUNK_BYTES = 4 * 1024 * 1024
"""Most JSON bytes per stored chunk (region snapshots are large rows)."""
COMPRESS_LEVEL = 1
"""zlib level of chunks: fast (a 2-core server must not spend a checkpoint compressing)."""
STALE_WRITING = 3600.0
"""A checkpoint still "writing" after this many seconds was abandoned (its writer died);
`prune_checkpoints` removes it."""
PRUNED_META = "events_pruned"
"""``ws_meta`` row: the causal log's prune watermark (see `worldstate.history._retention`)."""

ProgressFn = Callable[[str, int], None]
"""Called with (table name, rows done so far in it) as work goes on (for a progress bar)."""


def default_actor() -> str:
    """Who is acting, for the records: ``user@host``."""
    try:
        user = getpass.getuser()
    except Exception:  # no user name in a bare container
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A stored checkpoint. ``bytes`` is what it occupies in the store (compressed chunks);
    ``raw_bytes`` the JSON rows before compression; ``regions``/``objects`` count region
    rows and the objects in them (snapshot objects plus strong-placed ones)."""

    id: str
    name: str
    created_at: float
    regions: int
    objects: int
    bytes: int
    rows: int = 0
    raw_bytes: int = 0
    created_by: str = ""
    source: str = "checkpoint"
    schema_version: int = s.SCHEMA_VERSION
    scope: Scope | None = None
    heads: Mapping[str, int] = field(default_factory=dict)
    """The causal log's highest seq per origin in the copy."""
    tables: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    """Table name → the column order of its rows in the chunks."""
    meta: Mapping[str, Any] = field(default_factory=dict)
    """Store metadata carried along (the causal log's prune watermark)."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "created_at": self.created_at,
            "created_by": self.created_by,
            "source": self.source,
            "schema_version": self.schema_version,
            "scope": self.scope.to_json() if self.scope is not None else None,
            "regions": self.regions,
            "objects": self.objects,
            "rows": self.rows,
            "bytes": self.bytes,
            "raw_bytes": self.raw_bytes,
            "heads": dict(self.heads),
        }


def _from_row(r: Any) -> Checkpoint:
    return Checkpoint(
        id=r.checkpoint_id,
        name=r.name,
        created_at=float(r.created_at),
        regions=int(r.regions),
        objects=int(r.objects),
        bytes=int(r.bytes),
        rows=int(r.rows),
        raw_bytes=int(r.raw_bytes),
        created_by=r.created_by,
        source=r.source,
        schema_version=int(r.schema_version),
        scope=Scope.from_json(orjson.loads(r.scope)) if r.scope else None,
        heads=orjson.loads(r.heads),
        tables={k: tuple(v) for k, v in orjson.loads(r.tables).items()},
        meta=orjson.loads(r.meta),
    )


def check_name(name: object) -> str:
    if not isinstance(name, str) or not name or len(name) > 200:
        raise ValidationError(f"a checkpoint name must be 1-200 characters, got {name!r:.80}")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in name):
        raise ValidationError(f"checkpoint name {name!r:.80} holds control characters")
    return name


def payload_count(payload: bytes) -> int:
    """Objects in an encoded region payload (its header), 0 if it has none readable."""
    try:
        return int(struct.unpack_from(">4sI", payload, 0)[1])
    except struct.error:
        return 0


@contextlib.asynccontextmanager
async def snapshot(store: Store) -> AsyncIterator[tuple[AsyncConnection, float]]:
    """A connection inside a read-only transaction that sees the store at one instant, and
    that instant (seconds since the epoch, by this process's clock)."""
    dialect = store.dialect
    async with store.engine.connect() as conn:
        if dialect == "postgresql":
            conn = await conn.execution_options(isolation_level="REPEATABLE READ")
        elif dialect == "sqlite":
            conn = await conn.execution_options(**{READ_OPTION: True})
        async with conn.begin():
            at = store.clock()
            if dialect == "postgresql":
                await conn.exec_driver_sql("SET TRANSACTION READ ONLY")
            elif dialect == "cockroachdb":
                await conn.exec_driver_sql("SET TRANSACTION AS OF SYSTEM TIME '-1s'")
                at -= 1.0
            yield conn, at


class _ChunkWriter:
    """Collects one table's rows into chunks and stores each as it fills."""

    def __init__(self, store: Store, checkpoint_id: str, layout: Layout) -> None:
        self.store, self.cid, self.layout = store, checkpoint_id, layout
        self.lines: list[bytes] = []
        self.pending_bytes = 0
        self.chunk_no = 0
        self.rows = 0
        self.bytes = 0
        self.raw_bytes = 0

    async def add(self, values: list[Any]) -> None:
        line = orjson.dumps(values)
        self.lines.append(line)
        self.pending_bytes += len(line)
        if len(self.lines) >= CHUNK_ROWS or self.pending_bytes >= CHUNK_BYTES:
            await self.flush()

    async def flush(self) -> None:
        if not self.lines:
            return
        raw = b"\n".join(self.lines)
        body = zlib.compress(raw, COMPRESS_LEVEL)
        row = {
            "checkpoint_id": self.cid,
            "table_name": self.layout.table,
            "chunk_no": self.chunk_no,
            "row_count": len(self.lines),
            "body": body,
        }
        await self.store.run(
            lambda c: c.execute(insert(s.checkpoint_chunks).values(**row)),
            f"write checkpoint chunk {self.layout.table}#{self.chunk_no}",
        )
        self.rows += len(self.lines)
        self.bytes += len(body)
        self.raw_bytes += len(raw)
        self.chunk_no += 1
        self.lines = []
        self.pending_bytes = 0


async def create_checkpoint(
    store: Store,
    name: str | None = None,
    *,
    by: str | None = None,
    progress: ProgressFn | None = None,
) -> Checkpoint:
    """Take a checkpoint of the world in ``store`` (see the module docstring)."""
    if store.dialect == "sqlite" and store.url.database in (None, "", ":memory:"):
        raise ValidationError(
            "an in-memory SQLite store cannot be checkpointed (the snapshot needs a second "
            "connection); use a SQLite file or a database server"
        )
    cid = str(uuid.uuid4())
    now = store.clock()
    name = (
        check_name(name)
        if name is not None
        else time.strftime("cp-%Y%m%d-%H%M%S", time.gmtime(now)) + f"-{cid[:4]}"
    )
    actor = by or default_actor()
    if await _find(store, name) is not None:
        raise ValidationError(f"a checkpoint named {name!r} exists; choose another name")
    header = {
        "checkpoint_id": cid,
        "name": name,
        "status": "writing",
        "created_at": now,
        "created_by": actor,
        "source": "checkpoint",
        "schema_version": s.SCHEMA_VERSION,
        "scope": None,
        "regions": 0,
        "objects": 0,
        "rows": 0,
        "bytes": 0,
        "raw_bytes": 0,
        "heads": "{}",
        "tables": "{}",
        "meta": "{}",
    }
    await store.run(lambda c: c.execute(insert(s.checkpoints).values(**header)), "begin checkpoint")
    try:
        regions = objects = 0
        heads: dict[str, int] = {}
        writers: list[_ChunkWriter] = []
        async with snapshot(store) as (conn, at):
            for table in WORLD_TABLES:
                layout = Layout.of(table)
                w = _ChunkWriter(store, cid, layout)
                writers.append(w)
                cols = layout.columns
                i_payload = cols.index("payload") if table is s.regions else -1
                i_origin = cols.index("origin") if table is s.events else -1
                i_seq = cols.index("seq") if table is s.events else -1
                async for page in scan(conn, table):
                    for row in page:
                        if i_payload >= 0:
                            regions += 1
                            objects += payload_count(bytes(row[i_payload]))
                        elif table is s.objects:
                            objects += 1
                        elif i_origin >= 0:
                            o, q = row[i_origin], int(row[i_seq])
                            if q > heads.get(o, 0):
                                heads[o] = q
                        await w.add(layout.encode(row))
                    if progress is not None:
                        progress(table.name, w.rows + len(w.lines))
                await w.flush()
            meta_rows = (
                await conn.execute(select(s.meta.c.value).where(s.meta.c.name == PRUNED_META))
            ).first()
        meta = {PRUNED_META: orjson.loads(meta_rows.value)} if meta_rows is not None else {}
        done = {
            "status": "complete",
            "created_at": at,
            "regions": regions,
            "objects": objects,
            "rows": sum(w.rows for w in writers),
            "bytes": sum(w.bytes for w in writers),
            "raw_bytes": sum(w.raw_bytes for w in writers),
            "heads": orjson.dumps(heads).decode(),
            "tables": orjson.dumps(
                {w.layout.table: list(w.layout.columns) for w in writers}
            ).decode(),
            "meta": orjson.dumps(meta).decode(),
        }
        t = s.checkpoints
        await store.run(
            lambda c: c.execute(update(t).where(t.c.checkpoint_id == cid).values(**done)),
            "complete checkpoint",
        )
    except BaseException:
        with contextlib.suppress(Exception):
            await delete_checkpoint(store, cid)
        raise
    cp = await get_checkpoint(store, cid)
    log.info(
        "checkpoint %s (%s): %d regions, %d objects, %d rows, %d bytes",
        cp.name,
        cp.id,
        cp.regions,
        cp.objects,
        cp.rows,
        cp.bytes,
    )
    return cp


async def _find(store: Store, ref: str) -> Checkpoint | None:
    t = s.checkpoints

    async def body(c: AsyncConnection) -> Checkpoint | None:
        q = select(t).where(t.c.status == "complete")
        r = (await c.execute(q.where(t.c.checkpoint_id == ref))).first()
        if r is None:
            r = (
                await c.execute(q.where(t.c.name == ref).order_by(desc(t.c.created_at)).limit(1))
            ).first()
        return _from_row(r) if r is not None else None

    return await store.run(body, f"find checkpoint {ref}", read=True)


async def get_checkpoint(store: Store, ref: str) -> Checkpoint:
    """The complete checkpoint with id or name ``ref`` (the newest of that name), or
    `CheckpointNotFound`."""
    if not isinstance(ref, str) or not ref:
        raise ValidationError("a checkpoint reference must be a non-empty id or name")
    cp = await _find(store, ref)
    if cp is None:
        raise CheckpointNotFound(ref)
    return cp


async def list_checkpoints(store: Store) -> list[Checkpoint]:
    """Complete checkpoints, oldest first."""
    t = s.checkpoints

    async def body(c: AsyncConnection) -> list[Checkpoint]:
        rows = await c.execute(
            select(t).where(t.c.status == "complete").order_by(t.c.created_at, t.c.checkpoint_id)
        )
        return [_from_row(r) for r in rows]

    return await store.run(body, "list checkpoints", read=True)


async def delete_checkpoint(store: Store, checkpoint_id: str) -> None:
    """Remove a checkpoint and its chunks (one transaction)."""

    async def body(c: AsyncConnection) -> None:
        ch, t = s.checkpoint_chunks, s.checkpoints
        await c.execute(delete(ch).where(ch.c.checkpoint_id == checkpoint_id))
        await c.execute(delete(t).where(t.c.checkpoint_id == checkpoint_id))

    await store.run(body, f"delete checkpoint {checkpoint_id}")


async def prune_checkpoints(store: Store, *, keep: int) -> list[Checkpoint]:
    """Delete all but the newest ``keep`` complete checkpoints (and abandoned ones still
    "writing" after `STALE_WRITING` s); returns the complete ones deleted."""
    if isinstance(keep, bool) or not isinstance(keep, int) or keep < 0:
        raise ValidationError(f"keep must be an int >= 0, got {keep!r}")
    cps = await list_checkpoints(store)
    gone = cps[: max(0, len(cps) - keep)]
    for cp in gone:
        await delete_checkpoint(store, cp.id)
    t = s.checkpoints
    cutoff = store.clock() - STALE_WRITING
    stale = await store.run(
        lambda c: _scalars(
            c, select(t.c.checkpoint_id).where(t.c.status == "writing", t.c.created_at < cutoff)
        ),
        "list abandoned checkpoints",
        read=True,
    )
    for cid in stale:
        await delete_checkpoint(store, cid)
    return gone


async def _scalars(c: AsyncConnection, q: Any) -> list[Any]:
    return list((await c.execute(q)).scalars())


async def chunk_numbers(c: AsyncConnection, checkpoint_id: str, table: str) -> list[int]:
    ch = s.checkpoint_chunks
    return await _scalars(
        c,
        select(ch.c.chunk_no)
        .where(ch.c.checkpoint_id == checkpoint_id, ch.c.table_name == table)
        .order_by(ch.c.chunk_no),
    )


async def read_chunk(c: AsyncConnection, checkpoint_id: str, table: str, no: int) -> list[Any]:
    """The rows (JSON values) of one chunk."""
    ch = s.checkpoint_chunks
    body = (
        await c.execute(
            select(ch.c.body).where(
                ch.c.checkpoint_id == checkpoint_id,
                ch.c.table_name == table,
                ch.c.chunk_no == no,
            )
        )
    ).scalar_one()
    raw = zlib.decompress(bytes(body))
    return [orjson.loads(line) for line in raw.split(b"\n")] if raw else []


async def iter_rows(store: Store, checkpoint_id: str, table: str) -> AsyncIterator[list[Any]]:
    """A checkpoint's rows of one table, a chunk at a time (each chunk read in its own
    short read transaction: memory bounded by one chunk)."""
    nos = await store.run(
        lambda c: chunk_numbers(c, checkpoint_id, table), "list checkpoint chunks", read=True
    )
    for no in nos:
        yield await store.run(
            functools.partial(read_chunk, checkpoint_id=checkpoint_id, table=table, no=no),
            "read checkpoint chunk",
            read=True,
        )


__all__ = [
    "Checkpoint",
    "ProgressFn",
    "check_name",
    "create_checkpoint",
    "default_actor",
    "delete_checkpoint",
    "get_checkpoint",
    "iter_rows",
    "list_checkpoints",
    "prune_checkpoints",
]
