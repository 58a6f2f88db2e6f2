-- Statements on ws_leases, compiled with the cockroachdb dialect (tests/worldstate/test_cockroach_sql.py).
-- Regenerate: WORLDSTATE_UPDATE_GOLDEN=1 pytest tests/worldstate/test_cockroach_sql.py

INSERT INTO ws_leases (region_key, owner, epoch, expires_at, acquired_at) VALUES (%(region_key)s::BIGINT, %(owner)s::VARCHAR, %(epoch)s::BIGINT, %(expires_at)s, %(acquired_at)s) ON CONFLICT (region_key) DO NOTHING RETURNING ws_leases.region_key;

SELECT ws_leases.region_key, ws_leases.owner, ws_leases.epoch, ws_leases.expires_at
FROM ws_leases
WHERE ws_leases.region_key IN (__[POSTCOMPILE_region_key_1]) ORDER BY ws_leases.region_key FOR UPDATE;

SELECT ws_leases.region_key, ws_leases.owner, ws_leases.epoch, ws_leases.expires_at, ws_leases.acquired_at
FROM ws_leases
WHERE ws_leases.region_key = %(region_key_1)s::BIGINT;

SELECT ws_leases.region_key, ws_leases.owner, ws_leases.epoch, ws_leases.expires_at, ws_leases.acquired_at
FROM ws_leases
WHERE ws_leases.region_key = %(region_key_1)s::BIGINT FOR UPDATE;

SELECT ws_leases.region_key, ws_leases.owner, ws_leases.epoch, ws_leases.expires_at, ws_leases.acquired_at
FROM ws_leases ORDER BY ws_leases.region_key;

UPDATE ws_leases SET expires_at=%(expires_at)s WHERE ws_leases.region_key = %(region_key_1)s::BIGINT;
