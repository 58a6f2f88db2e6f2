-- Statements on ws_inventories, compiled with the cockroachdb dialect (tests/worldstate/test_cockroach_sql.py).
-- Regenerate: WORLDSTATE_UPDATE_GOLDEN=1 pytest tests/worldstate/test_cockroach_sql.py

INSERT INTO ws_inventories (inventory_id, item, count) VALUES (%(inventory_id)s::VARCHAR, %(item)s::VARCHAR, %(count)s::BIGINT) ON CONFLICT (inventory_id, item) DO UPDATE SET count = excluded.count;

SELECT ws_inventories.count AS n
FROM ws_inventories
WHERE ws_inventories.inventory_id = %(inventory_id_1)s::VARCHAR AND ws_inventories.item = %(item_1)s::VARCHAR FOR UPDATE;

SELECT ws_inventories.item, ws_inventories.count AS n
FROM ws_inventories
WHERE ws_inventories.inventory_id = %(inventory_id_1)s::VARCHAR ORDER BY ws_inventories.item;
