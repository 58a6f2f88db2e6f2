"""Ambiguous commits on PostgreSQL through the fault-injecting connection wrapper
(`tests.fix_store_faults`): every third COMMIT either lands and is reported as SQLSTATE
40003 or as a dropped connection, or is lost before it lands — plus latency on every
statement. Strong operations (owned-region group commits, direct commits in an unowned
region, inventory changes and transfers) must come out exactly once: no acknowledged op
lost, no op applied twice, resubmission returns the first outcome (issue 9, item 8)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from regions import RegionKey
from tests.fix_store_faults import KINDS, StoreFaults
from worldstate import StoreUnavailable
from worldstate.operations import ChangeInventory, Operation, PlaceStructure, TransferItems
from worldstate.results import Committed, Rejected, Result

from ..worldstate.fix_world import obj, open_world

OWNED, UNOWNED = RegionKey(0, 0, 0), RegionKey(2, 0, 0)


def cube(sid: str, key: RegionKey, i: int) -> PlaceStructure:
    lo = key.bounds[0]
    a = (lo[0] + 20.0 * i + 1, lo[1] + 1, lo[2] + 1)
    return PlaceStructure(structure_id=sid, lo=a, hi=(a[0] + 5, a[1] + 5, a[2] + 5))


async def test_ambiguous_commits_apply_each_op_exactly_once(
    pg_url: str, namespace: str, store_faults: Callable[..., StoreFaults]
) -> None:
    async with open_world(
        pg_url, "gs-1", namespace=namespace, bus_url=f"memory://{namespace}"
    ) as w:
        await w.acquire_region(OWNED)
        await w.submit(ChangeInventory(inventory_id="bag", item="gold", delta=100))
        faults = store_faults(every=3, latency=(0.0005, 0.003), seed=9)
        faults.attach(w.store)

        ops: list[Operation] = []
        ops += [cube(f"own-{i}", OWNED, i) for i in range(24)]
        ops += [cube(f"free-{i}", UNOWNED, i) for i in range(8)]
        ops += [ChangeInventory(inventory_id="bag", item="gold", delta=1) for _ in range(12)]
        ops += [
            TransferItems(from_inventory="bag", to_inventory="chest", item="gold", quantity=2)
            for _ in range(12)
        ]
        first: list[Result | BaseException] = []
        for round_ in range(0, len(ops), 14):  # concurrent rounds: batches and singles
            batch = ops[round_ : round_ + 14]
            first += await asyncio.gather(*(w.submit(o) for o in batch), return_exceptions=True)

        assert all(faults.injected[k] > 0 for k in KINDS), faults.injected
        reasons = w.store.stats.by_reason
        assert reasons.get("40003", 0) > 0 and reasons.get("connection", 0) > 0, reasons
        errors = [r for r in first if isinstance(r, BaseException)]
        assert errors == [], "every op ends in an outcome on a healthy (if flaky) store"

        faults.enabled = False
        again = [await w.submit(o) for o in ops]  # the same op ids
        assert again == first, "resubmitting returns the first outcome"

        committed = [o for o, r in zip(ops, first, strict=True) if isinstance(r, Committed)]
        assert all(isinstance(r, (Committed, Rejected)) for r in first)
        placed: set[str] = set()
        for key in (OWNED, UNOWNED):
            ids = [o.id for o in (await w.load_region(key)).objects]
            assert len(ids) == len(set(ids)), "no structure placed twice"
            placed |= set(ids)
        want = {o.structure_id for o in committed if isinstance(o, PlaceStructure)}
        assert placed == want, "every acknowledged placement is there, and nothing else"
        assert len(want) == 32, "non-overlapping placements all commit"

        deltas = sum(1 for o in committed if isinstance(o, ChangeInventory))
        moved = sum(2 for o in committed if isinstance(o, TransferItems))
        assert deltas == 12 and moved == 24
        bag, chest = await w.get_inventory("bag"), await w.get_inventory("chest")
        assert chest == {"gold": moved}, "each acknowledged transfer applied exactly once"
        assert bag == {"gold": 100 + deltas - moved}, "totals conserved, deltas applied once"


async def test_the_wrapper_loses_or_lands_commits_as_it_says(
    pg_url: str, store_faults: Callable[..., StoreFaults]
) -> None:
    key = RegionKey(5, 5, 5)
    async with open_world(pg_url, txn_max_attempts=3) as w:
        s = await w.load_region(key)
        lost = store_faults(every=1, kinds=["lost-before"])
        lost.attach(w.store)
        with pytest.raises(StoreUnavailable):
            await w.store_region(s.with_objects([obj("a", key)]), expected_version=0)
        lost.detach()
        assert (await w.load_region(key)).version == 0, "a commit lost before it lands"
        landed = store_faults(every=1, kinds=["40003"])
        landed.attach(w.store)
        with pytest.raises(StoreUnavailable):  # every attempt's answer is ambiguous ...
            await w.store_region(s.with_objects([obj("a", key)]), expected_version=0)
        landed.detach()
        got = await w.load_region(key)  # ... but the write landed, once
        assert got.version == 1 and [o.id for o in got.objects] == ["a"]
        assert landed.injected["40003"] == 3 and lost.injected["lost-before"] == 3
