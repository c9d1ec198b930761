//! Conformance for deleting persons: a deleted group vanishes from every read at once, its
//! identifiers become tombstones that block (or, if the tenant says so, let through) later
//! signals, its suppressions stay in force, and the purge removes what it left.

use idgraph_core::compliance::{SuppressionAction, SuppressionReason, SuppressionScope};
use idgraph_core::identity::{Identifier, IdentifierKind, IdentitySettings};
use idgraph_core::privacy::ErasedIdentifiers;
use idgraph_core::tenancy::WorkspaceName;
use idgraph_core::traits::{Provenance, SourceClass};
use jiff::SignedDuration;

use super::{ts, with_tenants};
use crate::{
    ComplianceWrites, DeletionRequest, EventRow, IdempotencyBegin, IdempotencyRequest,
    IngestOutcome, PageRequest, SignalRecord, Store, StoreError, StoredResponse, SuppressionRow,
    TraitObservation,
};

fn signal(n: i64, identifiers: &[&Identifier]) -> SignalRecord {
    SignalRecord {
        event: EventRow {
            event_id: format!("d{n:05}"),
            workspace: WorkspaceName::default_workspace(),
            kind: "identify".into(),
            name: None,
            occurred_at: ts(n),
            ingested_at: ts(n),
            schema_version: 1,
            message_id: format!("m{n}"),
            properties: r#"{"note": "ann's signal"}"#.into(),
            context: "{}".into(),
        },
        identifiers: identifiers.iter().map(|i| (*i).clone()).collect(),
        // Two traits, one observed twice: a purge counts the two it kept.
        traits: [
            ("name", "\"Ann\""),
            ("plan", "\"pro\""),
            ("name", "\"Anne\""),
        ]
        .map(|(name, value)| TraitObservation {
            name: name.into(),
            value: value.into(),
            provenance: Provenance {
                class: SourceClass::User,
                confidence: 1.0,
                observed_at: ts(n),
            },
            set_once: false,
        })
        .into(),
        source: "conformance".into(),
    }
}

fn request(person_id: &str, at: i64) -> DeletionRequest {
    DeletionRequest {
        person_id: person_id.to_owned(),
        at: ts(at),
        purge_after: ts(at) + SignedDuration::from_hours(24),
        salt_candidate: vec![42; 32],
    }
}

pub async fn deleting_a_person_hides_it_tombstones_it_and_purges_it<S: Store>(store: &S) {
    let tenants = with_tenants(store, &["deleting", "bystander"]).await;
    let (tenant, other) = (&tenants[0], &tenants[1]);
    let settings = IdentitySettings::default();
    let email = Identifier::from_stored(IdentifierKind::email(), "ann@example.com".into());
    let phone = Identifier::from_stored(IdentifierKind::phone(), "+14155550101".into());
    let anon = Identifier::from_stored(IdentifierKind::anonymous_id(), "anon-1".into());
    let bob = Identifier::from_stored(IdentifierKind::email(), "bob@example.com".into());
    let outcomes = store
        .ingest(
            tenant,
            &settings,
            vec![
                signal(1, &[&email, &phone]),
                signal(2, &[&anon]),
                // Links the anonymous visitor to Ann: a merge.
                signal(3, &[&email, &anon]),
                signal(4, &[&bob]),
            ],
        )
        .await
        .unwrap();
    let IngestOutcome::Recorded { merges: 1, .. } = &outcomes[2] else {
        panic!("the third signal merges: {outcomes:?}")
    };
    let ann = store.lookup_person(tenant, &email).await.unwrap().unwrap();
    let absorbed = store
        .lookup_person(tenant, &anon)
        .await
        .unwrap()
        .expect("anon resolves to ann");
    assert_eq!(absorbed, ann);
    store
        .record_compliance(
            tenant,
            ComplianceWrites {
                suppressions: vec![SuppressionRow {
                    entry_id: "s1".into(),
                    scope: SuppressionScope::Tenant,
                    identifier: phone.clone(),
                    reason: SuppressionReason::OptOut,
                    action: SuppressionAction::Add,
                    note: None,
                    actor: "conformance".into(),
                    at: ts(5),
                    recorded: 0,
                }],
                ..ComplianceWrites::default()
            },
        )
        .await
        .unwrap();
    // Kept answers: one quoting Ann's address (sealed at rest, so deletion must open it to see
    // that), one not.
    let kept = |key: &str| IdempotencyRequest {
        tenant_id: tenant.clone(),
        scope: "deletion".into(),
        key: key.into(),
        fingerprint: "f".into(),
        at: ts(6),
        retention: SignedDuration::from_hours(24),
        pending_timeout: SignedDuration::from_mins(5),
    };
    for (key, body) in [
        ("quotes", r#"{"to":"ann@example.com"}"#),
        ("other", r#"{"to":"bob@example.com"}"#),
    ] {
        assert_eq!(
            store.idempotency_begin(&kept(key)).await,
            Ok(IdempotencyBegin::Run)
        );
        store
            .idempotency_finish(
                &kept(key),
                Some(StoredResponse {
                    status: 200,
                    content_type: None,
                    body: body.as_bytes().to_vec(),
                }),
            )
            .await
            .unwrap();
    }

    // Another tenant cannot delete Ann, even knowing her id.
    assert_eq!(
        store.delete_person(other, request(&ann, 10)).await,
        Err(StoreError::NotFound)
    );
    // Asking by the absorbed person's id deletes the whole group.
    let absorbed_id = "d00002";
    let deleted = store
        .delete_person(tenant, request(absorbed_id, 10))
        .await
        .unwrap();
    assert_eq!(deleted.person_id, ann);
    assert_eq!(deleted.members.len(), 2, "{deleted:?}");
    assert_eq!(deleted.identifiers_erased, 3);
    assert_eq!(
        store.idempotency_begin(&kept("quotes")).await,
        Ok(IdempotencyBegin::Run),
        "the answer quoting Ann's address is dropped"
    );
    assert!(matches!(
        store.idempotency_begin(&kept("other")).await,
        Ok(IdempotencyBegin::Replay(_))
    ));

    for id in [ann.as_str(), absorbed_id] {
        assert_eq!(
            store.get_person(tenant, id).await,
            Err(StoreError::NotFound),
            "{id}"
        );
        assert_eq!(
            store.delete_person(tenant, request(id, 11)).await,
            Err(StoreError::NotFound),
            "deleting again: {id}"
        );
    }
    for identifier in [&email, &phone, &anon] {
        assert_eq!(store.lookup_person(tenant, identifier).await.unwrap(), None);
    }
    let stats = store.stats(tenant, ts(0)).await.unwrap();
    assert_eq!(
        (stats.persons, stats.persons_absorbed, stats.merges),
        (1, 0, 0)
    );
    let counted: u64 = stats.events_by_kind_and_day.iter().map(|e| e.2).sum();
    assert_eq!(counted, 1, "only Bob's event is counted");
    let log = store.signal_log(tenant, 0, 100).await.unwrap();
    assert_eq!(log.len(), 1, "the log holds only Bob's signal");
    assert!(store.get_signal(tenant, "d00001").await.is_err());
    assert_eq!(
        store
            .persons_by_identifier_count(tenant, 1, &PageRequest::first(10))
            .await
            .unwrap()
            .items
            .len(),
        1
    );

    // The opt-out stays in force for the number, which the store now knows only as a tombstone.
    let history = store.suppression_history(tenant, &phone).await.unwrap();
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].identifier, phone);

    // A stale signal with Ann's email is refused, not turned into a new Ann.
    let later = store
        .ingest(
            tenant,
            &settings,
            vec![
                signal(
                    20,
                    &[
                        &email,
                        &Identifier::from_stored(IdentifierKind::anonymous_id(), "anon-9".into()),
                    ],
                ),
                signal(
                    21,
                    &[&Identifier::from_stored(
                        IdentifierKind::anonymous_id(),
                        "anon-8".into(),
                    )],
                ),
            ],
        )
        .await
        .unwrap();
    assert_eq!(
        later[0],
        IngestOutcome::Erased {
            kinds: vec!["email".into()]
        }
    );
    assert!(matches!(
        later[1],
        IngestOutcome::Recorded { created: true, .. }
    ));
    assert_eq!(store.lookup_person(tenant, &email).await.unwrap(), None);
    // The same email in another tenant is not erased there.
    let elsewhere = store
        .ingest(other, &settings, vec![signal(22, &[&email])])
        .await
        .unwrap();
    assert!(matches!(
        elsewhere[0],
        IngestOutcome::Recorded { created: true, .. }
    ));

    // Before the window ends the purge leaves the data; after it, removes it once.
    let early = store.purge_deleted(tenant, ts(11)).await.unwrap();
    assert_eq!(early.persons, 0);
    let purged = store
        .purge_deleted(tenant, ts(10) + SignedDuration::from_hours(25))
        .await
        .unwrap();
    assert_eq!(
        (purged.persons, purged.events, purged.trait_values),
        (2, 3, 6),
        "{purged:?}"
    );
    let again = store
        .purge_deleted(tenant, ts(10) + SignedDuration::from_hours(26))
        .await
        .unwrap();
    assert_eq!(again.persons, 0);
    let history = store.suppression_history(tenant, &phone).await.unwrap();
    assert_eq!(
        history.len(),
        1,
        "the purge keeps the tombstoned suppression"
    );

    // A tenant that allows erased identifiers gets a new person for them.
    let allowing = IdentitySettings {
        erased_identifiers: ErasedIdentifiers::Allow,
        ..IdentitySettings::default()
    };
    let allowed = store
        .ingest(tenant, &allowing, vec![signal(30, &[&email])])
        .await
        .unwrap();
    assert!(matches!(
        allowed[0],
        IngestOutcome::Recorded { created: true, .. }
    ));
    let new_ann = store.lookup_person(tenant, &email).await.unwrap().unwrap();
    assert_ne!(new_ann, ann);
}
