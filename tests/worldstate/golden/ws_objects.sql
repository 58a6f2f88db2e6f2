-- Statements on ws_objects, compiled with the cockroachdb dialect (tests/worldstate/test_cockroach_sql.py).
-- Regenerate: WORLDSTATE_UPDATE_GOLDEN=1 pytest tests/worldstate/test_cockroach_sql.py

INSERT INTO ws_objects (object_id, region_key, kind, lox, loy, loz, hix, hiy, hiz, data, op_id) VALUES (%(object_id)s::VARCHAR, %(region_key)s::BIGINT, %(kind)s::VARCHAR, %(lox)s, %(loy)s, %(loz)s, %(hix)s, %(hiy)s, %(hiz)s, %(data)s::VARCHAR, %(op_id)s::VARCHAR);

SELECT object_id, lox, loy, loz, hix, hiy, hiz FROM ws_objects WHERE region_key IN (__[POSTCOMPILE_keys]) AND ((lox < %(hx0)s AND hix > %(lx0)s AND loy < %(hy0)s AND hiy > %(ly0)s AND loz < %(hz0)s AND hiz > %(lz0)s) OR (lox < %(hx1)s AND hix > %(lx1)s AND loy < %(hy1)s AND hiy > %(ly1)s AND loz < %(hz1)s AND hiz > %(lz1)s));

SELECT object_id, lox, loy, loz, hix, hiy, hiz FROM ws_objects WHERE region_key IN (__[POSTCOMPILE_keys]) AND ((lox < %(hx0)s AND hix > %(lx0)s AND loy < %(hy0)s AND hiy > %(ly0)s AND loz < %(hz0)s AND hiz > %(lz0)s));

SELECT ws_objects.object_id
FROM ws_objects
WHERE ws_objects.region_key = %(region_key_1)s::BIGINT;

SELECT ws_objects.object_id, ws_objects.kind, ws_objects.lox, ws_objects.loy, ws_objects.loz, ws_objects.hix, ws_objects.hiy, ws_objects.hiz, ws_objects.data
FROM ws_objects
WHERE ws_objects.region_key = %(region_key_1)s::BIGINT ORDER BY ws_objects.object_id;

SELECT ws_objects.object_id, ws_objects.lox, ws_objects.loy, ws_objects.loz, ws_objects.hix, ws_objects.hiy, ws_objects.hiz
FROM ws_objects
WHERE ws_objects.object_id IN (__[POSTCOMPILE_object_id_1]);
