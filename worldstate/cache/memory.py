"""`MemoryCache`: the in-process region cache (LRU with TTL), the default without Redis."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

from worldstate.cache.base import CachedRegion, RegionCache, check_count, check_seconds


def _order(entry: CachedRegion) -> tuple[int, bool]:
    """Set-if-newer order: by version, and a marker (empty payload) below its snapshot."""
    return entry.version, bool(entry.payload)


class MemoryCache(RegionCache):
    """Region snapshots in this process: least recently used entries are evicted beyond
    ``max_entries``, and every entry expires ``ttl`` seconds after it was written.

    ``max_entries``: capacity in regions (int >= 1).
    ``ttl``: seconds (> 0) an entry lives after its write; a refused write does not renew it.
    ``clock``: monotonic seconds; injectable for tests.

    Same set-if-newer contract as every `RegionCache`. Never fails after validation.
    Payloads are kept by reference (they are immutable ``bytes``).
    """

    def __init__(
        self,
        max_entries: int = 4096,
        ttl: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self.max_entries = check_count(max_entries, "MemoryCache max_entries")
        self.ttl = check_seconds(ttl, "MemoryCache ttl")
        self._clock = clock
        # region -> (expires_at, entry); order is recency of use, most recent last.
        self._lru: OrderedDict[int, tuple[float, CachedRegion]] = OrderedDict()

    def __len__(self) -> int:
        """Entries held, including expired ones not yet dropped."""
        return len(self._lru)

    def _live(self, region: int, now: float) -> CachedRegion | None:
        item = self._lru.get(region)
        if item is None:
            return None
        if item[0] <= now:
            del self._lru[region]
            return None
        return item[1]

    async def _get(self, region: int) -> CachedRegion | None:
        entry = self._live(region, self._clock())
        if entry is None or not entry.payload:  # absent, or a "newer version exists" marker
            self.stats.misses += 1
            return None
        self._lru.move_to_end(region)
        self.stats.hits += 1
        return entry

    async def _get_many(self, regions: list[int]) -> dict[int, CachedRegion]:
        now = self._clock()
        found: dict[int, CachedRegion] = {}
        for region in regions:
            entry = self._live(region, now)
            if entry is None or not entry.payload:
                self.stats.misses += 1
            else:
                self._lru.move_to_end(region)
                self.stats.hits += 1
                found[region] = entry
        return found

    async def _put(self, region: int, version: int, payload: bytes) -> bool:
        now = self._clock()
        current = self._live(region, now)
        if current is not None and _order(current) >= _order(CachedRegion(version, payload)):
            self.stats.stale_writes_refused += 1
            return False
        self._lru[region] = (now + self.ttl, CachedRegion(version, payload))
        self._lru.move_to_end(region)
        while len(self._lru) > self.max_entries:
            self._lru.popitem(last=False)
        if payload:
            self.stats.writes += 1
        else:
            self.stats.markers += 1
        return True

    async def _invalidate(self, region: int) -> None:
        self._lru.pop(region, None)

    async def _entries(self, limit: int) -> list[tuple[int, int, int]]:
        now = self._clock()
        live = sorted(
            (region, entry.version, len(entry.payload))
            for region, (expires_at, entry) in self._lru.items()
            if expires_at > now
        )
        return live[:limit]

    async def close(self) -> None:
        """Drop every entry (the cache stays usable)."""
        self._lru.clear()

    def describe(self) -> str:
        return f"memory:// LRU {len(self._lru)}/{self.max_entries} entries, ttl {self.ttl:g}s"

    def __repr__(self) -> str:
        return f"MemoryCache(max_entries={self.max_entries}, ttl={self.ttl})"
