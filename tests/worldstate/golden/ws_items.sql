-- Statements on ws_items, compiled with the cockroachdb dialect (tests/worldstate/test_cockroach_sql.py).
-- Regenerate: WORLDSTATE_UPDATE_GOLDEN=1 pytest tests/worldstate/test_cockroach_sql.py

INSERT INTO ws_items (region_key, item_id, picked_by, op_id, at) SELECT u.region_key, u.item_id, u.picked_by, u.op_id, u.at FROM unnest(CAST(%(c0)s AS INT8[]), CAST(%(c1)s AS TEXT[]), CAST(%(c2)s AS TEXT[]), CAST(%(c3)s AS TEXT[]), CAST(%(c4)s AS FLOAT8[])) AS u(region_key, item_id, picked_by, op_id, at) ON CONFLICT DO NOTHING RETURNING item_id;

SELECT ws_items.item_id, ws_items.op_id
FROM ws_items
WHERE ws_items.region_key = %(region_key_1)s::BIGINT;
