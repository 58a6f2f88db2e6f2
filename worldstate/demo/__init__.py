"""`worldstate simulate`: a whole mesh with simulated players, in one process."""

from __future__ import annotations

from worldstate.demo._simulation import SimulationReport, SimulationSettings

__all__ = ["SimulationReport", "SimulationSettings"]
