from __future__ import annotations

import psycopg
import redis.asyncio as aioredis


def test_pg_database_is_fresh(pg_url: str) -> None:
    url = pg_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'"
        ).fetchone()
    assert row is not None and row[0] == 0


async def test_redis_prefix_is_empty(redis_url: str, redis_prefix: str) -> None:
    client = aioredis.Redis.from_url(redis_url)
    try:
        assert [k async for k in client.scan_iter(match=f"{redis_prefix}*")] == []
        await client.set(f"{redis_prefix}x", b"1")
    finally:
        await client.aclose()
