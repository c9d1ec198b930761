//! Import jobs on PostgreSQL: jobs, landed rows (bulk-inserted with UNNEST) and row outcomes.
//! Progress moves only by compare-and-set, so a repeated batch or chunk, from this process or
//! another one sharing the database, changes nothing twice.

use std::time::SystemTime;

use deadpool_postgres::GenericClient;
use idgraph_core::tenancy::WorkspaceName;
use idgraph_store::{
    ImportCounts, ImportJob, ImportMode, ImportStatus, JobMapping, LandedRow, Page, PageRequest,
    RecordedChunk, RowOutcome, SignalEffects, StoreError, StoreResult, decode_warnings,
    derived_id_range, encode_warnings,
};
use jiff::Timestamp;
use tokio_postgres::Row;

use crate::PostgresStore;
use crate::codec::{map_error, to_sql_time};

const JOB_COLUMNS: &str = "job_id, workspace, mode, status, mapping_name, mapping_version, \
    mapping_document, mapping_digest, options, header, delimiter, file_sha256, file_bytes, landed, \
    processed, rejected, persons_created, persons_merged, identifiers_attached, conflicts, skipped, \
    duplicates, suppressed, warnings, error, runner, heartbeat, created_at, updated_at, finished_at";

fn corrupt(what: impl std::fmt::Display) -> StoreError {
    StoreError::Other(format!("unreadable import row: {what}"))
}

fn time(row: &Row, index: usize) -> StoreResult<Timestamp> {
    let raw: SystemTime = row.try_get(index).map_err(map_error)?;
    Timestamp::try_from(raw).map_err(corrupt)
}

fn optional_time(row: &Row, index: usize) -> StoreResult<Option<Timestamp>> {
    let raw: Option<SystemTime> = row.try_get(index).map_err(map_error)?;
    raw.map(|t| Timestamp::try_from(t).map_err(corrupt))
        .transpose()
}

fn count(row: &Row, index: usize) -> StoreResult<u64> {
    let raw: i64 = row.try_get(index).map_err(map_error)?;
    u64::try_from(raw).map_err(corrupt)
}

fn get<'a, T: tokio_postgres::types::FromSql<'a>>(row: &'a Row, index: usize) -> StoreResult<T> {
    row.try_get(index).map_err(map_error)
}

fn job(row: &Row) -> StoreResult<ImportJob> {
    let workspace: String = get(row, 1)?;
    let mode: String = get(row, 2)?;
    let status: String = get(row, 3)?;
    let version: i32 = get(row, 5)?;
    let delimiter: i16 = get(row, 10)?;
    let warnings: String = get(row, 23)?;
    Ok(ImportJob {
        job_id: get(row, 0)?,
        workspace: WorkspaceName::parse(&workspace).map_err(corrupt)?,
        mode: ImportMode::parse(&mode).ok_or_else(|| corrupt(format!("mode {mode:?}")))?,
        status: ImportStatus::parse(&status)
            .ok_or_else(|| corrupt(format!("status {status:?}")))?,
        mapping: JobMapping {
            name: get(row, 4)?,
            version: u32::try_from(version).map_err(corrupt)?,
            document: get(row, 6)?,
            digest: get(row, 7)?,
        },
        options: get(row, 8)?,
        header: get(row, 9)?,
        delimiter: u8::try_from(delimiter).map_err(corrupt)?,
        file_sha256: get(row, 11)?,
        file_bytes: count(row, 12)?,
        landed: count(row, 13)?,
        processed: count(row, 14)?,
        counts: ImportCounts {
            rejected: count(row, 15)?,
            persons_created: count(row, 16)?,
            persons_merged: count(row, 17)?,
            identifiers_attached: count(row, 18)?,
            conflicts: count(row, 19)?,
            skipped: count(row, 20)?,
            duplicates: count(row, 21)?,
            suppressed: count(row, 22)?,
        },
        warnings: decode_warnings(&warnings),
        error: get(row, 24)?,
        runner: get(row, 25)?,
        heartbeat: optional_time(row, 26)?,
        created_at: time(row, 27)?,
        updated_at: time(row, 28)?,
        finished_at: optional_time(row, 29)?,
    })
}

fn conflict(message: impl Into<String>) -> StoreError {
    StoreError::Conflict(message.into())
}

fn big(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

async fn read_job(
    client: &impl GenericClient,
    tenant: &str,
    job_id: &str,
) -> StoreResult<ImportJob> {
    let row = client
        .query_opt(
            &format!("SELECT {JOB_COLUMNS} FROM import_jobs WHERE tenant_id = $1 AND job_id = $2"),
            &[&tenant, &job_id],
        )
        .await
        .map_err(map_error)?
        .ok_or(StoreError::NotFound)?;
    job(&row)
}

impl PostgresStore {
    pub(crate) async fn insert_import(&self, tenant: &str, job: &ImportJob) -> StoreResult<()> {
        let c = &job.counts;
        let version = i32::try_from(job.mapping.version).map_err(corrupt)?;
        self.client()
            .await?
            .execute(
                &format!(
                    "INSERT INTO import_jobs (tenant_id, {JOB_COLUMNS})
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16,
                             $17, $18, $19, $20, $21, $22, $23, $24, $25, $26, $27, $28, $29, $30,
                             $31)"
                ),
                &[
                    &tenant,
                    &job.job_id,
                    &job.workspace.as_str(),
                    &job.mode.as_str(),
                    &job.status.as_str(),
                    &job.mapping.name,
                    &version,
                    &job.mapping.document,
                    &job.mapping.digest,
                    &job.options,
                    &job.header,
                    &i16::from(job.delimiter),
                    &job.file_sha256,
                    &big(job.file_bytes),
                    &big(job.landed),
                    &big(job.processed),
                    &big(c.rejected),
                    &big(c.persons_created),
                    &big(c.persons_merged),
                    &big(c.identifiers_attached),
                    &big(c.conflicts),
                    &big(c.skipped),
                    &big(c.duplicates),
                    &big(c.suppressed),
                    &encode_warnings(&job.warnings),
                    &job.error,
                    &job.runner,
                    &job.heartbeat.map(to_sql_time),
                    &to_sql_time(job.created_at),
                    &to_sql_time(job.updated_at),
                    &job.finished_at.map(to_sql_time),
                ],
            )
            .await
            .map_err(map_error)
            .map_err(|e| match e {
                StoreError::Conflict(_) => {
                    conflict(format!("import {} already exists", job.job_id))
                }
                other => other,
            })?;
        Ok(())
    }

    pub(crate) async fn read_import(&self, tenant: &str, job_id: &str) -> StoreResult<ImportJob> {
        read_job(&self.client().await?, tenant, job_id).await
    }

    pub(crate) async fn read_imports(
        &self,
        tenant: &str,
        page: &PageRequest,
    ) -> StoreResult<Page<ImportJob>> {
        let client = self.client().await?;
        let limit = i64::from(page.limit) + 1;
        let rows = match &page.after {
            Some(after) => {
                client
                    .query(
                        &format!(
                        "SELECT {JOB_COLUMNS} FROM import_jobs WHERE tenant_id = $1 AND job_id < $2
                         ORDER BY job_id DESC LIMIT $3"
                    ),
                        &[&tenant, after, &limit],
                    )
                    .await
            }
            None => {
                client
                    .query(
                        &format!(
                            "SELECT {JOB_COLUMNS} FROM import_jobs WHERE tenant_id = $1
                         ORDER BY job_id DESC LIMIT $2"
                        ),
                        &[&tenant, &limit],
                    )
                    .await
            }
        }
        .map_err(map_error)?;
        let jobs = rows.iter().map(job).collect::<StoreResult<Vec<_>>>()?;
        Ok(Page::from_overfetch(jobs, page.limit, |j| j.job_id.clone()))
    }

    pub(crate) async fn read_unfinished_imports(
        &self,
        tenant: &str,
    ) -> StoreResult<Vec<ImportJob>> {
        self.client()
            .await?
            .query(
                &format!(
                    "SELECT {JOB_COLUMNS} FROM import_jobs
                     WHERE tenant_id = $1 AND status IN ('landing', 'processing') ORDER BY job_id"
                ),
                &[&tenant],
            )
            .await
            .map_err(map_error)?
            .iter()
            .map(job)
            .collect()
    }

    pub(crate) async fn write_landed_rows(
        &self,
        tenant: &str,
        job_id: &str,
        rows: Vec<LandedRow>,
        at: Timestamp,
    ) -> StoreResult<()> {
        let (Some(first), Some(last)) = (rows.first(), rows.last()) else {
            return Ok(());
        };
        if (first.row..)
            .zip(&rows)
            .any(|(expected, row)| row.row != expected)
        {
            return Err(conflict("landed rows must be consecutive"));
        }
        let (from, to) = (big(first.row) - 1, big(last.row));
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(map_error)?;
        let moved = tx
            .execute(
                "UPDATE import_jobs SET landed = $4, updated_at = $5
                 WHERE tenant_id = $1 AND job_id = $2 AND status = 'landing' AND landed = $3",
                &[&tenant, &job_id, &from, &to, &to_sql_time(at)],
            )
            .await
            .map_err(map_error)?;
        if moved == 0 {
            return Err(conflict(format!(
                "import {job_id} is not landing at row {}",
                first.row
            )));
        }
        let numbers: Vec<i64> = rows.iter().map(|r| big(r.row)).collect();
        let defects: Vec<Option<String>> = rows.iter().map(|r| r.defect.clone()).collect();
        let bytes: Vec<Vec<u8>> = rows.into_iter().map(|r| r.bytes).collect();
        tx.execute(
            "INSERT INTO import_rows (tenant_id, job_id, row_no, bytes, defect)
             SELECT $1, $2, n, b, d FROM UNNEST($3::bigint[], $4::bytea[], $5::text[]) AS r(n, b, d)",
            &[&tenant, &job_id, &numbers, &bytes, &defects],
        )
        .await
        .map_err(map_error)?;
        tx.commit().await.map_err(map_error)
    }

    pub(crate) async fn write_landing_finished(
        &self,
        tenant: &str,
        job_id: &str,
        sha: &str,
        bytes: u64,
        warnings: &[String],
        at: Timestamp,
    ) -> StoreResult<()> {
        let moved = self
            .client()
            .await?
            .execute(
                "UPDATE import_jobs SET status = 'processing', file_sha256 = $3, file_bytes = $4,
                        warnings = $5, updated_at = $6
                 WHERE tenant_id = $1 AND job_id = $2 AND status = 'landing'",
                &[
                    &tenant,
                    &job_id,
                    &sha,
                    &big(bytes),
                    &encode_warnings(warnings),
                    &to_sql_time(at),
                ],
            )
            .await
            .map_err(map_error)?;
        if moved == 0 {
            return Err(conflict(format!("import {job_id} is not landing")));
        }
        Ok(())
    }

    pub(crate) async fn write_import_failed(
        &self,
        tenant: &str,
        job_id: &str,
        error: &str,
        at: Timestamp,
    ) -> StoreResult<()> {
        let moved = self
            .client()
            .await?
            .execute(
                "UPDATE import_jobs SET status = 'failed', error = $3, runner = NULL,
                        heartbeat = NULL, updated_at = $4, finished_at = $4
                 WHERE tenant_id = $1 AND job_id = $2",
                &[&tenant, &job_id, &error, &to_sql_time(at)],
            )
            .await
            .map_err(map_error)?;
        if moved == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    pub(crate) async fn write_claim(
        &self,
        tenant: &str,
        job_id: &str,
        runner: &str,
        at: Timestamp,
        stale_before: Timestamp,
    ) -> StoreResult<Option<ImportJob>> {
        let row = self
            .client()
            .await?
            .query_opt(
                &format!(
                    "UPDATE import_jobs SET runner = $3, heartbeat = $4
                     WHERE tenant_id = $1 AND job_id = $2 AND status IN ('landing', 'processing')
                       AND (runner IS NULL OR runner = $3 OR heartbeat IS NULL OR heartbeat < $5)
                     RETURNING {JOB_COLUMNS}"
                ),
                &[
                    &tenant,
                    &job_id,
                    &runner,
                    &to_sql_time(at),
                    &to_sql_time(stale_before),
                ],
            )
            .await
            .map_err(map_error)?;
        row.as_ref().map(job).transpose()
    }

    pub(crate) async fn read_landed_rows(
        &self,
        tenant: &str,
        job_id: &str,
        after: u64,
        limit: u32,
    ) -> StoreResult<Vec<LandedRow>> {
        self.client()
            .await?
            .query(
                "SELECT row_no, bytes, defect FROM import_rows
                 WHERE tenant_id = $1 AND job_id = $2 AND row_no > $3 ORDER BY row_no LIMIT $4",
                &[&tenant, &job_id, &big(after), &i64::from(limit)],
            )
            .await
            .map_err(map_error)?
            .iter()
            .map(|r| {
                Ok(LandedRow {
                    row: count(r, 0)?,
                    bytes: get(r, 1)?,
                    defect: get(r, 2)?,
                })
            })
            .collect()
    }

    pub(crate) async fn write_chunk(
        &self,
        tenant: &str,
        job_id: &str,
        chunk: RecordedChunk,
    ) -> StoreResult<()> {
        if let Some(outside) = chunk
            .outcomes
            .iter()
            .find(|o| o.row <= chunk.from || o.row > chunk.to)
        {
            return Err(StoreError::Other(format!(
                "outcome of row {} is outside the chunk {}..={}",
                outside.row,
                chunk.from + 1,
                chunk.to
            )));
        }
        let c = &chunk.counts;
        let version = i32::try_from(chunk.mapping_version).map_err(corrupt)?;
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(map_error)?;
        let moved = tx
            .execute(
                "UPDATE import_jobs SET processed = $6, heartbeat = $7, updated_at = $7,
                        rejected = rejected + $8, persons_created = persons_created + $9,
                        persons_merged = persons_merged + $10,
                        identifiers_attached = identifiers_attached + $11,
                        conflicts = conflicts + $12, skipped = skipped + $13,
                        duplicates = duplicates + $14, suppressed = suppressed + $15
                 WHERE tenant_id = $1 AND job_id = $2 AND status IN ('landing', 'processing') AND runner = $3
                   AND mapping_version = $4 AND processed = $5 AND $6 <= landed",
                &[
                    &tenant,
                    &job_id,
                    &chunk.runner,
                    &version,
                    &big(chunk.from),
                    &big(chunk.to),
                    &to_sql_time(chunk.at),
                    &big(c.rejected),
                    &big(c.persons_created),
                    &big(c.persons_merged),
                    &big(c.identifiers_attached),
                    &big(c.conflicts),
                    &big(c.skipped),
                    &big(c.duplicates),
                    &big(c.suppressed),
                ],
            )
            .await
            .map_err(map_error)?;
        if moved == 0 {
            return Err(conflict(format!(
                "import {job_id} is not held by this runner at row {} of mapping version {}",
                chunk.from, chunk.mapping_version
            )));
        }
        let rows: Vec<i64> = chunk.outcomes.iter().map(|o| big(o.row)).collect();
        let outcomes: Vec<&str> = chunk.outcomes.iter().map(|o| o.outcome.as_str()).collect();
        let persons: Vec<Option<&str>> = chunk
            .outcomes
            .iter()
            .map(|o| o.person_id.as_deref())
            .collect();
        let reasons: Vec<Option<&str>> =
            chunk.outcomes.iter().map(|o| o.reason.as_deref()).collect();
        tx.execute(
            "INSERT INTO import_outcomes (tenant_id, job_id, row_no, outcome, person_id, reason)
             SELECT $1, $2, n, o, p, r
             FROM UNNEST($3::bigint[], $4::text[], $5::text[], $6::text[]) AS x(n, o, p, r)",
            &[&tenant, &job_id, &rows, &outcomes, &persons, &reasons],
        )
        .await
        .map_err(map_error)?;
        if !chunk.erase_landed.is_empty() {
            let erased: Vec<i64> = chunk.erase_landed.iter().map(|&row| big(row)).collect();
            tx.execute(
                "UPDATE import_rows SET bytes = '\\x'::bytea,
                        defect = 'erased: carried a deleted person''s identifier'
                 WHERE tenant_id = $1 AND job_id = $2 AND row_no = ANY($3)",
                &[&tenant, &job_id, &erased],
            )
            .await
            .map_err(map_error)?;
        }
        tx.commit().await.map_err(map_error)
    }

    pub(crate) async fn write_completed(
        &self,
        tenant: &str,
        job_id: &str,
        runner: &str,
        at: Timestamp,
    ) -> StoreResult<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(map_error)?;
        let moved = tx
            .execute(
                "UPDATE import_jobs SET status = 'completed', runner = NULL, heartbeat = NULL,
                        updated_at = $4, finished_at = $4
                 WHERE tenant_id = $1 AND job_id = $2 AND status = 'processing' AND runner = $3
                   AND processed = landed",
                &[&tenant, &job_id, &runner, &to_sql_time(at)],
            )
            .await
            .map_err(map_error)?;
        if moved == 0 {
            return Err(conflict(format!(
                "import {job_id} is not fully processed by this runner"
            )));
        }
        let subscribers = crate::webhooks::subscribers(&tx, tenant).await?;
        if subscribers.any(idgraph_core::webhooks::EventType::ImportCompleted) {
            let job = read_job(&tx, tenant, job_id).await?;
            let event = idgraph_store::import_completed_event(&job, at);
            crate::webhooks::enqueue(&tx, &self.vault(), tenant, &subscribers, &[event]).await?;
        }
        tx.commit().await.map_err(map_error)
    }

    pub(crate) async fn write_reprocess(
        &self,
        tenant: &str,
        job_id: &str,
        mapping: JobMapping,
        options: String,
        runner: &str,
        at: Timestamp,
    ) -> StoreResult<ImportJob> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(map_error)?;
        let current = {
            let row = tx
                .query_opt(
                    &format!(
                        "SELECT {JOB_COLUMNS} FROM import_jobs
                         WHERE tenant_id = $1 AND job_id = $2 FOR UPDATE"
                    ),
                    &[&tenant, &job_id],
                )
                .await
                .map_err(map_error)?
                .ok_or(StoreError::NotFound)?;
            job(&row)?
        };
        if matches!(
            current.status,
            ImportStatus::Landing | ImportStatus::Processing
        ) {
            return Err(conflict(format!(
                "import {job_id} is {}; reprocess it once it is finished",
                current.status.as_str()
            )));
        }
        if current.file_sha256.is_none() {
            return Err(conflict(format!(
                "import {job_id} never finished landing its file; upload the file again"
            )));
        }
        if mapping.version != current.mapping.version + 1 {
            return Err(conflict(format!(
                "import {job_id} is at mapping version {}",
                current.mapping.version
            )));
        }
        let version = i32::try_from(mapping.version).map_err(corrupt)?;
        tx.execute(
            "DELETE FROM import_outcomes WHERE tenant_id = $1 AND job_id = $2",
            &[&tenant, &job_id],
        )
        .await
        .map_err(map_error)?;
        tx.execute(
            "UPDATE import_jobs SET status = 'processing', mapping_name = $3, mapping_version = $4,
                    mapping_document = $5, mapping_digest = $6, options = $7, processed = 0,
                    rejected = 0, persons_created = 0, persons_merged = 0,
                    identifiers_attached = 0, conflicts = 0, skipped = 0, duplicates = 0,
                    suppressed = 0, error = NULL, runner = $8, heartbeat = $9, updated_at = $9,
                    finished_at = NULL
             WHERE tenant_id = $1 AND job_id = $2",
            &[
                &tenant,
                &job_id,
                &mapping.name,
                &version,
                &mapping.document,
                &mapping.digest,
                &options,
                &runner,
                &to_sql_time(at),
            ],
        )
        .await
        .map_err(map_error)?;
        let updated = read_job(&tx, tenant, job_id).await?;
        tx.commit().await.map_err(map_error)?;
        Ok(updated)
    }

    pub(crate) async fn read_outcomes(
        &self,
        tenant: &str,
        job_id: &str,
        outcome: Option<&str>,
        page: &PageRequest,
    ) -> StoreResult<Page<RowOutcome>> {
        let after: i64 = match &page.after {
            None => 0,
            Some(cursor) => cursor
                .parse()
                .map_err(|_| StoreError::Other(format!("bad cursor {cursor:?}")))?,
        };
        let limit = i64::from(page.limit) + 1;
        let client = self.client().await?;
        let rows =
            match outcome {
                Some(outcome) => client
                    .query(
                        "SELECT o.row_no, o.outcome, COALESCE(p.merged_into, o.person_id), o.reason
                     FROM import_outcomes o
                     LEFT JOIN persons p ON p.tenant_id = o.tenant_id AND p.person_id = o.person_id
                     WHERE o.tenant_id = $1 AND o.job_id = $2 AND o.outcome = $3 AND o.row_no > $4
                     ORDER BY o.row_no LIMIT $5",
                        &[&tenant, &job_id, &outcome, &after, &limit],
                    )
                    .await,
                None => client
                    .query(
                        "SELECT o.row_no, o.outcome, COALESCE(p.merged_into, o.person_id), o.reason
                     FROM import_outcomes o
                     LEFT JOIN persons p ON p.tenant_id = o.tenant_id AND p.person_id = o.person_id
                     WHERE o.tenant_id = $1 AND o.job_id = $2 AND o.row_no > $3
                     ORDER BY o.row_no LIMIT $4",
                        &[&tenant, &job_id, &after, &limit],
                    )
                    .await,
            }
            .map_err(map_error)?;
        let outcomes = rows
            .iter()
            .map(|r| {
                Ok(RowOutcome {
                    row: count(r, 0)?,
                    outcome: get(r, 1)?,
                    person_id: get(r, 2)?,
                    reason: get(r, 3)?,
                })
            })
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(Page::from_overfetch(outcomes, page.limit, |o| {
            o.row.to_string()
        }))
    }

    pub(crate) async fn read_signal_effects(
        &self,
        tenant: &str,
        workspace: &WorkspaceName,
        message_ids: Vec<String>,
    ) -> StoreResult<Vec<Option<SignalEffects>>> {
        let client = self.client().await?;
        // One round trip for the events, one for what they derived.
        let events = client
            .query(
                "SELECT m.i, e.event_id, e.person_id, e.source, e.identifiers
                 FROM UNNEST($3::text[]) WITH ORDINALITY AS m(id, i)
                 JOIN events e ON e.tenant_id = $1 AND e.workspace = $2 AND e.message_id = m.id",
                &[&tenant, &workspace.as_str(), &message_ids],
            )
            .await
            .map_err(map_error)?;
        let mut out: Vec<Option<SignalEffects>> = vec![None; message_ids.len()];
        let mut event_ids = Vec::with_capacity(events.len());
        let mut slots = Vec::with_capacity(events.len());
        let (mut kinds, mut values, mut owners) = (Vec::new(), Vec::new(), Vec::new());
        let vault = self.vault();
        for row in &events {
            let index: i64 = get(row, 0)?;
            let event_id: String = get(row, 1)?;
            let person_id: String = get(row, 2)?;
            let identifiers: String = get(row, 4)?;
            // A signal may carry an identifier twice; it attached at most one node for it.
            let mut distinct = vault.open_identifiers(tenant, identifiers)?;
            distinct.sort();
            distinct.dedup();
            for identifier in distinct {
                let (kind, value) = identifier.into_parts();
                values.push(vault.index(tenant, kind.as_str(), &value));
                kinds.push(kind.as_str().to_owned());
                owners.push(event_id.clone());
            }
            let slot = usize::try_from(index - 1).map_err(corrupt)?;
            slots.push(slot);
            event_ids.push(event_id.clone());
            if let Some(place) = out.get_mut(slot) {
                *place = Some(SignalEffects {
                    created: person_id == event_id,
                    event_id,
                    person_id,
                    source: get(row, 3)?,
                    merges: 0,
                    conflicts: 0,
                    attached: 0,
                });
            }
        }
        if event_ids.is_empty() {
            return Ok(out);
        }
        let ranges = |what: char| -> (Vec<String>, Vec<String>) {
            event_ids.iter().map(|e| derived_id_range(e, what)).unzip()
        };
        let (merge_from, merge_to) = ranges('m');
        let (conflict_from, conflict_to) = ranges('c');
        let derived = client
            .query(
                "SELECT x.i,
                        (SELECT COUNT(*) FROM merges
                          WHERE tenant_id = $1 AND merge_id >= x.mf AND merge_id < x.mt),
                        (SELECT COUNT(*) FROM conflicts
                          WHERE tenant_id = $1 AND conflict_id >= x.cf AND conflict_id < x.ct)
                 FROM UNNEST($2::text[], $3::text[], $4::text[], $5::text[])
                      WITH ORDINALITY AS x(mf, mt, cf, ct, i)",
                &[
                    &tenant,
                    &merge_from,
                    &merge_to,
                    &conflict_from,
                    &conflict_to,
                ],
            )
            .await
            .map_err(map_error)?;
        for row in &derived {
            let index: i64 = get(row, 0)?;
            let slot = slots[usize::try_from(index - 1).map_err(corrupt)?];
            if let Some(Some(effects)) = out.get_mut(slot) {
                effects.merges = count(row, 1)?;
                effects.conflicts = count(row, 2)?;
            }
        }
        let attached = client
            .query(
                "SELECT x.e, COUNT(n.person_id)
                 FROM UNNEST($2::text[], $3::text[], $4::text[]) AS x(k, v, e)
                 JOIN identity_nodes n ON n.tenant_id = $1 AND n.kind = x.k AND n.value = x.v
                                      AND n.signal_id = x.e
                 GROUP BY x.e",
                &[&tenant, &kinds, &values, &owners],
            )
            .await
            .map_err(map_error)?;
        let slot_of: std::collections::HashMap<&str, usize> = event_ids
            .iter()
            .map(String::as_str)
            .zip(slots.iter().copied())
            .collect();
        for row in &attached {
            let event_id: String = get(row, 0)?;
            if let Some(Some(effects)) = slot_of
                .get(event_id.as_str())
                .and_then(|slot| out.get_mut(*slot))
            {
                effects.attached = count(row, 1)?;
            }
        }
        Ok(out)
    }

    pub(crate) async fn read_stored_suppressions(
        &self,
        tenant: &str,
        entry_ids: Vec<String>,
    ) -> StoreResult<Vec<String>> {
        self.client()
            .await?
            .query(
                "SELECT entry_id FROM suppression_entries
                 WHERE tenant_id = $1 AND entry_id = ANY($2::text[])",
                &[&tenant, &entry_ids],
            )
            .await
            .map_err(map_error)?
            .iter()
            .map(|r| get(r, 0))
            .collect()
    }
}
