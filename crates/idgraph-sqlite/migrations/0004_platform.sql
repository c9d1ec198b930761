-- The audit log: one append-only entry per authenticated management call.
CREATE TABLE audit_entries (
    tenant_id    TEXT    NOT NULL,
    entry_id     TEXT    NOT NULL,
    at           INTEGER NOT NULL,
    actor        TEXT    NOT NULL,
    actor_tenant TEXT    NOT NULL,
    on_behalf_of TEXT,
    action       TEXT    NOT NULL,
    object       TEXT,
    status       INTEGER NOT NULL,
    latency_us   INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, entry_id)
) WITHOUT ROWID;
