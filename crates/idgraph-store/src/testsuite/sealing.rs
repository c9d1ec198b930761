//! Conformance cases for PII at rest: what a store seals reads back the same, lookups go
//! through the blind index, and a re-seal (rotation, or first key on a plain store) moves every
//! row to the current key in bounded batches while every row stays readable.

use idgraph_core::identity::{Identifier, IdentitySettings};
use idgraph_core::tenancy::{TenantId, WorkspaceName};
use idgraph_core::traits::{Provenance, SourceClass};

use super::{ts, with_tenants};
use crate::vault::Vault;
use crate::{EventRow, PageRequest, SignalRecord, Store, TraitObservation};

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
    let log = store
        .signal_log(tenant, 0, 100)
        .await
        .unwrap_or_else(|e| panic!("{when}: log: {e}"));
    assert_eq!(log.len(), emails.len(), "{when}");
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
    for tenant in tenants {
        let mut batches = 0;
        loop {
            let rewritten = store.reseal(tenant, 4).await.expect("reseal");
            assert!(rewritten <= 4, "a batch is bounded");
            // Between batches, some rows are under the old key and some under the new one.
            if readable_between {
                assert_readable(store, tenant, emails, when).await;
            }
            if rewritten == 0 {
                break;
            }
            batches += 1;
        }
        // 6 nodes + 6 traits + 6 events, 4 per batch.
        assert_eq!(batches, 5, "{when}: every row was rewritten once");
    }
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
            .collect();
        store
            .ingest(tenant, &settings, signals)
            .await
            .expect("ingest");
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
