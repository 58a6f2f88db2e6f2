"""`worldstate.connect(..., policy=...)`: the strong path resolves with the game's policy,
custom strategies included (issue 9, item 7)."""

from __future__ import annotations

from typing import Any

import pytest

import conflicts
import worldstate
from regions import RegionKey
from tests.fix_services import Backend
from worldstate import ValidationError
from worldstate.operations import PlaceStructure
from worldstate.results import Committed, Rejected

from .fix_world import make_config

K = RegionKey(0, 0, 0)


def _volume(c: Any) -> float:
    lo, hi = c.lo, c.hi
    return float((hi[0] - lo[0]) * (hi[1] - lo[1]) * (hi[2] - lo[2]))


BIGGEST = conflicts.CustomStrategy("biggest", lambda c: -_volume(c), "the larger one wins")


async def test_connect_passes_the_policy_to_the_strong_path(backend: Backend) -> None:
    cfg = make_config(
        backend.store_url,
        cache_url=backend.cache_url,
        namespace=backend.namespace,
        group_commit_window=0.5,  # both ops land in one batch
    )
    policy = conflicts.Policy(structures=BIGGEST)
    async with worldstate.connect(config=cfg, policy=policy) as w:
        assert w.policy is policy
        await w.acquire_region(K)
        small = PlaceStructure(structure_id="hut", lo=(10, 10, 10), hi=(12, 12, 12))
        big = PlaceStructure(structure_id="hall", lo=(10, 10, 10), hi=(30, 30, 30))
        r_small, r_big = await w.submit_many([small, big])  # small is first by HLC
        assert isinstance(r_big, Committed)
        assert isinstance(r_small, Rejected) and r_small.winner_op_id == big.op_id
        assert "biggest" in r_small.reason


def test_connect_refuses_what_is_not_a_policy() -> None:
    with pytest.raises(ValidationError, match="policy"):
        worldstate.connect("sqlite+aiosqlite:///x.db", policy={"structures": "lww"})  # type: ignore[arg-type]
