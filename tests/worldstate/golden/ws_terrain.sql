-- Statements on ws_terrain, compiled with the cockroachdb dialect (tests/worldstate/test_cockroach_sql.py).
-- Regenerate: WORLDSTATE_UPDATE_GOLDEN=1 pytest tests/worldstate/test_cockroach_sql.py

INSERT INTO ws_terrain (op_id, region_key, cx, cy, cz, radius, delta, hlc) VALUES (%(op_id)s::VARCHAR, %(region_key)s::BIGINT, %(cx)s, %(cy)s, %(cz)s, %(radius)s, %(delta)s, %(hlc)s::BIGINT);
