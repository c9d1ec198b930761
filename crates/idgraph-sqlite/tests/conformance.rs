//! The storage conformance suite against the embedded SQLite backend, one fresh data dir a case.

use idgraph_sqlite::{Durability, SqliteOptions, SqliteStore};

async fn fresh_store() -> Option<(SqliteStore, tempfile::TempDir)> {
    let dir = tempfile::tempdir().expect("temp dir");
    let options = SqliteOptions {
        data_dir: dir.path().to_owned(),
        durability: Durability::Normal,
    };
    Some((SqliteStore::open(&options).expect("open"), dir))
}

idgraph_store::store_conformance_suite!(fresh_store());
