//! What the store needs to resolve signals: the rows of an ingested signal, what becomes of it,
//! and the read models of persons.

use idgraph_core::identity::{Identifier, IdentifierKind};
use idgraph_core::tenancy::WorkspaceName;
use idgraph_core::traits::Provenance;
use jiff::Timestamp;

/// The timeline entry a signal becomes.
#[derive(Debug, Clone, PartialEq)]
pub struct EventRow {
    /// A ULID; also the signal id everything the signal causes is recorded with.
    pub event_id: String,
    pub workspace: WorkspaceName,
    pub kind: String,
    pub name: Option<String>,
    pub occurred_at: Timestamp,
    pub ingested_at: Timestamp,
    pub schema_version: u32,
    pub message_id: String,
    /// JSON text.
    pub properties: String,
    /// JSON text.
    pub context: String,
}

/// One observed trait value.
#[derive(Debug, Clone, PartialEq)]
pub struct TraitObservation {
    pub name: String,
    /// JSON text.
    pub value: String,
    pub provenance: Provenance,
    pub set_once: bool,
}

/// A signal ready to be resolved and recorded: normalized identifiers, its event, its traits.
#[derive(Debug, Clone, PartialEq)]
pub struct SignalRecord {
    pub event: EventRow,
    pub identifiers: Vec<Identifier>,
    pub traits: Vec<TraitObservation>,
    /// Where the identifiers came from, recorded on the nodes it attaches (e.g. `segment:identify`).
    pub source: String,
}

/// A merge an operator asks for (`POST /api/v1/persons/merge`).
#[derive(Debug, Clone, PartialEq)]
pub struct ManualMerge {
    pub merge_id: String,
    pub survivor: String,
    pub absorbed: String,
    pub reason: String,
    /// The key that asked, recorded as the merge's signal (`manual:<key id>`).
    pub actor: String,
    pub at: Timestamp,
}

/// An unmerge an operator asks for (`POST /api/v1/persons/{id}/unmerge`).
#[derive(Debug, Clone, PartialEq)]
pub struct Unmerge {
    pub merge_id: String,
    pub reason: String,
    pub actor: String,
    pub at: Timestamp,
    /// Id of the keep-apart rule the unmerge makes.
    pub rule_id: String,
}

/// What an unmerge did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnmergeOutcome {
    /// The person the absorbed side was merged into, still canonical.
    pub survivor: String,
    /// The absorbed person, canonical again.
    pub restored: String,
    /// Persons that went back with it (merged into it before the merge).
    pub restored_members: Vec<String>,
    /// Events recorded after the merge that moved back, by the identifiers they arrived with.
    pub events_moved: u64,
    pub identifiers_moved: u64,
    /// Copies of consent grants recorded on the group while merged, taken from the restored
    /// side: a grant must come from the person it permits, and whose it was is unknown.
    pub grants_withdrawn: u64,
    pub rule_id: String,
}

/// An operator's rule that keeps two persons from being merged by resolution.
#[derive(Debug, Clone, PartialEq)]
pub struct KeepApartRule {
    pub rule_id: String,
    pub person_a: String,
    pub person_b: String,
    /// The merge whose undoing made the rule.
    pub merge_id: String,
    pub created_at: Timestamp,
}

/// A signal as the tenant's log holds it: what resolution saw, in the order it saw it.
/// Replaying these in `seq` order into an empty tenant rebuilds the same graph.
#[derive(Debug, Clone, PartialEq)]
pub struct LoggedSignal {
    /// Position in the tenant's log, from 1; without gaps unless persons were deleted.
    pub seq: i64,
    pub event: EventRow,
    pub identifiers: Vec<Identifier>,
    pub source: String,
}

impl LoggedSignal {
    /// The signal to resolve again. Trait observations are not part of the log's resolution
    /// record (they live in `trait_values`), so the record carries none.
    pub fn into_record(self) -> SignalRecord {
        SignalRecord {
            event: self.event,
            identifiers: self.identifiers,
            traits: Vec::new(),
            source: self.source,
        }
    }
}

impl SignalRecord {
    /// Whether resolving it changes what the person's profile shows, so its `updated_at` moves.
    pub fn changes_person(&self, resolution: &idgraph_core::resolve::Resolution) -> bool {
        !resolution.merges.is_empty() || !resolution.attach.is_empty() || !self.traits.is_empty()
    }
}

/// What became of one signal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IngestOutcome {
    /// Its message id was already stored in the workspace: acknowledged, nothing changed.
    Duplicate,
    Recorded {
        person_id: String,
        created: bool,
        merges: usize,
        conflicts: usize,
        /// Identity nodes it attached (what `Store::signal_effects` reads back as `attached`).
        attached: usize,
    },
    /// It carries an identifier of a deleted person and the tenant blocks those: nothing was
    /// recorded. `kinds` names the erased identifiers' kinds (never their values).
    Erased { kinds: Vec<String> },
}

/// A person row; `merged_into` is the final survivor when the person was absorbed.
#[derive(Debug, Clone, PartialEq)]
pub struct PersonRow {
    pub person_id: String,
    pub merged_into: Option<String>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TraitValueRow {
    pub person_id: String,
    pub workspace: WorkspaceName,
    pub name: String,
    pub value: String,
    pub provenance: Provenance,
    pub set_once: bool,
    pub signal_id: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct WorkspaceContactRow {
    pub workspace: WorkspaceName,
    pub first_seen: Timestamp,
    pub last_seen: Timestamp,
}

/// Everything needed to render a person: the survivor and what its absorbed persons carry.
#[derive(Debug, Clone, PartialEq)]
pub struct PersonProfile {
    pub person: PersonRow,
    pub merged_from: Vec<String>,
    pub identifiers: Vec<crate::IdentityNodeRow>,
    /// Every observation, oldest first; the current value is derived by precedence.
    pub traits: Vec<TraitValueRow>,
    pub workspaces: Vec<WorkspaceContactRow>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TimelineEvent {
    pub event_id: String,
    pub workspace: WorkspaceName,
    pub person_id: String,
    pub kind: String,
    pub name: Option<String>,
    pub occurred_at: Timestamp,
    pub ingested_at: Timestamp,
    pub properties: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct MergeRow {
    pub merge_id: String,
    pub survivor: String,
    pub absorbed: String,
    pub identifiers: Vec<Identifier>,
    pub signal_id: String,
    pub rule: String,
    pub at: Timestamp,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ConflictRow {
    pub conflict_id: String,
    pub person_id: String,
    pub other_person_id: Option<String>,
    pub identifier: Identifier,
    pub rule: String,
    pub signal_id: String,
    pub at: Timestamp,
}

/// `last_seen` of identity nodes and workspace contacts is kept to this resolution: a signal
/// within it of the stored value writes nothing. A returning visitor's burst of events then
/// costs no random page writes in the identity tables, which is what limits ingest rates.
pub const LAST_SEEN_RESOLUTION_SECONDS: i64 = 60;

/// Merge and conflict ids are derived from the signal id, so replaying a log reproduces them.
pub fn derived_id(signal_id: &str, what: char, index: usize) -> String {
    format!("{signal_id}{what}{index}")
}

/// Encodes a merge's identifiers as `kind<TAB>value` lines. Normalized values never contain
/// control characters, so the encoding is unambiguous.
pub fn encode_identifiers(identifiers: &[Identifier]) -> String {
    identifiers
        .iter()
        .map(|i| format!("{}\t{}", i.kind(), i.value()))
        .collect::<Vec<_>>()
        .join("\n")
}

pub fn decode_identifiers(encoded: &str) -> Vec<Identifier> {
    encoded
        .lines()
        .filter_map(|line| {
            let (kind, value) = line.split_once('\t')?;
            Some(Identifier::from_stored(
                IdentifierKind::parse(kind).ok()?,
                value.to_owned(),
            ))
        })
        .collect()
}

/// A page of a group's timeline from each member's newest events: backends read at most
/// `limit + 1` events per member straight off their (person, time) index and this picks the
/// newest across members, so a person with many absorbed persons and many events never sorts
/// its whole history.
pub fn newest_first_page(mut rows: Vec<TimelineEvent>, limit: u32) -> crate::Page<TimelineEvent> {
    rows.sort_unstable_by(|a, b| (b.occurred_at, &b.event_id).cmp(&(a.occurred_at, &a.event_id)));
    crate::Page::from_overfetch(rows, limit, timeline_cursor)
}

/// Keyset cursor of the timeline: `<occurred_at µs>:<event id>`.
pub fn timeline_cursor(event: &TimelineEvent) -> String {
    format!("{}:{}", event.occurred_at.as_microsecond(), event.event_id)
}

pub fn parse_timeline_cursor(cursor: &str) -> Option<(Timestamp, String)> {
    let (micros, event_id) = cursor.split_once(':')?;
    let at = Timestamp::from_microsecond(micros.parse().ok()?).ok()?;
    Some((at, event_id.to_owned()))
}

/// The refusal of a merge that would break a limit, as the store reports it.
pub fn limit_refusal(kind: &IdentifierKind, limit: u32) -> crate::StoreError {
    crate::StoreError::Conflict(format!(
        "the merged person would hold more than {limit} {kind} value(s); merge refused"
    ))
}

/// How a conflict's rule is recorded and shown.
pub fn conflict_rule_text(rule: &idgraph_core::resolve::ConflictRule) -> String {
    match rule {
        idgraph_core::resolve::ConflictRule::LimitExceeded { kind, limit } => {
            format!("limit: a person holds at most {limit} {kind} value(s)")
        }
        idgraph_core::resolve::ConflictRule::KeptApart => {
            "kept apart: an unmerge separated these persons; remove its rule to allow a merge"
                .to_owned()
        }
    }
}

/// Keyset cursor of `persons_by_identifier_count`: `<count>:<person id>`.
pub fn count_cursor(row: &(String, u64)) -> String {
    format!("{}:{}", row.1, row.0)
}

pub fn parse_count_cursor(cursor: &str) -> Option<(i64, String)> {
    let (count, id) = cursor.split_once(':')?;
    Some((count.parse().ok()?, id.to_owned()))
}
