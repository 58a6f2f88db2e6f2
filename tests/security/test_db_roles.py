"""``deploy/cockroach/roles.sql`` on PostgreSQL (roles renamed per test, in the test's own
database): the app role creates and writes the world, the inspector role reads it with
``worldstate inspect`` but cannot write, nor read the secrets in ``ws_meta``."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import pytest

from tests.fix_services import PG_SERVER
from worldstate import PlaceStructure, connect
from worldstate.cli.main import main as cli

ROLES = Path(__file__).resolve().parents[2] / "deploy" / "cockroach" / "roles.sql"


def _statements(sql: str) -> list[str]:
    body = "\n".join(line for line in sql.splitlines() if not line.lstrip().startswith("--"))
    return [s.strip() for s in body.split(";") if s.strip()]


@pytest.fixture
def roles(pg_url: str) -> Iterator[tuple[str, str, list[str]]]:
    """(app role, inspector role, the after-schema statements); roles dropped afterwards."""
    tag = uuid.uuid4().hex[:8]
    app, insp = f"wsapp_{tag}", f"wsinsp_{tag}"
    text = ROLES.read_text().replace("worldstate_app", app)
    text = text.replace("worldstate_inspector", insp)
    before, after = text.split("-- @after-schema", 1)
    db = urlsplit(pg_url).path.lstrip("/")
    with psycopg.connect(f"{PG_SERVER}/{db}", autocommit=True) as conn:
        for stmt in _statements(before):
            conn.execute(stmt)
    try:
        yield app, insp, _statements(after)
    finally:
        with psycopg.connect(f"{PG_SERVER}/{db}", autocommit=True) as conn:
            for role in (app, insp):
                conn.execute(f"DROP OWNED BY {role} CASCADE")
        with psycopg.connect(f"{PG_SERVER}/postgres", autocommit=True) as conn:
            for role in (insp, app):
                conn.execute(f"DROP ROLE IF EXISTS {role}")


def _as(url: str, role: str) -> str:
    parts = urlsplit(url)
    return parts._replace(netloc=f"{role}@{parts.hostname}:{parts.port or 5432}").geturl()


async def test_the_inspector_role_reads_but_cannot_write(
    pg_url: str, roles: tuple[str, str, list[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    app, insp, after = roles
    # the app creates the world and writes to it
    async with connect(_as(pg_url, app), server_id="gs-1") as world:
        await world.acquire_region((0, 0, 0))
        await world.submit(PlaceStructure(structure_id="s1", lo=(1, 1, 1), hi=(2, 2, 2)))
    db = urlsplit(pg_url).path.lstrip("/")
    with psycopg.connect(f"{PG_SERVER}/{db}", autocommit=True) as conn:
        for stmt in after:
            conn.execute(stmt)
    # the inspector reads with the CLI
    store = _as(pg_url, insp)
    capsys.readouterr()
    assert await asyncio.to_thread(cli, ["inspect", "--store", store, "regions", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert len(listed) == 1, listed
    for view in (["servers", "--json"], ["conflicts", "--json"], ["region", "0,0,0"]):
        assert await asyncio.to_thread(cli, ["inspect", "--store", store, *view]) == 0, view
    # ...and can write nothing, nor read the keys
    host = urlsplit(PG_SERVER).hostname
    with psycopg.connect(f"postgresql://{insp}@{host}/{db}", autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM ws_objects").fetchone() == (1,)
        for stmt in (
            "INSERT INTO ws_leases (region_key, owner, epoch, expires_at) VALUES (9, 'x', 1, 1)",
            "UPDATE ws_regions SET version = version + 1",
            "DELETE FROM ws_objects",
            "DROP TABLE ws_events",
            "CREATE TABLE evil (a int)",
            "SELECT value FROM ws_meta",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(stmt)
