//! `idgraph-bench bench` (`cargo xtask bench`): every workload one after another, each on a fresh
//! store, then one summary table and one JSON file with every workload's rows and full results.
//! A workload that fails does not stop the others; the run fails at the end.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, bail};
use serde::Serialize;

use crate::compliance::{self, ComplianceConfig};
use crate::import::{self, ImportConfig, Postgres};
use crate::ingest::{self, IngestConfig};
use crate::load::LoadOptions;
use crate::outreach::{self, OutreachConfig};
use crate::progress;
use crate::report::{self, Outcome, SummaryRow};
use crate::resolve::{self, ResolveConfig};
use crate::server::{Backend, ServerOptions};
use crate::timeline::{self, TimelineConfig};

/// How big a run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Size {
    /// The sizes the figures in docs/PERFORMANCE.md are quoted at.
    Full,
    /// A smoke run: under two minutes on two cores.
    Quick,
    /// Enough to exercise every path, for the test suite.
    Tiny,
}

/// Every size a run uses, in one place so that the three runs differ only here.
#[derive(Debug, Clone, Copy)]
struct Sizes {
    ingest_events: u64,
    resolve_signals: usize,
    import_rows: u64,
    import_columns: usize,
    import_memory_rows: u64,
    compliance_numbers: u64,
    compliance_singles: u64,
    timeline_events: u64,
    timeline_big_persons: u32,
    timeline_reads: u64,
    outreach_rows: u64,
    outreach_columns: usize,
    outreach_stops: u64,
}

impl Sizes {
    fn of(size: Size) -> Self {
        match size {
            Size::Full => Self {
                ingest_events: 1_000_000,
                resolve_signals: 1_000_000,
                import_rows: 100_000,
                import_columns: 400,
                import_memory_rows: 1_000_000,
                compliance_numbers: 100_000,
                compliance_singles: 2_000,
                timeline_events: 10_000_000,
                timeline_big_persons: 10,
                timeline_reads: 2_000,
                outreach_rows: 100_000,
                outreach_columns: 400,
                outreach_stops: 1_000,
            },
            Size::Quick => Self {
                ingest_events: 50_000,
                resolve_signals: 50_000,
                import_rows: 5_000,
                import_columns: 400,
                import_memory_rows: 20_000,
                compliance_numbers: 20_000,
                compliance_singles: 500,
                timeline_events: 150_000,
                timeline_big_persons: 10,
                timeline_reads: 500,
                outreach_rows: 5_000,
                outreach_columns: 400,
                outreach_stops: 200,
            },
            Size::Tiny => Self {
                ingest_events: 2_000,
                resolve_signals: 2_000,
                import_rows: 300,
                import_columns: 24,
                import_memory_rows: 900,
                compliance_numbers: 1_000,
                compliance_singles: 50,
                timeline_events: 25_000,
                timeline_big_persons: 2,
                timeline_reads: 50,
                outreach_rows: 400,
                outreach_columns: 24,
                outreach_stops: 20,
            },
        }
    }
}

#[derive(Debug)]
pub(crate) struct AllConfig {
    pub(crate) binary: PathBuf,
    pub(crate) size: Size,
    pub(crate) no_postgres: bool,
    pub(crate) seed: u64,
    /// Workloads to run; empty for all.
    pub(crate) only: Vec<String>,
    pub(crate) json: PathBuf,
}

/// The workloads, in the order they run.
pub(crate) const WORKLOADS: [&str; 6] = [
    "ingest",
    "resolve",
    "import",
    "compliance",
    "timeline",
    "outreach",
];

#[derive(Debug, Serialize)]
struct AllResults {
    idgraph_version: String,
    size: Size,
    /// Cores this process could run on: the figures depend on it.
    cores: usize,
    seed: u64,
    total_seconds: f64,
    rows: Vec<SummaryRow>,
    failures: Vec<String>,
    /// Each workload's full results, as its own command's `--json` writes them.
    workloads: serde_json::Map<String, serde_json::Value>,
}

pub(crate) async fn run(config: AllConfig) -> anyhow::Result<()> {
    let sizes = Sizes::of(config.size);
    let idgraph_version = crate::server::version_of(&config.binary)?;
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let sqlite = ServerOptions {
        binary: config.binary.clone(),
        backend: Backend::Sqlite,
        database_url: None,
        plaintext_pii: false,
    };
    let load = LoadOptions {
        batch_size: 100,
        concurrency: 16,
    };
    let wanted = |name: &str| config.only.is_empty() || config.only.iter().any(|w| w == name);
    let started = Instant::now();
    let mut rows = Vec::new();
    let mut failures = Vec::new();
    let mut workloads = serde_json::Map::new();
    let mut record = |name: &str, outcome: anyhow::Result<Outcome>| match outcome {
        Ok(outcome) => {
            rows.extend(outcome.rows);
            failures.extend(outcome.failures);
            workloads.insert(name.to_owned(), outcome.details);
        }
        Err(e) => {
            progress(&format!("{name} failed: {e:#}"));
            rows.push(SummaryRow::plain(name, "FAILED"));
            failures.push(format!("{name}: {e:#}"));
        }
    };

    if wanted("ingest") {
        progress("== ingest ==");
        let outcome = Box::pin(ingest::run(IngestConfig {
            server: sqlite.clone(),
            // The same stream into a server keeping PII in the clear: what sealing costs.
            plaintext: Some(ServerOptions {
                plaintext_pii: true,
                ..sqlite.clone()
            }),
            load,
            events: sizes.ingest_events,
            seed: config.seed,
            json: None,
        }))
        .await;
        record("ingest", outcome);
        if let Some(server) = on_postgres(&sqlite, config.no_postgres, "ingest").await {
            let outcome = Box::pin(ingest::run(IngestConfig {
                server,
                plaintext: None,
                load,
                events: sizes.ingest_events,
                seed: config.seed,
                json: None,
            }))
            .await;
            record("ingest-postgres", outcome);
        }
    }

    if wanted("resolve") {
        progress("== resolve ==");
        let outcome = Box::pin(resolve::run(ResolveConfig {
            signals: sizes.resolve_signals,
            database_url: None,
            no_postgres: config.no_postgres,
            json: None,
        }))
        .await;
        record("resolve", outcome);
    }

    if wanted("import") {
        progress("== import ==");
        let outcome = Box::pin(import::run(ImportConfig {
            binary: config.binary.clone(),
            rows: sizes.import_rows,
            columns: sizes.import_columns,
            memory_rows: Some(sizes.import_memory_rows),
            seed: config.seed,
            postgres: if config.no_postgres {
                Postgres::Skip
            } else {
                Postgres::Throwaway
            },
            work_dir: None,
            json: None,
        }))
        .await;
        record("import", outcome);
    }

    if wanted("compliance") {
        progress("== compliance ==");
        let outcome = Box::pin(compliance::run(ComplianceConfig {
            server: sqlite.clone(),
            numbers: sizes.compliance_numbers,
            singles: sizes.compliance_singles,
            json: None,
        }))
        .await;
        record("compliance", outcome);
        if let Some(server) = on_postgres(&sqlite, config.no_postgres, "compliance").await {
            let outcome = Box::pin(compliance::run(ComplianceConfig {
                server,
                numbers: sizes.compliance_numbers,
                singles: sizes.compliance_singles,
                json: None,
            }))
            .await;
            record("compliance-postgres", outcome);
        }
    }

    if wanted("timeline") {
        progress("== timeline ==");
        let outcome = Box::pin(timeline::run(TimelineConfig {
            server: sqlite.clone(),
            load,
            events: sizes.timeline_events,
            seed: config.seed,
            big_persons: sizes.timeline_big_persons,
            reads: sizes.timeline_reads,
            readers: 8,
            json: None,
            store: None,
        }))
        .await;
        record("timeline", outcome);
    }

    if wanted("outreach") {
        progress("== outreach ==");
        let outcome = Box::pin(outreach::run(OutreachConfig {
            server: sqlite,
            rows: sizes.outreach_rows,
            columns: sizes.outreach_columns,
            stops: sizes.outreach_stops,
            seed: config.seed,
            json: None,
        }))
        .await;
        record("outreach", outcome);
    }

    let results = AllResults {
        idgraph_version,
        size: config.size,
        cores,
        seed: config.seed,
        total_seconds: started.elapsed().as_secs_f64(),
        rows,
        failures,
        workloads,
    };
    println!(
        "\n{}, {:?} run on {} cores, {:.0} s in all\n",
        results.idgraph_version, results.size, results.cores, results.total_seconds
    );
    print!("{}", report::render_summary(&results.rows));
    println!(
        "ratio = figure / baseline: below 1 is slower for a rate, above 1 is slower for a time"
    );
    if let Some(parent) = config.json.parent()
        && !parent.as_os_str().is_empty()
    {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    report::write_json(&config.json, &results)?;
    progress(&format!("results written to {}", config.json.display()));
    if !results.failures.is_empty() {
        bail!("{}", results.failures.join("\n"));
    }
    Ok(())
}

/// The idgraph binary to measure when none is named: the one next to this program, which
/// `cargo xtask bench` builds first so that it is never stale.
pub(crate) fn default_binary() -> anyhow::Result<PathBuf> {
    let me = std::env::current_exe().context("cannot find this program's path")?;
    let binary = me.with_file_name("idgraph");
    // Cargo names itself in the environment of what it runs: build the server with the same
    // profile as this program (a no-op when it is up to date).
    if let Ok(cargo) = std::env::var("CARGO") {
        let release = me
            .parent()
            .and_then(|dir| dir.file_name())
            .is_some_and(|name| name == "release");
        let mut command = std::process::Command::new(cargo);
        command.args(["build", "-q", "-p", "idgraph", "--bin", "idgraph"]);
        // `cargo run` describes this package to it (CARGO_PKG_NAME=idgraph-bench, ...); crates
        // that read those with `env!` would look changed to the inner cargo and be rebuilt on
        // every run, and again by the next plain `cargo build`.
        for (name, _) in std::env::vars_os() {
            let name_text = name.to_string_lossy();
            if name_text.starts_with("CARGO_PKG_")
                || name_text.starts_with("CARGO_MANIFEST_")
                || matches!(
                    &*name_text,
                    "CARGO_CRATE_NAME" | "CARGO_BIN_NAME" | "CARGO_PRIMARY_PACKAGE"
                )
            {
                command.env_remove(&name);
            }
        }
        if release {
            command.arg("--release");
        }
        progress("building idgraph");
        let status = command.status().context("cannot run cargo build")?;
        if !status.success() {
            bail!("cargo build of idgraph failed ({status})");
        }
    }
    if !binary.exists() {
        bail!(
            "no idgraph binary at {}: build it (cargo build --release --bin idgraph) or give \
             --idgraph",
            binary.display()
        );
    }
    Ok(binary)
}

/// The server options of `sqlite` on a fresh database of the throwaway PostgreSQL cluster
/// (default durability; PII sealed under a data key, as in production), or none when the run
/// skips PostgreSQL or has no cluster: as resolve and import do, no cluster means no
/// PostgreSQL figures, not a failed run.
async fn on_postgres(
    sqlite: &ServerOptions,
    no_postgres: bool,
    workload: &str,
) -> Option<ServerOptions> {
    if no_postgres {
        return None;
    }
    progress(&format!("== {workload} on postgres =="));
    match idgraph_testpg::durable_database().await {
        Ok(database) => Some(ServerOptions {
            backend: Backend::Postgres,
            database_url: Some(database.url),
            ..sqlite.clone()
        }),
        Err(reason) => {
            progress(&format!("no PostgreSQL {workload} figures: {reason}"));
            None
        }
    }
}
