"""The error-message table: each bad URL, absent service or wrong credential gives the
expected first line, and a problem no retry can fix is reported after ONE attempt (not
after the 12 retries of a transient failure). No timing asserts: attempts are counted."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.fix_services import PG_SERVER, require_service
from worldstate.cache import open_cache
from worldstate.cli.main import main
from worldstate.errors import StoreUnavailable, ValidationError
from worldstate.store import Store


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed again when the block ends


def _pg(db: str, user: str | None = None) -> str:
    parts = urlsplit(PG_SERVER)
    netloc = parts.netloc if user is None else f"{user}@{parts.hostname}:{parts.port or 5432}"
    return f"postgresql+psycopg://{netloc}/{db}"


async def _open_fails(url: str, *, read_only: bool) -> tuple[str, int]:
    store = Store(url, read_only=read_only)
    try:
        with pytest.raises(StoreUnavailable) as e:
            await store.open()
        return str(e.value), store.stats.transactions
    finally:
        await store.close()


@pytest.mark.parametrize("read_only", [True, False], ids=["inspect", "server"])
async def test_missing_database(read_only: bool) -> None:
    require_service("PostgreSQL", PG_SERVER, 5432)
    msg, attempts = await _open_fails(_pg("ws_no_such_db_here"), read_only=read_only)
    assert "the database ws_no_such_db_here does not exist" in msg
    assert "CREATE DATABASE" in msg
    assert attempts == 1


async def test_unknown_role_is_unauthorised() -> None:
    require_service("PostgreSQL", PG_SERVER, 5432)
    msg, attempts = await _open_fails(_pg("postgres", user="ws_no_such_role"), read_only=True)
    assert "refused the credentials of user 'ws_no_such_role' (unauthorised)" in msg
    assert attempts == 1


async def test_empty_postgres_database_has_no_schema(pg_url: str) -> None:
    msg, attempts = await _open_fails(pg_url, read_only=True)
    assert "no worldstate schema here" in msg and "worldstate migrate" in msg
    assert attempts == 1


async def test_empty_sqlite_file_has_no_schema(tmp_path: Path) -> None:
    f = tmp_path / "empty.db"
    f.touch()
    msg, attempts = await _open_fails(f"sqlite+aiosqlite:///{f}", read_only=True)
    assert "no worldstate schema here" in msg and "worldstate migrate" in msg
    assert attempts == 1


async def test_missing_sqlite_file_is_not_created(tmp_path: Path) -> None:
    f = tmp_path / "absent.db"
    msg, attempts = await _open_fails(f"sqlite+aiosqlite:///{f}", read_only=True)
    assert msg.startswith(f"no SQLite database at {f}")
    assert attempts == 0 and not f.exists()


async def test_unreachable_store_is_named_unreachable() -> None:
    url = f"postgresql+psycopg://postgres@127.0.0.1:{_closed_port()}/x"
    store = Store(url, read_only=True)
    store.policy = type(store.policy)(attempts=3, base=0.001, cap=0.002)
    try:
        with pytest.raises(StoreUnavailable) as e:
            await store.open()
    finally:
        await store.close()
    assert "the store is unreachable" in str(e.value) and "overloaded" not in str(e.value)


@pytest.mark.parametrize(
    "url", ["redis:/localhost", "redis://", "redis://:6379/0", "redis://host:port/0", "unix://"]
)
def test_malformed_cache_url_refused(url: str) -> None:
    with pytest.raises(ValidationError, match="malformed"):
        open_cache(
            url,
            prefix="ws:",
            ttl=1.0,
            max_entries=1,
            timeout=0.1,
            breaker_failures=1,
            breaker_reset=1.0,
        )


@pytest.mark.parametrize(
    ("argv", "first_line"),
    [
        (["inspect", "--store", "mysql://x/y", "regions"], "worldstate inspect: store URL"),
        (["inspect", "--store", "not a url", "regions"], "worldstate inspect: store URL"),
        (
            [
                "serve",
                "--id",
                "gs-1",
                "--store",
                "sqlite+aiosqlite:///:memory:",
                "--cache",
                "redis:/localhost",
                "--metrics-port",
                "0",
            ],
            "worldstate serve: cache url 'redis:/localhost' is malformed",
        ),
    ],
)
def test_cli_first_line(
    argv: list[str], first_line: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.splitlines()[-1].startswith(first_line), err


def test_broken_pipe_exits_quietly(tmp_path: Path) -> None:
    """`worldstate inspect ... | head -1`: no BrokenPipeError traceback."""
    import asyncio

    from regions import RegionKey
    from tests.worldstate.fix_world import obj, open_world

    url = f"sqlite+aiosqlite:///{tmp_path}/w.db"

    async def populate() -> None:
        async with open_world(url, "gs-1") as w:
            for i in range(300):
                k = RegionKey(i, 0, 0)
                await w.acquire_region(k)
                snap = await w.load_region(k)
                await w.store_region(snap.with_objects([obj(f"o{i}", k)]), expected_version=0)

    asyncio.run(populate())
    env = dict(os.environ)
    # --json: ~100 kB, more than a pipe buffers, so the writer must meet the closed pipe
    cmd = [
        sys.executable,
        "-m",
        "worldstate.cli.main",
        "inspect",
        "--store",
        url,
        "regions",
        "--json",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    assert proc.stdout is not None and proc.stderr is not None
    first = proc.stdout.readline()
    proc.stdout.close()  # what `head -1` does
    err = proc.stderr.read().decode()
    proc.wait(timeout=60)
    assert first.startswith(b"[")
    assert "Traceback" not in err and "BrokenPipe" not in err, err


def _cache_cli(tmp_path: Path, cache_url: str, capsys: pytest.CaptureFixture[str]) -> str:
    url = f"sqlite+aiosqlite:///{tmp_path}/w.db"
    assert main(["migrate", "--store", url]) == 0
    capsys.readouterr()
    assert main(["inspect", "--store", url, "cache", "--cache", cache_url]) == 1
    return capsys.readouterr().err.splitlines()[-1]


def test_cache_unreachable(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    line = _cache_cli(tmp_path, f"redis://127.0.0.1:{_closed_port()}/0", capsys)
    assert line.startswith("worldstate inspect: cannot reach the cache (redis://127.0.0.1:")


def test_cache_wrong_credentials(
    tmp_path: Path, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    parts = urlsplit(redis_url)
    bad = f"redis://ws-nobody:wrong-secret@{parts.hostname}:{parts.port or 6379}/0"
    line = _cache_cli(tmp_path, bad, capsys)
    assert "refused the credentials (unauthorised)" in line
    assert "wrong-secret" not in line  # no secret in the message
