"""The load report counts what a server killed by a fault did until its last checkpoint
(``_server --checkpoint``): its ticks, players moved and operations (files only, no
services)."""

from __future__ import annotations

from pathlib import Path

from bench.load._history import write_json
from bench.load._report import summarise_run
from bench.load._server import Recorder


def _record(rec: Recorder, ticks: int, players: float) -> None:
    for k in range(ticks):
        rec.ticks.append((k * 0.05, 0.001, 0.002, players))
    rec.moves += int(ticks * players)
    rec.ok["build"] += 2
    rec.lat("build", 5.0)


def test_a_killed_server_counts_until_its_last_checkpoint(tmp_path: Path) -> None:
    servers = tmp_path / "servers"
    whole = Recorder(servers / "gs-1", lambda: 0.0)
    _record(whole, 20, 10.0)
    whole.save_arrays()
    write_json(servers / "gs-1" / "final.json", {"server_id": "gs-1", **whole.summary()})
    killed = Recorder(servers / "gs-2", lambda: 0.0)
    _record(killed, 20, 30.0)
    killed.checkpoint()  # then SIGKILL: no final.json
    _record(killed, 20, 30.0)  # after the last checkpoint: lost with the process
    never = Recorder(servers / "gs-3", lambda: 0.0)  # killed before its first checkpoint
    _record(never, 5, 1.0)
    for rec in (whole, killed, never):
        rec.close()

    run = summarise_run(tmp_path, duration=1.0)

    assert run["killed_incarnations"] == ["gs-2", "gs-3"]
    assert run["classes"]["eventual"]["ops"] == 20 * 10 + 20 * 30
    assert run["classes"]["strong"]["kinds"]["build"]["ok"] == 4
    assert run["ticks"]["count"] == 40
    assert set(run["servers"]) == {"gs-1", "gs-2"}
    assert run["servers"]["gs-2"]["players_moved_mean"] == 30.0
    assert sum(run["timeseries"]["eventual"]["per_s"]) == 20 * 10 + 20 * 30
