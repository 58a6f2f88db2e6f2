"""No password in any output: URL redaction, and every message a failing bus, cache, store
or CLI produces with a password in its URL (captured logs and exceptions grepped)."""

from __future__ import annotations

import asyncio
import json
import logging
import socket

import pytest

import worldstate
from worldstate.bus import MqttBus
from worldstate.cache.redis_cache import RedisCache
from worldstate.cli.main import main as cli
from worldstate.errors import WorldStateError
from worldstate.security._redact import redact_url

SECRET = "S3cr3t-Pa55-Qq"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("mqtt://gs:S3cr3t@broker:1883", "mqtt://gs:***@broker:1883"),
        ("mqtts://gs:a%40b@broker?ca=/c.pem", "mqtts://gs:***@broker?ca=/c.pem"),
        ("redis://:pw@cache:6379/0", "redis://:***@cache:6379/0"),
        (
            "postgresql+psycopg://app:pw@db/world?sslmode=verify-full&password=x",
            "postgresql+psycopg://app:***@db/world?sslmode=verify-full&password=***",
        ),
        ("mqtt://broker:1883", "mqtt://broker:1883"),
        ("mqtt://[::1]:1883", "mqtt://[::1]:1883"),
        ("mqtt://u:p@[::1]:99", "mqtt://u:***@[::1]:99"),
        ("mqtt://u:p@host:notaport", "<unparsable URL>"),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def _clean(*texts: str) -> None:
    for text in texts:
        assert SECRET not in text


async def test_a_failing_bus_never_prints_its_password(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    url = f"mqtt://gs-1:{SECRET}@127.0.0.1:{_closed_port()}"
    bus = MqttBus(url, client_id="gs-1", prefix="t", connect_timeout=0.5)
    with pytest.raises(WorldStateError) as e:
        await bus.start()
    assert "gs-1:***@127.0.0.1" in str(e.value)
    assert "unreachable" in str(e.value)
    _clean(str(e.value), repr(e.value), repr(bus), bus.url, caplog.text)
    with pytest.raises(WorldStateError) as bad:
        MqttBus(url + "/path", client_id="gs-1", prefix="t")
    _clean(str(bad.value))


async def test_a_world_with_secrets_in_every_url_prints_none(
    caplog: pytest.LogCaptureFixture, tmp_path: object, mqtt_url: str, namespace: str
) -> None:
    caplog.set_level(logging.DEBUG)
    host = mqtt_url.split("://", 1)[1]
    cache = f"redis://:{SECRET}@127.0.0.1:{_closed_port()}/0"
    config = worldstate.Config(
        store_url=f"sqlite+aiosqlite:///{tmp_path}/w.db",
        server_id="gs-1",
        bus_url=f"mqtt://gs-1:{SECRET}@{host}",  # the test broker ignores credentials
        cache_url=cache,
        namespace=namespace,
    )
    async with worldstate.connect(config=config) as world:
        await world.acquire_region((0, 0, 0))  # goes through the (failing) cache
        stats = json.dumps(world.stats(), default=str)
        _clean(stats, repr(world.bus), repr(world.cache), str(world.cache))
    _clean(caplog.text)
    with pytest.raises(WorldStateError) as e:
        RedisCache(f"redis://:{SECRET}@host:badport/0", prefix="p:")
    _clean(str(e.value))


async def test_store_and_cli_errors_never_print_the_password(
    capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    url = f"postgresql+psycopg://app:{SECRET}@127.0.0.1:{_closed_port()}/world"
    code = await asyncio.to_thread(cli, ["inspect", "--store", url, "regions"])
    assert code != 0
    out = capsys.readouterr()
    _clean(out.out, out.err, caplog.text)
    assert out.err  # it said what went wrong
    code = await asyncio.to_thread(cli, ["keys", "list", "--store", url + "?sslmode=bogus"])
    out = capsys.readouterr()
    assert code != 0 and "sslmode" in out.err
    _clean(out.out, out.err)
