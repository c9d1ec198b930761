//! Conformance cases for resolution through a store: the backend must apply exactly what the
//! pure resolver decides, keep tenants apart, and keep a log that replays into the same graph.

use std::collections::{BTreeMap, BTreeSet};

use idgraph_core::identity::{Identifier, IdentitySettings, Policy};
use idgraph_core::resolve::memory::MemoryGraph;
use idgraph_core::resolve::{Signal, resolve};
use idgraph_core::tenancy::{TenantId, WorkspaceName};
use idgraph_core::traits::{Provenance, SourceClass};
use jiff::Timestamp;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

use super::{ts, with_tenants};
use crate::{
    ConflictRow, EventRow, IngestOutcome, MergeRow, PageRequest, PersonProfile, SignalRecord,
    Store, TimelineEvent, TraitObservation, derived_id,
};

/// Small alphabets so that random signals collide: 4 external ids, 6 emails, 4 phones and 8
/// anonymous ids.
fn alphabet(settings: &IdentitySettings) -> Vec<Identifier> {
    let mut raw: Vec<(&str, String)> = Vec::new();
    raw.extend((0..4).map(|n| ("external_id", format!("user-{n}"))));
    raw.extend((0..6).map(|n| ("email", format!("e{n}@x.com"))));
    raw.extend((0..4).map(|n| ("phone", format!("+1 415 555 267{n}"))));
    raw.extend((0..8).map(|n| ("anonymous_id", format!("anon-{n}"))));
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

fn signal(n: usize, workspace: &str, identifiers: Vec<Identifier>) -> SignalRecord {
    let at = ts(i64::try_from(n).expect("small"));
    SignalRecord {
        event: EventRow {
            event_id: format!("e{n:05}"),
            workspace: WorkspaceName::parse(workspace).expect("valid"),
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
        traits: Vec::new(),
        source: "conformance".into(),
    }
}

/// Canonical person → identifiers, read back through the store's public methods only.
async fn partition<S: Store>(
    store: &S,
    tenant: &TenantId,
    alphabet: &[Identifier],
) -> BTreeMap<String, BTreeSet<Identifier>> {
    let mut partition: BTreeMap<String, BTreeSet<Identifier>> = BTreeMap::new();
    for identifier in alphabet {
        let nodes = store
            .find_identity_nodes(tenant, identifier.kind(), identifier.value())
            .await
            .expect("find nodes");
        for node in nodes {
            let person = store
                .get_person(tenant, &node.person_id)
                .await
                .expect("a node's person exists");
            let canonical = person.merged_into.unwrap_or(person.person_id);
            partition
                .entry(canonical)
                .or_default()
                .insert(identifier.clone());
        }
    }
    partition
}

/// Every merge record reachable from the canonical persons, by merge id.
async fn merges<S: Store>(
    store: &S,
    tenant: &TenantId,
    persons: impl Iterator<Item = &String>,
) -> BTreeMap<String, MergeRow> {
    let mut all = BTreeMap::new();
    for person in persons {
        let (merges, _conflicts) = store.merges_of(tenant, person).await.expect("merges");
        for merge in merges {
            all.insert(merge.merge_id.clone(), merge);
        }
    }
    all
}

/// Everything the store shows of one canonical person.
type PersonViews = (
    PersonProfile,
    Vec<TimelineEvent>,
    Vec<MergeRow>,
    Vec<ConflictRow>,
);

/// Profile, timeline, merges and conflicts of each person, through the public methods only.
async fn views<S: Store>(
    store: &S,
    tenant: &TenantId,
    persons: impl Iterator<Item = &String>,
) -> BTreeMap<String, PersonViews> {
    let mut all = BTreeMap::new();
    for person in persons {
        let profile = store.person_profile(tenant, person).await.expect("profile");
        let timeline = store
            .timeline(
                tenant,
                person,
                None,
                &PageRequest::first(PageRequest::MAX_LIMIT),
            )
            .await
            .expect("timeline");
        let (merges, conflicts) = store.merges_of(tenant, person).await.expect("merges");
        all.insert(person.clone(), (profile, timeline.items, merges, conflicts));
    }
    all
}

/// A random log and how it reaches the store.
#[derive(Debug, Clone)]
struct Log {
    /// Each signal's identifiers, as indexes into [`alphabet`].
    signals: Vec<Vec<usize>>,
    /// Per signal, `Some(i)` when it repeats the message id of an earlier signal (`i` picks
    /// which one), which makes it a duplicate.
    repeats: Vec<Option<prop::sample::Index>>,
    /// Per signal, the second of a four-minute window it occurred at, so that signals of a
    /// person arrive out of order and sometimes within `LAST_SEEN_RESOLUTION_SECONDS` of each
    /// other; empty: each at its own time.
    occurred: Vec<u8>,
    /// Per signal, whether it comes from a second workspace.
    elsewhere: Vec<bool>,
    /// Whether signals observe traits.
    traits: bool,
    /// Signals per call to `Store::ingest`, used in turn until the log is exhausted.
    calls: Vec<usize>,
    shared_phones: bool,
}

impl Log {
    /// Each signal's message number: its own, or that of the earlier signal it repeats.
    fn messages(&self) -> Vec<usize> {
        (0..self.signals.len())
            .map(|n| match self.repeats.get(n).copied().flatten() {
                Some(index) if n > 0 => index.index(n),
                _ => n,
            })
            .collect()
    }

    /// Signal `n` as the store receives it.
    fn record(&self, n: usize, message: usize, identifiers: Vec<Identifier>) -> SignalRecord {
        let workspace = if self.elsewhere.get(n).copied().unwrap_or(false) {
            "other"
        } else {
            "default"
        };
        let mut record = signal(n, workspace, identifiers);
        record.event.message_id = format!("m{message}");
        if let Some(second) = self.occurred.get(n) {
            record.event.occurred_at = ts(i64::from(*second));
        }
        if self.traits {
            let observe = |value: String| TraitObservation {
                name: "plan".into(),
                value,
                provenance: Provenance {
                    class: SourceClass::User,
                    confidence: 1.0,
                    observed_at: record.event.occurred_at,
                },
                set_once: n.is_multiple_of(2),
            };
            record.traits.push(observe(format!("\"p{n}\"")));
            if n.is_multiple_of(3) {
                // Observed twice by one signal: the first observation is the one kept.
                record.traits.push(observe("\"again\"".into()));
            }
        }
        record
    }

    /// The log cut into the calls that send it: `(first signal, number of signals)`.
    fn chunks(&self) -> Vec<(usize, usize)> {
        let mut chunks = Vec::new();
        let mut start = 0;
        for size in self.calls.iter().cycle() {
            if start >= self.signals.len() {
                break;
            }
            let size = (*size).clamp(1, self.signals.len() - start);
            chunks.push((start, size));
            start += size;
        }
        chunks
    }
}

/// One random log: sent to tenant `a` in the log's calls and applied to the in-memory
/// reference; then `a`'s stored log replayed in one call into tenant `b`. All three must agree.
/// A log sent in batches is also sent one signal per call to tenant `c`, and every person must
/// look the same there, down to `last_seen`, `updated_at` and workspace contacts.
async fn check_log<S: Store>(store: &S, name: &str, log: &Log) -> Result<(), TestCaseError> {
    let ids = with_tenants(
        store,
        &[
            &format!("{name}-a"),
            &format!("{name}-b"),
            &format!("{name}-c"),
        ],
    )
    .await;
    let (a, b, c) = (&ids[0], &ids[1], &ids[2]);
    let settings = settings_for(log.shared_phones);
    let alphabet = alphabet(&settings);
    let mut reference = MemoryGraph::default();
    let mut expected_merges: BTreeMap<String, (String, String, Vec<Identifier>)> = BTreeMap::new();
    let mut records = Vec::new();
    let mut expected_outcomes = Vec::new();
    let mut seen_messages = BTreeSet::new();
    for (n, (picks, message)) in log.signals.iter().zip(log.messages()).enumerate() {
        let identifiers: Vec<Identifier> = picks.iter().map(|i| alphabet[*i].clone()).collect();
        let record = log.record(n, message, identifiers.clone());
        records.push(record.clone());
        // Message ids are unique per workspace.
        if !seen_messages.insert((record.event.workspace.clone(), message)) {
            expected_outcomes.push(IngestOutcome::Duplicate);
            continue;
        }
        let resolution = resolve(
            &settings,
            &reference,
            &Signal {
                identifiers: &identifiers,
                new_person_id: record.event.event_id.clone(),
                at: record.event.ingested_at,
            },
        );
        reference.apply(&resolution, record.event.ingested_at);
        for (index, step) in resolution.merges.iter().enumerate() {
            expected_merges.insert(
                derived_id(&record.event.event_id, 'm', index),
                (
                    step.survivor.clone(),
                    step.absorbed.clone(),
                    step.identifiers.clone(),
                ),
            );
        }
        expected_outcomes.push(IngestOutcome::Recorded {
            person_id: resolution.person.clone(),
            created: resolution.created,
            merges: resolution.merges.len(),
            conflicts: resolution.conflicts.len(),
            attached: resolution.attach.len(),
        });
    }

    for (start, size) in log.chunks() {
        let outcomes = store
            .ingest(a, &settings, records[start..start + size].to_vec())
            .await
            .expect("ingest");
        prop_assert_eq!(
            &outcomes[..],
            &expected_outcomes[start..start + size],
            "signals {}..{}: {:?}",
            start,
            start + size,
            &log.signals[start..start + size]
        );
    }

    // What a signal did, read back by its message id, is what ingest reported: the import
    // runner counts a row's effects from either (reading back after an interruption).
    for (record, expected) in records.iter().zip(&expected_outcomes) {
        let IngestOutcome::Recorded {
            person_id,
            created,
            merges,
            conflicts,
            attached,
        } = expected
        else {
            continue;
        };
        let found = store
            .signal_effects(
                a,
                &record.event.workspace,
                vec![record.event.message_id.clone()],
            )
            .await
            .expect("signal effects");
        let Some(Some(effects)) = found.first() else {
            return Err(TestCaseError::fail(format!(
                "{} was recorded but is not read back",
                record.event.message_id
            )));
        };
        prop_assert_eq!(
            (
                &effects.person_id,
                effects.created,
                effects.merges,
                effects.conflicts,
                effects.attached
            ),
            (
                person_id,
                *created,
                *merges as u64,
                *conflicts as u64,
                *attached as u64
            ),
            "{}",
            record.event.message_id
        );
    }

    let stored = partition(store, a, &alphabet).await;
    prop_assert_eq!(
        &stored,
        &reference.partition(),
        "the store and the reference disagree"
    );
    let stored_merges = merges(store, a, stored.keys()).await;
    let as_triples: BTreeMap<String, (String, String, Vec<Identifier>)> = stored_merges
        .iter()
        .map(|(id, m)| {
            (
                id.clone(),
                (
                    m.survivor.clone(),
                    m.absorbed.clone(),
                    m.identifiers.clone(),
                ),
            )
        })
        .collect();
    prop_assert_eq!(&as_triples, &expected_merges);

    let chunks = log.chunks();
    if chunks.iter().any(|(_, size)| *size > 1) {
        for record in &records {
            store
                .ingest(c, &settings, vec![record.clone()])
                .await
                .expect("ingest");
        }
        prop_assert_eq!(
            &partition(store, c, &alphabet).await,
            &stored,
            "one signal per call gave another graph"
        );
        let batched = views(store, a, stored.keys()).await;
        let one_by_one = views(store, c, stored.keys()).await;
        for (person, view) in &batched {
            prop_assert_eq!(
                Some(view),
                one_by_one.get(person),
                "{} differs from one signal per call",
                person
            );
        }
    }

    let logged = store.signal_log(a, 0, 10_000).await.expect("log");
    let seqs: Vec<i64> = logged.iter().map(|s| s.seq).collect();
    let expected_seqs: Vec<i64> =
        (1..=i64::try_from(seen_messages.len()).expect("small")).collect();
    prop_assert_eq!(
        seqs,
        expected_seqs,
        "the log has every recorded signal, in order, without gaps"
    );
    let replayed = store
        .ingest(
            b,
            &settings,
            logged.into_iter().map(|s| s.into_record()).collect(),
        )
        .await
        .expect("replay");
    prop_assert_eq!(replayed.len(), seen_messages.len());
    let rebuilt = partition(store, b, &alphabet).await;
    prop_assert_eq!(&rebuilt, &stored, "replaying the log gave another graph");
    prop_assert_eq!(merges(store, b, rebuilt.keys()).await, stored_merges);
    Ok(())
}

/// Runs `check_log` over random logs; each case is two tenants in the same database.
fn check_random_logs<S: Store>(store: &S, name: &str, strategy: impl Strategy<Value = Log>) {
    // PostgreSQL round trips cost more.
    let cases = if store.backend() == "postgres" {
        12
    } else {
        40
    };
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let handle = tokio::runtime::Handle::current();
    let case = std::sync::atomic::AtomicUsize::new(0);
    // The runner is synchronous; each case drives the async store on this runtime.
    let result = tokio::task::block_in_place(|| {
        runner
            .run(&strategy, |log| {
                let n = case.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                handle.block_on(check_log(store, &format!("{name}-{n}"), &log))
            })
            .map_err(|failure| failure.to_string())
    });
    if let Err(failure) = result {
        panic!("{failure}");
    }
}

fn random_signals() -> impl Strategy<Value = Vec<Vec<usize>>> {
    prop::collection::vec(prop::collection::vec(0usize..22, 1..=4), 1..=40)
}

/// Random signal logs through the store, one signal per call, agree with the pure resolver,
/// and replaying the stored log into an empty tenant rebuilds the same partition and the same
/// merge records.
pub async fn replaying_the_signal_log_rebuilds_the_graph<S: Store>(store: &S) {
    let strategy = (random_signals(), any::<bool>()).prop_map(|(signals, shared_phones)| Log {
        signals,
        repeats: Vec::new(),
        occurred: Vec::new(),
        elsewhere: Vec::new(),
        traits: false,
        calls: vec![1],
        shared_phones,
    });
    check_random_logs(store, "replay", strategy);
}

/// The same with the log sent in calls of 1 to 40 signals, some of which repeat the message id
/// of an earlier signal (of the same call or an earlier one), occurring out of order, in two
/// workspaces, with traits: a batch must resolve and record exactly what its signals sent one
/// at a time do, and a repeat is a duplicate wherever it falls.
pub async fn batches_resolve_as_single_signals_do<S: Store>(store: &S) {
    let strategy = random_signals()
        .prop_flat_map(|signals| {
            let len = signals.len();
            (
                Just(signals),
                prop::collection::vec(
                    prop::option::weighted(0.15, any::<prop::sample::Index>()),
                    len,
                ),
                prop::collection::vec(0u8..240, len),
                prop::collection::vec(prop::bool::weighted(0.2), len),
                prop::collection::vec(1usize..=40, 1..=8),
                any::<bool>(),
            )
        })
        .prop_map(
            |(signals, repeats, occurred, elsewhere, calls, shared_phones)| Log {
                signals,
                repeats,
                occurred,
                elsewhere,
                traits: true,
                calls,
                shared_phones,
            },
        );
    check_random_logs(store, "batches", strategy);
}

/// A call of thousands of signals (an import's chunk) records what the same signals sent in
/// calls of fifty do: the same outcome for each, the same partition. Stores may handle a large
/// call differently (the embedded one seals it while resolving its start).
pub async fn a_large_batch_resolves_as_small_ones_do<S: Store>(store: &S) {
    let ids = with_tenants(store, &["large-a", "large-b"]).await;
    let settings = IdentitySettings::default();
    let alphabet: Vec<Identifier> = (0..300)
        .map(|n| ("email", format!("p{n}@x.com")))
        .chain((0..150).map(|n| ("external_id", format!("u{n}"))))
        .chain((0..600).map(|n| ("anonymous_id", format!("a{n}"))))
        .map(|(kind, value)| settings.normalize(kind, &value).expect("valid"))
        .collect();
    // A fixed pseudo-random stream: one to three identifiers a signal, so that persons form,
    // gain identifiers and merge.
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let mut next = |below: usize| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        usize::try_from(state % below as u64).expect("small")
    };
    let records: Vec<SignalRecord> = (0..1_800)
        .map(|n| {
            let count = 1 + next(3);
            let identifiers = (0..count)
                .map(|_| alphabet[next(alphabet.len())].clone())
                .collect();
            let mut record = signal(n, "default", identifiers);
            record.traits = vec![TraitObservation {
                name: "n".into(),
                value: n.to_string(),
                provenance: Provenance {
                    class: SourceClass::Import,
                    confidence: 1.0,
                    observed_at: record.event.occurred_at,
                },
                set_once: false,
            }];
            record
        })
        .collect();
    let whole = store
        .ingest(&ids[0], &settings, records.clone())
        .await
        .expect("ingest");
    let mut parts = Vec::new();
    for chunk in records.chunks(50) {
        parts.extend(
            store
                .ingest(&ids[1], &settings, chunk.to_vec())
                .await
                .expect("ingest"),
        );
    }
    assert_eq!(whole, parts);
    let merged = whole
        .iter()
        .filter(|o| matches!(o, IngestOutcome::Recorded { merges, .. } if *merges > 0))
        .count();
    assert!(
        merged > 10,
        "the stream merges persons ({merged} merging signals)"
    );
    assert_eq!(
        partition(store, &ids[0], &alphabet).await,
        partition(store, &ids[1], &alphabet).await
    );
}

/// A signal moves `last_seen` of the nodes it names on its person's group, including nodes of a
/// person it merges in and of persons merged before, and only once the stored value is older
/// than the resolution; nodes it does not name, and other persons' nodes, keep theirs.
pub async fn known_identifiers_move_last_seen_across_the_group<S: Store>(store: &S) {
    let ids = with_tenants(store, &["seen"]).await;
    let tenant = &ids[0];
    let settings = IdentitySettings::default();
    let id = |kind: &str, value: &str| settings.normalize(kind, value).expect("valid");
    let (email, user) = (id("email", "ann@x.com"), id("external_id", "u-1"));
    let (anon_1, anon_2, other) = (
        id("anonymous_id", "a-1"),
        id("anonymous_id", "a-2"),
        id("anonymous_id", "a-3"),
    );
    let at = |n: usize, seconds: i64, identifiers: Vec<Identifier>| {
        let mut record = signal(n, "default", identifiers);
        record.event.occurred_at = ts(seconds);
        record.event.ingested_at = ts(seconds);
        record
    };
    let steps = [
        // Two persons, and a third that shares nothing with them.
        at(1, 0, vec![email.clone(), anon_1.clone()]),
        at(2, 0, vec![user.clone(), anon_2.clone()]),
        at(3, 0, vec![other.clone()]),
        // Within the resolution: nothing moves.
        at(4, 30, vec![email.clone()]),
        // The email and the user id merge the two persons; both nodes are stale.
        at(5, 1_000, vec![email.clone(), user.clone()]),
        // An absorbed person's node, found through the survivor.
        at(6, 2_000, vec![anon_2.clone()]),
    ];
    let last_seen = |profile: &PersonProfile, identifier: &Identifier| {
        profile
            .identifiers
            .iter()
            .find(|n| n.kind == *identifier.kind() && n.value == identifier.value())
            .map(|n| n.last_seen)
            .expect("the node is on the person")
    };
    for (n, step) in steps.into_iter().enumerate() {
        store
            .ingest(tenant, &settings, vec![step])
            .await
            .expect("ingest");
        if n == 3 {
            let (_, profile) = profile_of(store, tenant, &email).await;
            assert_eq!(last_seen(&profile, &email), ts(0), "within the resolution");
        }
    }
    let (person, profile) = profile_of(store, tenant, &email).await;
    assert_eq!(last_seen(&profile, &email), ts(1_000));
    assert_eq!(last_seen(&profile, &user), ts(1_000));
    assert_eq!(last_seen(&profile, &anon_1), ts(0), "not named since");
    assert_eq!(last_seen(&profile, &anon_2), ts(2_000));
    let (stranger, profile) = profile_of(store, tenant, &other).await;
    assert_ne!(stranger, person);
    assert_eq!(last_seen(&profile, &other), ts(0));
}

/// The person an identifier is on, and its profile.
async fn profile_of<S: Store>(
    store: &S,
    tenant: &TenantId,
    identifier: &Identifier,
) -> (String, PersonProfile) {
    let person = store
        .lookup_person(tenant, identifier)
        .await
        .expect("lookup")
        .expect("known");
    let profile = store
        .person_profile(tenant, &person)
        .await
        .expect("profile");
    (person, profile)
}

pub async fn ingest_keeps_tenants_apart<S: Store>(store: &S) {
    let ids = with_tenants(store, &["iso-a", "iso-b"]).await;
    let settings = IdentitySettings::default();
    let email = settings.normalize("email", "ann@x.com").expect("valid");
    for tenant in &ids {
        let outcome = store
            .ingest(
                tenant,
                &settings,
                vec![signal(1, "default", vec![email.clone()])],
            )
            .await
            .expect("ingest");
        // The same event id and message id in another tenant is a new signal, not a duplicate.
        assert!(
            matches!(&outcome[0], IngestOutcome::Recorded { created: true, .. }),
            "{outcome:?}"
        );
    }
    let in_a = store.lookup_person(&ids[0], &email).await.expect("lookup");
    let in_b = store.lookup_person(&ids[1], &email).await.expect("lookup");
    assert!(in_a.is_some() && in_b.is_some());
    let other = TenantId::parse("iso-c").expect("valid");
    assert_eq!(store.lookup_person(&other, &email).await, Ok(None));
    let timeline = store
        .timeline(
            &other,
            in_a.as_deref().expect("some"),
            None,
            &PageRequest::first(10),
        )
        .await;
    assert!(
        timeline.map_or(true, |page| page.items.is_empty()),
        "another tenant's person has no timeline here"
    );
    assert!(
        store
            .signal_log(&other, 0, 10)
            .await
            .expect("log")
            .is_empty()
    );
}

pub async fn a_repeated_message_id_changes_nothing<S: Store>(store: &S) {
    let ids = with_tenants(store, &["dedup"]).await;
    let settings = IdentitySettings::default();
    let email = settings.normalize("email", "ann@x.com").expect("valid");
    let phone = settings.normalize("phone", "+14155552671").expect("valid");
    let first = signal(1, "default", vec![email.clone()]);
    let mut again = signal(2, "default", vec![email, phone.clone()]);
    again.event.message_id = first.event.message_id.clone();
    let outcomes = store
        .ingest(&ids[0], &settings, vec![first, again])
        .await
        .expect("ingest");
    assert_eq!(outcomes[1], IngestOutcome::Duplicate);
    // The duplicate's phone was not attached and its event not stored.
    assert_eq!(store.lookup_person(&ids[0], &phone).await, Ok(None));
    assert_eq!(
        store.signal_log(&ids[0], 0, 10).await.expect("log").len(),
        1
    );
    // The same message id in another workspace is another message.
    let mut elsewhere = signal(3, "other", vec![phone.clone()]);
    elsewhere.event.message_id = "m1".into();
    let outcomes = store
        .ingest(&ids[0], &settings, vec![elsewhere])
        .await
        .expect("ingest");
    assert!(matches!(outcomes[0], IngestOutcome::Recorded { .. }));
}

/// Batches ingested at the same time (which a store may resolve together in one transaction)
/// each get the outcomes of their own signals, in order, under their own identity rules; a
/// message id repeated across them is recorded once, and a batch the store refuses fails alone.
pub async fn concurrent_batches_get_their_own_outcomes<S: Store>(store: &S) {
    let ids = with_tenants(store, &["crowd"]).await;
    let mut stored = signal(10_000, "default", Vec::new());
    stored.event.event_id = "e-taken".into();
    store
        .ingest(&ids[0], &IdentitySettings::default(), vec![stored])
        .await
        .expect("ingest");
    // Batches under two sets of rules, then (apart, so that the refusal cannot hide a batch
    // resolved under the wrong rules) batches of which one repeats the stored event's id.
    let mut logged = 1 + concurrent_round(store, &ids[0], 0..24, true, None).await;
    logged += concurrent_round(store, &ids[0], 24..36, false, Some(29)).await;
    let log = store
        .signal_log(&ids[0], 0, 1_000)
        .await
        .expect("signal log");
    assert_eq!(log.len(), logged);
}

/// Ingests `batches` at once and checks each one's outcomes; the events it recorded.
async fn concurrent_round<S: Store>(
    store: &S,
    tenant: &TenantId,
    batches: std::ops::Range<usize>,
    two_rules: bool,
    poisoned: Option<usize>,
) -> usize {
    // Fewer than the default limit of emails per person, so a batch under unique phones can
    // gather all of its emails on one person.
    const SIGNALS: usize = 4;
    let email_of = |n: usize| {
        IdentitySettings::default()
            .normalize("email", &format!("c{n}@x.com"))
            .expect("valid")
    };
    // Shared phones for odd batches when there are two rules: a batch resolved under the
    // other's rules would partition its signals differently.
    let shares = |b: usize| two_rules && b % 2 == 1;
    let message = format!("m-everyone-{}", batches.start);
    let calls: Vec<_> = batches
        .clone()
        .map(|b| {
            let (store, tenant) = (store.clone(), tenant.clone());
            let settings = settings_for(shares(b));
            let phone = settings
                .normalize("phone", &format!("+1 415 555 {}", 1000 + b))
                .expect("valid");
            let batch: Vec<SignalRecord> = (0..SIGNALS)
                .map(|s| {
                    let n = b * SIGNALS + s;
                    let mut one = signal(n, "default", vec![email_of(n), phone.clone()]);
                    if s == 0 {
                        one.event.message_id = message.clone();
                    }
                    if poisoned == Some(b) && s == SIGNALS - 1 {
                        one.event.event_id = "e-taken".into();
                    }
                    one
                })
                .collect();
            tokio::spawn(async move { store.ingest(&tenant, &settings, batch).await })
        })
        .collect();
    let mut recorded_once = 0;
    let mut logged = 0;
    for (b, call) in batches.zip(calls) {
        let outcomes = call.await.expect("task");
        if poisoned == Some(b) {
            assert!(outcomes.is_err(), "{outcomes:?}");
            for n in b * SIGNALS..(b + 1) * SIGNALS {
                let found = store.lookup_person(tenant, &email_of(n)).await;
                assert_eq!(found, Ok(None), "the refused batch left signal {n} behind");
            }
            continue;
        }
        let outcomes = outcomes.expect("ingest");
        assert_eq!(outcomes.len(), SIGNALS, "batch {b}");
        let mut persons = BTreeSet::new();
        let mut recorded = 0;
        for (s, outcome) in outcomes.into_iter().enumerate() {
            let n = b * SIGNALS + s;
            let IngestOutcome::Recorded {
                person_id, created, ..
            } = outcome
            else {
                assert_eq!(s, 0, "batch {b} signal {s}: {outcome:?}");
                assert_eq!(outcome, IngestOutcome::Duplicate);
                continue;
            };
            recorded += 1;
            if s == 0 {
                recorded_once += 1;
            }
            // The outcome names the person that holds this signal's own email.
            let holder = store
                .lookup_person(tenant, &email_of(n))
                .await
                .expect("lookup")
                .expect("the email was attached");
            let person = store.get_person(tenant, &person_id).await.expect("person");
            assert_eq!(
                person.merged_into.unwrap_or(person.person_id),
                holder,
                "batch {b} signal {s}"
            );
            if shares(b) {
                assert!(
                    created,
                    "batch {b} signal {s}: a shared phone joined it to someone"
                );
            }
            persons.insert(holder);
        }
        // One person per signal with shared phones, one for the whole batch with unique ones.
        let expected = if shares(b) { recorded } else { 1 };
        assert_eq!(persons.len(), expected, "batch {b}: {persons:?}");
        logged += recorded;
    }
    assert_eq!(recorded_once, 1, "the repeated message id");
    logged
}

/// A group's timeline pages newest first across all its members, with ties on time broken by
/// event id, and the kind filter applies before paging.
pub async fn timelines_page_across_merged_persons<S: Store>(store: &S) {
    let ids = with_tenants(store, &["pages"]).await;
    let tenant = &ids[0];
    let settings = IdentitySettings::default();
    let id = |kind: &str, raw: &str| settings.normalize(kind, raw).expect("valid");
    let (user, a1, a2) = (
        id("external_id", "u"),
        id("anonymous_id", "a1"),
        id("anonymous_id", "a2"),
    );
    // Three persons with interleaved events, some at the same instant.
    let mut signals = Vec::new();
    for n in 0..30 {
        let who = [&user, &a1, &a2][n % 3].clone();
        let mut record = signal(n, "default", vec![who]);
        record.event.occurred_at = ts(i64::try_from(n / 2).expect("small"));
        record.event.kind = if n % 4 == 0 { "page" } else { "track" }.into();
        signals.push(record);
    }
    signals.push(signal(30, "default", vec![user.clone(), a1.clone()]));
    signals.push(signal(31, "default", vec![user.clone(), a2.clone()]));
    store
        .ingest(tenant, &settings, signals)
        .await
        .expect("ingest");
    let person = store
        .lookup_person(tenant, &a2)
        .await
        .expect("lookup")
        .expect("exists");

    for kind in [None, Some("page")] {
        let mut seen = Vec::new();
        let mut page = PageRequest::first(7);
        loop {
            let got = store
                .timeline(tenant, &person, kind, &page)
                .await
                .expect("timeline");
            assert!(got.items.len() <= 7);
            seen.extend(got.items);
            match got.next_cursor {
                Some(cursor) => page.after = Some(cursor),
                None => break,
            }
        }
        let expected = if kind.is_some() { 8 } else { 32 };
        assert_eq!(seen.len(), expected, "{kind:?}");
        assert!(kind.is_none_or(|k| seen.iter().all(|e| e.kind == k)));
        let keys: Vec<(Timestamp, &str)> = seen
            .iter()
            .map(|e| (e.occurred_at, e.event_id.as_str()))
            .collect();
        let mut sorted = keys.clone();
        sorted.sort_by(|a, b| b.cmp(a));
        sorted.dedup();
        assert_eq!(keys, sorted, "newest first, each event once");
        let members: BTreeSet<&str> = seen.iter().map(|e| e.person_id.as_str()).collect();
        assert_eq!(
            members.len(),
            3,
            "every member's events are on the timeline"
        );
    }
}
