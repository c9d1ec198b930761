-- Import jobs: every row of a file stored verbatim (LAND), then parsed, resolved and recorded
-- chunk by chunk. `landed` and `processed` are the stages' progress: a job interrupted anywhere
-- resumes after the last row whose stage committed.

CREATE TABLE import_jobs (
    tenant_id            text COLLATE "C" NOT NULL,
    job_id               text COLLATE "C" NOT NULL,
    workspace            text COLLATE "C" NOT NULL,
    mode                 text COLLATE "C" NOT NULL,
    status               text COLLATE "C" NOT NULL,
    mapping_name         text COLLATE "C" NOT NULL,
    mapping_version      integer NOT NULL,
    mapping_document     text NOT NULL,
    mapping_digest       text COLLATE "C" NOT NULL,
    options              text NOT NULL,
    header               bytea NOT NULL,
    delimiter            smallint NOT NULL,
    file_sha256          text COLLATE "C",
    file_bytes           bigint NOT NULL,
    landed               bigint NOT NULL,
    processed            bigint NOT NULL,
    rejected             bigint NOT NULL,
    persons_created      bigint NOT NULL,
    persons_merged       bigint NOT NULL,
    identifiers_attached bigint NOT NULL,
    conflicts            bigint NOT NULL,
    skipped              bigint NOT NULL,
    duplicates           bigint NOT NULL,
    suppressed           bigint NOT NULL,
    warnings             text NOT NULL,
    error                text,
    runner               text COLLATE "C",
    heartbeat            timestamptz,
    created_at           timestamptz NOT NULL,
    updated_at           timestamptz NOT NULL,
    finished_at          timestamptz,
    PRIMARY KEY (tenant_id, job_id)
);

CREATE INDEX import_jobs_by_status ON import_jobs (tenant_id, status);

CREATE TABLE import_rows (
    tenant_id text COLLATE "C" NOT NULL,
    job_id    text COLLATE "C" NOT NULL,
    row_no    bigint NOT NULL,
    bytes     bytea NOT NULL,
    defect    text COLLATE "C",
    PRIMARY KEY (tenant_id, job_id, row_no)
);

CREATE TABLE import_outcomes (
    tenant_id text COLLATE "C" NOT NULL,
    job_id    text COLLATE "C" NOT NULL,
    row_no    bigint NOT NULL,
    outcome   text COLLATE "C" NOT NULL,
    person_id text COLLATE "C",
    reason    text,
    PRIMARY KEY (tenant_id, job_id, row_no)
);

CREATE INDEX import_outcomes_by_outcome ON import_outcomes (tenant_id, job_id, outcome, row_no);
