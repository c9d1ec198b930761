//! The graph a batch of signals is resolved against, without a round trip per signal.
//!
//! A backend reads, once per batch, what any signal of the batch can ask: the canonical owners
//! of every distinct identifier in it, and for each such owner its `created_at` and the values
//! of limited kinds its group holds. Each signal's [`Resolution`] is then applied here as the
//! store will apply it, so that signal `k` sees what signals `0..k` did. No IO.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use idgraph_core::identity::{Identifier, IdentifierKind, IdentitySettings};
use idgraph_core::resolve::{GraphView, PersonId, PersonView, Resolution};
use jiff::Timestamp;

/// The part of the graph one batch of signals can touch.
///
/// Owners are kept as the persons that were canonical when they were recorded (at the start of
/// the batch, or when a signal of the batch attached the identifier) and followed through the
/// batch's merges when read, the way the store follows `persons.merged_into`.
#[derive(Debug, Clone)]
pub struct BatchGraph {
    /// Kinds that have a limit: the only ones the resolver reads from a person.
    limited: BTreeSet<IdentifierKind>,
    owners: HashMap<Identifier, Vec<PersonId>>,
    /// Absorbed person → the person it was merged into by a signal of this batch.
    merged_into: HashMap<PersonId, PersonId>,
    /// Canonical persons only; an absorbed person's view is folded into its survivor's.
    persons: HashMap<PersonId, PersonView>,
    /// Pairs of persons a keep-apart rule names, smaller id first.
    kept_apart: BTreeSet<(PersonId, PersonId)>,
}

impl BatchGraph {
    pub fn new(settings: &IdentitySettings) -> Self {
        let limited = settings
            .kinds
            .iter()
            .filter(|(_, rule)| rule.limit.is_some())
            .map(|(kind, _)| kind.clone())
            .collect();
        Self {
            limited,
            owners: HashMap::new(),
            merged_into: HashMap::new(),
            persons: HashMap::new(),
            kept_apart: BTreeSet::new(),
        }
    }

    /// Records a keep-apart rule in force between two persons.
    pub fn add_kept_apart(&mut self, a: PersonId, b: PersonId) {
        self.kept_apart.insert(if a <= b { (a, b) } else { (b, a) });
    }

    /// Records that `owner`, a canonical person, holds `identifier` at the start of the batch.
    pub fn add_owner(&mut self, identifier: Identifier, owner: PersonId) {
        let owners = self.owners.entry(identifier).or_default();
        if !owners.contains(&owner) {
            owners.push(owner);
        }
    }

    /// Records a canonical person as stored at the start of the batch, with the values its group
    /// holds; values of kinds without a limit are left out.
    pub fn add_person(
        &mut self,
        id: PersonId,
        created_at: Timestamp,
        identifiers: impl IntoIterator<Item = (IdentifierKind, String)>,
    ) {
        let mut by_kind: BTreeMap<IdentifierKind, BTreeSet<String>> = BTreeMap::new();
        for (kind, value) in identifiers {
            if self.limited.contains(&kind) {
                by_kind.entry(kind).or_default().insert(value);
            }
        }
        self.persons.insert(
            id.clone(),
            PersonView {
                id,
                created_at,
                identifiers: by_kind,
            },
        );
    }

    /// The kinds that have a limit: the only ones the resolver reads from a person, so the only
    /// ones a backend needs to read for [`BatchGraph::add_person`].
    pub fn limited_kinds(&self) -> impl Iterator<Item = &IdentifierKind> {
        self.limited.iter()
    }

    /// Applies a resolution made against this graph, as the store records it: creates the
    /// signal's person (`created_at` as the store will read it back, so at the store's
    /// precision), runs the merges (the absorbed person's identifiers and values go to the
    /// survivor), then links the attached identifiers to the person.
    pub fn apply(&mut self, resolution: &Resolution, created_at: Timestamp) {
        if resolution.created {
            self.persons.insert(
                resolution.person.clone(),
                PersonView {
                    id: resolution.person.clone(),
                    created_at,
                    identifiers: BTreeMap::new(),
                },
            );
        }
        for step in &resolution.merges {
            let survivor = self.canonical(&step.survivor).to_owned();
            let absorbed = self.canonical(&step.absorbed).to_owned();
            if survivor == absorbed {
                continue;
            }
            if let Some(view) = self.persons.remove(&absorbed)
                && let Some(into) = self.persons.get_mut(&survivor)
            {
                for (kind, values) in view.identifiers {
                    into.identifiers.entry(kind).or_default().extend(values);
                }
            }
            self.merged_into.insert(absorbed, survivor);
        }
        let person = self.canonical(&resolution.person).to_owned();
        for identifier in &resolution.attach {
            let owners = self.owners.entry(identifier.clone()).or_default();
            if !owners.contains(&person) {
                owners.push(person.clone());
            }
            if self.limited.contains(identifier.kind())
                && let Some(view) = self.persons.get_mut(&person)
            {
                view.identifiers
                    .entry(identifier.kind().clone())
                    .or_default()
                    .insert(identifier.value().to_owned());
            }
        }
    }

    /// The person `id` now stands for, following the batch's merges; `id` itself when it was
    /// not absorbed in this batch.
    pub fn canonical<'a>(&'a self, mut id: &'a str) -> &'a str {
        while let Some(next) = self.merged_into.get(id) {
            id = next;
        }
        id
    }
}

impl GraphView for BatchGraph {
    fn kept_apart(&self, a: &PersonId, b: &PersonId) -> bool {
        let pair = if a <= b { (a, b) } else { (b, a) };
        self.kept_apart.contains(&(pair.0.clone(), pair.1.clone()))
    }

    fn owners(&self, identifier: &Identifier) -> Vec<PersonId> {
        let Some(recorded) = self.owners.get(identifier) else {
            return Vec::new();
        };
        let mut owners: Vec<PersonId> = recorded
            .iter()
            .map(|owner| self.canonical(owner).to_owned())
            .collect();
        if owners.len() > 1 {
            // Persons sharing a value may have merged in this batch.
            owners.sort_unstable();
            owners.dedup();
        }
        owners
    }

    /// Answers for the canonical person when given an absorbed id, as the store does.
    fn person(&self, id: &PersonId) -> Option<PersonView> {
        self.persons.get(self.canonical(id)).cloned()
    }
}

#[cfg(test)]
mod tests {
    use idgraph_core::identity::Policy;
    use idgraph_core::resolve::memory::MemoryGraph;
    use idgraph_core::resolve::{Signal, resolve};
    use proptest::prelude::*;

    use super::*;

    /// Small alphabets so that random signals collide: 3 external ids, 6 emails, 4 phones, 6
    /// anonymous ids and 3 values of a kind the settings do not know.
    fn alphabet(settings: &IdentitySettings) -> Vec<Identifier> {
        let mut raw: Vec<(&str, String)> = Vec::new();
        raw.extend((0..3).map(|n| ("external_id", format!("user-{n}"))));
        raw.extend((0..6).map(|n| ("email", format!("e{n}@x.com"))));
        raw.extend((0..4).map(|n| ("phone", format!("+1 415 555 267{n}"))));
        raw.extend((0..6).map(|n| ("anonymous_id", format!("anon-{n}"))));
        let mut alphabet: Vec<Identifier> = raw
            .iter()
            .map(|(kind, value)| settings.normalize(kind, value).unwrap())
            .collect();
        let unknown = IdentifierKind::parse("legacy_id").unwrap();
        alphabet.extend((0..3).map(|n| Identifier::from_stored(unknown.clone(), format!("l{n}"))));
        alphabet
    }

    /// Default settings, optionally with shared phones and tight limits, which make conflicts
    /// and limit checks against merged views common.
    fn settings_for(shared_phones: bool, tight_limits: bool) -> IdentitySettings {
        let mut settings = IdentitySettings::default();
        if shared_phones {
            settings.kinds.get_mut("phone").unwrap().policy = Policy::Shared;
        }
        if tight_limits {
            settings.kinds.get_mut("email").unwrap().limit = Some(2);
            settings.kinds.get_mut("phone").unwrap().limit = Some(1);
        }
        settings
    }

    /// Signal `n` creates person `p{n}`; two signals in a row share a timestamp, so persons of
    /// the same age meet and the tie on id is exercised too.
    fn signal_at(n: usize) -> (PersonId, Timestamp) {
        let seconds = i64::try_from(n / 2).unwrap();
        (format!("p{n:04}"), Timestamp::from_second(seconds).unwrap())
    }

    /// A batch graph seeded the way a backend seeds it, from the reference graph's state.
    fn seed(
        settings: &IdentitySettings,
        reference: &MemoryGraph,
        batch: &[Vec<Identifier>],
    ) -> BatchGraph {
        let mut graph = BatchGraph::new(settings);
        for identifier in batch.iter().flatten() {
            for owner in reference.owners(identifier) {
                let view = reference.person(&owner).unwrap();
                let values = view
                    .identifiers
                    .into_iter()
                    .flat_map(|(kind, values)| values.into_iter().map(move |v| (kind.clone(), v)));
                graph.add_person(owner.clone(), view.created_at, values);
                graph.add_owner(identifier.clone(), owner);
            }
        }
        graph
    }

    fn log() -> impl Strategy<Value = Vec<Vec<usize>>> {
        prop::collection::vec(prop::collection::vec(0usize..22, 1..=4), 0..=40)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(500))]

        /// Resolving a batch one signal after another against a graph seeded from the state
        /// before the batch decides exactly what resolving against the whole graph decides.
        #[test]
        fn a_batch_resolves_as_the_whole_graph_does(
            before in log(),
            batch in log(),
            shared_phones in any::<bool>(),
            tight_limits in any::<bool>(),
        ) {
            let settings = settings_for(shared_phones, tight_limits);
            let alphabet = alphabet(&settings);
            let pick = |picks: &Vec<usize>| -> Vec<Identifier> {
                picks.iter().map(|i| alphabet[*i].clone()).collect()
            };
            let mut reference = MemoryGraph::default();
            for (n, picks) in before.iter().enumerate() {
                let identifiers = pick(picks);
                let (new_person_id, at) = signal_at(n);
                let signal = Signal { identifiers: &identifiers, new_person_id, at };
                let resolution = resolve(&settings, &reference, &signal);
                reference.apply(&resolution, at);
            }
            let batch: Vec<Vec<Identifier>> = batch.iter().map(pick).collect();
            let mut graph = seed(&settings, &reference, &batch);
            for (k, identifiers) in batch.iter().enumerate() {
                let (new_person_id, at) = signal_at(before.len() + k);
                let signal = Signal { identifiers, new_person_id, at };
                let expected = resolve(&settings, &reference, &signal);
                let got = resolve(&settings, &graph, &signal);
                prop_assert_eq!(&got, &expected, "signal {} of the batch: {:?}", k, identifiers);
                reference.apply(&expected, at);
                graph.apply(&got, at);
            }
        }
    }

    #[test]
    fn owners_follow_merges_made_in_the_batch() {
        let settings = IdentitySettings::default();
        let email = settings.normalize("email", "ann@x.com").unwrap();
        let anon = settings.normalize("anonymous_id", "a1").unwrap();
        let user = settings.normalize("external_id", "ann").unwrap();
        let mut graph = BatchGraph::new(&settings);
        graph.add_person(
            "p1".into(),
            Timestamp::UNIX_EPOCH,
            [(email.kind().clone(), email.value().into())],
        );
        graph.add_person(
            "p2".into(),
            Timestamp::UNIX_EPOCH,
            [(anon.kind().clone(), anon.value().into())],
        );
        graph.add_owner(email.clone(), "p1".into());
        graph.add_owner(anon.clone(), "p2".into());
        let identifiers = [user.clone(), email.clone(), anon.clone()];
        let signal = Signal {
            identifiers: &identifiers,
            new_person_id: "p3".into(),
            at: Timestamp::UNIX_EPOCH,
        };
        let resolution = resolve(&settings, &graph, &signal);
        assert_eq!(resolution.person, "p1");
        assert_eq!(resolution.merges.len(), 1);
        graph.apply(&resolution, Timestamp::UNIX_EPOCH);
        assert_eq!(graph.owners(&anon), vec!["p1".to_owned()]);
        assert_eq!(graph.owners(&user), vec!["p1".to_owned()]);
        assert_eq!(graph.canonical("p2"), "p1");
        let view = graph.person(&"p2".to_owned()).unwrap();
        assert_eq!(view.id, "p1");
        // Only limited kinds are kept: the external id and the email, not the anonymous id.
        assert_eq!(
            view.identifiers
                .keys()
                .map(IdentifierKind::as_str)
                .collect::<Vec<_>>(),
            vec!["email", "external_id"]
        );
    }
}
