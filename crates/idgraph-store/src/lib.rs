//! The storage interface of idgraph: one `Store` trait, implemented once per backend.
//!
//! Backends (`idgraph-sqlite`, `idgraph-postgres`) own their SQL and migrations; everything above
//! them (use cases, HTTP) sees only these types. Every method takes the tenant explicitly and
//! every backend query filters on it: no read or write crosses tenants.

mod batch_graph;
mod compliance;
mod deletion;
mod imports;
mod migrations;
mod model;
mod resolution;
#[cfg(feature = "testsuite")]
pub mod testsuite;
pub mod trait_set;
pub mod vault;
mod webhooks;
mod xchacha;

use std::future::Future;

use idgraph_core::auth::KeyHash;
use idgraph_core::identity::{Identifier, IdentifierKind, IdentitySettings};
use idgraph_core::tenancy::{TenantId, WorkspaceName};
use jiff::Timestamp;

pub use batch_graph::BatchGraph;
pub use compliance::{
    AddressFacts, ComplianceWrites, ConsentEventRow, ConsentSubject, ConsentWrite, ContactRow,
    FactsQuery, GLOBAL_TENANT, PERSON_SUBJECT_PREFIX, SuppressionRow, scope_applies, scope_columns,
    scope_from_columns, suppression_action_from, suppression_action_name, suppression_tenant,
};
pub use deletion::{DeletionOutcome, DeletionRequest, PurgeOutcome, erased_kinds, erased_reason};
pub use imports::{
    ImportCounts, ImportJob, ImportMode, ImportStatus, JobMapping, LandedRow, RecordedChunk,
    RowOutcome, SignalEffects, decode_warnings, derived_id_range, encode_warnings,
};
pub use migrations::{AppliedMigration, Migration, MigrationError, plan_migrations};
pub use model::{
    ApiKeyRecord, AuditEntry, IdempotencyBegin, IdempotencyRequest, IdentityNodeRow, Page,
    PageRequest, StoredResponse, Tenant, TenantStats, Workspace,
};
pub use resolution::{
    ConflictRow, EventRow, IngestOutcome, KeepApartRule, LAST_SEEN_RESOLUTION_SECONDS,
    LoggedSignal, ManualMerge, MergeRow, PersonProfile, PersonRow, SignalRecord, TimelineEvent,
    TraitObservation, TraitValueRow, Unmerge, UnmergeOutcome, WorkspaceContactRow,
    conflict_rule_text, count_cursor, decode_identifiers, derived_id, encode_identifiers,
    limit_refusal, newest_first_page, parse_count_cursor, parse_timeline_cursor, timeline_cursor,
};
pub use webhooks::{
    AttemptNext, AttemptRecord, ClaimedDelivery, DeliveryAttempt, DeliveryClaim, DeliveryStatus,
    NewDelivery, Subscriber, Subscribers, WebhookDelivery, WebhookEvent, WebhookSubscription,
    compliance_events, decode_event_types, encode_event_types, import_completed_event, merge_event,
    person_deleted_event, signal_events, unmerge_event,
};

/// What can go wrong in a store, without driver types leaking out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    /// A uniqueness rule would be broken (the message says which).
    #[error("conflict: {0}")]
    Conflict(String),
    /// The database cannot be opened or used as it is (newer schema, locked data dir, ...).
    #[error("{0}")]
    Unusable(String),
    #[error("storage error: {0}")]
    Other(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// The storage interface. Methods are coarse: each is one transaction in the backend.
pub trait Store: Clone + Send + Sync + 'static {
    /// `sqlite` or `postgres`, for logs and metrics.
    fn backend(&self) -> &'static str;

    /// Checks that the database answers.
    fn ping(&self) -> impl Future<Output = StoreResult<()>> + Send;

    /// The highest migration version applied to this database.
    fn schema_version(&self) -> impl Future<Output = StoreResult<i64>> + Send;

    /// Flushes and closes; later calls fail with `Other`. Waits for in-flight writes.
    fn close(&self) -> impl Future<Output = ()> + Send;

    /// The keys this store seals and indexes PII with (plaintext until a vault is installed).
    /// The store holds data-encryption keys, never the operator's data key that wraps them.
    fn vault_slot(&self) -> &vault::VaultSlot;

    /// Rewrites, in one transaction, up to `limit` of the tenant's sealed rows (identity nodes,
    /// trait values, events, compliance logs, merges and conflicts, import rows and outcomes,
    /// kept responses, webhook payloads; and global suppression entries, which belong to no
    /// tenant) that are not sealed with the current key or not sealed at all, blind-indexing a
    /// plain row's lookup column; returns how many it rewrote (0: the tenant is done). Runs
    /// alongside ingestion: every key it reads with stays in the keyring, so no row is ever
    /// unreadable.
    fn reseal(
        &self,
        tenant_id: &TenantId,
        limit: u32,
    ) -> impl Future<Output = StoreResult<u64>> + Send;

    /// Creates a tenant; `Conflict` when its id is taken.
    fn create_tenant(&self, tenant: &Tenant) -> impl Future<Output = StoreResult<()>> + Send;

    fn get_tenant(&self, tenant_id: &TenantId) -> impl Future<Output = StoreResult<Tenant>> + Send;

    fn list_tenants(
        &self,
        page: &PageRequest,
    ) -> impl Future<Output = StoreResult<Page<Tenant>>> + Send;

    /// Creates a workspace; `Conflict` when its name is taken in the tenant.
    fn create_workspace(
        &self,
        workspace: &Workspace,
    ) -> impl Future<Output = StoreResult<()>> + Send;

    fn get_workspace(
        &self,
        tenant_id: &TenantId,
        name: &WorkspaceName,
    ) -> impl Future<Output = StoreResult<Workspace>> + Send;

    /// Workspaces ordered by name; the cursor is the last name of the previous page.
    fn list_workspaces(
        &self,
        tenant_id: &TenantId,
        page: &PageRequest,
    ) -> impl Future<Output = StoreResult<Page<Workspace>>> + Send;

    /// Stores a new key; `Conflict` when its id is taken.
    fn insert_api_key(&self, key: &ApiKeyRecord) -> impl Future<Output = StoreResult<()>> + Send;

    /// Inserts or replaces the master key row (the operator may change the master key).
    fn put_master_key(&self, key: &ApiKeyRecord) -> impl Future<Output = StoreResult<()>> + Send;

    /// A key by id, revoked or not.
    fn get_api_key(
        &self,
        tenant_id: &TenantId,
        key_id: &str,
    ) -> impl Future<Output = StoreResult<ApiKeyRecord>> + Send;

    /// Keys ordered by id; the cursor is the last id of the previous page.
    fn list_api_keys(
        &self,
        tenant_id: &TenantId,
        page: &PageRequest,
    ) -> impl Future<Output = StoreResult<Page<ApiKeyRecord>>> + Send;

    /// Marks a key revoked; `NotFound` when there is no such live key.
    fn revoke_api_key(
        &self,
        tenant_id: &TenantId,
        key_id: &str,
        at: Timestamp,
    ) -> impl Future<Output = StoreResult<()>> + Send;

    /// Finds the master key row (it lives in the `default` tenant) by the hash of a token.
    fn find_master_key(
        &self,
        hash: &KeyHash,
    ) -> impl Future<Output = StoreResult<ApiKeyRecord>> + Send;

    /// Appends identity nodes in one transaction; `Conflict` if one already exists.
    fn insert_identity_nodes(
        &self,
        tenant_id: &TenantId,
        rows: Vec<IdentityNodeRow>,
    ) -> impl Future<Output = StoreResult<()>> + Send;

    /// Every node holding `(kind, value)`: one for a `unique` kind, possibly more for `shared`.
    fn find_identity_nodes(
        &self,
        tenant_id: &TenantId,
        kind: &IdentifierKind,
        value: &str,
    ) -> impl Future<Output = StoreResult<Vec<IdentityNodeRow>>> + Send;

    fn count_identity_nodes(
        &self,
        tenant_id: &TenantId,
    ) -> impl Future<Output = StoreResult<u64>> + Send;

    /// Resolves and records signals in order, each atomically: a repeated message id is a
    /// `Duplicate` and changes nothing. Concurrent calls never create two persons for one
    /// `unique` identifier.
    fn ingest(
        &self,
        tenant_id: &TenantId,
        settings: &IdentitySettings,
        signals: Vec<SignalRecord>,
    ) -> impl Future<Output = StoreResult<Vec<IngestOutcome>>> + Send;

    /// [`ingest`](Self::ingest) for a chunk of an import job. The answer may come before the
    /// commit reaches the disk: a power cut can take the chunk back whole (never part of it),
    /// and the job, resumed after its last recorded chunk, resolves it again (decision 0023).
    /// Every commit of the store that does wait for the disk, such as `complete_import`'s,
    /// makes the chunks before it durable too.
    fn ingest_import_chunk(
        &self,
        tenant_id: &TenantId,
        settings: &IdentitySettings,
        signals: Vec<SignalRecord>,
    ) -> impl Future<Output = StoreResult<Vec<IngestOutcome>>> + Send {
        self.ingest(tenant_id, settings, signals)
    }

    /// Merges `absorbed`'s group into `survivor`'s group, under the same limits as any merge:
    /// `Conflict` (naming the limit) when the union would break one, or when both are already
    /// one person; `NotFound` for an unknown person. Serialized with resolution.
    fn merge_persons(
        &self,
        tenant_id: &TenantId,
        settings: &IdentitySettings,
        merge: ManualMerge,
    ) -> impl Future<Output = StoreResult<MergeRow>> + Send;

    /// Canonical persons holding at least `min_identifiers` identifiers across their group, most
    /// first (ties by id), with the count: where over-merged "mega persons" glued by a shared
    /// device or a junk value show up. The cursor is the last `<count>:<person id>`.
    fn persons_by_identifier_count(
        &self,
        tenant_id: &TenantId,
        min_identifiers: u32,
        page: &PageRequest,
    ) -> impl Future<Output = StoreResult<Page<(String, u64)>>> + Send;

    /// Claims an idempotency key for a request, atomically: at most one caller gets `Run` for
    /// a key until it finishes (or its claim times out).
    fn idempotency_begin(
        &self,
        request: &IdempotencyRequest,
    ) -> impl Future<Output = StoreResult<IdempotencyBegin>> + Send;

    /// Completes a claim with the response to replay, or releases it (`None`: the request
    /// failed in a way a retry may fix, so nothing is kept).
    fn idempotency_finish(
        &self,
        request: &IdempotencyRequest,
        response: Option<StoredResponse>,
    ) -> impl Future<Output = StoreResult<()>> + Send;

    /// Counts of the tenant's graph; events are counted by kind and day from `events_since`.
    fn stats(
        &self,
        tenant_id: &TenantId,
        events_since: Timestamp,
    ) -> impl Future<Output = StoreResult<TenantStats>> + Send;

    /// Appends audit entries, in one transaction.
    fn append_audit(
        &self,
        entries: Vec<AuditEntry>,
    ) -> impl Future<Output = StoreResult<()>> + Send;

    /// The tenant's audit log, newest first; the cursor is the last entry id of the page.
    fn list_audit(
        &self,
        tenant_id: &TenantId,
        page: &PageRequest,
    ) -> impl Future<Output = StoreResult<Page<AuditEntry>>> + Send;

    /// Undoes a merge: the absorbed person (with the persons merged into it before) is
    /// canonical again, events recorded since with only its side's identifiers go back to it
    /// (with the identifiers and traits they brought), the unmerge is recorded, and a
    /// keep-apart rule stops resolution from merging the two again. `NotFound` for an unknown
    /// merge; `Conflict` when it was already undone. Serialized with resolution.
    fn unmerge(
        &self,
        tenant_id: &TenantId,
        unmerge: Unmerge,
    ) -> impl Future<Output = StoreResult<UnmergeOutcome>> + Send;

    /// The keep-apart rules in force that name this person.
    fn keep_apart_rules(
        &self,
        tenant_id: &TenantId,
        person_id: &str,
    ) -> impl Future<Output = StoreResult<Vec<KeepApartRule>>> + Send;

    /// Lifts a keep-apart rule; `NotFound` when there is no such rule in force.
    fn remove_keep_apart(
        &self,
        tenant_id: &TenantId,
        rule_id: &str,
        at: Timestamp,
    ) -> impl Future<Output = StoreResult<()>> + Send;

    /// The canonical person owning an identifier, if any.
    fn lookup_person(
        &self,
        tenant_id: &TenantId,
        identifier: &Identifier,
    ) -> impl Future<Output = StoreResult<Option<String>>> + Send;

    /// A person row by id, absorbed or not.
    fn get_person(
        &self,
        tenant_id: &TenantId,
        person_id: &str,
    ) -> impl Future<Output = StoreResult<PersonRow>> + Send;

    /// Everything about a canonical person and the persons merged into it.
    fn person_profile(
        &self,
        tenant_id: &TenantId,
        person_id: &str,
    ) -> impl Future<Output = StoreResult<PersonProfile>> + Send;

    /// Events of a canonical person and the persons merged into it, newest first. The cursor
    /// is the last `occurred_at` and event id of the previous page.
    fn timeline(
        &self,
        tenant_id: &TenantId,
        person_id: &str,
        kind: Option<&str>,
        page: &PageRequest,
    ) -> impl Future<Output = StoreResult<Page<TimelineEvent>>> + Send;

    /// Merges into or out of a canonical person's group, and its conflicts.
    fn merges_of(
        &self,
        tenant_id: &TenantId,
        person_id: &str,
    ) -> impl Future<Output = StoreResult<(Vec<MergeRow>, Vec<ConflictRow>)>> + Send;

    /// The tenant's signals in the order they were resolved: those after position `after`
    /// (0 = from the start), at most `limit`.
    fn signal_log(
        &self,
        tenant_id: &TenantId,
        after: i64,
        limit: u32,
    ) -> impl Future<Output = StoreResult<Vec<LoggedSignal>>> + Send;

    /// Records consent events, suppression entries and contact records in one transaction.
    /// A consent event on a person is recorded for every person merged into it as well;
    /// `NotFound` when the person does not exist.
    fn record_compliance(
        &self,
        tenant_id: &TenantId,
        writes: ComplianceWrites,
    ) -> impl Future<Output = StoreResult<()>> + Send;

    /// What bears on checking each address in `workspace`, all read from one snapshot: once a
    /// write is acknowledged, every later call sees it.
    fn compliance_facts(
        &self,
        tenant_id: &TenantId,
        workspace: &WorkspaceName,
        queries: Vec<FactsQuery>,
    ) -> impl Future<Output = StoreResult<Vec<AddressFacts>>> + Send;

    /// Consent events of a person's group: every member and every identifier of it.
    fn person_consent(
        &self,
        tenant_id: &TenantId,
        person_id: &str,
    ) -> impl Future<Output = StoreResult<Vec<ConsentEventRow>>> + Send;

    /// Every suppression add and lift of an address, in the tenant and the global list.
    fn suppression_history(
        &self,
        tenant_id: &TenantId,
        address: &Identifier,
    ) -> impl Future<Output = StoreResult<Vec<SuppressionRow>>> + Send;

    /// A named settings document of the tenant (JSON text), if it was ever set.
    fn tenant_setting(
        &self,
        tenant_id: &TenantId,
        name: &str,
    ) -> impl Future<Output = StoreResult<Option<String>>> + Send;

    fn put_tenant_setting(
        &self,
        tenant_id: &TenantId,
        name: &str,
        settings: String,
        at: Timestamp,
    ) -> impl Future<Output = StoreResult<()>> + Send;

    /// One logged signal by its event id.
    fn get_signal(
        &self,
        tenant_id: &TenantId,
        event_id: &str,
    ) -> impl Future<Output = StoreResult<LoggedSignal>> + Send;

    /// A tenant's identity settings as stored (JSON text), if it ever changed them.
    fn identity_settings(
        &self,
        tenant_id: &TenantId,
    ) -> impl Future<Output = StoreResult<Option<String>>> + Send;

    fn put_identity_settings(
        &self,
        tenant_id: &TenantId,
        settings: String,
        at: Timestamp,
    ) -> impl Future<Output = StoreResult<()>> + Send;

    /// Whether only this process can use the store while it is open (the embedded store locks
    /// its data dir): work another process was doing can then only belong to a dead process.
    fn single_process(&self) -> bool;

    /// Stores a new import job as given (status `landing`, nothing landed); `Conflict` when the
    /// id is taken.
    fn create_import(
        &self,
        tenant_id: &TenantId,
        job: &ImportJob,
    ) -> impl Future<Output = StoreResult<()>> + Send;

    fn get_import(
        &self,
        tenant_id: &TenantId,
        job_id: &str,
    ) -> impl Future<Output = StoreResult<ImportJob>> + Send;

    /// Jobs, newest first; the cursor is the last job id of the previous page.
    fn list_imports(
        &self,
        tenant_id: &TenantId,
        page: &PageRequest,
    ) -> impl Future<Output = StoreResult<Page<ImportJob>>> + Send;

    /// Jobs still landing or processing.
    fn unfinished_imports(
        &self,
        tenant_id: &TenantId,
    ) -> impl Future<Output = StoreResult<Vec<ImportJob>>> + Send;

    /// Appends landed rows, numbered on from the job's `landed`, in one transaction. `Conflict`
    /// unless the job is landing and the first row is `landed + 1`, so a repeated batch is
    /// refused rather than stored twice.
    /// The answer may come before the commit reaches the disk, as with `ingest_import_chunk`:
    /// `finish_import_landing` is durable, with every batch before it.
    fn land_import_rows(
        &self,
        tenant_id: &TenantId,
        job_id: &str,
        rows: Vec<LandedRow>,
        at: Timestamp,
    ) -> impl Future<Output = StoreResult<()>> + Send;

    /// Ends LAND: records the file's hash, size and warnings, and the job becomes `processing`.
    /// `Conflict` unless it was landing.
    fn finish_import_landing(
        &self,
        tenant_id: &TenantId,
        job_id: &str,
        file_sha256: &str,
        file_bytes: u64,
        warnings: Vec<String>,
        at: Timestamp,
    ) -> impl Future<Output = StoreResult<()>> + Send;

    /// Marks a job failed with its reason and releases it. What it landed stays.
    fn fail_import(
        &self,
        tenant_id: &TenantId,
        job_id: &str,
        error: &str,
        at: Timestamp,
    ) -> impl Future<Output = StoreResult<()>> + Send;

    /// Takes a `landing` or `processing` job for `runner` when nobody holds it, `runner` already
    /// does, or the holder's heartbeat is older than `stale_before`; returns the job when taken.
    /// A landing job is processed while its rows arrive (decision 0020).
    fn claim_import(
        &self,
        tenant_id: &TenantId,
        job_id: &str,
        runner: &str,
        at: Timestamp,
        stale_before: Timestamp,
    ) -> impl Future<Output = StoreResult<Option<ImportJob>>> + Send;

    /// Landed rows after row `after`, in order, at most `limit`.
    fn landed_rows(
        &self,
        tenant_id: &TenantId,
        job_id: &str,
        after: u64,
        limit: u32,
    ) -> impl Future<Output = StoreResult<Vec<LandedRow>>> + Send;

    /// Records a chunk's row outcomes, adds its counts, moves `processed` to `chunk.to` and
    /// refreshes the heartbeat, in one transaction, if `chunk.runner` holds the job (landing or
    /// processing) at `chunk.from` with `chunk.mapping_version` and `chunk.to` has landed;
    /// otherwise `Conflict` and nothing changes.
    /// Like `ingest_import_chunk`, the answer may come before the commit reaches the disk.
    fn record_import_chunk(
        &self,
        tenant_id: &TenantId,
        job_id: &str,
        chunk: RecordedChunk,
    ) -> impl Future<Output = StoreResult<()>> + Send;

    /// Marks a processing job held by `runner` completed once every landed row is processed,
    /// and releases it; `Conflict` otherwise. Durable when it answers, with every chunk recorded before it.
    fn complete_import(
        &self,
        tenant_id: &TenantId,
        job_id: &str,
        runner: &str,
        at: Timestamp,
    ) -> impl Future<Output = StoreResult<()>> + Send;

    /// Starts PARSE..RECORD again over the landed rows with `mapping` (whose version must be the
    /// job's plus one): outcomes and counts are cleared and the job is `processing`, held by
    /// `runner`. `Conflict` while the job is landing or processing, or if its file never
    /// finished landing. Returns the job as it now is.
    fn reprocess_import(
        &self,
        tenant_id: &TenantId,
        job_id: &str,
        mapping: JobMapping,
        options: String,
        runner: &str,
        at: Timestamp,
    ) -> impl Future<Output = StoreResult<ImportJob>> + Send;

    /// Row outcomes in row order (only `outcome` when given); the cursor is the last row number.
    fn import_outcomes(
        &self,
        tenant_id: &TenantId,
        job_id: &str,
        outcome: Option<&str>,
        page: &PageRequest,
    ) -> impl Future<Output = StoreResult<Page<RowOutcome>>> + Send;

    /// For each message id of `workspace`, what its stored signal did, or `None` when no
    /// signal has that id.
    fn signal_effects(
        &self,
        tenant_id: &TenantId,
        workspace: &WorkspaceName,
        message_ids: Vec<String>,
    ) -> impl Future<Output = StoreResult<Vec<Option<SignalEffects>>>> + Send;

    /// Deletes a person's group (decision 0011): it vanishes from every read at once, its
    /// identifiers become tombstones, and what it left waits for `purge_deleted`. `NotFound`
    /// for an unknown or already deleted person. Serialized with resolution.
    fn delete_person(
        &self,
        tenant_id: &TenantId,
        request: DeletionRequest,
    ) -> impl Future<Output = StoreResult<DeletionOutcome>> + Send;

    /// Hard-deletes everything deleted persons left whose `purge_after` is at or before `now`.
    fn purge_deleted(
        &self,
        tenant_id: &TenantId,
        now: Timestamp,
    ) -> impl Future<Output = StoreResult<PurgeOutcome>> + Send;

    /// Which of `entry_ids` are stored suppression entries of the tenant.
    fn stored_suppression_entries(
        &self,
        tenant_id: &TenantId,
        entry_ids: Vec<String>,
    ) -> impl Future<Output = StoreResult<Vec<String>>> + Send;

    /// Stores a new webhook subscription; `Conflict` when its id is taken.
    fn create_webhook(
        &self,
        tenant_id: &TenantId,
        subscription: &WebhookSubscription,
    ) -> impl Future<Output = StoreResult<()>> + Send;

    /// A subscription, enabled or disabled; `NotFound` once deleted.
    fn get_webhook(
        &self,
        tenant_id: &TenantId,
        subscription_id: &str,
    ) -> impl Future<Output = StoreResult<WebhookSubscription>> + Send;

    /// Subscriptions ordered by id; the cursor is the last id of the previous page.
    fn list_webhooks(
        &self,
        tenant_id: &TenantId,
        page: &PageRequest,
    ) -> impl Future<Output = StoreResult<Page<WebhookSubscription>>> + Send;

    /// Deletes a subscription and cancels its pending deliveries; its log stays readable by id
    /// no more. `NotFound` when there is no such live subscription.
    fn delete_webhook(
        &self,
        tenant_id: &TenantId,
        subscription_id: &str,
        at: Timestamp,
    ) -> impl Future<Output = StoreResult<()>> + Send;

    /// Disables (`Some(reason)`) or re-enables (`None`) a subscription; pending deliveries wait
    /// while it is disabled and resume, in order, once it is enabled again.
    fn set_webhook_disabled(
        &self,
        tenant_id: &TenantId,
        subscription_id: &str,
        disabled: Option<String>,
        at: Timestamp,
    ) -> impl Future<Output = StoreResult<WebhookSubscription>> + Send;

    /// A subscription's deliveries, newest first; the cursor is the last `seq` of the page.
    fn list_webhook_deliveries(
        &self,
        tenant_id: &TenantId,
        subscription_id: &str,
        page: &PageRequest,
    ) -> impl Future<Output = StoreResult<Page<WebhookDelivery>>> + Send;

    /// The logged attempts of these deliveries, in attempt order.
    fn webhook_attempts(
        &self,
        tenant_id: &TenantId,
        delivery_ids: Vec<String>,
    ) -> impl Future<Output = StoreResult<Vec<DeliveryAttempt>>> + Send;

    /// Takes due deliveries for `claim.owner` until `claim.lease_until`: of each enabled
    /// subscription only the oldest pending delivery, and only when it is due and nobody else
    /// holds it, so an endpoint has one delivery in flight and gets them in order. Safe with
    /// several processes on one database: a delivery is taken by at most one owner at a time.
    fn claim_webhook_deliveries(
        &self,
        tenant_id: &TenantId,
        claim: &DeliveryClaim,
    ) -> impl Future<Output = StoreResult<Vec<ClaimedDelivery>>> + Send;

    /// Logs an attempt and applies what follows it, in one transaction, releasing the lease.
    /// `Conflict` (and nothing changes) when `record.owner` no longer holds the delivery.
    fn record_webhook_attempt(
        &self,
        tenant_id: &TenantId,
        delivery_id: &str,
        record: AttemptRecord,
    ) -> impl Future<Output = StoreResult<()>> + Send;

    /// Deletes up to `limit` deliveries that finished (delivered, failed or cancelled) before
    /// `finished_before`, with their attempts; pending ones stay whatever their age. Returns
    /// how many went: fewer than `limit` means none are left.
    fn prune_webhook_deliveries(
        &self,
        tenant_id: &TenantId,
        finished_before: Timestamp,
        limit: u32,
    ) -> impl Future<Output = StoreResult<u64>> + Send;
}
