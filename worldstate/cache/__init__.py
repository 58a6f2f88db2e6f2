"""The region cache: encoded region snapshots with set-if-newer writes, in this process
(`MemoryCache`) or in Redis shared by the mesh (`RedisCache`, behind a `CircuitBreaker`).

Open one with `open_cache`, which picks the backend from the URL scheme::

    cache = open_cache("redis://cache:6379/0", prefix="ws:", ttl=300.0, max_entries=4096,
                       timeout=0.25, breaker_failures=3, breaker_reset=5.0)
    if await cache.put(region, version, payload): ...
    entry = await cache.get(region)  # CachedRegion(version, payload) or None
"""

from __future__ import annotations

from urllib.parse import urlsplit

from worldstate.cache.base import CachedRegion, CacheStats, RegionCache
from worldstate.cache.breaker import BreakerState, CircuitBreaker
from worldstate.cache.memory import MemoryCache
from worldstate.cache.redis_cache import RedisCache
from worldstate.errors import ValidationError
from worldstate.security._redact import redact_url

REDIS_SCHEMES = ("redis", "rediss", "unix")


def open_cache(
    url: str,
    *,
    prefix: str,
    ttl: float,
    max_entries: int,
    timeout: float,
    breaker_failures: int,
    breaker_reset: float,
) -> RegionCache:
    """The cache named by ``url``: ``memory://`` gives a `MemoryCache` (``max_entries``,
    ``ttl``); ``redis://``, ``rediss://`` and ``unix://`` give a `RedisCache` (``prefix``,
    ``ttl``, ``timeout`` and a `CircuitBreaker` of ``breaker_failures``/``breaker_reset``).

    Nothing is connected yet: a Redis cache connects on first use, in the running loop.
    Raises `ValidationError` for an unknown scheme or an invalid setting.
    """
    if not isinstance(url, str):
        raise ValidationError(f"cache url must be a str, got {type(url).__name__}")
    scheme = urlsplit(url).scheme.lower()
    if scheme == "memory":
        return MemoryCache(max_entries=max_entries, ttl=ttl)
    if scheme in REDIS_SCHEMES:
        parts = urlsplit(url)
        malformed = (
            "://" not in url
            or (scheme != "unix" and not parts.hostname)
            or (scheme == "unix" and not parts.path)
        )
        try:
            _ = parts.port  # raises on a port that is not a number
        except ValueError:
            malformed = True
        if malformed:
            raise ValidationError(
                f"cache url {redact_url(url)!r} is malformed: use redis://host:port/db, "
                "rediss://host:port/db or unix:///path/to/redis.sock"
            )
        return RedisCache(
            url,
            prefix=prefix,
            ttl=ttl,
            timeout=timeout,
            breaker=CircuitBreaker(failures=breaker_failures, reset_after=breaker_reset),
        )
    raise ValidationError(
        f"cache url {redact_url(url)!r} has an unknown scheme {scheme!r}: use memory:// "
        "(in-process LRU), redis://host:port/db, rediss://host:port/db or "
        "unix:///path/to/redis.sock"
    )


__all__ = [
    "BreakerState",
    "CacheStats",
    "CachedRegion",
    "CircuitBreaker",
    "MemoryCache",
    "RedisCache",
    "RegionCache",
    "open_cache",
]
