"""`worldstate simulate` (README's first command) runs and its summary adds up."""

from __future__ import annotations

from worldstate.cli.main import main
from worldstate.demo._simulation import SimulationSettings, run_simulation


async def test_simulation_summary_is_consistent() -> None:
    report = await run_simulation(
        SimulationSettings(
            servers=2, regions_per_server=2, objects_per_region=30, queries=20, op_rate=1000.0
        )
    )
    assert report.regions == 4 and report.objects_stored == 120
    assert report.queries == 20
    assert report.fenced_writes_refused == 1 and report.handoffs == 1
    classes = report.classes
    assert set(classes) == {"eventual", "strong", "trades", "causal"}
    assert classes["trades"]["gold_total"] == classes["trades"]["gold_expected"]
    assert classes["strong"]["committed_or_accepted"] > 0
    assert classes["eventual"]["rows_applied_at_receivers"] > 0
    assert all(n > 0 for n in classes["causal"]["delivered_per_server"])
    assert any("strong" in line for line in report.lines())


def test_cli_rejects_bad_arguments() -> None:
    try:
        main(["simulate", "--servers", "0"])
    except SystemExit as e:
        assert "servers" in str(e)
    else:
        raise AssertionError("simulate --servers 0 should exit")
