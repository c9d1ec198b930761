//! The `Store` implementation: every statement filters on tenant_id, the leading key column.

use idgraph_core::auth::KeyHash;
use idgraph_core::identity::{Identifier, IdentifierKind, IdentitySettings};
use idgraph_core::tenancy::{TenantId, WorkspaceName};
use idgraph_store::{
    AddressFacts, ApiKeyRecord, AuditEntry, ComplianceWrites, ConflictRow, ConsentEventRow,
    DeletionOutcome, DeletionRequest, FactsQuery, IdempotencyBegin, IdempotencyRequest,
    IdentityNodeRow, ImportJob, IngestOutcome, JobMapping, KeepApartRule, LandedRow, LoggedSignal,
    ManualMerge, MergeRow, Page, PageRequest, PersonProfile, PersonRow, PurgeOutcome,
    RecordedChunk, RowOutcome, SignalEffects, SignalRecord, Store, StoreError, StoreResult,
    StoredResponse, SuppressionRow, Tenant, TenantStats, TimelineEvent, Unmerge, UnmergeOutcome,
    Workspace,
};
use jiff::Timestamp;

use crate::PostgresStore;
use crate::codec::{
    self, API_KEY_COLUMNS, NODE_COLUMNS, NODE_READ_COLUMNS, map_error, to_sql_time,
};

fn conflict_as(message: String) -> impl FnOnce(StoreError) -> StoreError {
    move |e| match e {
        StoreError::Conflict(_) => StoreError::Conflict(message),
        other => other,
    }
}

fn overfetch(page: &PageRequest) -> i64 {
    i64::from(page.limit) + 1
}

fn rate_limit(key: &ApiKeyRecord) -> StoreResult<Option<i32>> {
    key.rate_limit_per_sec
        .map(|r| i32::try_from(r).map_err(|_| StoreError::Other("rate limit out of range".into())))
        .transpose()
}

impl Store for PostgresStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    async fn ping(&self) -> StoreResult<()> {
        self.client()
            .await?
            .simple_query("SELECT 1")
            .await
            .map_err(map_error)?;
        Ok(())
    }

    async fn schema_version(&self) -> StoreResult<i64> {
        let row = self
            .client()
            .await?
            .query_one(
                "SELECT COALESCE(MAX(version), 0) FROM idgraph_migrations",
                &[],
            )
            .await
            .map_err(map_error)?;
        Ok(row.get(0))
    }

    async fn close(&self) {
        self.pool.close();
    }

    fn vault_slot(&self) -> &idgraph_store::vault::VaultSlot {
        self.vault_slot_inner()
    }

    async fn reseal(&self, tenant_id: &TenantId, limit: u32) -> StoreResult<u64> {
        self.reseal_batch(tenant_id.as_str(), limit).await
    }

    async fn create_tenant(&self, tenant: &Tenant) -> StoreResult<()> {
        self.client()
            .await?
            .execute(
                "INSERT INTO tenants (tenant_id, name, created_at) VALUES ($1, $2, $3)",
                &[
                    &tenant.id.as_str(),
                    &tenant.name,
                    &to_sql_time(tenant.created_at),
                ],
            )
            .await
            .map_err(map_error)
            .map_err(conflict_as(format!("tenant {} already exists", tenant.id)))?;
        Ok(())
    }

    async fn get_tenant(&self, tenant_id: &TenantId) -> StoreResult<Tenant> {
        let row = self
            .client()
            .await?
            .query_opt(
                "SELECT tenant_id, name, created_at FROM tenants WHERE tenant_id = $1",
                &[&tenant_id.as_str()],
            )
            .await
            .map_err(map_error)?;
        codec::tenant(&row.ok_or(StoreError::NotFound)?)
    }

    async fn list_tenants(&self, page: &PageRequest) -> StoreResult<Page<Tenant>> {
        let after = page.after.clone().unwrap_or_default();
        let rows = self
            .client()
            .await?
            .query(
                "SELECT tenant_id, name, created_at FROM tenants
                 WHERE tenant_id > $1 ORDER BY tenant_id LIMIT $2",
                &[&after, &overfetch(page)],
            )
            .await
            .map_err(map_error)?;
        let items = rows
            .iter()
            .map(codec::tenant)
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(Page::from_overfetch(items, page.limit, |t| {
            t.id.to_string()
        }))
    }

    async fn create_workspace(&self, ws: &Workspace) -> StoreResult<()> {
        self.client()
            .await?
            .execute(
                "INSERT INTO workspaces (tenant_id, name, workspace_id, environment, created_at)
                 VALUES ($1, $2, $3, $4, $5)",
                &[
                    &ws.tenant_id.as_str(),
                    &ws.name.as_str(),
                    &ws.id,
                    &ws.environment.as_str(),
                    &to_sql_time(ws.created_at),
                ],
            )
            .await
            .map_err(map_error)
            .map_err(conflict_as(format!("workspace {} already exists", ws.name)))?;
        Ok(())
    }

    async fn get_workspace(
        &self,
        tenant_id: &TenantId,
        name: &WorkspaceName,
    ) -> StoreResult<Workspace> {
        let row = self
            .client()
            .await?
            .query_opt(
                "SELECT tenant_id, name, workspace_id, environment, created_at FROM workspaces
                 WHERE tenant_id = $1 AND name = $2",
                &[&tenant_id.as_str(), &name.as_str()],
            )
            .await
            .map_err(map_error)?;
        codec::workspace(&row.ok_or(StoreError::NotFound)?)
    }

    async fn list_workspaces(
        &self,
        tenant_id: &TenantId,
        page: &PageRequest,
    ) -> StoreResult<Page<Workspace>> {
        let after = page.after.clone().unwrap_or_default();
        let rows = self
            .client()
            .await?
            .query(
                "SELECT tenant_id, name, workspace_id, environment, created_at FROM workspaces
                 WHERE tenant_id = $1 AND name > $2 ORDER BY name LIMIT $3",
                &[&tenant_id.as_str(), &after, &overfetch(page)],
            )
            .await
            .map_err(map_error)?;
        let items = rows
            .iter()
            .map(codec::workspace)
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(Page::from_overfetch(items, page.limit, |w| {
            w.name.to_string()
        }))
    }

    async fn insert_api_key(&self, key: &ApiKeyRecord) -> StoreResult<()> {
        self.write_key(key, false)
            .await
            .map_err(conflict_as(format!("key {} already exists", key.key_id)))
    }

    async fn put_master_key(&self, key: &ApiKeyRecord) -> StoreResult<()> {
        self.write_key(key, true).await
    }

    async fn get_api_key(&self, tenant_id: &TenantId, key_id: &str) -> StoreResult<ApiKeyRecord> {
        let row = self
            .client()
            .await?
            .query_opt(
                &format!(
                    "SELECT {API_KEY_COLUMNS} FROM api_keys WHERE tenant_id = $1 AND key_id = $2"
                ),
                &[&tenant_id.as_str(), &key_id],
            )
            .await
            .map_err(map_error)?;
        codec::api_key(&row.ok_or(StoreError::NotFound)?)
    }

    async fn list_api_keys(
        &self,
        tenant_id: &TenantId,
        page: &PageRequest,
    ) -> StoreResult<Page<ApiKeyRecord>> {
        let after = page.after.clone().unwrap_or_default();
        let rows = self
            .client()
            .await?
            .query(
                &format!(
                    "SELECT {API_KEY_COLUMNS} FROM api_keys
                     WHERE tenant_id = $1 AND key_id > $2 ORDER BY key_id LIMIT $3"
                ),
                &[&tenant_id.as_str(), &after, &overfetch(page)],
            )
            .await
            .map_err(map_error)?;
        let items = rows
            .iter()
            .map(codec::api_key)
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(Page::from_overfetch(items, page.limit, |k| {
            k.key_id.clone()
        }))
    }

    async fn revoke_api_key(
        &self,
        tenant_id: &TenantId,
        key_id: &str,
        at: Timestamp,
    ) -> StoreResult<()> {
        let changed = self
            .client()
            .await?
            .execute(
                "UPDATE api_keys SET revoked_at = $3
                 WHERE tenant_id = $1 AND key_id = $2 AND revoked_at IS NULL",
                &[&tenant_id.as_str(), &key_id, &to_sql_time(at)],
            )
            .await
            .map_err(map_error)?;
        if changed == 0 {
            Err(StoreError::NotFound)
        } else {
            Ok(())
        }
    }

    async fn find_master_key(&self, hash: &KeyHash) -> StoreResult<ApiKeyRecord> {
        let row = self
            .client()
            .await?
            .query_opt(
                &format!(
                    "SELECT {API_KEY_COLUMNS} FROM api_keys
                     WHERE tenant_id = $1 AND is_master AND key_hash = $2"
                ),
                &[&TenantId::DEFAULT, &hash.0.as_slice()],
            )
            .await
            .map_err(map_error)?;
        codec::api_key(&row.ok_or(StoreError::NotFound)?)
    }

    async fn insert_identity_nodes(
        &self,
        tenant_id: &TenantId,
        rows: Vec<IdentityNodeRow>,
    ) -> StoreResult<()> {
        // One statement per batch: columns travel as arrays and UNNEST turns them into rows,
        // which avoids a round trip per row.
        let vault = self.vault();
        let kinds: Vec<&str> = rows.iter().map(|r| r.kind.as_str()).collect();
        let (values, sealed): (Vec<String>, Vec<Option<String>>) = rows
            .iter()
            .map(|r| vault.identifier(tenant_id.as_str(), r.kind.as_str(), &r.value))
            .collect::<StoreResult<Vec<_>>>()?
            .into_iter()
            .unzip();
        let persons: Vec<&str> = rows.iter().map(|r| r.person_id.as_str()).collect();
        let sources: Vec<&str> = rows.iter().map(|r| r.source.as_str()).collect();
        let confidences: Vec<f64> = rows.iter().map(|r| r.confidence).collect();
        let first_seen: Vec<_> = rows.iter().map(|r| to_sql_time(r.first_seen)).collect();
        let last_seen: Vec<_> = rows.iter().map(|r| to_sql_time(r.last_seen)).collect();
        let signals: Vec<Option<&str>> = rows.iter().map(|r| r.signal_id.as_deref()).collect();
        self.client()
            .await?
            .execute(
                &format!(
                    "INSERT INTO identity_nodes (tenant_id, {NODE_COLUMNS}, value_sealed)
                     SELECT $1, * FROM UNNEST($2::text[], $3::text[], $4::text[], $5::text[],
                        $6::float8[], $7::timestamptz[], $8::timestamptz[], $9::text[], $10::text[])"
                ),
                &[
                    &tenant_id.as_str(),
                    &kinds,
                    &values,
                    &persons,
                    &sources,
                    &confidences,
                    &first_seen,
                    &last_seen,
                    &signals,
                    &sealed,
                ],
            )
            .await
            .map_err(map_error)?;
        Ok(())
    }

    async fn find_identity_nodes(
        &self,
        tenant_id: &TenantId,
        kind: &IdentifierKind,
        value: &str,
    ) -> StoreResult<Vec<IdentityNodeRow>> {
        let rows = self
            .client()
            .await?
            .query(
                &format!(
                    "SELECT {NODE_READ_COLUMNS} FROM identity_nodes
                     WHERE tenant_id = $1 AND kind = $2 AND value = $3 ORDER BY person_id"
                ),
                &[
                    &tenant_id.as_str(),
                    &kind.as_str(),
                    &self.vault().index(tenant_id.as_str(), kind.as_str(), value),
                ],
            )
            .await
            .map_err(map_error)?;
        let nodes = rows
            .iter()
            .map(codec::identity_node)
            .collect::<StoreResult<Vec<_>>>()?;
        self.vault().open_nodes(tenant_id.as_str(), nodes)
    }

    async fn count_identity_nodes(&self, tenant_id: &TenantId) -> StoreResult<u64> {
        let row = self
            .client()
            .await?
            .query_one(
                "SELECT COUNT(*) FROM identity_nodes WHERE tenant_id = $1",
                &[&tenant_id.as_str()],
            )
            .await
            .map_err(map_error)?;
        Ok(row.get::<_, i64>(0).unsigned_abs())
    }

    async fn ingest(
        &self,
        tenant_id: &TenantId,
        settings: &IdentitySettings,
        signals: Vec<SignalRecord>,
    ) -> StoreResult<Vec<IngestOutcome>> {
        self.ingest_grouped(tenant_id, settings, signals).await
    }

    async fn lookup_person(
        &self,
        tenant_id: &TenantId,
        identifier: &Identifier,
    ) -> StoreResult<Option<String>> {
        self.read_lookup(tenant_id.as_str(), identifier).await
    }

    async fn get_person(&self, tenant_id: &TenantId, person_id: &str) -> StoreResult<PersonRow> {
        self.read_person(tenant_id.as_str(), person_id).await
    }

    async fn person_profile(
        &self,
        tenant_id: &TenantId,
        person_id: &str,
    ) -> StoreResult<PersonProfile> {
        self.read_profile(tenant_id.as_str(), person_id).await
    }

    async fn timeline(
        &self,
        tenant_id: &TenantId,
        person_id: &str,
        kind: Option<&str>,
        page: &PageRequest,
    ) -> StoreResult<Page<TimelineEvent>> {
        self.read_timeline(tenant_id.as_str(), person_id, kind, page)
            .await
    }

    async fn merges_of(
        &self,
        tenant_id: &TenantId,
        person_id: &str,
    ) -> StoreResult<(Vec<MergeRow>, Vec<ConflictRow>)> {
        self.read_merges(tenant_id.as_str(), person_id).await
    }

    async fn signal_log(
        &self,
        tenant_id: &TenantId,
        after: i64,
        limit: u32,
    ) -> StoreResult<Vec<LoggedSignal>> {
        self.read_signal_log(tenant_id.as_str(), after, limit).await
    }

    async fn record_compliance(
        &self,
        tenant_id: &TenantId,
        writes: ComplianceWrites,
    ) -> StoreResult<()> {
        self.write_compliance(tenant_id, writes).await
    }

    async fn compliance_facts(
        &self,
        tenant_id: &TenantId,
        workspace: &WorkspaceName,
        queries: Vec<FactsQuery>,
    ) -> StoreResult<Vec<AddressFacts>> {
        self.read_facts(tenant_id.as_str(), workspace, queries)
            .await
    }

    async fn person_consent(
        &self,
        tenant_id: &TenantId,
        person_id: &str,
    ) -> StoreResult<Vec<ConsentEventRow>> {
        self.read_person_consent(tenant_id.as_str(), person_id)
            .await
    }

    async fn suppression_history(
        &self,
        tenant_id: &TenantId,
        address: &Identifier,
    ) -> StoreResult<Vec<SuppressionRow>> {
        self.read_suppression_history(tenant_id.as_str(), address)
            .await
    }

    async fn tenant_setting(
        &self,
        tenant_id: &TenantId,
        name: &str,
    ) -> StoreResult<Option<String>> {
        self.read_tenant_setting(tenant_id.as_str(), name).await
    }

    async fn put_tenant_setting(
        &self,
        tenant_id: &TenantId,
        name: &str,
        settings: String,
        at: Timestamp,
    ) -> StoreResult<()> {
        self.write_tenant_setting(tenant_id.as_str(), name, &settings, at)
            .await
    }

    async fn merge_persons(
        &self,
        tenant_id: &TenantId,
        settings: &IdentitySettings,
        merge: ManualMerge,
    ) -> StoreResult<MergeRow> {
        self.manual_merge(tenant_id, settings, merge).await
    }

    async fn persons_by_identifier_count(
        &self,
        tenant_id: &TenantId,
        min_identifiers: u32,
        page: &PageRequest,
    ) -> StoreResult<Page<(String, u64)>> {
        self.read_persons_by_count(tenant_id.as_str(), min_identifiers, page)
            .await
    }

    async fn idempotency_begin(
        &self,
        request: &IdempotencyRequest,
    ) -> StoreResult<IdempotencyBegin> {
        let begin = self.claim_idempotency(request).await?;
        self.vault().open_begin(request.tenant_id.as_str(), begin)
    }

    async fn idempotency_finish(
        &self,
        request: &IdempotencyRequest,
        response: Option<StoredResponse>,
    ) -> StoreResult<()> {
        let response = self
            .vault()
            .seal_response(request.tenant_id.as_str(), response)?;
        self.finish_idempotency(request, response).await
    }

    async fn stats(
        &self,
        tenant_id: &TenantId,
        events_since: Timestamp,
    ) -> StoreResult<TenantStats> {
        self.read_stats(tenant_id.as_str(), events_since).await
    }

    async fn append_audit(&self, entries: Vec<AuditEntry>) -> StoreResult<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(map_error)?;
        let insert = tx
            .prepare_cached(
                "INSERT INTO audit_entries (tenant_id, entry_id, at, actor, actor_tenant, on_behalf_of,
                                            action, object, status, latency_us)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            )
            .await
            .map_err(map_error)?;
        for entry in &entries {
            tx.execute(
                &insert,
                &[
                    &entry.tenant_id.as_str(),
                    &entry.entry_id,
                    &to_sql_time(entry.at),
                    &entry.actor,
                    &entry.actor_tenant.as_str(),
                    &entry.on_behalf_of.as_ref().map(TenantId::as_str),
                    &entry.action,
                    &entry.object,
                    &i32::from(entry.status),
                    &i64::try_from(entry.latency_us).unwrap_or(i64::MAX),
                ],
            )
            .await
            .map_err(map_error)?;
        }
        tx.commit().await.map_err(map_error)
    }

    async fn list_audit(
        &self,
        tenant_id: &TenantId,
        page: &PageRequest,
    ) -> StoreResult<Page<AuditEntry>> {
        let rows = self
            .client()
            .await?
            .query(
                "SELECT tenant_id, entry_id, at, actor, actor_tenant, on_behalf_of, action, object,
                        status, latency_us
                 FROM audit_entries WHERE tenant_id = $1 AND ($2::text IS NULL OR entry_id < $2)
                 ORDER BY entry_id DESC LIMIT $3",
                &[
                    &tenant_id.as_str(),
                    &page.after,
                    &(i64::from(page.limit) + 1),
                ],
            )
            .await
            .map_err(map_error)?;
        let items = rows
            .iter()
            .map(codec::audit_entry)
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(Page::from_overfetch(items, page.limit, |e| {
            e.entry_id.clone()
        }))
    }

    async fn unmerge(&self, tenant_id: &TenantId, unmerge: Unmerge) -> StoreResult<UnmergeOutcome> {
        self.undo_merge(tenant_id, unmerge).await
    }

    async fn keep_apart_rules(
        &self,
        tenant_id: &TenantId,
        person_id: &str,
    ) -> StoreResult<Vec<KeepApartRule>> {
        self.rules_of(tenant_id.as_str(), person_id).await
    }

    async fn remove_keep_apart(
        &self,
        tenant_id: &TenantId,
        rule_id: &str,
        at: Timestamp,
    ) -> StoreResult<()> {
        self.lift_rule(tenant_id.as_str(), rule_id, at).await
    }

    async fn get_signal(&self, tenant_id: &TenantId, event_id: &str) -> StoreResult<LoggedSignal> {
        self.read_signal(tenant_id.as_str(), event_id).await
    }

    async fn identity_settings(&self, tenant_id: &TenantId) -> StoreResult<Option<String>> {
        let row = self
            .client()
            .await?
            .query_opt(
                "SELECT settings FROM identity_settings WHERE tenant_id = $1",
                &[&tenant_id.as_str()],
            )
            .await
            .map_err(map_error)?;
        Ok(row.map(|r| r.get(0)))
    }

    async fn put_identity_settings(
        &self,
        tenant_id: &TenantId,
        settings: String,
        at: Timestamp,
    ) -> StoreResult<()> {
        self.client()
            .await?
            .execute(
                "INSERT INTO identity_settings (tenant_id, settings, updated_at) VALUES ($1, $2, $3)
                 ON CONFLICT (tenant_id) DO UPDATE SET settings = EXCLUDED.settings, updated_at = EXCLUDED.updated_at",
                &[&tenant_id.as_str(), &settings, &to_sql_time(at)],
            )
            .await
            .map_err(map_error)?;
        Ok(())
    }

    fn single_process(&self) -> bool {
        false
    }

    async fn create_import(&self, tenant_id: &TenantId, job: &ImportJob) -> StoreResult<()> {
        self.insert_import(tenant_id.as_str(), job).await
    }

    async fn get_import(&self, tenant_id: &TenantId, job_id: &str) -> StoreResult<ImportJob> {
        self.read_import(tenant_id.as_str(), job_id).await
    }

    async fn list_imports(
        &self,
        tenant_id: &TenantId,
        page: &PageRequest,
    ) -> StoreResult<Page<ImportJob>> {
        self.read_imports(tenant_id.as_str(), page).await
    }

    async fn unfinished_imports(&self, tenant_id: &TenantId) -> StoreResult<Vec<ImportJob>> {
        self.read_unfinished_imports(tenant_id.as_str()).await
    }

    async fn land_import_rows(
        &self,
        tenant_id: &TenantId,
        job_id: &str,
        rows: Vec<LandedRow>,
        at: Timestamp,
    ) -> StoreResult<()> {
        let mut rows = rows;
        self.vault().seal_landed(tenant_id.as_str(), &mut rows)?;
        self.write_landed_rows(tenant_id.as_str(), job_id, rows, at)
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
        self.write_landing_finished(
            tenant_id.as_str(),
            job_id,
            file_sha256,
            file_bytes,
            &warnings,
            at,
        )
        .await
    }

    async fn fail_import(
        &self,
        tenant_id: &TenantId,
        job_id: &str,
        error: &str,
        at: Timestamp,
    ) -> StoreResult<()> {
        self.write_import_failed(tenant_id.as_str(), job_id, error, at)
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
        self.write_claim(tenant_id.as_str(), job_id, runner, at, stale_before)
            .await
    }

    async fn landed_rows(
        &self,
        tenant_id: &TenantId,
        job_id: &str,
        after: u64,
        limit: u32,
    ) -> StoreResult<Vec<LandedRow>> {
        let mut rows = self
            .read_landed_rows(tenant_id.as_str(), job_id, after, limit)
            .await?;
        self.vault().open_landed(tenant_id.as_str(), &mut rows)?;
        Ok(rows)
    }

    async fn record_import_chunk(
        &self,
        tenant_id: &TenantId,
        job_id: &str,
        chunk: RecordedChunk,
    ) -> StoreResult<()> {
        let mut chunk = chunk;
        self.vault()
            .seal_outcomes(tenant_id.as_str(), &mut chunk.outcomes)?;
        self.write_chunk(tenant_id.as_str(), job_id, chunk).await
    }

    async fn complete_import(
        &self,
        tenant_id: &TenantId,
        job_id: &str,
        runner: &str,
        at: Timestamp,
    ) -> StoreResult<()> {
        self.write_completed(tenant_id.as_str(), job_id, runner, at)
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
        self.write_reprocess(tenant_id.as_str(), job_id, mapping, options, runner, at)
            .await
    }

    async fn import_outcomes(
        &self,
        tenant_id: &TenantId,
        job_id: &str,
        outcome: Option<&str>,
        page: &PageRequest,
    ) -> StoreResult<Page<RowOutcome>> {
        let mut page = self
            .read_outcomes(tenant_id.as_str(), job_id, outcome, page)
            .await?;
        self.vault()
            .open_outcomes(tenant_id.as_str(), &mut page.items)?;
        Ok(page)
    }

    async fn signal_effects(
        &self,
        tenant_id: &TenantId,
        workspace: &WorkspaceName,
        message_ids: Vec<String>,
    ) -> StoreResult<Vec<Option<SignalEffects>>> {
        self.read_signal_effects(tenant_id.as_str(), workspace, message_ids)
            .await
    }

    async fn delete_person(
        &self,
        tenant_id: &TenantId,
        request: DeletionRequest,
    ) -> StoreResult<DeletionOutcome> {
        self.request_deletion(tenant_id, request).await
    }

    async fn purge_deleted(
        &self,
        tenant_id: &TenantId,
        now: Timestamp,
    ) -> StoreResult<PurgeOutcome> {
        self.purge(tenant_id, now).await
    }

    async fn stored_suppression_entries(
        &self,
        tenant_id: &TenantId,
        entry_ids: Vec<String>,
    ) -> StoreResult<Vec<String>> {
        self.read_stored_suppressions(tenant_id.as_str(), entry_ids)
            .await
    }

    async fn create_webhook(
        &self,
        tenant_id: &TenantId,
        subscription: &idgraph_store::WebhookSubscription,
    ) -> StoreResult<()> {
        self.write_webhook(tenant_id.as_str(), subscription).await
    }

    async fn get_webhook(
        &self,
        tenant_id: &TenantId,
        subscription_id: &str,
    ) -> StoreResult<idgraph_store::WebhookSubscription> {
        self.read_webhook(tenant_id.as_str(), subscription_id).await
    }

    async fn list_webhooks(
        &self,
        tenant_id: &TenantId,
        page: &PageRequest,
    ) -> StoreResult<Page<idgraph_store::WebhookSubscription>> {
        self.read_webhooks(tenant_id.as_str(), page).await
    }

    async fn delete_webhook(
        &self,
        tenant_id: &TenantId,
        subscription_id: &str,
        at: Timestamp,
    ) -> StoreResult<()> {
        self.write_webhook_deleted(tenant_id.as_str(), subscription_id, at)
            .await
    }

    async fn set_webhook_disabled(
        &self,
        tenant_id: &TenantId,
        subscription_id: &str,
        disabled: Option<String>,
        at: Timestamp,
    ) -> StoreResult<idgraph_store::WebhookSubscription> {
        self.write_webhook_disabled(tenant_id.as_str(), subscription_id, disabled, at)
            .await
    }

    async fn list_webhook_deliveries(
        &self,
        tenant_id: &TenantId,
        subscription_id: &str,
        page: &PageRequest,
    ) -> StoreResult<Page<idgraph_store::WebhookDelivery>> {
        let mut page = self
            .read_deliveries(tenant_id.as_str(), subscription_id, page)
            .await?;
        let vault = self.vault();
        for delivery in &mut page.items {
            vault.open_delivery(tenant_id.as_str(), delivery)?;
        }
        Ok(page)
    }

    async fn webhook_attempts(
        &self,
        tenant_id: &TenantId,
        delivery_ids: Vec<String>,
    ) -> StoreResult<Vec<idgraph_store::DeliveryAttempt>> {
        self.read_attempts(tenant_id.as_str(), &delivery_ids).await
    }

    async fn claim_webhook_deliveries(
        &self,
        tenant_id: &TenantId,
        claim: &idgraph_store::DeliveryClaim,
    ) -> StoreResult<Vec<idgraph_store::ClaimedDelivery>> {
        let mut claimed = self.write_delivery_claim(tenant_id.as_str(), claim).await?;
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
        record: idgraph_store::AttemptRecord,
    ) -> StoreResult<()> {
        self.write_attempt(tenant_id.as_str(), delivery_id, &record)
            .await
    }

    async fn prune_webhook_deliveries(
        &self,
        tenant_id: &TenantId,
        finished_before: Timestamp,
        limit: u32,
    ) -> StoreResult<u64> {
        self.prune_deliveries(tenant_id.as_str(), finished_before, limit)
            .await
    }
}

impl PostgresStore {
    async fn write_key(&self, key: &ApiKeyRecord, replace: bool) -> StoreResult<()> {
        let on_conflict = if replace {
            "ON CONFLICT (tenant_id, key_id) DO UPDATE SET name = EXCLUDED.name,
             key_hash = EXCLUDED.key_hash, scopes = EXCLUDED.scopes, workspace = EXCLUDED.workspace,
             rate_limit_per_sec = EXCLUDED.rate_limit_per_sec, is_master = EXCLUDED.is_master,
             created_at = EXCLUDED.created_at, revoked_at = EXCLUDED.revoked_at"
        } else {
            ""
        };
        self.client()
            .await?
            .execute(
                &format!(
                    "INSERT INTO api_keys ({API_KEY_COLUMNS})
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) {on_conflict}"
                ),
                &[
                    &key.tenant_id.as_str(),
                    &key.key_id,
                    &key.name,
                    &key.hash.0.as_slice(),
                    &key.scopes.to_storage(),
                    &key.workspace.as_ref().map(WorkspaceName::as_str),
                    &rate_limit(key)?,
                    &key.is_master,
                    &to_sql_time(key.created_at),
                    &key.revoked_at.map(to_sql_time),
                ],
            )
            .await
            .map_err(map_error)?;
        Ok(())
    }
}
