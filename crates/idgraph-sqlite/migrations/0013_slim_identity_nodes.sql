-- Identity nodes keep only what finding an identifier's owners needs (decision 0028): the
-- lookup key, last_seen and value_id. Their provenance (source, confidence, first_seen,
-- signal_id) joins the sealed value in identity_values, which now has a row for every node
-- (sealed NULL: the node's `value` is the plain value). identity_nodes is written at random
-- places, so each byte of its rows is paid again on every group commit; identity_values is
-- written at its end, once. Nodes with a sealed value keep its id; the others get ids after
-- their tenant's last.
CREATE TABLE identity_values_new (
    tenant_id  TEXT    NOT NULL,
    value_id   INTEGER NOT NULL,
    sealed     TEXT,
    source     TEXT    NOT NULL,
    confidence REAL    NOT NULL,
    first_seen INTEGER NOT NULL,
    signal_id  TEXT,
    PRIMARY KEY (tenant_id, value_id)
) WITHOUT ROWID;

CREATE TABLE identity_nodes_new (
    tenant_id  TEXT    NOT NULL,
    kind       TEXT    NOT NULL,
    value      TEXT    NOT NULL,
    person_id  TEXT    NOT NULL,
    last_seen  INTEGER NOT NULL,
    value_id   INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, kind, value, person_id)
) WITHOUT ROWID;

CREATE TEMP TABLE nodes_moving AS
    SELECT n.tenant_id, n.kind, n.value, n.person_id, n.source, n.confidence, n.first_seen,
           n.last_seen, n.signal_id, v.sealed,
           COALESCE(n.sealed_id,
                    (SELECT COALESCE(MAX(m.value_id), 0) FROM identity_values m
                     WHERE m.tenant_id = n.tenant_id)
                    + row_number() OVER (PARTITION BY n.tenant_id, n.sealed_id IS NULL
                                         ORDER BY n.first_seen, n.kind, n.value, n.person_id))
               AS value_id
    FROM identity_nodes n
    LEFT JOIN identity_values v ON v.tenant_id = n.tenant_id AND v.value_id = n.sealed_id;

INSERT INTO identity_values_new (tenant_id, value_id, sealed, source, confidence, first_seen, signal_id)
    SELECT tenant_id, value_id, sealed, source, confidence, first_seen, signal_id
    FROM nodes_moving ORDER BY tenant_id, value_id;
INSERT INTO identity_nodes_new (tenant_id, kind, value, person_id, last_seen, value_id)
    SELECT tenant_id, kind, value, person_id, last_seen, value_id
    FROM nodes_moving ORDER BY tenant_id, kind, value, person_id;
DROP TABLE temp.nodes_moving;

DROP INDEX identity_nodes_by_person;
DROP TABLE identity_nodes;
DROP TABLE identity_values;
ALTER TABLE identity_nodes_new RENAME TO identity_nodes;
ALTER TABLE identity_values_new RENAME TO identity_values;
CREATE INDEX identity_nodes_by_person ON identity_nodes (tenant_id, person_id);
