-- Consent, suppression and contact records: append-only logs the compliance gate reads, and
-- named per-tenant settings. A lift or a revoke is a new row, never an update.

-- One row per subject an event applies to: an event on a person is recorded for every person
-- merged into it, under the same event_id.
CREATE TABLE consent_events (
    tenant_id   TEXT    NOT NULL,
    event_id    TEXT    NOT NULL,
    subject     TEXT    NOT NULL,
    recorded    INTEGER NOT NULL,
    purpose     TEXT    NOT NULL,
    action      TEXT    NOT NULL,
    source      TEXT    NOT NULL,
    evidence    TEXT,
    workspace   TEXT    NOT NULL,
    occurred_at INTEGER NOT NULL,
    recorded_at INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, event_id, subject)
) WITHOUT ROWID;

CREATE INDEX consent_by_subject ON consent_events (tenant_id, subject);
CREATE INDEX consent_by_recorded ON consent_events (tenant_id, recorded);

-- Scope 'global' rows live under tenant_id '_global'; workspace is '' unless scope = workspace.
CREATE TABLE suppression_entries (
    tenant_id TEXT    NOT NULL,
    entry_id  TEXT    NOT NULL,
    recorded  INTEGER NOT NULL,
    scope     TEXT    NOT NULL,
    workspace TEXT    NOT NULL,
    kind      TEXT    NOT NULL,
    value     TEXT    NOT NULL,
    reason    TEXT    NOT NULL,
    action    TEXT    NOT NULL,
    note      TEXT,
    actor     TEXT    NOT NULL,
    at        INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, entry_id)
) WITHOUT ROWID;

CREATE INDEX suppression_by_value ON suppression_entries (tenant_id, kind, value);
CREATE INDEX suppression_by_recorded ON suppression_entries (tenant_id, recorded);

CREATE TABLE contacts (
    tenant_id   TEXT    NOT NULL,
    contact_id  TEXT    NOT NULL,
    workspace   TEXT    NOT NULL,
    channel     TEXT    NOT NULL,
    from_addr   TEXT    NOT NULL,
    kind        TEXT    NOT NULL,
    value       TEXT    NOT NULL,
    vertical    TEXT,
    campaign    TEXT,
    at          INTEGER NOT NULL,
    recorded_at INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, contact_id)
) WITHOUT ROWID;

CREATE INDEX contacts_by_address ON contacts (tenant_id, kind, value, at);

CREATE TABLE tenant_settings (
    tenant_id  TEXT    NOT NULL,
    name       TEXT    NOT NULL,
    settings   TEXT    NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, name)
) WITHOUT ROWID;
