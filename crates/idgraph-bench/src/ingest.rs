//! The `ingest` workload: a realistic Segment message stream into `POST /v1/batch` of a real
//! idgraph, and the same requests into a trivial handler on the same HTTP stack.

use std::path::PathBuf;

use anyhow::Context;
use serde::Serialize;

use crate::api::Api;
use crate::baseline::TrivialServer;
use crate::load::{self, LoadFigures, LoadOptions, Target};
use crate::progress;
use crate::report::{self, Outcome, SummaryRow, Table};
use crate::server::{Backend, ServerFigures, ServerOptions, ServerProcess};
use crate::stream::{StreamSpec, StreamStats};

#[derive(Debug)]
pub(crate) struct IngestConfig {
    pub(crate) server: ServerOptions,
    /// A second server keeping PII in the clear, to measure what sealing costs.
    pub(crate) plaintext: Option<ServerOptions>,
    pub(crate) load: LoadOptions,
    pub(crate) events: u64,
    pub(crate) seed: u64,
    pub(crate) json: Option<PathBuf>,
}

/// Everything the run found, as written to `--json`.
#[derive(Debug, Serialize)]
struct IngestResults {
    workload: &'static str,
    idgraph_version: String,
    backend: Backend,
    events: u64,
    batch_size: usize,
    concurrency: usize,
    seed: u64,
    stream: StreamStats,
    expected_persons: u64,
    idgraph: LoadFigures,
    baseline: LoadFigures,
    /// idgraph's events/s divided by the baseline's.
    ratio: Option<f64>,
    merge_check: MergeCheck,
    server: ServerFigures,
    /// Bytes the server passed to write calls during the measured load: on the embedded store
    /// mostly whole pages into the WAL and back into the database, what bounds its rate.
    server_bytes_written: u64,
    /// What sealing PII costs (`--compare-plaintext`).
    sealing: Option<SealingCost>,
}

/// Spot check that second devices really merged into their persons.
#[derive(Debug, Serialize)]
struct MergeCheck {
    sampled: usize,
    merged: usize,
}

pub(crate) async fn run(config: IngestConfig) -> anyhow::Result<Outcome> {
    let client = load::client(config.load.concurrency)?;
    progress(&format!(
        "starting {} on {}",
        config.server.binary.display(),
        config.server.backend.as_str()
    ));
    let mut server = ServerProcess::start(&config.server, &client).await?;
    let memory_after_start = server.memory()?;
    let api = Api::new(client.clone(), server.base_url(), server.master_key())?;
    let write_key = api.create_write_key_on_fresh_store().await?;
    let spec = StreamSpec {
        events: config.events,
        seed: config.seed,
        big_persons: 0,
        big_events_each: 0,
    };

    // idgraph was started first so that a server that cannot start fails the run at once; the
    // baseline runs while it idles, and stops before idgraph is measured.
    let baseline = {
        let trivial = TrivialServer::start()?;
        let target = Target {
            batch_url: batch_url_of(&trivial.base_url())?,
            write_key: write_key.clone(),
        };
        load::run(&client, &target, &spec, config.load, "baseline").await?
    };

    let target = Target {
        batch_url: api.url("/v1/batch")?,
        write_key,
    };
    server.start_sampling();
    let cpu_before = server.cpu_seconds()?;
    let written_before = server.bytes_written()?;
    let measured = load::run(&client, &target, &spec, config.load, "idgraph").await?;
    server.check_running()?;
    let cpu_seconds = server.cpu_seconds()? - cpu_before;
    let server_bytes_written = server.bytes_written()?.saturating_sub(written_before);

    let merge_check = check_merges(&api, &measured.merge_emails).await?;
    let server_figures = server.finish(memory_after_start)?;
    let first_sealed = Run {
        cpu_seconds,
        figures: measured.figures.clone(),
        store_bytes: server_figures.store_bytes,
    };

    let sealing = match &config.plaintext {
        Some(plain) => Some(
            sealing_cost(
                &client,
                &spec,
                config.load,
                first_sealed,
                &config.server,
                plain,
            )
            .await?,
        ),
        None => None,
    };

    let results = IngestResults {
        workload: "ingest",
        idgraph_version: server.version().to_owned(),
        backend: config.server.backend,
        events: config.events,
        batch_size: config.load.batch_size,
        concurrency: config.load.concurrency,
        seed: config.seed,
        expected_persons: measured.stream.expected_persons(0),
        stream: measured.stream,
        ratio: report::ratio_value(
            measured.figures.events_per_second,
            baseline.figures.events_per_second,
        ),
        sealing,
        idgraph: measured.figures,
        baseline: baseline.figures,
        merge_check,
        server: server_figures,
        server_bytes_written,
    };
    print!("{}", render(&results));
    if let Some(path) = &config.json {
        report::write_json(path, &results)?;
        progress(&format!("results written to {}", path.display()));
    }
    summary(&results)
}

/// The stream into servers that seal PII and servers that keep it in the clear, each on a
/// fresh store, in the order sealed, clear, clear, sealed: a machine whose load drifts during
/// the run (these are shared, noisy machines) then weighs on both sides alike, where one run
/// of each would credit the drift to sealing. On PostgreSQL, which needs an empty database per
/// run, there is one run of each. The servers' CPU time per event is reported beside the rates:
/// it moves much less than wall time when other work shares the machine.
#[derive(Debug, Serialize)]
struct SealingCost {
    /// events/s of each run, in the order they ran.
    sealed_runs: Vec<f64>,
    plaintext_runs: Vec<f64>,
    /// Events over the total time of each side's runs.
    sealed_events_per_second: f64,
    plaintext_events_per_second: f64,
    /// Sealed over clear: 1 means sealing costs nothing.
    ratio: Option<f64>,
    /// The server's CPU time (user and system) per 1,000 events, over each side's runs.
    sealed_cpu_ms_per_1k_events: f64,
    plaintext_cpu_ms_per_1k_events: f64,
    /// The embedded store's size on disk after each side's first run: sealed values are longer
    /// than the values they hide, and every byte goes through the WAL and its fsync.
    sealed_store_bytes: Option<u64>,
    plaintext_store_bytes: Option<u64>,
}

/// One load run, the CPU time its server used during it and its store's size afterwards.
struct Run {
    figures: LoadFigures,
    cpu_seconds: f64,
    store_bytes: Option<u64>,
}

async fn sealing_cost(
    client: &reqwest::Client,
    spec: &StreamSpec,
    load: LoadOptions,
    first_sealed: Run,
    sealed: &ServerOptions,
    plaintext: &ServerOptions,
) -> anyhow::Result<SealingCost> {
    let mut sealed_runs = vec![first_sealed];
    let mut plaintext_runs = vec![fresh_run(client, spec, load, plaintext, "plaintext").await?];
    if sealed.backend == Backend::Sqlite {
        plaintext_runs.push(fresh_run(client, spec, load, plaintext, "plaintext").await?);
        sealed_runs.push(fresh_run(client, spec, load, sealed, "sealed").await?);
    }
    let events = |runs: &[Run]| -> u64 { runs.iter().map(|r| r.figures.events_acknowledged).sum() };
    let rate = |runs: &[Run]| {
        let seconds: f64 = runs.iter().map(|r| r.figures.wall_seconds).sum();
        events(runs) as f64 / seconds.max(1e-9)
    };
    let cpu = |runs: &[Run]| {
        let seconds: f64 = runs.iter().map(|r| r.cpu_seconds).sum();
        seconds * 1e6 / events(runs).max(1) as f64
    };
    let rates = |runs: &[Run]| runs.iter().map(|r| r.figures.events_per_second).collect();
    let (sealed_rate, plaintext_rate) = (rate(&sealed_runs), rate(&plaintext_runs));
    Ok(SealingCost {
        sealed_store_bytes: sealed_runs[0].store_bytes,
        plaintext_store_bytes: plaintext_runs[0].store_bytes,
        sealed_runs: rates(&sealed_runs),
        plaintext_runs: rates(&plaintext_runs),
        sealed_events_per_second: sealed_rate,
        plaintext_events_per_second: plaintext_rate,
        ratio: report::ratio_value(sealed_rate, plaintext_rate),
        sealed_cpu_ms_per_1k_events: cpu(&sealed_runs),
        plaintext_cpu_ms_per_1k_events: cpu(&plaintext_runs),
    })
}

/// One load run into a server started for it on a fresh store, stopped afterwards.
async fn fresh_run(
    client: &reqwest::Client,
    spec: &StreamSpec,
    load: LoadOptions,
    options: &ServerOptions,
    label: &'static str,
) -> anyhow::Result<Run> {
    progress(&format!(
        "starting another idgraph ({label}) on a fresh store"
    ));
    let mut server = ServerProcess::start(options, client).await?;
    let api = Api::new(client.clone(), server.base_url(), server.master_key())?;
    let target = Target {
        batch_url: api.url("/v1/batch")?,
        write_key: api.create_write_key_on_fresh_store().await?,
    };
    let cpu_before = server.cpu_seconds()?;
    let run = load::run(client, &target, spec, load, label).await?;
    server.check_running()?;
    let cpu_seconds = server.cpu_seconds()? - cpu_before;
    let store_bytes = server.finish(server.memory()?)?.store_bytes;
    if run.figures.events_acknowledged < run.figures.events_sent {
        anyhow::bail!(
            "ingest ({label}): only {} of {} events acknowledged",
            run.figures.events_acknowledged,
            run.figures.events_sent
        );
    }
    Ok(Run {
        figures: run.figures,
        cpu_seconds,
        store_bytes,
    })
}

fn summary(results: &IngestResults) -> anyhow::Result<Outcome> {
    let (idgraph, baseline) = (&results.idgraph, &results.baseline);
    let name = format!("ingest {} /v1/batch", results.backend.as_str());
    let mut rows = vec![
        SummaryRow::compared(
            name.clone(),
            idgraph.events_per_second,
            Some(baseline.events_per_second),
            |v| report::per_second(v, "events"),
        )
        .with_rss(results.server.memory_at_end.peak_rss_bytes),
        SummaryRow::compared(
            format!("{name} p99"),
            idgraph.batch_latency.p99_ms,
            Some(baseline.batch_latency.p99_ms),
            report::ms,
        ),
    ];
    if let Some(sealing) = &results.sealing {
        rows.push(SummaryRow::compared(
            format!("{name}, PII sealed vs in the clear"),
            sealing.sealed_events_per_second,
            Some(sealing.plaintext_events_per_second),
            |v| report::per_second(v, "events"),
        ));
        rows.push(SummaryRow::compared(
            format!("{name}, server CPU per 1,000 events, sealed vs clear"),
            sealing.sealed_cpu_ms_per_1k_events,
            Some(sealing.plaintext_cpu_ms_per_1k_events),
            report::ms,
        ));
    }
    rows.extend(report::memory_growth_row("ingest", &results.server));
    let mut outcome = Outcome::new(rows, results)?;
    if idgraph.events_acknowledged < idgraph.events_sent {
        outcome.failures.push(format!(
            "ingest: only {} of {} events acknowledged",
            idgraph.events_acknowledged, idgraph.events_sent
        ));
    }
    Ok(outcome)
}

fn batch_url_of(base: &str) -> anyhow::Result<reqwest::Url> {
    reqwest::Url::parse(base)
        .and_then(|u| u.join("/v1/batch"))
        .with_context(|| format!("bad baseline URL {base}"))
}

async fn check_merges(api: &Api, emails: &[String]) -> anyhow::Result<MergeCheck> {
    let mut merged = 0;
    for email in emails {
        if let Some(person) = api.lookup("email", email).await?
            && !person.merged_from.is_empty()
        {
            merged += 1;
        }
    }
    Ok(MergeCheck {
        sampled: emails.len(),
        merged,
    })
}

fn render(results: &IngestResults) -> String {
    let stream = &results.stream;
    let mut out = format!(
        "{}, ingest: {} messages in batches of {}, {} in flight, seed {}: {} visitors, {} second \
         devices, {} merging identifies ({:.1}%), {} persons expected\n\n",
        results.idgraph_version,
        report::thousands(results.events),
        results.batch_size,
        results.concurrency,
        results.seed,
        report::thousands(stream.visitors),
        report::thousands(stream.second_devices),
        report::thousands(stream.merge_signals),
        100.0 * stream.merge_signals as f64 / stream.messages.max(1) as f64,
        report::thousands(results.expected_persons),
    );
    let mut table = Table::new("trivial handler");
    table.row(
        format!("ingest {}", results.backend.as_str()),
        report::per_second(results.idgraph.events_per_second, "events"),
        report::per_second(results.baseline.events_per_second, "events"),
        report::ratio(
            results.idgraph.events_per_second,
            results.baseline.events_per_second,
        ),
    );
    report::load_rows(&mut table, &results.idgraph, Some(&results.baseline));
    if let Some(sealing) = &results.sealing {
        table.row(
            format!(
                "  PII sealed vs in the clear ({} + {} runs)",
                sealing.sealed_runs.len(),
                sealing.plaintext_runs.len()
            ),
            report::per_second(sealing.sealed_events_per_second, "events"),
            report::per_second(sealing.plaintext_events_per_second, "events"),
            report::ratio(
                sealing.sealed_events_per_second,
                sealing.plaintext_events_per_second,
            ),
        );
        let list = |runs: &[f64]| {
            runs.iter()
                .map(|r| report::thousands(r.round() as u64))
                .collect::<Vec<_>>()
                .join(", ")
        };
        table.row(
            "    each run, events/s",
            list(&sealing.sealed_runs),
            list(&sealing.plaintext_runs),
            "",
        );
        table.row(
            "    server CPU per 1,000 events",
            report::ms(sealing.sealed_cpu_ms_per_1k_events),
            report::ms(sealing.plaintext_cpu_ms_per_1k_events),
            report::ratio(
                sealing.sealed_cpu_ms_per_1k_events,
                sealing.plaintext_cpu_ms_per_1k_events,
            ),
        );
        if let (Some(sealed), Some(plain)) =
            (sealing.sealed_store_bytes, sealing.plaintext_store_bytes)
        {
            table.row(
                "    store on disk (first run of each)",
                report::megabytes(sealed),
                report::megabytes(plain),
                report::ratio(sealed as f64, plain as f64),
            );
        }
    }
    table.row(
        "  server writes during the load",
        format!(
            "{} ({:.1} KB per event)",
            report::megabytes(results.server_bytes_written),
            results.server_bytes_written as f64
                / 1e3
                / results.idgraph.events_acknowledged.max(1) as f64
        ),
        "",
        "",
    );
    table.row(
        "  merges spot-checked",
        format!(
            "{} of {} merged",
            results.merge_check.merged, results.merge_check.sampled
        ),
        "",
        "",
    );
    report::server_rows(&mut table, &results.server);
    out.push_str(&table.render());
    let check = &results.merge_check;
    if check.merged < check.sampled {
        out.push_str(&format!(
            "only {} of {} sampled second devices were merged into their person: with more \
             messages in flight than the stream spaces a device's messages, batches processed out \
             of order can attach a device before it was a person of its own\n",
            check.merged, check.sampled
        ));
    }
    report::problem_lines(&mut out, "idgraph", &results.idgraph);
    report::problem_lines(&mut out, "the baseline", &results.baseline);
    report::log_lines(&mut out, &results.server.log);
    out
}
