"""Prometheus metrics of a world and of a mesh coordinator (``prometheus_client``).

Every family is named ``worldstate_*`` in base units (seconds, bytes), counters end in
``_total``, and no family has a per-region or per-player label: label values come from
small fixed sets (consistency class, outcome, conflict type and rule, retry reason, bus
family, drop reason). Most families are read from the counters the world already keeps
(`World.stats`) when Prometheus scrapes; latency and tick durations are histograms with
sub-millisecond buckets, observed as they happen. The families are listed in
``docs/operations.md`` ("Metrics").

A game that embeds `worldstate.connect()` mounts ``world.metrics`` (a ``CollectorRegistry``)
on its own endpoint::

    from prometheus_client import generate_latest
    body = generate_latest(world.metrics)
"""

from worldstate.metrics._coordinator import CoordinatorCollector, coordinator_registry
from worldstate.metrics._world import LATENCY_BUCKETS, WorldMetrics

__all__ = ["LATENCY_BUCKETS", "CoordinatorCollector", "WorldMetrics", "coordinator_registry"]
