-- Statements on ws_outcomes, compiled with the cockroachdb dialect (tests/worldstate/test_cockroach_sql.py).
-- Regenerate: WORLDSTATE_UPDATE_GOLDEN=1 pytest tests/worldstate/test_cockroach_sql.py

INSERT INTO ws_outcomes (op_id, op_type, status, version, reason, winner_op_id, server_id, region_key, at) VALUES (%(op_id)s::VARCHAR, %(op_type)s::VARCHAR, %(status)s::VARCHAR, %(version)s::BIGINT, %(reason)s::VARCHAR, %(winner_op_id)s::VARCHAR, %(server_id)s::VARCHAR, %(region_key)s::BIGINT, %(at)s);

SELECT ws_outcomes.op_id, ws_outcomes.op_type, ws_outcomes.status, ws_outcomes.version, ws_outcomes.reason, ws_outcomes.winner_op_id, ws_outcomes.server_id, ws_outcomes.region_key, ws_outcomes.at
FROM ws_outcomes
WHERE ws_outcomes.op_id IN (__[POSTCOMPILE_op_id_1]);
