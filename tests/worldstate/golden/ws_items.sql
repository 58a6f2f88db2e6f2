-- Statements on ws_items, compiled with the cockroachdb dialect (tests/worldstate/test_cockroach_sql.py).
-- Regenerate: WORLDSTATE_UPDATE_GOLDEN=1 pytest tests/worldstate/test_cockroach_sql.py

INSERT INTO ws_items (item_id, region_key, picked_by, op_id, at) VALUES (%(item_id)s::VARCHAR, %(region_key)s::BIGINT, %(picked_by)s::VARCHAR, %(op_id)s::VARCHAR, %(at)s);

SELECT ws_items.item_id
FROM ws_items
WHERE ws_items.item_id IN (__[POSTCOMPILE_item_id_1]);
