//! Inserts identity-node rows through the store and through a bare rusqlite loop with the same
//! schema and durability, and prints both rates, their ratio and what durability costs.
//!
//! `cargo bench -p idgraph-sqlite --bench insert_nodes` (rows: `IDGRAPH_BENCH_ROWS`, default 1M).

use std::time::{Duration, Instant};

use idgraph_core::identity::IdentifierKind;
use idgraph_core::tenancy::TenantId;
use idgraph_sqlite::{Durability, MIGRATIONS, SqliteOptions, SqliteStore};
use idgraph_store::{IdentityNodeRow, Store};
use jiff::Timestamp;

const BATCH: usize = 10_000;

fn spread(i: u64) -> u64 {
    // splitmix64: values land all over the index, as real emails and phones do.
    let mut z = i.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn rows(n: usize) -> Vec<Vec<IdentityNodeRow>> {
    let kinds = ["email", "phone", "anonymous_id"].map(|k| IdentifierKind::parse(k).expect("kind"));
    let now = Timestamp::now();
    let all: Vec<IdentityNodeRow> = (0..n as u64)
        .map(|i| {
            let kind = kinds[(i % 3) as usize].clone();
            let value = match i % 3 {
                0 => format!("user{:016x}@example.com", spread(i)),
                1 => format!("+1{:010}", spread(i) % 10_000_000_000),
                _ => format!("anon-{:032x}", u128::from(spread(i)) << 64 | u128::from(i)),
            };
            IdentityNodeRow {
                kind,
                value,
                person_id: format!("01PERSON{:018}", i / 3),
                source: "bench".into(),
                confidence: 1.0,
                first_seen: now,
                last_seen: now,
                signal_id: Some(format!("sig-{i}")),
            }
        })
        .collect();
    all.chunks(BATCH).map(<[_]>::to_vec).collect()
}

fn bare_loop(batches: &[Vec<IdentityNodeRow>], durability: Durability) -> Duration {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut conn = rusqlite::Connection::open(dir.path().join("bare.db")).expect("open");
    conn.pragma_update(None, "journal_mode", "WAL")
        .expect("wal");
    conn.pragma_update(None, "synchronous", durability.pragma())
        .expect("sync");
    for migration in MIGRATIONS {
        conn.execute_batch(migration.sql).expect("schema");
    }
    let started = Instant::now();
    for batch in batches {
        let tx = conn.transaction().expect("begin");
        {
            let mut stmt = tx
                .prepare_cached(
                    "INSERT INTO identity_nodes (tenant_id, kind, value, person_id, source, \
                     confidence, first_seen, last_seen, signal_id) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                )
                .expect("prepare");
            for row in batch {
                stmt.execute(rusqlite::params![
                    "default",
                    row.kind.as_str(),
                    row.value,
                    row.person_id,
                    row.source,
                    row.confidence,
                    row.first_seen.as_microsecond(),
                    row.last_seen.as_microsecond(),
                    row.signal_id,
                ])
                .expect("insert");
            }
        }
        tx.commit().expect("commit");
    }
    started.elapsed()
}

fn through_store(
    runtime: &tokio::runtime::Runtime,
    batches: Vec<Vec<IdentityNodeRow>>,
    durability: Durability,
) -> Duration {
    let dir = tempfile::tempdir().expect("temp dir");
    let options = SqliteOptions {
        data_dir: dir.path().to_owned(),
        durability,
    };
    let store = SqliteStore::open(&options).expect("open");
    let tenant = TenantId::default_tenant();
    runtime.block_on(async {
        let started = Instant::now();
        for batch in batches {
            store
                .insert_identity_nodes(&tenant, batch)
                .await
                .expect("insert");
        }
        let elapsed = started.elapsed();
        store.close().await;
        elapsed
    })
}

/// Single-row transactions: where the fsync of each commit shows.
fn small_commits(runtime: &tokio::runtime::Runtime, n: usize, durability: Durability) -> Duration {
    let mut batches = rows(n);
    let singles: Vec<Vec<IdentityNodeRow>> =
        batches.drain(..).flatten().map(|row| vec![row]).collect();
    through_store(runtime, singles, durability)
}

fn rate(n: usize, elapsed: Duration) -> f64 {
    n as f64 / elapsed.as_secs_f64()
}

fn main() {
    let n: usize = std::env::var("IDGRAPH_BENCH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    println!("identity-node insert, {n} rows in transactions of {BATCH}, synchronous=FULL, WAL");
    let batches = rows(n);
    let bare = bare_loop(&batches, Durability::Full);
    let store = through_store(&runtime, batches, Durability::Full);
    let (bare_rate, store_rate) = (rate(n, bare), rate(n, store));
    println!(
        "  bare rusqlite loop : {bare_rate:>10.0} rows/s  ({:.2} s)",
        bare.as_secs_f64()
    );
    println!(
        "  idgraph store      : {store_rate:>10.0} rows/s  ({:.2} s)",
        store.as_secs_f64()
    );
    println!(
        "  store / bare time  : {:.2}x  (target <= 1.50x)",
        store.as_secs_f64() / bare.as_secs_f64()
    );

    let commits = 2_000;
    println!("durability cost, {commits} single-row commits through the store");
    for durability in [Durability::Full, Durability::Normal] {
        let elapsed = small_commits(&runtime, commits, durability);
        println!(
            "  synchronous={:<6}: {:>8.0} commits/s  ({:.1} µs/commit)",
            durability.pragma(),
            rate(commits, elapsed),
            elapsed.as_micros() as f64 / commits as f64
        );
    }
}
