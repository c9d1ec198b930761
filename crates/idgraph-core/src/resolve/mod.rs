//! Identity resolution: which person a signal belongs to, and which merges and links it causes.
//!
//! [`resolve`] is a pure function of the settings, a read-only view of the graph and the signal;
//! it returns a [`Resolution`] for the caller to apply (the store in a transaction, or
//! [`memory::MemoryGraph`] in tests and benchmarks). Replaying the same signals in the same order
//! therefore rebuilds the same graph.

pub mod memory;

use std::collections::{BTreeMap, BTreeSet, HashSet};

use jiff::Timestamp;

use crate::identity::{Identifier, IdentifierKind, IdentitySettings, Policy};

pub type PersonId = String;

/// What the store knows about a candidate person, gathered before resolving.
#[derive(Debug, Clone, PartialEq)]
pub struct PersonView {
    pub id: PersonId,
    pub created_at: Timestamp,
    /// The person's current values per kind, at least for every kind that has a limit.
    pub identifiers: BTreeMap<IdentifierKind, BTreeSet<String>>,
}

/// Read access to the current graph. Owners are canonical (already followed through merges).
pub trait GraphView {
    /// Canonical persons holding this identifier (0 or 1 for a unique kind, any number for shared).
    fn owners(&self, identifier: &Identifier) -> Vec<PersonId>;
    fn person(&self, id: &PersonId) -> Option<PersonView>;

    /// [`Self::owners`] of each identifier, handed to `found` with the identifier's position
    /// in `identifiers`, in any order. [`resolve`] asks for all of a signal's unique
    /// identifiers at once, so that a graph can look them up together instead of waiting on
    /// each in turn (memory for the in-memory graph, a round trip for a database).
    fn owners_of_each(&self, identifiers: &[&Identifier], found: &mut dyn FnMut(usize, PersonId)) {
        for (position, identifier) in identifiers.iter().enumerate() {
            for owner in self.owners(identifier) {
                found(position, owner);
            }
        }
    }

    /// Whether an operator's rule (made by an unmerge) keeps these two canonical persons apart:
    /// then no signal merges them, whatever it carries.
    fn kept_apart(&self, _a: &PersonId, _b: &PersonId) -> bool {
        false
    }
}

/// One signal's identifiers, already normalized; [`resolve`] de-duplicates them.
#[derive(Debug, Clone)]
pub struct Signal<'a> {
    /// In the caller's order, which decides which values are kept when a limit is reached.
    pub identifiers: &'a [Identifier],
    /// Id for a person this signal creates (the caller derives it deterministically from the
    /// signal id, so a replay gives the same ids).
    pub new_person_id: PersonId,
    pub at: Timestamp,
}

/// What a signal does to the graph, in the order it must be applied: merges, then links.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolution {
    /// The person the signal belongs to (the survivor, or a new person).
    pub person: PersonId,
    /// Whether `person` is the signal's `new_person_id`, to be created.
    pub created: bool,
    /// In the order they are applied.
    pub merges: Vec<MergeStep>,
    /// Identifiers to link to `person` (new nodes, or new links of a shared value).
    pub attach: Vec<Identifier>,
    /// Identifiers already on `person` (bump last_seen), including those it gets by `merges`.
    pub touch: Vec<Identifier>,
    /// Merges refused and identifiers not attached because of a limit.
    pub conflicts: Vec<Conflict>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct MergeStep {
    pub survivor: PersonId,
    pub absorbed: PersonId,
    /// The signal's identifiers that linked them (those owned by `absorbed`).
    pub identifiers: Vec<Identifier>,
    /// Why this person survived, in words, for the merge record.
    pub rule: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Conflict {
    /// The identifier that was not attached, or that linked a person who was not merged.
    pub identifier: Identifier,
    /// The signal's person (the survivor).
    pub person: PersonId,
    /// The person that was not merged; `None` when a new value was not attached.
    pub other_person: Option<PersonId>,
    pub rule: ConflictRule,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ConflictRule {
    /// The person would hold more than `limit` values of `kind`.
    LimitExceeded { kind: IdentifierKind, limit: u32 },
    /// An operator's rule keeps the two persons apart.
    KeptApart,
}

/// Resolves one signal against the current graph.
///
/// 1. The identifiers are de-duplicated, keeping the first occurrence.
/// 2. The canonical owners of the signal's `unique` identifiers are the candidates; each is
///    ranked by the strongest identifier that found it, then by age (`created_at`), then by id.
/// 3. The signal is then built up strongest first, the way a careful human would read it: the
///    candidates in rank order and the signal's new values of limited `unique` kinds at their
///    kind's priority (after the candidates of that priority, so a known person wins over a new
///    value). A candidate joins the group unless the union of what the group holds and what it
///    holds would break a limit (two different external_ids, six emails); a new value joins
///    unless its kind is at its limit. Whatever would break a limit is refused and recorded as
///    a conflict, and its identifiers stay where they are. So the weakest evidence is what gets
///    dropped: `{userId: "bob", email: <alice's email>}` does not put bob's activity on alice,
///    whose external_id differs; it makes bob a person and records the conflict.
/// 4. No candidate joined: the signal creates `new_person_id`. Otherwise the first candidate
///    that joined survives (the one found through the highest-priority identifier; ties: the
///    oldest person, then the smallest id) and every other one that joined is merged into it.
/// 5. The remaining identifiers, in the signal's order: those already on the group are
///    touched; new ones are attached to the person (a new value of a limited `unique` kind only
///    if it joined in step 3). A `shared` identifier never causes a merge; it is attached,
///    within its limit, unless the person already holds it.
///
/// Decisions the rules leave open:
/// - a survivor that already holds more values than a (since lowered) limit may still absorb a
///   candidate that adds no value of that kind;
/// - an identifier whose kind the settings do not know (they changed since it was normalized)
///   is treated as `shared`, unlimited and weakest, so it is kept but never merges anyone;
/// - a candidate the graph cannot describe (`person` returns `None`) is treated as the newest
///   person, holding nothing else;
/// - a signal without any identifier still creates its person: callers should not send one.
pub fn resolve(
    settings: &IdentitySettings,
    graph: &impl GraphView,
    signal: &Signal<'_>,
) -> Resolution {
    // Signals carry a handful of identifiers: their items need no allocation.
    let mut few;
    let mut many = Vec::new();
    let items: &mut [Item<'_>] = match signal.identifiers.first() {
        Some(first) if signal.identifiers.len() <= 8 => {
            few = [Item {
                identifier: first,
                priority: u32::MAX,
                limit: None,
                owners: Owners::Shared,
                joined: false,
            }; 8];
            let mut count = 0;
            classify(settings, signal.identifiers, |item| {
                few[count] = item;
                count += 1;
            });
            &mut few[..count]
        }
        _ => {
            classify(settings, signal.identifiers, |item| many.push(item));
            &mut many
        }
    };
    let mut candidates = find_candidates(graph, items);
    if candidates.len() > 1 {
        order_candidates(graph, items, &mut candidates);
    }
    let mut group = Group::default();
    let mut refusals: Vec<Refusal> = Vec::new();
    build_group(
        settings,
        graph,
        items,
        &mut candidates,
        &mut group,
        &mut refusals,
    );

    let created = group.survivor.is_none();
    let person = match group.survivor {
        // Moved, not copied: only a later fetch of the survivor needs its id again, and
        // `Owners::Shared` below puts a copy back for that.
        Some(index) => std::mem::take(&mut candidates[index].id),
        None => signal.new_person_id.clone(),
    };
    let mut resolution = Resolution {
        merges: merge_steps(items, &candidates, &group, &person),
        person,
        created,
        attach: Vec::new(),
        touch: Vec::new(),
        conflicts: Vec::new(),
    };
    let mut conflicts: Vec<Conflict> = refusals
        .into_iter()
        .map(|refusal| Conflict {
            identifier: refusal.identifier.clone(),
            person: resolution.person.clone(),
            other_person: refusal.other.map(|index| candidates[index].id.clone()),
            rule: refusal.rule,
        })
        .collect();

    for item in items.iter() {
        match item.owners {
            Owners::Unique(Some(index)) => {
                if candidates[index].outcome != Outcome::Refused {
                    resolution.touch.push(item.identifier.clone());
                }
                // A refused candidate's identifiers got their conflict in `build_group`.
            }
            Owners::Unique(None) => {
                // Unlimited kinds (anonymous_id) always join; limited ones were decided above.
                if item.joined || item.limit.is_none() {
                    resolution.attach.push(item.identifier.clone());
                }
            }
            Owners::Shared => {
                let owners = graph.owners(item.identifier);
                let on_person = owners.iter().any(|owner| {
                    *owner == resolution.person
                        || candidates
                            .iter()
                            .any(|c| c.outcome == Outcome::Merged && c.id == *owner)
                });
                if on_person {
                    resolution.touch.push(item.identifier.clone());
                    continue;
                }
                if let Some(limit) = item.limit {
                    if let Some(index) = group.survivor
                        && !candidates[index].fetched
                    {
                        candidates[index].id = resolution.person.clone();
                    }
                    group.load_survivor(settings, graph, &mut candidates);
                    if !group.held.try_add(item.identifier, limit) {
                        conflicts.push(Conflict {
                            identifier: item.identifier.clone(),
                            person: resolution.person.clone(),
                            other_person: None,
                            rule: ConflictRule::LimitExceeded {
                                kind: item.identifier.kind().clone(),
                                limit,
                            },
                        });
                        continue;
                    }
                }
                resolution.attach.push(item.identifier.clone());
            }
        }
    }
    resolution.conflicts = conflicts;
    resolution
}

/// Whether merging two persons would break a limit: the strongest kind whose limit the union of
/// their identifiers would exceed, with that limit. The same rule a signal's merges obey, for
/// merges an operator asks for.
pub fn merge_breaks_limit(
    settings: &IdentitySettings,
    survivor: PersonView,
    absorbed: PersonView,
) -> Option<(IdentifierKind, u32)> {
    Held::of(settings, Some(survivor)).breaks(settings, &Held::of(settings, Some(absorbed)))
}

/// The person a signal is being resolved to, built up strongest first.
#[derive(Debug, Default)]
struct Group {
    /// Index of the first candidate that joined.
    survivor: Option<usize>,
    /// Whether the survivor's own values are in `held` yet: the common case (every identifier
    /// already on one person) never needs to look the person up.
    survivor_loaded: bool,
    /// The values of limited kinds the group holds, including new values that joined.
    held: Held,
}

impl Group {
    fn load_survivor(
        &mut self,
        settings: &IdentitySettings,
        graph: &impl GraphView,
        candidates: &mut [Candidate<'_>],
    ) {
        if let Some(index) = self.survivor
            && !self.survivor_loaded
        {
            self.survivor_loaded = true;
            let candidate = &mut candidates[index];
            candidate.fetch(graph);
            self.held.absorb(Held::of(settings, candidate.view.take()));
        }
    }
}

/// A candidate or a new value refused because of a limit.
struct Refusal<'a> {
    identifier: &'a Identifier,
    /// The candidate that was not merged; `None` for a new value that was not attached.
    other: Option<usize>,
    rule: ConflictRule,
}

/// Step 3 of [`resolve`]: decides which candidates and which new limited values join.
fn build_group<'a>(
    settings: &IdentitySettings,
    graph: &impl GraphView,
    items: &mut [Item<'a>],
    candidates: &mut [Candidate<'_>],
    group: &mut Group,
    refusals: &mut Vec<Refusal<'a>>,
) {
    // New values of limited unique kinds, strongest first (a stable sort keeps the signal's
    // order within a kind, which decides which values are kept at a limit).
    let mut new_values: Vec<usize> = (0..items.len())
        .filter(|&i| matches!(items[i].owners, Owners::Unique(None)) && items[i].limit.is_some())
        .collect();
    new_values.sort_by_key(|&i| items[i].priority);
    let mut next_value = new_values.into_iter().peekable();
    let mut next_candidate = 0;
    loop {
        let take_candidate = match (candidates.get(next_candidate), next_value.peek()) {
            (None, None) => break,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some(candidate), Some(&value)) => candidate.rank.0 <= items[value].priority,
        };
        if take_candidate {
            let index = next_candidate;
            next_candidate += 1;
            if group.survivor.is_none() && group.held.is_empty() {
                // The first to join: nothing to check against.
                candidates[index].outcome = Outcome::Survivor;
                group.survivor = Some(index);
                continue;
            }
            group.load_survivor(settings, graph, candidates);
            let kept_apart = candidates[..index].iter().any(|joined| {
                joined.outcome != Outcome::Refused
                    && graph.kept_apart(&joined.id, &candidates[index].id)
            });
            let candidate = &mut candidates[index];
            candidate.fetch(graph);
            let theirs = Held::of(settings, candidate.view.take());
            let refusal = if kept_apart {
                Some(ConflictRule::KeptApart)
            } else {
                group
                    .held
                    .breaks(settings, &theirs)
                    .map(|(kind, limit)| ConflictRule::LimitExceeded { kind, limit })
            };
            if let Some(rule) = refusal {
                candidate.outcome = Outcome::Refused;
                for item in items.iter() {
                    if matches!(item.owners, Owners::Unique(Some(p)) if p == index) {
                        refusals.push(Refusal {
                            identifier: item.identifier,
                            other: Some(index),
                            rule: rule.clone(),
                        });
                    }
                }
                continue;
            }
            group.held.absorb(theirs);
            if group.survivor.is_none() {
                candidate.outcome = Outcome::Survivor;
                group.survivor = Some(index);
                group.survivor_loaded = true;
            } else {
                candidate.outcome = Outcome::Merged;
            }
        } else if let Some(value) = next_value.next() {
            group.load_survivor(settings, graph, candidates);
            let item = &mut items[value];
            let limit = item.limit.unwrap_or(u32::MAX);
            if group.held.try_add(item.identifier, limit) {
                item.joined = true;
            } else {
                refusals.push(Refusal {
                    identifier: item.identifier,
                    other: None,
                    rule: ConflictRule::LimitExceeded {
                        kind: item.identifier.kind().clone(),
                        limit,
                    },
                });
            }
        }
    }
}

/// The merge records: each candidate that joined after the survivor, with the signal's
/// identifiers that tied the two (those found on the survivor and on the absorbed person).
fn merge_steps(
    items: &[Item<'_>],
    candidates: &[Candidate<'_>],
    group: &Group,
    survivor_id: &PersonId,
) -> Vec<MergeStep> {
    let Some(survivor) = group.survivor else {
        return Vec::new();
    };
    let survivor_rank = candidates[survivor].rank;
    let survivor_created_at = candidates[survivor].created_at();
    candidates
        .iter()
        .enumerate()
        .filter(|(_, candidate)| candidate.outcome == Outcome::Merged)
        .map(|(index, candidate)| {
            let identifiers = items
                .iter()
                .filter(|item| {
                    matches!(item.owners, Owners::Unique(Some(p)) if p == index || p == survivor)
                })
                .map(|item| item.identifier.clone())
                .collect();
            let mut rule = format!(
                "priority: {} found the survivor, {} found the absorbed person",
                survivor_rank.1, candidate.rank.1
            );
            if candidate.rank.0 == survivor_rank.0 {
                if candidate.created_at() == survivor_created_at {
                    rule.push_str("; same age, smallest id on ties");
                } else {
                    rule.push_str("; oldest person on ties");
                }
            }
            MergeStep {
                survivor: survivor_id.clone(),
                absorbed: candidate.id.clone(),
                identifiers,
                rule,
            }
        })
        .collect()
}

/// One de-duplicated identifier of the signal with its kind's rule.
#[derive(Clone, Copy)]
struct Item<'a> {
    identifier: &'a Identifier,
    priority: u32,
    limit: Option<u32>,
    owners: Owners,
    /// For a new value of a limited unique kind: whether it joined the group (step 3).
    joined: bool,
}

#[derive(Clone, Copy)]
enum Owners {
    /// A unique identifier: the index of its owner in the candidate list, if any.
    Unique(Option<usize>),
    /// Looked up only when needed: a shared identifier never finds a candidate.
    Shared,
}

/// Step 1 of [`resolve`]: hands each distinct identifier, with its kind's rule, to `add`.
fn classify<'a>(
    settings: &IdentitySettings,
    identifiers: &'a [Identifier],
    mut add: impl FnMut(Item<'a>),
) {
    // Signals carry a handful of identifiers, where a linear scan beats hashing; a set guards
    // against a pathological signal with thousands.
    let mut seen: HashSet<&Identifier> = HashSet::new();
    for (position, identifier) in identifiers.iter().enumerate() {
        let duplicate = if identifiers.len() <= 16 {
            identifiers[..position].contains(identifier)
        } else {
            !seen.insert(identifier)
        };
        if duplicate {
            continue;
        }
        let item = match settings.rule(identifier.kind()) {
            Some(rule) => Item {
                identifier,
                priority: rule.priority,
                limit: rule.limit,
                owners: match settings.policy_under(rule, identifier) {
                    Policy::Unique => Owners::Unique(None),
                    Policy::Shared => Owners::Shared,
                },
                joined: false,
            },
            None => Item {
                identifier,
                priority: u32::MAX,
                limit: None,
                owners: Owners::Shared,
                joined: false,
            },
        };
        add(item);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Survivor,
    Merged,
    Refused,
}

struct Candidate<'a> {
    id: PersonId,
    /// Priority and kind of the strongest identifier that found this person; the kind only
    /// orders kinds that share a priority, which validated settings never have.
    rank: (u32, &'a IdentifierKind),
    /// Filled by `fetch`; taken when its values join or are checked against the group.
    view: Option<PersonView>,
    /// Filled by `fetch`; `Timestamp::MAX` for a person the graph cannot describe.
    created_at: Timestamp,
    fetched: bool,
    outcome: Outcome,
}

impl Candidate<'_> {
    fn fetch(&mut self, graph: &impl GraphView) {
        if !self.fetched {
            self.view = graph.person(&self.id);
            self.created_at = self
                .view
                .as_ref()
                .map_or(Timestamp::MAX, |view| view.created_at);
            self.fetched = true;
        }
    }

    fn created_at(&self) -> Timestamp {
        self.created_at
    }
}

/// Looks up the owners of the unique identifiers; each item learns its candidate's index.
fn find_candidates<'a>(graph: &impl GraphView, items: &mut [Item<'a>]) -> Vec<Candidate<'a>> {
    let unique = |item: &&mut Item<'a>| matches!(item.owners, Owners::Unique(_));
    let Some(first) = items.iter_mut().find(unique).map(|item| item.identifier) else {
        return Vec::new();
    };
    // Signals carry a handful of identifiers: the list of them needs no allocation.
    let mut few = [first; 8];
    let many: Vec<&Identifier>;
    let count = items.iter_mut().filter(unique).count();
    let identifiers: &[&Identifier] = if count <= few.len() {
        for (slot, item) in few.iter_mut().zip(items.iter_mut().filter(unique)) {
            *slot = item.identifier;
        }
        &few[..count]
    } else {
        many = items
            .iter_mut()
            .filter(unique)
            .map(|item| item.identifier)
            .collect();
        &many
    };
    // The owner of each identifier, by position.
    let mut few_owners: [Option<PersonId>; 8] = Default::default();
    let mut many_owners: Vec<Option<PersonId>>;
    let owners: &mut [Option<PersonId>] = if count <= few_owners.len() {
        &mut few_owners[..count]
    } else {
        many_owners = vec![None; count];
        &mut many_owners
    };
    graph.owners_of_each(identifiers, &mut |position, found| {
        // A unique value has at most one owner; if the store disagrees, the smallest id decides,
        // so the outcome does not depend on the store's row order.
        let owner = &mut owners[position];
        if owner.as_ref().is_none_or(|owner| found < *owner) {
            *owner = Some(found);
        }
    });
    let mut candidates: Vec<Candidate<'a>> = Vec::new();
    for (item, owner) in items.iter_mut().filter(unique).zip(owners) {
        let Some(owner) = owner.take() else {
            continue;
        };
        let rank = (item.priority, item.identifier.kind());
        let position = match candidates.iter().position(|c| c.id == owner) {
            Some(position) => {
                let candidate = &mut candidates[position];
                candidate.rank = candidate.rank.min(rank);
                position
            }
            None => {
                candidates.push(Candidate {
                    id: owner,
                    rank,
                    view: None,
                    created_at: Timestamp::MAX,
                    fetched: false,
                    // Decided later; refusing is the safe default.
                    outcome: Outcome::Refused,
                });
                candidates.len() - 1
            }
        };
        item.owners = Owners::Unique(Some(position));
    }
    candidates
}

/// Sorts the candidates survivor first: by rank, then age, then id.
fn order_candidates(
    graph: &impl GraphView,
    items: &mut [Item<'_>],
    candidates: &mut Vec<Candidate<'_>>,
) {
    for candidate in candidates.iter_mut() {
        candidate.fetch(graph);
    }
    let mut order: Vec<usize> = (0..candidates.len()).collect();
    order.sort_by(|a, b| {
        let (a, b) = (&candidates[*a], &candidates[*b]);
        (a.rank, a.created_at(), &a.id).cmp(&(b.rank, b.created_at(), &b.id))
    });
    let mut new_position = vec![0; candidates.len()];
    for (new, old) in order.iter().enumerate() {
        new_position[*old] = new;
    }
    for item in items.iter_mut() {
        if let Owners::Unique(Some(old)) = item.owners {
            item.owners = Owners::Unique(Some(new_position[old]));
        }
    }
    let mut slots: Vec<Option<Candidate<'_>>> = candidates.drain(..).map(Some).collect();
    candidates.extend(order.iter().filter_map(|old| slots[*old].take()));
}

/// The values a person holds, for the kinds that have a limit.
#[derive(Debug, Default)]
struct Held {
    /// Kinds are few; a vector keeps look-ups allocation-free.
    values: Vec<(IdentifierKind, BTreeSet<String>)>,
}

impl Held {
    fn of(settings: &IdentitySettings, view: Option<PersonView>) -> Self {
        let mut held = Held::default();
        if let Some(view) = view {
            for (kind, values) in view.identifiers {
                let limited = settings
                    .rule(&kind)
                    .is_some_and(|rule| rule.limit.is_some());
                if limited && !values.is_empty() {
                    held.values.push((kind, values));
                }
            }
        }
        held
    }

    fn is_empty(&self) -> bool {
        self.values.iter().all(|(_, values)| values.is_empty())
    }

    fn of_kind(&self, kind: &IdentifierKind) -> Option<&BTreeSet<String>> {
        self.values
            .iter()
            .find(|(k, _)| k == kind)
            .map(|(_, values)| values)
    }

    /// The strongest kind whose limit the union of `self` and `other` would break. A kind the
    /// survivor already holds too many of (the limit was lowered) only breaks if `other` adds
    /// a value of it.
    fn breaks(&self, settings: &IdentitySettings, other: &Held) -> Option<(IdentifierKind, u32)> {
        let mut broken: Option<(u32, &IdentifierKind, u32)> = None;
        for (kind, theirs) in &other.values {
            let Some(rule) = settings.rule(kind) else {
                continue;
            };
            let Some(limit) = rule.limit else { continue };
            let ours = self.of_kind(kind);
            let ours_len = ours.map_or(0, BTreeSet::len);
            let added = theirs
                .iter()
                .filter(|value| !ours.is_some_and(|ours| ours.contains(*value)))
                .count();
            let allowed = (limit as usize).max(ours_len);
            if ours_len + added > allowed
                && broken.is_none_or(|(priority, broken_kind, _)| {
                    (priority, broken_kind) > (rule.priority, kind)
                })
            {
                broken = Some((rule.priority, kind, limit));
            }
        }
        broken.map(|(_, kind, limit)| (kind.clone(), limit))
    }

    fn absorb(&mut self, other: Held) {
        for (kind, theirs) in other.values {
            match self.values.iter_mut().find(|(k, _)| *k == kind) {
                Some((_, ours)) => ours.extend(theirs),
                None => self.values.push((kind, theirs)),
            }
        }
    }

    /// Adds a new value unless the kind is at its limit.
    fn try_add(&mut self, identifier: &Identifier, limit: u32) -> bool {
        let kind = identifier.kind();
        let index = match self.values.iter().position(|(k, _)| k == kind) {
            Some(index) => index,
            None => {
                self.values.push((kind.clone(), BTreeSet::new()));
                self.values.len() - 1
            }
        };
        let values = &mut self.values[index].1;
        if values.contains(identifier.value()) {
            return true;
        }
        if values.len() >= limit as usize {
            return false;
        }
        values.insert(identifier.value().to_owned());
        true
    }
}
