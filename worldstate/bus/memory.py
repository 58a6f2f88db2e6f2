"""The in-process bus: every `MemoryBus` opened with the same name in one process shares one
`Hub`, which plays the broker. It is the embedded default (``memory://``) and the network of
the deterministic simulation, so the hub can also inject faults: partitions, one-way blocks,
crashes, cuts, drops, duplicates, reordering and delays. The decisions are made by the
sans-I/O `worldstate.bus.netsim.FaultNetwork` (one seeded `random.Random`); the hub drives
it with its event loop's clock and one timer.

Semantics follow MQTT where it matters to the layers above:

- Delivery is asynchronous: the hub puts each message on the receiver's queue and a task per
  bus hands it to the handlers. With no faults, messages from one publisher arrive in the
  order they were published (delays keep that order too; only ``reorder`` breaks it).
- A publisher receives its own messages when it is subscribed to their topic.
- Retained messages are kept per wire topic and replayed when a pattern is subscribed; an
  empty retained payload deletes the topic's retained message.
- The last will is published by `Hub.kill` (a crash) and `Hub.cut` (the connection dropped),
  never by `Bus.close`.

Determinism: given the seed, the order in which buses were started and the order of
publishes, the faults drawn (and, without ``delay``, the order of deliveries) are the same on
every run. Random draws happen per (message, receiver), receivers in the order they attached.
"""

from __future__ import annotations

import asyncio
import random
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

from worldstate.bus.base import (
    DEFAULT_MAX_PAYLOAD,
    DEFAULT_MAX_TOPIC_BYTES,
    DEFAULT_PUBLISH_TIMEOUT,
    Bus,
    Message,
    _Pattern,
)
from worldstate.bus.netsim import FaultNetwork, Faults
from worldstate.bus.topics import matches
from worldstate.errors import BusUnavailable, ValidationError

DEFAULT_QUEUE_SIZE = 100_000
"""Messages a `MemoryBus` holds for its handlers before dropping (``dropped_incoming``)."""


@dataclass(frozen=True, slots=True)
class HubStats:
    """A snapshot of a hub's counters."""

    published: int = 0
    """Messages published to the hub (wills included)."""
    delivered: int = 0
    """Deliveries put on receivers' queues (one message to three receivers counts three)."""
    dropped: int = 0
    """Deliveries lost to the ``drop`` fault."""
    duplicated: int = 0
    reordered: int = 0
    partitioned: int = 0
    """Deliveries refused because publisher and receiver are in different partition groups."""
    overflowed: int = 0
    """Deliveries dropped because the receiver's queue was full."""
    wills: int = 0
    """Last wills published (by `Hub.kill` and `Hub.cut`)."""


@dataclass(frozen=True, slots=True)
class _Delivery:
    wire: str
    payload: bytes
    qos: int
    retain: bool
    patterns: tuple[_Pattern, ...]


@dataclass(slots=True)
class _Retained:
    payload: bytes
    qos: int
    sender: str


class Hub:
    """The in-process broker shared by the `MemoryBus` instances attached to it.

    Get the process-wide hub of a name with `get_hub` (``memory://NAME`` does that), or make
    a private one and pass it as ``MemoryBus(hub=...)`` (the simulation does).
    """

    def __init__(self, name: str = "") -> None:
        self.name = name
        self._clients: dict[str, MemoryBus] = {}
        self._cut: set[str] = set()
        self._retained: dict[str, _Retained] = {}
        self._net: FaultNetwork[_Delivery] = FaultNetwork()
        self._timer: asyncio.TimerHandle | None = None
        self._published = 0
        self._delivered = 0
        self._overflowed = 0
        self._wills = 0

    # -- inspection -------------------------------------------------------------------------

    @property
    def clients(self) -> list[str]:
        """Client ids attached now, in the order they attached (cut ones included)."""
        return list(self._clients)

    @property
    def faults(self) -> Faults:
        return self._net.faults

    @property
    def network(self) -> FaultNetwork[_Delivery]:
        """The fault network between the clients (partitions, blocks, per-delivery faults)."""
        return self._net

    @property
    def stats(self) -> HubStats:
        net = self._net.stats
        return HubStats(
            published=self._published,
            delivered=self._delivered,
            dropped=net.dropped,
            duplicated=net.duplicated,
            reordered=net.reordered,
            partitioned=net.partitioned,
            overflowed=self._overflowed,
            wills=self._wills,
        )

    @property
    def in_flight(self) -> int:
        """Deliveries not yet handed to handlers: held back or delayed on their way, or
        queued at a bus. Zero means the hub is quiet (a simulation can wait for that)."""
        return self._net.in_flight + sum(len(bus._queue) for bus in self._clients.values())

    def retained_topics(self) -> list[str]:
        """Wire topics holding a retained message."""
        return sorted(self._retained)

    # -- fault injection --------------------------------------------------------------------

    def partition(self, groups: Iterable[Iterable[str]]) -> None:
        """Split the clients into groups that cannot exchange messages, until `heal`.

        ``groups`` lists disjoint sets of client ids. Every client id not listed (now or
        attaching later) belongs to one more group, "the rest", together with all other
        unlisted ids. Messages already on their way are still delivered; messages published
        across groups during the partition are lost (as over a cut network), retained
        messages included in what a subscriber of another group cannot see.
        """
        self._net.partition(groups)

    def block(self, sender: str, receiver: str) -> None:
        """One-way fault: messages from ``sender`` no longer reach ``receiver`` (the other
        direction still works) until `heal` or `unblock`."""
        self._net.block(sender, receiver)

    def unblock(self, sender: str, receiver: str) -> None:
        self._net.unblock(sender, receiver)

    def heal(self) -> None:
        """End the partition and every one-way block: every client reaches every other."""
        self._net.heal()

    def can_reach(self, sender: str, receiver: str) -> bool:
        """Whether a message from ``sender`` can reach ``receiver`` now."""
        return self._net.can_reach(sender, receiver)

    def set_faults(
        self,
        *,
        drop: float = 0.0,
        duplicate: float = 0.0,
        reorder: float = 0.0,
        delay: tuple[float, float] = (0.0, 0.0),
        seed: int = 0,
        reorder_window: float = 0.05,
        rng: random.Random | None = None,
    ) -> None:
        """Set the faults applied to each delivery from now on (see `Faults`) and reseed the
        random generator with ``seed`` (or use ``rng``, e.g. the simulation's own).
        ``set_faults()`` turns them all off; links still holding or delaying messages keep
        carrying traffic (so nothing overtakes them)."""
        try:
            lo, hi = (float(x) for x in delay)
        except (TypeError, ValueError):
            raise ValidationError(
                f"delay must be a (lo, hi) pair of seconds, got {delay!r}"
            ) from None
        faults = Faults(
            drop=drop,
            duplicate=duplicate,
            reorder=reorder,
            delay=(lo, hi),
            reorder_window=reorder_window,
            seed=seed,
        )
        self._net.set_faults(faults, rng=rng)

    def kill(self, client_id: str) -> None:
        """Simulate the crash of ``client_id``: its bus loses the connection for good
        (publishes fail, ``on_lost`` fires with `BusUnavailable`), it is detached, and its
        last will (if any) is published on its behalf."""
        bus = self._get(client_id)
        self._detach(bus)
        bus._killed(BusUnavailable(f"bus {client_id!r} was killed (simulated crash)"))
        self._publish_will(bus)

    def cut(self, client_id: str) -> None:
        """Simulate a dropped connection: ``client_id`` stops sending and receiving, its bus
        sees the connection lost, and its last will is published (the broker saw the
        connection die). `restore` reconnects it."""
        bus = self._get(client_id)
        if client_id in self._cut:
            return
        self._cut.add(client_id)
        self._close_links(bus)
        bus._cut_off()
        self._publish_will(bus)

    def restore(self, client_id: str) -> None:
        """Reconnect a client that was `cut`: subscriptions are back (retained messages are
        replayed) and ``on_connected`` fires."""
        bus = self._get(client_id)
        if client_id not in self._cut:
            return
        self._cut.discard(client_id)
        bus._restored()

    # -- used by MemoryBus ------------------------------------------------------------------

    def _get(self, client_id: str) -> MemoryBus:
        try:
            return self._clients[client_id]
        except KeyError:
            raise ValidationError(
                f"no client {client_id!r} is attached to hub {self.name!r} "
                f"(attached: {sorted(self._clients)})"
            ) from None

    def _attach(self, bus: MemoryBus) -> None:
        if bus.client_id in self._clients:
            raise ValidationError(
                f"a bus with client_id {bus.client_id!r} is already attached to hub "
                f"{self.name!r}; client ids must be unique on a hub"
            )
        self._clients[bus.client_id] = bus

    def _detach(self, bus: MemoryBus) -> None:
        if self._clients.get(bus.client_id) is not bus:
            return
        del self._clients[bus.client_id]
        self._cut.discard(bus.client_id)
        self._close_links(bus)
        if not self._clients:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            if _HUBS.get(self.name) is self:
                del _HUBS[self.name]

    def _close_links(self, bus: MemoryBus) -> None:
        self._net.forget(bus.client_id)

    def _is_up(self, bus: MemoryBus) -> bool:
        return self._clients.get(bus.client_id) is bus and bus.client_id not in self._cut

    def _publish(self, sender: str, wire: str, payload: bytes, qos: int, retain: bool) -> None:
        self._published += 1
        if retain:
            if payload:
                self._retained[wire] = _Retained(payload, qos, sender)
            else:
                self._retained.pop(wire, None)
        net = self._net
        sent = False
        for receiver_id, receiver in self._clients.items():
            if receiver_id in self._cut:
                continue
            patterns = tuple(receiver._matching_patterns(wire))
            if not patterns:
                continue
            if not net.admit(sender, receiver_id):
                continue
            delivery = _Delivery(wire, payload, qos, False, patterns)
            if net.direct:
                self._enqueue(receiver, delivery)
                continue
            net.send(sender, receiver_id, delivery, asyncio.get_running_loop().time())
            sent = True
        if sent:
            self._pump()

    def _pump(self) -> None:
        """Hand over what the network has due now; set the timer for what is due next."""
        loop = asyncio.get_running_loop()
        for receiver_id, delivery in self._net.due(loop.time()):
            bus = self._clients.get(receiver_id)
            if bus is not None:
                self._enqueue(bus, delivery)
        when = self._net.next_due()
        timer = self._timer
        if timer is not None and (when is None or timer.when() != when):
            timer.cancel()
            self._timer = timer = None
        if when is not None and timer is None:
            self._timer = loop.call_at(when, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._pump()

    def _replay_retained(self, bus: MemoryBus, state: _Pattern) -> None:
        """A pattern was subscribed: replay matching retained messages to its handlers."""
        for wire, kept in list(self._retained.items()):
            if matches(state.wire, wire) and self.can_reach(kept.sender, bus.client_id):
                self._enqueue(bus, _Delivery(wire, kept.payload, kept.qos, True, (state,)))

    def _publish_will(self, bus: MemoryBus) -> None:
        will = bus._wire_will_message()
        if will is not None:
            self._wills += 1
            self._publish(bus.client_id, *will)

    def _enqueue(self, bus: MemoryBus, d: _Delivery) -> None:
        if not self._is_up(bus):
            return
        if bus._enqueue(d):
            self._delivered += 1
        else:
            self._overflowed += 1


_HUBS: dict[str, Hub] = {}


def get_hub(name: str = "") -> Hub:
    """The process-wide hub called ``name`` (created if needed). A hub leaves the registry
    when its last bus detaches: a later bus of that name starts afresh (no retained
    messages, no faults)."""
    if not isinstance(name, str):
        raise ValidationError(f"hub name must be a str, got {type(name).__name__}")
    hub = _HUBS.get(name)
    if hub is None:
        hub = _HUBS[name] = Hub(name)
    return hub


class MemoryBus(Bus):
    """A `Bus` attached to an in-process `Hub`.

    Args (besides the `Bus` ones):
        name: the process-wide hub to attach to (``memory://NAME``); ignored if ``hub`` is
            given.
        hub: a specific hub (e.g. the simulation's own).
        queue_size: messages held for the handlers before further ones are dropped.
    """

    def __init__(
        self,
        name: str = "",
        *,
        client_id: str,
        prefix: str,
        will: Message | None = None,
        hub: Hub | None = None,
        queue_size: int = DEFAULT_QUEUE_SIZE,
        max_payload: int = DEFAULT_MAX_PAYLOAD,
        max_topic_bytes: int = DEFAULT_MAX_TOPIC_BYTES,
        publish_timeout: float = DEFAULT_PUBLISH_TIMEOUT,
    ) -> None:
        super().__init__(
            client_id=client_id,
            prefix=prefix,
            will=will,
            max_payload=max_payload,
            max_topic_bytes=max_topic_bytes,
            publish_timeout=publish_timeout,
        )
        if not isinstance(name, str):
            raise ValidationError(f"hub name must be a str, got {type(name).__name__}")
        if isinstance(queue_size, bool) or not isinstance(queue_size, int) or queue_size < 1:
            raise ValidationError(f"queue_size must be an int >= 1, got {queue_size!r}")
        self._name = name
        self._hub = hub
        self._queue_size = queue_size
        self._queue: deque[_Delivery] = deque()
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def hub(self) -> Hub:
        """The hub this bus attaches (or attached) to."""
        if self._hub is None:
            self._hub = get_hub(self._name)
        return self._hub

    async def _start(self) -> None:
        hub = self._hub
        if hub is None:
            hub = self._hub = get_hub(self._name)
        hub._attach(self)
        self._task = asyncio.create_task(  # owned
            self._deliver_loop(), name=f"worldstate-bus-memory[{self.client_id}]"
        )
        self._come_up()

    async def _close(self) -> None:
        if self._hub is not None:
            self._hub._detach(self)
        self._queue.clear()
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.wait([task])

    async def _publish(self, wire: str, payload: bytes, qos: int, retain: bool) -> None:
        if not self._connected:
            if qos == 0:
                self._dropped_outgoing += 1
                return
            loop = asyncio.get_running_loop()
            await self._wait_for_connection(loop.time() + self._publish_timeout)
        assert self._hub is not None
        self._hub._publish(self.client_id, wire, payload, qos, retain)
        self._published += 1

    def _pattern_added(self, state: _Pattern, new: bool) -> None:
        if self._connected and self._hub is not None:
            self._mark_active(state)
            self._hub._replay_retained(self, state)

    def _pattern_removed(self, state: _Pattern) -> None:
        pass

    def _wire_will_message(self) -> tuple[str, bytes, int, bool] | None:
        return self._current_will()

    def _come_up(self) -> None:
        assert self._hub is not None
        for state in list(self._patterns.values()):
            self._mark_active(state)
        self._set_connected()
        for state in list(self._patterns.values()):
            self._hub._replay_retained(self, state)

    def _killed(self, error: BusUnavailable) -> None:
        self._queue.clear()
        if self._task is not None:
            self._task.cancel()
        self._set_fatal(error)

    def _cut_off(self) -> None:
        self._queue.clear()
        self._set_disconnected(BusUnavailable(f"bus {self.client_id!r} was cut off the hub"))

    def _restored(self) -> None:
        if not self._closed and self._fatal is None:
            self._come_up()

    def _enqueue(self, d: _Delivery) -> bool:
        if len(self._queue) >= self._queue_size:
            self._dropped_incoming += 1
            return False
        self._queue.append(d)
        self._wakeup.set()
        return True

    async def _deliver_loop(self) -> None:
        queue = self._queue
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            # Hand over what is queued, yielding now and then so a flood of messages
            # cannot starve the rest of the event loop.
            done = 0
            while queue:
                d = queue.popleft()
                self._dispatch(d.wire, d.payload, d.qos, d.retain, d.patterns)
                done += 1
                if done % 256 == 0:
                    await asyncio.sleep(0)


__all__ = ["DEFAULT_QUEUE_SIZE", "Faults", "Hub", "HubStats", "MemoryBus", "get_hub"]
