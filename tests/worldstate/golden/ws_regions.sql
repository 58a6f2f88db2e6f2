-- Statements on ws_regions, compiled with the cockroachdb dialect (tests/worldstate/test_cockroach_sql.py).
-- Regenerate: WORLDSTATE_UPDATE_GOLDEN=1 pytest tests/worldstate/test_cockroach_sql.py

INSERT INTO ws_regions (region_key, version, payload_version, epoch, object_count, payload, checksum, write_id, stored_by, stored_at) VALUES (%(region_key)s::BIGINT, %(version)s::BIGINT, %(payload_version)s::BIGINT, %(epoch)s::BIGINT, %(object_count)s::INTEGER, %(payload)s, %(checksum)s, %(write_id)s::VARCHAR, %(stored_by)s::VARCHAR, %(stored_at)s);

INSERT INTO ws_regions (region_key, version, payload_version, epoch, object_count, payload, checksum, write_id, stored_by, stored_at) VALUES (%(region_key)s::BIGINT, %(version)s::BIGINT, %(payload_version)s::BIGINT, %(epoch)s::BIGINT, %(object_count)s::INTEGER, %(payload)s, %(checksum)s, %(write_id)s::VARCHAR, %(stored_by)s::VARCHAR, %(stored_at)s) ON CONFLICT (region_key) DO NOTHING RETURNING ws_regions.region_key;

SELECT ws_regions.region_key, ws_regions.version
FROM ws_regions
WHERE ws_regions.region_key > %(region_key_1)s::BIGINT AND (ws_regions.region_key >= %(region_key_2)s::BIGINT AND ws_regions.region_key <= %(region_key_3)s::BIGINT OR ws_regions.region_key >= %(region_key_4)s::BIGINT AND ws_regions.region_key <= %(region_key_5)s::BIGINT OR ws_regions.region_key >= %(region_key_6)s::BIGINT AND ws_regions.region_key <= %(region_key_7)s::BIGINT OR ws_regions.region_key >= %(region_key_8)s::BIGINT AND ws_regions.region_key <= %(region_key_9)s::BIGINT OR ws_regions.region_key >= %(region_key_10)s::BIGINT AND ws_regions.region_key <= %(region_key_11)s::BIGINT OR ws_regions.region_key >= %(region_key_12)s::BIGINT AND ws_regions.region_key <= %(region_key_13)s::BIGINT OR ws_regions.region_key >= %(region_key_14)s::BIGINT AND ws_regions.region_key <= %(region_key_15)s::BIGINT OR ws_regions.region_key >= %(region_key_16)s::BIGINT AND ws_regions.region_key <= %(region_key_17)s::BIGINT) ORDER BY ws_regions.region_key
 LIMIT %(param_1)s::INTEGER;

SELECT ws_regions.region_key, ws_regions.version
FROM ws_regions
WHERE ws_regions.region_key IN (__[POSTCOMPILE_region_key_1]);

SELECT ws_regions.region_key, ws_regions.version, ws_regions.object_count, ws_regions.stored_at, ws_regions.stored_by, length(ws_regions.payload) AS size, ws_leases.owner, ws_leases.epoch, ws_leases.expires_at
FROM ws_regions LEFT OUTER JOIN ws_leases ON ws_leases.region_key = ws_regions.region_key
WHERE ws_regions.region_key > %(region_key_1)s::BIGINT ORDER BY ws_regions.region_key
 LIMIT %(param_1)s::INTEGER;

SELECT ws_regions.region_key, ws_regions.version, ws_regions.payload_version, ws_regions.epoch, ws_regions.object_count, ws_regions.payload, ws_regions.checksum, ws_regions.write_id, ws_regions.stored_by, ws_regions.stored_at
FROM ws_regions
WHERE ws_regions.region_key = %(region_key_1)s::BIGINT;

SELECT ws_regions.version
FROM ws_regions
WHERE ws_regions.region_key = %(region_key_1)s::BIGINT;

SELECT ws_regions.version
FROM ws_regions
WHERE ws_regions.region_key = %(region_key_1)s::BIGINT FOR UPDATE;

UPDATE ws_regions SET version=%(version)s::BIGINT, payload_version=%(payload_version)s::BIGINT, epoch=%(epoch)s::BIGINT, object_count=%(object_count)s::INTEGER, payload=%(payload)s, checksum=%(checksum)s, write_id=%(write_id)s::VARCHAR, stored_by=%(stored_by)s::VARCHAR, stored_at=%(stored_at)s WHERE ws_regions.region_key = %(region_key_1)s::BIGINT;
