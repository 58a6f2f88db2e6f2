"""Tables, created idempotently, in the SQL subset CockroachDB and PostgreSQL (and SQLite)
all accept: integer keys chosen by the application (Morton codes, UUID text), no sequences or
SERIAL columns, no advisory locks, ``INSERT … ON CONFLICT`` rather than ``UPSERT``.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Double,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    select,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

SCHEMA_VERSION = 1

metadata = MetaData()

meta = Table(
    "ws_meta",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)

# Current state of each region: the newest version's full snapshot.
regions = Table(
    "ws_regions",
    metadata,
    Column("region_key", BigInteger, primary_key=True, autoincrement=False),
    Column("version", BigInteger, nullable=False),
    Column("epoch", BigInteger, nullable=False),
    Column("object_count", Integer, nullable=False),
    Column("payload", LargeBinary, nullable=False),
    Column("checksum", LargeBinary, nullable=False),
    Column("write_id", String(36), nullable=False),
    Column("stored_by", Text, nullable=False),
    Column("stored_at", Double, nullable=False),
)

# The last N versions of each region (the current one included): a second copy of the
# current state and the versions before it, for recovery from a corrupted current row.
region_history = Table(
    "ws_region_history",
    metadata,
    Column("region_key", BigInteger, primary_key=True, autoincrement=False),
    Column("version", BigInteger, primary_key=True, autoincrement=False),
    Column("epoch", BigInteger, nullable=False),
    Column("object_count", Integer, nullable=False),
    Column("payload", LargeBinary, nullable=False),
    Column("checksum", LargeBinary, nullable=False),
    Column("write_id", String(36), nullable=False),
    Column("stored_by", Text, nullable=False),
    Column("stored_at", Double, nullable=False),
)

# Authority: one row per region that was ever leased. epoch is the fencing token.
leases = Table(
    "ws_leases",
    metadata,
    Column("region_key", BigInteger, primary_key=True, autoincrement=False),
    Column("owner", Text, nullable=False),
    Column("epoch", BigInteger, nullable=False),
    Column("expires_at", Double, nullable=False),
    Column("acquired_at", Double, nullable=False),
)

# What the store noticed and repaired (corruption) — read by the operator.
incidents = Table(
    "ws_incidents",
    metadata,
    Column("incident_id", String(36), primary_key=True),
    Column("region_key", BigInteger, nullable=False),
    Column("kind", String(32), nullable=False),
    Column("detail", Text, nullable=False),
    Column("at", Double, nullable=False),
    Index("ws_incidents_region", "region_key"),
)


def insert_for(dialect: str, table: Table) -> Any:
    """An ``INSERT`` supporting ``on_conflict_do_*`` for the connection's dialect."""
    if dialect == "sqlite":
        return sqlite.insert(table)
    return postgresql.insert(table)  # PostgreSQL and CockroachDB


class SchemaTooNew(Exception):
    pass


async def create_schema(conn: AsyncConnection) -> int:
    """Create missing tables and record the schema version; returns the stored version.

    Safe to run from many servers at once (``CREATE TABLE IF NOT EXISTS``; the version row
    is inserted with ``ON CONFLICT DO NOTHING``)."""
    await conn.run_sync(lambda c: metadata.create_all(c, checkfirst=True))
    ins = insert_for(conn.dialect.name, meta).values(
        name="schema_version", value=str(SCHEMA_VERSION)
    )
    await conn.execute(ins.on_conflict_do_nothing(index_elements=["name"]))
    stored = (
        await conn.execute(select(meta.c.value).where(meta.c.name == "schema_version"))
    ).scalar_one()
    return int(stored)
