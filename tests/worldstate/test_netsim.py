"""The sans-I/O fault network (`worldstate.bus.netsim`): driven by explicit times, no loop."""

from __future__ import annotations

import random

import pytest

from worldstate import ValidationError
from worldstate.bus.netsim import FaultNetwork, Faults


def _drain(net: FaultNetwork[int], until: float, step: float = 0.01) -> list[tuple[str, int]]:
    out: list[tuple[str, int]] = []
    t = 0.0
    while t <= until:
        out += net.due(t)
        t += step
    return out


def test_no_faults_is_direct_and_in_order() -> None:
    net: FaultNetwork[int] = FaultNetwork()
    assert net.direct
    for i in range(5):
        net.send("a", "b", i, 0.0)
    assert net.due(0.0) == [("b", i) for i in range(5)]
    assert net.direct and net.in_flight == 0


def test_partition_and_one_way_block() -> None:
    net: FaultNetwork[int] = FaultNetwork()
    net.partition([{"a"}, {"b", "c"}])
    assert not net.admit("a", "b") and not net.admit("b", "a")
    assert net.admit("b", "c") and net.can_reach("x", "y")  # unlisted ids: one more group
    net.heal()
    net.block("a", "b")
    assert not net.can_reach("a", "b") and net.can_reach("b", "a")
    assert net.stats.partitioned == 2
    net.heal()
    assert net.can_reach("a", "b")
    with pytest.raises(ValidationError):
        net.partition([{"a"}, {"a"}])
    with pytest.raises(ValidationError):
        net.partition(["ab"])


def test_delay_keeps_each_link_fifo() -> None:
    net: FaultNetwork[int] = FaultNetwork()
    net.set_faults(Faults(delay=(0.0, 0.5), seed=3))
    for i in range(50):
        net.send("a", "b", i, i * 0.001)
    got = [item for _, item in _drain(net, 2.0)]
    assert got == sorted(got)
    assert net.in_flight == 0 and net.next_due() is None


def test_reorder_releases_after_the_next_message_or_the_window() -> None:
    net: FaultNetwork[int] = FaultNetwork()
    net.set_faults(Faults(reorder=1.0, reorder_window=0.1))
    net.send("a", "b", 1, 0.0)
    assert net.due(0.0) == [] and net.next_due() == pytest.approx(0.1)
    net.send("a", "b", 2, 0.0)  # 2 goes first, then the held 1
    assert net.due(0.0) == [("b", 2), ("b", 1)]
    net.send("a", "b", 3, 1.0)
    assert net.due(1.05) == []
    assert net.due(1.1) == [("b", 3)]
    assert net.stats.reordered == 2


def test_drop_and_duplicate_are_counted() -> None:
    net: FaultNetwork[int] = FaultNetwork()
    net.set_faults(Faults(drop=1.0))
    net.send("a", "b", 1, 0.0)
    assert net.due(0.0) == [] and net.stats.dropped == 1
    net.set_faults(Faults(duplicate=1.0))
    net.send("a", "b", 2, 0.0)
    assert net.due(0.0) == [("b", 2), ("b", 2)] and net.stats.duplicated == 1


def test_same_rng_same_deliveries() -> None:
    def run(seed: int) -> list[tuple[str, int]]:
        net: FaultNetwork[int] = FaultNetwork()
        net.set_faults(
            Faults(drop=0.2, duplicate=0.2, reorder=0.2, delay=(0.0, 0.2)),
            rng=random.Random(seed),
        )
        for i in range(200):
            net.send("a", "bc"[i % 2], i, i * 0.003)
        return _drain(net, 3.0)

    assert run(7) == run(7)
    assert run(7) != run(8)


def test_forget_drops_what_is_on_the_way() -> None:
    net: FaultNetwork[int] = FaultNetwork()
    net.set_faults(Faults(delay=(1.0, 1.0)))
    net.send("a", "b", 1, 0.0)
    net.send("c", "a", 2, 0.0)
    net.send("c", "b", 3, 0.0)
    net.forget("a")
    assert net.due(5.0) == [("b", 3)]


def test_faults_are_validated() -> None:
    for bad in ({"drop": 1.5}, {"delay": (1.0, 0.5)}, {"reorder_window": 0.0}, {"seed": 1.5}):
        with pytest.raises(ValidationError):
            Faults(**bad)
