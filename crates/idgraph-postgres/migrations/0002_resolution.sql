-- Persons, events, merges, conflicts, traits and identity settings.
-- identity_nodes keep pointing at the person an identifier was first attached to; a merge only
-- sets persons.merged_into (always the final survivor), so a merge costs O(persons merged), never
-- O(events), and stays reversible.

CREATE TABLE persons (
    tenant_id   text COLLATE "C"    NOT NULL,
    person_id   text COLLATE "C"    NOT NULL,
    merged_into text COLLATE "C",
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, person_id)
);

CREATE INDEX persons_by_survivor ON persons (tenant_id, merged_into);

CREATE TABLE events (
    tenant_id      text COLLATE "C"    NOT NULL,
    event_id       text COLLATE "C"    NOT NULL,
    workspace      text COLLATE "C"    NOT NULL,
    person_id      text COLLATE "C"    NOT NULL,
    kind           text COLLATE "C"    NOT NULL,
    name           text COLLATE "C",
    occurred_at    timestamptz NOT NULL,
    ingested_at    timestamptz NOT NULL,
    schema_version integer NOT NULL,
    message_id     text COLLATE "C"    NOT NULL,
    properties     text COLLATE "C"    NOT NULL,
    context        text COLLATE "C"    NOT NULL,
    -- The signal as resolution saw it, so the log can be replayed and explained:
    -- its position in the tenant's log, its normalized identifiers and where they came from.
    seq            bigint NOT NULL,
    identifiers    text COLLATE "C"    NOT NULL,
    source         text COLLATE "C"    NOT NULL,
    PRIMARY KEY (tenant_id, event_id)
);

CREATE UNIQUE INDEX events_by_seq ON events (tenant_id, seq);

CREATE UNIQUE INDEX events_by_message ON events (tenant_id, workspace, message_id);
CREATE INDEX events_by_person ON events (tenant_id, person_id, occurred_at, event_id);

CREATE TABLE merges (
    tenant_id   text COLLATE "C"    NOT NULL,
    merge_id    text COLLATE "C"    NOT NULL,
    survivor    text COLLATE "C"    NOT NULL,
    absorbed    text COLLATE "C"    NOT NULL,
    identifiers text COLLATE "C"    NOT NULL,
    signal_id   text COLLATE "C"    NOT NULL,
    rule        text COLLATE "C"    NOT NULL,
    at          timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, merge_id)
);

CREATE INDEX merges_by_survivor ON merges (tenant_id, survivor);
CREATE INDEX merges_by_absorbed ON merges (tenant_id, absorbed);

CREATE TABLE conflicts (
    tenant_id       text COLLATE "C"    NOT NULL,
    conflict_id     text COLLATE "C"    NOT NULL,
    person_id       text COLLATE "C"    NOT NULL,
    other_person_id text COLLATE "C",
    kind            text COLLATE "C"    NOT NULL,
    value           text COLLATE "C"    NOT NULL,
    rule            text COLLATE "C"    NOT NULL,
    signal_id       text COLLATE "C"    NOT NULL,
    at              timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, conflict_id)
);

CREATE INDEX conflicts_by_person ON conflicts (tenant_id, person_id);
CREATE INDEX conflicts_by_other ON conflicts (tenant_id, other_person_id);

-- Every observed trait value; the current value is derived by precedence at read time.
-- signal_id is the ULID of the event that carried it, so it also orders observations by ingest.
CREATE TABLE trait_values (
    tenant_id    text COLLATE "C"    NOT NULL,
    person_id    text COLLATE "C"    NOT NULL,
    workspace    text COLLATE "C"    NOT NULL,
    name         text COLLATE "C"    NOT NULL,
    value        text COLLATE "C"    NOT NULL,
    source_class text COLLATE "C"    NOT NULL,
    confidence   double precision    NOT NULL,
    observed_at  timestamptz NOT NULL,
    set_once     boolean NOT NULL,
    signal_id    text COLLATE "C"    NOT NULL,
    PRIMARY KEY (tenant_id, person_id, workspace, name, signal_id)
);

CREATE TABLE workspace_contacts (
    tenant_id  text COLLATE "C"    NOT NULL,
    person_id  text COLLATE "C"    NOT NULL,
    workspace  text COLLATE "C"    NOT NULL,
    first_seen timestamptz NOT NULL,
    last_seen  timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, person_id, workspace)
);

CREATE TABLE identity_settings (
    tenant_id  text COLLATE "C"    NOT NULL PRIMARY KEY,
    settings   text COLLATE "C"    NOT NULL,
    updated_at timestamptz NOT NULL
);
