//! The `Store` implementation: one short SQL statement set per method, always filtered by tenant.

use std::sync::Arc;

use idgraph_core::auth::KeyHash;
use idgraph_core::identity::{Identifier, IdentifierKind, IdentitySettings};
use idgraph_core::tenancy::{TenantId, WorkspaceName};
use idgraph_core::webhooks::EventType;
use idgraph_store::{
    AddressFacts, ApiKeyRecord, AttemptRecord, AuditEntry, ClaimedDelivery, ComplianceWrites,
    ConflictRow, ConsentEventRow, DeletionOutcome, DeletionRequest, DeliveryAttempt, DeliveryClaim,
    FactsQuery, IdempotencyBegin, IdempotencyRequest, IdentityNodeRow, ImportJob, IngestOutcome,
    JobMapping, KeepApartRule, LandedRow, LoggedSignal, ManualMerge, MergeRow, Page, PageRequest,
    PersonProfile, PersonRow, PurgeOutcome, RecordedChunk, RowOutcome, SignalEffects, SignalRecord,
    Store, StoreError, StoreResult, StoredResponse, SuppressionRow, Tenant, TenantStats,
    TimelineEvent, Unmerge, UnmergeOutcome, WebhookDelivery, WebhookSubscription, Workspace,
    compliance_events, import_completed_event, merge_event, unmerge_event,
};
use jiff::Timestamp;
use rusqlite::{OptionalExtension, params};

use crate::codec::{self, API_KEY_COLUMNS, map_error, micros};
use crate::nodes::{NODE_COLUMNS, NODE_FROM};
use crate::{
    SqliteStore, compliance, deletion, idempotency, imports, merges, reads, resolve, webhooks,
};

/// Turns a unique-constraint failure into a conflict message a user can read.
fn conflict_as(message: String) -> impl FnOnce(StoreError) -> StoreError {
    move |e| match e {
        StoreError::Conflict(_) => StoreError::Conflict(message),
        other => other,
    }
}

/// Signals of one `ingest` call sealed before its job is queued; the rest are sealed while the
/// writer resolves these. A Segment client's batch (100 messages by default) is sealed whole
/// first, so the writer never waits on it; an import's chunk of thousands overlaps.
const SEALED_BEFORE_QUEUEING: usize = 512;

fn overfetch(page: &PageRequest) -> i64 {
    i64::from(page.limit) + 1
}

impl Store for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn ping(&self) -> StoreResult<()> {
        self.read(|conn| {
            conn.query_row("SELECT 1", [], |_| Ok(()))
                .map_err(map_error)
        })
        .await
    }

    async fn schema_version(&self) -> StoreResult<i64> {
        self.read(|conn| {
            conn.query_row(
                "SELECT COALESCE(MAX(version), 0) FROM idgraph_migrations",
                [],
                |r| r.get(0),
            )
            .map_err(map_error)
        })
        .await
    }

    async fn close(&self) {
        self.shutdown().await;
    }

    fn vault_slot(&self) -> &idgraph_store::vault::VaultSlot {
        self.vault_slot_inner()
    }

    async fn reseal(&self, tenant_id: &TenantId, limit: u32) -> StoreResult<u64> {
        let (tenant, vault) = (tenant_id.clone(), self.vault());
        let done = self
            .write(move |tx| crate::reseal::batch(tx, &vault, tenant.as_str(), limit))
            .await?;
        let left = u64::from(limit).saturating_sub(done);
        if left == 0 {
            return Ok(done);
        }
        // What the batch left of its budget goes to the landed-rows file (decision 0022).
        let (tenant, vault) = (tenant_id.clone(), self.vault());
        let landed = self
            .write_landed(move |tx| crate::reseal::landed_batch(tx, &vault, tenant.as_str(), left))
            .await?;
        Ok(done + landed)
    }

    async fn create_tenant(&self, tenant: &Tenant) -> StoreResult<()> {
        let tenant = tenant.clone();
        let message = format!("tenant {} already exists", tenant.id);
        self.write(move |tx| {
            tx.prepare_cached(
                "INSERT INTO tenants (tenant_id, name, created_at) VALUES (?1, ?2, ?3)",
            )
            .and_then(|mut s| {
                s.execute(params![
                    tenant.id.as_str(),
                    tenant.name,
                    micros(tenant.created_at)
                ])
            })
            .map_err(map_error)?;
            Ok(())
        })
        .await
        .map_err(conflict_as(message))
    }

    async fn get_tenant(&self, tenant_id: &TenantId) -> StoreResult<Tenant> {
        let tenant_id = tenant_id.clone();
        self.read(move |conn| {
            conn.prepare_cached(
                "SELECT tenant_id, name, created_at FROM tenants WHERE tenant_id = ?1",
            )
            .and_then(|mut s| s.query_row([tenant_id.as_str()], codec::tenant))
            .map_err(map_error)
        })
        .await
    }

    async fn list_tenants(&self, page: &PageRequest) -> StoreResult<Page<Tenant>> {
        let page = page.clone();
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT tenant_id, name, created_at FROM tenants
                     WHERE tenant_id > ?1 ORDER BY tenant_id LIMIT ?2",
                )
                .map_err(map_error)?;
            let after = page.after.clone().unwrap_or_default();
            let rows = stmt
                .query_map(params![after, overfetch(&page)], codec::tenant)
                .and_then(Iterator::collect::<rusqlite::Result<Vec<_>>>)
                .map_err(map_error)?;
            Ok(Page::from_overfetch(rows, page.limit, |t| t.id.to_string()))
        })
        .await
    }

    async fn create_workspace(&self, workspace: &Workspace) -> StoreResult<()> {
        let ws = workspace.clone();
        let message = format!("workspace {} already exists", ws.name);
        self.write(move |tx| {
            tx.prepare_cached(
                "INSERT INTO workspaces (tenant_id, name, workspace_id, environment, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )
            .and_then(|mut s| {
                s.execute(params![
                    ws.tenant_id.as_str(),
                    ws.name.as_str(),
                    ws.id,
                    ws.environment.as_str(),
                    micros(ws.created_at)
                ])
            })
            .map_err(map_error)?;
            Ok(())
        })
        .await
        .map_err(conflict_as(message))
    }

    async fn get_workspace(
        &self,
        tenant_id: &TenantId,
        name: &WorkspaceName,
    ) -> StoreResult<Workspace> {
        let (tenant_id, name) = (tenant_id.clone(), name.clone());
        self.read(move |conn| {
            conn.prepare_cached(
                "SELECT tenant_id, name, workspace_id, environment, created_at FROM workspaces
                 WHERE tenant_id = ?1 AND name = ?2",
            )
            .and_then(|mut s| s.query_row([tenant_id.as_str(), name.as_str()], codec::workspace))
            .map_err(map_error)
        })
        .await
    }

    async fn list_workspaces(
        &self,
        tenant_id: &TenantId,
        page: &PageRequest,
    ) -> StoreResult<Page<Workspace>> {
        let (tenant_id, page) = (tenant_id.clone(), page.clone());
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT tenant_id, name, workspace_id, environment, created_at FROM workspaces
                     WHERE tenant_id = ?1 AND name > ?2 ORDER BY name LIMIT ?3",
                )
                .map_err(map_error)?;
            let after = page.after.clone().unwrap_or_default();
            let rows = stmt
                .query_map(
                    params![tenant_id.as_str(), after, overfetch(&page)],
                    codec::workspace,
                )
                .and_then(Iterator::collect::<rusqlite::Result<Vec<_>>>)
                .map_err(map_error)?;
            Ok(Page::from_overfetch(rows, page.limit, |w| {
                w.name.to_string()
            }))
        })
        .await
    }

    async fn insert_api_key(&self, key: &ApiKeyRecord) -> StoreResult<()> {
        let key = key.clone();
        let message = format!("key {} already exists", key.key_id);
        self.write(move |tx| insert_key(tx, &key, false))
            .await
            .map_err(conflict_as(message))
    }

    async fn put_master_key(&self, key: &ApiKeyRecord) -> StoreResult<()> {
        let key = key.clone();
        self.write(move |tx| insert_key(tx, &key, true)).await
    }

    async fn get_api_key(&self, tenant_id: &TenantId, key_id: &str) -> StoreResult<ApiKeyRecord> {
        let (tenant_id, key_id) = (tenant_id.clone(), key_id.to_owned());
        self.read(move |conn| {
            conn.prepare_cached(&format!(
                "SELECT {API_KEY_COLUMNS} FROM api_keys WHERE tenant_id = ?1 AND key_id = ?2"
            ))
            .and_then(|mut s| s.query_row([tenant_id.as_str(), key_id.as_str()], codec::api_key))
            .map_err(map_error)
        })
        .await
    }

    async fn list_api_keys(
        &self,
        tenant_id: &TenantId,
        page: &PageRequest,
    ) -> StoreResult<Page<ApiKeyRecord>> {
        let (tenant_id, page) = (tenant_id.clone(), page.clone());
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached(&format!(
                    "SELECT {API_KEY_COLUMNS} FROM api_keys
                     WHERE tenant_id = ?1 AND key_id > ?2 ORDER BY key_id LIMIT ?3"
                ))
                .map_err(map_error)?;
            let after = page.after.clone().unwrap_or_default();
            let rows = stmt
                .query_map(
                    params![tenant_id.as_str(), after, overfetch(&page)],
                    codec::api_key,
                )
                .and_then(Iterator::collect::<rusqlite::Result<Vec<_>>>)
                .map_err(map_error)?;
            Ok(Page::from_overfetch(rows, page.limit, |k| k.key_id.clone()))
        })
        .await
    }

    async fn revoke_api_key(
        &self,
        tenant_id: &TenantId,
        key_id: &str,
        at: Timestamp,
    ) -> StoreResult<()> {
        let (tenant_id, key_id) = (tenant_id.clone(), key_id.to_owned());
        self.write(move |tx| {
            let changed = tx
                .prepare_cached(
                    "UPDATE api_keys SET revoked_at = ?3
                     WHERE tenant_id = ?1 AND key_id = ?2 AND revoked_at IS NULL",
                )
                .and_then(|mut s| s.execute(params![tenant_id.as_str(), key_id, micros(at)]))
                .map_err(map_error)?;
            if changed == 0 {
                Err(StoreError::NotFound)
            } else {
                Ok(())
            }
        })
        .await
    }

    async fn find_master_key(&self, hash: &KeyHash) -> StoreResult<ApiKeyRecord> {
        let hash = *hash;
        self.read(move |conn| {
            conn.prepare_cached(&format!(
                "SELECT {API_KEY_COLUMNS} FROM api_keys
                 WHERE tenant_id = ?1 AND is_master = 1 AND key_hash = ?2"
            ))
            .and_then(|mut s| {
                s.query_row(
                    params![TenantId::DEFAULT, hash.0.as_slice()],
                    codec::api_key,
                )
            })
            .map_err(map_error)
        })
        .await
    }

    async fn insert_identity_nodes(
        &self,
        tenant_id: &TenantId,
        rows: Vec<IdentityNodeRow>,
    ) -> StoreResult<()> {
        let (tenant_id, vault) = (tenant_id.clone(), self.vault());
        self.write(move |tx| insert_nodes(tx, &vault, &tenant_id, &rows))
            .await
    }

    async fn find_identity_nodes(
        &self,
        tenant_id: &TenantId,
        kind: &IdentifierKind,
        value: &str,
    ) -> StoreResult<Vec<IdentityNodeRow>> {
        let vault = self.vault();
        let (tenant_id, kind) = (tenant_id.clone(), kind.clone());
        let index = vault.index(tenant_id.as_str(), kind.as_str(), value);
        let tenant = tenant_id.clone();
        let nodes = self
            .read(move |conn| {
                let mut stmt = conn
                    .prepare_cached(&format!(
                        "SELECT {NODE_COLUMNS} FROM {NODE_FROM}
                     WHERE n.tenant_id = ?1 AND n.kind = ?2 AND n.value = ?3 ORDER BY n.person_id"
                    ))
                    .map_err(map_error)?;
                stmt.query_map(
                    [tenant.as_str(), kind.as_str(), index.as_str()],
                    codec::identity_node,
                )
                .and_then(Iterator::collect)
                .map_err(map_error)
            })
            .await?;
        vault.open_nodes(tenant_id.as_str(), nodes)
    }

    async fn count_identity_nodes(&self, tenant_id: &TenantId) -> StoreResult<u64> {
        let tenant_id = tenant_id.clone();
        self.read(move |conn| {
            conn.prepare_cached("SELECT COUNT(*) FROM identity_nodes WHERE tenant_id = ?1")
                .and_then(|mut s| s.query_row([tenant_id.as_str()], |r| r.get::<_, i64>(0)))
                .map(|n| n.unsigned_abs())
                .map_err(map_error)
        })
        .await
    }

    async fn ingest(
        &self,
        tenant_id: &TenantId,
        settings: &IdentitySettings,
        signals: Vec<SignalRecord>,
    ) -> StoreResult<Vec<IngestOutcome>> {
        self.ingest_signals(tenant_id, settings, signals, true)
            .await
    }

    async fn ingest_import_chunk(
        &self,
        tenant_id: &TenantId,
        settings: &IdentitySettings,
        signals: Vec<SignalRecord>,
    ) -> StoreResult<Vec<IngestOutcome>> {
        self.ingest_signals(tenant_id, settings, signals, false)
            .await
    }

    async fn lookup_person(
        &self,
        tenant_id: &TenantId,
        identifier: &Identifier,
    ) -> StoreResult<Option<String>> {
        let (tenant_id, identifier) = (tenant_id.clone(), identifier.clone());
        let index = self.vault().index(
            tenant_id.as_str(),
            identifier.kind().as_str(),
            identifier.value(),
        );
        self.read(move |conn| reads::lookup(conn, tenant_id.as_str(), &identifier, &index))
            .await
    }

    async fn get_person(&self, tenant_id: &TenantId, person_id: &str) -> StoreResult<PersonRow> {
        let (tenant_id, person_id) = (tenant_id.clone(), person_id.to_owned());
        self.read(move |conn| reads::person(conn, tenant_id.as_str(), &person_id))
            .await
    }

    async fn person_profile(
        &self,
        tenant_id: &TenantId,
        person_id: &str,
    ) -> StoreResult<PersonProfile> {
        let (tenant_id, person_id) = (tenant_id.clone(), person_id.to_owned());
        let tenant = tenant_id.clone();
        let (mut profile, traits) = self
            .read(move |conn| reads::profile(conn, tenant.as_str(), &person_id))
            .await?;
        let vault = self.vault();
        profile.identifiers =
            vault.open_nodes(tenant_id.as_str(), std::mem::take(&mut profile.identifiers))?;
        profile.traits = reads::open_trait_sets(&vault, tenant_id.as_str(), traits)?;
        Ok(profile)
    }

    async fn timeline(
        &self,
        tenant_id: &TenantId,
        person_id: &str,
        kind: Option<&str>,
        page: &PageRequest,
    ) -> StoreResult<Page<TimelineEvent>> {
        let (tenant_id, person_id, kind, page) = (
            tenant_id.clone(),
            person_id.to_owned(),
            kind.map(str::to_owned),
            page.clone(),
        );
        let tenant = tenant_id.clone();
        let mut events = self
            .read(move |conn| {
                reads::timeline(conn, tenant.as_str(), &person_id, kind.as_deref(), &page)
            })
            .await?;
        self.vault()
            .open_timeline(tenant_id.as_str(), &mut events.items)?;
        Ok(events)
    }

    async fn merges_of(
        &self,
        tenant_id: &TenantId,
        person_id: &str,
    ) -> StoreResult<(Vec<MergeRow>, Vec<ConflictRow>)> {
        let (tenant_id, person_id) = (tenant_id.clone(), person_id.to_owned());
        let vault = self.vault();
        self.read(move |conn| reads::merges_of(conn, &vault, tenant_id.as_str(), &person_id))
            .await
    }

    async fn signal_log(
        &self,
        tenant_id: &TenantId,
        after: i64,
        limit: u32,
    ) -> StoreResult<Vec<LoggedSignal>> {
        let (tenant_id, vault) = (tenant_id.clone(), self.vault());
        self.read(move |conn| reads::signal_log(conn, &vault, tenant_id.as_str(), after, limit))
            .await
    }

    async fn record_compliance(
        &self,
        tenant_id: &TenantId,
        writes: ComplianceWrites,
    ) -> StoreResult<()> {
        let (tenant_id, vault) = (tenant_id.clone(), self.vault());
        // Retriable: recording writes nothing but its transaction's rows.
        self.write_retriable(move |tx| {
            let subscribers = webhooks::subscribers(tx, tenant_id.as_str())?;
            let events = compliance_events(&subscribers, &writes);
            compliance::record(tx, &vault, &tenant_id, &writes)?;
            webhooks::enqueue(tx, &vault, tenant_id.as_str(), &subscribers, &events)
        })
        .await
    }

    async fn compliance_facts(
        &self,
        tenant_id: &TenantId,
        workspace: &WorkspaceName,
        queries: Vec<FactsQuery>,
    ) -> StoreResult<Vec<AddressFacts>> {
        let (tenant_id, workspace) = (tenant_id.clone(), workspace.clone());
        let vault = self.vault();
        self.read(move |conn| {
            compliance::facts(conn, &vault, tenant_id.as_str(), &workspace, &queries)
        })
        .await
    }

    async fn person_consent(
        &self,
        tenant_id: &TenantId,
        person_id: &str,
    ) -> StoreResult<Vec<ConsentEventRow>> {
        let (tenant_id, person_id) = (tenant_id.clone(), person_id.to_owned());
        let vault = self.vault();
        self.read(move |conn| {
            compliance::person_consent(conn, &vault, tenant_id.as_str(), &person_id)
        })
        .await
    }

    async fn suppression_history(
        &self,
        tenant_id: &TenantId,
        address: &Identifier,
    ) -> StoreResult<Vec<SuppressionRow>> {
        let (tenant_id, address, vault) = (tenant_id.clone(), address.clone(), self.vault());
        self.read(move |conn| {
            compliance::suppression_history(conn, &vault, tenant_id.as_str(), &address)
        })
        .await
    }

    async fn tenant_setting(
        &self,
        tenant_id: &TenantId,
        name: &str,
    ) -> StoreResult<Option<String>> {
        let (tenant_id, name) = (tenant_id.clone(), name.to_owned());
        self.read(move |conn| compliance::tenant_setting(conn, tenant_id.as_str(), &name))
            .await
    }

    async fn put_tenant_setting(
        &self,
        tenant_id: &TenantId,
        name: &str,
        settings: String,
        at: Timestamp,
    ) -> StoreResult<()> {
        let (tenant_id, name) = (tenant_id.clone(), name.to_owned());
        self.write(move |tx| {
            compliance::put_tenant_setting(tx, tenant_id.as_str(), &name, &settings, at)
        })
        .await
    }

    async fn merge_persons(
        &self,
        tenant_id: &TenantId,
        settings: &IdentitySettings,
        merge: ManualMerge,
    ) -> StoreResult<MergeRow> {
        let (tenant_id, settings, vault) = (tenant_id.clone(), settings.clone(), self.vault());
        self.write(move |tx| {
            let row = merges::merge(tx, &vault, tenant_id.as_str(), &settings, &merge)?;
            let subscribers = webhooks::subscribers(tx, tenant_id.as_str())?;
            if subscribers.any(EventType::PersonMerged) {
                webhooks::enqueue(
                    tx,
                    &vault,
                    tenant_id.as_str(),
                    &subscribers,
                    &[merge_event(&row)],
                )?;
            }
            Ok(row)
        })
        .await
    }

    async fn persons_by_identifier_count(
        &self,
        tenant_id: &TenantId,
        min_identifiers: u32,
        page: &PageRequest,
    ) -> StoreResult<Page<(String, u64)>> {
        let (tenant_id, page) = (tenant_id.clone(), page.clone());
        self.read(move |conn| {
            reads::persons_by_identifier_count(conn, tenant_id.as_str(), min_identifiers, &page)
        })
        .await
    }

    async fn idempotency_begin(
        &self,
        request: &IdempotencyRequest,
    ) -> StoreResult<IdempotencyBegin> {
        let request = request.clone();
        let tenant = request.tenant_id.clone();
        let begin = self
            .write(move |tx| idempotency::begin(tx, &request))
            .await?;
        self.vault().open_begin(tenant.as_str(), begin)
    }

    async fn idempotency_finish(
        &self,
        request: &IdempotencyRequest,
        response: Option<StoredResponse>,
    ) -> StoreResult<()> {
        let request = request.clone();
        let response = self
            .vault()
            .seal_response(request.tenant_id.as_str(), response)?;
        self.write(move |tx| idempotency::finish(tx, &request, response.as_ref()))
            .await
    }

    async fn stats(
        &self,
        tenant_id: &TenantId,
        events_since: Timestamp,
    ) -> StoreResult<TenantStats> {
        let tenant_id = tenant_id.clone();
        self.read(move |conn| reads::stats(conn, tenant_id.as_str(), micros(events_since)))
            .await
    }

    async fn append_audit(&self, entries: Vec<AuditEntry>) -> StoreResult<()> {
        self.write(move |tx| {
            let mut insert = tx
                .prepare_cached(
                    "INSERT INTO audit_entries (tenant_id, entry_id, at, actor, actor_tenant, on_behalf_of,
                                                action, object, status, latency_us)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                )
                .map_err(map_error)?;
            for entry in &entries {
                insert
                    .execute(params![
                        entry.tenant_id.as_str(),
                        entry.entry_id,
                        micros(entry.at),
                        entry.actor,
                        entry.actor_tenant.as_str(),
                        entry.on_behalf_of.as_ref().map(TenantId::as_str),
                        entry.action,
                        entry.object,
                        entry.status,
                        i64::try_from(entry.latency_us).unwrap_or(i64::MAX),
                    ])
                    .map_err(map_error)?;
            }
            Ok(())
        })
        .await
    }

    async fn list_audit(
        &self,
        tenant_id: &TenantId,
        page: &PageRequest,
    ) -> StoreResult<Page<AuditEntry>> {
        let (tenant_id, page) = (tenant_id.clone(), page.clone());
        self.read(move |conn| {
            let rows = conn
                .prepare_cached(
                    "SELECT tenant_id, entry_id, at, actor, actor_tenant, on_behalf_of, action, object,
                            status, latency_us
                     FROM audit_entries WHERE tenant_id = ?1 AND (?2 IS NULL OR entry_id < ?2)
                     ORDER BY entry_id DESC LIMIT ?3",
                )
                .and_then(|mut s| {
                    s.query_map(
                        params![tenant_id.as_str(), page.after, i64::from(page.limit) + 1],
                        codec::audit_entry,
                    )?
                    .collect::<rusqlite::Result<Vec<_>>>()
                })
                .map_err(map_error)?;
            Ok(Page::from_overfetch(rows, page.limit, |e| e.entry_id.clone()))
        })
        .await
    }

    async fn unmerge(&self, tenant_id: &TenantId, unmerge: Unmerge) -> StoreResult<UnmergeOutcome> {
        let (tenant_id, vault) = (tenant_id.clone(), self.vault());
        self.write(move |tx| {
            let outcome = merges::unmerge(tx, &vault, tenant_id.as_str(), &unmerge)?;
            let subscribers = webhooks::subscribers(tx, tenant_id.as_str())?;
            if subscribers.any(EventType::PersonUnmerged) {
                let event = unmerge_event(&unmerge, &outcome);
                webhooks::enqueue(tx, &vault, tenant_id.as_str(), &subscribers, &[event])?;
            }
            Ok(outcome)
        })
        .await
    }

    async fn keep_apart_rules(
        &self,
        tenant_id: &TenantId,
        person_id: &str,
    ) -> StoreResult<Vec<KeepApartRule>> {
        let (tenant_id, person_id) = (tenant_id.clone(), person_id.to_owned());
        self.read(move |conn| merges::rules_of(conn, tenant_id.as_str(), &person_id))
            .await
    }

    async fn remove_keep_apart(
        &self,
        tenant_id: &TenantId,
        rule_id: &str,
        at: Timestamp,
    ) -> StoreResult<()> {
        let (tenant_id, rule_id) = (tenant_id.clone(), rule_id.to_owned());
        self.write(move |tx| merges::remove_rule(tx, tenant_id.as_str(), &rule_id, at))
            .await
    }

    async fn get_signal(&self, tenant_id: &TenantId, event_id: &str) -> StoreResult<LoggedSignal> {
        let (tenant_id, event_id, vault) = (tenant_id.clone(), event_id.to_owned(), self.vault());
        self.read(move |conn| reads::get_signal(conn, &vault, tenant_id.as_str(), &event_id))
            .await
    }

    async fn identity_settings(&self, tenant_id: &TenantId) -> StoreResult<Option<String>> {
        let tenant_id = tenant_id.clone();
        self.read(move |conn| {
            conn.prepare_cached("SELECT settings FROM identity_settings WHERE tenant_id = ?1")
                .and_then(|mut s| s.query_row([tenant_id.as_str()], |r| r.get(0)).optional())
                .map_err(map_error)
        })
        .await
    }

    async fn put_identity_settings(
        &self,
        tenant_id: &TenantId,
        settings: String,
        at: Timestamp,
    ) -> StoreResult<()> {
        let tenant_id = tenant_id.clone();
        self.write(move |tx| {
            tx.prepare_cached(
                "INSERT INTO identity_settings (tenant_id, settings, updated_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (tenant_id) DO UPDATE SET settings = excluded.settings, updated_at = excluded.updated_at",
            )
            .and_then(|mut s| s.execute(params![tenant_id.as_str(), settings, micros(at)]))
            .map_err(map_error)?;
            Ok(())
        })
        .await
    }

    fn single_process(&self) -> bool {
        true
    }

    async fn create_import(&self, tenant_id: &TenantId, job: &ImportJob) -> StoreResult<()> {
        let (tenant, job) = (tenant_id.clone(), job.clone());
        let message = format!("import {} already exists", job.job_id);
        self.write(move |tx| imports::create(tx, tenant.as_str(), &job))
            .await
            .map_err(conflict_as(message))
    }

    async fn get_import(&self, tenant_id: &TenantId, job_id: &str) -> StoreResult<ImportJob> {
        let (tenant, job_id) = (tenant_id.clone(), job_id.to_owned());
        self.read(move |conn| imports::get(conn, tenant.as_str(), &job_id))
            .await
    }

    async fn list_imports(
        &self,
        tenant_id: &TenantId,
        page: &PageRequest,
    ) -> StoreResult<Page<ImportJob>> {
        let (tenant, page) = (tenant_id.clone(), page.clone());
        self.read(move |conn| imports::list(conn, tenant.as_str(), &page))
            .await
    }

    async fn unfinished_imports(&self, tenant_id: &TenantId) -> StoreResult<Vec<ImportJob>> {
        let tenant = tenant_id.clone();
        self.read(move |conn| imports::unfinished(conn, tenant.as_str()))
            .await
    }

    async fn land_import_rows(
        &self,
        tenant_id: &TenantId,
        job_id: &str,
        rows: Vec<LandedRow>,
        at: Timestamp,
    ) -> StoreResult<()> {
        let (tenant, job_id) = (tenant_id.clone(), job_id.to_owned());
        let (Some(first), Some(last)) = (rows.first().map(|r| r.row), rows.last().map(|r| r.row))
        else {
            return Ok(());
        };
        let mut rows = rows;
        self.vault().seal_landed(tenant.as_str(), &mut rows)?;
        // The rows on the landed-rows file's writer, then their count on the main one: a count
        // never names a row that is not there (decision 0022).
        let (landing_tenant, landing_job) = (tenant.clone(), job_id.clone());
        self.write_landed(move |tx| {
            imports::land_rows(tx, landing_tenant.as_str(), &landing_job, &rows)
        })
        .await?;
        // Retriable, like every job that writes only its transaction's rows: no savepoint.
        // Resumable: a count a power cut takes back leaves a job that never finished landing,
        // which is failed on restart; `finish_import_landing` waits for the disk.
        self.write_resumable(move |tx| {
            imports::count_landed(tx, tenant.as_str(), &job_id, first, last, at)
        })
        .await
    }

    async fn finish_import_landing(
        &self,
        tenant_id: &TenantId,
        job_id: &str,
        file_sha256: &str,
        file_bytes: u64,
        warnings: Vec<String>,
        at: Timestamp,
    ) -> StoreResult<()> {
        let (tenant, job_id, sha) = (tenant_id.clone(), job_id.to_owned(), file_sha256.to_owned());
        self.write(move |tx| {
            imports::finish_landing(
                tx,
                tenant.as_str(),
                &job_id,
                &sha,
                file_bytes,
                &warnings,
                at,
            )
        })
        .await
    }

    async fn fail_import(
        &self,
        tenant_id: &TenantId,
        job_id: &str,
        error: &str,
        at: Timestamp,
    ) -> StoreResult<()> {
        let (tenant, job_id, error) = (tenant_id.clone(), job_id.to_owned(), error.to_owned());
        self.write(move |tx| imports::fail(tx, tenant.as_str(), &job_id, &error, at))
            .await
    }

    async fn claim_import(
        &self,
        tenant_id: &TenantId,
        job_id: &str,
        runner: &str,
        at: Timestamp,
        stale_before: Timestamp,
    ) -> StoreResult<Option<ImportJob>> {
        let (tenant, job_id, runner) = (tenant_id.clone(), job_id.to_owned(), runner.to_owned());
        self.write(move |tx| {
            imports::claim(tx, tenant.as_str(), &job_id, &runner, at, stale_before)
        })
        .await
    }

    async fn landed_rows(
        &self,
        tenant_id: &TenantId,
        job_id: &str,
        after: u64,
        limit: u32,
    ) -> StoreResult<Vec<LandedRow>> {
        let (tenant, job_id) = (tenant_id.clone(), job_id.to_owned());
        let vault = self.vault();
        self.read(move |conn| {
            let mut rows = imports::landed_rows(conn, tenant.as_str(), &job_id, after, limit)?;
            vault.open_landed(tenant.as_str(), &mut rows)?;
            Ok(rows)
        })
        .await
    }

    async fn record_import_chunk(
        &self,
        tenant_id: &TenantId,
        job_id: &str,
        chunk: RecordedChunk,
    ) -> StoreResult<()> {
        let (tenant, job_id) = (tenant_id.clone(), job_id.to_owned());
        let mut chunk = chunk;
        self.vault()
            .seal_outcomes(tenant.as_str(), &mut chunk.outcomes)?;
        if !chunk.erase_landed.is_empty() {
            // Erased before the chunk is recorded: a crash in between runs the chunk again over
            // rows already erased, never leaves a deleted person's row readable.
            let rows: Vec<(String, u64)> = chunk
                .erase_landed
                .iter()
                .map(|row| (job_id.clone(), *row))
                .collect();
            let tenant = tenant.clone();
            self.write_landed(move |tx| {
                imports::erase_rows(
                    tx,
                    tenant.as_str(),
                    &rows,
                    "erased: carried a deleted person's identifier",
                )
            })
            .await?;
        }
        // Resumable: a chunk whose record a power cut takes back is resolved again as
        // duplicates, and `complete_import` commits durably after the last one.
        self.write_resumable(move |tx| imports::record(tx, tenant.as_str(), &job_id, &chunk))
            .await
    }

    async fn complete_import(
        &self,
        tenant_id: &TenantId,
        job_id: &str,
        runner: &str,
        at: Timestamp,
    ) -> StoreResult<()> {
        let (tenant, job_id, runner) = (tenant_id.clone(), job_id.to_owned(), runner.to_owned());
        let vault = self.vault();
        self.write(move |tx| {
            imports::complete(tx, tenant.as_str(), &job_id, &runner, at)?;
            let subscribers = webhooks::subscribers(tx, tenant.as_str())?;
            if subscribers.any(EventType::ImportCompleted) {
                let job = imports::get(tx, tenant.as_str(), &job_id)?;
                let event = import_completed_event(&job, at);
                webhooks::enqueue(tx, &vault, tenant.as_str(), &subscribers, &[event])?;
            }
            Ok(())
        })
        .await
    }

    async fn reprocess_import(
        &self,
        tenant_id: &TenantId,
        job_id: &str,
        mapping: JobMapping,
        options: String,
        runner: &str,
        at: Timestamp,
    ) -> StoreResult<ImportJob> {
        let (tenant, job_id, runner) = (tenant_id.clone(), job_id.to_owned(), runner.to_owned());
        self.write(move |tx| {
            imports::reprocess(
                tx,
                tenant.as_str(),
                &job_id,
                &mapping,
                &options,
                &runner,
                at,
            )
        })
        .await
    }

    async fn import_outcomes(
        &self,
        tenant_id: &TenantId,
        job_id: &str,
        outcome: Option<&str>,
        page: &PageRequest,
    ) -> StoreResult<Page<RowOutcome>> {
        let (tenant, job_id, page) = (tenant_id.clone(), job_id.to_owned(), page.clone());
        let outcome = outcome.map(str::to_owned);
        let vault = self.vault();
        self.read(move |conn| {
            let mut page =
                imports::outcomes(conn, tenant.as_str(), &job_id, outcome.as_deref(), &page)?;
            vault.open_outcomes(tenant.as_str(), &mut page.items)?;
            Ok(page)
        })
        .await
    }

    async fn signal_effects(
        &self,
        tenant_id: &TenantId,
        workspace: &WorkspaceName,
        message_ids: Vec<String>,
    ) -> StoreResult<Vec<Option<SignalEffects>>> {
        let (tenant, workspace, vault) = (tenant_id.clone(), workspace.clone(), self.vault());
        self.read(move |conn| {
            imports::effects(
                conn,
                &vault,
                tenant.as_str(),
                workspace.as_str(),
                &message_ids,
            )
        })
        .await
    }

    async fn delete_person(
        &self,
        tenant_id: &TenantId,
        request: DeletionRequest,
    ) -> StoreResult<DeletionOutcome> {
        let tenant_id = tenant_id.clone();
        let vault = self.vault();
        self.write(move |tx| deletion::delete_person(tx, &vault, tenant_id.as_str(), &request))
            .await
    }

    async fn purge_deleted(
        &self,
        tenant_id: &TenantId,
        now: Timestamp,
    ) -> StoreResult<PurgeOutcome> {
        // The rows the persons due came from are erased in the landed-rows file first: a crash
        // before the purge commits leaves them erased and the purge to run again.
        let tenant = tenant_id.clone();
        let rows = self
            .read(move |conn| deletion::landed_rows_of_due(conn, tenant.as_str(), now))
            .await?;
        let tenant = tenant_id.clone();
        let erased = if rows.is_empty() {
            // Most runs find no one due: no transaction for nothing.
            0
        } else {
            self.write_landed(move |tx| {
                imports::erase_rows(tx, tenant.as_str(), &rows, "erased: the person was deleted")
            })
            .await?
        };
        let tenant_id = tenant_id.clone();
        let mut purged = self
            .write(move |tx| deletion::purge(tx, tenant_id.as_str(), now))
            .await?;
        purged.import_rows = erased;
        Ok(purged)
    }

    async fn stored_suppression_entries(
        &self,
        tenant_id: &TenantId,
        entry_ids: Vec<String>,
    ) -> StoreResult<Vec<String>> {
        let tenant = tenant_id.clone();
        self.read(move |conn| imports::stored_suppressions(conn, tenant.as_str(), &entry_ids))
            .await
    }

    async fn create_webhook(
        &self,
        tenant_id: &TenantId,
        subscription: &WebhookSubscription,
    ) -> StoreResult<()> {
        let (tenant, subscription) = (tenant_id.clone(), subscription.clone());
        self.write(move |tx| webhooks::create(tx, tenant.as_str(), &subscription))
            .await
    }

    async fn get_webhook(
        &self,
        tenant_id: &TenantId,
        subscription_id: &str,
    ) -> StoreResult<WebhookSubscription> {
        let (tenant, id) = (tenant_id.clone(), subscription_id.to_owned());
        self.read(move |conn| webhooks::get(conn, tenant.as_str(), &id))
            .await
    }

    async fn list_webhooks(
        &self,
        tenant_id: &TenantId,
        page: &PageRequest,
    ) -> StoreResult<Page<WebhookSubscription>> {
        let (tenant, page) = (tenant_id.clone(), page.clone());
        self.read(move |conn| webhooks::list(conn, tenant.as_str(), &page))
            .await
    }

    async fn delete_webhook(
        &self,
        tenant_id: &TenantId,
        subscription_id: &str,
        at: Timestamp,
    ) -> StoreResult<()> {
        let (tenant, id) = (tenant_id.clone(), subscription_id.to_owned());
        self.write(move |tx| webhooks::delete(tx, tenant.as_str(), &id, at))
            .await
    }

    async fn set_webhook_disabled(
        &self,
        tenant_id: &TenantId,
        subscription_id: &str,
        disabled: Option<String>,
        at: Timestamp,
    ) -> StoreResult<WebhookSubscription> {
        let (tenant, id) = (tenant_id.clone(), subscription_id.to_owned());
        self.write(move |tx| {
            webhooks::set_disabled(tx, tenant.as_str(), &id, disabled.as_deref(), at)
        })
        .await
    }

    async fn list_webhook_deliveries(
        &self,
        tenant_id: &TenantId,
        subscription_id: &str,
        page: &PageRequest,
    ) -> StoreResult<Page<WebhookDelivery>> {
        let (tenant, id, page) = (tenant_id.clone(), subscription_id.to_owned(), page.clone());
        let vault = self.vault();
        self.read(move |conn| {
            let mut page = webhooks::deliveries(conn, tenant.as_str(), &id, &page)?;
            for delivery in &mut page.items {
                vault.open_delivery(tenant.as_str(), delivery)?;
            }
            Ok(page)
        })
        .await
    }

    async fn webhook_attempts(
        &self,
        tenant_id: &TenantId,
        delivery_ids: Vec<String>,
    ) -> StoreResult<Vec<DeliveryAttempt>> {
        let tenant = tenant_id.clone();
        self.read(move |conn| webhooks::attempts(conn, tenant.as_str(), &delivery_ids))
            .await
    }

    async fn claim_webhook_deliveries(
        &self,
        tenant_id: &TenantId,
        claim: &DeliveryClaim,
    ) -> StoreResult<Vec<ClaimedDelivery>> {
        let (tenant, claim) = (tenant_id.clone(), claim.clone());
        let mut claimed = self
            .write(move |tx| webhooks::claim(tx, tenant.as_str(), &claim))
            .await?;
        let vault = self.vault();
        for one in &mut claimed {
            vault.open_delivery(tenant_id.as_str(), &mut one.delivery)?;
        }
        Ok(claimed)
    }

    async fn record_webhook_attempt(
        &self,
        tenant_id: &TenantId,
        delivery_id: &str,
        record: AttemptRecord,
    ) -> StoreResult<()> {
        let (tenant, id) = (tenant_id.clone(), delivery_id.to_owned());
        self.write(move |tx| webhooks::record(tx, tenant.as_str(), &id, &record))
            .await
    }

    async fn prune_webhook_deliveries(
        &self,
        tenant_id: &TenantId,
        finished_before: Timestamp,
        limit: u32,
    ) -> StoreResult<u64> {
        let tenant = tenant_id.clone();
        self.write(move |tx| webhooks::prune(tx, tenant.as_str(), finished_before, limit))
            .await
    }
}

impl SqliteStore {
    /// `ingest` and `ingest_import_chunk`: the second's commit need not reach the disk before
    /// it answers (decision 0023).
    async fn ingest_signals(
        &self,
        tenant_id: &TenantId,
        settings: &IdentitySettings,
        signals: Vec<SignalRecord>,
        durable: bool,
    ) -> StoreResult<Vec<IngestOutcome>> {
        let (tenant_id, settings) = (tenant_id.clone(), settings.clone());
        let vault = self.vault();
        let seal = |signal: &SignalRecord| vault.seal_signal(tenant_id.as_str(), signal);
        let first = signals
            .iter()
            .take(SEALED_BEFORE_QUEUEING)
            .map(seal)
            .collect::<StoreResult<Vec<_>>>()?;
        let (more, rest) = if signals.len() > first.len() {
            let (more, rest) = std::sync::mpsc::channel();
            (Some(more), Some(rest))
        } else {
            (None, None)
        };
        let mut feed = resolve::SealedFeed::new(first, rest);
        let store = self.clone();
        let signals = Arc::new(signals);
        let sealing = Arc::clone(&signals);
        let tenant = tenant_id.clone();
        // Retriable: ingesting writes nothing but its transaction's rows.
        let answer = self.queue_retriable(
            move |tx| {
                // The vault as it is when the writer runs: a rotation's re-seal passes run on
                // this thread too, so what is written now is under the key they move rows to.
                let vault = store.vault();
                resolve::ingest(tx, &vault, &tenant, &settings, &signals, &mut feed)
            },
            durable,
        )?;
        if let Some(more) = more {
            // The writer resolves the first signals while these are sealed.
            for signal in &sealing[SEALED_BEFORE_QUEUEING..] {
                let sealed = seal(signal);
                let failed = sealed.is_err();
                if more.send(sealed).is_err() || failed {
                    break;
                }
            }
        }
        answer.await
    }
}

fn insert_key(
    tx: &rusqlite::Transaction<'_>,
    key: &ApiKeyRecord,
    replace: bool,
) -> StoreResult<()> {
    let verb = if replace {
        "INSERT OR REPLACE"
    } else {
        "INSERT"
    };
    tx.prepare_cached(&format!(
        "{verb} INTO api_keys ({API_KEY_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"
    ))
    .and_then(|mut s| {
        s.execute(params![
            key.tenant_id.as_str(),
            key.key_id,
            key.name,
            key.hash.0.as_slice(),
            key.scopes.to_storage(),
            key.workspace.as_ref().map(WorkspaceName::as_str),
            key.rate_limit_per_sec,
            key.is_master,
            micros(key.created_at),
            key.revoked_at.map(micros),
        ])
    })
    .map_err(map_error)?;
    Ok(())
}

/// Inserts nodes as the resolver does; shared with the benchmark's store path.
pub(crate) fn insert_nodes(
    tx: &rusqlite::Transaction<'_>,
    vault: &idgraph_store::vault::Vault,
    tenant_id: &TenantId,
    rows: &[IdentityNodeRow],
) -> StoreResult<()> {
    let mut values = crate::nodes::ValueIds::new(tenant_id.as_str());
    for row in rows {
        let (index, sealed) =
            vault.identifier(tenant_id.as_str(), row.kind.as_str(), &row.value)?;
        let node = crate::nodes::NewNode {
            kind: row.kind.as_str(),
            value: &index,
            sealed: sealed.as_deref(),
            person: &row.person_id,
            source: &row.source,
            confidence: row.confidence,
            first_seen: micros(row.first_seen),
            last_seen: micros(row.last_seen),
            signal_id: row.signal_id.as_deref(),
        };
        if !crate::nodes::insert_node(tx, &mut values, &node)? {
            return Err(StoreError::Conflict(format!(
                "identity node ({}, {}) of person {} already exists",
                row.kind, row.value, row.person_id
            )));
        }
    }
    Ok(())
}
