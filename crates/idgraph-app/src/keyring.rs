//! The keyring of PII at rest (decision 0013): data-encryption keys (DEKs) and the blind-index
//! key, each sealed under the operator's data key and kept in the store as a setting of the
//! `default` tenant. The store is handed a [`Vault`] of the unwrapped keys; the data key itself
//! never reaches it.
//!
//! A rotation adds a DEK as `staged` (every process can open values sealed with it, none seals
//! with it yet), waits for the processes sharing the store to reload the keyring, promotes it
//! to `current` (the previous one becomes `retired`, still readable), and re-seals every row in
//! small batches. Its progress is in the keyring, so a rotation that was interrupted is resumed
//! by the next `idgraph data-key rotate` or server start; no key is ever removed, so no row is
//! ever unreadable.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use idgraph_core::tenancy::TenantId;
use idgraph_store::vault::{KEY_BYTES, Vault, random_key};
use idgraph_store::{PageRequest, Store};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::data_key::DataKey;

/// The tenant setting (in the `default` tenant) holding the keyring.
pub const KEYRING_SETTING: &str = "data_keyring";
/// How often a server reloads the keyring (a rotation run by another process).
pub const REFRESH: Duration = Duration::from_secs(2);
/// How long a staged key waits before it seals anything: long enough for every process to
/// have reloaded the keyring and so be able to open what it seals.
pub const SETTLE: Duration = Duration::from_secs(5);
/// Rows re-sealed per transaction: short enough that ingestion waits milliseconds, not seconds.
pub const BATCH: u32 = 500;
/// Which set of sealed columns this version has. A store whose keyring records an older one
/// gets the plain rows of the newer columns sealed (and blind-indexed) at its next start, as a
/// plain store does at its first start with a key. 1: identity nodes, traits, events
/// (decision 0013); 2: consent subjects, suppression entries, contacts; 3: merge and conflict
/// identifiers; 4: landed import rows and row outcomes' reasons; 5: stored idempotent
/// responses and webhook payloads (decision 0014).
pub const SEALED_COLUMNS: u32 = 5;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Keyring {
    /// The blind-index key, sealed. It does not rotate with DEKs: changing it changes every
    /// identifier's lookup form, which is a re-index, not a re-seal.
    pub index: String,
    pub keys: Vec<WrappedKey>,
    /// Rows written before the store had a key have been sealed.
    #[serde(default)]
    pub plain_sealed: bool,
    /// The [`SEALED_COLUMNS`] whose plain rows have been sealed; 0 in a keyring written before
    /// it was recorded, which had sealed those of 1 if `plain_sealed`.
    #[serde(default)]
    pub sealed_columns: u32,
    #[serde(default)]
    pub rotation: Option<Rotation>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WrappedKey {
    pub id: u32,
    pub state: KeyState,
    /// The DEK sealed under the data key, base64.
    pub sealed: String,
    pub created_at: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyState {
    /// Opens values; seals nothing yet.
    Staged,
    /// Seals new values.
    Current,
    /// Opens values sealed before a rotation (or by a process that had not reloaded yet).
    Retired,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rotation {
    /// The key being rotated to.
    pub to: u32,
    pub phase: RotationPhase,
    /// When the key was staged (RFC 3339).
    pub staged_at: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RotationPhase {
    /// Waiting for every process to be able to open values sealed with the new key.
    Staged,
    /// The new key is current; older rows are being re-sealed.
    Resealing,
}

fn context_of(id: u32) -> Vec<u8> {
    format!("data_keyring:dek:{id}").into_bytes()
}
const INDEX_CONTEXT: &[u8] = b"data_keyring:index";

impl Keyring {
    fn new(kek: &DataKey) -> Result<Self, String> {
        let index = random_key().map_err(|e| e.to_string())?;
        let mut ring = Self {
            index: STANDARD.encode(kek.seal(INDEX_CONTEXT, &index).map_err(|e| e.message)?),
            keys: Vec::new(),
            plain_sealed: false,
            sealed_columns: 0,
            rotation: None,
        };
        ring.add_key(kek, KeyState::Current)?;
        Ok(ring)
    }

    fn add_key(&mut self, kek: &DataKey, state: KeyState) -> Result<u32, String> {
        let id = self.keys.iter().map(|k| k.id).max().unwrap_or(0) + 1;
        let dek = random_key().map_err(|e| e.to_string())?;
        self.keys.push(WrappedKey {
            id,
            state,
            sealed: STANDARD.encode(kek.seal(&context_of(id), &dek).map_err(|e| e.message)?),
            created_at: Timestamp::now().to_string(),
        });
        Ok(id)
    }

    /// The key new values are sealed with.
    pub fn current(&self) -> Option<u32> {
        self.keys
            .iter()
            .find(|k| k.state == KeyState::Current)
            .map(|k| k.id)
    }

    /// Unwraps every key with the data key.
    pub fn vault(&self, kek: &DataKey) -> Result<Vault, String> {
        let unwrap = |text: &str, context: &[u8]| -> Result<[u8; KEY_BYTES], String> {
            let sealed = STANDARD
                .decode(text)
                .map_err(|_| "the keyring is unreadable".to_owned())?;
            let plain = kek
                .open(context, &sealed)
                .map_err(|_| "the keyring does not open with the configured data key".to_owned())?;
            plain
                .try_into()
                .map_err(|_| "a key of the keyring has the wrong length".to_owned())
        };
        let index = unwrap(&self.index, INDEX_CONTEXT)?;
        let mut deks = Vec::with_capacity(self.keys.len());
        for key in &self.keys {
            deks.push((key.id, unwrap(&key.sealed, &context_of(key.id))?));
        }
        let current = self
            .current()
            .ok_or_else(|| "the keyring has no current key".to_owned())?;
        Vault::new(current, deks, &index).map_err(|e| e.to_string())
    }
}

/// The stored keyring and its text (to notice changes cheaply), if any.
pub async fn load<S: Store>(store: &S) -> Result<Option<(Keyring, String)>, String> {
    let Some(text) = store
        .tenant_setting(&TenantId::default_tenant(), KEYRING_SETTING)
        .await
        .map_err(|e| format!("cannot read the keyring: {e}"))?
    else {
        return Ok(None);
    };
    let ring =
        serde_json::from_str(&text).map_err(|e| format!("the keyring is unreadable: {e}"))?;
    Ok(Some((ring, text)))
}

async fn save<S: Store>(store: &S, ring: &Keyring) -> Result<String, String> {
    let text = serde_json::to_string(ring).map_err(|e| e.to_string())?;
    store
        .put_tenant_setting(
            &TenantId::default_tenant(),
            KEYRING_SETTING,
            text.clone(),
            Timestamp::now(),
        )
        .await
        .map_err(|e| format!("cannot store the keyring: {e}"))?;
    Ok(text)
}

/// Opens (creating on first use) the keyring with the data key and installs its vault in the
/// store. Rows stored before the store had a key are sealed first: until they are, they would
/// not be found by their blind index, so this runs before the server serves.
pub async fn install<S: Store>(store: &S, kek: &DataKey) -> Result<String, String> {
    let (mut ring, mut text) = match load(store).await? {
        Some(found) => found,
        None => {
            let ring = Keyring::new(kek)?;
            let text = save(store, &ring).await?;
            (ring, text)
        }
    };
    store.vault_slot().set(ring.vault(kek)?);
    if !ring.plain_sealed || ring.sealed_columns < SEALED_COLUMNS {
        let (rewritten, _) = reseal_everything(store, None).await?;
        if rewritten > 0 {
            tracing::info!(
                rows = rewritten,
                "sealed the PII stored before the data key"
            );
        }
        ring.plain_sealed = true;
        ring.sealed_columns = SEALED_COLUMNS;
        text = save(store, &ring).await?;
    }
    Ok(text)
}

/// Reloads the keyring if its text changed since `seen`, installing the new vault.
pub async fn refresh<S: Store>(store: &S, kek: &DataKey, seen: &mut String) -> Result<(), String> {
    let Some((ring, text)) = load(store).await? else {
        return Ok(());
    };
    if text != *seen {
        store.vault_slot().set(ring.vault(kek)?);
        *seen = text;
    }
    Ok(())
}

/// Re-seals every tenant's rows not under the current key, at most `budget` batches: how many
/// rows it rewrote, and whether it got to the end.
async fn reseal_everything<S: Store>(
    store: &S,
    mut budget: Option<u32>,
) -> Result<(u64, bool), String> {
    let mut total = 0;
    let mut page = PageRequest::first(PageRequest::MAX_LIMIT);
    loop {
        let tenants = store
            .list_tenants(&page)
            .await
            .map_err(|e| format!("cannot list tenants: {e}"))?;
        for tenant in &tenants.items {
            loop {
                if let Some(left) = &mut budget {
                    if *left == 0 {
                        return Ok((total, false));
                    }
                    *left -= 1;
                }
                let n = store
                    .reseal(&tenant.id, BATCH)
                    .await
                    .map_err(|e| format!("re-sealing tenant {} failed: {e}", tenant.id))?;
                total += n;
                if n == 0 {
                    break;
                }
            }
        }
        match tenants.next_cursor {
            Some(cursor) => page.after = Some(cursor),
            None => return Ok((total, true)),
        }
    }
}

/// Where a rotation stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RotationStatus {
    /// The new key waits until every process can open what it seals.
    Staged { to: u32, ready_in: Duration },
    /// Re-sealing is under way (or was interrupted and resumes).
    Resealing { to: u32 },
    /// Nothing to do: no rotation under way.
    Done { current: u32 },
}

/// Starts a rotation, or resumes the one under way: what it does now.
pub async fn start_rotation<S: Store>(store: &S, kek: &DataKey) -> Result<RotationStatus, String> {
    install(store, kek).await?;
    let (mut ring, _) = load(store)
        .await?
        .ok_or_else(|| "the keyring vanished".to_owned())?;
    if ring.rotation.is_none() {
        let to = ring.add_key(kek, KeyState::Staged)?;
        ring.rotation = Some(Rotation {
            to,
            phase: RotationPhase::Staged,
            staged_at: Timestamp::now().to_string(),
        });
        save(store, &ring).await?;
        store.vault_slot().set(ring.vault(kek)?);
    }
    status(&ring, SETTLE)
}

fn status(ring: &Keyring, settle: Duration) -> Result<RotationStatus, String> {
    Ok(match &ring.rotation {
        None => RotationStatus::Done {
            current: ring.current().unwrap_or(0),
        },
        Some(r) if r.phase == RotationPhase::Resealing => RotationStatus::Resealing { to: r.to },
        Some(r) => {
            let staged: Timestamp = r
                .staged_at
                .parse()
                .map_err(|_| "the keyring's rotation is unreadable".to_owned())?;
            let waited = Timestamp::now().duration_since(staged);
            let waited = Duration::try_from(waited).unwrap_or_default();
            RotationStatus::Staged {
                to: r.to,
                ready_in: settle.saturating_sub(waited),
            }
        }
    })
}

/// Moves a rotation on as far as it can go now: promotes a staged key whose settling time is
/// over, then re-seals stored rows, at most `budget` batches (`None`: to the end). Safe to run
/// in several processes at once, and to interrupt anywhere.
pub async fn advance_rotation<S: Store>(
    store: &S,
    kek: &DataKey,
    settle: Duration,
    budget: Option<u32>,
) -> Result<RotationStatus, String> {
    let Some((mut ring, _)) = load(store).await? else {
        return Err("this store has no keyring yet".to_owned());
    };
    let now = status(&ring, settle)?;
    let to = match now {
        RotationStatus::Done { .. } => return Ok(now),
        RotationStatus::Staged { ready_in, .. } if !ready_in.is_zero() => {
            store.vault_slot().set(ring.vault(kek)?);
            return Ok(now);
        }
        RotationStatus::Staged { to, .. } | RotationStatus::Resealing { to } => to,
    };
    if matches!(now, RotationStatus::Staged { .. }) {
        // Re-read right before each change: another process may have moved the rotation on.
        let (mut fresh, _) = load(store).await?.ok_or("the keyring vanished")?;
        if fresh.rotation.as_ref().map(|r| (r.to, r.phase)) == Some((to, RotationPhase::Staged)) {
            for key in &mut fresh.keys {
                key.state = match key.state {
                    _ if key.id == to => KeyState::Current,
                    KeyState::Current => KeyState::Retired,
                    other => other,
                };
            }
            if let Some(r) = &mut fresh.rotation {
                r.phase = RotationPhase::Resealing;
            }
            save(store, &fresh).await?;
        }
        ring = fresh;
    }
    store.vault_slot().set(ring.vault(kek)?);
    let (_, finished) = reseal_everything(store, budget).await?;
    if !finished {
        return Ok(RotationStatus::Resealing { to });
    }
    let (mut fresh, _) = load(store).await?.ok_or("the keyring vanished")?;
    if fresh.rotation.as_ref().map(|r| r.to) == Some(to) {
        fresh.rotation = None;
        save(store, &fresh).await?;
    }
    Ok(RotationStatus::Done { current: to })
}

/// Runs a rotation to its end (the `idgraph data-key rotate` command), waiting out the
/// settling time. Returns the new current key id.
pub async fn rotate<S: Store>(store: &S, kek: &DataKey, settle: Duration) -> Result<u32, String> {
    start_rotation(store, kek).await?;
    loop {
        match advance_rotation(store, kek, settle, None).await? {
            RotationStatus::Done { current } => return Ok(current),
            RotationStatus::Staged { ready_in, to } => {
                tracing::info!(
                    key = to,
                    wait_ms = u64::try_from(ready_in.as_millis()).unwrap_or(u64::MAX),
                    "waiting for every process to load the new key"
                );
                tokio::time::sleep(ready_in.max(Duration::from_millis(50))).await;
            }
            RotationStatus::Resealing { .. } => {}
        }
    }
}

/// `POST /api/v1/data-key/rotate` (master key): starts a rotation, or reports the one under
/// way; the server's keyring task carries it out in the background.
pub async fn request_rotation<S: Store>(
    store: &S,
    principal: &crate::access::Principal,
    kek: Option<&DataKey>,
) -> Result<RotationStatus, crate::AppError> {
    principal.require_master()?;
    let kek = kek.ok_or_else(no_key)?;
    start_rotation(store, kek)
        .await
        .map_err(crate::AppError::internal)
}

/// `GET /api/v1/data-key` (master key): where the PII keyring stands.
pub async fn rotation_status<S: Store>(
    store: &S,
    principal: &crate::access::Principal,
    kek: Option<&DataKey>,
) -> Result<RotationStatus, crate::AppError> {
    principal.require_master()?;
    kek.ok_or_else(no_key)?;
    let (ring, _) = load(store)
        .await
        .map_err(crate::AppError::internal)?
        .ok_or_else(no_key)?;
    status(&ring, SETTLE).map_err(crate::AppError::internal)
}

fn no_key() -> crate::AppError {
    crate::AppError::new(
        crate::ErrorKind::Unavailable,
        "data_key_missing",
        "PII is stored in the clear: no data key is configured (data_key_file or \
         IDGRAPH_DATA_KEY)",
    )
}

#[cfg(test)]
mod tests {
    use idgraph_core::compliance::{SuppressionAction, SuppressionReason, SuppressionScope};
    use idgraph_core::identity::IdentitySettings;
    use idgraph_sqlite::{Durability, SqliteOptions, SqliteStore};
    use idgraph_store::{ComplianceWrites, SuppressionRow, Tenant};

    use super::*;

    /// A store whose keyring was written by a version that sealed fewer columns holds plain
    /// rows in them, which lookups by blind index miss until its next start seals them.
    #[tokio::test]
    async fn the_next_start_seals_the_columns_an_older_version_left_plain() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(&SqliteOptions {
            data_dir: dir.path().to_path_buf(),
            durability: Durability::Full,
        })
        .expect("open");
        let tenant = TenantId::parse("acme").expect("valid");
        for id in ["default", "acme"] {
            store
                .create_tenant(&Tenant {
                    id: TenantId::parse(id).expect("valid"),
                    name: id.into(),
                    created_at: Timestamp::now(),
                })
                .await
                .expect("tenant");
        }
        let kek = DataKey::generate().expect("key");
        install(&store, &kek).await.expect("install");

        // What the older version left: a keyring that sealed only the first set of columns, and
        // a suppression written in the clear.
        let (mut ring, _) = load(&store).await.expect("load").expect("keyring");
        assert_eq!(ring.sealed_columns, SEALED_COLUMNS);
        ring.sealed_columns = 1;
        save(&store, &ring).await.expect("save");
        let address = IdentitySettings::default()
            .normalize("email", "kept@example.com")
            .expect("valid");
        store.vault_slot().set(Vault::plaintext());
        store
            .record_compliance(
                &tenant,
                ComplianceWrites {
                    suppressions: vec![SuppressionRow {
                        entry_id: "s1".into(),
                        scope: SuppressionScope::Tenant,
                        identifier: address.clone(),
                        reason: SuppressionReason::OptOut,
                        action: SuppressionAction::Add,
                        note: None,
                        actor: "test".into(),
                        at: Timestamp::now(),
                        recorded: 0,
                    }],
                    ..ComplianceWrites::default()
                },
            )
            .await
            .expect("record");
        store.vault_slot().set(ring.vault(&kek).expect("vault"));
        assert!(
            store
                .suppression_history(&tenant, &address)
                .await
                .expect("history")
                .is_empty(),
            "a plain value is not found by its blind index"
        );

        install(&store, &kek).await.expect("install again");
        let history = store
            .suppression_history(&tenant, &address)
            .await
            .expect("history");
        assert_eq!(history.len(), 1, "sealed and indexed at the start");
        let (ring, _) = load(&store).await.expect("load").expect("keyring");
        assert_eq!(ring.sealed_columns, SEALED_COLUMNS);
        store.close().await;
    }
}
