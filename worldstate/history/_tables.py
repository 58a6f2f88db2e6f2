"""The world tables a checkpoint copies, in ONE list, and how their rows travel.

Everything in `worldstate.history` (checkpoint, restore, export, import) works over the
table definitions in `worldstate.store.schema` — columns, primary keys and types are read
from the `Table` objects — so a change of a table's columns or keys needs no change here;
a new world table needs one line in `WORLD_TABLES`.

Rows travel as JSON arrays in the column order the checkpoint recorded: integers, floats,
strings, booleans and nulls as JSON has them; binary columns (`LargeBinary`) as base64
strings. orjson writes floats with the shortest round-tripping repr, so a row read back
compares equal to the row written.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Double,
    Integer,
    LargeBinary,
    String,
    Table,
    Text,
    select,
    tuple_,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from worldstate.errors import ExportFormatError
from worldstate.store import schema as s

WORLD_TABLES: tuple[Table, ...] = (
    s.regions,
    s.objects,
    s.resources,
    s.items,
    s.inventories,
    s.terrain,
    s.outcomes,
    s.events,
)
"""The durable state of a world: region snapshots (current rows; their history is not
copied — a restore writes new versions), strong-placed objects, resources, items,
inventories, terrain edits, operation outcomes (idempotency: a restored world forgets the
ops after the checkpoint, so resubmitting one applies it again) and the causal event log.
Not copied: leases (authority is never restored: a restore fences every owner), mesh
membership, the coordinator, conflict and incident records (operator history), meta."""

BY_NAME: dict[str, Table] = {str(t.name): t for t in WORLD_TABLES}

PAGE_ROWS = 5000
"""Rows read per statement when scanning a table (keyset pages by primary key)."""
PAGE_ROWS_OF = {"ws_regions": 32, "ws_region_history": 32}
"""Smaller pages for tables of large rows (region snapshots, up to
``Config.max_snapshot_bytes`` each)."""


def columns_of(table: Table) -> list[str]:
    return [str(c.name) for c in table.columns]


def binary_columns(table: Table) -> frozenset[str]:
    return frozenset(str(c.name) for c in table.columns if isinstance(c.type, LargeBinary))


@dataclass(frozen=True, slots=True)
class Layout:
    """How one table's rows are laid out in a checkpoint: the column names, in order, and
    which of them are binary (base64 in JSON)."""

    table: str
    columns: tuple[str, ...]
    binary: frozenset[str]
    kinds: tuple[type | tuple[type, ...] | None, ...] | None = None
    """Per column, the JSON types its values may have (None: not checked)."""

    @classmethod
    def of(cls, table: Table) -> Layout:
        return cls(str(table.name), tuple(columns_of(table)), binary_columns(table))

    def check(self, values: Sequence[Any]) -> None:
        """Refuse a row whose values do not fit their columns (`ExportFormatError`)."""
        if len(values) != len(self.columns):
            raise ExportFormatError(
                f"a {self.table} row has {len(values)} values; its layout has "
                f"{len(self.columns)} columns"
            )
        if self.kinds is None:
            return
        for name, v, kind in zip(self.columns, values, self.kinds, strict=True):
            if v is None or kind is None:
                continue
            if isinstance(v, bool) and kind is not bool:
                raise ExportFormatError(f"{self.table}.{name}: a boolean where none belongs")
            if not isinstance(v, kind):
                raise ExportFormatError(
                    f"{self.table}.{name}: {type(v).__name__} value where "
                    f"{getattr(kind, '__name__', kind)} belongs"
                )

    def encode(self, row: Sequence[Any]) -> list[Any]:
        """A database row (values in `columns` order) as JSON-ready values."""
        if not self.binary:
            return list(row)
        return [
            base64.b64encode(bytes(v)).decode() if n in self.binary and v is not None else v
            for n, v in zip(self.columns, row, strict=True)
        ]

    def decode(self, values: Sequence[Any]) -> dict[str, Any]:
        """A JSON row back into column values (a dict for an INSERT)."""
        if len(values) != len(self.columns):
            raise ExportFormatError(
                f"a {self.table} row has {len(values)} values; its layout has "
                f"{len(self.columns)} columns"
            )
        out = dict(zip(self.columns, values, strict=True))
        for n in self.binary:
            v = out[n]
            if v is not None:
                try:
                    out[n] = base64.b64decode(v, validate=True)
                except (ValueError, TypeError):
                    raise ExportFormatError(f"{self.table}.{n}: not base64") from None
        return out


def target_layout(name: str, columns: Sequence[str]) -> tuple[Table, Layout]:
    """The world table ``name`` and the layout of rows recorded with ``columns`` (from a
    checkpoint or file, possibly written by another version of worldstate). Refuses a table
    this version does not know and rows that lack a required column; a column this version
    does not have is refused too (it would be lost silently)."""
    table = BY_NAME.get(name)
    if table is None:
        raise ExportFormatError(f"unknown table {name!r}: this worldstate has no such table")
    have = set(columns_of(table))
    extra = [c for c in columns if c not in have]
    if extra:
        raise ExportFormatError(f"table {name}: columns {extra} are unknown to this worldstate")
    missing = [
        c.name
        for c in table.columns
        if c.name not in columns and not c.nullable and c.default is None
    ]
    if missing:
        raise ExportFormatError(f"table {name}: rows lack the required columns {missing}")
    binary = binary_columns(table) & set(columns)
    kinds = tuple(_json_kind(table.c[c]) for c in columns)
    return table, Layout(name, tuple(columns), binary, kinds)


def _json_kind(col: Any) -> type | tuple[type, ...] | None:
    """The JSON type a column's values travel as."""
    t = col.type
    if isinstance(t, LargeBinary):
        return str
    if isinstance(t, (Integer, BigInteger)):
        return int
    if isinstance(t, Double):
        return (int, float)
    if isinstance(t, Boolean):
        return bool
    if isinstance(t, (String, Text)):
        return str
    return None


async def scan(
    conn: AsyncConnection, table: Table, *, where: Any = None, page: int | None = None
) -> AsyncIterator[list[Sequence[Any]]]:
    """Every row of ``table`` (values in column order), in pages ordered by primary key:
    keyset pagination (``WHERE pk > last ORDER BY pk LIMIT page``), so memory stays bounded
    and no server-side cursor is needed; inside one REPEATABLE READ / read-only transaction
    the pages together are one snapshot."""
    if page is None:
        page = PAGE_ROWS_OF.get(str(table.name), PAGE_ROWS)
    pk = list(table.primary_key.columns)
    last: tuple[Any, ...] | None = None
    while True:
        q = select(*table.columns)
        if where is not None:
            q = q.where(where)
        if last is not None:
            q = q.where(tuple_(*pk) > tuple_(*last)) if len(pk) > 1 else q.where(pk[0] > last[0])
        q = q.order_by(*pk).limit(page)
        rows = (await conn.execute(q)).all()
        if not rows:
            return
        yield [tuple(r) for r in rows]
        if len(rows) < page:
            return
        idx = [list(table.columns).index(c) for c in pk]
        last = tuple(rows[-1][i] for i in idx)


# -- scopes: a per-region or per-inventory part of a world -------------------------------------


@dataclass(frozen=True, slots=True)
class Scope:
    """Part of a world: some regions (Morton codes) or some inventories. A table with a
    ``region_key`` column belongs to a region scope by it (the causal log's world-wide
    stream, ``-1``, to none); ``ws_inventories`` belongs to an inventory scope by
    ``inventory_id``; other tables belong to neither."""

    regions: frozenset[int] = frozenset()
    inventories: frozenset[str] = frozenset()

    def to_json(self) -> dict[str, list[Any]]:
        out: dict[str, list[Any]] = {}
        if self.regions:
            out["regions"] = sorted(self.regions)
        if self.inventories:
            out["inventories"] = sorted(self.inventories)
        return out

    @classmethod
    def from_json(cls, doc: Mapping[str, Any] | None) -> Scope | None:
        if not doc:
            return None
        try:
            return cls(
                frozenset(int(x) for x in doc.get("regions", ())),
                frozenset(str(x) for x in doc.get("inventories", ())),
            )
        except (TypeError, ValueError):
            raise ExportFormatError(f"bad scope {doc!r:.200}") from None

    def covers(self, table: Table) -> bool:
        """Whether any of ``table``'s rows can belong to this scope."""
        if self.regions and "region_key" in table.c:
            return True
        return bool(self.inventories) and table is s.inventories

    def where(self, table: Table) -> Any:
        """The SQL condition selecting ``table``'s rows in this scope (None: none of them)."""
        conds = []
        if self.regions and "region_key" in table.c:
            conds.append(table.c.region_key.in_(sorted(self.regions)))
        if self.inventories and table is s.inventories:
            conds.append(table.c.inventory_id.in_(sorted(self.inventories)))
        if not conds:
            return None
        from sqlalchemy import or_

        return conds[0] if len(conds) == 1 else or_(*conds)

    def keeps(self, layout: Layout, values: Sequence[Any]) -> bool:
        """Whether a recorded row (JSON values in ``layout``) is in this scope."""
        cols = layout.columns
        if self.regions and "region_key" in cols:
            rk = values[cols.index("region_key")]
            if rk in self.regions:
                return True
        if self.inventories and layout.table == s.inventories.name:
            return values[cols.index("inventory_id")] in self.inventories
        return False


__all__ = [
    "BY_NAME",
    "WORLD_TABLES",
    "Layout",
    "Scope",
    "binary_columns",
    "columns_of",
    "scan",
    "target_layout",
]
