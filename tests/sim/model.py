"""The simulated parts of the mesh: store, servers, coordinator, network.

Nothing here does I/O, sleeps or reads a clock. Time is the harness's one simulated clock
(``env.now``, seconds); each server reads it through a fixed offset (its clock skew).
Randomness is the harness's one ``random.Random``. The real pure code runs unchanged:
`consistency.MembershipView` and `consistency.PartitionState` (with
`conflicts.decide_partition`) decide each server's standing, `consistency.HybridClock`
stamps eventual writes and `consistency.EntityTable` merges them.

`SimStore` is a linearizable model of the store's lease table and strong-commit rules: it
mirrors ``worldstate/store/leases.py`` (acquire, renew, release) and
``worldstate/store/region_state.check_fence`` rule for rule, plus the outcome table of
``worldstate/store/strong_commit.py`` (an op id is applied at most once). Each store call
runs atomically when its request is delivered: that instant is its linearization point.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from consistency import ClockDriftError, EntityTable, HybridClock, MembershipView, PartitionState

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]

STORE = "store"
"""The store's node name on the simulated network."""
COORDINATOR_KEY = "__coordinator__"
"""The reserved lease key the mesh coordinator is elected on."""
WALL_BASE = 1_700_000_000.0
"""Simulated time 0 as a Unix time, for the hybrid clocks (which want a wall clock)."""

BROKEN_VARIANTS: dict[str, str] = {
    "no-fencing": "the store accepts strong commits without checking the fencing epoch",
    "no-dedup": "the store ignores recorded outcomes: a retried op is applied again",
    "demoted-commits": "a demoted server keeps submitting strong commits",
    "never-demote": "servers ignore the split-brain verdict and never demote",
    "arrival-order-eventual": "receivers re-stamp remote eventual writes (last arrival wins)",
    "no-anti-entropy": "no snapshot exchange: eventual writes lost to drops stay lost",
    "skew-beyond-margin": "clock skew up to 1.5 x the lease margin (safety needs 2 x skew <= it)",
    "shortening-renewal": (
        "the store sets expires_at = now + ttl on renewal, as worldstate/store/leases.py "
        "does today: a delayed renewal can shorten a lease already granted"
    ),
}
"""Deliberately broken variants (harness self-tests): each must make an invariant fail."""


# -- configuration -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class SimConfig:
    """Timing of the simulated mesh (seconds) and its size.

    Lease safety with skewed clocks: a lease's expiry is written by its holder's clock, and a
    taker compares it with its own. A holder trusts its lease only until ``expires_at -
    lease_margin`` by its clock; a taker can take over at ``expires_at`` by its clock. With
    every clock within ``max_skew`` of true time, two clocks differ by at most ``2 *
    max_skew``, so the holder has stopped before the taker starts iff ``2 * max_skew <=
    lease_margin``. The config refuses anything else unless ``allow_unsafe_skew`` (the
    broken variant that proves the lease invariant can fail).
    """

    regions: int = 6
    entities: int = 16
    heartbeat_interval: float = 0.5
    heartbeat_timeout: float = 1.6
    lease_ttl: float = 3.0
    renew_interval: float = 1.0
    lease_margin: float = 0.8
    max_skew: float = 0.2
    request_timeout: float = 1.0
    max_attempts: int = 4
    coordinator_interval: float = 1.0
    membership_poll_interval: float = 2.0
    op_interval: float = 0.5
    eventual_interval: float = 1.5
    anti_entropy_interval: float = 4.0
    duration: float = 25.0
    """Faulty phase: partitions, drops, duplicates, delays, joins and leaves."""
    quiet: float = 10.0
    """Quiet phase after the final heal: reliable network, no new eventual writes."""
    allow_unsafe_skew: bool = False

    def __post_init__(self) -> None:
        for name in (
            "heartbeat_interval",
            "heartbeat_timeout",
            "lease_ttl",
            "renew_interval",
            "lease_margin",
            "request_timeout",
            "coordinator_interval",
            "membership_poll_interval",
            "op_interval",
            "eventual_interval",
            "anti_entropy_interval",
            "duration",
            "quiet",
        ):
            value = getattr(self, name)
            if not value > 0:
                raise ValueError(f"{name} must be > 0, got {value!r}")
        if self.max_skew < 0:
            raise ValueError(f"max_skew must be >= 0, got {self.max_skew!r}")
        if self.regions < 1 or self.entities < 1 or self.max_attempts < 1:
            raise ValueError("regions, entities and max_attempts must be >= 1")
        if not self.lease_margin < self.lease_ttl:
            raise ValueError("lease_margin must be shorter than lease_ttl")
        if not self.renew_interval < self.lease_ttl - self.lease_margin:
            raise ValueError("renew_interval must be shorter than lease_ttl - lease_margin")
        if 2 * self.max_skew > self.lease_margin and not self.allow_unsafe_skew:
            raise ValueError(
                f"lease safety needs 2 * max_skew <= lease_margin; got max_skew "
                f"{self.max_skew} and lease_margin {self.lease_margin}"
            )

    @property
    def region_keys(self) -> list[str]:
        return [f"r{i}" for i in range(self.regions)]


@dataclass(frozen=True, slots=True, kw_only=True)
class NetProfile:
    """Per-message fault probabilities and delays (seconds). ``stall`` applies to store
    requests only: the sending process stalls between deciding and the request reaching the
    wire (a GC pause, a slow disk), so the request carries a stale ``now``."""

    drop: float = 0.0
    duplicate: float = 0.0
    slow: float = 0.0
    delay_min: float = 0.001
    delay_max: float = 0.03
    slow_max: float = 0.8
    stall: float = 0.0
    stall_max: float = 10.0

    @property
    def max_delay(self) -> float:
        """The longest a message other than a stalled store request can be in flight."""
        return max(self.delay_max, self.slow_max if self.slow > 0 else 0.0)

    def reliable(self) -> NetProfile:
        return replace(self, drop=0.0, duplicate=0.0, slow=0.0, stall=0.0)


# -- store calls and results -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Lease:
    key: str
    owner: str
    epoch: int
    expires_at: float

    def live(self, now: float) -> bool:
        return self.expires_at > now


@dataclass(frozen=True, slots=True)
class Acquire:
    key: str
    owner: str
    ttl: float
    now: float


@dataclass(frozen=True, slots=True)
class Renew:
    key: str
    owner: str
    epoch: int
    ttl: float
    now: float


@dataclass(frozen=True, slots=True)
class Release:
    key: str
    owner: str
    epoch: int


@dataclass(frozen=True, slots=True)
class Commit:
    op_id: str
    key: str
    epoch: int
    writer: str
    now: float
    amount: int
    attempt: int


@dataclass(frozen=True, slots=True)
class ReadMembership:
    pass


@dataclass(frozen=True, slots=True)
class WriteMembership:
    members: frozenset[str]
    expected_version: int
    epoch: int
    writer: str
    now: float


@dataclass(frozen=True, slots=True)
class ListLeases:
    now: float


Call = Acquire | Renew | Release | Commit | ReadMembership | WriteMembership | ListLeases


@dataclass(frozen=True, slots=True)
class Fenced:
    key: str
    epoch: int
    current: int
    owner: str | None


@dataclass(frozen=True, slots=True)
class RegionOwned:
    key: str
    owner: str
    epoch: int
    expires_at: float


@dataclass(frozen=True, slots=True)
class Released:
    ok: bool


@dataclass(frozen=True, slots=True)
class Committed:
    op_id: str
    key: str
    version: int
    duplicate: bool
    """True when the outcome was already recorded (a retry or a duplicate request)."""


@dataclass(frozen=True, slots=True)
class MembershipRecord:
    version: int
    members: frozenset[str]


@dataclass(frozen=True, slots=True)
class VersionConflict:
    current: MembershipRecord


@dataclass(frozen=True, slots=True)
class LeaseTable:
    rows: tuple[tuple[str, str | None, int], ...]
    """``(key, live owner or None, epoch)`` per region with a lease row, by key."""


Result = (
    Lease
    | Fenced
    | RegionOwned
    | Released
    | Committed
    | MembershipRecord
    | VersionConflict
    | LeaseTable
)


class SimStore:
    """The store's lease table, strong-commit rules and membership record.

    Rules (``worldstate/store/leases.py``, ``region_state.check_fence``): a region with no
    lease row, or an expired lease, can be acquired and acquiring bumps the epoch; the live
    holder re-acquiring is a renewal and keeps it; renewal succeeds only for the holder at
    its epoch (expired or not, as long as nobody took over); release keeps owner and epoch
    and ends the lease. Liveness is judged by the caller's ``now`` (the caller's clock, read
    before the request was sent). A strong commit must carry the region's current epoch
    (else `Fenced`) and must not go into another server's live lease (else `RegionOwned`);
    an op id already committed returns its recorded outcome and is not applied again.

    ``monotonic_renewal`` (the default) differs from today's ``leases.py`` in one rule: a
    renewal sets ``expires_at = max(expires_at, now + ttl)`` instead of ``now + ttl``, so a
    delayed or stalled renewal carrying an old ``now`` never shortens a lease the store
    already granted (see docs/simulation.md, "Findings"). The broken flags ``fencing=False``
    and ``dedup=False`` exist to prove the invariants can fail.
    """

    def __init__(
        self,
        members: frozenset[str],
        *,
        fencing: bool = True,
        dedup: bool = True,
        monotonic_renewal: bool = True,
    ) -> None:
        self.fencing = fencing
        self.dedup = dedup
        self.monotonic_renewal = monotonic_renewal
        self.leases: dict[str, Lease] = {}
        self.outcomes: dict[str, Committed] = {}
        self.applied: dict[str, int] = {}
        """Times each op id was applied (exactly once is the invariant)."""
        self.region_ops: dict[str, list[str]] = {}
        self.region_total: dict[str, int] = {}
        self.versions: dict[str, int] = {}
        self.membership = MembershipRecord(1, members)

    # -- leases (leases.py) ----------------------------------------------------------------

    def _renewed_expiry(self, row: Lease, now: float, ttl: float) -> float:
        if self.monotonic_renewal:
            return max(row.expires_at, now + ttl)
        return now + ttl

    def acquire(self, key: str, owner: str, ttl: float, now: float) -> Lease | RegionOwned:
        row = self.leases.get(key)
        if row is None:
            lease = Lease(key, owner, 1, now + ttl)
        elif row.expires_at > now:
            if row.owner != owner:
                return RegionOwned(key, row.owner, row.epoch, row.expires_at)
            lease = Lease(key, owner, row.epoch, self._renewed_expiry(row, now, ttl))
        else:
            lease = Lease(key, owner, row.epoch + 1, now + ttl)
        self.leases[key] = lease
        return lease

    def renew(self, key: str, owner: str, epoch: int, ttl: float, now: float) -> Lease | Fenced:
        row = self.leases.get(key)
        if row is None or row.owner != owner or row.epoch != epoch:
            return Fenced(key, epoch, row.epoch if row else 0, row.owner if row else None)
        lease = Lease(key, owner, epoch, self._renewed_expiry(row, now, ttl))
        self.leases[key] = lease
        return lease

    def release(self, key: str, owner: str, epoch: int) -> bool:
        row = self.leases.get(key)
        if row is None or row.owner != owner or row.epoch != epoch:
            return False
        self.leases[key] = Lease(key, owner, epoch, 0.0)
        return True

    # -- strong commits (region_state.check_fence, strong_commit.py) ------------------------

    def check_fence(
        self, key: str, epoch: int, writer: str, now: float
    ) -> Fenced | RegionOwned | None:
        lease = self.leases.get(key)
        current = lease.epoch if lease is not None else 0
        if epoch != current:
            return Fenced(key, epoch, current, lease.owner if lease is not None else None)
        if lease is not None and lease.expires_at > now and lease.owner != writer:
            return RegionOwned(key, lease.owner, lease.epoch, lease.expires_at)
        return None

    def commit(self, c: Commit) -> Committed | Fenced | RegionOwned:
        if self.dedup and c.op_id in self.outcomes:
            return replace(self.outcomes[c.op_id], duplicate=True)
        if self.fencing:
            refused = self.check_fence(c.key, c.epoch, c.writer, c.now)
            if refused is not None:
                return refused  # the transaction rolls back: no outcome is recorded
        version = self.versions.get(c.key, 0) + 1
        self.versions[c.key] = version
        self.region_ops.setdefault(c.key, []).append(c.op_id)
        self.region_total[c.key] = self.region_total.get(c.key, 0) + c.amount
        self.applied[c.op_id] = self.applied.get(c.op_id, 0) + 1
        outcome = Committed(c.op_id, c.key, version, False)
        self.outcomes[c.op_id] = outcome
        return outcome

    # -- membership and the coordinator's view ---------------------------------------------

    def write_membership(
        self, c: WriteMembership
    ) -> MembershipRecord | VersionConflict | Fenced | RegionOwned:
        refused = self.check_fence(COORDINATOR_KEY, c.epoch, c.writer, c.now)
        if refused is not None:
            return refused
        if c.expected_version != self.membership.version:
            return VersionConflict(self.membership)
        self.membership = MembershipRecord(self.membership.version + 1, c.members)
        return self.membership

    def list_leases(self, now: float) -> LeaseTable:
        rows = tuple(
            (key, lease.owner if lease.expires_at > now else None, lease.epoch)
            for key, lease in sorted(self.leases.items())
            if key != COORDINATOR_KEY
        )
        return LeaseTable(rows)

    def execute(self, call: Call) -> Result:
        """Run one call atomically (its linearization point)."""
        if isinstance(call, Acquire):
            return self.acquire(call.key, call.owner, call.ttl, call.now)
        if isinstance(call, Renew):
            return self.renew(call.key, call.owner, call.epoch, call.ttl, call.now)
        if isinstance(call, Release):
            return Released(self.release(call.key, call.owner, call.epoch))
        if isinstance(call, Commit):
            return self.commit(call)
        if isinstance(call, ReadMembership):
            return self.membership
        if isinstance(call, WriteMembership):
            return self.write_membership(call)
        return self.list_leases(call.now)


# -- messages ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Heartbeat:
    incarnation: int = 0


@dataclass(frozen=True, slots=True)
class Goodbye:
    """A clean leave (what the bus's last will says for a crash)."""


@dataclass(frozen=True, slots=True)
class Hello:
    """A new server asks to join the membership."""


@dataclass(frozen=True, slots=True)
class Assign:
    region: str


@dataclass(frozen=True, slots=True)
class EntityBatch:
    ids: IntArray
    positions: FloatArray
    hlc: int


@dataclass(frozen=True, slots=True)
class TableSnapshot:
    data: bytes


@dataclass(frozen=True, slots=True)
class StoreRequest:
    req_id: int
    call: Call
    sent_majority: bool
    """Instrumentation for the checker: the sender's standing when it sent this."""


@dataclass(frozen=True, slots=True)
class StoreReply:
    req_id: int
    call: Call
    result: Result


Body = (
    Heartbeat | Goodbye | Hello | Assign | EntityBatch | TableSnapshot | StoreRequest | StoreReply
)


_DESCRIBE: dict[type, Callable[[Any], str]] = {
    Heartbeat: lambda b: "hb",
    EntityBatch: lambda b: f"batch n={b.ids.size} hlc={b.hlc}",
    TableSnapshot: lambda b: f"snapshot {len(b.data)}B",
    StoreRequest: lambda b: f"req#{b.req_id} {describe(b.call)}",
    StoreReply: lambda b: f"reply#{b.req_id} {describe(b.result)}",
    Acquire: lambda b: f"acquire {b.key} now={b.now:.3f}",
    Renew: lambda b: f"renew {b.key}@{b.epoch} now={b.now:.3f}",
    Release: lambda b: f"release {b.key}@{b.epoch}",
    Commit: lambda b: f"commit {b.op_id} {b.key}@{b.epoch} try{b.attempt}",
    WriteMembership: lambda b: f"write-members v{b.expected_version}+1 {sorted(b.members)}",
    ListLeases: lambda b: "list-leases",
    ReadMembership: lambda b: "read-members",
    Lease: lambda b: f"lease {b.key} {b.owner}@{b.epoch} until {b.expires_at:.3f}",
    Fenced: lambda b: f"fenced {b.key} {b.epoch}!={b.current}",
    RegionOwned: lambda b: f"owned {b.key} by {b.owner}@{b.epoch}",
    Committed: lambda b: f"committed {b.op_id} v{b.version}{' dup' if b.duplicate else ''}",
    MembershipRecord: lambda b: f"members v{b.version} {sorted(b.members)}",
    VersionConflict: lambda b: f"version-conflict v{b.current.version}",
    LeaseTable: lambda b: f"leases {len(b.rows)}",
    Released: lambda b: f"released {b.ok}",
    Assign: lambda b: f"assign {b.region}",
    Goodbye: lambda b: "goodbye",
    Hello: lambda b: "hello",
}


def describe(body: Body | Call | Result) -> str:
    """A short, deterministic line for the trace (no reprs of arrays or floats' noise)."""
    return _DESCRIBE[type(body)](body)


# -- network -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Cut:
    """Which links are down: servers split into groups (a missing server is in group 0),
    the store in one group or reachable from all (``store_group=None``: a bus-only
    partition, the case where a minority side could still reach the store), plus one-way
    cuts ``(src, dst)``."""

    groups: Mapping[str, int] = field(default_factory=dict)
    store_group: int | None = None
    oneway: frozenset[tuple[str, str]] = frozenset()

    def connected(self, src: str, dst: str) -> bool:
        if (src, dst) in self.oneway:
            return False
        if not self.groups:
            return True
        a, b = self._group(src), self._group(dst)
        return a is None or b is None or a == b

    def _group(self, node: str) -> int | None:
        if node == STORE:
            return self.store_group
        return self.groups.get(node, 0)

    def describe(self) -> str:
        if not self.groups and not self.oneway:
            return "healed"
        parts: dict[int, list[str]] = {}
        for node, g in sorted(self.groups.items()):
            parts.setdefault(g, []).append(node)
        text = " | ".join(",".join(parts[g]) for g in sorted(parts))
        store = "everywhere" if self.store_group is None else f"group {self.store_group}"
        cuts = ",".join(f"{a}-/->{b}" for a, b in sorted(self.oneway))
        return f"split [{text}] store {store}" + (f" oneway {cuts}" if cuts else "")


HEALED = Cut()


class Network:
    """Connectivity now (``cut``) and the fate of each message sent (``plan``)."""

    def __init__(self, rng: random.Random, profile: NetProfile) -> None:
        self.rng = rng
        self.profile = profile
        self.cut = HEALED

    def connected(self, src: str, dst: str) -> bool:
        return self.cut.connected(src, dst)

    def plan(self, store_request: bool) -> tuple[list[float], str]:
        """Delays of the copies to deliver (none: dropped) and a note for the trace."""
        p, rng = self.profile, self.rng
        if p.drop and rng.random() < p.drop:
            return [], "drop"
        copies = 2 if p.duplicate and rng.random() < p.duplicate else 1
        delays: list[float] = []
        notes: list[str] = []
        for _ in range(copies):
            delay = rng.uniform(p.delay_min, p.delay_max)
            if p.slow and rng.random() < p.slow:
                delay = rng.uniform(p.delay_max, p.slow_max)
                notes.append("slow")
            if store_request and p.stall and rng.random() < p.stall:
                delay += rng.uniform(1.0, p.stall_max)
                notes.append("stall")
            delays.append(delay)
        if copies == 2:
            notes.append("dup")
        return delays, " ".join(notes)


# -- servers -----------------------------------------------------------------------------


class Env(Protocol):
    """What a simulated server may use of the harness."""

    rng: random.Random
    config: SimConfig

    @property
    def now(self) -> float: ...

    @property
    def quiet(self) -> bool: ...

    def send(self, src: str, dst: str, body: Body, hold: float = 0.0) -> None: ...

    def take_pause(self, sid: str) -> float: ...

    def after(self, delay: float, node: str, label: str, fn: Callable[[], None]) -> None: ...

    def peers(self, sid: str) -> list[str]: ...

    def note(self, text: str) -> None: ...

    def standing_changed(self, server: SimServer) -> None: ...

    def refreshed(self, server: SimServer) -> None: ...

    def acknowledged(self, server: SimServer, op: StrongOp) -> None: ...


@dataclass(slots=True)
class StrongOp:
    op_id: str
    region: str
    amount: int
    attempt: int = 0
    status: str = "pending"
    """pending, acked, rejected, unknown (retries exhausted or stopped), abandoned."""


@dataclass(slots=True)
class Stats:
    demotions: int = 0
    promotions: int = 0
    acked: int = 0
    rejected: int = 0
    ambiguous: int = 0
    unknown: int = 0
    lost_leases: int = 0
    eventual_writes: int = 0
    eventual_applied: int = 0
    merges: int = 0
    drift_refused: int = 0


Handler = Callable[[Result], None]


class SimServer:
    """One game server: heartbeats, standing, leases, strong ops, eventual writes.

    Standing is re-decided (`refresh`) on every heartbeat tick and before every action that
    needs authority, so a server demotes itself the moment its view says so: from then on
    it sends no strong commit (not even a retry) and no renewal. Ownership of a region is
    the last lease the store returned, trusted until ``expires_at - lease_margin`` by this
    server's clock.
    """

    def __init__(
        self,
        sid: str,
        env: Env,
        *,
        membership: MembershipRecord,
        skew: float,
        broken: frozenset[str],
    ) -> None:
        c = env.config
        self.sid = sid
        self.env = env
        self.config = c
        self.skew = skew
        self.broken = broken
        self.view = MembershipView(sid, c.heartbeat_timeout)
        self.partition = PartitionState(sid)
        self.membership_version = membership.version
        self.membership = membership.members
        self.leases: dict[str, Lease] = {}
        self.ops: dict[str, StrongOp] = {}
        self.table = EntityTable()
        self.hlc = HybridClock(wall=lambda: WALL_BASE + self.local_now(), max_drift=60.0)
        self.departed: set[str] = set()
        self.hellos: set[str] = set()
        self.running = False
        self.leaving = False
        self.coordinator = SimCoordinator(self)
        self.stats = Stats()
        self._pending: dict[int, tuple[float, Handler]] = {}
        self._next_req = 0
        self._next_op = 0
        self._decided: tuple[frozenset[str], frozenset[str]] | None = None
        self._inflight: dict[str, tuple[StrongOp, float]] = {}

    # -- plumbing --------------------------------------------------------------------------

    @property
    def active(self) -> bool:
        return self.running and not self.leaving

    @property
    def authoritative(self) -> bool:
        return self.partition.majority

    def local_now(self) -> float:
        return self.env.now + self.skew

    def after(self, delay: float, label: str, fn: Callable[[], None]) -> None:
        self.env.after(delay, self.sid, label, fn)

    def call(self, call: Call, handler: Handler) -> None:
        """Send a store call; ``handler`` gets its result if the reply comes back within
        ``request_timeout`` (a later reply is ignored: the call is then ambiguous)."""
        self._next_req += 1
        self._pending[self._next_req] = (self.local_now(), handler)
        self.env.send(self.sid, STORE, StoreRequest(self._next_req, call, self.authoritative))

    def broadcast(self, body: Body) -> None:
        for peer in self.env.peers(self.sid):
            self.env.send(self.sid, peer, body)

    def start(self) -> None:
        self.running = True
        rng, c = self.env.rng, self.config
        self.after(rng.uniform(0, c.heartbeat_interval), "heartbeat", self._heartbeat_tick)
        self.after(rng.uniform(0, c.renew_interval), "renew", self._renew_tick)
        self.after(rng.uniform(0, c.coordinator_interval), "coordinator", self.coordinator.tick)
        self.after(rng.uniform(0, c.membership_poll_interval), "members", self._membership_tick)
        self.after(rng.uniform(0, c.op_interval), "op", self._op_tick)
        self.after(rng.uniform(0, c.eventual_interval), "eventual", self._eventual_tick)
        self.after(rng.uniform(0, c.anti_entropy_interval), "anti-entropy", self._anti_entropy_tick)

    # -- standing --------------------------------------------------------------------------

    def refresh(self) -> None:
        """Decide again whether this server's side keeps authority (the real pure code)."""
        if "never-demote" in self.broken:
            return
        now = self.local_now()
        view = self.view.view(now)
        if (self.membership, view) == self._decided:
            return  # same sets, same verdict (decide_partition is pure): skip the work
        self._decided = (self.membership, view)
        if self.partition.update(self.membership, view, now):
            if self.partition.majority:
                self.stats.promotions += 1
            else:
                self.stats.demotions += 1
            self.env.standing_changed(self)

    def owned(self, region: str) -> Lease | None:
        """The lease on ``region`` this server may act on, by its own clock and margin."""
        lease = self.leases.get(region)
        if lease is None or self.local_now() >= lease.expires_at - self.config.lease_margin:
            return None
        return lease

    def adopt(self, record: MembershipRecord) -> None:
        if record.version > self.membership_version:
            self.membership_version, self.membership = record.version, record.members
            self.env.note(f"{self.sid} adopts members v{record.version} {sorted(record.members)}")

    def _heartbeat_tick(self) -> None:
        if not self.active:
            return
        self.broadcast(Heartbeat())
        if self.sid not in self.membership:
            self.broadcast(Hello())
        self.refresh()
        self.env.refreshed(self)
        self.after(self.config.heartbeat_interval, "heartbeat", self._heartbeat_tick)

    def _membership_tick(self) -> None:
        if not self.active:
            return
        self.call(ReadMembership(), self._on_membership)
        self.after(self.config.membership_poll_interval, "members", self._membership_tick)

    def _on_membership(self, result: Result) -> None:
        if isinstance(result, MembershipRecord):
            self.adopt(result)

    # -- leases ----------------------------------------------------------------------------

    def _renew_tick(self) -> None:
        if not self.active:
            return
        now = self.local_now()
        timeout = self.config.request_timeout
        for req in [r for r, (sent, _) in self._pending.items() if now - sent > timeout]:
            del self._pending[req]  # replies lost or late: forget them
        self.refresh()
        if self.authoritative:  # a demoted server renews nothing: its leases run out
            for region, lease in sorted(self.leases.items()):
                self.call(
                    Renew(region, self.sid, lease.epoch, self.config.lease_ttl, now),
                    self._renew_handler(region),
                )
        self.after(self.config.renew_interval, "renew", self._renew_tick)

    def _renew_handler(self, region: str) -> Handler:
        return lambda result: self._on_renew(region, result)

    def _on_renew(self, region: str, result: Result) -> None:
        held = self.leases.get(region)
        if isinstance(result, Lease):
            if held is not None and held.epoch == result.epoch:
                self.leases[region] = result
        elif isinstance(result, Fenced) and held is not None and held.epoch == result.epoch:
            self._lose(region, "renewal fenced")

    def _lose(self, region: str, why: str) -> None:
        if self.leases.pop(region, None) is not None:
            self.stats.lost_leases += 1
            self.env.note(f"{self.sid} loses {region}: {why}")

    def on_assign(self, region: str) -> None:
        self.refresh()
        if not self.active or not self.authoritative or self.owned(region) is not None:
            return
        self.call(
            Acquire(region, self.sid, self.config.lease_ttl, self.local_now()),
            lambda r: self._on_acquire(region, r),
        )

    def _on_acquire(self, region: str, result: Result) -> None:
        if isinstance(result, Lease) and self.active:
            self.leases[region] = result

    # -- strong ops ------------------------------------------------------------------------

    def _may_commit(self) -> bool:
        self.refresh()
        return self.authoritative or "demoted-commits" in self.broken

    def _op_tick(self) -> None:
        if not self.active:
            return
        rng = self.env.rng
        self._check_timeouts()
        if self._may_commit():
            regions = [r for r in sorted(self.leases) if self.owned(r) is not None]
            if regions:
                self._next_op += 1
                op = StrongOp(f"{self.sid}.{self._next_op}", rng.choice(regions), rng.randint(1, 9))
                self.ops[op.op_id] = op
                self._send_commit(op)
        self.after(rng.uniform(0.5, 1.5) * self.config.op_interval, "op", self._op_tick)

    def _send_commit(self, op: StrongOp) -> None:
        lease = self.owned(op.region)
        if lease is None:
            op.status = "abandoned"
            self.env.note(f"{self.sid} {op.op_id} abandoned: {op.region} no longer owned")
            return
        op.attempt += 1
        commit = Commit(
            op.op_id, op.region, lease.epoch, self.sid, self.local_now(), op.amount, op.attempt
        )
        # A process pause (GC) may hit right here, between the decision and the send: the
        # server freezes and the request leaves only when it wakes, carrying the old epoch.
        hold = self.env.take_pause(self.sid)
        self.env.send(self.sid, STORE, StoreRequest(0, commit, self.authoritative), hold)
        self._inflight[op.op_id] = (op, self.local_now())

    def _check_timeouts(self) -> None:
        """Ops whose last attempt got no reply within ``request_timeout`` are ambiguous (the
        request or its reply was lost): retry each under the same op id (the store applies
        an op id once) while still authoritative and owning the region; else give up."""
        now, timeout = self.local_now(), self.config.request_timeout
        late = [op for op, sent in self._inflight.values() if now - sent > timeout]
        for op in late:
            del self._inflight[op.op_id]
            if op.status != "pending":
                continue
            self.stats.ambiguous += 1
            self.env.note(f"{self.sid} {op.op_id} try{op.attempt} timed out")
            if op.attempt < self.config.max_attempts and self._may_commit():
                self._send_commit(op)
            else:
                op.status = "unknown"
                self.stats.unknown += 1

    def _on_commit_reply(self, call: Commit, result: Result) -> None:
        op = self.ops.get(call.op_id)
        if op is None:
            return
        if isinstance(result, Committed):
            self._inflight.pop(op.op_id, None)
            if op.status != "acked":
                op.status = "acked"
                self.stats.acked += 1
                self.env.acknowledged(self, op)
        elif (
            isinstance(result, (Fenced, RegionOwned))
            and op.status == "pending"
            and call.attempt == op.attempt
        ):
            self._inflight.pop(op.op_id, None)
            op.status = "rejected"
            self.stats.rejected += 1
            held = self.leases.get(call.key)
            if held is not None and held.epoch == call.epoch:
                self._lose(call.key, describe(result))

    # -- eventual --------------------------------------------------------------------------

    def _eventual_tick(self) -> None:
        if not self.active:
            return
        rng, c = self.env.rng, self.config
        if not self.env.quiet:
            n = rng.randint(1, 3)
            ids = np.array(sorted(rng.sample(range(c.entities), n)), dtype=np.int64)
            pos = np.array(
                [[rng.uniform(-1000.0, 1000.0) for _ in range(3)] for _ in range(n)],
                dtype=np.float64,
            )
            stamp = self.hlc.now()
            self.table.apply_batch(ids, pos, stamp, self.sid)
            self.stats.eventual_writes += 1
            self.broadcast(EntityBatch(ids, pos, stamp))
        self.after(c.eventual_interval * rng.uniform(0.8, 1.2), "eventual", self._eventual_tick)

    def _anti_entropy_tick(self) -> None:
        if not self.active:
            return
        peers = self.env.peers(self.sid)
        if peers and "no-anti-entropy" not in self.broken:
            peer = self.env.rng.choice(peers)
            self.env.send(self.sid, peer, TableSnapshot(self.table.snapshot()))
        self.after(self.config.anti_entropy_interval, "anti-entropy", self._anti_entropy_tick)

    def anti_entropy_round(self) -> None:
        """Send this server's whole table to every peer (the quiet phase's repair round)."""
        if self.active and "no-anti-entropy" not in self.broken:
            self.broadcast(TableSnapshot(self.table.snapshot()))

    def _on_batch(self, src: str, batch: EntityBatch) -> None:
        if "arrival-order-eventual" in self.broken:
            self.table.apply_batch(batch.ids, batch.positions, self.hlc.now(), self.sid)
            return
        try:
            self.hlc.update(batch.hlc)
        except ClockDriftError:
            self.stats.drift_refused += 1
            return
        self.stats.eventual_applied += self.table.apply_batch(
            batch.ids, batch.positions, batch.hlc, src
        )

    def _on_snapshot(self, snap: TableSnapshot) -> None:
        other = EntityTable.restore(snap.data)
        if "arrival-order-eventual" in self.broken:
            ids = other.ids
            if ids.size:
                self.table.apply_batch(ids, other.positions_of(ids), self.hlc.now(), self.sid)
            return
        if len(other):
            top = int(other.hlc_of(other.ids).max())
            try:
                self.hlc.update(top)
            except ClockDriftError:
                self.stats.drift_refused += 1
        self.stats.merges += self.table.merge(other)

    # -- leaving ---------------------------------------------------------------------------

    def leave(self) -> None:
        """A clean leave: stop acting, release every lease, say goodbye (three times, the bus
        is lossy), hand the eventual table to the peers, stop."""
        self.leaving = True
        for region, lease in sorted(self.leases.items()):
            self.call(Release(region, self.sid, lease.epoch), lambda r: None)
        self.leases.clear()
        coord = self.coordinator.lease
        if coord is not None:
            self.call(Release(COORDINATOR_KEY, self.sid, coord.epoch), lambda r: None)
            self.coordinator.lease = None
        self.broadcast(TableSnapshot(self.table.snapshot()))
        for i in range(3):
            self.after(i * self.config.heartbeat_interval, "goodbye", self._goodbye)
        self.after(3 * self.config.heartbeat_interval, "stop", self._stop)

    def _goodbye(self) -> None:
        self.broadcast(Goodbye())

    def _stop(self) -> None:
        self.running = False
        self.env.note(f"{self.sid} stopped")

    # -- receiving -------------------------------------------------------------------------

    def receive(self, src: str, body: Body) -> None:
        if not self.active:
            return
        if isinstance(body, Heartbeat):
            self.view.heard(src, self.local_now(), body.incarnation)
        elif isinstance(body, StoreReply):
            if isinstance(body.call, Commit):
                self._on_commit_reply(body.call, body.result)
                return
            entry = self._pending.pop(body.req_id, None)
            if entry is not None and self.local_now() - entry[0] <= self.config.request_timeout:
                entry[1](body.result)
        elif isinstance(body, EntityBatch):
            self._on_batch(src, body)
        elif isinstance(body, TableSnapshot):
            self._on_snapshot(body)
        elif isinstance(body, Assign):
            self.on_assign(body.region)
        elif isinstance(body, Goodbye):
            self.view.left(src)
            self.departed.add(src)
        elif isinstance(body, Hello):
            self.hellos.add(src)


class SimCoordinator:
    """The mesh coordinator role a server runs: elected by a lease on `COORDINATOR_KEY`,
    active only while its server is authoritative and trusts that lease. It records the
    agreed membership (joins and clean leaves; a conditional write, fenced by its epoch) and
    hands every region whose lease has expired to the least loaded live member."""

    def __init__(self, server: SimServer) -> None:
        self.server = server
        self.lease: Lease | None = None
        self._writing_since: float | None = None
        self._other_until = float("-inf")
        """Until when (by the store's last answer) another server holds the role."""

    def acting(self) -> bool:
        s = self.server
        lease = self.lease
        return (
            s.active
            and s.authoritative
            and lease is not None
            and s.local_now() < lease.expires_at - s.config.lease_margin
        )

    def tick(self) -> None:
        s = self.server
        if not s.active:
            return
        s.refresh()
        now, ttl = s.local_now(), s.config.lease_ttl
        if s.authoritative:
            lease = self.lease
            if lease is None:
                if now >= self._other_until:  # campaign only once the holder's lease is up
                    s.call(Acquire(COORDINATOR_KEY, s.sid, ttl, now), self._on_lease)
            else:
                s.call(Renew(COORDINATOR_KEY, s.sid, lease.epoch, ttl, now), self._on_lease)
            if self.acting():
                s.call(ListLeases(now), self._on_table)
                self._membership_duty(now)
        s.after(s.config.coordinator_interval, "coordinator", self.tick)

    def _on_lease(self, result: Result) -> None:
        s = self.server
        if isinstance(result, Lease) and s.active:
            if self.lease is None or self.lease.epoch != result.epoch:
                s.env.note(f"{s.sid} is coordinator @{result.epoch}")
            self.lease = result
        elif isinstance(result, Fenced):
            self.lease = None
        elif isinstance(result, RegionOwned):
            self._other_until = result.expires_at

    def _membership_duty(self, now: float) -> None:
        s = self.server
        desired = frozenset((s.membership | s.hellos) - s.departed)
        if desired == s.membership or self.lease is None:
            return
        if self._writing_since is not None and now - self._writing_since < s.config.request_timeout:
            return
        self._writing_since = now
        s.call(
            WriteMembership(desired, s.membership_version, self.lease.epoch, s.sid, now),
            self._on_membership,
        )

    def _on_membership(self, result: Result) -> None:
        s = self.server
        self._writing_since = None
        if isinstance(result, MembershipRecord):
            s.adopt(result)
        elif isinstance(result, VersionConflict):
            s.adopt(result.current)
        elif isinstance(result, (Fenced, RegionOwned)):
            self.lease = None

    def _on_table(self, table: Result) -> None:
        s = self.server
        if not isinstance(table, LeaseTable) or not self.acting():
            return
        now = s.local_now()
        candidates = sorted((s.view.view(now) & s.membership) - s.departed)
        if not candidates:
            return
        load = dict.fromkeys(candidates, 0)
        owner_of: dict[str, str | None] = {}
        for key, owner, _epoch in table.rows:
            owner_of[key] = owner
            if owner in load:
                load[owner] += 1
        for region in s.config.region_keys:
            if owner_of.get(region) is not None:
                continue
            least = min(load.values())
            target = s.env.rng.choice([c for c in candidates if load[c] == least])
            load[target] += 1
            s.env.note(f"{s.sid} assigns {region} to {target}")
            if target == s.sid:
                s.on_assign(region)
            else:
                s.env.send(s.sid, target, Assign(region))
