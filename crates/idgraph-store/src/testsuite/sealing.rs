//! Conformance cases for PII at rest: what a store seals reads back the same, lookups go
//! through the blind index, and a re-seal (rotation, or first key on a plain store) moves every
//! row to the current key in bounded batches while every row stays readable.

use idgraph_core::compliance::{
    ConsentAction, SuppressionAction, SuppressionReason, SuppressionScope,
};
use idgraph_core::identity::{Identifier, IdentitySettings};
use idgraph_core::tenancy::{TenantId, WorkspaceName};
use idgraph_core::traits::{Provenance, SourceClass};

use super::compliance::{consent, contact, query, suppression};
use super::imports::{chunk, new_job, rows};
use super::webhooks::{outbox, subscription};
use super::{ts, with_tenants};
use crate::vault::Vault;
use crate::{
    ComplianceWrites, ConsentSubject, EventRow, IdempotencyBegin, IdempotencyRequest, PageRequest,
    SignalRecord, Store, StoredResponse, TraitObservation,
};
use idgraph_core::webhooks::EventType;

/// Rows each tenant holds: 6 nodes, 6 traits, 6 events, 2 consent events (one on the first
/// address, one on its person), a suppression and a contact of that address; and from the
/// merge and conflict signals (`joined`), 4 nodes (the refused external id starts a person of
/// its own), 5 traits, 5 events, a merge and a conflict; an import's 2 landed rows and the
/// reason of its rejected row; an idempotent response. Webhook deliveries come on top (as many
/// as the outbox holds).
const ROWS: u64 = 6 + 6 + 6 + 2 + 1 + 1 + (4 + 5 + 5 + 1 + 1) + (2 + 1) + 1;

fn replayed(tenant: &TenantId) -> IdempotencyRequest {
    IdempotencyRequest {
        tenant_id: tenant.clone(),
        scope: "sealing".into(),
        key: "k1".into(),
        fingerprint: "f1".into(),
        at: ts(0),
        retention: jiff::SignedDuration::from_hours(24),
        pending_timeout: jiff::SignedDuration::from_mins(5),
    }
}

fn response(email: &Identifier) -> StoredResponse {
    StoredResponse {
        status: 200,
        content_type: Some("application/json".into()),
        body: format!(r#"{{"to":"{}"}}"#, email.value()).into_bytes(),
    }
}
/// The global suppression entry, which belongs to no tenant.
const GLOBAL_ROWS: u64 = 1;

fn signal(n: usize, identifiers: Vec<Identifier>) -> SignalRecord {
    let at = ts(i64::try_from(n).expect("small"));
    SignalRecord {
        event: EventRow {
            event_id: format!("s{n:05}"),
            workspace: WorkspaceName::default_workspace(),
            kind: "identify".into(),
            name: None,
            occurred_at: at,
            ingested_at: at,
            schema_version: 1,
            message_id: format!("m{n}"),
            properties: format!("{{\"traits\":{{\"name\":\"Person {n}\"}}}}"),
            context: "{\"ip\":\"127.0.0.1\"}".into(),
        },
        identifiers,
        traits: vec![TraitObservation {
            name: "name".into(),
            value: format!("\"Person {n}\""),
            provenance: Provenance {
                class: SourceClass::User,
                confidence: 1.0,
                observed_at: at,
            },
            set_once: false,
        }],
        source: "conformance".into(),
    }
}

fn joined_ids() -> [Identifier; 4] {
    let settings = IdentitySettings::default();
    let id = |kind: &str, value: &str| settings.normalize(kind, value).expect("valid");
    [
        id("email", "joined.one@example.com"),
        id("email", "joined.two@example.com"),
        id("external_id", "joined-u1"),
        id("external_id", "joined-u2"),
    ]
}

/// Signals 6 to 10: two persons, a merge of them, and a second external id refused (a
/// conflict).
fn joined() -> Vec<SignalRecord> {
    let [one, two, u1, u2] = joined_ids();
    vec![
        signal(6, vec![one.clone()]),
        signal(7, vec![two.clone()]),
        signal(8, vec![one.clone(), two]),
        signal(9, vec![u1, one.clone()]),
        signal(10, vec![u2, one]),
    ]
}

/// The merge and the conflict read back with the identifiers they were recorded on.
async fn assert_joined<S: Store>(store: &S, tenant: &TenantId, when: &str) {
    let [one, two, _, u2] = joined_ids();
    let person = store
        .lookup_person(tenant, &one)
        .await
        .unwrap_or_else(|e| panic!("{when}: lookup: {e}"))
        .unwrap_or_else(|| panic!("{when}: found"));
    let (merges, conflicts) = store
        .merges_of(tenant, &person)
        .await
        .unwrap_or_else(|e| panic!("{when}: merges: {e}"));
    assert_eq!(merges.len(), 1, "{when}");
    assert!(merges[0].identifiers.contains(&one), "{when}: {merges:?}");
    assert!(merges[0].identifiers.contains(&two), "{when}: {merges:?}");
    assert_eq!(conflicts.len(), 1, "{when}");
    // Which side of the clash a backend names differs; either reads back in the clear.
    assert!(
        [one, u2].contains(&conflicts[0].identifier),
        "{when}: {conflicts:?}"
    );
}

fn key(byte: u8) -> [u8; 32] {
    [byte; 32]
}

/// Everything the tenant's 6 persons stored reads back as written.
async fn assert_readable<S: Store>(
    store: &S,
    tenant: &TenantId,
    emails: &[Identifier],
    when: &str,
) {
    for (n, email) in emails.iter().enumerate() {
        let person = store
            .lookup_person(tenant, email)
            .await
            .unwrap_or_else(|e| panic!("{when}: lookup: {e}"))
            .unwrap_or_else(|| panic!("{when}: {email:?} is found by its blind index"));
        let profile = store
            .person_profile(tenant, &person)
            .await
            .unwrap_or_else(|e| panic!("{when}: profile: {e}"));
        let values: Vec<&str> = profile
            .identifiers
            .iter()
            .map(|n| n.value.as_str())
            .collect();
        assert!(values.contains(&email.value()), "{when}: {values:?}");
        assert_eq!(profile.traits[0].value, format!("\"Person {n}\""), "{when}");
        let nodes = store
            .find_identity_nodes(tenant, email.kind(), email.value())
            .await
            .unwrap_or_else(|e| panic!("{when}: find: {e}"));
        assert_eq!(nodes.len(), 1, "{when}");
        assert_eq!(nodes[0].value, email.value(), "{when}");
        let timeline = store
            .timeline(tenant, &person, None, &PageRequest::first(10))
            .await
            .unwrap_or_else(|e| panic!("{when}: timeline: {e}"));
        assert!(
            timeline.items[0]
                .properties
                .contains(&format!("Person {n}")),
            "{when}"
        );
    }
    // The compliance records of the first address: found by its blind index, read back in the
    // clear.
    let person = store
        .lookup_person(tenant, &emails[0])
        .await
        .unwrap_or_else(|e| panic!("{when}: lookup: {e}"))
        .unwrap_or_else(|| panic!("{when}: found"));
    let facts = store
        .compliance_facts(
            tenant,
            &WorkspaceName::default_workspace(),
            vec![query(&emails[0], 0)],
        )
        .await
        .unwrap_or_else(|e| panic!("{when}: facts: {e}"));
    let facts = &facts[0];
    assert_eq!(facts.persons, vec![person.clone()], "{when}");
    let subjects: Vec<&str> = facts.consent.iter().map(|c| c.subject.as_str()).collect();
    assert_eq!(
        subjects,
        vec![
            ConsentSubject::key_of_identifier(&emails[0]).as_str(),
            ConsentSubject::key_of_person(&person).as_str()
        ],
        "{when}"
    );
    let mut entries: Vec<&str> = facts
        .suppressions
        .iter()
        .map(|s| s.entry_id.as_str())
        .collect();
    entries.sort_unstable();
    assert_eq!(
        entries,
        vec!["g1", "s1"],
        "{when}: the global entry is found from every tenant"
    );
    assert_eq!(facts.contacts.len(), 1, "{when}");
    assert_eq!(facts.contacts[0].to, emails[0], "{when}");
    let history = store
        .suppression_history(tenant, &emails[0])
        .await
        .unwrap_or_else(|e| panic!("{when}: history: {e}"));
    assert_eq!(history.len(), 2, "{when}");
    let consent = store
        .person_consent(tenant, &person)
        .await
        .unwrap_or_else(|e| panic!("{when}: consent: {e}"));
    assert_eq!(consent.len(), 2, "{when}");
    assert_eq!(
        consent[0].subject,
        ConsentSubject::key_of_identifier(&emails[0]),
        "{when}"
    );
    assert_eq!(
        consent[0].evidence.as_deref(),
        Some(r#"{"form":"signup"}"#),
        "{when}"
    );

    let log = store
        .signal_log(tenant, 0, 100)
        .await
        .unwrap_or_else(|e| panic!("{when}: log: {e}"));
    assert_eq!(log.len(), emails.len() + 5, "{when}");
    assert_joined(store, tenant, when).await;
    assert_eq!(
        store.idempotency_begin(&replayed(tenant)).await,
        Ok(IdempotencyBegin::Replay(response(&emails[0]))),
        "{when}"
    );
    let deliveries = outbox(store, tenant, "wh").await;
    assert!(!deliveries.is_empty(), "{when}");
    assert!(
        deliveries
            .iter()
            .any(|(_, payload)| payload.contains(emails[0].value())),
        "{when}: {deliveries:?}"
    );
    assert_eq!(
        store
            .landed_rows(tenant, "job-s", 0, 10)
            .await
            .unwrap_or_else(|e| panic!("{when}: landed: {e}")),
        rows(1, 2),
        "{when}"
    );
    let outcomes = store
        .import_outcomes(tenant, "job-s", None, &PageRequest::first(10))
        .await
        .unwrap_or_else(|e| panic!("{when}: outcomes: {e}"));
    let reasons: Vec<Option<&str>> = outcomes.items.iter().map(|o| o.reason.as_deref()).collect();
    assert_eq!(reasons, [None, Some("empty row")], "{when}");
    for (logged, email) in log.iter().zip(emails) {
        assert!(logged.identifiers.contains(email), "{when}");
        assert_eq!(logged.event.context, "{\"ip\":\"127.0.0.1\"}", "{when}");
    }
}

/// Re-seals every tenant in batches of 4; `readable_between` checks every read after each batch
/// (a rotation; plain identity nodes are not found by blind index until sealed, which is why a
/// server seals a plain store before it serves).
async fn reseal_all<S: Store>(
    store: &S,
    tenants: &[TenantId],
    emails: &[Identifier],
    when: &str,
    readable_between: bool,
) {
    let mut total = 0;
    for tenant in tenants {
        for pass in 0.. {
            // A re-seal that keeps rewriting rows already under the current key never ends.
            assert!(pass < 1_000, "the re-seal does not finish ({when})");
            let rewritten = store.reseal(tenant, 4).await.expect("reseal");
            assert!(rewritten <= 4, "a batch is bounded");
            // Between batches, some rows are under the old key and some under the new one.
            if readable_between {
                for tenant in tenants {
                    assert_readable(store, tenant, emails, when).await;
                }
            }
            if rewritten == 0 {
                break;
            }
            total += rewritten;
        }
    }
    let mut deliveries = 0;
    for tenant in tenants {
        deliveries += outbox(store, tenant, "wh").await.len() as u64;
    }
    let expected = ROWS * tenants.len() as u64 + GLOBAL_ROWS + deliveries;
    assert_eq!(total, expected, "{when}: every row was rewritten once");
}

pub async fn resealing_moves_every_row_to_the_current_key_and_keeps_it_readable<S: Store>(
    store: &S,
) {
    let tenants = with_tenants(store, &["sealed", "other"]).await;
    let settings = IdentitySettings::default();
    let emails: Vec<Identifier> = (0..6)
        .map(|n| {
            settings
                .normalize("email", &format!("person{n}@example.com"))
                .expect("valid")
        })
        .collect();
    let index = key(9);

    // A store that ran without a key has plain rows; its first key seals them.
    store.vault_slot().set(Vault::plaintext());
    for tenant in &tenants {
        let signals = emails
            .iter()
            .enumerate()
            .map(|(n, e)| signal(n, vec![e.clone()]))
            .chain(joined())
            .collect();
        store
            .create_webhook(tenant, &subscription("wh", &[EventType::SuppressionAdded]))
            .await
            .expect("webhook");
        store
            .ingest(tenant, &settings, signals)
            .await
            .expect("ingest");
        assert_eq!(
            store.idempotency_begin(&replayed(tenant)).await,
            Ok(IdempotencyBegin::Run)
        );
        store
            .idempotency_finish(&replayed(tenant), Some(response(&emails[0])))
            .await
            .expect("finish");
        let person = store
            .lookup_person(tenant, &emails[0])
            .await
            .expect("lookup")
            .expect("found");
        let address = &emails[0];
        let mut writes = ComplianceWrites {
            consent: vec![
                consent(
                    "c1",
                    ConsentSubject::Identifier(address.clone()),
                    "email",
                    ConsentAction::Grant,
                    0,
                ),
                consent(
                    "c2",
                    ConsentSubject::Person(person),
                    "email:marketing",
                    ConsentAction::Revoke,
                    0,
                ),
            ],
            suppressions: vec![suppression(
                "s1",
                SuppressionScope::Tenant,
                address,
                SuppressionReason::Complaint,
                SuppressionAction::Add,
            )],
            contacts: vec![contact("k1", address, None, 0)],
        };
        if tenant == &tenants[0] {
            writes.suppressions.push(suppression(
                "g1",
                SuppressionScope::Global,
                address,
                SuppressionReason::Complaint,
                SuppressionAction::Add,
            ));
        }
        store
            .record_compliance(tenant, writes)
            .await
            .expect("compliance");
        store
            .create_import(tenant, &new_job("job-s"))
            .await
            .expect("import");
        store
            .land_import_rows(tenant, "job-s", rows(1, 2), ts(1))
            .await
            .expect("land");
        store
            .finish_import_landing(tenant, "job-s", "sha", 10, Vec::new(), ts(2))
            .await
            .expect("landed");
        store
            .claim_import(tenant, "job-s", "runner", ts(3), ts(0))
            .await
            .expect("claim");
        store
            .record_import_chunk(tenant, "job-s", chunk("runner", 0, 2, 1))
            .await
            .expect("record");
    }
    store
        .vault_slot()
        .set(Vault::new(1, [(1, key(1))], &index).expect("vault"));
    reseal_all(store, &tenants, &emails, "sealing plain rows", false).await;

    for tenant in &tenants {
        assert_readable(store, tenant, &emails, "after sealing").await;
    }

    // Rotation: key 2 becomes current while key 1 still opens the old rows.
    store
        .vault_slot()
        .set(Vault::new(2, [(1, key(1)), (2, key(2))], &index).expect("vault"));
    reseal_all(store, &tenants, &emails, "rotating", true).await;

    // Key 1 is no longer needed by any row.
    store
        .vault_slot()
        .set(Vault::new(2, [(2, key(2))], &index).expect("vault"));
    for tenant in &tenants {
        assert_readable(store, tenant, &emails, "after rotating").await;
        assert_eq!(store.reseal(tenant, 4).await, Ok(0));
    }

    // A vault without the key the rows are sealed with cannot read them, and says so.
    store
        .vault_slot()
        .set(Vault::new(3, [(3, key(3))], &index).expect("vault"));
    let person = store
        .lookup_person(&tenants[0], &emails[0])
        .await
        .expect("the blind index key did not change")
        .expect("found");
    let error = store
        .person_profile(&tenants[0], &person)
        .await
        .expect_err("key 2 is gone");
    assert!(error.to_string().contains("key 2"), "{error}");
}
