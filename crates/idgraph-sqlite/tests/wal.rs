//! The WAL stays short while the writer commits back to back, as a bulk import does, and
//! readers keep reading, on new stores and on stores made with larger pages. A checkpointer
//! thread copies the log back, and the writer starts it over once it is long (decision 0019);
//! a checkpointer alone, tried once, never let the log start over under such a load: it grew
//! by everything written.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use idgraph_sqlite::{
    DATABASE_FILE, Durability, SqliteOptions, SqliteStore, WAL_RESTART_BYTES, map_error,
};
use idgraph_store::Store;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wal_stays_short_under_back_to_back_commits() {
    let dir = tempfile::tempdir().unwrap();
    let longest = longest_wal_under_bulk_writes(dir.path()).await;
    // Whatever the page size: the log starts over from WAL_RESTART_BYTES on, or at twice that
    // while the checkpointer copies; one commit may overshoot (decision 0019).
    let bound = WAL_BOUND;
    assert!(
        longest < bound,
        "the WAL grew to {longest} bytes (bound {bound})"
    );
    assert_eq!(page_size(dir.path()), 4096, "a new store's page size");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_made_with_large_pages_keeps_them_and_a_short_wal() {
    let dir = tempfile::tempdir().unwrap();
    {
        // A store given 32 KiB pages by hand (decision 0017 measured them), tables already
        // there: the checkpoint window is in bytes, so its WAL keeps the same bound.
        let conn = rusqlite::Connection::open(dir.path().join(DATABASE_FILE)).unwrap();
        conn.pragma_update(None, "page_size", 32 * 1024).unwrap();
        conn.pragma_update(None, "journal_mode", "WAL").unwrap();
        conn.execute_batch("CREATE TABLE bulk (tenant_id TEXT NOT NULL, bytes BLOB NOT NULL)")
            .unwrap();
    }
    let longest = longest_wal_under_bulk_writes(dir.path()).await;
    let bound = WAL_BOUND;
    assert!(
        longest < bound,
        "the WAL grew to {longest} bytes (bound {bound})"
    );
    assert_eq!(
        page_size(dir.path()),
        32 * 1024,
        "an existing store's page size"
    );
}

/// Bytes the tests write, one megabyte per commit: the log must start over twice to stay
/// within the bound.
const BULK_BYTES: u64 = 4 * WAL_RESTART_BYTES as u64;

/// The longest the WAL may get: twice the restart length, one commit and its frame headers.
const WAL_BOUND: u64 = 2 * WAL_RESTART_BYTES as u64 + (4 << 20);

/// Writes `BULK_BYTES` into a `bulk` table while a reader keeps reading, and returns the
/// longest the WAL was seen after a commit.
async fn longest_wal_under_bulk_writes(dir: &Path) -> u64 {
    let store = SqliteStore::open(&SqliteOptions {
        data_dir: dir.to_owned(),
        durability: Durability::Normal,
    })
    .expect("open the store");
    store
        .write(|tx| {
            tx.execute_batch(
                "CREATE TABLE IF NOT EXISTS bulk (tenant_id TEXT NOT NULL, bytes BLOB NOT NULL)",
            )
            .map_err(map_error)
        })
        .await
        .expect("create the bulk table");
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (store, stop) = (store.clone(), Arc::clone(&stop));
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                store
                    .read(|conn| {
                        conn.query_row("SELECT COUNT(*) FROM bulk", [], |r| r.get::<_, i64>(0))
                            .map_err(map_error)
                    })
                    .await
                    .expect("read while the writer commits");
            }
        })
    };
    let wal = dir.join(format!("{DATABASE_FILE}-wal"));
    let mut longest = 0;
    let block = vec![7u8; 1 << 20];
    for _ in 0..BULK_BYTES / (1 << 20) {
        let bytes = block.clone();
        store
            .write(move |tx| {
                tx.execute("INSERT INTO bulk VALUES ('t', ?1)", [bytes])
                    .map(|_| ())
                    .map_err(map_error)
            })
            .await
            .expect("commit a megabyte");
        longest = longest.max(std::fs::metadata(&wal).map_or(0, |m| m.len()));
    }
    stop.store(true, Ordering::Relaxed);
    reader.await.expect("the reader ends");
    store.close().await;
    longest
}

fn page_size(dir: &Path) -> i64 {
    let conn = rusqlite::Connection::open(dir.join(DATABASE_FILE)).expect("open the database");
    conn.pragma_query_value(None, "page_size", |row| row.get(0))
        .expect("read the page size")
}
