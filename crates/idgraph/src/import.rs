//! `idgraph import FILE`: the CLI channel of imports. Against a running server (`--server`) it
//! is an HTTP client of `POST /api/v1/imports`; directly on a store no server holds, it runs the
//! same use case (`idgraph_app::imports`) in-process. Either way it shows a progress bar (rows/s,
//! ETA) on a terminal, prints a summary table, and can write every row's outcome to a CSV file.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use idgraph_app::EventIds;
use idgraph_app::access::Principal;
use idgraph_app::imports::{self, ImportRequest, Importer, Landing};
use idgraph_core::tenancy::TenantId;
use idgraph_store::{ImportJob, ImportStatus, PageRequest, Store};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Deserialize;

/// Bytes read from the file at a time.
const BLOCK: usize = 1 << 20;
const POLL: Duration = Duration::from_millis(250);

/// What to import and how, common to both channels.
#[derive(Debug, Clone)]
pub struct ImportOptions {
    pub file: PathBuf,
    pub workspace: Option<String>,
    pub mode: Option<String>,
    /// A mapping name, or a path to a TOML/JSON mapping file (saved under its file stem).
    pub mapping: Option<String>,
    pub reason: Option<String>,
    pub output: Option<PathBuf>,
    pub progress: bool,
}

/// A job's state as both channels see it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct JobState {
    pub id: String,
    pub status: String,
    #[serde(default)]
    pub mapping: String,
    #[serde(default)]
    pub mapping_version: u32,
    #[serde(default)]
    pub mode: String,
    pub counts: Counts,
    #[serde(default)]
    pub warnings: Vec<String>,
    #[serde(default)]
    pub error: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct Counts {
    pub rows: u64,
    pub landed: u64,
    pub parsed: u64,
    pub rejected: u64,
    pub persons_created: u64,
    pub persons_merged: u64,
    pub identifiers_attached: u64,
    pub conflicts: u64,
    #[serde(default)]
    pub skipped: u64,
    #[serde(default)]
    pub duplicates: u64,
    #[serde(default)]
    pub suppressed: u64,
}

impl From<&ImportJob> for JobState {
    fn from(job: &ImportJob) -> Self {
        let c = &job.counts;
        Self {
            id: job.job_id.clone(),
            status: job.status.as_str().to_owned(),
            mapping: job.mapping.name.clone(),
            mapping_version: job.mapping.version,
            mode: job.mode.as_str().to_owned(),
            counts: Counts {
                rows: job.landed,
                landed: job.landed,
                parsed: job.processed,
                rejected: c.rejected,
                persons_created: c.persons_created,
                persons_merged: c.persons_merged,
                identifiers_attached: c.identifiers_attached,
                conflicts: c.conflicts,
                skipped: c.skipped,
                duplicates: c.duplicates,
                suppressed: c.suppressed,
            },
            warnings: job.warnings.clone(),
            error: job.error.clone(),
        }
    }
}

impl JobState {
    fn finished(&self) -> bool {
        self.status == ImportStatus::Completed.as_str()
            || self.status == ImportStatus::Failed.as_str()
    }
}

/// The progress bar: bytes while the file uploads, rows while they are processed.
struct Progress {
    bar: ProgressBar,
}

impl Progress {
    fn new(shown: bool, file_bytes: u64) -> Self {
        let bar = ProgressBar::with_draw_target(
            Some(file_bytes),
            if shown {
                ProgressDrawTarget::stderr()
            } else {
                ProgressDrawTarget::hidden()
            },
        );
        bar.set_style(
            ProgressStyle::with_template(
                "{msg:10} [{bar:30}] {bytes}/{total_bytes} ({bytes_per_sec}, ETA {eta})",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar.set_message("uploading");
        Self { bar }
    }

    fn uploaded(&self, bytes: u64) {
        self.bar.set_position(bytes);
    }

    fn processing(&self, rows: u64) {
        self.bar.set_style(
            ProgressStyle::with_template(
                "{msg:10} [{bar:30}] {human_pos}/{human_len} rows ({per_sec}, ETA {eta})",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        self.bar.set_message("processing");
        self.bar.set_length(rows);
        self.bar.reset();
    }

    fn processed(&self, rows: u64) {
        self.bar.set_position(rows);
    }

    fn done(&self) {
        self.bar.finish_and_clear();
    }
}

/// The summary table, on stdout.
pub fn print_summary(state: &JobState, elapsed: Duration) {
    let c = &state.counts;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "import {}: {} in {:.1} s (mode {}, mapping {} v{})",
        state.id,
        state.status,
        elapsed.as_secs_f64(),
        state.mode,
        state.mapping,
        state.mapping_version
    );
    let rows = [
        ("rows", c.rows),
        ("processed", c.parsed),
        ("rejected", c.rejected),
        ("persons created", c.persons_created),
        ("persons merged", c.persons_merged),
        ("identifiers attached", c.identifiers_attached),
        ("conflicts", c.conflicts),
        ("skipped", c.skipped),
        ("duplicates", c.duplicates),
        ("suppressed", c.suppressed),
    ];
    for (what, n) in rows {
        let _ = writeln!(out, "  {what:<22}{n:>12}");
    }
    let seconds = elapsed.as_secs_f64();
    if seconds > 0.0 {
        let _ = writeln!(out, "  {:<22}{:>12.0}", "rows/s", c.rows as f64 / seconds);
    }
    for warning in &state.warnings {
        let _ = writeln!(out, "  warning: {warning}");
    }
    if let Some(error) = &state.error {
        let _ = writeln!(out, "  error: {error}");
    }
}

/// Reads a file in blocks on a thread, so a large file never sits in memory whole.
fn read_blocks(
    path: &Path,
) -> anyhow::Result<tokio::sync::mpsc::Receiver<std::io::Result<Vec<u8>>>> {
    let mut file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let (send, receive) = tokio::sync::mpsc::channel(4);
    std::thread::Builder::new()
        .name("idgraph-import-reader".into())
        .spawn(move || {
            loop {
                let mut block = vec![0u8; BLOCK];
                match file.read(&mut block) {
                    Ok(0) => return,
                    Ok(n) => {
                        block.truncate(n);
                        if send.blocking_send(Ok(block)).is_err() {
                            return;
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        let _ = send.blocking_send(Err(e));
                        return;
                    }
                }
            }
        })
        .context("cannot start the file reader")?;
    Ok(receive)
}

fn file_size(path: &Path) -> anyhow::Result<u64> {
    let meta =
        std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
    if !meta.is_file() {
        bail!("{} is not a file", path.display());
    }
    Ok(meta.len())
}

/// `--mapping` names a file when it is a path to one: returns (name to save it under, text).
fn mapping_file(mapping: Option<&str>) -> anyhow::Result<Option<(String, String)>> {
    let Some(raw) = mapping else { return Ok(None) };
    let path = Path::new(raw);
    let looks_like_file =
        raw.contains('/') || raw.ends_with(".toml") || raw.ends_with(".json") || path.is_file();
    if !looks_like_file {
        return Ok(None);
    }
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the mapping file {}", path.display()))?;
    let stem = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("mapping");
    let name: String = stem
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    Ok(Some((name, text)))
}

// ---------------------------------------------------------------------------------------------
// Directly on a store
// ---------------------------------------------------------------------------------------------

/// Imports a file into a store opened by this process; returns the finished job.
pub async fn import_directly<S: Store>(
    store: &S,
    tenant: TenantId,
    options: &ImportOptions,
) -> anyhow::Result<JobState> {
    let started = Instant::now();
    let importer = Importer::new(store.clone(), Arc::new(EventIds::default()));
    let principal = Principal::operator(tenant.clone());
    // Jobs an earlier run left unfinished resume alongside this one.
    importer
        .resume_unfinished()
        .await
        .map_err(|e| anyhow::anyhow!("resuming unfinished imports: {}", e.message))?;
    let mut mapping = options.mapping.clone();
    if let Some((name, text)) = mapping_file(options.mapping.as_deref())? {
        imports::put_mapping(store, &principal, &name, &text)
            .await
            .map_err(|e| anyhow::anyhow!("{}", e.message))?;
        mapping = Some(name);
    }
    let size = file_size(&options.file)?;
    let progress = Progress::new(options.progress, size);
    let request = ImportRequest {
        workspace: options.workspace.clone(),
        mode: options.mode.clone(),
        mapping,
        reason: options.reason.clone(),
    };
    let mut landing = Landing::begin(&importer, &principal, request)
        .await
        .map_err(|e| anyhow::anyhow!("{}", e.message))?;
    let mut blocks = read_blocks(&options.file)?;
    let mut sent = 0u64;
    while let Some(block) = blocks.recv().await {
        let block = match block {
            Ok(block) => block,
            Err(e) => {
                landing.abort(&e.to_string()).await;
                return Err(e).with_context(|| format!("reading {}", options.file.display()));
            }
        };
        sent += block.len() as u64;
        landing
            .push(&block)
            .await
            .map_err(|e| anyhow::anyhow!("{}", e.message))?;
        progress.uploaded(sent);
    }
    let job = landing
        .finish()
        .await
        .map_err(|e| anyhow::anyhow!("{}", e.message))?;
    progress.processing(job.landed);
    let state = loop {
        let current = store
            .get_import(&tenant, &job.job_id)
            .await
            .map_err(|e| anyhow::anyhow!("reading the import: {e}"))?;
        progress.processed(current.processed);
        let state = JobState::from(&current);
        if state.finished() {
            break state;
        }
        tokio::time::sleep(POLL).await;
    };
    progress.done();
    importer.stop(Duration::from_secs(30)).await;
    if let Some(output) = &options.output {
        write_outcomes_directly(store, &principal, &state.id, output).await?;
    }
    print_summary(&state, started.elapsed());
    Ok(state)
}

async fn write_outcomes_directly<S: Store>(
    store: &S,
    principal: &Principal,
    job_id: &str,
    output: &Path,
) -> anyhow::Result<()> {
    let file = std::fs::File::create(output)
        .with_context(|| format!("cannot create {}", output.display()))?;
    let mut out = std::io::BufWriter::new(file);
    writeln!(out, "row,person_id,outcome,reason")?;
    let mut page = PageRequest::first(PageRequest::MAX_LIMIT);
    loop {
        let rows = imports::rows(store, principal, job_id, None, &page)
            .await
            .map_err(|e| anyhow::anyhow!("{}", e.message))?;
        for row in &rows.items {
            writeln!(
                out,
                "{},{},{},{}",
                row.row,
                csv_field(row.person_id.as_deref().unwrap_or("")),
                csv_field(&row.outcome),
                csv_field(row.reason.as_deref().unwrap_or(""))
            )?;
        }
        match rows.next_cursor {
            Some(cursor) => page.after = Some(cursor),
            None => break,
        }
    }
    out.flush()
        .with_context(|| format!("cannot write {}", output.display()))
}

fn csv_field(value: &str) -> String {
    if value.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", value.replace('"', "\"\""))
    } else {
        value.to_owned()
    }
}

// ---------------------------------------------------------------------------------------------
// Against a running server
// ---------------------------------------------------------------------------------------------

/// A server's error body: `{"error": {"code", "message"}}`.
#[derive(Debug, Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Debug, Deserialize)]
struct ErrorDetail {
    code: String,
    message: String,
}

async fn check(response: reqwest::Response, what: &str) -> anyhow::Result<reqwest::Response> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let text = response.text().await.unwrap_or_default();
    match serde_json::from_str::<ErrorBody>(&text) {
        Ok(body) => bail!(
            "{what}: {} ({}, HTTP {status})",
            body.error.message,
            body.error.code
        ),
        Err(_) => bail!("{what}: HTTP {status}: {text}"),
    }
}

/// Imports a file through a running server's API.
pub async fn import_through_server(
    server: &str,
    key: &str,
    options: &ImportOptions,
) -> anyhow::Result<JobState> {
    let started = Instant::now();
    let base = reqwest::Url::parse(server).with_context(|| format!("bad server URL {server:?}"))?;
    let url = |path: &str| base.join(path).with_context(|| format!("bad path {path}"));
    idgraph_app::webhooks::install_tls_provider();
    let client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .build()
        .context("cannot build the HTTP client")?;
    let mut mapping = options.mapping.clone();
    if let Some((name, text)) = mapping_file(options.mapping.as_deref())? {
        let response = client
            .put(url(&format!("/api/v1/import-mappings/{name}"))?)
            .bearer_auth(key)
            .header("content-type", "text/plain")
            .body(text)
            .send()
            .await
            .with_context(|| format!("cannot reach {server}"))?;
        check(response, "saving the mapping").await?;
        mapping = Some(name);
    }
    let size = file_size(&options.file)?;
    let progress = Arc::new(Progress::new(options.progress, size));
    let blocks = read_blocks(&options.file)?;
    let counting = Arc::clone(&progress);
    let body = futures_util::stream::unfold((blocks, 0u64), move |(mut blocks, sent)| {
        let progress = Arc::clone(&counting);
        async move {
            let block = blocks.recv().await?;
            let sent = sent + block.as_ref().map_or(0, |b| b.len() as u64);
            progress.uploaded(sent);
            Some((block, (blocks, sent)))
        }
    });
    let mut create = url("/api/v1/imports")?;
    {
        let mut query = create.query_pairs_mut();
        for (name, value) in [
            ("workspace", &options.workspace),
            ("mode", &options.mode),
            ("mapping", &mapping),
            ("reason", &options.reason),
        ] {
            if let Some(value) = value {
                query.append_pair(name, value);
            }
        }
    }
    let response = client
        .post(create)
        .bearer_auth(key)
        .header("content-type", "text/csv")
        .body(reqwest::Body::wrap_stream(body))
        .send()
        .await
        .with_context(|| format!("cannot upload to {server}"))?;
    #[derive(Deserialize)]
    struct Created {
        id: String,
    }
    let created: Created = check(response, "the import was refused")
        .await?
        .json()
        .await
        .context("the server's answer is not the expected JSON")?;
    let job_url = url(&format!("/api/v1/imports/{}", created.id))?;
    let mut processing = false;
    let state = loop {
        let response = client
            .get(job_url.clone())
            .bearer_auth(key)
            .send()
            .await
            .with_context(|| format!("cannot reach {server}"))?;
        let state: JobState = check(response, "reading the import")
            .await?
            .json()
            .await
            .context("the server's answer is not the expected JSON")?;
        if !processing {
            progress.processing(state.counts.rows);
            processing = true;
        }
        progress.processed(state.counts.parsed);
        if state.finished() {
            break state;
        }
        tokio::time::sleep(POLL).await;
    };
    progress.done();
    if let Some(output) = &options.output {
        let response = client
            .get(url(&format!(
                "/api/v1/imports/{}/rows?format=csv",
                state.id
            ))?)
            .bearer_auth(key)
            .send()
            .await
            .with_context(|| format!("cannot reach {server}"))?;
        let mut response = check(response, "reading the row outcomes").await?;
        let file = std::fs::File::create(output)
            .with_context(|| format!("cannot create {}", output.display()))?;
        let mut out = std::io::BufWriter::new(file);
        while let Some(chunk) = response
            .chunk()
            .await
            .context("the row outcomes broke off")?
        {
            out.write_all(&chunk)?;
        }
        out.flush()
            .with_context(|| format!("cannot write {}", output.display()))?;
    }
    print_summary(&state, started.elapsed());
    Ok(state)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapping_files_are_told_from_names() {
        assert_eq!(mapping_file(Some("leads")).unwrap(), None);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("My CRM.toml");
        std::fs::write(&path, "[columns]\nA = \"email\"\n").unwrap();
        let (name, text) = mapping_file(path.to_str()).unwrap().unwrap();
        assert_eq!(name, "my-crm");
        assert!(text.contains("email"));
        assert!(mapping_file(Some("/nowhere/x.toml")).is_err());
    }

    #[test]
    fn job_state_reads_the_api_shape() {
        let state: JobState = serde_json::from_value(serde_json::json!({
            "id": "j", "status": "completed", "mapping_version": 2,
            "counts": {"rows": 3, "landed": 3, "parsed": 3, "rejected": 1, "persons_created": 2,
                       "persons_merged": 0, "identifiers_attached": 4, "conflicts": 0}
        }))
        .unwrap();
        assert!(state.finished());
        assert_eq!(state.counts.identifiers_attached, 4);
    }
}
