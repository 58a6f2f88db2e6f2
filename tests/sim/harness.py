"""The deterministic mesh simulator: a discrete-event loop, one clock, one seed.

Everything the mesh does is an event in one priority queue ordered by ``(time, seq)``:
timers of the simulated servers, message deliveries, partitions and heals, joins and
leaves. One ``random.Random(seed)`` decides every fault and every choice, and nothing
iterates a set or reads the real clock, so a seed replays exactly, in any process: the trace
(one line per event) hashes the same every time. No asyncio, no sockets, no sleeping: 35
simulated seconds of five servers are a few thousand events, a fraction of a second.

The invariants (`INVARIANTS`) are checked as the run goes and at its end; a violation
raises `InvariantViolation` carrying the seed, the invariant, a short reason and the last
events of the trace. Replay one seed::

    python -m tests.sim.harness --seed 17            # summary, or the violation
    python -m tests.sim.harness --seed 17 --trace    # the whole event trace
    python -m tests.sim.harness --seeds 0:1000       # a range, stops at the first failure
    python -m tests.sim.harness --seed 3 --broken no-fencing
"""

from __future__ import annotations

import argparse
import hashlib
import heapq
import random
import sys
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, replace

import conflicts
from tests.sim.model import (
    BROKEN_VARIANTS,
    HEALED,
    STORE,
    Acquire,
    Body,
    Commit,
    Committed,
    Cut,
    Fenced,
    Lease,
    NetProfile,
    Network,
    RegionOwned,
    Release,
    Released,
    Renew,
    Result,
    SimConfig,
    SimServer,
    SimStore,
    StoreReply,
    StoreRequest,
    StrongOp,
    describe,
)

INVARIANTS: dict[str, str] = {
    "lease-exclusive": (
        "(1) never two servers with live leases on one region: once the store grants a lease "
        "until E, it grants that region to no other server before the holder stops trusting "
        "it (E - margin by the holder's clock)"
    ),
    "fencing": (
        "(1) an accepted strong commit carries the region's current epoch and comes from the "
        "server that epoch was granted to: two believers never both commit in overlapping "
        "intervals"
    ),
    "demoted-commit": "(2) no strong commit sent after the sender's demotion is accepted",
    "timely-demotion": (
        "(2) a server that cannot have heard a majority within the heartbeat timeout (plus "
        "the longest network delay) has demoted itself"
    ),
    "exactly-once": "(3) no op id is applied twice, however often it is retried or duplicated",
    "acked-durable": "(3) every acknowledged strong op is in the store at the end",
    "convergence": "(4) after the final heal and a quiet period, all eventual tables are equal",
    "recovery": "after the final heal, every region has a live owner that is authoritative",
}

EXPECTED_VIOLATION: dict[str, str] = {
    "no-fencing": "fencing",
    "no-dedup": "exactly-once",
    "demoted-commits": "demoted-commit",
    "never-demote": "timely-demotion",
    "arrival-order-eventual": "convergence",
    "no-anti-entropy": "convergence",
    "skew-beyond-margin": "lease-exclusive",
    "shortening-renewal": "lease-exclusive",
}
"""The invariant each broken variant must trip (for some seed among the first few dozen)."""

_EPS = 1e-6


class InvariantViolation(AssertionError):
    """An invariant failed. Carries ``seed``, ``broken``, ``invariant``, ``at`` (simulated
    time), ``detail`` and ``tail`` (the last events), and says how to replay it."""

    def __init__(
        self,
        seed: int,
        broken: frozenset[str],
        invariant: str,
        at: float,
        detail: str,
        tail: Sequence[str],
    ) -> None:
        self.seed = seed
        self.broken = broken
        self.invariant = invariant
        self.at = at
        self.detail = detail
        self.tail = list(tail)
        flags = "".join(f" --broken {b}" for b in sorted(broken))
        super().__init__(
            f"seed {seed}{' (broken: ' + ', '.join(sorted(broken)) + ')' if broken else ''}: "
            f"invariant {invariant!r} violated at t={at:.4f}: {detail}\n"
            f"  {INVARIANTS[invariant]}\n"
            f"  replay: python -m tests.sim.harness --seed {seed}{flags} --trace"
            + ("" if broken else f"   or   pytest tests/sim -k {seed_id(seed)}")
            + f"\n  last {len(self.tail)} events:\n    "
            + "\n    ".join(self.tail)
        )


def seed_id(seed: int) -> str:
    """The pytest id of a seed's test (zero-padded so that ``-k`` selects exactly one)."""
    return f"seed{seed:05d}"


@dataclass(frozen=True, slots=True)
class RunResult:
    seed: int
    trace_hash: str
    events: int
    stats: dict[str, int]


# -- the invariants ----------------------------------------------------------------------


class Checker:
    """Watches the store's linearized history and the servers' standing; fails fast."""

    def __init__(self, sim: Simulation) -> None:
        self.sim = sim
        self.trusted_until: dict[str, dict[str, float]] = {}
        """Per key, per server: the latest true time that server may trust a lease the
        store granted it (``expires_at - margin`` by its clock)."""
        self.epoch_owner: dict[tuple[str, int], str] = {}
        self.acked: dict[str, tuple[str, str]] = {}
        self.takeovers = 0
        self.fenced = 0
        self.grants = 0
        self.released: set[tuple[str, int]] = set()
        self.revived = 0
        """Renewals that brought a released lease back to life (same owner, same epoch)."""

    def store_call(self, src: str, req: StoreRequest, result: Result) -> None:
        call, now, sim = req.call, self.sim.now, self.sim
        if isinstance(call, (Acquire, Renew)) and isinstance(result, Lease):
            self.grants += 1
            if (result.key, result.epoch) in self.released:
                self.released.discard((result.key, result.epoch))
                self.revived += 1
                sim.note(f"{result.key}@{result.epoch} revived by a renewal after its release")
            windows = self.trusted_until.setdefault(result.key, {})
            for other, until in windows.items():
                if other != result.owner and until > now + _EPS:
                    sim.fail(
                        "lease-exclusive",
                        f"{result.key} granted to {result.owner}@{result.epoch} at t={now:.4f} "
                        f"while {other} may trust its lease until t={until:.4f}",
                    )
            until = result.expires_at - sim.config.lease_margin - sim.skew[result.owner]
            windows[result.owner] = max(windows.get(result.owner, until), until)
            first = self.epoch_owner.get((result.key, result.epoch))
            if first is None:
                self.epoch_owner[(result.key, result.epoch)] = result.owner
                previous = self.epoch_owner.get((result.key, result.epoch - 1))
                if previous is not None and previous != result.owner:
                    self.takeovers += 1
            elif first != result.owner:
                sim.fail(
                    "lease-exclusive",
                    f"{result.key} epoch {result.epoch} granted to {first} and {result.owner}",
                )
        elif isinstance(call, Release) and isinstance(result, Released) and result.ok:
            windows = self.trusted_until.setdefault(call.key, {})
            windows[call.owner] = min(windows.get(call.owner, now), now)
            self.released.add((call.key, call.epoch))
        elif isinstance(call, Commit):
            if isinstance(result, (Fenced, RegionOwned)):
                self.fenced += 1
            elif isinstance(result, Committed) and not result.duplicate:
                self._accepted(call, req.sent_majority)

    def _accepted(self, call: Commit, sent_majority: bool) -> None:
        sim = self.sim
        if sim.store.applied.get(call.op_id, 0) > 1:
            sim.fail(
                "exactly-once",
                f"{call.op_id} applied {sim.store.applied[call.op_id]} times "
                f"(attempt {call.attempt} by {call.writer})",
            )
        lease = sim.store.leases.get(call.key)
        granted_to = self.epoch_owner.get((call.key, call.epoch))
        if lease is None or lease.epoch != call.epoch or granted_to != call.writer:
            current = f"{lease.owner}@{lease.epoch}" if lease is not None else "none"
            sim.fail(
                "fencing",
                f"{call.writer} committed {call.op_id} to {call.key} under epoch {call.epoch} "
                f"(granted to {granted_to}); the region's lease is {current}",
            )
        if not sent_majority:
            sim.fail(
                "demoted-commit",
                f"{call.writer} sent {call.op_id} (try {call.attempt}) while demoted and "
                f"the store accepted it",
            )

    def acknowledged(self, server: SimServer, op: StrongOp) -> None:
        self.acked[op.op_id] = (server.sid, op.region)

    def refreshed(self, server: SimServer) -> None:
        """Right after ``server`` re-decided its standing: if even the most generous view it
        could have (every member whose heartbeats could still be within the timeout) loses
        authority, it must have demoted itself."""
        if not server.authoritative:
            return
        sim, c = self.sim, self.sim.config
        now, timeout = sim.now, c.heartbeat_timeout
        possible = {server.sid}
        sent_from = now - timeout - sim.max_delay - _EPS
        for start, stop in sim.pauses.get(server.sid, ()):
            if stop >= now - timeout - _EPS:  # heartbeats buffered while it was frozen
                sent_from = min(sent_from, start - sim.max_delay - _EPS)
        for other in sim.order:
            if other == server.sid:
                continue
            if sim.heartbeating_within(other, sent_from, now) and sim.link_open_within(
                other, server.sid, now - timeout - _EPS, now
            ):
                possible.add(other)
        verdict = conflicts.decide_partition(server.membership, possible, self_id=server.sid)
        if not verdict.keeps_authority:
            sim.fail(
                "timely-demotion",
                f"{server.sid} is still authoritative but could have heard at most "
                f"{sorted(possible)} of members {sorted(server.membership)}: {verdict.reason}",
            )

    def final(self) -> None:
        sim = self.sim
        for op_id, (sid, region) in self.acked.items():
            if op_id not in sim.store.outcomes or op_id not in sim.store.region_ops.get(region, []):
                sim.fail("acked-durable", f"{sid} acknowledged {op_id} on {region}; not in store")
        live = [s for s in sim.servers.values() if s.active]
        first = live[0]
        for other in live[1:]:
            if other.table != first.table:
                ids = sorted(set(first.table.ids.tolist()) | set(other.table.ids.tolist()))
                a_pos, b_pos = first.table.positions_of(ids), other.table.positions_of(ids)
                a_w, b_w = first.table.writers_of(ids), other.table.writers_of(ids)
                diff = [
                    i
                    for k, i in enumerate(ids)
                    if a_w[k] != b_w[k] or not (a_pos[k] == b_pos[k]).all()
                ]
                sim.fail(
                    "convergence",
                    f"{first.sid} ({len(first.table)} entities) and {other.sid} "
                    f"({len(other.table)}) differ on entities {diff[:10]}",
                )
        for region in sim.config.region_keys:
            lease = sim.store.leases.get(region)
            owner = sim.servers.get(lease.owner) if lease is not None else None
            if (
                lease is None
                or owner is None
                or not owner.active
                or not owner.authoritative
                or not lease.live(owner.local_now())
            ):
                sim.fail("recovery", f"{region} has no live authoritative owner: {lease}")


# -- the simulator -----------------------------------------------------------------------


class Simulation:
    """One seeded run of the mesh (see the module doc). ``broken`` names variants from
    `BROKEN_VARIANTS` (harness self-tests); ``config`` overrides the default timing."""

    def __init__(
        self,
        seed: int,
        *,
        broken: Iterable[str] = (),
        config: SimConfig | None = None,
        tail: int = 40,
        keep_trace: bool = False,
    ) -> None:
        self.seed = seed
        self.broken = frozenset(broken)
        unknown = sorted(self.broken - set(BROKEN_VARIANTS))
        if unknown:
            raise ValueError(f"unknown broken variants {unknown}; known: {sorted(BROKEN_VARIANTS)}")
        cfg = config or SimConfig()
        if "skew-beyond-margin" in self.broken:
            cfg = replace(cfg, max_skew=1.5 * cfg.lease_margin, allow_unsafe_skew=True)
        self.config = cfg
        self.rng = random.Random(seed)
        self._queue: list[tuple[float, int, str, str, Callable[[], None]]] = []
        self._seq = 0
        self._now = 0.0
        self._quiet = False
        self._hash = hashlib.blake2b(digest_size=16)
        self._tail: deque[str] = deque(maxlen=tail)
        self.trace: list[str] | None = [] if keep_trace else None
        self.events = 0
        self.counts: dict[str, int] = {}

        rng = self.rng
        n = rng.randint(3, 5)
        profile = NetProfile(
            drop=rng.choice((0.0, 0.01, 0.03, 0.08)),
            duplicate=rng.choice((0.0, 0.02, 0.05)),
            slow=rng.choice((0.0, 0.02, 0.05)),
            stall=rng.choice((0.0, 0.03, 0.08, 0.15)),
        )
        self.max_delay = profile.max_delay
        self.network = Network(rng, profile)
        self.cut_history: list[tuple[float, Cut]] = [(0.0, HEALED)]
        self.order: list[str] = []
        self.servers: dict[str, SimServer] = {}
        self.skew: dict[str, float] = {}
        self.started_at: dict[str, float] = {}
        self.heartbeats_until: dict[str, float] = {}
        self.paused_until: dict[str, float] = {}
        self.pauses: dict[str, list[tuple[float, float]]] = {}
        self._armed: dict[str, float] = {}
        initial = [f"s{i}" for i in range(n)]
        self.store = SimStore(
            frozenset(initial),
            fencing="no-fencing" not in self.broken,
            dedup="no-dedup" not in self.broken,
            monotonic_renewal="shortening-renewal" not in self.broken,
        )
        self.checker = Checker(self)
        self._record(
            f"seed {seed} servers {n} {profile} skew<={cfg.max_skew} broken {sorted(self.broken)}"
        )
        for sid in initial:
            self._add_server(sid)
        end = cfg.duration
        if rng.random() < 0.35:
            self._at(rng.uniform(4.0, end - 8.0), "mesh", "join", self._join)
        if rng.random() < 0.35:
            self._at(rng.uniform(4.0, end - 6.0), "mesh", "leave", self._leave)
        self._at(rng.uniform(1.0, 4.0), "net", "partition", self._fault_tick)
        for _ in range(rng.choice((0, 0, 1, 2, 3))):
            self._at(rng.uniform(3.0, end - 10.0), "mesh", "arm pause", self._arm_pause)
        self._at(end, "mesh", "final heal; quiet phase", self._start_quiet)
        self._at(end + 1.0, "mesh", "anti-entropy round", self._anti_entropy_round)

    # -- the Env the servers see -----------------------------------------------------------

    @property
    def now(self) -> float:
        return self._now

    @property
    def quiet(self) -> bool:
        return self._quiet

    def after(self, delay: float, node: str, label: str, fn: Callable[[], None]) -> None:
        self._at(self._now + delay, node, label, fn)

    def peers(self, sid: str) -> list[str]:
        return [s for s in self.order if s != sid and self.servers[s].running]

    def note(self, text: str) -> None:
        self._record(f"{self._now:.4f}   {text}")

    def standing_changed(self, server: SimServer) -> None:
        p = server.partition
        self.note(f"{server.sid} {'PROMOTED' if p.majority else 'DEMOTED'}: {p.reason}")

    def refreshed(self, server: SimServer) -> None:
        self.checker.refreshed(server)

    def acknowledged(self, server: SimServer, op: StrongOp) -> None:
        self.checker.acknowledged(server, op)

    def take_pause(self, sid: str) -> float:
        """A pause armed for ``sid`` starts now (see `_arm_pause`): the server freezes (its
        timers and deliveries wait until it wakes) and the caller holds its message as long."""
        length = self._armed.pop(sid, 0.0)
        if length:
            self.paused_until[sid] = self._now + length
            self.pauses.setdefault(sid, []).append((self._now, self._now + length))
            self._count("pauses")
            self.note(f"{sid} PAUSED for {length:.3f}s")
        return length

    def send(self, src: str, dst: str, body: Body, hold: float = 0.0) -> None:
        self._count("sent")
        if not self.network.connected(src, dst):
            self._count("cut")
            self.note(f"cut {src}->{dst} {describe(body)}")
            return
        delays, note = self.network.plan(isinstance(body, StoreRequest))
        if not delays:
            self._count("dropped")
            self.note(f"drop {src}->{dst} {describe(body)}")
            return
        if note:
            for word in note.split():
                self._count(word)
            self.note(f"{note} {src}->{dst} {describe(body)}")
        for delay in delays:
            self._at(self._now + hold + delay, dst, "", lambda: self._deliver(src, dst, body))

    # -- the loop --------------------------------------------------------------------------

    def _at(self, when: float, node: str, label: str, fn: Callable[[], None]) -> None:
        self._seq += 1
        heapq.heappush(self._queue, (when, self._seq, node, label, fn))

    def _record(self, line: str) -> None:
        self._hash.update(f"{line}\n".encode())
        self._tail.append(line)
        if self.trace is not None:
            self.trace.append(line)

    def _count(self, what: str) -> None:
        self.counts[what] = self.counts.get(what, 0) + 1

    def fail(self, invariant: str, detail: str) -> None:
        raise InvariantViolation(
            self.seed, self.broken, invariant, self._now, detail, list(self._tail)
        )

    def run(self) -> RunResult:
        end = self.config.duration + self.config.quiet
        queue = self._queue
        paused = self.paused_until
        while queue and queue[0][0] <= end:
            when, _, node, label, fn = heapq.heappop(queue)
            if node in paused and paused[node] > when:  # frozen: runs when it wakes
                self._at(paused[node], node, label, fn)
                continue
            self._now = when
            self.events += 1
            if label:  # a timer; a delivery records its own line
                self._record(f"{when:.4f} {node} {label}")
            fn()
        self._now = end
        self._record(f"{end:.4f} end")
        self.checker.final()
        return RunResult(self.seed, self._hash.hexdigest(), self.events, self.stats())

    def stats(self) -> dict[str, int]:
        out = dict(sorted(self.counts.items()))
        for server in self.servers.values():
            for k, v in asdict(server.stats).items():
                out[k] = out.get(k, 0) + v
        out["servers"] = len(self.servers)
        out["grants"] = self.checker.grants
        out["takeovers"] = self.checker.takeovers
        out["fenced"] = self.checker.fenced
        out["revived"] = self.checker.revived
        out["commits"] = sum(self.store.applied.values())
        out["events"] = self.events
        return out

    # -- delivery and the store ------------------------------------------------------------

    def _deliver(self, src: str, dst: str, body: Body) -> None:
        self._record(f"{self._now:.4f} {src}->{dst} {describe(body)}")
        if not self.network.connected(src, dst):  # the link went down while in flight
            self._count("cut")
            self.note("cut in flight")
            return
        if dst == STORE:
            assert isinstance(body, StoreRequest)
            result = self.store.execute(body.call)
            self.note(describe(result))
            self.checker.store_call(src, body, result)
            self.send(STORE, src, StoreReply(body.req_id, body.call, result))
            return
        server = self.servers.get(dst)
        if server is not None:
            server.receive(src, body)

    # -- scenario: servers, faults, phases -------------------------------------------------

    def _add_server(self, sid: str) -> None:
        c = self.config
        skew = self.rng.uniform(-c.max_skew, c.max_skew)
        server = SimServer(
            sid, self, membership=self.store.membership, skew=skew, broken=self.broken
        )
        self.order.append(sid)
        self.servers[sid] = server
        self.skew[sid] = skew
        self.started_at[sid] = self._now
        self.note(f"{sid} starts, skew {skew:+.4f}")
        server.start()

    def _arm_pause(self) -> None:
        """Arm a process pause (2..8 s) on a random server: it starts at that server's next
        strong commit, between deciding it and sending it (the case fencing exists for)."""
        sid = self.rng.choice([s for s in self.order if self.servers[s].active])
        self._armed[sid] = self.rng.uniform(2.0, 8.0)
        self.note(f"pause armed on {sid}")

    def _join(self) -> None:
        self._add_server(f"s{len(self.order)}")

    def _leave(self) -> None:
        candidates = [
            s
            for s in self.order
            if self.servers[s].active and self.paused_until.get(s, 0.0) <= self._now
        ]
        if len(candidates) <= 2:
            return
        sid = self.rng.choice(candidates)
        self.heartbeats_until[sid] = self._now
        self.note(f"{sid} leaves")
        self.servers[sid].leave()

    def heartbeating_within(self, sid: str, t0: float, t1: float) -> bool:
        """Could ``sid`` have sent a heartbeat at some time in ``[t0, t1]``?"""
        return self.started_at[sid] <= t1 and self.heartbeats_until.get(sid, t1) >= t0

    def link_open_within(self, src: str, dst: str, t0: float, t1: float) -> bool:
        """Was the link ``src -> dst`` up at some time in ``[t0, t1]``?"""
        history = self.cut_history
        for i in range(len(history) - 1, -1, -1):
            start, cut = history[i]
            stop = history[i + 1][0] if i + 1 < len(history) else float("inf")
            if stop < t0:
                break
            if start <= t1 and cut.connected(src, dst):
                return True
        return False

    def _set_cut(self, cut: Cut) -> None:
        self.network.cut = cut
        self.cut_history.append((self._now, cut))
        self._count("partitions" if cut is not HEALED else "heals")
        self.note(f"network {cut.describe()}")

    def _draw_cut(self) -> Cut:
        rng = self.rng
        ids = [s for s in self.order if self.servers[s].active]
        if rng.random() < 0.15:
            x = rng.choice(ids)
            others = [o for o in ids if o != x]
            # Either nobody hears x (x hears everyone) or x hears nobody (everyone hears x).
            deaf = rng.random() < 0.5
            return Cut(oneway=frozenset((o, x) if deaf else (x, o) for o in others))
        k = rng.choice((2, 2, 3))
        while True:
            groups = {s: rng.randrange(k) for s in ids}
            if len(set(groups.values())) >= 2:
                break
        store_group = None if rng.random() < 0.5 else rng.randrange(k)
        return Cut(groups, store_group)

    def _fault_tick(self) -> None:
        if self._quiet:
            return
        rng = self.rng
        if self.network.cut is HEALED:
            self._set_cut(self._draw_cut())
            self.after(rng.uniform(1.5, 12.0), "net", "heal", self._fault_tick)
        else:
            self._set_cut(HEALED)
            self.after(rng.uniform(1.0, 6.0), "net", "partition", self._fault_tick)

    def _start_quiet(self) -> None:
        self._quiet = True
        self._armed.clear()
        if self.network.cut is not HEALED:
            self._set_cut(HEALED)
        self.network.profile = self.network.profile.reliable()

    def _anti_entropy_round(self) -> None:
        for sid in self.order:  # one event per server: a paused server sends when it wakes
            self.after(0.0, sid, "anti-entropy round", self.servers[sid].anti_entropy_round)


def run_seed(
    seed: int, *, broken: Iterable[str] = (), config: SimConfig | None = None
) -> RunResult:
    """Run one seed; raises `InvariantViolation` on the first violated invariant."""
    return Simulation(seed, broken=broken, config=config).run()


def first_violation(
    variant: str, seeds: Iterable[int], *, config: SimConfig | None = None
) -> InvariantViolation | None:
    """The first violation the broken ``variant`` produces over ``seeds`` (None if none)."""
    for seed in seeds:
        try:
            run_seed(seed, broken=(variant,), config=config)
        except InvariantViolation as v:
            return v
    return None


# -- CLI ---------------------------------------------------------------------------------


def _seed_range(text: str) -> range:
    lo, _, hi = text.partition(":")
    return range(int(lo), int(hi)) if hi else range(int(lo), int(lo) + 1)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.sim.harness", description="Replay deterministic mesh simulations."
    )
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--seed", type=int, help="run one seed")
    which.add_argument("--seeds", type=_seed_range, help="run a range, e.g. 0:1000")
    parser.add_argument(
        "--broken",
        action="append",
        default=[],
        choices=sorted(BROKEN_VARIANTS),
        help="run a deliberately broken variant (repeatable)",
    )
    parser.add_argument("--trace", action="store_true", help="print the whole event trace")
    parser.add_argument("--tail", type=int, default=40, help="events shown with a violation")
    args = parser.parse_args(argv)
    seeds = range(args.seed, args.seed + 1) if args.seed is not None else args.seeds
    for seed in seeds:
        sim = Simulation(seed, broken=args.broken, tail=args.tail, keep_trace=args.trace)
        try:
            result = sim.run()
        except InvariantViolation as v:
            if args.trace and sim.trace is not None:
                print("\n".join(sim.trace))
            print(v, file=sys.stderr)
            return 1
        if args.trace and sim.trace is not None:
            print("\n".join(sim.trace))
        if args.seed is not None or args.trace:
            stats = " ".join(f"{k}={v}" for k, v in result.stats.items())
            print(f"seed {seed}: ok, trace {result.trace_hash}, {result.events} events\n  {stats}")
        elif (seed - seeds.start + 1) % 100 == 0:
            print(f"seeds {seeds.start}..{seed}: ok", file=sys.stderr, flush=True)
    if args.seeds is not None:
        print(f"seeds {seeds.start}..{seeds.stop - 1}: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
