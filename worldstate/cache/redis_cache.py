"""`RedisCache`: region snapshots in Redis, shared by every game server of the mesh.

Layout: one string per region at ``{prefix}region:{morton}`` holding the version as 8 bytes
big-endian followed by the payload; exactly 8 bytes (no payload) is a "newer version
exists" marker (`RegionCache.mark_newer`), which reads answer as a miss. A string rather
than a hash because reads dominate: `get` is one GET and `get_many` one MGET, each a single
bulk reply per region. Writes go through a Lua script (one EVALSHA round trip) that compares
the stored version prefix with the new one and sets value and TTL atomically, so concurrent
writers cannot interleave.

Failure policy: every call is bounded by ``timeout``; a Redis error or timeout is counted in
``stats.errors``, reported to the circuit breaker and answered as a miss (`get`) or a
refused write (`put`). While the breaker is open calls skip Redis at once
(``stats.bypassed``). Only operator calls (`entries`) raise.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from enum import Enum
from typing import Any, Final, Literal, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from redis.asyncio import Redis
from redis.asyncio.connection import parse_url
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript

from worldstate.cache.base import CachedRegion, RegionCache, check_seconds
from worldstate.cache.breaker import CircuitBreaker
from worldstate.errors import ValidationError
from worldstate.security._redact import redact_url
from worldstate.security._tls import TLS_PARAMS, TlsOptions

log = logging.getLogger("worldstate.cache")

_T = TypeVar("_T")

_VERSION_BYTES: Final = 8

# KEYS[1]: the region's key. ARGV[1]: 8-byte big-endian version .. payload (empty payload:
# a "newer version exists" marker). ARGV[2]: TTL ms. Returns 1 if stored, 0 if the key holds
# a newer version, the same version, or a marker of the same version being marked again:
# entries are ordered by (version, marker < snapshot), so a version's snapshot replaces its
# marker and nothing else of that version replaces anything. The versions are compared byte
# by byte: Lua numbers are doubles (exact only to 2**53), and Lua's string `<` goes through
# strcoll, which depends on the server's locale. GETRANGE 0..8 returns 8 bytes for a marker
# and 9 for a snapshot.
_PUT_IF_NEWER: Final = """
local cur = redis.call('GETRANGE', KEYS[1], 0, 8)
if #cur >= 8 then
  local new = ARGV[1]
  for i = 1, 8 do
    local a, b = string.byte(cur, i), string.byte(new, i)
    if a > b then return 0 end
    if a < b then break end
    if i == 8 and (#cur > 8 or #new == 8) then return 0 end
  end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""


class _Failed(Enum):
    FAILED = "failed"


_FAILED: Final = _Failed.FAILED


def _decode(raw: bytes | str | None) -> CachedRegion | None:
    if not isinstance(raw, bytes) or len(raw) <= _VERSION_BYTES:
        return None  # absent, a "newer version exists" marker, or not ours: a miss
    return CachedRegion(int.from_bytes(raw[:_VERSION_BYTES], "big"), raw[_VERSION_BYTES:])


def _glob_escape(text: str) -> str:
    """``text`` as a literal in a Redis glob pattern (namespaces may contain ``*?[]``)."""
    return "".join("\\" + ch if ch in "*?[]\\" else ch for ch in text)


def _take_tls(url: str) -> tuple[str, dict[str, Any]]:
    """Move ``?ca=&cert=&key=&check_hostname=`` (`worldstate.security._tls`) out of a Redis URL into
    redis-py's ``ssl_*`` arguments; ``rediss://`` checks the host name by default."""
    try:
        parts = urlsplit(url)
        pairs = parse_qsl(parts.query, keep_blank_values=True)
    except ValueError as e:
        raise ValidationError(f"RedisCache url {redact_url(url)!r} is not valid: {e}") from None
    tls = parts.scheme == "rediss"
    opts = TlsOptions.from_query(dict(pairs), tls=tls, what=f"RedisCache url {redact_url(url)!r}")
    rest = urlencode([(k, v) for k, v in pairs if k not in TLS_PARAMS])
    kwargs: dict[str, Any] = {}
    if tls:
        kwargs = {"ssl_check_hostname": opts.check_hostname, "ssl_cert_reqs": "required"}
        if opts.ca is not None:
            kwargs["ssl_ca_certs"] = opts.ca
        if opts.cert is not None:
            kwargs["ssl_certfile"], kwargs["ssl_keyfile"] = opts.cert, opts.key
    return urlunsplit(parts._replace(query=rest)), kwargs


class RedisCache(RegionCache):
    """Region snapshots in Redis with set-if-newer writes, a TTL, a per-call timeout and a
    circuit breaker.

    ``url``: ``redis://[user:password@]host:port/db``, ``rediss://…`` (TLS; with
    ``?ca=FILE&cert=FILE&key=FILE``, host name checked unless ``check_hostname=false``) or
    ``unix:///path/to/socket?db=0``. A standalone server or a primary (MGET needs every key
    on one node: Redis Cluster is not supported).
    ``prefix``: prefix of every key (non-empty; the world's namespace, e.g. ``"ws:"``).
    ``ttl``: seconds (> 0) an entry lives after its write (stored as PX milliseconds).
    ``timeout``: seconds (> 0) one call (including connecting) may take before it counts as
    failed.
    ``breaker``: the `CircuitBreaker` guarding Redis; a fresh one (3 failures, 5 s) if omitted.

    The redis-py asyncio client belongs to the event loop that created it, so it is created
    lazily by the first call, inside the running loop, and every later call must come from
    that same loop (another loop gets a `RuntimeError`). `close` drops the client; the cache
    may then be used again, from any loop, and connects anew.
    """

    def __init__(
        self,
        url: str,
        *,
        prefix: str,
        ttl: float = 300.0,
        timeout: float = 0.25,
        breaker: CircuitBreaker | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(url, str):
            raise ValidationError(f"RedisCache url must be a str, got {type(url).__name__}")
        url, self._tls_kwargs = _take_tls(url)
        try:
            parse_url(url)
        except ValueError as e:
            raise ValidationError(f"RedisCache url {redact_url(url)!r} is not valid: {e}") from None
        if not isinstance(prefix, str) or not prefix:
            raise ValidationError(f"RedisCache prefix must be a non-empty str, got {prefix!r}")
        self.url = url
        self.prefix = prefix
        self.ttl = check_seconds(ttl, "RedisCache ttl")
        self.timeout = check_seconds(timeout, "RedisCache timeout")
        self.breaker = breaker if breaker is not None else CircuitBreaker()
        self._ttl_ms = max(1, round(self.ttl * 1000))
        self._key_prefix = f"{prefix}region:"
        self._client: Redis | None = None
        self._put_script: AsyncScript | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def key(self, region: int) -> str:
        """The Redis key of ``region``'s entry."""
        return f"{self._key_prefix}{region}"

    def _connection(self) -> tuple[Redis, AsyncScript]:
        loop = asyncio.get_running_loop()
        if self._client is None or self._put_script is None:
            self._client = Redis.from_url(
                self.url,
                socket_timeout=self.timeout,
                socket_connect_timeout=self.timeout,
                # No retries inside redis-py: a failure is reported to the breaker instead,
                # and a retried put could report "refused" for a write that landed.
                retry=Retry(NoBackoff(), 0),
                **self._tls_kwargs,
            )
            self._put_script = self._client.register_script(_PUT_IF_NEWER)
            self._loop = loop
        elif self._loop is not loop:
            raise RuntimeError(
                "RedisCache is bound to the event loop that first used it; close() it "
                "there before using it from another loop"
            )
        return self._client, self._put_script

    async def _guarded(
        self, what: str, call: Callable[[Redis, AsyncScript], Awaitable[_T]]
    ) -> _T | Literal[_Failed.FAILED]:
        """Run one Redis call under the breaker and the timeout; ``_FAILED`` if it did not
        happen (bypassed, failed or timed out). Never raises but for cancellation."""
        if not self.breaker.allow():
            self.stats.bypassed += 1
            return _FAILED
        client, script = self._connection()
        try:
            async with asyncio.timeout(self.timeout):
                result = await call(client, script)
        except Exception as e:  # any failure of the cache must stay a cache miss
            self.stats.errors += 1
            reason = f"{what}: {type(e).__name__}: {e}"
            if self.breaker.record_failure(reason):
                log.warning(
                    "cache %s: circuit breaker opened after %d failures (%s); bypassing "
                    "Redis for %gs",
                    self.describe(),
                    self.breaker.consecutive_failures,
                    reason,
                    self.breaker.reset_after,
                )
            else:
                log.debug("cache %s failed: %s", redact_url(self.url), reason)
            return _FAILED
        if self.breaker.record_success():
            log.info("cache %s: Redis answers again; circuit breaker closed", self.describe())
        return result

    async def _get(self, region: int) -> CachedRegion | None:
        key = self.key(region)
        raw = await self._guarded("GET", lambda r, _: r.get(key))
        entry = None if raw is _FAILED else _decode(raw)
        if entry is None:
            self.stats.misses += 1
        else:
            self.stats.hits += 1
        return entry

    async def _get_many(self, regions: list[int]) -> dict[int, CachedRegion]:
        keys = [self.key(r) for r in regions]
        raws = await self._guarded("MGET", lambda r, _: r.mget(keys))
        found: dict[int, CachedRegion] = {}
        if raws is not _FAILED:
            for region, raw in zip(regions, raws, strict=True):
                entry = _decode(raw)
                if entry is not None:
                    found[region] = entry
        self.stats.hits += len(found)
        self.stats.misses += len(regions) - len(found)
        return found

    async def _put(self, region: int, version: int, payload: bytes) -> bool:
        key = self.key(region)
        value = version.to_bytes(_VERSION_BYTES, "big") + payload

        async def call(_: Redis, script: AsyncScript) -> object:
            return await script(keys=[key], args=[value, self._ttl_ms])

        outcome = await self._guarded("put", call)
        if outcome is _FAILED:
            return False
        if outcome == 1:
            if payload:
                self.stats.writes += 1
            else:
                self.stats.markers += 1
            return True
        self.stats.stale_writes_refused += 1
        return False

    async def _invalidate(self, region: int) -> None:
        key = self.key(region)
        await self._guarded("DEL", lambda r, _: r.delete(key))

    async def _entries(self, limit: int) -> list[tuple[int, int, int]]:
        # Operator call: no breaker, errors propagate (see RegionCache.entries). Each round
        # trip is bounded by the client's socket timeout.
        client, _ = self._connection()
        match = _glob_escape(self._key_prefix) + "*"
        head = self._key_prefix.encode()
        keys: list[bytes] = []
        cursor = 0
        while True:
            cursor, batch = await client.scan(cursor, match=match, count=1000)
            keys.extend(k for k in batch if isinstance(k, bytes))
            if cursor == 0 or len(keys) >= limit:
                break
        if not keys:
            return []
        pipe = client.pipeline(transaction=False)
        for key in keys:
            pipe.getrange(key, 0, _VERSION_BYTES - 1)
            pipe.strlen(key)
        replies = await pipe.execute()
        out: list[tuple[int, int, int]] = []
        for i, key in enumerate(keys):
            version_bytes, length = replies[2 * i], replies[2 * i + 1]
            suffix = key[len(head) :]
            if len(version_bytes) != _VERSION_BYTES or not suffix.isdigit():
                continue  # expired since the SCAN, or not an entry of this cache
            out.append((int(suffix), int.from_bytes(version_bytes, "big"), length - _VERSION_BYTES))
        out.sort()
        return out[:limit]

    async def close(self) -> None:
        """Close the connections (best effort) and drop the client."""
        client, self._client, self._put_script, self._loop = self._client, None, None, None
        if client is not None:
            try:
                await client.aclose()
            except Exception as e:  # closing a cache of a dead server must not fail
                log.debug("closing cache %s: %r", redact_url(self.url), e)

    def describe(self) -> str:
        return (
            f"{redact_url(self.url)} prefix {self.prefix!r}, ttl {self.ttl:g}s, "
            f"timeout {self.timeout:g}s, breaker {self.breaker.state}"
        )

    def __repr__(self) -> str:
        return f"RedisCache({redact_url(self.url)!r}, prefix={self.prefix!r}, ttl={self.ttl})"
