-- PII at rest for the compliance logs (decision 0014). With a data key, the columns lookups
-- compare (consent_events.subject, suppression_entries.value, contacts.value) hold the blind
-- index of the address and the new *_sealed columns its value sealed; without one (or before the
-- first start with one) *_sealed is NULL and the lookup column holds the plain value. A
-- suppression replaced by its tombstone keeps *_sealed NULL. Existing indexes are unchanged.
ALTER TABLE consent_events ADD COLUMN subject_sealed TEXT;
ALTER TABLE suppression_entries ADD COLUMN value_sealed TEXT;
ALTER TABLE contacts ADD COLUMN value_sealed TEXT;
