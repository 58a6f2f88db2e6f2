"""Fixtures for tests that need real services: each test gets its own PostgreSQL database,
Redis key prefix and MQTT topic prefix, and everything is removed afterwards.

Service addresses come from ``WORLDSTATE_TEST_PG`` (a server URL without database,
default ``postgresql://postgres@127.0.0.1:5432``), ``WORLDSTATE_TEST_REDIS``
(default ``redis://127.0.0.1:6379/0``) and ``WORLDSTATE_TEST_MQTT`` (default
``mqtt://127.0.0.1:1883``).

A missing service skips its tests locally, but under ``CI=true`` it is a failure: CI must
never go green by skipping. The first check per service is cached, so a down server gives
one clear message per test rather than a hang per test.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from urllib.parse import urlsplit

import pytest

PG_SERVER = os.environ.get("WORLDSTATE_TEST_PG", "postgresql://postgres@127.0.0.1:5432")
REDIS_URL = os.environ.get("WORLDSTATE_TEST_REDIS", "redis://127.0.0.1:6379/0")
MQTT_URL = os.environ.get("WORLDSTATE_TEST_MQTT", "mqtt://127.0.0.1:1883")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

_reachable: dict[str, bool] = {}


def _port_open(url: str, default_port: int) -> bool:
    if url not in _reachable:
        parts = urlsplit(url)
        host, port = parts.hostname or "127.0.0.1", parts.port or default_port
        try:
            with socket.create_connection((host, port), timeout=1.0):
                _reachable[url] = True
        except OSError:
            _reachable[url] = False
    return _reachable[url]


def require_service(name: str, url: str, default_port: int) -> None:
    """Skip (locally) or fail (under CI=true) when the service is not reachable."""
    if _port_open(url, default_port):
        return
    msg = f"{name} is not reachable at {url}"
    if IN_CI:
        pytest.fail(f"{msg}; CI=true requires every service (see .ci/run)", pytrace=False)
    pytest.skip(msg)


def unique_name(prefix: str = "t") -> str:
    """A short unique identifier, safe as a database name, key prefix or topic level."""
    return f"{prefix}{uuid.uuid4().hex[:12]}"


@pytest.fixture
def pg_url() -> Iterator[str]:
    """URL (``postgresql+psycopg://``) of a fresh PostgreSQL database, dropped afterwards."""
    require_service("PostgreSQL", PG_SERVER, 5432)
    import psycopg

    db = unique_name("ws_test_")
    admin = f"{PG_SERVER}/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{db}"')
    parts = urlsplit(PG_SERVER)
    yield f"postgresql+psycopg://{parts.netloc}/{db}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


@pytest.fixture
def sqlite_url(tmp_path: os.PathLike[str]) -> str:
    """URL of a fresh SQLite file in the test's temporary directory."""
    return f"sqlite+aiosqlite:///{os.fspath(tmp_path)}/world.db"


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest) -> str:
    """The same test body against the embedded store and a real PostgreSQL database."""
    name = "sqlite_url" if request.param == "sqlite" else "pg_url"
    url: str = request.getfixturevalue(name)
    return url


@pytest.fixture
def redis_prefix() -> str:
    return unique_name("wst:") + ":"


@pytest.fixture
async def redis_url(redis_prefix: str) -> AsyncIterator[str]:
    """URL of the test Redis; every key under ``redis_prefix`` is deleted afterwards."""
    require_service("Redis", REDIS_URL, 6379)
    yield REDIS_URL
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        keys = [k async for k in client.scan_iter(match=f"{redis_prefix}*", count=1000)]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


@pytest.fixture
def mqtt_prefix() -> str:
    """A topic prefix of this test's own (no retained message outlives the test: tests that
    retain must clear their retained topics)."""
    return unique_name("wst-")


@pytest.fixture
def mqtt_url() -> str:
    require_service("Mosquitto", MQTT_URL, 1883)
    return MQTT_URL


@pytest.fixture
def namespace() -> str:
    """A unique worldstate namespace (Redis key prefix and MQTT topic prefix in one)."""
    return unique_name("ws")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "services: needs PostgreSQL/Redis/Mosquitto")


class Backend:
    """A store URL with the cache that goes with it and a unique namespace."""

    def __init__(self, name: str, store_url: str, cache_url: str, namespace: str) -> None:
        self.name, self.store_url, self.cache_url, self.namespace = (
            name,
            store_url,
            cache_url,
            namespace,
        )

    def __repr__(self) -> str:
        return f"Backend({self.name})"


@pytest.fixture(params=["sqlite", "postgresql+redis"])
def backend(request: pytest.FixtureRequest, namespace: str) -> Backend:
    """Embedded (SQLite + in-process cache) and production-like (PostgreSQL + Redis)."""
    if request.param == "sqlite":
        return Backend("sqlite", request.getfixturevalue("sqlite_url"), "memory://", namespace)
    pg: str = request.getfixturevalue("pg_url")
    request.getfixturevalue("redis_url")
    # the Redis keys live under the namespace; clean them like redis_url does its prefix
    request.addfinalizer(lambda: _drop_redis_prefix(f"{namespace}:"))
    return Backend("postgresql+redis", pg, REDIS_URL, namespace)


def _drop_redis_prefix(prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()
