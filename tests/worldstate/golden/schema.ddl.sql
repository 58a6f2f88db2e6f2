-- Statements on the schema (DDL), compiled with the cockroachdb dialect (tests/worldstate/test_cockroach_sql.py).
-- Regenerate: WORLDSTATE_UPDATE_GOLDEN=1 pytest tests/worldstate/test_cockroach_sql.py

CREATE TABLE ws_assignments (
	region_key BIGINT NOT NULL,
	server_id TEXT,
	assigned_at DOUBLE PRECISION NOT NULL,
	PRIMARY KEY (region_key)
);

CREATE TABLE ws_checkpoint_chunks (
	checkpoint_id VARCHAR(36) NOT NULL,
	table_name VARCHAR(64) NOT NULL,
	chunk_no INTEGER NOT NULL,
	row_count INTEGER NOT NULL,
	body BYTEA NOT NULL,
	PRIMARY KEY (checkpoint_id, table_name, chunk_no)
);

CREATE TABLE ws_checkpoints (
	checkpoint_id VARCHAR(36) NOT NULL,
	name TEXT NOT NULL,
	status VARCHAR(16) NOT NULL,
	created_at DOUBLE PRECISION NOT NULL,
	created_by TEXT NOT NULL,
	source TEXT NOT NULL,
	schema_version INTEGER NOT NULL,
	scope TEXT,
	regions BIGINT NOT NULL,
	objects BIGINT NOT NULL,
	rows BIGINT NOT NULL,
	bytes BIGINT NOT NULL,
	raw_bytes BIGINT NOT NULL,
	heads TEXT NOT NULL,
	tables TEXT NOT NULL,
	meta TEXT NOT NULL,
	PRIMARY KEY (checkpoint_id)
);

CREATE INDEX ws_checkpoints_created ON ws_checkpoints (created_at);

CREATE INDEX ws_checkpoints_name ON ws_checkpoints (name);

CREATE TABLE ws_conflicts (
	decision_id VARCHAR(36) NOT NULL,
	region_key BIGINT,
	conflict_type VARCHAR(32) NOT NULL,
	rule VARCHAR(32) NOT NULL,
	subject TEXT NOT NULL,
	winners TEXT NOT NULL,
	losers TEXT NOT NULL,
	reason TEXT NOT NULL,
	server_id TEXT NOT NULL,
	at DOUBLE PRECISION NOT NULL,
	PRIMARY KEY (decision_id)
);

CREATE INDEX ws_conflicts_at ON ws_conflicts (at);

CREATE TABLE ws_coordinator (
	name VARCHAR(64) NOT NULL,
	owner TEXT NOT NULL,
	epoch BIGINT NOT NULL,
	expires_at DOUBLE PRECISION NOT NULL,
	acquired_at DOUBLE PRECISION NOT NULL,
	PRIMARY KEY (name)
);

CREATE TABLE ws_events (
	region_key BIGINT NOT NULL,
	origin TEXT NOT NULL,
	seq BIGINT NOT NULL,
	op_id VARCHAR(36) NOT NULL,
	body BYTEA NOT NULL,
	at DOUBLE PRECISION NOT NULL,
	PRIMARY KEY (region_key, origin, seq)
);

CREATE UNIQUE INDEX ws_events_origin_seq ON ws_events (origin, seq);

CREATE TABLE ws_incidents (
	incident_id VARCHAR(36) NOT NULL,
	region_key BIGINT NOT NULL,
	kind VARCHAR(32) NOT NULL,
	detail TEXT NOT NULL,
	at DOUBLE PRECISION NOT NULL,
	PRIMARY KEY (incident_id)
);

CREATE INDEX ws_incidents_region ON ws_incidents (region_key);

CREATE TABLE ws_inventories (
	inventory_id TEXT NOT NULL,
	item TEXT NOT NULL,
	count BIGINT NOT NULL,
	PRIMARY KEY (inventory_id, item)
);

CREATE TABLE ws_inventory_versions (
	inventory_id TEXT NOT NULL,
	version BIGINT NOT NULL,
	PRIMARY KEY (inventory_id)
);

CREATE TABLE ws_items (
	region_key BIGINT NOT NULL,
	item_id TEXT NOT NULL,
	picked_by TEXT NOT NULL,
	op_id VARCHAR(36) NOT NULL,
	at DOUBLE PRECISION NOT NULL,
	PRIMARY KEY (region_key, item_id)
);

CREATE UNIQUE INDEX ws_items_id ON ws_items (item_id);

CREATE TABLE ws_leases (
	region_key BIGINT NOT NULL,
	owner TEXT NOT NULL,
	epoch BIGINT NOT NULL,
	expires_at DOUBLE PRECISION NOT NULL,
	acquired_at DOUBLE PRECISION NOT NULL,
	PRIMARY KEY (region_key)
);

CREATE TABLE ws_members (
	server_id TEXT NOT NULL,
	incarnation BIGINT NOT NULL,
	state VARCHAR(16) NOT NULL,
	authoritative BOOLEAN NOT NULL,
	started_at DOUBLE PRECISION NOT NULL,
	heartbeat_at DOUBLE PRECISION NOT NULL,
	generation BIGINT NOT NULL,
	"view" TEXT NOT NULL,
	load TEXT NOT NULL,
	PRIMARY KEY (server_id)
);

CREATE TABLE ws_membership (
	name VARCHAR(64) NOT NULL,
	generation BIGINT NOT NULL,
	members TEXT NOT NULL,
	changed_at DOUBLE PRECISION NOT NULL,
	changed_by TEXT NOT NULL,
	PRIMARY KEY (name)
);

CREATE TABLE ws_meta (
	name VARCHAR(64) NOT NULL,
	value TEXT NOT NULL,
	PRIMARY KEY (name)
);

CREATE TABLE ws_objects (
	region_key BIGINT NOT NULL,
	object_id TEXT NOT NULL,
	kind TEXT NOT NULL,
	lox DOUBLE PRECISION NOT NULL,
	loy DOUBLE PRECISION NOT NULL,
	loz DOUBLE PRECISION NOT NULL,
	hix DOUBLE PRECISION NOT NULL,
	hiy DOUBLE PRECISION NOT NULL,
	hiz DOUBLE PRECISION NOT NULL,
	data TEXT NOT NULL,
	op_id VARCHAR(36) NOT NULL,
	checksum BYTEA NOT NULL,
	PRIMARY KEY (region_key, object_id)
);

CREATE UNIQUE INDEX ws_objects_id ON ws_objects (object_id);

CREATE TABLE ws_outcomes (
	op_id VARCHAR(36) NOT NULL,
	op_type VARCHAR(64) NOT NULL,
	status VARCHAR(16) NOT NULL,
	version BIGINT,
	reason TEXT,
	winner_op_id VARCHAR(36),
	server_id TEXT NOT NULL,
	region_key BIGINT,
	at DOUBLE PRECISION NOT NULL,
	digest VARCHAR(32),
	PRIMARY KEY (op_id)
);

CREATE TABLE ws_region_history (
	region_key BIGINT NOT NULL,
	version BIGINT NOT NULL,
	epoch BIGINT NOT NULL,
	object_count INTEGER NOT NULL,
	payload BYTEA NOT NULL,
	checksum BYTEA NOT NULL,
	write_id VARCHAR(36) NOT NULL,
	stored_by TEXT NOT NULL,
	stored_at DOUBLE PRECISION NOT NULL,
	PRIMARY KEY (region_key, version)
);

CREATE TABLE ws_regions (
	region_key BIGINT NOT NULL,
	version BIGINT NOT NULL,
	payload_version BIGINT NOT NULL,
	epoch BIGINT NOT NULL,
	object_count INTEGER NOT NULL,
	payload BYTEA NOT NULL,
	checksum BYTEA NOT NULL,
	write_id VARCHAR(36) NOT NULL,
	stored_by TEXT NOT NULL,
	stored_at DOUBLE PRECISION NOT NULL,
	PRIMARY KEY (region_key)
);

CREATE TABLE ws_resources (
	region_key BIGINT NOT NULL,
	resource_id TEXT NOT NULL,
	x DOUBLE PRECISION NOT NULL,
	y DOUBLE PRECISION NOT NULL,
	z DOUBLE PRECISION NOT NULL,
	capacity DOUBLE PRECISION NOT NULL,
	remaining DOUBLE PRECISION NOT NULL,
	PRIMARY KEY (region_key, resource_id)
);

CREATE UNIQUE INDEX ws_resources_id ON ws_resources (resource_id);

CREATE TABLE ws_shard_leases (
	shard BIGINT NOT NULL,
	owner TEXT NOT NULL,
	epoch BIGINT NOT NULL,
	expires_at DOUBLE PRECISION NOT NULL,
	acquired_at DOUBLE PRECISION NOT NULL,
	PRIMARY KEY (shard)
);

CREATE TABLE ws_terrain (
	region_key BIGINT NOT NULL,
	op_id VARCHAR(36) NOT NULL,
	cx DOUBLE PRECISION NOT NULL,
	cy DOUBLE PRECISION NOT NULL,
	cz DOUBLE PRECISION NOT NULL,
	radius DOUBLE PRECISION NOT NULL,
	delta DOUBLE PRECISION NOT NULL,
	hlc BIGINT NOT NULL,
	PRIMARY KEY (region_key, op_id)
);
