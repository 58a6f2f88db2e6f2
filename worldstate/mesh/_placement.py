"""Pure placement and rebalancing plans for the mesh coordinator.

The coordinator's loops read the store and the bus, call these with what they learnt, and
carry out the moves they return (commands to servers). No I/O, no clock, no randomness here:
the same inputs give the same plan, so the plans are unit-tested without a mesh and the
deterministic simulation drives the very same code.

Load measure: a region weighs ``1 + entities / ENTITY_UNIT + ops_per_s / OPS_UNIT`` (as its
owner last reported in its heartbeat; 1 when unknown); a server's load is the sum over the
regions it holds.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

__all__ = [
    "ENTITY_UNIT",
    "OPS_UNIT",
    "LeaseView",
    "Placement",
    "RebalanceMove",
    "plan_placements",
    "plan_rebalance",
    "region_weight",
]

ENTITY_UNIT = 1000
"""Eventual entities that weigh as much as one region."""
OPS_UNIT = 50.0
"""Strong operations per second that weigh as much as one region."""


@dataclass(frozen=True, slots=True)
class LeaseView:
    """What placement needs of a region's lease row."""

    owner: str
    expires_at: float

    def live(self, now: float) -> bool:
        return self.expires_at > now


@dataclass(frozen=True, slots=True)
class Placement:
    """Place region ``morton`` on ``server``."""

    morton: int
    server: str


@dataclass(frozen=True, slots=True)
class RebalanceMove:
    """Hand region ``morton`` (weight ``weight``) from ``source`` to ``target``."""

    morton: int
    source: str
    target: str
    weight: float


def region_weight(entities: float | None, ops_per_s: float | None) -> float:
    """The weight of one region (see the module docs); unknown load weighs 1."""
    if entities is None and ops_per_s is None:
        return 1.0
    return 1.0 + (entities or 0.0) / ENTITY_UNIT + (ops_per_s or 0.0) / OPS_UNIT


def plan_placements(
    *,
    regions: Iterable[int],
    leases: Mapping[int, LeaseView],
    eligible: Iterable[str],
    loads: Mapping[str, float],
    desired: Mapping[int, str | None],
    busy: Iterable[int],
    in_flight: Iterable[str],
    now: float,
    grace: float,
) -> list[Placement]:
    """Where to put every region that has no live owner.

    - ``regions``: every known region (Morton codes), in the order to consider them;
    - ``leases``: the current lease of each region that has one;
    - ``eligible``: servers that may take regions (heard lately, authoritative, not left);
    - ``loads``: each eligible server's load now; ``in_flight``: targets of placements
      already under way (each counts one region more);
    - ``desired``: the assignment last recorded for a region (placed back there if able);
    - ``busy``: regions with a command in flight (skipped);
    - ``grace``: a lapsed (not released) lease whose owner is alive and eligible gets this
      long past its expiry to be renewed; after it the region goes back to that owner.

    Each placement adds one to its target's load, so a burst of orphaned regions spreads
    over the idlest servers (ties by lowest server id).
    """
    servers = sorted(set(eligible))
    if not servers:
        return []
    load = {s: float(loads.get(s, 0.0)) for s in servers}
    for target in in_flight:
        if target in load:
            load[target] += 1.0
    skip = set(busy)
    out: list[Placement] = []
    for morton in regions:
        if morton in skip:
            continue
        want = desired.get(morton)
        lease = leases.get(morton)
        if lease is not None:
            if lease.live(now):
                continue
            if lease.owner in load and lease.expires_at > 0:
                # lapsed, not released, and its owner is alive and authoritative: it is
                # probably renewing late; give it one more grace, then place it there
                if now - lease.expires_at < grace:
                    continue
                want = lease.owner
        target = want if want in load else min(servers, key=lambda s: (load[s], s))
        assert target is not None
        load[target] += 1.0
        out.append(Placement(morton, target))
    return out


def plan_rebalance(
    *,
    held: Mapping[str, Mapping[int, float]],
    moved_at: Mapping[int, float],
    now: float,
    hysteresis: float,
    cooldown: float,
    max_moves: int,
) -> list[RebalanceMove]:
    """Moves from the busiest servers to the idlest, planned on the expected loads.

    ``held`` maps every eligible server to the regions it holds (Morton → weight), busy
    regions left out. A move is planned while the busiest server is above
    ``mean * (1 + hysteresis)`` and more than one region's weight busier than the idlest:
    the region whose weight is closest to half the gap moves (lowest Morton on a tie),
    unless it moved within ``cooldown`` seconds. At most ``max_moves`` moves.
    """
    servers = sorted(held)
    if len(servers) < 2:
        return []
    regions = {s: dict(held[s]) for s in servers}
    load = {s: sum(r.values()) for s, r in regions.items()}
    mean = sum(load.values()) / len(load)
    moves: list[RebalanceMove] = []
    for _ in range(max_moves):
        hi = max(servers, key=lambda s: (load[s], s))
        lo = min(servers, key=lambda s: (load[s], s))
        gap = load[hi] - load[lo]
        if load[hi] <= mean * (1 + hysteresis) or gap <= 1.0:
            break
        candidates = [
            (abs(w - gap / 2), m, w)
            for m, w in regions[hi].items()
            if w < gap and now - moved_at.get(m, float("-inf")) >= cooldown
        ]
        if not candidates:
            break
        _, m, w = min(candidates)
        moves.append(RebalanceMove(m, hi, lo, w))
        del regions[hi][m]
        regions[lo][m] = w
        load[hi] -= w
        load[lo] += w
    return moves
