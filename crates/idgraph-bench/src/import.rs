//! The `import` workload: a generated lead file with a known truth (`idgraph_workload::leads`)
//! loaded three ways in one run: PostgreSQL's `COPY` into a table of as many text columns (the
//! baseline: the least any tool can do to get the file into a database), `idgraph import` on the
//! embedded store, and `idgraph import` on PostgreSQL. Each import is a fresh `idgraph` process
//! on a fresh store, timed from start to exit, with its peak resident memory; a second, larger
//! file shows whether that memory grows with the file. The persons each import found are then
//! scored against the truth: pairwise precision and recall over the file's rows.

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures_util::SinkExt;
use idgraph_workload::leads::{self, LeadFileSpec, PairScores};
use serde::Serialize;

use crate::progress;
use crate::report::{self, Outcome, SummaryRow, Table};

/// Where the PostgreSQL figures come from.
#[derive(Debug, Clone)]
pub(crate) enum Postgres {
    /// A cluster of the system's PostgreSQL binaries, started for the run.
    Throwaway,
    /// An empty database the caller provides.
    Url(String),
    /// No PostgreSQL figures.
    Skip,
}

#[derive(Debug)]
pub(crate) struct ImportConfig {
    pub(crate) binary: PathBuf,
    pub(crate) rows: u64,
    pub(crate) columns: usize,
    pub(crate) memory_rows: Option<u64>,
    pub(crate) seed: u64,
    pub(crate) postgres: Postgres,
    pub(crate) work_dir: Option<PathBuf>,
    pub(crate) json: Option<PathBuf>,
}

/// The mapping every import of the run uses: the `leads` preset (a shared landline links a
/// family without merging it), the identity columns read by `auto`, two extra columns kept as
/// traits and two copied into the row's event; the other columns stay verbatim in the landed row.
const MAPPING: &str = r#"name = "bench-leads"
preset = "leads"

[columns]
"Lead Score" = { trait = "lead_score" }
"Income" = "trait"
"Campaign" = "promote"
"Lead Source" = "promote"
"#;

/// Everything the run found, as written to `--json`.
#[derive(Debug, Serialize)]
struct ImportResults {
    workload: &'static str,
    idgraph_version: String,
    rows: u64,
    columns: usize,
    seed: u64,
    file_bytes: u64,
    generate_seconds: f64,
    /// Where the PostgreSQL figures were measured; absent without PostgreSQL.
    postgres: Option<PostgresInfo>,
    /// `COPY` of the file into a table of `columns` text columns.
    copy: Option<Timed>,
    embedded: ImportRun,
    on_postgres: Option<ImportRun>,
    /// The embedded import of the larger file, for peak memory.
    larger: Option<ImportRun>,
    notes: Vec<String>,
}

#[derive(Debug, Serialize)]
struct PostgresInfo {
    source: &'static str,
    server_version: String,
}

#[derive(Debug, Clone, Copy, Serialize)]
struct Timed {
    seconds: f64,
    rows_per_second: f64,
}

impl Timed {
    fn of(rows: u64, seconds: f64) -> Self {
        Self {
            seconds,
            rows_per_second: rows as f64 / seconds.max(1e-9),
        }
    }
}

/// One `idgraph import` process.
#[derive(Debug, Serialize)]
struct ImportRun {
    rows: u64,
    file_bytes: u64,
    timed: Timed,
    /// The process's peak resident set (VmHWM), sampled until it exited.
    peak_rss_bytes: u64,
    /// Wall time divided by COPY's, when there is a COPY figure for this file.
    ratio_to_copy: Option<f64>,
    /// Rows by outcome, and the quality of the persons found; absent for the larger file,
    /// whose outcomes are not read.
    outcomes: Option<Outcomes>,
    quality: Option<Quality>,
}

#[derive(Debug, Default, Serialize)]
struct Outcomes {
    created: u64,
    merged: u64,
    attached: u64,
    matched: u64,
    rejected: u64,
    other: u64,
}

/// Pairwise precision and recall of the rows' persons against the truth.
#[derive(Debug, Clone, Copy, Serialize)]
struct Quality {
    true_persons: u64,
    persons_found: u64,
    true_pairs: u64,
    pairs_found: u64,
    correct_pairs: u64,
    precision: f64,
    recall: f64,
}

impl From<PairScores> for Quality {
    fn from(s: PairScores) -> Self {
        Self {
            true_persons: s.true_persons,
            persons_found: s.predicted_persons,
            true_pairs: s.true_pairs,
            pairs_found: s.predicted_pairs,
            correct_pairs: s.correct_pairs,
            precision: s.precision,
            recall: s.recall,
        }
    }
}

/// Below this, a run's precision is reported as a regression.
const PRECISION_TARGET: f64 = 0.999;
/// The embedded import's target, as a multiple of COPY's wall time.
const COPY_RATIO_TARGET: f64 = 1.5;

pub(crate) async fn run(config: ImportConfig) -> anyhow::Result<Outcome> {
    let binary = std::path::absolute(&config.binary)
        .with_context(|| format!("cannot resolve {}", config.binary.display()))?;
    let idgraph_version = crate::server::version_of(&binary)?;
    let work = match &config.work_dir {
        Some(dir) => tempfile::Builder::new()
            .prefix("idgraph-bench-import-")
            .tempdir_in(dir),
        None => tempfile::Builder::new()
            .prefix("idgraph-bench-import-")
            .tempdir(),
    }
    .context("cannot create a working directory")?;
    let mapping = work.path().join("bench-leads.toml");
    std::fs::write(&mapping, MAPPING).context("cannot write the mapping file")?;
    let mut notes = Vec::new();

    let spec = LeadFileSpec::new(config.rows, config.columns, config.seed);
    let file = work.path().join("leads.csv");
    let started = Instant::now();
    let (truth, file_bytes) = generate(&spec, &file).await?;
    let generate_seconds = started.elapsed().as_secs_f64();

    let database = match &config.postgres {
        Postgres::Skip => None,
        Postgres::Url(url) => Some((url.clone(), "--database-url")),
        Postgres::Throwaway => {
            progress("starting a throwaway PostgreSQL cluster");
            match idgraph_testpg::durable_database().await {
                Ok(db) => Some((db.url, "throwaway cluster, default durability")),
                Err(reason) => {
                    notes.push(format!(
                        "no PostgreSQL figures: {reason} (give --database-url, or --no-postgres)"
                    ));
                    None
                }
            }
        }
    };
    let mut postgres = None;
    let mut copy = None;
    if let Some((url, source)) = &database {
        progress(&format!("COPY of {} rows into PostgreSQL", config.rows));
        let (server_version, timed) = copy_baseline(url, &file, config.columns, config.rows)
            .await
            .context("the COPY baseline failed")?;
        postgres = Some(PostgresInfo {
            source,
            server_version,
        });
        copy = Some(timed);
    }

    let store = Store::Embedded(work.path().join("data"));
    let rows_csv = work.path().join("rows.csv");
    let mut embedded = import(
        &binary,
        &store,
        &file,
        &mapping,
        Some(&rows_csv),
        config.rows,
    )
    .with_context(|| format!("idgraph import of {} rows", config.rows))?;
    embedded.ratio_to_copy = copy.map(|c| embedded.timed.seconds / c.seconds);
    score(&mut embedded, &rows_csv, &truth)?;
    // The data dir is not needed any more, and the larger run will want the space.
    store.remove();

    let mut on_postgres = None;
    if let Some((url, _)) = &database {
        // A database of its own, when the run provisions them.
        let url = match config.postgres {
            Postgres::Throwaway => idgraph_testpg::durable_database()
                .await
                .map(|db| db.url)
                .map_err(|e| anyhow::anyhow!(e))?,
            _ => url.clone(),
        };
        let rows_csv = work.path().join("rows-postgres.csv");
        let mut run = import(
            &binary,
            &Store::Postgres(url),
            &file,
            &mapping,
            Some(&rows_csv),
            config.rows,
        )
        .with_context(|| format!("idgraph import of {} rows on PostgreSQL", config.rows))?;
        run.ratio_to_copy = copy.map(|c| run.timed.seconds / c.seconds);
        score(&mut run, &rows_csv, &truth)?;
        on_postgres = Some(run);
    }
    drop(truth);
    std::fs::remove_file(&file).context("cannot remove the generated file")?;

    let mut larger = None;
    if let Some(rows) = config.memory_rows {
        let spec = LeadFileSpec::new(rows, config.columns, config.seed);
        let file = work.path().join("leads-larger.csv");
        let (_, bytes) = generate(&spec, &file).await?;
        let store = Store::Embedded(work.path().join("data-larger"));
        let run = import(&binary, &store, &file, &mapping, None, rows)
            .with_context(|| format!("idgraph import of {rows} rows"))?;
        progress(&format!(
            "{} rows ({}): {:.1} s",
            report::thousands(rows),
            report::megabytes(bytes),
            run.timed.seconds
        ));
        store.remove();
        std::fs::remove_file(&file).context("cannot remove the larger file")?;
        larger = Some(run);
    }

    let results = ImportResults {
        workload: "import",
        idgraph_version,
        rows: config.rows,
        columns: config.columns,
        seed: config.seed,
        file_bytes,
        generate_seconds,
        postgres,
        copy,
        embedded,
        on_postgres,
        larger,
        notes,
    };
    print!("{}", render(&results));
    if let Some(path) = &config.json {
        report::write_json(path, &results)?;
        progress(&format!("results written to {}", path.display()));
    }
    summary(&results)
}

fn summary(results: &ImportResults) -> anyhow::Result<Outcome> {
    let size = format!("{} × {}", report::thousands(results.rows), results.columns);
    let copy = results.copy.map(|c| c.seconds);
    let mut rows = Vec::new();
    let mut failures = Vec::new();
    for (store, run) in [
        ("embedded", Some(&results.embedded)),
        ("postgres", results.on_postgres.as_ref()),
    ] {
        let Some(run) = run else { continue };
        rows.push(
            SummaryRow::compared(
                format!("import {store} {size}, wall"),
                run.timed.seconds,
                copy,
                |v| format!("{v:.1} s"),
            )
            .with_rss(run.peak_rss_bytes),
        );
        if let Some(q) = &run.quality {
            rows.push(
                SummaryRow::plain(
                    format!("import {store}, precision / recall"),
                    format!("{:.5} / {:.4}", q.precision, q.recall),
                )
                .with_value(q.precision),
            );
            if q.precision < PRECISION_TARGET {
                failures.push(format!(
                    "import {store}: precision {:.5} is below {PRECISION_TARGET}: the import \
                     merged rows of different people",
                    q.precision
                ));
            }
        }
    }
    if let Some(larger) = &results.larger {
        let growth = larger.peak_rss_bytes as f64 / results.embedded.peak_rss_bytes.max(1) as f64;
        rows.push(
            SummaryRow::plain(
                format!(
                    "import embedded peak RSS, {} vs {} rows",
                    report::thousands(larger.rows),
                    report::thousands(results.rows)
                ),
                format!(
                    "{:.2}× for {:.0}× the file",
                    growth,
                    larger.file_bytes as f64 / results.embedded.file_bytes.max(1) as f64
                ),
            )
            .with_value(growth)
            .with_rss(larger.peak_rss_bytes),
        );
    }
    let mut outcome = Outcome::new(rows, results)?;
    outcome.failures = failures;
    Ok(outcome)
}

/// Writes the lead file on a blocking thread; returns the truth and the file's size.
pub(crate) async fn generate(spec: &LeadFileSpec, path: &Path) -> anyhow::Result<(Vec<u64>, u64)> {
    progress(&format!(
        "writing {} rows × {} columns to {}",
        report::thousands(spec.rows),
        spec.columns,
        path.display()
    ));
    let (spec, path) = (*spec, path.to_owned());
    tokio::task::spawn_blocking(move || {
        let file =
            File::create(&path).with_context(|| format!("cannot create {}", path.display()))?;
        let mut out = BufWriter::with_capacity(1 << 20, file);
        // Synced before anything is timed, so that the kernel writing the fresh file out to
        // disk does not take CPU and disk from whichever workload runs first.
        let truth = leads::write_lead_file(&spec, &mut out)
            .and_then(|truth| out.flush().map(|()| truth))
            .and_then(|truth| out.get_ref().sync_all().map(|()| truth))
            .with_context(|| format!("cannot write {}", path.display()))?;
        let bytes = std::fs::metadata(&path)
            .with_context(|| format!("cannot stat {}", path.display()))?
            .len();
        Ok((truth, bytes))
    })
    .await
    .context("the file generator stopped")?
}

/// `COPY ... FROM STDIN (FORMAT csv, HEADER)` of the file into a new table of `columns` text
/// columns, streamed from the file as psql's `\copy` does; returns the server's version and the
/// time from the `COPY` to its commit.
async fn copy_baseline(
    url: &str,
    file: &Path,
    columns: usize,
    rows: u64,
) -> anyhow::Result<(String, Timed)> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .context("cannot connect to PostgreSQL")?;
    let connection = tokio::spawn(connection);
    let version: String = client
        .query_one("SHOW server_version", &[])
        .await
        .context("SHOW server_version")?
        .get(0);
    let definition: Vec<String> = (1..=columns).map(|n| format!("c{n} text")).collect();
    client
        .batch_execute(&format!(
            "DROP TABLE IF EXISTS idgraph_bench_copy; CREATE TABLE idgraph_bench_copy ({})",
            definition.join(", ")
        ))
        .await
        .context("cannot create the COPY table")?;
    let mut reader = File::open(file).with_context(|| format!("cannot open {}", file.display()))?;
    let started = Instant::now();
    let sink = client
        .copy_in("COPY idgraph_bench_copy FROM STDIN WITH (FORMAT csv, HEADER true)")
        .await
        .context("COPY")?;
    futures_util::pin_mut!(sink);
    loop {
        let mut block = vec![0u8; 1 << 20];
        let read = reader
            .read(&mut block)
            .with_context(|| format!("cannot read {}", file.display()))?;
        if read == 0 {
            break;
        }
        block.truncate(read);
        sink.send(bytes::Bytes::from(block)).await.context("COPY")?;
    }
    let copied = sink.finish().await.context("COPY")?;
    let seconds = started.elapsed().as_secs_f64();
    if copied != rows {
        bail!("COPY loaded {copied} rows of {rows}");
    }
    client
        .batch_execute("DROP TABLE idgraph_bench_copy")
        .await
        .context("cannot drop the COPY table")?;
    // So that the import on PostgreSQL does not pay for writing out COPY's pages. Needs a
    // superuser (or pg_checkpoint); without one the next checkpoint comes when it comes.
    let _ = client.batch_execute("CHECKPOINT").await;
    drop(client);
    let _ = connection.await;
    Ok((version, Timed::of(rows, seconds)))
}

/// The store an import runs on.
enum Store {
    Embedded(PathBuf),
    Postgres(String),
}

impl Store {
    fn remove(&self) {
        if let Store::Embedded(dir) = self
            && let Err(e) = std::fs::remove_dir_all(dir)
        {
            progress(&format!("cannot remove {}: {e}", dir.display()));
        }
    }

    fn label(&self) -> &'static str {
        match self {
            Store::Embedded(_) => "the embedded store",
            Store::Postgres(_) => "PostgreSQL",
        }
    }
}

/// Runs `idgraph import` to completion as a child process, timing it and sampling its peak
/// resident set until it exits.
fn import(
    binary: &Path,
    store: &Store,
    file: &Path,
    mapping: &Path,
    output: Option<&Path>,
    rows: u64,
) -> anyhow::Result<ImportRun> {
    progress(&format!(
        "idgraph import of {} rows on {}",
        report::thousands(rows),
        store.label()
    ));
    let file_bytes = std::fs::metadata(file)
        .with_context(|| format!("cannot stat {}", file.display()))?
        .len();
    let log_dir = file.parent().unwrap_or(Path::new("."));
    let stdout_path = log_dir.join("import.out");
    let stderr_path = log_dir.join("import.err");
    let mut command = Command::new(binary);
    command
        .arg("import")
        .arg(file)
        .arg("--mapping")
        .arg(mapping)
        .arg("--no-progress");
    match store {
        Store::Embedded(dir) => command.arg("--data-dir").arg(dir),
        Store::Postgres(url) => command.arg("--database-url").arg(url),
    };
    if let Some(output) = output {
        command.arg("--output").arg(output);
    }
    // Only the flags above count (an IDGRAPH_DATABASE_URL would even switch the store).
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("IDGRAPH_") {
            command.env_remove(name);
        }
    }
    command
        .current_dir(log_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::from(File::create(&stdout_path)?))
        .stderr(Stdio::from(File::create(&stderr_path)?));
    let started = Instant::now();
    let mut child = command
        .spawn()
        .with_context(|| format!("cannot start {}", binary.display()))?;
    let status_path = format!("/proc/{}/status", child.id());
    let mut peak = 0;
    let status = loop {
        // VmHWM only grows; the last reading before the exit is the peak, give or take what
        // the last 100 ms added. Not read more often: reading a process's status takes locks
        // its allocations need: read every 5 ms, it slowed a 100,000-row import by 0.1-0.6 s
        // (0.35 s on average over six alternating pairs).
        if let Ok(text) = std::fs::read_to_string(&status_path)
            && let Some(memory) = crate::server::parse_memory(&text)
        {
            peak = peak.max(memory.peak_rss_bytes);
        }
        if let Some(status) = child.try_wait().context("cannot wait for idgraph")? {
            break status;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let seconds = started.elapsed().as_secs_f64();
    if !status.success() {
        let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
        let stdout = std::fs::read_to_string(&stdout_path).unwrap_or_default();
        bail!("idgraph import failed ({status}):\n{stdout}{stderr}");
    }
    let summary = std::fs::read_to_string(&stdout_path).unwrap_or_default();
    if !summary.contains(": completed in") {
        bail!("idgraph import did not complete the job:\n{summary}");
    }
    Ok(ImportRun {
        rows,
        file_bytes,
        timed: Timed::of(rows, seconds),
        peak_rss_bytes: peak,
        ratio_to_copy: None,
        outcomes: None,
        quality: None,
    })
}

/// Reads the rows' outcomes written by `--output` and scores their persons against the truth.
fn score(run: &mut ImportRun, rows_csv: &Path, truth: &[u64]) -> anyhow::Result<()> {
    let text = std::fs::read(rows_csv)
        .with_context(|| format!("cannot read the outcomes {}", rows_csv.display()))?;
    let mut persons: Vec<Option<String>> = vec![None; truth.len()];
    let mut outcomes = Outcomes::default();
    let mut seen = 0usize;
    for (index, record) in csv_records(&text).into_iter().enumerate() {
        if index == 0 {
            if record.first().map(String::as_str) != Some("row") {
                bail!("{} has no header line", rows_csv.display());
            }
            continue;
        }
        let [row, person, outcome, ..] = record.as_slice() else {
            bail!("a short line in {}: {record:?}", rows_csv.display());
        };
        let row: usize = row
            .parse()
            .with_context(|| format!("row number {row:?} in {}", rows_csv.display()))?;
        let slot = persons
            .get_mut(row.wrapping_sub(1))
            .with_context(|| format!("row {row} is not a row of the file"))?;
        *slot = (!person.is_empty()).then(|| person.clone());
        seen += 1;
        match outcome.as_str() {
            "created" => outcomes.created += 1,
            "merged" => outcomes.merged += 1,
            "attached" => outcomes.attached += 1,
            "matched" => outcomes.matched += 1,
            "rejected" => outcomes.rejected += 1,
            _ => outcomes.other += 1,
        }
    }
    if seen != truth.len() {
        bail!(
            "{} has {seen} row outcomes for {} rows",
            rows_csv.display(),
            truth.len()
        );
    }
    run.quality = Some(leads::pairwise(truth, &persons).into());
    run.outcomes = Some(outcomes);
    Ok(())
}

/// Splits CSV text into records of fields (quotes, doubled quotes, line breaks in quotes).
fn csv_records(text: &[u8]) -> Vec<Vec<String>> {
    let mut records = Vec::new();
    let mut record = Vec::new();
    let mut field = Vec::new();
    let mut quoted = false;
    let mut bytes = text.iter().copied().peekable();
    while let Some(b) = bytes.next() {
        match (quoted, b) {
            (true, b'"') if bytes.peek() == Some(&b'"') => {
                field.push(b'"');
                bytes.next();
            }
            (true, b'"') => quoted = false,
            (true, _) => field.push(b),
            (false, b'"') => quoted = true,
            (false, b',') => {
                record.push(String::from_utf8_lossy(&std::mem::take(&mut field)).into_owned())
            }
            (false, b'\n') => {
                record.push(String::from_utf8_lossy(&std::mem::take(&mut field)).into_owned());
                records.push(std::mem::take(&mut record));
            }
            (false, b'\r') => {}
            (false, _) => field.push(b),
        }
    }
    if !field.is_empty() || !record.is_empty() {
        record.push(String::from_utf8_lossy(&field).into_owned());
        records.push(record);
    }
    records
}

fn seconds(timed: &Timed) -> String {
    format!(
        "{:.1} s ({})",
        timed.seconds,
        report::per_second(timed.rows_per_second, "rows")
    )
}

fn render(results: &ImportResults) -> String {
    let mut out = format!(
        "{}, import: {} rows × {} columns ({}, seed {}), mapping: leads preset, 2 trait and 2 \
         promoted columns; PostgreSQL: {}\n\n",
        results.idgraph_version,
        report::thousands(results.rows),
        results.columns,
        report::megabytes(results.file_bytes),
        results.seed,
        results.postgres.as_ref().map_or_else(
            || "none".to_owned(),
            |p| format!("{} ({})", p.server_version, p.source)
        ),
    );
    let mut table = Table::new("COPY into text columns");
    let copy = results.copy.as_ref();
    let baseline = copy.map_or_else(|| "-".to_owned(), seconds);
    for (label, run) in [
        ("import embedded", Some(&results.embedded)),
        ("import postgres", results.on_postgres.as_ref()),
    ] {
        let Some(run) = run else { continue };
        table.row(
            label,
            seconds(&run.timed),
            baseline.clone(),
            run.ratio_to_copy
                .map_or_else(|| "-".to_owned(), |r| format!("{r:.2}")),
        );
        table.row("  peak RSS", report::megabytes(run.peak_rss_bytes), "", "");
        if let Some(o) = &run.outcomes {
            table.row(
                "  created/merged/attached/matched/rejected",
                format!(
                    "{} / {} / {} / {} / {}",
                    report::thousands(o.created),
                    report::thousands(o.merged),
                    report::thousands(o.attached),
                    report::thousands(o.matched),
                    report::thousands(o.rejected)
                ),
                "",
                "",
            );
        }
        if let Some(q) = &run.quality {
            table.row(
                "  precision / recall",
                format!("{:.5} / {:.4}", q.precision, q.recall),
                "",
                "",
            );
            table.row(
                "  persons found / true",
                format!(
                    "{} / {}",
                    report::thousands(q.persons_found),
                    report::thousands(q.true_persons)
                ),
                "",
                "",
            );
            table.row(
                "  pairs found / correct / true",
                format!(
                    "{} / {} / {}",
                    report::thousands(q.pairs_found),
                    report::thousands(q.correct_pairs),
                    report::thousands(q.true_pairs)
                ),
                "",
                "",
            );
        }
    }
    if let Some(larger) = &results.larger {
        table.row(
            format!("import embedded, {} rows", report::thousands(larger.rows)),
            seconds(&larger.timed),
            "",
            "",
        );
        table.row(
            "  peak RSS",
            format!(
                "{} ({:.2}× the {}-row import's, for {:.0}× the file)",
                report::megabytes(larger.peak_rss_bytes),
                larger.peak_rss_bytes as f64 / results.embedded.peak_rss_bytes.max(1) as f64,
                report::thousands(results.rows),
                larger.file_bytes as f64 / results.embedded.file_bytes.max(1) as f64
            ),
            "",
            "",
        );
    }
    out.push_str(&table.render());
    if let Some(ratio) = results.embedded.ratio_to_copy {
        let verdict = if ratio <= COPY_RATIO_TARGET {
            "within"
        } else {
            "over"
        };
        out.push_str(&format!(
            "the embedded import took {ratio:.2}× COPY's time: {verdict} the {COPY_RATIO_TARGET}× target\n"
        ));
    }
    for note in &results.notes {
        out.push_str(&format!("note: {note}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcome_files_are_read_with_their_quoting() {
        let text = b"row,person_id,outcome,reason\n1,p1,created,\n2,,rejected,\"bad, \"\"very\"\"\nbad\"\r\n3,p1,matched,\n";
        let records = csv_records(text);
        assert_eq!(records.len(), 4);
        assert_eq!(records[2], ["2", "", "rejected", "bad, \"very\"\nbad"]);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rows.csv");
        std::fs::write(&path, text).unwrap();
        let mut run = ImportRun {
            rows: 3,
            file_bytes: 0,
            timed: Timed::of(3, 1.0),
            peak_rss_bytes: 0,
            ratio_to_copy: None,
            outcomes: None,
            quality: None,
        };
        score(&mut run, &path, &[7, 8, 7]).unwrap();
        let quality = run.quality.unwrap();
        assert_eq!((quality.precision, quality.recall), (1.0, 1.0));
        assert_eq!(quality.persons_found, 2);
        assert_eq!(run.outcomes.as_ref().unwrap().rejected, 1);
        assert!(score(&mut run, &path, &[7, 8]).is_err(), "a row too many");
    }
}
