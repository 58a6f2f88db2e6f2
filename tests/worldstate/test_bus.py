"""The bus contract, run over the in-process bus and a real Mosquitto (same test bodies).

Tests never sleep to let something *not* happen: to show a message did not arrive, the
receiver publishes a marker to itself (QoS 1) and checks nothing came before it. That works
because one receiver's messages arrive in order on one connection, and a QoS 1 publish is
acknowledged only after the broker has queued it for the subscribers.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from tests.fix_mqtt_proxy import MqttProxy, MqttProxyFactory
from worldstate.bus import (
    Bus,
    MemoryBus,
    Message,
    MqttBus,
    get_hub,
    matches,
    open_bus,
    validate_filter,
    validate_topic,
)
from worldstate.errors import BusUnavailable, ValidationError, WorldClosed, WorldStateError

WAIT = 10.0
"""Generous timeout for something that should happen."""


class Inbox:
    """A handler that records what it gets and lets a test wait for it."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self._event = asyncio.Event()

    def __call__(self, message: Message) -> None:
        self.messages.append(message)
        self._event.set()

    @property
    def payloads(self) -> list[bytes]:
        return [m.payload for m in self.messages]

    async def wait_for(self, predicate: Callable[[list[Message]], bool]) -> None:
        async with asyncio.timeout(WAIT):
            while not predicate(self.messages):
                self._event.clear()
                await self._event.wait()

    async def wait_payload(self, payload: bytes) -> None:
        await self.wait_for(lambda ms: any(m.payload == payload for m in ms))

    async def wait_count(self, n: int) -> None:
        await self.wait_for(lambda ms: len(ms) >= n)


class BusKit:
    """Opens started buses of one kind for a test, all on the test's prefix by default,
    and can crash one (memory: ``hub.kill``; MQTT: cut its own proxy, so the broker sees the
    connection die without DISCONNECT)."""

    def __init__(
        self, kind: str, prefix: str, mqtt_url: str = "", proxies: MqttProxyFactory | None = None
    ) -> None:
        self.kind, self.prefix = kind, prefix
        self.mqtt_url, self.proxies = mqtt_url, proxies
        self.hub_name = f"test-{uuid.uuid4().hex[:8]}"
        self.buses: list[Bus] = []
        self._proxy_of: dict[int, MqttProxy] = {}

    async def open(
        self,
        client_id: str,
        *,
        prefix: str | None = None,
        will: Message | None = None,
        crashable: bool = False,
        **options: Any,
    ) -> Bus:
        bus: Bus
        prefix = self.prefix if prefix is None else prefix
        if self.kind == "memory":
            bus = MemoryBus(self.hub_name, client_id=client_id, prefix=prefix, will=will, **options)
        else:
            url, proxy = self.mqtt_url, None
            if crashable:
                assert self.proxies is not None
                proxy = await self.proxies()
                url = proxy.url
            bus = MqttBus(url, client_id=client_id, prefix=prefix, will=will, **options)
            if proxy is not None:
                self._proxy_of[id(bus)] = proxy
        self.buses.append(bus)
        await bus.start()
        return bus

    async def crash(self, bus: Bus) -> None:
        if isinstance(bus, MemoryBus):
            bus.hub.kill(bus.client_id)
        else:
            await self._proxy_of[id(bus)].cut()

    async def close(self) -> None:
        for bus in self.buses:
            await bus.close()


@pytest.fixture(params=["memory", "mqtt"])
def bus_kind(request: pytest.FixtureRequest, mqtt_prefix: str) -> BusKit:
    if request.param == "memory":
        return BusKit("memory", mqtt_prefix)
    url: str = request.getfixturevalue("mqtt_url")
    proxies: MqttProxyFactory = request.getfixturevalue("mqtt_proxy_factory")
    return BusKit("mqtt", mqtt_prefix, url, proxies)


@pytest.fixture
async def kit(bus_kind: BusKit) -> AsyncIterator[BusKit]:
    """The same test body over the in-process bus and a real Mosquitto."""
    try:
        yield bus_kind
    finally:
        await bus_kind.close()


async def subscribe(
    bus: Bus, pattern: str, handler: Callable[[Message], None] | None = None
) -> Inbox:
    inbox = Inbox()
    sub = bus.subscribe(pattern, handler or inbox)
    await sub.wait_active(WAIT)
    return inbox


async def barrier(bus: Bus, inbox: Inbox, topic: str) -> list[Message]:
    """Publish a marker to ``topic`` (which ``inbox`` must receive) and return what the inbox
    got before it: everything sent to it earlier has arrived by then."""
    marker = f"marker-{uuid.uuid4().hex}".encode()
    await bus.publish(topic, marker, qos=1)
    await inbox.wait_payload(marker)
    return inbox.messages[: inbox.payloads.index(marker)]


# -- topics -------------------------------------------------------------------------------

MATCH_CASES = [
    # pattern, topic, matches?
    ("a/b", "a/b", True),
    ("a/b", "a/c", False),
    ("a/b", "a/b/c", False),
    ("a/+", "a/b", True),
    ("a/+", "a/b/c", False),
    ("a/+", "a", False),
    ("a/+", "a/", True),  # an empty level is a level
    ("+/b", "/b", True),
    ("+/+", "/", True),
    ("a/+/c", "a/x/c", True),
    ("a/+/c", "a/x/d", False),
    ("a/#", "a", True),  # '#' includes the parent level
    ("a/#", "a/b/c", True),
    ("a/#", "ab", False),
    ("#", "a/b", True),
    ("#", "/", True),
    ("+", "a", True),
    ("+", "a/b", False),
    ("+/#", "a", True),
    ("A/b", "a/b", False),  # case-sensitive
    # '$' topics are the broker's: a leading wildcard does not match them
    ("#", "$SYS/broker", False),
    ("+/broker", "$SYS/broker", False),
    ("$SYS/#", "$SYS/broker", True),
    ("$SYS/+", "$SYS/broker", True),
    ("a/#", "a/$x", True),  # only the first level is special
]


@pytest.mark.parametrize(("pattern", "topic", "expected"), MATCH_CASES)
def test_matches(pattern: str, topic: str, expected: bool) -> None:
    assert validate_filter(pattern) == pattern
    assert validate_topic(topic) == topic
    assert matches(pattern, topic) is expected


@pytest.mark.parametrize(
    "pattern", ["", "a/#/b", "a#", "a/b#", "a+", "+a/b", "a/++", "#/", "a\x00b", 7, "a\nb"]
)
def test_bad_filters(pattern: object) -> None:
    with pytest.raises(ValidationError):
        validate_filter(pattern)


@pytest.mark.parametrize("topic", ["", "a/+", "a/#", "+", "a\x00b", "a\tb", b"a", "\ud800"])
def test_bad_topics(topic: object) -> None:
    with pytest.raises(ValidationError):
        validate_topic(topic)


def test_topic_length_limit() -> None:
    assert validate_topic("é" * 10, max_bytes=20)
    with pytest.raises(ValidationError, match="21 bytes"):
        validate_topic("é" * 10 + "x", max_bytes=20)


# -- the contract, over both buses ---------------------------------------------------------


async def test_round_trip(kit: BusKit) -> None:
    a = await kit.open("a")
    b = await kit.open("b")
    inbox = await subscribe(a, "chat/#")
    await b.publish("chat/room1", b"hello")
    await inbox.wait_count(1)
    assert inbox.messages == [Message("chat/room1", b"hello", 0, False)]
    await b.flush(WAIT)
    assert a.stats.received == 1
    assert b.stats.published == 1
    assert a.connected and b.connected


async def test_publisher_receives_its_own_messages(kit: BusKit) -> None:
    a = await kit.open("a")
    inbox = await subscribe(a, "echo")
    await a.publish("echo", b"me")
    await inbox.wait_payload(b"me")


async def test_wildcards_and_overlapping_patterns(kit: BusKit) -> None:
    """Each handler gets each matching message exactly once, even when the bus's patterns
    overlap (the broker sends one copy per subscription)."""
    a = await kit.open("a")
    b = await kit.open("b")
    one_level = await subscribe(a, "a/+/c")
    everything = await subscribe(a, "a/#")
    exact = await subscribe(a, "x")
    second_on_same = await subscribe(a, "a/#")
    for topic in ["a/b/c", "a/b", "a/b/c/d", "x", "y", "a/q/c"]:
        await b.publish(topic, topic.encode())
    await barrier(b, everything, "a/end")
    assert one_level.payloads == [b"a/b/c", b"a/q/c"]
    assert exact.payloads == [b"x"]
    expected_all = [b"a/b/c", b"a/b", b"a/b/c/d", b"a/q/c"]
    assert everything.payloads[:-1] == expected_all
    await second_on_same.wait_count(5)
    assert second_on_same.payloads[:-1] == expected_all


async def test_prefixes_are_isolated(kit: BusKit, mqtt_prefix: str) -> None:
    a = await kit.open("a", prefix=f"{mqtt_prefix}-one")
    b = await kit.open("b", prefix=f"{mqtt_prefix}-two")
    seen_a = await subscribe(a, "#")
    seen_b = await subscribe(b, "#")
    await a.publish("t", b"from-a", qos=1)
    await b.publish("t", b"from-b", qos=1)
    assert [m.payload for m in await barrier(b, seen_b, "t")] == [b"from-b"]
    assert [m.payload for m in await barrier(a, seen_a, "t")] == [b"from-a"]


async def test_qos1_delivery_in_order(kit: BusKit) -> None:
    a = await kit.open("a")
    b = await kit.open("b")
    inbox = await subscribe(a, "causal/#")
    sent = [f"event-{i}".encode() for i in range(50)]
    for payload in sent:
        await b.publish("causal/r1", payload, qos=1)
    await inbox.wait_count(len(sent))
    assert inbox.payloads == sent
    assert {m.qos for m in inbox.messages} == {1}


async def test_retained_message_seen_by_late_subscriber(kit: BusKit) -> None:
    a = await kit.open("a")
    try:
        await a.publish("state/door", b"open", qos=1, retain=True)
        b = await kit.open("b")
        late = await subscribe(b, "state/#")
        await late.wait_count(1)
        assert late.messages[0] == Message("state/door", b"open", 1, True)
        await a.publish("state/door", b"closed", qos=1)  # live traffic is never 'retain'
        await late.wait_payload(b"closed")
        assert late.messages[-1].retain is False
    finally:
        await a.publish("state/door", b"", qos=1, retain=True)  # clear it
    # cleared: a new subscriber gets no retained message
    c = await kit.open("c")
    after = await subscribe(c, "state/#")
    assert await barrier(c, after, "state/marker") == []


async def test_last_will_published_when_client_dies(kit: BusKit) -> None:
    watcher = await kit.open("watcher")
    inbox = await subscribe(watcher, "servers/+/status")
    will = Message("servers/victim/status", b"dead", qos=1)
    victim = await kit.open("victim", will=will, crashable=True)
    await victim.publish("servers/victim/status", b"alive", qos=1)
    await inbox.wait_payload(b"alive")
    await kit.crash(victim)
    await inbox.wait_payload(b"dead")
    assert inbox.messages[-1] == Message("servers/victim/status", b"dead", 1, False)


async def test_clean_close_publishes_no_will(kit: BusKit) -> None:
    watcher = await kit.open("watcher")
    inbox = await subscribe(watcher, "servers/+/status")
    leaver = await kit.open("leaver", will=Message("servers/leaver/status", b"dead", qos=1))
    await leaver.close()
    assert await barrier(watcher, inbox, "servers/watcher/status") == []


async def test_handler_exception_does_not_stop_delivery(kit: BusKit) -> None:
    a = await kit.open("a")
    calls: list[bytes] = []

    def broken(message: Message) -> None:
        calls.append(message.payload)
        raise RuntimeError("handler bug")

    a.subscribe("t", broken)
    inbox = await subscribe(a, "t")
    await a.publish("t", b"1")
    await a.publish("t", b"2")
    await inbox.wait_count(2)
    assert calls == [b"1", b"2"]
    assert inbox.payloads == [b"1", b"2"]
    assert a.stats.handler_errors == 2


async def test_cancelled_subscription_gets_nothing_more(kit: BusKit) -> None:
    a = await kit.open("a")
    gone = Inbox()
    sub = a.subscribe("t/#", gone)
    await sub.wait_active(WAIT)
    other = await subscribe(a, "t/#")
    await a.publish("t/1", b"1", qos=1)
    await gone.wait_count(1)
    sub.cancel()
    sub.cancel()  # idempotent
    assert sub.cancelled and not sub.active
    await a.publish("t/2", b"2", qos=1)
    await barrier(a, other, "t/end")
    assert gone.payloads == [b"1"]


async def test_oversized_incoming_messages_are_dropped_and_counted(kit: BusKit) -> None:
    small = await kit.open("small", max_payload=10)
    big = await kit.open("big")
    inbox = await subscribe(small, "t")
    await big.publish("t", b"x" * 11, qos=1)
    await big.publish("t", b"y" * 10, qos=1)
    await inbox.wait_count(1)
    assert inbox.payloads == [b"y" * 10]
    assert small.stats.dropped_incoming == 1


BAD_PUBLISHES: list[tuple[object, object, dict[str, object], str]] = [
    # topic, payload, keywords, what the error says
    ("", b"x", {}, "must not be empty"),
    ("a/+", b"x", {}, "wildcard"),
    ("a/#", b"x", {}, "wildcard"),
    ("a\x00b", b"x", {}, "control character"),
    ("a\nb", b"x", {}, "control character"),
    (5, b"x", {}, "must be a str"),
    ("t" * 2000, b"x", {}, "limit"),
    ("t", "text", {}, "must be bytes"),
    ("t", bytearray(b"x"), {}, "must be bytes"),
    ("t", b"x" * 1025, {}, "limit is 1024"),
    ("t", b"x", {"qos": 2}, "qos"),
    ("t", b"x", {"qos": True}, "qos"),
    ("t", b"x", {"retain": 1}, "retain"),
]


async def test_bad_topics_and_payloads_are_refused(kit: BusKit) -> None:
    a = await kit.open("a", max_payload=1024)
    for topic, payload, keywords, message in BAD_PUBLISHES:
        with pytest.raises(ValidationError, match=message):
            await a.publish(topic, payload, **keywords)  # type: ignore[arg-type]
    for pattern in ["", "a/#/b", "a+", "x\x00"]:
        with pytest.raises(ValidationError):
            a.subscribe(pattern, Inbox())
    with pytest.raises(ValidationError, match="callable"):
        a.subscribe("t", "not a function")  # type: ignore[arg-type]
    await a.publish("t", b"x" * 1024)  # exactly the limit is fine
    await a.flush(WAIT)
    assert a.stats.published == 1 and a.stats.dropped_outgoing == 0


@pytest.mark.parametrize(
    ("keywords", "message"),
    [
        ({"client_id": "a/b", "prefix": "p"}, "forbidden character"),
        ({"client_id": "", "prefix": "p"}, "must not be empty"),
        ({"client_id": "a", "prefix": "$SYS"}, "reserve"),
        ({"client_id": "a", "prefix": "p/+"}, "wildcard"),
        ({"client_id": "a", "prefix": ""}, "must not be empty"),
        ({"client_id": "a", "prefix": "p", "will": Message("a/#", b"x")}, "wildcard"),
        ({"client_id": "a", "prefix": "p", "will": Message("w", "x")}, "bytes"),  # type: ignore[arg-type]
        ({"client_id": "a", "prefix": "p", "max_payload": -1}, "max_payload"),
        ({"client_id": "a", "prefix": "p", "publish_timeout": 0}, "publish_timeout"),
    ],
)
@pytest.mark.parametrize("url", ["memory://", "mqtt://127.0.0.1:1883"])
def test_bad_bus_arguments(url: str, keywords: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        open_bus(url, **keywords)


async def test_closed_bus_refuses_work_and_tells_listeners(kit: BusKit) -> None:
    a = await kit.open("a")
    lost: list[WorldStateError] = []
    a.on_lost(lost.append)
    sub = a.subscribe("t", Inbox())
    await a.close()
    await a.close()  # idempotent
    assert a.closed and not a.connected
    assert len(lost) == 1 and isinstance(lost[0], WorldClosed)
    with pytest.raises(WorldClosed):
        await a.publish("t", b"x")
    with pytest.raises(WorldClosed):
        a.subscribe("t", Inbox())
    with pytest.raises(WorldClosed):
        await a.wait_connected(1)
    with pytest.raises(WorldClosed):
        await sub.wait_active(1)
    with pytest.raises(WorldClosed):
        await a.start()


async def test_subscribe_before_start_and_connected_listener(kit: BusKit) -> None:
    if kit.kind == "memory":
        bus: Bus = MemoryBus(kit.hub_name, client_id="early", prefix=kit.prefix)
    else:
        bus = MqttBus(kit.mqtt_url, client_id="early", prefix=kit.prefix)
    kit.buses.append(bus)
    inbox = Inbox()
    sub = bus.subscribe("t", inbox)
    ups: list[str] = []
    bus.on_connected(lambda: ups.append("up"))
    assert not bus.connected and not sub.active
    await bus.start()
    await bus.wait_connected(WAIT)
    await sub.wait_active(WAIT)
    assert ups == ["up"]
    await bus.publish("t", b"x", qos=1)
    await inbox.wait_payload(b"x")


# -- memory specifics ----------------------------------------------------------------------


async def test_open_bus_chooses_by_scheme(mqtt_prefix: str) -> None:
    assert isinstance(open_bus("memory://", client_id="a", prefix="p"), MemoryBus)
    arena = open_bus("memory://arena-2/", client_id="a", prefix="p")
    assert isinstance(arena, MemoryBus) and arena.hub is get_hub("arena-2")
    assert isinstance(open_bus("mqtt://broker:1883", client_id="a", prefix="p"), MqttBus)
    assert isinstance(open_bus("mqtts://broker", client_id="a", prefix="p"), MqttBus)
    for url in ["redis://x", "broker:1883", "mqtt://", "mqtt://h:99999", "mqtt://h/path", ""]:
        with pytest.raises(ValidationError):
            open_bus(url, client_id="a", prefix="p")


async def test_memory_buses_share_a_hub_by_name(mqtt_prefix: str) -> None:
    name = f"arena-{uuid.uuid4().hex[:8]}"
    async with (
        open_bus(f"memory://{name}", client_id="a", prefix=mqtt_prefix) as a,
        open_bus(f"memory://{name}", client_id="b", prefix=mqtt_prefix) as b,
        open_bus(f"memory://{name}-other", client_id="c", prefix=mqtt_prefix) as c,
    ):
        assert isinstance(a, MemoryBus) and isinstance(b, MemoryBus) and isinstance(c, MemoryBus)
        assert a.hub is b.hub is get_hub(name)
        assert c.hub is not a.hub
        assert a.hub.clients == ["a", "b"]
        seen_b = await subscribe(b, "#")
        seen_c = await subscribe(c, "#")
        await a.publish("t", b"x")
        await seen_b.wait_payload(b"x")
        assert await barrier(c, seen_c, "mine") == []
        with pytest.raises(ValidationError, match="already attached"):
            await MemoryBus(name, client_id="a", prefix=mqtt_prefix).start()
        hub = a.hub
    # the hub lives while a client is attached
    assert get_hub(name) is not hub


async def test_memory_queue_overflow_is_counted(mqtt_prefix: str) -> None:
    name = f"tiny-{uuid.uuid4().hex[:8]}"
    async with (
        MemoryBus(name, client_id="a", prefix=mqtt_prefix) as a,
        MemoryBus(name, client_id="b", prefix=mqtt_prefix, queue_size=3) as b,
    ):
        inbox = await subscribe(b, "t")
        for i in range(5):  # no await yields to b's delivery task in between
            await a.publish("t", str(i).encode())
        await inbox.wait_count(3)
        assert inbox.payloads == [b"0", b"1", b"2"]
        assert b.stats.dropped_incoming == 2
        assert a.hub.stats.overflowed == 2


async def test_mqtt_start_fails_fast_when_broker_is_down(mqtt_proxy: MqttProxy) -> None:
    await mqtt_proxy.cut()
    bus = MqttBus(mqtt_proxy.url, client_id="a", prefix="p", connect_timeout=0.5)
    with pytest.raises(BusUnavailable, match=r"unreachable|could not connect"):
        await bus.start()
    assert bus.closed


async def test_mqtt_client_ids_are_unique_per_bus(mqtt_url: str, mqtt_prefix: str) -> None:
    """Two buses with the same client_id must not kick each other off the broker."""
    async with contextlib.AsyncExitStack() as stack:
        a = await stack.enter_async_context(MqttBus(mqtt_url, client_id="same", prefix=mqtt_prefix))
        b = await stack.enter_async_context(MqttBus(mqtt_url, client_id="same", prefix=mqtt_prefix))
        assert isinstance(a, MqttBus) and isinstance(b, MqttBus)
        assert a.mqtt_client_id != b.mqtt_client_id
        inbox = await subscribe(a, "t")
        await b.publish("t", b"x", qos=1)
        await inbox.wait_payload(b"x")
        assert a.connected and b.connected and a.stats.reconnects == 0


async def test_mqtt_qos0_overflow_drops_instead_of_blocking(
    mqtt_url: str, mqtt_prefix: str
) -> None:
    async with (
        MqttBus(mqtt_url, client_id="rx", prefix=mqtt_prefix) as rx,
        MqttBus(mqtt_url, client_id="tx", prefix=mqtt_prefix, max_pending_qos0=3) as tx,
    ):
        inbox = await subscribe(rx, "t")
        for i in range(5):  # nothing is written before we yield: the last two overflow
            await tx.publish("t", str(i).encode())
        assert tx.stats.dropped_outgoing == 2
        await tx.flush(WAIT)
        assert tx.stats.published == 3
        await inbox.wait_count(3)
        assert await barrier(rx, inbox, "t") == inbox.messages[:3]
        assert inbox.payloads[:3] == [b"0", b"1", b"2"]


async def test_mqtt_backlog_is_read_in_few_loop_turns(mqtt_url: str, mqtt_prefix: str) -> None:
    """A backlog waiting on the socket is read and handed on many messages per event-loop
    turn: paho reads one packet per call and aiomqtt's iterator takes a few turns per
    message, so on a busy loop (every turn long) the receive rate was one message per few
    turns and the backlog only grew. Counted in loop turns, not time: the turns in which
    the handler got a message (one per message before)."""
    n = 300
    loop = asyncio.get_running_loop()
    turn = [0]
    done = [False]
    got: list[tuple[int, bytes]] = []
    inbox = Inbox()

    def handler(m: Message) -> None:
        got.append((turn[0], m.payload))
        inbox(m)

    def count() -> None:
        turn[0] += 1
        if not done[0]:
            loop.call_soon(count)

    async with MqttBus(mqtt_url, client_id="rx", prefix=mqtt_prefix) as rx:
        await subscribe(rx, "burst", handler)

        async def burst() -> None:
            async with MqttBus(mqtt_url, client_id="tx", prefix=mqtt_prefix) as tx:
                for i in range(n):  # QoS 1: each is at the broker when its publish returns
                    await tx.publish("burst", str(i).encode(), qos=1)

        sender = threading.Thread(target=asyncio.run, args=(burst(),))
        sender.start()
        sender.join()  # blocks this loop: the burst waits (at the broker, in rx's socket)
        loop.call_soon(count)
        await inbox.wait_count(n)
        done[0] = True
    assert [p for _, p in got] == [str(i).encode() for i in range(n)]
    turns = len({t for t, _ in got})
    assert turns < n // 5, f"messages were handed on in {turns} loop turns for {n} messages"


def _nodelay(bus: MqttBus) -> int:
    client = bus._client
    assert client is not None
    sock = client._client.socket()
    assert isinstance(sock, socket.socket)  # paho's SocketLike protocol has no getsockopt
    return int(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))


async def test_mqtt_socket_sends_without_nagle(mqtt_proxy: MqttProxy, mqtt_prefix: str) -> None:
    """Every connection (the first and each reconnection) turns Nagle off: with it, a small
    packet written while an earlier one is unacknowledged waited for the peer's delayed ACK
    (~40 ms per request/reply hop: a forwarded strong op's round trip took 40-80 ms)."""
    async with MqttBus(mqtt_proxy.url, client_id="nd", prefix=mqtt_prefix) as bus:
        await bus.wait_connected(5.0)
        assert _nodelay(bus) == 1
        await mqtt_proxy.cut()
        for _ in range(200):
            if not bus.connected:
                break
            await asyncio.sleep(0.01)
        await mqtt_proxy.restore()
        await bus.wait_connected(10.0)
        assert _nodelay(bus) == 1
