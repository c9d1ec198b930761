//! Deleting a person: what a request asks for, what it did, and what a purge removed.
//!
//! A request runs in one transaction: the person's group stops existing for every read, its
//! identifiers become tombstones (`idgraph_core::privacy`), and what is keyed by an identifier
//! value (suppression entries, consent of the address, contacts) is rewritten or removed while
//! the value is still known. What is keyed by the person (events, traits, consent given to the
//! person, import rows) stays, unreachable, until the purge after the retention window.

use jiff::Timestamp;

/// `DELETE /api/v1/persons/{id}`, as the store receives it.
#[derive(Debug, Clone, PartialEq)]
pub struct DeletionRequest {
    /// Any id of the group: a survivor or a person merged into it.
    pub person_id: String,
    pub at: Timestamp,
    /// When the purge may remove what the person left.
    pub purge_after: Timestamp,
    /// Fresh random bytes, used as the tenant's tombstone salt if it has none yet.
    pub salt_candidate: Vec<u8>,
}

/// What a deletion request did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeletionOutcome {
    /// The canonical person the request named.
    pub person_id: String,
    /// Every person of its group, the canonical one included.
    pub members: Vec<String>,
    /// Identifiers turned into tombstones (a value another person still holds is not one).
    pub identifiers_erased: u64,
}

/// What one purge removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PurgeOutcome {
    /// Persons whose retention window had passed, now purged.
    pub persons: u64,
    pub events: u64,
    pub trait_values: u64,
    pub consent_events: u64,
    pub import_rows: u64,
}

impl PurgeOutcome {
    pub fn add(&mut self, other: &PurgeOutcome) {
        self.persons += other.persons;
        self.events += other.events;
        self.trait_values += other.trait_values;
        self.consent_events += other.consent_events;
        self.import_rows += other.import_rows;
    }
}

/// The reason an import row or a signal is refused when it carries an erased identifier.
pub fn erased_reason(kinds: &[String]) -> String {
    format!(
        "carries an identifier of a deleted person ({}); the tenant blocks erased identifiers",
        kinds.join(", ")
    )
}

/// The kinds of a signal's identifiers whose tombstones `is_erased` knows, in order, once each.
pub fn erased_kinds(
    salt: &[u8],
    identifiers: &[idgraph_core::identity::Identifier],
    mut is_erased: impl FnMut(&str) -> bool,
) -> Vec<String> {
    let mut kinds: Vec<String> = Vec::new();
    for identifier in identifiers {
        let kind = identifier.kind().as_str();
        if !kinds.iter().any(|k| k == kind)
            && is_erased(&idgraph_core::privacy::tombstone(salt, identifier))
        {
            kinds.push(kind.to_owned());
        }
    }
    kinds
}
