//! PARSE..RECORD: a job's landed rows, chunk by chunk, through the store, with its progress
//! committed with each chunk's outcomes. Runs as a background task; one process runs a job at a
//! time (the store's claim), and a job found unfinished at start or by the periodic sweep is
//! resumed after its last recorded chunk.
//!
//! A chunk that was resolved but not recorded when the process died is resolved again: every
//! row's signal is then a duplicate, and its outcome is read back from what the first attempt
//! stored (`Store::signal_effects`), so the outcomes, the counts and the graph are the same as
//! if nothing had happened.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::Arc;

use idgraph_core::identity::{Identifier, IdentitySettings, Policy};
use idgraph_core::tenancy::TenantId;
use idgraph_store::{
    ComplianceWrites, ImportCounts, ImportJob, ImportMode, ImportStatus, IngestOutcome, LandedRow,
    PageRequest, RecordedChunk, RowOutcome, SignalEffects, Store, StoreError, erased_reason,
};
use jiff::{SignedDuration, Timestamp};

use super::prepare::{JobContext, Prepared, prepare};
use super::{Importer, outcome};
use crate::{AppError, settings};

/// How long a runner's claim on a job lasts without a recorded chunk, for stores shared by
/// several processes.
const LEASE: SignedDuration = SignedDuration::from_secs(60);
/// How often a runner ahead of the upload looks for newly landed rows.
const LANDING_POLL: std::time::Duration = std::time::Duration::from_millis(20);

impl<S: Store> Importer<S> {
    /// Runs a job in the background unless this process already does.
    pub fn spawn(&self, tenant: TenantId, job_id: String) {
        if !self.start_running(&tenant, &job_id) {
            return;
        }
        let this = self.clone();
        tokio::spawn(async move {
            let result = this.run(&tenant, &job_id).await;
            this.stop_running(&tenant, &job_id);
            match result {
                Ok(()) => {}
                Err(error) if this.stopping() => {
                    tracing::info!(job = %job_id, tenant = %tenant, %error, "import paused by shutdown");
                }
                Err(error) => {
                    tracing::error!(job = %job_id, tenant = %tenant, %error, "import processing stopped; it resumes at the next sweep");
                }
            }
        });
    }

    async fn run(&self, tenant: &TenantId, job_id: &str) -> Result<(), AppError> {
        let now = Timestamp::now();
        let stale_before = if self.store.single_process() {
            // Nobody else can use this store: a holder that is not this process is dead.
            now + SignedDuration::from_secs(1)
        } else {
            now - LEASE
        };
        let claimed = self
            .store
            .claim_import(tenant, job_id, &self.runner, now, stale_before)
            .await
            .map_err(AppError::from_store("import"))?;
        let Some(job) = claimed else {
            return Ok(());
        };
        let context = match self.context(tenant, job).await {
            Ok(context) => context,
            Err(error) => {
                // The job cannot be read as it was stored (a mapping no longer valid): nothing
                // will change that by waiting.
                self.store
                    .fail_import(tenant, job_id, &error.message, Timestamp::now())
                    .await
                    .map_err(AppError::from_store("import"))?;
                return Ok(());
            }
        };
        tracing::info!(job = %job_id, tenant = %tenant, from_row = context.job.processed + 1,
                       rows = context.job.landed, mapping_version = context.job.mapping.version,
                       "import processing");
        self.process(tenant, Arc::new(context)).await
    }

    async fn context(&self, tenant: &TenantId, job: ImportJob) -> Result<JobContext, AppError> {
        let mapping = idgraph_import::Mapping::from_json(&job.mapping.document)
            .map_err(|e| AppError::invalid("invalid_mapping", e.to_string()))?;
        let header = idgraph_import::Header::parse(&job.header, job.delimiter)
            .map_err(|e| AppError::invalid(e.code(), e.to_string()))?;
        let plan = mapping.plan(&header);
        let mut settings = settings::load(&self.store, tenant).await?;
        apply_preset(&mut settings, mapping.preset);
        let options = super::options_of(&job.options);
        let default_reason = options
            .reason
            .as_deref()
            .map(str::parse)
            .transpose()?
            .unwrap_or(idgraph_core::compliance::SuppressionReason::Dnc);
        Ok(JobContext::new(
            job,
            plan,
            settings,
            default_reason,
            options.row_ids,
        ))
    }

    async fn process(&self, tenant: &TenantId, context: Arc<JobContext>) -> Result<(), AppError> {
        let job_id = context.job.job_id.clone();
        // PARSE of the next chunks overlaps RESOLVE..RECORD of this one: one parsed chunk waits
        // while the reader parses the one after (PARSE is the faster stage; more would only
        // hold more rows in memory).
        let (parsed_tx, mut parsed_rx) =
            tokio::sync::mpsc::channel::<Result<Vec<Prepared>, AppError>>(1);
        let reader = {
            let (store, tenant, context, event_ids) = (
                self.store.clone(),
                tenant.clone(),
                Arc::clone(&context),
                Arc::clone(&self.event_ids),
            );
            let (chunk_rows, stopping) = (self.chunk_rows, Arc::clone(&self.stopping));
            let mut tap = self.taps.open(&tenant, &context.job.job_id);
            tokio::spawn(async move {
                let mut tapped: VecDeque<LandedRow> = VecDeque::new();
                let mut after = context.job.processed;
                let mut landed = context.job.landed;
                let mut landing = context.job.status == ImportStatus::Landing;
                loop {
                    // While the file lands, only whole chunks: a job is cut into the same
                    // chunks however its rows arrive.
                    let chunk = chunk_size(after, chunk_rows);
                    let ready = if landing {
                        landed >= after + u64::from(chunk)
                    } else {
                        landed > after
                    };
                    if !ready {
                        if !landing || stopping.load(std::sync::atomic::Ordering::Relaxed) {
                            return;
                        }
                        match landing_progress(&store, &tenant, &context.job.job_id).await {
                            Ok(Some(progress)) => (landed, landing) = progress,
                            Ok(None) => return,
                            Err(e) => {
                                let _ = parsed_tx.send(Err(e)).await;
                                return;
                            }
                        }
                        continue;
                    }
                    let want = landed.saturating_sub(after).min(u64::from(chunk));
                    let rows = match from_tap(&mut tap, &mut tapped, after, want) {
                        Some(rows) => Ok(rows),
                        None => {
                            store
                                .landed_rows(&tenant, &context.job.job_id, after, chunk)
                                .await
                        }
                    };
                    let rows = match rows {
                        Ok(rows) if rows.is_empty() => {
                            let _ = parsed_tx
                                .send(Err(AppError::internal("landed rows are missing")))
                                .await;
                            return;
                        }
                        Ok(rows) => rows,
                        Err(e) => {
                            let _ = parsed_tx.send(Err(AppError::from_store("import")(e))).await;
                            return;
                        }
                    };
                    after = rows.last().map_or(after, |r| r.row);
                    let context = Arc::clone(&context);
                    let event_ids = Arc::clone(&event_ids);
                    let parsed = tokio::task::spawn_blocking(move || {
                        let now = Timestamp::now();
                        rows.into_iter()
                            .map(|row| prepare(&context, &event_ids, row, now))
                            .collect::<Vec<_>>()
                    })
                    .await
                    .map_err(|e| AppError::internal(format!("parsing failed: {e}")));
                    if parsed_tx.send(parsed).await.is_err() {
                        return;
                    }
                }
            })
        };
        let mut timings = Timings::default();
        let result = async {
            // RECORD of a chunk overlaps RESOLVE of the next, so the writer has the next
            // chunk's signals (sealed on this side) queued while it records. The next chunk
            // may be stored before this one is recorded; a crash between the two resolves
            // both again as duplicates, which read back what they did.
            let job_id = &job_id;
            let mut resolved_to = context.job.processed;
            let mut finished: Option<RecordedChunk> = None;
            loop {
                if self.stopping() {
                    if let Some(chunk) = finished.take() {
                        // Best effort: what is not recorded is redone when the job resumes.
                        let _ = self.store.record_import_chunk(tenant, job_id, chunk).await;
                    }
                    return Err(AppError::internal("the server is shutting down"));
                }
                let to_record = finished.take();
                let record = async {
                    let Some(chunk) = to_record else {
                        return Ok(None);
                    };
                    let started = std::time::Instant::now();
                    let recorded = self.store.record_import_chunk(tenant, job_id, chunk).await;
                    recorded.map(|()| Some(started.elapsed()))
                };
                let next = async {
                    let started = std::time::Instant::now();
                    // The reader stops after the last landed row, or when the job failed.
                    let Some(prepared) = parsed_rx.recv().await else {
                        return Ok(None);
                    };
                    let prepared = prepared?;
                    let waited = started.elapsed();
                    let to = prepared.last().map_or(resolved_to, Prepared::row);
                    let mut resolving = Timings::default();
                    let resolved = match context.job.mode {
                        ImportMode::Universe => {
                            self.resolve(tenant, &context, prepared, false, &mut resolving)
                                .await?
                        }
                        ImportMode::Enrichment => {
                            self.resolve(tenant, &context, prepared, true, &mut resolving)
                                .await?
                        }
                        ImportMode::Suppression => {
                            let (outcomes, counts) =
                                self.suppress(tenant, &context, prepared).await?;
                            (outcomes, counts, Vec::new())
                        }
                    };
                    resolving.waiting_for_rows = waited;
                    Ok::<_, AppError>(Some((to, resolved, resolving)))
                };
                let (recorded, next) = tokio::join!(record, next);
                match recorded {
                    Ok(None) => {}
                    Ok(Some(took)) => timings.recording += took,
                    Err(StoreError::Conflict(why)) => {
                        // Another runner took over, or the job was reprocessed: its work now.
                        tracing::info!(job = %job_id, %why, "import handed over");
                        return Ok(false);
                    }
                    Err(e) => return Err(AppError::from_store("import")(e)),
                }
                let Some((to, (outcomes, counts, erase_landed), took)) = next? else {
                    break;
                };
                timings.add(&took);
                finished = Some(RecordedChunk {
                    runner: self.runner.clone(),
                    mapping_version: context.job.mapping.version,
                    from: resolved_to,
                    to,
                    outcomes,
                    counts,
                    at: Timestamp::now(),
                    erase_landed,
                });
                resolved_to = to;
            }
            if self.stopping() {
                return Err(AppError::internal("the server is shutting down"));
            }
            Ok(true)
        }
        .await;
        reader.abort();
        self.taps.close(tenant, &job_id);
        if result? {
            match self
                .store
                .complete_import(tenant, &job_id, &self.runner, Timestamp::now())
                .await
            {
                Ok(()) => {}
                Err(StoreError::Conflict(why)) => {
                    // The upload broke off (the job failed), or another runner took over.
                    tracing::info!(job = %job_id, %why, "import not completed by this runner");
                    return Ok(());
                }
                Err(e) => return Err(AppError::from_store("import")(e)),
            }
            let job = self
                .store
                .get_import(tenant, &job_id)
                .await
                .map_err(AppError::from_store("import"))?;
            tracing::info!(job = %job_id, tenant = %tenant, rows = job.landed,
                           rejected = job.counts.rejected, persons_created = job.counts.persons_created,
                           waiting_for_rows_ms = timings.waiting_for_rows.as_millis(),
                           resolving_ms = timings.resolving.as_millis(),
                           reading_back_ms = timings.reading_back.as_millis(),
                           recording_ms = timings.recording.as_millis(),
                           "import completed");
        }
        Ok(())
    }

    /// RESOLVE and MERGE through `Store::ingest`, then the outcome of every row from what the
    /// graph holds for its message id.
    async fn resolve(
        &self,
        tenant: &TenantId,
        context: &JobContext,
        prepared: Vec<Prepared>,
        enrichment: bool,
        timings: &mut Timings,
    ) -> Result<(Vec<RowOutcome>, ImportCounts, Vec<u64>), AppError> {
        let mut counts = ImportCounts::default();
        let mut outcomes: BTreeMap<u64, RowOutcome> = BTreeMap::new();
        let mut erased_rows = Vec::new();
        let mut signals = Vec::new();
        let mut pending: Vec<(u64, Vec<String>)> = Vec::new();
        // Identifiers that rows of this chunk already bring to existing persons (enrichment).
        let mut joining: HashSet<Identifier> = HashSet::new();
        for item in prepared {
            match item {
                Prepared::Rejected { row, reason } => {
                    counts.rejected += 1;
                    outcomes.insert(row, outcome(row, "rejected", None, Some(reason)));
                }
                Prepared::Suppression { row, .. } => {
                    counts.rejected += 1;
                    outcomes.insert(
                        row,
                        outcome(
                            row,
                            "rejected",
                            None,
                            Some("not a suppression import".into()),
                        ),
                    );
                }
                Prepared::Signal {
                    row,
                    mut signal,
                    mut notes,
                } => {
                    if enrichment {
                        match self
                            .enrichment_filter(tenant, &context.settings, &mut signal, &joining)
                            .await?
                        {
                            Some(dropped) => notes.extend(dropped),
                            None => {
                                counts.skipped += 1;
                                outcomes.insert(
                                    row,
                                    outcome(
                                        row,
                                        "skipped",
                                        None,
                                        Some("no existing person".into()),
                                    ),
                                );
                                continue;
                            }
                        }
                        joining.extend(signal.identifiers.iter().cloned());
                    }
                    pending.push((row, notes));
                    signals.push(*signal);
                }
            }
        }
        if !signals.is_empty() {
            let message_ids: Vec<String> =
                signals.iter().map(|s| s.event.message_id.clone()).collect();
            let workspace = context.job.workspace.clone();
            let started = std::time::Instant::now();
            let ingested = self
                .store
                .ingest_import_chunk(tenant, &context.settings, signals)
                .await
                .map_err(AppError::from_store("signal"))?;
            timings.resolving += started.elapsed();
            // What each signal did, as ingest reports it. A row carrying a deleted person's
            // identifier recorded nothing: only its refusal. A duplicate's effect (from an
            // earlier job, or from this one before an interruption) is read back from the graph.
            let mut recorded = Vec::with_capacity(pending.len());
            let mut effects: Vec<Option<SignalEffects>> = Vec::with_capacity(pending.len());
            let mut read_back: Vec<(usize, String)> = Vec::new();
            for (((row, notes), ingested), message_id) in
                pending.into_iter().zip(ingested).zip(message_ids)
            {
                match ingested {
                    IngestOutcome::Erased { kinds } => {
                        counts.rejected += 1;
                        erased_rows.push(row);
                        outcomes.insert(
                            row,
                            outcome(row, "rejected", None, Some(erased_reason(&kinds))),
                        );
                        continue;
                    }
                    IngestOutcome::Recorded {
                        person_id,
                        created,
                        merges,
                        conflicts,
                        attached,
                    } => effects.push(Some(SignalEffects {
                        event_id: String::new(),
                        person_id,
                        source: context.source(),
                        created,
                        merges: merges as u64,
                        conflicts: conflicts as u64,
                        attached: attached as u64,
                    })),
                    IngestOutcome::Duplicate => {
                        read_back.push((effects.len(), message_id));
                        effects.push(None);
                    }
                }
                recorded.push((row, notes));
            }
            let pending = recorded;
            if !read_back.is_empty() {
                let started = std::time::Instant::now();
                let (indexes, ids): (Vec<usize>, Vec<String>) = read_back.into_iter().unzip();
                let found = self
                    .store
                    .signal_effects(tenant, &workspace, ids)
                    .await
                    .map_err(AppError::from_store("signal"))?;
                for (index, found) in indexes.into_iter().zip(found) {
                    effects[index] = found;
                }
                timings.reading_back += started.elapsed();
            }
            let source = context.source();
            for ((row, mut notes), effects) in pending.into_iter().zip(effects) {
                let Some(effects) = effects else {
                    return Err(AppError::internal(format!(
                        "row {row} was ingested but its signal is not found"
                    )));
                };
                if effects.source != source {
                    counts.duplicates += 1;
                    notes.insert(
                        0,
                        format!(
                            "already imported ({}, event {})",
                            effects.source, effects.event_id
                        ),
                    );
                    outcomes.insert(
                        row,
                        outcome(row, "duplicate", Some(effects.person_id), join(notes)),
                    );
                    continue;
                }
                counts.persons_created += u64::from(effects.created);
                counts.persons_merged += effects.merges;
                counts.identifiers_attached += effects.attached;
                counts.conflicts += effects.conflicts;
                if effects.conflicts > 0 {
                    notes.push(format!(
                        "{} identifier(s) left with another person (a limit would break); see the person's merges",
                        effects.conflicts
                    ));
                }
                let what = if effects.created {
                    "created"
                } else if effects.merges > 0 {
                    "merged"
                } else if effects.attached > 0 {
                    "attached"
                } else {
                    "matched"
                };
                outcomes.insert(
                    row,
                    outcome(row, what, Some(effects.person_id), join(notes)),
                );
            }
        }
        Ok((outcomes.into_values().collect(), counts, erased_rows))
    }

    /// Enrichment: keeps a row only if one of its `unique` identifiers already belongs to a
    /// person (or joins one through an earlier row of the chunk), and drops its new identifiers
    /// of kinds stronger than the strongest known one, so that resolution can only ever join
    /// the existing person (a stronger new value would be taken first and start a new person).
    /// Returns what was dropped, or `None` to skip the row.
    async fn enrichment_filter(
        &self,
        tenant: &TenantId,
        settings: &IdentitySettings,
        signal: &mut idgraph_store::SignalRecord,
        joining: &HashSet<Identifier>,
    ) -> Result<Option<Vec<String>>, AppError> {
        let mut strongest_known: Option<u32> = None;
        let mut known: HashSet<Identifier> = HashSet::new();
        for identifier in &signal.identifiers {
            let Some(rule) = settings.rule(identifier.kind()) else {
                continue;
            };
            if settings.policy_of(identifier) != Some(Policy::Unique) {
                continue;
            }
            let exists = joining.contains(identifier)
                || self
                    .store
                    .lookup_person(tenant, identifier)
                    .await
                    .map_err(AppError::from_store("person"))?
                    .is_some();
            if exists {
                known.insert(identifier.clone());
                strongest_known =
                    Some(strongest_known.map_or(rule.priority, |p| p.min(rule.priority)));
            }
        }
        let Some(strongest) = strongest_known else {
            return Ok(None);
        };
        let mut dropped = Vec::new();
        signal.identifiers.retain(|identifier| {
            let stronger = settings.rule(identifier.kind()).is_some_and(|rule| {
                settings.policy_of(identifier) == Some(Policy::Unique) && rule.priority < strongest
            });
            if stronger && !known.contains(identifier) {
                dropped.push(format!(
                    "new {} {:?} left out: enrichment only adds to the person found",
                    identifier.kind(),
                    identifier.value()
                ));
                false
            } else {
                true
            }
        });
        Ok(Some(dropped))
    }

    /// Suppression imports: each row's addresses become tenant-scope suppression entries, with
    /// ids derived from the file and row so that importing the file again adds nothing.
    async fn suppress(
        &self,
        tenant: &TenantId,
        _context: &JobContext,
        prepared: Vec<Prepared>,
    ) -> Result<(Vec<RowOutcome>, ImportCounts), AppError> {
        let mut counts = ImportCounts::default();
        let mut outcomes = Vec::with_capacity(prepared.len());
        let all_ids: Vec<String> = prepared
            .iter()
            .filter_map(|p| match p {
                Prepared::Suppression { entries, .. } => Some(entries),
                _ => None,
            })
            .flatten()
            .map(|e| e.entry_id.clone())
            .collect();
        let stored: HashSet<String> = self
            .store
            .stored_suppression_entries(tenant, all_ids)
            .await
            .map_err(AppError::from_store("suppression"))?
            .into_iter()
            .collect();
        let mut writes = Vec::new();
        for item in prepared {
            match item {
                Prepared::Rejected { row, reason } => {
                    counts.rejected += 1;
                    outcomes.push(outcome(row, "rejected", None, Some(reason)));
                }
                Prepared::Signal { row, .. } => {
                    counts.rejected += 1;
                    outcomes.push(outcome(
                        row,
                        "rejected",
                        None,
                        Some("not a suppression row".into()),
                    ));
                }
                Prepared::Suppression {
                    row,
                    entries,
                    mut notes,
                } => {
                    let fresh: Vec<_> = entries
                        .into_iter()
                        .filter(|e| !stored.contains(&e.entry_id))
                        .collect();
                    if fresh.is_empty() {
                        counts.duplicates += 1;
                        notes.insert(0, "already on the suppression list from this file".into());
                        outcomes.push(outcome(row, "duplicate", None, join(notes)));
                        continue;
                    }
                    counts.suppressed += 1;
                    let listed: Vec<String> = fresh
                        .iter()
                        .map(|e| {
                            format!(
                                "{} {} ({})",
                                e.identifier.kind(),
                                e.identifier.value(),
                                e.reason.as_str()
                            )
                        })
                        .collect();
                    notes.insert(0, format!("suppressed {}", listed.join(", ")));
                    writes.extend(fresh);
                    outcomes.push(outcome(row, "suppressed", None, join(notes)));
                }
            }
        }
        if !writes.is_empty() {
            self.store
                .record_compliance(
                    tenant,
                    ComplianceWrites {
                        suppressions: writes,
                        ..ComplianceWrites::default()
                    },
                )
                .await
                .map_err(AppError::from_store("suppression"))?;
        }
        Ok((outcomes, counts))
    }

    /// Finds jobs left unfinished (by a stop, a crash, or another process that died) and takes
    /// them up: processing jobs resume; a job whose upload was cut off cannot be finished
    /// without the rest of the file and is marked failed.
    pub async fn resume_unfinished(&self) -> Result<usize, AppError> {
        let mut resumed = 0;
        let mut page = PageRequest::first(PageRequest::MAX_LIMIT);
        loop {
            let tenants = self
                .store
                .list_tenants(&page)
                .await
                .map_err(AppError::from_store("tenant"))?;
            for tenant in &tenants.items {
                let jobs = self
                    .store
                    .unfinished_imports(&tenant.id)
                    .await
                    .map_err(AppError::from_store("import"))?;
                for job in jobs {
                    if self.is_running(&tenant.id, &job.job_id) {
                        continue;
                    }
                    match job.status {
                        ImportStatus::Processing => {
                            self.spawn(tenant.id.clone(), job.job_id.clone());
                            resumed += 1;
                        }
                        ImportStatus::Landing => {
                            let abandoned = self.store.single_process()
                                || job.updated_at < Timestamp::now() - LEASE;
                            if abandoned {
                                let error = format!(
                                    "the upload broke off after {} rows; upload the file again (rows already imported from it are recognized and not imported twice)",
                                    job.landed
                                );
                                self.store
                                    .fail_import(&tenant.id, &job.job_id, &error, Timestamp::now())
                                    .await
                                    .map_err(AppError::from_store("import"))?;
                                tracing::warn!(job = %job.job_id, tenant = %tenant.id, landed = job.landed, "an interrupted upload was marked failed");
                            }
                        }
                        ImportStatus::Completed | ImportStatus::Failed => {}
                    }
                }
            }
            match tenants.next_cursor {
                Some(cursor) => page.after = Some(cursor),
                None => break,
            }
        }
        Ok(resumed)
    }
}

/// A landing job's rows landed and whether it still lands, looked up after a pause; `None`
/// once it failed (the upload broke off) or was finished elsewhere.
async fn landing_progress<S: Store>(
    store: &S,
    tenant: &TenantId,
    job_id: &str,
) -> Result<Option<(u64, bool)>, AppError> {
    tokio::time::sleep(LANDING_POLL).await;
    let job = store
        .get_import(tenant, job_id)
        .await
        .map_err(AppError::from_store("import"))?;
    Ok(match job.status {
        ImportStatus::Landing => Some((job.landed, true)),
        ImportStatus::Processing => Some((job.landed, false)),
        ImportStatus::Completed | ImportStatus::Failed => None,
    })
}

/// Where a processing run spent its time, for the completion log line.
#[derive(Debug, Default)]
struct Timings {
    waiting_for_rows: std::time::Duration,
    resolving: std::time::Duration,
    reading_back: std::time::Duration,
    recording: std::time::Duration,
}

impl Timings {
    fn add(&mut self, other: &Timings) {
        self.waiting_for_rows += other.waiting_for_rows;
        self.resolving += other.resolving;
        self.reading_back += other.reading_back;
        self.recording += other.recording;
    }
}

/// The `want` rows after row `after` from what the job's upload handed over in this process
/// (`Taps`), or `None` when they are not all there: the caller reads them from the store.
fn from_tap(
    tap: &mut tokio::sync::mpsc::Receiver<Vec<LandedRow>>,
    tapped: &mut VecDeque<LandedRow>,
    after: u64,
    want: u64,
) -> Option<Vec<LandedRow>> {
    let want = usize::try_from(want).ok()?;
    loop {
        while tapped.front().is_some_and(|row| row.row <= after) {
            tapped.pop_front();
        }
        // Rows that do not follow on (the tap dropped a batch in between) are read from the
        // store when their turn comes; holding them would let a runner that lags hold the
        // whole file.
        if tapped.front().is_some_and(|row| row.row != after + 1) {
            tapped.clear();
        }
        if tapped.len() >= want {
            break;
        }
        match tap.try_recv() {
            Ok(batch) => tapped.extend(batch),
            Err(_) => return None,
        }
    }
    // Landed in order: contiguous when the last wanted row is where it should be.
    let last = tapped.get(want.checked_sub(1)?)?;
    (last.row == after + want as u64).then(|| tapped.drain(..want).collect())
}

/// The rows of the chunk after row `after`: the first chunks of a job are smaller, doubling from
/// [`FIRST_CHUNK_ROWS`] up to `chunk_rows`, so that the writer starts resolving while the rest of
/// the file lands instead of waiting for a whole chunk of it. A function of `after` alone, so a
/// job is cut the same way however its rows arrive and wherever it resumes.
fn chunk_size(after: u64, chunk_rows: u32) -> u32 {
    let first = FIRST_CHUNK_ROWS.min(chunk_rows);
    u32::try_from(after)
        .unwrap_or(u32::MAX)
        .clamp(first, chunk_rows)
}

/// The first chunk of a job: 500 rows of the benchmark's 400 columns are about 1.6 MB of the
/// upload.
pub(super) const FIRST_CHUNK_ROWS: u32 = 500;

/// The leads preset: phone numbers link people without merging them.
pub(crate) fn apply_preset(
    settings: &mut IdentitySettings,
    preset: Option<idgraph_import::Preset>,
) {
    if preset == Some(idgraph_import::Preset::Leads)
        && let Some(rule) = settings
            .kinds
            .get_mut(idgraph_core::identity::IdentifierKind::PHONE)
    {
        rule.policy = Policy::Shared;
    }
}

fn join(notes: Vec<String>) -> Option<String> {
    (!notes.is_empty()).then(|| notes.join("; "))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_first_chunks_double_up_to_the_chunk_size() {
        let mut after = 0u64;
        let mut sizes = Vec::new();
        while after < 20_000 {
            let size = super::chunk_size(after, 5_000);
            sizes.push(size);
            after += u64::from(size);
        }
        assert_eq!(sizes, [500, 500, 1_000, 2_000, 4_000, 5_000, 5_000, 5_000]);
        // A smaller configured chunk is never exceeded.
        assert_eq!(super::chunk_size(0, 100), 100);
        assert_eq!(super::chunk_size(10_000, 100), 100);
        assert_eq!(super::chunk_size(u64::MAX, 5_000), 5_000);
    }

    fn rows(from: u64, to: u64) -> Vec<idgraph_store::LandedRow> {
        (from..=to)
            .map(|row| idgraph_store::LandedRow {
                row,
                bytes: format!("row {row}").into_bytes(),
                defect: None,
            })
            .collect()
    }

    fn numbers(rows: &[idgraph_store::LandedRow]) -> Vec<u64> {
        rows.iter().map(|r| r.row).collect()
    }

    #[test]
    fn tapped_rows_are_used_only_when_the_next_ones_are_all_there() {
        let (sender, mut tap) = tokio::sync::mpsc::channel(4);
        let mut tapped = std::collections::VecDeque::new();
        sender.try_send(rows(1, 3)).expect("room");
        sender.try_send(rows(4, 6)).expect("room");
        // Across two batches.
        let got = super::from_tap(&mut tap, &mut tapped, 0, 4).expect("rows 1-4");
        assert_eq!(numbers(&got), [1, 2, 3, 4]);
        // More than there is: from the store.
        assert_eq!(super::from_tap(&mut tap, &mut tapped, 4, 3), None);
        // Rows the runner is past are dropped; the rest still serve.
        assert_eq!(
            numbers(&super::from_tap(&mut tap, &mut tapped, 5, 1).expect("row 6")),
            [6]
        );
        // A batch the tap dropped leaves a gap: those rows come from the store, and so do the
        // ones after the gap, which are not held.
        sender.try_send(rows(10, 12)).expect("room");
        sender.try_send(rows(13, 15)).expect("room");
        assert_eq!(super::from_tap(&mut tap, &mut tapped, 6, 3), None);
        assert!(tapped.is_empty(), "nothing held past a gap");
        // Once the runner has caught up with what the tap hands over, it serves again.
        sender.try_send(rows(16, 18)).expect("room");
        assert_eq!(
            numbers(&super::from_tap(&mut tap, &mut tapped, 15, 2).expect("rows 16-17")),
            [16, 17]
        );
        assert_eq!(super::from_tap(&mut tap, &mut tapped, 17, 0), None);
    }
}
