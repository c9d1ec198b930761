-- Import jobs: every row of a file stored verbatim (LAND), then parsed, resolved and recorded
-- chunk by chunk. `landed` and `processed` are the stages' progress: a job interrupted anywhere
-- resumes after the last row whose stage committed.

CREATE TABLE import_jobs (
    tenant_id            TEXT    NOT NULL,
    job_id               TEXT    NOT NULL,
    workspace            TEXT    NOT NULL,
    mode                 TEXT    NOT NULL,
    status               TEXT    NOT NULL,
    mapping_name         TEXT    NOT NULL,
    mapping_version      INTEGER NOT NULL,
    mapping_document     TEXT    NOT NULL,
    mapping_digest       TEXT    NOT NULL,
    options              TEXT    NOT NULL,
    header               BLOB    NOT NULL,
    delimiter            INTEGER NOT NULL,
    file_sha256          TEXT,
    file_bytes           INTEGER NOT NULL,
    landed               INTEGER NOT NULL,
    processed            INTEGER NOT NULL,
    rejected             INTEGER NOT NULL,
    persons_created      INTEGER NOT NULL,
    persons_merged       INTEGER NOT NULL,
    identifiers_attached INTEGER NOT NULL,
    conflicts            INTEGER NOT NULL,
    skipped              INTEGER NOT NULL,
    duplicates           INTEGER NOT NULL,
    suppressed           INTEGER NOT NULL,
    warnings             TEXT    NOT NULL,
    error                TEXT,
    runner               TEXT,
    heartbeat            INTEGER,
    created_at           INTEGER NOT NULL,
    updated_at           INTEGER NOT NULL,
    finished_at          INTEGER,
    PRIMARY KEY (tenant_id, job_id)
) WITHOUT ROWID;

CREATE INDEX import_jobs_by_status ON import_jobs (tenant_id, status);

-- A rowid table: rows are kilobytes wide, which WITHOUT ROWID tables handle badly.
CREATE TABLE import_rows (
    tenant_id TEXT    NOT NULL,
    job_id    TEXT    NOT NULL,
    row_no    INTEGER NOT NULL,
    bytes     BLOB    NOT NULL,
    defect    TEXT,
    PRIMARY KEY (tenant_id, job_id, row_no)
);

CREATE TABLE import_outcomes (
    tenant_id TEXT    NOT NULL,
    job_id    TEXT    NOT NULL,
    row_no    INTEGER NOT NULL,
    outcome   TEXT    NOT NULL,
    person_id TEXT,
    reason    TEXT,
    PRIMARY KEY (tenant_id, job_id, row_no)
) WITHOUT ROWID;

CREATE INDEX import_outcomes_by_outcome ON import_outcomes (tenant_id, job_id, outcome, row_no);
