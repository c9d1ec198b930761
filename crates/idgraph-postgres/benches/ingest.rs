//! Resolution through the PostgreSQL store: the standard synthetic signal stream (identity
//! churn, ~5% of signals merging) ingested in batches, against bare `INSERT ... SELECT FROM
//! unnest(...)` statements of the same event rows, one per batch, into the same database in the
//! same run.
//!
//! The database comes from `idgraph-testpg` like the conformance tests': the throwaway cluster
//! (fsync off) unless `IDGRAPH_TEST_DATABASE_URL` names a server. The figures therefore measure
//! round trips and server work, not disk flushes.
//!
//! `cargo bench -p idgraph-postgres --bench ingest` (signals: `IDGRAPH_BENCH_SIGNALS`, default
//! 1M; batch size: `IDGRAPH_BENCH_BATCH`, default 100, the size of a Segment client's batch).

use std::time::{Duration, Instant, SystemTime};

use idgraph_core::identity::IdentitySettings;
use idgraph_core::tenancy::{TenantId, WorkspaceName};
use idgraph_postgres::{PostgresOptions, PostgresStore};
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

async fn through_store(
    store: PostgresStore,
    batches: Vec<Vec<SignalRecord>>,
) -> (Duration, [usize; 3]) {
    let tenant = TenantId::default_tenant();
    let settings = IdentitySettings::default();
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
}

/// The floor: the same event rows, one multi-row INSERT and one transaction per batch, under a
/// tenant of their own so they collide with nothing the store writes.
async fn bare_insert(url: &str, batches: &[Vec<SignalRecord>]) -> Duration {
    let (mut client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(connection);
    let insert = client
        .prepare(
            "INSERT INTO events (tenant_id, event_id, workspace, person_id, kind, name, \
             occurred_at, ingested_at, schema_version, message_id, properties, context, seq, \
             identifiers, source) \
             SELECT 'bare', e, w, e, k, n, o, i, v, m, p, c, s, ids, src FROM unnest(\
             $1::text[], $2::text[], $3::text[], $4::text[], $5::timestamptz[], \
             $6::timestamptz[], $7::int4[], $8::text[], $9::text[], $10::text[], $11::int8[], \
             $12::text[], $13::text[]) AS t(e, w, k, n, o, i, v, m, p, c, s, ids, src)",
        )
        .await
        .expect("prepare");
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
            .map(|e| i32::try_from(e.schema_version).expect("small"))
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
        let tx = client.transaction().await.expect("begin");
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
        .expect("insert");
        tx.commit().await.expect("commit");
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
    let database = runtime
        .block_on(idgraph_testpg::test_database())
        .expect("a PostgreSQL database for the benchmark");
    println!(
        "resolution through the PostgreSQL store: {signals} signals ({} persons) in batches of \
         {batch}",
        StreamConfig::scaled(signals).persons
    );
    println!(
        "| {:<44} | {:>10} | {:>8} |",
        "what", "signals/s", "seconds"
    );
    println!("|{:-<46}|{:-<12}|{:-<10}|", "", "", "");
    let (bare, (store, [created, merges, conflicts])) = runtime.block_on(async {
        // Connecting migrates the fresh database, which the baseline then writes into too.
        let options = PostgresOptions {
            url: database.url.clone(),
            pool_size: 2,
            connect_timeout: Duration::from_secs(10),
        };
        let store = PostgresStore::connect(&options).await.expect("connect");
        let bare = bare_insert(&database.url, &batches(signals, batch)).await;
        (bare, through_store(store, batches(signals, batch)).await)
    });
    for (what, elapsed) in [
        ("baseline: one unnest INSERT of the events", bare),
        ("idgraph store: resolve + record", store),
    ] {
        println!(
            "| {what:<44} | {:>10.0} | {:>8.2} |",
            signals as f64 / elapsed.as_secs_f64(),
            elapsed.as_secs_f64()
        );
    }
    println!(
        "  store / bare time {:.2}x; {created} persons created, {merges} merges ({:.1}% of \
         signals), {conflicts} conflicts",
        store.as_secs_f64() / bare.as_secs_f64(),
        merges as f64 * 100.0 / signals as f64
    );
}
