-- Statements on ws_resources, compiled with the cockroachdb dialect (tests/worldstate/test_cockroach_sql.py).
-- Regenerate: WORLDSTATE_UPDATE_GOLDEN=1 pytest tests/worldstate/test_cockroach_sql.py

INSERT INTO ws_resources (region_key, resource_id, x, y, z, capacity, remaining) VALUES (%(region_key)s::BIGINT, %(resource_id)s::VARCHAR, %(x)s, %(y)s, %(z)s, %(capacity)s, %(remaining)s) ON CONFLICT (resource_id) DO UPDATE SET region_key = excluded.region_key, x = excluded.x, y = excluded.y, z = excluded.z, capacity = excluded.capacity, remaining = excluded.remaining;

SELECT ws_resources.region_key, ws_resources.resource_id, ws_resources.x, ws_resources.y, ws_resources.z, ws_resources.capacity, ws_resources.remaining
FROM ws_resources
WHERE ws_resources.resource_id = %(resource_id_1)s::VARCHAR;

SELECT ws_resources.resource_id, ws_resources.remaining
FROM ws_resources
WHERE ws_resources.resource_id IN (__[POSTCOMPILE_resource_id_1]);
