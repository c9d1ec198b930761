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

-- Merges undone by an operator: the merge row stays for history; this says when, who and why.
CREATE TABLE unmerges (
    tenant_id TEXT    NOT NULL,
    merge_id  TEXT    NOT NULL,
    at        INTEGER NOT NULL,
    actor     TEXT    NOT NULL,
    reason    TEXT    NOT NULL,
    PRIMARY KEY (tenant_id, merge_id)
) WITHOUT ROWID;

-- Pairs of persons resolution must not merge again (made by an unmerge, removable).
CREATE TABLE keep_apart (
    tenant_id  TEXT    NOT NULL,
    rule_id    TEXT    NOT NULL,
    person_a   TEXT    NOT NULL,
    person_b   TEXT    NOT NULL,
    merge_id   TEXT    NOT NULL,
    created_at INTEGER NOT NULL,
    removed_at INTEGER,
    PRIMARY KEY (tenant_id, rule_id)
) WITHOUT ROWID;

CREATE INDEX keep_apart_by_a ON keep_apart (tenant_id, person_a);
CREATE INDEX keep_apart_by_b ON keep_apart (tenant_id, person_b);
