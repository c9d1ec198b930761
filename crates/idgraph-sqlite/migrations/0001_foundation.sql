-- Tenancy, API keys and identity nodes. Every table leads with tenant_id.
-- Timestamps are INTEGER microseconds since the Unix epoch (UTC).

CREATE TABLE tenants (
    tenant_id  TEXT    NOT NULL PRIMARY KEY,
    name       TEXT    NOT NULL,
    created_at INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE workspaces (
    tenant_id    TEXT    NOT NULL REFERENCES tenants (tenant_id),
    name         TEXT    NOT NULL,
    workspace_id TEXT    NOT NULL,
    environment  TEXT    NOT NULL CHECK (environment IN ('prod', 'sandbox', 'test')),
    created_at   INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, name)
) WITHOUT ROWID;

CREATE UNIQUE INDEX workspaces_by_id ON workspaces (tenant_id, workspace_id);

CREATE TABLE api_keys (
    tenant_id          TEXT    NOT NULL REFERENCES tenants (tenant_id),
    key_id             TEXT    NOT NULL,
    name               TEXT    NOT NULL,
    key_hash           BLOB    NOT NULL,
    scopes             TEXT    NOT NULL,
    workspace          TEXT,
    rate_limit_per_sec INTEGER,
    is_master          INTEGER NOT NULL DEFAULT 0,
    created_at         INTEGER NOT NULL,
    revoked_at         INTEGER,
    PRIMARY KEY (tenant_id, key_id)
) WITHOUT ROWID;

-- The master key is found by its hash; only one row per database has is_master = 1.
CREATE INDEX api_keys_master ON api_keys (tenant_id, is_master, key_hash);

CREATE TABLE identity_nodes (
    tenant_id  TEXT    NOT NULL,
    kind       TEXT    NOT NULL,
    value      TEXT    NOT NULL,
    person_id  TEXT    NOT NULL,
    source     TEXT    NOT NULL,
    confidence REAL    NOT NULL,
    first_seen INTEGER NOT NULL,
    last_seen  INTEGER NOT NULL,
    signal_id  TEXT,
    PRIMARY KEY (tenant_id, kind, value, person_id)
) WITHOUT ROWID;

CREATE INDEX identity_nodes_by_person ON identity_nodes (tenant_id, person_id);
