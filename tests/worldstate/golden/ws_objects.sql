-- Statements on ws_objects, compiled with the cockroachdb dialect (tests/worldstate/test_cockroach_sql.py).
-- Regenerate: WORLDSTATE_UPDATE_GOLDEN=1 pytest tests/worldstate/test_cockroach_sql.py

INSERT INTO ws_objects (region_key, object_id, kind, lox, loy, loz, hix, hiy, hiz, data, op_id, checksum) SELECT u.region_key, u.object_id, u.kind, u.lox, u.loy, u.loz, u.hix, u.hiy, u.hiz, u.data, u.op_id, u.checksum FROM unnest(CAST(%(c0)s AS INT8[]), CAST(%(c1)s AS TEXT[]), CAST(%(c2)s AS TEXT[]), CAST(%(c3)s AS FLOAT8[]), CAST(%(c4)s AS FLOAT8[]), CAST(%(c5)s AS FLOAT8[]), CAST(%(c6)s AS FLOAT8[]), CAST(%(c7)s AS FLOAT8[]), CAST(%(c8)s AS FLOAT8[]), CAST(%(c9)s AS TEXT[]), CAST(%(c10)s AS TEXT[]), CAST(%(c11)s AS BYTEA[])) AS u(region_key, object_id, kind, lox, loy, loz, hix, hiy, hiz, data, op_id, checksum) ON CONFLICT DO NOTHING RETURNING object_id;

SELECT object_id, lox, loy, loz, hix, hiy, hiz, op_id FROM ws_objects WHERE region_key IN (__[POSTCOMPILE_keys]) AND ((lox < %(hx0)s AND hix > %(lx0)s AND loy < %(hy0)s AND hiy > %(ly0)s AND loz < %(hz0)s AND hiz > %(lz0)s) OR (lox < %(hx1)s AND hix > %(lx1)s AND loy < %(hy1)s AND hiy > %(ly1)s AND loz < %(hz1)s AND hiz > %(lz1)s));

SELECT object_id, lox, loy, loz, hix, hiy, hiz, op_id FROM ws_objects WHERE region_key IN (__[POSTCOMPILE_keys]) AND ((lox < %(hx0)s AND hix > %(lx0)s AND loy < %(hy0)s AND hiy > %(ly0)s AND loz < %(hz0)s AND hiz > %(lz0)s));

SELECT ws_objects.object_id, ws_objects.op_id, ws_objects.kind, ws_objects.lox, ws_objects.loy, ws_objects.loz, ws_objects.hix, ws_objects.hiy, ws_objects.hiz, ws_objects.data
FROM ws_objects
WHERE ws_objects.region_key = %(region_key_1)s::BIGINT;

SELECT ws_objects.region_key, ws_objects.object_id, ws_objects.kind, ws_objects.lox, ws_objects.loy, ws_objects.loz, ws_objects.hix, ws_objects.hiy, ws_objects.hiz, ws_objects.data, ws_objects.op_id, ws_objects.checksum
FROM ws_objects
WHERE ws_objects.region_key = %(region_key_1)s::BIGINT ORDER BY ws_objects.object_id;
