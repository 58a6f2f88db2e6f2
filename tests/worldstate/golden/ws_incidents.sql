-- Statements on ws_incidents, compiled with the cockroachdb dialect (tests/worldstate/test_cockroach_sql.py).
-- Regenerate: WORLDSTATE_UPDATE_GOLDEN=1 pytest tests/worldstate/test_cockroach_sql.py

INSERT INTO ws_incidents (incident_id, region_key, kind, detail, at) VALUES (%(incident_id)s::VARCHAR, %(region_key)s::BIGINT, %(kind)s::VARCHAR, %(detail)s::VARCHAR, %(at)s);

SELECT ws_incidents.incident_id, ws_incidents.region_key, ws_incidents.kind, ws_incidents.detail, ws_incidents.at
FROM ws_incidents ORDER BY ws_incidents.at DESC
 LIMIT %(param_1)s::INTEGER;
