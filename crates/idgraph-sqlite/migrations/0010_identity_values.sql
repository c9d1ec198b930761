-- Sealed identifier values move out of identity_nodes into a table of their own (decision
-- 0015). identity_nodes is keyed by the blind index, so its rows sit at random places and every
-- signal rewrites one of its pages (last_seen); a sealed value in the row (~100 bytes) made that
-- table half again as many pages, and each group commit dirtied that many more. identity_values
-- is append-only in value_id order per tenant, so its writes land on its last page.
-- identity_nodes.sealed_id names the node's sealed value; NULL means `value` is the plain value
-- (a store without a data key, or one not yet re-sealed).
CREATE TABLE identity_values (
    tenant_id TEXT    NOT NULL,
    value_id  INTEGER NOT NULL,
    sealed    TEXT    NOT NULL,
    PRIMARY KEY (tenant_id, value_id)
) WITHOUT ROWID;

ALTER TABLE identity_nodes ADD COLUMN sealed_id INTEGER;

CREATE TEMP TABLE sealed_nodes AS
    SELECT tenant_id, kind, value, person_id, value_sealed,
           row_number() OVER (PARTITION BY tenant_id ORDER BY first_seen, kind, value, person_id) AS value_id
    FROM identity_nodes WHERE value_sealed IS NOT NULL;
CREATE UNIQUE INDEX temp.sealed_nodes_by_key ON sealed_nodes (tenant_id, kind, value, person_id);

INSERT INTO identity_values (tenant_id, value_id, sealed)
    SELECT tenant_id, value_id, value_sealed FROM sealed_nodes;
UPDATE identity_nodes SET sealed_id = (
    SELECT s.value_id FROM sealed_nodes s
    WHERE s.tenant_id = identity_nodes.tenant_id AND s.kind = identity_nodes.kind
      AND s.value = identity_nodes.value AND s.person_id = identity_nodes.person_id)
WHERE value_sealed IS NOT NULL;
DROP TABLE temp.sealed_nodes;

ALTER TABLE identity_nodes DROP COLUMN value_sealed;
