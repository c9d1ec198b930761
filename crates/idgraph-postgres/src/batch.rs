//! The rows a batch of resolved signals writes, gathered in memory so that each table takes one
//! statement per batch instead of several per signal.
//!
//! Per signal, the store used to run conditional statements whose effect depends on what the
//! signals before it wrote: `merged_into` of an absorbed group, `last_seen` of identity nodes
//! (kept to `LAST_SEEN_RESOLUTION_SECONDS`), workspace contacts. Here those rules are replayed
//! in signal order over the rows the batch read, and each changed row's final values are
//! written once, so the database ends up exactly as if each signal had been applied on its own.
//! No IO.

use std::collections::HashMap;

use idgraph_core::identity::Identifier;
use idgraph_core::resolve::{PersonId, Resolution};
use idgraph_store::{
    BatchGraph, EventRow, IdentityNodeRow, LAST_SEEN_RESOLUTION_SECONDS, SignalRecord, StoreError,
    StoreResult, TraitObservation, conflict_rule_text, derived_id, encode_identifiers,
};
use jiff::{SignedDuration, Timestamp};

const RESOLUTION: SignedDuration = SignedDuration::from_secs(LAST_SEEN_RESOLUTION_SECONDS);

/// An identity node of one of the batch's identifiers, as stored when the batch started.
#[derive(Debug, Clone)]
pub(crate) struct StoredNode {
    pub(crate) row: IdentityNodeRow,
    /// The canonical person of `row.person_id` when the batch started.
    pub(crate) canonical: PersonId,
}

/// A canonical person the batch's identifiers lead to, as stored when the batch started.
#[derive(Debug, Clone)]
pub(crate) struct StoredPerson {
    pub(crate) person_id: PersonId,
    pub(crate) created_at: Timestamp,
    /// The persons merged into it, with their `created_at`.
    pub(crate) members: Vec<(PersonId, Timestamp)>,
}

/// A person row as the batch leaves it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct PersonWrite {
    pub(crate) person_id: PersonId,
    pub(crate) created_at: Timestamp,
    /// The final survivor when the person was merged away.
    pub(crate) merged_into: Option<PersonId>,
    pub(crate) updated_at: Timestamp,
}

#[derive(Debug, Clone)]
pub(crate) struct MergeWrite {
    pub(crate) merge_id: String,
    pub(crate) survivor: PersonId,
    pub(crate) absorbed: PersonId,
    pub(crate) identifiers: String,
    pub(crate) signal_id: String,
    pub(crate) rule: String,
    pub(crate) at: Timestamp,
}

#[derive(Debug, Clone)]
pub(crate) struct ConflictWrite {
    pub(crate) conflict_id: String,
    pub(crate) person_id: PersonId,
    pub(crate) other_person_id: Option<PersonId>,
    pub(crate) identifier: Identifier,
    pub(crate) rule: String,
    pub(crate) signal_id: String,
    pub(crate) at: Timestamp,
}

#[derive(Debug, Clone)]
pub(crate) struct EventWrite {
    pub(crate) event: EventRow,
    pub(crate) person_id: PersonId,
    pub(crate) seq: i64,
    pub(crate) identifiers: String,
    pub(crate) source: String,
}

#[derive(Debug, Clone)]
pub(crate) struct TraitWrite {
    pub(crate) person_id: PersonId,
    pub(crate) workspace: String,
    pub(crate) observed: TraitObservation,
    pub(crate) signal_id: String,
}

/// A workspace contact row's key: (person, workspace).
pub(crate) type ContactKey = (PersonId, String);

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ContactWrite {
    pub(crate) person_id: PersonId,
    pub(crate) workspace: String,
    pub(crate) first_seen: Timestamp,
    pub(crate) last_seen: Timestamp,
}

/// An identity node of one of the batch's identifiers: stored, or inserted by the batch.
#[derive(Debug, Clone)]
struct Node {
    row: IdentityNodeRow,
    /// The person that was canonical for `row.person_id` when the node was read or inserted;
    /// the graph follows it through the batch's merges.
    canonical: PersonId,
    inserted: bool,
    /// A stored node whose `last_seen` moved.
    touched: bool,
}

/// Everything a batch writes, in the order its signals were resolved.
#[derive(Debug, Default)]
pub(crate) struct BatchWrites {
    stored_persons: HashMap<PersonId, StoredPerson>,
    persons: Vec<PersonWrite>,
    person_index: HashMap<PersonId, usize>,
    /// Canonical person → the persons the batch merged into it, which follow it (with those
    /// merged into them before the batch) when it is merged in turn.
    absorbed: HashMap<PersonId, Vec<PersonId>>,
    pub(crate) merges: Vec<MergeWrite>,
    pub(crate) conflicts: Vec<ConflictWrite>,
    nodes: Vec<Node>,
    nodes_by_identifier: HashMap<Identifier, Vec<usize>>,
    pub(crate) events: Vec<EventWrite>,
    pub(crate) traits: Vec<TraitWrite>,
    /// Every signal's (person, workspace) and `occurred_at`, in order.
    contacts: Vec<(ContactKey, Timestamp)>,
}

impl BatchWrites {
    /// Starts from what the batch read: the stored nodes of its identifiers and their owners.
    pub(crate) fn new(nodes: Vec<StoredNode>, persons: Vec<StoredPerson>) -> Self {
        let mut writes = Self::default();
        for node in nodes {
            writes.add_node(Node {
                row: node.row,
                canonical: node.canonical,
                inserted: false,
                touched: false,
            });
        }
        writes.stored_persons = persons
            .into_iter()
            .map(|person| (person.person_id.clone(), person))
            .collect();
        writes
    }

    /// Records one signal's resolution, after `graph` has applied it. `now` and `seen` are the
    /// signal's `ingested_at` and `occurred_at` at the store's precision, so that comparisons
    /// with stored values come out as the database's would.
    pub(crate) fn record(
        &mut self,
        graph: &BatchGraph,
        seq: i64,
        signal: SignalRecord,
        resolution: &Resolution,
        now: Timestamp,
        seen: Timestamp,
    ) -> StoreResult<()> {
        let signal_id = signal.event.event_id.clone();
        let person = &resolution.person;
        if resolution.created {
            self.person_index.insert(person.clone(), self.persons.len());
            self.persons.push(PersonWrite {
                person_id: person.clone(),
                created_at: now,
                merged_into: None,
                updated_at: now,
            });
        } else if signal.changes_person(resolution) {
            self.change_person(person, now)?;
        }
        for (index, step) in resolution.merges.iter().enumerate() {
            self.merge(&step.absorbed, &step.survivor, now)?;
            self.merges.push(MergeWrite {
                merge_id: derived_id(&signal_id, 'm', index),
                survivor: step.survivor.clone(),
                absorbed: step.absorbed.clone(),
                identifiers: encode_identifiers(&step.identifiers),
                signal_id: signal_id.clone(),
                rule: step.rule.clone(),
                at: now,
            });
        }
        for identifier in &resolution.attach {
            self.attach(identifier, person, &signal, seen);
        }
        for identifier in &resolution.touch {
            self.touch(graph, identifier, person, seen);
        }
        for (index, conflict) in resolution.conflicts.iter().enumerate() {
            self.conflicts.push(ConflictWrite {
                conflict_id: derived_id(&signal_id, 'c', index),
                person_id: conflict.person.clone(),
                other_person_id: conflict.other_person.clone(),
                identifier: conflict.identifier.clone(),
                rule: conflict_rule_text(&conflict.rule),
                signal_id: signal_id.clone(),
                at: now,
            });
        }
        let workspace = signal.event.workspace.as_str().to_owned();
        self.contacts
            .push(((person.clone(), workspace.clone()), seen));
        self.traits
            .extend(signal.traits.into_iter().map(|observed| TraitWrite {
                person_id: person.clone(),
                workspace: workspace.clone(),
                observed,
                signal_id: signal_id.clone(),
            }));
        self.events.push(EventWrite {
            identifiers: encode_identifiers(&signal.identifiers),
            event: signal.event,
            person_id: person.clone(),
            seq,
            source: signal.source,
        });
        Ok(())
    }

    /// Moves a person's `updated_at`. A stored person the batch had not changed yet starts as it
    /// was read: canonical, so not merged into anyone.
    fn change_person(&mut self, id: &PersonId, now: Timestamp) -> StoreResult<&mut PersonWrite> {
        let index = match self.person_index.get(id) {
            Some(index) => *index,
            None => {
                // The resolver only names persons the graph was seeded with or the batch created.
                let stored = self.stored_persons.get(id).ok_or_else(|| {
                    StoreError::Other(format!("the batch changed person {id} it never read"))
                })?;
                self.persons.push(PersonWrite {
                    person_id: id.clone(),
                    created_at: stored.created_at,
                    merged_into: None,
                    updated_at: now,
                });
                self.person_index.insert(id.clone(), self.persons.len() - 1);
                self.persons.len() - 1
            }
        };
        let row = &mut self.persons[index];
        row.updated_at = now;
        Ok(row)
    }

    /// A merge sets `merged_into` of the absorbed person and of everyone merged into it so far
    /// to the survivor, so that it always names the final survivor.
    fn merge(
        &mut self,
        absorbed: &PersonId,
        survivor: &PersonId,
        now: Timestamp,
    ) -> StoreResult<()> {
        let mut group = self.absorbed.remove(absorbed).unwrap_or_default();
        group.push(absorbed.clone());
        for member in &group {
            self.change_person(member, now)?.merged_into = Some(survivor.clone());
        }
        self.absorbed
            .entry(survivor.clone())
            .or_default()
            .extend(group);
        Ok(())
    }

    fn add_node(&mut self, node: Node) {
        let identifier = Identifier::from_stored(node.row.kind.clone(), node.row.value.clone());
        self.nodes_by_identifier
            .entry(identifier)
            .or_default()
            .push(self.nodes.len());
        self.nodes.push(node);
    }

    /// Inserts the node unless the person already holds it (the store's `ON CONFLICT DO
    /// NOTHING`).
    fn attach(
        &mut self,
        identifier: &Identifier,
        person: &PersonId,
        signal: &SignalRecord,
        seen: Timestamp,
    ) {
        let held = self
            .nodes_by_identifier
            .get(identifier)
            .into_iter()
            .flatten()
            .any(|index| self.nodes[*index].row.person_id == *person);
        if held {
            return;
        }
        self.add_node(Node {
            row: IdentityNodeRow {
                kind: identifier.kind().clone(),
                value: identifier.value().to_owned(),
                person_id: person.clone(),
                source: signal.source.clone(),
                confidence: 1.0,
                first_seen: seen,
                last_seen: seen,
                signal_id: Some(signal.event.event_id.clone()),
            },
            canonical: person.clone(),
            inserted: true,
            touched: false,
        });
    }

    /// Moves `last_seen` of the nodes of this identifier held by the person's group, unless it
    /// is within the resolution of `seen`.
    fn touch(
        &mut self,
        graph: &BatchGraph,
        identifier: &Identifier,
        person: &str,
        seen: Timestamp,
    ) {
        let Ok(threshold) = seen.checked_sub(RESOLUTION) else {
            return;
        };
        for index in self
            .nodes_by_identifier
            .get(identifier)
            .into_iter()
            .flatten()
        {
            let node = &mut self.nodes[*index];
            if graph.canonical(&node.canonical) == person && node.row.last_seen < threshold {
                node.row.last_seen = seen;
                node.touched = !node.inserted;
            }
        }
    }

    /// Every person row the batch creates or changes, with its final values: the batch's own,
    /// and for each stored person it merged away, the persons merged into it before the batch.
    pub(crate) fn persons(&self) -> Vec<PersonWrite> {
        let mut rows = self.persons.clone();
        for person in &self.persons {
            if person.merged_into.is_none() {
                continue;
            }
            let Some(stored) = self.stored_persons.get(&person.person_id) else {
                continue;
            };
            rows.extend(
                stored
                    .members
                    .iter()
                    .map(|(member, created_at)| PersonWrite {
                        person_id: member.clone(),
                        created_at: *created_at,
                        merged_into: person.merged_into.clone(),
                        updated_at: person.updated_at,
                    }),
            );
        }
        rows
    }

    /// Nodes the batch attaches.
    pub(crate) fn node_inserts(&self) -> impl Iterator<Item = &IdentityNodeRow> {
        self.nodes
            .iter()
            .filter(|node| node.inserted)
            .map(|node| &node.row)
    }

    /// Stored nodes whose `last_seen` moved, with its final value.
    pub(crate) fn node_touches(&self) -> impl Iterator<Item = &IdentityNodeRow> {
        self.nodes
            .iter()
            .filter(|node| node.touched)
            .map(|node| &node.row)
    }

    /// The (person, workspace) pairs the batch's signals were seen in, each once.
    pub(crate) fn contact_keys(&self) -> Vec<&ContactKey> {
        let mut keys: Vec<&ContactKey> = self.contacts.iter().map(|(key, _)| key).collect();
        keys.sort_unstable();
        keys.dedup();
        keys
    }

    /// The contact rows to write, given the stored ones (`(first_seen, last_seen)` per key): each
    /// signal in order inserts its row, or widens the row when it is earlier than `first_seen` or
    /// at least the resolution past `last_seen`. Rows that end as stored are left out.
    pub(crate) fn contact_writes(
        &self,
        stored: &HashMap<ContactKey, (Timestamp, Timestamp)>,
    ) -> Vec<ContactWrite> {
        let mut rows: HashMap<&ContactKey, Option<(Timestamp, Timestamp)>> = HashMap::new();
        let mut order: Vec<&ContactKey> = Vec::new();
        for (key, seen) in &self.contacts {
            let seen = *seen;
            let row = rows.entry(key).or_insert_with(|| {
                order.push(key);
                stored.get(key).copied()
            });
            *row = Some(match *row {
                None => (seen, seen),
                Some((first, last)) => {
                    let widens = seen < first
                        || last
                            .checked_add(RESOLUTION)
                            .is_ok_and(|limit| seen >= limit);
                    if widens {
                        (first.min(seen), last.max(seen))
                    } else {
                        (first, last)
                    }
                }
            });
        }
        order
            .into_iter()
            .filter_map(|key| {
                let (first_seen, last_seen) = rows.get(key).copied().flatten()?;
                if stored.get(key) == Some(&(first_seen, last_seen)) {
                    return None;
                }
                Some(ContactWrite {
                    person_id: key.0.clone(),
                    workspace: key.1.clone(),
                    first_seen,
                    last_seen,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use idgraph_core::identity::{IdentifierKind, IdentitySettings};
    use idgraph_core::resolve::MergeStep;
    use idgraph_core::tenancy::WorkspaceName;

    use super::*;

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + seconds).unwrap()
    }

    fn signal(n: usize, seconds: i64) -> SignalRecord {
        SignalRecord {
            event: EventRow {
                event_id: format!("s{n}"),
                workspace: WorkspaceName::default_workspace(),
                kind: "track".into(),
                name: None,
                occurred_at: at(seconds),
                ingested_at: at(seconds),
                schema_version: 1,
                message_id: format!("m{n}"),
                properties: "{}".into(),
                context: "{}".into(),
            },
            identifiers: Vec::new(),
            traits: Vec::new(),
            source: "test".into(),
        }
    }

    fn resolution(person: &str) -> Resolution {
        Resolution {
            person: person.into(),
            created: false,
            merges: Vec::new(),
            attach: Vec::new(),
            touch: Vec::new(),
            conflicts: Vec::new(),
        }
    }

    fn merge(survivor: &str, absorbed: &str) -> Resolution {
        let mut resolution = resolution(survivor);
        resolution.merges.push(MergeStep {
            survivor: survivor.into(),
            absorbed: absorbed.into(),
            identifiers: Vec::new(),
            rule: "test".into(),
        });
        resolution
    }

    fn stored(id: &str, members: &[&str]) -> StoredPerson {
        StoredPerson {
            person_id: id.into(),
            created_at: at(0),
            members: members.iter().map(|m| ((*m).into(), at(0))).collect(),
        }
    }

    fn anon(value: &str) -> Identifier {
        Identifier::from_stored(IdentifierKind::anonymous_id(), value.into())
    }

    fn node(value: &str, person: &str, last_seen: i64) -> StoredNode {
        StoredNode {
            row: IdentityNodeRow {
                kind: IdentifierKind::anonymous_id(),
                value: value.into(),
                person_id: person.into(),
                source: "test".into(),
                confidence: 1.0,
                first_seen: at(0),
                last_seen: at(last_seen),
                signal_id: None,
            },
            canonical: person.into(),
        }
    }

    /// Records resolutions made one after another, applying each to the graph first as the
    /// store does.
    fn record(writes: &mut BatchWrites, graph: &mut BatchGraph, signals: Vec<(i64, Resolution)>) {
        for (n, (seconds, resolution)) in signals.into_iter().enumerate() {
            graph.apply(&resolution, at(seconds));
            let seq = i64::try_from(n).unwrap() + 1;
            writes
                .record(
                    graph,
                    seq,
                    signal(n, seconds),
                    &resolution,
                    at(seconds),
                    at(seconds),
                )
                .unwrap();
        }
    }

    #[test]
    fn a_person_absorbed_twice_in_a_batch_names_the_final_survivor_with_its_group() {
        let settings = IdentitySettings::default();
        let mut graph = BatchGraph::new(&settings);
        for id in ["a", "b", "c"] {
            graph.add_person(id.into(), at(0), []);
        }
        let mut writes = BatchWrites::new(
            Vec::new(),
            vec![
                stored("a", &["a1", "a2"]),
                stored("b", &[]),
                stored("c", &["c1"]),
            ],
        );
        record(
            &mut writes,
            &mut graph,
            vec![(10, merge("b", "a")), (20, merge("c", "b"))],
        );
        let mut rows: Vec<(String, Option<String>, Timestamp)> = writes
            .persons()
            .into_iter()
            .map(|p| (p.person_id, p.merged_into, p.updated_at))
            .collect();
        rows.sort();
        let to_c = |id: &str| (id.to_owned(), Some("c".to_owned()), at(20));
        // c1 was merged into c before the batch and c was not absorbed: untouched.
        assert_eq!(
            rows,
            vec![
                to_c("a"),
                to_c("a1"),
                to_c("a2"),
                to_c("b"),
                ("c".into(), None, at(20))
            ]
        );
    }

    #[test]
    fn last_seen_moves_signal_by_signal() {
        let settings = IdentitySettings::default();
        let mut graph = BatchGraph::new(&settings);
        graph.add_person("p".into(), at(0), []);
        let mut writes = BatchWrites::new(vec![node("a1", "p", 0)], vec![stored("p", &[])]);
        let touch = || {
            let mut resolution = resolution("p");
            resolution.touch.push(anon("a1"));
            resolution
        };
        let attach = || {
            let mut resolution = resolution("p");
            resolution.attach.push(anon("a2"));
            resolution
        };
        let touch_new = || {
            let mut resolution = resolution("p");
            resolution.touch.push(anon("a2"));
            resolution
        };
        // 100 is past the resolution of 0; 150 is within it of 100; 170 is past it again.
        record(
            &mut writes,
            &mut graph,
            vec![
                (100, touch()),
                (150, touch()),
                (170, touch()),
                (200, attach()),
                (230, touch_new()),
                (261, touch_new()),
            ],
        );
        let touched: Vec<(&str, Timestamp)> = writes
            .node_touches()
            .map(|n| (n.value.as_str(), n.last_seen))
            .collect();
        assert_eq!(touched, vec![("a1", at(170))]);
        // A node the batch inserts is inserted as the batch leaves it.
        let inserted: Vec<(&str, Timestamp, Timestamp)> = writes
            .node_inserts()
            .map(|n| (n.value.as_str(), n.first_seen, n.last_seen))
            .collect();
        assert_eq!(inserted, vec![("a2", at(200), at(261))]);
    }

    #[test]
    fn contacts_widen_signal_by_signal_and_unchanged_rows_are_not_written() {
        let settings = IdentitySettings::default();
        let mut graph = BatchGraph::new(&settings);
        for id in ["p", "q", "r"] {
            graph.add_person(id.into(), at(0), []);
        }
        let mut writes = BatchWrites::new(
            Vec::new(),
            vec![stored("p", &[]), stored("q", &[]), stored("r", &[])],
        );
        record(
            &mut writes,
            &mut graph,
            vec![
                // p (stored 0..0): 61 widens it; 100 is within the resolution of 61.
                (61, resolution("p")),
                (100, resolution("p")),
                // q (stored 0..100): 50 is inside.
                (50, resolution("q")),
                // r has no row yet: the first signal inserts it, an earlier one widens it.
                (30, resolution("r")),
                (20, resolution("r")),
            ],
        );
        let workspace = WorkspaceName::default_workspace().as_str().to_owned();
        let key = |person: &str| (person.to_owned(), workspace.clone());
        let stored = HashMap::from([(key("p"), (at(0), at(0))), (key("q"), (at(0), at(100)))]);
        let contact = |person: &str, first: i64, last: i64| ContactWrite {
            person_id: person.into(),
            workspace: workspace.clone(),
            first_seen: at(first),
            last_seen: at(last),
        };
        assert_eq!(
            writes.contact_writes(&stored),
            vec![contact("p", 0, 61), contact("r", 20, 30)]
        );
    }
}
