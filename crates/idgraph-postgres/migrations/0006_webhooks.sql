-- Webhooks: subscriptions per workspace, the outbox of deliveries (written in the transaction
-- of the change each announces), and the log of every attempt.

CREATE TABLE webhook_subscriptions (
    tenant_id       text COLLATE "C" NOT NULL,
    subscription_id text COLLATE "C" NOT NULL,
    workspace       text COLLATE "C" NOT NULL,
    url             text NOT NULL,
    events          text NOT NULL,
    -- The signing secret sealed with the operator's data key (nonce, then ciphertext).
    secret_sealed   bytea NOT NULL,
    created_at      timestamptz NOT NULL,
    disabled_at     timestamptz,
    disabled_reason text,
    deleted_at      timestamptz,
    PRIMARY KEY (tenant_id, subscription_id)
);

CREATE TABLE webhook_deliveries (
    tenant_id        text COLLATE "C" NOT NULL,
    delivery_id      text COLLATE "C" NOT NULL,
    -- Position in the outbox: one endpoint's deliveries go out in this order. A sequence, not
    -- MAX + 1, so concurrent writers of a tenant never wait on each other for it.
    seq              bigint GENERATED ALWAYS AS IDENTITY,
    subscription_id  text COLLATE "C" NOT NULL,
    event_type       text COLLATE "C" NOT NULL,
    payload          text NOT NULL,
    status           text COLLATE "C" NOT NULL,
    attempts         integer NOT NULL,
    created_at       timestamptz NOT NULL,
    next_attempt_at  timestamptz,
    lease_owner      text COLLATE "C",
    lease_until      timestamptz,
    last_status_code integer,
    last_error       text,
    finished_at      timestamptz,
    PRIMARY KEY (tenant_id, delivery_id)
);

CREATE UNIQUE INDEX webhook_deliveries_by_seq ON webhook_deliveries (tenant_id, seq);
CREATE INDEX webhook_deliveries_by_subscription
    ON webhook_deliveries (tenant_id, subscription_id, seq);
-- Only what is still to send: finding each endpoint's next delivery stays cheap however long
-- the log grows.
CREATE INDEX webhook_deliveries_pending
    ON webhook_deliveries (tenant_id, subscription_id, seq) WHERE status = 'pending';

CREATE TABLE webhook_attempts (
    tenant_id   text COLLATE "C" NOT NULL,
    delivery_id text COLLATE "C" NOT NULL,
    attempt     integer NOT NULL,
    at          timestamptz NOT NULL,
    status_code integer,
    latency_ms  bigint NOT NULL,
    error       text,
    PRIMARY KEY (tenant_id, delivery_id, attempt)
);
