"""The checkpoint file: how a world (or part of one) moves between stores — SQLite,
PostgreSQL, CockroachDB — as one streamed file.

Format ``worldstate-checkpoint``, version 1: a gzip stream of JSON lines (UTF-8, one JSON
value per line)::

    {"format": "worldstate-checkpoint", "version": 1, "schema_version": 1,
     "checkpoint": {"id", "name", "created_at", "created_by", "regions", "objects",
                    "heads": {origin: seq}, "meta": {...}},
     "scope": null | {"regions": [morton, ...]} | {"inventories": [id, ...]},
     "tables": {"ws_regions": [column, ...], ...}}               <- header, first line
    {"t": "ws_regions", "r": [value, ...]}                        <- one line per row,
    ...                                                              table by table
    {"end": true, "rows": N, "counts": {"ws_regions": n, ...}}   <- trailer, last line

Row values are in the column order the header gives for their table; binary columns are
base64 strings (`worldstate.history._tables`). A reader refuses a file whose ``format``
is not this one or whose ``version`` is newer than it knows (`ExportFormatError`, saying to
upgrade), and a file without its trailer or whose counts disagree (truncated): the gzip
stream's own CRC catches damaged bytes. Tables and columns are named, so a file written by
another worldstate version imports as long as every column it carries still exists and
every required column is present.

Writing streams rows from the stored checkpoint's chunks to a ``FILE.part`` renamed to
``FILE`` at the end; importing streams the file into chunks of a new checkpoint in ONE
transaction, so a refused file leaves nothing behind. Memory stays bounded by a chunk.
"""

from __future__ import annotations

import gzip
import os
import uuid
import zlib
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any

import orjson
from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from regions import RegionKey
from worldstate.errors import ExportFormatError, ValidationError
from worldstate.history._checkpoint import (
    CHUNK_BYTES,
    CHUNK_ROWS,
    COMPRESS_LEVEL,
    Checkpoint,
    ProgressFn,
    default_actor,
    get_checkpoint,
    iter_rows,
    payload_count,
)
from worldstate.history._tables import Layout, Scope, target_layout
from worldstate.store import Store
from worldstate.store import schema as s

FORMAT = "worldstate-checkpoint"
FORMAT_VERSION = 1
MAX_LINE = 256 * 1024 * 1024
"""Longest line read (a region snapshot of `Config.max_snapshot_bytes`, base64, fits)."""


def make_scope(
    regions: Iterable[RegionKey | tuple[int, int, int]] = (), inventories: Iterable[str] = ()
) -> Scope | None:
    keys = frozenset((k if isinstance(k, RegionKey) else RegionKey(*k)).morton for k in regions)
    invs = frozenset(inventories)
    if any(not isinstance(i, str) or not i for i in invs):
        raise ValidationError("inventory ids must be non-empty strings")
    if not keys and not invs:
        return None
    return Scope(keys, invs)


async def export_checkpoint(
    store: Store,
    ref: str,
    out: str | os.PathLike[str],
    *,
    regions: Iterable[RegionKey | tuple[int, int, int]] = (),
    inventories: Iterable[str] = (),
    progress: ProgressFn | None = None,
) -> dict[str, Any]:
    """Write the checkpoint ``ref`` (id or name) to the file ``out`` (format above), the
    whole world or only some regions and/or inventories. Returns the trailer (counts)."""
    cp = await get_checkpoint(store, ref)
    scope = make_scope(regions, inventories)
    if scope is None:
        scope = cp.scope
    path = Path(out)
    part = path.with_name(path.name + ".part")
    counts: dict[str, int] = {}
    regions_n = objects_n = 0
    try:
        with gzip.open(part, "wb", compresslevel=COMPRESS_LEVEL + 2) as f:
            header = {
                "format": FORMAT,
                "version": FORMAT_VERSION,
                "schema_version": cp.schema_version,
                "checkpoint": {
                    "id": cp.id,
                    "name": cp.name,
                    "created_at": cp.created_at,
                    "created_by": cp.created_by,
                    "regions": cp.regions,
                    "objects": cp.objects,
                    "heads": dict(cp.heads),
                    "meta": dict(cp.meta),
                },
                "scope": scope.to_json() if scope is not None else None,
                "tables": {t: list(c) for t, c in cp.tables.items()},
            }
            f.write(orjson.dumps(header) + b"\n")
            for table, cols in cp.tables.items():
                layout = Layout(table, tuple(cols), frozenset())
                if scope is not None and not _table_in_scope(scope, table, cols):
                    continue
                i_payload = cols.index("payload") if table == s.regions.name else -1
                n = 0
                async for rows in iter_rows(store, cp.id, table):
                    lines = []
                    for values in rows:
                        if scope is not None and not scope.keeps(layout, values):
                            continue
                        lines.append(orjson.dumps({"t": table, "r": values}))
                        if i_payload >= 0:
                            regions_n += 1
                            objects_n += _b64_count(values[i_payload])
                        elif table == s.objects.name:
                            objects_n += 1
                    if lines:
                        f.write(b"\n".join(lines) + b"\n")
                    n += len(lines)
                    if progress is not None:
                        progress(table, n)
                counts[table] = n
            trailer = {
                "end": True,
                "rows": sum(counts.values()),
                "counts": counts,
                "regions": regions_n,
                "objects": objects_n,
            }
            f.write(orjson.dumps(trailer) + b"\n")
        os.replace(part, path)
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    return trailer


def _table_in_scope(scope: Scope, table: str, cols: tuple[str, ...] | list[str]) -> bool:
    if scope.regions and "region_key" in cols:
        return True
    return bool(scope.inventories) and table == s.inventories.name


def _b64_count(value: Any) -> int:
    import base64

    try:
        return payload_count(base64.b64decode(value[:12]))
    except (ValueError, TypeError):
        return 0


def read_header(f: IO[bytes] | gzip.GzipFile) -> dict[str, Any]:
    """The header of an open checkpoint file, checked (`ExportFormatError` otherwise)."""
    try:
        line = f.readline(MAX_LINE)
    except (OSError, EOFError, zlib.error) as e:
        raise ExportFormatError(f"not a readable gzip'd checkpoint file: {e}") from None
    try:
        head = orjson.loads(line)
    except orjson.JSONDecodeError:
        raise ExportFormatError("the first line is not a JSON checkpoint header") from None
    if not isinstance(head, dict) or head.get("format") != FORMAT:
        raise ExportFormatError(f"not a {FORMAT} file (its header names no such format)")
    version = head.get("version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise ExportFormatError(f"the header's format version {version!r:.40} is not an integer")
    if version > FORMAT_VERSION:
        raise ExportFormatError(
            f"the file is format version {version}, newer than this worldstate reads "
            f"({FORMAT_VERSION}); upgrade worldstate to import it"
        )
    if version < 1:
        raise ExportFormatError(f"unknown format version {version}")
    sv = head.get("schema_version")
    if isinstance(sv, int) and sv > s.SCHEMA_VERSION:
        raise ExportFormatError(
            f"the file holds schema version {sv}, newer than this worldstate's "
            f"({s.SCHEMA_VERSION}); upgrade worldstate to import it"
        )
    if not isinstance(head.get("tables"), dict) or not isinstance(head.get("checkpoint"), dict):
        raise ExportFormatError("the header lacks its 'tables' or 'checkpoint' section")
    return head


async def import_checkpoint(
    store: Store,
    path: str | os.PathLike[str],
    *,
    name: str | None = None,
    by: str | None = None,
    progress: ProgressFn | None = None,
) -> Checkpoint:
    """Read a checkpoint file into ``store`` as a new complete checkpoint (ONE transaction:
    a refused or truncated file leaves nothing). Restore it with `restore_checkpoint`."""
    src = Path(path)
    with gzip.open(src, "rb") as f:  # check the header before opening a transaction
        head = read_header(f)
    info = head["checkpoint"]
    layouts: dict[str, Layout] = {}
    for table, cols in head["tables"].items():
        if not isinstance(cols, list) or not all(isinstance(c, str) for c in cols):
            raise ExportFormatError(f"the header's column list of {table!r:.60} is malformed")
        layouts[table] = target_layout(table, cols)[1]
    scope = Scope.from_json(head.get("scope"))
    cp_name = name if name is not None else str(info.get("name") or src.stem)
    original = str(info.get("id") or "")
    actor = by or default_actor()

    async def body(conn: AsyncConnection) -> str:
        t = s.checkpoints
        taken = (
            await conn.execute(select(t.c.checkpoint_id).where(t.c.checkpoint_id == original))
        ).first()
        cid = original if original and taken is None else str(uuid.uuid4())
        dup = (
            await conn.execute(
                select(t.c.checkpoint_id).where(t.c.name == cp_name, t.c.status == "complete")
            )
        ).first()
        if dup is not None:
            raise ValidationError(
                f"a checkpoint named {cp_name!r} exists in this store; import with another name"
            )
        sink = _ImportSink(conn, cid)
        trailer: dict[str, Any] | None = None
        try:
            with gzip.open(src, "rb") as f:
                read_header(f)
                while True:
                    line = f.readline(MAX_LINE)
                    if not line:
                        break
                    if trailer is not None:
                        raise ExportFormatError("lines follow the file's trailer")
                    try:
                        doc = orjson.loads(line)
                    except orjson.JSONDecodeError:
                        raise ExportFormatError(
                            "a line is not JSON (the file is truncated or corrupt)"
                        ) from None
                    if not isinstance(doc, dict):
                        raise ExportFormatError("a line is not a JSON object")
                    if doc.get("end") is True:
                        trailer = doc
                        continue
                    table, values = doc.get("t"), doc.get("r")
                    layout = layouts.get(table) if isinstance(table, str) else None
                    if layout is None or not isinstance(values, list) or not isinstance(table, str):
                        raise ExportFormatError(f"a row of unknown table {table!r:.60}")
                    layout.check(values)  # arity and JSON types of every column
                    layout.decode(values)  # and the binary columns
                    n = await sink.add(layout, values)
                    if progress is not None and n % CHUNK_ROWS == 0:
                        progress(table, n)
        except (EOFError, zlib.error, gzip.BadGzipFile, OSError) as e:
            raise ExportFormatError(
                f"the file {src.name} is truncated or corrupt ({e}); nothing was imported"
            ) from None
        if trailer is None:
            raise ExportFormatError(
                f"the file {src.name} ends without its trailer: it is truncated; nothing was "
                "imported"
            )
        await sink.flush_all()
        said = trailer.get("counts")
        said = {k: v for k, v in said.items() if v} if isinstance(said, dict) else said
        if said != sink.counts_by_table() or trailer.get("rows") != sink.rows:
            raise ExportFormatError(
                f"the file's trailer counts {trailer.get('counts')} but it holds "
                f"{sink.counts_by_table()}; nothing was imported"
            )
        now = store.clock()
        heads = info.get("heads") if isinstance(info.get("heads"), dict) else {}
        meta = info.get("meta") if isinstance(info.get("meta"), dict) else {}
        await conn.execute(
            insert(t).values(
                checkpoint_id=cid,
                name=cp_name,
                status="complete",
                created_at=float(info.get("created_at") or now),
                created_by=str(info.get("created_by") or actor),
                source=f"import:{src.name} by {actor}"[:500],
                schema_version=int(head.get("schema_version") or s.SCHEMA_VERSION),
                scope=orjson.dumps(scope.to_json()).decode() if scope is not None else None,
                regions=int(trailer.get("regions") or 0),
                objects=int(trailer.get("objects") or 0),
                rows=sink.rows,
                bytes=sink.bytes,
                raw_bytes=sink.raw_bytes,
                heads=orjson.dumps(heads).decode(),
                tables=orjson.dumps({k: list(v.columns) for k, v in layouts.items()}).decode(),
                meta=orjson.dumps(meta).decode(),
            )
        )
        return cid

    cid = await store.run(body, f"import checkpoint file {src.name}")
    return await get_checkpoint(store, cid)


class _ImportSink:
    """Chunks of imported rows, written inside the import's transaction."""

    def __init__(self, conn: AsyncConnection, cid: str) -> None:
        self.conn, self.cid = conn, cid
        self.lines: dict[str, list[bytes]] = {}
        self.chunks: dict[str, int] = {}
        self.counts: dict[str, int] = {}
        self.sizes: dict[str, int] = {}
        self.rows = self.bytes = self.raw_bytes = 0

    async def add(self, layout: Layout, values: list[Any]) -> int:
        lines = self.lines.setdefault(layout.table, [])
        line = orjson.dumps(values)
        lines.append(line)
        self.counts[layout.table] = self.counts.get(layout.table, 0) + 1
        self.rows += 1
        size = self.sizes.get(layout.table, 0) + len(line)
        self.sizes[layout.table] = size
        if len(lines) >= CHUNK_ROWS or size >= CHUNK_BYTES:
            await self._flush(layout.table)
        return self.counts[layout.table]

    async def _flush(self, table: str) -> None:
        lines = self.lines.get(table)
        if not lines:
            return
        raw = b"\n".join(lines)
        body = zlib.compress(raw, COMPRESS_LEVEL)
        no = self.chunks.get(table, 0)
        await self.conn.execute(
            insert(s.checkpoint_chunks).values(
                checkpoint_id=self.cid,
                table_name=table,
                chunk_no=no,
                row_count=len(lines),
                body=body,
            )
        )
        self.chunks[table] = no + 1
        self.sizes[table] = 0
        self.bytes += len(body)
        self.raw_bytes += len(raw)
        self.lines[table] = []

    async def flush_all(self) -> None:
        for table in list(self.lines):
            await self._flush(table)

    def counts_by_table(self) -> dict[str, int]:
        return dict(self.counts)


__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "export_checkpoint",
    "import_checkpoint",
    "make_scope",
    "read_header",
]
