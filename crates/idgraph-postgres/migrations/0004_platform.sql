-- The audit log: one append-only entry per authenticated management call.
CREATE TABLE audit_entries (
    tenant_id    text COLLATE "C" NOT NULL,
    entry_id     text COLLATE "C" NOT NULL,
    at           timestamptz      NOT NULL,
    actor        text COLLATE "C" NOT NULL,
    actor_tenant text COLLATE "C" NOT NULL,
    on_behalf_of text COLLATE "C",
    action       text COLLATE "C" NOT NULL,
    object       text COLLATE "C",
    status       integer          NOT NULL,
    latency_us   bigint           NOT NULL,
    PRIMARY KEY (tenant_id, entry_id)
);
