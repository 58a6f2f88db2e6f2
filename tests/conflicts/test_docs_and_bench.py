"""The README example runs as written, and the benchmark's batch and agreement check work
at a small size (no timing is asserted)."""

from __future__ import annotations

import re
from pathlib import Path

from bench.conflicts_bench import make_batch, run
from conflicts import Resolution, Rule, detect_structure_overlaps

DOC = Path(__file__).resolve().parents[2] / "docs" / "conflicts.md"


def test_docs_example_runs_and_says_what_it_shows() -> None:
    match = re.search(r"```python\n(.*?)```", DOC.read_text(), re.S)
    assert match is not None
    scope: dict[str, object] = {"print": lambda *a, **k: None}
    exec(compile(match.group(1), str(DOC), "exec"), scope)  # our own docs, as written
    res = scope["res"]
    assert isinstance(res, Resolution)
    assert [w.op_id for w in res.winners] == ["03ab…"]
    assert res.outcome_of("9f1c…") == (False, Rule.TIMESTAMP, "03ab…")
    assert res.outcome_of("77de…") == (False, Rule.COMMITTED, None)


def test_bench_batch_overlaps_about_the_requested_share() -> None:
    batch = make_batch(2000, overlap=0.10, seed=1)
    assert len({p.op_id for p in batch}) == 2000
    involved = {op for pair in detect_structure_overlaps(batch) for op in pair}
    assert 0.07 <= len(involved) / 2000 <= 0.13


def test_bench_run_agrees_at_small_size() -> None:
    report = run(n=600, overlap=0.10, repeat=1)
    assert report["same_winners_and_decisions"] is True
    assert report["batch"]["winners"] + report["batch"]["losers"] == 600
    assert report["batch"]["losers"] > 0
