//! The idgraph binary's library half: configuration, logging, and `launch`, which wires a store,
//! bootstrap and the HTTP server together. `main.rs` is only the command line on top.

pub mod config;
pub mod data_key;
pub mod import;
pub mod telemetry;

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use anyhow::Context;
use idgraph_http::AppState;
use idgraph_postgres::{PostgresOptions, PostgresStore};
use idgraph_sqlite::{SqliteOptions, SqliteStore};
use idgraph_store::Store;
use tokio::net::TcpListener;

use crate::config::{Config, Durability};

/// How often unfinished imports are looked for.
const IMPORT_SWEEP: Duration = Duration::from_secs(30);

type Serving = Pin<Box<dyn Future<Output = std::io::Result<()>> + Send>>;

/// A server that has opened its store, bootstrapped, and is accepting connections.
pub struct Running {
    /// A master key generated on this start (first start without one configured).
    pub generated_master_key: Option<String>,
    pub backend: &'static str,
    serving: Serving,
}

impl std::fmt::Debug for Running {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Running")
            .field("backend", &self.backend)
            .finish_non_exhaustive()
    }
}

impl Running {
    /// Serves until the shutdown future given to [`launch`] resolves and in-flight requests end.
    pub async fn wait(self) -> anyhow::Result<()> {
        self.serving.await.context("the HTTP server failed")
    }
}

/// Opens the configured store, applies migrations, bootstraps the default tenant, workspace and
/// master key, and starts serving on `listener` until `shutdown` resolves.
pub async fn launch(
    config: &Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<Running> {
    match config.postgres_url() {
        Some(url) => {
            let store = open_postgres(config, url).await?;
            start(store, config, listener, shutdown).await
        }
        None => {
            let store = open_sqlite(config).await?;
            start(store, config, listener, shutdown).await
        }
    }
}

async fn open_postgres(config: &Config, url: &str) -> anyhow::Result<PostgresStore> {
    let options = PostgresOptions {
        url: url.to_owned(),
        pool_size: config.pg_pool_size,
        connect_timeout: Duration::from_secs(10),
    };
    let store = PostgresStore::connect(&options).await?;
    tracing::info!(store = ?store, "using PostgreSQL");
    Ok(store)
}

async fn open_sqlite(config: &Config) -> anyhow::Result<SqliteStore> {
    let options = SqliteOptions {
        data_dir: config.data_dir.clone(),
        durability: match config.durability {
            Durability::Full => idgraph_sqlite::Durability::Full,
            Durability::Normal => idgraph_sqlite::Durability::Normal,
        },
    };
    let store = tokio::task::spawn_blocking(move || SqliteStore::open(&options))
        .await
        .context("opening the store panicked")??;
    tracing::info!(path = %store.path().display(), "using the embedded SQLite store");
    Ok(store)
}

/// `idgraph import` without a server: opens the configured store (refused if a server holds
/// the data dir), bootstraps it, imports the file, and closes the store.
pub async fn import_directly(
    config: &Config,
    tenant: &str,
    options: &import::ImportOptions,
) -> anyhow::Result<import::JobState> {
    let tenant = idgraph_core::tenancy::TenantId::parse(tenant)
        .map_err(|e| anyhow::anyhow!("invalid --tenant: {e}"))?;
    match config.postgres_url() {
        Some(url) => {
            let store = open_postgres(config, url).await?;
            import_and_close(store, config, tenant, options).await
        }
        None => {
            let store = open_sqlite(config).await.map_err(|e| {
                if format!("{e:#}").contains("in use by another idgraph process") {
                    anyhow::anyhow!(
                        "{e:#}; to import while a server runs on it, go through the server: \
                         idgraph import FILE --server URL --key KEY"
                    )
                } else {
                    e
                }
            })?;
            import_and_close(store, config, tenant, options).await
        }
    }
}

async fn import_and_close<S: Store>(
    store: S,
    config: &Config,
    tenant: idgraph_core::tenancy::TenantId,
    options: &import::ImportOptions,
) -> anyhow::Result<import::JobState> {
    let master_key = config.master_key.as_ref().map(|k| k.expose());
    let result = match idgraph_app::bootstrap::bootstrap(&store, master_key).await {
        Ok(outcome) => {
            if let Some(key) = outcome.generated_master_key {
                use std::io::Write;
                let _ = writeln!(
                    std::io::stdout().lock(),
                    "A master key was generated for this new store; it is shown only once: {key}"
                );
            }
            match data_key::open_pii(&store, config).await {
                Ok(_) => import::import_directly(&store, tenant, options).await,
                Err(e) => Err(e),
            }
        }
        Err(e) => Err(anyhow::anyhow!("bootstrap failed: {}", e.message)),
    };
    store.close().await;
    result
}

async fn start<S: Store>(
    store: S,
    config: &Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<Running> {
    let master_key = config.master_key.as_ref().map(|k| k.expose());
    let outcome = match idgraph_app::bootstrap::bootstrap(&store, master_key).await {
        Ok(outcome) => outcome,
        Err(e) => {
            store.close().await;
            anyhow::bail!("bootstrap failed: {}", e.message);
        }
    };
    let backend = store.backend();
    let address = listener
        .local_addr()
        .context("the listener has no address")?;
    tracing::info!(%address, backend, version = env!("CARGO_PKG_VERSION"), "idgraph is listening");
    let limits = idgraph_http::RateLimitDefaults {
        ingestion_per_sec: config.rate_limit_ingestion_per_sec,
        management_per_sec: config.rate_limit_management_per_sec,
    };
    let data_key = match data_key::open_pii(&store, config).await {
        Ok(key) => key,
        Err(e) => {
            store.close().await;
            return Err(e);
        }
    };
    if let Some(key) = data_key.clone().filter(|_| !config.unsafe_plaintext_pii) {
        tokio::spawn(data_key::follow_keyring(store.clone(), key));
    }
    let mut state = AppState::with_rate_limits(store, limits)
        .with_webhooks(data_key, config.webhook_settings())
        .map_err(|e| anyhow::anyhow!("cannot start the webhook worker: {}", e.message))?;
    state.deletion_retention = config.deletion_retention();
    if config.purge_interval_seconds > 0 {
        tokio::spawn(purge_periodically(
            state.store.clone(),
            Duration::from_secs(config.purge_interval_seconds),
        ));
    }
    // Imports left unfinished by a stop or a crash resume now; the sweep also picks up jobs of
    // processes that died while sharing this database.
    tokio::spawn(state.importer.clone().sweep(IMPORT_SWEEP));
    let serving = Box::pin(idgraph_http::serve(state, listener, shutdown));
    Ok(Running {
        generated_master_key: outcome.generated_master_key,
        backend,
        serving,
    })
}

/// The background purge: every `interval`, what deleted persons left past their retention
/// window is removed. A failed run is logged and retried at the next tick.
async fn purge_periodically<S: Store>(store: S, interval: Duration) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        if let Err(e) = idgraph_app::privacy::purge_due(&store, jiff::Timestamp::now()).await {
            tracing::warn!(error = %e.message, "the purge of deleted persons failed");
        }
    }
}

/// `idgraph purge --now` without a server: opens the configured store (refused if a server
/// holds the data dir), purges everything due, and closes the store.
/// With `ignore_retention`, every deleted person is purged, whatever its window.
pub async fn purge_directly(
    config: &Config,
    ignore_retention: bool,
) -> anyhow::Result<idgraph_store::PurgeOutcome> {
    let mut until = jiff::Timestamp::now();
    if ignore_retention {
        // Past the longest window the configuration allows (100 years).
        until = until
            .checked_add(jiff::SignedDuration::from_hours(36_600 * 24))
            .context("the clock is too far in the future")?;
    }
    match config.postgres_url() {
        Some(url) => {
            let store = open_postgres(config, url).await?;
            purge_and_close(store, until).await
        }
        None => {
            let store = open_sqlite(config).await?;
            purge_and_close(store, until).await
        }
    }
}

async fn purge_and_close<S: Store>(
    store: S,
    until: jiff::Timestamp,
) -> anyhow::Result<idgraph_store::PurgeOutcome> {
    let result = idgraph_app::privacy::purge_due(&store, until)
        .await
        .map_err(|e| anyhow::anyhow!("the purge failed: {}", e.message));
    // Closing the embedded store checkpoints its WAL, so no purged page lingers there.
    store.close().await;
    result
}

/// `idgraph data-key rotate` without a server: opens the configured store (on PostgreSQL while
/// servers run on it; the embedded store only if no server holds it), rotates the PII key and
/// closes the store. Returns the new key's id.
pub async fn rotate_directly(config: &Config) -> anyhow::Result<u32> {
    match config.postgres_url() {
        Some(url) => {
            let store = open_postgres(config, url).await?;
            rotate_and_close(store, config).await
        }
        None => {
            let store = open_sqlite(config).await.map_err(|e| {
                if format!("{e:#}").contains("in use by another idgraph process") {
                    anyhow::anyhow!(
                        "{e:#}; to rotate while a server runs on it, ask the server: POST \
                         /api/v1/data-key/rotate with the master key"
                    )
                } else {
                    e
                }
            })?;
            rotate_and_close(store, config).await
        }
    }
}

async fn rotate_and_close<S: Store>(store: S, config: &Config) -> anyhow::Result<u32> {
    let result = async {
        let key = data_key::open_pii(&store, config).await?.ok_or_else(|| {
            anyhow::anyhow!("no data key is configured: set data_key_file or IDGRAPH_DATA_KEY")
        })?;
        // Alone on the embedded store, no other process needs time to load the new key.
        let settle = match store.backend() {
            "sqlite" => Duration::ZERO,
            _ => idgraph_app::keyring::SETTLE,
        };
        idgraph_app::keyring::rotate(&store, &key, settle)
            .await
            .map_err(|e| anyhow::anyhow!("the rotation failed: {e}"))
    }
    .await;
    store.close().await;
    result
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    let mut terminate =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    let terminated = async {
        match terminate.as_mut() {
            Some(signal) => {
                signal.recv().await;
            }
            None => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = interrupt => tracing::info!(signal = "SIGINT", "shutting down: finishing in-flight requests"),
        () = terminated => tracing::info!(signal = "SIGTERM", "shutting down: finishing in-flight requests"),
    }
}
