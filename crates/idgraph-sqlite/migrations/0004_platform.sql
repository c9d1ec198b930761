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

-- Idempotency keys: the first response to a POST with an Idempotency-Key, replayed to repeats.
-- scope is the hash of the credential, so keys of different API keys never meet.
CREATE TABLE idempotency_keys (
    tenant_id    TEXT    NOT NULL,
    scope        TEXT    NOT NULL,
    key          TEXT    NOT NULL,
    fingerprint  TEXT    NOT NULL,
    state        TEXT    NOT NULL,
    status       INTEGER,
    content_type TEXT,
    body         BLOB,
    created_at   INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, scope, key)
) WITHOUT ROWID;

CREATE INDEX idempotency_by_age ON idempotency_keys (tenant_id, created_at);
