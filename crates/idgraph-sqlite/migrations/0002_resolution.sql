-- Persons, events, merges, conflicts, traits and identity settings.
-- identity_nodes keep pointing at the person an identifier was first attached to; a merge only
-- sets persons.merged_into (always the final survivor), so a merge costs O(persons merged), never
-- O(events), and stays reversible.

CREATE TABLE persons (
    tenant_id   TEXT    NOT NULL,
    person_id   TEXT    NOT NULL,
    merged_into TEXT,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, person_id)
) WITHOUT ROWID;

CREATE INDEX persons_by_survivor ON persons (tenant_id, merged_into);

CREATE TABLE events (
    tenant_id      TEXT    NOT NULL,
    event_id       TEXT    NOT NULL,
    workspace      TEXT    NOT NULL,
    person_id      TEXT    NOT NULL,
    kind           TEXT    NOT NULL,
    name           TEXT,
    occurred_at    INTEGER NOT NULL,
    ingested_at    INTEGER NOT NULL,
    schema_version INTEGER NOT NULL,
    message_id     TEXT    NOT NULL,
    properties     TEXT    NOT NULL,
    context        TEXT    NOT NULL,
    -- The signal as resolution saw it, so the log can be replayed and explained:
    -- its position in the tenant's log, its normalized identifiers and where they came from.
    seq            INTEGER NOT NULL,
    identifiers    TEXT    NOT NULL,
    source         TEXT    NOT NULL,
    PRIMARY KEY (tenant_id, event_id)
) WITHOUT ROWID;

CREATE UNIQUE INDEX events_by_seq ON events (tenant_id, seq);

CREATE UNIQUE INDEX events_by_message ON events (tenant_id, workspace, message_id);
CREATE INDEX events_by_person ON events (tenant_id, person_id, occurred_at, event_id);

CREATE TABLE merges (
    tenant_id   TEXT    NOT NULL,
    merge_id    TEXT    NOT NULL,
    survivor    TEXT    NOT NULL,
    absorbed    TEXT    NOT NULL,
    identifiers TEXT    NOT NULL,
    signal_id   TEXT    NOT NULL,
    rule        TEXT    NOT NULL,
    at          INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, merge_id)
) WITHOUT ROWID;

CREATE INDEX merges_by_survivor ON merges (tenant_id, survivor);
CREATE INDEX merges_by_absorbed ON merges (tenant_id, absorbed);

CREATE TABLE conflicts (
    tenant_id       TEXT    NOT NULL,
    conflict_id     TEXT    NOT NULL,
    person_id       TEXT    NOT NULL,
    other_person_id TEXT,
    kind            TEXT    NOT NULL,
    value           TEXT    NOT NULL,
    rule            TEXT    NOT NULL,
    signal_id       TEXT    NOT NULL,
    at              INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, conflict_id)
) WITHOUT ROWID;

CREATE INDEX conflicts_by_person ON conflicts (tenant_id, person_id);
CREATE INDEX conflicts_by_other ON conflicts (tenant_id, other_person_id);

-- Every observed trait value; the current value is derived by precedence at read time.
-- signal_id is the ULID of the event that carried it, so it also orders observations by ingest.
CREATE TABLE trait_values (
    tenant_id    TEXT    NOT NULL,
    person_id    TEXT    NOT NULL,
    workspace    TEXT    NOT NULL,
    name         TEXT    NOT NULL,
    value        TEXT    NOT NULL,
    source_class TEXT    NOT NULL,
    confidence   REAL    NOT NULL,
    observed_at  INTEGER NOT NULL,
    set_once     INTEGER NOT NULL,
    signal_id    TEXT    NOT NULL,
    PRIMARY KEY (tenant_id, person_id, workspace, name, signal_id)
) WITHOUT ROWID;

CREATE TABLE workspace_contacts (
    tenant_id  TEXT    NOT NULL,
    person_id  TEXT    NOT NULL,
    workspace  TEXT    NOT NULL,
    first_seen INTEGER NOT NULL,
    last_seen  INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, person_id, workspace)
) WITHOUT ROWID;

CREATE TABLE identity_settings (
    tenant_id  TEXT    NOT NULL PRIMARY KEY,
    settings   TEXT    NOT NULL,
    updated_at INTEGER NOT NULL
) WITHOUT ROWID;
