-- worldstate: least-privilege roles, for CockroachDB and PostgreSQL alike (same SQL).
--
--   worldstate_app        what every `worldstate serve` / `coordinator` connects as: creates
--                         its tables on first start, reads and writes them. Nothing else.
--   worldstate_inspector  what `worldstate inspect` (and dashboards) connect as: reads the
--                         world tables, writes nothing, and cannot read ws_meta (it holds the
--                         mesh's bus keys and causal key: whoever reads them can join the mesh).
--
-- Run as an admin, connected to the world's database, in two steps:
--
--   1. before the first worldstate process starts: the part above the marker line;
--   2. after it has started once (the tables exist): the part below the marker.
--      Re-run part 2 after an upgrade that adds tables.
--
--   cockroach sql --certs-dir=certs --host=crdb1:26257 --database=world -f roles.sql
--   psql "host=db dbname=world user=postgres sslmode=verify-full" -f roles.sql
--
-- Both parts are safe to re-run except the CREATE ROLE lines (drop them on a re-run). No
-- passwords here: on CockroachDB in secure mode both roles log in with client certificates
-- (client.worldstate_app.crt, made by the certs job in deploy/k8s and deploy/compose.yaml);
-- on PostgreSQL set them with `ALTER ROLE ... PASSWORD` from a secret store, or use
-- `hostssl ... cert` in pg_hba.conf. Store URLs then carry sslmode=verify-full&sslrootcert=...
-- (see docs/security.md).

CREATE ROLE worldstate_app WITH LOGIN;
CREATE ROLE worldstate_inspector WITH LOGIN;

-- the app creates (and so owns) its tables; the inspector may only look up names
GRANT USAGE, CREATE ON SCHEMA public TO worldstate_app;
GRANT USAGE ON SCHEMA public TO worldstate_inspector;

-- every table the app creates from now on is readable by the inspector...
ALTER DEFAULT PRIVILEGES FOR ROLE worldstate_app IN SCHEMA public
    GRANT SELECT ON TABLES TO worldstate_inspector;

-- @after-schema -------------------------------------------------------------------------
-- (run once the tables exist)

-- ...and the tables that already exist (made by an earlier version, or by an admin)
GRANT SELECT ON ALL TABLES IN SCHEMA public TO worldstate_inspector;
-- ...except the secrets
REVOKE SELECT ON TABLE ws_meta FROM worldstate_inspector;
