-- worldstate: the CockroachDB-only statements.
--
-- The application creates its tables itself, idempotently, in the SQL subset that both
-- CockroachDB and PostgreSQL accept (worldstate/store/schema.py). What cannot be written in
-- that subset lives here: cluster settings, zone configs, range splits at Morton boundaries,
-- and (as notes) follower reads for operators. Nothing here is needed for correctness; it is
-- about how the data is spread over the cluster and how much MVCC history it keeps.
--
-- Run it once after the first `worldstate` process has started against the database (so the
-- tables exist), as a user with the admin role (cluster settings need it):
--
--   cockroach sql --insecure --host=crdb1:26257 --database=world \
--       --file=deploy/cockroach/schema.sql
--
-- Every statement is idempotent: re-running the file (after an upgrade that adds tables, or
-- after regenerating the splits) is safe. `cockroach sql --file` stops at the first error;
-- if a table named below does not exist in your worldstate version, remove its statements.
-- See deploy/cockroach/README.md.

-- ---------------------------------------------------------------------------------------
-- 1. Cluster settings
-- ---------------------------------------------------------------------------------------

-- Region snapshots are one row each, up to WORLDSTATE_MAX_SNAPSHOT_BYTES (64 MiB by
-- default), and every store writes that row twice (ws_regions and ws_region_history). A
-- single write larger than kv.raft.command.max_size (default 64 MiB) fails with "command is
-- too large", so either keep WORLDSTATE_MAX_SNAPSHOT_BYTES well below 64 MiB (32 MiB is a
-- good production value) or raise the limit. Raising it costs memory on every node while
-- such a command is replicated.
SET CLUSTER SETTING kv.raft.command.max_size = '128MiB';

-- Log (not reject) rows above 16 MiB: an oversized region shows up in the logs long before
-- it reaches any hard limit. The rejecting guardrail (sql.guardrails.max_row_size_err,
-- default 512 MiB) is left alone: the application enforces its own, smaller, limit.
SET CLUSTER SETTING sql.guardrails.max_row_size_log = '16MiB';

-- Recommendations left as comments because they trade something away:
--
-- Declare a node dead (and re-replicate its ranges) sooner than the default 5 minutes.
-- Shorter means faster recovery and more rebalancing traffic on a flapping node.
--   SET CLUSTER SETTING server.time_until_store_dead = '2m';
--
-- Follower reads serve data at least kv.closed_timestamp.target_duration old (default 3s,
-- so follower_read_timestamp() is about 4.8 s in the past). Lowering it makes operator reads
-- fresher at the cost of more closed-timestamp traffic; the default suits `inspect`.
--   SET CLUSTER SETTING kv.closed_timestamp.target_duration = '3s';
--
-- Do not change the default isolation level: worldstate opens every transaction as
-- SERIALIZABLE itself and retries SQLSTATE 40001; READ COMMITTED would not be used by it.

-- ---------------------------------------------------------------------------------------
-- 2. Zone configs: replication and MVCC garbage collection
-- ---------------------------------------------------------------------------------------

-- Three replicas survive one node (or zone) failure. With five or more nodes spread over
-- three or more zones, num_replicas = 5 on the lease table lets authority survive two.
-- gc.ttlseconds is how long overwritten row versions are kept: AS OF SYSTEM TIME reads
-- (follower reads, `inspect`) and incremental backups need history younger than it;
-- scheduled backups protect what they need with protected timestamps, whatever the TTL.
ALTER DATABASE world CONFIGURE ZONE USING num_replicas = 3, gc.ttlseconds = 14400;

-- Whole-region snapshots are rewritten on every store: keep one hour of old versions, not
-- the database's four, so MVCC garbage stays a small multiple of the live data.
ALTER TABLE ws_regions CONFIGURE ZONE USING num_replicas = 3, gc.ttlseconds = 3600;
ALTER TABLE ws_region_history CONFIGURE ZONE USING num_replicas = 3, gc.ttlseconds = 3600;

-- A lease row is rewritten on every renewal (every WORLDSTATE_LEASE_RENEW_INTERVAL, 3 s by
-- default): ten minutes of history is already 200 versions per owned region.
ALTER TABLE ws_leases CONFIGURE ZONE USING num_replicas = 3, gc.ttlseconds = 600;

-- Causal event log (appended, read back for gap repair) and idempotency outcomes (written
-- once per operation): ordinary history is enough.
ALTER TABLE ws_events CONFIGURE ZONE USING num_replicas = 3, gc.ttlseconds = 3600;
ALTER TABLE ws_outcomes CONFIGURE ZONE USING num_replicas = 3, gc.ttlseconds = 3600;

-- Strong-path rows (placed objects, picked items, terrain edits, resource nodes) are keyed by
-- (region_key, id): written once (resources: decremented per claim), ordinary history.
ALTER TABLE ws_objects CONFIGURE ZONE USING num_replicas = 3, gc.ttlseconds = 3600;
ALTER TABLE ws_items CONFIGURE ZONE USING num_replicas = 3, gc.ttlseconds = 3600;
ALTER TABLE ws_terrain CONFIGURE ZONE USING num_replicas = 3, gc.ttlseconds = 3600;
ALTER TABLE ws_resources CONFIGURE ZONE USING num_replicas = 3, gc.ttlseconds = 3600;

-- Inventory counts and versions are rewritten by every commit that touches them; shard
-- leases like region leases, on every renewal.
ALTER TABLE ws_inventories CONFIGURE ZONE USING num_replicas = 3, gc.ttlseconds = 600;
ALTER TABLE ws_inventory_versions CONFIGURE ZONE USING num_replicas = 3, gc.ttlseconds = 600;
ALTER TABLE ws_shard_leases CONFIGURE ZONE USING num_replicas = 3, gc.ttlseconds = 600;

-- Membership rows are rewritten on every heartbeat (1 s by default).
ALTER TABLE ws_members CONFIGURE ZONE USING num_replicas = 3, gc.ttlseconds = 600;

-- ---------------------------------------------------------------------------------------
-- 3. Range splits at Morton boundaries
-- ---------------------------------------------------------------------------------------

-- region_key is a 63-bit Morton code, so a contiguous key range is a contiguous piece of the
-- world. Splitting at the octant boundaries (multiples of 2^60) gives each octant of an
-- origin-centred world its own ranges from the start, instead of waiting for load-based
-- splitting; SCATTER then spreads the new ranges' replicas and leaseholders over the nodes.
-- Manual splits are kept (not merged away) until `ALTER TABLE … UNSPLIT ALL`.
--
-- For a real game, split finer, inside the game's own world box (WORLDSTATE_WORLD_BOUNDS),
-- e.g. 128 ranges per table for a 128 km x 128 km x 8 km world:
--   python3 deploy/cockroach/splits.py --depth 3 \
--       --bounds=-64000,-64000,-4000,64000,64000,4000
-- and run its output the same way. The block below is exactly the output of the command in
-- its first line (tests/test_ci_script.py checks this).
-- BEGIN GENERATED: python3 deploy/cockroach/splits.py --depth 1
-- 7 split points per table at Morton cell boundaries; re-running is
-- harmless (splitting at an existing boundary is a no-op).
ALTER TABLE ws_regions SPLIT AT VALUES
    (1152921504606846976),
    (2305843009213693952),
    (3458764513820540928),
    (4611686018427387904),
    (5764607523034234880),
    (6917529027641081856),
    (8070450532247928832);
ALTER TABLE ws_regions SCATTER;
ALTER TABLE ws_region_history SPLIT AT VALUES
    (1152921504606846976),
    (2305843009213693952),
    (3458764513820540928),
    (4611686018427387904),
    (5764607523034234880),
    (6917529027641081856),
    (8070450532247928832);
ALTER TABLE ws_region_history SCATTER;
ALTER TABLE ws_leases SPLIT AT VALUES
    (1152921504606846976),
    (2305843009213693952),
    (3458764513820540928),
    (4611686018427387904),
    (5764607523034234880),
    (6917529027641081856),
    (8070450532247928832);
ALTER TABLE ws_leases SCATTER;
ALTER TABLE ws_objects SPLIT AT VALUES
    (1152921504606846976),
    (2305843009213693952),
    (3458764513820540928),
    (4611686018427387904),
    (5764607523034234880),
    (6917529027641081856),
    (8070450532247928832);
ALTER TABLE ws_objects SCATTER;
ALTER TABLE ws_items SPLIT AT VALUES
    (1152921504606846976),
    (2305843009213693952),
    (3458764513820540928),
    (4611686018427387904),
    (5764607523034234880),
    (6917529027641081856),
    (8070450532247928832);
ALTER TABLE ws_items SCATTER;
ALTER TABLE ws_resources SPLIT AT VALUES
    (1152921504606846976),
    (2305843009213693952),
    (3458764513820540928),
    (4611686018427387904),
    (5764607523034234880),
    (6917529027641081856),
    (8070450532247928832);
ALTER TABLE ws_resources SCATTER;
ALTER TABLE ws_terrain SPLIT AT VALUES
    (1152921504606846976),
    (2305843009213693952),
    (3458764513820540928),
    (4611686018427387904),
    (5764607523034234880),
    (6917529027641081856),
    (8070450532247928832);
ALTER TABLE ws_terrain SCATTER;
ALTER TABLE ws_events SPLIT AT VALUES
    (1152921504606846976),
    (2305843009213693952),
    (3458764513820540928),
    (4611686018427387904),
    (5764607523034234880),
    (6917529027641081856),
    (8070450532247928832);
ALTER TABLE ws_events SCATTER;
-- END GENERATED
-- END GENERATED

-- ---------------------------------------------------------------------------------------
-- 4. Follower reads for operators (notes; nothing to run)
-- ---------------------------------------------------------------------------------------

-- Operator and dashboard reads that may be a few seconds stale should not queue behind the
-- game's writes on the leaseholders. Read at follower_read_timestamp() and any replica,
-- usually the nearest, answers:
--
--   SELECT region_key, version, epoch, object_count, stored_by
--     FROM ws_regions AS OF SYSTEM TIME follower_read_timestamp()
--    ORDER BY region_key;
--
--   SELECT region_key, owner, epoch, expires_at
--     FROM ws_leases AS OF SYSTEM TIME follower_read_timestamp()
--    WHERE owner = 'gs-1';
--
-- or for a whole read-only session:
--
--   SET default_transaction_use_follower_reads = on;
--
-- Never for the application's own decisions: lease acquisition, fencing checks, version
-- checks and idempotency lookups must read the present, inside their SERIALIZABLE
-- transaction, and do (worldstate never uses AS OF SYSTEM TIME on its write path).
