"""`NodeContext`: what every component of one server shares, passed in explicitly."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

import conflicts as cf
from consistency import HybridClock
from worldstate.bus import Bus
from worldstate.cache import RegionCache
from worldstate.config import Config
from worldstate.node._tasks import Supervisor
from worldstate.store import Store

__all__ = ["NodeContext"]


@dataclass(frozen=True, slots=True, eq=False)
class NodeContext:
    """One server's identity, time, randomness and connections.

    Every component (the three paths, the membership agent, the command handler) receives
    this and nothing wider: the clock, the rng, the store and the bus are whatever the
    composition root put here — real ones from `worldstate.connect`, simulated ones in the
    deterministic simulation (tests/sim).
    """

    server_id: str
    config: Config
    clock: Callable[[], float]
    hlc: HybridClock
    rng: random.Random
    store: Store
    bus: Bus
    cache: RegionCache
    policy: cf.Policy
    tasks: Supervisor
