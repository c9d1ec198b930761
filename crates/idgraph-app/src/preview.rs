//! Dry run of identity rule changes: replays the tenant's signal log under the current and
//! the proposed rules, each into its own in-memory graph, and reports which persons the
//! proposed rules would merge or split. Nothing is written.
//!
//! Both sides are replays, so the difference is the rules' alone: manual merges, unmerges and
//! keep-apart rules are in neither (they are not in the log). The log keeps identifiers as they
//! were normalized when they arrived; the proposed side normalizes each again under the
//! proposed rules, so newly blocked values are dropped and kind rules (policy, limit,
//! priority) take effect. A changed default region does not re-read phone numbers, which are
//! stored in E.164 already.

use std::collections::{BTreeMap, BTreeSet};

use idgraph_core::auth::Scope;
use idgraph_core::identity::{Identifier, IdentitySettings};
use idgraph_core::resolve::memory::MemoryGraph;
use idgraph_core::resolve::{PersonId, Signal, resolve};
use idgraph_store::{LoggedSignal, Store};

use crate::AppError;
use crate::access::Principal;
use crate::settings::{self, SettingsDoc};

/// Signals read from the log per page.
const PAGE: u32 = 5_000;
/// Samples listed per kind of change.
const SAMPLES: usize = 10;
/// Identifiers listed per sampled person.
const SAMPLE_IDENTIFIERS: usize = 20;
/// Default and largest number of signals one preview replays: the two in-memory graphs grow
/// with the tenant's identifiers, and a preview must not take the server's memory.
pub const DEFAULT_MAX_SIGNALS: u64 = 1_000_000;
pub const MAX_SIGNALS: u64 = 5_000_000;

/// What the proposed rules would change.
#[derive(Debug, Clone, PartialEq)]
pub struct Preview {
    /// Signals replayed on each side.
    pub signals: u64,
    /// Whether the whole log was replayed (false when it is longer than the limit asked).
    pub complete: bool,
    pub current: Side,
    pub proposed: Side,
    /// Logged identifiers the proposed rules refuse (newly blocked or no longer valid).
    pub identifiers_dropped: u64,
    /// Signals left with no identifier under the proposed rules: ingestion would reject them.
    pub signals_rejected: u64,
    /// Proposed persons that join several of today's persons.
    pub merges: Vec<Change>,
    pub merge_count: u64,
    /// Today's persons whose identifiers the proposed rules spread over several persons.
    pub splits: Vec<Change>,
    pub split_count: u64,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Side {
    pub persons: u64,
    pub merges: u64,
}

/// One sampled change: the persons of one side that become one (merge) or the parts one
/// person falls into (split). Each part names the stored person holding its first identifier.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Part {
    /// The stored (canonical) person holding the part's first identifier, if any.
    pub person_id: Option<String>,
    pub identifiers: Vec<Identifier>,
    /// How many identifiers the part has; `identifiers` lists at most a few.
    pub identifier_count: u64,
}

/// The two replays, moved to a blocking thread for each page: resolution is CPU work.
struct Replay {
    current_settings: IdentitySettings,
    proposed_settings: IdentitySettings,
    current: MemoryGraph,
    proposed: MemoryGraph,
    identifiers_dropped: u64,
    signals_rejected: u64,
}

impl Replay {
    fn apply(&mut self, signals: &[LoggedSignal]) {
        for signal in signals {
            let event = &signal.event;
            let resolution = resolve(
                &self.current_settings,
                &self.current,
                &Signal {
                    identifiers: &signal.identifiers,
                    new_person_id: event.event_id.clone(),
                    at: event.ingested_at,
                },
            );
            self.current.apply(&resolution, event.ingested_at);

            let renormalized: Vec<Identifier> = signal
                .identifiers
                .iter()
                .filter_map(|identifier| {
                    self.proposed_settings
                        .normalize(identifier.kind().as_str(), identifier.value())
                        .ok()
                })
                .collect();
            self.identifiers_dropped += (signal.identifiers.len() - renormalized.len()) as u64;
            if renormalized.is_empty() {
                self.signals_rejected += 1;
                continue;
            }
            let resolution = resolve(
                &self.proposed_settings,
                &self.proposed,
                &Signal {
                    identifiers: &renormalized,
                    new_person_id: event.event_id.clone(),
                    at: event.ingested_at,
                },
            );
            self.proposed.apply(&resolution, event.ingested_at);
        }
    }
}

/// `POST /api/v1/settings/identity/preview`: the proposed document is read like a `PUT` (a
/// partial update over the current rules) and validated the same way.
pub async fn preview<S: Store>(
    store: &S,
    principal: &Principal,
    doc: &SettingsDoc,
    max_signals: Option<u64>,
) -> Result<Preview, AppError> {
    principal.require(Scope::Admin)?;
    let max_signals = match max_signals {
        None => DEFAULT_MAX_SIGNALS,
        Some(n) if (1..=MAX_SIGNALS).contains(&n) => n,
        Some(n) => {
            return Err(AppError::invalid(
                "invalid_request",
                format!("max_signals must be between 1 and {MAX_SIGNALS}, not {n}"),
            ));
        }
    };
    let tenant = &principal.tenant_id;
    let current_settings = settings::load(store, tenant).await?;
    let proposed_settings = settings::apply_doc(&current_settings, doc)?;
    let mut replay = Replay {
        current: MemoryGraph::for_settings(&current_settings),
        proposed: MemoryGraph::for_settings(&proposed_settings),
        current_settings,
        proposed_settings,
        identifiers_dropped: 0,
        signals_rejected: 0,
    };
    let mut after = 0;
    let mut signals = 0u64;
    let complete = loop {
        let remaining = max_signals - signals;
        if remaining == 0 {
            // Whether anything is left decides `complete`.
            let next = store
                .signal_log(tenant, after, 1)
                .await
                .map_err(AppError::from_store("signal log"))?;
            break next.is_empty();
        }
        let page = store
            .signal_log(tenant, after, PAGE.min(remaining as u32))
            .await
            .map_err(AppError::from_store("signal log"))?;
        let Some(last) = page.last() else {
            break true;
        };
        after = last.seq;
        signals += page.len() as u64;
        replay = tokio::task::spawn_blocking(move || {
            replay.apply(&page);
            replay
        })
        .await
        .map_err(|e| AppError::internal(format!("preview replay failed: {e}")))?;
    };

    let current_partition = replay.current.partition();
    let proposed_partition = replay.proposed.partition();
    let owner_now = owners(&current_partition);
    let owner_then = owners(&proposed_partition);
    let mut preview = Preview {
        signals,
        complete,
        current: Side {
            persons: replay.current.person_count() as u64,
            merges: replay.current.merge_count(),
        },
        proposed: Side {
            persons: replay.proposed.person_count() as u64,
            merges: replay.proposed.merge_count(),
        },
        identifiers_dropped: replay.identifiers_dropped,
        signals_rejected: replay.signals_rejected,
        merges: Vec::new(),
        merge_count: 0,
        splits: Vec::new(),
        split_count: 0,
    };
    // A proposed person drawing identifiers from several current persons is a merge; a
    // current person whose identifiers land with several proposed persons is a split.
    // Identifiers the proposed rules drop belong to no proposed person and count as neither.
    for identifiers in proposed_partition.values() {
        let parts = group_by(identifiers, &owner_now);
        if parts.len() > 1 {
            preview.merge_count += 1;
            if preview.merges.len() < SAMPLES {
                preview
                    .merges
                    .push(describe(store, principal, parts).await?);
            }
        }
    }
    for identifiers in current_partition.values() {
        let parts = group_by(identifiers, &owner_then);
        if parts.len() > 1 {
            preview.split_count += 1;
            if preview.splits.len() < SAMPLES {
                preview
                    .splits
                    .push(describe(store, principal, parts).await?);
            }
        }
    }
    Ok(preview)
}

/// Identifier → the one person holding it. A shared value held by several persons says
/// nothing about who is whom, so it is left out and joins no part.
fn owners(partition: &BTreeMap<PersonId, BTreeSet<Identifier>>) -> BTreeMap<&Identifier, &str> {
    let mut owner: BTreeMap<&Identifier, Option<&str>> = BTreeMap::new();
    for (person, identifiers) in partition {
        for identifier in identifiers {
            owner
                .entry(identifier)
                .and_modify(|held| *held = None)
                .or_insert(Some(person.as_str()));
        }
    }
    owner
        .into_iter()
        .filter_map(|(identifier, person)| Some((identifier, person?)))
        .collect()
}

/// The identifiers grouped by the person that holds them on the other side.
fn group_by<'a>(
    identifiers: &'a BTreeSet<Identifier>,
    owner: &BTreeMap<&Identifier, &str>,
) -> Vec<Vec<&'a Identifier>> {
    let mut parts: BTreeMap<&str, Vec<&Identifier>> = BTreeMap::new();
    for identifier in identifiers {
        if let Some(person) = owner.get(identifier) {
            parts.entry(person).or_default().push(identifier);
        }
    }
    parts.into_values().collect()
}

async fn describe<S: Store>(
    store: &S,
    principal: &Principal,
    parts: Vec<Vec<&Identifier>>,
) -> Result<Change, AppError> {
    let mut described = Vec::with_capacity(parts.len());
    for identifiers in parts {
        let person_id = match identifiers.first() {
            Some(first) => store
                .lookup_person(&principal.tenant_id, first)
                .await
                .map_err(AppError::from_store("person"))?,
            None => None,
        };
        described.push(Part {
            person_id,
            identifier_count: identifiers.len() as u64,
            identifiers: identifiers
                .into_iter()
                .take(SAMPLE_IDENTIFIERS)
                .cloned()
                .collect(),
        });
    }
    Ok(Change { parts: described })
}
