"""The consistency-class workload of `worldstate simulate`: players move (eventual), build
and claim resources (strong, with deliberate conflicts), trade (atomic transfers) and emit
quest events (causal) across the in-process servers. Reports each class's throughput,
latency and conflict counts."""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from regions import RegionKey
from worldstate.errors import WorldStateError
from worldstate.operations import (
    ChangeInventory,
    ClaimResource,
    EmitEvent,
    PlaceStructure,
    TransferItems,
)
from worldstate.results import Rejected
from worldstate.world import World


@dataclass
class ClassReport:
    ops: int = 0
    committed: int = 0
    rejected: int = 0
    """Lost a conflict decision (overlap, contended claim, same item)."""
    underflows: int = 0
    """Refused because an inventory would go below zero (not a conflict)."""
    errors: int = 0
    error_kinds: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        lat = sorted(self.latencies_ms)

        def pct(p: float) -> float:
            return lat[min(len(lat) - 1, round(p / 100 * (len(lat) - 1)))] if lat else 0.0

        return {
            "ops": self.ops,
            "committed_or_accepted": self.committed,
            "rejected": self.rejected,
            "underflows": self.underflows,
            "errors": self.errors,
            "error_kinds": dict(self.error_kinds),
            "per_s": self.ops / self.seconds if self.seconds else 0.0,
            # None: not measured (the vectorised eventual path is not timed per op)
            "p50_ms": pct(50) if lat else None,
            "p99_ms": pct(99) if lat else None,
        }


async def _timed(report: ClassReport, coro: Any) -> Any:
    t0 = time.perf_counter()
    try:
        res = await coro
    except WorldStateError as e:
        report.errors += 1
        name = type(e).__name__
        report.error_kinds[name] = report.error_kinds.get(name, 0) + 1
        return None
    report.latencies_ms.append((time.perf_counter() - t0) * 1000)
    if isinstance(res, Rejected):
        if "would leave" in res.reason:  # an inventory underflow, not a conflict
            report.underflows += 1
        else:
            report.rejected += 1
    else:
        report.committed += 1
    return res


async def run_load(
    worlds: list[World],
    owned: dict[RegionKey, World],
    rng: random.Random,
    *,
    players: int = 200,
    ticks: int = 40,
    builds: int = 200,
    trades: int = 200,
    quests: int = 60,
    rate: float = 50.0,
) -> dict[str, Any]:
    """``rate``: strong ops and trades arrive at this many per second, spread over time as
    players' actions are (each op's latency is then what a player waits; a burst of all of
    them at once would measure the burst instead)."""
    keys = sorted(owned, key=lambda k: k.morton)
    report: dict[str, Any] = {}

    # eventual: every server moves its own players each tick (vectorised)
    ev = ClassReport()
    t0 = time.perf_counter()
    per = max(1, players // len(worlds))
    for tick in range(ticks):
        for i, w in enumerate(worlds):
            ids = np.arange(i * per, (i + 1) * per, dtype=np.int64)
            home = keys[i % len(keys)].bounds[0]
            pos = np.column_stack(
                [
                    home[0] + 100 + (ids % 50) * 20 + tick,
                    np.full(per, home[1] + 500.0),
                    np.full(per, home[2] + 10.0),
                ]
            ).astype(np.float64)
            ev.committed += w.move_entities(ids, pos)
            ev.ops += per
        await asyncio.sleep(1 / worlds[0].config.tick_rate)
    ev.seconds = time.perf_counter() - t0
    await asyncio.sleep(0.3)
    report["eventual"] = ev.summary() | {
        "rows_applied_at_receivers": sum(
            int(w.eventual.stats().get("rows_applied", 0)) for w in worlds
        )
    }

    # strong: structures (some overlap on purpose) and contended resource claims
    st = ClassReport()
    await worlds[0].put_resource("ore-sim", _inside(keys[0], 300.0), 100.0)
    ops: list[tuple[World, Any]] = []
    for i in range(builds):
        k = rng.choice(keys)
        lo = _inside(k, rng.uniform(50, 1900))
        ops.append(
            (
                rng.choice(worlds),
                PlaceStructure(
                    structure_id=f"sim-b{i}", lo=lo, hi=(lo[0] + 30, lo[1] + 30, lo[2] + 10)
                ),
            )
        )
    for i in range(builds // 4):
        ops.append(
            (
                rng.choice(worlds),
                ClaimResource(
                    resource_id="ore-sim",
                    claimant=f"player-{i}",
                    position=_inside(keys[0], 300.0),
                    amount=8.0,
                ),
            )
        )
    rng.shuffle(ops)
    t0 = time.perf_counter()
    await _paced([(lambda w=w, op=op: _timed(st, w.submit(op))) for w, op in ops], rate)
    st.seconds = time.perf_counter() - t0
    st.ops = len(ops)
    report["strong"] = st.summary()

    # trades: atomic transfers among player inventories (conserves totals)
    tr = ClassReport()
    invs = [f"player-{i}" for i in range(20)]
    await asyncio.gather(
        *(worlds[0].submit(ChangeInventory(inventory_id=v, item="gold", delta=50)) for v in invs)
    )
    plans = [
        (
            rng.choice(worlds),
            TransferItems(
                from_inventory=a, to_inventory=b, item="gold", quantity=rng.randint(1, 30)
            ),
        )
        for a, b in (rng.sample(invs, 2) for _ in range(trades))
    ]
    t0 = time.perf_counter()
    await _paced([(lambda w=w, op=op: _timed(tr, w.submit(op))) for w, op in plans], rate)
    tr.seconds = time.perf_counter() - t0
    tr.ops = trades
    total = sum([(await worlds[-1].get_inventory(v)).get("gold", 0) for v in invs])
    report["trades"] = tr.summary() | {"gold_total": total, "gold_expected": 50 * len(invs)}

    # causal: quest event chains, each server continuing what it has seen
    ca = ClassReport()
    t0 = time.perf_counter()
    for step in range(quests):
        w = worlds[step % len(worlds)]
        await _timed(
            ca,
            w.submit(
                EmitEvent(
                    position=_inside(keys[0], 100.0), stream="quest-1", payload={"step": step}
                )
            ),
        )
    ca.seconds = time.perf_counter() - t0
    ca.ops = quests
    await asyncio.sleep(0.5)
    report["causal"] = ca.summary() | {
        "delivered_per_server": [int(w.causal.stats().get("delivered", 0)) for w in worlds]
    }
    return report


async def _paced(calls: list[Any], rate: float) -> None:
    """Start ``calls`` (each returns a coroutine) at ``rate`` per second; wait for all."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    async with asyncio.TaskGroup() as group:  # owns them: cancels and awaits on failure
        for i, call in enumerate(calls):
            delay = start + i / rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            group.create_task(call())


def _inside(k: RegionKey, off: float) -> tuple[float, float, float]:
    lo, _ = k.bounds
    return (lo[0] + off, lo[1] + off, lo[2] + 5.0)
