//! Resolution rules, one test per rule of DESIGN.md, and properties over random signal logs.

use std::collections::{BTreeMap, BTreeSet};

use idgraph_core::identity::{Identifier, IdentifierKind, IdentitySettings, Policy};
use idgraph_core::resolve::memory::MemoryGraph;
use idgraph_core::resolve::{
    Conflict, ConflictRule, GraphView, MergeStep, PersonId, Resolution, Signal, resolve,
};
use jiff::Timestamp;
use proptest::prelude::*;

/// A graph plus the signal counter that names new persons `p1`, `p2`, ...
struct World {
    settings: IdentitySettings,
    graph: MemoryGraph,
    signals: i64,
}

impl World {
    fn new() -> Self {
        Self::with(IdentitySettings::default())
    }

    fn with(settings: IdentitySettings) -> Self {
        Self {
            settings,
            graph: MemoryGraph::default(),
            signals: 0,
        }
    }

    fn id(&self, kind: &str, raw: &str) -> Identifier {
        self.settings
            .normalize(kind, raw)
            .expect("test values are valid")
    }

    /// Resolves and applies one signal; new persons are created one second apart.
    fn signal(&mut self, raw: &[(&str, &str)]) -> Resolution {
        let identifiers: Vec<Identifier> = raw.iter().map(|(k, v)| self.id(k, v)).collect();
        self.signals += 1;
        let at = Timestamp::from_second(self.signals).expect("small");
        self.signal_at(&identifiers, at)
    }

    fn signal_at(&mut self, identifiers: &[Identifier], at: Timestamp) -> Resolution {
        let signal = Signal {
            identifiers,
            new_person_id: format!("p{}", self.signals),
            at,
        };
        let resolution = resolve(&self.settings, &self.graph, &signal);
        self.graph.apply(&resolution, at);
        resolution
    }

    fn holds(&self, person: &str) -> BTreeSet<(String, String)> {
        self.graph
            .partition()
            .get(person)
            .unwrap_or_else(|| panic!("{person} is not a canonical person"))
            .iter()
            .map(|i| (i.kind().to_string(), i.value().to_owned()))
            .collect()
    }

    fn owners(&self, kind: &str, raw: &str) -> Vec<PersonId> {
        self.graph.owners(&self.id(kind, raw))
    }
}

fn set(pairs: &[(&str, &str)]) -> BTreeSet<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn limit(kind: &str, limit: u32) -> ConflictRule {
    ConflictRule::LimitExceeded {
        kind: IdentifierKind::parse(kind).expect("a kind name"),
        limit,
    }
}

#[test]
fn an_unknown_signal_creates_a_person_with_its_identifiers() {
    let mut world = World::new();
    let r = world.signal(&[("anonymous_id", "a1"), ("email", "Ann@X.com")]);
    assert_eq!(r.person, "p1");
    assert!(r.created);
    assert!(r.merges.is_empty() && r.touch.is_empty() && r.conflicts.is_empty());
    assert_eq!(
        r.attach,
        vec![
            world.id("anonymous_id", "a1"),
            world.id("email", "ann@x.com")
        ]
    );
    assert_eq!(
        world.holds("p1"),
        set(&[("anonymous_id", "a1"), ("email", "ann@x.com")])
    );
}

#[test]
fn a_known_identifier_attaches_the_new_ones_and_touches_the_rest() {
    let mut world = World::new();
    world.signal(&[("email", "ann@x.com")]);
    let r = world.signal(&[("phone", "(415) 555-2671"), ("email", "ann@x.com")]);
    assert_eq!((r.person.as_str(), r.created), ("p1", false));
    assert_eq!(r.attach, vec![world.id("phone", "+14155552671")]);
    assert_eq!(r.touch, vec![world.id("email", "ann@x.com")]);
    assert_eq!(world.graph.person_count(), 1);
}

#[test]
fn duplicates_in_a_signal_count_once() {
    let mut world = World::new();
    let email = world.id("email", "ann@x.com");
    let r = world.signal_at(
        &[email.clone(), email.clone(), email.clone()],
        Timestamp::UNIX_EPOCH,
    );
    assert_eq!(r.attach, vec![email]);
}

#[test]
fn progressive_enrichment_merges_the_anonymous_person_into_the_identified_one() {
    let mut world = World::new();
    // A visitor browses anonymously, then leaves an email.
    world.signal(&[("anonymous_id", "anon-1")]);
    let r = world.signal(&[("anonymous_id", "anon-1"), ("email", "ann@x.com")]);
    assert_eq!((r.person.as_str(), r.attach.len()), ("p1", 1));
    // She signs up on another device: a new, identified person.
    let r = world.signal(&[("external_id", "user-1"), ("anonymous_id", "anon-2")]);
    assert_eq!((r.person.as_str(), r.created), ("p3", true));
    // Then logs in on the first device: the anonymous person joins the identified one.
    let r = world.signal(&[("anonymous_id", "anon-1"), ("external_id", "user-1")]);
    assert_eq!(r.person, "p3");
    assert_eq!(
        r.merges,
        vec![MergeStep {
            survivor: "p3".into(),
            absorbed: "p1".into(),
            identifiers: vec![
                world.id("anonymous_id", "anon-1"),
                world.id("external_id", "user-1")
            ],
            rule:
                "priority: external_id found the survivor, anonymous_id found the absorbed person"
                    .into(),
        }]
    );
    assert_eq!(
        r.touch,
        vec![
            world.id("anonymous_id", "anon-1"),
            world.id("external_id", "user-1")
        ]
    );
    assert!(r.attach.is_empty() && r.conflicts.is_empty());
    assert_eq!(
        world.holds("p3"),
        set(&[
            ("anonymous_id", "anon-1"),
            ("anonymous_id", "anon-2"),
            ("email", "ann@x.com"),
            ("external_id", "user-1"),
        ])
    );
    assert_eq!(world.graph.canonical("p1"), "p3");
    assert_eq!(world.graph.merged_from("p3"), vec!["p1".to_owned()]);
    assert_eq!(world.owners("email", "ann@x.com"), vec!["p3".to_owned()]);
    // The absorbed id answers with its survivor.
    assert_eq!(world.graph.person(&"p1".to_owned()).unwrap().id, "p3");
}

#[test]
fn the_highest_priority_identifier_picks_the_survivor_even_over_an_older_person() {
    let mut world = World::new();
    world.signal(&[("email", "ann@x.com")]); // p1, older
    world.signal(&[("external_id", "user-1")]); // p2
    let r = world.signal(&[("email", "ann@x.com"), ("external_id", "user-1")]);
    assert_eq!(r.person, "p2");
    assert_eq!(r.merges.len(), 1);
    assert_eq!(
        (r.merges[0].survivor.as_str(), r.merges[0].absorbed.as_str()),
        ("p2", "p1")
    );
    // The signal's identifiers that tied the two, in the signal's order.
    assert_eq!(
        r.merges[0].identifiers,
        vec![
            world.id("email", "ann@x.com"),
            world.id("external_id", "user-1")
        ]
    );
}

#[test]
fn on_equal_priority_the_oldest_person_survives() {
    let mut world = World::new();
    world.signal(&[("email", "old@x.com")]); // p1
    world.signal(&[("email", "new@x.com")]); // p2
    // The newer person's email comes first; order in the signal does not matter.
    let r = world.signal(&[("email", "new@x.com"), ("email", "old@x.com")]);
    assert_eq!(r.person, "p1");
    assert_eq!(r.merges[0].absorbed, "p2");
    assert!(
        r.merges[0].rule.ends_with("oldest person on ties"),
        "{}",
        r.merges[0].rule
    );
}

#[test]
fn on_equal_priority_and_age_the_smallest_id_survives() {
    let mut world = World::new();
    let same_time = Timestamp::UNIX_EPOCH;
    let (b, a) = (world.id("email", "b@x.com"), world.id("email", "a@x.com"));
    world.signals = 9;
    world.signal_at(std::slice::from_ref(&b), same_time); // p9
    world.signals = 10;
    world.signal_at(std::slice::from_ref(&a), same_time); // p10 < p9 as strings
    world.signals = 11;
    let r = world.signal_at(&[b, a], same_time);
    assert_eq!(
        (r.person.as_str(), r.merges[0].absorbed.as_str()),
        ("p10", "p9")
    );
    assert!(r.merges[0].rule.ends_with("smallest id on ties"));
}

#[test]
fn two_different_external_ids_never_merge() {
    let mut world = World::new();
    world.signal(&[("external_id", "user-1"), ("email", "ann@x.com")]); // p1
    world.signal(&[("external_id", "user-2"), ("email", "bob@x.com")]); // p2
    let before = world.graph.partition();

    for signal in [
        vec![("email", "ann@x.com"), ("email", "bob@x.com")],
        vec![("external_id", "user-1"), ("email", "bob@x.com")],
        vec![("external_id", "user-1"), ("external_id", "user-2")],
    ] {
        let r = world.signal(&signal);
        assert_eq!(r.person, "p1", "{signal:?}");
        assert!(r.merges.is_empty(), "{signal:?}");
        let linking = world.id(signal[1].0, signal[1].1);
        assert_eq!(
            r.conflicts,
            vec![Conflict {
                identifier: linking,
                person: "p1".into(),
                other_person: Some("p2".into()),
                rule: limit("external_id", 1),
            }],
            "{signal:?}"
        );
        assert_eq!(r.touch, vec![world.id(signal[0].0, signal[0].1)]);
        assert!(r.attach.is_empty());
        // Each identifier stays where it was.
        assert_eq!(world.graph.partition(), before, "{signal:?}");
    }
}

#[test]
fn a_new_external_id_does_not_join_a_person_who_has_another() {
    let mut world = World::new();
    world.signal(&[("external_id", "user-1"), ("email", "ann@x.com")]); // p1
    // user-3 arrives carrying ann's email: the external id is the stronger evidence, so the
    // signal is user-3's, not ann's; the email stays with ann and the clash is recorded.
    let r = world.signal(&[("email", "ann@x.com"), ("external_id", "user-3")]);
    assert_eq!((r.person.as_str(), r.created), ("p2", true));
    assert_eq!(r.attach, vec![world.id("external_id", "user-3")]);
    assert!(r.merges.is_empty() && r.touch.is_empty());
    assert_eq!(
        r.conflicts,
        vec![Conflict {
            identifier: world.id("email", "ann@x.com"),
            person: "p2".into(),
            other_person: Some("p1".into()),
            rule: limit("external_id", 1),
        }]
    );
    assert_eq!(world.owners("email", "ann@x.com"), vec!["p1".to_owned()]);
    assert_eq!(
        world.holds("p1"),
        set(&[("email", "ann@x.com"), ("external_id", "user-1")])
    );
}

#[test]
fn two_users_of_one_browser_stay_apart() {
    let mut world = World::new();
    // Ann logs in on a shared computer, logs out; Bob logs in on the same browser.
    world.signal(&[("anonymous_id", "browser-1"), ("external_id", "ann")]); // p1
    let r = world.signal(&[("anonymous_id", "browser-1"), ("external_id", "bob")]);
    assert_eq!((r.person.as_str(), r.created), ("p2", true));
    assert_eq!(r.conflicts.len(), 1);
    assert_eq!(r.conflicts[0].other_person.as_deref(), Some("p1"));
    assert_eq!(
        world.owners("anonymous_id", "browser-1"),
        vec!["p1".to_owned()]
    );
    // Anonymous activity on that browser still goes to the person who first used it.
    let r = world.signal(&[("anonymous_id", "browser-1")]);
    assert_eq!(r.person, "p1");
}

#[test]
fn a_new_email_can_outrank_a_person_found_through_a_phone() {
    let mut world = World::new();
    let emails: Vec<String> = (1..=5).map(|n| format!("e{n}@x.com")).collect();
    let mut first: Vec<(&str, &str)> = emails.iter().map(|e| ("email", e.as_str())).collect();
    first.push(("phone", "(415) 555-2671"));
    world.signal(&first); // p1 holds five emails and the phone
    // A sixth email is stronger evidence than the phone: a new person, the phone stays.
    let r = world.signal(&[("phone", "(415) 555-2671"), ("email", "e6@x.com")]);
    assert_eq!((r.person.as_str(), r.created), ("p2", true));
    assert_eq!(r.conflicts[0].identifier, world.id("phone", "+14155552671"));
    assert_eq!(r.conflicts[0].rule, limit("email", 5));
    // With an email of the person, the same phone and a sixth email: the person is found at
    // the email's priority before the new email is considered, so the new one is refused.
    let r = world.signal(&[("email", "e1@x.com"), ("email", "e7@x.com")]);
    assert_eq!(r.person, "p1");
    assert_eq!(r.conflicts[0].identifier, world.id("email", "e7@x.com"));
    assert_eq!(r.conflicts[0].other_person, None);
}

#[test]
fn merges_follow_priority_and_a_refusal_accounts_for_earlier_merges() {
    let mut world = World::new();
    world.signal(&[("email", "a@x.com")]); // p1: no external id yet
    world.signal(&[("external_id", "u1"), ("email", "b@x.com")]); // p2
    world.signal(&[("external_id", "u2"), ("phone", "(415) 555-2671")]); // p3
    world.signal(&[("anonymous_id", "anon-4")]); // p4
    let r = world.signal(&[
        ("anonymous_id", "anon-4"),
        ("phone", "(415) 555-2671"),
        ("email", "b@x.com"),
        ("email", "a@x.com"),
    ]);
    // Emails found p1 and p2 (p1 older survives); p2 brings u1, so p3's u2 cannot follow.
    assert_eq!(r.person, "p1");
    let absorbed: Vec<&str> = r.merges.iter().map(|m| m.absorbed.as_str()).collect();
    assert_eq!(absorbed, ["p2", "p4"]);
    assert_eq!(r.conflicts.len(), 1);
    assert_eq!(r.conflicts[0].other_person.as_deref(), Some("p3"));
    assert_eq!(r.conflicts[0].identifier, world.id("phone", "+14155552671"));
    assert_eq!(world.owners("phone", "+14155552671"), vec!["p3".to_owned()]);
    assert_eq!(
        world.graph.merged_from("p1"),
        vec!["p2".to_owned(), "p4".to_owned()]
    );
    assert_eq!(world.graph.person_count(), 2);
}

#[test]
fn a_shared_identifier_links_without_merging() {
    let mut settings = IdentitySettings::default();
    settings.kinds.get_mut("phone").unwrap().policy = Policy::Shared;
    let mut world = World::with(settings);
    world.signal(&[("email", "mom@x.com"), ("phone", "(415) 555-2671")]); // p1
    let r = world.signal(&[("email", "kid@x.com"), ("phone", "(415) 555-2671")]);
    assert_eq!((r.person.as_str(), r.created), ("p2", true));
    assert!(r.merges.is_empty());
    assert_eq!(r.attach.len(), 2);
    assert_eq!(world.owners("phone", "+14155552671"), ["p1", "p2"]);
    let r = world.signal(&[("email", "mom@x.com"), ("phone", "(415) 555-2671")]);
    assert_eq!(r.person, "p1");
    assert_eq!(r.touch.len(), 2);
    assert!(r.attach.is_empty());
    assert_eq!(world.graph.person_count(), 2);
}

#[test]
fn a_value_declared_shared_links_without_merging_while_its_kind_stays_unique() {
    let mut settings = IdentitySettings::default();
    settings.shared_values.insert(
        "anonymous_id".to_owned(),
        BTreeSet::from(["kiosk".to_owned()]),
    );
    let mut world = World::with(settings);
    world.signal(&[("email", "a@x.com"), ("anonymous_id", "kiosk")]); // p1
    let r = world.signal(&[("email", "b@x.com"), ("anonymous_id", "kiosk")]);
    assert_eq!((r.person.as_str(), r.created), ("p2", true));
    assert!(r.merges.is_empty());
    assert_eq!(world.owners("anonymous_id", "kiosk"), ["p1", "p2"]);
    // Another device id of the same kind still merges.
    world.signal(&[("email", "c@x.com"), ("anonymous_id", "laptop")]); // p3
    let r = world.signal(&[("email", "b@x.com"), ("anonymous_id", "laptop")]);
    assert_eq!(r.merges.len(), 1, "{r:?}");
    assert_eq!(world.graph.person_count(), 2);
}

#[test]
fn persons_sharing_a_value_keep_one_link_when_they_merge() {
    let mut settings = IdentitySettings::default();
    settings.kinds.get_mut("phone").expect("built in").policy = Policy::Shared;
    let mut world = World::with(settings);
    world.signal(&[("email", "a@x.com"), ("phone", "(415) 555-2671")]); // p1
    world.signal(&[("email", "b@x.com"), ("phone", "(415) 555-2671")]); // p2
    world.signal(&[("anonymous_id", "anon-3")]); // p3
    world.signal(&[("anonymous_id", "anon-3"), ("email", "b@x.com")]); // p3 absorbed by p2
    let r = world.signal(&[("email", "a@x.com"), ("email", "b@x.com")]); // p2 absorbed by p1
    assert_eq!(
        (r.person.as_str(), r.merges[0].absorbed.as_str()),
        ("p1", "p2")
    );
    assert_eq!(world.owners("phone", "+14155552671"), ["p1"]);
    assert_eq!(world.holds("p1").len(), 4);
    assert_eq!(world.graph.merged_from("p1"), ["p3", "p2"]);
    assert_eq!(world.graph.canonical("p3"), "p1");
    assert_eq!(world.graph.canonical("nobody"), "nobody");
}

/// The limit of a shared kind is checked against what the signal's person holds, also when
/// nothing else in the signal needed the person described.
#[test]
fn a_sixth_shared_phone_is_not_attached() {
    let mut settings = IdentitySettings::default();
    settings.kinds.get_mut("phone").expect("built in").policy = Policy::Shared;
    let mut world = World::with(settings);
    world.signal(&[("external_id", "u1")]);
    for n in 1..=5 {
        let phone = format!("+1 415 555 267{n}");
        let r = world.signal(&[("external_id", "u1"), ("phone", &phone)]);
        assert_eq!(r.attach.len(), 1);
    }
    let r = world.signal(&[("external_id", "u1"), ("phone", "+1 415 555 2676")]);
    assert_eq!((r.person.as_str(), r.attach.len()), ("p1", 0));
    assert_eq!(r.touch, vec![world.id("external_id", "u1")]);
    assert_eq!(
        r.conflicts,
        vec![Conflict {
            identifier: world.id("phone", "+1 415 555 2676"),
            person: "p1".into(),
            other_person: None,
            rule: limit("phone", 5),
        }]
    );
}

#[test]
fn a_sixth_email_is_not_attached() {
    let mut world = World::new();
    world.signal(&[("external_id", "u1")]);
    for n in 1..=5 {
        let email = format!("e{n}@x.com");
        let r = world.signal(&[("external_id", "u1"), ("email", &email)]);
        assert_eq!(r.attach.len(), 1);
    }
    let r = world.signal(&[("external_id", "u1"), ("email", "e6@x.com")]);
    assert!(r.attach.is_empty());
    assert_eq!(
        r.conflicts,
        vec![Conflict {
            identifier: world.id("email", "e6@x.com"),
            person: "p1".into(),
            other_person: None,
            rule: limit("email", 5),
        }]
    );
    assert!(world.owners("email", "e6@x.com").is_empty());
    assert_eq!(world.holds("p1").len(), 6);
}

#[test]
fn a_new_person_keeps_the_first_values_within_a_limit() {
    let mut world = World::new();
    let emails: Vec<(&str, String)> = (1..=7).map(|n| ("email", format!("e{n}@x.com"))).collect();
    let raw: Vec<(&str, &str)> = emails.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let r = world.signal(&raw);
    let attached: Vec<&str> = r.attach.iter().map(Identifier::value).collect();
    assert_eq!(
        attached,
        ["e1@x.com", "e2@x.com", "e3@x.com", "e4@x.com", "e5@x.com"]
    );
    let conflicted: Vec<&str> = r.conflicts.iter().map(|c| c.identifier.value()).collect();
    assert_eq!(conflicted, ["e6@x.com", "e7@x.com"]);
}

#[test]
fn a_merge_that_would_exceed_the_email_limit_is_refused() {
    let mut world = World::new();
    world.signal(&[
        ("email", "a1@x.com"),
        ("email", "a2@x.com"),
        ("email", "a3@x.com"),
    ]);
    world.signal(&[
        ("email", "b1@x.com"),
        ("email", "b2@x.com"),
        ("email", "b3@x.com"),
    ]);
    let r = world.signal(&[("email", "a1@x.com"), ("email", "b1@x.com")]);
    assert!(r.merges.is_empty());
    assert_eq!(r.conflicts[0].rule, limit("email", 5));
    assert_eq!(world.graph.person_count(), 2);
}

/// A graph whose store is inconsistent: it names an owner it cannot describe.
struct Forgetful;

impl GraphView for Forgetful {
    fn owners(&self, identifier: &Identifier) -> Vec<PersonId> {
        match identifier.value() {
            "ghost@x.com" => vec!["ghost".into()],
            "known@x.com" => vec!["known".into()],
            _ => Vec::new(),
        }
    }

    fn person(&self, id: &PersonId) -> Option<idgraph_core::resolve::PersonView> {
        (id == "known").then(|| idgraph_core::resolve::PersonView {
            id: id.clone(),
            created_at: Timestamp::MAX,
            identifiers: BTreeMap::new(),
        })
    }
}

#[test]
fn an_owner_the_graph_cannot_describe_counts_as_the_newest() {
    let settings = IdentitySettings::default();
    let ghost = settings.normalize("email", "ghost@x.com").unwrap();
    let known = settings.normalize("email", "known@x.com").unwrap();
    let identifiers = [ghost, known];
    let signal = Signal {
        identifiers: &identifiers,
        new_person_id: "new".into(),
        at: Timestamp::UNIX_EPOCH,
    };
    let r = resolve(&settings, &Forgetful, &signal);
    // Both "newest"; the smallest id decides.
    assert_eq!(
        (r.person.as_str(), r.merges[0].absorbed.as_str()),
        ("ghost", "known")
    );
}

// ---- Properties over random signal logs ----

/// Small alphabets so that signals collide: 5 external ids, 8 emails, 6 phones, 10 anonymous ids.
fn alphabet(settings: &IdentitySettings) -> Vec<Identifier> {
    let mut raw: Vec<(&str, String)> = Vec::new();
    raw.extend((0..5).map(|n| ("external_id", format!("user-{n}"))));
    raw.extend((0..8).map(|n| ("email", format!("e{n}@x.com"))));
    raw.extend((0..6).map(|n| ("phone", format!("+1 415 555 267{n}"))));
    raw.extend((0..10).map(|n| ("anonymous_id", format!("anon-{n}"))));
    raw.iter()
        .map(|(kind, value)| settings.normalize(kind, value).expect("valid"))
        .collect()
}

fn settings_for(shared_phones: bool) -> IdentitySettings {
    let mut settings = IdentitySettings::default();
    if shared_phones {
        settings.kinds.get_mut("phone").expect("built in").policy = Policy::Shared;
    }
    settings
}

type Log = Vec<Vec<usize>>;

fn log() -> impl Strategy<Value = Log> {
    prop::collection::vec(prop::collection::vec(0usize..29, 1..=4), 0..=60)
}

/// Replays a log into a fresh graph, checking per-signal invariants on the way.
fn replay(
    settings: &IdentitySettings,
    alphabet: &[Identifier],
    log: &Log,
    limited_views: bool,
) -> Result<(MemoryGraph, Vec<Resolution>), TestCaseError> {
    let mut graph = if limited_views {
        MemoryGraph::for_settings(settings)
    } else {
        MemoryGraph::default()
    };
    let mut resolutions = Vec::new();
    for (n, picks) in log.iter().enumerate() {
        let identifiers: Vec<Identifier> = picks.iter().map(|i| alphabet[*i].clone()).collect();
        let at = Timestamp::from_second(i64::try_from(n).expect("small")).expect("small");
        let signal = Signal {
            identifiers: &identifiers,
            new_person_id: format!("p{n:03}"),
            at,
        };
        let r = resolve(settings, &graph, &signal);
        graph.apply(&r, at);

        // Every distinct identifier ends in exactly one of attach, touch, conflicts.
        let distinct: BTreeSet<&Identifier> = identifiers.iter().collect();
        let mut accounted: Vec<&Identifier> = r.attach.iter().chain(&r.touch).collect();
        accounted.extend(r.conflicts.iter().map(|c| &c.identifier));
        prop_assert_eq!(accounted.len(), distinct.len(), "{:?}", r);
        prop_assert_eq!(
            accounted.into_iter().collect::<BTreeSet<_>>(),
            distinct.clone()
        );
        // A new person touches nothing: without a conflict it holds every distinct identifier
        // of its signal.
        if r.created && r.conflicts.is_empty() {
            prop_assert!(r.touch.is_empty(), "{:?}", r);
            prop_assert_eq!(r.attach.len(), distinct.len(), "{:?}", r);
        }
        // (d) what was not conflicted is owned, by the signal's person.
        for identifier in r.attach.iter().chain(&r.touch) {
            let owners = graph.owners(identifier);
            prop_assert!(
                owners.contains(&r.person),
                "{:?} not on {}",
                identifier,
                r.person
            );
        }
        prop_assert_eq!(graph.canonical(&r.person), r.person.clone());
        // (e) the strongest evidence is never what gets dropped: of the unique identifiers of
        // the signal's highest priority, at least one is on its person. (Shared values are
        // not evidence of who the signal is.)
        let rule = |i: &Identifier| settings.rule(i.kind()).expect("built in");
        let unique: Vec<&Identifier> = identifiers
            .iter()
            .filter(|i| rule(i).policy == Policy::Unique)
            .collect();
        let top = unique.iter().map(|i| rule(i).priority).min();
        prop_assert!(
            top.is_none()
                || unique
                    .iter()
                    .filter(|i| Some(rule(i).priority) == top)
                    .any(|i| graph.owners(i).contains(&r.person)),
            "{:?}",
            r
        );
        resolutions.push(r);
    }
    Ok((graph, resolutions))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn replaying_a_log_keeps_every_invariant(
        log in log(),
        shared_phones in any::<bool>(),
        limited_views in any::<bool>(),
    ) {
        let settings = settings_for(shared_phones);
        let alphabet = alphabet(&settings);
        let (graph, resolutions) = replay(&settings, &alphabet, &log, limited_views)?;

        // (a) determinism: the same log gives the same graph and the same merges.
        // Whether views list every kind or only the limited ones makes no difference either.
        let (again, resolutions_again) = replay(&settings, &alphabet, &log, !limited_views)?;
        prop_assert_eq!(graph.partition(), again.partition());
        prop_assert_eq!(&resolutions, &resolutions_again);
        let merges: Vec<&MergeStep> = resolutions.iter().flat_map(|r| &r.merges).collect();
        prop_assert_eq!(merges.len() as u64, graph.merge_count());

        let partition = graph.partition();
        let mut holders: BTreeMap<&Identifier, Vec<&PersonId>> = BTreeMap::new();
        for (person, identifiers) in &partition {
            // (b) no person holds more values of a kind than its limit (so never two external ids).
            let mut per_kind: BTreeMap<&IdentifierKind, u32> = BTreeMap::new();
            for identifier in identifiers {
                *per_kind.entry(identifier.kind()).or_default() += 1;
                holders.entry(identifier).or_default().push(person);
            }
            for (kind, count) in per_kind {
                if let Some(limit) = settings.rule(kind).unwrap().limit {
                    prop_assert!(count <= limit, "{} holds {} {}", person, count, kind);
                }
            }
        }
        for (identifier, persons) in &holders {
            // (c) a unique identifier has at most one canonical owner, and the graph agrees.
            if settings.rule(identifier.kind()).unwrap().policy == Policy::Unique {
                prop_assert_eq!(persons.len(), 1, "{:?}", identifier);
            }
            let mut owners = graph.owners(identifier);
            owners.sort();
            prop_assert_eq!(owners.iter().collect::<Vec<_>>(), persons.clone());
        }
        // (d) at the end: every identifier that was ever accepted is still owned.
        for r in &resolutions {
            for identifier in r.attach.iter().chain(&r.touch) {
                prop_assert!(holders.contains_key(identifier));
            }
        }
        // Absorbed persons lead to a canonical person that lists them.
        for merge in merges {
            let survivor = graph.canonical(&merge.absorbed);
            prop_assert!(partition.contains_key(&survivor));
            prop_assert!(graph.merged_from(&survivor).contains(&merge.absorbed));
        }
    }
}

#[test]
fn an_operator_merge_obeys_the_same_limits() {
    use idgraph_core::resolve::merge_breaks_limit;
    let mut world = World::new();
    world.signal(&[("external_id", "u1"), ("email", "a@x.com")]); // p1
    world.signal(&[("external_id", "u2")]); // p2
    world.signal(&[("email", "b@x.com")]); // p3
    let view = |id: &str| world.graph.person(&id.to_owned()).expect("exists");
    let settings = IdentitySettings::default();
    assert_eq!(
        merge_breaks_limit(&settings, view("p1"), view("p2")),
        Some((IdentifierKind::external_id(), 1))
    );
    assert_eq!(merge_breaks_limit(&settings, view("p1"), view("p3")), None);
}

#[test]
fn persons_kept_apart_are_not_merged_by_any_signal() {
    let mut world = World::new();
    world.signal(&[("anonymous_id", "a1"), ("email", "a@x.com")]); // p1
    world.signal(&[("anonymous_id", "b1")]); // p2
    world.graph.keep_apart("p2", "p1");
    let r = world.signal(&[("email", "a@x.com"), ("anonymous_id", "b1")]);
    assert_eq!(r.person, "p1");
    assert!(r.merges.is_empty());
    assert_eq!(r.conflicts.len(), 1);
    assert_eq!(r.conflicts[0].rule, ConflictRule::KeptApart);
    assert_eq!(r.conflicts[0].other_person.as_deref(), Some("p2"));
    assert_eq!(world.graph.person_count(), 2);
    // Other persons still merge into either.
    world.signal(&[("anonymous_id", "c1")]); // p4
    let r = world.signal(&[("anonymous_id", "c1"), ("anonymous_id", "b1")]);
    assert_eq!(r.merges.len(), 1);
}

/// A store that disagrees with the rules: two owners of one unique value, listed largest
/// first, and (when `shuffled`) batched answers out of the identifiers' order.
struct Disagreeing {
    shuffled: bool,
}

impl GraphView for Disagreeing {
    fn owners(&self, identifier: &Identifier) -> Vec<PersonId> {
        match identifier.value() {
            "twice@x.com" => vec!["p9".into(), "p2".into()],
            "a1" => vec!["p5".into()],
            _ => Vec::new(),
        }
    }

    fn person(&self, id: &PersonId) -> Option<idgraph_core::resolve::PersonView> {
        Some(idgraph_core::resolve::PersonView {
            id: id.clone(),
            created_at: Timestamp::UNIX_EPOCH,
            identifiers: BTreeMap::new(),
        })
    }

    fn owners_of_each(&self, identifiers: &[&Identifier], found: &mut dyn FnMut(usize, PersonId)) {
        let mut all: Vec<(usize, PersonId)> = identifiers
            .iter()
            .enumerate()
            .flat_map(|(n, identifier)| self.owners(identifier).into_iter().map(move |o| (n, o)))
            .collect();
        if self.shuffled {
            all.reverse();
        }
        for (position, owner) in all {
            found(position, owner);
        }
    }
}

#[test]
fn a_unique_value_with_two_owners_goes_to_the_smallest_id_however_the_graph_answers() {
    let settings = IdentitySettings::default();
    let identifiers = [
        settings.normalize("anonymous_id", "a1").unwrap(),
        settings.normalize("email", "twice@x.com").unwrap(),
    ];
    let signal = Signal {
        identifiers: &identifiers,
        new_person_id: "new".into(),
        at: Timestamp::UNIX_EPOCH,
    };
    let resolutions: Vec<Resolution> = [false, true]
        .into_iter()
        .map(|shuffled| resolve(&settings, &Disagreeing { shuffled }, &signal))
        .collect();
    assert_eq!(resolutions[0], resolutions[1]);
    let r = &resolutions[0];
    // The email (priority 2) found p2, the smaller of its owners; p5 came in by anonymous_id.
    assert_eq!(r.person, "p2");
    assert_eq!(r.merges.len(), 1);
    assert_eq!(r.merges[0].absorbed, "p5");
}

/// Signals longer than the few identifiers resolve handles without allocating, with repeats,
/// resolve like short ones: each distinct identifier once, first occurrence first.
#[test]
fn long_signals_with_repeats_are_deduplicated_in_order() {
    for distinct in [3, 8, 9, 12, 20] {
        let mut world = World::new();
        let first = world.signal(&[("external_id", "u1")]);
        let values: Vec<String> = (0..distinct).map(|n| format!("a{n}")).collect();
        let mut raw: Vec<(&str, &str)> = vec![("external_id", "u1")];
        for value in &values {
            raw.push(("anonymous_id", value));
            raw.push(("anonymous_id", &values[0]));
        }
        let r = world.signal(&raw);
        assert_eq!(r.person, first.person, "{distinct}");
        assert_eq!(r.touch, vec![world.id("external_id", "u1")], "{distinct}");
        let attached: Vec<&str> = r.attach.iter().map(Identifier::value).collect();
        assert_eq!(attached, values, "{distinct}");
        assert!(r.merges.is_empty() && r.conflicts.is_empty());
    }
}
