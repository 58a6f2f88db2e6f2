"""Pure checkers over the histories a load run records (no I/O): each returns a JSON-able
verdict ``{"ok": bool, ...facts}``.

- `check_conservation`: inventory totals after the run equal those before (transfers only
  move items).
- `check_acknowledged`: every acknowledged strong op is in the store (structures by id);
  `check_claims`: every resource node lost at least what acknowledged claims took, and
  never went below zero.
- `check_single_owner`: no region had two owners at any sample. Servers sample the leases
  they believe they hold (``World.holds``) every 0.1 s on the one machine clock; a
  violation is the same (region, epoch) on two servers, or two servers' belief intervals
  for one region overlapping in time.
- `check_causal`: at every receiver, each origin's events arrive in sequence (no gap, no
  duplicate) and never before an event they depend on (their vector clock), counting from
  what the receiver had delivered when it started; and every event an origin acknowledged
  reached every receiver that ran the whole time.
- `check_convergence`: after the last tick every server holds the same position for every
  entity (last-writer-wins is deterministic, so equal means converged).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

LIST_LIMIT = 20
"""How many examples a failed verdict lists."""

Verdict = dict[str, Any]


def check_conservation(expected: Mapping[str, int], actual: Mapping[str, int]) -> Verdict:
    """Per item, the total over all inventories before (``expected``) and after."""
    items = sorted(set(expected) | set(actual))
    diff = {i: actual.get(i, 0) - expected.get(i, 0) for i in items}
    bad = {i: d for i, d in diff.items() if d != 0}
    return {"ok": not bad, "expected": dict(expected), "actual": dict(actual), "diff": bad}


def check_acknowledged(acked: Iterable[str], present: Iterable[str]) -> Verdict:
    """Every acknowledged id must be present in the store."""
    acked_set = set(acked)
    missing = sorted(acked_set - set(present))
    return {
        "ok": not missing,
        "acknowledged": len(acked_set),
        "missing": len(missing),
        "missing_examples": missing[:LIST_LIMIT],
    }


def check_claims(
    acked: Mapping[str, float],
    capacity: Mapping[str, float],
    remaining: Mapping[str, float],
    *,
    tol: float = 1e-6,
) -> Verdict:
    """``capacity - remaining >= acknowledged claims`` and ``remaining >= 0`` per node.
    (More than acknowledged may be gone: a claim can commit while its caller was killed.)"""
    bad: list[dict[str, Any]] = []
    for rid in sorted(set(acked) | set(capacity)):
        cap, rem, took = capacity.get(rid), remaining.get(rid), acked.get(rid, 0.0)
        if cap is None or rem is None:
            bad.append({"resource": rid, "why": "node missing from the store"})
        elif rem < -tol:
            bad.append({"resource": rid, "why": f"remaining {rem} < 0"})
        elif cap - rem + tol < took:
            bad.append({"resource": rid, "why": f"took {cap - rem}, acknowledged {took}"})
    return {
        "ok": not bad,
        "nodes": len(capacity),
        "acknowledged_amount": float(sum(acked.values())),
        "taken_amount": float(sum(capacity[r] - remaining.get(r, 0.0) for r in capacity)),
        "violations": len(bad),
        "examples": bad[:LIST_LIMIT],
    }


LeaseSample = tuple[float, str, Mapping[int, int]]
"""``(time, server, {region morton: epoch})``: what a server believed it held then."""


def check_single_owner(samples: Iterable[LeaseSample]) -> Verdict:
    spans: dict[tuple[int, int, str], list[float]] = {}
    n = 0
    for t, server, held in samples:
        n += 1
        for region, epoch in held.items():
            span = spans.setdefault((region, epoch, server), [t, t])
            span[0] = min(span[0], t)
            span[1] = max(span[1], t)
    by_region: dict[int, list[tuple[int, str, float, float]]] = defaultdict(list)
    for (region, epoch, server), (a, b) in spans.items():
        by_region[region].append((epoch, server, a, b))
    bad: list[dict[str, Any]] = []
    for region, rows in sorted(by_region.items()):
        for i, (e1, s1, a1, b1) in enumerate(rows):
            for e2, s2, a2, b2 in rows[i + 1 :]:
                if s1 == s2:
                    continue
                if e1 == e2:
                    bad.append({"region": region, "why": f"epoch {e1} held by {s1} and by {s2}"})
                elif a1 <= b2 and a2 <= b1:
                    bad.append(
                        {
                            "region": region,
                            "why": f"{s1} (epoch {e1}, {a1:.3f}..{b1:.3f}) and {s2} "
                            f"(epoch {e2}, {a2:.3f}..{b2:.3f}) overlap",
                        }
                    )
    return {
        "ok": not bad,
        "samples": n,
        "regions": len(by_region),
        "ownership_spans": len(spans),
        "violations": len(bad),
        "examples": bad[:LIST_LIMIT],
    }


Delivery = tuple[str, int, Mapping[str, int]]
"""``(origin, seq, vector clock)`` of one delivered causal event, in delivery order; a
negative ``seq`` marks a floor (``("", -1, delivered vector)``): the receiver delivered up
to there while its deliveries were not recorded (its update stream was re-opened)."""


def check_causal(
    deliveries: Mapping[str, Sequence[Delivery]],
    floors: Mapping[str, Mapping[str, int]] | None = None,
    *,
    accepted: Mapping[str, Iterable[str]] | None = None,
    delivered_ids: Mapping[str, Iterable[str]] | None = None,
    full_receivers: Iterable[str] | None = None,
    origin_of: Mapping[str, str] | None = None,
) -> Verdict:
    """``deliveries[receiver]``: what it delivered, in order; ``floors[receiver]``: its
    delivered vector when it started. ``accepted[origin]`` / ``delivered_ids[receiver]``
    (op ids) check that nothing acknowledged was lost at the ``full_receivers``.
    ``origin_of[receiver]`` is the receiver's own origin id (default: its name; a
    restarted server is a new receiver with the same origin)."""
    me = dict(origin_of or {})
    bad: list[dict[str, Any]] = []
    counts = {"inversions": 0, "gaps": 0, "duplicates": 0}
    total = 0
    for receiver, events in sorted(deliveries.items()):
        own = me.get(receiver, receiver)
        last: dict[str, int] = dict((floors or {}).get(receiver, {}))
        for origin, seq, clock in events:
            if seq < 0:  # a floor: what the receiver delivered while nobody recorded
                for dep, n in clock.items():
                    last[dep] = max(last.get(dep, 0), n)
                continue
            total += 1
            have = last.get(origin, 0)
            if seq <= have:
                counts["duplicates"] += 1
                bad.append({"receiver": receiver, "event": f"{origin}:{seq}", "why": "again"})
                continue
            if seq > have + 1:
                counts["gaps"] += 1
                bad.append(
                    {
                        "receiver": receiver,
                        "event": f"{origin}:{seq}",
                        "why": f"delivered before {origin}:{have + 1}",
                    }
                )
            for dep, n in clock.items():
                if dep in (origin, own):
                    continue
                if last.get(dep, 0) < n:
                    counts["inversions"] += 1
                    bad.append(
                        {
                            "receiver": receiver,
                            "event": f"{origin}:{seq}",
                            "why": f"delivered before its dependency {dep}:{n} "
                            f"(had {last.get(dep, 0)})",
                        }
                    )
                    break
            last[origin] = seq
    lost = 0
    lost_examples: list[str] = []
    if accepted is not None and delivered_ids is not None:
        got = {r: set(ids) for r, ids in delivered_ids.items()}
        receivers = sorted(full_receivers) if full_receivers is not None else sorted(got)
        for origin, ids in sorted(accepted.items()):
            ids = set(ids)
            for r in receivers:
                if me.get(r, r) == origin:
                    continue
                missing = ids - got.get(r, set())
                lost += len(missing)
                lost_examples.extend(f"{origin}->{r}:{m}" for m in sorted(missing)[:3])
    violations = sum(counts.values()) + lost
    return {
        "ok": violations == 0,
        "deliveries": total,
        "receivers": len(deliveries),
        **counts,
        "lost": lost,
        "violations": violations,
        "examples": bad[:LIST_LIMIT],
        "lost_examples": lost_examples[:LIST_LIMIT],
    }


def check_causal_complete(
    final_clocks: Mapping[str, Mapping[str, int]],
    full_receivers: Iterable[str],
    origin_of: Mapping[str, str] | None = None,
) -> Verdict:
    """Every event an origin acknowledged was delivered at every receiver that ran the
    whole time: ``final_clocks[receiver]`` is its delivered vector at the end; an origin's
    own entry (the highest over its incarnations) counts the events it acknowledged."""
    me = dict(origin_of or {})
    emitted: dict[str, int] = {}
    for r, clock in final_clocks.items():
        o = me.get(r, r)
        emitted[o] = max(emitted.get(o, 0), clock.get(o, 0))
    lost = 0
    examples: list[str] = []
    for r in sorted(full_receivers):
        clock = final_clocks.get(r, {})
        for o, n in sorted(emitted.items()):
            if o == me.get(r, r):
                continue
            missing = n - clock.get(o, 0)
            if missing > 0:
                lost += missing
                examples.append(f"{r} lacks {o}:{clock.get(o, 0) + 1}..{n}")
    return {
        "ok": lost == 0,
        "receivers": len(list(full_receivers)),
        "acknowledged": sum(emitted.values()),
        "lost": lost,
        "examples": examples[:LIST_LIMIT],
    }


Table = tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]
"""A server's eventual entity table: ids and ``(N, 3)`` positions."""


def check_convergence(tables: Mapping[str, Table]) -> Verdict:
    """Every server holds every entity any server holds, at the same position."""
    if not tables:
        return {"ok": True, "servers": 0, "entities": 0, "mismatched": 0, "missing": 0}
    all_ids = np.unique(np.concatenate([ids for ids, _ in tables.values()]))
    ref: tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]] | None = None
    mismatched: set[int] = set()
    missing = 0
    examples: list[str] = []
    for server, (ids, pos) in sorted(tables.items()):
        missing_here = np.setdiff1d(all_ids, ids, assume_unique=False)
        missing += int(missing_here.size)
        examples.extend(f"{server} lacks entity {int(i)}" for i in missing_here[:3])
        order = np.argsort(ids)
        ids_s, pos_s = ids[order], pos[order]
        if ref is None:
            ref = (ids_s, pos_s)
            continue
        common, ia, ib = np.intersect1d(ref[0], ids_s, return_indices=True)
        diff = (ref[1][ia] != pos_s[ib]).any(axis=1)
        for i in common[diff][:3]:
            examples.append(f"{server} disagrees on entity {int(i)}")
        mismatched.update(int(i) for i in common[diff])
    return {
        "ok": not mismatched and missing == 0,
        "servers": len(tables),
        "entities": int(all_ids.size),
        "mismatched": len(mismatched),
        "missing": missing,
        "examples": examples[:LIST_LIMIT],
    }


__all__ = [
    "Delivery",
    "LeaseSample",
    "Table",
    "Verdict",
    "check_acknowledged",
    "check_causal",
    "check_causal_complete",
    "check_claims",
    "check_conservation",
    "check_convergence",
    "check_single_owner",
]
