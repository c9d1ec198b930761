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
