//! Imports: a CSV file becomes persons, identifiers and traits (or suppression entries), one
//! pipeline for every channel (HTTP upload, `idgraph import`).
//!
//! 1. **LAND** ([`Landing`]): the file arrives in pieces; every row is stored verbatim, with its
//!    number, in bounded batches, while the file's SHA-256 is computed. The job's runner starts
//!    with the upload and processes each chunk as soon as it has landed (decision 0020).
//! 2. **PARSE** (`prepare`, on blocking threads): the job's frozen mapping turns a row into a
//!    signal or suppression entries, or a rejection with its reason.
//! 3. **RESOLVE** and 4. **MERGE**: `Store::ingest` in chunks; the message id of a row is
//!    `import:<digest of header, row number and row>`, so the same file imported again is a
//!    duplicate.
//! 5. **RECORD**: each chunk's row outcomes, counts and progress in one transaction.
//!
//! Processing runs in the background ([`Importer::spawn`]) and resumes after a stop or a crash
//! ([`Importer::resume_unfinished`]).

mod prepare;
mod runner;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use idgraph_core::auth::Scope;
use idgraph_core::identity::IdentitySettings;
use idgraph_core::tenancy::{TenantId, WorkspaceName};
use idgraph_import::{CsvStream, FileError, Header, Limits, Mapping, Plan, RawRecord, Target};
use idgraph_store::{
    ImportCounts, ImportJob, ImportMode, ImportStatus, JobMapping, LandedRow, Page, PageRequest,
    RowOutcome, Store, StoreError,
};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::access::Principal;
use crate::{AppError, ErrorKind, EventIds, compliance, new_id, settings};

/// Rows per RESOLVE..RECORD chunk: one `Store::ingest` call and one recorded transaction.
/// Large enough that the index pages a chunk dirties are written once for many rows (on the
/// embedded store every commit writes each dirty page to the WAL), small enough that a chunk
/// holds the writer for well under a second.
pub const CHUNK_ROWS: u32 = 5_000;
/// LAND writes a batch when it has this many rows or bytes.
const LAND_BATCH_ROWS: usize = 2_000;
const LAND_BATCH_BYTES: usize = 4 << 20;

/// The import machinery of one process: the store, the event id generator, this process's
/// runner id, and the jobs it is running. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Importer<S> {
    store: S,
    event_ids: Arc<EventIds>,
    runner: String,
    /// Jobs this process runs PARSE..RECORD for.
    running: JobSet,
    /// Jobs whose file this process is receiving.
    landing: JobSet,
    stopping: Arc<AtomicBool>,
    chunk_rows: u32,
    /// Rows landed by this process, handed to its runner of the same job as they land.
    taps: Taps,
}

impl<S: Store> Importer<S> {
    pub fn new(store: S, event_ids: Arc<EventIds>) -> Self {
        Self {
            store,
            event_ids,
            runner: new_id(),
            running: JobSet::default(),
            landing: JobSet::default(),
            stopping: Arc::new(AtomicBool::new(false)),
            chunk_rows: CHUNK_ROWS,
            taps: Taps::default(),
        }
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    fn start_running(&self, tenant: &TenantId, job_id: &str) -> bool {
        !self.stopping() && self.running.insert(tenant, job_id)
    }

    fn stop_running(&self, tenant: &TenantId, job_id: &str) {
        self.running.remove(tenant, job_id);
    }

    /// Whether this process runs the job or receives its file.
    fn is_running(&self, tenant: &TenantId, job_id: &str) -> bool {
        self.running.contains(tenant, job_id) || self.landing.contains(tenant, job_id)
    }

    fn stopping(&self) -> bool {
        self.stopping.load(Ordering::Relaxed)
    }

    /// Asks running jobs to stop after their current chunk and waits up to `grace` for them.
    /// What they did not finish resumes at the next start.
    pub async fn stop(&self, grace: Duration) {
        self.stopping.store(true, Ordering::Relaxed);
        let deadline = tokio::time::Instant::now() + grace;
        loop {
            let idle = self.running.is_empty() && self.landing.is_empty();
            if idle || tokio::time::Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Resumes unfinished jobs now and then every `every`, until [`Importer::stop`].
    pub async fn sweep(self, every: Duration) {
        while !self.stopping() {
            if let Err(error) = self.resume_unfinished().await {
                tracing::warn!(%error, "looking for unfinished imports failed");
            }
            let deadline = tokio::time::Instant::now() + every;
            while !self.stopping() && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

/// Jobs of this process, by tenant and id.
#[derive(Debug, Clone, Default)]
struct JobSet(Arc<Mutex<HashSet<(TenantId, String)>>>);

impl JobSet {
    fn jobs(&self) -> std::sync::MutexGuard<'_, HashSet<(TenantId, String)>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// False if the job was there already.
    fn insert(&self, tenant: &TenantId, job_id: &str) -> bool {
        self.jobs().insert((tenant.clone(), job_id.to_owned()))
    }

    fn remove(&self, tenant: &TenantId, job_id: &str) {
        self.jobs().remove(&(tenant.clone(), job_id.to_owned()));
    }

    fn contains(&self, tenant: &TenantId, job_id: &str) -> bool {
        self.jobs().contains(&(tenant.clone(), job_id.to_owned()))
    }

    fn is_empty(&self) -> bool {
        self.jobs().is_empty()
    }
}

/// Landed rows on their way from a job's upload to its runner in the same process, so the
/// runner need not read back and open what was just sealed and written. Only a copy: the rows
/// are landed first, and a runner that finds the next rows missing here (it started after
/// them, fell behind, or runs in another process) reads them from the store. Each tap holds
/// at most [`TAP_BATCHES`] landing batches.
#[derive(Debug, Clone, Default)]
struct Taps(Arc<Mutex<TapMap>>);

/// A tap's sending end, by tenant and job.
type TapMap = HashMap<(TenantId, String), tokio::sync::mpsc::Sender<Vec<LandedRow>>>;

/// Landing batches a tap holds for a runner that has not taken them yet (each up to
/// `LAND_WRITE_BYTES`); more are dropped, and read from the store.
const TAP_BATCHES: usize = 2;

impl Taps {
    fn taps(&self) -> std::sync::MutexGuard<'_, TapMap> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The runner's end of a job's tap, open until it is dropped.
    fn open(&self, tenant: &TenantId, job_id: &str) -> tokio::sync::mpsc::Receiver<Vec<LandedRow>> {
        let (sender, receiver) = tokio::sync::mpsc::channel(TAP_BATCHES);
        self.taps()
            .insert((tenant.clone(), job_id.to_owned()), sender);
        receiver
    }

    fn close(&self, tenant: &TenantId, job_id: &str) {
        self.taps().remove(&(tenant.clone(), job_id.to_owned()));
    }

    /// The lander's end, while a runner listens.
    fn sender(
        &self,
        tenant: &TenantId,
        job_id: &str,
    ) -> Option<tokio::sync::mpsc::Sender<Vec<LandedRow>>> {
        self.taps()
            .get(&(tenant.clone(), job_id.to_owned()))
            .filter(|sender| !sender.is_closed())
            .cloned()
    }
}

/// Job parameters besides the mapping, stored with the job.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct JobOptions {
    /// The suppression reason of rows that do not name one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) reason: Option<String>,
    #[serde(default, skip_serializing_if = "RowIds::is_file")]
    pub(crate) row_ids: RowIds,
}

/// How a job names its rows' signals and suppression entries (decision 0020). Both make the
/// same file imported again a duplicate, row by row.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum RowIds {
    /// By the file's SHA-256 and the row number: known only once the whole file has landed.
    /// Jobs stored before rows were processed while landing keep it, so a resumed or
    /// reprocessed one never names a row twice.
    #[default]
    File,
    /// By a digest of the header, the row number and the row's bytes: known as soon as the
    /// row has landed, so processing follows the upload.
    Row,
}

impl RowIds {
    fn is_file(&self) -> bool {
        *self == RowIds::File
    }
}

pub(crate) fn options_of(stored: &str) -> JobOptions {
    serde_json::from_str(stored).unwrap_or_default()
}

pub(crate) fn outcome(
    row: u64,
    outcome: &str,
    person_id: Option<String>,
    reason: Option<String>,
) -> RowOutcome {
    RowOutcome {
        row,
        outcome: outcome.to_owned(),
        person_id,
        reason,
    }
}

/// What `POST /api/v1/imports` and `idgraph import` ask for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportRequest {
    pub workspace: Option<String>,
    pub mode: Option<String>,
    pub mapping: Option<String>,
    /// Suppression imports: the reason of rows without a reason column (default `dnc`).
    pub reason: Option<String>,
}

/// The name a user mapping is stored under.
fn mapping_setting(name: &str) -> String {
    format!("import_mapping:{name}")
}

/// A stored user mapping: its document and how many times it was saved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredMapping {
    pub name: String,
    pub version: u32,
    pub mapping: idgraph_import::MappingDoc,
    pub updated_at: String,
}

fn check_mapping_name(name: &str) -> Result<(), AppError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if !ok {
        return Err(AppError::invalid(
            "invalid_mapping_name",
            format!("mapping name {name:?} must be 1-64 characters of a-z, 0-9, '_' and '-'"),
        ));
    }
    if idgraph_import::mapping::BUILT_IN.contains(&name) {
        return Err(AppError::invalid(
            "invalid_mapping_name",
            format!("{name:?} is a built-in mapping and cannot be replaced"),
        ));
    }
    Ok(())
}

/// Saves a user mapping (TOML or JSON text) under `name`; its version goes up by one.
pub async fn put_mapping<S: Store>(
    store: &S,
    principal: &Principal,
    name: &str,
    text: &str,
) -> Result<StoredMapping, AppError> {
    principal.require(Scope::ImportsWrite)?;
    check_mapping_name(name)?;
    let mapping = Mapping::from_text(text)
        .map_err(|e| AppError::invalid("invalid_mapping", e.to_string()))?;
    let identity = settings::load(store, &principal.tenant_id).await?;
    check_kinds(&mapping, &identity)?;
    let previous = stored_mapping(store, &principal.tenant_id, name).await?;
    let stored = StoredMapping {
        name: name.to_owned(),
        version: previous.map_or(1, |p| p.version + 1),
        mapping: mapping.doc().clone(),
        updated_at: Timestamp::now().to_string(),
    };
    let text = serde_json::to_string(&stored).map_err(|e| AppError::internal(e.to_string()))?;
    store
        .put_tenant_setting(
            &principal.tenant_id,
            &mapping_setting(name),
            text,
            Timestamp::now(),
        )
        .await
        .map_err(AppError::from_store("mapping"))?;
    Ok(stored)
}

pub async fn get_mapping<S: Store>(
    store: &S,
    principal: &Principal,
    name: &str,
) -> Result<StoredMapping, AppError> {
    principal.require(Scope::ImportsRead)?;
    if let Some(mapping) = Mapping::built_in(name) {
        return Ok(StoredMapping {
            name: name.to_owned(),
            version: 1,
            mapping: mapping.doc().clone(),
            updated_at: String::new(),
        });
    }
    stored_mapping(store, &principal.tenant_id, name)
        .await?
        .ok_or_else(|| AppError::not_found("mapping"))
}

async fn stored_mapping<S: Store>(
    store: &S,
    tenant: &TenantId,
    name: &str,
) -> Result<Option<StoredMapping>, AppError> {
    let Some(text) = store
        .tenant_setting(tenant, &mapping_setting(name))
        .await
        .map_err(AppError::from_store("mapping"))?
    else {
        return Ok(None);
    };
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| AppError::internal(format!("stored mapping {name} is unreadable: {e}")))
}

/// The mapping a job uses: built-in or stored, by name (default `auto`).
async fn resolve_mapping<S: Store>(
    store: &S,
    tenant: &TenantId,
    name: Option<&str>,
) -> Result<Mapping, AppError> {
    let name = name.filter(|n| !n.is_empty()).unwrap_or("auto");
    if let Some(mapping) = Mapping::built_in(name) {
        return Ok(mapping);
    }
    let stored = stored_mapping(store, tenant, name).await?.ok_or_else(|| {
        AppError::invalid(
            "unknown_mapping",
            format!(
                "there is no mapping {name:?}; use auto or leads, or save one with PUT /api/v1/import-mappings/{name}"
            ),
        )
        .with_detail("field", "mapping")
    })?;
    let mut doc = stored.mapping;
    // The stored name is the one the job reports.
    doc.name = Some(name.to_owned());
    Mapping::from_doc(doc).map_err(|e| AppError::internal(format!("stored mapping {name}: {e}")))
}

/// Custom identifier kinds a mapping names must be configured for the tenant.
fn check_kinds(mapping: &Mapping, identity: &IdentitySettings) -> Result<(), AppError> {
    for (column, target) in &mapping.columns {
        if let Target::Identifier(kind) = target
            && identity.rule(kind).is_none()
        {
            return Err(AppError::invalid(
                "unknown_identifier_kind",
                format!(
                    "column {column:?} maps to identifier kind {kind}, which this tenant has not configured (PUT /api/v1/settings/identity)"
                ),
            ));
        }
    }
    Ok(())
}

/// Whether a file read by `plan` can be imported in `mode` at all.
fn check_plan(plan: &Plan, mode: ImportMode) -> Result<(), AppError> {
    let columns = || plan.names.join(", ");
    match mode {
        ImportMode::Suppression => {
            let addresses = plan.identifier_columns().iter().any(|(_, kind)| {
                kind == idgraph_core::identity::IdentifierKind::PHONE
                    || kind == idgraph_core::identity::IdentifierKind::EMAIL
            });
            if !addresses {
                return Err(AppError::invalid(
                    "no_identifier_columns",
                    format!(
                        "a suppression import needs a phone or email column; the columns are: {}",
                        columns()
                    ),
                ));
            }
        }
        ImportMode::Universe | ImportMode::Enrichment => {
            if plan.identifier_columns().is_empty() && !plan.can_derive_identity_hash() {
                return Err(AppError::invalid(
                    "no_identifier_columns",
                    format!(
                        "no column maps to an identifier (email, phone, customer id, or first/last name with address and zip); the columns are: {}. Name them in a mapping.",
                        columns()
                    ),
                ));
            }
        }
    }
    Ok(())
}

fn mode_of(raw: Option<&str>) -> Result<ImportMode, AppError> {
    match raw.filter(|m| !m.is_empty()) {
        None => Ok(ImportMode::Universe),
        Some(raw) => ImportMode::parse(raw).ok_or_else(|| {
            AppError::invalid(
                "invalid_input",
                format!("mode {raw:?} is not one of universe, enrichment, suppression"),
            )
            .with_detail("field", "mode")
        }),
    }
}

fn file_error(error: &FileError) -> AppError {
    AppError::invalid(error.code(), error.to_string())
}

/// LAND in progress: bytes in, rows stored in batches, the file hashed as it goes.
#[derive(Debug)]
pub struct Landing<S> {
    importer: Importer<S>,
    tenant: TenantId,
    workspace: WorkspaceName,
    mode: ImportMode,
    mapping: Mapping,
    options: JobOptions,
    stream: CsvStream,
    hasher: Sha256,
    bytes: u64,
    job: Option<ImportJob>,
    records: Vec<RawRecord>,
    batch: Vec<LandedRow>,
    batch_bytes: usize,
    next_row: u64,
    /// Writes the batches, in order, while the rest of the file is read.
    lander: Option<Lander>,
}

impl<S: Store> Landing<S> {
    /// Checks the request (scope, workspace, mode, mapping); the job is created when the
    /// header has arrived and can be read.
    pub async fn begin(
        importer: &Importer<S>,
        principal: &Principal,
        request: ImportRequest,
    ) -> Result<Self, AppError> {
        principal.require(Scope::ImportsWrite)?;
        let store = importer.store();
        let workspace = compliance::workspace_for(principal, request.workspace.as_deref())?;
        store
            .get_workspace(&principal.tenant_id, &workspace)
            .await
            .map_err(AppError::from_store("workspace"))?;
        let mode = mode_of(request.mode.as_deref())?;
        let reason = request.reason.filter(|r| !r.is_empty());
        if let Some(reason) = &reason {
            reason
                .parse::<idgraph_core::compliance::SuppressionReason>()
                .map_err(|e| AppError::from(e).with_detail("field", "reason"))?;
        }
        let mapping =
            resolve_mapping(store, &principal.tenant_id, request.mapping.as_deref()).await?;
        let identity = settings::load(store, &principal.tenant_id).await?;
        check_kinds(&mapping, &identity)?;
        Ok(Self {
            importer: importer.clone(),
            tenant: principal.tenant_id.clone(),
            workspace,
            mode,
            mapping,
            options: JobOptions {
                reason,
                row_ids: RowIds::Row,
            },
            stream: CsvStream::new(Limits::default()),
            hasher: Sha256::new(),
            bytes: 0,
            job: None,
            records: Vec::new(),
            batch: Vec::new(),
            batch_bytes: 0,
            next_row: 1,
            lander: None,
        })
    }

    /// The job, once the header has been read.
    pub fn job(&self) -> Option<&ImportJob> {
        self.job.as_ref()
    }

    pub fn rows_landed(&self) -> u64 {
        self.next_row - 1
    }

    /// Takes the next piece of the file. Fails (4xx) only when the file itself is unusable,
    /// which shows in its first lines.
    pub async fn push(&mut self, bytes: &[u8]) -> Result<(), AppError> {
        self.hasher.update(bytes);
        self.bytes += bytes.len() as u64;
        let mut records = std::mem::take(&mut self.records);
        let pushed = self.stream.push(bytes, &mut records);
        self.records = records;
        if let Err(error) = pushed {
            return Err(self.fail_file(&error).await);
        }
        self.take_records().await
    }

    /// The end of the file: the last rows are stored and the job becomes `processing`; its
    /// runner, which started with the upload, processes the rest.
    pub async fn finish(mut self) -> Result<ImportJob, AppError> {
        let mut records = std::mem::take(&mut self.records);
        let finished = self.stream.finish(&mut records);
        self.records = records;
        if let Err(error) = finished {
            return Err(self.fail_file(&error).await);
        }
        self.take_records().await?;
        self.flush().await?;
        self.landed().await?;
        let Some(job) = self.job.take() else {
            return Err(file_error(&FileError::Empty));
        };
        let sha = prepare::hex(&self.hasher.finalize());
        let store = self.importer.store();
        let mut warnings = job.warnings.clone();
        if self.next_row == 1 {
            warnings.push("the file has a header and no rows".to_owned());
        }
        store
            .finish_import_landing(
                &self.tenant,
                &job.job_id,
                &sha,
                self.bytes,
                warnings,
                Timestamp::now(),
            )
            .await
            .map_err(AppError::from_store("import"))?;
        self.importer.landing.remove(&self.tenant, &job.job_id);
        // Unless the runner is still at work (it stopped on an error, say).
        self.importer.spawn(self.tenant.clone(), job.job_id.clone());
        tracing::info!(job = %job.job_id, tenant = %self.tenant, rows = self.next_row - 1,
                       bytes = self.bytes, "import landed");
        store
            .get_import(&self.tenant, &job.job_id)
            .await
            .map_err(AppError::from_store("import"))
    }

    /// The upload broke off: what landed stays, and the job is marked failed.
    pub async fn abort(mut self, why: &str) {
        // What is being written lands (or not) before the job is marked failed.
        let _ = self.landed().await;
        if let Some(job) = self.job.take() {
            let error = format!(
                "the upload broke off after {} rows ({why}); upload the file again",
                self.next_row - 1
            );
            if let Err(e) = self
                .importer
                .store()
                .fail_import(&self.tenant, &job.job_id, &error, Timestamp::now())
                .await
            {
                tracing::error!(job = %job.job_id, error = %e, "marking an interrupted upload failed did not work");
            }
            self.importer.landing.remove(&self.tenant, &job.job_id);
        }
    }

    async fn fail_file(&mut self, error: &FileError) -> AppError {
        let app_error = file_error(error);
        let _ = self.landed().await;
        if let Some(job) = self.job.take() {
            let _ = self
                .importer
                .store()
                .fail_import(
                    &self.tenant,
                    &job.job_id,
                    &error.to_string(),
                    Timestamp::now(),
                )
                .await;
            self.importer.landing.remove(&self.tenant, &job.job_id);
        }
        app_error
    }

    async fn take_records(&mut self) -> Result<(), AppError> {
        if self.job.is_none() {
            let Some(header) = self.stream.header().cloned() else {
                return Ok(());
            };
            self.create_job(&header).await?;
        }
        for record in std::mem::take(&mut self.records) {
            self.batch_bytes += record.bytes.len();
            self.batch.push(LandedRow {
                row: self.next_row,
                bytes: record.bytes,
                defect: record.defect.map(|d| d.as_str().to_owned()),
            });
            self.next_row += 1;
            // The first chunk lands alone, so the runner can start on it (`chunk_size`).
            let first = self.batch.first().is_some_and(|r| r.row == 1)
                && self.batch.len() >= runner::FIRST_CHUNK_ROWS as usize;
            if first || self.batch.len() >= LAND_BATCH_ROWS || self.batch_bytes >= LAND_BATCH_BYTES
            {
                self.flush().await?;
            }
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), AppError> {
        let Some(job_id) = self.job.as_ref().map(|job| job.job_id.clone()) else {
            return Ok(());
        };
        if self.batch.is_empty() {
            return Ok(());
        }
        let rows = std::mem::take(&mut self.batch);
        self.batch_bytes = 0;
        let lander = self.lander.get_or_insert_with(|| {
            Lander::start(
                self.importer.store().clone(),
                self.importer.taps.clone(),
                self.tenant.clone(),
                job_id,
            )
        });
        if lander.queue.send(rows).await.is_err() {
            // The lander stopped on an error, which says why.
            self.landed().await?;
            return Err(AppError::internal("landing rows stopped"));
        }
        Ok(())
    }

    /// Waits until every batch handed over has been written.
    async fn landed(&mut self) -> Result<(), AppError> {
        let Some(Lander { queue, task }) = self.lander.take() else {
            return Ok(());
        };
        drop(queue);
        task.await
            .map_err(|e| AppError::internal(format!("landing rows failed: {e}")))?
            .map_err(AppError::from_store("import"))
    }

    async fn create_job(&mut self, header: &Header) -> Result<(), AppError> {
        let plan = self.mapping.plan(header);
        check_plan(&plan, self.mode)?;
        let now = Timestamp::now();
        let mut warnings = header.warnings.clone();
        warnings.extend(plan.warnings.iter().cloned());
        let options =
            serde_json::to_string(&self.options).map_err(|e| AppError::internal(e.to_string()))?;
        let job = ImportJob {
            job_id: new_id(),
            workspace: self.workspace.clone(),
            mode: self.mode,
            status: ImportStatus::Landing,
            mapping: JobMapping {
                name: self.mapping.name.clone(),
                version: 1,
                document: self.mapping.canonical_json(),
                digest: self.mapping.digest(),
            },
            options,
            header: header.raw.clone(),
            delimiter: header.delimiter,
            file_sha256: None,
            file_bytes: 0,
            landed: 0,
            processed: 0,
            counts: ImportCounts::default(),
            warnings,
            error: None,
            runner: None,
            heartbeat: None,
            created_at: now,
            updated_at: now,
            finished_at: None,
        };
        self.importer
            .store()
            .create_import(&self.tenant, &job)
            .await
            .map_err(AppError::from_store("import"))?;
        // Marked while landing, so the sweep leaves it alone.
        self.importer.landing.insert(&self.tenant, &job.job_id);
        // Rows are processed while the rest of the file lands (decision 0020).
        self.importer.spawn(self.tenant.clone(), job.job_id.clone());
        self.job = Some(job);
        Ok(())
    }
}

/// Batches queued for the lander; with `LAND_WRITE_BYTES`, what an upload holds in memory.
const LAND_QUEUE: usize = 4;
/// The lander writes every queued batch at once, up to this many bytes.
const LAND_WRITE_BYTES: usize = 16 << 20;

/// The task that stores an upload's batches in order. Its job's runner shares the store's one
/// writer (on the embedded store), which then spends a while on each chunk; batches queue up
/// meanwhile and land together after it, so reading the file never waits for processing and
/// the runner does not run out of landed rows (decision 0020).
#[derive(Debug)]
struct Lander {
    queue: tokio::sync::mpsc::Sender<Vec<LandedRow>>,
    task: tokio::task::JoinHandle<Result<(), StoreError>>,
}

impl Lander {
    fn start<S: Store>(store: S, taps: Taps, tenant: TenantId, job_id: String) -> Self {
        let (queue, mut batches) = tokio::sync::mpsc::channel::<Vec<LandedRow>>(LAND_QUEUE);
        let task = tokio::spawn(async move {
            while let Some(mut rows) = batches.recv().await {
                let mut bytes: usize = rows.iter().map(|r| r.bytes.len()).sum();
                while bytes < LAND_WRITE_BYTES {
                    let Ok(more) = batches.try_recv() else {
                        break;
                    };
                    bytes += more.iter().map(|r| r.bytes.len()).sum::<usize>();
                    rows.extend(more);
                }
                let tap = taps.sender(&tenant, &job_id);
                let copy = tap.as_ref().map(|_| rows.clone());
                store
                    .land_import_rows(&tenant, &job_id, rows, Timestamp::now())
                    .await?;
                if let (Some(tap), Some(copy)) = (tap, copy) {
                    // A runner behind by more than the tap holds reads these from the store.
                    let _ = tap.try_send(copy);
                }
            }
            Ok(())
        });
        Self { queue, task }
    }
}

/// A job as the API shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct ImportView {
    pub job: ImportJob,
    /// Column → what the mapping made of it.
    pub columns: Vec<(String, String)>,
}

fn view(job: ImportJob) -> ImportView {
    let columns = Mapping::from_json(&job.mapping.document)
        .ok()
        .zip(Header::parse(&job.header, job.delimiter).ok())
        .map(|(mapping, header)| mapping.plan(&header).describe())
        .unwrap_or_default();
    ImportView { job, columns }
}

fn check_job_id(job_id: &str) -> Result<(), AppError> {
    if job_id.is_empty() || job_id.len() > 64 {
        return Err(AppError::not_found("import"));
    }
    Ok(())
}

pub async fn get<S: Store>(
    store: &S,
    principal: &Principal,
    job_id: &str,
) -> Result<ImportView, AppError> {
    principal.require(Scope::ImportsRead)?;
    check_job_id(job_id)?;
    let job = store
        .get_import(&principal.tenant_id, job_id)
        .await
        .map_err(AppError::from_store("import"))?;
    visible(principal, &job)?;
    Ok(view(job))
}

/// A key bound to a workspace sees only that workspace's imports.
fn visible(principal: &Principal, job: &ImportJob) -> Result<(), AppError> {
    match &principal.workspace {
        Some(own) if *own != job.workspace => Err(AppError::not_found("import")),
        _ => Ok(()),
    }
}

pub async fn list<S: Store>(
    store: &S,
    principal: &Principal,
    page: &PageRequest,
) -> Result<Page<ImportView>, AppError> {
    principal.require(Scope::ImportsRead)?;
    let jobs = store
        .list_imports(&principal.tenant_id, page)
        .await
        .map_err(AppError::from_store("import"))?;
    Ok(Page {
        items: jobs
            .items
            .into_iter()
            .filter(|job| visible(principal, job).is_ok())
            .map(view)
            .collect(),
        next_cursor: jobs.next_cursor,
    })
}

/// The outcomes a rows query may filter on.
pub const OUTCOMES: [&str; 8] = [
    "created",
    "merged",
    "attached",
    "matched",
    "duplicate",
    "skipped",
    "suppressed",
    "rejected",
];

pub async fn rows<S: Store>(
    store: &S,
    principal: &Principal,
    job_id: &str,
    outcome: Option<&str>,
    page: &PageRequest,
) -> Result<Page<RowOutcome>, AppError> {
    principal.require(Scope::ImportsRead)?;
    check_job_id(job_id)?;
    if let Some(outcome) = outcome
        && !OUTCOMES.contains(&outcome)
    {
        return Err(AppError::invalid(
            "invalid_query",
            format!("outcome {outcome:?} is not one of {}", OUTCOMES.join(", ")),
        )
        .with_detail("field", "outcome"));
    }
    if let Some(cursor) = &page.after
        && cursor.parse::<u64>().is_err()
    {
        return Err(AppError::invalid(
            "invalid_cursor",
            "the cursor is not valid",
        ));
    }
    let job = store
        .get_import(&principal.tenant_id, job_id)
        .await
        .map_err(AppError::from_store("import"))?;
    visible(principal, &job)?;
    store
        .import_outcomes(&principal.tenant_id, job_id, outcome, page)
        .await
        .map_err(AppError::from_store("import"))
}

/// Runs PARSE..RECORD again over the landed rows with a new mapping version (the named
/// mapping, or the job's own mapping name read again).
pub async fn reprocess<S: Store>(
    importer: &Importer<S>,
    principal: &Principal,
    job_id: &str,
    mapping: Option<&str>,
) -> Result<ImportView, AppError> {
    principal.require(Scope::ImportsWrite)?;
    check_job_id(job_id)?;
    let store = importer.store();
    let job = store
        .get_import(&principal.tenant_id, job_id)
        .await
        .map_err(AppError::from_store("import"))?;
    visible(principal, &job)?;
    let name = mapping
        .filter(|m| !m.is_empty())
        .unwrap_or(&job.mapping.name);
    let mapping = resolve_mapping(store, &principal.tenant_id, Some(name)).await?;
    let identity = settings::load(store, &principal.tenant_id).await?;
    check_kinds(&mapping, &identity)?;
    let header = Header::parse(&job.header, job.delimiter).map_err(|e| file_error(&e))?;
    check_plan(&mapping.plan(&header), job.mode)?;
    let updated = store
        .reprocess_import(
            &principal.tenant_id,
            job_id,
            JobMapping {
                name: mapping.name.clone(),
                version: job.mapping.version + 1,
                document: mapping.canonical_json(),
                digest: mapping.digest(),
            },
            job.options.clone(),
            &importer.runner,
            Timestamp::now(),
        )
        .await
        .map_err(|e| match e {
            StoreError::Conflict(message) => {
                AppError::new(ErrorKind::Conflict, "import_busy", message)
            }
            other => AppError::from_store("import")(other),
        })?;
    importer.spawn(principal.tenant_id.clone(), job_id.to_owned());
    Ok(view(updated))
}
