//! The loader: sends a message stream to a `/v1/batch` endpoint with a fixed number of requests
//! in flight and measures it. `ingest` measures idgraph and the baseline with it; `timeline` uses
//! it to fill the store before reading.
//!
//! Request bodies are generated before the clock starts, in chunks so that a 10M-message stream
//! does not need gigabytes at once; only the sending is timed.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use jiff::Timestamp;
use reqwest::{StatusCode, Url, header};
use serde::{Deserialize, Serialize};

use crate::latency::{Latencies, LatencySummary};
use crate::stream::{Batch, MessageStream, StreamSpec, StreamStats};
use crate::{progress, report};

/// Messages generated ahead of one timed stretch: at ~350 bytes each, about 350 MB.
const CHUNK_MESSAGES: u64 = 1_000_000;

/// How often a long run reports how far it is.
const PROGRESS_EVERY: Duration = Duration::from_secs(15);

/// Error bodies are kept this long for the report.
const ERROR_BODY_LIMIT: usize = 1000;

/// Where to send batches and how.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub(crate) batch_url: Url,
    pub(crate) write_key: String,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct LoadOptions {
    pub(crate) batch_size: usize,
    pub(crate) concurrency: usize,
}

/// What one load run measured.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct LoadFigures {
    pub(crate) requests: u64,
    pub(crate) wall_seconds: f64,
    pub(crate) events_sent: u64,
    /// Messages in batches answered 200.
    pub(crate) events_acknowledged: u64,
    pub(crate) events_per_second: f64,
    pub(crate) batch_latency: LatencySummary,
    pub(crate) non_200: u64,
    /// Requests that got no HTTP answer at all (connection refused or reset, timeout).
    pub(crate) transport_errors: u64,
    pub(crate) first_error: Option<String>,
    /// What the server's 200 answers said about their items; `None` when the answers do not
    /// say (the baseline's).
    pub(crate) items: Option<ItemCounts>,
}

/// Item counts from idgraph's batch answers.
#[derive(Debug, Default, Clone, Serialize)]
pub(crate) struct ItemCounts {
    pub(crate) accepted: u64,
    pub(crate) duplicates: u64,
    pub(crate) rejected: u64,
    pub(crate) first_rejection: Option<String>,
}

impl ItemCounts {
    fn add(&mut self, other: ItemCounts) {
        self.accepted += other.accepted;
        self.duplicates += other.duplicates;
        self.rejected += other.rejected;
        self.first_rejection = self.first_rejection.take().or(other.first_rejection);
    }
}

/// A load run's figures and what the stream contained.
#[derive(Debug)]
pub(crate) struct LoadOutcome {
    pub(crate) figures: LoadFigures,
    pub(crate) stream: StreamStats,
    pub(crate) merge_emails: Vec<String>,
}

/// idgraph's answer to a batch; the baseline answers `{"success": true}` only.
#[derive(Debug, Default, Deserialize)]
struct BatchAnswer {
    accepted: Option<u64>,
    #[serde(default)]
    duplicates: u64,
    #[serde(default)]
    rejected: u64,
    #[serde(default)]
    errors: Vec<serde_json::Value>,
}

/// Per-worker tallies, summed at the end of each chunk.
#[derive(Debug)]
struct Tally {
    latencies: Latencies,
    requests: u64,
    acknowledged: u64,
    non_200: u64,
    transport_errors: u64,
    first_error: Option<String>,
    items: Option<ItemCounts>,
}

impl Tally {
    fn new() -> anyhow::Result<Self> {
        Ok(Self {
            latencies: Latencies::new()?,
            requests: 0,
            acknowledged: 0,
            non_200: 0,
            transport_errors: 0,
            first_error: None,
            items: None,
        })
    }

    fn add(&mut self, other: Tally) -> anyhow::Result<()> {
        self.latencies.add(&other.latencies)?;
        self.requests += other.requests;
        self.acknowledged += other.acknowledged;
        self.non_200 += other.non_200;
        self.transport_errors += other.transport_errors;
        self.first_error = self.first_error.take().or(other.first_error);
        if let Some(items) = other.items {
            self.items.get_or_insert_default().add(items);
        }
        Ok(())
    }
}

/// The client for loads: HTTP/1.1 keep-alive connections, at least one per request in flight.
pub(crate) fn client(concurrency: usize) -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .http1_only()
        .no_proxy()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(concurrency.max(16))
        .pool_idle_timeout(Duration::from_secs(300))
        .timeout(Duration::from_secs(300))
        .build()
        .context("cannot build the HTTP client")
}

/// Sends the whole stream `spec` describes to `target`; `label` names it in progress lines.
pub(crate) async fn run(
    client: &reqwest::Client,
    target: &Target,
    spec: &StreamSpec,
    options: LoadOptions,
    label: &str,
) -> anyhow::Result<LoadOutcome> {
    let mut stream = MessageStream::new(spec.clone(), Timestamp::now());
    let mut total = Tally::new()?;
    let mut sending = Duration::ZERO;
    let mut events_sent = 0u64;
    let chunks = spec.events.div_ceil(CHUNK_MESSAGES);
    let mut chunk = 0;
    let acknowledged = Arc::new(AtomicU64::new(0));
    let ticker = tokio::spawn(report_progress(
        Arc::clone(&acknowledged),
        spec.events,
        label.to_owned(),
    ));
    // Stops the ticker however this function returns.
    let _ticker = AbortOnDrop(ticker);
    while !stream.is_done() {
        chunk += 1;
        let batch_size = options.batch_size;
        let (returned, batches) = tokio::task::spawn_blocking(move || {
            let batches = stream.next_batches(CHUNK_MESSAGES, batch_size, Timestamp::now());
            (stream, batches)
        })
        .await
        .context("the generator thread failed")?;
        stream = returned;
        let batches = batches?;
        let messages: u64 = batches.iter().map(|b| u64::from(b.messages)).sum();
        let bytes: usize = batches.iter().map(|b| b.body.len()).sum();
        progress(&format!(
            "{label}: sending {} messages in {} batches ({} MB; chunk {chunk}/{chunks})",
            messages,
            batches.len(),
            bytes / 1_000_000
        ));
        events_sent += messages;
        let started = Instant::now();
        let tally =
            send_batches(client, target, batches, options.concurrency, &acknowledged).await?;
        sending += started.elapsed();
        total.add(tally)?;
    }
    let wall_seconds = sending.as_secs_f64();
    let figures = LoadFigures {
        requests: total.requests,
        wall_seconds,
        events_sent,
        events_acknowledged: total.acknowledged,
        events_per_second: if wall_seconds > 0.0 {
            total.acknowledged as f64 / wall_seconds
        } else {
            0.0
        },
        batch_latency: total.latencies.summary(),
        non_200: total.non_200,
        transport_errors: total.transport_errors,
        first_error: total.first_error,
        items: total.items,
    };
    Ok(LoadOutcome {
        figures,
        stream: stream.stats().clone(),
        merge_emails: stream.merge_emails().to_vec(),
    })
}

/// Sends pre-built batches with `concurrency` requests in flight until none are left.
async fn send_batches(
    client: &reqwest::Client,
    target: &Target,
    batches: Vec<Batch>,
    concurrency: usize,
    acknowledged: &Arc<AtomicU64>,
) -> anyhow::Result<Tally> {
    let queue = Arc::new(Mutex::new(VecDeque::from(batches)));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..concurrency.max(1) {
        let queue = Arc::clone(&queue);
        let client = client.clone();
        let target = target.clone();
        let acknowledged = Arc::clone(acknowledged);
        workers.spawn(async move { worker(&client, &target, &queue, &acknowledged).await });
    }
    let mut total = Tally::new()?;
    while let Some(joined) = workers.join_next().await {
        total.add(joined.context("a load worker failed")??)?;
    }
    Ok(total)
}

async fn worker(
    client: &reqwest::Client,
    target: &Target,
    queue: &Mutex<VecDeque<Batch>>,
    acknowledged: &AtomicU64,
) -> anyhow::Result<Tally> {
    let mut tally = Tally::new()?;
    loop {
        // The lock is held only to pop; never across an await.
        let next = queue
            .lock()
            .map_err(|_| anyhow::anyhow!("the batch queue lock is poisoned"))?
            .pop_front();
        let Some(batch) = next else {
            return Ok(tally);
        };
        let started = Instant::now();
        let sent = client
            .post(target.batch_url.clone())
            .basic_auth(&target.write_key, Some(""))
            .header(header::CONTENT_TYPE, "application/json")
            .body(batch.body)
            .send()
            .await;
        let answer = match sent {
            Ok(response) => {
                let status = response.status();
                response.bytes().await.map(|body| (status, body))
            }
            Err(e) => Err(e),
        };
        tally.latencies.record(started.elapsed());
        tally.requests += 1;
        match answer {
            Ok((StatusCode::OK, body)) => {
                tally.acknowledged += u64::from(batch.messages);
                acknowledged.fetch_add(u64::from(batch.messages), Ordering::Relaxed);
                let parsed: BatchAnswer = serde_json::from_slice(&body).unwrap_or_default();
                if let Some(accepted) = parsed.accepted {
                    let items = tally.items.get_or_insert_default();
                    items.accepted += accepted;
                    items.duplicates += parsed.duplicates;
                    items.rejected += parsed.rejected;
                    if items.first_rejection.is_none()
                        && let Some(error) = parsed.errors.first()
                    {
                        items.first_rejection = Some(error.to_string());
                    }
                }
            }
            Ok((status, body)) => {
                tally.non_200 += 1;
                if tally.first_error.is_none() {
                    let text = String::from_utf8_lossy(&body);
                    let text: String = text.chars().take(ERROR_BODY_LIMIT).collect();
                    tally.first_error = Some(format!("{status}: {text}"));
                }
            }
            Err(e) => {
                tally.transport_errors += 1;
                if tally.first_error.is_none() {
                    tally.first_error = Some(format!("no answer: {}", error_chain(&e)));
                }
            }
        }
    }
}

/// Prints how far a long run is, and its recent rate, which shows whether the server slows down
/// as its store grows. Time spent generating between chunks counts here too.
async fn report_progress(acknowledged: Arc<AtomicU64>, total: u64, label: String) {
    let mut previous = 0;
    loop {
        tokio::time::sleep(PROGRESS_EVERY).await;
        let now = acknowledged.load(Ordering::Relaxed);
        progress(&format!(
            "{label}: {} of {} messages acknowledged; {} over the last {} s",
            report::thousands(now),
            report::thousands(total),
            report::per_second(
                (now - previous) as f64 / PROGRESS_EVERY.as_secs_f64(),
                "msg"
            ),
            PROGRESS_EVERY.as_secs()
        ));
        previous = now;
    }
}

#[derive(Debug)]
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// An error and its causes on one line: reqwest's own message alone is often just "error
/// sending request".
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
