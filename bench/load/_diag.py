"""Where a strong op's time goes, for one bench server (``WORLDSTATE_BENCH_DIAG=1``).

Wraps the strong path's internals (no product change) and records, into the server's
``latency.npz`` under ``diag.*`` kinds (the report ignores them; read them with numpy):

- ``diag.queue``: submit into an owned pipeline → taken into a group (the gathering window
  plus any wait behind a group in flight);
- ``diag.commit``: one group's `commit_group` (the transaction and its retries);
- ``diag.group_ops``: ops per group (a count, not ms);
- ``diag.forward``: a forwarded op's round trip at the sender (`Forwarder.forward`);
- ``diag.serve``: the owner's share of it (request decoded → its outcome);
- ``diag.loop_lag``: how late a 10 ms timer fires (the event loop's queue);
- ``diag.tx.connect`` / ``diag.tx.body`` / ``diag.tx.commit``: every store transaction's
  pool checkout + BEGIN, its body (statements), its COMMIT;
- ``diag.retry.<sqlstate>.<transaction>.<why>`` (counts, value 1): each retried store
  transaction, by what it was (`Store.run`'s description, digits as N) and why (a
  concurrent ``update`` of one row, or PostgreSQL's SSI reason code for a read/write cycle);
- ``diag.attempt.<exception>`` (counts): a region group's attempt that ended early
  (``NearMoved``, ``StaleState``, …) and was decided again.
"""

from __future__ import annotations

import asyncio
import contextvars
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

KINDS = ("queue", "commit", "group_ops", "forward", "serve", "loop_lag")


def _timed(fn: Callable[..., Awaitable[Any]], kind: str, lat: Callable[[str, float], None]) -> Any:
    """``fn`` (a method), recording each call's wall time in ms as ``kind`` (typed Any: it
    replaces methods of several signatures)."""

    async def timed(self: Any, *args: Any, **kwargs: Any) -> Any:
        t = time.perf_counter()
        try:
            return await fn(self, *args, **kwargs)
        finally:
            lat(kind, (time.perf_counter() - t) * 1000.0)

    return timed


def install(lat: Callable[[str, float], None]) -> None:
    """Patch the strong path's classes of this process to report into ``lat``."""
    import orjson

    from worldstate.protocol import _rpc
    from worldstate.store import retry
    from worldstate.store.engine import READ_OPTION
    from worldstate.strong import _forward, _path, _pipeline

    queued: dict[Any, float] = {}
    submit0 = _pipeline.Pipeline.submit
    take0 = _pipeline.Pipeline.take
    commit0 = _pipeline.GroupCommitter._commit
    forward0 = _forward.Forwarder.forward
    serve0 = _path.StrongPath._serve

    def submit(self: Any, op: Any, digest: str) -> Any:
        e = submit0(self, op, digest)
        queued[e] = time.perf_counter()
        return e

    def take(self: Any, n: int) -> Any:
        out = take0(self, n)
        now = time.perf_counter()
        for e in out:
            t = queued.pop(e, None)
            if t is not None:
                lat("diag.queue", (now - t) * 1000.0)
        return out

    async def commit(self: Any, group: Any) -> None:
        t = time.perf_counter()
        try:
            await commit0(self, group)
        finally:
            lat("diag.commit", (time.perf_counter() - t) * 1000.0)
            lat("diag.group_ops", float(sum(len(v) for v in group.values())))

    forward = _timed(forward0, "diag.forward", lat)
    serve = _timed(serve0, "diag.serve", lat)

    async def transaction(engine: Any, body: Any, read: bool) -> Any:
        t0 = time.perf_counter()
        async with engine.connect() as conn:
            if read:
                conn = await conn.execution_options(**{READ_OPTION: True})
            tx = conn.begin()
            await tx.start()
            t1 = time.perf_counter()
            lat("diag.tx.connect", (t1 - t0) * 1000.0)
            try:
                out = await body(conn)
            except BaseException:
                await tx.rollback()
                raise
            t2 = time.perf_counter()
            lat("diag.tx.body", (t2 - t1) * 1000.0)
            await tx.commit()
            lat("diag.tx.commit", (time.perf_counter() - t2) * 1000.0)
            return out

    call0 = _rpc.Rpc.call
    on_request0 = _forward.Forwarder._on_request

    async def call(self: Any, topic: str, request: Any, timeout: float, **kw: Any) -> Any:
        return await call0(self, topic, {**request, "ts": time.time()}, timeout, **kw)

    def on_request(self: Any, msg: Any) -> None:
        try:
            ts = orjson.loads(msg.payload).get("ts")
        except Exception:
            ts = None
        if isinstance(ts, float):
            lat("diag.fwd.request_transit", (time.time() - ts) * 1000.0)
        on_request0(self, msg)

    from worldstate.eventual import _path as ev_path
    from worldstate.strong import _regions

    snap0 = ev_path.EventualPath.snapshot_region
    load0 = _regions.RegionCommitter.load

    snapshot_region = _timed(snap0, "diag.snapshot", lat)
    load = _timed(load0, "diag.reload", lat)

    # which transactions retry (40001 …) and why group attempts end early: counts (value 1)
    from worldstate.store import Store

    what_var: contextvars.ContextVar[str] = contextvars.ContextVar("diag_what", default="?")
    run0 = Store.run
    reason0 = retry.retry_reason
    tx0 = _regions.RegionCommitter._transaction

    async def run(self: Any, body: Any, what: str, **kw: Any) -> Any:
        token = what_var.set(re.sub(r"[0-9]+", "N", what)[:40])
        try:
            return await run0(self, body, what, **kw)
        finally:
            what_var.reset(token)

    def retry_reason(err: BaseException) -> str | None:
        reason = reason0(err)
        if reason is not None:
            text = str(getattr(err, "orig", err))
            why = "update" if "concurrent update" in text else "rw"
            m = re.search(r"Reason code: ([^.]*)", text)
            if m:
                why += ":" + m.group(1)[:50]
            lat(f"diag.retry.{reason}.{what_var.get()}.{why}", 1.0)
        return reason

    async def region_tx(self: Any, *args: Any, **kw: Any) -> Any:
        try:
            return await tx0(self, *args, **kw)
        except Exception as e:
            lat(f"diag.attempt.{type(e).__name__}", 1.0)
            raise

    patches: list[tuple[Any, str, Any]] = [
        (Store, "run", run),
        (retry, "retry_reason", retry_reason),
        (retry, "_transaction", transaction),
        (_regions.RegionCommitter, "_transaction", region_tx),
        (_regions.RegionCommitter, "load", load),
        (ev_path.EventualPath, "snapshot_region", snapshot_region),
        (_rpc.Rpc, "call", call),
        (_forward.Forwarder, "_on_request", on_request),
        (_forward.Forwarder, "forward", forward),
        (_pipeline.Pipeline, "submit", submit),
        (_pipeline.Pipeline, "take", take),
        (_pipeline.GroupCommitter, "_commit", commit),
        (_path.StrongPath, "_serve", serve),
    ]
    for owner, name, fn in patches:
        setattr(owner, name, fn)


async def loop_lag(lat: Callable[[str, float], None], period: float = 0.01) -> None:
    loop = asyncio.get_running_loop()
    while True:
        t = loop.time()
        await asyncio.sleep(period)
        lat("diag.loop_lag", (loop.time() - t - period) * 1000.0)
