"""`InterestSubscriptions`: keeps one server's subscriptions to the regional topic families
(``eventual/…``, ``notice/…``) equal to its interest plan (`worldstate.node._interest`).

- The plan is recomputed whenever ownership changes (`Authority.on_change`: acquire,
  release, hand-off, a lease lost to another owner, release at close) or an `updates()`
  stream opens or closes (`Fanout.on_change`).
- New filters are subscribed at once, in the caller's step (`Bus.subscribe` does not block:
  on the in-process bus they are live before `refresh` returns, on MQTT the SUBSCRIBE is on
  its way). Filters no longer wanted are cancelled only once every wanted one is active
  (make before break): switching from ``eventual/5`` to ``eventual/+`` or a hand-off never
  leaves a hole, at the price of a moment of duplicates (harmless: LWW and notices are
  idempotent).
- One supervised loop (``ws-interest-<server>``) waits for the broker's acknowledgements,
  each with a deadline (`SUBSCRIBE_TIMEOUT`). A filter not acknowledged in time is logged
  and counted (``subscribe_timeouts``) and waited for again with capped backoff (the MQTT
  adapter subscribes everything again on reconnection); a filter the broker refuses (an ACL)
  is logged at ERROR, counted (``refused``), shows in `World.readiness` and is tried again
  with backoff. Nothing is silently missing.
- Anti-entropy for what a server hears but does not own (``seed``, a second supervised loop
  ``ws-interest-seed-<server>``): a region that starts being heard (a neighbour of a region
  just acquired, a region a new stream watches) is seeded at once from its stored snapshot
  (the owner writes one every ``Config.snapshot_interval`` and at release), and every heard,
  unowned region again every ``snapshot_interval`` — so a batch published before this
  server subscribed, or lost on the way, reaches it through its owner's next snapshot.
  Each read has a deadline (`SEED_TIMEOUT`); a failed one is counted and retried next round.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from regions import RegionKey
from worldstate.bus import Handler, Message, Subscription
from worldstate.errors import WorldClosed, WorldStateError
from worldstate.node._authority import Authority
from worldstate.node._context import NodeContext
from worldstate.node._fanout import Fanout
from worldstate.node._interest import InterestPlan, plan_interest

__all__ = ["SUBSCRIBE_TIMEOUT", "InterestSubscriptions"]

log = logging.getLogger("worldstate.interest")

SUBSCRIBE_TIMEOUT = 10.0
"""Seconds the broker has to acknowledge a new subscription before it is reported."""
RETRY_MIN, RETRY_MAX = 0.5, 10.0
"""Backoff (seconds) between attempts while a wanted filter is not active."""
SEED_TIMEOUT = 5.0
"""Seconds one anti-entropy read of a heard region's snapshot may take."""

Seed = Callable[[RegionKey], Awaitable[object]]


class InterestSubscriptions:
    """The regional subscriptions of one world (see the module docs)."""

    def __init__(
        self,
        ctx: NodeContext,
        authority: Authority,
        fanout: Fanout,
        handlers: Mapping[str, Handler],
        *,
        seed: Seed | None = None,
    ) -> None:
        """``seed(key)`` merges a heard region's stored snapshot into this server's state
        (the anti-entropy above); None: no anti-entropy."""
        self.ctx = ctx
        self.authority = authority
        self.fanout = fanout
        self.handlers = {fam: self._counted(fam, h) for fam, h in handlers.items()}
        """Regional family (`worldstate.protocol._topics.REGIONAL`) → its message handler."""
        self.received: dict[str, list[int]] = {fam: [0, 0] for fam in handlers}
        """Family → [messages, payload bytes] handed to its handler (after the signing
        layer): what this server's interest costs it."""
        self._subs: dict[str, Subscription] = {}
        self._plan: InterestPlan | None = None
        self._dirty = asyncio.Event()
        self._settled = asyncio.Event()
        self._round = asyncio.Event()
        """Swapped after every change and every round of the loop (wakes `wait_ready`)."""
        self.subscribe_timeout = SUBSCRIBE_TIMEOUT
        self.retry_min, self.retry_max = RETRY_MIN, RETRY_MAX
        """Timings (seconds), read on every round: tests shorten them."""
        self._seed = seed
        self._to_seed: dict[RegionKey, None] = {}
        self._seed_wakeup = asyncio.Event()
        self.seeded = 0
        self.seed_failures = 0
        self._closed = False
        self._started = False
        self.plans = 0
        self.subscribed = 0
        self.unsubscribed = 0
        self.subscribe_timeouts = 0
        self.refused: dict[str, str] = {}
        """Filters the broker refused on the last attempt → its answer."""

    def _counted(self, family: str, handler: Handler) -> Handler:
        def counted(msg: Message) -> None:
            got = self.received[family]
            got[0] += 1
            got[1] += len(msg.payload)
            handler(msg)

        return counted

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Subscribe to the current plan and start the supervised acknowledgement loop."""
        self.authority.on_change(self.refresh)
        self.fanout.on_change(self.refresh)
        self._started = True
        self.refresh()
        sid = self.ctx.server_id
        self.ctx.tasks.spawn(self._loop(), f"ws-interest-{sid}")
        if self._seed is not None:
            self.ctx.tasks.spawn(self._seed_loop(), f"ws-interest-seed-{sid}")

    def close(self) -> None:
        """Cancel every subscription; later changes do nothing."""
        self._closed = True
        subs, self._subs = self._subs, {}
        for sub in subs.values():
            sub.cancel()

    @property
    def plan(self) -> InterestPlan | None:
        return self._plan

    def filters(self) -> frozenset[str]:
        """The regional filters subscribed now (wanted, or stale until the wanted are
        active)."""
        return frozenset(self._subs)

    def active(self) -> bool:
        """Whether every regional subscription is held by the broker right now (False
        while disconnected, until the reconnection has made them again)."""
        return all(s.active for s in self._subs.values())

    # -- changes ---------------------------------------------------------------------------

    def refresh(self) -> None:
        """Recompute the plan; subscribe what is new at once, schedule the rest."""
        if self._closed or not self._started:
            return
        cfg = self.ctx.config
        plan = plan_interest(
            self.authority.held().keys(),
            self.fanout.interests(),
            mode=cfg.fanout,
            max_regions=cfg.fanout_max_regions,
        )
        if plan == self._plan:
            return
        old, self._plan = self._plan, plan
        if self._seed is not None and not plan.world_wide:
            before = frozenset() if old is None or old.world_wide else old.regions
            self._queue_seeds(plan.regions - before)
        self.plans += 1
        self._settled.clear()
        self._add_missing(plan)
        self._dirty.set()
        self._next_round()

    def _queue_seeds(self, keys: frozenset[RegionKey]) -> None:
        owned = self.authority.held()
        fresh = [k for k in sorted(keys, key=lambda k: k.morton) if k not in owned]
        if fresh:
            self._to_seed.update(dict.fromkeys(fresh))
            self._seed_wakeup.set()

    async def _seed_loop(self) -> None:
        """Seed the heard, unowned regions: new ones at once, all of them every
        ``snapshot_interval``."""
        assert self._seed is not None
        loop = asyncio.get_running_loop()
        interval = self.ctx.config.snapshot_interval
        next_round = loop.time() + interval
        while True:
            if not self._to_seed:
                self._seed_wakeup.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout_at(next_round):
                        await self._seed_wakeup.wait()
                if loop.time() >= next_round:
                    next_round = loop.time() + interval
                    plan = self._plan
                    if plan is not None and not plan.world_wide:
                        self._queue_seeds(plan.regions)
                continue
            key = next(iter(self._to_seed))
            del self._to_seed[key]
            plan = self._plan
            if plan is None or not plan.hears(key) or key in self.authority.held():
                continue  # no longer heard, or owned now (the owner seeds itself)
            try:
                async with asyncio.timeout(SEED_TIMEOUT):
                    await self._seed(key)
                self.seeded += 1
            except (TimeoutError, WorldStateError) as e:
                self.seed_failures += 1
                log.debug("%s: seeding heard region %s failed: %s", self.ctx.server_id, key, e)

    def _next_round(self) -> None:
        event, self._round = self._round, asyncio.Event()
        event.set()

    def _add_missing(self, plan: InterestPlan) -> None:
        bus = self.ctx.bus
        if bus.closed:
            return
        for pattern, family in sorted(plan.all_filters().items()):
            if pattern not in self._subs:
                try:
                    self._subs[pattern] = bus.subscribe(pattern, self.handlers[family])
                except WorldClosed:
                    return  # the world is closing
                self.subscribed += 1

    async def wait_ready(self, timeout: float = SUBSCRIBE_TIMEOUT) -> bool:
        """Wait (at most ``timeout`` s) until every wanted filter is acknowledged by the
        broker and the unwanted ones are gone. False on timeout, and at once when the
        broker refused a wanted filter (both logged and counted by the loop)."""
        deadline = asyncio.get_running_loop().time() + timeout
        while not self._settled.is_set():
            if self.refused or self._closed:
                return False
            try:
                async with asyncio.timeout_at(deadline):
                    await self._round.wait()
            except TimeoutError:
                return False
        return True

    # -- the loop --------------------------------------------------------------------------

    async def _loop(self) -> None:
        delay = self.retry_min
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            settled = await self._settle()
            self._next_round()
            if settled:
                delay = self.retry_min
                continue
            await asyncio.sleep(delay)
            delay = min(2 * delay, self.retry_max)
            self._dirty.set()

    async def _settle(self) -> bool:
        """Wait for the wanted filters, then drop the unwanted. False: try again later."""
        plan = self._plan
        if plan is None or self._closed:
            return True
        self._add_missing(plan)
        wanted = plan.all_filters()
        pending = [(p, s) for p, s in self._subs.items() if p in wanted and not s.active]
        ok = True
        if pending:
            results = await asyncio.gather(
                *(s.wait_active(timeout=self.subscribe_timeout) for _, s in pending),
                return_exceptions=True,
            )
            for (pattern, sub), res in zip(pending, results, strict=True):
                if res is None:
                    self.refused.pop(pattern, None)
                    continue
                if isinstance(res, asyncio.CancelledError):
                    raise res
                if self._closed or self.ctx.bus.closed or sub.cancelled:
                    continue  # closing, or dropped by a newer plan meanwhile
                ok = False
                if sub.refused is not None:
                    self.refused[pattern] = str(sub.refused)
                    log.error(
                        "%s: the broker refused the subscription %r (%s): this server does "
                        "not hear that region; retrying",
                        self.ctx.server_id,
                        pattern,
                        sub.refused,
                    )
                    if self._subs.get(pattern) is sub:  # subscribe again on the next attempt
                        del self._subs[pattern]
                        sub.cancel()
                elif isinstance(res, WorldStateError):
                    self.subscribe_timeouts += 1
                    log.warning(
                        "%s: subscription %r not acknowledged within %.0f s (%s); waiting again",
                        self.ctx.server_id,
                        pattern,
                        self.subscribe_timeout,
                        res,
                    )
                else:  # a bug in a bus adapter: crash the loop (the world fails loudly)
                    raise res
        if self._closed or self._plan is not plan:
            return True  # a newer plan is already scheduled
        if not ok:
            return False
        for pattern in [p for p in self._subs if p not in wanted]:
            self._subs.pop(pattern).cancel()
            self.unsubscribed += 1
        self._settled.set()
        return True

    # -- observability ---------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        plan = self._plan
        return {
            "mode": self.ctx.config.fanout,
            "world_wide": None if plan is None else plan.world_wide,
            "reason": None if plan is None else plan.reason,
            "regions": 0 if plan is None else len(plan.regions),
            "filters": len(self._subs),
            "plans": self.plans,
            "subscribed": self.subscribed,
            "unsubscribed": self.unsubscribed,
            "subscribe_timeouts": self.subscribe_timeouts,
            "refused": dict(self.refused),
            "settled": self._settled.is_set(),
            "seeded": self.seeded,
            "seed_failures": self.seed_failures,
            "received": {fam: {"messages": m, "bytes": b} for fam, (m, b) in self.received.items()},
        }
