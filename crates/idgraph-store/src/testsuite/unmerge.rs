//! Conformance for unmerge: a merge undone gives back the graph as if it had never happened,
//! including what arrived afterwards with only one side's identifiers.

use std::collections::{BTreeMap, BTreeSet};

use idgraph_core::identity::{Identifier, IdentitySettings};
use idgraph_core::resolve::memory::MemoryGraph;
use idgraph_core::resolve::{Signal, resolve};
use idgraph_core::tenancy::{TenantId, WorkspaceName};
use idgraph_core::traits::{Provenance, SourceClass};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

use super::{ts, with_tenants};
use crate::{EventRow, PageRequest, SignalRecord, Store, TraitObservation, Unmerge, derived_id};

fn signal(n: usize, identifiers: Vec<Identifier>) -> SignalRecord {
    let at = ts(i64::try_from(n).expect("small"));
    SignalRecord {
        event: EventRow {
            event_id: format!("u{n:05}"),
            // A third of the signals in another workspace: what an unmerge moves is found by
            // workspace too.
            workspace: if n % 3 == 1 {
                WorkspaceName::parse("other").expect("valid")
            } else {
                WorkspaceName::default_workspace()
            },
            kind: "identify".into(),
            name: None,
            occurred_at: at,
            ingested_at: at,
            schema_version: 1,
            message_id: format!("m{n}"),
            properties: "{}".into(),
            context: "{}".into(),
        },
        identifiers,
        // Each signal observes two traits naming its own event: a person's trait history must
        // follow its events through the merge and the unmerge, both observations together.
        traits: ["seen", "also"]
            .map(|name| TraitObservation {
                name: name.into(),
                value: format!("\"u{n:05}\""),
                provenance: Provenance {
                    class: SourceClass::User,
                    confidence: 1.0,
                    observed_at: at,
                },
                set_once: false,
            })
            .into(),
        source: "conformance".into(),
    }
}

#[derive(Debug, Clone)]
struct Case {
    /// Signals before the merge, over a small alphabet of emails and anonymous ids.
    prefix: Vec<Vec<usize>>,
    /// Which two of the persons the prefix made the merging signal ties together.
    pick: (usize, usize),
    /// After the merge: (side, which of that side's identifiers, whether it brings a new one).
    suffix: Vec<(bool, usize, bool)>,
}

fn case() -> impl Strategy<Value = Case> {
    (
        prop::collection::vec(prop::collection::vec(0usize..12, 1..=2), 3..=16),
        (any::<usize>(), any::<usize>()),
        prop::collection::vec((any::<bool>(), any::<usize>(), any::<bool>()), 0..=8),
    )
        .prop_map(|(prefix, pick, suffix)| Case {
            prefix,
            pick,
            suffix,
        })
}

/// Canonical person → identifiers, and canonical person → event ids, read from the store.
async fn state<S: Store>(
    store: &S,
    tenant: &TenantId,
    identifiers: &[Identifier],
    skip_event: &str,
) -> (
    BTreeMap<String, BTreeSet<Identifier>>,
    BTreeMap<String, BTreeSet<String>>,
    BTreeMap<String, BTreeSet<String>>,
) {
    let mut partition: BTreeMap<String, BTreeSet<Identifier>> = BTreeMap::new();
    for identifier in identifiers {
        if let Some(owner) = store
            .lookup_person(tenant, identifier)
            .await
            .expect("lookup")
        {
            partition
                .entry(owner)
                .or_default()
                .insert(identifier.clone());
        }
    }
    let mut events = BTreeMap::new();
    for person in partition.keys() {
        let mut ids = BTreeSet::new();
        let mut page = PageRequest::first(1000);
        loop {
            let got = store
                .timeline(tenant, person, None, &page)
                .await
                .expect("timeline");
            ids.extend(
                got.items
                    .into_iter()
                    .map(|e| e.event_id)
                    .filter(|id| id != skip_event),
            );
            match got.next_cursor {
                Some(cursor) => page.after = Some(cursor),
                None => break,
            }
        }
        events.insert(person.clone(), ids);
    }
    let mut traits = BTreeMap::new();
    for person in partition.keys() {
        let profile = store.person_profile(tenant, person).await.expect("profile");
        let named = |name: &str| -> BTreeSet<String> {
            profile
                .traits
                .iter()
                .filter(|t| t.name == name)
                .map(|t| t.value.trim_matches('"').to_owned())
                .filter(|id| id != skip_event)
                .collect()
        };
        let seen = named("seen");
        assert_eq!(named("also"), seen, "a signal's observations stay together");
        traits.insert(person.clone(), seen);
    }
    (partition, events, traits)
}

async fn check_case<S: Store>(
    store: &S,
    n: usize,
    case: &Case,
    undone: &std::sync::atomic::AtomicUsize,
) -> Result<(), TestCaseError> {
    let tenant = with_tenants(store, &[&format!("unmerge-{n}")])
        .await
        .remove(0);
    let settings = IdentitySettings::default();
    let mut alphabet: Vec<Identifier> = (0..6)
        .map(|i| {
            settings
                .normalize("email", &format!("e{i}@x.com"))
                .expect("valid")
        })
        .chain((0..6).map(|i| {
            settings
                .normalize("anonymous_id", &format!("anon-{i}"))
                .expect("valid")
        }))
        .collect();
    // The reference never sees the merging signal; the store sees everything.
    let mut reference = MemoryGraph::default();
    let mut reference_events: Vec<(String, String)> = Vec::new();
    let mut seq = 0;
    let mut send = |ids: Vec<Identifier>, reference: Option<&mut MemoryGraph>| {
        seq += 1;
        let record = signal(seq, ids.clone());
        if let Some(graph) = reference {
            let r = resolve(
                &settings,
                &*graph,
                &Signal {
                    identifiers: &ids,
                    new_person_id: record.event.event_id.clone(),
                    at: record.event.ingested_at,
                },
            );
            graph.apply(&r, record.event.ingested_at);
            reference_events.push((record.event.event_id.clone(), r.person));
        }
        record
    };
    for picks in &case.prefix {
        let ids = picks.iter().map(|i| alphabet[*i].clone()).collect();
        let record = send(ids, Some(&mut reference));
        store
            .ingest(&tenant, &settings, vec![record])
            .await
            .expect("ingest");
    }
    let partition = reference.partition();
    let persons: Vec<&String> = partition.keys().collect();
    if persons.len() < 2 {
        return Ok(());
    }
    let first = case.pick.0 % persons.len();
    let second = (first + 1 + case.pick.1 % (persons.len() - 1)) % persons.len();
    let (p, q) = (persons[first].clone(), persons[second].clone());
    let sides = [
        partition[&p].iter().cloned().collect::<Vec<_>>(),
        partition[&q].iter().cloned().collect::<Vec<_>>(),
    ];
    let merging = vec![sides[0][0].clone(), sides[1][0].clone()];
    // Would the merge break a limit? Then there is nothing to undo.
    let probe = resolve(
        &settings,
        &reference,
        &Signal {
            identifiers: &merging,
            new_person_id: "probe".into(),
            at: ts(0),
        },
    );
    if probe.merges.len() != 1 {
        return Ok(());
    }
    let merge_signal = send(merging, None);
    let merge_event = merge_signal.event.event_id.clone();
    store
        .ingest(&tenant, &settings, vec![merge_signal])
        .await
        .expect("merge");
    for (k, (side, index, new)) in case.suffix.iter().enumerate() {
        let side = &sides[usize::from(*side)];
        let mut ids = vec![side[index % side.len()].clone()];
        if *new {
            let fresh = settings
                .normalize("anonymous_id", &format!("new-{k}"))
                .expect("valid");
            alphabet.push(fresh.clone());
            ids.push(fresh);
        }
        let record = send(ids, Some(&mut reference));
        store
            .ingest(&tenant, &settings, vec![record])
            .await
            .expect("ingest");
    }
    let outcome = store
        .unmerge(
            &tenant,
            Unmerge {
                merge_id: derived_id(&merge_event, 'm', 0),
                reason: "conformance".into(),
                actor: "test".into(),
                at: ts(10_000),
                rule_id: format!("rule-{n}"),
            },
        )
        .await
        .expect("unmerge");
    prop_assert!(outcome.restored == p || outcome.restored == q);

    let (stored, stored_events, stored_traits) =
        state(store, &tenant, &alphabet, &merge_event).await;
    let expected: BTreeMap<String, BTreeSet<Identifier>> =
        reference.partition().into_iter().collect();
    prop_assert_eq!(&stored, &expected, "identifiers after the unmerge");
    let mut expected_events: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (event, person) in &reference_events {
        expected_events
            .entry(reference.canonical(person))
            .or_default()
            .insert(event.clone());
    }
    for (person, events) in &stored_events {
        let empty = BTreeSet::new();
        prop_assert_eq!(
            events,
            expected_events.get(person).unwrap_or(&empty),
            "events of {}",
            person
        );
    }
    for (person, seen) in &stored_traits {
        let empty = BTreeSet::new();
        prop_assert_eq!(
            seen,
            expected_events.get(person).unwrap_or(&empty),
            "trait history of {}",
            person
        );
    }
    undone.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    Ok(())
}

/// Random histories: a merge of two persons, more signals with one side's identifiers, then
/// the merge undone. The graph, every person's events and every person's trait history are
/// what they would be had the merge never happened (the merging signal itself stays with the
/// survivor).
pub async fn merge_then_unmerge_gives_back_the_graph<S: Store>(store: &S) {
    let cases = if store.backend() == "postgres" {
        10
    } else {
        32
    };
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let handle = tokio::runtime::Handle::current();
    let counter = std::sync::atomic::AtomicUsize::new(0);
    let undone = std::sync::atomic::AtomicUsize::new(0);
    let result = tokio::task::block_in_place(|| {
        runner.run(&case(), |case| {
            let n = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            handle.block_on(check_case(store, n, &case, &undone))
        })
    });
    if let Err(failure) = result {
        panic!("{failure}");
    }
    // Cases where no merge was possible check nothing: most must have undone one.
    let undone = undone.into_inner();
    assert!(
        undone * 2 >= cases as usize,
        "only {undone} of {cases} cases undid a merge"
    );
}

/// Consent recorded on a merged group is copied to every member. Undoing the merge takes the
/// restored side's copies of grants made while merged (whose they were is unknown, and a grant
/// must come from the person it permits) and leaves revocations and earlier grants alone.
pub async fn unmerge_withdraws_grants_made_while_merged<S: Store>(store: &S) {
    use crate::{ComplianceWrites, ConsentSubject, ConsentWrite};
    use idgraph_core::compliance::{ConsentAction, Purpose};

    let tenant = with_tenants(store, &["unmerge-consent"]).await.remove(0);
    let settings = IdentitySettings::default();
    let email = |v: &str| settings.normalize("email", v).expect("valid");
    for (n, ids) in [(1, vec![email("a@x.com")]), (2, vec![email("s@x.com")])] {
        store
            .ingest(&tenant, &settings, vec![signal(n, ids)])
            .await
            .expect("ingest");
    }
    let person = |id: &str| ConsentSubject::Person(id.to_owned());
    let consent = |event: &str, subject, purpose: &str, action, at| ConsentWrite {
        event_id: event.to_owned(),
        subject,
        purpose: Purpose::parse(purpose).expect("valid"),
        action,
        source: "conformance".into(),
        evidence: None,
        workspace: WorkspaceName::default_workspace(),
        occurred_at: at,
        recorded_at: at,
    };
    let record = |writes: Vec<ConsentWrite>| {
        store.record_compliance(
            &tenant,
            ComplianceWrites {
                consent: writes,
                ..ComplianceWrites::default()
            },
        )
    };
    // Each person's own grant before the merge.
    record(vec![
        consent(
            "own-a",
            person("u00001"),
            "sms:marketing",
            ConsentAction::Grant,
            ts(0),
        ),
        consent(
            "own-s",
            person("u00002"),
            "email:marketing",
            ConsentAction::Grant,
            ts(0),
        ),
    ])
    .await
    .expect("consent");
    let merging = signal(3, vec![email("a@x.com"), email("s@x.com")]);
    let merge_event = merging.event.event_id.clone();
    store
        .ingest(&tenant, &settings, vec![merging])
        .await
        .expect("merge");
    // While merged: a grant and a revocation on the group.
    record(vec![
        consent(
            "while-grant",
            person("u00001"),
            "sms:transactional",
            ConsentAction::Grant,
            ts(100),
        ),
        consent(
            "while-revoke",
            person("u00002"),
            "email:marketing",
            ConsentAction::Revoke,
            ts(100),
        ),
    ])
    .await
    .expect("consent");
    let outcome = store
        .unmerge(
            &tenant,
            Unmerge {
                merge_id: derived_id(&merge_event, 'm', 0),
                reason: "conformance".into(),
                actor: "test".into(),
                at: ts(200),
                rule_id: "rule-consent".into(),
            },
        )
        .await
        .expect("unmerge");
    assert_eq!(outcome.grants_withdrawn, 1, "{outcome:?}");
    let tenant_ref = &tenant;
    let events_of = |person: String| async move {
        store
            .person_consent(tenant_ref, &person)
            .await
            .expect("consent")
            .into_iter()
            .map(|row| row.event_id)
            .collect::<BTreeSet<String>>()
    };
    let own = |id: &str| if id == "u00001" { "own-a" } else { "own-s" };
    let survivor = events_of(outcome.survivor.clone()).await;
    let restored = events_of(outcome.restored.clone()).await;
    let expected_survivor: BTreeSet<String> =
        [own(&outcome.survivor), "while-grant", "while-revoke"]
            .map(str::to_owned)
            .into();
    assert_eq!(survivor, expected_survivor);
    let expected_restored: BTreeSet<String> = [own(&outcome.restored), "while-revoke"]
        .map(str::to_owned)
        .into();
    assert_eq!(restored, expected_restored);
}
