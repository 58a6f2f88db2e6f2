-- Statements on ws_region_history, compiled with the cockroachdb dialect (tests/worldstate/test_cockroach_sql.py).
-- Regenerate: WORLDSTATE_UPDATE_GOLDEN=1 pytest tests/worldstate/test_cockroach_sql.py

DELETE FROM ws_region_history WHERE ws_region_history.region_key = %(region_key_1)s::BIGINT AND ws_region_history.version <= %(version_1)s::BIGINT;

INSERT INTO ws_region_history (region_key, version, epoch, object_count, payload, checksum, write_id, stored_by, stored_at) VALUES (%(region_key)s::BIGINT, %(version)s::BIGINT, %(epoch)s::BIGINT, %(object_count)s::INTEGER, %(payload)s, %(checksum)s, %(write_id)s::VARCHAR, %(stored_by)s::VARCHAR, %(stored_at)s);

SELECT ws_region_history.region_key, ws_region_history.version, ws_region_history.epoch, ws_region_history.object_count, ws_region_history.payload, ws_region_history.checksum, ws_region_history.write_id, ws_region_history.stored_by, ws_region_history.stored_at
FROM ws_region_history
WHERE ws_region_history.region_key = %(region_key_1)s::BIGINT ORDER BY ws_region_history.version DESC;

SELECT ws_region_history.version
FROM ws_region_history
WHERE ws_region_history.region_key = %(region_key_1)s::BIGINT AND ws_region_history.write_id = %(write_id_1)s::VARCHAR;
