-- Statements on ws_terrain, compiled with the cockroachdb dialect (tests/worldstate/test_cockroach_sql.py).
-- Regenerate: WORLDSTATE_UPDATE_GOLDEN=1 pytest tests/worldstate/test_cockroach_sql.py

INSERT INTO ws_terrain (region_key, op_id, cx, cy, cz, radius, delta, hlc) SELECT u.region_key, u.op_id, u.cx, u.cy, u.cz, u.radius, u.delta, u.hlc FROM unnest(CAST(%(c0)s AS INT8[]), CAST(%(c1)s AS TEXT[]), CAST(%(c2)s AS FLOAT8[]), CAST(%(c3)s AS FLOAT8[]), CAST(%(c4)s AS FLOAT8[]), CAST(%(c5)s AS FLOAT8[]), CAST(%(c6)s AS FLOAT8[]), CAST(%(c7)s AS INT8[])) AS u(region_key, op_id, cx, cy, cz, radius, delta, hlc);
