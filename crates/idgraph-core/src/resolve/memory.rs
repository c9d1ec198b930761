//! An in-memory identity graph: the reference implementation of [`GraphView`] for property
//! tests, replays and benchmarks.
//!
//! Persons and identifier nodes live in vectors addressed by `u32`; two insert-only index
//! tables of 8-byte entries translate values and person ids to those indexes, and the node or
//! person found confirms the match. Node owners are kept canonical by re-pointing an
//! absorbed person's nodes at its survivor when they merge, so a look-up never walks a chain.

use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{BuildHasherDefault, Hasher};

use jiff::Timestamp;

use super::{GraphView, PersonId, PersonView, Resolution};
use crate::identity::{Identifier, IdentifierKind, IdentitySettings};

/// An identity graph held in memory.
///
/// `MemoryGraph::default()` describes every kind a person holds in [`PersonView`];
/// [`MemoryGraph::for_settings`] only the kinds with a limit, which is all [`super::resolve`]
/// reads and much cheaper for persons with many anonymous ids.
///
/// Not `Sync`: look-ups leave a hint for the next `apply` in a `Cell`.
#[derive(Debug, Default)]
pub struct MemoryGraph {
    /// Interned kinds; a node stores the index. Tenants have a handful of kinds.
    kinds: Vec<IdentifierKind>,
    /// Parallel to `kinds`: whether `person` reports the kind.
    kind_reported: Vec<bool>,
    /// `None`: every kind is reported.
    reported_kinds: Option<BTreeSet<IdentifierKind>>,
    /// (kind, value) → node.
    node_by_value: IndexTable,
    /// Every identifier held, with its owner: the look-up reads one table entry and one node.
    nodes: Vec<Node>,
    /// The owners of the nodes held by more than one person (shared values only).
    shared_owners: FastMap<u32, Vec<u32>>,
    persons: Vec<Person>,
    /// Persons merged directly into a person, with the merge's sequence number. Apart from
    /// `persons` because few persons have any and look-ups never need them.
    absorbed: FastMap<u32, Vec<(u64, u32)>>,
    person_by_id: IndexTable,
    /// The last persons `owners` answered with, newest first. `person` and `apply` nearly
    /// always concern one of them (the candidates of the signal being resolved), and checking
    /// a hint costs a comparison of a string already in cache where `person_by_id` costs a
    /// cache miss or two on a large graph.
    recent_owners: Cell<[u32; RECENT_OWNERS]>,
    merge_count: u64,
    /// Pairs of persons an operator's rule keeps apart, smaller id first.
    kept_apart: BTreeSet<(PersonId, PersonId)>,
}

/// Enough for the candidates of any ordinary signal (one per kind it carries).
const RECENT_OWNERS: usize = 4;

#[derive(Debug)]
struct Node {
    value: Key,
    kind: u32,
    /// The canonical owner, or [`Node::SHARED`] when `shared_owners` lists several.
    owner: u32,
}

impl Node {
    const SHARED: u32 = u32::MAX;
}

#[derive(Debug)]
struct Person {
    id: Key,
    created_at: Timestamp,
    merged_into: Option<u32>,
    /// The (kind, node) pairs this person holds; empty once absorbed. The kind is repeated
    /// here so that `person` can skip kinds without reading each node.
    nodes: Vec<(u32, u32)>,
    reported: ReportedNodes,
}

/// How many of a person's nodes are of reported kinds, and the first two of them. Nearly
/// every person holds at most two (an external id and an email), so `person` reads them from
/// here without loading `nodes`, which on a large graph is a cache miss.
#[derive(Debug, Default, Clone, Copy)]
struct ReportedNodes {
    count: u32,
    first: [u32; 2],
}

impl Person {
    fn hold(&mut self, kind: u32, node: u32, reported: bool) {
        self.nodes.push((kind, node));
        if reported {
            if let Some(slot) = self.reported.first.get_mut(self.reported.count as usize) {
                *slot = node;
            }
            self.reported.count += 1;
        }
    }
}

impl MemoryGraph {
    /// A graph whose [`PersonView`]s only list the kinds that have a limit in `settings`.
    pub fn for_settings(settings: &IdentitySettings) -> Self {
        let limited = settings
            .kinds
            .iter()
            .filter(|(_, rule)| rule.limit.is_some())
            .map(|(kind, _)| kind.clone())
            .collect();
        Self {
            reported_kinds: Some(limited),
            ..Self::default()
        }
    }

    /// Applies a resolution made against this graph: creates the person, runs the merges (the
    /// survivor takes the absorbed person's identifiers; the absorbed id now leads to the
    /// survivor), then links the attached identifiers. `at` is the new person's `created_at`.
    pub fn apply(&mut self, resolution: &Resolution, at: Timestamp) {
        let mut person = self.person_index_or_create(&resolution.person, at);
        for step in &resolution.merges {
            let survivor = self.person_index_or_create(&step.survivor, at);
            let absorbed = self.person_index_or_create(&step.absorbed, at);
            self.merge(self.find(absorbed), self.find(survivor));
        }
        person = self.find(person);
        for identifier in &resolution.attach {
            self.link(person, identifier);
        }
    }

    /// The person an id now stands for, following merges; an unknown id answers itself.
    pub fn canonical(&self, id: &str) -> PersonId {
        match self.person_index(id) {
            Some(index) => self.persons[self.find(index) as usize]
                .id
                .as_str()
                .to_owned(),
            None => id.to_owned(),
        }
    }

    /// Canonical person → the identifiers it holds, for every person not merged away.
    pub fn partition(&self) -> BTreeMap<PersonId, BTreeSet<Identifier>> {
        self.persons
            .iter()
            .filter(|person| person.merged_into.is_none())
            .map(|person| {
                let identifiers = person
                    .nodes
                    .iter()
                    .map(|(_, node)| self.identifier(*node))
                    .collect();
                (person.id.as_str().to_owned(), identifiers)
            })
            .collect()
    }

    /// Every person merged into `id`, directly or through a person merged into it, in the order
    /// the merges happened.
    pub fn merged_from(&self, id: &str) -> Vec<PersonId> {
        let Some(start) = self.person_index(id) else {
            return Vec::new();
        };
        let mut found: Vec<(u64, u32)> = Vec::new();
        let mut stack = vec![start];
        while let Some(index) = stack.pop() {
            let absorbed = self.absorbed.get(&index).map_or(&[][..], Vec::as_slice);
            for (sequence, absorbed) in absorbed {
                found.push((*sequence, *absorbed));
                stack.push(*absorbed);
            }
        }
        found.sort_unstable();
        found
            .into_iter()
            .map(|(_, index)| self.persons[index as usize].id.as_str().to_owned())
            .collect()
    }

    /// Persons not merged into another.
    pub fn person_count(&self) -> usize {
        self.persons
            .iter()
            .filter(|person| person.merged_into.is_none())
            .count()
    }

    pub fn merge_count(&self) -> u64 {
        self.merge_count
    }

    pub fn identifier_count(&self) -> usize {
        self.nodes.len()
    }

    fn identifier(&self, node: u32) -> Identifier {
        let node = &self.nodes[node as usize];
        Identifier::from_stored(
            self.kinds[node.kind as usize].clone(),
            node.value.as_str().to_owned(),
        )
    }

    fn kind_index(&self, kind: &IdentifierKind) -> Option<u32> {
        self.kinds
            .iter()
            .position(|known| known == kind)
            .map(|index| u32::try_from(index).expect("fewer than 2^32 identifier kinds"))
    }

    fn node_of(&self, identifier: &Identifier) -> Option<u32> {
        let kind = self.kind_index(identifier.kind())?;
        let value = identifier.value().as_bytes();
        self.node_by_value.find(value_hash(kind, value), |node| {
            let node = &self.nodes[node as usize];
            node.kind == kind && node.value.as_bytes() == value
        })
    }

    fn shared_owner_ids(&self, node: u32) -> Vec<PersonId> {
        self.shared_owners
            .get(&node)
            .map(|owners| {
                owners
                    .iter()
                    .map(|owner| self.persons[*owner as usize].id.as_str().to_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    fn find(&self, mut index: u32) -> u32 {
        while let Some(parent) = self.persons[index as usize].merged_into {
            index = parent;
        }
        index
    }

    /// The index of the person with this id, not followed through merges.
    fn person_index(&self, id: &str) -> Option<u32> {
        self.recent_person_index(id).or_else(|| {
            self.person_by_id.find(id_hash(id.as_bytes()), |person| {
                self.persons[person as usize].id.as_bytes() == id.as_bytes()
            })
        })
    }

    /// [`Self::person_index`] when the person is among the recent owners.
    fn recent_person_index(&self, id: &str) -> Option<u32> {
        self.recent_owners.get().into_iter().find(|hint| {
            self.persons
                .get(*hint as usize)
                .is_some_and(|person| person.id.as_bytes() == id.as_bytes())
        })
    }

    /// Puts `person` first among the recent owners.
    fn remember_owner(&self, person: u32) {
        let mut recent = self.recent_owners.get();
        if recent[0] == person {
            return;
        }
        let end = recent
            .iter()
            .position(|hint| *hint == person)
            .unwrap_or(RECENT_OWNERS - 1);
        recent.copy_within(..end, 1);
        recent[0] = person;
        self.recent_owners.set(recent);
    }

    fn person_index_or_create(&mut self, id: &PersonId, at: Timestamp) -> u32 {
        if let Some(index) = self.person_index(id) {
            return index;
        }
        let index = u32::try_from(self.persons.len())
            .ok()
            .filter(|index| *index != Node::SHARED)
            .expect("fewer than 2^32 - 1 persons");
        self.persons.push(Person {
            id: Key::new(id),
            created_at: at,
            merged_into: None,
            nodes: Vec::new(),
            reported: ReportedNodes::default(),
        });
        self.person_by_id.insert(id_hash(id.as_bytes()), index);
        index
    }

    fn merge(&mut self, absorbed: u32, survivor: u32) {
        if absorbed == survivor {
            return;
        }
        self.merge_count += 1;
        let sequence = self.merge_count;
        self.absorbed
            .entry(survivor)
            .or_default()
            .push((sequence, absorbed));
        let absorbed_person = &mut self.persons[absorbed as usize];
        absorbed_person.merged_into = Some(survivor);
        absorbed_person.reported = ReportedNodes::default();
        let moved = std::mem::take(&mut absorbed_person.nodes);
        let mut gained = Vec::with_capacity(moved.len());
        for (kind, node_index) in moved {
            let node = &mut self.nodes[node_index as usize];
            if node.owner != Node::SHARED {
                node.owner = survivor;
                gained.push((kind, node_index));
                continue;
            }
            let owners = self
                .shared_owners
                .get_mut(&node_index)
                .expect("a shared slot lists its owners");
            let already_held = owners.contains(&survivor);
            owners.retain(|owner| *owner != absorbed);
            if !already_held {
                owners.push(survivor);
                gained.push((kind, node_index));
            } else if let [only] = owners[..] {
                node.owner = only;
                self.shared_owners.remove(&node_index);
            }
        }
        let survivor = &mut self.persons[survivor as usize];
        for (kind, node) in gained {
            survivor.hold(kind, node, self.kind_reported[kind as usize]);
        }
    }

    fn link(&mut self, person: u32, identifier: &Identifier) {
        let kind = match self.kind_index(identifier.kind()) {
            Some(kind) => kind,
            None => {
                self.kinds.push(identifier.kind().clone());
                self.kind_reported.push(
                    self.reported_kinds
                        .as_ref()
                        .is_none_or(|reported| reported.contains(identifier.kind())),
                );
                u32::try_from(self.kinds.len() - 1).expect("fewer than 2^32 identifier kinds")
            }
        };
        let Some(node) = self.node_of(identifier) else {
            let node = u32::try_from(self.nodes.len())
                .ok()
                .filter(|node| *node != u32::MAX)
                .expect("fewer than 2^32 - 1 identifiers");
            let value = identifier.value();
            self.nodes.push(Node {
                value: Key::new(value),
                kind,
                owner: person,
            });
            self.node_by_value
                .insert(value_hash(kind, value.as_bytes()), node);
            self.persons[person as usize].hold(kind, node, self.kind_reported[kind as usize]);
            return;
        };
        let owner = self.nodes[node as usize].owner;
        if owner == person {
            return;
        }
        if owner == Node::SHARED {
            let owners = self
                .shared_owners
                .get_mut(&node)
                .expect("a shared node lists its owners");
            if owners.contains(&person) {
                return;
            }
            owners.push(person);
        } else {
            self.shared_owners.insert(node, vec![owner, person]);
            self.nodes[node as usize].owner = Node::SHARED;
        }
        self.persons[person as usize].hold(kind, node, self.kind_reported[kind as usize]);
    }
}

impl MemoryGraph {
    /// Records an operator's rule: these two persons are never merged by a signal.
    pub fn keep_apart(&mut self, a: &str, b: &str) {
        let pair = if a <= b { (a, b) } else { (b, a) };
        self.kept_apart
            .insert((pair.0.to_owned(), pair.1.to_owned()));
    }
}

impl GraphView for MemoryGraph {
    fn kept_apart(&self, a: &PersonId, b: &PersonId) -> bool {
        let pair = if a <= b { (a, b) } else { (b, a) };
        self.kept_apart.contains(&(pair.0.clone(), pair.1.clone()))
    }

    fn owners(&self, identifier: &Identifier) -> Vec<PersonId> {
        let Some(node) = self.node_of(identifier) else {
            return Vec::new();
        };
        let owner = self.nodes[node as usize].owner;
        if owner != Node::SHARED {
            self.remember_owner(owner);
            return vec![self.persons[owner as usize].id.as_str().to_owned()];
        }
        self.shared_owner_ids(node)
    }

    /// Finds every node, then every owner, then builds the answers: each step's look-ups do
    /// not depend on each other, so their cache misses overlap instead of adding up.
    fn owners_of_each(&self, identifiers: &[&Identifier], found: &mut dyn FnMut(usize, PersonId)) {
        const BATCH: usize = RECENT_OWNERS;
        if identifiers.len() > BATCH {
            for (position, identifier) in identifiers.iter().enumerate() {
                for owner in self.owners(identifier) {
                    found(position, owner);
                }
            }
            return;
        }
        // A look-up is two dependent cache misses on a large graph: the table entry, then the
        // node. Taking every identifier through one step before the next lets the processor
        // wait for each step's misses together. The common case (the first entry read is the
        // node sought) is settled here; anything else takes the full look-up.
        let mut hashes: [Option<(u32, u64)>; BATCH] = [None; BATCH];
        for (hash, identifier) in hashes.iter_mut().zip(identifiers) {
            *hash = self.kind_index(identifier.kind()).map(|kind| {
                let value = identifier.value().as_bytes();
                (kind, value_hash(kind, value))
            });
        }
        let mut first: [Option<u32>; BATCH] = [None; BATCH];
        for (first, hash) in first.iter_mut().zip(&hashes) {
            *first = hash.and_then(|(_, hash)| self.node_by_value.first_candidate(hash));
        }
        // (node, its kind, its owner): loading them is what brings each node into cache.
        let mut read: [Option<(u32, u32, u32)>; BATCH] = [None; BATCH];
        for (read, first) in read.iter_mut().zip(&first) {
            *read = first.map(|index| {
                let node = &self.nodes[index as usize];
                (index, node.kind, node.owner)
            });
        }
        let mut nodes: [Option<(u32, u32)>; BATCH] = [None; BATCH];
        for (((node, identifier), hash), read) in
            nodes.iter_mut().zip(identifiers).zip(&hashes).zip(&read)
        {
            let Some((kind, _)) = hash else { continue };
            *node = match *read {
                Some((index, node_kind, owner))
                    if node_kind == *kind
                        && self.nodes[index as usize].value.as_bytes()
                            == identifier.value().as_bytes() =>
                {
                    Some((index, owner))
                }
                _ => self
                    .node_of(identifier)
                    .map(|node| (node, self.nodes[node as usize].owner)),
            };
        }
        let mut unique_owners: [Option<&str>; BATCH] = [None; BATCH];
        for (owner, node) in unique_owners.iter_mut().zip(&nodes) {
            if let Some((_, person)) = node
                && *person != Node::SHARED
            {
                *owner = Some(self.persons[*person as usize].id.as_str());
            }
        }
        // Remembered last to first, so that the first identifier's owner ends up newest.
        for (_, person) in nodes[..identifiers.len()].iter().rev().flatten() {
            if *person != Node::SHARED {
                self.remember_owner(*person);
            }
        }
        for (position, (node, owner)) in nodes.iter().zip(unique_owners).enumerate() {
            match (node, owner) {
                (None, _) => {}
                (Some(_), Some(owner)) => found(position, owner.to_owned()),
                (Some((node, _)), None) => {
                    for owner in self.shared_owner_ids(*node) {
                        found(position, owner);
                    }
                }
            }
        }
    }

    /// Answers for the canonical person when given an absorbed id, as the store does.
    fn person(&self, id: &PersonId) -> Option<PersonView> {
        let index = self.find(self.person_index(id)?);
        let person = &self.persons[index as usize];
        let mut identifiers: BTreeMap<IdentifierKind, BTreeSet<String>> = BTreeMap::new();
        let reported = &person.reported;
        let all_reported;
        let reported_nodes = match reported.first.get(..reported.count as usize) {
            Some(first) => first,
            None => {
                all_reported = person
                    .nodes
                    .iter()
                    .filter(|(kind, _)| self.kind_reported[*kind as usize])
                    .map(|(_, node)| *node)
                    .collect::<Vec<u32>>();
                &all_reported
            }
        };
        for node in reported_nodes {
            let node = &self.nodes[*node as usize];
            identifiers
                .entry(self.kinds[node.kind as usize].clone())
                .or_default()
                .insert(node.value.as_str().to_owned());
        }
        Some(PersonView {
            id: person.id.as_str().to_owned(),
            created_at: person.created_at,
            identifiers,
        })
    }
}

type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<FastHasher>>;

fn value_hash(kind: u32, value: &[u8]) -> u64 {
    let mut hasher = FastHasher::default();
    hasher.write_u32(kind);
    hasher.write(value);
    hasher.finish()
}

fn id_hash(id: &[u8]) -> u64 {
    let mut hasher = FastHasher::default();
    hasher.write(id);
    hasher.finish()
}

/// An insert-only open-addressing table from hashes to indexes into a vector its owner keeps
/// (nodes, persons); the owner confirms a candidate against its own record.
///
/// An entry is 8 bytes: the top 32 bits of the hash, which also place it, and the index + 1
/// (0 marks a free entry). A map holding the keys themselves would be five times larger, and
/// growing it would re-read and re-hash every key; on a graph of millions of identifiers both
/// are cache misses and page faults.
#[derive(Debug, Default)]
struct IndexTable {
    entries: Vec<u64>,
    len: usize,
}

impl IndexTable {
    fn find(&self, hash: u64, mut is_match: impl FnMut(u32) -> bool) -> Option<u32> {
        if self.entries.is_empty() {
            return None;
        }
        let mask = self.entries.len() - 1;
        let tag = hash >> 32;
        let mut position = tag as usize & mask;
        loop {
            let entry = self.entries[position];
            if entry == 0 {
                return None;
            }
            if entry >> 32 == tag {
                let index = (entry as u32) - 1;
                if is_match(index) {
                    return Some(index);
                }
            }
            position = (position + 1) & mask;
        }
    }

    /// The index in the entry a look-up of `hash` reads first, if that entry's tag is the
    /// hash's: nearly always the index sought, when the table holds it.
    fn first_candidate(&self, hash: u64) -> Option<u32> {
        let mask = self.entries.len().checked_sub(1)?;
        let tag = hash >> 32;
        let entry = self.entries[tag as usize & mask];
        (entry != 0 && entry >> 32 == tag).then(|| (entry as u32) - 1)
    }

    /// Adds an index the table does not hold yet (`index` below `u32::MAX`).
    fn insert(&mut self, hash: u64, index: u32) {
        // At most half full: looking up a value that is absent (every new one) then stops
        // after a few entries, nearly always within the cache line it started in.
        if (self.len + 1) * 2 > self.entries.len() {
            let capacity = (self.entries.len() * 2).max(16);
            let old = std::mem::replace(&mut self.entries, vec![0; capacity]);
            for entry in old.into_iter().filter(|entry| *entry != 0) {
                Self::place(&mut self.entries, entry);
            }
        }
        Self::place(
            &mut self.entries,
            (hash >> 32) << 32 | (u64::from(index) + 1),
        );
        self.len += 1;
    }

    fn place(entries: &mut [u64], entry: u64) {
        let mask = entries.len() - 1;
        let mut position = (entry >> 32) as usize & mask;
        while entries[position] != 0 {
            position = (position + 1) & mask;
        }
        entries[position] = entry;
    }
}

/// A multiply-fold hasher in the style of foldhash and rustc-hash 2.
///
/// Deterministic (this crate reads no randomness) and several times faster than SipHash on short
/// keys. It gives no protection against hash flooding, which is acceptable for a graph built from
/// a tenant's own signal log in tests, replays and benchmarks, not for untrusted keys in a server.
#[derive(Debug, Default, Clone, Copy)]
struct FastHasher {
    hash: u64,
}

impl FastHasher {
    const MULTIPLIER: u64 = 0x9e37_79b9_7f4a_7c15;
    const SEED: u64 = 0x243f_6a88_85a3_08d3;

    /// A full 64×64→128-bit multiply folded back to 64 bits mixes every input bit into every
    /// output bit, which the table's bucket index (low bits) and tag (top bits) both need.
    fn add(&mut self, word: u64) {
        let product = u128::from(self.hash ^ word ^ Self::SEED) * u128::from(Self::MULTIPLIER);
        self.hash = (product as u64) ^ ((product >> 64) as u64);
    }
}

impl Hasher for FastHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0u8; 8];
            word[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(word) ^ ((rest.len() as u64) << 59));
        }
    }

    fn write_u8(&mut self, value: u8) {
        self.add(u64::from(value));
    }

    fn write_u32(&mut self, value: u32) {
        self.add(u64::from(value));
    }

    fn write_u64(&mut self, value: u64) {
        self.add(value);
    }

    fn write_usize(&mut self, value: usize) {
        self.add(value as u64);
    }

    fn finish(&self) -> u64 {
        self.hash
    }
}

/// A string stored inline when short: confirming a look-up then reads the node or person it
/// found instead of chasing a pointer, which on a large graph is a cache miss.
#[derive(Debug)]
enum Key {
    Inline { len: u8, bytes: [u8; Key::INLINE] },
    Heap(Box<str>),
}

impl Key {
    /// Fills the enum to 32 bytes: long enough for most email addresses, which at 24 bytes
    /// would mostly live on the heap and cost a miss on every look-up.
    const INLINE: usize = 30;

    fn new(value: &str) -> Self {
        if value.len() > Self::INLINE {
            return Key::Heap(value.into());
        }
        let mut bytes = [0u8; Self::INLINE];
        bytes[..value.len()].copy_from_slice(value.as_bytes());
        Key::Inline {
            len: u8::try_from(value.len()).expect("INLINE fits in a u8"),
            bytes,
        }
    }

    fn as_bytes(&self) -> &[u8] {
        match self {
            Key::Inline { len, bytes } => &bytes[..usize::from(*len)],
            Key::Heap(value) => value.as_bytes(),
        }
    }

    fn as_str(&self) -> &str {
        match self {
            Key::Inline { len, bytes } => std::str::from_utf8(&bytes[..usize::from(*len)])
                .expect("an inline key holds the bytes of a str"),
            Key::Heap(value) => value,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resolve::{Signal, resolve};

    /// Every index is found again through growth, including among entries whose hashes are
    /// equal or place them in the same run, and nothing else is found.
    #[test]
    fn index_table_finds_every_index_it_holds() {
        let keys: Vec<String> = (0..5_000).map(|n| format!("key-{n}")).collect();
        // A tenth of the keys share one hash: only the caller's check tells them apart.
        let hash = |n: usize| {
            if n.is_multiple_of(10) {
                42
            } else {
                id_hash(keys[n].as_bytes())
            }
        };
        let mut table = IndexTable::default();
        for n in 0..keys.len() {
            let index = u32::try_from(n).expect("small");
            assert_eq!(table.find(hash(n), |i| i == index), None);
            table.insert(hash(n), index);
            assert!(table.len * 2 <= table.entries.len());
        }
        for n in 0..keys.len() {
            let found = table.find(hash(n), |i| keys[i as usize] == keys[n]);
            assert_eq!(found, Some(u32::try_from(n).expect("small")));
        }
        let absent = "key-absent";
        assert_eq!(
            table.find(id_hash(absent.as_bytes()), |i| keys[i as usize] == absent),
            None
        );
        assert_eq!(table.find(42, |i| keys[i as usize] == absent), None);
        assert_eq!(IndexTable::default().find(42, |_| true), None);
    }

    /// `ReportedNodes` agrees with the nodes it summarizes, for every person.
    fn assert_reported_nodes_agree(graph: &MemoryGraph) {
        for person in &graph.persons {
            let reported: Vec<u32> = person
                .nodes
                .iter()
                .filter(|(kind, _)| graph.kind_reported[*kind as usize])
                .map(|(_, node)| *node)
                .collect();
            assert_eq!(person.reported.count as usize, reported.len());
            let cached = reported.len().min(person.reported.first.len());
            assert_eq!(person.reported.first[..cached], reported[..cached]);
        }
    }

    /// Values on both sides of the inline limit (and non-ASCII ones) are found again, by
    /// `owners` and in `person`, and follow their person through a merge.
    #[test]
    fn inline_and_heap_keys_resolve_alike() {
        let settings = IdentitySettings::default();
        let mut graph = MemoryGraph::default();
        let lengths = [1, Key::INLINE - 1, Key::INLINE, Key::INLINE + 1, 64];
        for (n, length) in lengths.into_iter().enumerate() {
            let anonymous = format!("{}é", "a".repeat(length));
            let email = format!("{}@x.com", "e".repeat(length.saturating_sub(6).max(1)));
            let user = format!("u{n}-{}", "x".repeat(length));
            let id = |kind, raw: &str| settings.normalize(kind, raw).expect("valid");
            let (anonymous, email, user) = (
                id("anonymous_id", &anonymous),
                id("email", &email),
                id("external_id", &user),
            );
            let person = |n: usize| format!("p{n}-{}", "q".repeat(length));
            let mut run = |identifiers: Vec<Identifier>, new_person_id: String, second| {
                let at = Timestamp::from_second(second).expect("small");
                let signal = Signal {
                    identifiers: &identifiers,
                    new_person_id,
                    at,
                };
                let resolution = resolve(&settings, &graph, &signal);
                graph.apply(&resolution, at);
                resolution
            };
            let first = run(vec![anonymous.clone()], person(2 * n), 1);
            let second = run(vec![email.clone(), user.clone()], person(2 * n + 1), 2);
            assert!(first.created && second.created);
            let merged = run(
                vec![user.clone(), anonymous.clone()],
                "unused".to_owned(),
                3,
            );
            assert_eq!(merged.person, person(2 * n + 1));
            assert_eq!(merged.merges.len(), 1);
            for identifier in [&anonymous, &email, &user] {
                assert_eq!(graph.owners(identifier), vec![person(2 * n + 1)]);
            }
            let view = graph.person(&person(2 * n)).expect("absorbed ids lead on");
            assert_eq!(view.id, person(2 * n + 1));
            assert_eq!(
                view.identifiers[&IdentifierKind::email()],
                BTreeSet::from([email.value().to_owned()])
            );
            assert_eq!(graph.canonical(&person(2 * n)), person(2 * n + 1));
        }
        assert_eq!(graph.person_count(), lengths.len());
        assert_reported_nodes_agree(&graph);
    }

    /// Persons that gain reported values by links and merges, past what `ReportedNodes`
    /// caches, describe the same values as when every node is read.
    #[test]
    fn reported_nodes_follow_links_and_merges() {
        let settings = IdentitySettings::default();
        let id = |kind, raw: &str| settings.normalize(kind, raw).expect("valid");
        let mut limited = MemoryGraph::for_settings(&settings);
        let mut full = MemoryGraph::default();
        let signals = [
            vec![id("anonymous_id", "a1"), id("email", "a@x.com")],
            vec![id("anonymous_id", "a2"), id("email", "b@x.com")],
            vec![id("anonymous_id", "a1"), id("phone", "+14155552671")],
            vec![id("external_id", "u1"), id("anonymous_id", "a2")],
            vec![id("external_id", "u1"), id("anonymous_id", "a1")],
            vec![id("external_id", "u1"), id("email", "c@x.com")],
        ];
        for (n, identifiers) in signals.iter().enumerate() {
            let at = Timestamp::from_second(n as i64 + 1).expect("small");
            let signal = Signal {
                identifiers,
                new_person_id: format!("p{n}"),
                at,
            };
            let resolution = resolve(&settings, &limited, &signal);
            assert_eq!(resolve(&settings, &full, &signal), resolution);
            limited.apply(&resolution, at);
            full.apply(&resolution, at);
            assert_reported_nodes_agree(&limited);
            assert_reported_nodes_agree(&full);
        }
        assert_eq!(limited.merge_count(), 1);
        let view = limited.person(&"p0".to_owned()).expect("known");
        assert_eq!(
            view.identifiers.values().map(BTreeSet::len).sum::<usize>(),
            5
        );
        let mut full_view = full.person(&"p0".to_owned()).expect("known");
        full_view
            .identifiers
            .retain(|kind, _| kind != &IdentifierKind::anonymous_id());
        assert_eq!(view, full_view);
    }

    /// What one `owners` call per identifier answers, in `batched`'s form.
    fn one_by_one(graph: &MemoryGraph, identifiers: &[&Identifier]) -> Vec<(usize, PersonId)> {
        let mut found: Vec<(usize, PersonId)> = identifiers
            .iter()
            .enumerate()
            .flat_map(|(n, identifier)| graph.owners(identifier).into_iter().map(move |o| (n, o)))
            .collect();
        found.sort();
        found
    }

    fn batched(graph: &MemoryGraph, identifiers: &[&Identifier]) -> Vec<(usize, PersonId)> {
        let mut found = Vec::new();
        graph.owners_of_each(identifiers, &mut |position, owner| {
            found.push((position, owner));
        });
        found.sort();
        found
    }

    /// The batched look-up answers exactly what one `owners` call per identifier does, for
    /// unique, shared, unknown and repeated values, in batches below and above its size.
    #[test]
    fn owners_of_each_answers_like_owners() {
        let mut settings = IdentitySettings::default();
        settings.kinds.get_mut("phone").expect("built in").policy = crate::identity::Policy::Shared;
        let id = |kind, raw: &str| settings.normalize(kind, raw).expect("valid");
        let mut graph = MemoryGraph::default();
        let signals = [
            vec![id("email", "a@x.com"), id("phone", "+14155552671")],
            vec![id("email", "b@x.com"), id("phone", "+14155552671")],
            vec![id("anonymous_id", "c1"), id("phone", "+14155552672")],
        ];
        for (n, identifiers) in signals.iter().enumerate() {
            let at = Timestamp::from_second(n as i64 + 1).expect("small");
            let signal = Signal {
                identifiers,
                new_person_id: format!("p{n}"),
                at,
            };
            let resolution = resolve(&settings, &graph, &signal);
            graph.apply(&resolution, at);
        }
        let known: Vec<Identifier> = signals.iter().flatten().cloned().collect();
        let unknown = id("email", "nobody@x.com");
        let mut all: Vec<&Identifier> = known.iter().collect();
        all.insert(1, &unknown);
        for length in 0..=all.len() {
            for start in 0..all.len() - length + 1 {
                let batch = &all[start..start + length];
                assert_eq!(
                    batched(&graph, batch),
                    one_by_one(&graph, batch),
                    "{batch:?}"
                );
            }
        }
        assert_eq!(graph.owners(&known[1]).len(), 2);

        // Enough values that some share the entry a look-up reads first.
        let many: Vec<Identifier> = (0..300)
            .map(|n| id("anonymous_id", &format!("many-{n}")))
            .collect();
        for (n, identifier) in many.iter().enumerate().filter(|(n, _)| n % 3 != 0) {
            let at = Timestamp::from_second(100 + n as i64).expect("small");
            let signal = Signal {
                identifiers: std::slice::from_ref(identifier),
                new_person_id: format!("m{n}"),
                at,
            };
            let resolution = resolve(&settings, &graph, &signal);
            graph.apply(&resolution, at);
        }
        let all: Vec<&Identifier> = many.iter().collect();
        for batch in all.chunks(RECENT_OWNERS) {
            assert_eq!(
                batched(&graph, batch),
                one_by_one(&graph, batch),
                "{batch:?}"
            );
        }
    }
}
