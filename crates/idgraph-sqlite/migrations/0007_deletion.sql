-- Deletion of persons (decision 0011). A request removes the group's persons rows, so every read
-- misses them at once, and records each member here until the purge removes what it left.
-- Rows stay after the purge (ids and times only): the record that the deletion was done.
CREATE TABLE deleted_persons (
    tenant_id    TEXT    NOT NULL,
    person_id    TEXT    NOT NULL,
    -- The canonical person the request named.
    requested_as TEXT    NOT NULL,
    requested_at INTEGER NOT NULL,
    purge_after  INTEGER NOT NULL,
    purged_at    INTEGER,
    PRIMARY KEY (tenant_id, person_id)
) WITHOUT ROWID;

CREATE INDEX deleted_persons_due ON deleted_persons (tenant_id, purged_at, purge_after);

-- The random key of a tenant's tombstones; made by its first deletion, never changed.
CREATE TABLE erasure_salts (
    tenant_id  TEXT    NOT NULL PRIMARY KEY,
    salt       BLOB    NOT NULL,
    created_at INTEGER NOT NULL
) WITHOUT ROWID;

-- Keyed hashes of erased identifiers: what stops a stale source from re-creating the person.
CREATE TABLE erased_identifiers (
    tenant_id TEXT    NOT NULL,
    tombstone TEXT    NOT NULL,
    erased_at INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, tombstone)
) WITHOUT ROWID;

-- The purge finds the import rows a person came from by their outcome.
CREATE INDEX import_outcomes_by_person ON import_outcomes (tenant_id, person_id);
