//! The `outreach` workload: one SMS campaign's slice of a day, end to end through a real server.
//! A generated lead file is imported (`idgraph import --server`), every number on it is checked
//! in `check-batch`, a contact is recorded for each allowed one, a thousand of them reply STOP,
//! the list is checked again, and the timelines of those who replied are read back.
//!
//! The second check asks about a send time a year and a day ahead, past every cooldown the
//! contacts started: then a number is denied only for what its owner said, so every STOP'd
//! number must be denied for a revoke or an opt-out, and every other number allowed the first
//! time must be allowed again. Both are checked; either failing fails the run.

use std::collections::HashSet;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, bail};
use idgraph_workload::leads::LeadFileSpec;
use serde::Serialize;
use serde_json::json;

use crate::api::{Api, CheckResult};
use crate::compliance::{FROM, sms_check};
use crate::latency::{Latencies, LatencySummary};
use crate::load;
use crate::progress;
use crate::report::{self, Outcome, SummaryRow, Table};
use crate::server::{Backend, ServerFigures, ServerOptions, ServerProcess};
use crate::timeline::timed_requests;

#[derive(Debug)]
pub(crate) struct OutreachConfig {
    pub(crate) server: ServerOptions,
    pub(crate) rows: u64,
    pub(crate) columns: usize,
    pub(crate) stops: u64,
    pub(crate) seed: u64,
    pub(crate) json: Option<PathBuf>,
}

/// Requests in flight for contacts and replies, as a small sending service would have.
const CONCURRENCY: usize = 8;
/// `check-batch` takes at most this many checks.
const BATCH_LIMIT: usize = 100_000;

#[derive(Debug, Serialize)]
struct OutreachResults {
    workload: &'static str,
    idgraph_version: String,
    backend: Backend,
    rows: u64,
    columns: usize,
    seed: u64,
    file_bytes: u64,
    /// Distinct phone numbers on the file: what the campaign asks about.
    numbers: u64,
    stages: Vec<Stage>,
    total_seconds: f64,
    allowed_first: u64,
    contacts_recorded: u64,
    stops_sent: u64,
    stopped_denied: u64,
    /// Allowed the first time, not STOP'd nor held by a person who did, and allowed again: must
    /// be all of them.
    others_allowed_again: u64,
    others_expected: u64,
    /// Other numbers of a person who replied STOP from one of theirs, denied with it.
    denied_with_their_person: u64,
    /// The first numbers denied for another reason, with the reasons.
    unexpected_denials: Vec<String>,
    timelines_read: u64,
    /// STOP'd persons whose first page shows both the contact and the reply.
    timelines_complete: u64,
    timeline_latency: LatencySummary,
    server: ServerFigures,
}

#[derive(Debug, Serialize)]
struct Stage {
    name: &'static str,
    items: u64,
    seconds: f64,
    per_second: f64,
}

impl Stage {
    fn of(name: &'static str, items: u64, started: Instant) -> Self {
        let seconds = started.elapsed().as_secs_f64();
        progress(&format!(
            "{name}: {} in {seconds:.2} s",
            report::thousands(items)
        ));
        Self {
            name,
            items,
            seconds,
            per_second: items as f64 / seconds.max(1e-9),
        }
    }
}

pub(crate) async fn run(config: OutreachConfig) -> anyhow::Result<Outcome> {
    let work = tempfile::Builder::new()
        .prefix("idgraph-bench-outreach-")
        .tempdir()
        .context("cannot create a working directory")?;
    let spec = LeadFileSpec::new(config.rows, config.columns, config.seed);
    let file = work.path().join("leads.csv");
    let (_, file_bytes) = crate::import::generate(&spec, &file).await?;
    let numbers = {
        let file = file.clone();
        tokio::task::spawn_blocking(move || lead_numbers(&file))
            .await
            .context("the file reader stopped")??
    };

    let client = load::client(CONCURRENCY)?;
    progress(&format!(
        "starting {} on {}",
        config.server.binary.display(),
        config.server.backend.as_str()
    ));
    let mut server = ServerProcess::start(&config.server, &client).await?;
    let memory_after_start = server.memory()?;
    let api = Api::new(client.clone(), server.base_url(), server.master_key())?;
    let write_key = api.create_write_key_on_fresh_store().await?;
    server.start_sampling();
    let mut stages = Vec::new();
    let all_started = Instant::now();

    let started = Instant::now();
    import_through_server(&config.server.binary, &file, &server).await?;
    stages.push(Stage::of("import leads", config.rows, started));
    server.check_running()?;

    let started = Instant::now();
    let first = check_all(&api, &numbers, None).await?;
    stages.push(Stage::of(
        "check-batch every number",
        numbers.len() as u64,
        started,
    ));
    let allowed: Vec<&String> = numbers
        .iter()
        .zip(&first)
        .filter(|(_, r)| r.allowed)
        .map(|(n, _)| n)
        .collect();

    let started = Instant::now();
    let contacts = {
        let api = api.clone();
        let to: Vec<String> = allowed.iter().map(|n| (*n).clone()).collect();
        timed_requests(to.len() as u64, CONCURRENCY, move |i| {
            Ok(api.post("/api/v1/contacts")?.json(&json!({
                "channel": "sms",
                "from": FROM,
                "to": to[i as usize],
                "vertical": "solar",
                "campaign": "bench",
            })))
        })
        .await?
    };
    if contacts.failed > 0 {
        bail!(
            "{} contacts were not recorded; first: {}",
            contacts.failed,
            contacts.first_error.as_deref().unwrap_or("-")
        );
    }
    stages.push(Stage::of(
        "record contacts of the allowed",
        allowed.len() as u64,
        started,
    ));

    // Every n-th allowed number replies, so the replies are spread over the whole file.
    let stops = (config.stops as usize).min(allowed.len());
    let step = (allowed.len() / stops.max(1)).max(1);
    let stopped: Vec<String> = allowed
        .iter()
        .step_by(step)
        .take(stops)
        .map(|n| (*n).clone())
        .collect();
    let started = Instant::now();
    let replies = {
        let url = api.url("/v1/messages/inbound")?;
        let (client, stopped, write_key) = (client.clone(), stopped.clone(), write_key.clone());
        timed_requests(stopped.len() as u64, CONCURRENCY, move |i| {
            Ok(client
                .post(url.clone())
                .basic_auth(&write_key, Some(""))
                .json(&json!({
                    "from": stopped[i as usize],
                    "to": FROM,
                    "body": "STOP",
                    "message_id": format!("bench-stop-{i}"),
                })))
        })
        .await?
    };
    if replies.failed > 0 {
        bail!(
            "{} STOP replies were not accepted; first: {}",
            replies.failed,
            replies.first_error.as_deref().unwrap_or("-")
        );
    }
    stages.push(Stage::of(
        "inbound STOP replies",
        stopped.len() as u64,
        started,
    ));

    let later = jiff::Timestamp::now()
        .checked_add(jiff::SignedDuration::from_hours(24 * 366))
        .context("a year from now")?
        .to_string();
    let started = Instant::now();
    let second = check_all(&api, &numbers, Some(&later)).await?;
    stages.push(Stage::of(
        "check-batch again",
        numbers.len() as u64,
        started,
    ));
    let stopped_set: HashSet<&str> = stopped.iter().map(String::as_str).collect();
    let (mut stopped_denied, mut others_allowed_again, mut others_expected) = (0, 0, 0);
    let mut stopped_persons = Vec::new();
    for (n, after) in numbers.iter().zip(&second) {
        if stopped_set.contains(n.as_str()) {
            if !after.allowed
                && (after.has_reason("consent_revoked") || after.has_reason("suppressed"))
            {
                stopped_denied += 1;
            }
            stopped_persons.extend(after.person_id.clone());
        }
    }
    // A revoke on a number covers the persons holding it, so their other numbers (a shared
    // landline too) are denied with it (docs/COMPLIANCE.md). A year ahead no cooldown applies
    // and an opt-out covers only the number that replied: any other reason is wrong.
    let mut denied_with_their_person = 0;
    let mut unexpected = Vec::new();
    for ((n, before), after) in numbers.iter().zip(&first).zip(&second) {
        if stopped_set.contains(n.as_str()) || !before.allowed {
            continue;
        }
        if after.allowed {
            others_allowed_again += 1;
        } else if after.reasons.iter().all(|r| r.code == "consent_revoked") {
            denied_with_their_person += 1;
        } else {
            others_expected += 1;
            if unexpected.len() < 5 {
                let codes: Vec<&str> = after.reasons.iter().map(|r| r.code.as_str()).collect();
                unexpected.push(format!("{n}: {}", codes.join(", ")));
            }
        }
    }
    others_expected += others_allowed_again;
    stopped_persons.sort_unstable();
    stopped_persons.dedup();

    let started = Instant::now();
    let (timeline_latency, timelines_complete) = read_timelines(&api, &stopped_persons).await?;
    stages.push(Stage::of(
        "read back timelines",
        stopped_persons.len() as u64,
        started,
    ));
    let total_seconds = all_started.elapsed().as_secs_f64();

    server.check_running()?;
    let server_figures = server.finish(memory_after_start)?;
    let results = OutreachResults {
        workload: "outreach",
        idgraph_version: server.version().to_owned(),
        backend: config.server.backend,
        rows: config.rows,
        columns: config.columns,
        seed: config.seed,
        file_bytes,
        numbers: numbers.len() as u64,
        stages,
        total_seconds,
        allowed_first: allowed.len() as u64,
        contacts_recorded: contacts.requests,
        stops_sent: stopped.len() as u64,
        stopped_denied,
        others_allowed_again,
        others_expected,
        denied_with_their_person,
        unexpected_denials: unexpected,
        timelines_read: stopped_persons.len() as u64,
        timelines_complete,
        timeline_latency,
        server: server_figures,
    };
    print!("{}", render(&results));
    if let Some(path) = &config.json {
        report::write_json(path, &results)?;
        progress(&format!("results written to {}", path.display()));
    }
    summary(&results)
}

/// `idgraph import FILE --server URL`: the file goes up as a job like any client would send it,
/// and the command returns when the job has finished.
async fn import_through_server(
    binary: &Path,
    file: &Path,
    server: &ServerProcess,
) -> anyhow::Result<()> {
    progress("idgraph import through the server");
    let mut command = Command::new(binary);
    command
        .arg("import")
        .arg(file)
        .arg("--server")
        .arg(server.base_url())
        .arg("--key")
        .arg(server.master_key())
        .arg("--mapping")
        .arg("leads")
        .arg("--no-progress")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("IDGRAPH_") {
            command.env_remove(name);
        }
    }
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .context("the import runner stopped")?
        .with_context(|| format!("cannot run {}", binary.display()))?;
    if !output.status.success() {
        bail!(
            "idgraph import failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

/// Checks every number, in as few `check-batch` calls as the limit allows.
async fn check_all(
    api: &Api,
    numbers: &[String],
    at: Option<&str>,
) -> anyhow::Result<Vec<CheckResult>> {
    let mut results = Vec::with_capacity(numbers.len());
    for chunk in numbers.chunks(BATCH_LIMIT) {
        let checks: Vec<serde_json::Value> = chunk.iter().map(|n| sms_check(n, at)).collect();
        results.extend(api.check_batch(&checks).await?);
    }
    Ok(results)
}

/// Reads each person's first timeline page, one after another; returns the latencies and how
/// many pages show both the recorded contact and the inbound reply.
async fn read_timelines(api: &Api, persons: &[String]) -> anyhow::Result<(LatencySummary, u64)> {
    let mut latencies = Latencies::new()?;
    let mut complete = 0;
    for person in persons {
        let sent = Instant::now();
        let body = crate::api::read_answer(
            api.timeline_request(person, 50, None)?.send().await,
            "GET timeline",
        )
        .await?;
        latencies.record(sent.elapsed());
        let page: serde_json::Value =
            serde_json::from_slice(&body).context("a timeline page that is not JSON")?;
        let kinds: HashSet<&str> = page["events"]
            .as_array()
            .map(|events| events.iter().filter_map(|e| e["kind"].as_str()).collect())
            .unwrap_or_default();
        if kinds.contains("contact") && kinds.contains("inbound_message") {
            complete += 1;
        }
    }
    Ok((latencies.summary(), complete))
}

/// The distinct phone numbers of a lead file, in E.164: each row's mobile, else its phone.
fn lead_numbers(path: &Path) -> anyhow::Result<Vec<String>> {
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let mut seen = HashSet::new();
    let mut numbers = Vec::new();
    let mut fields: Vec<Vec<u8>> = Vec::new();
    let mut field = Vec::new();
    let (mut quoted, mut after_quote, mut header) = (false, false, true);
    let mut block = vec![0u8; 1 << 16];
    // Only the identity columns (the first ten) are kept; the rest of a row is skimmed over.
    let keep = idgraph_workload::leads::IDENTITY_COLUMNS.len();
    loop {
        let read = reader
            .read(&mut block)
            .with_context(|| format!("cannot read {}", path.display()))?;
        if read == 0 {
            break;
        }
        for &b in &block[..read] {
            match (quoted, b) {
                (true, b'"') => {
                    quoted = false;
                    after_quote = true;
                }
                (true, _) => {
                    if fields.len() < keep {
                        field.push(b);
                    }
                }
                (false, b'"') => {
                    if after_quote && fields.len() < keep {
                        field.push(b'"');
                    }
                    quoted = true;
                }
                (false, b',') => {
                    fields.push(std::mem::take(&mut field));
                    after_quote = false;
                }
                (false, b'\n') => {
                    fields.push(std::mem::take(&mut field));
                    after_quote = false;
                    if !header
                        && let Some(number) = row_number(&fields)
                        && seen.insert(number.clone())
                    {
                        numbers.push(number);
                    }
                    header = false;
                    fields.clear();
                }
                (false, b'\r') => {}
                (false, _) => {
                    after_quote = false;
                    if fields.len() < keep {
                        field.push(b);
                    }
                }
            }
        }
    }
    Ok(numbers)
}

/// Columns 4 and 5 (`Phone`, `Mobile`) of a row, the mobile preferred.
fn row_number(fields: &[Vec<u8>]) -> Option<String> {
    [4, 3]
        .into_iter()
        .filter_map(|i| fields.get(i))
        .find_map(|cell| e164(cell))
}

/// A North American number however the file spells it, or `None`.
fn e164(cell: &[u8]) -> Option<String> {
    let digits: String = cell
        .iter()
        .filter(|b| b.is_ascii_digit())
        .map(|&b| char::from(b))
        .collect();
    match digits.len() {
        10 => Some(format!("+1{digits}")),
        11 if digits.starts_with('1') => Some(format!("+{digits}")),
        _ => None,
    }
}

fn summary(results: &OutreachResults) -> anyhow::Result<Outcome> {
    let mut rows = vec![
        SummaryRow::compared(
            format!(
                "outreach {} {} leads, total",
                results.backend.as_str(),
                report::thousands(results.rows)
            ),
            results.total_seconds,
            None,
            |v| format!("{v:.1} s"),
        )
        .with_rss(results.server.memory_at_end.peak_rss_bytes),
    ];
    for stage in &results.stages {
        rows.push(SummaryRow::compared(
            format!("  {} ({})", stage.name, report::thousands(stage.items)),
            stage.seconds,
            None,
            |v| format!("{v:.2} s"),
        ));
    }
    rows.push(
        SummaryRow::plain(
            "  STOP'd numbers denied afterwards",
            format!("{} of {}", results.stopped_denied, results.stops_sent),
        )
        .with_value(results.stopped_denied as f64),
    );
    rows.extend(report::memory_growth_row("outreach", &results.server));
    let mut outcome = Outcome::new(rows, results)?;
    if results.stopped_denied != results.stops_sent {
        outcome.failures.push(format!(
            "outreach: only {} of {} STOP'd numbers were denied afterwards",
            results.stopped_denied, results.stops_sent
        ));
    }
    if results.others_allowed_again != results.others_expected {
        outcome.failures.push(format!(
            "outreach: {} of {} numbers nobody STOP'd were allowed again (first others: {})",
            results.others_allowed_again,
            results.others_expected,
            results.unexpected_denials.join("; ")
        ));
    }
    if results.timelines_complete != results.timelines_read {
        outcome.failures.push(format!(
            "outreach: {} of {} timelines show the contact and the reply",
            results.timelines_complete, results.timelines_read
        ));
    }
    if results.stops_sent == 0 {
        outcome
            .failures
            .push("outreach: no number was allowed, so nobody replied".to_owned());
    }
    Ok(outcome)
}

fn render(results: &OutreachResults) -> String {
    let mut out = format!(
        "{}, outreach: {} leads × {} columns ({}, seed {}), {} distinct numbers\n\n",
        results.idgraph_version,
        report::thousands(results.rows),
        results.columns,
        report::megabytes(results.file_bytes),
        results.seed,
        report::thousands(results.numbers),
    );
    let mut table = Table::new("none");
    for stage in &results.stages {
        table.row(
            stage.name,
            format!(
                "{:.2} s ({}, {})",
                stage.seconds,
                report::thousands(stage.items),
                report::per_second(stage.per_second, "items")
            ),
            "",
            "",
        );
    }
    table.row("total", format!("{:.1} s", results.total_seconds), "", "");
    table.row(
        "  allowed at first / contacts recorded",
        format!(
            "{} / {}",
            report::thousands(results.allowed_first),
            report::thousands(results.contacts_recorded)
        ),
        "",
        "",
    );
    table.row(
        "  STOP'd denied afterwards",
        format!("{} of {}", results.stopped_denied, results.stops_sent),
        "",
        "",
    );
    table.row(
        "  others allowed again (past the cooldowns)",
        format!(
            "{} of {}",
            report::thousands(results.others_allowed_again),
            report::thousands(results.others_expected)
        ),
        "",
        "",
    );
    table.row(
        "  other numbers of those persons, denied with them",
        report::thousands(results.denied_with_their_person),
        "",
        "",
    );
    table.row(
        "  timelines with contact and reply",
        format!(
            "{} of {} (p50/p99 {})",
            results.timelines_complete,
            results.timelines_read,
            report::p50_p99(&results.timeline_latency)
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
    fn numbers_are_read_however_they_are_spelled() {
        assert_eq!(e164(b"(415) 555-2671").as_deref(), Some("+14155552671"));
        assert_eq!(e164(b"+1 415 555 2671").as_deref(), Some("+14155552671"));
        assert_eq!(e164(b"14155552671").as_deref(), Some("+14155552671"));
        assert_eq!(e164(b""), None);
        assert_eq!(e164(b"555-2671"), None);
    }

    #[test]
    fn the_mobile_wins_and_rows_are_deduplicated() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("leads.csv");
        std::fs::write(
            &path,
            "First Name,Last Name,Email,Phone,Mobile,Address,Address 2,City,State,Zip,Notes\n\
             Ann,Lee,a@x.com,(212) 555-0101,\"415-555-2671\",1 Main St,,X,CA,94000,\"a, \"\"b\"\"\nc\"\n\
             Bob,Lee,,212.555.0101,,1 Main St,,X,CA,94000,\n\
             Cy,Lee,,212.555.0101,,1 Main St,,X,CA,94000,\n",
        )
        .unwrap();
        assert_eq!(
            lead_numbers(&path).unwrap(),
            ["+14155552671", "+12125550101"]
        );
    }
}
