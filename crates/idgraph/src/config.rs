//! Layered, typed configuration: defaults, then a TOML file, then `IDGRAPH_*` environment
//! variables, then command-line flags. Unknown keys are refused; secrets never reach `Debug`.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

/// A string that must not be printed: the master key, a database URL with its password.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Self(value)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    Full,
    Normal,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// JSON lines when stderr (where logs go) is not a terminal, readable text when it is.
    Auto,
    Text,
    Json,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub database_url: Option<Secret>,
    pub master_key: Option<Secret>,
    pub durability: Durability,
    pub pg_pool_size: usize,
    pub log_format: LogFormat,
    pub log_level: String,
    pub shutdown_grace_seconds: u64,
    pub rate_limit_ingestion_per_sec: u32,
    pub rate_limit_management_per_sec: u32,
    pub deletion_retention_days: u32,
    pub purge_interval_seconds: u64,
    pub data_key: Option<Secret>,
    pub data_key_file: Option<PathBuf>,
    /// Benchmarks only: store PII in the clear, to measure what sealing costs.
    pub unsafe_plaintext_pii: bool,
    pub webhook_concurrency: usize,
    pub webhook_timeout_seconds: u64,
    pub webhook_poll_ms: u64,
    pub webhook_retry_base_ms: u64,
    pub webhook_retry_window_seconds: u64,
    pub webhook_delivery_retention_days: u32,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("./idgraph-data"),
            database_url: None,
            master_key: None,
            durability: Durability::Full,
            pg_pool_size: 16,
            log_format: LogFormat::Auto,
            log_level: "info".into(),
            shutdown_grace_seconds: 30,
            rate_limit_ingestion_per_sec: 1000,
            rate_limit_management_per_sec: 100,
            deletion_retention_days: 30,
            purge_interval_seconds: 3600,
            data_key: None,
            data_key_file: None,
            unsafe_plaintext_pii: false,
            webhook_concurrency: 16,
            webhook_timeout_seconds: 10,
            webhook_poll_ms: 1000,
            webhook_retry_base_ms: 5000,
            webhook_retry_window_seconds: 3 * 24 * 3600,
            webhook_delivery_retention_days: 30,
        }
    }
}

/// The keys that may come from `IDGRAPH_*` variables. Other `IDGRAPH_*` variables (used by
/// tests and tools) are not configuration and must not be refused as unknown keys.
const ENV_KEYS: [&str; 22] = [
    "listen",
    "data_dir",
    "database_url",
    "master_key",
    "durability",
    "pg_pool_size",
    "log_format",
    "log_level",
    "shutdown_grace_seconds",
    "rate_limit_ingestion_per_sec",
    "rate_limit_management_per_sec",
    "deletion_retention_days",
    "purge_interval_seconds",
    "data_key",
    "data_key_file",
    "unsafe_plaintext_pii",
    "webhook_concurrency",
    "webhook_timeout_seconds",
    "webhook_poll_ms",
    "webhook_retry_base_ms",
    "webhook_retry_window_seconds",
    "webhook_delivery_retention_days",
];

/// `idgraph config default`: every key with its default and what it means.
pub const ANNOTATED_DEFAULTS: &str = r#"# idgraph configuration. Layers, later wins: these defaults, the TOML file given with
# --config, IDGRAPH_<KEY> environment variables (e.g. IDGRAPH_DATA_DIR), command-line flags.

# Address the HTTP server listens on.
listen = "127.0.0.1:8080"

# Directory of the embedded SQLite store (used unless database_url is set).
data_dir = "./idgraph-data"

# PostgreSQL instead of the embedded store, e.g. "postgres://idgraph:secret@db:5432/idgraph".
# database_url = ""

# The master key (all scopes, all tenants), at least 24 characters. If unset on first start,
# one is generated, printed once, and only its hash is stored.
# master_key = ""

# When a write is acknowledged on the embedded store: "full" fsyncs every commit (survives power
# loss), "normal" survives a crash of idgraph but may lose the last commits on power loss.
durability = "full"

# Connections to PostgreSQL per idgraph process.
pg_pool_size = 16

# Log lines on stderr: "auto" (JSON unless stderr is a terminal), "text" or "json".
log_format = "auto"

# Log filter, in tracing-subscriber's EnvFilter syntax (e.g. "info,idgraph_http=debug").
log_level = "info"

# On SIGINT/SIGTERM, how long in-flight requests may take to finish before idgraph exits.
shutdown_grace_seconds = 30

# Requests per second per API key, for keys created without a rate_limit_per_sec of their own:
# on the ingestion API (/v1, write keys, which live in browsers) and on the management API.
# Beyond it: 429 with Retry-After. The master key is not limited. 0 disables the default.
rate_limit_ingestion_per_sec = 1000
rate_limit_management_per_sec = 100

# A deleted person vanishes from every read at once; what it left (events, traits, import rows)
# is hard-deleted by the purge once this many days have passed. 0: at the next purge.
deletion_retention_days = 30

# How often the server runs the purge; 0 never (run `idgraph purge --now` from a scheduler).
purge_interval_seconds = 3600

# The data key (base64 of 32 bytes) that seals secrets and PII at rest (webhook signing
# secrets; identifier values, trait values and event payloads, through a keyring of keys it
# wraps). Give it inline (better: as IDGRAPH_DATA_KEY) or as a file. With neither, the embedded
# store uses <data_dir>/data.key, generated on first start (back it up with the data); on
# PostgreSQL PII is stored in the clear and webhooks stay unavailable until a key is
# configured. A store holding sealed data refuses to start without its key.
# data_key = ""
# data_key_file = ""

# Benchmarks only, never in production: store PII in the clear although a data key is there,
# to measure what sealing costs. Refused on a store that already seals PII.
unsafe_plaintext_pii = false

# Webhook deliveries: requests in flight at most, the timeout of each, how often due retries
# are looked for, and the retry schedule (exponential from the base, capped at 12 hours, with
# jitter, until the window after the event is over; then the delivery fails).
webhook_concurrency = 16
webhook_timeout_seconds = 10
webhook_poll_ms = 1000
webhook_retry_base_ms = 5000
webhook_retry_window_seconds = 259200
# Days a finished delivery (delivered, failed, cancelled) and its attempts stay in the delivery
# log before the worker deletes them; 0 keeps them forever. Pending deliveries are never pruned.
webhook_delivery_retention_days = 30
"#;

/// Builds the configuration from its layers; `overrides` are the flags given on the command line.
pub fn load(file: Option<&Path>, overrides: &Overrides) -> anyhow::Result<Config> {
    let mut figment = Figment::from(Serialized::defaults(Config::default()));
    if let Some(file) = file {
        if !file.is_file() {
            anyhow::bail!("config file {} does not exist", file.display());
        }
        figment = figment.merge(Toml::file_exact(file));
    }
    figment = figment
        .merge(Env::prefixed("IDGRAPH_").only(&ENV_KEYS))
        .merge(Serialized::defaults(overrides));
    let config: Config = figment.extract().map_err(|e| {
        // figment's messages already name the key and the layer it came from.
        anyhow::anyhow!(
            "invalid configuration: {}",
            e.to_string().replace('\n', "; ")
        )
    })?;
    if config
        .master_key
        .as_ref()
        .is_some_and(|k| k.expose().is_empty())
    {
        anyhow::bail!("invalid configuration: master_key is empty");
    }
    config.validate()?;
    Ok(config)
}

impl Config {
    fn validate(&self) -> anyhow::Result<()> {
        if let Some(key) = &self.master_key {
            // Checked before anything is opened, so a bad key leaves no data dir behind.
            idgraph_core::auth::check_master_key(key.expose())
                .map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))?;
        }
        if self.deletion_retention_days > 36_500 {
            anyhow::bail!("invalid configuration: deletion_retention_days is at most 36500");
        }
        if let Some(key) = &self.data_key {
            idgraph_app::data_key::DataKey::from_text(key.expose())
                .map_err(|e| anyhow::anyhow!("invalid configuration: data_key: {e}"))?;
        }
        if self.webhook_concurrency == 0 || self.webhook_timeout_seconds == 0 {
            anyhow::bail!(
                "invalid configuration: webhook_concurrency and webhook_timeout_seconds must be at least 1"
            );
        }
        if self.webhook_poll_ms == 0 || self.webhook_retry_base_ms == 0 {
            anyhow::bail!(
                "invalid configuration: webhook_poll_ms and webhook_retry_base_ms must be at least 1"
            );
        }
        if self.pg_pool_size == 0 {
            anyhow::bail!("invalid configuration: pg_pool_size must be at least 1");
        }
        tracing_subscriber::EnvFilter::try_new(&self.log_level)
            .with_context(|| format!("invalid configuration: log_level {:?}", self.log_level))?;
        Ok(())
    }

    /// How long a deleted person's data is kept before the purge removes it.
    pub fn deletion_retention(&self) -> jiff::SignedDuration {
        jiff::SignedDuration::from_hours(i64::from(self.deletion_retention_days) * 24)
    }

    /// How the webhook worker sends and retries.
    pub fn webhook_settings(&self) -> idgraph_app::webhooks::WorkerSettings {
        use std::time::Duration;
        idgraph_app::webhooks::WorkerSettings {
            concurrency: self.webhook_concurrency,
            timeout: Duration::from_secs(self.webhook_timeout_seconds),
            poll: Duration::from_millis(self.webhook_poll_ms),
            schedule: idgraph_core::webhooks::RetrySchedule {
                base: Duration::from_millis(self.webhook_retry_base_ms),
                window: Duration::from_secs(self.webhook_retry_window_seconds),
                ..idgraph_core::webhooks::RetrySchedule::default()
            },
            retention: (self.webhook_delivery_retention_days > 0).then(|| {
                Duration::from_secs(u64::from(self.webhook_delivery_retention_days) * 24 * 3600)
            }),
            ..idgraph_app::webhooks::WorkerSettings::default()
        }
    }

    /// The database URL when PostgreSQL is configured (an empty value means the embedded store).
    pub fn postgres_url(&self) -> Option<&str> {
        self.database_url
            .as_ref()
            .map(Secret::expose)
            .filter(|u| !u.is_empty())
    }
}

/// Values given as flags; absent ones leave lower layers alone.
#[derive(Debug, Default, Serialize)]
pub struct Overrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database_url: Option<Secret>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub master_key: Option<Secret>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub durability: Option<Durability>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_format: Option<LogFormat>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_level: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_printed_defaults_are_the_defaults() {
        let printed: Config = Figment::from(Serialized::defaults(Config::default()))
            .merge(Toml::string(ANNOTATED_DEFAULTS))
            .extract()
            .unwrap();
        assert_eq!(printed, Config::default());
        // Every key is documented, so the text cannot fall behind the struct.
        for key in ENV_KEYS {
            assert!(
                ANNOTATED_DEFAULTS.contains(&format!("{key} =")),
                "{key} is not documented"
            );
        }
    }

    #[test]
    #[allow(clippy::result_large_err, reason = "figment::Jail's signature")]
    fn layers_apply_in_order_and_unknown_keys_are_refused() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "idgraph.toml",
                "listen = \"127.0.0.1:9000\"\ndata_dir = \"/from/file\"\nlog_level = \"debug\"",
            )?;
            jail.set_env("IDGRAPH_DATA_DIR", "/from/env");
            jail.set_env("IDGRAPH_TEST_DATABASE_URL", "not configuration");
            let overrides = Overrides {
                log_level: Some("warn".into()),
                ..Overrides::default()
            };
            let config = load(Some(Path::new("idgraph.toml")), &overrides).unwrap();
            assert_eq!(config.listen, SocketAddr::from(([127, 0, 0, 1], 9000)));
            assert_eq!(config.data_dir, PathBuf::from("/from/env"));
            assert_eq!(config.log_level, "warn");

            jail.create_file("typo.toml", "lisen = \"127.0.0.1:9000\"")?;
            let err = load(Some(Path::new("typo.toml")), &Overrides::default()).unwrap_err();
            assert!(err.to_string().contains("lisen"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn secrets_do_not_reach_debug_output() {
        let config = Config {
            master_key: Some(Secret("super-secret-master-key-value".into())),
            database_url: Some(Secret("postgres://u:hunter2@db/x".into())),
            ..Config::default()
        };
        let shown = format!("{config:?}");
        assert!(
            !shown.contains("super-secret") && !shown.contains("hunter2"),
            "{shown}"
        );
    }
}
