-- Consent, suppression and contact records: append-only logs the compliance gate reads, and
-- named per-tenant settings. A lift or a revoke is a new row, never an update.

-- One row per subject an event applies to: an event on a person is recorded for every person
-- merged into it, under the same event_id.
CREATE TABLE consent_events (
    tenant_id   text COLLATE "C" NOT NULL,
    event_id    text COLLATE "C" NOT NULL,
    subject     text COLLATE "C" NOT NULL,
    recorded    bigint GENERATED ALWAYS AS IDENTITY,
    purpose     text COLLATE "C" NOT NULL,
    action      text COLLATE "C" NOT NULL,
    source      text COLLATE "C" NOT NULL,
    evidence    text,
    workspace   text COLLATE "C" NOT NULL,
    occurred_at timestamptz NOT NULL,
    recorded_at timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, event_id, subject)
);

CREATE INDEX consent_by_subject ON consent_events (tenant_id, subject);
CREATE INDEX consent_by_recorded ON consent_events (tenant_id, recorded);

-- Scope 'global' rows live under tenant_id '_global'; workspace is '' unless scope = workspace.
CREATE TABLE suppression_entries (
    tenant_id text COLLATE "C" NOT NULL,
    entry_id  text COLLATE "C" NOT NULL,
    recorded  bigint GENERATED ALWAYS AS IDENTITY,
    scope     text COLLATE "C" NOT NULL,
    workspace text COLLATE "C" NOT NULL,
    kind      text COLLATE "C" NOT NULL,
    value     text COLLATE "C" NOT NULL,
    reason    text COLLATE "C" NOT NULL,
    action    text COLLATE "C" NOT NULL,
    note      text,
    actor     text COLLATE "C" NOT NULL,
    at        timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, entry_id)
);

CREATE INDEX suppression_by_value ON suppression_entries (tenant_id, kind, value);
CREATE INDEX suppression_by_recorded ON suppression_entries (tenant_id, recorded);

CREATE TABLE contacts (
    tenant_id   text COLLATE "C" NOT NULL,
    contact_id  text COLLATE "C" NOT NULL,
    workspace   text COLLATE "C" NOT NULL,
    channel     text COLLATE "C" NOT NULL,
    from_addr   text COLLATE "C" NOT NULL,
    kind        text COLLATE "C" NOT NULL,
    value       text COLLATE "C" NOT NULL,
    vertical    text COLLATE "C",
    campaign    text COLLATE "C",
    at          timestamptz NOT NULL,
    recorded_at timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, contact_id)
);

CREATE INDEX contacts_by_address ON contacts (tenant_id, kind, value, at);

CREATE TABLE tenant_settings (
    tenant_id  text COLLATE "C" NOT NULL,
    name       text COLLATE "C" NOT NULL,
    settings   text COLLATE "C" NOT NULL,
    updated_at timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, name)
);
