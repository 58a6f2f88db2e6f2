"""`SignedBus`: the one place where bus messages are authenticated.

It wraps another `Bus` (in-process or MQTT) with the same interface. Every publish is sealed
in an envelope (`worldstate.protocol._envelope`): sender, key id, incarnation, sequence
number, connection number, send time, coordinator epoch and a MAC over the topic, the
header and the body (Poly1305 keyed per message by HMAC-SHA256), with a key derived from the
world's bus key for that sender. Every
delivery is checked before any handler sees it; a message that fails is dropped and counted by
reason (``stats.rejected``), never handed on. Handlers get the body, with the verified
``Message.sender`` and ``Message.epoch``.

Checks, in order: it parses (``malformed``), its body fits (``oversized``), the sender and the
key id are not revoked (``revoked``) and the key id is known (``unknown_key``), the MAC
matches (``forged``), the sender is the one the topic names for the topic families that name
their publisher (``members/<id>``, ``causal/events/<id>``, ``causal/heads/<id>``:
``forged``), and the `ReplayGuard` freshness and sequence rules (``stale``, ``replayed``).

Keys come from the store through ``load_keys`` (`worldstate.store.bus_keys`) at start and
every ``refresh`` seconds after, each read under a deadline, so a ``worldstate keys rotate``
or ``revoke`` reaches every running server within about ``refresh`` seconds. The last will
is signed when each connection is made (flag ``WILL``: exempt from the freshness window,
accepted once per connection). Deleting a retained message (an empty retained publish) goes
out as it is, and every empty message received is ignored: the broker needs the empty payload
to delete, and a deletion tells receivers nothing they act on.

A second handler on an already subscribed pattern does not get the retained messages
replayed again (one subscription per pattern on the wrapped bus).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from typing import Any

from worldstate.bus.base import Bus, BusStats, Message, Subscription, _Pattern
from worldstate.bus.topics import matches
from worldstate.errors import BusUnavailable, WorldClosed, WorldStateError
from worldstate.protocol import _topics as topics
from worldstate.protocol._envelope import (
    DROP_REASONS,
    FLAG_WILL,
    NO_EPOCH,
    OVERHEAD,
    EnvelopeError,
    KeyRing,
    KeySet,
    ReplayGuard,
    check_mac,
    parse,
    seal,
)

log = logging.getLogger("worldstate.bus.signed")

RETAINED_TOPICS = (topics.every(topics.PRESENCE), topics.MEMBERSHIP)
"""The topic families published retained (presence, agreed membership)."""
NAMED_PUBLISHER = (
    (topics.every(topics.PRESENCE), 1),
    (topics.every(topics.CAUSAL_EVENTS), 2),
    (topics.every(topics.CAUSAL_HEADS), 2),
)
OWN_ECHOES_DROPPED = (topics.every(topics.EVENTUAL),)
"""Topic families whose handlers never use our own messages, which the broker sends back:
dropped before verification (they are most of what a region owner receives), never
delivered (so a forgery in our name cannot pass as one)."""
"""Topic families whose level ``i`` names the only server allowed to publish there."""
DEFAULT_MAX_AGE = 30.0
DEFAULT_SKEW = 2.0
DEFAULT_REFRESH = 5.0
LoadKeys = Callable[[], Awaitable[KeySet]]
Spawn = Callable[[Coroutine[Any, Any, None], str], "asyncio.Task[Any]"]
"""Starts a background loop under its owner's supervisor (`worldstate.node.Supervisor`)."""


class SignedBus(Bus):
    """A `Bus` that signs what it publishes and verifies what it receives (module docs).

    Args:
        inner: the bus that carries the envelopes (not started; this bus starts and closes
            it). Its client id, prefix and will are this bus's.
        load_keys: reads the world's `KeySet` (from the store).
        clock: wall clock, seconds since the Unix epoch.
        max_age: seconds a live message may take from signing to delivery.
        skew: clock difference tolerated between servers (seconds).
        refresh: seconds between key re-reads.
        key_timeout: deadline of each key read.
        retained_topics, named_publisher: see `RETAINED_TOPICS`, `NAMED_PUBLISHER`.
        spawn: starts the key refresh loop under the owner's supervisor (default: a task
            this bus owns and cancels on close).
    """

    def __init__(
        self,
        inner: Bus,
        *,
        load_keys: LoadKeys,
        clock: Callable[[], float] = time.time,
        max_age: float = DEFAULT_MAX_AGE,
        skew: float = DEFAULT_SKEW,
        refresh: float = DEFAULT_REFRESH,
        key_timeout: float = 10.0,
        retained_topics: Iterable[str] = RETAINED_TOPICS,
        named_publisher: Iterable[tuple[str, int]] = NAMED_PUBLISHER,
        spawn: Spawn | None = None,
        own_echoes_dropped: Iterable[str] = OWN_ECHOES_DROPPED,
    ) -> None:
        super().__init__(
            client_id=inner.client_id,
            prefix=inner.prefix,
            will=inner.will,
            max_payload=max(0, inner._max_payload - OVERHEAD),
            max_topic_bytes=inner._max_topic_bytes,
            publish_timeout=inner._publish_timeout,
        )
        self.inner = inner
        self._load_keys = load_keys
        self._clock = clock
        self._max_age = float(max_age)
        self._skew = float(skew)
        self._refresh = float(refresh)
        self._key_timeout = float(key_timeout)
        self._retained = tuple(retained_topics)
        self._named = tuple(named_publisher)
        self._no_echo = tuple(own_echoes_dropped)
        self.echoes = 0
        self._rules: dict[str, tuple[str | None, bool, bool]] = {}
        """Our own messages dropped unverified on the `OWN_ECHOES_DROPPED` topics."""
        self._ring: KeyRing | None = None
        self._guard = ReplayGuard(self._max_age, self._skew, clock())
        self.incarnation = time.time_ns() // 1000
        self._seq = 0
        self._conn = 0
        self.epoch = NO_EPOCH
        """The coordinator lease epoch sealed into every message (set by the coordinator)."""
        self._rejected: Counter[str] = Counter()
        self._cleared = 0
        """Empty messages ignored (retained deletions)."""
        self._inner_subs: dict[str, Subscription] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._refresher: asyncio.Task[Any] | None = None
        self._newer_key = asyncio.Event()
        self._spawn = spawn
        self._listeners = [
            inner.on_connected(self._inner_connected),
            inner.on_lost(self._inner_lost),
        ]
        inner._will_signer = self._sign_will

    # -- state ------------------------------------------------------------------------------

    @property
    def keys(self) -> KeySet | None:
        return None if self._ring is None else self._ring.keys

    @property
    def stats(self) -> BusStats:
        s = self.inner.stats
        return BusStats(
            published=s.published,
            received=s.received,
            dropped_outgoing=s.dropped_outgoing,
            dropped_incoming=s.dropped_incoming,
            handler_errors=s.handler_errors + self._handler_errors,
            reconnects=s.reconnects,
            rejected={r: self._rejected[r] for r in DROP_REASONS},
        )

    @property
    def rejected(self) -> dict[str, int]:
        """Messages dropped by verification, by reason."""
        return {r: self._rejected[r] for r in DROP_REASONS}

    # -- lifecycle --------------------------------------------------------------------------

    async def _start(self) -> None:
        try:
            async with asyncio.timeout(self._key_timeout):
                keys = await self._load_keys()
        except TimeoutError:
            raise BusUnavailable(
                f"bus {self.client_id!r}: could not read the bus keys from the store within "
                f"{self._key_timeout} s"
            ) from None
        self._ring = KeyRing(keys)
        self._guard.started_at = self._clock()
        await self.inner.start()
        if self.inner.connected and not self._connected:
            self._inner_connected()
        name = f"worldstate-bus-keys[{self.client_id}]"
        if self._spawn is not None:  # the owner's supervisor: a crash fails the owner loudly
            self._refresher = self._spawn(self._refresh_loop(), name)
        else:
            self._refresher = asyncio.get_running_loop().create_task(  # owned
                self._refresh_loop(), name=name
            )

    async def _close(self) -> None:
        tasks = list(self._tasks)
        if self._refresher is not None:
            tasks.append(self._refresher)
            self._refresher = None
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.wait(tasks)
        for sub in self._inner_subs.values():
            sub.cancel()
        self._inner_subs.clear()
        await self.inner.close()
        for listener in self._listeners:
            listener.cancel()

    async def _flush(self, timeout: float | None) -> None:
        await self.inner.flush(timeout)

    def _why_disconnected(self) -> str:
        return self.inner._why_disconnected()

    async def _refresh_loop(self) -> None:
        while True:
            # every `refresh` seconds, or at once when a peer signs with a newer key than we
            # know (a rotation: no need to drop its messages until the next poll)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._refresh):
                    await self._newer_key.wait()
                # woken early: at most one read a second, whatever a peer (or a forger
                # naming a key id out of thin air) sends
                await asyncio.sleep(min(1.0, self._refresh))
            self._newer_key.clear()
            try:
                async with asyncio.timeout(self._key_timeout):
                    keys = await self._load_keys()
            except (TimeoutError, WorldStateError) as e:
                log.warning("bus %r: could not re-read the bus keys: %s", self.client_id, e)
                continue
            self._apply_keys(keys)

    def _apply_keys(self, keys: KeySet) -> None:
        ring = self._ring
        assert ring is not None
        old = ring.keys
        if keys == old:
            return
        if keys.current != old.current:
            log.warning(
                "bus %r: bus key %d accepted (it signs from %s)",
                self.client_id,
                keys.current,
                time.strftime("%H:%M:%S", time.gmtime(keys.activation.get(keys.current, 0.0))),
            )
        for sid in sorted(keys.revoked_servers - old.revoked_servers):
            log.warning(
                "bus %r: server %r was revoked; its messages are dropped", self.client_id, sid
            )
        if self.client_id in keys.revoked_servers:
            log.error(
                "bus %r: THIS server's id is revoked: every other server drops its messages",
                self.client_id,
            )
        ring.replace(keys)

    def refresh_now(self, keys: KeySet) -> None:
        """Take ``keys`` at once (tests; the refresh loop does it every ``refresh`` s)."""
        self._apply_keys(keys)

    # -- connection state mirrored from the wrapped bus --------------------------------------

    def _inner_connected(self) -> None:
        for wire, sub in self._inner_subs.items():
            state = self._patterns.get(wire)
            if state is not None and sub.active:
                state.active.set()
        self._set_connected()

    def _inner_lost(self, error: WorldStateError) -> None:
        if self._closed:
            return
        if self.inner._fatal is not None:
            self._set_fatal(error)
        else:
            self._set_disconnected(error)

    # -- subscriptions ----------------------------------------------------------------------

    def _pattern_added(self, state: _Pattern, new: bool) -> None:
        if not new:
            return
        pattern = state.wire[len(self._prefix_slash) :]
        sub = self.inner.subscribe(pattern, lambda m: self._incoming(state, m))
        self._inner_subs[state.wire] = sub
        if self.inner.connected:
            task = asyncio.get_running_loop().create_task(self._await_active(state, sub))  # owned
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _await_active(self, state: _Pattern, sub: Subscription) -> None:
        try:
            await sub.wait_active(timeout=self._publish_timeout * 4)
        except WorldStateError:
            refused = sub._state.error  # the broker said no: say so to our waiters too
            if refused is not None and state.subs:
                self._mark_active(state, refused)
            return  # else slow or reconnecting: the next connection marks it active
        self._mark_active(state)

    def _pattern_removed(self, state: _Pattern) -> None:
        sub = self._inner_subs.pop(state.wire, None)
        if sub is not None:
            sub.cancel()

    def _incoming(self, state: _Pattern, msg: Message) -> None:
        ring = self._ring
        if ring is None:
            return  # not started: nothing can be verified yet
        topic = msg.topic
        if not msg.payload:
            self._cleared += 1  # a retained message deleted (by anyone): nothing to act on
            return
        rule = self._rules.get(topic)
        if rule is None:
            rule = self._rule_of(topic)
        named, retained_ok, no_echo = rule
        try:
            env = parse(msg.payload)
            if no_echo and env.sender == self._client_id:
                self.echoes += 1
                return
            if len(env.body) > self._max_payload:
                raise EnvelopeError("oversized", f"{len(env.body)} bytes on {topic!r}")
            check_mac(ring.signer(env.key_id, env.sender), topic, env)
            if named is not None and named != env.sender:
                raise EnvelopeError("forged", f"{env.sender!r} may not publish on {topic!r}")
            self._guard.check(env, now=self._clock(), retained=msg.retain, retained_ok=retained_ok)
        except EnvelopeError as e:
            if e.reason == "unknown_key" and env.key_id > max(ring.keys.keys, default=0):
                self._newer_key.set()  # probably a rotation this server has not read yet
            self._rejected[e.reason] += 1
            log.debug("bus %r: %s", self.client_id, e)
            return
        self._deliver(
            state, Message(topic, bytes(env.body), msg.qos, msg.retain, env.sender, env.epoch)
        )

    def _rule_of(self, topic: str) -> tuple[str | None, bool, bool]:
        """(the server the topic names as its only publisher, retained allowed, own echoes
        dropped) for ``topic``, remembered (topics repeat: regions, servers)."""
        levels = topic.split("/")
        named = next(
            (levels[i] for p, i in self._named if matches(p, topic) and i < len(levels)), None
        )
        rule = (
            named,
            any(matches(p, topic) for p in self._retained),
            any(matches(p, topic) for p in self._no_echo),
        )
        if len(self._rules) > 65_536:
            self._rules.clear()
        self._rules[topic] = rule
        return rule

    # -- publishing -------------------------------------------------------------------------

    def _seal(self, topic: str, body: bytes, flags: int = 0) -> bytes:
        ring = self._ring
        if ring is None:
            raise BusUnavailable(f"bus {self.client_id!r} is not started: no keys to sign with")
        now = self._clock()
        kid = ring.keys.signing_key(now)
        self._seq += 1
        return seal(
            ring.signer(kid, self.client_id),
            topic,
            body,
            key_id=kid,
            sender=self.client_id,
            incarnation=self.incarnation,
            seq=self._seq,
            conn=self._conn,
            sent_at=now,
            epoch=self.epoch,
            flags=flags,
        )

    def _sign_will(self, will: Message) -> bytes:
        self._conn += 1
        with contextlib.suppress(BusUnavailable, EnvelopeError):
            return self._seal(will.topic, will.payload, FLAG_WILL)
        return b""

    async def _publish(self, wire: str, payload: bytes, qos: int, retain: bool) -> None:
        topic = wire[len(self._prefix_slash) :]
        if retain and not payload:
            # deleting a retained message at the broker: an empty payload is the protocol's
            # way, and receivers ignore empty messages (a deletion carries no information
            # they act on; a departure is announced by a signed goodbye or will)
            await self.inner.publish(topic, b"", qos=qos, retain=True)
            return
        if self.inner.closed:
            raise WorldClosed(f"bus {self.client_id!r} is closed; cannot publish to {topic!r}")
        # validated here already (same prefix, and the envelope fits the wrapped bus's limit)
        await self.inner._publish(wire, self._seal(topic, payload), qos, retain)


__all__ = ["NAMED_PUBLISHER", "OWN_ECHOES_DROPPED", "RETAINED_TOPICS", "SignedBus"]
