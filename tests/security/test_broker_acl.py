"""The shipped broker config (``deploy/mosquitto/``) on a private Mosquitto: TLS with a CA
made in the test and client certificates, passwords, the ACL; clear errors, no password in
any message."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import pytest

from tests.worldstate.fix_mesh import until
from worldstate.bus import Message, MqttBus
from worldstate.errors import BusRefused

from .fix_broker import USERS, SecureBroker, secure_broker

__all__ = ["secure_broker"]

PREFIX = "ws"  # the namespace the shipped ACL is written for


async def _received(bus: MqttBus, topic: str) -> list[Message]:
    got: list[Message] = []
    sub = bus.subscribe(topic, got.append)
    await sub.wait_active(timeout=10)
    return got


async def _until(cond: Callable[[], bool], what: str) -> None:
    await until(cond, what)


async def test_tls_with_client_certificates_works(secure_broker: SecureBroker) -> None:
    b = secure_broker
    async with (
        MqttBus(b.url("gs-1"), client_id="gs-1", prefix=PREFIX) as server,
        MqttBus(b.url("inspector"), client_id="inspector", prefix=PREFIX) as watcher,
    ):
        got = await _received(watcher, "#")
        await server.publish("members/gs-1", b"hello", qos=1)
        await _until(lambda: [m.payload for m in got] == [b"hello"], "delivery over TLS")


async def test_the_wrong_ca_fails_clearly(secure_broker: SecureBroker) -> None:
    b = secure_broker
    bus = MqttBus(b.url("gs-1", pki=b.wrong), client_id="gs-1", prefix=PREFIX, connect_timeout=30)
    with pytest.raises(BusRefused) as e:
        await bus.start()
    text = str(e.value)
    assert "certificate" in text.lower() and "CA" in text
    assert USERS["gs-1"] not in text


async def test_a_wrong_password_is_not_authorized_and_never_printed(
    secure_broker: SecureBroker, caplog: pytest.LogCaptureFixture
) -> None:
    b = secure_broker
    secret = "Wr0ng-Pa55word-Xyz"
    caplog.set_level(logging.DEBUG)
    bus = MqttBus(b.url("gs-1", secret), client_id="gs-1", prefix=PREFIX, connect_timeout=30)
    with pytest.raises(BusRefused) as e:  # at once: a timeout would be a BusUnavailable
        await bus.start()
    text = str(e.value)
    assert "not authorized" in text or "bad user name or password" in text
    assert "gs-1:***@localhost" in text
    for where in (text, repr(bus), bus.url, caplog.text):
        assert secret not in where
    unknown = MqttBus(
        b.url("nobody", "x" * 12, cert_of="gs-1"),
        client_id="gs-9",
        prefix=PREFIX,
        connect_timeout=30,
    )
    with pytest.raises(BusRefused):
        await unknown.start()


async def test_the_acl_keeps_each_client_to_its_topics(secure_broker: SecureBroker) -> None:
    b = secure_broker
    async with (
        MqttBus(b.url("gs-1"), client_id="gs-1", prefix=PREFIX) as server,
        MqttBus(b.url("inspector"), client_id="inspector", prefix=PREFIX) as watcher,
        MqttBus(b.url("coord-1"), client_id="coord-1", prefix=PREFIX) as coord,
    ):
        got = await _received(watcher, "#")
        # refused by the broker: another server's presence, a coordinator command, the
        # membership, outside the namespace; the inspector writes nothing
        await server.publish("members/gs-2", b"deny-1", qos=1)
        await server.publish("cmd/gs-2", b"deny-2", qos=1)
        await server.publish("mesh/membership", b"deny-3", qos=1, retain=True)
        await watcher.publish("ops/gs-1", b"deny-4", qos=1)
        await coord.publish("members/gs-1", b"deny-5", qos=1)
        # allowed (sent after the refused ones, same connections: order is kept)
        await server.publish("ops/gs-2", b"ok-1", qos=1)
        await server.publish("members/gs-1", b"ok-2", qos=1)
        await coord.publish("cmd/gs-1", b"ok-3", qos=1)
        await _until(lambda: len(got) >= 3, "the allowed messages")
        await asyncio.sleep(0.3)
        assert sorted(m.payload for m in got) == [b"ok-1", b"ok-2", b"ok-3"]
