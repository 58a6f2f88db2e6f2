-- Statements on ws_inventories, compiled with the cockroachdb dialect (tests/worldstate/test_cockroach_sql.py).
-- Regenerate: WORLDSTATE_UPDATE_GOLDEN=1 pytest tests/worldstate/test_cockroach_sql.py

INSERT INTO ws_inventories (inventory_id, item, count) SELECT u.inventory_id, CAST(%(c1)s AS TEXT), u.count FROM unnest(CAST(%(c0)s AS TEXT[]), CAST(%(c2)s AS INT8[])) AS u(inventory_id, count) ON CONFLICT (inventory_id, item) DO UPDATE SET count = ws_inventories.count + excluded.count WHERE (excluded.count <= 0 OR ws_inventories.count <= %(c_at_most)s - excluded.count) RETURNING inventory_id, item;

INSERT INTO ws_inventories (inventory_id, item, count) SELECT u.inventory_id, u.item, u.count FROM unnest(CAST(%(c0)s AS TEXT[]), CAST(%(c1)s AS TEXT[]), CAST(%(c2)s AS INT8[])) AS u(inventory_id, item, count) ON CONFLICT (inventory_id, item) DO UPDATE SET count = ws_inventories.count + excluded.count WHERE (excluded.count <= 0 OR ws_inventories.count <= %(c_at_most)s - excluded.count) RETURNING inventory_id, item;

SELECT ws_inventories.inventory_id, ws_inventories.item, ws_inventories.count AS n
FROM ws_inventories
WHERE ws_inventories.inventory_id IN (__[POSTCOMPILE_inventory_id_1]);

SELECT ws_inventories.item, ws_inventories.count AS n
FROM ws_inventories
WHERE ws_inventories.inventory_id = %(inventory_id_1)s::VARCHAR ORDER BY ws_inventories.item;
