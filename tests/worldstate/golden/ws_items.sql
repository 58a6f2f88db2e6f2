-- Statements on ws_items, compiled with the cockroachdb dialect (tests/worldstate/test_cockroach_sql.py).
-- Regenerate: WORLDSTATE_UPDATE_GOLDEN=1 pytest tests/worldstate/test_cockroach_sql.py

SELECT ws_items.item_id, ws_items.op_id
FROM ws_items
WHERE ws_items.region_key = %(region_key_1)s::BIGINT;
