//! The storage conformance suite against PostgreSQL, one fresh database a case.

use std::time::Duration;

use idgraph_postgres::{PostgresOptions, PostgresStore};

async fn fresh_store() -> Option<(PostgresStore, ())> {
    let database = idgraph_testpg::test_database().await?;
    let options = PostgresOptions {
        url: database.url,
        pool_size: 4,
        connect_timeout: Duration::from_secs(10),
    };
    Some((PostgresStore::connect(&options).await.expect("connect"), ()))
}

idgraph_store::store_conformance_suite!(fresh_store());

/// The concurrent case of the suite, checked to have resolved some batches together: on this
/// store that is what it exercises.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_batches_share_transactions() {
    let Some((store, ())) = fresh_store().await else {
        return;
    };
    idgraph_store::Store::vault_slot(&store)
        .set(idgraph_store::vault::Vault::random().expect("random keys"));
    idgraph_store::testsuite::concurrent_batches_get_their_own_outcomes(&store).await;
    assert!(store.grouped_batches() > 0, "no batches were grouped");
}
