-- A signal's trait observations become one row (decision 0021). trait_values held a row per
-- observation, keyed by person, workspace, name and signal: an import row observing ten traits
-- made ten random inserts into that key, each with its value sealed by itself. trait_sets holds
-- one row per signal, its observations a JSON array of
-- [name, value, source class, confidence, observed at (µs), set once].
-- form 1: the array sealed as one value (plain without a data key).
-- form 0: rows moved here from trait_values: the array plain and each value sealed by itself as
--         it was (a re-seal rewrites them in form 1).
-- observed: how many observations the array holds (a deletion reports them).
-- A signal's set has the person and workspace of the signal's event, and moves with it.
CREATE TABLE trait_sets (
    tenant_id    TEXT    NOT NULL,
    person_id    TEXT    NOT NULL,
    workspace    TEXT    NOT NULL,
    signal_id    TEXT    NOT NULL,
    form         INTEGER NOT NULL,
    observed     INTEGER NOT NULL,
    observations TEXT    NOT NULL,
    PRIMARY KEY (tenant_id, person_id, workspace, signal_id)
) WITHOUT ROWID;

INSERT INTO trait_sets (tenant_id, person_id, workspace, signal_id, form, observed, observations)
    SELECT tenant_id, person_id, workspace, signal_id, 0, COUNT(*),
           json_group_array(json_array(name, value, source_class, confidence, observed_at,
                                       CASE WHEN set_once THEN json('true') ELSE json('false') END))
    FROM trait_values
    GROUP BY tenant_id, person_id, workspace, signal_id;

DROP TABLE trait_values;
