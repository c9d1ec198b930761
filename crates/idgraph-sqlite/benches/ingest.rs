//! Resolution through the embedded store: the standard synthetic signal stream (identity churn,
//! ~5% of signals merging) ingested in batches, against a bare rusqlite loop inserting the same
//! event rows into the same schema with the same durability, measured in the same run.
//!
//! `cargo bench -p idgraph-sqlite --bench ingest` (signals: `IDGRAPH_BENCH_SIGNALS`, default 1M;
//! batch size: `IDGRAPH_BENCH_BATCH`, default 100, the size of a Segment client's batch).

use std::time::{Duration, Instant};

use idgraph_core::identity::IdentitySettings;
use idgraph_core::tenancy::{TenantId, WorkspaceName};
use idgraph_sqlite::{Durability, MIGRATIONS, SqliteOptions, SqliteStore};
use idgraph_store::{EventRow, IngestOutcome, SignalRecord, Store, encode_identifiers};
use idgraph_workload::{Rng, SignalStream, StreamConfig};
use jiff::Timestamp;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The stream as the store receives it: normalized, with events, in batches. Built before the
/// clock starts.
fn batches(signals: usize, batch: usize) -> Vec<Vec<SignalRecord>> {
    let settings = IdentitySettings::default();
    let workspace = WorkspaceName::parse("default").expect("valid");
    let start = Timestamp::now();
    let mut ids = Rng::new(7);
    let records: Vec<SignalRecord> = SignalStream::new(StreamConfig::scaled(signals))
        .enumerate()
        .map(|(i, signal)| {
            let identifiers = signal
                .identifiers()
                .map(|(kind, raw)| settings.normalize(kind, raw).expect("valid"))
                .collect();
            let at = start
                .checked_add(jiff::SignedDuration::from_micros(i as i64))
                .expect("in range");
            let identify = signal.email.is_some();
            SignalRecord {
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
            }
        })
        .collect();
    let mut out = Vec::with_capacity(records.len() / batch + 1);
    let mut iter = records.into_iter().peekable();
    while iter.peek().is_some() {
        out.push(iter.by_ref().take(batch).collect());
    }
    out
}

fn through_store(
    runtime: &tokio::runtime::Runtime,
    batches: Vec<Vec<SignalRecord>>,
    durability: Durability,
    subscribed: bool,
) -> (Duration, [usize; 3]) {
    let dir = tempfile::tempdir().expect("temp dir");
    let options = SqliteOptions {
        data_dir: dir.path().to_owned(),
        durability,
    };
    let store = SqliteStore::open(&options).expect("open");
    let tenant = TenantId::default_tenant();
    let settings = IdentitySettings::default();
    runtime.block_on(async {
        if subscribed {
            // What a webhook subscription adds: an outbox row per created person and merge.
            let subscription = idgraph_store::WebhookSubscription {
                subscription_id: "bench".into(),
                workspace: idgraph_core::tenancy::WorkspaceName::default_workspace(),
                url: "http://127.0.0.1:9/hook".into(),
                events: vec![
                    idgraph_core::webhooks::EventType::PersonCreated,
                    idgraph_core::webhooks::EventType::PersonMerged,
                ],
                secret_sealed: vec![0; 72],
                created_at: jiff::Timestamp::now(),
                disabled_at: None,
                disabled_reason: None,
            };
            store
                .create_webhook(&tenant, &subscription)
                .await
                .expect("subscribe");
        }
        let (mut created, mut merges, mut conflicts) = (0, 0, 0);
        let started = Instant::now();
        for batch in batches {
            for outcome in store
                .ingest(&tenant, &settings, batch)
                .await
                .expect("ingest")
            {
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
        (elapsed, [created, merges, conflicts])
    })
}

/// The floor: the same event rows, one INSERT each, one transaction per batch.
fn bare_loop(batches: &[Vec<SignalRecord>], durability: Durability) -> Duration {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut conn = rusqlite::Connection::open(dir.path().join("bare.db")).expect("open");
    conn.pragma_update(None, "journal_mode", "WAL")
        .expect("wal");
    conn.pragma_update(None, "synchronous", durability.pragma())
        .expect("sync");
    for migration in MIGRATIONS {
        conn.execute_batch(migration.sql).expect("schema");
    }
    let mut seq = 0i64;
    let started = Instant::now();
    for batch in batches {
        let tx = conn.transaction().expect("begin");
        {
            let mut stmt = tx
                .prepare_cached(
                    "INSERT INTO events (tenant_id, event_id, workspace, person_id, kind, name, \
                     occurred_at, ingested_at, schema_version, message_id, properties, context, \
                     seq, identifiers, source) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
                )
                .expect("prepare");
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
                ])
                .expect("insert");
            }
        }
        tx.commit().expect("commit");
    }
    started.elapsed()
}

fn main() {
    let signals = env_usize("IDGRAPH_BENCH_SIGNALS", 1_000_000);
    let batch = env_usize("IDGRAPH_BENCH_BATCH", 100);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    println!(
        "resolution through the SQLite store: {signals} signals ({} persons) in batches of {batch}",
        StreamConfig::scaled(signals).persons
    );
    println!(
        "| {:<16} | {:<44} | {:>10} | {:>8} |",
        "synchronous", "what", "signals/s", "seconds"
    );
    println!("|{:-<18}|{:-<46}|{:-<12}|{:-<10}|", "", "", "", "");
    for durability in [Durability::Full, Durability::Normal] {
        let bare = bare_loop(&batches(signals, batch), durability);
        let (store, [created, merges, conflicts]) =
            through_store(&runtime, batches(signals, batch), durability, false);
        let (subscribed, _) = through_store(&runtime, batches(signals, batch), durability, true);
        for (what, elapsed) in [
            ("baseline: bare INSERT of the same event rows", bare),
            ("idgraph store: resolve + record", store),
            ("same, with a webhook subscription (outbox)", subscribed),
        ] {
            println!(
                "| {:<16} | {what:<44} | {:>10.0} | {:>8.2} |",
                durability.pragma(),
                signals as f64 / elapsed.as_secs_f64(),
                elapsed.as_secs_f64()
            );
        }
        println!(
            "  store / bare time {:.2}x; subscribed / store time {:.2}x; {created} persons \
             created, {merges} merges ({:.1}% of signals), {conflicts} conflicts",
            store.as_secs_f64() / bare.as_secs_f64(),
            subscribed.as_secs_f64() / store.as_secs_f64(),
            merges as f64 * 100.0 / signals as f64
        );
    }
}
