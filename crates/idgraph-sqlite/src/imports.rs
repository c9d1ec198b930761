//! Import jobs on the embedded store: jobs, landed rows and row outcomes. Progress moves only by
//! compare-and-set inside the writer's transaction, so a repeated batch or chunk changes nothing.

use idgraph_core::tenancy::WorkspaceName;
use idgraph_store::{
    ImportCounts, ImportJob, ImportMode, ImportStatus, JobMapping, LandedRow, Page, PageRequest,
    RecordedChunk, RowOutcome, SignalEffects, StoreError, StoreResult, decode_warnings,
    derived_id_range, encode_warnings,
};
use jiff::Timestamp;
use rusqlite::{Connection, OptionalExtension, Row, Transaction, params};

use crate::codec::{map_error, micros};
use crate::nodes::NODE_SIGNAL;

const JOB_COLUMNS: &str = "job_id, workspace, mode, status, mapping_name, mapping_version, \
    mapping_document, mapping_digest, options, header, delimiter, file_sha256, file_bytes, landed, \
    processed, rejected, persons_created, persons_merged, identifiers_attached, conflicts, skipped, \
    duplicates, suppressed, warnings, error, runner, heartbeat, created_at, updated_at, finished_at";

fn bad(index: usize, what: impl std::fmt::Display) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(
        index,
        rusqlite::types::Type::Text,
        what.to_string().into(),
    )
}

fn time(row: &Row<'_>, index: usize) -> rusqlite::Result<Timestamp> {
    Timestamp::from_microsecond(row.get(index)?).map_err(|e| bad(index, e))
}

fn optional_time(row: &Row<'_>, index: usize) -> rusqlite::Result<Option<Timestamp>> {
    let raw: Option<i64> = row.get(index)?;
    raw.map(|m| Timestamp::from_microsecond(m).map_err(|e| bad(index, e)))
        .transpose()
}

fn count(row: &Row<'_>, index: usize) -> rusqlite::Result<u64> {
    let raw: i64 = row.get(index)?;
    u64::try_from(raw).map_err(|e| bad(index, e))
}

fn job(row: &Row<'_>) -> rusqlite::Result<ImportJob> {
    let workspace: String = row.get(1)?;
    let mode: String = row.get(2)?;
    let status: String = row.get(3)?;
    let version: i64 = row.get(5)?;
    let delimiter: i64 = row.get(10)?;
    let warnings: String = row.get(23)?;
    Ok(ImportJob {
        job_id: row.get(0)?,
        workspace: WorkspaceName::parse(&workspace).map_err(|e| bad(1, e))?,
        mode: ImportMode::parse(&mode).ok_or_else(|| bad(2, format!("mode {mode:?}")))?,
        status: ImportStatus::parse(&status).ok_or_else(|| bad(3, format!("status {status:?}")))?,
        mapping: JobMapping {
            name: row.get(4)?,
            version: u32::try_from(version).map_err(|e| bad(5, e))?,
            document: row.get(6)?,
            digest: row.get(7)?,
        },
        options: row.get(8)?,
        header: row.get(9)?,
        delimiter: u8::try_from(delimiter).map_err(|e| bad(10, e))?,
        file_sha256: row.get(11)?,
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
        error: row.get(24)?,
        runner: row.get(25)?,
        heartbeat: optional_time(row, 26)?,
        created_at: time(row, 27)?,
        updated_at: time(row, 28)?,
        finished_at: optional_time(row, 29)?,
    })
}

pub(crate) fn create(tx: &Transaction<'_>, tenant: &str, job: &ImportJob) -> StoreResult<()> {
    tx.prepare_cached(&format!(
        "INSERT INTO import_jobs (tenant_id, {JOB_COLUMNS})
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18,
                 ?19, ?20, ?21, ?22, ?23, ?24, ?25, ?26, ?27, ?28, ?29, ?30, ?31)"
    ))
    .and_then(|mut s| {
        s.execute(params![
            tenant,
            job.job_id,
            job.workspace.as_str(),
            job.mode.as_str(),
            job.status.as_str(),
            job.mapping.name,
            job.mapping.version,
            job.mapping.document,
            job.mapping.digest,
            job.options,
            job.header,
            job.delimiter,
            job.file_sha256,
            job.file_bytes as i64,
            job.landed as i64,
            job.processed as i64,
            job.counts.rejected as i64,
            job.counts.persons_created as i64,
            job.counts.persons_merged as i64,
            job.counts.identifiers_attached as i64,
            job.counts.conflicts as i64,
            job.counts.skipped as i64,
            job.counts.duplicates as i64,
            job.counts.suppressed as i64,
            encode_warnings(&job.warnings),
            job.error,
            job.runner,
            job.heartbeat.map(micros),
            micros(job.created_at),
            micros(job.updated_at),
            job.finished_at.map(micros),
        ])
    })
    .map_err(map_error)?;
    Ok(())
}

pub(crate) fn get(conn: &Connection, tenant: &str, job_id: &str) -> StoreResult<ImportJob> {
    conn.prepare_cached(&format!(
        "SELECT {JOB_COLUMNS} FROM import_jobs WHERE tenant_id = ?1 AND job_id = ?2"
    ))
    .and_then(|mut s| s.query_row(params![tenant, job_id], job))
    .map_err(map_error)
}

pub(crate) fn list(
    conn: &Connection,
    tenant: &str,
    page: &PageRequest,
) -> StoreResult<Page<ImportJob>> {
    let rows = match &page.after {
        Some(after) => conn
            .prepare_cached(&format!(
                "SELECT {JOB_COLUMNS} FROM import_jobs WHERE tenant_id = ?1 AND job_id < ?2
                 ORDER BY job_id DESC LIMIT ?3"
            ))
            .and_then(|mut s| {
                s.query_map(params![tenant, after, i64::from(page.limit) + 1], job)?
                    .collect::<rusqlite::Result<Vec<_>>>()
            }),
        None => conn
            .prepare_cached(&format!(
                "SELECT {JOB_COLUMNS} FROM import_jobs WHERE tenant_id = ?1
                 ORDER BY job_id DESC LIMIT ?2"
            ))
            .and_then(|mut s| {
                s.query_map(params![tenant, i64::from(page.limit) + 1], job)?
                    .collect::<rusqlite::Result<Vec<_>>>()
            }),
    }
    .map_err(map_error)?;
    Ok(Page::from_overfetch(rows, page.limit, |j| j.job_id.clone()))
}

pub(crate) fn unfinished(conn: &Connection, tenant: &str) -> StoreResult<Vec<ImportJob>> {
    conn.prepare_cached(&format!(
        "SELECT {JOB_COLUMNS} FROM import_jobs
         WHERE tenant_id = ?1 AND status IN ('landing', 'processing') ORDER BY job_id"
    ))
    .and_then(|mut s| s.query_map(params![tenant], job)?.collect())
    .map_err(map_error)
}

fn conflict(message: impl Into<String>) -> StoreError {
    StoreError::Conflict(message.into())
}

/// Writes landed rows into the landed-rows file (its own transaction, on its own writer). A row
/// already there (written before a crash that lost the main file's count of it) is replaced.
pub(crate) fn land_rows(
    tx: &Transaction<'_>,
    tenant: &str,
    job_id: &str,
    rows: &[LandedRow],
) -> StoreResult<()> {
    let Some(first) = rows.first() else {
        return Ok(());
    };
    let mut insert = tx
        .prepare_cached(
            "INSERT OR REPLACE INTO import_rows (tenant_id, job_id, row_no, bytes, defect)
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )
        .map_err(map_error)?;
    for (expected, row) in (first.row..).zip(rows) {
        if row.row != expected {
            return Err(conflict("landed rows must be consecutive"));
        }
        insert
            .execute(params![
                tenant,
                job_id,
                row.row as i64,
                row.bytes,
                row.defect
            ])
            .map_err(map_error)?;
    }
    Ok(())
}

/// Counts rows written by [`land_rows`] as landed: only rows up to a job's count are ever read.
pub(crate) fn count_landed(
    tx: &Transaction<'_>,
    tenant: &str,
    job_id: &str,
    first: u64,
    last: u64,
    at: Timestamp,
) -> StoreResult<()> {
    let moved = tx
        .prepare_cached(
            "UPDATE import_jobs SET landed = ?4, updated_at = ?5
             WHERE tenant_id = ?1 AND job_id = ?2 AND status = 'landing' AND landed = ?3",
        )
        .and_then(|mut s| {
            s.execute(params![
                tenant,
                job_id,
                first as i64 - 1,
                last as i64,
                micros(at)
            ])
        })
        .map_err(map_error)?;
    if moved == 0 {
        return Err(conflict(format!(
            "import {job_id} is not landing at row {first}"
        )));
    }
    Ok(())
}

/// Empties landed rows (their person was deleted, or they carried a deleted person's
/// identifier), marked so that a reprocess rejects them instead of reading nothing.
pub(crate) fn erase_rows(
    tx: &Transaction<'_>,
    tenant: &str,
    rows: &[(String, u64)],
    why: &str,
) -> StoreResult<u64> {
    let mut erase = tx
        .prepare_cached(
            "UPDATE import_rows SET bytes = X'', defect = ?4
             WHERE tenant_id = ?1 AND job_id = ?2 AND row_no = ?3",
        )
        .map_err(map_error)?;
    let mut erased = 0;
    for (job_id, row) in rows {
        erased += erase
            .execute(params![tenant, job_id, *row as i64, why])
            .map_err(map_error)? as u64;
    }
    Ok(erased)
}

pub(crate) fn finish_landing(
    tx: &Transaction<'_>,
    tenant: &str,
    job_id: &str,
    sha: &str,
    bytes: u64,
    warnings: &[String],
    at: Timestamp,
) -> StoreResult<()> {
    let moved = tx
        .prepare_cached(
            "UPDATE import_jobs SET status = 'processing', file_sha256 = ?3, file_bytes = ?4,
                    warnings = ?5, updated_at = ?6
             WHERE tenant_id = ?1 AND job_id = ?2 AND status = 'landing'",
        )
        .and_then(|mut s| {
            s.execute(params![
                tenant,
                job_id,
                sha,
                bytes as i64,
                encode_warnings(warnings),
                micros(at)
            ])
        })
        .map_err(map_error)?;
    if moved == 0 {
        return Err(conflict(format!("import {job_id} is not landing")));
    }
    Ok(())
}

pub(crate) fn fail(
    tx: &Transaction<'_>,
    tenant: &str,
    job_id: &str,
    error: &str,
    at: Timestamp,
) -> StoreResult<()> {
    let moved = tx
        .prepare_cached(
            "UPDATE import_jobs SET status = 'failed', error = ?3, runner = NULL, heartbeat = NULL,
                    updated_at = ?4, finished_at = ?4
             WHERE tenant_id = ?1 AND job_id = ?2",
        )
        .and_then(|mut s| s.execute(params![tenant, job_id, error, micros(at)]))
        .map_err(map_error)?;
    if moved == 0 {
        return Err(StoreError::NotFound);
    }
    Ok(())
}

pub(crate) fn claim(
    tx: &Transaction<'_>,
    tenant: &str,
    job_id: &str,
    runner: &str,
    at: Timestamp,
    stale_before: Timestamp,
) -> StoreResult<Option<ImportJob>> {
    let moved = tx
        .prepare_cached(
            "UPDATE import_jobs SET runner = ?3, heartbeat = ?4
             WHERE tenant_id = ?1 AND job_id = ?2 AND status IN ('landing', 'processing')
               AND (runner IS NULL OR runner = ?3 OR heartbeat IS NULL OR heartbeat < ?5)",
        )
        .and_then(|mut s| {
            s.execute(params![
                tenant,
                job_id,
                runner,
                micros(at),
                micros(stale_before)
            ])
        })
        .map_err(map_error)?;
    if moved == 0 {
        return Ok(None);
    }
    get(tx, tenant, job_id).map(Some)
}

pub(crate) fn landed_rows(
    conn: &Connection,
    tenant: &str,
    job_id: &str,
    after: u64,
    limit: u32,
) -> StoreResult<Vec<LandedRow>> {
    // Bounded by the job's count: the landed-rows file may hold rows a crash kept from being
    // counted, which are landed again.
    conn.prepare_cached(
        "SELECT row_no, bytes, defect FROM landed.import_rows
         WHERE tenant_id = ?1 AND job_id = ?2 AND row_no > ?3
           AND row_no <= (SELECT landed FROM import_jobs WHERE tenant_id = ?1 AND job_id = ?2)
         ORDER BY row_no LIMIT ?4",
    )
    .and_then(|mut s| {
        s.query_map(
            params![tenant, job_id, after as i64, i64::from(limit)],
            |r| {
                Ok(LandedRow {
                    row: count(r, 0)?,
                    bytes: r.get(1)?,
                    defect: r.get(2)?,
                })
            },
        )?
        .collect()
    })
    .map_err(map_error)
}

pub(crate) fn record(
    tx: &Transaction<'_>,
    tenant: &str,
    job_id: &str,
    chunk: &RecordedChunk,
) -> StoreResult<()> {
    let c = &chunk.counts;
    let moved = tx
        .prepare_cached(
            "UPDATE import_jobs SET processed = ?6, heartbeat = ?7, updated_at = ?7,
                    rejected = rejected + ?8, persons_created = persons_created + ?9,
                    persons_merged = persons_merged + ?10,
                    identifiers_attached = identifiers_attached + ?11,
                    conflicts = conflicts + ?12, skipped = skipped + ?13,
                    duplicates = duplicates + ?14, suppressed = suppressed + ?15
             WHERE tenant_id = ?1 AND job_id = ?2 AND status IN ('landing', 'processing') AND runner = ?3
               AND mapping_version = ?4 AND processed = ?5 AND ?6 <= landed",
        )
        .and_then(|mut s| {
            s.execute(params![
                tenant,
                job_id,
                chunk.runner,
                chunk.mapping_version,
                chunk.from as i64,
                chunk.to as i64,
                micros(chunk.at),
                c.rejected as i64,
                c.persons_created as i64,
                c.persons_merged as i64,
                c.identifiers_attached as i64,
                c.conflicts as i64,
                c.skipped as i64,
                c.duplicates as i64,
                c.suppressed as i64,
            ])
        })
        .map_err(map_error)?;
    if moved == 0 {
        return Err(conflict(format!(
            "import {job_id} is not held by this runner at row {} of mapping version {}",
            chunk.from, chunk.mapping_version
        )));
    }
    let mut insert = tx
        .prepare_cached(
            "INSERT INTO import_outcomes (tenant_id, job_id, row_no, outcome, person_id, reason)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )
        .map_err(map_error)?;
    for outcome in &chunk.outcomes {
        if outcome.row <= chunk.from || outcome.row > chunk.to {
            return Err(StoreError::Other(format!(
                "outcome of row {} is outside the chunk {}..={}",
                outcome.row,
                chunk.from + 1,
                chunk.to
            )));
        }
        insert
            .execute(params![
                tenant,
                job_id,
                outcome.row as i64,
                outcome.outcome,
                outcome.person_id,
                outcome.reason
            ])
            .map_err(map_error)?;
    }
    Ok(())
}

pub(crate) fn complete(
    tx: &Transaction<'_>,
    tenant: &str,
    job_id: &str,
    runner: &str,
    at: Timestamp,
) -> StoreResult<()> {
    let moved = tx
        .prepare_cached(
            "UPDATE import_jobs SET status = 'completed', runner = NULL, heartbeat = NULL,
                    updated_at = ?4, finished_at = ?4
             WHERE tenant_id = ?1 AND job_id = ?2 AND status = 'processing' AND runner = ?3
               AND processed = landed",
        )
        .and_then(|mut s| s.execute(params![tenant, job_id, runner, micros(at)]))
        .map_err(map_error)?;
    if moved == 0 {
        return Err(conflict(format!(
            "import {job_id} is not fully processed by this runner"
        )));
    }
    Ok(())
}

pub(crate) fn reprocess(
    tx: &Transaction<'_>,
    tenant: &str,
    job_id: &str,
    mapping: &JobMapping,
    options: &str,
    runner: &str,
    at: Timestamp,
) -> StoreResult<ImportJob> {
    let current = get(tx, tenant, job_id)?;
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
    tx.prepare_cached("DELETE FROM import_outcomes WHERE tenant_id = ?1 AND job_id = ?2")
        .and_then(|mut s| s.execute(params![tenant, job_id]))
        .map_err(map_error)?;
    tx.prepare_cached(
        "UPDATE import_jobs SET status = 'processing', mapping_name = ?3, mapping_version = ?4,
                mapping_document = ?5, mapping_digest = ?6, options = ?7, processed = 0,
                rejected = 0, persons_created = 0, persons_merged = 0, identifiers_attached = 0,
                conflicts = 0, skipped = 0, duplicates = 0, suppressed = 0, error = NULL,
                runner = ?8, heartbeat = ?9, updated_at = ?9, finished_at = NULL
         WHERE tenant_id = ?1 AND job_id = ?2",
    )
    .and_then(|mut s| {
        s.execute(params![
            tenant,
            job_id,
            mapping.name,
            mapping.version,
            mapping.document,
            mapping.digest,
            options,
            runner,
            micros(at)
        ])
    })
    .map_err(map_error)?;
    get(tx, tenant, job_id)
}

pub(crate) fn outcomes(
    conn: &Connection,
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
    let read = |r: &Row<'_>| {
        Ok(RowOutcome {
            row: count(r, 0)?,
            outcome: r.get(1)?,
            person_id: r.get(2)?,
            reason: r.get(3)?,
        })
    };
    let rows = match outcome {
        Some(outcome) => conn
            .prepare_cached(
                "SELECT o.row_no, o.outcome, COALESCE(p.merged_into, o.person_id), o.reason
                 FROM import_outcomes o
                 LEFT JOIN persons p ON p.tenant_id = o.tenant_id AND p.person_id = o.person_id
                 WHERE o.tenant_id = ?1 AND o.job_id = ?2 AND o.outcome = ?3 AND o.row_no > ?4
                 ORDER BY o.row_no LIMIT ?5",
            )
            .and_then(|mut s| {
                s.query_map(params![tenant, job_id, outcome, after, limit], read)?
                    .collect::<rusqlite::Result<Vec<_>>>()
            }),
        None => conn
            .prepare_cached(
                "SELECT o.row_no, o.outcome, COALESCE(p.merged_into, o.person_id), o.reason
                 FROM import_outcomes o
                 LEFT JOIN persons p ON p.tenant_id = o.tenant_id AND p.person_id = o.person_id
                 WHERE o.tenant_id = ?1 AND o.job_id = ?2 AND o.row_no > ?3
                 ORDER BY o.row_no LIMIT ?4",
            )
            .and_then(|mut s| {
                s.query_map(params![tenant, job_id, after, limit], read)?
                    .collect::<rusqlite::Result<Vec<_>>>()
            }),
    }
    .map_err(map_error)?;
    Ok(Page::from_overfetch(rows, page.limit, |o| {
        o.row.to_string()
    }))
}

pub(crate) fn effects(
    conn: &Connection,
    vault: &idgraph_store::vault::Vault,
    tenant: &str,
    workspace: &str,
    message_ids: &[String],
) -> StoreResult<Vec<Option<SignalEffects>>> {
    let mut event = conn
        .prepare_cached(
            "SELECT event_id, person_id, source, identifiers FROM events
             WHERE tenant_id = ?1 AND workspace = ?2 AND message_id = ?3",
        )
        .map_err(map_error)?;
    let mut derived = conn
        .prepare_cached(
            "SELECT (SELECT COUNT(*) FROM merges WHERE tenant_id = ?1 AND merge_id >= ?2 AND merge_id < ?3),
                    (SELECT COUNT(*) FROM conflicts WHERE tenant_id = ?1 AND conflict_id >= ?4 AND conflict_id < ?5)",
        )
        .map_err(map_error)?;
    let mut attached = conn
        .prepare_cached(&format!(
            "SELECT COUNT(*) FROM identity_nodes
             WHERE tenant_id = ?1 AND kind = ?2 AND value = ?3 AND {NODE_SIGNAL} = ?4"
        ))
        .map_err(map_error)?;
    let mut out = Vec::with_capacity(message_ids.len());
    for message_id in message_ids {
        let found: Option<(String, String, String, String)> = event
            .query_row(params![tenant, workspace, message_id], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })
            .optional()
            .map_err(map_error)?;
        let Some((event_id, person_id, source, identifiers)) = found else {
            out.push(None);
            continue;
        };
        let (merge_from, merge_to) = derived_id_range(&event_id, 'm');
        let (conflict_from, conflict_to) = derived_id_range(&event_id, 'c');
        let (merges, conflicts): (i64, i64) = derived
            .query_row(
                params![tenant, merge_from, merge_to, conflict_from, conflict_to],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .map_err(map_error)?;
        // A signal may carry an identifier twice; it attached at most one node for it.
        let mut distinct = vault.open_identifiers(tenant, identifiers)?;
        distinct.sort();
        distinct.dedup();
        let mut nodes = 0i64;
        for identifier in distinct {
            nodes += attached
                .query_row(
                    params![
                        tenant,
                        identifier.kind().as_str(),
                        vault.index(tenant, identifier.kind().as_str(), identifier.value()),
                        event_id
                    ],
                    |r| r.get::<_, i64>(0),
                )
                .map_err(map_error)?;
        }
        out.push(Some(SignalEffects {
            created: person_id == event_id,
            event_id,
            person_id,
            source,
            merges: merges.unsigned_abs(),
            conflicts: conflicts.unsigned_abs(),
            attached: nodes.unsigned_abs(),
        }));
    }
    Ok(out)
}

pub(crate) fn stored_suppressions(
    conn: &Connection,
    tenant: &str,
    entry_ids: &[String],
) -> StoreResult<Vec<String>> {
    let mut find = conn
        .prepare_cached("SELECT 1 FROM suppression_entries WHERE tenant_id = ?1 AND entry_id = ?2")
        .map_err(map_error)?;
    let mut stored = Vec::new();
    for entry_id in entry_ids {
        if find
            .query_row(params![tenant, entry_id], |_| Ok(()))
            .optional()
            .map_err(map_error)?
            .is_some()
        {
            stored.push(entry_id.clone());
        }
    }
    Ok(stored)
}
