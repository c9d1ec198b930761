//! The WAL stays short while the writer commits back to back, as a bulk import does, and
//! readers keep reading. (A checkpointer thread of its own, tried once, never let the log start
//! over under such a load: it grew by everything written.)

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use idgraph_sqlite::{Durability, SqliteOptions, SqliteStore, map_error};
use idgraph_store::Store;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wal_stays_short_under_back_to_back_commits() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&SqliteOptions {
        data_dir: dir.path().to_owned(),
        durability: Durability::Normal,
    })
    .unwrap();
    store
        .write(|tx| {
            tx.execute_batch("CREATE TABLE bulk (tenant_id TEXT NOT NULL, bytes BLOB NOT NULL)")
                .map_err(map_error)
        })
        .await
        .unwrap();
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
                    .unwrap();
            }
        })
    };
    let wal = dir.path().join("idgraph.db-wal");
    // 64 MB: the writer checkpoints every 10,000 pages (~40 MB, decision 0015).
    let bound: u64 = 64 << 20;
    let mut longest = 0;
    let block = vec![7u8; 1 << 20];
    // Three times the bound, one megabyte per commit.
    for _ in 0..3 * bound / (1 << 20) {
        let bytes = block.clone();
        store
            .write(move |tx| {
                tx.execute("INSERT INTO bulk VALUES ('t', ?1)", [bytes])
                    .map(|_| ())
                    .map_err(map_error)
            })
            .await
            .unwrap();
        longest = longest.max(std::fs::metadata(&wal).map_or(0, |m| m.len()));
    }
    stop.store(true, Ordering::Relaxed);
    reader.await.unwrap();
    store.close().await;
    assert!(
        longest < bound,
        "the WAL grew to {longest} bytes (bound {bound})"
    );
}
