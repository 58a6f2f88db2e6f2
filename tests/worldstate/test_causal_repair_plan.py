"""The causal path's pure repair plan (worldstate/causal/_repair.py), without a mesh."""

from __future__ import annotations

from consistency import Gap
from worldstate.causal._repair import RepairPlan, plan_repair


def plan(**kw: object) -> RepairPlan:
    args: dict[str, object] = {
        "me": "gs-1",
        "gaps": {},
        "heads": {},
        "known": lambda o: 0,
        "delivered": lambda o: 0,
        "tail_since": {},
        "retry_at": {},
        "now": 100.0,
        "min_age": 0.5,
        "limit": 1000,
    }
    args.update(kw)
    return plan_repair(**args)  # type: ignore[arg-type]


def gap(origin: str, *holes: range, age: float) -> Gap:
    return Gap(origin, tuple(holes), 100.0 - age, age)


def test_old_gaps_are_fetched_young_ones_wait() -> None:
    p = plan(
        gaps={"gs-2": gap("gs-2", range(3, 6), age=1.0), "gs-3": gap("gs-3", range(1, 2), age=0.1)}
    )
    assert p.wanted == (("gs-2", 3, 5),)
    assert p.retry_at == {"gs-2": 100.5}


def test_own_events_are_never_fetched() -> None:
    p = plan(gaps={"gs-1": gap("gs-1", range(1, 4), age=9.0)}, heads={"gs-1": 9})
    assert p.wanted == ()


def test_an_announced_tail_is_fetched_after_min_age() -> None:
    first = plan(heads={"gs-2": 7}, delivered=lambda o: 4)
    assert first.wanted == () and first.tail_since == {"gs-2": 100.0}
    later = plan(heads={"gs-2": 7}, delivered=lambda o: 4, tail_since={"gs-2": 99.0})
    assert later.wanted == (("gs-2", 5, 7),)
    caught_up = plan(heads={"gs-2": 7}, delivered=lambda o: 7, tail_since={"gs-2": 99.0})
    assert caught_up.wanted == () and caught_up.tail_since == {}


def test_an_origin_is_not_asked_again_before_retry_and_ranges_are_capped() -> None:
    g = {"gs-2": gap("gs-2", range(1, 5001), age=1.0)}
    assert plan(gaps=g, retry_at={"gs-2": 100.2}).wanted == ()
    assert plan(gaps=g, limit=100).wanted == (("gs-2", 1, 100),)
