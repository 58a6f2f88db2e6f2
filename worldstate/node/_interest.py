"""Which regional topics one server subscribes to: a pure function of what it owns and what
its open `updates()` streams watch (no I/O; `worldstate.node._subscriptions` applies it).

The regional families (``eventual/{morton}`` tick batches and ``notice/{morton}`` strong
commit notices, `worldstate.protocol._topics.REGIONAL`) are laid out one topic per region,
so a server hears exactly the regions it names:

- every region it holds a lease on (live or not: a lease that runs out is dropped when the
  store says so — a superset is never wrong, only a little more traffic),
- their neighbours (26 in 3-D: what lies just across a border is simulated with the region),
- the regions of every open `updates()` stream.

A stream of the whole world (``updates(None)``), the ``"world"`` mode, or more regions than
``max_regions`` give the family-wide filter instead (``eventual/+``): one filter is cheaper
for the broker than thousands, and at that size the server hears most of the world anyway.
Filters never overlap (never ``eventual/+`` with ``eventual/5``), so the broker never sends
one message twice.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from regions import RegionKey
from worldstate.config import FANOUT_MODES
from worldstate.protocol import _topics as topics

__all__ = ["FANOUT_MODES", "InterestPlan", "plan_interest"]

# ``Config.fanout``: "interest" (default) subscribes by region as above; "world" subscribes
# every regional family whole (the layout before interest routing).


@dataclass(frozen=True, slots=True)
class InterestPlan:
    """What one server should hear: the whole world, or exactly ``regions``."""

    world_wide: bool
    regions: frozenset[RegionKey]
    """The regions heard (empty when ``world_wide``)."""
    reason: str
    """Why world-wide (``"mode"``, ``"stream"``, ``"too-many"``) or ``"interest"``."""

    def filters(self, family: str) -> frozenset[str]:
        """The topic filters of one regional family (relative to the namespace)."""
        if self.world_wide:
            return frozenset([topics.every(family)])
        return frozenset(topics.of(family, k.morton) for k in self.regions)

    def all_filters(self) -> dict[str, str]:
        """Every filter of every regional family → its family."""
        return {f: fam for fam in topics.REGIONAL for f in self.filters(fam)}

    def hears(self, key: RegionKey) -> bool:
        return self.world_wide or key in self.regions


def plan_interest(
    owned: Iterable[RegionKey],
    interests: Iterable[frozenset[RegionKey] | None],
    *,
    mode: str = "interest",
    max_regions: int = 512,
    neighbours: bool = True,
) -> InterestPlan:
    """The plan for a server holding ``owned`` with open streams of ``interests`` (each a
    set of regions, or None for the whole world). Deterministic: the same inputs (in any
    order) give the same plan."""
    if mode not in FANOUT_MODES:
        raise ValueError(f"fanout mode must be one of {FANOUT_MODES}, got {mode!r}")
    if mode == "world":
        return InterestPlan(True, frozenset(), "mode")
    wanted: set[RegionKey] = set()
    for keys in interests:
        if keys is None:
            return InterestPlan(True, frozenset(), "stream")
        wanted |= keys
    for key in owned:
        wanted.add(key)
        if neighbours:
            wanted.update(key.neighbours())
    if len(wanted) > max_regions:
        return InterestPlan(True, frozenset(), "too-many")
    return InterestPlan(False, frozenset(wanted), "interest")
