"""Simulated players: a pure, vectorised function of (seed, time).

Every server process builds the same `PlayerModel` from the same seed, so all of them agree
on where every player is at time ``t`` without talking: a server moves (``move_entities``)
the players standing in the regions it holds, and hands a player over (``TransferCreature``)
when the player walks from one of its regions into a region another server holds.

Population:
- ``cluster`` of the players stand around hot spots (towns, mines: a Gaussian of
  ``HOTSPOT_SIGMA`` metres), the rest spread uniformly; each wanders on a small circle.
- ``crossers`` of the players pace back and forth across a border between two regions, so
  hand-overs between servers happen all the time.

Operation rates are per player per second (`Mix`); `PlayerModel.sample` draws, for one
tick, which local players act, Poisson-distributed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from regions import RegionKey

REGION = 2000.0
HOTSPOT_SIGMA = 80.0
MARGIN = 60.0
"""Wanderers stay this far from their region's border (only crossers cross)."""
Z = 10.0

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class Mix:
    """Operations per player per second, by kind."""

    build: float = 0.01
    mine: float = 0.01
    trade: float = 0.005
    chat: float = 0.02
    quests_per_server: int = 4
    """Quest chains started by each server; each step is emitted by the next server after
    it has seen the previous step (a causal chain across the mesh)."""

    def as_dict(self) -> dict[str, float]:
        return {
            "build": self.build,
            "mine": self.mine,
            "trade": self.trade,
            "chat": self.chat,
            "quests_per_server": float(self.quests_per_server),
        }


MIXES: dict[str, Mix] = {
    "default": Mix(),
    "builders": Mix(build=0.05, mine=0.005, trade=0.002, chat=0.01),
    "miners": Mix(build=0.002, mine=0.05, trade=0.002, chat=0.01),
    "traders": Mix(build=0.002, mine=0.005, trade=0.03, chat=0.01),
    "chatty": Mix(build=0.002, mine=0.002, trade=0.002, chat=0.1, quests_per_server=16),
    "movement": Mix(build=0.0, mine=0.0, trade=0.0, chat=0.0, quests_per_server=0),
    # saturating: 0.5 strong ops/player/s (500/s at 1,000 players), over 10x what the
    # baseline commits (~40/s), so that the strong ratio measures capacity, not the offer
    "strong": Mix(build=0.2, mine=0.2, trade=0.1, chat=0.01),
}


@dataclass(frozen=True, slots=True)
class WorldLayout:
    """A ``cols x rows`` grid of regions at z = 0, starting at region (0, 0, 0)."""

    cols: int
    rows: int

    @classmethod
    def for_servers(cls, servers: int, regions_per_server: int = 4) -> WorldLayout:
        n = max(1, servers) * regions_per_server
        cols = math.ceil(math.sqrt(n))
        return cls(cols, math.ceil(n / cols))

    @property
    def keys(self) -> list[RegionKey]:
        return [RegionKey(ix, iy, 0) for iy in range(self.rows) for ix in range(self.cols)]

    def cell_of(self, positions: FloatArray) -> IntArray:
        """Region index (``iy * cols + ix``) of each position."""
        ix = np.floor(positions[:, 0] / REGION).astype(np.int64)
        iy = np.floor(positions[:, 1] / REGION).astype(np.int64)
        return iy * self.cols + ix

    def key_of_cell(self, cell: int) -> RegionKey:
        return RegionKey(cell % self.cols, cell // self.cols, 0)


class PlayerModel:
    """Where every player is at time ``t`` (seconds since the run started)."""

    def __init__(
        self,
        players: int,
        layout: WorldLayout,
        *,
        seed: int = 1,
        cluster: float = 0.7,
        crossers: float = 0.02,
        hotspots: int | None = None,
    ) -> None:
        if players < 1:
            raise ValueError("players must be >= 1")
        if not (0 <= cluster <= 1 and 0 <= crossers <= 1 and cluster + crossers <= 1):
            raise ValueError("cluster and crossers are fractions summing to at most 1")
        rng = np.random.default_rng(seed)
        self.n = players
        self.layout = layout
        self.ids: IntArray = np.arange(players, dtype=np.int64)
        cells = layout.cols * layout.rows
        h = hotspots if hotspots is not None else max(2, cells // 2)
        hs_cell = rng.integers(0, cells, h)
        hs = np.column_stack(
            [
                hs_cell % layout.cols * REGION + rng.uniform(400, REGION - 400, h),
                hs_cell // layout.cols * REGION + rng.uniform(400, REGION - 400, h),
            ]
        )
        self.hotspots: FloatArray = hs
        n_cross = int(players * crossers) if layout.cols > 1 else 0
        n_cluster = int(players * cluster)
        n_uniform = players - n_cross - n_cluster
        home = np.empty((players, 2))
        # clustered: around a hot spot, kept inside the hot spot's region
        which = rng.integers(0, h, n_cluster)
        pts = hs[which] + rng.normal(0, HOTSPOT_SIGMA, (n_cluster, 2))
        lo = np.floor(hs[which] / REGION) * REGION + MARGIN
        home[:n_cluster] = np.clip(pts, lo, lo + REGION - 2 * MARGIN)
        self.hotspot_of: IntArray = np.full(players, -1, np.int64)
        self.hotspot_of[:n_cluster] = which
        # uniform: anywhere, away from borders
        u = slice(n_cluster, n_cluster + n_uniform)
        ucell = rng.integers(0, cells, n_uniform)
        home[u, 0] = ucell % layout.cols * REGION + rng.uniform(MARGIN, REGION - MARGIN, n_uniform)
        home[u, 1] = ucell // layout.cols * REGION + rng.uniform(MARGIN, REGION - MARGIN, n_uniform)
        # crossers: on an inner vertical border, pacing across it
        c = slice(n_cluster + n_uniform, players)
        bx = rng.integers(1, max(2, layout.cols), n_cross)
        by = rng.integers(0, layout.rows, n_cross)
        home[c, 0] = bx * REGION
        home[c, 1] = by * REGION + rng.uniform(MARGIN, REGION - MARGIN, n_cross)
        self.home: FloatArray = home
        self.crosser: npt.NDArray[np.bool_] = np.zeros(players, bool)
        self.crosser[c] = True
        # motion: wanderers on circles (radius r, angular speed w); crossers on a line
        self.radius: FloatArray = np.where(
            self.crosser, rng.uniform(40, 80, players), rng.uniform(2, 30, players)
        )
        speed = rng.uniform(1.5, 5.0, players)
        pace = 2 * math.pi / rng.uniform(10.0, 30.0, players)  # crossers: a 10-30 s round
        self.omega: FloatArray = np.where(self.crosser, pace, speed / self.radius)
        self.phase: FloatArray = rng.uniform(0, 2 * math.pi, players)
        # every player's nearest hot spot (mining and quest sites)
        d = ((home[:, None, :] - hs[None, :, :]) ** 2).sum(axis=2)
        self.nearest_hotspot: IntArray = d.argmin(axis=1).astype(np.int64)

        # the cells a player can be in: its home cell, and for a crosser the one west of it
        home_cell = layout.cell_of(np.column_stack([home, np.full(players, Z)]))
        self.home_cell: IntArray = home_cell
        self.alt_cell: IntArray = np.where(self.crosser, home_cell - 1, home_cell)

    def positions(self, t: float, which: IntArray | None = None) -> FloatArray:
        """``(N, 3)`` positions at time ``t`` (of the players ``which``, default all)."""
        sel = slice(None) if which is None else which
        home, radius, crosser = self.home[sel], self.radius[sel], self.crosser[sel]
        a = self.omega[sel] * t + self.phase[sel]
        out = np.empty((home.shape[0], 3))
        out[:, 0] = home[:, 0] + radius * np.cos(a)
        out[:, 1] = np.where(crosser, home[:, 1], home[:, 1] + radius * np.sin(a))
        out[:, 2] = Z
        return out

    def candidates(self, held: npt.NDArray[np.bool_]) -> IntArray:
        """The players that can stand in a held cell (``held[cell]``), so that a server
        computes only those positions each tick."""
        return np.flatnonzero(held[self.home_cell] | held[self.alt_cell]).astype(np.int64)

    def resource_nodes(self) -> list[tuple[str, tuple[float, float, float]]]:
        """Two shared resource nodes per hot spot: ``(resource_id, position)``."""
        out = []
        for i, (x, y) in enumerate(self.hotspots):
            out.append((f"ore-{i}-a", (float(x) + 15.0, float(y), Z)))
            out.append((f"ore-{i}-b", (float(x) - 15.0, float(y) + 10.0, Z)))
        return out


@dataclass(frozen=True, slots=True)
class TickActions:
    """Which local players do what this tick (indices into the model's players)."""

    build: IntArray
    mine: IntArray
    trade: IntArray
    chat: IntArray


def sample_actions(rng: np.random.Generator, local: IntArray, mix: Mix, dt: float) -> TickActions:
    """Poisson draws per kind among the ``local`` players for a tick of ``dt`` seconds."""
    n = local.size

    def pick(rate: float) -> IntArray:
        if n == 0 or rate <= 0:
            return np.empty(0, np.int64)
        k = int(rng.poisson(rate * n * dt))
        return local[rng.integers(0, n, k)] if k else np.empty(0, np.int64)

    return TickActions(pick(mix.build), pick(mix.mine), pick(mix.trade), pick(mix.chat))


MAX_STRUCTURE_SIZE = 32.0
"""`Config.max_structure_size` of the load's servers: the largest structure this game builds
is `build_box`'s 6 m (a game declares its catalogue's bound). With the default (one region)
any placement could reach a structure of every neighbour, so each commit would read — and
conflict with — every neighbouring owner's region version."""


def build_box(
    p: FloatArray, grid: float = 8.0, size: float = 6.0
) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """A structure at a player's position, snapped to a ``grid`` so that players of one
    hot spot build over each other (real overlaps); kept inside the player's region."""
    x0 = math.floor(float(p[0]) / grid) * grid
    y0 = math.floor(float(p[1]) / grid) * grid
    rx = math.floor(x0 / REGION) * REGION
    ry = math.floor(y0 / REGION) * REGION
    x0 = min(max(x0, rx + 1.0), rx + REGION - size - 1.0)
    y0 = min(max(y0, ry + 1.0), ry + REGION - size - 1.0)
    return (x0, y0, Z), (x0 + size, y0 + size, Z + 4.0)


def boxes_overlap(
    alo: Sequence[float], ahi: Sequence[float], blo: Sequence[float], bhi: Sequence[float]
) -> bool:
    """Axis-aligned boxes with a common interior point (touching faces do not overlap)."""
    return all(a0 < b1 and b0 < a1 for a0, a1, b0, b1 in zip(alo, ahi, blo, bhi, strict=True))


__all__ = [
    "MAX_STRUCTURE_SIZE",
    "MIXES",
    "Mix",
    "PlayerModel",
    "TickActions",
    "WorldLayout",
    "boxes_overlap",
    "build_box",
    "sample_actions",
]
