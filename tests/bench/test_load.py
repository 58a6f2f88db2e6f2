"""A short whole-mesh load run: 2 server processes, 200 players, 10 s, the embedded store
(SQLite) and the test broker under a namespace of its own, then 5 s of the naive baseline.
Checks the report files exist and parse, hold every invariant's result (all passing) and
every plot."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.load._report import PLOTS

ROOT = Path(__file__).resolve().parents[2]
INVARIANTS = {
    "inventory_conserved",
    "acknowledged_strong_present",
    "acknowledged_claims_taken",
    "single_owner",
    "causal_order",
    "eventual_convergence",
}


@pytest.mark.timeout(400)
def test_short_load_run_writes_a_full_report(mqtt_url: str, tmp_path: Path) -> None:
    out = tmp_path / "load"
    cmd = [
        sys.executable, "-m", "bench.load",
        "--servers", "2", "--players", "200", "--duration", "10",
        "--bus", mqtt_url, "--baseline", "--baseline-duration", "5",
        "--quiet", "--out", str(out),
    ]  # fmt: skip
    proc = subprocess.run(
        cmd, cwd=ROOT, env=dict(os.environ), capture_output=True, text=True, timeout=360
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert set(report["invariants"]) == INVARIANTS
    for name, verdict in report["invariants"].items():
        assert verdict["ok"], (name, verdict)
    inv = report["invariants"]
    assert inv["causal_order"]["deliveries"] > 0
    assert inv["single_owner"]["samples"] > 0
    assert inv["eventual_convergence"]["entities"] > 0
    classes = report["run"]["classes"]
    assert classes["eventual"]["ops"] > 0 and classes["causal"]["ops"] > 0
    assert classes["strong"]["ops"] > 0
    assert report["run"]["ticks"]["count"] > 0
    assert set(report["processes"]) >= {"gs-1", "gs-2"}
    assert set(report["ratios"]) == {"eventual", "strong", "causal"}
    assert report["plots"] == list(PLOTS)
    for plot in PLOTS:
        assert (out / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (out / "report.html").read_text()
    assert all(p in page for p in PLOTS) and "Invariants" in page
