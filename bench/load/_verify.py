"""Read a run's histories and the store, and run the pure checkers of `_invariants`."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import func, select

from bench.load._history import json_lines, lines, read_json
from bench.load._invariants import (
    Delivery,
    LeaseSample,
    check_acknowledged,
    check_causal,
    check_causal_complete,
    check_claims,
    check_conservation,
    check_convergence,
    check_single_owner,
)
from bench.load._report import server_dirs
from worldstate.store import schema
from worldstate.store.engine import make_engine


async def read_store(url: str) -> dict[str, Any]:
    """Structure ids, resource nodes and gold total, straight from the store."""
    engine = make_engine(url, pool_size=2)
    try:
        async with engine.connect() as c:
            objs = {r[0] for r in await c.execute(select(schema.objects.c.object_id))}
            res = {
                r.resource_id: (float(r.capacity), float(r.remaining))
                for r in await c.execute(
                    select(
                        schema.resources.c.resource_id,
                        schema.resources.c.capacity,
                        schema.resources.c.remaining,
                    )
                )
            }
            inv = schema.inventories
            gold = (
                await c.execute(select(func.sum(inv.c["count"])).where(inv.c.item == "gold"))
            ).scalar()
    finally:
        await engine.dispose()
    return {"objects": objs, "resources": res, "gold": int(gold or 0)}


def _server_of(dirname: str) -> str:
    return dirname.split(".", 1)[0]


async def verify(
    root: Path, store_url: str, *, gold_expected: int, full_receivers: set[str]
) -> dict[str, Any]:
    """Every invariant of the run in ``root`` (see `_invariants`)."""
    dirs = server_dirs(root)
    built: set[str] = set()
    claims: dict[str, float] = defaultdict(float)
    leases: list[LeaseSample] = []
    deliveries: dict[str, list[Delivery]] = {}
    floors: dict[str, dict[str, int]] = {}
    delivered_ids: dict[str, set[str]] = {}
    accepted: dict[str, set[str]] = defaultdict(set)
    tables: dict[str, tuple[Any, Any]] = {}
    for d in dirs:
        sid = _server_of(d.name)
        for line in lines(d / "acks.log"):
            parts = line.split()
            if parts[0] == "b" and len(parts) == 2:
                built.add(parts[1])
            elif parts[0] == "m" and len(parts) == 3:
                claims[parts[1]] += float(parts[2])
        for row in json_lines(d / "leases.jsonl"):
            if isinstance(row, list) and len(row) == 2:
                leases.append((float(row[0]), sid, {int(k): int(v) for k, v in row[1].items()}))
        evs: list[Delivery] = []
        ids: set[str] = set()
        for row in json_lines(d / "deliveries.jsonl"):
            if isinstance(row, dict) and "floor" in row:
                floor = {str(k): int(v) for k, v in row["floor"].items()}
                if d.name in floors:  # the update stream was re-opened: a floor mid-way
                    evs.append(("", -1, floor))
                else:
                    floors[d.name] = floor
            elif isinstance(row, list) and len(row) == 4:
                evs.append((str(row[0]), int(row[1]), {str(k): int(v) for k, v in row[2].items()}))
                ids.add(str(row[3]))
        deliveries[d.name] = evs
        delivered_ids[d.name] = ids
        accepted[sid].update(lines(d / "accepted.log"))
        if d.name in full_receivers:
            try:
                with np.load(d / "positions.npz") as z:
                    tables[d.name] = (np.asarray(z["ids"]), np.asarray(z["positions"]))
            except (OSError, ValueError, KeyError):
                pass
    st = await read_store(store_url)
    origin_of = {d.name: _server_of(d.name) for d in dirs}
    causal = check_causal(deliveries, floors, origin_of=origin_of)
    final_clocks = {}
    for d in dirs:
        final = read_json(d / "final.json")
        if isinstance(final, dict):
            final_clocks[d.name] = dict(final["stats"]["causal"]["delivered_clock"])
    complete = check_causal_complete(final_clocks, full_receivers, origin_of)
    causal["lost"] = complete["lost"]
    causal["acknowledged"] = complete["acknowledged"]
    causal["lost_examples"] = complete["examples"]
    causal["violations"] += complete["lost"]
    causal["ok"] = causal["ok"] and complete["ok"]
    return {
        "inventory_conserved": check_conservation({"gold": gold_expected}, {"gold": st["gold"]}),
        "acknowledged_strong_present": check_acknowledged(built, st["objects"]),
        "acknowledged_claims_taken": check_claims(
            claims,
            {k: v[0] for k, v in st["resources"].items()},
            {k: v[1] for k, v in st["resources"].items()},
        ),
        "single_owner": check_single_owner(leases),
        "causal_order": causal,
        "eventual_convergence": check_convergence(tables),
    }


def full_run_receivers(root: Path) -> set[str]:
    """Server directories of incarnations that ran the whole run (never killed)."""
    return {
        d.name
        for d in server_dirs(root)
        if "." not in d.name and isinstance(read_json(d / "final.json"), dict)
    }


__all__ = ["full_run_receivers", "read_store", "verify"]
