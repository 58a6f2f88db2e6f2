"""The message bus contract shared by the in-process bus and the MQTT adapter.

A `Bus` carries opaque byte payloads between the servers of one world. Topics are relative to
the bus's ``prefix`` (``f"{prefix}/{topic}"`` on the wire), so worlds with different prefixes
never see each other's traffic. Handlers are plain functions called on the event loop thread;
everything else (decoding, validation of the payload, queueing for an async consumer) is the
caller's job, and a handler that raises is logged and counted, never allowed to stop delivery.

Connection state is observable three ways: the `Bus.connected` flag, `Bus.wait_connected`,
and the `Bus.on_lost` / `Bus.on_connected` callbacks. ``on_lost`` fires each time the
connection drops (with `BusUnavailable`; it may come back) and once when the bus closes (with
`WorldClosed`; it never comes back), so an async iterator built on a subscription can end
loudly instead of hanging.
"""

from __future__ import annotations

import asyncio
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Self

from worldstate._validation import check_id
from worldstate.bus.topics import MQTT_MAX_TOPIC_BYTES, matches, validate_filter, validate_topic
from worldstate.errors import BusUnavailable, ValidationError, WorldClosed, WorldStateError

logger = logging.getLogger("worldstate.bus")

DEFAULT_MAX_PAYLOAD = 1024 * 1024
"""Largest payload a bus accepts by default (1 MiB), both ways."""
DEFAULT_MAX_TOPIC_BYTES = 1024
"""Longest wire topic (prefix included, UTF-8 bytes) a bus accepts by default."""
DEFAULT_PUBLISH_TIMEOUT = 5.0
"""Seconds a QoS 1 publish waits for a connection and its acknowledgement."""


@dataclass(frozen=True, slots=True)
class Message:
    """One message, as published or received. ``topic`` is relative to the bus prefix.

    On receipt ``retain`` is true only for a retained message replayed because a
    subscription was (re)made, never for live traffic; ``qos`` is the publisher's.
    """

    topic: str
    payload: bytes
    qos: int = 0
    retain: bool = False
    sender: str | None = None
    """Who signed it (set by `worldstate.bus.SignedBus` after verification; None on an
    unsigned bus)."""
    epoch: int | None = None
    """The coordinator lease epoch the sender signed under (None: unsigned, -1: none)."""


@dataclass(frozen=True, slots=True)
class BusStats:
    """A snapshot of a bus's counters (since it was created)."""

    published: int = 0
    """Messages handed to the broker (QoS 0: written out; QoS 1: acknowledged)."""
    received: int = 0
    """Messages received for this bus's subscriptions (before the fan-out to handlers)."""
    dropped_outgoing: int = 0
    """QoS 0 publishes dropped because the bus was disconnected or the socket stalled."""
    dropped_incoming: int = 0
    """Received messages dropped: local queue full, oversized, or outside our prefix."""
    handler_errors: int = 0
    """Exceptions raised by handlers and listeners (each logged)."""
    reconnects: int = 0
    """Connections made after the first one."""
    bytes_offered: int = 0
    """Payload bytes handed to `Bus.publish` (whether or not the broker took them)."""
    bytes_received: int = 0
    """Payload bytes of the received messages counted in ``received``."""
    rejected: dict[str, int] = field(default_factory=dict)
    """Received messages dropped by the signing layer, by reason (see
    `worldstate.protocol._envelope.DROP_REASONS`); empty on an unsigned bus."""


Handler = Callable[[Message], None]
LostCallback = Callable[[WorldStateError], None]
ConnectedCallback = Callable[[], None]


class Listener:
    """A registered `Bus.on_lost` / `Bus.on_connected` callback; `cancel` removes it."""

    __slots__ = ("_key", "_registry")

    def __init__(self, registry: dict[int, Callable[..., None]], key: int) -> None:
        self._registry, self._key = registry, key

    def cancel(self) -> None:
        self._registry.pop(self._key, None)


class _Pattern:
    """One subscribed wire pattern and its handlers (a broker-side subscription)."""

    __slots__ = ("active", "error", "sid", "subs", "wire")

    def __init__(self, wire: str, sid: int) -> None:
        self.wire = wire
        self.sid = sid
        """Subscription identifier (MQTT 5): tells which subscriptions a message is for."""
        self.subs: list[Subscription] = []
        self.active = asyncio.Event()
        """Set while the broker holds this subscription on the current connection."""
        self.error: WorldStateError | None = None


class Subscription:
    """A handler registered for a pattern, returned by `Bus.subscribe`.

    Delivery starts once the broker has acknowledged the subscription (`wait_active`); it is
    made again after every reconnection. Retained messages matching the pattern are replayed
    to every handler of that pattern each time the pattern is subscribed (first subscription,
    another handler on the same pattern, reconnection): handlers of retained topics must
    treat them as idempotent state.
    """

    __slots__ = ("_bus", "_cancelled", "_state", "handler", "pattern")

    def __init__(self, bus: Bus, state: _Pattern, pattern: str, handler: Handler) -> None:
        self._bus, self._state = bus, state
        self.pattern = pattern
        self.handler = handler
        self._cancelled = False

    @property
    def active(self) -> bool:
        return not self._cancelled and self._state.active.is_set()

    @property
    def cancelled(self) -> bool:
        return self._cancelled

    @property
    def refused(self) -> WorldStateError | None:
        """The broker's refusal of this pattern (e.g. an ACL), None unless it said no."""
        return self._state.error

    def cancel(self) -> None:
        """Stop calling the handler (at once, even for messages already received).
        Idempotent."""
        if not self._cancelled:
            self._cancelled = True
            self._bus._remove_subscription(self)

    async def wait_active(self, timeout: float | None = None) -> None:
        """Wait until the broker has acknowledged the subscription, so that messages
        published from now on reach the handler. Raises `BusUnavailable` on timeout or if
        the broker refused the pattern, `WorldClosed` if the bus is closed."""
        deadline = None if timeout is None else asyncio.get_running_loop().time() + timeout
        while True:
            if self._bus.closed:
                raise WorldClosed(f"bus {self._bus.client_id!r} is closed")
            if self._cancelled:
                raise ValidationError(f"subscription to {self.pattern!r} was cancelled")
            if self._state.error is not None:
                raise self._state.error
            if self._state.active.is_set():
                return
            try:
                async with asyncio.timeout_at(deadline):
                    await self._bus._wait_change()
            except TimeoutError:
                raise BusUnavailable(
                    f"subscription to {self.pattern!r} on bus {self._bus.client_id!r} was not "
                    f"acknowledged within {timeout} s"
                ) from None

    def __repr__(self) -> str:
        state = "cancelled" if self._cancelled else "active" if self.active else "pending"
        return f"<Subscription {self.pattern!r} {state}>"


class Bus(ABC):
    """Publish/subscribe over one topic prefix. Use as ``async with bus:`` or call `start`
    and `close`.

    Args (keyword-only, shared by every implementation):
        client_id: who this bus is in the mesh (usually the server id); an id without
            ``/``, ``+``, ``#`` or control characters.
        prefix: the topic namespace; every topic and pattern is ``f"{prefix}/{...}"`` on the
            wire. Must not contain wildcards or start with ``$``. Buses with different,
            non-nested prefixes never see each other's messages.
        will: a last-will message (topic relative to ``prefix``) the broker publishes if this
            client dies without a clean close. `close` never publishes it.
        max_payload: largest payload accepted (bytes), both ways.
        max_topic_bytes: longest wire topic accepted (UTF-8 bytes, prefix included).
        publish_timeout: seconds a QoS 1 publish waits for a connection and its
            acknowledgement before raising `BusUnavailable`.
    """

    def __init__(
        self,
        *,
        client_id: str,
        prefix: str,
        will: Message | None = None,
        max_payload: int = DEFAULT_MAX_PAYLOAD,
        max_topic_bytes: int = DEFAULT_MAX_TOPIC_BYTES,
        publish_timeout: float = DEFAULT_PUBLISH_TIMEOUT,
    ) -> None:
        self._client_id = check_id(client_id, "client_id")
        if isinstance(max_payload, bool) or not isinstance(max_payload, int) or max_payload < 0:
            raise ValidationError(f"max_payload must be an int >= 0, got {max_payload!r}")
        if (
            isinstance(max_topic_bytes, bool)
            or not isinstance(max_topic_bytes, int)
            or not 2 < max_topic_bytes <= MQTT_MAX_TOPIC_BYTES
        ):
            raise ValidationError(
                f"max_topic_bytes must be an int in 3..{MQTT_MAX_TOPIC_BYTES}, "
                f"got {max_topic_bytes!r}"
            )
        if not isinstance(publish_timeout, int | float) or not publish_timeout > 0:
            raise ValidationError(f"publish_timeout must be > 0 seconds, got {publish_timeout!r}")
        self._max_payload = max_payload
        self._max_topic_bytes = max_topic_bytes
        self._publish_timeout = float(publish_timeout)
        self._prefix = validate_topic(prefix, what="prefix", max_bytes=max_topic_bytes - 2)
        if self._prefix.startswith("$"):
            raise ValidationError(f"prefix {prefix!r} starts with '$', which brokers reserve")
        self._prefix_slash = self._prefix + "/"
        self._will: Message | None = None
        self._wire_will: str | None = None
        if will is not None:
            if not isinstance(will, Message):
                raise ValidationError(f"will must be a Message, got {type(will).__name__}")
            self._wire_will = self._check_outgoing(will.topic, will.payload, will.qos, will.retain)
            self._will = will

        self._will_signer: Callable[[Message], bytes] | None = None
        """Set by a signing wrapper: makes the will's payload when a connection is made."""
        self._patterns: dict[str, _Pattern] = {}
        self._by_sid: dict[int, _Pattern] = {}
        self._next_sid = 1
        self._started = False
        self._closed = False
        self._connected = False
        self._generation = 0
        """Counts connections made; a waiter can ask for a connection newer than one that
        failed it."""
        self._fatal: WorldStateError | None = None
        """Set when the bus can never connect again (killed, or a bug in the connection
        loop); publishes then fail at once."""
        self._change = asyncio.Event()
        self._lost_listeners: dict[int, Callable[..., None]] = {}
        self._connected_listeners: dict[int, Callable[..., None]] = {}
        self._next_listener = 0
        self._published = 0
        self._received = 0
        self._dropped_outgoing = 0
        self._dropped_incoming = 0
        self._handler_errors = 0
        self._reconnects = 0
        self._bytes_offered = 0
        self._bytes_received = 0

    # -- public surface ---------------------------------------------------------------------

    @property
    def client_id(self) -> str:
        return self._client_id

    @property
    def prefix(self) -> str:
        return self._prefix

    @property
    def will(self) -> Message | None:
        return self._will

    @property
    def connected(self) -> bool:
        """True while connected (to the broker, or attached to the in-process hub)."""
        return self._connected

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def stats(self) -> BusStats:
        return BusStats(
            published=self._published,
            received=self._received,
            dropped_outgoing=self._dropped_outgoing,
            dropped_incoming=self._dropped_incoming,
            handler_errors=self._handler_errors,
            reconnects=self._reconnects,
            bytes_offered=self._bytes_offered,
            bytes_received=self._bytes_received,
        )

    async def start(self) -> None:
        """Connect. Idempotent. Raises `BusUnavailable` if the first connection cannot be
        made in time (the bus is then closed), `WorldClosed` if the bus was closed."""
        if self._closed:
            raise WorldClosed(f"bus {self._client_id!r} is closed; open a new one")
        if self._started:
            return
        self._started = True
        try:
            await self._start()
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        """Disconnect cleanly (the will is not published) and stop every background task.
        Idempotent. ``on_lost`` listeners get a `WorldClosed`."""
        if self._closed:
            return
        self._closed = True
        try:
            await self._close()
        finally:
            self._set_disconnected(WorldClosed(f"bus {self._client_id!r} was closed"), final=True)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def publish(
        self, topic: str, payload: bytes, *, qos: int = 0, retain: bool = False
    ) -> None:
        """Publish ``payload`` on ``topic`` (relative to the prefix).

        QoS 0 never blocks for long: while disconnected the message is dropped and counted
        in ``stats.dropped_outgoing``. QoS 1 waits for a connection and the broker's
        acknowledgement up to ``publish_timeout`` and raises `BusUnavailable` after that; it
        is at-least-once (a retry after a reconnection may duplicate it).

        ``retain=True`` makes the broker keep the message for future subscribers; an empty
        payload with ``retain=True`` deletes the retained message.

        Raises `ValidationError` for a bad topic, payload, qos or retain flag, `WorldClosed`
        once the bus is closed.
        """
        wire = self._check_outgoing(topic, payload, qos, retain)
        if self._closed:
            raise WorldClosed(f"bus {self._client_id!r} is closed; cannot publish to {topic!r}")
        self._bytes_offered += len(payload)
        await self._publish(wire, payload, qos, retain)

    def subscribe(self, pattern: str, handler: Handler) -> Subscription:
        """Call ``handler(message)`` for every message whose topic matches ``pattern``
        (MQTT wildcards: ``+`` one level, ``#`` the rest), relative to the prefix.

        May be called before `start`. The handler runs on the event loop thread and must be
        quick (hand work to a queue); an exception in it is logged and counted. Use
        `Subscription.wait_active` to know when the broker has it.
        """
        if self._closed:
            raise WorldClosed(f"bus {self._client_id!r} is closed; cannot subscribe")
        validate_filter(pattern, max_bytes=self._max_topic_bytes)
        if not callable(handler):
            raise ValidationError(f"handler must be callable, got {type(handler).__name__}")
        wire = self._prefix_slash + pattern
        self._check_wire_length(wire, "pattern")
        state = self._patterns.get(wire)
        new = state is None
        if state is None:
            state = _Pattern(wire, self._next_sid)
            self._next_sid += 1
            self._patterns[wire] = state
            self._by_sid[state.sid] = state
        sub = Subscription(self, state, pattern, handler)
        state.subs.append(sub)
        self._pattern_added(state, new)
        return sub

    async def flush(self, timeout: float | None = None) -> None:
        """Wait (at most ``timeout`` seconds) until the QoS 0 messages published so far
        have left this process: written to the broker's socket, or dropped and counted."""
        await self._flush(timeout)

    async def wait_connected(self, timeout: float | None = None) -> None:
        """Wait until connected. Raises `BusUnavailable` on timeout (or if the bus can never
        connect again), `WorldClosed` if the bus is or gets closed."""
        deadline = None if timeout is None else asyncio.get_running_loop().time() + timeout
        await self._wait_for_connection(deadline)

    def on_lost(self, callback: LostCallback) -> Listener:
        """Call ``callback(error)`` each time the connection is lost (`BusUnavailable`) and
        once when the bus is closed (`WorldClosed`). Runs on the event loop; must be quick."""
        return self._add_listener(self._lost_listeners, callback)

    def on_connected(self, callback: ConnectedCallback) -> Listener:
        """Call ``callback()`` after each (re)connection, once subscriptions are back: the
        moment to republish state that others may have missed."""
        return self._add_listener(self._connected_listeners, callback)

    def __repr__(self) -> str:
        state = "closed" if self._closed else "connected" if self._connected else "disconnected"
        return f"<{type(self).__name__} {self._client_id!r} prefix={self._prefix!r} {state}>"

    # -- for implementations ----------------------------------------------------------------

    @abstractmethod
    async def _start(self) -> None: ...

    @abstractmethod
    async def _close(self) -> None: ...

    @abstractmethod
    async def _publish(self, wire: str, payload: bytes, qos: int, retain: bool) -> None:
        """Publish a validated message; the bus is not closed. Counts into the stats."""

    async def _flush(self, timeout: float | None) -> None:  # noqa: B027 - optional hook
        """Wait for QoS 0 messages still being written (none by default)."""

    @abstractmethod
    def _pattern_added(self, state: _Pattern, new: bool) -> None:
        """A handler was added to ``state`` (``new``: the pattern was not subscribed)."""

    @abstractmethod
    def _pattern_removed(self, state: _Pattern) -> None:
        """The last handler of ``state`` was cancelled."""

    def _check_wire_length(self, wire: str, what: str) -> None:
        size = len(wire.encode("utf-8"))
        if size > self._max_topic_bytes:
            raise ValidationError(
                f"{what} with prefix is {size} bytes long in UTF-8; the limit is "
                f"{self._max_topic_bytes}"
            )

    def _check_outgoing(self, topic: object, payload: object, qos: object, retain: object) -> str:
        validate_topic(topic, max_bytes=self._max_topic_bytes)
        assert isinstance(topic, str)
        if not isinstance(payload, bytes):
            raise ValidationError(
                f"payload must be bytes, got {type(payload).__name__} (encode it first)"
            )
        if len(payload) > self._max_payload:
            raise ValidationError(
                f"payload is {len(payload)} bytes; the limit is {self._max_payload} "
                "(split it, or raise max_payload)"
            )
        if qos not in (0, 1) or isinstance(qos, bool):
            raise ValidationError(f"qos must be 0 or 1, got {qos!r}")
        if not isinstance(retain, bool):
            raise ValidationError(f"retain must be a bool, got {retain!r}")
        wire = self._prefix_slash + topic
        self._check_wire_length(wire, "topic")
        return wire

    def _current_will(self) -> tuple[str, bytes, int, bool] | None:
        """The will for a connection being made now: (wire topic, payload, qos, retain)."""
        will, wire = self._will, self._wire_will
        if will is None or wire is None:
            return None
        payload = will.payload if self._will_signer is None else self._will_signer(will)
        return (wire, payload, will.qos, will.retain)

    def _remove_subscription(self, sub: Subscription) -> None:
        state = sub._state
        if sub in state.subs:
            state.subs.remove(sub)
        if not state.subs and self._patterns.get(state.wire) is state:
            del self._patterns[state.wire]
            del self._by_sid[state.sid]
            self._pattern_removed(state)

    def _matching_patterns(self, wire_topic: str) -> list[_Pattern]:
        return [st for st in self._patterns.values() if matches(st.wire, wire_topic)]

    def _dispatch(
        self,
        wire_topic: str,
        payload: bytes,
        qos: int,
        retain: bool,
        patterns: Iterable[_Pattern] | None,
    ) -> None:
        """Hand a received message to the handlers of ``patterns`` (the subscriptions the
        broker says it is for), or of every matching pattern when that is unknown."""
        if not wire_topic.startswith(self._prefix_slash) or len(payload) > self._max_payload:
            self._dropped_incoming += 1
            return
        self._received += 1
        self._bytes_received += len(payload)
        msg = Message(wire_topic[len(self._prefix_slash) :], payload, qos, retain)
        if patterns is None:
            patterns = self._matching_patterns(wire_topic)
        for state in patterns:
            self._deliver(state, msg)

    def _deliver(self, state: _Pattern, msg: Message) -> None:
        """Call every live handler of ``state`` with ``msg`` (errors logged and counted)."""
        for sub in tuple(state.subs):
            if sub._cancelled:
                continue
            try:
                sub.handler(msg)
            except Exception:
                self._handler_errors += 1
                logger.exception(
                    "bus %r: handler %r for %r failed on a message on %r",
                    self._client_id,
                    sub.handler,
                    sub.pattern,
                    msg.topic,
                )

    def _mark_active(self, state: _Pattern, error: WorldStateError | None = None) -> None:
        """The broker acknowledged (or, with ``error``, refused) the subscription ``state``."""
        state.error = error
        if error is None:
            state.active.set()
        self._notify_change()

    def _notify_change(self) -> None:
        event, self._change = self._change, asyncio.Event()
        event.set()

    async def _wait_change(self) -> None:
        await self._change.wait()

    def _set_connected(self) -> None:
        """Record a (re)connection: wake waiters and call ``on_connected`` listeners."""
        self._connected = True
        self._generation += 1
        if self._generation > 1:
            self._reconnects += 1
        self._notify_change()
        self._call_listeners(self._connected_listeners)

    def _set_disconnected(self, error: WorldStateError, *, final: bool = False) -> None:
        """Record a lost connection (or, with ``final``, the end of the bus): wake waiters and
        call ``on_lost`` listeners if we were connected (always when ``final``)."""
        was_connected = self._connected
        self._connected = False
        for state in self._patterns.values():
            state.active.clear()
        self._notify_change()
        if was_connected or final:
            self._call_listeners(self._lost_listeners, error)

    def _set_fatal(self, error: WorldStateError) -> None:
        self._fatal = error
        self._set_disconnected(error)

    async def _wait_for_connection(self, deadline: float | None, after: int = 0) -> int:
        """Wait until connected with a connection newer than generation ``after``; return
        its generation. Raises `BusUnavailable` at ``deadline`` (loop time)."""
        while True:
            if self._closed:
                raise WorldClosed(f"bus {self._client_id!r} is closed")
            if self._fatal is not None:
                raise BusUnavailable(str(self._fatal))
            if self._connected and self._generation > after:
                return self._generation
            try:
                async with asyncio.timeout_at(deadline):
                    await self._change.wait()
            except TimeoutError:
                raise BusUnavailable(
                    f"bus {self._client_id!r} is not connected{self._why_disconnected()}"
                ) from None

    def _why_disconnected(self) -> str:
        """A suffix for error messages (overridden by adapters that know the last error)."""
        return ""

    def _add_listener(
        self, registry: dict[int, Callable[..., None]], callback: Callable[..., None]
    ) -> Listener:
        if not callable(callback):
            raise ValidationError(f"callback must be callable, got {type(callback).__name__}")
        key = self._next_listener
        self._next_listener += 1
        registry[key] = callback
        return Listener(registry, key)

    def _call_listeners(self, registry: dict[int, Callable[..., None]], *args: object) -> None:
        for callback in tuple(registry.values()):
            try:
                callback(*args)
            except Exception:
                self._handler_errors += 1
                logger.exception("bus %r: listener %r failed", self._client_id, callback)


__all__ = [
    "DEFAULT_MAX_PAYLOAD",
    "DEFAULT_MAX_TOPIC_BYTES",
    "DEFAULT_PUBLISH_TIMEOUT",
    "Bus",
    "BusStats",
    "ConnectedCallback",
    "Handler",
    "Listener",
    "LostCallback",
    "Message",
    "Subscription",
]
