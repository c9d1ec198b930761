//! Schema invariants on PostgreSQL: tenant_id leads every primary key and index (so tables can be
//! distributed by tenant), and concurrent starts migrate exactly once.

use std::time::Duration;

use idgraph_postgres::{MIGRATIONS, PostgresOptions, PostgresStore};
use idgraph_store::{Store, StoreError};

fn options(url: &str) -> PostgresOptions {
    PostgresOptions {
        url: url.to_owned(),
        pool_size: 2,
        connect_timeout: Duration::from_secs(10),
    }
}

async fn raw(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(connection);
    client
}

/// A fresh database the store has migrated, and a plain client on it.
async fn migrated() -> Option<(idgraph_testpg::TestDatabase, tokio_postgres::Client)> {
    let db = idgraph_testpg::test_database().await?;
    PostgresStore::connect(&options(&db.url))
        .await
        .expect("connect")
        .close()
        .await;
    let client = raw(&db.url).await;
    Some((db, client))
}

#[tokio::test]
async fn tenant_id_leads_every_primary_key_and_index() {
    let Some((_db, client)) = migrated().await else {
        return;
    };
    let rows = client
        .query(
            "SELECT t.relname, i.relname, a.attname
             FROM pg_index x
             JOIN pg_class t ON t.oid = x.indrelid
             JOIN pg_class i ON i.oid = x.indexrelid
             JOIN pg_namespace n ON n.oid = t.relnamespace
             JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = x.indkey[0]
             WHERE n.nspname = 'public' AND t.relname <> 'idgraph_migrations'",
            &[],
        )
        .await
        .expect("catalog");
    assert!(
        rows.len() >= 6,
        "expected the foundation indexes, found {}",
        rows.len()
    );
    for row in rows {
        let (table, index, first): (String, String, String) = (row.get(0), row.get(1), row.get(2));
        assert_eq!(
            first, "tenant_id",
            "index {index} on {table} does not lead with tenant_id"
        );
    }
    let without_tenant = client
        .query(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = 'public' AND c.relkind = 'r' AND c.relname <> 'idgraph_migrations'
               AND NOT EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attname = 'tenant_id')",
            &[],
        )
        .await
        .expect("catalog");
    assert!(
        without_tenant.is_empty(),
        "tables without tenant_id: {:?}",
        without_tenant
            .iter()
            .map(|r| r.get::<_, String>(0))
            .collect::<Vec<_>>()
    );
}

/// Sealed landed rows are incompressible, so PostgreSQL must not try to compress them.
#[tokio::test]
async fn landed_rows_are_stored_without_compression_attempts() {
    let Some((_db, client)) = migrated().await else {
        return;
    };
    let storage: i8 = client
        .query_one(
            "SELECT a.attstorage::\"char\" FROM pg_attribute a
             JOIN pg_class t ON t.oid = a.attrelid
             WHERE t.relname = 'import_rows' AND a.attname = 'bytes'",
            &[],
        )
        .await
        .expect("query")
        .get(0);
    assert_eq!(storage as u8, b'e', "import_rows.bytes is not EXTERNAL");
}

#[tokio::test]
async fn concurrent_starts_migrate_once() {
    let Some(db) = idgraph_testpg::test_database().await else {
        return;
    };
    let options = options(&db.url);
    let (a, b, c) = tokio::join!(
        PostgresStore::connect(&options),
        PostgresStore::connect(&options),
        PostgresStore::connect(&options),
    );
    for store in [a, b, c] {
        let store = store.expect("every process starts");
        assert_eq!(
            store.schema_version().await,
            Ok(MIGRATIONS.last().expect("one").version)
        );
        store.close().await;
    }
    let count: i64 = raw(&db.url)
        .await
        .query_one("SELECT COUNT(*) FROM idgraph_migrations", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, MIGRATIONS.len() as i64);
}

#[tokio::test]
async fn a_newer_database_is_refused() {
    let Some(db) = idgraph_testpg::test_database().await else {
        return;
    };
    PostgresStore::connect(&options(&db.url))
        .await
        .expect("connect")
        .close()
        .await;
    raw(&db.url)
        .await
        .execute(
            "INSERT INTO idgraph_migrations (version, name, checksum) VALUES (999, 'future', 'x')",
            &[],
        )
        .await
        .unwrap();
    let err = PostgresStore::connect(&options(&db.url)).await.unwrap_err();
    assert!(
        matches!(&err, StoreError::Unusable(m) if m.contains("newer idgraph")),
        "{err}"
    );
}

#[tokio::test]
async fn an_unreachable_server_is_named_without_the_password() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("postgres://idgraph:hunter2@127.0.0.1:{port}/idgraph");
    let err = PostgresStore::connect(&options(&url))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&format!(
            "cannot connect to PostgreSQL at 127.0.0.1:{port}/idgraph"
        )),
        "{err}"
    );
    assert!(!err.contains("hunter2"), "{err}");
    let err = PostgresStore::connect(&options("postgres://u:hunter2@127.0.0.1:notaport/x"))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("malformed database URL") && !err.contains("hunter2"),
        "{err}"
    );
}
