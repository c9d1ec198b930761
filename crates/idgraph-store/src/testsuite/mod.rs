//! The storage conformance suite: every case is written once here and run against every backend
//! through [`store_conformance_suite!`](crate::store_conformance_suite).

#![allow(
    clippy::unwrap_used,
    reason = "test code: a panic is how a case reports failure"
)]

use idgraph_core::auth::{KeyHash, Scopes};
use idgraph_core::identity::IdentifierKind;
use idgraph_core::tenancy::{Environment, TenantId, WorkspaceName};
use jiff::Timestamp;

mod compliance;
mod deletion;
mod imports;
mod resolution;
mod sealing;
mod unmerge;
mod webhooks;

pub use deletion::deleting_a_person_hides_it_tombstones_it_and_purges_it;
pub use sealing::resealing_moves_every_row_to_the_current_key_and_keeps_it_readable;
pub use unmerge::{
    merge_then_unmerge_gives_back_the_graph, unmerge_withdraws_grants_made_while_merged,
};
pub use webhooks::{
    claims_hand_out_each_endpoints_deliveries_one_at_a_time,
    finished_deliveries_are_pruned_and_pending_ones_kept,
    the_outbox_holds_committed_changes_someone_subscribed_to,
};

pub use compliance::{
    compliance_records_are_what_checks_read, many_addresses_get_their_own_facts,
    the_gate_agrees_with_a_reference_evaluator,
};
pub use imports::{
    import_jobs_list_newest_first_and_stay_in_their_tenant,
    import_jobs_progress_by_compare_and_set, new_job, signal_effects_are_read_back_by_message_id,
    stored_suppression_entries_are_found_by_id,
};
pub use resolution::{
    a_large_batch_resolves_as_small_ones_do, a_repeated_message_id_changes_nothing,
    batches_resolve_as_single_signals_do, concurrent_batches_get_their_own_outcomes,
    ingest_keeps_tenants_apart, known_identifiers_move_last_seen_across_the_group,
    replaying_the_signal_log_rebuilds_the_graph, timelines_page_across_merged_persons,
};

use crate::{ApiKeyRecord, IdentityNodeRow, PageRequest, Store, StoreError, Tenant, Workspace};

/// Instantiates every conformance case as a `#[tokio::test]`. `$make` is an async expression
/// giving `Option<(store, guard)>`; `None` means the backend is unavailable here and the
/// factory has already said so loudly.
#[macro_export]
macro_rules! store_conformance_suite {
    ($make:expr) => {
        $crate::store_conformance_suite!(@cases $make;
            schema_is_fully_migrated,
            tenants_round_trip,
            workspaces_are_scoped_by_tenant,
            workspaces_page_by_name,
            api_keys_round_trip_and_revoke,
            api_keys_do_not_cross_tenants,
            master_key_is_replaced_not_duplicated,
            identity_nodes_round_trip,
            identity_nodes_do_not_cross_tenants,
            duplicate_identity_node_is_a_conflict_and_changes_nothing,
            timestamps_keep_microseconds,
            concurrent_writes_fail_alone,
            replaying_the_signal_log_rebuilds_the_graph,
            batches_resolve_as_single_signals_do,
            a_large_batch_resolves_as_small_ones_do,
            concurrent_batches_get_their_own_outcomes,
            known_identifiers_move_last_seen_across_the_group,
            ingest_keeps_tenants_apart,
            a_repeated_message_id_changes_nothing,
            timelines_page_across_merged_persons,
            compliance_records_are_what_checks_read,
            many_addresses_get_their_own_facts,
            the_gate_agrees_with_a_reference_evaluator,
            idempotency_keys_claim_once_and_replay,
            audit_entries_page_newest_first,
            merge_then_unmerge_gives_back_the_graph,
            unmerge_withdraws_grants_made_while_merged,
            import_jobs_progress_by_compare_and_set,
            import_jobs_list_newest_first_and_stay_in_their_tenant,
            signal_effects_are_read_back_by_message_id,
            stored_suppression_entries_are_found_by_id,
            deleting_a_person_hides_it_tombstones_it_and_purges_it,
            the_outbox_holds_committed_changes_someone_subscribed_to,
            claims_hand_out_each_endpoints_deliveries_one_at_a_time,
            finished_deliveries_are_pruned_and_pending_ones_kept,
            resealing_moves_every_row_to_the_current_key_and_keeps_it_readable,
        );
    };
    (@cases $make:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let Some((store, _guard)) = $make.await else { return };
                // Every case runs with PII sealed, as a server with a data key does.
                $crate::Store::vault_slot(&store)
                    .set($crate::vault::Vault::random().expect("random keys"));
                $crate::testsuite::$case(&store).await;
                $crate::Store::close(&store).await;
            }
        )*
    };
}

fn ts(seconds: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + seconds).expect("in range")
}

fn tenant(id: &str) -> Tenant {
    Tenant {
        id: TenantId::parse(id).expect("valid"),
        name: format!("Tenant {id}"),
        created_at: ts(0),
    }
}

async fn with_tenants<S: Store>(store: &S, ids: &[&str]) -> Vec<TenantId> {
    let mut out = Vec::new();
    for id in ids {
        store
            .create_tenant(&tenant(id))
            .await
            .expect("create tenant");
        out.push(TenantId::parse(id).expect("valid"));
    }
    out
}

fn workspace(tenant_id: &TenantId, name: &str, environment: Environment) -> Workspace {
    Workspace {
        tenant_id: tenant_id.clone(),
        id: format!("ws-{tenant_id}-{name}"),
        name: WorkspaceName::parse(name).expect("valid"),
        environment,
        created_at: ts(1),
    }
}

fn api_key(tenant_id: &TenantId, key_id: &str, scopes: &[&str]) -> ApiKeyRecord {
    ApiKeyRecord {
        tenant_id: tenant_id.clone(),
        key_id: key_id.to_owned(),
        name: format!("key {key_id}"),
        hash: KeyHash::of(&format!("secret-of-{tenant_id}-{key_id}")),
        scopes: Scopes::parse(scopes.iter().copied()).expect("valid"),
        workspace: Some(WorkspaceName::default_workspace()),
        rate_limit_per_sec: Some(100),
        is_master: false,
        created_at: ts(2),
        revoked_at: None,
    }
}

fn node(kind: &str, value: &str, person_id: &str) -> IdentityNodeRow {
    IdentityNodeRow {
        kind: IdentifierKind::parse(kind).expect("valid"),
        value: value.to_owned(),
        person_id: person_id.to_owned(),
        source: "test".to_owned(),
        confidence: 0.75,
        first_seen: ts(10),
        last_seen: ts(20),
        signal_id: Some(format!("sig-{value}")),
    }
}

pub async fn schema_is_fully_migrated<S: Store>(store: &S) {
    store.ping().await.expect("ping");
    assert!(store.schema_version().await.expect("version") >= 1);
}

pub async fn tenants_round_trip<S: Store>(store: &S) {
    let ids = with_tenants(store, &["acme", "globex"]).await;
    assert_eq!(
        store.get_tenant(&ids[0]).await.expect("get"),
        tenant("acme")
    );
    assert_eq!(
        store.create_tenant(&tenant("acme")).await,
        Err(StoreError::Conflict("tenant acme already exists".into()))
    );
    let missing = TenantId::parse("nobody").expect("valid");
    assert_eq!(store.get_tenant(&missing).await, Err(StoreError::NotFound));
    let page = store
        .list_tenants(&PageRequest::first(10))
        .await
        .expect("list");
    let listed: Vec<&str> = page.items.iter().map(|t| t.id.as_str()).collect();
    assert!(
        listed.contains(&"acme") && listed.contains(&"globex"),
        "{listed:?}"
    );
}

pub async fn workspaces_are_scoped_by_tenant<S: Store>(store: &S) {
    let ids = with_tenants(store, &["t-a", "t-b"]).await;
    let (a, b) = (&ids[0], &ids[1]);
    store
        .create_workspace(&workspace(a, "shop", Environment::Prod))
        .await
        .expect("create");
    // The same name in another tenant is a different workspace.
    store
        .create_workspace(&workspace(b, "shop", Environment::Sandbox))
        .await
        .expect("create");
    let err = store
        .create_workspace(&workspace(a, "shop", Environment::Test))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");

    let name = WorkspaceName::parse("shop").expect("valid");
    let in_a = store.get_workspace(a, &name).await.expect("get");
    let in_b = store.get_workspace(b, &name).await.expect("get");
    assert_eq!(in_a, workspace(a, "shop", Environment::Prod));
    assert_eq!(in_b.environment, Environment::Sandbox);
    let only_in_a = WorkspaceName::parse("nowhere").expect("valid");
    assert_eq!(
        store.get_workspace(a, &only_in_a).await,
        Err(StoreError::NotFound)
    );
}

pub async fn workspaces_page_by_name<S: Store>(store: &S) {
    let ids = with_tenants(store, &["pager"]).await;
    let names = ["e", "a", "d", "b", "c"];
    for name in names {
        store
            .create_workspace(&workspace(&ids[0], name, Environment::Test))
            .await
            .expect("create");
    }
    let mut seen = Vec::new();
    let mut request = PageRequest::first(2);
    loop {
        let page = store
            .list_workspaces(&ids[0], &request)
            .await
            .expect("list");
        assert!(page.items.len() <= 2);
        seen.extend(page.items.iter().map(|w| w.name.to_string()));
        match page.next_cursor {
            Some(cursor) => request.after = Some(cursor),
            None => break,
        }
    }
    assert_eq!(seen, ["a", "b", "c", "d", "e"]);
}

pub async fn api_keys_round_trip_and_revoke<S: Store>(store: &S) {
    let ids = with_tenants(store, &["keys"]).await;
    let key = api_key(&ids[0], "01k1", &["events:write"]);
    store.insert_api_key(&key).await.expect("insert");
    assert!(matches!(
        store.insert_api_key(&key).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(store.get_api_key(&ids[0], "01k1").await.expect("get"), key);

    store
        .revoke_api_key(&ids[0], "01k1", ts(5))
        .await
        .expect("revoke");
    let revoked = store.get_api_key(&ids[0], "01k1").await.expect("get");
    assert_eq!(revoked.revoked_at, Some(ts(5)));
    // Revoking twice, or revoking nothing, is NotFound.
    assert_eq!(
        store.revoke_api_key(&ids[0], "01k1", ts(6)).await,
        Err(StoreError::NotFound)
    );
    assert_eq!(
        store.revoke_api_key(&ids[0], "nope", ts(6)).await,
        Err(StoreError::NotFound)
    );

    let mut unbound = api_key(&ids[0], "01k2", &["admin"]);
    unbound.workspace = None;
    unbound.rate_limit_per_sec = None;
    store.insert_api_key(&unbound).await.expect("insert");
    let page = store
        .list_api_keys(&ids[0], &PageRequest::first(10))
        .await
        .expect("list");
    assert_eq!(page.items, vec![revoked, unbound]);
    assert_eq!(page.next_cursor, None);
}

pub async fn api_keys_do_not_cross_tenants<S: Store>(store: &S) {
    let ids = with_tenants(store, &["owner", "intruder"]).await;
    store
        .insert_api_key(&api_key(&ids[0], "01k1", &["admin"]))
        .await
        .expect("insert");
    assert_eq!(
        store.get_api_key(&ids[1], "01k1").await,
        Err(StoreError::NotFound)
    );
    assert_eq!(
        store.revoke_api_key(&ids[1], "01k1", ts(3)).await,
        Err(StoreError::NotFound)
    );
    let page = store
        .list_api_keys(&ids[1], &PageRequest::first(10))
        .await
        .expect("list");
    assert!(page.items.is_empty());
    assert_eq!(
        store
            .get_api_key(&ids[0], "01k1")
            .await
            .expect("get")
            .revoked_at,
        None
    );
}

pub async fn master_key_is_replaced_not_duplicated<S: Store>(store: &S) {
    let ids = with_tenants(store, &[TenantId::DEFAULT]).await;
    let mut master = api_key(&ids[0], "master", &["admin"]);
    master.is_master = true;
    master.hash = KeyHash::of("first master key value");
    store.put_master_key(&master).await.expect("put");
    master.hash = KeyHash::of("second master key value");
    store.put_master_key(&master).await.expect("put");
    assert_eq!(
        store
            .find_master_key(&KeyHash::of("second master key value"))
            .await,
        Ok(master)
    );
    assert_eq!(
        store
            .find_master_key(&KeyHash::of("first master key value"))
            .await,
        Err(StoreError::NotFound)
    );
    let page = store
        .list_api_keys(&ids[0], &PageRequest::first(10))
        .await
        .expect("list");
    assert_eq!(page.items.len(), 1);
}

pub async fn identity_nodes_round_trip<S: Store>(store: &S) {
    let ids = with_tenants(store, &["nodes"]).await;
    let rows = vec![
        node("email", "ann@example.com", "p1"),
        node("phone", "+14155552671", "p1"),
        // A shared value may link several persons.
        node("phone", "+14155550000", "p1"),
        node("phone", "+14155550000", "p2"),
    ];
    store
        .insert_identity_nodes(&ids[0], rows.clone())
        .await
        .expect("insert");
    assert_eq!(store.count_identity_nodes(&ids[0]).await, Ok(4));
    let email = IdentifierKind::parse("email").expect("valid");
    let found = store
        .find_identity_nodes(&ids[0], &email, "ann@example.com")
        .await
        .expect("find");
    assert_eq!(found, vec![rows[0].clone()]);
    let phone = IdentifierKind::parse("phone").expect("valid");
    let mut shared = store
        .find_identity_nodes(&ids[0], &phone, "+14155550000")
        .await
        .expect("find");
    shared.sort_by(|x, y| x.person_id.cmp(&y.person_id));
    assert_eq!(shared, vec![rows[2].clone(), rows[3].clone()]);
    assert!(
        store
            .find_identity_nodes(&ids[0], &email, "bob@example.com")
            .await
            .expect("find")
            .is_empty()
    );
}

pub async fn identity_nodes_do_not_cross_tenants<S: Store>(store: &S) {
    let ids = with_tenants(store, &["n-a", "n-b"]).await;
    store
        .insert_identity_nodes(&ids[0], vec![node("email", "x@example.com", "p1")])
        .await
        .expect("insert");
    let email = IdentifierKind::parse("email").expect("valid");
    assert!(
        store
            .find_identity_nodes(&ids[1], &email, "x@example.com")
            .await
            .expect("find")
            .is_empty()
    );
    assert_eq!(store.count_identity_nodes(&ids[1]).await, Ok(0));
    // The same node in another tenant is not a conflict.
    store
        .insert_identity_nodes(&ids[1], vec![node("email", "x@example.com", "p1")])
        .await
        .expect("insert");
}

pub async fn duplicate_identity_node_is_a_conflict_and_changes_nothing<S: Store>(store: &S) {
    let ids = with_tenants(store, &["dups"]).await;
    store
        .insert_identity_nodes(&ids[0], vec![node("email", "a@example.com", "p1")])
        .await
        .expect("insert");
    let batch = vec![
        node("email", "b@example.com", "p2"),
        node("email", "a@example.com", "p1"),
    ];
    let err = store
        .insert_identity_nodes(&ids[0], batch)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    // The whole batch is one transaction: b@ must not have been kept.
    assert_eq!(store.count_identity_nodes(&ids[0]).await, Ok(1));
}

pub async fn timestamps_keep_microseconds<S: Store>(store: &S) {
    let ids = with_tenants(store, &["clock"]).await;
    let mut row = node("anonymous_id", "anon-1", "p1");
    row.first_seen = Timestamp::from_microsecond(1_800_000_000_123_456).expect("in range");
    row.last_seen = Timestamp::from_microsecond(1_800_000_001_654_321).expect("in range");
    store
        .insert_identity_nodes(&ids[0], vec![row.clone()])
        .await
        .expect("insert");
    let kind = IdentifierKind::parse("anonymous_id").expect("valid");
    assert_eq!(
        store
            .find_identity_nodes(&ids[0], &kind, "anon-1")
            .await
            .expect("find"),
        vec![row]
    );
}

/// Writes that run at the same time stay atomic one by one: a failing write leaves nothing
/// behind and takes no other write down with it (SQLite commits concurrent writes together).
pub async fn concurrent_writes_fail_alone<S: Store>(store: &S) {
    let ids = with_tenants(store, &["together"]).await;
    store
        .insert_identity_nodes(&ids[0], vec![node("email", "taken@example.com", "p0")])
        .await
        .expect("insert");
    let writes = (0..24).map(|n| {
        let (store, tenant) = (store.clone(), ids[0].clone());
        tokio::spawn(async move {
            let mut rows = vec![node(
                "email",
                &format!("w{n}@example.com"),
                &format!("p{n}"),
            )];
            if n % 3 == 0 {
                // Every third write also repeats a stored node, so the whole write must fail.
                rows.push(node("email", "taken@example.com", "p0"));
            }
            store.insert_identity_nodes(&tenant, rows).await
        })
    });
    let mut failed = 0;
    for (n, write) in writes.collect::<Vec<_>>().into_iter().enumerate() {
        let result = write.await.expect("task");
        if n % 3 == 0 {
            assert!(
                matches!(result, Err(StoreError::Conflict(_))),
                "{n}: {result:?}"
            );
            failed += 1;
        } else {
            assert_eq!(result, Ok(()), "{n}");
        }
    }
    assert_eq!(failed, 8);
    assert_eq!(store.count_identity_nodes(&ids[0]).await, Ok(1 + 16));
    let email = IdentifierKind::parse("email").expect("valid");
    let left = store
        .find_identity_nodes(&ids[0], &email, "w0@example.com")
        .await
        .expect("find");
    assert!(left.is_empty(), "a failed write left a row behind");
}

/// Idempotency keys: one claim at a time, replay after completion, refusal of another request
/// under the same key, and forgetting after the retention period or an abandoned claim.
pub async fn idempotency_keys_claim_once_and_replay<S: Store>(store: &S) {
    use crate::{IdempotencyBegin, IdempotencyRequest, StoredResponse};
    let ids = with_tenants(store, &["idem"]).await;
    let request = |key: &str, fingerprint: &str, at: i64| IdempotencyRequest {
        tenant_id: ids[0].clone(),
        scope: "scope-a".into(),
        key: key.into(),
        fingerprint: fingerprint.into(),
        at: ts(at),
        retention: jiff::SignedDuration::from_hours(24),
        pending_timeout: jiff::SignedDuration::from_mins(5),
    };
    let first = request("k1", "f1", 0);
    assert_eq!(
        store.idempotency_begin(&first).await,
        Ok(IdempotencyBegin::Run)
    );
    assert_eq!(
        store.idempotency_begin(&first).await,
        Ok(IdempotencyBegin::InProgress)
    );
    assert_eq!(
        store.idempotency_begin(&request("k1", "other", 1)).await,
        Ok(IdempotencyBegin::Mismatch)
    );
    let response = StoredResponse {
        status: 201,
        content_type: Some("application/json".into()),
        body: br#"{"id":"x"}"#.to_vec(),
    };
    store
        .idempotency_finish(&first, Some(response.clone()))
        .await
        .expect("finish");
    assert_eq!(
        store.idempotency_begin(&request("k1", "f1", 2)).await,
        Ok(IdempotencyBegin::Replay(response))
    );
    // Another credential's key of the same name is another key.
    let mut other_scope = request("k1", "f9", 3);
    other_scope.scope = "scope-b".into();
    assert_eq!(
        store.idempotency_begin(&other_scope).await,
        Ok(IdempotencyBegin::Run)
    );
    // After the retention period the key is free again.
    assert_eq!(
        store
            .idempotency_begin(&request("k1", "f2", 25 * 3600))
            .await,
        Ok(IdempotencyBegin::Run)
    );
    // A claim whose process died is taken over after the pending timeout.
    let stale = request("k2", "f1", 100);
    assert_eq!(
        store.idempotency_begin(&stale).await,
        Ok(IdempotencyBegin::Run)
    );
    assert_eq!(
        store
            .idempotency_begin(&request("k2", "f1", 100 + 60))
            .await,
        Ok(IdempotencyBegin::InProgress)
    );
    assert_eq!(
        store
            .idempotency_begin(&request("k2", "f1", 100 + 400))
            .await,
        Ok(IdempotencyBegin::Run)
    );
    // A released claim (the request failed retryably) leaves nothing behind.
    let released = request("k3", "f1", 200);
    assert_eq!(
        store.idempotency_begin(&released).await,
        Ok(IdempotencyBegin::Run)
    );
    store
        .idempotency_finish(&released, None)
        .await
        .expect("release");
    assert_eq!(
        store.idempotency_begin(&request("k3", "f2", 201)).await,
        Ok(IdempotencyBegin::Run)
    );
}

/// Audit entries are kept per tenant and paged newest first.
pub async fn audit_entries_page_newest_first<S: Store>(store: &S) {
    use crate::AuditEntry;
    let ids = with_tenants(store, &["audit-a", "audit-b"]).await;
    for n in 0..5 {
        store
            .append_audit(vec![AuditEntry {
                entry_id: format!("e{n}"),
                tenant_id: ids[n % 2].clone(),
                at: ts(i64::try_from(n).expect("small")),
                actor: "k1".into(),
                actor_tenant: ids[0].clone(),
                on_behalf_of: (n % 2 == 1).then(|| ids[1].clone()),
                action: "GET /api/v1/whoami".into(),
                object: None,
                status: 200,
                latency_us: 1500,
            }])
            .await
            .expect("append");
    }
    let page = store
        .list_audit(&ids[0], &PageRequest::first(2))
        .await
        .expect("list");
    let seen: Vec<&str> = page.items.iter().map(|e| e.entry_id.as_str()).collect();
    assert_eq!(seen, ["e4", "e2"]);
    let rest = store
        .list_audit(
            &ids[0],
            &PageRequest {
                limit: 2,
                after: page.next_cursor,
            },
        )
        .await
        .expect("list");
    assert_eq!(rest.items.len(), 1);
    assert_eq!(rest.next_cursor, None);
    let other = store
        .list_audit(&ids[1], &PageRequest::first(10))
        .await
        .expect("list");
    assert_eq!(other.items.len(), 2);
    assert_eq!(other.items[0].on_behalf_of.as_ref(), Some(&ids[1]));
    assert_eq!(other.items[0].latency_us, 1500);
}
