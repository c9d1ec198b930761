//! Where the operator's data key comes from, and refusing to start with the wrong one.
//!
//! Order: `data_key` (config or `IDGRAPH_DATA_KEY`), then `data_key_file`, then, on the embedded
//! store only, `<data_dir>/data.key`. A store that never sealed anything gets a generated key
//! at the file path (0600, with a warning to back it up); one that did refuses to start unless
//! the key opens its check value.

use std::path::{Path, PathBuf};

use anyhow::Context;
use idgraph_app::data_key::{self, DataKey, KeyState};
use idgraph_app::keyring;
use idgraph_store::Store;

use crate::config::Config;

/// The key file the embedded store uses when none is configured.
pub const DEFAULT_KEY_FILE: &str = "data.key";

/// The data key to run with, or `None` (PostgreSQL without a configured key, nothing sealed).
pub async fn resolve<S: Store>(store: &S, config: &Config) -> anyhow::Result<Option<DataKey>> {
    let key_file: Option<PathBuf> = match (&config.data_key_file, config.postgres_url()) {
        (Some(file), _) => Some(file.clone()),
        (None, None) => Some(config.data_dir.join(DEFAULT_KEY_FILE)),
        (None, Some(_)) => None,
    };
    let state = data_key::key_state(store)
        .await
        .map_err(|e| anyhow::anyhow!("cannot read the data key check: {}", e.message))?;
    let key = match (&config.data_key, &key_file) {
        (Some(inline), _) => Some(
            DataKey::from_text(inline.expose()).map_err(|e| anyhow::anyhow!("data_key: {e}"))?,
        ),
        (None, Some(file)) if file.exists() => Some(read_key_file(file)?),
        (None, Some(file)) if state == KeyState::Fresh => Some(generate_key_file(file)?),
        (None, _) if state == KeyState::Sealed => anyhow::bail!(
            "this store holds data sealed with a data key, but no key was found{}: set \
             data_key_file or IDGRAPH_DATA_KEY to the key it was sealed with",
            key_file
                .as_ref()
                .map(|f| format!(" (looked for {})", f.display()))
                .unwrap_or_default()
        ),
        (None, _) => {
            tracing::warn!(
                "no data key is configured: PII is stored in the clear and webhooks cannot be \
                 created until data_key_file or IDGRAPH_DATA_KEY is set (generate one with \
                 `head -c 32 /dev/urandom | base64`)"
            );
            return Ok(None);
        }
    };
    let Some(key) = key else { return Ok(None) };
    data_key::adopt(store, &key)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(Some(key))
}

/// Resolves the data key and installs the PII keyring it wraps in the store (sealing rows
/// stored before there was a key). `None`: PII stays in the clear (PostgreSQL without a key).
pub async fn open_pii<S: Store>(store: &S, config: &Config) -> anyhow::Result<Option<DataKey>> {
    let key = resolve(store, config).await?;
    if config.unsafe_plaintext_pii {
        if keyring::load(store)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .is_some()
        {
            anyhow::bail!(
                "unsafe_plaintext_pii is refused: this store already seals PII with its keyring"
            );
        }
        tracing::warn!("unsafe_plaintext_pii is set: PII is stored in the clear (benchmarks only)");
        return Ok(key);
    }
    if let Some(key) = &key {
        keyring::install(store, key)
            .await
            .map_err(|e| anyhow::anyhow!("cannot open the PII keyring: {e}"))?;
    }
    Ok(key)
}

/// Keeps the store's vault in step with the keyring (a rotation run by another process) and
/// moves on a rotation under way, every `keyring::REFRESH`. A server started in the middle of
/// an interrupted rotation finishes it.
pub async fn follow_keyring<S: Store>(store: S, key: DataKey) {
    let mut seen = String::new();
    // The embedded store has one process: nobody else needs time to load a new key.
    let settle = match store.backend() {
        "sqlite" => std::time::Duration::ZERO,
        _ => keyring::SETTLE,
    };
    let mut ticks = tokio::time::interval(keyring::REFRESH);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        if let Err(e) = keyring::refresh(&store, &key, &mut seen).await {
            tracing::warn!(error = %e, "cannot reload the PII keyring");
            continue;
        }
        let rotating =
            matches!(keyring::load(&store).await, Ok(Some((ring, _))) if ring.rotation.is_some());
        if rotating {
            match keyring::advance_rotation(&store, &key, settle, None).await {
                Ok(keyring::RotationStatus::Done { current }) => {
                    tracing::info!(key = current, "the data key rotation is complete");
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "the data key rotation did not advance"),
            }
        }
    }
}

fn read_key_file(file: &Path) -> anyhow::Result<DataKey> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("cannot read the data key file {}", file.display()))?;
    DataKey::from_text(&text)
        .map_err(|e| anyhow::anyhow!("the data key file {}: {e}", file.display()))
}

fn generate_key_file(file: &Path) -> anyhow::Result<DataKey> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let key = DataKey::generate().map_err(|e| anyhow::anyhow!("{}", e.message))?;
    if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    // create_new: never overwrite a key someone put there meanwhile.
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(file)
        .with_context(|| format!("cannot create the data key file {}", file.display()))?;
    writeln!(out, "{}", key.to_text())
        .and_then(|()| out.sync_all())
        .with_context(|| format!("cannot write the data key file {}", file.display()))?;
    tracing::warn!(
        path = %file.display(),
        "generated a new data key; back it up with the data: without it, sealed data (PII and \
         webhook secrets) cannot be read"
    );
    Ok(key)
}
