//! The `timeline` workload: loads a large stream in which a few persons are very active, then
//! reads their timelines (first pages, sequentially and concurrently, and one whole timeline page
//! by page), against `GET /healthz` of the same server as the cost of a bare request.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

use crate::api::{self, Api, TimelinePage};
use crate::latency::{Latencies, LatencySummary};
use crate::load::{self, LoadFigures, LoadOptions, Target, error_chain};
use crate::progress;
use crate::report::{self, Outcome, SummaryRow, Table};
use crate::server::{Backend, KeptStore, ServerFigures, ServerOptions, ServerProcess};
use crate::stream::{BIG_EVENTS_PER_PERSON, StreamSpec, StreamStats};

/// Events per timeline page, as a console would ask for them.
const PAGE_SIZE: u32 = 50;

#[derive(Debug)]
pub(crate) struct TimelineConfig {
    pub(crate) server: ServerOptions,
    pub(crate) load: LoadOptions,
    pub(crate) events: u64,
    pub(crate) seed: u64,
    pub(crate) big_persons: u32,
    pub(crate) reads: u64,
    pub(crate) readers: usize,
    pub(crate) json: Option<PathBuf>,
    /// Keep the loaded store in this directory, and read from it without loading again when an
    /// earlier run loaded it with the same stream.
    pub(crate) store: Option<PathBuf>,
}

/// What `--store DIR` records next to the store once its load has finished.
#[derive(Debug, Serialize, Deserialize)]
struct KeptLoad {
    events: u64,
    seed: u64,
    big_persons: u32,
    /// The bench's own master key of that store, made up for it by the first run.
    master_key: String,
    loaded_by: String,
}

const KEPT_LOAD_FILE: &str = "timeline-load.json";

/// The store of `--store DIR`, and the record of its load if an earlier run finished one.
fn kept_store(
    dir: &Path,
    config: &TimelineConfig,
) -> anyhow::Result<(KeptStore, Option<KeptLoad>)> {
    let dir =
        std::path::absolute(dir).with_context(|| format!("cannot resolve {}", dir.display()))?;
    let data_dir = dir.join("data");
    let record = dir.join(KEPT_LOAD_FILE);
    if !record.exists() {
        if data_dir.exists() {
            bail!(
                "{} holds a store whose load never finished (no {KEPT_LOAD_FILE}); remove it or \
                 choose another --store",
                dir.display()
            );
        }
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        return Ok((KeptStore::new(data_dir), None));
    }
    let text = std::fs::read_to_string(&record)
        .with_context(|| format!("cannot read {}", record.display()))?;
    let kept: KeptLoad = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a record of a timeline load", record.display()))?;
    if (kept.events, kept.seed, kept.big_persons)
        != (config.events, config.seed, config.big_persons)
    {
        bail!(
            "the store in {} was loaded with --events {} --seed {} --big-persons {}, not {} {} {}; \
             choose another --store to load a new one",
            dir.display(),
            kept.events,
            kept.seed,
            kept.big_persons,
            config.events,
            config.seed,
            config.big_persons
        );
    }
    let store = KeptStore {
        data_dir,
        master_key: kept.master_key.clone(),
    };
    Ok((store, Some(kept)))
}

/// Timed requests of one kind.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct RequestFigures {
    pub(crate) requests: u64,
    pub(crate) concurrency: usize,
    pub(crate) wall_seconds: f64,
    pub(crate) per_second: f64,
    pub(crate) latency: LatencySummary,
    /// Answers other than 2xx, and requests without an answer.
    pub(crate) failed: u64,
    pub(crate) first_error: Option<String>,
}

/// A measured pattern and the same pattern against `/healthz`.
#[derive(Debug, Serialize)]
struct Compared {
    idgraph: RequestFigures,
    baseline: RequestFigures,
    /// idgraph's p50 divided by the baseline's.
    p50_ratio: Option<f64>,
}

impl Compared {
    fn new(idgraph: RequestFigures, baseline: RequestFigures) -> Self {
        let p50_ratio = report::ratio_value(idgraph.latency.p50_ms, baseline.latency.p50_ms);
        Self {
            idgraph,
            baseline,
            p50_ratio,
        }
    }
}

#[derive(Debug, Serialize)]
struct Paging {
    person: String,
    pages: u64,
    events: u64,
    expected_events: u64,
    compared: Compared,
}

/// Everything the run found, as written to `--json`.
#[derive(Debug, Serialize)]
struct TimelineResults {
    workload: &'static str,
    idgraph_version: String,
    backend: Backend,
    events: u64,
    big_persons: u32,
    events_per_big_person: u64,
    batch_size: usize,
    concurrency: usize,
    seed: u64,
    /// The stream and its load; none when `--store` read an earlier run's store.
    stream: Option<StreamStats>,
    load: Option<LoadFigures>,
    /// Which idgraph loaded a kept store read without loading it again.
    loaded_by: Option<String>,
    first_page_sequential: Compared,
    first_page_concurrent: Compared,
    paging: Paging,
    server: ServerFigures,
}

pub(crate) async fn run(config: TimelineConfig) -> anyhow::Result<Outcome> {
    let client = load::client(config.load.concurrency.max(config.readers))?;
    progress(&format!(
        "starting {} on {}",
        config.server.binary.display(),
        config.server.backend.as_str()
    ));
    let kept = config
        .store
        .as_deref()
        .map(|dir| kept_store(dir, &config))
        .transpose()?;
    let (kept_store, kept_load) = kept.map_or((None, None), |(store, load)| (Some(store), load));
    let mut server = ServerProcess::start_on(&config.server, &client, kept_store.as_ref()).await?;
    let memory_after_start = server.memory()?;
    let api = Api::new(client.clone(), server.base_url(), server.master_key())?;
    let loaded = match &kept_load {
        Some(kept) => {
            progress(&format!(
                "reading the store {} loaded earlier (no load this time)",
                kept.loaded_by
            ));
            None
        }
        None => {
            // Memory is sampled while input flows: a kept store's run has none.
            server.start_sampling();
            let loaded = load_stream(&config, &client, &api).await?;
            server.check_running()?;
            if let (Some(dir), Some(store)) = (&config.store, &kept_store) {
                let record = KeptLoad {
                    events: config.events,
                    seed: config.seed,
                    big_persons: config.big_persons,
                    master_key: store.master_key.clone(),
                    loaded_by: server.version().to_owned(),
                };
                let path = dir.join(KEPT_LOAD_FILE);
                std::fs::write(&path, serde_json::to_vec_pretty(&record)?)
                    .with_context(|| format!("cannot write {}", path.display()))?;
            }
            Some(loaded)
        }
    };

    let persons = big_person_ids(&api, config.big_persons).await?;
    let paged_person = persons.first().context("no big persons to read")?.clone();
    let healthz = api.url("/healthz")?;

    progress(&format!(
        "reading first pages: {} reads, 1 reader",
        config.reads
    ));
    let first_page = {
        let (api, persons) = (api.clone(), persons.clone());
        move |i: u64| {
            let person = &persons[(i % persons.len() as u64) as usize];
            api.timeline_request(person, PAGE_SIZE, None)
        }
    };
    let health = {
        let (client, healthz) = (client.clone(), healthz.clone());
        move |_: u64| Ok(client.get(healthz.clone()))
    };
    let sequential = Compared::new(
        timed_requests(config.reads, 1, first_page.clone()).await?,
        timed_requests(config.reads, 1, health.clone()).await?,
    );
    progress(&format!(
        "reading first pages: {} reads, {} readers",
        config.reads, config.readers
    ));
    let concurrent = Compared::new(
        timed_requests(config.reads, config.readers, first_page).await?,
        timed_requests(config.reads, config.readers, health.clone()).await?,
    );

    progress("paging through big-0's whole timeline");
    let paging = page_through(&api, &paged_person, health).await?;
    server.check_running()?;
    let server_figures = server.finish(memory_after_start)?;

    let results = TimelineResults {
        workload: "timeline",
        idgraph_version: server.version().to_owned(),
        backend: config.server.backend,
        events: config.events,
        big_persons: config.big_persons,
        events_per_big_person: BIG_EVENTS_PER_PERSON,
        batch_size: config.load.batch_size,
        concurrency: config.load.concurrency,
        seed: config.seed,
        stream: loaded.as_ref().map(|l| l.stream.clone()),
        load: loaded.map(|l| l.figures),
        loaded_by: kept_load.map(|k| k.loaded_by),
        first_page_sequential: sequential,
        first_page_concurrent: concurrent,
        paging,
        server: server_figures,
    };
    print!("{}", render(&results));
    if let Some(path) = &config.json {
        report::write_json(path, &results)?;
        progress(&format!("results written to {}", path.display()));
    }
    summary(&results)
}

fn summary(results: &TimelineResults) -> anyhow::Result<Outcome> {
    let name = format!(
        "timeline {}, {} events",
        results.backend.as_str(),
        report::thousands(results.events)
    );
    let mut rows = Vec::new();
    for (label, compared) in [
        ("1 reader", &results.first_page_sequential),
        ("concurrent", &results.first_page_concurrent),
    ] {
        let (idgraph, baseline) = (&compared.idgraph.latency, &compared.baseline.latency);
        let readers = if compared.idgraph.concurrency == 1 {
            label.to_owned()
        } else {
            format!("{} readers", compared.idgraph.concurrency)
        };
        rows.push(SummaryRow::compared(
            format!("{name}, p50 ({readers})"),
            idgraph.p50_ms,
            Some(baseline.p50_ms),
            report::ms,
        ));
        rows.push(SummaryRow::compared(
            format!("{name}, p99 ({readers})"),
            idgraph.p99_ms,
            Some(baseline.p99_ms),
            report::ms,
        ));
    }
    if let Some(first) = rows.first_mut() {
        first.peak_rss_bytes = Some(results.server.memory_at_end.peak_rss_bytes);
    }
    if let Some(load) = &results.load {
        rows.push(SummaryRow::compared(
            format!("{name}, load"),
            load.events_per_second,
            None,
            |v| report::per_second(v, "events"),
        ));
    }
    rows.extend(report::memory_growth_row("timeline", &results.server));
    let mut outcome = Outcome::new(rows, results)?;
    let paging = &results.paging;
    if paging.events != paging.expected_events {
        outcome.failures.push(format!(
            "timeline: paging read {} of {} events",
            paging.events, paging.expected_events
        ));
    }
    Ok(outcome)
}

/// The person ids of `big-0`.. and a check that each first page is full.
async fn big_person_ids(api: &Api, big_persons: u32) -> anyhow::Result<Vec<String>> {
    let mut ids = Vec::new();
    for n in 0..big_persons {
        let user_id = format!("big-{n}");
        let person = api
            .lookup("external_id", &user_id)
            .await?
            .with_context(|| format!("no person has the external id {user_id} after the load"))?;
        // Also warms the server's caches, so the first timed read is not an outlier.
        let body = api::read_answer(
            api.timeline_request(&person.id, PAGE_SIZE, None)?
                .send()
                .await,
            "the first timeline page",
        )
        .await?;
        let page: TimelinePage =
            serde_json::from_slice(&body).context("unexpected timeline answer")?;
        if page.events.len() != PAGE_SIZE as usize || page.next_cursor.is_none() {
            bail!(
                "the first timeline page of {user_id} has {} events and next_cursor {:?}; \
                 expected {PAGE_SIZE} and more to come",
                page.events.len(),
                page.next_cursor
            );
        }
        ids.push(person.id);
    }
    Ok(ids)
}

/// Sends `total` requests made by `make(i)` with `concurrency` in flight; each is timed until its
/// whole answer has been read.
pub(crate) async fn timed_requests<F>(
    total: u64,
    concurrency: usize,
    make: F,
) -> anyhow::Result<RequestFigures>
where
    F: Fn(u64) -> anyhow::Result<reqwest::RequestBuilder> + Send + Sync + 'static,
{
    let make = Arc::new(make);
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..concurrency.max(1) {
        let next = Arc::clone(&next);
        let make = Arc::clone(&make);
        workers.spawn(async move {
            let mut tally = ReadTally {
                latencies: Latencies::new()?,
                failed: 0,
                first_error: None,
            };
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    return anyhow::Ok(tally);
                }
                let request = make(i)?;
                let sent = Instant::now();
                let outcome = match request.send().await {
                    Ok(response) => {
                        let status = response.status();
                        response
                            .bytes()
                            .await
                            .map(|body| (status, body))
                            .map_err(|e| error_chain(&e))
                    }
                    Err(e) => Err(error_chain(&e)),
                };
                tally.latencies.record(sent.elapsed());
                let failure = match outcome {
                    Ok((status, _)) if status.is_success() => None,
                    Ok((status, body)) => {
                        Some(format!("{status}: {}", String::from_utf8_lossy(&body)))
                    }
                    Err(e) => Some(format!("no answer: {e}")),
                };
                if let Some(failure) = failure {
                    tally.failed += 1;
                    tally.first_error.get_or_insert(failure);
                }
            }
        });
    }
    let mut latencies = Latencies::new()?;
    let mut failed = 0;
    let mut first_error = None;
    while let Some(joined) = workers.join_next().await {
        let tally = joined.context("a reader failed")??;
        latencies.add(&tally.latencies)?;
        failed += tally.failed;
        first_error = first_error.or(tally.first_error);
    }
    let wall_seconds = started.elapsed().as_secs_f64();
    Ok(RequestFigures {
        requests: total,
        concurrency,
        wall_seconds,
        per_second: total as f64 / wall_seconds.max(f64::EPSILON),
        latency: latencies.summary(),
        failed,
        first_error,
    })
}

#[derive(Debug)]
struct ReadTally {
    latencies: Latencies,
    failed: u64,
    first_error: Option<String>,
}

/// Follows `next_cursor` from the first page to the end, timing each page; then as many
/// sequential `/healthz` requests.
async fn page_through<F>(api: &Api, person_id: &str, health: F) -> anyhow::Result<Paging>
where
    F: Fn(u64) -> anyhow::Result<reqwest::RequestBuilder> + Send + Sync + 'static,
{
    let mut latencies = Latencies::new()?;
    let mut cursor: Option<String> = None;
    let mut pages = 0u64;
    let mut events = 0u64;
    let started = Instant::now();
    loop {
        let request = api.timeline_request(person_id, PAGE_SIZE, cursor.as_deref())?;
        let sent = Instant::now();
        let body = api::read_answer(request.send().await, "a timeline page").await?;
        latencies.record(sent.elapsed());
        let page: TimelinePage =
            serde_json::from_slice(&body).context("unexpected timeline answer")?;
        pages += 1;
        events += page.events.len() as u64;
        match page.next_cursor {
            Some(next) if !page.events.is_empty() => cursor = Some(next),
            _ => break,
        }
        if pages > BIG_EVENTS_PER_PERSON {
            bail!("the timeline of {person_id} did not end after {pages} pages");
        }
    }
    let wall_seconds = started.elapsed().as_secs_f64();
    let idgraph = RequestFigures {
        requests: pages,
        concurrency: 1,
        wall_seconds,
        per_second: pages as f64 / wall_seconds.max(f64::EPSILON),
        latency: latencies.summary(),
        failed: 0,
        first_error: None,
    };
    let baseline = timed_requests(pages, 1, health).await?;
    Ok(Paging {
        person: "big-0".into(),
        pages,
        events,
        expected_events: BIG_EVENTS_PER_PERSON,
        compared: Compared::new(idgraph, baseline),
    })
}

fn compared_rows(table: &mut Table, label: &str, compared: &Compared) {
    table.row(
        label,
        report::p50_p99_max(&compared.idgraph.latency),
        report::p50_p99_max(&compared.baseline.latency),
        report::ratio(
            compared.idgraph.latency.p50_ms,
            compared.baseline.latency.p50_ms,
        ),
    );
    table.row(
        "  throughput",
        report::per_second(compared.idgraph.per_second, "req"),
        report::per_second(compared.baseline.per_second, "req"),
        report::ratio(compared.idgraph.per_second, compared.baseline.per_second),
    );
    if compared.idgraph.failed + compared.baseline.failed > 0 {
        table.row(
            "  failed requests",
            report::thousands(compared.idgraph.failed),
            report::thousands(compared.baseline.failed),
            "",
        );
    }
}

fn render(results: &TimelineResults) -> String {
    let mut out = format!(
        "{}, timeline: {} messages loaded in batches of {}, {} in flight, seed {}; {} big \
         persons with {} track events each; pages of {PAGE_SIZE}; latencies are p50 / p99 / max, \
         ratios idgraph / baseline (p50 for latencies)\n\n",
        results.idgraph_version,
        report::thousands(results.events),
        results.batch_size,
        results.concurrency,
        results.seed,
        results.big_persons,
        report::thousands(results.events_per_big_person),
    );
    let mut table = Table::new("GET /healthz");
    match (&results.load, &results.loaded_by) {
        (Some(load), _) => {
            table.row(
                format!("load {}", results.backend.as_str()),
                report::per_second(load.events_per_second, "events"),
                "",
                "",
            );
            report::load_rows(&mut table, load, None);
        }
        (None, loaded_by) => table.row(
            "load",
            format!(
                "none: a kept store, loaded by {}",
                loaded_by.as_deref().unwrap_or("an earlier run")
            ),
            "",
            "",
        ),
    }
    compared_rows(
        &mut table,
        "first page, 1 reader",
        &results.first_page_sequential,
    );
    compared_rows(
        &mut table,
        &format!(
            "first page, {} readers",
            results.first_page_concurrent.idgraph.concurrency
        ),
        &results.first_page_concurrent,
    );
    let paging = &results.paging;
    compared_rows(
        &mut table,
        &format!("paging {} (per page)", paging.person),
        &paging.compared,
    );
    table.row(
        "  whole timeline",
        format!(
            "{:.2} s, {} pages, {} of {} events",
            paging.compared.idgraph.wall_seconds,
            report::thousands(paging.pages),
            report::thousands(paging.events),
            report::thousands(paging.expected_events)
        ),
        format!("{:.2} s", paging.compared.baseline.wall_seconds),
        report::ratio(
            paging.compared.idgraph.wall_seconds,
            paging.compared.baseline.wall_seconds,
        ),
    );
    table.row("server", "", "", "");
    report::server_rows(&mut table, &results.server);
    out.push_str(&table.render());
    if paging.events != paging.expected_events {
        out.push_str(&format!(
            "paging {} returned {} events, expected {}\n",
            paging.person, paging.events, paging.expected_events
        ));
    }
    for (name, compared) in [
        ("first page, 1 reader", &results.first_page_sequential),
        ("first page, concurrent", &results.first_page_concurrent),
    ] {
        if let Some(error) = &compared.idgraph.first_error {
            out.push_str(&format!("first failed read ({name}): {error}\n"));
        }
    }
    if let Some(load) = &results.load {
        report::problem_lines(&mut out, "idgraph", load);
    }
    report::log_lines(&mut out, &results.server.log);
    out
}

/// Loads the stream into a fresh store and checks that every event was acknowledged.
async fn load_stream(
    config: &TimelineConfig,
    client: &reqwest::Client,
    api: &Api,
) -> anyhow::Result<load::LoadOutcome> {
    let write_key = api.create_write_key_on_fresh_store().await?;
    let spec = StreamSpec {
        events: config.events,
        seed: config.seed,
        big_persons: config.big_persons,
        big_events_each: BIG_EVENTS_PER_PERSON,
    };
    let target = Target {
        batch_url: api.url("/v1/batch")?,
        write_key,
    };
    let loaded = load::run(client, &target, &spec, config.load, "load").await?;
    if loaded.figures.events_acknowledged < loaded.figures.events_sent {
        bail!(
            "only {} of {} events were acknowledged, so timelines would be incomplete; first \
             error: {}",
            loaded.figures.events_acknowledged,
            loaded.figures.events_sent,
            loaded.figures.first_error.as_deref().unwrap_or("none")
        );
    }
    Ok(loaded)
}
