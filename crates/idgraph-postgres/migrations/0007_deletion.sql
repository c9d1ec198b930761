-- Deletion of persons (decision 0011). A request removes the group's persons rows, so every read
-- misses them at once, and records each member here until the purge removes what it left.
-- Rows stay after the purge (ids and times only): the record that the deletion was done.
CREATE TABLE deleted_persons (
    tenant_id    text COLLATE "C" NOT NULL,
    person_id    text COLLATE "C" NOT NULL,
    -- The canonical person the request named.
    requested_as text COLLATE "C" NOT NULL,
    requested_at timestamptz NOT NULL,
    purge_after  timestamptz NOT NULL,
    purged_at    timestamptz,
    PRIMARY KEY (tenant_id, person_id)
);

CREATE INDEX deleted_persons_due ON deleted_persons (tenant_id, purged_at, purge_after);

-- The random key of a tenant's tombstones; made by its first deletion, never changed.
CREATE TABLE erasure_salts (
    tenant_id  text COLLATE "C" NOT NULL PRIMARY KEY,
    salt       bytea NOT NULL,
    created_at timestamptz NOT NULL
);

-- Keyed hashes of erased identifiers: what stops a stale source from re-creating the person.
CREATE TABLE erased_identifiers (
    tenant_id text COLLATE "C" NOT NULL,
    tombstone text COLLATE "C" NOT NULL,
    erased_at timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, tombstone)
);

-- The purge finds the import rows a person came from by their outcome.
CREATE INDEX import_outcomes_by_person ON import_outcomes (tenant_id, person_id);
