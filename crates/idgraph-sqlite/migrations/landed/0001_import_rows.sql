-- An import's rows as they landed (decision 0022): the file beside the main one, written by a
-- writer thread of its own, so that landing a file does not queue on the writer that resolves
-- it. Same table as it was in the main file (migrations 0005 and 0012 there).
CREATE TABLE import_rows (
    tenant_id TEXT    NOT NULL,
    job_id    TEXT    NOT NULL,
    row_no    INTEGER NOT NULL,
    bytes     BLOB    NOT NULL,
    defect    TEXT,
    PRIMARY KEY (tenant_id, job_id, row_no)
);
