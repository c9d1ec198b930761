//! The PostgreSQL backend: a connection pool, migrations under an advisory lock, and the `Store`
//! implementation. Many idgraph processes may share one database.

mod batch;
mod codec;
mod compliance;
mod deletion;
mod group;
mod idempotency;
mod imports;
mod merges;
mod queries;
mod reads;
mod reseal;
mod resolve;
mod webhooks;

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use idgraph_store::{AppliedMigration, Migration, StoreError, StoreResult, plan_migrations};
use tokio_postgres::NoTls;

pub use codec::map_error;

/// The schema, in order. Append new files; never edit a released one.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "foundation",
        sql: include_str!("../migrations/0001_foundation.sql"),
    },
    Migration {
        version: 2,
        name: "resolution",
        sql: include_str!("../migrations/0002_resolution.sql"),
    },
    Migration {
        version: 3,
        name: "compliance",
        sql: include_str!("../migrations/0003_compliance.sql"),
    },
    Migration {
        version: 4,
        name: "platform",
        sql: include_str!("../migrations/0004_platform.sql"),
    },
    Migration {
        version: 5,
        name: "imports",
        sql: include_str!("../migrations/0005_imports.sql"),
    },
    Migration {
        version: 6,
        name: "webhooks",
        sql: include_str!("../migrations/0006_webhooks.sql"),
    },
    Migration {
        version: 7,
        name: "deletion",
        sql: include_str!("../migrations/0007_deletion.sql"),
    },
    Migration {
        version: 8,
        name: "pii_at_rest",
        sql: include_str!("../migrations/0008_pii_at_rest.sql"),
    },
    Migration {
        version: 9,
        name: "sealed_compliance",
        sql: include_str!("../migrations/0009_sealed_compliance.sql"),
    },
    Migration {
        version: 10,
        name: "import_rows_external",
        sql: include_str!("../migrations/0010_import_rows_external.sql"),
    },
];

/// Serializes migrations across processes starting at the same time.
const MIGRATION_LOCK: i64 = 0x1d6a_0001;

/// How to reach PostgreSQL.
#[derive(Clone)]
pub struct PostgresOptions {
    pub url: String,
    pub pool_size: usize,
    pub connect_timeout: Duration,
}

impl std::fmt::Debug for PostgresOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may carry a password.
        f.debug_struct("PostgresOptions")
            .field("url", &"<redacted>")
            .field("pool_size", &self.pool_size)
            .finish()
    }
}

/// The PostgreSQL store. Cheap to clone; clones share the pool.
#[derive(Clone)]
pub struct PostgresStore {
    pool: Pool,
    target: String,
    vault: std::sync::Arc<idgraph_store::vault::VaultSlot>,
    groups: std::sync::Arc<group::Groups>,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("target", &self.target)
            .finish()
    }
}

/// Describes where a URL points, without its password, for messages.
pub fn describe_target(config: &tokio_postgres::Config) -> String {
    let host = config
        .get_hosts()
        .first()
        .map(|h| match h {
            tokio_postgres::config::Host::Tcp(name) => name.clone(),
            tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
        })
        .unwrap_or_else(|| "localhost".into());
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let db = config
        .get_dbname()
        .or(config.get_user())
        .unwrap_or("postgres");
    format!("{host}:{port}/{db}")
}

impl PostgresStore {
    /// The vault PII is sealed with right now.
    pub(crate) fn vault(&self) -> std::sync::Arc<idgraph_store::vault::Vault> {
        self.vault.get()
    }

    pub(crate) fn vault_slot_inner(&self) -> &idgraph_store::vault::VaultSlot {
        &self.vault
    }

    /// Connects, checks the server answers, and applies pending migrations.
    pub async fn connect(options: &PostgresOptions) -> StoreResult<Self> {
        let mut config: tokio_postgres::Config = options
            .url
            .parse()
            .map_err(|e| StoreError::Unusable(format!("malformed database URL: {e}")))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(options.connect_timeout);
        }
        config.application_name("idgraph");
        let target = describe_target(&config);
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(options.pool_size.max(1))
            .runtime(Runtime::Tokio1)
            .create_timeout(Some(options.connect_timeout))
            .wait_timeout(Some(Duration::from_secs(30)))
            .build()
            .map_err(|e| StoreError::Unusable(format!("cannot build the connection pool: {e}")))?;
        let store = Self {
            pool,
            target,
            vault: std::sync::Arc::default(),
            groups: std::sync::Arc::default(),
        };
        store.migrate().await?;
        Ok(store)
    }

    pub(crate) async fn client(&self) -> StoreResult<deadpool_postgres::Object> {
        self.pool.get().await.map_err(|e| {
            let cause = match &e {
                deadpool_postgres::PoolError::Backend(db) => codec::chain(db),
                other => other.to_string(),
            };
            StoreError::Unusable(format!(
                "cannot connect to PostgreSQL at {}: {cause}",
                self.target
            ))
        })
    }

    async fn migrate(&self) -> StoreResult<()> {
        let mut client = self.client().await?;
        let unusable = |e: tokio_postgres::Error| {
            StoreError::Unusable(format!("cannot migrate: {}", codec::chain(&e)))
        };
        let tx = client.transaction().await.map_err(unusable)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .await
            .map_err(unusable)?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS idgraph_migrations (
                version    bigint      NOT NULL PRIMARY KEY,
                name       text        NOT NULL,
                checksum   text        NOT NULL,
                applied_at timestamptz NOT NULL DEFAULT now()
            )",
        )
        .await
        .map_err(unusable)?;
        let applied: Vec<AppliedMigration> = tx
            .query(
                "SELECT version, name, checksum FROM idgraph_migrations ORDER BY version",
                &[],
            )
            .await
            .map_err(unusable)?
            .iter()
            .map(|row| AppliedMigration {
                version: row.get(0),
                name: row.get(1),
                checksum: row.get(2),
            })
            .collect();
        let pending = plan_migrations(MIGRATIONS, &applied)
            .map_err(|e| StoreError::Unusable(e.to_string()))?;
        for migration in pending {
            tracing::info!(
                version = migration.version,
                name = migration.name,
                "applying migration"
            );
            tx.batch_execute(migration.sql).await.map_err(unusable)?;
            tx.execute(
                "INSERT INTO idgraph_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                &[&migration.version, &migration.name, &migration.checksum()],
            )
            .await
            .map_err(unusable)?;
        }
        tx.commit().await.map_err(unusable)
    }
}
