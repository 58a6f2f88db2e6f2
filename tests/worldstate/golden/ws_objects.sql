-- Statements on ws_objects, compiled with the cockroachdb dialect (tests/worldstate/test_cockroach_sql.py).
-- Regenerate: WORLDSTATE_UPDATE_GOLDEN=1 pytest tests/worldstate/test_cockroach_sql.py

INSERT INTO ws_objects (region_key, object_id, kind, lox, loy, loz, hix, hiy, hiz, data, op_id, checksum) SELECT u.region_key, u.object_id, u.kind, u.lox, u.loy, u.loz, u.hix, u.hiy, u.hiz, u.data, u.op_id, u.checksum FROM unnest(CAST(%(c0)s AS INT8[]), CAST(%(c1)s AS TEXT[]), CAST(%(c2)s AS TEXT[]), CAST(%(c3)s AS FLOAT8[]), CAST(%(c4)s AS FLOAT8[]), CAST(%(c5)s AS FLOAT8[]), CAST(%(c6)s AS FLOAT8[]), CAST(%(c7)s AS FLOAT8[]), CAST(%(c8)s AS FLOAT8[]), CAST(%(c9)s AS TEXT[]), CAST(%(c10)s AS TEXT[]), CAST(%(c11)s AS BYTEA[])) AS u(region_key, object_id, kind, lox, loy, loz, hix, hiy, hiz, data, op_id, checksum) ON CONFLICT DO NOTHING RETURNING object_id;

SELECT w.i, o.object_id, o.lox, o.loy, o.loz, o.hix, o.hiy, o.hiz, o.op_id FROM unnest(CAST(%(n)s AS INT8[]), CAST(%(i)s AS INT8[]), CAST(%(lx)s AS FLOAT8[]), CAST(%(ly)s AS FLOAT8[]), CAST(%(lz)s AS FLOAT8[]), CAST(%(hx)s AS FLOAT8[]), CAST(%(hy)s AS FLOAT8[]), CAST(%(hz)s AS FLOAT8[])) AS w(n, i, lx, ly, lz, hx, hy, hz) JOIN ws_objects AS o ON o.region_key = w.n AND o.lox < w.hx AND o.hix > w.lx AND o.loy < w.hy AND o.hiy > w.ly AND o.loz < w.hz AND o.hiz > w.lz;

SELECT ws_objects.object_id, ws_objects.op_id, ws_objects.kind, ws_objects.lox, ws_objects.loy, ws_objects.loz, ws_objects.hix, ws_objects.hiy, ws_objects.hiz, ws_objects.data
FROM ws_objects
WHERE ws_objects.region_key = %(region_key_1)s::BIGINT;

SELECT ws_objects.region_key, ws_objects.object_id, ws_objects.kind, ws_objects.lox, ws_objects.loy, ws_objects.loz, ws_objects.hix, ws_objects.hiy, ws_objects.hiz, ws_objects.data, ws_objects.op_id, ws_objects.checksum
FROM ws_objects
WHERE ws_objects.region_key = %(region_key_1)s::BIGINT ORDER BY ws_objects.object_id;
