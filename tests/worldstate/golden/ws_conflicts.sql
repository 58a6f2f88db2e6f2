-- Statements on ws_conflicts, compiled with the cockroachdb dialect (tests/worldstate/test_cockroach_sql.py).
-- Regenerate: WORLDSTATE_UPDATE_GOLDEN=1 pytest tests/worldstate/test_cockroach_sql.py

SELECT ws_conflicts.decision_id, ws_conflicts.region_key, ws_conflicts.conflict_type, ws_conflicts.rule, ws_conflicts.subject, ws_conflicts.winners, ws_conflicts.losers, ws_conflicts.reason, ws_conflicts.server_id, ws_conflicts.at
FROM ws_conflicts ORDER BY ws_conflicts.at DESC
 LIMIT %(param_1)s::INTEGER;
