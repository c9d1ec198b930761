-- PII at rest (decision 0013). With a data key, identity_nodes.value holds the identifier's
-- blind index (the lookup and uniqueness column) and value_sealed the value sealed under a
-- data-encryption key; without one (or before the first start with one), value_sealed is NULL
-- and value is the plain value. Trait values and event payloads are sealed in their own
-- columns (the sealed text form is self-describing), so they need no schema change.
ALTER TABLE identity_nodes ADD COLUMN value_sealed TEXT;
