"""Deterministic simulation of the mesh over the REAL node core: `worldstate.World` servers
and `worldstate.MeshCoordinator`s on one virtual-time event loop, one store, a faulty
network, one seed.

`tests.sim.vloop` is the virtual-time loop; `tests.sim.store_sim` the real `Store` on
in-memory SQLite through a thread-free driver, with the store's network faults;
`tests.sim.harness` builds the mesh, drives the workload and the faults, and checks the
invariants. ``python -m tests.sim.harness --seed N --trace`` replays one seed. See
docs/simulation.md.
"""
