//! Conformance cases for the compliance logs: what is recorded is what a check reads, scopes and
//! tenants apply as they should, and random interleavings of consent, suppression, contacts,
//! signals and checks never make the gate allow what a plain reference evaluator forbids.

use std::collections::BTreeSet;

use idgraph_core::compliance::{
    Channel, Check, ComplianceSettings, ConsentAction, Purpose, SuppressionAction,
    SuppressionReason, SuppressionScope, evaluate,
};
use idgraph_core::identity::{Identifier, IdentitySettings};
use idgraph_core::resolve::memory::MemoryGraph;
use idgraph_core::resolve::{GraphView, Signal, resolve};
use idgraph_core::tenancy::WorkspaceName;
use jiff::Timestamp;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

use super::{ts, with_tenants};
use crate::{
    ComplianceWrites, ConsentSubject, ConsentWrite, ContactRow, EventRow, FactsQuery, SignalRecord,
    Store, StoreError, SuppressionRow,
};

fn day(n: i64) -> Timestamp {
    ts(n * 86_400)
}

fn workspace(name: &str) -> WorkspaceName {
    WorkspaceName::parse(name).expect("valid")
}

pub(super) fn consent(
    id: &str,
    subject: ConsentSubject,
    purpose: &str,
    action: ConsentAction,
    on: i64,
) -> ConsentWrite {
    ConsentWrite {
        event_id: id.into(),
        subject,
        purpose: Purpose::parse(purpose).expect("valid"),
        action,
        source: "conformance".into(),
        evidence: Some(r#"{"form":"signup"}"#.into()),
        workspace: workspace("default"),
        occurred_at: day(on),
        recorded_at: day(on),
    }
}

pub(super) fn suppression(
    id: &str,
    scope: SuppressionScope,
    address: &Identifier,
    reason: SuppressionReason,
    action: SuppressionAction,
) -> SuppressionRow {
    SuppressionRow {
        entry_id: id.into(),
        scope,
        identifier: address.clone(),
        reason,
        action,
        note: None,
        actor: "conformance".into(),
        at: day(0),
        recorded: 0,
    }
}

pub(super) fn contact(id: &str, to: &Identifier, vertical: Option<&str>, on: i64) -> ContactRow {
    ContactRow {
        contact_id: id.into(),
        workspace: workspace("default"),
        channel: Channel::Sms,
        from: "+18005550100".into(),
        to: to.clone(),
        vertical: vertical.map(str::to_owned),
        campaign: None,
        at: day(on),
        recorded_at: day(on),
    }
}

fn signal(n: usize, identifiers: Vec<Identifier>) -> SignalRecord {
    let at = ts(i64::try_from(n).expect("small"));
    SignalRecord {
        event: EventRow {
            event_id: format!("s{n:05}"),
            workspace: workspace("default"),
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

pub(super) fn query(address: &Identifier, around: i64) -> FactsQuery {
    FactsQuery {
        address: address.clone(),
        contacts_from: day(around - 100),
        contacts_to: day(around + 100),
    }
}

/// A call with thousands of addresses (which a store may read in chunks) answers each address
/// with its own facts, in the order asked.
pub async fn many_addresses_get_their_own_facts<S: Store>(store: &S) {
    const ADDRESSES: usize = 2_500;
    let ids = with_tenants(store, &["gate-many"]).await;
    let tenant = &ids[0];
    let settings = IdentitySettings::default();
    let phones: Vec<Identifier> = (0..ADDRESSES)
        .map(|i| {
            settings
                .normalize("phone", &format!("+1415555{i:04}"))
                .expect("valid")
        })
        .collect();
    let held: Vec<usize> = (0..ADDRESSES).filter(|i| i % 17 == 0).collect();
    store
        .ingest(
            tenant,
            &settings,
            held.iter()
                .map(|&i| signal(i, vec![phones[i].clone()]))
                .collect(),
        )
        .await
        .expect("ingest");
    let mut writes = ComplianceWrites::default();
    for (i, phone) in phones.iter().enumerate() {
        if i % 7 == 0 {
            writes.suppressions.push(suppression(
                &format!("s{i}"),
                SuppressionScope::Tenant,
                phone,
                SuppressionReason::Dnc,
                SuppressionAction::Add,
            ));
        }
        if i % 11 == 0 {
            writes
                .contacts
                .push(contact(&format!("k{i}"), phone, None, 5));
        }
        if i % 13 == 0 {
            writes.consent.push(consent(
                &format!("c{i}"),
                ConsentSubject::Identifier(phone.clone()),
                "sms",
                ConsentAction::Revoke,
                2,
            ));
        }
    }
    store
        .record_compliance(tenant, writes)
        .await
        .expect("record");
    // Asked in reverse, so that an answer in storage order would not pass.
    let asked: Vec<usize> = (0..ADDRESSES).rev().collect();
    let facts = store
        .compliance_facts(
            tenant,
            &workspace("default"),
            asked.iter().map(|&i| query(&phones[i], 0)).collect(),
        )
        .await
        .expect("facts");
    assert_eq!(facts.len(), ADDRESSES);
    // The ids an address should see: `<prefix><i>` when every `nth` address got one.
    let own = |i: usize, nth: usize, prefix: &str| {
        if i.is_multiple_of(nth) {
            vec![format!("{prefix}{i}")]
        } else {
            Vec::new()
        }
    };
    fn ids_of<T>(rows: &[T], id: impl Fn(&T) -> &String) -> Vec<String> {
        rows.iter().map(|row| id(row).clone()).collect()
    }
    for (&i, facts) in asked.iter().zip(&facts) {
        let suppressed = ids_of(&facts.suppressions, |row| &row.entry_id);
        assert_eq!(suppressed, own(i, 7, "s"), "address {i}");
        assert!(
            facts
                .suppressions
                .iter()
                .all(|row| row.identifier == phones[i])
        );
        let contacts = ids_of(&facts.contacts, |c| &c.contact_id);
        assert_eq!(contacts, own(i, 11, "k"), "address {i}");
        let consent = ids_of(&facts.consent, |c| &c.event_id);
        assert_eq!(consent, own(i, 13, "c"), "address {i}");
        assert_eq!(facts.persons.len(), usize::from(i % 17 == 0), "address {i}");
        if i % 17 == 0 {
            assert_eq!(
                store.lookup_person(tenant, &phones[i]).await,
                Ok(Some(facts.persons[0].clone()))
            );
        }
    }
}

pub async fn compliance_records_are_what_checks_read<S: Store>(store: &S) {
    let ids = with_tenants(store, &["gate-a", "gate-b"]).await;
    let (a, b) = (&ids[0], &ids[1]);
    let settings = IdentitySettings::default();
    let phone = |raw: &str| settings.normalize("phone", raw).expect("valid");
    let (p1, p2, p3) = (
        phone("+14155550101"),
        phone("+14155550102"),
        phone("+14155550103"),
    );
    // p1 and p2 belong to one person, made of two persons merged.
    store
        .ingest(
            a,
            &settings,
            vec![signal(1, vec![p1.clone()]), signal(2, vec![p2.clone()])],
        )
        .await
        .expect("ingest");
    let absorbed = store
        .lookup_person(a, &p2)
        .await
        .expect("lookup")
        .expect("exists");
    store
        .ingest(a, &settings, vec![signal(3, vec![p1.clone(), p2.clone()])])
        .await
        .expect("merge");
    let person = store
        .lookup_person(a, &p1)
        .await
        .expect("lookup")
        .expect("exists");
    assert_ne!(person, absorbed);

    use ConsentAction::{Grant, Revoke};
    use SuppressionAction::{Add, Lift};
    let writes = ComplianceWrites {
        consent: vec![
            consent(
                "c1",
                ConsentSubject::Person(absorbed.clone()),
                "sms:marketing",
                Grant,
                1,
            ),
            consent(
                "c2",
                ConsentSubject::Identifier(p3.clone()),
                "sms",
                Revoke,
                2,
            ),
        ],
        suppressions: vec![
            suppression(
                "s1",
                SuppressionScope::Tenant,
                &p1,
                SuppressionReason::Dnc,
                Add,
            ),
            suppression(
                "s2",
                SuppressionScope::Workspace("web".into()),
                &p2,
                SuppressionReason::OptOut,
                Add,
            ),
            suppression(
                "s3",
                SuppressionScope::Global,
                &p3,
                SuppressionReason::Litigator,
                Add,
            ),
            suppression(
                "s4",
                SuppressionScope::Tenant,
                &p1,
                SuppressionReason::Dnc,
                Lift,
            ),
        ],
        contacts: vec![
            contact("k1", &p1, Some("solar"), 5),
            contact("k2", &p1, None, 400),
        ],
    };
    store.record_compliance(a, writes).await.expect("record");

    let facts = store
        .compliance_facts(
            a,
            &workspace("default"),
            vec![query(&p1, 0), query(&p2, 0), query(&p3, 0)],
        )
        .await
        .expect("facts");
    // The consent given through the absorbed id is recorded for the whole group: p1 sees it.
    assert_eq!(facts[0].persons, vec![person.clone()]);
    let consent_ids: BTreeSet<&str> = facts[0]
        .consent
        .iter()
        .map(|c| c.event_id.as_str())
        .collect();
    assert_eq!(consent_ids, BTreeSet::from(["c1"]));
    assert!(
        facts[0].consent.len() == 2,
        "one row per member: {:?}",
        facts[0].consent
    );
    assert_eq!(
        facts[0].suppressions.len(),
        2,
        "the tenant add and its lift"
    );
    assert_eq!(
        facts[0].contacts.len(),
        1,
        "the contact 400 days on is outside the window"
    );
    assert_eq!(facts[0].contacts[0].vertical.as_deref(), Some("solar"));
    // A workspace suppression applies in its workspace only.
    assert!(facts[1].suppressions.is_empty());
    let in_web = store
        .compliance_facts(a, &workspace("web"), vec![query(&p2, 0)])
        .await
        .expect("facts");
    assert_eq!(in_web[0].suppressions.len(), 1);
    // An unknown address still carries its own consent and the global list.
    assert!(facts[2].persons.is_empty());
    assert_eq!(facts[2].consent.len(), 1);
    assert_eq!(facts[2].suppressions.len(), 1);

    // Another tenant sees the global list and nothing else.
    let other = store
        .compliance_facts(b, &workspace("default"), vec![query(&p1, 0), query(&p3, 0)])
        .await
        .expect("facts");
    assert!(other[0].persons.is_empty() && other[0].consent.is_empty());
    assert!(other[0].suppressions.is_empty() && other[0].contacts.is_empty());
    assert_eq!(other[1].suppressions.len(), 1);
    assert_eq!(other[1].suppressions[0].scope, SuppressionScope::Global);

    let history = store.person_consent(a, &absorbed).await.expect("consent");
    assert_eq!(history.len(), 2);
    assert_eq!(
        store
            .suppression_history(b, &p3)
            .await
            .expect("history")
            .len(),
        1
    );
    // Consent for a person that does not exist is refused and records nothing.
    let missing = ComplianceWrites {
        consent: vec![consent(
            "c9",
            ConsentSubject::Person("nobody".into()),
            "sms",
            Revoke,
            1,
        )],
        suppressions: vec![suppression(
            "s9",
            SuppressionScope::Tenant,
            &p3,
            SuppressionReason::Dnc,
            Add,
        )],
        contacts: Vec::new(),
    };
    assert_eq!(
        store.record_compliance(a, missing).await,
        Err(StoreError::NotFound)
    );
    assert_eq!(
        store
            .suppression_history(a, &p3)
            .await
            .expect("history")
            .len(),
        1
    );

    assert_eq!(store.tenant_setting(a, "compliance").await, Ok(None));
    store
        .put_tenant_setting(a, "compliance", "{}".into(), day(0))
        .await
        .expect("put");
    store
        .put_tenant_setting(a, "compliance", "{\"x\":1}".into(), day(1))
        .await
        .expect("put");
    assert_eq!(
        store.tenant_setting(a, "compliance").await,
        Ok(Some("{\"x\":1}".into()))
    );
    assert_eq!(store.tenant_setting(b, "compliance").await, Ok(None));
}

// ---- The property: the gate against a reference evaluator over the whole log ----

const PURPOSES: [&str; 3] = ["sms", "sms:marketing", "sms:alerts"];
const WORKSPACES: [&str; 2] = ["default", "web"];
const VERTICALS: [Option<&str>; 3] = [None, Some("solar"), Some("roofing")];

#[derive(Debug, Clone)]
enum Op {
    /// A signal carrying these phones (two phones merge their persons).
    Signal(Vec<usize>),
    ConsentOnPhone {
        phone: usize,
        purpose: usize,
        grant: bool,
        on: i64,
    },
    /// Consent on the person holding the phone, when there is one.
    ConsentOnPerson {
        phone: usize,
        purpose: usize,
        grant: bool,
        on: i64,
    },
    Suppress {
        phone: usize,
        scope: usize,
        dnc: bool,
        add: bool,
    },
    Contact {
        phone: usize,
        vertical: usize,
        on: i64,
    },
    Check {
        phone: usize,
        purpose: usize,
        vertical: usize,
        on: i64,
        workspace: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let phone = 0usize..4;
    let on = 0i64..8;
    prop_oneof![
        prop::collection::vec(phone.clone(), 1..=2).prop_map(Op::Signal),
        (phone.clone(), 0..3usize, any::<bool>(), on.clone()).prop_map(
            |(phone, purpose, grant, on)| Op::ConsentOnPhone {
                phone,
                purpose,
                grant,
                on
            }
        ),
        (phone.clone(), 0..3usize, any::<bool>(), on.clone()).prop_map(
            |(phone, purpose, grant, on)| Op::ConsentOnPerson {
                phone,
                purpose,
                grant,
                on
            }
        ),
        (phone.clone(), 0..4usize, any::<bool>(), any::<bool>()).prop_map(
            |(phone, scope, dnc, add)| Op::Suppress {
                phone,
                scope,
                dnc,
                add
            }
        ),
        // Contacts spread over a year so that both cooldowns matter.
        (phone.clone(), 0..3usize, (0i64..8).prop_map(|d| d * 40)).prop_map(
            |(phone, vertical, on)| Op::Contact {
                phone,
                vertical,
                on
            }
        ),
        (
            phone,
            0..3usize,
            0..3usize,
            (0i64..8).prop_map(|d| d * 40),
            0..2usize
        )
            .prop_map(|(phone, purpose, vertical, on, workspace)| Op::Check {
                phone,
                purpose,
                vertical,
                on,
                workspace
            }),
    ]
}

#[derive(Debug, Clone, Copy)]
struct RefCheck {
    phone: usize,
    purpose: usize,
    vertical: usize,
    on: i64,
    workspace: usize,
}

/// A deliberately plain evaluator over the full log: no store, no shortcuts.
#[derive(Default)]
struct Reference {
    /// (subject, purpose, occurred day, op index, grant)
    consent: Vec<(String, usize, i64, usize, bool)>,
    /// (scope index, phone, dnc, op index, add)
    suppressions: Vec<(usize, usize, bool, usize, bool)>,
    /// (phone, vertical index, day)
    contacts: Vec<(usize, usize, i64)>,
}

impl Reference {
    /// The reasons the reference denies the check for; empty when it allows it.
    fn denies(
        &self,
        rules: &ComplianceSettings,
        subjects: &BTreeSet<String>,
        check: &RefCheck,
    ) -> BTreeSet<&'static str> {
        let RefCheck {
            phone,
            purpose,
            vertical,
            on,
            workspace,
        } = *check;
        let mut reasons = BTreeSet::new();
        // Scope 0 = global, 1 = tenant, 2 = workspace "default", 3 = workspace "web".
        for scope in 0..4 {
            if scope >= 2 && scope - 2 != workspace {
                continue;
            }
            for dnc in [false, true] {
                let last = self
                    .suppressions
                    .iter()
                    .filter(|(s, p, d, _, _)| *s == scope && *p == phone && *d == dnc)
                    .max_by_key(|(_, _, _, index, _)| *index);
                if last.is_some_and(|(_, _, _, _, add)| *add) {
                    reasons.insert("suppressed");
                }
            }
        }
        let latest = |subject: &str, purpose: usize| {
            self.consent
                .iter()
                .filter(|(s, p, _, _, _)| s == subject && *p == purpose)
                .max_by_key(|(_, _, on, index, _)| (*on, *index))
                .map(|(_, _, _, _, grant)| *grant)
        };
        let mut revoked = false;
        let mut granted = false;
        for subject in subjects {
            // Purpose 0 is the whole channel: its revoke blocks every purpose.
            if latest(subject, 0) == Some(false) || latest(subject, purpose) == Some(false) {
                revoked = true;
            }
            if latest(subject, purpose) == Some(true) {
                granted = true;
            }
        }
        let purpose_name = Purpose::parse(PURPOSES[purpose]).expect("valid");
        if revoked {
            reasons.insert("consent_revoked");
        } else if !granted && rules.require_grant.contains(&purpose_name) {
            reasons.insert("consent_missing");
        }
        for (p, v, day) in &self.contacts {
            if *p != phone {
                continue;
            }
            let same = vertical == 0 || *v == 0 || *v == vertical;
            let window = if same { 90 } else { 45 };
            if (on - day).abs() < window {
                reasons.insert("cooldown");
            }
        }
        reasons
    }
}

/// Members of the person holding `phone` in the reference graph, and their identifiers.
fn reference_subjects(
    graph: &MemoryGraph,
    phones: &[Identifier],
    phone: usize,
) -> BTreeSet<String> {
    let mut subjects = BTreeSet::from([ConsentSubject::key_of_identifier(&phones[phone])]);
    for owner in graph.owners(&phones[phone]) {
        subjects.insert(ConsentSubject::key_of_person(&owner));
        for member in graph.merged_from(&owner) {
            subjects.insert(ConsentSubject::key_of_person(&member));
        }
        if let Some(identifiers) = graph.partition().get(&owner) {
            for identifier in identifiers {
                subjects.insert(ConsentSubject::key_of_identifier(identifier));
            }
        }
    }
    subjects
}

async fn check_log<S: Store>(
    store: &S,
    case: usize,
    ops: &[Op],
    strict: bool,
) -> Result<(), TestCaseError> {
    let tenant = with_tenants(store, &[&format!("gate-{case}")])
        .await
        .remove(0);
    let identity = IdentitySettings::default();
    // Global entries are shared by every tenant of the database: each case gets its own numbers.
    let phones: Vec<Identifier> = (0..4)
        .map(|i| {
            let raw = format!("+1415{:03}{:04}", 200 + case % 700, 1000 + i);
            identity
                .normalize("phone", &raw)
                .expect("valid test number")
        })
        .collect();
    let mut rules = ComplianceSettings::default();
    if strict {
        rules
            .require_grant
            .insert(Purpose::parse("sms:marketing").expect("valid"));
    }
    let mut graph = MemoryGraph::default();
    let mut reference = Reference::default();
    let mut signals = 0;

    for (index, op) in ops.iter().enumerate() {
        let mut writes = ComplianceWrites::default();
        let id = format!("case{case}-op{index}");
        match op {
            Op::Signal(picks) => {
                signals += 1;
                let identifiers: Vec<Identifier> =
                    picks.iter().map(|p| phones[*p].clone()).collect();
                let record = signal(signals, identifiers.clone());
                let resolution = resolve(
                    &identity,
                    &graph,
                    &Signal {
                        identifiers: &identifiers,
                        new_person_id: record.event.event_id.clone(),
                        at: record.event.ingested_at,
                    },
                );
                graph.apply(&resolution, record.event.ingested_at);
                store
                    .ingest(&tenant, &identity, vec![record])
                    .await
                    .expect("ingest");
                continue;
            }
            Op::ConsentOnPhone {
                phone,
                purpose,
                grant,
                on,
            } => {
                let action = if *grant {
                    ConsentAction::Grant
                } else {
                    ConsentAction::Revoke
                };
                let subject = ConsentSubject::Identifier(phones[*phone].clone());
                writes
                    .consent
                    .push(consent(&id, subject, PURPOSES[*purpose], action, *on));
                reference.consent.push((
                    ConsentSubject::key_of_identifier(&phones[*phone]),
                    *purpose,
                    *on,
                    index,
                    *grant,
                ));
            }
            Op::ConsentOnPerson {
                phone,
                purpose,
                grant,
                on,
            } => {
                let Some(owner) = graph.owners(&phones[*phone]).into_iter().next() else {
                    continue;
                };
                let action = if *grant {
                    ConsentAction::Grant
                } else {
                    ConsentAction::Revoke
                };
                writes.consent.push(consent(
                    &id,
                    ConsentSubject::Person(owner.clone()),
                    PURPOSES[*purpose],
                    action,
                    *on,
                ));
                // Recorded for every member of the group at the time.
                let mut members = graph.merged_from(&owner);
                members.push(owner);
                for member in members {
                    reference.consent.push((
                        ConsentSubject::key_of_person(&member),
                        *purpose,
                        *on,
                        index,
                        *grant,
                    ));
                }
            }
            Op::Suppress {
                phone,
                scope,
                dnc,
                add,
            } => {
                let stored_scope = match scope {
                    0 => SuppressionScope::Global,
                    1 => SuppressionScope::Tenant,
                    n => SuppressionScope::Workspace(WORKSPACES[n - 2].to_owned()),
                };
                let reason = if *dnc {
                    SuppressionReason::Dnc
                } else {
                    SuppressionReason::OptOut
                };
                let action = if *add {
                    SuppressionAction::Add
                } else {
                    SuppressionAction::Lift
                };
                writes.suppressions.push(suppression(
                    &id,
                    stored_scope,
                    &phones[*phone],
                    reason,
                    action,
                ));
                reference
                    .suppressions
                    .push((*scope, *phone, *dnc, index, *add));
            }
            Op::Contact {
                phone,
                vertical,
                on,
            } => {
                writes
                    .contacts
                    .push(contact(&id, &phones[*phone], VERTICALS[*vertical], *on));
                reference.contacts.push((*phone, *vertical, *on));
            }
            Op::Check {
                phone,
                purpose,
                vertical,
                on,
                workspace,
            } => {
                let window = rules.longest_cooldown();
                let at = day(*on);
                let facts = store
                    .compliance_facts(
                        &tenant,
                        &WorkspaceName::parse(WORKSPACES[*workspace]).expect("valid"),
                        vec![FactsQuery {
                            address: phones[*phone].clone(),
                            contacts_from: at.checked_sub(window).expect("in range"),
                            contacts_to: at.checked_add(window).expect("in range"),
                        }],
                    )
                    .await
                    .expect("facts");
                let purpose_name = Purpose::parse(PURPOSES[*purpose]).expect("valid");
                let decision = evaluate(
                    &rules,
                    &Check {
                        purpose: &purpose_name,
                        vertical: VERTICALS[*vertical],
                        at,
                        invalid_address: None,
                    },
                    &facts[0].facts(),
                );
                let subjects = reference_subjects(&graph, &phones, *phone);
                let expected = reference.denies(
                    &rules,
                    &subjects,
                    &RefCheck {
                        phone: *phone,
                        purpose: *purpose,
                        vertical: *vertical,
                        on: *on,
                        workspace: *workspace,
                    },
                );
                let got: BTreeSet<&str> =
                    decision.reasons.iter().map(|r| r.code.as_str()).collect();
                // The cardinal rule first: never allowed where the reference forbids.
                prop_assert!(
                    !decision.allowed || expected.is_empty(),
                    "op {}: the gate allowed what the reference forbids ({:?})",
                    index,
                    expected
                );
                prop_assert_eq!(got, expected, "op {}", index);
                continue;
            }
        }
        store
            .record_compliance(&tenant, writes)
            .await
            .expect("record");
    }
    Ok(())
}

/// Random interleavings of signals (with merges), consent on addresses and persons, suppression
/// adds and lifts at every scope, contacts and checks: the gate through the store decides
/// exactly as the reference evaluator over the full log, and never allows what it forbids.
pub async fn the_gate_agrees_with_a_reference_evaluator<S: Store>(store: &S) {
    let cases = if store.backend() == "postgres" {
        16
    } else {
        48
    };
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let strategy = (prop::collection::vec(op(), 1..=40), any::<bool>());
    let handle = tokio::runtime::Handle::current();
    let case = std::sync::atomic::AtomicUsize::new(0);
    let result = tokio::task::block_in_place(|| {
        runner.run(&strategy, |(ops, strict)| {
            let n = case.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            handle.block_on(check_log(store, n, &ops, strict))
        })
    });
    if let Err(failure) = result {
        panic!("{failure}");
    }
}
