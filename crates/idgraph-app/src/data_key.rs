//! The operator's data key: seals secrets (webhook signing secrets now, PII later) at rest with
//! XChaCha20-Poly1305.
//!
//! The store keeps a check value sealed under the key, so a start with a missing or different
//! key is refused before anything is written with the wrong one.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use idgraph_core::tenancy::TenantId;
use idgraph_store::{Store, StoreError};
use jiff::Timestamp;

use crate::AppError;

const KEY_BYTES: usize = 32;
const NONCE_BYTES: usize = 24;
/// The tenant setting (in the `default` tenant) holding the check value.
pub const CHECK_SETTING: &str = "data_key_check";
const CHECK_PLAINTEXT: &[u8] = b"idgraph data key check v1";
const CHECK_CONTEXT: &[u8] = b"data_key_check";

/// A 256-bit key. Its text form is base64, in a file or `IDGRAPH_DATA_KEY`.
#[derive(Clone)]
pub struct DataKey([u8; KEY_BYTES]);

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DataKey(<redacted>)")
    }
}

impl DataKey {
    /// A fresh key from the operating system's CSPRNG.
    pub fn generate() -> Result<Self, AppError> {
        let mut bytes = [0u8; KEY_BYTES];
        getrandom::fill(&mut bytes)
            .map_err(|e| AppError::internal(format!("no randomness available: {e}")))?;
        Ok(Self(bytes))
    }

    /// Reads the base64 text form (surrounding whitespace ignored).
    pub fn from_text(text: &str) -> Result<Self, String> {
        let bytes = STANDARD
            .decode(text.trim())
            .map_err(|e| format!("the data key is not base64: {e}"))?;
        let bytes: [u8; KEY_BYTES] = bytes.try_into().map_err(|b: Vec<u8>| {
            format!(
                "the data key must be {KEY_BYTES} bytes (44 base64 characters), not {}",
                b.len()
            )
        })?;
        Ok(Self(bytes))
    }

    pub fn to_text(&self) -> String {
        STANDARD.encode(self.0)
    }

    /// Seals `plaintext`; `context` (e.g. which row and column it belongs to) must be given
    /// again to open it, so a sealed value copied elsewhere does not open.
    pub fn seal(&self, context: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, AppError> {
        let mut nonce = [0u8; NONCE_BYTES];
        getrandom::fill(&mut nonce)
            .map_err(|e| AppError::internal(format!("no randomness available: {e}")))?;
        let sealed = self
            .cipher()
            .encrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: plaintext,
                    aad: context,
                },
            )
            .map_err(|_| AppError::internal("sealing failed"))?;
        let mut out = Vec::with_capacity(NONCE_BYTES + sealed.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    /// Opens what [`seal`](Self::seal) made with the same key and context.
    pub fn open(&self, context: &[u8], sealed: &[u8]) -> Result<Vec<u8>, AppError> {
        if sealed.len() < NONCE_BYTES {
            return Err(AppError::internal("sealed value is too short"));
        }
        let (nonce, body) = sealed.split_at(NONCE_BYTES);
        let nonce: [u8; NONCE_BYTES] = nonce
            .try_into()
            .map_err(|_| AppError::internal("sealed value is too short"))?;
        self.cipher()
            .decrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: body,
                    aad: context,
                },
            )
            .map_err(|_| AppError::internal("a sealed value does not open with the data key"))
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(&self.0.into())
    }
}

/// What the store says about data keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyState {
    /// Nothing was ever sealed: any key (or none) may be used from now on.
    Fresh,
    /// Data is sealed under some key.
    Sealed,
}

/// Whether the store already holds data sealed under a data key.
pub async fn key_state<S: Store>(store: &S) -> Result<KeyState, AppError> {
    let check = store
        .tenant_setting(&TenantId::default_tenant(), CHECK_SETTING)
        .await
        .map_err(AppError::from_store("data key check"))?;
    Ok(if check.is_some() {
        KeyState::Sealed
    } else {
        KeyState::Fresh
    })
}

/// Checks `key` against the store's check value, recording one if there is none yet.
/// `Err` with a message for the operator when the key does not open the store's data.
pub async fn adopt<S: Store>(store: &S, key: &DataKey) -> Result<(), String> {
    let tenant = TenantId::default_tenant();
    let stored = store
        .tenant_setting(&tenant, CHECK_SETTING)
        .await
        .map_err(|e| format!("cannot read the data key check: {e}"))?;
    match stored {
        Some(text) => {
            let sealed = STANDARD
                .decode(text.trim_matches('"'))
                .map_err(|_| "the stored data key check is unreadable".to_owned())?;
            match key.open(CHECK_CONTEXT, &sealed) {
                Ok(plain) if plain == CHECK_PLAINTEXT => Ok(()),
                _ => Err(
                    "the configured data key is not the key this store's data was sealed \
                          with; start with the original key (data_key_file or IDGRAPH_DATA_KEY)"
                        .to_owned(),
                ),
            }
        }
        None => {
            let sealed = key
                .seal(CHECK_CONTEXT, CHECK_PLAINTEXT)
                .map_err(|e| e.message)?;
            // Stored as a JSON string: tenant settings are JSON documents.
            let text = format!("\"{}\"", STANDARD.encode(sealed));
            store
                .put_tenant_setting(&tenant, CHECK_SETTING, text, Timestamp::now())
                .await
                .map_err(|e: StoreError| format!("cannot record the data key check: {e}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_with_the_key_and_context() {
        let key = DataKey::generate().unwrap();
        let sealed = key.seal(b"ctx", b"secret").unwrap();
        assert_ne!(&sealed[NONCE_BYTES..], b"secret");
        assert_eq!(key.open(b"ctx", &sealed).unwrap(), b"secret");
        assert!(key.open(b"other", &sealed).is_err());
        assert!(DataKey::generate().unwrap().open(b"ctx", &sealed).is_err());
        // A fresh nonce each time: sealing twice gives different bytes.
        assert_ne!(sealed, key.seal(b"ctx", b"secret").unwrap());
    }

    #[test]
    fn the_text_form_round_trips_and_bad_keys_are_named() {
        let key = DataKey::generate().unwrap();
        let again = DataKey::from_text(&format!(" {}\n", key.to_text())).unwrap();
        assert_eq!(again.0, key.0);
        assert!(
            DataKey::from_text("not base64!")
                .unwrap_err()
                .contains("base64")
        );
        assert!(DataKey::from_text("AAAA").unwrap_err().contains("32 bytes"));
    }
}
