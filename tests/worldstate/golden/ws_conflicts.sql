-- Statements on ws_conflicts, compiled with the cockroachdb dialect (tests/worldstate/test_cockroach_sql.py).
-- Regenerate: WORLDSTATE_UPDATE_GOLDEN=1 pytest tests/worldstate/test_cockroach_sql.py

INSERT INTO ws_conflicts (decision_id, region_key, conflict_type, rule, subject, winners, losers, reason, server_id, at) VALUES (%(decision_id)s::VARCHAR, %(region_key)s::BIGINT, %(conflict_type)s::VARCHAR, %(rule)s::VARCHAR, %(subject)s::VARCHAR, %(winners)s::VARCHAR, %(losers)s::VARCHAR, %(reason)s::VARCHAR, %(server_id)s::VARCHAR, %(at)s);

SELECT ws_conflicts.decision_id, ws_conflicts.region_key, ws_conflicts.conflict_type, ws_conflicts.rule, ws_conflicts.subject, ws_conflicts.winners, ws_conflicts.losers, ws_conflicts.reason, ws_conflicts.server_id, ws_conflicts.at
FROM ws_conflicts ORDER BY ws_conflicts.at DESC
 LIMIT %(param_1)s::INTEGER;
