-- Tenancy, API keys and identity nodes.
-- tenant_id leads every primary key and every index so that the schema can be distributed by
-- tenant (e.g. Citus `create_distributed_table(..., 'tenant_id')`) without rewriting queries.
-- Key and name columns use the "C" collation so ordering (and keyset paging) matches SQLite.

CREATE TABLE tenants (
    tenant_id  text COLLATE "C" NOT NULL,
    name       text             NOT NULL,
    created_at timestamptz      NOT NULL,
    PRIMARY KEY (tenant_id)
);

CREATE TABLE workspaces (
    tenant_id    text COLLATE "C" NOT NULL REFERENCES tenants (tenant_id),
    name         text COLLATE "C" NOT NULL,
    workspace_id text COLLATE "C" NOT NULL,
    environment  text             NOT NULL CHECK (environment IN ('prod', 'sandbox', 'test')),
    created_at   timestamptz      NOT NULL,
    PRIMARY KEY (tenant_id, name)
);

CREATE UNIQUE INDEX workspaces_by_id ON workspaces (tenant_id, workspace_id);

CREATE TABLE api_keys (
    tenant_id          text COLLATE "C" NOT NULL REFERENCES tenants (tenant_id),
    key_id             text COLLATE "C" NOT NULL,
    name               text             NOT NULL,
    key_hash           bytea            NOT NULL,
    scopes             text             NOT NULL,
    workspace          text COLLATE "C",
    rate_limit_per_sec integer,
    is_master          boolean          NOT NULL DEFAULT false,
    created_at         timestamptz      NOT NULL,
    revoked_at         timestamptz,
    PRIMARY KEY (tenant_id, key_id)
);

CREATE INDEX api_keys_master ON api_keys (tenant_id, is_master, key_hash);

CREATE TABLE identity_nodes (
    tenant_id  text COLLATE "C" NOT NULL,
    kind       text COLLATE "C" NOT NULL,
    value      text COLLATE "C" NOT NULL,
    person_id  text COLLATE "C" NOT NULL,
    source     text             NOT NULL,
    confidence double precision NOT NULL,
    first_seen timestamptz      NOT NULL,
    last_seen  timestamptz      NOT NULL,
    signal_id  text,
    PRIMARY KEY (tenant_id, kind, value, person_id)
);

CREATE INDEX identity_nodes_by_person ON identity_nodes (tenant_id, person_id);
