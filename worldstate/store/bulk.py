"""Multi-row INSERTs that cost one statement whatever the number of rows.

PostgreSQL and CockroachDB: ``INSERT INTO t (cols) SELECT u.c0, CAST(:c1 AS type), … FROM
unnest(CAST(:c0 AS type[]), …) AS u(c0, …)`` — one bound array per column whose values vary
and one scalar per column whose value every row shares, so the statement text (and its parse
and plan) is the same for 1 row or 2,000 of one shape, and the driver sends a handful of
parameters instead of thousands.
SQLite: a multi-row ``VALUES`` list, in chunks that stay under its bound-parameter limit.
Every value is a bound parameter; only table and column names (from `schema`) are in the
text."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
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
    and_,
    literal,
    or_,
    text,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from worldstate.store import schema as s

__all__ = ["insert_rows", "insert_sql"]

CHUNK = 1000

_ARRAY_TYPES: list[tuple[type[Any], str]] = [
    (BigInteger, "INT8[]"),
    (Integer, "INT8[]"),
    (Double, "FLOAT8[]"),
    (Boolean, "BOOL[]"),
    (LargeBinary, "BYTEA[]"),
    (String, "TEXT[]"),
    (Text, "TEXT[]"),
]


def _array_type(col: Any) -> str:
    for t, name in _ARRAY_TYPES:
        if isinstance(col.type, t):
            return name
    raise TypeError(f"no array type for column {col.name} ({col.type})")


async def insert_rows(
    conn: AsyncConnection,
    table: Table,
    rows: Sequence[Mapping[str, Any]],
    *,
    on_conflict: str = "",
    set_add: Sequence[str] = (),
    conflict_cols: Sequence[str] = (),
    returning: Sequence[str] = (),
    add_at_most: int | None = None,
) -> list[tuple[Any, ...]]:
    """Insert ``rows`` (dicts with the same keys). ``on_conflict`` is ``""`` (none),
    ``"nothing"`` (``ON CONFLICT DO NOTHING``) or ``"add"`` (``ON CONFLICT (conflict_cols)
    DO UPDATE SET c = t.c + excluded.c`` for each column in ``set_add``; with
    ``add_at_most``, only where every sum stays at most that — a row whose sum would pass it
    is left unchanged and not returned). Returns the ``returning`` columns of the rows
    written."""
    if not rows:
        return []
    cols = list(rows[0].keys())
    if conn.dialect.name == "sqlite":
        return await _sqlite(
            conn, table, rows, cols, on_conflict, set_add, conflict_cols, returning, add_at_most
        )
    sql, params = insert_sql(
        table,
        rows,
        on_conflict=on_conflict,
        set_add=set_add,
        conflict_cols=conflict_cols,
        returning=returning,
        add_at_most=add_at_most,
    )
    res = await conn.execute(text(sql), params)
    return [tuple(r) for r in res.all()] if returning else []


async def _sqlite(
    conn: AsyncConnection,
    table: Table,
    rows: Sequence[Mapping[str, Any]],
    cols: list[str],
    on_conflict: str,
    set_add: Sequence[str],
    conflict_cols: Sequence[str],
    returning: Sequence[str],
    add_at_most: int | None,
) -> list[tuple[Any, ...]]:
    out: list[tuple[Any, ...]] = []
    ins = s.insert_for("sqlite", table)
    step = max(1, min(CHUNK, 30000 // max(1, len(cols))))
    for i in range(0, len(rows), step):
        stmt = ins.values([dict(r) for r in rows[i : i + step]])
        if on_conflict == "nothing":
            stmt = stmt.on_conflict_do_nothing()
        elif on_conflict == "add":
            where = None
            if add_at_most is not None:
                # exact integers, never an overflowing sum: adding d > 0 keeps c <= at_most
                # iff c <= at_most - d (a subtraction that cannot overflow)
                where = and_(
                    *(
                        or_(
                            stmt.excluded[c] <= 0,
                            table.c[c] <= literal(add_at_most) - stmt.excluded[c],
                        )
                        for c in set_add
                    )
                )
            stmt = stmt.on_conflict_do_update(
                index_elements=list(conflict_cols),
                set_={c: table.c[c] + stmt.excluded[c] for c in set_add},
                where=where,
            )
        if returning:
            stmt = stmt.returning(*(table.c[c] for c in returning))
            out.extend(tuple(r) for r in (await conn.execute(stmt)).all())
        else:
            await conn.execute(stmt)
    return out


def insert_sql(
    table: Table,
    rows: Sequence[Mapping[str, Any]],
    *,
    prefix: str = "c",
    on_conflict: str = "",
    set_add: Sequence[str] = (),
    conflict_cols: Sequence[str] = (),
    returning: Sequence[str] = (),
    add_at_most: int | None = None,
) -> tuple[str, dict[str, Any]]:
    """The PostgreSQL/CockroachDB text of `insert_rows` (``rows`` not empty) and its bound
    parameters, named ``{prefix}0``, ``{prefix}1``, … — so that several can be combined into
    one statement (`worldstate.store.strong_rows.write_group`)."""
    cols = list(rows[0].keys())
    name = table.name
    # a column whose value is the same in every row is bound once, as a scalar: only the
    # columns that vary travel as arrays (a group's outcomes share their type, status,
    # writer and time; placed objects their kind and often their data)
    n = len(rows)
    values = {c: [r[c] for r in rows] for c in cols}
    same = {c for c in cols if n > 1 and values[c].count(values[c][0]) == n}
    varying = [c for c in cols if c not in same]
    if not varying:
        same.discard(cols[0])
        varying = [cols[0]]
    arrays = ", ".join(
        f"CAST(:{prefix}{cols.index(c)} AS {_array_type(table.c[c])})" for c in varying
    )
    picks = ", ".join(
        f"CAST(:{prefix}{i} AS {_array_type(table.c[c])[:-2]})" if c in same else f"u.{c}"
        for i, c in enumerate(cols)
    )
    sql = (
        f"INSERT INTO {name} ({', '.join(cols)}) SELECT {picks}"  # noqa: S608
        f" FROM unnest({arrays}) AS u({', '.join(varying)})"
    )
    if on_conflict == "nothing":
        sql += " ON CONFLICT DO NOTHING"
    elif on_conflict == "add":
        sets = ", ".join(f"{c} = {name}.{c} + excluded.{c}" for c in set_add)
        sql += f" ON CONFLICT ({', '.join(conflict_cols)}) DO UPDATE SET {sets}"
        if add_at_most is not None:
            # compared as numeric: the sum must not overflow while being checked
            # exact integers, never an overflowing sum (see the SQLite branch)
            sql += " WHERE " + " AND ".join(
                f"(excluded.{c} <= 0 OR {name}.{c} <= :{prefix}_at_most - excluded.{c})"
                for c in set_add
            )
    if returning:
        sql += f" RETURNING {', '.join(returning)}"
    params: dict[str, Any] = {
        f"{prefix}{i}": values[c][0] if c in same else values[c] for i, c in enumerate(cols)
    }
    if on_conflict == "add" and add_at_most is not None:
        params[f"{prefix}_at_most"] = add_at_most
    return sql, params
