//! PII at rest: the one place values are sealed, opened and indexed, shared by both backends.
//!
//! A [`Vault`] holds unwrapped data-encryption keys (DEKs) and the blind-index key, never the
//! operator's data key that wraps them (that stays in `idgraph-app`). Each backend holds one in
//! a [`VaultSlot`], swapped when the keyring changes (a rotation in another process).
//!
//! Sealed text is `~1.<key id>.<base64 of nonce ‖ ciphertext ‖ tag>` (XChaCha20-Poly1305, from
//! `xchacha.rs`, with the tenant and the column as associated data). The prefix names the key,
//! so a rotation finds the rows still under another key with a plain string comparison. Identifier values are
//! looked up by their blind index, `HMAC-SHA-256(index key, tenant ‖ kind ‖ value)` truncated to
//! 16 bytes, which does not change when DEKs rotate.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use hmac::{Hmac, KeyInit, Mac};
use idgraph_core::identity::Identifier;
use sha2::Sha256;

use crate::xchacha::{Dek, NONCE_BYTES, TAG_BYTES};
use crate::{StoreError, StoreResult};

pub const KEY_BYTES: usize = 32;
/// The JSON texts [`Vault::seal_json`] leaves unsealed.
pub const EMPTY_JSON: [&str; 4] = ["{}", "[]", "null", ""];
/// [`EMPTY_JSON`] as an SQL list, for `<column> NOT IN` in the re-seal's search for rows under
/// another key.
pub const EMPTY_JSON_SQL: &str = "('{}', '[]', 'null', '')";
const SEALED_MARK: &str = "~1.";
/// The mark of sealed bytes ([`Vault::seal_bytes`]): the nonce and ciphertext follow the key id
/// as they are, without the base64 that text columns need (a quarter of every landed row).
const SEALED_BYTES_MARK: &str = "~b1.";
/// Bytes of the HMAC kept as the blind index: 128 bits, collision-free in practice.
const INDEX_BYTES: usize = 16;

/// Columns whose values are sealed; also the associated data, so a value copied into another
/// column does not open.
pub mod column {
    pub const IDENTIFIER: &str = "identity_nodes.value";
    /// A trait value sealed by itself: PostgreSQL's rows, and the values inside a set the
    /// embedded store moved from that layout.
    pub const TRAIT: &str = "trait_values.value";
    pub const TRAIT_SET: &str = "trait_sets.observations";
    pub const EVENT_PROPERTIES: &str = "events.properties";
    pub const EVENT_CONTEXT: &str = "events.context";
    pub const EVENT_IDENTIFIERS: &str = "events.identifiers";
    pub const CONSENT_SUBJECT: &str = "consent_events.subject";
    pub const CONSENT_EVIDENCE: &str = "consent_events.evidence";
    pub const SUPPRESSION_VALUE: &str = "suppression_entries.value";
    pub const CONTACT_VALUE: &str = "contacts.value";
    pub const MERGE_IDENTIFIERS: &str = "merges.identifiers";
    pub const CONFLICT_VALUE: &str = "conflicts.value";
    pub const IMPORT_ROW: &str = "import_rows.bytes";
    pub const IMPORT_REASON: &str = "import_outcomes.reason";
    pub const IDEMPOTENT_BODY: &str = "idempotency_keys.body";
    pub const WEBHOOK_PAYLOAD: &str = "webhook_deliveries.payload";
}

/// A text column that holds one sealed value and no lookup form, in a table keyed by tenant and
/// one id column: a re-seal rewrites it the same way on both backends.
#[derive(Debug, Clone, Copy)]
pub struct SealedTextColumn {
    pub table: &'static str,
    pub key: &'static str,
    pub column: &'static str,
    /// Its associated data ([`column`]).
    pub sealed_as: &'static str,
}

/// The identifiers merges and conflicts were recorded on (a manual merge has none: empty).
pub const MERGE_RECORD_COLUMNS: [SealedTextColumn; 2] = [
    SealedTextColumn {
        table: "merges",
        key: "merge_id",
        column: "identifiers",
        sealed_as: column::MERGE_IDENTIFIERS,
    },
    SealedTextColumn {
        table: "conflicts",
        key: "conflict_id",
        column: "value",
        sealed_as: column::CONFLICT_VALUE,
    },
];

/// Webhook payloads waiting in the outbox.
pub const WEBHOOK_PAYLOADS: SealedTextColumn = SealedTextColumn {
    table: "webhook_deliveries",
    key: "delivery_id",
    column: "payload",
    sealed_as: column::WEBHOOK_PAYLOAD,
};

/// The keys a store seals and indexes with. `Vault::plaintext()` stores values as they are:
/// a store that no data key was ever given to (PostgreSQL without one), and the benchmark's
/// baseline.
#[derive(Clone)]
pub struct Vault {
    keys: Option<Keys>,
}

#[derive(Clone)]
struct Keys {
    current: u32,
    current_prefix: String,
    current_bytes_prefix: Vec<u8>,
    deks: BTreeMap<u32, Dek>,
    index: Hmac<Sha256>,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.keys {
            None => f.write_str("Vault(plaintext)"),
            Some(k) => f
                .debug_struct("Vault")
                .field("current", &k.current)
                .field("keys", &k.deks.keys().collect::<Vec<_>>())
                .finish_non_exhaustive(),
        }
    }
}

impl Vault {
    /// Stores values in the clear.
    pub fn plaintext() -> Self {
        Self { keys: None }
    }

    /// Seals new values with `current`; opens values sealed with any of `deks`.
    pub fn new(
        current: u32,
        deks: impl IntoIterator<Item = (u32, [u8; KEY_BYTES])>,
        index_key: &[u8; KEY_BYTES],
    ) -> StoreResult<Self> {
        let deks: BTreeMap<u32, Dek> = deks
            .into_iter()
            .map(|(id, key)| (id, Dek::new(key)))
            .collect();
        if !deks.contains_key(&current) {
            return Err(StoreError::Other(format!(
                "the keyring has no data-encryption key {current}"
            )));
        }
        let index = <Hmac<Sha256> as KeyInit>::new_from_slice(index_key)
            .map_err(|_| StoreError::Other("the blind-index key is unusable".into()))?;
        Ok(Self {
            keys: Some(Keys {
                current,
                current_prefix: prefix_of(current),
                current_bytes_prefix: format!("{SEALED_BYTES_MARK}{current}.").into_bytes(),
                deks,
                index,
            }),
        })
    }

    /// A vault with fresh random keys, for tests.
    pub fn random() -> StoreResult<Self> {
        Self::new(7, [(7, random_key()?)], &random_key()?)
    }

    /// Whether values are sealed (false for [`plaintext`](Self::plaintext)).
    pub fn seals(&self) -> bool {
        self.keys.is_some()
    }

    /// The id of the key new values are sealed with.
    pub fn current_key(&self) -> Option<u32> {
        self.keys.as_ref().map(|k| k.current)
    }

    /// What every value sealed with the current key starts with; rows whose sealed text does
    /// not are the ones a rotation rewrites.
    pub fn current_prefix(&self) -> Option<&str> {
        self.keys.as_ref().map(|k| k.current_prefix.as_str())
    }

    /// [`current_prefix`](Self::current_prefix) of the columns [`seal_bytes`](Self::seal_bytes)
    /// writes.
    pub fn current_bytes_prefix(&self) -> Option<&[u8]> {
        self.keys
            .as_ref()
            .map(|k| k.current_bytes_prefix.as_slice())
    }

    /// The lookup form of an identifier: its blind index when sealing, the value itself when not.
    pub fn index(&self, tenant: &str, kind: &str, value: &str) -> String {
        let Some(keys) = &self.keys else {
            return value.to_owned();
        };
        let mut mac = keys.index.clone();
        // Length prefixes keep (tenant, kind, value) unambiguous whatever the parts contain.
        for part in [tenant, kind, value] {
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part.as_bytes());
        }
        let digest = mac.finalize().into_bytes();
        URL_SAFE_NO_PAD.encode(&digest[..INDEX_BYTES])
    }

    /// How an identifier is stored: its lookup form and, when sealing, its sealed value.
    pub fn identifier(
        &self,
        tenant: &str,
        kind: &str,
        value: &str,
    ) -> StoreResult<(String, Option<String>)> {
        self.indexed(tenant, column::IDENTIFIER, kind, value)
    }

    /// How an address is stored in `column`, which is looked up by equality: its blind index
    /// (the same as the identity node's, so one address has one lookup form per tenant) and,
    /// when sealing, its value sealed for that column.
    pub fn indexed(
        &self,
        tenant: &str,
        column: &str,
        kind: &str,
        value: &str,
    ) -> StoreResult<(String, Option<String>)> {
        if !self.seals() {
            return Ok((value.to_owned(), None));
        }
        Ok((
            self.index(tenant, kind, value),
            Some(self.seal(tenant, column, value)?),
        ))
    }

    /// The lookup form of an identifier's consent subject: `<kind>:<blind index>` (the kind
    /// stays readable, as in the identity node). A person's subject, `person:<id>`, holds no PII
    /// and is its own lookup form.
    pub fn identifier_subject(&self, tenant: &str, identifier: &Identifier) -> String {
        if !self.seals() {
            return crate::ConsentSubject::key_of_identifier(identifier);
        }
        let kind = identifier.kind().as_str();
        format!("{kind}:{}", self.index(tenant, kind, identifier.value()))
    }

    /// The lookup form of a stored plain subject key, for rows written before the store had a
    /// key. A key starting `person:` is taken for a person's, as the store always read it.
    pub fn subject_key_index(&self, tenant: &str, key: &str) -> String {
        if !self.seals() || key.starts_with(crate::PERSON_SUBJECT_PREFIX) {
            return key.to_owned();
        }
        match key.split_once(':') {
            Some((kind, value)) => format!("{kind}:{}", self.index(tenant, kind, value)),
            None => self.index(tenant, "", key),
        }
    }

    /// A consent subject key sealed, or `None` in plaintext mode. Person keys are sealed too:
    /// one rule for every row lets a re-seal find the rows left by the sealed column alone.
    pub fn seal_subject(&self, tenant: &str, key: &str) -> StoreResult<Option<String>> {
        if !self.seals() {
            return Ok(None);
        }
        self.seal(tenant, column::CONSENT_SUBJECT, key).map(Some)
    }

    /// Seals `plain` for `column` of `tenant`'s rows (returns it unchanged in plaintext mode).
    pub fn seal(&self, tenant: &str, column: &str, plain: &str) -> StoreResult<String> {
        if !self.seals() {
            return Ok(plain.to_owned());
        }
        self.seal_raw(tenant, column, plain.as_bytes())
    }

    /// Seals an event's JSON for `column`, except JSON that holds nothing (`{}`, `[]`, `null`,
    /// empty), which is stored as it is: most events have an empty context or properties, and
    /// sealing them would only add a nonce and a tag to every row (about 60 bytes, through the
    /// WAL and its fsync) to hide that there was nothing. [`open`](Self::open) returns it as
    /// it is; a re-seal skips it (`EMPTY_JSON_SQL`).
    pub fn seal_json(&self, tenant: &str, column: &str, plain: &str) -> StoreResult<String> {
        if EMPTY_JSON.contains(&plain) {
            return Ok(plain.to_owned());
        }
        self.seal(tenant, column, plain)
    }

    /// Seals bytes that need not be text (a file's row as it was uploaded) into bytes: the
    /// mark and key id, then the nonce and ciphertext as they are. Empty stays empty: an erased
    /// row holds nothing to hide.
    pub fn seal_bytes(&self, tenant: &str, column: &str, plain: &[u8]) -> StoreResult<Vec<u8>> {
        let Some(keys) = &self.keys else {
            return Ok(plain.to_vec());
        };
        if plain.is_empty() {
            return Ok(Vec::new());
        }
        let prefix = &keys.current_bytes_prefix;
        let mut out = Vec::with_capacity(prefix.len() + NONCE_BYTES + plain.len() + TAG_BYTES);
        out.extend_from_slice(prefix);
        self.seal_into(tenant, column, plain, &mut out)?;
        Ok(out)
    }

    /// Opens what [`seal_bytes`](Self::seal_bytes) made, and bytes sealed as text before it
    /// made bytes; bytes that are not sealed are returned as they are.
    pub fn open_bytes(&self, tenant: &str, column: &str, stored: Vec<u8>) -> StoreResult<Vec<u8>> {
        if let Some(rest) = stored.strip_prefix(SEALED_BYTES_MARK.as_bytes()) {
            let dot = rest
                .iter()
                .position(|b| *b == b'.')
                .ok_or_else(|| StoreError::Other("a sealed value is malformed".into()))?;
            let id = std::str::from_utf8(&rest[..dot])
                .ok()
                .and_then(|id| id.parse::<u32>().ok())
                .ok_or_else(|| StoreError::Other("a sealed value names no key".into()))?;
            return self.open_sealed(tenant, column, id, &rest[dot + 1..]);
        }
        if !stored.starts_with(SEALED_MARK.as_bytes()) {
            return Ok(stored);
        }
        let text = String::from_utf8(stored)
            .map_err(|_| StoreError::Other("a sealed value is malformed".into()))?;
        self.open_raw(tenant, column, &text)
    }

    fn seal_raw(&self, tenant: &str, column: &str, plain: &[u8]) -> StoreResult<String> {
        let Some(keys) = &self.keys else {
            return Err(StoreError::Other("no data key to seal with".into()));
        };
        let mut bytes = Vec::with_capacity(NONCE_BYTES + plain.len() + TAG_BYTES);
        self.seal_into(tenant, column, plain, &mut bytes)?;
        let mut out = String::with_capacity(keys.current_prefix.len() + bytes.len() * 4 / 3 + 4);
        out.push_str(&keys.current_prefix);
        STANDARD_NO_PAD.encode_string(&bytes, &mut out);
        Ok(out)
    }

    /// Appends a fresh nonce and the ciphertext of `plain` (with its tag) under the current key.
    fn seal_into(
        &self,
        tenant: &str,
        column: &str,
        plain: &[u8],
        out: &mut Vec<u8>,
    ) -> StoreResult<()> {
        let Some(keys) = &self.keys else {
            return Err(StoreError::Other("no data key to seal with".into()));
        };
        let cipher = keys
            .deks
            .get(&keys.current)
            .ok_or_else(|| StoreError::Other("the current data key is missing".into()))?;
        // The thread's CSPRNG (ChaCha, seeded and reseeded from the operating system): a
        // 192-bit random nonce needs unpredictability, not a system call per value.
        let mut nonce = [0u8; NONCE_BYTES];
        rand::fill(&mut nonce);
        let aad = associated(tenant, column);
        let start = out.len();
        out.extend_from_slice(&nonce);
        out.extend_from_slice(plain);
        let tag = cipher
            .seal_in_place(&nonce, &aad, &mut out[start + NONCE_BYTES..])
            .map_err(|_| StoreError::Other("sealing failed".into()))?;
        out.extend_from_slice(&tag);
        Ok(())
    }

    /// Opens what [`seal`](Self::seal) made; text that is not sealed (plaintext mode, or a row
    /// written before its store had a key and not yet sealed) is returned as it is.
    pub fn open(&self, tenant: &str, column: &str, stored: String) -> StoreResult<String> {
        if !stored.starts_with(SEALED_MARK) {
            return Ok(stored);
        }
        let plain = self.open_raw(tenant, column, &stored)?;
        String::from_utf8(plain).map_err(|_| StoreError::Other("a sealed value is not text".into()))
    }

    fn open_raw(&self, tenant: &str, column: &str, stored: &str) -> StoreResult<Vec<u8>> {
        let Some(rest) = stored.strip_prefix(SEALED_MARK) else {
            return Err(StoreError::Other("a sealed value is malformed".into()));
        };
        let (id, body) = rest
            .split_once('.')
            .ok_or_else(|| StoreError::Other("a sealed value is malformed".into()))?;
        let id: u32 = id
            .parse()
            .map_err(|_| StoreError::Other("a sealed value names no key".into()))?;
        let bytes = STANDARD_NO_PAD
            .decode(body)
            .map_err(|_| StoreError::Other("a sealed value is malformed".into()))?;
        self.open_sealed(tenant, column, id, &bytes)
    }

    /// Opens a nonce followed by a ciphertext, sealed with data-encryption key `id`.
    fn open_sealed(
        &self,
        tenant: &str,
        column: &str,
        id: u32,
        bytes: &[u8],
    ) -> StoreResult<Vec<u8>> {
        let Some(keys) = &self.keys else {
            return Err(StoreError::Other(
                "a sealed value was read but no data key is configured".into(),
            ));
        };
        let cipher = keys.deks.get(&id).ok_or_else(|| {
            StoreError::Other(format!(
                "a value is sealed with data-encryption key {id}, which is not in the keyring"
            ))
        })?;
        if bytes.len() < NONCE_BYTES {
            return Err(StoreError::Other("a sealed value is too short".into()));
        }
        let (nonce, ciphertext) = bytes.split_at(NONCE_BYTES);
        let nonce: [u8; NONCE_BYTES] = nonce
            .try_into()
            .map_err(|_| StoreError::Other("a sealed value is too short".into()))?;
        let aad = associated(tenant, column);
        cipher.open(&nonce, &aad, ciphertext).map_err(|_| {
            StoreError::Other(format!(
                "a value sealed with data-encryption key {id} does not open"
            ))
        })
    }

    /// Opens a consent event read with its stored subject and evidence.
    pub fn open_consent(
        &self,
        tenant: &str,
        event: &mut crate::ConsentEventRow,
    ) -> StoreResult<()> {
        event.subject = self.open(
            tenant,
            column::CONSENT_SUBJECT,
            std::mem::take(&mut event.subject),
        )?;
        if let Some(evidence) = event.evidence.take() {
            event.evidence = Some(self.open(tenant, column::CONSENT_EVIDENCE, evidence)?);
        }
        Ok(())
    }

    /// Whether `stored` is sealed with the current key (always true in plaintext mode, where
    /// nothing is to be rewritten).
    pub fn is_current(&self, stored: &str) -> bool {
        self.current_prefix().is_none_or(|p| stored.starts_with(p))
    }
}

/// Opening what backends read, shared so both open (and order) alike.
impl Vault {
    /// Opens identity nodes read with their sealed value where they have one (else their plain
    /// value) and puts them back in (kind, value, person) order, which SQL cannot give over
    /// sealed values.
    pub fn open_nodes(
        &self,
        tenant: &str,
        mut nodes: Vec<crate::IdentityNodeRow>,
    ) -> StoreResult<Vec<crate::IdentityNodeRow>> {
        if !self.seals() {
            return Ok(nodes);
        }
        for node in &mut nodes {
            node.value = self.open(tenant, column::IDENTIFIER, std::mem::take(&mut node.value))?;
        }
        nodes.sort_by(|a, b| {
            (a.kind.as_str(), &a.value, &a.person_id).cmp(&(
                b.kind.as_str(),
                &b.value,
                &b.person_id,
            ))
        });
        Ok(nodes)
    }

    pub fn open_traits(
        &self,
        tenant: &str,
        traits: &mut [crate::TraitValueRow],
    ) -> StoreResult<()> {
        for t in traits {
            t.value = self.open(tenant, column::TRAIT, std::mem::take(&mut t.value))?;
        }
        Ok(())
    }

    pub fn open_event(&self, tenant: &str, event: &mut crate::EventRow) -> StoreResult<()> {
        event.properties = self.open(
            tenant,
            column::EVENT_PROPERTIES,
            std::mem::take(&mut event.properties),
        )?;
        event.context = self.open(
            tenant,
            column::EVENT_CONTEXT,
            std::mem::take(&mut event.context),
        )?;
        Ok(())
    }

    pub fn open_timeline(
        &self,
        tenant: &str,
        events: &mut [crate::TimelineEvent],
    ) -> StoreResult<()> {
        for e in events {
            e.properties = self.open(
                tenant,
                column::EVENT_PROPERTIES,
                std::mem::take(&mut e.properties),
            )?;
        }
        Ok(())
    }

    /// An event's identifiers as `encode_identifiers` wrote them, sealed.
    pub fn seal_identifiers(
        &self,
        tenant: &str,
        identifiers: &[Identifier],
    ) -> StoreResult<String> {
        self.seal(
            tenant,
            column::EVENT_IDENTIFIERS,
            &crate::encode_identifiers(identifiers),
        )
    }

    pub fn open_identifiers(&self, tenant: &str, stored: String) -> StoreResult<Vec<Identifier>> {
        Ok(crate::decode_identifiers(&self.open(
            tenant,
            column::EVENT_IDENTIFIERS,
            stored,
        )?))
    }

    /// Seals an import's landed rows (the verbatim file text) before they are stored.
    pub fn seal_landed(&self, tenant: &str, rows: &mut [crate::LandedRow]) -> StoreResult<()> {
        for row in rows {
            row.bytes = self.seal_bytes(tenant, column::IMPORT_ROW, &row.bytes)?;
        }
        Ok(())
    }

    pub fn open_landed(&self, tenant: &str, rows: &mut [crate::LandedRow]) -> StoreResult<()> {
        for row in rows {
            row.bytes =
                self.open_bytes(tenant, column::IMPORT_ROW, std::mem::take(&mut row.bytes))?;
        }
        Ok(())
    }

    /// Seals the reasons of row outcomes: a rejection may quote the value it refused.
    pub fn seal_outcomes(
        &self,
        tenant: &str,
        outcomes: &mut [crate::RowOutcome],
    ) -> StoreResult<()> {
        for outcome in outcomes {
            if let Some(reason) = &outcome.reason {
                outcome.reason = Some(self.seal(tenant, column::IMPORT_REASON, reason)?);
            }
        }
        Ok(())
    }

    pub fn open_outcomes(
        &self,
        tenant: &str,
        outcomes: &mut [crate::RowOutcome],
    ) -> StoreResult<()> {
        for outcome in outcomes {
            if let Some(reason) = outcome.reason.take() {
                outcome.reason = Some(self.open(tenant, column::IMPORT_REASON, reason)?);
            }
        }
        Ok(())
    }

    /// A response kept for replay, sealed: it may quote what the request carried.
    pub fn seal_response(
        &self,
        tenant: &str,
        response: Option<crate::StoredResponse>,
    ) -> StoreResult<Option<crate::StoredResponse>> {
        response
            .map(|mut r| {
                r.body = self.seal_bytes(tenant, column::IDEMPOTENT_BODY, &r.body)?;
                Ok(r)
            })
            .transpose()
    }

    pub fn open_begin(
        &self,
        tenant: &str,
        begin: crate::IdempotencyBegin,
    ) -> StoreResult<crate::IdempotencyBegin> {
        Ok(match begin {
            crate::IdempotencyBegin::Replay(mut r) => {
                r.body =
                    self.open_bytes(tenant, column::IDEMPOTENT_BODY, std::mem::take(&mut r.body))?;
                crate::IdempotencyBegin::Replay(r)
            }
            other => other,
        })
    }

    /// Whether a stored response body (sealed or not) quotes any of `values`: deletion drops
    /// the replayable responses that would give an erased address back.
    pub fn body_quotes(&self, tenant: &str, stored: Vec<u8>, values: &[&str]) -> StoreResult<bool> {
        let body = self.open_bytes(tenant, column::IDEMPOTENT_BODY, stored)?;
        Ok(values
            .iter()
            .any(|v| !v.is_empty() && body.windows(v.len()).any(|w| w == v.as_bytes())))
    }

    /// Opens an outbox row's payload (which names persons' identifiers and traits).
    pub fn open_delivery(
        &self,
        tenant: &str,
        delivery: &mut crate::WebhookDelivery,
    ) -> StoreResult<()> {
        delivery.payload = self.open(
            tenant,
            column::WEBHOOK_PAYLOAD,
            std::mem::take(&mut delivery.payload),
        )?;
        Ok(())
    }

    /// The identifiers a merge was made on, as stored: sealed, except a manual merge's (none),
    /// which stays empty.
    pub fn seal_merge_identifiers(
        &self,
        tenant: &str,
        identifiers: &[Identifier],
    ) -> StoreResult<String> {
        if identifiers.is_empty() {
            return Ok(String::new());
        }
        self.seal(
            tenant,
            column::MERGE_IDENTIFIERS,
            &crate::encode_identifiers(identifiers),
        )
    }

    pub fn open_merge_identifiers(
        &self,
        tenant: &str,
        stored: String,
    ) -> StoreResult<Vec<Identifier>> {
        Ok(crate::decode_identifiers(&self.open(
            tenant,
            column::MERGE_IDENTIFIERS,
            stored,
        )?))
    }
}

/// A signal's values in the form the store writes them, made before the store's writer takes
/// the signal. Sealing is CPU work any thread can do, while the writer (SQLite's one writer
/// thread, PostgreSQL's tenant lock) is what ingestion queues on: sealing there would add its
/// microseconds to every signal behind it.
#[derive(Debug, Clone)]
pub struct SealedSignal {
    pub properties: String,
    pub context: String,
    /// The event's identifiers, as `encode_identifiers` wrote them, sealed.
    pub identifiers: String,
    /// The blind index and sealed value of each of the signal's identifiers, in its order.
    pub nodes: Vec<(String, Option<String>)>,
    /// The signal's trait observations as one sealed set (`None`: it observed none).
    pub traits: Option<crate::trait_set::SealedSet>,
    /// The key it was sealed with: a writer that finds another key current (a rotation was
    /// promoted meanwhile) seals again, or the row would land under the retired key after the
    /// rotation's last pass.
    pub key: Option<u32>,
}

impl SealedSignal {
    /// The blind index and sealed value of one of `signal`'s identifiers.
    pub fn node<'a>(
        &'a self,
        signal: &crate::SignalRecord,
        identifier: &idgraph_core::identity::Identifier,
    ) -> Option<&'a (String, Option<String>)> {
        let position = signal.identifiers.iter().position(|i| i == identifier)?;
        self.nodes.get(position)
    }
}

impl Vault {
    pub fn seal_signal(
        &self,
        tenant: &str,
        signal: &crate::SignalRecord,
    ) -> StoreResult<SealedSignal> {
        Ok(SealedSignal {
            properties: self.seal_json(
                tenant,
                column::EVENT_PROPERTIES,
                &signal.event.properties,
            )?,
            context: self.seal_json(tenant, column::EVENT_CONTEXT, &signal.event.context)?,
            identifiers: self.seal_identifiers(tenant, &signal.identifiers)?,
            nodes: signal
                .identifiers
                .iter()
                .map(|i| self.identifier(tenant, i.kind().as_str(), i.value()))
                .collect::<StoreResult<_>>()?,
            traits: crate::trait_set::seal(self, tenant, &signal.traits)?,
            key: self.current_key(),
        })
    }
}

fn prefix_of(id: u32) -> String {
    format!("{SEALED_MARK}{id}.")
}

fn associated(tenant: &str, column: &str) -> Vec<u8> {
    let mut aad = Vec::with_capacity(tenant.len() + column.len() + 1);
    aad.extend_from_slice(tenant.as_bytes());
    aad.push(0);
    aad.extend_from_slice(column.as_bytes());
    aad
}

/// 32 bytes from the operating system's CSPRNG.
pub fn random_key() -> StoreResult<[u8; KEY_BYTES]> {
    let mut key = [0u8; KEY_BYTES];
    getrandom::fill(&mut key)
        .map_err(|e| StoreError::Other(format!("no randomness available: {e}")))?;
    Ok(key)
}

/// Where a backend keeps its current vault; replaced whole when the keyring changes, so a
/// reader always sees one consistent set of keys.
#[derive(Debug)]
pub struct VaultSlot(RwLock<Arc<Vault>>);

impl Default for VaultSlot {
    fn default() -> Self {
        Self(RwLock::new(Arc::new(Vault::plaintext())))
    }
}

impl VaultSlot {
    pub fn get(&self) -> Arc<Vault> {
        match self.0.read() {
            Ok(v) => Arc::clone(&v),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    pub fn set(&self, vault: Vault) {
        let vault = Arc::new(vault);
        match self.0.write() {
            Ok(mut v) => *v = vault,
            Err(poisoned) => *poisoned.into_inner() = vault,
        }
    }
}

/// What one batch of a re-seal did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ResealProgress {
    /// Rows rewritten under the current key in this batch.
    pub rewritten: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vault(current: u32, keys: &[(u32, [u8; 32])], index: &[u8; 32]) -> Vault {
        Vault::new(current, keys.iter().copied(), index).expect("vault")
    }

    #[test]
    fn values_open_with_any_key_of_the_ring_and_only_in_their_column_and_tenant() {
        let (k1, k2, ix) = ([1u8; 32], [2u8; 32], [9u8; 32]);
        let old = vault(1, &[(1, k1)], &ix);
        let sealed = old.seal("t", column::TRAIT, "\"ada\"").expect("seal");
        assert!(sealed.starts_with("~1.1."));
        assert!(!sealed.contains("ada"));
        assert_ne!(
            sealed,
            old.seal("t", column::TRAIT, "\"ada\"").expect("seal")
        );
        let both = vault(2, &[(1, k1), (2, k2)], &ix);
        assert_eq!(
            both.open("t", column::TRAIT, sealed.clone()).expect("open"),
            "\"ada\""
        );
        assert!(!both.is_current(&sealed));
        assert!(both.is_current(&both.seal("t", column::TRAIT, "x").expect("seal")));
        assert!(both.open("u", column::TRAIT, sealed.clone()).is_err());
        assert!(
            both.open("t", column::EVENT_CONTEXT, sealed.clone())
                .is_err()
        );
        let other = vault(2, &[(2, k2)], &ix);
        assert!(other.open("t", column::TRAIT, sealed).is_err());
        // Unsealed text passes through: rows from before the store had a key.
        assert_eq!(
            other.open("t", column::TRAIT, "{}".into()).expect("plain"),
            "{}"
        );
    }

    #[test]
    fn event_json_is_sealed_unless_it_holds_nothing() {
        let v = vault(1, &[(1, [1u8; 32])], &[9u8; 32]);
        for empty in EMPTY_JSON {
            assert_eq!(
                v.seal_json("t", column::EVENT_CONTEXT, empty)
                    .expect("seal"),
                empty
            );
        }
        for held in [r#"{"ip":"10.0.0.1"}"#, "[1]", " {}", "0"] {
            let sealed = v.seal_json("t", column::EVENT_CONTEXT, held).expect("seal");
            assert!(sealed.starts_with("~1.1."), "{held} is sealed");
            assert_eq!(
                v.open("t", column::EVENT_CONTEXT, sealed).expect("open"),
                held
            );
        }
        // The re-seal's SQL list names the same texts.
        for empty in EMPTY_JSON {
            assert!(EMPTY_JSON_SQL.contains(&format!("'{empty}'")));
        }
    }

    #[test]
    fn bytes_seal_whatever_they_hold_and_empty_stays_empty() {
        let v = vault(1, &[(1, [1u8; 32])], &[9u8; 32]);
        let row = b"ada@x.io,\xff\xfe,Lovelace".to_vec();
        let sealed = v.seal_bytes("t", column::IMPORT_ROW, &row).expect("seal");
        assert!(sealed.starts_with(b"~b1.1."));
        assert_eq!(v.current_bytes_prefix(), Some(&b"~b1.1."[..]));
        // Bytes, not base64: the prefix, the nonce, the row and the tag.
        assert_eq!(sealed.len(), 6 + 24 + row.len() + 16);
        assert!(!sealed.windows(3).any(|w| w == b"ada"));
        assert_eq!(
            v.open_bytes("t", column::IMPORT_ROW, sealed.clone())
                .expect("open"),
            row
        );
        assert!(v.open_bytes("t", column::IMPORT_REASON, sealed).is_err());
        assert!(
            v.seal_bytes("t", column::IMPORT_ROW, b"")
                .expect("seal")
                .is_empty()
        );
        assert_eq!(
            v.open_bytes("t", column::IMPORT_ROW, row.clone())
                .expect("plain"),
            row
        );
    }

    #[test]
    fn bytes_sealed_as_text_before_still_open() {
        let v = vault(2, &[(1, [1u8; 32]), (2, [2u8; 32])], &[9u8; 32]);
        let old = vault(1, &[(1, [1u8; 32])], &[9u8; 32]);
        let row = b"ada@x.io,Lovelace".to_vec();
        let as_text = old
            .seal_raw("t", column::IMPORT_ROW, &row)
            .expect("seal")
            .into_bytes();
        assert!(as_text.starts_with(b"~1.1."));
        assert_eq!(
            v.open_bytes("t", column::IMPORT_ROW, as_text)
                .expect("open"),
            row
        );
        let mut tampered = v.seal_bytes("t", column::IMPORT_ROW, &row).expect("seal");
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert!(v.open_bytes("t", column::IMPORT_ROW, tampered).is_err());
        assert!(
            v.open_bytes("t", column::IMPORT_ROW, b"~b1.x.abc".to_vec())
                .is_err()
        );
        assert!(
            v.open_bytes("t", column::IMPORT_ROW, b"~b1.9.".to_vec())
                .is_err()
        );
    }

    #[test]
    fn the_blind_index_is_keyed_stable_across_deks_and_separates_its_parts() {
        let ix = [9u8; 32];
        let a = vault(1, &[(1, [1u8; 32])], &ix);
        let b = vault(2, &[(2, [2u8; 32])], &ix);
        assert_eq!(
            a.index("t", "email", "a@x.io"),
            b.index("t", "email", "a@x.io")
        );
        assert_ne!(
            a.index("t", "email", "a@x.io"),
            a.index("u", "email", "a@x.io")
        );
        assert_ne!(
            a.index("t", "email", "a@x.io"),
            a.index("t", "phone", "a@x.io")
        );
        assert_ne!(
            a.index("t", "emai", "la@x.io"),
            a.index("t", "email", "a@x.io")
        );
        let c = vault(1, &[(1, [1u8; 32])], &[8u8; 32]);
        assert_ne!(
            a.index("t", "email", "a@x.io"),
            c.index("t", "email", "a@x.io")
        );
        assert!(!a.index("t", "email", "a@x.io").contains("a@x.io"));
        assert_eq!(Vault::plaintext().index("t", "email", "a@x.io"), "a@x.io");
    }
}
