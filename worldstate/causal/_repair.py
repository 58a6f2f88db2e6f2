"""Pure repair planning for the causal path: which ranges of which origins' events to fetch
from the durable log, given what the buffer misses and what heads were announced.

The causal path's repair loop calls `plan_repair` with its state and carries out the plan
(one store read); no I/O, clock or randomness here, so the rule is unit-tested on its own.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from consistency import Gap

__all__ = ["RepairPlan", "plan_repair"]


@dataclass(frozen=True, slots=True)
class RepairPlan:
    """``wanted``: (origin, first seq, last seq) ranges to read, in origin order;
    ``tail_since`` / ``retry_at``: the path's timers after this round."""

    wanted: tuple[tuple[str, int, int], ...]
    tail_since: dict[str, float] = field(default_factory=dict)
    retry_at: dict[str, float] = field(default_factory=dict)


def plan_repair(
    *,
    me: str,
    gaps: Mapping[str, Gap],
    heads: Mapping[str, int],
    known: Callable[[str], int],
    delivered: Callable[[str], int],
    tail_since: Mapping[str, float],
    retry_at: Mapping[str, float],
    now: float,
    min_age: float,
    limit: int,
) -> RepairPlan:
    """One round's plan.

    - A gap (events known to exist, neither delivered nor buffered) is fetched once it has
      persisted for ``min_age`` seconds.
    - A tail (an origin announced a head beyond anything seen of it) is fetched once it has
      been announced for ``min_age`` seconds; ``tail_since`` remembers since when.
    - An origin is asked again at most every ``min_age`` seconds (``retry_at``), and a range
      holds at most ``limit`` events (the rest comes in later rounds).
    - This server's own events are never fetched.

    ``known(origin)`` / ``delivered(origin)``: the highest seq of ``origin`` known to exist /
    delivered here (0 for none).
    """
    tails = dict(tail_since)
    retry = dict(retry_at)
    wanted: list[tuple[str, int, int]] = []
    for origin in sorted(gaps.keys() | heads.keys()):
        if origin == me:
            continue
        ranges: list[tuple[int, int]] = []
        gap = gaps.get(origin)
        if gap is not None and gap.age >= min_age:
            ranges.extend((r.start, r.stop - 1) for r in gap.holes)
        seen = max(known(origin), delivered(origin))
        head = heads.get(origin, 0)
        if head > seen:
            if now - tails.setdefault(origin, now) >= min_age:
                ranges.append((seen + 1, head))
        else:
            tails.pop(origin, None)
        if not ranges or now < retry.get(origin, 0.0):
            continue
        retry[origin] = now + min_age
        wanted.extend((origin, lo, min(hi, lo + limit - 1)) for lo, hi in ranges)
    return RepairPlan(tuple(wanted), tails, retry)
