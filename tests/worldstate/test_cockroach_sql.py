"""CockroachDB fidelity of the store and strong path (issue 9, item 8): every statement a
scripted workload runs on PostgreSQL is captured as a SQLAlchemy statement, compiled with
the ``cockroachdb`` dialect and compared with the golden files in ``golden/`` (one per
table, named by the statement's first ``ws_`` table). The capture is generic (an engine
event), so a rewritten strong path is covered without changing this test: regenerate the
files with ``WORLDSTATE_UPDATE_GOLDEN=1`` and review the diff.

Every captured statement — of any table, background loops included — must also compile
for CockroachDB and stay inside the promised subset (no UPSERT, advisory locks,
LISTEN/NOTIFY or sequences)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy.engine import make_url

from regions import RegionKey
from tests.sql_capture import FORBIDDEN, SqlCapture
from worldstate import VersionConflict
from worldstate.operations import (
    ChangeInventory,
    ClaimResource,
    ModifyTerrain,
    PickUpItem,
    PlaceStructure,
    TransferItems,
)

from .fix_world import obj, open_world

GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("WORLDSTATE_UPDATE_GOLDEN", "") == "1"

STORE_TABLES = (
    "ws_meta",
    "ws_regions",
    "ws_region_history",
    "ws_leases",
    "ws_objects",
    "ws_resources",
    "ws_items",
    "ws_inventories",
    "ws_terrain",
    "ws_outcomes",
    "ws_conflicts",
    "ws_incidents",
)
"""The tables of the store and strong path (mesh, causal and eventual tables are checked
for the subset but have no golden file: their loops run on timers)."""

K, FAR = RegionKey(0, 0, 0), RegionKey(3, 3, 3)
# no timer-driven store writes during the script: the capture is deterministic
QUIET: dict[str, Any] = {
    "lease_ttl": 600.0,
    "lease_renew_interval": 500.0,
    "snapshot_interval": 600.0,
}


def _corrupt_payload(url: str) -> None:
    """Rot the current snapshot of K behind the store's back (outside the capture)."""
    u = make_url(url)
    dsn = f"postgresql://{u.username}@{u.host}:{u.port}/{u.database}"
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("UPDATE ws_regions SET payload = %s WHERE region_key = %s", (b"rot", K.morton))


async def _workload(pg_url: str, namespace: str, capture: SqlCapture) -> None:
    bus = f"memory://{namespace}"
    async with (
        open_world(pg_url, "gs-1", bus_url=bus, namespace=namespace, **QUIET) as a,
        open_world(pg_url, "gs-2", bus_url=bus, namespace=namespace, **QUIET) as b,
    ):
        capture.attach(a.store.engine)
        capture.attach(b.store.engine)
        # region state: the three write modes, loads, history, listings
        await a.acquire_region(K)
        s = await a.load_region(K)
        v1 = await a.store_region(s.with_objects([obj("rock", K)]), expected_version=0)
        await a.store_region(
            s.with_objects([obj("rock", K), obj("tree", K, 50.0)]), expected_version=v1
        )
        with pytest.raises(VersionConflict):
            await a.store_region(s, expected_version=v1)
        await a.load_region(K, consistent=False)
        await a.store.history(K)
        await a.store.regions()
        await a.store.leases()
        await a.renew_leases()
        # the strong path: owned region, forwarded, unowned, conflicts, idempotency
        await a.put_resource("ore", (50, 50, 50), 5)
        place = PlaceStructure(structure_id="wall", lo=(100, 100, 100), hi=(110, 110, 110))
        await a.submit_many(
            [
                place,
                PlaceStructure(structure_id="clash", lo=(105, 105, 105), hi=(115, 115, 115)),
                ClaimResource(resource_id="ore", claimant="p1", position=(50, 50, 50), amount=3),
                ClaimResource(resource_id="ore", claimant="p2", position=(50, 50, 50), amount=3),
                PickUpItem(item_id="gem", picker="p1", position=(9, 9, 9)),
                PickUpItem(item_id="gem", picker="p2", position=(9, 9, 9)),
                ModifyTerrain(center=(20, 20, 20), radius=5, delta=1.0),
            ]
        )
        await a.submit(place)  # the same op id again
        await b.submit(PlaceStructure(structure_id="fwd", lo=(300, 300, 300), hi=(301, 301, 301)))
        lo = FAR.bounds[0]
        await b.submit(
            PlaceStructure(structure_id="free", lo=lo, hi=(lo[0] + 1, lo[1] + 1, lo[2] + 1))
        )
        await a.submit(ChangeInventory(inventory_id="bag", item="gold", delta=10))
        await a.submit(ChangeInventory(inventory_id="bag", item="gold", delta=-20))  # refused
        await a.submit(
            TransferItems(from_inventory="bag", to_inventory="chest", item="gold", quantity=4)
        )
        await a.get_inventory("bag")
        await a.get_resource("ore")
        # queries: a small box and a 200 km one (the Morton-range scan)
        await b.query(((0, 0, 0), (200, 200, 200)))
        await b.query(((-1e5, -1e5, -1e5), (1e5, 1e5, 1e5)))
        # corruption: detected, recovered, reported
        _corrupt_payload(pg_url)
        await a.load_region(K)
        await a.store.incidents()
        await a.store.conflicts()
        await a.release_region(K)
        capture.detach()


async def test_store_and_strong_sql_compiles_for_cockroachdb_as_recorded(
    pg_url: str, namespace: str
) -> None:
    capture = SqlCapture()
    await _workload(pg_url, namespace, capture)
    assert capture.failures == [], "every statement compiles for CockroachDB"
    for sql in sorted(capture.statements):
        for what, pattern in FORBIDDEN.items():
            assert not pattern.search(sql), f"{what} is outside the CRDB/PG subset:\n{sql}"
    got = capture.by_table(STORE_TABLES)
    assert set(got) >= {"ws_regions", "ws_leases", "ws_objects", "ws_outcomes"}
    files = {p.stem: p for p in GOLDEN.glob("ws_*.sql")}
    if UPDATE:
        GOLDEN.mkdir(exist_ok=True)
        for stale in set(files) - set(got):
            files[stale].unlink()
        for table, statements in got.items():
            (GOLDEN / f"{table}.sql").write_text(_render(table, statements))
        return
    assert sorted(files) == sorted(got), (
        "golden files and captured tables differ; regenerate with WORLDSTATE_UPDATE_GOLDEN=1"
    )
    for table, statements in got.items():
        want = files[table].read_text()
        assert _render(table, statements) == want, (
            f"SQL on {table} changed (compiled for CockroachDB); if intended, regenerate with "
            "WORLDSTATE_UPDATE_GOLDEN=1 and review the diff"
        )


def test_schema_ddl_compiles_for_cockroachdb_as_recorded() -> None:
    """Every CREATE TABLE / CREATE INDEX of the store's schema, for CockroachDB."""
    from sqlalchemy.schema import CreateIndex, CreateTable

    from tests.sql_capture import cockroach_dialect, normalise
    from worldstate.store import schema

    dialect = cockroach_dialect()
    ddl = []
    for table in schema.metadata.sorted_tables:
        ddl.append(normalise(str(CreateTable(table).compile(dialect=dialect))))
        for index in sorted(table.indexes, key=lambda i: str(i.name)):
            ddl.append(normalise(str(CreateIndex(index).compile(dialect=dialect))))
    for sql in ddl:
        for what, pattern in FORBIDDEN.items():
            assert not pattern.search(sql), f"{what} is outside the CRDB/PG subset:\n{sql}"
    text = _render("the schema (DDL)", ddl)
    path = GOLDEN / "schema.ddl.sql"
    if UPDATE:
        path.write_text(text)
        return
    assert path.read_text() == text, (
        "the schema changed; if intended, regenerate with WORLDSTATE_UPDATE_GOLDEN=1"
    )


def _render(table: str, statements: list[str]) -> str:
    head = (
        f"-- Statements on {table}, compiled with the cockroachdb dialect "
        "(tests/worldstate/test_cockroach_sql.py).\n"
        "-- Regenerate: WORLDSTATE_UPDATE_GOLDEN=1 pytest tests/worldstate/test_cockroach_sql.py\n"
    )
    return head + "".join(f"\n{sql};\n" for sql in statements)


SPATIAL_TABLES = (
    "ws_regions",
    "ws_region_history",
    "ws_leases",
    "ws_objects",
    "ws_items",
    "ws_resources",
    "ws_terrain",
    "ws_events",
)


@pytest.mark.parametrize("name", SPATIAL_TABLES)
def test_every_spatial_table_is_keyed_by_space_and_split_by_the_deploy_script(name: str) -> None:
    """Issue 9: CockroachDB ranges follow space — the primary key starts with the Morton
    region key, and deploy/cockroach/splits.py splits the table at Morton boundaries."""
    import importlib.util

    from worldstate.store import schema

    path = Path(__file__).resolve().parents[2] / "deploy" / "cockroach" / "splits.py"
    spec = importlib.util.spec_from_file_location("ws_deploy_splits", path)
    assert spec is not None and spec.loader is not None
    splits = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(splits)
    table = schema.metadata.tables[name]
    assert next(iter(table.primary_key.columns)).name == "region_key"
    assert name in splits.REGION_TABLES
