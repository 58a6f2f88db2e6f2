"""Deterministic simulation of the mesh over the REAL node core (see docs/simulation.md).

By default `DEFAULT_SEEDS` seeds run (CI budget: well under a minute). ``WORLDSTATE_SIM_SEEDS``
picks others: a count (``500``: seeds 0..499) or a range (``500:1000``). One seed is one
test, so a failure names it; ``pytest tests/sim -k seed00017`` or
``python -m tests.sim.harness --seed 17 --trace`` replays it exactly.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

import worldstate
from tests.sim.harness import (
    BROKEN_VARIANTS,
    INVARIANTS,
    InvariantViolation,
    RunResult,
    SimConfig,
    first_violation,
    main,
    run_seed,
    seed_id,
)
from tests.sim.store_sim import SimStore
from tests.sim.vloop import Idle, VirtualTimeLoop, run_virtual
from worldstate.bus import MemoryBus, SignedBus
from worldstate.mesh import MeshCoordinator
from worldstate.store import Store

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_SEEDS = "6"


def _seeds() -> range:
    text = os.environ.get("WORLDSTATE_SIM_SEEDS", DEFAULT_SEEDS).strip()
    lo, sep, hi = text.partition(":")
    return range(int(lo), int(hi)) if sep else range(int(lo))


_results: dict[int, RunResult] = {}


def _result(seed: int) -> RunResult:
    """The run of a seed, reused when `test_seed` already ran it."""
    if seed not in _results:
        _results[seed] = run_seed(seed)
    return _results[seed]


@pytest.mark.parametrize("seed", [pytest.param(s, id=seed_id(s)) for s in _seeds()])
def test_seed(seed: int) -> None:
    """Every invariant holds for this seed (`run_seed` raises with a replayable trace)."""
    _results[seed] = run_seed(seed)


# -- it is the product that runs ----------------------------------------------------------


def test_the_simulation_drives_worldstate_classes() -> None:
    """The servers, coordinators, store and bus are worldstate's own classes (not a model),
    and worldstate's own counters show its authority, membership, placement, hand-off and
    strong pipeline code ran."""
    r = _result(0)
    assert r.servers and all(type(s) is worldstate.World for s in r.servers)
    assert r.coordinators and all(type(c) is MeshCoordinator for c in r.coordinators)
    for server in r.servers:
        assert isinstance(server.store, SimStore) and isinstance(server.store, Store)
        assert type(server.store).run is not Store.run  # only the network side is added
        # the real signing layer over the in-process bus (driven by the netsim fault network)
        assert isinstance(server.bus, SignedBus) and isinstance(server.bus.inner, MemoryBus)
    assert worldstate.World.__module__.startswith("worldstate.")
    ev = r.evidence
    assert ev["strong-group-commits"] > 0, ev
    assert ev["placements"] > 0, ev
    assert ev["coordinator-events"] > 0, ev
    assert r.stats["strong-committed"] > 0 and r.stats["epochs"] > len(r.servers)
    assert sum(_result(s).evidence["demotions"] for s in (0, 1, 2)) > 0
    assert sum(_result(s).evidence["handoffs"] for s in (0, 1, 2)) > 0


# -- reproducibility ----------------------------------------------------------------------


def test_same_seed_same_trace() -> None:
    a, b = _result(1), run_seed(1)
    assert a.trace_hash == b.trace_hash
    assert a.stats == b.stats
    assert a.events == b.events > 100
    assert _result(2).trace_hash != a.trace_hash


def test_same_seed_same_trace_in_another_process() -> None:
    """Nothing depends on the interpreter's string-hash seed (set iteration order)."""
    code = "from tests.sim.harness import run_seed; print(run_seed(1).trace_hash)"
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == _result(1).trace_hash


# -- the harness can fail -----------------------------------------------------------------


@pytest.mark.parametrize("variant", sorted(BROKEN_VARIANTS))
def test_broken_variant_is_caught(variant: str) -> None:
    """Each deliberately broken variant of the REAL code trips its invariant."""
    expected = BROKEN_VARIANTS[variant][1]
    seeds = [int(s) for s in os.environ.get(f"WORLDSTATE_SIM_{variant.upper()}", "").split()]
    found = first_violation(seeds or BROKEN_SEEDS[variant], broken=variant)
    assert found is not None, f"{variant} was not caught"
    assert found.invariant in expected, str(found)


BROKEN_SEEDS: dict[str, list[int]] = {
    "no-fencing": [10, 13, 35, 38],
    "never-demote": [1, 0, 2, 3],
    "ignore-expiry": [0, 1, 2, 3],
}
"""Seeds known to catch each variant first (then a few more): keeps CI fast."""


def test_violation_names_the_seed_and_the_replay() -> None:
    seed = BROKEN_SEEDS["no-fencing"][0]
    found = first_violation([seed], broken="no-fencing")
    assert isinstance(found, InvariantViolation)
    text = str(found)
    assert f"--seed {seed} --trace --broken no-fencing" in text
    assert seed_id(seed) in text and found.invariant in INVARIANTS
    assert found.trace


def test_config_refuses_skew_beyond_the_margin() -> None:
    with pytest.raises(ValueError, match="max_skew"):
        SimConfig(max_skew=0.5, clock_skew_margin=0.8)


def test_unknown_variant_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown broken variant"):
        run_seed(0, broken="nope")


def test_cli_replays_a_failing_seed(capsys: pytest.CaptureFixture[str]) -> None:
    seed = BROKEN_SEEDS["no-fencing"][0]
    assert main(["--seed", str(seed), "--broken", "no-fencing"]) == 1
    err = capsys.readouterr().err
    assert "invariant 'fencing' violated" in err and f"--seed {seed} --trace" in err


# -- the virtual-time loop ----------------------------------------------------------------


def test_virtual_loop_jumps_to_the_next_timer() -> None:
    async def body() -> tuple[float, float, int]:
        loop = asyncio.get_running_loop()
        assert isinstance(loop, VirtualTimeLoop)
        start = loop.time()
        await asyncio.sleep(3600)  # an hour of virtual time, nothing slept
        async with asyncio.timeout(5):
            await asyncio.sleep(1)
        return start, loop.time(), loop.jumps

    start, end, jumps = run_virtual(body(), start=100.0)
    assert (start, end) == (100.0, 3701.0)
    assert jumps == 2


def test_virtual_loop_times_out_in_virtual_time() -> None:
    async def body() -> float:
        loop = asyncio.get_running_loop()
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(30):
                await loop.create_future()
        return loop.time()

    assert run_virtual(body()) == 30.0


def test_virtual_loop_reports_a_deadlock() -> None:
    async def stuck() -> None:
        await asyncio.get_running_loop().create_future()

    with pytest.raises(Idle):
        run_virtual(stuck())
