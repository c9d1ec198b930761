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

-- Idempotency keys: the first response to a POST with an Idempotency-Key, replayed to repeats.
-- scope is the hash of the credential, so keys of different API keys never meet.
CREATE TABLE idempotency_keys (
    tenant_id    text COLLATE "C" NOT NULL,
    scope        text COLLATE "C" NOT NULL,
    key          text COLLATE "C" NOT NULL,
    fingerprint  text COLLATE "C" NOT NULL,
    state        text COLLATE "C" NOT NULL,
    status       integer,
    content_type text,
    body         bytea,
    created_at   timestamptz      NOT NULL,
    PRIMARY KEY (tenant_id, scope, key)
);

CREATE INDEX idempotency_by_age ON idempotency_keys (tenant_id, created_at);

-- Merges undone by an operator: the merge row stays for history; this says when, who and why.
CREATE TABLE unmerges (
    tenant_id text COLLATE "C" NOT NULL,
    merge_id  text COLLATE "C" NOT NULL,
    at        timestamptz      NOT NULL,
    actor     text COLLATE "C" NOT NULL,
    reason    text             NOT NULL,
    PRIMARY KEY (tenant_id, merge_id)
);

-- Pairs of persons resolution must not merge again (made by an unmerge, removable).
CREATE TABLE keep_apart (
    tenant_id  text COLLATE "C" NOT NULL,
    rule_id    text COLLATE "C" NOT NULL,
    person_a   text COLLATE "C" NOT NULL,
    person_b   text COLLATE "C" NOT NULL,
    merge_id   text COLLATE "C" NOT NULL,
    created_at timestamptz      NOT NULL,
    removed_at timestamptz,
    PRIMARY KEY (tenant_id, rule_id)
);

CREATE INDEX keep_apart_by_a ON keep_apart (tenant_id, person_a);
CREATE INDEX keep_apart_by_b ON keep_apart (tenant_id, person_b);
