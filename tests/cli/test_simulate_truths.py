"""`worldstate simulate` says true things: what it cannot measure is omitted (not printed as
0.0), inventory underflows are named as such (not "conflicts"), and the partition phase
names the servers that ran it."""

from __future__ import annotations

from worldstate.demo._load import ClassReport
from worldstate.demo._simulation import SimulationReport


def test_unmeasured_numbers_are_omitted() -> None:
    ev = ClassReport(ops=100, committed=100, seconds=1.0)  # moves: not timed per op
    summary = ev.summary()
    assert summary["p50_ms"] is None and summary["p99_ms"] is None
    r = SimulationReport(settings={}, store="sqlite", servers=["gs-1"])
    r.classes = {"eventual": summary | {"rows_applied_at_receivers": 0}}
    text = "\n".join(r.lines())
    assert "p50" not in text.split("eventual", 1)[1].splitlines()[0]
    assert "hit rate" not in text and "not measured" in text  # no cache lookups happened


def test_underflows_are_not_conflicts() -> None:
    tr = ClassReport(
        ops=3, committed=1, rejected=0, underflows=2, seconds=1.0, latencies_ms=[1.0, 2.0, 3.0]
    )
    r = SimulationReport(settings={}, store="sqlite", servers=["gs-1"])
    r.classes = {"trades": tr.summary() | {"gold_total": 10, "gold_expected": 10}}
    line = next(ln for ln in r.lines() if ln.startswith("trades"))
    assert "0 rejected (conflicts)" in line
    assert "2 refused (inventory would go below zero)" in line


def test_partition_lines_name_the_servers_that_ran() -> None:
    r = SimulationReport(settings={}, store="sqlite", servers=["gs-1", "gs-2", "gs-3"])
    r.partition = {
        "servers": 3,
        "server_ids": ["ps-1", "ps-2", "ps-3"],
        "minority": ["ps-3"],
        "split": "2|1",
        "demote_s": 0.5,
        "reassign_s": 2.0,
        "minority_regions": 4,
        "refused_on_minority": 3,
        "committed_on_majority": 9,
        "heal_s": 0.1,
        "rebalanced": 1,
        "acknowledged": 12,
        "lost": 0,
    }
    text = "\n".join(r.lines())
    assert "servers ps-1, ps-2, ps-3" in text and "minority ps-3" in text
    assert "2|1 split" in text and "in the main phase" in text
