"""Tables, created idempotently, in the SQL subset CockroachDB and PostgreSQL (and SQLite)
all accept: integer keys chosen by the application (Morton codes, UUID text), no sequences or
SERIAL columns, no advisory locks, ``INSERT … ON CONFLICT`` rather than ``UPSERT``.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
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

SCHEMA_VERSION = 2
"""2: spatial strong tables keyed by (region_key, id), object-row checksums, op digests,
inventory versions, inventory-shard leases (no in-place migration from 1: use a fresh store)."""

metadata = MetaData()


def _snapshot_columns() -> list[Column[Any]]:
    """The columns of one stored snapshot, shared by the current row and its history."""
    return [
        Column("epoch", BigInteger, nullable=False),
        Column("object_count", Integer, nullable=False),
        Column("payload", LargeBinary, nullable=False),
        Column("checksum", LargeBinary, nullable=False),
        Column("write_id", String(36), nullable=False),
        Column("stored_by", Text, nullable=False),
        Column("stored_at", Double, nullable=False),
    ]


meta = Table(
    "ws_meta",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)

# Current state of each region. ``version`` counts every change (snapshot writes and strong
# commits); ``payload`` is the snapshot written at ``payload_version`` (what the checksum
# covers). Strong-committed objects live in ws_objects, so a commit never rewrites the blob.
regions = Table(
    "ws_regions",
    metadata,
    Column("region_key", BigInteger, primary_key=True, autoincrement=False),
    Column("version", BigInteger, nullable=False),
    Column("payload_version", BigInteger, nullable=False),
    *_snapshot_columns(),
)

# The last N versions of each region (the current one included): a second copy of the
# current state and the versions before it, for recovery from a corrupted current row.
region_history = Table(
    "ws_region_history",
    metadata,
    Column("region_key", BigInteger, primary_key=True, autoincrement=False),
    Column("version", BigInteger, primary_key=True, autoincrement=False),
    *_snapshot_columns(),
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

# Objects placed by strong operations (structures), one row each; part of their region's
# state (load_region returns snapshot objects plus these). Keyed by space: the primary key
# starts with the Morton region key (the region of the object's centre), so a CockroachDB
# range holds a contiguous piece of the world; the unique index keeps ids world-unique.
# ``op_id`` names the op that placed the object (a later loser is told it); ``checksum``
# covers every other column (`worldstate.store.object_rows.row_checksum`), verified on read.
objects = Table(
    "ws_objects",
    metadata,
    Column("region_key", BigInteger, primary_key=True, autoincrement=False),
    Column("object_id", Text, primary_key=True),
    Column("kind", Text, nullable=False),
    Column("lox", Double, nullable=False),
    Column("loy", Double, nullable=False),
    Column("loz", Double, nullable=False),
    Column("hix", Double, nullable=False),
    Column("hiy", Double, nullable=False),
    Column("hiz", Double, nullable=False),
    Column("data", Text, nullable=False),
    Column("op_id", String(36), nullable=False),
    Column("checksum", LargeBinary, nullable=False),
    Index("ws_objects_id", "object_id", unique=True),
)

# Resource nodes: remaining amount, claimed by ClaimResource.
resources = Table(
    "ws_resources",
    metadata,
    Column("region_key", BigInteger, primary_key=True, autoincrement=False),
    Column("resource_id", Text, primary_key=True),
    Column("x", Double, nullable=False),
    Column("y", Double, nullable=False),
    Column("z", Double, nullable=False),
    Column("capacity", Double, nullable=False),
    Column("remaining", Double, nullable=False),
    Index("ws_resources_id", "resource_id", unique=True),
)

# Items picked up (one winner per item).
items = Table(
    "ws_items",
    metadata,
    Column("region_key", BigInteger, primary_key=True, autoincrement=False),
    Column("item_id", Text, primary_key=True),
    Column("picked_by", Text, nullable=False),
    Column("op_id", String(36), nullable=False),
    Column("at", Double, nullable=False),
    Index("ws_items_id", "item_id", unique=True),
)

# Inventories: a count per (inventory, item), never below zero.
inventories = Table(
    "ws_inventories",
    metadata,
    Column("inventory_id", Text, primary_key=True),
    Column("item", Text, primary_key=True),
    Column("count", BigInteger, nullable=False),
)

# One version per inventory: goes up by one with every commit that changes the inventory
# (what `Committed.version` of an inventory op reports).
inventory_versions = Table(
    "ws_inventory_versions",
    metadata,
    Column("inventory_id", Text, primary_key=True),
    Column("version", BigInteger, nullable=False),
)

# Inventory shards' leases (`worldstate.strong._inventory`): the same rules and columns as
# ws_leases (`worldstate.store.leases`), in their own table so that the key spaces never mix
# (a shard number is not a region's Morton code, and nothing that lists regions sees them).
shard_leases = Table(
    "ws_shard_leases",
    metadata,
    Column("shard", BigInteger, primary_key=True, autoincrement=False),
    Column("owner", Text, nullable=False),
    Column("epoch", BigInteger, nullable=False),
    Column("expires_at", Double, nullable=False),
    Column("acquired_at", Double, nullable=False),
)

# Terrain modifications: commutative density deltas, all kept (merged, never lost).
terrain = Table(
    "ws_terrain",
    metadata,
    Column("region_key", BigInteger, primary_key=True, autoincrement=False),
    Column("op_id", String(36), primary_key=True),
    Column("cx", Double, nullable=False),
    Column("cy", Double, nullable=False),
    Column("cz", Double, nullable=False),
    Column("radius", Double, nullable=False),
    Column("delta", Double, nullable=False),
    Column("hlc", BigInteger, nullable=False),
)

# The first outcome of every operation: resubmitting an op_id returns it (idempotency).
outcomes = Table(
    "ws_outcomes",
    metadata,
    Column("op_id", String(36), primary_key=True),
    Column("op_type", String(64), nullable=False),
    Column("status", String(16), nullable=False),
    Column("version", BigInteger, nullable=True),
    Column("reason", Text, nullable=True),
    Column("winner_op_id", String(36), nullable=True),
    Column("server_id", Text, nullable=False),
    Column("region_key", BigInteger, nullable=True),
    Column("at", Double, nullable=False),
    Column("digest", String(32), nullable=True),
    # a digest of the op's fields: the same op_id reused for a different op is refused
)

# Conflict decisions of the strong pipeline, for the operator.
conflicts = Table(
    "ws_conflicts",
    metadata,
    Column("decision_id", String(36), primary_key=True),
    Column("region_key", BigInteger, nullable=True),
    Column("conflict_type", String(32), nullable=False),
    Column("rule", String(32), nullable=False),
    Column("subject", Text, nullable=False),
    Column("winners", Text, nullable=False),
    Column("losers", Text, nullable=False),
    Column("reason", Text, nullable=False),
    Column("server_id", Text, nullable=False),
    Column("at", Double, nullable=False),
    Index("ws_conflicts_at", "at"),
)

# Causal events: the durable log with vector clocks, keyed by space like every spatial
# table (``region_key`` first, so CockroachDB ranges hold contiguous space and a region's
# events are one span); each origin's ``seq`` is unique world-wide (the unique index).
events = Table(
    "ws_events",
    metadata,
    Column("region_key", BigInteger, primary_key=True, autoincrement=False),
    Column("origin", Text, primary_key=True),
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("op_id", String(36), nullable=False),
    Column("body", LargeBinary, nullable=False),
    Column("at", Double, nullable=False),
    Index("ws_events_origin_seq", "origin", "seq", unique=True),
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


# -- mesh (see worldstate.mesh._agent and worldstate.mesh._coordinator) ------------------------

# Each server's heartbeat in the store (the bus carries the fast one): who it is, when it
# last wrote, whether it believes it keeps authority, what it hears and its load. ``state``
# is "up" while it runs and "left" after a clean close (a crash leaves "up" to go stale).
members = Table(
    "ws_members",
    metadata,
    Column("server_id", Text, primary_key=True),
    Column("incarnation", BigInteger, nullable=False),
    Column("state", String(16), nullable=False),
    Column("authoritative", Boolean, nullable=False),
    Column("started_at", Double, nullable=False),
    Column("heartbeat_at", Double, nullable=False),
    Column("generation", BigInteger, nullable=False),
    Column("view", Text, nullable=False),
    Column("load", Text, nullable=False),
)

# The agreed membership of the mesh: one row (name "mesh"), replaced by the acting
# coordinator as servers join and leave; ``generation`` goes up by one per change (writes
# are conditional on it). The split-brain rule counts majorities of this set.
membership = Table(
    "ws_membership",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("generation", BigInteger, nullable=False),
    Column("members", Text, nullable=False),
    Column("changed_at", Double, nullable=False),
    Column("changed_by", Text, nullable=False),
)

# The mesh coordinator's election: a lease on a well-known name, with its own epoch (which
# fences the commands of a deposed coordinator). Kept apart from ws_leases, whose keys are
# Morton codes of regions.
coordinator = Table(
    "ws_coordinator",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("owner", Text, nullable=False),
    Column("epoch", BigInteger, nullable=False),
    Column("expires_at", Double, nullable=False),
    Column("acquired_at", Double, nullable=False),
)

# Regions the coordinator was told about (``assign``/``register_region``) and the server it
# last placed each on: known regions are these plus every stored or leased one.
assignments = Table(
    "ws_assignments",
    metadata,
    Column("region_key", BigInteger, primary_key=True, autoincrement=False),
    Column("server_id", Text, nullable=True),
    Column("assigned_at", Double, nullable=False),
)


# -- history (see worldstate.history) -----------------------------------------------------------

# One row per checkpoint. ``status`` is "writing" while its chunks go in (in short
# transactions, so that a checkpoint never holds the write lock) and "complete" once all of
# them are in; only complete checkpoints are listed, restored or exported. ``scope`` is null
# for a whole world, else JSON ``{"regions": [morton, ...]}`` or ``{"inventories": [...]}``
# (an imported per-region or per-inventory export). ``heads``: the causal log's highest seq
# per origin in the copy; ``tables``: JSON ``{table: [column, ...]}`` of the rows' layout.
checkpoints = Table(
    "ws_checkpoints",
    metadata,
    Column("checkpoint_id", String(36), primary_key=True),
    Column("name", Text, nullable=False),
    Column("status", String(16), nullable=False),
    Column("created_at", Double, nullable=False),
    Column("created_by", Text, nullable=False),
    Column("source", Text, nullable=False),
    Column("schema_version", Integer, nullable=False),
    Column("scope", Text, nullable=True),
    Column("regions", BigInteger, nullable=False),
    Column("objects", BigInteger, nullable=False),
    Column("rows", BigInteger, nullable=False),
    Column("bytes", BigInteger, nullable=False),
    Column("raw_bytes", BigInteger, nullable=False),
    Column("heads", Text, nullable=False),
    Column("tables", Text, nullable=False),
    Column("meta", Text, nullable=False),
    Index("ws_checkpoints_name", "name"),
    Index("ws_checkpoints_created", "created_at"),
)

# The rows of a checkpoint, per world table, in chunks: ``body`` is zlib-compressed JSON
# lines, one JSON array per row in the column order of ``ws_checkpoints.tables``.
checkpoint_chunks = Table(
    "ws_checkpoint_chunks",
    metadata,
    Column("checkpoint_id", String(36), primary_key=True),
    Column("table_name", String(64), primary_key=True),
    Column("chunk_no", Integer, primary_key=True, autoincrement=False),
    Column("row_count", Integer, nullable=False),
    Column("body", LargeBinary, nullable=False),
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
