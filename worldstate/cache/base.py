"""The region cache contract: `RegionCache`, the value it holds (`CachedRegion`) and its
counters (`CacheStats`).

A region cache holds at most one entry per region, tagged with the region's version: its
encoded snapshot, or a *"newer version exists"* marker (`RegionCache.mark_newer`: a commit
changed the region to that version without producing its snapshot). Writes are
*set-if-newer* over the order ``(version, marker < snapshot)``: a write lands only when the
cache holds nothing for the region, an older version, or a marker of the same version being
replaced by that version's snapshot. So a slow writer never replaces a newer snapshot — nor a
newer marker — with an older one. Reads treat a marker as a miss and leave it in place: it
keeps refusing older snapshots until the newer one arrives or it expires. The cache is an
accelerator, never the truth: strong reads go to the store.

Every implementation validates its inputs here, at the boundary (`ValidationError`), and
then never raises for a failing backend: a lookup that cannot be answered is a miss, a write
that cannot be made is refused.
"""

from __future__ import annotations

import math
import operator
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Self

from worldstate.errors import ValidationError

MAX_REGION = 2**63 - 1
"""Largest Morton code (regions are 63-bit codes: three 21-bit axes)."""
MAX_VERSION = 2**63 - 1
"""Largest version the cache accepts (stored as 8 bytes)."""


@dataclass(frozen=True, slots=True)
class CachedRegion:
    """One cached region: its version and its encoded snapshot (opaque to the cache)."""

    version: int
    payload: bytes


@dataclass(slots=True)
class CacheStats:
    """Counters of one cache since it was opened.

    ``hits`` / ``misses`` count regions looked up (`get` counts one, `get_many` one per
    distinct region). A lookup the backend could not answer (error or breaker open) is a miss
    too, as is one that found a "newer version exists" marker, so ``hit_rate`` shows what
    callers actually got. ``writes`` counts stored puts, ``markers`` stored `mark_newer`
    markers, ``stale_writes_refused`` puts and markers refused because the cache held the
    same or a newer version.
    ``errors`` counts backend calls that failed or timed out; ``bypassed`` calls skipped
    because the circuit breaker was open (both for any operation).
    """

    hits: int = 0
    misses: int = 0
    writes: int = 0
    stale_writes_refused: int = 0
    errors: int = 0
    bypassed: int = 0
    markers: int = 0

    @property
    def hit_rate(self) -> float:
        """``hits / (hits + misses)``; 0.0 before the first lookup."""
        lookups = self.hits + self.misses
        return self.hits / lookups if lookups else 0.0

    def as_dict(self) -> dict[str, int | float]:
        return {
            "hits": self.hits,
            "misses": self.misses,
            "hit_rate": self.hit_rate,
            "writes": self.writes,
            "stale_writes_refused": self.stale_writes_refused,
            "errors": self.errors,
            "bypassed": self.bypassed,
            "markers": self.markers,
        }


def check_region(region: object) -> int:
    """Return ``region`` as an int if it is a Morton code (0 .. 2**63-1), else raise.

    Any integer type (``int``, ``numpy.int64``) is accepted; ``bool`` is not.
    """
    if isinstance(region, bool) or not hasattr(type(region), "__index__"):
        raise ValidationError(
            f"region must be a Morton code (int), got {type(region).__name__} {region!r:.40}"
        )
    code = operator.index(region)  # type: ignore[arg-type]
    if not 0 <= code <= MAX_REGION:
        raise ValidationError(f"region {code} is not a Morton code: it must be in 0 .. 2**63-1")
    return code


def check_version(version: object) -> int:
    """Return ``version`` if it is an int in 1 .. 2**63-1, else raise."""
    if isinstance(version, bool) or not isinstance(version, int):
        raise ValidationError(f"version must be an int, got {type(version).__name__}")
    if not 1 <= version <= MAX_VERSION:
        raise ValidationError(f"version {version} is out of range: it must be in 1 .. 2**63-1")
    return version


def check_payload(payload: object) -> bytes:
    """Return ``payload`` if it is non-empty ``bytes`` (immutable: the cache may keep a
    reference). The empty value is the "newer version exists" marker: `mark_newer`."""
    if not isinstance(payload, bytes):
        raise ValidationError(
            f"payload must be bytes (an encoded snapshot), got {type(payload).__name__}"
        )
    if not payload:
        raise ValidationError(
            "payload must not be empty: to say a newer version exists without its snapshot, "
            "call RegionCache.mark_newer(region, version)"
        )
    return payload


def check_regions(regions: object) -> list[int]:
    """Return the distinct regions of a sequence, in first-seen order."""
    if isinstance(regions, (str, bytes, bytearray)) or not isinstance(regions, Sequence):
        raise ValidationError(
            f"regions must be a sequence of Morton codes, got {type(regions).__name__}"
        )
    return list(dict.fromkeys(check_region(r) for r in regions))


def check_seconds(value: object, name: str) -> float:
    """Return ``value`` as float if it is a finite number > 0, else raise."""
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ValidationError(f"{name} must be a finite number of seconds > 0, got {value!r}")
    return float(value)


def check_count(value: object, name: str) -> int:
    """Return ``value`` if it is an int >= 1, else raise."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValidationError(f"{name} must be an int >= 1, got {value!r}")
    return value


class RegionCache(ABC):
    """A cache of encoded region snapshots keyed by Morton code, with set-if-newer writes.

    The public methods validate their arguments (raising `ValidationError`) and delegate to
    the ``_``-prefixed methods an implementation provides. Implementations never raise for a
    failing backend: they count the failure in `stats` and answer a miss / refuse the write.

    Usable as ``async with``: the cache is closed on exit.
    """

    stats: CacheStats

    def __init__(self) -> None:
        self.stats = CacheStats()

    async def get(self, region: int) -> CachedRegion | None:
        """The cached version and payload of ``region``, or ``None`` (absent, expired, or the
        backend could not answer)."""
        return await self._get(check_region(region))

    async def get_many(self, regions: Sequence[int]) -> dict[int, CachedRegion]:
        """The cached entries of ``regions`` (in one round trip); absent regions are left out."""
        codes = check_regions(regions)
        if not codes:
            return {}
        return await self._get_many(codes)

    async def put(self, region: int, version: int, payload: bytes) -> bool:
        """Store ``payload`` as ``version`` of ``region`` if the cache holds no entry for it or
        an older version (set-if-newer). Returns whether it was stored; ``False`` also when
        the backend could not be reached. Stored entries expire after the cache's TTL."""
        return await self._put(check_region(region), check_version(version), check_payload(payload))

    async def mark_newer(self, region: int, version: int) -> bool:
        """Record that ``region`` reached ``version`` without caching its snapshot (a strong
        commit changed it). Set-if-newer like `put`: stored when the cache holds nothing, an
        older version, or an older marker; refused over the same or a newer version. Until
        the snapshot of ``version`` (or a newer one) replaces it, reads of ``region`` miss and
        older snapshots are refused — the marker is never read as a payload, nor deleted by a
        reader. Returns whether it was stored."""
        return await self._put(check_region(region), check_version(version), b"")

    async def invalidate(self, region: int) -> None:
        """Drop the entry of ``region`` (best effort: a failing backend leaves it to expire)."""
        await self._invalidate(check_region(region))

    async def entries(self, limit: int = 1000) -> list[tuple[int, int, int]]:
        """Up to ``limit`` live entries as ``(region, version, payload size in bytes)``, sorted
        by region, for the operator (size 0: a "newer version exists" marker). Unlike the
        other methods, a backend failure raises: an operator must not mistake an unreachable
        cache for an empty one."""
        return await self._entries(check_count(limit, "limit"))

    @abstractmethod
    async def close(self) -> None:
        """Release the backend's resources. Closing twice is harmless."""

    @abstractmethod
    def describe(self) -> str:
        """One line for the operator: backend, address (without credentials), settings."""

    @abstractmethod
    async def _get(self, region: int) -> CachedRegion | None: ...

    @abstractmethod
    async def _get_many(self, regions: list[int]) -> dict[int, CachedRegion]: ...

    @abstractmethod
    async def _put(self, region: int, version: int, payload: bytes) -> bool:
        """Set-if-newer; an empty ``payload`` is a marker (counted in ``stats.markers``)."""

    @abstractmethod
    async def _invalidate(self, region: int) -> None: ...

    @abstractmethod
    async def _entries(self, limit: int) -> list[tuple[int, int, int]]: ...

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
