-- Statements on ws_outcomes, compiled with the cockroachdb dialect (tests/worldstate/test_cockroach_sql.py).
-- Regenerate: WORLDSTATE_UPDATE_GOLDEN=1 pytest tests/worldstate/test_cockroach_sql.py

INSERT INTO ws_outcomes (op_id, op_type, status, version, reason, winner_op_id, server_id, region_key, at, digest) SELECT * FROM unnest(CAST(%(c0)s AS TEXT[]), CAST(%(c1)s AS TEXT[]), CAST(%(c2)s AS TEXT[]), CAST(%(c3)s AS INT8[]), CAST(%(c4)s AS TEXT[]), CAST(%(c5)s AS TEXT[]), CAST(%(c6)s AS TEXT[]), CAST(%(c7)s AS INT8[]), CAST(%(c8)s AS FLOAT8[]), CAST(%(c9)s AS TEXT[])) ON CONFLICT DO NOTHING RETURNING op_id;
