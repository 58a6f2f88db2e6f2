"""`WorldMetrics`: one world's registry — scrape-time families from its counters, plus the
op latency and eventual tick histograms."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
    Metric,
    SummaryMetricFamily,
)
from prometheus_client.registry import Collector

import worldstate.errors as errors
from consistency import ConsistencyClass
from worldstate.results import Accepted, Committed, Rejected


class MeteredWorld(Protocol):
    """What the metrics read of a `worldstate.World` (a Protocol, so that this layer sits
    below ``world.py`` and imports nothing of it)."""

    @property
    def server_id(self) -> str: ...

    authority: Any
    eventual: Any
    commands: Any

    @property
    def bus(self) -> Any: ...

    def stats(self) -> dict[str, Any]: ...

    def partition_status(self) -> dict[str, Any]: ...

    def leases(self) -> Mapping[Any, Any]: ...

    def _load_counters(self) -> tuple[dict[int, int], dict[Any, int]]: ...


World = MeteredWorld

LATENCY_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
"""Seconds: 100 µs to 10 s (eventual submits take microseconds, strong ones milliseconds)."""

TOP_N = 5
"""Ranks of the top-N region gauges."""

_ERROR_OUTCOMES: tuple[tuple[type[BaseException], str], ...] = (
    (errors.ValidationError, "invalid"),
    (errors.NotAuthoritative, "not_authoritative"),
    (errors.Fenced, "fenced"),
    (errors.RegionOwned, "region_owned"),
    (errors.Overloaded, "overloaded"),
    (errors.StoreUnavailable, "store_unavailable"),
    (errors.BusUnavailable, "bus_unavailable"),
    (errors.WorldClosed, "closed"),
    (TimeoutError, "timeout"),
)


def outcome_of(result: object) -> str:
    """The ``outcome`` label of one submit: committed, rejected, accepted or an error kind."""
    if isinstance(result, Committed):
        return "committed"
    if isinstance(result, Rejected):
        return "rejected"
    if isinstance(result, Accepted):
        return "accepted"
    for cls, name in _ERROR_OUTCOMES:
        if isinstance(result, cls):
            return name
    return "error"


class WorldMetrics:
    """The metrics of one `World` (created by the ``World.metrics`` property)."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.registry = CollectorRegistry(auto_describe=True)
        self.ops = Counter(
            "worldstate_ops",
            "Operations submitted on this server, by consistency class and outcome.",
            ["class", "outcome"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "worldstate_op_duration_seconds",
            "Time from submit to result (strong: durable ack; causal/eventual: local apply).",
            ["class"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.tick = Histogram(
            "worldstate_eventual_tick_duration_seconds",
            "Duration of one eventual tick (batching and publishing every region's moves).",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        for cls in ConsistencyClass:  # every class shows up, at zero, from the start
            self.latency.labels(cls.name.lower())
        for cls_name, outcome in (
            ("strong", "committed"),
            ("strong", "rejected"),
            ("causal", "accepted"),
            ("eventual", "accepted"),
        ):
            self.ops.labels(cls_name, outcome)
        self.registry.register(WorldCollector(world))
        world.eventual.on_tick = self.tick.observe

    def observe_moves(self, rows: int) -> None:
        """`World.move_entities`: each row applied is one eventual op, accepted."""
        if rows:
            self.ops.labels("eventual", "accepted").inc(rows)

    def observe_op(self, cls: ConsistencyClass, result: object, seconds: float) -> None:
        name = cls.name.lower()
        self.ops.labels(name, outcome_of(result)).inc()
        if not isinstance(result, BaseException):
            self.latency.labels(name).observe(seconds)


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, value=value)


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


class WorldCollector(Collector):
    """Reads `World.stats` and the world's standing at every scrape."""

    def __init__(self, world: World) -> None:
        self.world = world

    def collect(self) -> Iterator[Metric]:
        w = self.world
        if not getattr(w, "_opened", False):
            return
        st = w.stats()
        info = InfoMetricFamily("worldstate_server", "This server's id and versions.")
        info.add_metric([], {"server_id": w.server_id, "version": _version()})
        yield info
        yield from _ops_families(w, st)
        yield from _store_families(st["store"])
        yield from _cache_families(st["cache"])
        yield from _bus_families(w, st)
        yield from _authority_families(w)
        yield from _eventual_families(st["eventual"])
        yield from _causal_families(st["causal"])
        yield from _handoff_families(w)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("worldstate")
    except PackageNotFoundError:
        return "unknown"


def _ops_families(w: World, st: dict[str, Any]) -> Iterator[Metric]:
    from worldstate.store.strong_commit import CONFLICT_DECISIONS

    c = CounterMetricFamily(
        "worldstate_conflicts",
        "Conflict decisions of this server's strong commits, by conflict type and rule.",
        labels=["type", "rule"],
    )
    for (writer, ctype, rule), n in sorted(CONFLICT_DECISIONS.items()):
        if writer == w.server_id:
            c.add_metric([ctype, rule], n)
    yield c
    s = st["strong"]
    yield _counter(
        "worldstate_strong_group_commits", "Strong group-commit transactions.", s["group_commits"]
    )
    f = CounterMetricFamily(
        "worldstate_strong_forwards",
        "Strong ops forwarded to their region's owner (out) and served for others (in).",
        labels=["direction"],
    )
    f.add_metric(["out"], s["forwarded"])
    f.add_metric(["in"], s["served_forwards"])
    yield f
    yield _counter(
        "worldstate_strong_direct_commits",
        "Strong ops committed without a held region (inventories, unowned regions).",
        s["direct_commits"],
    )
    yield _gauge("worldstate_strong_pipelines", "Region commit pipelines running.", s["pipelines"])
    # hot spots without per-region labels: the busiest few regions' figures, by rank
    entities, ops = w._load_counters()
    top = GaugeMetricFamily(
        "worldstate_region_top",
        "The busiest regions of this server by rank (1 = busiest): eventual entities in "
        "them, and strong ops committed by their pipelines since they were taken. "
        "`worldstate inspect regions` names them.",
        labels=["measure", "rank"],
    )
    for measure, values in (("entities", entities.values()), ("strong_ops", ops.values())):
        for rank, v in enumerate(sorted(values, reverse=True)[:TOP_N], start=1):
            top.add_metric([measure, str(rank)], float(v))
    yield top


def _store_families(s: dict[str, Any]) -> Iterator[Metric]:
    yield _counter(
        "worldstate_store_transactions", "Store transaction attempts.", s["transactions"]
    )
    r = CounterMetricFamily(
        "worldstate_store_retries",
        "Store transactions retried, by reason (SQLSTATE, connection, sqlite-busy, conflict).",
        labels=["reason"],
    )
    # the usual reasons always appear (at 0), so the family exists before the first retry
    reasons = {"40001": 0, "connection": 0, "sqlite-busy": 0, "conflict": 0}
    reasons.update(s["retry_reasons"])
    for reason, n in sorted(reasons.items()):
        r.add_metric([reason], n)
    yield r
    yield _counter(
        "worldstate_store_retries_exhausted",
        "Store transactions that failed after every retry.",
        s["exhausted"],
    )
    yield _counter(
        "worldstate_store_recoveries",
        "Region loads that fell back to a history version (checksum failure).",
        s["recoveries"],
    )


def _cache_families(c: dict[str, Any]) -> Iterator[Metric]:
    req = CounterMetricFamily(
        "worldstate_cache_requests",
        "Region cache lookups by result: hit, miss, bypass (circuit breaker open).",
        labels=["result"],
    )
    req.add_metric(["hit"], c["hits"])
    req.add_metric(["miss"], c["misses"])
    req.add_metric(["bypass"], c["bypassed"])
    yield req
    yield _counter("worldstate_cache_writes", "Region snapshots written to the cache.", c["writes"])
    yield _counter(
        "worldstate_cache_stale_writes_refused",
        "Cache writes refused because a newer version was cached.",
        c["stale_writes_refused"],
    )
    yield _counter("worldstate_cache_errors", "Cache backend calls that failed.", c["errors"])


def _bus_families(w: World, st: dict[str, Any]) -> Iterator[Metric]:
    b, ev, ca, s = st["bus"], st["eventual"], st["causal"], st["strong"]
    m = CounterMetricFamily(
        "worldstate_bus_messages",
        "Bus messages by direction and family (all = every family together).",
        labels=["direction", "family"],
    )
    m.add_metric(["out", "all"], b["published"])
    m.add_metric(["in", "all"], b["received"])
    m.add_metric(["out", "eventual"], ev["batches_sent"])
    m.add_metric(["in", "eventual"], ev["messages_received"])
    m.add_metric(["out", "causal"], ca["published"])
    m.add_metric(["in", "causal"], ca["received"])
    m.add_metric(["out", "forward"], s["forwarded"])
    m.add_metric(["in", "forward"], s["served_forwards"])
    yield m
    d = CounterMetricFamily(
        "worldstate_bus_dropped",
        "Bus messages dropped, by family and reason (malformed, forged, stale, overflow...).",
        labels=["family", "reason"],
    )
    d.add_metric(["all", "outgoing"], b["dropped_outgoing"])
    d.add_metric(["all", "incoming"], b["dropped_incoming"])
    d.add_metric(["all", "handler_error"], b["handler_errors"])
    for reason, n in sorted(ev["dropped"].items()):
        d.add_metric(["eventual", str(reason)], n)
    for reason, n in sorted(ca["dropped"].items()):
        d.add_metric(["causal", str(reason)], n)
    d.add_metric(["forward", "malformed"], s["dropped_requests"])
    d.add_metric(["notice", "malformed"], st["dropped_messages"])
    commands = getattr(w, "commands", None)
    if commands is not None:
        d.add_metric(["command", "malformed"], commands.dropped)
    yield d
    yield _counter("worldstate_bus_reconnects", "Bus reconnections.", b["reconnects"])
    interest = st.get("interest")
    if interest is not None:  # fan-out follows interest (docs/fanout.md)
        yield _gauge(
            "worldstate_interest_filters",
            "Regional topic filters subscribed (eventual and notice; 2 when world-wide).",
            interest["filters"],
        )
        yield _gauge(
            "worldstate_interest_refused",
            "Regional filters the broker refused (this server does not hear those regions).",
            len(interest["refused"]),
        )
        yield _counter(
            "worldstate_interest_subscribe_timeouts",
            "Regional subscriptions not acknowledged by the broker within the deadline.",
            interest["subscribe_timeouts"],
        )
    yield _gauge(
        "worldstate_bus_connected", "1 while the bus is connected.", float(w.bus.connected)
    )


def _authority_families(w: World) -> Iterator[Metric]:
    yield _gauge(
        "worldstate_regions_owned", "Regions this server holds a live lease on.", len(w.leases())
    )
    yield _counter(
        "worldstate_leases_renewed", "Lease renewals that succeeded.", w.authority.renewed
    )
    yield _counter(
        "worldstate_leases_lost",
        "Leases lost: fenced (another server took the region) or expired unrenewed.",
        w.authority.lost_count,
    )
    p = w.partition_status()
    yield _gauge(
        "worldstate_partition_majority",
        "1 while this server is on the majority side (keeps authority), 0 when demoted.",
        1.0 if p.get("majority") else 0.0,
    )
    since = p.get("since")
    yield _gauge(
        "worldstate_partition_since_timestamp_seconds",
        "When the current partition verdict began (Unix time).",
        float(since) if isinstance(since, (int, float)) else 0.0,
    )
    yield _gauge(
        "worldstate_partition_view_servers",
        "Servers this server hears (itself included).",
        len(p.get("view", ())),
    )
    yield _gauge(
        "worldstate_membership_generation",
        "Generation of the agreed membership it knows.",
        float(p.get("generation", 0)),
    )
    t = CounterMetricFamily(
        "worldstate_partition_transitions",
        "Demotions (lost the majority) and promotions (regained it).",
        labels=["direction"],
    )
    t.add_metric(["demotion"], p.get("demotions", 0))
    t.add_metric(["promotion"], p.get("promotions", 0))
    yield t


def _eventual_families(e: dict[str, Any]) -> Iterator[Metric]:
    yield _counter("worldstate_eventual_ticks", "Eventual ticks run.", e["ticks"])
    yield _counter(
        "worldstate_eventual_tick_overruns",
        "Eventual ticks that took longer than one tick period (1 / Config.tick_rate).",
        e.get("tick_overruns", 0),
    )
    yield _counter(
        "worldstate_eventual_tick_errors", "Eventual ticks that failed.", e["tick_errors"]
    )
    rows = CounterMetricFamily(
        "worldstate_eventual_rows",
        "Eventual rows (entity moves and states): sent, received, applied (won LWW), "
        "suppressed (minority side).",
        labels=["stage"],
    )
    rows.add_metric(["sent"], e["rows_sent"] + e["states_sent"])
    rows.add_metric(["received"], e["rows_received"] + e["states_received"])
    rows.add_metric(["applied"], e["rows_applied"] + e["states_applied"])
    rows.add_metric(["suppressed"], e["suppressed_rows"] + e["suppressed_states"])
    yield rows
    yield _counter(
        "worldstate_eventual_sent_bytes", "Bytes of eventual batches sent.", e["bytes_sent"]
    )
    snaps = CounterMetricFamily(
        "worldstate_eventual_snapshots",
        "Eventual-state snapshots of owned regions, by result.",
        labels=["result"],
    )
    snaps.add_metric(["ok"], e["snapshots"])
    snaps.add_metric(["conflict"], e["snapshot_conflicts"])
    snaps.add_metric(["failed"], e["snapshot_failures"])
    yield snaps
    yield _gauge(
        "worldstate_eventual_entities", "Entities in this server's eventual table.", e["entities"]
    )
    lag = e.get("lag_ms")
    g = GaugeMetricFamily(
        "worldstate_eventual_lag_seconds",
        "Send-to-merge lag of recent eventual batches (quantile over a recent window).",
        labels=["quantile"],
    )
    if isinstance(lag, dict):
        for q, k in (("0.5", "p50"), ("0.99", "p99"), ("1", "max")):
            g.add_metric([q], float(lag[k]) / 1000.0)
    yield g


def _causal_families(c: dict[str, Any]) -> Iterator[Metric]:
    ev = CounterMetricFamily(
        "worldstate_causal_events",
        "Causal events by stage: emitted here, appended to the log, received, delivered.",
        labels=["stage"],
    )
    for stage in ("emitted", "appended", "received", "delivered", "duplicates"):
        ev.add_metric([stage], c.get(stage, 0))
    yield ev
    yield _gauge(
        "worldstate_causal_buffer_depth",
        "Causal events buffered until their dependencies arrive.",
        c.get("pending", 0),
    )
    yield _counter(
        "worldstate_causal_repairs",
        "Causal events repaired from the durable log.",
        c.get("repaired", 0),
    )
    yield _counter(
        "worldstate_causal_repair_queries",
        "Log queries made to repair gaps.",
        c.get("repair_queries", 0),
    )
    yield _counter(
        "worldstate_causal_append_failures",
        "Failed causal log appends.",
        c.get("append_failures", 0),
    )


def _handoff_families(w: World) -> Iterator[Metric]:
    commands = getattr(w, "commands", None)
    timings: dict[tuple[str, str], tuple[int, float]] = getattr(commands, "timings", {})
    s = SummaryMetricFamily(
        "worldstate_handoff_duration_seconds",
        "Coordinator commands served (acquire: take and load a region; release: drain, "
        "snapshot, release), by outcome.",
        labels=["command", "outcome"],
    )
    for cmd in ("acquire", "release"):
        for outcome in ("ok", "refused"):
            n, total = timings.get((cmd, outcome), (0, 0.0))
            s.add_metric([cmd, outcome], n, total)
    yield s
