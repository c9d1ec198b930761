//! The rows the store reads and writes, in domain types.

use idgraph_core::auth::{KeyHash, Scopes};
use idgraph_core::identity::IdentifierKind;
use idgraph_core::tenancy::{Environment, TenantId, WorkspaceName};
use jiff::Timestamp;

#[derive(Debug, Clone, PartialEq)]
pub struct Tenant {
    pub id: TenantId,
    pub name: String,
    pub created_at: Timestamp,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Workspace {
    pub tenant_id: TenantId,
    pub id: String,
    pub name: WorkspaceName,
    pub environment: Environment,
    pub created_at: Timestamp,
}

/// A stored API key: the hash of its secret and what it may do.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiKeyRecord {
    pub tenant_id: TenantId,
    pub key_id: String,
    pub name: String,
    pub hash: KeyHash,
    pub scopes: Scopes,
    /// The workspace a key is bound to; `None` for tenant-wide keys.
    pub workspace: Option<WorkspaceName>,
    pub rate_limit_per_sec: Option<u32>,
    /// The master key acts on every tenant.
    pub is_master: bool,
    pub created_at: Timestamp,
    pub revoked_at: Option<Timestamp>,
}

/// One (kind, normalized value) → person link with its provenance.
#[derive(Debug, Clone, PartialEq)]
pub struct IdentityNodeRow {
    pub kind: IdentifierKind,
    pub value: String,
    pub person_id: String,
    pub source: String,
    pub confidence: f64,
    pub first_seen: Timestamp,
    pub last_seen: Timestamp,
    pub signal_id: Option<String>,
}

/// A keyset page request: at most `limit` items strictly after `after`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageRequest {
    pub limit: u32,
    pub after: Option<String>,
}

impl PageRequest {
    pub const DEFAULT_LIMIT: u32 = 50;
    pub const MAX_LIMIT: u32 = 1000;

    pub fn first(limit: u32) -> Self {
        Self { limit, after: None }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// The cursor of the next page; `None` at the end.
    pub next_cursor: Option<String>,
}

impl<T> Page<T> {
    /// Builds a page from up to `limit + 1` fetched rows: the extra row only says there is more.
    pub fn from_overfetch(mut rows: Vec<T>, limit: u32, cursor_of: impl Fn(&T) -> String) -> Self {
        let limit = limit as usize;
        let more = rows.len() > limit;
        rows.truncate(limit);
        let next_cursor = if more {
            rows.last().map(cursor_of)
        } else {
            None
        };
        Self {
            items: rows,
            next_cursor,
        }
    }
}

/// One authenticated management call, as the audit log keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEntry {
    /// A ULID: the log pages by it, newest first.
    pub entry_id: String,
    /// The tenant acted on.
    pub tenant_id: TenantId,
    pub at: Timestamp,
    /// The key that called.
    pub actor: String,
    pub actor_tenant: TenantId,
    /// Set when a master key acted for this tenant (`X-Idgraph-On-Behalf-Of`).
    pub on_behalf_of: Option<TenantId>,
    /// `METHOD /route/{pattern}`.
    pub action: String,
    /// The object named in the path (its `{id}`), if any.
    pub object: Option<String>,
    pub status: u16,
    pub latency_us: u64,
}

/// Identifies one idempotent request: whose credential, which key, which request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyRequest {
    pub tenant_id: TenantId,
    /// Hex SHA-256 of the credential that made the request.
    pub scope: String,
    pub key: String,
    /// Hex SHA-256 of the method, path and body.
    pub fingerprint: String,
    pub at: Timestamp,
    /// A completed response older than this is forgotten and the key may be used afresh.
    pub retention: jiff::SignedDuration,
    /// A request still pending after this long is taken as abandoned (its process died).
    pub pending_timeout: jiff::SignedDuration,
}

impl IdempotencyRequest {
    /// Uses of a key before this are forgotten.
    pub fn expired_before(&self) -> Timestamp {
        self.at
            .checked_sub(self.retention)
            .unwrap_or(Timestamp::MIN)
    }

    /// Claims made before this and still pending are taken as abandoned.
    pub fn abandoned_before(&self) -> Timestamp {
        self.at
            .checked_sub(self.pending_timeout)
            .unwrap_or(Timestamp::MIN)
    }
}

/// A response kept for replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResponse {
    pub status: u16,
    pub content_type: Option<String>,
    pub body: Vec<u8>,
}

/// What to do with an idempotent request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdempotencyBegin {
    /// First time (or the earlier use expired): run it, then `idempotency_finish`.
    Run,
    /// The same request is being run right now.
    InProgress,
    /// The key was used for a different request.
    Mismatch,
    /// Done before: replay this.
    Replay(StoredResponse),
}

/// A tenant's counts, computed by aggregate queries in the database.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TenantStats {
    /// Persons not merged into another.
    pub persons: u64,
    /// Persons merged into another (their ids answer with the survivor).
    pub persons_absorbed: u64,
    pub identifiers_by_kind: Vec<(String, u64)>,
    /// (day as `YYYY-MM-DD` UTC, event kind, count) for events since the requested day.
    pub events_by_kind_and_day: Vec<(String, String, u64)>,
    pub merges: u64,
    pub conflicts: u64,
    /// Import jobs by status (`landing`, `processing`, `completed`, `failed`).
    pub imports_by_status: Vec<(String, u64)>,
    /// Rows landed by all import jobs.
    pub import_rows: u64,
}
