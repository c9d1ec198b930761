-- Webhooks: subscriptions per workspace, the outbox of deliveries (written in the transaction
-- of the change each announces), and the log of every attempt.

CREATE TABLE webhook_subscriptions (
    tenant_id       TEXT    NOT NULL,
    subscription_id TEXT    NOT NULL,
    workspace       TEXT    NOT NULL,
    url             TEXT    NOT NULL,
    events          TEXT    NOT NULL,
    -- The signing secret sealed with the operator's data key (nonce, then ciphertext).
    secret_sealed   BLOB    NOT NULL,
    created_at      INTEGER NOT NULL,
    disabled_at     INTEGER,
    disabled_reason TEXT,
    deleted_at      INTEGER,
    PRIMARY KEY (tenant_id, subscription_id)
) WITHOUT ROWID;

CREATE TABLE webhook_deliveries (
    tenant_id        TEXT    NOT NULL,
    delivery_id      TEXT    NOT NULL,
    -- Position in the tenant's outbox: one endpoint's deliveries go out in this order.
    seq              INTEGER NOT NULL,
    subscription_id  TEXT    NOT NULL,
    event_type       TEXT    NOT NULL,
    payload          TEXT    NOT NULL,
    status           TEXT    NOT NULL,
    attempts         INTEGER NOT NULL,
    created_at       INTEGER NOT NULL,
    next_attempt_at  INTEGER,
    lease_owner      TEXT,
    lease_until      INTEGER,
    last_status_code INTEGER,
    last_error       TEXT,
    finished_at      INTEGER,
    PRIMARY KEY (tenant_id, delivery_id)
) WITHOUT ROWID;

CREATE UNIQUE INDEX webhook_deliveries_by_seq ON webhook_deliveries (tenant_id, seq);
CREATE INDEX webhook_deliveries_by_subscription
    ON webhook_deliveries (tenant_id, subscription_id, seq);
-- Only what is still to send: finding each endpoint's next delivery stays cheap however long
-- the log grows.
CREATE INDEX webhook_deliveries_pending
    ON webhook_deliveries (tenant_id, subscription_id, seq) WHERE status = 'pending';

CREATE TABLE webhook_attempts (
    tenant_id   TEXT    NOT NULL,
    delivery_id TEXT    NOT NULL,
    attempt     INTEGER NOT NULL,
    at          INTEGER NOT NULL,
    status_code INTEGER,
    latency_ms  INTEGER NOT NULL,
    error       TEXT,
    PRIMARY KEY (tenant_id, delivery_id, attempt)
) WITHOUT ROWID;
