"""`Config`: every setting in one frozen value, readable from ``WORLDSTATE_*`` variables."""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from regions import DEFAULT_BOUNDS, REGION_SIZE, WorldBounds
from worldstate.errors import ValidationError

FANOUT_MODES = ("interest", "world")
"""The values of `Config.fanout`."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Config:
    """Settings of one world connection. Every field can come from the environment as
    ``WORLDSTATE_<FIELD>`` (upper case), e.g. ``WORLDSTATE_CACHE_TTL=60``.

    Times are seconds; sizes are metres or counts as named.
    """

    store_url: str = "sqlite+aiosqlite:///world.db"
    """SQLAlchemy URL of the durable store (CockroachDB, PostgreSQL or SQLite)."""
    cache_url: str = "memory://"
    """``redis://host:port/db`` or ``memory://`` (in-process LRU)."""
    bus_url: str = "memory://"
    """``mqtt://host:port`` or ``memory://[name]`` (in-process bus shared by name)."""
    server_id: str = "gs-1"
    namespace: str = "ws"
    """Prefix of every Redis key and MQTT topic: worlds with different namespaces never mix."""

    extra_object_kinds: tuple[str, ...] = ()
    """Object kinds a game adds to the built-in ones (structure, resource, item, ...); they
    matter once ``structure_kinds`` is declared (until then every well-formed kind is taken)."""
    structure_kinds: tuple[str, ...] | None = None
    """The kinds a `PlaceStructure` may use (``"structure"`` always may). None (default):
    every well-formed kind (printable, at most 64 characters) is accepted. Declared: any
    other structure kind is refused, and stored objects must be of a built-in kind, an
    ``extra_object_kinds`` kind or a declared structure kind. From the environment:
    ``WORLDSTATE_STRUCTURE_KINDS=wall,tower``."""
    region_size: float = REGION_SIZE
    world_bounds: WorldBounds = DEFAULT_BOUNDS

    cache_ttl: float = 300.0
    cache_max_entries: int = 4096
    """Capacity of the in-process LRU cache (regions)."""
    cache_breaker_failures: int = 3
    """Consecutive Redis failures that open the circuit breaker (cache bypassed)."""
    cache_breaker_reset: float = 5.0
    """Seconds the breaker stays open before one trial request."""
    cache_timeout: float = 0.25
    """Per-request Redis timeout before the cache is treated as failed."""

    lease_ttl: float = 10.0
    lease_renew_interval: float = 3.0
    clock_skew_margin: float = 0.5
    """A server stops using a lease this long before it expires by its own clock, so that
    servers whose clocks differ by less than this never both believe they hold a region.
    (Fencing keeps the store safe whatever the clocks say.)"""
    heartbeat_interval: float = 1.0
    partition_timeout: float = 10.0
    tick_rate: float = 20.0
    """Eventual-batch ticks per second."""
    snapshot_interval: float = 5.0
    """Seconds between snapshots of an owned region's eventual state to cache/store (each
    held region once per interval, the regions spread evenly over it)."""
    group_commit_window: float = 0.002
    """Seconds the strong pipeline gathers ops before committing them as one batch."""
    region_queue_size: int = 10_000
    """Bound of each owned region's strong-op queue; a full queue rejects new ops."""
    max_concurrent_commits: int = 1
    """Strong group commits one server runs at once, each over its share of the owned
    regions (or inventory shards); a key's groups always commit in order. 1 suits
    PostgreSQL, whose serializable mode tracks reads by index page, so that concurrent
    commits abort each other (measured with the strong bench: 2 slots cost 130-200
    serialization retries in 6 s and 0.6x the throughput); CockroachDB tracks exact key
    spans and can take more (e.g. 8)."""
    max_structure_size: float = REGION_SIZE
    """Largest edge of a placed structure, metres (at most one region)."""
    inventory_shards: int = 64
    """Inventory shards (each leased like a region; an inventory's shard is a stable hash
    of its id). Every server of a world must use the same number."""
    forward_timeout: float = 2.0
    """Seconds a forwarded strong op waits for its owner's answer."""
    submit_timeout: float = 5.0
    """Deadline of every `World.submit` (override per call with ``submit(op, timeout=...)``):
    past it the caller gets `SubmitTimeout` (the op may still apply; resubmit the same op_id
    to learn its outcome) instead of waiting forever."""

    history_versions: int = 10
    """Versions of each region kept for corruption recovery (>= 1)."""
    max_objects_per_region: int = 100_000
    max_snapshot_bytes: int = 64 * 1024 * 1024
    max_object_data_bytes: int = 64 * 1024
    max_id_length: int = 200
    max_query_regions: int = 4096
    query_staleness: float = 1.0
    """A query re-reads (from cache) regions it has held for longer than this."""
    query_scan_regions: int = 64
    """A query whose reach covers more regions than this asks the store which of them
    exist (one Morton-range scan) rather than reading each one: big boxes cost what the data
    costs. ``max_query_regions`` then bounds the stored regions such a query may read
    (unless it passes ``limit``)."""

    # -- fan-out (worldstate.node._interest, docs/fanout.md) --
    fanout: str = "interest"
    """Which regional traffic (eventual batches, strong-commit notices) this server
    subscribes to: ``"interest"`` — the regions it owns, their neighbours and the interests
    of its open `updates()` streams; ``"world"`` — every region (the receive cost then grows
    with the whole mesh)."""
    fanout_max_regions: int = 512
    """Past this many regions of interest, the server subscribes world-wide instead (one
    filter rather than thousands)."""

    # -- history (worldstate.history) --
    event_retention: float | None = None
    """Seconds causal events are kept in the durable log (None: forever). Older ones are
    pruned, except those the oldest checkpoint needs; a resume from before the prune
    point raises `CursorExpired`."""
    event_retention_count: int | None = None
    """Events kept per origin in the causal log (None: no count limit)."""
    event_prune_interval: float = 60.0
    """Seconds between two prunes of the causal log (when a retention is set)."""

    txn_max_attempts: int = 12
    txn_backoff_base: float = 0.005
    txn_backoff_max: float = 0.5
    pool_size: int = 10

    # -- bus authentication (docs/security.md) --
    bus_max_age: float = 30.0
    """Seconds a signed bus message may take from its sender to us; older ones are dropped."""
    bus_clock_skew: float = 2.0
    """Wall-clock difference between servers tolerated by the bus freshness checks."""
    bus_key_refresh: float = 5.0
    """Seconds between re-reads of the bus keys and revocations from the store."""

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if f.type in ("float", "int") and (
                isinstance(v, bool) or not isinstance(v, (int, float))
            ):
                raise ValidationError(f"Config.{f.name} must be a number, got {v!r}")
            if f.type == "float" and (not math.isfinite(v) or v <= 0):
                raise ValidationError(f"Config.{f.name} must be finite and > 0, got {v!r}")
            if f.type == "int" and (not isinstance(v, int) or v < 1):
                raise ValidationError(f"Config.{f.name} must be an int >= 1, got {v!r}")
            if f.type == "str" and (not isinstance(v, str) or not v):
                raise ValidationError(f"Config.{f.name} must be a non-empty string")
        if not isinstance(self.extra_object_kinds, tuple) or not all(
            isinstance(k, str) and k for k in self.extra_object_kinds
        ):
            raise ValidationError("Config.extra_object_kinds must be a tuple of non-empty str")
        from worldstate._validation import MAX_ID_LENGTH, check_kind_name

        for k in self.extra_object_kinds:
            check_kind_name(k, "Config.extra_object_kinds entry")
        if self.structure_kinds is not None:
            if not isinstance(self.structure_kinds, tuple):
                raise ValidationError("Config.structure_kinds must be None or a tuple of str")
            for k in self.structure_kinds:
                check_kind_name(k, "Config.structure_kinds entry")
        if self.max_id_length > MAX_ID_LENGTH:
            raise ValidationError(
                f"Config.max_id_length must be at most {MAX_ID_LENGTH} (the id rule the "
                f"conflict resolver applies too), got {self.max_id_length}"
            )
        if self.fanout not in FANOUT_MODES:
            raise ValidationError(
                f"Config.fanout must be one of {', '.join(FANOUT_MODES)}, got {self.fanout!r}"
            )
        if not isinstance(self.world_bounds, WorldBounds):
            raise ValidationError("Config.world_bounds must be a regions.WorldBounds")
        if self.max_structure_size > self.region_size:
            raise ValidationError("Config.max_structure_size must not exceed region_size")
        if self.clock_skew_margin >= self.lease_ttl - self.lease_renew_interval:
            raise ValidationError(
                "Config.clock_skew_margin must be shorter than lease_ttl - lease_renew_interval"
            )
        if self.lease_renew_interval >= self.lease_ttl:
            raise ValidationError(
                f"Config.lease_renew_interval ({self.lease_renew_interval}) must be shorter "
                f"than lease_ttl ({self.lease_ttl})"
            )
        if self.event_retention is not None and (
            isinstance(self.event_retention, bool)
            or not isinstance(self.event_retention, (int, float))
            or not (math.isfinite(self.event_retention) and self.event_retention > 0)
        ):
            raise ValidationError(
                f"Config.event_retention must be None or seconds > 0, got {self.event_retention!r}"
            )
        if self.event_retention_count is not None and (
            isinstance(self.event_retention_count, bool)
            or not isinstance(self.event_retention_count, int)
            or self.event_retention_count < 1
        ):
            raise ValidationError(
                "Config.event_retention_count must be None or an int >= 1, got "
                f"{self.event_retention_count!r}"
            )
        from worldstate._validation import check_id  # local: ids imports errors only

        check_id(self.server_id, "server_id", self.max_id_length)
        check_id(self.namespace, "namespace", self.max_id_length)

    def replace(self, **changes: Any) -> Config:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Config:
        """Build from ``WORLDSTATE_*`` variables; keyword ``overrides`` win over them.

        ``WORLDSTATE_WORLD_BOUNDS`` is six comma-separated numbers ``lox,loy,loz,hix,hiy,hiz``.
        """
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = env.get(f"WORLDSTATE_{f.name.upper()}")
            if raw is None:
                continue
            values[f.name] = _parse(f, raw)
        values.update(overrides)
        return cls(**values)


def _parse(f: dataclasses.Field[Any], raw: str) -> Any:
    name = f"WORLDSTATE_{f.name.upper()}"
    try:
        if f.type == "float":
            return float(raw)
        if f.type == "int":
            return int(raw)
        if f.type == "WorldBounds":
            nums = [float(x) for x in raw.split(",")]
            if len(nums) != 6:
                raise ValueError("need 6 numbers")
            return WorldBounds(tuple(nums[:3]), tuple(nums[3:]))  # type: ignore[arg-type]
        if f.type in ("float | None", "int | None"):
            if raw.strip().lower() in ("", "none"):
                return None
            return float(raw) if f.type.startswith("float") else int(raw)
        if f.type in ("tuple[str, ...]", "tuple[str, ...] | None"):
            return tuple(x.strip() for x in raw.split(",") if x.strip())
    except ValueError as e:
        raise ValidationError(f"{name}={raw!r} is not valid for {f.type}: {e}") from None
    return raw
