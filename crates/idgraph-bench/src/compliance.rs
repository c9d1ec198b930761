//! The `compliance` workload: a store holding a suppression list of a tenth of the numbers asked
//! about, then single `POST /api/v1/compliance/check` calls one after another (the latency a
//! sender pays before each message) and one `check-batch` of every number (a campaign's list).
//! The baseline is the least any gate can do: a probe of an in-memory hash set of the same
//! suppressed numbers, in this process.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, bail};
use serde::Serialize;
use serde_json::json;

use crate::api::Api;
use crate::latency::LatencySummary;
use crate::load;
use crate::progress;
use crate::report::{self, Outcome, SummaryRow, Table};
use crate::server::{Backend, ServerFigures, ServerOptions, ServerProcess};
use crate::timeline::{RequestFigures, timed_requests};

#[derive(Debug)]
pub(crate) struct ComplianceConfig {
    pub(crate) server: ServerOptions,
    /// Numbers in the check-batch; one in ten is suppressed.
    pub(crate) numbers: u64,
    /// Single checks, sent one after another.
    pub(crate) singles: u64,
    pub(crate) json: Option<PathBuf>,
}

#[derive(Debug, Serialize)]
struct ComplianceResults {
    workload: &'static str,
    idgraph_version: String,
    backend: Backend,
    numbers: u64,
    suppressed: u64,
    suppression_import_seconds: f64,
    single: RequestFigures,
    /// Mean time of one probe of the hash set.
    baseline_probe_ms: f64,
    batch: BatchFigures,
    server: ServerFigures,
}

#[derive(Debug, Serialize)]
struct BatchFigures {
    checks: u64,
    seconds: f64,
    checks_per_second: f64,
    /// The same numbers probed in the hash set.
    baseline_seconds: f64,
    denied: u64,
    /// Suppressed numbers the batch allowed: must be none.
    suppressed_but_allowed: u64,
    /// Other numbers the batch denied: must be none on this store.
    denied_without_cause: u64,
}

/// The sender every check names.
pub(crate) const FROM: &str = "+14155550100";

/// The `n`th of a run's numbers, in E.164: valid US mobile-style numbers spread over a few
/// area codes, never two alike for `n` below 8 million.
pub(crate) fn number(n: u64) -> String {
    const AREAS: [u32; 5] = [212, 312, 617, 713, 303];
    let area = AREAS[(n % 5) as usize];
    let rest = n / 5;
    let exchange = 200 + (rest / 10_000) % 800;
    let line = rest % 10_000;
    format!("+1{area}{exchange:03}{line:04}")
}

pub(crate) fn sms_check(to: &str, at: Option<&str>) -> serde_json::Value {
    let mut check = json!({"channel": "sms", "to": to, "from": FROM, "purpose": "sms:marketing"});
    if let Some(at) = at {
        check["at"] = json!(at);
    }
    check
}

pub(crate) async fn run(config: ComplianceConfig) -> anyhow::Result<Outcome> {
    let client = load::client(16)?;
    progress(&format!(
        "starting {} on {}",
        config.server.binary.display(),
        config.server.backend.as_str()
    ));
    let mut server = ServerProcess::start(&config.server, &client).await?;
    let memory_after_start = server.memory()?;
    server.start_sampling();
    let api = Api::new(client.clone(), server.base_url(), server.master_key())?;

    let numbers: Vec<String> = (0..config.numbers).map(number).collect();
    let suppressed: HashSet<String> = numbers.iter().step_by(10).cloned().collect();
    progress(&format!(
        "suppressing {} numbers with a suppression import",
        report::thousands(suppressed.len() as u64)
    ));
    let mut csv = String::from("Phone\n");
    for n in numbers.iter().step_by(10) {
        csv.push_str(n);
        csv.push('\n');
    }
    let started = Instant::now();
    api.import_and_wait("mode=suppression&reason=opt_out", csv.into_bytes())
        .await
        .context("the suppression import")?;
    let suppression_import_seconds = started.elapsed().as_secs_f64();

    progress(&format!(
        "{} single checks, one at a time",
        report::thousands(config.singles)
    ));
    let single = {
        let (api, numbers) = (api.clone(), numbers.clone());
        timed_requests(config.singles, 1, move |i| {
            let to = &numbers[(i.wrapping_mul(7919) % numbers.len() as u64) as usize];
            Ok(api
                .post("/api/v1/compliance/check")?
                .json(&sms_check(to, None)))
        })
        .await?
    };
    if single.failed > 0 {
        bail!(
            "{} single checks failed; first: {}",
            single.failed,
            single.first_error.as_deref().unwrap_or("-")
        );
    }

    progress(&format!(
        "one check-batch of {} numbers",
        report::thousands(config.numbers)
    ));
    let checks: Vec<serde_json::Value> = numbers.iter().map(|n| sms_check(n, None)).collect();
    let started = Instant::now();
    let results = api.check_batch(&checks).await?;
    let seconds = started.elapsed().as_secs_f64();
    drop(checks);
    let (mut denied, mut suppressed_but_allowed, mut denied_without_cause) = (0, 0, 0);
    for (n, result) in numbers.iter().zip(&results) {
        let is_suppressed = suppressed.contains(n);
        if !result.allowed {
            denied += 1;
        }
        if is_suppressed && (result.allowed || !result.has_reason("suppressed")) {
            suppressed_but_allowed += 1;
        }
        if !is_suppressed && !result.allowed {
            denied_without_cause += 1;
        }
    }
    drop(results);

    // The baseline: the same questions asked of a hash set, timed as a whole because one probe
    // is below the clock's resolution.
    let started = Instant::now();
    let mut hits = 0u64;
    for n in &numbers {
        hits += u64::from(std::hint::black_box(&suppressed).contains(std::hint::black_box(n)));
    }
    let baseline_seconds = started.elapsed().as_secs_f64();
    if hits != suppressed.len() as u64 {
        bail!(
            "the hash-set baseline found {hits} of {} numbers",
            suppressed.len()
        );
    }

    server.check_running()?;
    let server_figures = server.finish(memory_after_start)?;
    let results = ComplianceResults {
        workload: "compliance",
        idgraph_version: server.version().to_owned(),
        backend: config.server.backend,
        numbers: config.numbers,
        suppressed: suppressed.len() as u64,
        suppression_import_seconds,
        single,
        baseline_probe_ms: baseline_seconds * 1000.0 / config.numbers.max(1) as f64,
        batch: BatchFigures {
            checks: config.numbers,
            seconds,
            checks_per_second: config.numbers as f64 / seconds.max(1e-9),
            baseline_seconds,
            denied,
            suppressed_but_allowed,
            denied_without_cause,
        },
        server: server_figures,
    };
    print!("{}", render(&results));
    if let Some(path) = &config.json {
        report::write_json(path, &results)?;
        progress(&format!("results written to {}", path.display()));
    }
    summary(&results)
}

fn latency_rows(name: &str, latency: &LatencySummary, baseline_ms: f64) -> [SummaryRow; 2] {
    [
        SummaryRow::compared(
            format!("{name} p50"),
            latency.p50_ms,
            Some(baseline_ms),
            report::ms,
        ),
        SummaryRow::compared(
            format!("{name} p99"),
            latency.p99_ms,
            Some(baseline_ms),
            report::ms,
        ),
    ]
}

fn summary(results: &ComplianceResults) -> anyhow::Result<Outcome> {
    let batch = &results.batch;
    let mut rows = Vec::new();
    let [p50, p99] = latency_rows(
        &format!("compliance {} single check", results.backend.as_str()),
        &results.single.latency,
        results.baseline_probe_ms,
    );
    rows.push(p50.with_rss(results.server.memory_at_end.peak_rss_bytes));
    rows.push(p99);
    rows.push(SummaryRow::compared(
        format!(
            "compliance {} check-batch of {}",
            results.backend.as_str(),
            report::thousands(batch.checks)
        ),
        batch.seconds,
        Some(batch.baseline_seconds),
        |v| format!("{v:.3} s"),
    ));
    rows.push(
        SummaryRow::plain(
            "  check-batch throughput",
            report::per_second(batch.checks_per_second, "checks"),
        )
        .with_value(batch.checks_per_second),
    );
    let mut outcome = Outcome::new(rows, results)?;
    if batch.suppressed_but_allowed > 0 || batch.denied_without_cause > 0 {
        outcome.failures.push(format!(
            "compliance: {} suppressed numbers allowed, {} others denied",
            batch.suppressed_but_allowed, batch.denied_without_cause
        ));
    }
    Ok(outcome)
}

fn render(results: &ComplianceResults) -> String {
    let mut out = format!(
        "{}, compliance: {} numbers, {} of them suppressed (suppression import: {:.1} s)\n\n",
        results.idgraph_version,
        report::thousands(results.numbers),
        report::thousands(results.suppressed),
        results.suppression_import_seconds
    );
    let mut table = Table::new("hash-set probe");
    let single = &results.single;
    table.row(
        format!("single check {}", results.backend.as_str()),
        report::p50_p99(&single.latency),
        report::ms(results.baseline_probe_ms),
        report::ratio(single.latency.p50_ms, results.baseline_probe_ms),
    );
    table.row(
        "  checks/s (1 at a time)",
        report::per_second(single.per_second, "checks"),
        "",
        "",
    );
    let batch = &results.batch;
    table.row(
        format!("check-batch of {}", report::thousands(batch.checks)),
        format!(
            "{:.3} s ({})",
            batch.seconds,
            report::per_second(batch.checks_per_second, "checks")
        ),
        format!("{:.4} s", batch.baseline_seconds),
        report::ratio(batch.seconds, batch.baseline_seconds),
    );
    table.row(
        "  denied / suppressed allowed / denied otherwise",
        format!(
            "{} / {} / {}",
            report::thousands(batch.denied),
            batch.suppressed_but_allowed,
            batch.denied_without_cause
        ),
        "",
        "",
    );
    report::server_rows(&mut table, &results.server);
    out.push_str(&table.render());
    report::log_lines(&mut out, &results.server.log);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_distinct_and_well_formed() {
        let numbers: HashSet<String> = (0..200_000).map(number).collect();
        assert_eq!(numbers.len(), 200_000);
        assert!(numbers.iter().all(|n| n.len() == 12 && n.starts_with("+1")));
        assert_eq!(number(0), "+12122000000");
    }
}
