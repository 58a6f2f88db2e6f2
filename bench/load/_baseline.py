"""The naive store the project replaces, for ``--baseline`` ratios.

The seed design: each region is ONE JSON document (entities, structures, resource nodes,
recent events) with a SHA-256 checksum, and every operation is ONE SERIALIZABLE SQL
transaction that reads the document, checks the checksum, changes it and writes it back
(inventories are one more document). No batching, no in-memory authority, no bus: a move is
a transaction like a structure placement.

The same `Driver` (the same players, the same mix) runs on it: the `BaselineEngine` takes
the regions ``cell % servers == index`` (a static placement), and works every class with
`WORKERS` concurrent transactions per server; moves are kept latest-first per entity and a
move overwritten before it was written counts as shed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import Column, MetaData, String, Table, Text, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from bench.load._history import STATUS_INTERVAL, write_json
from bench.load._players import Mix, PlayerModel, WorldLayout, boxes_overlap
from worldstate import (
    Accepted,
    ClaimResource,
    Committed,
    Config,
    EmitEvent,
    Operation,
    PlaceStructure,
    Rejected,
    Result,
    TransferCreature,
    TransferItems,
)
from worldstate.store import schema as ws_schema
from worldstate.store.engine import make_engine
from worldstate.store.retry import RetryPolicy, RetryStats, transact

WORKERS = 2
"""Concurrent transactions per class per server."""
EVENTS_KEPT = 200
INVENTORY_DOC = "inventories"

metadata = MetaData()
docs = Table(
    "baseline_docs",
    metadata,
    Column("doc_id", String(64), primary_key=True),
    Column("doc", Text, nullable=False),
    Column("checksum", String(64), nullable=False),
)


class CorruptDocument(Exception):
    pass


def checksum(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def region_doc(cell: int) -> str:
    return f"region-{cell}"


class NaiveStore:
    """JSON documents with checksums; one transaction per change."""

    def __init__(self, url: str) -> None:
        self.engine: AsyncEngine = make_engine(url, pool_size=3 * WORKERS + 2)
        self.stats = RetryStats()
        self.policy = RetryPolicy(attempts=20, base=0.005, cap=0.5)

    async def create(self, initial: dict[str, dict[str, Any]]) -> None:
        async with self.engine.begin() as c:
            await c.run_sync(metadata.create_all)
        for doc_id, doc in initial.items():
            text = json.dumps(doc)
            ins = ws_schema.insert_for(self.engine.dialect.name, docs).values(
                doc_id=doc_id, doc=text, checksum=checksum(text)
            )

            async def body(c: AsyncConnection, ins: Any = ins) -> None:
                await c.execute(ins.on_conflict_do_nothing(index_elements=["doc_id"]))

            await transact(self.engine, body, policy=self.policy, what="seed baseline")

    async def change(self, doc_id: str, fn: Any) -> Any:
        """Read ``doc_id``, verify it, ``out = fn(doc)`` (mutating it), write it back."""

        async def body(c: AsyncConnection) -> Any:
            row = (
                await c.execute(select(docs.c.doc, docs.c.checksum).where(docs.c.doc_id == doc_id))
            ).first()
            if row is None:
                doc: dict[str, Any] = {}
            else:
                if checksum(row.doc) != row.checksum:
                    raise CorruptDocument(doc_id)
                doc = json.loads(row.doc)
            out = fn(doc)
            text = json.dumps(doc)
            ins = ws_schema.insert_for(c.dialect.name, docs).values(
                doc_id=doc_id, doc=text, checksum=checksum(text)
            )
            await c.execute(
                ins.on_conflict_do_update(
                    index_elements=["doc_id"],
                    set_={"doc": ins.excluded.doc, "checksum": ins.excluded.checksum},
                )
            )
            return out

        return await transact(
            self.engine, body, policy=self.policy, what=f"baseline {doc_id}", stats=self.stats
        )

    async def read(self, doc_id: str) -> dict[str, Any]:
        async with self.engine.connect() as c:
            row = (await c.execute(select(docs.c.doc).where(docs.c.doc_id == doc_id))).first()
        return {} if row is None else dict(json.loads(row.doc))

    async def close(self) -> None:
        await self.engine.dispose()


def _apply(op: Operation, doc: dict[str, Any]) -> Result:
    if isinstance(op, PlaceStructure):
        structures = doc.setdefault("structures", [])
        for lo, hi, _sid in structures:
            if boxes_overlap(lo, hi, op.lo, op.hi):
                return Rejected(op.op_id, "overlap")
        structures.append([list(op.lo), list(op.hi), op.structure_id])
        return Committed(op.op_id, 0)
    if isinstance(op, ClaimResource):
        left = doc.setdefault("resources", {}).get(op.resource_id)
        if left is None or left < op.amount:
            return Rejected(op.op_id, "exhausted")
        doc["resources"][op.resource_id] = left - op.amount
        return Committed(op.op_id, 0)
    if isinstance(op, TransferItems):
        inv = doc.setdefault("gold", {})
        have = inv.get(op.from_inventory, 0)
        if have < op.quantity:
            return Rejected(op.op_id, "insufficient")
        inv[op.from_inventory] = have - op.quantity
        inv[op.to_inventory] = inv.get(op.to_inventory, 0) + op.quantity
        return Committed(op.op_id, 0)
    if isinstance(op, (EmitEvent, TransferCreature)):
        events = doc.setdefault("events", [])
        events.append([str(op.op_id), op.op_type, time.time()])
        del events[:-EVENTS_KEPT]
        return Accepted(op.op_id)
    raise TypeError(f"baseline cannot apply {op.op_type}")


class BaselineEngine:
    """`bench.load._server.Engine` over the `NaiveStore`."""

    def __init__(
        self,
        store: NaiveStore,
        layout: WorldLayout,
        index: int,
        servers: list[str],
        rec: Any,
        players: int,
    ) -> None:
        self.store = store
        self.layout = layout
        self.me = servers[index]
        cells = layout.cols * layout.rows
        self._held = np.array([c % len(servers) == index for c in range(cells)])
        self._owners: list[str | None] = [servers[c % len(servers)] for c in range(cells)]
        self.rec = rec
        self.pending = np.zeros((players, 3))
        """Latest offered position of each player; ``dirty`` marks those not yet written."""
        self.dirty = np.zeros(players, bool)
        self.offered = np.zeros(players)
        self.wake = asyncio.Event()
        self.slots = {k: asyncio.Semaphore(WORKERS) for k in ("strong", "causal")}
        self.deadline = Config.from_env().submit_timeout

    def held_cells(self) -> np.ndarray[Any, np.dtype[np.bool_]]:
        return self._held

    def owners(self) -> list[str | None]:
        return self._owners

    def move(self, ids: np.ndarray[Any, Any], positions: np.ndarray[Any, Any]) -> int:
        self.rec.shed["move"] += int(self.dirty[ids].sum())
        self.pending[ids] = positions
        self.dirty[ids] = True
        self.offered[ids] = time.perf_counter()
        self.wake.set()
        return 0  # nothing is applied until a transaction commits (counted by the worker)

    async def move_worker(self) -> None:
        rng = np.random.default_rng()
        while True:
            waiting = np.flatnonzero(self.dirty)
            if waiting.size == 0:
                self.wake.clear()
                await self.wake.wait()
                continue
            eid = int(waiting[rng.integers(0, waiting.size)])
            self.dirty[eid] = False
            pos = [float(v) for v in self.pending[eid]]
            offered = float(self.offered[eid])
            cell = int(self.layout.cell_of(self.pending[eid : eid + 1])[0])

            def put(doc: dict[str, Any], eid: int = eid, pos: Any = pos) -> None:
                doc.setdefault("entities", {})[str(eid)] = pos

            try:
                await self.store.change(region_doc(cell), put)
            except Exception as e:
                self.rec.error("move", e)
                continue
            self.rec.lat("eventual", (time.perf_counter() - offered) * 1000.0)
            self.rec.moves += 1

    async def submit(self, kind: str, op: Operation) -> Result:
        if isinstance(op, TransferItems):
            doc_id = INVENTORY_DOC
        else:
            where = op.where()
            assert where is not None
            doc_id = region_doc(int(self.layout.cell_of(np.array([where]))[0]))
        cls = (
            "strong"
            if isinstance(op, (PlaceStructure, ClaimResource, TransferItems))
            else ("causal")
        )
        # the same deadline as a World's submit (Config.submit_timeout), queueing included
        async with asyncio.timeout(self.deadline), self.slots[cls]:
            result: Result = await self.store.change(doc_id, lambda d: _apply(op, d))
            return result


def initial_docs(
    model: PlayerModel, capacity: dict[str, float], inventories: dict[str, int]
) -> dict[str, dict[str, Any]]:
    """The baseline world at the start: resource nodes in their regions, every inventory."""
    out: dict[str, dict[str, Any]] = {}
    for rid, where in model.resource_nodes():
        cell = int(model.layout.cell_of(np.array([where]))[0])
        out.setdefault(region_doc(cell), {"resources": {}})["resources"][rid] = capacity[rid]
    out[INVENTORY_DOC] = {"gold": dict(inventories)}
    return out


async def serve_baseline(
    args: argparse.Namespace,
    layout: WorldLayout,
    model: PlayerModel,
    mix: Mix,
    rec: Any,
    status_path: Path,
    stop: asyncio.Event,
) -> int:
    from bench.load._server import Driver, _every

    servers = args.servers.split(",")
    store = NaiveStore(args.store)
    engine = BaselineEngine(store, layout, args.index, servers, rec, model.n)
    driver = Driver(engine, rec, model, mix, index=args.index, servers=servers, seed=args.seed)
    driver.local_chains = True
    ready = [False]

    def status() -> None:
        write_json(
            status_path,
            {
                "server_id": args.id,
                "pid": os.getpid(),
                "t": time.time(),
                "ready": ready[0],
                "authoritative": True,
                "bus_connected": True,
                "cells": [int(c) for c in np.flatnonzero(engine.held_cells())],
                "ok": dict(rec.ok),
                "rejected": dict(rec.rejected),
                "errors": sum(sum(c.values()) for c in rec.errors.values()),
                "shed": sum(rec.shed.values()),
                "moves": rec.moves,
                "ticks": len(rec.ticks),
                "overruns": sum(1 for t in rec.ticks[-200:] if t[2] > 0.05),
                "p99": {
                    k: rec.recent_p99(k) for k in ("build", "mine", "trade", "chat", "eventual")
                },
            },
        )

    tasks = [asyncio.create_task(_every(STATUS_INTERVAL, status))]
    tasks += [asyncio.create_task(engine.move_worker()) for _ in range(WORKERS)]
    ready[0] = True
    go = args.run / "go.json"
    while not go.exists() and not stop.is_set():  # noqa: ASYNC110 - a file of another process
        await asyncio.sleep(0.05)
    t0 = float(json.loads(go.read_text())["t0"]) if go.exists() else time.time()
    rec._t0 = lambda: t0
    if time.time() < t0:
        await asyncio.sleep(t0 - time.time())
    runner = asyncio.create_task(driver.run(t0, args.duration))
    stopper = asyncio.create_task(stop.wait())
    await asyncio.wait((runner, stopper), return_when=asyncio.FIRST_COMPLETED)
    stopper.cancel()
    runner.cancel()
    driver.stopping = True
    for t in tasks[1:]:
        t.cancel()
    await driver.drain(10.0)
    for t in tasks:
        t.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await t
    rec.save_arrays()
    write_json(
        args.out / "final.json",
        {
            "server_id": args.id,
            "engine": "baseline",
            **rec.summary(),
            "store": {
                "transactions": store.stats.transactions,
                "retries": store.stats.retries,
                "retry_reasons": dict(store.stats.by_reason),
                "exhausted": store.stats.exhausted,
            },
        },
    )
    status()
    await store.close()
    rec.close()
    return 0


__all__ = ["BaselineEngine", "NaiveStore", "initial_docs", "serve_baseline"]
