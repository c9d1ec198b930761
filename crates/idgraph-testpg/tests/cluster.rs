//! The throwaway cluster really starts here, and hands out isolated, loopback-only databases.

use idgraph_testpg::{TestDatabase, test_database, test_database_blocking};
use tokio_postgres::{Client, NoTls};

async fn connect(db: &TestDatabase) -> Client {
    let (client, connection) = tokio_postgres::connect(&db.url, NoTls)
        .await
        .expect("connect to the test database");
    tokio::spawn(connection);
    client
}

async fn has_table(client: &Client, table: &str) -> bool {
    let sql = "SELECT 1 FROM pg_tables WHERE schemaname = 'public' AND tablename = $1";
    let rows = client.query(sql, &[&table]).await.expect("query pg_tables");
    !rows.is_empty()
}

#[tokio::test]
async fn each_call_gets_its_own_database() {
    let Some(a) = test_database().await else {
        return;
    };
    let Some(b) = test_database().await else {
        return;
    };
    assert_ne!(a.name, b.name);
    let config: tokio_postgres::Config = a.url.parse().unwrap();
    assert_eq!(config.get_dbname(), Some(a.name.as_str()), "{}", a.url);

    let (ca, cb) = (connect(&a).await, connect(&b).await);
    let current: String = ca
        .query_one("SELECT current_database()", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(current, a.name);

    ca.batch_execute("CREATE TABLE only_in_a (id int)")
        .await
        .unwrap();
    assert!(has_table(&ca, "only_in_a").await);
    assert!(!has_table(&cb, "only_in_a").await);
}

#[tokio::test]
async fn url_points_at_loopback() {
    let Some(db) = test_database().await else {
        return;
    };
    // An explicitly configured external server is the user's choice, not ours to check.
    if std::env::var_os("IDGRAPH_TEST_DATABASE_URL").is_some() {
        return;
    }
    let config: tokio_postgres::Config = db.url.parse().unwrap();
    assert_eq!(
        config.get_hosts(),
        &[tokio_postgres::config::Host::Tcp("127.0.0.1".into())]
    );
    let client = connect(&db).await;
    let addr: Option<String> = client
        .query_one("SELECT host(inet_server_addr())", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(addr.as_deref(), Some("127.0.0.1"));
}

#[test]
fn blocking_variant_works_outside_a_runtime() {
    let Some(db) = test_database_blocking() else {
        return;
    };
    assert!(db.name.starts_with("idgraph_test_"), "{}", db.name);
}
