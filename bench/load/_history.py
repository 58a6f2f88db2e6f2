"""What a bench server records, where, and how the orchestrator reads it back.

One directory per server incarnation (``servers/<id>`` or ``servers/<id>.<n>`` after a
restart), written as the run goes, so a server killed with SIGKILL leaves everything up to
its last flush:

- ``acks.log``: one acknowledged strong op per line, written and flushed *after* the ack:
  ``b <structure_id>`` (PlaceStructure committed), ``m <resource_id> <amount>``
  (ClaimResource committed), ``t <quantity>`` (TransferItems committed).
- ``accepted.log``: op ids of the causal events this server had accepted (acknowledged).
- ``deliveries.jsonl``: ``[origin, seq, clock, op_id]`` per causal event delivered here,
  in delivery order; the first line is ``{"floor": clock}`` (what was delivered at start).
- ``leases.jsonl``: ``[t, {morton: epoch}]`` every `LEASE_SAMPLE` s: the leases this server
  believed it could write (``World.holds``).
- ``latency.npz`` (at the end): per class an ``(N, 2)`` array of (seconds since start, ms);
  ``ticks.npy``: (scheduled offset s, duration s, lateness at end s, players moved) per
  tick.
- ``positions.npz`` (at the end): the eventual entity table (ids, positions).
- ``final.json`` (at the end): counters, errors by kind, ``World.stats()``.

The run directory holds ``go.json`` (``{"t0": wall time}``, written by the orchestrator when
all servers are ready) and ``status/<id>.json`` (rewritten every `STATUS_INTERVAL` s).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

LEASE_SAMPLE = 0.1
STATUS_INTERVAL = 0.5
STATUS_FRESH = 3.0
"""A status file older than this is a server that stopped or hangs."""


def write_json(path: Path, doc: Any) -> None:
    """Atomically replace ``path`` with ``doc`` as JSON."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, default=_plain), encoding="utf-8")
    tmp.replace(path)


def _plain(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, (set, frozenset)):
        return sorted(v)
    return str(v)


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def read_status(run: Path) -> dict[str, dict[str, Any]]:
    """Every server's latest status, fresh or not (``age`` added, in seconds)."""
    out: dict[str, dict[str, Any]] = {}
    now = time.time()
    for p in sorted((run / "status").glob("*.json")):
        doc = read_json(p)
        if isinstance(doc, dict):
            doc["age"] = now - float(doc.get("t", 0.0))
            out[p.stem] = doc
    return out


def lines(path: Path) -> Iterator[str]:
    """Complete lines of a log (a torn last line, from a kill, is skipped)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return
    parts = text.split("\n")
    yield from (p for p in parts[:-1] if p)


def json_lines(path: Path) -> Iterator[Any]:
    for line in lines(path):
        try:
            yield json.loads(line)
        except ValueError:
            continue


__all__ = [
    "LEASE_SAMPLE",
    "STATUS_FRESH",
    "STATUS_INTERVAL",
    "json_lines",
    "lines",
    "read_json",
    "read_status",
    "write_json",
]
