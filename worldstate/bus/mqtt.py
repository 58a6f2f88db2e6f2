"""The MQTT adapter: a `Bus` over an MQTT 5 broker (Mosquitto) with `aiomqtt`.

One background task (``worldstate-bus-mqtt[<client_id>]``) owns the connection: it connects,
subscribes every registered pattern, then hands each incoming message to the handlers. When
the connection breaks it marks the bus disconnected (``on_lost`` fires), waits a capped,
jittered, exponentially growing delay, and connects again with a fresh `aiomqtt.Client`
(a client is bound to the event loop that made it, and a new one starts from a clean state).

Why MQTT 5: a broker sends one copy of a message per matching subscription when a client's
patterns overlap (Mosquitto does), and MQTT 3.1.1 gives no way to tell the copies apart. With
MQTT 5 every pattern is subscribed with its own *subscription identifier*, each copy says
which pattern it is for, and every handler gets each message exactly once.

Publishing:

- QoS 0 (eventual traffic) never waits: the message is handed to a small task that writes it
  (so consecutive publishes share socket writes) and `publish` returns. The overflow policy is
  drop, never block: a message is dropped and counted (``stats.dropped_outgoing``) while
  disconnected, when ``max_pending_qos0`` messages or ``max_pending_qos0_bytes`` bytes are
  already waiting to be written, and when the connection breaks before it is written.
  `Bus.flush` waits for the pending ones; `close` flushes (up to ``publish_timeout``) first.
- QoS 1 (causal traffic, forwarded ops) waits up to ``publish_timeout`` for a connection and
  the broker's PUBACK, retrying on the next connection if the current one breaks first, then
  raises `BusUnavailable`. At-least-once: a retry can duplicate a message, and a retry can
  overtake messages published after it.

Limits to know about. The broker bounds what it holds for a slow subscriber (Mosquitto:
``max_inflight_messages`` 20 and ``max_queued_messages`` 1000 per client by default, also
``max_queued_bytes``; see ``deploy/mosquitto.conf``) and drops messages for that subscriber
past them: a subscriber that cannot keep up loses eventual traffic instead of slowing its
publishers. Measured on a loaded 2-core test machine with Mosquitto 2.0.11 defaults, one
publisher to one subscriber (separate processes): 100 KB QoS 0 messages in bursts of 50
arrived at ~1,400/s (~140 MB/s) with no loss, while bursts of 300 (30 MB) lost ~17 % at the
broker; 100 B QoS 0 messages peaked at ~3,500-5,000/s per subscribing process (the per-message
cost of aiomqtt's iterator and paho's reads), so batch small updates into larger messages.
QoS 1 reached ~1,000/s of 100 KB, one publish awaited at a time.

Receiving on a busy loop. paho reads one packet per ``loop_read`` call, aiomqtt calls it once
per readable event, and aiomqtt's message iterator takes a task and about three loop turns
per message: the receive rate was one message per few loop turns, whatever the handlers
cost. With a loop that has hundreds of ready callbacks per turn (a game server under load),
turns take milliseconds and the eventual traffic of a 10k-entity mesh (hundreds of messages
a second) queued in aiomqtt's queue and the socket for tens of seconds. So the reader takes
up to `READ_PACKETS` packets per readable event (`_read_packets_per_turn`) and `_read` hands
on up to `READ_BATCH` already-queued messages per turn, within `READ_BUDGET` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import secrets
import select
import socket
import ssl
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import aiomqtt
import paho.mqtt.client as paho
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from worldstate.bus.base import (
    DEFAULT_MAX_PAYLOAD,
    DEFAULT_MAX_TOPIC_BYTES,
    DEFAULT_PUBLISH_TIMEOUT,
    Bus,
    Message,
    _Pattern,
)
from worldstate.errors import BusRefused, BusUnavailable, ValidationError
from worldstate.security._redact import redact_url
from worldstate.security._tls import TLS_PARAMS, TlsOptions, describe_tls_error

logger = logging.getLogger("worldstate.bus.mqtt")
_client_logger = logging.getLogger("worldstate.bus.mqtt.client")

READ_BATCH = 256
"""Most queued messages `MqttBus._read` hands on in one loop turn after the one it awaited."""
READ_BUDGET = 0.005
"""Seconds of handler time `MqttBus._read` spends on queued messages before it yields."""
READ_PACKETS = 64
"""Most packets read from the socket per readable event (paho reads one per call)."""


def _read_packets_per_turn(paho_client: paho.Client) -> None:
    """Make aiomqtt's socket reader take up to `READ_PACKETS` packets per readable event.

    aiomqtt calls ``loop_read()`` once per event, and paho's ``loop_read`` reads one packet
    (QoS 0 traffic keeps no message in flight, which is what paho sizes the read by): the
    receive rate is then one packet per event-loop turn, and on a busy loop the socket
    backs up (measured: hundreds of KB unread, seconds of eventual lag at 10k entities).
    The wrapper reads on while the socket (or the TLS layer) still has bytes."""
    one = paho_client.loop_read

    def loop_read(max_packets: int = 1) -> MQTTErrorCode:
        rc = one(max_packets)
        for _ in range(READ_PACKETS - 1):
            sock = paho_client.socket()
            if rc != paho.MQTT_ERR_SUCCESS or sock is None:
                break
            pending = getattr(sock, "pending", None)
            if not (pending is not None and pending() > 0):
                poller = select.poll()  # not select.select: fds above 1024 are fine
                poller.register(sock.fileno(), select.POLLIN)
                if not poller.poll(0):
                    break
            rc = one(max_packets)
        return rc

    paho_client.loop_read = loop_read  # type: ignore[method-assign]


def _no_delay(client: aiomqtt.Client) -> None:
    """Send each MQTT packet at once: ``TCP_NODELAY`` on paho's socket (paho leaves Nagle on).

    With Nagle, a small packet written while an earlier one is unacknowledged waits for
    that ACK, and the peer delays its ACK (Linux: up to ~40 ms) when it has nothing to send
    back. Request/reply traffic is exactly that pattern: a forwarded strong op's reply
    (PUBACK of the request, then the reply PUBLISH) and a QoS 1 publish after a PUBACK each
    waited ~40 ms (measured on localhost: 77 ms per round trip with Nagle at both ends,
    42 ms with it off here, 1.6 ms with it off at the broker too — Mosquitto's
    ``set_tcp_nodelay true``, as in deploy/mosquitto/mosquitto.conf)."""
    aiomqtt_on_socket_open = client._client.on_socket_open

    def on_socket_open(c: paho.Client, userdata: Any, sock: Any) -> None:
        with contextlib.suppress(OSError, AttributeError):  # not TCP (a test double)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if aiomqtt_on_socket_open is not None:
            aiomqtt_on_socket_open(c, userdata, sock)

    client._client.on_socket_open = on_socket_open


def _fail_connect_on_early_disconnect(client: aiomqtt.Client) -> None:
    """Make a connection that closes before the broker's CONNACK fail ``__aenter__`` at once.

    aiomqtt ignores a disconnection before CONNACK (its ``_on_disconnect`` returns early
    while ``_connected`` is pending), so ``__aenter__`` waits out its whole timeout
    (``connect_timeout``) for a CONNACK that cannot come. That is what happens when a TCP
    proxy or load balancer in front of the broker accepts the connection and then drops it
    because the broker behind it is down: every reconnection attempt made during a broker
    restart hung for ``connect_timeout`` (10 s) instead of being retried with the backoff
    (measured: servers back 8-9 s after the broker instead of < 2 s)."""
    paho_client = client._client
    aiomqtt_on_disconnect = client._on_disconnect  # what aiomqtt registered with paho
    loop = asyncio.get_running_loop()

    def fail(reason: object) -> None:
        connecting = client._connected
        if not connecting.done():
            connecting.set_exception(
                aiomqtt.MqttError(f"the connection closed before the broker's CONNACK ({reason})")
            )

    def on_disconnect(
        c: paho.Client,
        userdata: Any,
        flags: paho.DisconnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None = None,
    ) -> None:
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            fail(reason_code)
        elif not loop.is_closed():  # paho may call back from aiomqtt's connect thread
            loop.call_soon_threadsafe(fail, reason_code)
        aiomqtt_on_disconnect(c, userdata, flags, reason_code, properties)

    paho_client.on_disconnect = on_disconnect


def _register_write_if_open(client: aiomqtt.Client) -> None:
    """Register paho's socket for writing only if it is still open when the loop gets to it.

    aiomqtt schedules ``loop.add_writer(sock.fileno(), ...)`` with ``call_soon_threadsafe``,
    taking the descriptor when it schedules. When the connection breaks before that
    callback runs (a publish queued just as the broker went away: paho has closed the
    socket by then), the loop registers a closed descriptor and logs ``OSError: [Errno 9]
    Bad file descriptor`` as an unhandled callback error — one traceback per server at
    every broker restart. Here the socket is checked when the callback runs; the writer
    itself is aiomqtt's (write what paho queued, a failure ends the connection)."""
    paho_client = client._client
    loop = asyncio.get_running_loop()

    def writer() -> None:
        try:
            paho_client.loop_write()
        except Exception as exc:  # a broken connection: the session sees it and reconnects
            if not client._disconnected.done():
                client._disconnected.set_exception(exc)

    def add(sock: Any) -> None:
        current = paho_client.socket()
        if current is None or current is not sock or current.fileno() < 0:
            return  # closed (or replaced) meanwhile: nothing to write to
        loop.add_writer(current.fileno(), writer)

    def register_write(c: paho.Client, userdata: Any, sock: Any) -> None:
        loop.call_soon_threadsafe(add, sock)  # paho may call from aiomqtt's connect thread

    paho_client.on_socket_register_write = register_write


@dataclass(frozen=True, slots=True)
class MqttUrl:
    """A parsed bus URL. ``safe`` is the URL with its password masked, for every message."""

    host: str
    port: int
    username: str | None
    password: str | None
    tls: TlsOptions | None
    safe: str


def parse_mqtt_url(url: str) -> MqttUrl:
    """``mqtt://[user[:password]@]host[:port]`` or
    ``mqtts://[user[:password]@]host[:port][?ca=FILE&cert=FILE&key=FILE&check_hostname=false]``
    (see `worldstate.security._tls`). Raises `ValidationError` (never quoting the password)."""
    if not isinstance(url, str):
        raise ValidationError(f"bus URL must be a str, got {type(url).__name__}")
    safe = redact_url(url)
    try:
        parts = urlsplit(url)
        port = parts.port
        query = dict(parse_qsl(parts.query, keep_blank_values=True, strict_parsing=False))
    except ValueError as exc:
        raise ValidationError(f"bad MQTT URL {safe!r}: {exc}") from None
    if parts.scheme not in ("mqtt", "mqtts"):
        raise ValidationError(f"MQTT URL {safe!r} must start with mqtt:// or mqtts://")
    if not parts.hostname:
        raise ValidationError(f"MQTT URL {safe!r} has no host; write mqtt://host:1883")
    unknown = sorted(set(query) - TLS_PARAMS)
    if parts.path not in ("", "/") or parts.fragment or unknown:
        raise ValidationError(
            f"MQTT URL {safe!r} must be scheme://host[:port] with only "
            f"{', '.join(sorted(TLS_PARAMS))} as parameters"
        )
    tls = parts.scheme == "mqtts"
    options = TlsOptions.from_query(query, tls=tls, what=f"MQTT URL {safe!r}")
    user = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password else None
    return MqttUrl(
        parts.hostname,
        port or (8883 if tls else 1883),
        user,
        password,
        options if tls else None,
        safe,
    )


_AUTH_CODES = {
    4: "bad user name or password",
    5: "not authorized",
    134: "bad user name or password",
    135: "not authorized",
}


def classify_connect_error(exc: BaseException) -> tuple[str, bool]:
    """(a plain sentence, whether retrying is pointless) for a failed connection attempt:
    refused credentials, a TLS mismatch, or the broker unreachable."""
    rc = getattr(exc, "rc", None)
    code = getattr(rc, "value", rc)
    if isinstance(code, int) and code in _AUTH_CODES:
        return (
            f"the broker refused the connection: {_AUTH_CODES[code]} (check the user name and "
            "password in the bus URL, and the broker's password file and ACL)",
            True,
        )
    tls = describe_tls_error(exc)
    text = str(exc)
    if tls is None and ("[SSL" in text or "certificate verify failed" in text.lower()):
        tls = f"TLS handshake failed ({text}): check ca=, cert=, key= in the bus URL"
    if tls is not None:
        return tls, True
    if "refused" in text.lower():
        return f"the broker is unreachable (connection refused: {text}); is it running?", False
    return f"the broker is unreachable ({text})", False


START_REFUSALS = 3
"""Connection attempts refused outright (nothing listens at the address) after which a
bus that never connected fails its start at once instead of waiting ``connect_timeout``."""


def _refused(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    for _ in range(4):  # aiomqtt wraps the OSError
        if seen is None:
            return False
        if isinstance(seen, ConnectionRefusedError) or "refused" in str(seen).lower():
            return getattr(seen, "rc", None) is None
        seen = seen.__cause__ or seen.__context__
    return False


class _Reason(Exception):
    """The last connection error, as a sentence (what ``_why_disconnected`` quotes)."""


class MqttBus(Bus):
    """A `Bus` over an MQTT 5 broker.

    Args (besides the `Bus` ones):
        url: ``mqtt://[user[:password]@]host[:port]`` (default port 1883) or ``mqtts://``
            (TLS, default port 8883, the system's trusted CAs unless ``tls_context`` says
            otherwise).
        connect_timeout: seconds `start` waits for the first connection (and each attempt
            waits for the broker's CONNACK) before `BusUnavailable`.
        keepalive: seconds of silence after which the client pings the broker; a connection
            that stays silent ~1.5x that long is declared dead by both sides (the broker then
            publishes the will).
        reconnect_min, reconnect_max: the reconnection backoff starts near ``reconnect_min``
            seconds and doubles up to ``reconnect_max`` (each delay jittered to 50-100 %).
        max_pending_qos0, max_pending_qos0_bytes: QoS 0 messages (and their total payload
            bytes) waiting to be written before further ones are dropped.
        max_queued_incoming: messages received but not yet dispatched that the client holds
            before dropping (``stats.dropped_incoming``). Handlers are quick, so this only
            fills if the event loop is starved.
        max_queued_outgoing: QoS 1 messages the client holds unacknowledged before publishes
            wait (and, after ``publish_timeout``, fail).
        max_inflight: QoS 1 messages in flight to the broker at once.
        tls_context: the SSL context for ``mqtts://``.
    """

    def __init__(
        self,
        url: str = "mqtt://127.0.0.1:1883",
        *,
        client_id: str,
        prefix: str,
        will: Message | None = None,
        max_payload: int = DEFAULT_MAX_PAYLOAD,
        max_topic_bytes: int = DEFAULT_MAX_TOPIC_BYTES,
        publish_timeout: float = DEFAULT_PUBLISH_TIMEOUT,
        connect_timeout: float = 10.0,
        keepalive: int = 10,
        reconnect_min: float = 0.1,
        reconnect_max: float = 5.0,
        max_pending_qos0: int = 10_000,
        max_pending_qos0_bytes: int = 32 * 1024 * 1024,
        max_queued_incoming: int = 100_000,
        max_queued_outgoing: int = 10_000,
        max_inflight: int = 20,
        tls_context: ssl.SSLContext | None = None,
    ) -> None:
        super().__init__(
            client_id=client_id,
            prefix=prefix,
            will=will,
            max_payload=max_payload,
            max_topic_bytes=max_topic_bytes,
            publish_timeout=publish_timeout,
        )
        parsed = parse_mqtt_url(url)
        self._host, self._port = parsed.host, parsed.port
        self._username, self._password = parsed.username, parsed.password
        self._url = parsed.safe
        """The URL as printed: its password masked (never log the real one)."""
        for name, value in (
            ("connect_timeout", connect_timeout),
            ("reconnect_min", reconnect_min),
            ("reconnect_max", reconnect_max),
        ):
            if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
                raise ValidationError(f"{name} must be > 0 seconds, got {value!r}")
        if reconnect_max < reconnect_min:
            raise ValidationError("reconnect_max must be >= reconnect_min")
        for name, value in (
            ("keepalive", keepalive),
            ("max_queued_incoming", max_queued_incoming),
            ("max_queued_outgoing", max_queued_outgoing),
            ("max_inflight", max_inflight),
            ("max_pending_qos0", max_pending_qos0),
            ("max_pending_qos0_bytes", max_pending_qos0_bytes),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValidationError(f"{name} must be an int >= 1, got {value!r}")
        self._connect_timeout = float(connect_timeout)
        self._keepalive = keepalive
        self._reconnect_min = float(reconnect_min)
        self._reconnect_max = float(reconnect_max)
        self._max_pending_qos0 = max_pending_qos0
        self._max_pending_qos0_bytes = max_pending_qos0_bytes
        self._qos0_pending: dict[asyncio.Task[None], int] = {}
        self._qos0_pending_bytes = 0
        self._max_queued_incoming = max_queued_incoming
        self._max_queued_outgoing = max_queued_outgoing
        self._max_inflight = max_inflight
        self._tls_context = (
            (tls_context or parsed.tls.context()) if parsed.tls is not None else None
        )
        self.mqtt_client_id = f"{self.client_id}-{secrets.token_hex(4)}"
        """The id the broker sees: ``client_id`` plus a random suffix, because a broker
        disconnects the older of two clients with the same id."""

        self._task: asyncio.Task[None] | None = None
        self._client: aiomqtt.Client | None = None
        self._incoming: asyncio.Queue[aiomqtt.Message] | None = None
        """The current client's queue of received messages (`_read` drains it)."""
        self._session_lost: asyncio.Future[None] | None = None
        self._side_tasks: set[asyncio.Task[None]] = set()
        self._cleanup_tasks: set[asyncio.Task[None]] = set()
        self._task_name = f"worldstate-bus-mqtt[{self.client_id}]"
        self._last_error: BaseException | None = None

    @property
    def url(self) -> str:
        """The bus URL with its password masked."""
        return self._url

    # -- lifecycle --------------------------------------------------------------------------

    async def _start(self) -> None:
        loop = asyncio.get_running_loop()
        self._task = loop.create_task(self._connection_loop(), name=self._task_name)  # owned
        try:
            await self._wait_for_connection(loop.time() + self._connect_timeout)
        except BusUnavailable:
            if isinstance(self._fatal, BusRefused):
                raise BusRefused(str(self._fatal)) from None
            if self._fatal is not None:
                raise BusUnavailable(str(self._fatal)) from None
            raise BusUnavailable(
                f"could not connect to the MQTT broker at {self._url} within "
                f"{self._connect_timeout} s{self._why_disconnected()}; is it running?"
            ) from None

    async def _close(self) -> None:
        await self._flush(self._publish_timeout)
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            # asyncio.wait, not await: close() must not swallow its own caller's cancellation.
            await asyncio.wait([task])
        while self._side_tasks or self._qos0_pending:
            pending = self._side_tasks | self._qos0_pending.keys()
            for side in pending:
                side.cancel()
            await asyncio.wait(pending)
        if self._cleanup_tasks:
            # Connections whose connect we interrupted: let them finish and disconnect.
            await asyncio.wait(list(self._cleanup_tasks), timeout=self._connect_timeout + 1)
            for late in self._cleanup_tasks:
                late.cancel()

    def _why_disconnected(self) -> str:
        return f" (last error: {self._last_error})" if self._last_error else ""

    def _new_client(self) -> aiomqtt.Client:
        will = None
        current = self._current_will()
        if current is not None:
            wire, payload, qos, retain = current
            will = aiomqtt.Will(wire, payload, qos=qos, retain=retain)
        bus = self
        self._incoming = None  # the new client's queue sets it

        class _CountingQueue(asyncio.Queue[aiomqtt.Message]):
            """aiomqtt drops (and logs) a message when its queue is full; we count it too."""

            def __init__(self, maxsize: int = 0) -> None:
                super().__init__(maxsize)
                bus._incoming = self

            def put_nowait(self, item: aiomqtt.Message) -> None:
                try:
                    super().put_nowait(item)
                except asyncio.QueueFull:
                    bus._dropped_incoming += 1
                    raise

        client = aiomqtt.Client(
            self._host,
            self._port,
            username=self._username,
            password=self._password,
            logger=_client_logger,
            identifier=self.mqtt_client_id,
            queue_type=_CountingQueue,
            protocol=aiomqtt.ProtocolVersion.V5,
            will=will,
            timeout=self._connect_timeout,
            keepalive=self._keepalive,
            max_queued_incoming_messages=self._max_queued_incoming,
            max_queued_outgoing_messages=self._max_queued_outgoing,
            max_inflight_messages=self._max_inflight,
            tls_context=self._tls_context,
        )
        # aiomqtt warns above 10 concurrent publishes; concurrent publishes are normal here.
        client.pending_calls_threshold = 1_000_000
        _read_packets_per_turn(client._client)
        _no_delay(client)
        _fail_connect_on_early_disconnect(client)
        _register_write_if_open(client)
        return client

    async def _connection_loop(self) -> None:
        attempt = 0
        refused = 0
        try:
            while True:
                client = self._new_client()
                try:
                    await self._connect(client)
                except aiomqtt.MqttError as exc:
                    why, pointless = classify_connect_error(exc)
                    self._last_error = _Reason(why)
                    if pointless and self._generation == 0:
                        # the broker answered and said no: fail start() now, not after
                        # connect_timeout (a reconnection keeps trying: it may be fixed)
                        logger.error("bus %r: %s: %s", self.client_id, self._url, why)
                        self._set_fatal(BusRefused(f"MQTT broker at {self._url}: {why}"))
                        return
                    if self._generation == 0 and _refused(exc):
                        refused += 1
                        if refused >= START_REFUSALS:
                            # nothing listens there: the broker answered at once, so say so
                            # at once too rather than after connect_timeout
                            self._set_fatal(BusUnavailable(f"MQTT broker at {self._url}: {why}"))
                            return
                    log_at = logging.WARNING if pointless else logging.DEBUG
                    logger.log(
                        log_at,
                        "bus %r: connecting to %s failed: %s",
                        self.client_id,
                        self._url,
                        why,
                    )
                else:
                    attempt = 0
                    try:
                        await self._session(client)
                    except aiomqtt.MqttError as exc:
                        self._last_error = exc.__cause__ or exc
                        logger.warning(
                            "bus %r: lost the connection to %s: %s",
                            self.client_id,
                            self._url,
                            self._last_error,
                        )
                    finally:
                        self._end_session()
                        if not self._closed:
                            self._set_disconnected(
                                BusUnavailable(
                                    f"bus {self.client_id!r} lost the connection to {self._url}"
                                )
                            )
                        try:
                            await client.__aexit__(None, None, None)  # DISCONNECT: no will
                        except aiomqtt.MqttError as exc:
                            logger.debug("bus %r: disconnect: %s", self.client_id, exc)
                delay = min(self._reconnect_max, self._reconnect_min * 2**attempt)
                attempt = min(attempt + 1, 32)
                await asyncio.sleep(random.uniform(delay / 2, delay))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # A bug, not a network problem: say so loudly and fail every waiter.
            logger.exception("bus %r: the MQTT connection loop failed", self.client_id)
            self._set_fatal(
                BusUnavailable(f"bus {self.client_id!r}: connection loop failed: {exc!r}")
            )

    async def _connect(self, client: aiomqtt.Client) -> None:
        """``client.__aenter__()``, but if we are cancelled while paho's blocking connect runs
        in its executor thread, let it finish and then disconnect: abandoning it would leave a
        live connection (and its keepalive task) behind."""
        entering = asyncio.ensure_future(client.__aenter__())  # owned
        try:
            await asyncio.shield(entering)
        except asyncio.CancelledError:
            late = self._disconnect_late(entering, client)
            task = asyncio.get_running_loop().create_task(late)  # owned
            self._cleanup_tasks.add(task)
            task.add_done_callback(self._cleanup_tasks.discard)
            raise

    @staticmethod
    async def _disconnect_late(
        entering: asyncio.Future[aiomqtt.Client], client: aiomqtt.Client
    ) -> None:
        try:
            await entering
            await client.__aexit__(None, None, None)
        except Exception as exc:
            logger.debug("late disconnect after a cancelled connect: %s", exc)

    async def _session(self, client: aiomqtt.Client) -> None:
        """Subscribe every pattern, then dispatch messages until the connection breaks
        (`aiomqtt.MqttError`) or we are cancelled."""
        loop = asyncio.get_running_loop()
        self._client = client
        self._session_lost = loop.create_future()
        # Read from the start: the reader is what notices a broken connection (a pending
        # SUBACK would only time out), and retained messages follow the SUBACKs.
        reader = loop.create_task(self._read(client), name=f"{self._task_name}-reader")  # owned
        try:
            subscribing = asyncio.gather(
                *(self._send_subscribe(client, st) for st in list(self._patterns.values())),
                return_exceptions=True,
            )
            try:
                await asyncio.wait((reader, subscribing), return_when=asyncio.FIRST_COMPLETED)
            finally:
                if not subscribing.done():
                    subscribing.cancel()
            if reader.done():
                await reader
            for result in subscribing.result():
                if isinstance(result, BaseException):
                    raise result
            self._set_connected()
            await reader
        finally:
            if not reader.done():
                reader.cancel()
                await asyncio.wait([reader])

    async def _read(self, client: aiomqtt.Client) -> None:
        loop = asyncio.get_running_loop()
        async for message in client.messages:
            self._on_message(message)
            # aiomqtt's iterator costs a task and a few loop turns per message: on a busy
            # loop that, not the handlers, bounds the receive rate, and the queue grows
            # without end. Take what else is already queued in this turn (up to a count
            # and a time budget, so that a backlog does not hold the loop for long).
            queue = self._incoming
            n = 0
            until = loop.time() + READ_BUDGET
            while queue is not None and n < READ_BATCH and loop.time() < until:
                try:
                    queued = queue.get_nowait()
                except asyncio.QueueEmpty:
                    break
                self._on_message(queued)
                n += 1
        raise aiomqtt.MqttError("the message iterator ended")

    def _end_session(self) -> None:
        self._client = None
        # QoS 0 messages not yet written die with the connection (the next one is a new
        # client): cancelling them counts them as dropped.
        for task in self._qos0_pending:
            task.cancel()
        lost, self._session_lost = self._session_lost, None
        if lost is not None and not lost.done():
            lost.set_result(None)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)  # owned
        self._side_tasks.add(task)
        task.add_done_callback(self._side_tasks.discard)

    # -- subscriptions ----------------------------------------------------------------------

    async def _send_subscribe(self, client: aiomqtt.Client, state: _Pattern) -> None:
        props = Properties(PacketTypes.SUBSCRIBE)  # type: ignore[no-untyped-call]
        props.SubscriptionIdentifier = state.sid
        codes = await client.subscribe(
            state.wire, options=SubscribeOptions(qos=1), properties=props
        )
        code = codes[0] if codes else None
        if isinstance(code, ReasonCode) and code.is_failure:
            logger.error(
                "bus %r: the broker refused subscription %r: %s", self.client_id, state.wire, code
            )
            self._mark_active(
                state, BusUnavailable(f"the broker refused the subscription {state.wire!r}: {code}")
            )
        else:
            self._mark_active(state)

    async def _subscribe_now(self, client: aiomqtt.Client, state: _Pattern) -> None:
        try:
            await self._send_subscribe(client, state)
        except aiomqtt.MqttError as exc:
            # The connection is breaking; the reconnection subscribes everything again.
            logger.debug("bus %r: subscribe %r failed: %s", self.client_id, state.wire, exc)

    async def _unsubscribe_now(self, client: aiomqtt.Client, wire: str) -> None:
        try:
            await client.unsubscribe(wire)
        except aiomqtt.MqttError as exc:
            logger.debug("bus %r: unsubscribe %r failed: %s", self.client_id, wire, exc)

    def _pattern_added(self, state: _Pattern, new: bool) -> None:
        # Subscribing an already subscribed pattern again makes the broker replay its
        # retained messages, which the new handler should see too.
        client = self._client
        if client is not None:
            self._spawn(self._subscribe_now(client, state))

    def _pattern_removed(self, state: _Pattern) -> None:
        client = self._client
        if client is not None:
            self._spawn(self._unsubscribe_now(client, state.wire))

    def _on_message(self, m: aiomqtt.Message) -> None:
        payload = m.payload
        if not isinstance(payload, bytes):
            self._dropped_incoming += 1
            return
        sids = getattr(m.properties, "SubscriptionIdentifier", None) if m.properties else None
        patterns: list[_Pattern] | None = None
        if sids:
            patterns = [st for sid in sids if (st := self._by_sid.get(sid)) is not None]
        self._dispatch(m.topic.value, payload, m.qos, m.retain, patterns)

    # -- publishing -------------------------------------------------------------------------

    async def _publish(self, wire: str, payload: bytes, qos: int, retain: bool) -> None:
        if qos == 1:
            await self._publish_reliably(wire, payload, retain)
            return
        client = self._client
        if (
            client is None
            or not self._connected
            or len(self._qos0_pending) >= self._max_pending_qos0
            or self._qos0_pending_bytes + len(payload) > self._max_pending_qos0_bytes
        ):
            self._dropped_outgoing += 1
            return
        # Not awaited: tasks start in creation order, so messages keep their order (also
        # relative to a QoS 1 publish that follows), and one socket write carries many.
        task = asyncio.get_running_loop().create_task(  # owned
            client.publish(wire, payload, qos=0, retain=retain, timeout=math.inf)
        )
        self._qos0_pending[task] = len(payload)
        self._qos0_pending_bytes += len(payload)
        task.add_done_callback(self._qos0_done)

    def _qos0_done(self, task: asyncio.Task[None]) -> None:
        self._qos0_pending_bytes -= self._qos0_pending.pop(task, 0)
        if task.cancelled() or task.exception() is not None:
            self._dropped_outgoing += 1
        else:
            self._published += 1

    async def _flush(self, timeout: float | None) -> None:
        if self._qos0_pending:
            await asyncio.wait(list(self._qos0_pending), timeout=timeout)

    async def _publish_reliably(self, wire: str, payload: bytes, retain: bool) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._publish_timeout
        failed_generation = 0
        why = "no connection"
        while True:
            try:
                generation = await self._wait_for_connection(deadline, after=failed_generation)
            except BusUnavailable as exc:
                raise BusUnavailable(
                    f"QoS 1 publish to {wire!r} failed after {self._publish_timeout} s: {exc}"
                ) from None
            client, lost = self._client, self._session_lost
            assert client is not None and lost is not None
            sending = asyncio.ensure_future(  # owned
                client.publish(wire, payload, qos=1, retain=retain, timeout=math.inf)
            )
            try:
                done, _ = await asyncio.wait(
                    (sending, lost),
                    timeout=max(0.0, deadline - loop.time()),
                    return_when=asyncio.FIRST_COMPLETED,
                )
            finally:
                if not sending.done():
                    sending.cancel()
            if sending in done:
                error = sending.exception()
                if error is None:
                    self._published += 1
                    return
                if not isinstance(error, aiomqtt.MqttError):
                    raise error
                why = str(error)
                if getattr(error, "rc", None) == paho.MQTT_ERR_QUEUE_SIZE and not lost.done():
                    # Too many unacknowledged messages: back off briefly on this connection.
                    await asyncio.sleep(0.01)
                    failed_generation = generation - 1
                    continue
                failed_generation = generation
            elif lost in done:
                why = "the connection broke before the broker acknowledged it"
                failed_generation = generation
            else:
                raise BusUnavailable(
                    f"QoS 1 publish to {wire!r}: no acknowledgement from the broker within "
                    f"{self._publish_timeout} s ({why})"
                )


__all__ = ["MqttBus", "MqttUrl", "classify_connect_error", "parse_mqtt_url"]
