//! Schema invariants of the embedded store: tenant_id leads every key and index, migrations are
//! recorded once, and a database from a newer idgraph is refused untouched.

use idgraph_sqlite::{
    DATABASE_FILE, Durability, LANDED_FILE, MIGRATIONS, SqliteOptions, SqliteStore,
};
use idgraph_store::{Store, StoreError};

fn options(dir: &tempfile::TempDir) -> SqliteOptions {
    SqliteOptions {
        data_dir: dir.path().to_owned(),
        durability: Durability::Full,
    }
}

async fn create_and_close(dir: &tempfile::TempDir) {
    let store = SqliteStore::open(&options(dir)).expect("open");
    store.close().await;
}

/// A store in `dir` with `tenant` created.
async fn open_with_tenant(
    dir: &tempfile::TempDir,
    tenant: &idgraph_core::tenancy::TenantId,
) -> SqliteStore {
    let store = SqliteStore::open(&options(dir)).expect("open");
    store
        .create_tenant(&idgraph_store::Tenant {
            id: tenant.clone(),
            name: "Upgrade".into(),
            created_at: jiff::Timestamp::from_second(1_800_000_000).expect("in range"),
        })
        .await
        .expect("tenant");
    store
}

/// A store in `dir` whose `tenant` has import `job-1` with `rows` landed, closed again.
async fn landed_and_closed(
    dir: &tempfile::TempDir,
    tenant: &idgraph_core::tenancy::TenantId,
    rows: Vec<idgraph_store::LandedRow>,
) {
    let store = open_with_tenant(dir, tenant).await;
    store
        .create_import(tenant, &idgraph_store::testsuite::new_job("job-1"))
        .await
        .expect("import");
    let at = jiff::Timestamp::from_second(1_800_000_000).expect("in range");
    store
        .land_import_rows(tenant, "job-1", rows, at)
        .await
        .expect("landed");
    store.close().await;
}

fn raw(dir: &tempfile::TempDir) -> rusqlite::Connection {
    rusqlite::Connection::open(dir.path().join(DATABASE_FILE)).expect("open raw")
}

#[tokio::test]
async fn tenant_id_leads_every_key_and_index() {
    let dir = tempfile::tempdir().unwrap();
    create_and_close(&dir).await;
    for file in [DATABASE_FILE, LANDED_FILE] {
        tenant_id_leads_every_key_and_index_of(
            &rusqlite::Connection::open(dir.path().join(file)).expect("open raw"),
        );
    }
}

fn tenant_id_leads_every_key_and_index_of(conn: &rusqlite::Connection) {
    let tables: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%' AND name != 'idgraph_migrations'")
        .expect("schema query")
        .query_map([], |r| r.get(0))
        .expect("schema query")
        .collect::<Result<_, _>>()
        .expect("schema query");
    assert!(!tables.is_empty(), "{tables:?}");
    for table in &tables {
        // pragma table_info: (cid, name, type, notnull, default, pk); pk = position in the key.
        let key: Vec<(String, i64)> = conn
            .prepare(&format!(
                "SELECT name, pk FROM pragma_table_info('{table}') WHERE pk > 0 ORDER BY pk"
            ))
            .expect("schema query")
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .expect("schema query")
            .collect::<Result<_, _>>()
            .expect("schema query");
        assert_eq!(
            key.first().map(|k| k.0.as_str()),
            Some("tenant_id"),
            "primary key of {table}: {key:?}"
        );
        let indexes: Vec<String> = conn
            .prepare(&format!("SELECT name FROM pragma_index_list('{table}')"))
            .expect("schema query")
            .query_map([], |r| r.get(0))
            .expect("schema query")
            .collect::<Result<_, _>>()
            .expect("schema query");
        for index in indexes {
            let first: String = conn
                .query_row(
                    &format!("SELECT name FROM pragma_index_info('{index}') WHERE seqno = 0"),
                    [],
                    |r| r.get(0),
                )
                .expect("schema query");
            assert_eq!(first, "tenant_id", "index {index} on {table}");
        }
    }
}

#[tokio::test]
async fn migrations_are_recorded_once_and_reopening_is_a_no_op() {
    let dir = tempfile::tempdir().unwrap();
    create_and_close(&dir).await;
    create_and_close(&dir).await;
    let count: i64 = raw(&dir)
        .query_row("SELECT COUNT(*) FROM idgraph_migrations", [], |r| r.get(0))
        .unwrap();
    assert_eq!(count, MIGRATIONS.len() as i64);
    let store = SqliteStore::open(&options(&dir)).unwrap();
    assert_eq!(
        store.schema_version().await,
        Ok(MIGRATIONS.last().unwrap().version)
    );
    store.close().await;
    // A clean close folds the WALs back: the data dir is its two database files.
    assert!(!dir.path().join("idgraph.db-wal").exists());
    assert!(!dir.path().join("landed.db-wal").exists());
}

#[tokio::test]
async fn a_newer_database_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    create_and_close(&dir).await;
    raw(&dir)
        .execute(
            "INSERT INTO idgraph_migrations VALUES (999, 'from the future', 'x', 0)",
            [],
        )
        .unwrap();
    let err = SqliteStore::open(&options(&dir)).unwrap_err();
    assert!(
        matches!(&err, StoreError::Unusable(m) if m.contains("schema version 999") && m.contains("upgrade idgraph")),
        "{err}"
    );
    let still_there: i64 = raw(&dir)
        .query_row(
            "SELECT COUNT(*) FROM idgraph_migrations WHERE version = 999",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(still_there, 1);
}

#[tokio::test]
async fn an_edited_migration_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    create_and_close(&dir).await;
    raw(&dir)
        .execute(
            "UPDATE idgraph_migrations SET checksum = 'edited' WHERE version = 1",
            [],
        )
        .unwrap();
    let err = SqliteStore::open(&options(&dir)).unwrap_err();
    assert!(err.to_string().contains("differs"), "{err}");
}

#[tokio::test]
async fn a_second_process_on_the_same_data_dir_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let first = SqliteStore::open(&options(&dir)).unwrap();
    let err = SqliteStore::open(&options(&dir)).unwrap_err();
    assert!(
        err.to_string()
            .contains("in use by another idgraph process"),
        "{err}"
    );
    first.close().await;
    SqliteStore::open(&options(&dir))
        .expect("free again after close")
        .close()
        .await;
}

#[tokio::test]
async fn an_unusable_data_dir_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"not a directory").unwrap();
    let err = SqliteStore::open(&SqliteOptions {
        data_dir: file.clone(),
        durability: Durability::Full,
    })
    .unwrap_err();
    assert!(
        err.to_string().contains(&file.display().to_string()),
        "{err}"
    );
}

/// Every secondary index is used for what it was made for: an equality on its leading columns
/// past the tenant. The store's connections run with the query planner stability guarantee,
/// under which SQLite, left to guess, read a whole tenant's primary-key range for
/// `WHERE tenant_id = ? AND person_id = ?` whenever the selected columns were not all in the
/// index (every timeline page, profile and merge look-up). The statistics the store installs
/// make it use the index. An index may lose only to another index at least as selective.
#[tokio::test]
async fn the_planner_uses_each_secondary_index() {
    let dir = tempfile::tempdir().unwrap();
    create_and_close(&dir).await;
    let conn = raw(&dir);
    let indexes: Vec<(String, String)> = conn
        .prepare(
            "SELECT name, tbl_name FROM sqlite_schema
             WHERE type = 'index' AND name NOT LIKE 'sqlite_autoindex%'",
        )
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert!(indexes.len() >= 10, "{indexes:?}");
    // As the store's own connections plan.
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
        true,
    )
    .unwrap();
    for (index, table) in &indexes {
        let columns: Vec<String> = conn
            .prepare("SELECT name FROM pragma_index_info(?1) ORDER BY seqno")
            .unwrap()
            .query_map([index], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let keyed = columns.len().min(2);
        let filter: Vec<String> = columns[..keyed]
            .iter()
            .map(|c| format!("{c} = ?"))
            .collect();
        let query = format!("SELECT * FROM {table} WHERE {}", filter.join(" AND "));
        let plan: Vec<String> = conn
            .prepare(&format!("EXPLAIN QUERY PLAN {query}"))
            .unwrap()
            .query_map(rusqlite::params_from_iter(vec![1; keyed]), |r| r.get(3))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let plan = plan.join("; ");
        assert!(
            !plan.contains("PRIMARY KEY (tenant_id=?)") && !plan.contains("SCAN"),
            "{query} reads a whole tenant instead of {index}: {plan}"
        );
    }
}

/// A store made before identity_values (schema 9) keeps every node's sealed value: the
/// migration moves each to identity_values and points the node at it, per tenant, and leaves
/// plain nodes plain.
#[tokio::test]
async fn sealed_identifier_values_move_to_their_own_table() {
    let dir = tempfile::tempdir().unwrap();
    {
        let conn = raw(&dir);
        conn.execute_batch(
            "CREATE TABLE idgraph_migrations (version INTEGER NOT NULL PRIMARY KEY, name TEXT NOT NULL,
                                              checksum TEXT NOT NULL, applied_at INTEGER NOT NULL)",
        )
        .unwrap();
        let before = MIGRATIONS
            .iter()
            .take_while(|m| m.name != "identity_values");
        for migration in before {
            conn.execute_batch(migration.sql).unwrap();
            conn.execute(
                "INSERT INTO idgraph_migrations VALUES (?1, ?2, ?3, 0)",
                rusqlite::params![migration.version, migration.name, migration.checksum()],
            )
            .unwrap();
        }
        let mut insert = conn
            .prepare(
                "INSERT INTO identity_nodes (tenant_id, kind, value, person_id, source, confidence,
                                             first_seen, last_seen, signal_id, value_sealed)
                 VALUES (?1, ?2, ?3, ?4, 'test', 1.0, ?5, ?5, NULL, ?6)",
            )
            .unwrap();
        // (tenant, kind, lookup value, person, first seen, sealed value)
        let nodes = [
            ("t1", "email", "idx-a", "p1", 3, Some("~1.1.sealed-a")),
            ("t1", "phone", "idx-b", "p1", 1, Some("~1.1.sealed-b")),
            ("t1", "phone", "idx-b", "p2", 2, Some("~1.1.sealed-b2")),
            (
                "t2",
                "email",
                "idx-a",
                "p9",
                1,
                Some("~1.2.sealed-other-tenant"),
            ),
            ("t2", "anonymous_id", "plain-anon", "p9", 1, None),
        ];
        for (tenant, kind, value, person, seen, sealed) in nodes {
            insert
                .execute(rusqlite::params![tenant, kind, value, person, seen, sealed])
                .unwrap();
        }
    }
    create_and_close(&dir).await;

    let conn = raw(&dir);
    // Migration 13 then gives every node a row of identity_values, with its provenance.
    type Read = (String, String, String, Option<String>, String, i64);
    let read: Vec<Read> = conn
        .prepare(
            "SELECT n.tenant_id, n.value, n.person_id, v.sealed, v.source, v.first_seen
             FROM identity_nodes n
             JOIN identity_values v ON v.tenant_id = n.tenant_id AND v.value_id = n.value_id
             ORDER BY n.tenant_id, n.kind, n.value, n.person_id",
        )
        .unwrap()
        .query_map([], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
            ))
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let owned = |t: &str, v: &str, p: &str, s: Option<&str>, seen: i64| {
        (
            t.to_owned(),
            v.to_owned(),
            p.to_owned(),
            s.map(str::to_owned),
            "test".to_owned(),
            seen,
        )
    };
    assert_eq!(
        read,
        vec![
            owned("t1", "idx-a", "p1", Some("~1.1.sealed-a"), 3),
            owned("t1", "idx-b", "p1", Some("~1.1.sealed-b"), 1),
            owned("t1", "idx-b", "p2", Some("~1.1.sealed-b2"), 2),
            owned("t2", "plain-anon", "p9", None, 1),
            owned("t2", "idx-a", "p9", Some("~1.2.sealed-other-tenant"), 1),
        ]
    );
    let (values, sealed): (i64, i64) = conn
        .query_row(
            "SELECT COUNT(*), COUNT(sealed) FROM identity_values",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(
        (values, sealed),
        (5, 4),
        "one value per node, sealed when it was"
    );
    let old_column: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM pragma_table_info('identity_nodes') WHERE name = 'value_sealed'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(old_column, 0, "the sealed copy no longer widens the nodes");
}

/// The same move on values a vault really sealed: nodes written by the store are put back in
/// the schema-9 layout (the sealed value in the node's row), and the store that opens the file
/// migrates them and gives each node its own value back.
#[tokio::test]
async fn sealed_nodes_of_a_schema_9_store_open_after_the_migration() {
    use idgraph_core::identity::IdentifierKind;
    use idgraph_core::tenancy::TenantId;
    use idgraph_store::IdentityNodeRow;
    use idgraph_store::vault::Vault;

    let dir = tempfile::tempdir().unwrap();
    let vault = Vault::random().unwrap();
    let tenant = TenantId::parse("upgrade").unwrap();
    let at = jiff::Timestamp::from_second(1_800_000_000).unwrap();
    let node = |kind: &str, value: &str, person: &str| IdentityNodeRow {
        kind: IdentifierKind::parse(kind).unwrap(),
        value: value.to_owned(),
        person_id: person.to_owned(),
        source: "test".to_owned(),
        confidence: 1.0,
        first_seen: at,
        last_seen: at,
        signal_id: Some(format!("sig-{value}-{person}")),
    };
    let rows = vec![
        node("email", "ann@example.com", "p1"),
        node("email", "ann.work@example.com", "p1"),
        node("phone", "+14155550000", "p1"),
        node("phone", "+14155550000", "p2"),
        node("external_id", "u-2", "p2"),
    ];
    {
        let store = open_with_tenant(&dir, &tenant).await;
        store.vault_slot().set(vault.clone());
        store
            .insert_identity_nodes(&tenant, rows.clone())
            .await
            .unwrap();
        store.close().await;
    }
    raw(&dir)
        .execute_batch(
            "CREATE TABLE nodes_9 AS
                 SELECT n.tenant_id, n.kind, n.value, n.person_id, v.source, v.confidence,
                        v.first_seen, n.last_seen, v.signal_id, v.sealed AS value_sealed
                 FROM identity_nodes n
                 JOIN identity_values v ON v.tenant_id = n.tenant_id AND v.value_id = n.value_id;
             DROP INDEX identity_nodes_by_person;
             DROP TABLE identity_nodes;
             DROP TABLE identity_values;
             CREATE TABLE identity_nodes (
                 tenant_id TEXT NOT NULL, kind TEXT NOT NULL, value TEXT NOT NULL,
                 person_id TEXT NOT NULL, source TEXT NOT NULL, confidence REAL NOT NULL,
                 first_seen INTEGER NOT NULL, last_seen INTEGER NOT NULL, signal_id TEXT,
                 value_sealed TEXT,
                 PRIMARY KEY (tenant_id, kind, value, person_id)) WITHOUT ROWID;
             INSERT INTO identity_nodes SELECT * FROM nodes_9;
             DROP TABLE nodes_9;
             CREATE INDEX identity_nodes_by_person ON identity_nodes (tenant_id, person_id);
             DELETE FROM idgraph_migrations WHERE name IN ('identity_values', 'slim_identity_nodes');",
        )
        .unwrap();

    let store = SqliteStore::open(&options(&dir)).unwrap();
    store.vault_slot().set(vault);
    for row in &rows {
        let mut found = store
            .find_identity_nodes(&tenant, &row.kind, &row.value)
            .await
            .unwrap();
        found.retain(|n| n.person_id == row.person_id);
        assert_eq!(found, vec![row.clone()]);
    }
    store.close().await;
    let values: i64 = raw(&dir)
        .query_row("SELECT COUNT(*) FROM identity_values", [], |r| r.get(0))
        .unwrap();
    assert_eq!(values, rows.len() as i64);
}

/// A store made before trait_sets (schema 10) holds a row per trait observation, each value
/// sealed by itself: the migration gathers each signal's rows into one set, a profile reads the
/// same traits from it, and a re-seal rewrites each moved set whole under the current key.
#[tokio::test]
async fn trait_values_of_a_schema_10_store_read_back_from_their_sets() {
    use idgraph_core::identity::IdentitySettings;
    use idgraph_core::tenancy::{TenantId, WorkspaceName};
    use idgraph_core::traits::{Provenance, SourceClass};
    use idgraph_store::trait_set::{self, SetForm};
    use idgraph_store::vault::{Vault, column};
    use idgraph_store::{EventRow, IngestOutcome, SignalRecord, Tenant, TraitObservation};

    let dir = tempfile::tempdir().unwrap();
    let vault = Vault::random().unwrap();
    let at = |s: i64| jiff::Timestamp::from_second(1_800_000_000 + s).unwrap();
    let settings = IdentitySettings::default();
    let observe = |name: &str, value: &str, s: i64| TraitObservation {
        name: name.to_owned(),
        value: value.to_owned(),
        provenance: Provenance {
            class: SourceClass::Import,
            confidence: 0.5 + s as f64 / 10.0,
            observed_at: at(s),
        },
        set_once: s % 2 == 0,
    };
    let signal =
        |n: i64, workspace: &str, email: &str, traits: Vec<TraitObservation>| SignalRecord {
            event: EventRow {
                event_id: format!("sig{n}"),
                workspace: WorkspaceName::parse(workspace).unwrap(),
                kind: "identify".into(),
                name: None,
                occurred_at: at(n),
                ingested_at: at(n),
                schema_version: 1,
                message_id: format!("m{n}"),
                properties: "{}".into(),
                context: "{}".into(),
            },
            identifiers: vec![settings.normalize("email", email).unwrap()],
            traits,
            source: "test".into(),
        };
    let tenants = [
        TenantId::parse("upgrade-a").unwrap(),
        TenantId::parse("upgrade-b").unwrap(),
    ];
    // Written without a key, so that the sets can be taken apart again below.
    let mut people = Vec::new();
    {
        let store = SqliteStore::open(&options(&dir)).unwrap();
        for (t, tenant) in tenants.iter().enumerate() {
            store
                .create_tenant(&Tenant {
                    id: tenant.clone(),
                    name: "Upgrade".into(),
                    created_at: at(0),
                })
                .await
                .unwrap();
            let signals = vec![
                signal(
                    1,
                    "default",
                    "ann@example.com",
                    vec![
                        observe("first_name", "\"Ann\"", 1),
                        observe("city", &format!("\"Lyon {t}\""), 2),
                        observe("first_name", "\"Anne\"", 3),
                    ],
                ),
                signal(
                    2,
                    "default",
                    "ann@example.com",
                    vec![observe("plan", "{\"tier\":\"pro\"}", 4)],
                ),
                signal(
                    3,
                    "shop",
                    "ann@example.com",
                    vec![observe("plan", "\"free\"", 5)],
                ),
                signal(
                    4,
                    "default",
                    "bob@example.com",
                    vec![observe("zip", "\"69001\"", 6)],
                ),
                signal(5, "default", "bob@example.com", Vec::new()),
            ];
            for outcome in store.ingest(tenant, &settings, signals).await.unwrap() {
                let IngestOutcome::Recorded { person_id, .. } = outcome else {
                    panic!("recorded: {outcome:?}");
                };
                if !people.contains(&(tenant.clone(), person_id.clone())) {
                    people.push((tenant.clone(), person_id));
                }
            }
        }
        store.close().await;
    }
    assert_eq!(people.len(), 4);
    let profiles = |store: &SqliteStore| {
        let people = people.clone();
        let store = store.clone();
        async move {
            let mut traits = Vec::new();
            for (tenant, person) in &people {
                traits.push(store.person_profile(tenant, person).await.unwrap().traits);
            }
            traits
        }
    };
    let expected = {
        let store = SqliteStore::open(&options(&dir)).unwrap();
        let traits = profiles(&store).await;
        store.close().await;
        traits
    };
    assert_eq!(
        expected.iter().map(Vec::len).collect::<Vec<_>>(),
        [4, 1, 4, 1],
        "the second first_name is not kept: {expected:?}"
    );

    // Back to the schema-10 layout: a row per observation, each value sealed by itself.
    {
        let conn = raw(&dir);
        conn.execute_batch(
            "CREATE TABLE trait_values (
                tenant_id TEXT NOT NULL, person_id TEXT NOT NULL, workspace TEXT NOT NULL,
                name TEXT NOT NULL, value TEXT NOT NULL, source_class TEXT NOT NULL,
                confidence REAL NOT NULL, observed_at INTEGER NOT NULL, set_once INTEGER NOT NULL,
                signal_id TEXT NOT NULL,
                PRIMARY KEY (tenant_id, person_id, workspace, name, signal_id)
            ) WITHOUT ROWID",
        )
        .unwrap();
        let sets: Vec<(String, String, String, String, Vec<u8>)> = conn
            .prepare(
                "SELECT tenant_id, person_id, workspace, signal_id, observations FROM trait_sets",
            )
            .unwrap()
            .query_map([], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
            })
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(sets.len(), 8, "a set per signal that observed traits");
        for (tenant, person, workspace, signal, plain) in sets {
            for o in trait_set::decode_compact(&plain).unwrap() {
                conn.execute(
                    "INSERT INTO trait_values VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                    rusqlite::params![
                        tenant,
                        person,
                        workspace,
                        o.name,
                        vault.seal(&tenant, column::TRAIT, &o.value).unwrap(),
                        o.provenance.class.as_str(),
                        o.provenance.confidence,
                        o.provenance.observed_at.as_microsecond(),
                        o.set_once,
                        signal
                    ],
                )
                .unwrap();
            }
        }
        conn.execute_batch(
            "DROP TABLE trait_sets; DELETE FROM idgraph_migrations WHERE name = 'trait_sets';",
        )
        .unwrap();
    }

    let store = SqliteStore::open(&options(&dir)).unwrap();
    store.vault_slot().set(vault.clone());
    assert_eq!(profiles(&store).await, expected, "read from the moved sets");
    for tenant in &tenants {
        while store.reseal(tenant, 3).await.unwrap() > 0 {}
    }
    assert_eq!(
        profiles(&store).await,
        expected,
        "read from the re-sealed sets"
    );
    store.close().await;
    let conn = raw(&dir);
    let forms: Vec<(i64, i64, bool)> = conn
        .prepare("SELECT form, observed, instr(observations, '[') = 1 FROM trait_sets ORDER BY tenant_id, signal_id")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let compact = SetForm::Compact.code();
    assert_eq!(
        forms,
        [2, 1, 1, 1, 2, 1, 1, 1].map(|n| (compact, n, false)),
        "every set sealed compact, counting its observations"
    );
    let old_table: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM sqlite_schema WHERE name = 'trait_values'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(old_table, 0);
}

/// A store made before the landed-rows file (schema 11) keeps landed rows in its main file:
/// opening it moves them, readable as before, and leaves none behind.
#[tokio::test]
async fn landed_rows_of_a_schema_11_store_move_to_their_own_file() {
    use idgraph_core::tenancy::TenantId;
    use idgraph_store::LandedRow;

    let dir = tempfile::tempdir().unwrap();
    let tenant = TenantId::parse("upgrade").unwrap();
    let rows: Vec<LandedRow> = (1..=3)
        .map(|row| LandedRow {
            row,
            bytes: format!("ann,row {row}").into_bytes(),
            defect: (row == 2).then(|| "ragged".to_owned()),
        })
        .collect();
    landed_and_closed(&dir, &tenant, rows.clone()).await;
    // Back to the schema-11 layout: the rows in the main file, no landed-rows file.
    {
        let conn = raw(&dir);
        conn.execute_batch(&format!(
            "CREATE TABLE import_rows (
                tenant_id TEXT NOT NULL, job_id TEXT NOT NULL, row_no INTEGER NOT NULL,
                bytes BLOB NOT NULL, defect TEXT, PRIMARY KEY (tenant_id, job_id, row_no));
             ATTACH DATABASE '{}' AS landed;
             INSERT INTO import_rows SELECT * FROM landed.import_rows;
             DETACH DATABASE landed;
             DELETE FROM idgraph_migrations WHERE name = 'landed_rows_file';",
            dir.path().join(LANDED_FILE).display()
        ))
        .unwrap();
    }
    std::fs::remove_file(dir.path().join(LANDED_FILE)).unwrap();

    let store = SqliteStore::open(&options(&dir)).unwrap();
    assert_eq!(
        store.landed_rows(&tenant, "job-1", 0, 10).await.unwrap(),
        rows
    );
    store.close().await;
    let left: i64 = raw(&dir)
        .query_row(
            "SELECT COUNT(*) FROM sqlite_schema WHERE name LIKE 'import_rows%'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(left, 0, "the main file keeps no landed rows");
}

/// The landed-rows file keeps a rollback journal, not a WAL (decision 0025): a file an earlier
/// version left in WAL mode is converted when the store opens, with its rows, and landing
/// more leaves no WAL beside it while the store is open.
#[tokio::test]
async fn the_landed_rows_file_is_written_without_a_wal() {
    use idgraph_core::tenancy::TenantId;
    use idgraph_store::LandedRow;

    let dir = tempfile::tempdir().unwrap();
    let tenant = TenantId::parse("landing").unwrap();
    let at = jiff::Timestamp::from_second(1_800_000_000).unwrap();
    let rows = |from: u64, to: u64| -> Vec<LandedRow> {
        (from..=to)
            .map(|row| LandedRow {
                row,
                bytes: format!("ann,row {row}").into_bytes(),
                defect: None,
            })
            .collect()
    };
    landed_and_closed(&dir, &tenant, rows(1, 3)).await;
    let landed = dir.path().join(LANDED_FILE);
    let wal = dir.path().join(format!("{LANDED_FILE}-wal"));
    let mode = |conn: &rusqlite::Connection| -> String {
        conn.query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap()
    };
    {
        // As an earlier version left it: in WAL mode, which is kept in the file.
        let conn = rusqlite::Connection::open(&landed).unwrap();
        conn.execute_batch("PRAGMA journal_mode = WAL").unwrap();
        assert_eq!(mode(&conn), "wal");
    }

    let store = SqliteStore::open(&options(&dir)).unwrap();
    store
        .land_import_rows(&tenant, "job-1", rows(4, 6), at)
        .await
        .unwrap();
    assert!(!wal.exists(), "no WAL beside the landed-rows file");
    assert_eq!(
        store.landed_rows(&tenant, "job-1", 0, 10).await.unwrap(),
        rows(1, 6)
    );
    store.close().await;
    let conn = rusqlite::Connection::open(&landed).unwrap();
    assert_ne!(mode(&conn), "wal", "converted for good");
}

/// Trait sets are a rowid table (decision 0029): a new set lands on the table's last page, and
/// only its key goes into the middle of an index, however old its person.
#[tokio::test]
async fn trait_sets_are_appended_in_rowid_order() {
    let dir = tempfile::tempdir().unwrap();
    create_and_close(&dir).await;
    let without_rowid: bool = raw(&dir)
        .query_row(
            "SELECT wr FROM pragma_table_list WHERE schema = 'main' AND name = 'trait_sets'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(!without_rowid, "trait_sets is keyed by person again");
}
