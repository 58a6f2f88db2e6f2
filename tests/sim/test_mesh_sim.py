"""Deterministic simulation of the mesh (see docs/simulation.md).

By default 300 seeds run. ``WORLDSTATE_SIM_SEEDS`` picks others: a
count (``5000``: seeds 0..4999) or a range (``5000:10000``). One seed is one test, so a
failure names it; ``pytest tests/sim -k seed00017`` or
``python -m tests.sim.harness --seed 17 --trace`` replays it exactly.
"""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.sim.harness import (
    EXPECTED_VIOLATION,
    INVARIANTS,
    InvariantViolation,
    RunResult,
    Simulation,
    first_violation,
    main,
    run_seed,
    seed_id,
)
from tests.sim.model import (
    BROKEN_VARIANTS,
    COORDINATOR_KEY,
    Commit,
    Committed,
    Fenced,
    Lease,
    RegionOwned,
    SimConfig,
    SimStore,
)

ROOT = Path(__file__).resolve().parents[2]


def _seeds() -> range:
    text = os.environ.get("WORLDSTATE_SIM_SEEDS", "300").strip()
    lo, sep, hi = text.partition(":")
    return range(int(lo), int(hi)) if sep else range(int(lo))


_results: dict[int, RunResult] = {}


def _result(seed: int) -> RunResult:
    """The run of a default seed, reused from `test_seed` when it already ran."""
    if seed not in _results:
        _results[seed] = run_seed(seed)
    return _results[seed]


@pytest.mark.parametrize("seed", [pytest.param(s, id=seed_id(s)) for s in _seeds()])
def test_seed(seed: int) -> None:
    """Every invariant holds for this seed (`run_seed` raises with a replayable trace)."""
    _results[seed] = run_seed(seed)


# -- reproducibility ---------------------------------------------------------------------


def test_same_seed_same_trace() -> None:
    a, b = _result(11), run_seed(11)
    assert a.trace_hash == b.trace_hash
    assert a.stats == b.stats
    assert a.events == b.events > 1000
    assert _result(12).trace_hash != a.trace_hash


def test_same_seed_same_trace_in_another_process() -> None:
    """Nothing depends on the interpreter's string-hash seed (set iteration order)."""
    expected = _result(5).trace_hash
    hash_seed = "4242" if os.environ.get("PYTHONHASHSEED") != "4242" else "1"
    out = subprocess.run(
        [sys.executable, "-m", "tests.sim.harness", "--seed", "5"],
        cwd=ROOT,
        env={**os.environ, "PYTHONHASHSEED": hash_seed},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert f"trace {expected}" in out


def test_a_failing_seed_fails_the_same_way_again() -> None:
    first = first_violation("demoted-commits", range(100))
    assert first is not None
    with pytest.raises(InvariantViolation) as again:
        run_seed(first.seed, broken=("demoted-commits",))
    assert (again.value.invariant, again.value.at, again.value.detail) == (
        first.invariant,
        first.at,
        first.detail,
    )
    assert again.value.tail == first.tail


# -- the harness can fail ----------------------------------------------------------------


@pytest.mark.parametrize("variant", sorted(BROKEN_VARIANTS))
def test_broken_variant_is_caught(variant: str) -> None:
    """Each deliberately broken variant trips its invariant within the first few dozen
    seeds: proof that the invariants are not vacuous."""
    found = first_violation(variant, range(60))
    assert found is not None, f"{variant}: no violation in seeds 0..59"
    assert found.invariant == EXPECTED_VIOLATION[variant], str(found)
    text = str(found)
    assert f"seed {found.seed}" in text
    assert f"--seed {found.seed} --broken {variant}" in text
    assert len(found.tail) > 10


def test_violation_names_seed_invariant_and_replay() -> None:
    err = InvariantViolation(42, frozenset(), "fencing", 3.25, "two writers", ["a", "b"])
    text = str(err)
    assert "seed 42" in text and "'fencing'" in text and "t=3.2500" in text
    assert "python -m tests.sim.harness --seed 42" in text
    assert f"pytest tests/sim -k {seed_id(42)}" in text
    assert INVARIANTS["fencing"] in text
    assert text.rstrip().endswith("b")


# -- the runs exercise what they claim to ------------------------------------------------


def test_runs_exercise_the_faults() -> None:
    totals: dict[str, int] = {}
    for seed in range(12):
        for key, value in _result(seed).stats.items():
            totals[key] = totals.get(key, 0) + value
    for key in (
        "partitions",
        "dropped",
        "dup",
        "slow",
        "stall",
        "cut",
        "demotions",
        "promotions",
        "takeovers",
        "ambiguous",
        "lost_leases",
        "acked",
        "merges",
        "eventual_applied",
    ):
        assert totals.get(key, 0) > 0, f"no {key} in 12 seeds: {totals}"
    assert totals["servers"] > 3 * 12  # some seeds have joins


def test_quiet_phase_heals_and_converges() -> None:
    sim = Simulation(3)
    sim.run()
    live = [s for s in sim.servers.values() if s.active]
    assert len(live) >= 2
    assert all(s.authoritative for s in live)
    assert all(len(s.table) > 0 and s.table == live[0].table for s in live)


# -- the model's store mirrors worldstate/store/leases.py and check_fence -----------------


def test_store_lease_rules() -> None:
    st = SimStore(frozenset({"a", "b"}))
    first = st.acquire("r", "a", 3.0, now=10.0)
    assert first == Lease("r", "a", 1, 13.0)
    assert st.acquire("r", "b", 3.0, now=12.9) == RegionOwned("r", "a", 1, 13.0)
    assert st.acquire("r", "a", 3.0, now=11.0) == Lease("r", "a", 1, 14.0)  # renewal
    assert st.renew("r", "a", 2, 3.0, now=11.0) == Fenced("r", 2, 1, "a")
    assert st.renew("r", "b", 1, 3.0, now=11.0) == Fenced("r", 1, 1, "a")
    assert st.renew("r", "a", 1, 3.0, now=20.0) == Lease("r", "a", 1, 23.0)  # expired, kept
    taken = st.acquire("r", "b", 3.0, now=23.0)  # expired at 23 by b's clock
    assert taken == Lease("r", "b", 2, 26.0)
    assert st.renew("r", "a", 1, 3.0, now=23.5) == Fenced("r", 1, 2, "b")
    assert st.release("r", "a", 1) is False
    assert st.release("r", "b", 2) is True
    assert st.leases["r"] == Lease("r", "b", 2, 0.0)
    assert st.acquire("r", "b", 3.0, now=24.0) == Lease("r", "b", 3, 27.0)  # after release
    assert st.renew("x", "a", 1, 3.0, now=0.0) == Fenced("x", 1, 0, None)


def test_store_renewal_never_shortens_unless_mirroring_todays_rule() -> None:
    fixed = SimStore(frozenset({"a"}))
    today = SimStore(frozenset({"a"}), monotonic_renewal=False)
    for st in (fixed, today):
        st.acquire("r", "a", 3.0, now=10.0)
        st.renew("r", "a", 1, 3.0, now=12.0)  # until 15
    # A renewal that was sent at 10.5 but reaches the store only now (stalled, retried):
    assert fixed.renew("r", "a", 1, 3.0, now=10.5) == Lease("r", "a", 1, 15.0)
    assert today.renew("r", "a", 1, 3.0, now=10.5) == Lease("r", "a", 1, 13.5)
    assert today.acquire("r", "a", 3.0, now=10.2) == Lease("r", "a", 1, 13.2)


def test_store_fencing_and_exactly_once() -> None:
    st = SimStore(frozenset({"a", "b"}))
    st.acquire("r", "a", 3.0, now=0.0)

    def commit(op: str, writer: str, epoch: int, now: float) -> object:
        return st.commit(Commit(op, "r", epoch, writer, now, 1, 1))

    assert commit("op1", "a", 1, 1.0) == Committed("op1", "r", 1, False)
    assert commit("op1", "a", 1, 1.5) == Committed("op1", "r", 1, True)  # retry: recorded
    assert commit("op2", "b", 1, 1.0) == RegionOwned("r", "a", 1, 3.0)
    assert commit("op3", "a", 0, 1.0) == Fenced("r", 0, 1, "a")
    st.acquire("r", "b", 3.0, now=3.0)
    assert commit("op4", "a", 1, 3.5) == Fenced("r", 1, 2, "b")  # a stale owner, fenced
    assert commit("op5", "b", 2, 3.5) == Committed("op5", "r", 2, False)
    assert st.applied == {"op1": 1, "op5": 1}
    assert st.region_total == {"r": 2}
    loose = SimStore(frozenset({"a"}), fencing=False, dedup=False)
    loose.commit(Commit("x", "r", 7, "a", 0.0, 1, 1))
    loose.commit(Commit("x", "r", 7, "a", 0.0, 1, 2))
    assert loose.applied == {"x": 2}


def test_store_membership_is_a_fenced_conditional_write() -> None:
    from tests.sim.model import MembershipRecord, VersionConflict, WriteMembership

    st = SimStore(frozenset({"a", "b"}))
    st.acquire(COORDINATOR_KEY, "a", 3.0, now=0.0)
    grow = frozenset({"a", "b", "c"})
    assert st.write_membership(WriteMembership(grow, 1, 1, "a", 1.0)) == MembershipRecord(2, grow)
    assert st.write_membership(WriteMembership(grow, 1, 1, "a", 1.0)) == VersionConflict(
        MembershipRecord(2, grow)
    )
    assert isinstance(st.write_membership(WriteMembership(grow, 2, 1, "b", 1.0)), RegionOwned)
    assert isinstance(st.write_membership(WriteMembership(grow, 2, 0, "a", 1.0)), Fenced)
    assert st.list_leases(1.0).rows == ()


# -- configuration and CLI ---------------------------------------------------------------


def test_config_refuses_skew_the_lease_margin_cannot_cover() -> None:
    SimConfig(max_skew=0.4, lease_margin=0.8)
    with pytest.raises(ValueError, match="2 \\* max_skew <= lease_margin"):
        SimConfig(max_skew=0.5, lease_margin=0.8)
    SimConfig(max_skew=0.5, lease_margin=0.8, allow_unsafe_skew=True)
    with pytest.raises(ValueError, match="renew_interval"):
        SimConfig(renew_interval=2.5)
    with pytest.raises(ValueError, match="unknown broken"):
        Simulation(0, broken=("no-such-bug",))


def test_cli_replays_a_seed(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--seed", "2"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"seed 2: ok, trace [0-9a-f]{32}", out)
    assert f"trace {_result(2).trace_hash}" in out


def test_cli_reports_a_violation(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--seed", "0", "--broken", "arrival-order-eventual", "--tail", "5"]) == 1
    err = capsys.readouterr().err
    assert "invariant 'convergence' violated" in err
    assert "--broken arrival-order-eventual" in err


def test_cli_trace_prints_every_event(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--seed", "1", "--trace"]) == 0
    lines = capsys.readouterr().out.splitlines()
    times = [float(line.split()[0]) for line in lines[1:-2] if line[:1].isdigit()]
    assert len(times) > 1000
    assert times == sorted(times)
    assert all(math.isfinite(t) for t in times)
