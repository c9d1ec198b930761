//! The `resolve` workload: identity resolution in this process, without HTTP, through each
//! store. The synthetic signal stream of `idgraph_workload` (identity churn, about 5% of
//! signals merging) goes through `Store::ingest` in batches of 100, against bare inserts of the
//! same event rows into the same schema: one `INSERT` per row in a transaction per batch on
//! SQLite, one `INSERT ... SELECT FROM unnest(...)` per batch on PostgreSQL.
//!
//! This is the one workload that links the store crates: the figure it isolates is the cost of
//! resolving, which a server process would blur with HTTP and JSON.

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, bail};
use idgraph_core::identity::IdentitySettings;
use idgraph_core::tenancy::{TenantId, WorkspaceName};
use idgraph_postgres::{PostgresOptions, PostgresStore};
use idgraph_sqlite::{Durability, MIGRATIONS, SqliteOptions, SqliteStore};
use idgraph_store::{EventRow, IngestOutcome, SignalRecord, Store, encode_identifiers};
use idgraph_workload::{Rng, SignalStream, StreamConfig};
use serde::Serialize;

use crate::progress;
use crate::report::{self, Outcome, SummaryRow, Table};

const BATCH: usize = 100;

#[derive(Debug)]
pub(crate) struct ResolveConfig {
    pub(crate) signals: usize,
    /// A PostgreSQL URL of an empty database, or `None` for a throwaway cluster.
    pub(crate) database_url: Option<String>,
    pub(crate) no_postgres: bool,
    pub(crate) json: Option<PathBuf>,
}

#[derive(Debug, Serialize)]
struct ResolveResults {
    workload: &'static str,
    signals: usize,
    persons: u64,
    batch: usize,
    sqlite: StoreRun,
    postgres: Option<StoreRun>,
    notes: Vec<String>,
}

#[derive(Debug, Serialize)]
struct StoreRun {
    store: &'static str,
    durability: &'static str,
    signals_per_second: f64,
    seconds: f64,
    baseline_signals_per_second: f64,
    baseline_seconds: f64,
    created: usize,
    merges: usize,
    conflicts: usize,
}

impl StoreRun {
    fn new(
        store: &'static str,
        durability: &'static str,
        signals: usize,
        (elapsed, [created, merges, conflicts]): (Duration, [usize; 3]),
        baseline: Duration,
    ) -> Self {
        let rate = |d: Duration| signals as f64 / d.as_secs_f64().max(1e-9);
        Self {
            store,
            durability,
            signals_per_second: rate(elapsed),
            seconds: elapsed.as_secs_f64(),
            baseline_signals_per_second: rate(baseline),
            baseline_seconds: baseline.as_secs_f64(),
            created,
            merges,
            conflicts,
        }
    }
}

pub(crate) async fn run(config: ResolveConfig) -> anyhow::Result<Outcome> {
    let signals = config.signals;
    let mut notes = Vec::new();

    progress(&format!(
        "resolve in process: {} signals through SQLite, and bare inserts",
        report::thousands(signals as u64)
    ));
    let sqlite = {
        let dir = tempfile::Builder::new()
            .prefix("idgraph-bench-resolve-")
            .tempdir()
            .context("cannot create a temporary directory")?;
        let baseline = {
            let batches = batches(signals)?;
            let path = dir.path().join("bare.db");
            tokio::task::spawn_blocking(move || bare_sqlite(&path, &batches))
                .await
                .context("the bare insert loop stopped")??
        };
        let store = SqliteStore::open(&SqliteOptions {
            data_dir: dir.path().join("data"),
            durability: Durability::Full,
        })
        .context("cannot open the SQLite store")?;
        let measured = through_store(store, batches(signals)?).await?;
        StoreRun::new("sqlite", "synchronous=FULL", signals, measured, baseline)
    };

    let mut postgres = None;
    if !config.no_postgres {
        let url = match config.database_url {
            Some(url) => Some(url),
            None => match idgraph_testpg::durable_database().await {
                Ok(db) => Some(db.url),
                Err(reason) => {
                    notes.push(format!("no PostgreSQL figures: {reason}"));
                    None
                }
            },
        };
        if let Some(url) = url {
            progress(&format!(
                "resolve in process: {} signals through PostgreSQL, and bare inserts",
                report::thousands(signals as u64)
            ));
            // Connecting migrates the fresh database, which the baseline then writes into too.
            let store = PostgresStore::connect(&PostgresOptions {
                url: url.clone(),
                pool_size: 2,
                connect_timeout: Duration::from_secs(10),
            })
            .await
            .context("cannot connect the PostgreSQL store")?;
            let baseline = bare_postgres(&url, &batches(signals)?).await?;
            let measured = through_store(store, batches(signals)?).await?;
            postgres = Some(StoreRun::new(
                "postgres",
                "server default",
                signals,
                measured,
                baseline,
            ));
        }
    }

    let results = ResolveResults {
        workload: "resolve",
        signals,
        persons: StreamConfig::scaled(signals).persons,
        batch: BATCH,
        sqlite,
        postgres,
        notes,
    };
    print!("{}", render(&results));
    if let Some(path) = &config.json {
        report::write_json(path, &results)?;
        progress(&format!("results written to {}", path.display()));
    }
    let mut rows = Vec::new();
    for run in std::iter::once(&results.sqlite).chain(&results.postgres) {
        rows.push(SummaryRow::compared(
            format!("resolve in process, {}", run.store),
            run.signals_per_second,
            Some(run.baseline_signals_per_second),
            |v| report::per_second(v, "signals"),
        ));
    }
    Outcome::new(rows, &results)
}

/// The stream as a store receives it: normalized, with events, in batches; built before the
/// clock starts.
fn batches(signals: usize) -> anyhow::Result<Vec<Vec<SignalRecord>>> {
    let settings = IdentitySettings::default();
    let workspace = WorkspaceName::default_workspace();
    let start = jiff::Timestamp::now();
    let mut ids = Rng::new(7);
    let mut records = Vec::with_capacity(signals);
    for (i, signal) in SignalStream::new(StreamConfig::scaled(signals)).enumerate() {
        let identifiers = signal
            .identifiers()
            .map(|(kind, raw)| settings.normalize(kind, raw))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| anyhow::anyhow!("the stream has an invalid identifier: {e}"))?;
        let at = start
            .checked_add(jiff::SignedDuration::from_micros(i as i64))
            .context("a time out of range")?;
        let identify = signal.email.is_some();
        records.push(SignalRecord {
            event: EventRow {
                // Time-ordered like the ULIDs the server makes.
                event_id: format!("01{i:024}"),
                workspace: workspace.clone(),
                kind: if identify { "identify" } else { "track" }.into(),
                name: (!identify).then(|| "Viewed Page".into()),
                occurred_at: at,
                ingested_at: at,
                schema_version: 1,
                // Random, as client-made UUIDs are.
                message_id: format!("{:016x}{:016x}", ids.next_u64(), ids.next_u64()),
                properties: r#"{"path":"/pricing","plan":"pro"}"#.into(),
                context: r#"{"library":{"name":"bench"}}"#.into(),
            },
            identifiers,
            traits: Vec::new(),
            source: "segment:bench".into(),
        });
    }
    let mut out = Vec::with_capacity(records.len() / BATCH + 1);
    let mut iter = records.into_iter().peekable();
    while iter.peek().is_some() {
        out.push(iter.by_ref().take(BATCH).collect());
    }
    Ok(out)
}

async fn through_store<S: Store>(
    store: S,
    batches: Vec<Vec<SignalRecord>>,
) -> anyhow::Result<(Duration, [usize; 3])> {
    // Sealed and blind-indexed, as a server with its data key stores them.
    store.vault_slot().set(
        idgraph_store::vault::Vault::random()
            .map_err(|e| anyhow::anyhow!("no random keys: {e}"))?,
    );
    let tenant = TenantId::default_tenant();
    let settings = IdentitySettings::default();
    let (mut created, mut merges, mut conflicts) = (0, 0, 0);
    let started = Instant::now();
    for batch in batches {
        let outcomes = store
            .ingest(&tenant, &settings, batch)
            .await
            .map_err(|e| anyhow::anyhow!("ingest through {}: {e}", store.backend()))?;
        for outcome in outcomes {
            if let IngestOutcome::Recorded {
                created: c,
                merges: m,
                conflicts: k,
                ..
            } = outcome
            {
                created += usize::from(c);
                merges += m;
                conflicts += k;
            }
        }
    }
    let elapsed = started.elapsed();
    store.close().await;
    Ok((elapsed, [created, merges, conflicts]))
}

const EVENT_COLUMNS: &str = "tenant_id, event_id, workspace, person_id, kind, name, occurred_at, \
                             ingested_at, schema_version, message_id, properties, context, seq, \
                             identifiers, source";

/// The floor on SQLite: the same event rows, one INSERT each, one transaction per batch, with the
/// store's schema and durability.
fn bare_sqlite(path: &std::path::Path, batches: &[Vec<SignalRecord>]) -> anyhow::Result<Duration> {
    let mut conn = rusqlite::Connection::open(path).context("cannot open the bare database")?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", Durability::Full.pragma())?;
    for migration in MIGRATIONS {
        conn.execute_batch(migration.sql)
            .context("cannot create the schema")?;
    }
    let mut seq = 0i64;
    let started = Instant::now();
    for batch in batches {
        let tx = conn.transaction()?;
        {
            let mut stmt = tx.prepare_cached(&format!(
                "INSERT INTO events ({EVENT_COLUMNS}) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)"
            ))?;
            for signal in batch {
                seq += 1;
                let event = &signal.event;
                stmt.execute(rusqlite::params![
                    "default",
                    event.event_id,
                    event.workspace.as_str(),
                    event.event_id,
                    event.kind,
                    event.name,
                    event.occurred_at.as_microsecond(),
                    event.ingested_at.as_microsecond(),
                    event.schema_version,
                    event.message_id,
                    event.properties,
                    event.context,
                    seq,
                    encode_identifiers(&signal.identifiers),
                    signal.source,
                ])?;
            }
        }
        tx.commit()?;
    }
    Ok(started.elapsed())
}

/// The floor on PostgreSQL: one multi-row INSERT and one transaction per batch, under a tenant of
/// its own so the rows collide with nothing the store writes.
async fn bare_postgres(url: &str, batches: &[Vec<SignalRecord>]) -> anyhow::Result<Duration> {
    let (mut client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .context("cannot connect to PostgreSQL")?;
    let connection = tokio::spawn(connection);
    let insert = client
        .prepare(&format!(
            "INSERT INTO events ({EVENT_COLUMNS}) \
             SELECT 'bare', e, w, e, k, n, o, i, v, m, p, c, s, ids, src FROM unnest(\
             $1::text[], $2::text[], $3::text[], $4::text[], $5::timestamptz[], \
             $6::timestamptz[], $7::int4[], $8::text[], $9::text[], $10::text[], $11::int8[], \
             $12::text[], $13::text[]) AS t(e, w, k, n, o, i, v, m, p, c, s, ids, src)"
        ))
        .await
        .context("cannot prepare the bare insert")?;
    let mut seq = 0i64;
    let started = Instant::now();
    for batch in batches {
        let events = batch.iter().map(|s| &s.event);
        let event_ids: Vec<&str> = events.clone().map(|e| e.event_id.as_str()).collect();
        let workspaces: Vec<&str> = events.clone().map(|e| e.workspace.as_str()).collect();
        let kinds: Vec<&str> = events.clone().map(|e| e.kind.as_str()).collect();
        let names: Vec<Option<&str>> = events.clone().map(|e| e.name.as_deref()).collect();
        let occurred: Vec<SystemTime> = events.clone().map(|e| e.occurred_at.into()).collect();
        let ingested: Vec<SystemTime> = events.clone().map(|e| e.ingested_at.into()).collect();
        let versions: Vec<i32> = events
            .clone()
            .map(|e| i32::try_from(e.schema_version).unwrap_or(i32::MAX))
            .collect();
        let message_ids: Vec<&str> = events.clone().map(|e| e.message_id.as_str()).collect();
        let properties: Vec<&str> = events.clone().map(|e| e.properties.as_str()).collect();
        let contexts: Vec<&str> = events.map(|e| e.context.as_str()).collect();
        let seqs: Vec<i64> = batch
            .iter()
            .map(|_| {
                seq += 1;
                seq
            })
            .collect();
        let identifiers: Vec<String> = batch
            .iter()
            .map(|s| encode_identifiers(&s.identifiers))
            .collect();
        let sources: Vec<&str> = batch.iter().map(|s| s.source.as_str()).collect();
        let tx = client.transaction().await?;
        tx.execute(
            &insert,
            &[
                &event_ids,
                &workspaces,
                &kinds,
                &names,
                &occurred,
                &ingested,
                &versions,
                &message_ids,
                &properties,
                &contexts,
                &seqs,
                &identifiers,
                &sources,
            ],
        )
        .await
        .context("the bare insert")?;
        tx.commit().await?;
    }
    let elapsed = started.elapsed();
    drop(client);
    if let Ok(Err(e)) = connection.await {
        bail!("the PostgreSQL connection failed: {e}");
    }
    Ok(elapsed)
}

fn render(results: &ResolveResults) -> String {
    let mut out = format!(
        "resolve in process: {} signals ({} persons) in batches of {}\n\n",
        report::thousands(results.signals as u64),
        report::thousands(results.persons),
        results.batch
    );
    let mut table = Table::new("bare inserts of the same rows");
    for run in std::iter::once(&results.sqlite).chain(&results.postgres) {
        table.row(
            format!("resolve {} ({})", run.store, run.durability),
            report::per_second(run.signals_per_second, "signals"),
            report::per_second(run.baseline_signals_per_second, "signals"),
            report::ratio(run.signals_per_second, run.baseline_signals_per_second),
        );
        table.row(
            "  created / merges / conflicts",
            format!(
                "{} / {} / {}",
                report::thousands(run.created as u64),
                report::thousands(run.merges as u64),
                report::thousands(run.conflicts as u64)
            ),
            "",
            "",
        );
    }
    out.push_str(&table.render());
    for note in &results.notes {
        out.push_str(&format!("note: {note}\n"));
    }
    out
}
