"""Deterministic simulation of the mesh: many servers, one store, a faulty network, one seed.

`tests.sim.model` holds the simulated parts (store, servers, coordinator, network);
`tests.sim.harness` runs them in a discrete-event loop and checks the invariants;
``python -m tests.sim.harness --seed N`` replays one seed. See docs/simulation.md.
"""
