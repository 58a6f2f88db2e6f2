"""Deterministic simulation of the mesh over the REAL node core: `worldstate.World` servers
and `worldstate.MeshCoordinator`s on one virtual-time event loop, one store, a faulty
network, one seed. See docs/simulation.md.

- `tests.sim.vloop`: the virtual-time event loop;
- `tests.sim.store_sim`: the real `Store` on in-memory SQLite through a thread-free driver,
  with the store's network faults;
- `tests.sim.mesh`: the run's state, clocks and trace, and how servers and coordinators are
  built; `tests.sim.workload`, `tests.sim.faults`, `tests.sim.invariants` (checks) and
  `tests.sim.violation` (what is checked, the replayable error);
- `tests.sim.variants`: deliberately broken variants of the real code;
- `tests.sim.harness`: `Simulation` (all of the above), `run_seed` and the CLI:
  ``python -m tests.sim.harness --seed N --trace`` replays one seed.
"""
