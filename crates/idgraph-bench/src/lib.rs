//! `idgraph-bench`: whole-system workloads against a real idgraph server process, each printed as
//! a table next to a baseline measured in the same run.
//!
//! ```sh
//! cargo xtask bench --quick            # every workload, small sizes, one table and a JSON file
//! cargo build --release --bin idgraph
//! idgraph-bench ingest --idgraph target/release/idgraph --quick
//! idgraph-bench timeline --idgraph target/release/idgraph --backend postgres \
//!     --database-url postgres://user@127.0.0.1/empty_db --json timeline.json
//! idgraph-bench import --idgraph target/release/idgraph --json import.json
//! ```
//!
//! All traffic stays on 127.0.0.1. Progress goes to stderr, the table to stdout.

mod all;
mod api;
mod baseline;
mod compliance;
mod import;
mod ingest;
mod latency;
mod load;
mod outreach;
mod report;
mod resolve;
mod server;
mod stream;
mod timeline;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use tokio::signal::unix::SignalKind;

use crate::server::{Backend, ServerOptions};

/// Whole-system benchmarks of idgraph: each starts a real server on a loopback port with a fresh
/// store, runs a workload, and prints the figures next to a baseline measured in the same run.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Every workload, each on a fresh store: ingest, resolve, import, compliance, timeline and
    /// the outreach slice; one summary table, and all results in one JSON file.
    #[command(alias = "all")]
    Bench(BenchArgs),
    /// Segment-style batches into POST /v1/batch, against a trivial handler on the same stack.
    Ingest(IngestArgs),
    /// Timeline reads of very active persons, against GET /healthz of the same server.
    Timeline(TimelineArgs),
    /// Single compliance checks and one check-batch of every number, against a hash-set probe.
    Compliance(ComplianceArgs),
    /// Import leads, check them, record contacts, STOP replies, check again, read timelines.
    Outreach(OutreachArgs),
    /// A generated lead file through `idgraph import` on both stores, against PostgreSQL's COPY
    /// of the same file; peak memory at two file sizes; precision and recall against the truth.
    Import(ImportArgs),
}

#[derive(Debug, Args)]
struct BenchArgs {
    /// The idgraph binary to benchmark [default: the one next to this program, built first when
    /// run through cargo].
    #[arg(long, value_name = "PATH")]
    idgraph: Option<PathBuf>,
    /// Small sizes: a smoke run of a couple of minutes.
    #[arg(long)]
    quick: bool,
    /// Smaller still, for the test suite.
    #[arg(long, hide = true, conflicts_with = "quick")]
    tiny: bool,
    /// No PostgreSQL: resolve and import run on the embedded store only.
    #[arg(long)]
    no_postgres: bool,
    /// Seed of the generated streams and files.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Only these workloads (comma-separated) [default: all of them].
    #[arg(long, value_delimiter = ',', value_name = "NAMES", value_parser = clap::builder::PossibleValuesParser::new(all::WORKLOADS))]
    only: Vec<String>,
    /// Where the JSON results go [default: target/idgraph-bench/full.json, or quick.json].
    #[arg(long, value_name = "PATH")]
    json: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct ServerArgs {
    /// The idgraph binary to benchmark.
    #[arg(long, value_name = "PATH")]
    idgraph: PathBuf,
    /// The store the server runs on; sqlite gets a fresh temporary data dir.
    #[arg(long, value_enum, default_value_t = Backend::Sqlite)]
    backend: Backend,
    /// PostgreSQL URL of an empty database (needed for --backend postgres).
    #[arg(long, value_name = "URL", required_if_eq("backend", "postgres"))]
    database_url: Option<String>,
}

impl ServerArgs {
    fn options(&self) -> anyhow::Result<ServerOptions> {
        if self.backend == Backend::Sqlite && self.database_url.is_some() {
            bail!("--database-url is only for --backend postgres");
        }
        Ok(ServerOptions {
            binary: self.idgraph.clone(),
            backend: self.backend,
            database_url: self.database_url.clone(),
            plaintext_pii: false,
        })
    }
}

#[derive(Debug, Args)]
struct LoadArgs {
    /// Messages per /v1/batch request.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u16).range(1..=1000))]
    batch_size: u16,
    /// Requests in flight.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=1024))]
    concurrency: u16,
    /// Seed of the synthetic message stream.
    #[arg(long, default_value_t = 42)]
    seed: u64,
}

impl LoadArgs {
    fn options(&self) -> load::LoadOptions {
        load::LoadOptions {
            batch_size: usize::from(self.batch_size),
            concurrency: usize::from(self.concurrency),
        }
    }
}

#[derive(Debug, Args)]
struct IngestArgs {
    #[command(flatten)]
    server: ServerArgs,
    #[command(flatten)]
    load: LoadArgs,
    /// Messages to send [default: 1000000, or 100000 with --quick].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    events: Option<u64>,
    /// Small sizes, for a first look or while developing.
    #[arg(long)]
    quick: bool,
    /// Also run the stream into a second server, on a fresh store, that keeps PII in the
    /// clear (`unsafe_plaintext_pii`), and print what sealing PII costs.
    #[arg(long)]
    compare_plaintext: bool,
    /// PostgreSQL URL of a second empty database, for --compare-plaintext on postgres.
    #[arg(long, value_name = "URL", requires = "compare_plaintext")]
    plaintext_database_url: Option<String>,
    /// Also write the results here as JSON.
    #[arg(long, value_name = "PATH")]
    json: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct TimelineArgs {
    #[command(flatten)]
    server: ServerArgs,
    #[command(flatten)]
    load: LoadArgs,
    /// Messages to load before reading [default: 10000000, or 1000000 with --quick].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    events: Option<u64>,
    /// Persons (user ids big-0, big-1, ...) that get 10,000 track events each.
    #[arg(long, value_name = "K", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    big_persons: u32,
    /// First-page timeline reads, spread over the big persons (once sequentially, once by
    /// --readers concurrent readers).
    #[arg(long, value_name = "N", default_value_t = 2000, value_parser = clap::value_parser!(u64).range(1..))]
    reads: u64,
    /// Concurrent readers in the second round of reads.
    #[arg(long, value_name = "N", default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=256))]
    readers: u16,
    /// Small sizes, for a first look or while developing.
    #[arg(long)]
    quick: bool,
    /// Also write the results here as JSON.
    #[arg(long, value_name = "PATH")]
    json: Option<PathBuf>,
    /// Keep the loaded store in this directory (embedded store only); a later run with the same
    /// --events, --seed and --big-persons reads it without loading again, so read-path changes
    /// can be compared on a 10M-event store in minutes.
    #[arg(long, value_name = "DIR")]
    store: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct ComplianceArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// Numbers in the check-batch, one in ten of them suppressed [default: 100000].
    #[arg(long, value_name = "N", default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(10..=100_000))]
    numbers: u64,
    /// Single checks, one after another.
    #[arg(long, value_name = "N", default_value_t = 2000, value_parser = clap::value_parser!(u64).range(1..))]
    singles: u64,
    /// Also write the results here as JSON.
    #[arg(long, value_name = "PATH")]
    json: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct OutreachArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// Rows of the lead file.
    #[arg(long, value_name = "N", default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(10..))]
    rows: u64,
    /// Columns of the lead file.
    #[arg(long, value_name = "N", default_value_t = 400, value_parser = clap::value_parser!(u16).range(10..=1600))]
    columns: u16,
    /// Allowed numbers that reply STOP.
    #[arg(long, value_name = "N", default_value_t = 1000)]
    stops: u64,
    /// Seed of the generated file.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Also write the results here as JSON.
    #[arg(long, value_name = "PATH")]
    json: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct ImportArgs {
    /// The idgraph binary to benchmark (run as `idgraph import`, one process per import).
    #[arg(long, value_name = "PATH")]
    idgraph: PathBuf,
    /// Rows of the measured file [default: 100000, or 10000 with --quick].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    rows: Option<u64>,
    /// Columns of the file: the 10 identity columns, then assorted others.
    #[arg(long, value_name = "N", default_value_t = 400, value_parser = clap::value_parser!(u16).range(10..=1600))]
    columns: u16,
    /// Rows of the second, larger file that only peak memory is compared on
    /// [default: 10 × --rows]; 0 skips it.
    #[arg(long, value_name = "N")]
    memory_rows: Option<u64>,
    /// PostgreSQL URL of an empty database for the COPY baseline and the PostgreSQL import
    /// [default: a throwaway cluster from the system's PostgreSQL binaries].
    #[arg(long, value_name = "URL", conflicts_with = "no_postgres")]
    database_url: Option<String>,
    /// No PostgreSQL: neither the COPY baseline nor the import on PostgreSQL.
    #[arg(long)]
    no_postgres: bool,
    /// Where the files and data dirs go (a temporary directory inside it, removed at the end);
    /// the larger file and its store take several GB [default: the system's temporary dir].
    #[arg(long, value_name = "DIR")]
    work_dir: Option<PathBuf>,
    /// Seed of the generated files.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Small sizes, for a first look or while developing.
    #[arg(long)]
    quick: bool,
    /// Also write the results here as JSON.
    #[arg(long, value_name = "PATH")]
    json: Option<PathBuf>,
}

/// The binary's entry point: parses the process's arguments (exiting with clap's message when
/// they are wrong), runs the command, and reports an error on stderr.
pub fn main() -> ExitCode {
    match execute(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            report_error(&e);
            ExitCode::FAILURE
        }
    }
}

/// Runs a command line (`args[0]` is the program name) as the binary would, returning its
/// error instead of printing it: for tests that keep a workload from rotting.
pub fn run_command_line<I, T>(args: I) -> anyhow::Result<()>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    execute(Cli::try_parse_from(args)?)
}

fn execute(cli: Cli) -> anyhow::Result<()> {
    // Built together with idgraph, reqwest has rustls without a provider: install ring, as the
    // server does.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let result = runtime.block_on(async {
        let mut terminate = tokio::signal::unix::signal(SignalKind::terminate())
            .context("cannot listen for SIGTERM")?;
        // Returning early drops the workload, and with it the server guard, which stops idgraph.
        tokio::select! {
            result = run(cli) => result,
            interrupted = tokio::signal::ctrl_c() => match interrupted {
                Ok(()) => Err(anyhow::anyhow!("interrupted")),
                Err(e) => Err(anyhow::Error::new(e).context("cannot listen for Ctrl-C")),
            },
            _ = terminate.recv() => Err(anyhow::anyhow!("terminated")),
        }
    });
    // A generator thread may still be busy after an interruption; do not wait for it.
    runtime.shutdown_timeout(Duration::from_secs(1));
    result
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Bench(args) => {
            let size = if args.tiny {
                all::Size::Tiny
            } else if args.quick {
                all::Size::Quick
            } else {
                all::Size::Full
            };
            let binary = match args.idgraph {
                Some(path) => path,
                None => all::default_binary()?,
            };
            let json = args.json.unwrap_or_else(|| {
                let name = if size == all::Size::Full {
                    "full.json"
                } else {
                    "quick.json"
                };
                PathBuf::from("target").join("idgraph-bench").join(name)
            });
            let config = all::AllConfig {
                binary,
                size,
                no_postgres: args.no_postgres,
                seed: args.seed,
                only: args.only,
                json,
            };
            Box::pin(all::run(config)).await
        }
        Command::Ingest(args) => {
            let server = args.server.options()?;
            let plaintext = match (args.compare_plaintext, server.backend) {
                (false, _) => None,
                (true, Backend::Sqlite) => Some(ServerOptions {
                    plaintext_pii: true,
                    ..server.clone()
                }),
                (true, Backend::Postgres) => Some(ServerOptions {
                    plaintext_pii: true,
                    database_url: Some(args.plaintext_database_url.context(
                        "--compare-plaintext on postgres needs --plaintext-database-url",
                    )?),
                    ..server.clone()
                }),
            };
            let config = ingest::IngestConfig {
                plaintext,
                server,
                load: args.load.options(),
                events: args
                    .events
                    .unwrap_or(if args.quick { 100_000 } else { 1_000_000 }),
                seed: args.load.seed,
                json: args.json,
            };
            finished(Box::pin(ingest::run(config)).await?)
        }
        Command::Timeline(args) => {
            let events = args
                .events
                .unwrap_or(if args.quick { 1_000_000 } else { 10_000_000 });
            let big_events = u64::from(args.big_persons) * stream::BIG_EVENTS_PER_PERSON;
            if events < big_events {
                bail!(
                    "--events {events} is fewer than the {big_events} events of {} big persons",
                    args.big_persons
                );
            }
            let config = timeline::TimelineConfig {
                server: args.server.options()?,
                load: args.load.options(),
                events,
                seed: args.load.seed,
                big_persons: args.big_persons,
                reads: args.reads,
                readers: usize::from(args.readers),
                json: args.json,
                store: args.store,
            };
            finished(Box::pin(timeline::run(config)).await?)
        }
        Command::Compliance(args) => {
            let config = compliance::ComplianceConfig {
                server: args.server.options()?,
                numbers: args.numbers,
                singles: args.singles,
                json: args.json,
            };
            finished(Box::pin(compliance::run(config)).await?)
        }
        Command::Outreach(args) => {
            let config = outreach::OutreachConfig {
                server: args.server.options()?,
                rows: args.rows,
                columns: usize::from(args.columns),
                stops: args.stops,
                seed: args.seed,
                json: args.json,
            };
            finished(Box::pin(outreach::run(config)).await?)
        }
        Command::Import(args) => {
            let rows = args
                .rows
                .unwrap_or(if args.quick { 10_000 } else { 100_000 });
            let memory_rows = args.memory_rows.unwrap_or(rows * 10);
            if memory_rows != 0 && memory_rows <= rows {
                bail!("--memory-rows {memory_rows} must be more than --rows {rows} (or 0)");
            }
            let postgres = match (args.no_postgres, args.database_url) {
                (true, _) => import::Postgres::Skip,
                (false, Some(url)) => import::Postgres::Url(url),
                (false, None) => import::Postgres::Throwaway,
            };
            let config = import::ImportConfig {
                binary: args.idgraph,
                rows,
                columns: usize::from(args.columns),
                memory_rows: (memory_rows > 0).then_some(memory_rows),
                seed: args.seed,
                postgres,
                work_dir: args.work_dir,
                json: args.json,
            };
            finished(Box::pin(import::run(config)).await?)
        }
    }
}

/// The end of a single workload's command: its table is printed; what should fail it does.
fn finished(outcome: report::Outcome) -> anyhow::Result<()> {
    if outcome.failures.is_empty() {
        Ok(())
    } else {
        bail!("{}", outcome.failures.join("; "))
    }
}

/// A progress line on stderr, so stdout carries only the results.
pub(crate) fn progress(message: &str) {
    let _ = writeln!(std::io::stderr().lock(), "[idgraph-bench] {message}");
}

fn report_error(error: &anyhow::Error) {
    let _ = writeln!(std::io::stderr().lock(), "error: {error:#}");
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn postgres_needs_a_url_and_sqlite_refuses_one() {
        let parse = |args: &[&str]| Cli::try_parse_from(args);
        assert!(parse(&["b", "ingest", "--idgraph", "x", "--backend", "postgres"]).is_err());
        let Command::Ingest(args) = parse(&[
            "b",
            "ingest",
            "--idgraph",
            "x",
            "--database-url",
            "postgres://h/db",
        ])
        .unwrap()
        .command
        else {
            panic!("not ingest")
        };
        assert!(args.server.options().is_err());
        assert!(parse(&["b", "ingest", "--idgraph", "x", "--batch-size", "0"]).is_err());
    }
}
