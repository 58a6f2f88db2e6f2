"""The mesh coordinator's metrics (``worldstate coordinator --metrics-port``)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
    SummaryMetricFamily,
)
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from worldstate.mesh._coordinator import MeshCoordinator


class CoordinatorCollector(Collector):
    """Reads a `MeshCoordinator`'s counters and membership at every scrape. Servers are
    few (a label per server is bounded); regions never appear as labels."""

    def __init__(self, coordinator: MeshCoordinator) -> None:
        self.coordinator = coordinator

    def collect(self) -> Iterator[Metric]:
        c = self.coordinator
        m = c.membership()
        yield GaugeMetricFamily(
            "worldstate_coordinator_acting",
            "1 while this coordinator holds the coordinator lease and acts.",
            value=1.0 if m["acting"] else 0.0,
        )
        yield GaugeMetricFamily(
            "worldstate_coordinator_epoch",
            "Election epoch of the acting coordinator.",
            value=float(m.get("coordinator_epoch", 0)),
        )
        yield GaugeMetricFamily(
            "worldstate_membership_generation",
            "Generation of the agreed membership.",
            value=float(m["generation"]),
        )
        yield GaugeMetricFamily(
            "worldstate_membership_members",
            "Servers in the agreed membership.",
            value=float(len(m["members"])),
        )
        yield GaugeMetricFamily(
            "worldstate_membership_live_servers",
            "Servers this coordinator hears.",
            value=float(len(m["live"])),
        )
        owned = GaugeMetricFamily(
            "worldstate_coordinator_regions_owned",
            "Regions with a live lease, by owning server (as of the last cycle).",
            labels=["server"],
        )
        load = GaugeMetricFamily(
            "worldstate_coordinator_server_load",
            "Load of each server as the rebalancer computes it (1 per region + entities "
            "and ops/s terms).",
            labels=["server"],
        )
        for sid, d in sorted(m["servers"].items()):
            owned.add_metric([sid], float(d["regions"]))
            load.add_metric([sid], float(d["load"]))
        yield owned
        yield load
        yield CounterMetricFamily(
            "worldstate_coordinator_placements",
            "Regions placed on a server.",
            value=c.placements,
        )
        yield CounterMetricFamily(
            "worldstate_coordinator_failures",
            "Placements and hand-offs that failed.",
            value=c.failures,
        )
        s = SummaryMetricFamily(
            "worldstate_coordinator_handoff_duration_seconds",
            "Completed hand-offs (release on the old owner, acquire and load on the new).",
        )
        s.add_metric([], c.handoffs, getattr(c, "handoff_seconds", 0.0))
        yield s
        yield CounterMetricFamily(
            "worldstate_coordinator_events",
            "Decisions recorded (membership, placements...).",
            value=c.event_count,
        )


def coordinator_registry(coordinator: MeshCoordinator) -> CollectorRegistry:
    """A registry holding the coordinator's families."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(CoordinatorCollector(coordinator))
    return registry
