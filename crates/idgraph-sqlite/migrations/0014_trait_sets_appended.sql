-- Trait sets are appended in rowid order, their key kept in an index (decision 0029): a rowid
-- table's primary key is an index of its own, the table itself ordered by rowid.
-- Keyed by person, a set observed on a person who already exists (every matched import row,
-- every identify of a known user) went into the middle of the table with its whole row (~370
-- bytes), and each group commit rewrote a page for each; now only the key (~75 bytes) goes
-- there, and the row lands on the table's last page. Same columns, same uniqueness.
CREATE TABLE trait_sets_new (
    tenant_id    TEXT    NOT NULL,
    person_id    TEXT    NOT NULL,
    workspace    TEXT    NOT NULL,
    signal_id    TEXT    NOT NULL,
    form         INTEGER NOT NULL,
    observed     INTEGER NOT NULL,
    observations TEXT    NOT NULL,
    PRIMARY KEY (tenant_id, person_id, workspace, signal_id)
);

INSERT INTO trait_sets_new (tenant_id, person_id, workspace, signal_id, form, observed, observations)
    SELECT tenant_id, person_id, workspace, signal_id, form, observed, observations
    FROM trait_sets ORDER BY tenant_id, signal_id;

DROP TABLE trait_sets;
ALTER TABLE trait_sets_new RENAME TO trait_sets;
