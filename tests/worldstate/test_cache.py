"""The region cache: one contract, tested against `MemoryCache` and `RedisCache` alike, plus
Redis-only failure behaviour (server killed, server hung) and the circuit breaker."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import pytest

from tests.fix_redis_proc import RedisProcess
from worldstate import ValidationError
from worldstate.cache import (
    BreakerState,
    CachedRegion,
    CacheStats,
    CircuitBreaker,
    MemoryCache,
    RedisCache,
    RegionCache,
    open_cache,
)


class FakeClock:
    """Monotonic seconds that move only when told to."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Backend:
    """How to open a cache of one kind, and how to let its TTLs run."""

    kind: str
    url: str
    prefix: str
    clock: FakeClock = field(default_factory=FakeClock)

    def open(self, *, ttl: float, max_entries: int) -> RegionCache:
        cache = open_cache(
            self.url,
            prefix=self.prefix,
            ttl=ttl,
            max_entries=max_entries,
            timeout=2.0,  # the shared test Redis may be slow under load; no timing asserts
            breaker_failures=3,
            breaker_reset=5.0,
        )
        if isinstance(cache, MemoryCache):
            cache = MemoryCache(max_entries=max_entries, ttl=ttl, clock=self.clock)
        return cache

    async def let_time_pass(self, seconds: float) -> None:
        if self.kind == "memory":
            self.clock.advance(seconds)
        else:
            await asyncio.sleep(seconds)  # Redis expires keys by its own clock


@pytest.fixture(params=["memory", "redis"])
def backend(request: pytest.FixtureRequest) -> Backend:
    if request.param == "memory":
        return Backend("memory", "memory://", "unused:")
    url: str = request.getfixturevalue("redis_url")
    prefix: str = request.getfixturevalue("redis_prefix")
    return Backend("redis", url, prefix)


MakeCache = Callable[..., RegionCache]


def state(breaker: CircuitBreaker) -> BreakerState:
    # A call, not the property: mypy would keep the property narrowed between assertions.
    return breaker.state


@pytest.fixture
async def make_cache(backend: Backend) -> AsyncIterator[MakeCache]:
    made: list[RegionCache] = []

    def make(*, ttl: float = 300.0, max_entries: int = 4096) -> RegionCache:
        cache = backend.open(ttl=ttl, max_entries=max_entries)
        made.append(cache)
        return cache

    yield make
    for cache in made:
        await cache.close()


@pytest.fixture
def cache(make_cache: MakeCache) -> RegionCache:
    return make_cache()


# --- the contract, for every backend -------------------------------------------------------


async def test_open_cache_picks_the_backend_by_scheme(backend: Backend, cache: RegionCache) -> None:
    expected = MemoryCache if backend.kind == "memory" else RedisCache
    assert type(cache) is expected


async def test_put_then_get_round_trips(cache: RegionCache) -> None:
    payload = bytes(range(256)) * 10  # binary, with NULs and high bytes
    assert await cache.put(12345, 7, payload) is True
    assert await cache.get(12345) == CachedRegion(7, payload)
    assert await cache.get(12346) is None


async def test_extreme_regions_and_versions_round_trip(cache: RegionCache) -> None:
    top = 2**63 - 1
    assert await cache.put(0, top, b"t") is True
    assert await cache.put(top, 1, b"x") is True
    assert await cache.get(0) == CachedRegion(top, b"t")
    assert await cache.get(top) == CachedRegion(1, b"x")


async def test_put_is_set_if_newer(cache: RegionCache) -> None:
    assert await cache.put(1, 5, b"five") is True
    assert await cache.put(1, 4, b"four") is False, "an older version must be refused"
    assert await cache.put(1, 5, b"other five") is False, "the same version must be refused"
    assert await cache.get(1) == CachedRegion(5, b"five")
    assert await cache.put(1, 6, b"six") is True
    assert await cache.get(1) == CachedRegion(6, b"six")
    # 256 > 255: byte-wise comparison must carry across bytes, not compare the last byte.
    assert await cache.put(1, 256, b"256") is True
    assert await cache.put(1, 255, b"255") is False
    assert await cache.get(1) == CachedRegion(256, b"256")
    assert cache.stats.writes == 3
    assert cache.stats.stale_writes_refused == 3


async def test_get_many_returns_only_present_regions(cache: RegionCache) -> None:
    for region in (10, 20, 30):
        assert await cache.put(region, region, f"r{region}".encode())
    got = await cache.get_many([30, 10, 99, 10])
    assert got == {10: CachedRegion(10, b"r10"), 30: CachedRegion(30, b"r30")}
    assert await cache.get_many([]) == {}
    assert cache.stats.hits == 2 and cache.stats.misses == 1


async def test_invalidate_drops_the_entry(cache: RegionCache) -> None:
    await cache.put(3, 9, b"nine")
    await cache.put(4, 1, b"one")
    await cache.invalidate(3)
    await cache.invalidate(5)  # absent: no error
    assert await cache.get(3) is None
    assert await cache.get(4) == CachedRegion(1, b"one")
    assert await cache.put(3, 2, b"two") is True, "after invalidation any version is accepted"


async def test_stats_count_hits_misses_and_hit_rate(cache: RegionCache) -> None:
    assert cache.stats.hit_rate == 0.0
    await cache.get(1)
    await cache.put(1, 1, b"a")
    await cache.get(1)
    await cache.get(1)
    await cache.get(2)
    assert (cache.stats.hits, cache.stats.misses) == (2, 2)
    assert cache.stats.hit_rate == 0.5
    d = cache.stats.as_dict()
    assert d["hits"] == 2 and d["misses"] == 2 and d["hit_rate"] == 0.5 and d["writes"] == 1
    assert d["errors"] == 0 and d["bypassed"] == 0


async def test_entries_expire_after_the_ttl(backend: Backend, make_cache: MakeCache) -> None:
    cache = make_cache(ttl=0.3)
    assert await cache.put(1, 1, b"a")
    assert await cache.get(1) == CachedRegion(1, b"a")
    await backend.let_time_pass(0.5)
    assert await cache.get(1) is None
    assert await cache.put(1, 1, b"a again") is True, "an expired entry must not refuse writes"


async def test_refused_write_does_not_renew_the_ttl(
    backend: Backend, make_cache: MakeCache
) -> None:
    cache = make_cache(ttl=0.6)
    assert await cache.put(1, 2, b"b")
    await backend.let_time_pass(0.3)
    assert await cache.put(1, 1, b"a") is False
    await backend.let_time_pass(0.5)
    assert await cache.get(1) is None


async def test_entries_lists_live_entries_sorted(cache: RegionCache) -> None:
    await cache.put(30, 3, b"xyz")
    await cache.mark_newer(10, 1)
    await cache.put(20, 2, b"ab")
    assert await cache.entries() == [(10, 1, 0), (20, 2, 2), (30, 3, 3)]
    assert await cache.entries(limit=2) == [(10, 1, 0), (20, 2, 2)]


async def test_newer_marker_is_a_readable_miss_that_keeps_refusing_older_writes(
    cache: RegionCache,
) -> None:
    assert await cache.put(7, 3, b"three")
    assert await cache.mark_newer(7, 5) is True
    assert await cache.get(7) is None, "a marker reads as a miss"
    assert await cache.get_many([7]) == {}
    assert await cache.get(7) is None, "and reading it did not delete it"
    assert await cache.put(7, 4, b"four") is False, "a stale write is still refused"
    assert await cache.put(7, 3, b"three") is False
    assert await cache.mark_newer(7, 5) is False, "the same marker twice is refused"
    assert await cache.mark_newer(7, 4) is False
    assert await cache.put(7, 5, b"five") is True, "the version's snapshot replaces it"
    assert await cache.get(7) == CachedRegion(5, b"five")
    assert await cache.mark_newer(7, 5) is False, "a marker never hides its own snapshot"
    assert await cache.get(7) == CachedRegion(5, b"five")
    assert await cache.mark_newer(7, 6) is True
    assert await cache.get(7) is None
    assert await cache.entries() == [(7, 6, 0)]
    assert cache.stats.markers == 2 and cache.stats.as_dict()["markers"] == 2


async def test_empty_payloads_are_refused_in_favour_of_markers(cache: RegionCache) -> None:
    with pytest.raises(ValidationError, match="mark_newer"):
        await cache.put(1, 1, b"")
    with pytest.raises(ValidationError):
        await cache.mark_newer(1, 0)
    assert await cache.get(1) is None


async def test_concurrent_puts_leave_the_highest_version(cache: RegionCache) -> None:
    rng = random.Random(20240611)
    versions = rng.sample(range(1, 1_000_000), 50)
    results = await asyncio.gather(*(cache.put(77, v, f"v{v}".encode()) for v in versions))
    top = max(versions)
    assert await cache.get(77) == CachedRegion(top, f"v{top}".encode())
    assert any(results)
    assert cache.stats.writes + cache.stats.stale_writes_refused == 50
    assert cache.stats.errors == 0


async def test_describe_names_the_backend(backend: Backend, cache: RegionCache) -> None:
    assert backend.kind in cache.describe()


BAD_CALLS: list[tuple[str, Callable[[RegionCache], object]]] = [
    ("negative region", lambda c: c.get(-1)),
    ("region beyond 63 bits", lambda c: c.get(2**63)),
    ("bool region", lambda c: c.get(True)),
    ("float region", lambda c: c.get(1.0)),  # type: ignore[arg-type]
    ("str region", lambda c: c.put("1", 1, b"x")),  # type: ignore[arg-type]
    ("version 0", lambda c: c.put(1, 0, b"x")),
    ("negative version", lambda c: c.put(1, -5, b"x")),
    ("version beyond 63 bits", lambda c: c.put(1, 2**63, b"x")),
    ("bool version", lambda c: c.put(1, True, b"x")),
    ("float version", lambda c: c.put(1, 2.0, b"x")),  # type: ignore[arg-type]
    ("str payload", lambda c: c.put(1, 1, "x")),  # type: ignore[arg-type]
    ("bytearray payload", lambda c: c.put(1, 1, bytearray(b"x"))),  # type: ignore[arg-type]
    ("None payload", lambda c: c.put(1, 1, None)),  # type: ignore[arg-type]
    ("str as region list", lambda c: c.get_many("123")),  # type: ignore[arg-type]
    ("bad region in list", lambda c: c.get_many([1, -2])),
    ("region set", lambda c: c.get_many({1, 2})),  # type: ignore[arg-type]
    ("invalidate negative", lambda c: c.invalidate(-1)),
    ("entries limit 0", lambda c: c.entries(0)),
]


@pytest.mark.parametrize(("case", "call"), BAD_CALLS, ids=[case for case, _ in BAD_CALLS])
async def test_bad_input_is_refused(
    cache: RegionCache, case: str, call: Callable[[RegionCache], object]
) -> None:
    coro = call(cache)
    assert asyncio.iscoroutine(coro)
    with pytest.raises(ValidationError):
        await coro
    assert cache.stats.as_dict() == CacheStats().as_dict(), "nothing must have been counted"


async def test_numpy_style_integers_are_accepted_as_regions(cache: RegionCache) -> None:
    class Int64Like:
        def __index__(self) -> int:
            return 42

    assert await cache.put(Int64Like(), 1, b"x")  # type: ignore[arg-type]
    assert await cache.get(42) == CachedRegion(1, b"x")


# --- memory only -----------------------------------------------------------------------------


async def test_memory_cache_evicts_the_least_recently_used() -> None:
    cache = MemoryCache(max_entries=2, clock=FakeClock())
    await cache.put(1, 1, b"a")
    await cache.put(2, 1, b"b")
    assert await cache.get(1) is not None  # 1 is now more recent than 2
    await cache.put(3, 1, b"c")
    assert await cache.get(2) is None
    assert await cache.get(1) == CachedRegion(1, b"a")
    assert await cache.get(3) == CachedRegion(1, b"c")
    assert len(cache) == 2


# --- open_cache and constructors -------------------------------------------------------------


def _open(url: str, **changes: object) -> RegionCache:
    kwargs: dict[str, object] = {
        "prefix": "p:",
        "ttl": 300.0,
        "max_entries": 10,
        "timeout": 0.25,
        "breaker_failures": 3,
        "breaker_reset": 5.0,
    }
    kwargs.update(changes)
    return open_cache(url, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        ("memory://", MemoryCache),
        ("redis://127.0.0.1:6379/0", RedisCache),
        ("rediss://cache.example:6380/1", RedisCache),
        ("unix:///run/redis.sock?db=2", RedisCache),
    ],
)
def test_open_cache_schemes(url: str, kind: type[RegionCache]) -> None:
    assert type(_open(url)) is kind


@pytest.mark.parametrize(
    ("url", "changes", "message"),
    [
        ("http://cache:6379", {}, "unknown scheme 'http'"),
        ("cache:6379", {}, "unknown scheme"),
        ("", {}, "unknown scheme"),
        ("memory://", {"max_entries": 0}, "max_entries"),
        ("memory://", {"ttl": float("nan")}, "ttl"),
        ("redis://h:6379", {"ttl": 0}, "ttl"),
        ("redis://h:6379", {"timeout": -1.0}, "timeout"),
        ("redis://h:6379", {"prefix": ""}, "prefix"),
        ("redis://h:6379", {"breaker_failures": 0}, "failures"),
        ("redis://h:6379", {"breaker_reset": float("inf")}, "reset_after"),
        ("redis://h:6379/0?socket_timeout=abc", {}, "not valid"),
    ],
)
def test_open_cache_refuses_bad_settings(
    url: str, changes: dict[str, object], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        _open(url, **changes)


def test_describe_hides_the_password() -> None:
    cache = _open("redis://app:s3cret@cache:6379/0")
    assert "s3cret" not in cache.describe() and "s3cret" not in repr(cache)
    with pytest.raises(ValidationError) as info:
        _open("http://app:s3cret@cache:6379/0")
    assert "s3cret" not in str(info.value)


# --- redis only -----------------------------------------------------------------------------


async def test_redis_entries_ignore_other_prefixes(redis_url: str, redis_prefix: str) -> None:
    # A glob character in the prefix must match literally: "a*" must not list "ab"'s keys.
    async with (
        RedisCache(redis_url, prefix=f"{redis_prefix}a*:", timeout=2.0) as star,
        RedisCache(redis_url, prefix=f"{redis_prefix}ab:", timeout=2.0) as other,
    ):
        await star.put(1, 1, b"s")
        await other.put(2, 1, b"o")
        assert await star.entries() == [(1, 1, 1)]
        assert await other.entries() == [(2, 1, 1)]
        assert await other.get(1) is None


async def test_redis_key_layout(redis_url: str, redis_prefix: str) -> None:
    # The layout is what other tools (and other servers' versions of this code) rely on.
    import redis.asyncio as aioredis

    async with RedisCache(redis_url, prefix=redis_prefix, ttl=60.0, timeout=2.0) as cache:
        await cache.put(513, 0x0102, b"payload")
    client = aioredis.Redis.from_url(redis_url)
    try:
        key = f"{redis_prefix}region:513"
        assert await client.get(key) == b"\x00\x00\x00\x00\x00\x00\x01\x02payload"
        async with RedisCache(redis_url, prefix=redis_prefix, ttl=60.0, timeout=2.0) as cache:
            assert await cache.mark_newer(513, 0x0103)
        assert await client.get(key) == b"\x00\x00\x00\x00\x00\x00\x01\x03", "a marker"
        assert 0 < await client.pttl(key) <= 60_000
    finally:
        await client.aclose()


async def test_redis_killed_mid_test_is_bypassed_then_recovers(
    private_redis: RedisProcess,
) -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(failures=3, reset_after=5.0, clock=clock)
    async with RedisCache(private_redis.url, prefix="t:", timeout=2.0, breaker=breaker) as cache:
        assert await cache.put(1, 1, b"a") is True
        assert await cache.get(1) == CachedRegion(1, b"a")

        private_redis.kill()
        assert await cache.get(1) is None
        assert await cache.put(1, 2, b"b") is False
        assert await cache.get_many([1, 2]) == {}
        assert cache.stats.errors == 3
        assert state(breaker) is BreakerState.OPEN

        # Open: Redis is not even tried.
        await cache.get(1)
        await cache.put(1, 3, b"c")
        await cache.invalidate(1)
        assert cache.stats.bypassed == 3
        assert cache.stats.errors == 3

        private_redis.restart()
        assert await cache.get(1) is None, "still open until the reset interval has passed"
        assert cache.stats.bypassed == 4

        clock.advance(5.0)
        assert state(breaker) is BreakerState.HALF_OPEN
        assert await cache.put(1, 4, b"d") is True  # the trial
        assert state(breaker) is BreakerState.CLOSED
        assert await cache.get(1) == CachedRegion(4, b"d")
        assert cache.stats.errors == 3 and cache.stats.bypassed == 4


async def test_redis_failed_trial_reopens_the_breaker(private_redis: RedisProcess) -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(failures=1, reset_after=5.0, clock=clock)
    async with RedisCache(private_redis.url, prefix="t:", timeout=2.0, breaker=breaker) as cache:
        private_redis.kill()
        assert await cache.get(1) is None
        assert state(breaker) is BreakerState.OPEN
        clock.advance(5.0)
        assert await cache.get(1) is None  # the trial, against a still dead server
        assert state(breaker) is BreakerState.OPEN
        assert breaker.times_opened == 2
        assert cache.stats.errors == 2 and cache.stats.bypassed == 0


async def test_redis_hung_server_times_out_as_a_miss(private_redis: RedisProcess) -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(failures=2, reset_after=5.0, clock=clock)
    async with RedisCache(private_redis.url, prefix="t:", timeout=0.2, breaker=breaker) as cache:
        assert await cache.put(1, 1, b"a") is True
        private_redis.pause()
        try:
            assert await cache.get(1) is None
            assert await cache.put(1, 2, b"b") is False
            assert cache.stats.errors == 2
            assert state(breaker) is BreakerState.OPEN
            assert breaker.last_failure is not None and "Timeout" in breaker.last_failure
        finally:
            private_redis.resume()
        clock.advance(5.0)
        # The timed-out connections must not poison later calls (no stale replies).
        assert await cache.get(1) == CachedRegion(1, b"a")
        assert await cache.put(1, 3, b"c") is True
        assert await cache.get(1) == CachedRegion(3, b"c")
        assert state(breaker) is BreakerState.CLOSED


async def test_redis_cache_is_reusable_after_close(private_redis: RedisProcess) -> None:
    cache = RedisCache(private_redis.url, prefix="t:", timeout=2.0)
    await cache.put(1, 1, b"a")
    await cache.close()
    await cache.close()
    assert await cache.get(1) == CachedRegion(1, b"a")
    await cache.close()


def test_redis_cache_is_bound_to_one_event_loop(private_redis: RedisProcess) -> None:
    cache = RedisCache(private_redis.url, prefix="t:", timeout=2.0)

    async def use() -> CachedRegion | None:
        return await cache.get(1)

    with asyncio.Runner() as first:
        first.run(use())
        with asyncio.Runner() as second, pytest.raises(RuntimeError, match="event loop"):
            second.run(use())
        first.run(cache.close())


# --- circuit breaker (pure) -----------------------------------------------------------------


def test_breaker_opens_after_consecutive_failures_only() -> None:
    breaker = CircuitBreaker(failures=3, reset_after=5.0, clock=FakeClock())
    breaker.record_failure()
    breaker.record_failure()
    breaker.record_success()  # resets the count
    breaker.record_failure()
    breaker.record_failure()
    assert state(breaker) is BreakerState.CLOSED and breaker.allow()
    assert breaker.record_failure("boom") is True
    assert state(breaker) is BreakerState.OPEN
    assert not breaker.allow()
    assert breaker.as_dict()["last_failure"] == "boom"


def test_breaker_half_open_lets_one_trial_through() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(failures=1, reset_after=5.0, clock=clock)
    breaker.record_failure()
    clock.advance(4.9)
    assert not breaker.allow()
    clock.advance(0.1)
    assert state(breaker) is BreakerState.HALF_OPEN
    assert breaker.allow() is True
    assert breaker.allow() is False, "only one trial at a time"
    assert breaker.record_success() is True
    assert state(breaker) is BreakerState.CLOSED
    assert breaker.allow()


def test_breaker_gives_up_on_a_trial_that_never_reports() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(failures=1, reset_after=5.0, clock=clock)
    breaker.record_failure()
    clock.advance(5.0)
    assert breaker.allow()  # this trial's task is cancelled and never reports
    clock.advance(4.0)
    assert not breaker.allow()
    clock.advance(1.0)
    assert breaker.allow(), "a new trial once the lost one is overdue"


def test_breaker_failed_trial_reopens_for_a_full_interval() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(failures=1, reset_after=5.0, clock=clock)
    breaker.record_failure()
    clock.advance(5.0)
    assert breaker.allow()
    assert breaker.record_failure() is True
    assert state(breaker) is BreakerState.OPEN
    clock.advance(4.9)
    assert not breaker.allow()
    assert breaker.times_opened == 2


@pytest.mark.parametrize(
    ("failures", "reset_after"), [(0, 5.0), (True, 5.0), (3, 0.0), (3, float("nan")), (3, "5")]
)
def test_breaker_refuses_bad_settings(failures: object, reset_after: object) -> None:
    with pytest.raises(ValidationError):
        CircuitBreaker(failures=failures, reset_after=reset_after)  # type: ignore[arg-type]
