//! Conformance cases for the webhook outbox: rows exist exactly for committed changes that a
//! subscription asked for, and claims hand each endpoint its deliveries one at a time, in order.

use idgraph_core::identity::{Identifier, IdentitySettings};
use idgraph_core::tenancy::{TenantId, WorkspaceName};
use idgraph_core::webhooks::EventType;
use jiff::{SignedDuration, Timestamp};

use super::{ts, with_tenants};
use crate::{
    AttemptNext, AttemptRecord, DeliveryAttempt, DeliveryClaim, DeliveryStatus, EventRow,
    ManualMerge, PageRequest, SignalRecord, Store, StoreError, Unmerge, WebhookSubscription,
};

fn email(settings: &IdentitySettings, n: usize) -> Identifier {
    settings
        .normalize("email", &format!("hook{n}@example.com"))
        .expect("valid")
}

fn external(settings: &IdentitySettings, n: usize) -> Identifier {
    settings
        .normalize("external_id", &format!("hook-user-{n}"))
        .expect("valid")
}

fn signal(n: usize, identifiers: Vec<Identifier>) -> SignalRecord {
    let at = ts(i64::try_from(n).expect("small"));
    SignalRecord {
        event: EventRow {
            event_id: format!("w{n:05}"),
            workspace: WorkspaceName::default_workspace(),
            kind: "identify".into(),
            name: None,
            occurred_at: at,
            ingested_at: at,
            schema_version: 1,
            message_id: format!("wm{n}"),
            properties: "{}".into(),
            context: "{}".into(),
        },
        identifiers,
        traits: Vec::new(),
        source: "conformance".into(),
    }
}

pub(super) fn subscription(id: &str, events: &[EventType]) -> WebhookSubscription {
    WebhookSubscription {
        subscription_id: id.into(),
        workspace: WorkspaceName::default_workspace(),
        url: "http://127.0.0.1:9/hook".into(),
        events: events.to_vec(),
        secret_sealed: vec![1, 2, 3],
        created_at: ts(0),
        disabled_at: None,
        disabled_reason: None,
    }
}

pub(super) async fn outbox<S: Store>(
    store: &S,
    tenant: &TenantId,
    id: &str,
) -> Vec<(EventType, String)> {
    let page = store
        .list_webhook_deliveries(tenant, id, &PageRequest::first(100))
        .await
        .expect("deliveries");
    page.items
        .into_iter()
        .rev()
        .map(|d| (d.event_type, d.payload))
        .collect()
}

fn claim(owner: &str, now: Timestamp) -> DeliveryClaim {
    DeliveryClaim {
        owner: owner.into(),
        now,
        lease_until: now + SignedDuration::from_secs(60),
        limit: 10,
    }
}

fn attempt(
    owner: &str,
    delivery_id: &str,
    number: u32,
    at: Timestamp,
    next: AttemptNext,
) -> AttemptRecord {
    AttemptRecord {
        owner: owner.into(),
        attempt: DeliveryAttempt {
            delivery_id: delivery_id.into(),
            attempt: number,
            at,
            status_code: Some(200),
            latency_ms: 3,
            error: None,
        },
        next,
    }
}

pub async fn the_outbox_holds_committed_changes_someone_subscribed_to<S: Store>(store: &S) {
    let tenants = with_tenants(store, &["hook-a"]).await;
    let tenant = &tenants[0];
    let settings = IdentitySettings::default();
    // No subscription yet: the change is recorded, the outbox stays empty.
    store
        .ingest(
            tenant,
            &settings,
            vec![signal(1, vec![external(&settings, 1)])],
        )
        .await
        .expect("ingest");
    store
        .create_webhook(
            tenant,
            &subscription("s-merged", &[EventType::PersonMerged]),
        )
        .await
        .expect("subscribe");
    store
        .create_webhook(
            tenant,
            &subscription("s-created", &[EventType::PersonCreated]),
        )
        .await
        .expect("subscribe");
    store
        .ingest(
            tenant,
            &settings,
            vec![signal(2, vec![email(&settings, 2)])],
        )
        .await
        .expect("ingest");
    let created = outbox(store, tenant, "s-created").await;
    assert_eq!(
        created.len(),
        1,
        "only the change after subscribing: {created:?}"
    );
    assert!(
        created[0].1.contains("\"type\":\"person.created\""),
        "{:?}",
        created[0]
    );
    assert!(outbox(store, tenant, "s-merged").await.is_empty());

    // A repeated message id changes nothing, and announces nothing.
    store
        .ingest(
            tenant,
            &settings,
            vec![signal(2, vec![email(&settings, 2)])],
        )
        .await
        .expect("ingest");
    assert_eq!(outbox(store, tenant, "s-created").await.len(), 1);

    // A merge that fails rolls back its outbox row with it.
    let person = store
        .lookup_person(tenant, &email(&settings, 2))
        .await
        .expect("lookup")
        .expect("a person");
    let refused = store
        .merge_persons(
            tenant,
            &settings,
            ManualMerge {
                merge_id: "mm-refused".into(),
                survivor: person.clone(),
                absorbed: person.clone(),
                reason: "the same person".into(),
                actor: "conformance".into(),
                at: ts(10),
            },
        )
        .await;
    assert!(
        matches!(refused, Err(StoreError::Conflict(_))),
        "{refused:?}"
    );
    assert!(outbox(store, tenant, "s-merged").await.is_empty());

    // One that succeeds is announced, to the subscription that asked for merges only.
    let first = store
        .lookup_person(tenant, &external(&settings, 1))
        .await
        .expect("lookup")
        .expect("a person");
    store
        .merge_persons(
            tenant,
            &settings,
            ManualMerge {
                merge_id: "mm-ok".into(),
                survivor: first,
                absorbed: person,
                reason: "the same person".into(),
                actor: "conformance".into(),
                at: ts(11),
            },
        )
        .await
        .expect("merge");
    let merged = outbox(store, tenant, "s-merged").await;
    assert_eq!(merged.len(), 1);
    assert!(merged[0].1.contains("mm-ok"), "{:?}", merged[0]);
    assert_eq!(outbox(store, tenant, "s-created").await.len(), 1);

    // Undoing it is announced once; a refused second undo announces nothing.
    store
        .create_webhook(
            tenant,
            &subscription("s-unmerged", &[EventType::PersonUnmerged]),
        )
        .await
        .expect("subscribe");
    let undo = |rule: &str| Unmerge {
        merge_id: "mm-ok".into(),
        reason: "two people".into(),
        actor: "conformance".into(),
        at: ts(12),
        rule_id: rule.into(),
    };
    let outcome = store.unmerge(tenant, undo("ka-1")).await.expect("unmerge");
    let again = store.unmerge(tenant, undo("ka-2")).await;
    assert!(matches!(again, Err(StoreError::Conflict(_))), "{again:?}");
    let unmerged = outbox(store, tenant, "s-unmerged").await;
    assert_eq!(unmerged.len(), 1, "{unmerged:?}");
    let payload: serde_json::Value = serde_json::from_str(&unmerged[0].1).expect("json");
    assert_eq!(payload["type"], "person.unmerged");
    assert_eq!(payload["data"]["merge_id"], "mm-ok");
    assert_eq!(payload["data"]["restored"], outcome.restored.as_str());
    assert_eq!(payload["data"]["survivor"], outcome.survivor.as_str());
    assert_eq!(payload["data"]["rule_id"], "ka-1");
    assert_eq!(outbox(store, tenant, "s-merged").await.len(), 1);
}

pub async fn claims_hand_out_each_endpoints_deliveries_one_at_a_time<S: Store>(store: &S) {
    let tenants = with_tenants(store, &["hook-b", "hook-c"]).await;
    let (tenant, other) = (&tenants[0], &tenants[1]);
    let settings = IdentitySettings::default();
    store
        .create_webhook(tenant, &subscription("s1", &[EventType::PersonCreated]))
        .await
        .expect("subscribe");
    let signals = (1..=3)
        .map(|n| signal(n, vec![external(&settings, n)]))
        .collect();
    store
        .ingest(tenant, &settings, signals)
        .await
        .expect("ingest");
    // After the signals' times: their deliveries are due.
    let now = ts(100);

    let taken = store
        .claim_webhook_deliveries(tenant, &claim("a", now))
        .await
        .expect("claim");
    assert_eq!(taken.len(), 1, "one in flight per endpoint");
    let first = taken[0].delivery.clone();
    assert_eq!(taken[0].secret_sealed, vec![1, 2, 3]);
    assert!(
        first.payload.contains("w00001"),
        "the oldest first: {}",
        first.payload
    );
    // Held by a: nobody else gets the endpoint, nor may record for it.
    assert!(
        store
            .claim_webhook_deliveries(tenant, &claim("b", now))
            .await
            .expect("claim")
            .is_empty()
    );
    assert!(
        store
            .claim_webhook_deliveries(other, &claim("b", now))
            .await
            .expect("claim")
            .is_empty()
    );
    let stolen = store
        .record_webhook_attempt(
            tenant,
            &first.delivery_id,
            attempt("b", &first.delivery_id, 1, now, AttemptNext::Delivered),
        )
        .await;
    assert!(matches!(stolen, Err(StoreError::Conflict(_))), "{stolen:?}");
    store
        .record_webhook_attempt(
            tenant,
            &first.delivery_id,
            attempt("a", &first.delivery_id, 1, now, AttemptNext::Delivered),
        )
        .await
        .expect("record");

    let second = store
        .claim_webhook_deliveries(tenant, &claim("b", now))
        .await
        .expect("claim");
    assert_eq!(second.len(), 1);
    let second = second[0].delivery.clone();
    assert!(second.payload.contains("w00002"), "{}", second.payload);
    let later = now + SignedDuration::from_hours(1);
    store
        .record_webhook_attempt(
            tenant,
            &second.delivery_id,
            attempt(
                "b",
                &second.delivery_id,
                1,
                now,
                AttemptNext::RetryAt(later),
            ),
        )
        .await
        .expect("record");
    // Not due yet, and the third waits behind it.
    assert!(
        store
            .claim_webhook_deliveries(tenant, &claim("b", now))
            .await
            .expect("claim")
            .is_empty()
    );
    let due = later + SignedDuration::from_secs(1);
    let again = store
        .claim_webhook_deliveries(tenant, &claim("c", due))
        .await
        .expect("claim");
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].delivery.delivery_id, second.delivery_id);
    assert_eq!(again[0].delivery.attempts, 1);
    // Its holder went silent: once the lease is over, another owner takes it.
    let after_lease = due + SignedDuration::from_secs(120);
    let retaken = store
        .claim_webhook_deliveries(tenant, &claim("d", after_lease))
        .await
        .expect("claim");
    assert_eq!(retaken.len(), 1);
    assert_eq!(retaken[0].delivery.delivery_id, second.delivery_id);

    // 410: the endpoint is disabled and nothing is handed out until it is enabled again.
    store
        .record_webhook_attempt(
            tenant,
            &second.delivery_id,
            attempt(
                "d",
                &second.delivery_id,
                2,
                after_lease,
                AttemptNext::Disable,
            ),
        )
        .await
        .expect("record");
    let disabled = store.get_webhook(tenant, "s1").await.expect("get");
    assert!(disabled.disabled_at.is_some());
    assert!(
        store
            .claim_webhook_deliveries(tenant, &claim("d", after_lease))
            .await
            .expect("claim")
            .is_empty()
    );
    store
        .set_webhook_disabled(tenant, "s1", None, after_lease)
        .await
        .expect("enable");
    let resumed = store
        .claim_webhook_deliveries(tenant, &claim("d", after_lease))
        .await
        .expect("claim");
    assert_eq!(resumed.len(), 1);
    assert_eq!(resumed[0].delivery.delivery_id, second.delivery_id);

    let log = store
        .list_webhook_deliveries(tenant, "s1", &PageRequest::first(10))
        .await
        .expect("log");
    let statuses: Vec<DeliveryStatus> = log.items.iter().map(|d| d.status).collect();
    assert_eq!(
        statuses,
        [
            DeliveryStatus::Pending,
            DeliveryStatus::Pending,
            DeliveryStatus::Delivered
        ]
    );
    let attempts = store
        .webhook_attempts(tenant, vec![second.delivery_id.clone()])
        .await
        .expect("attempts");
    assert_eq!(attempts.len(), 2, "the retry and the 410");

    // Deleting cancels what was pending; another tenant never sees any of it.
    store
        .delete_webhook(tenant, "s1", after_lease)
        .await
        .expect("delete");
    assert!(matches!(
        store.get_webhook(tenant, "s1").await,
        Err(StoreError::NotFound)
    ));
    assert!(
        store
            .claim_webhook_deliveries(tenant, &claim("e", after_lease))
            .await
            .expect("claim")
            .is_empty()
    );
    assert!(matches!(
        store.get_webhook(other, "s1").await,
        Err(StoreError::NotFound)
    ));
    assert!(
        store
            .list_webhooks(other, &PageRequest::first(10))
            .await
            .expect("list")
            .items
            .is_empty()
    );
}

pub async fn finished_deliveries_are_pruned_and_pending_ones_kept<S: Store>(store: &S) {
    let tenants = with_tenants(store, &["hook-prune", "hook-prune-other"]).await;
    let (tenant, other) = (&tenants[0], &tenants[1]);
    let settings = IdentitySettings::default();
    for t in [tenant, other] {
        store
            .create_webhook(t, &subscription("s1", &[EventType::PersonCreated]))
            .await
            .expect("subscribe");
        let signals = (1..=3)
            .map(|n| signal(n, vec![external(&settings, n)]))
            .collect();
        store.ingest(t, &settings, signals).await.expect("ingest");
    }
    let now = ts(100);
    // The first two are delivered an hour apart; the third stays pending.
    for (n, at) in [(1, now), (2, now + SignedDuration::from_hours(1))] {
        let taken = store
            .claim_webhook_deliveries(tenant, &claim("a", at))
            .await
            .expect("claim");
        let id = taken[0].delivery.delivery_id.clone();
        assert!(taken[0].delivery.payload.contains(&format!("w0000{n}")));
        store
            .record_webhook_attempt(
                tenant,
                &id,
                attempt("a", &id, 1, at, AttemptNext::Delivered),
            )
            .await
            .expect("record");
    }
    let ids = |page: Vec<(EventType, String)>| page.len();
    assert_eq!(ids(outbox(store, tenant, "s1").await), 3);

    // Before the first finished: nothing goes.
    let gone = store
        .prune_webhook_deliveries(tenant, now, 100)
        .await
        .expect("prune");
    assert_eq!(gone, 0);
    // Between the two: only the first, with its attempt.
    let first_id = store
        .list_webhook_deliveries(tenant, "s1", &PageRequest::first(10))
        .await
        .expect("deliveries")
        .items
        .last()
        .expect("oldest")
        .delivery_id
        .clone();
    let gone = store
        .prune_webhook_deliveries(tenant, now + SignedDuration::from_mins(30), 100)
        .await
        .expect("prune");
    assert_eq!(gone, 1);
    assert!(
        store
            .webhook_attempts(tenant, vec![first_id])
            .await
            .expect("attempts")
            .is_empty()
    );
    // Long after: the second goes too, the pending one stays, and so does the other tenant's.
    let gone = store
        .prune_webhook_deliveries(tenant, now + SignedDuration::from_hours(24 * 365), 100)
        .await
        .expect("prune");
    assert_eq!(gone, 1);
    let left = outbox(store, tenant, "s1").await;
    assert_eq!(left.len(), 1, "{left:?}");
    assert!(left[0].1.contains("w00003"), "{left:?}");
    assert_eq!(ids(outbox(store, other, "s1").await), 3);
}
