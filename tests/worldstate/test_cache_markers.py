"""A strong commit leaves a readable "newer version exists" marker in the cache (issue 9,
item 5): the next cached read misses without a warning and without deleting it, and a slow
writer's older snapshot is still refused. SQLite + in-process cache, PostgreSQL + Redis."""

from __future__ import annotations

import logging

import pytest

from regions import RegionKey
from tests.fix_services import Backend
from worldstate.operations import PlaceStructure
from worldstate.results import Committed

from .fix_world import obj, open_world

K = RegionKey(0, 0, 0)


async def test_commit_marks_newer_and_stale_snapshots_stay_refused(
    backend: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    async with open_world(backend) as w:
        await w.acquire_region(K)
        empty = await w.load_region(K)
        await w.store_region(empty.with_objects([obj("rock", K)]), expected_version=0)
        old = await w.load_region(K)  # cached at the version before the commit
        old_entry = await w.cache.get(K.morton)
        assert old_entry is not None and old_entry.version == old.version == 1
        r = await w.submit(PlaceStructure(structure_id="s1", lo=(10, 10, 0), hi=(12, 12, 2)))
        assert isinstance(r, Committed)
        current = (await w.store.load_region(K)).snapshot.version
        assert current > old.version
        with caplog.at_level(logging.WARNING):
            assert await w.cache.get(K.morton) is None, "the marker reads as a miss"
            # a slow writer with the old snapshot is refused
            assert not await w.cache.put(K.morton, old_entry.version, old_entry.payload)
            assert not await w.cache.put(K.morton, current - 1, b"older")
            snap = await w.load_region(K, consistent=False)  # miss -> store -> cached
        assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
        assert snap.version == current and [o.id for o in snap.objects] == ["rock", "s1"]
        got = await w.cache.get(K.morton)
        assert got is not None and got.version == current, "the snapshot replaced the marker"
        assert w.cache.stats.markers >= 1
