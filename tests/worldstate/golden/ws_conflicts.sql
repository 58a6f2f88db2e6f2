-- Statements on ws_conflicts, compiled with the cockroachdb dialect (tests/worldstate/test_cockroach_sql.py).
-- Regenerate: WORLDSTATE_UPDATE_GOLDEN=1 pytest tests/worldstate/test_cockroach_sql.py

INSERT INTO ws_conflicts (decision_id, region_key, conflict_type, rule, subject, winners, losers, reason, server_id, at) SELECT u.decision_id, CAST(%(c1)s AS INT8), u.conflict_type, CAST(%(c3)s AS TEXT), u.subject, u.winners, u.losers, u.reason, CAST(%(c8)s AS TEXT), CAST(%(c9)s AS FLOAT8) FROM unnest(CAST(%(c0)s AS TEXT[]), CAST(%(c2)s AS TEXT[]), CAST(%(c4)s AS TEXT[]), CAST(%(c5)s AS TEXT[]), CAST(%(c6)s AS TEXT[]), CAST(%(c7)s AS TEXT[])) AS u(decision_id, conflict_type, subject, winners, losers, reason);

SELECT ws_conflicts.decision_id, ws_conflicts.region_key, ws_conflicts.conflict_type, ws_conflicts.rule, ws_conflicts.subject, ws_conflicts.winners, ws_conflicts.losers, ws_conflicts.reason, ws_conflicts.server_id, ws_conflicts.at
FROM ws_conflicts ORDER BY ws_conflicts.at DESC
 LIMIT %(param_1)s::INTEGER;
