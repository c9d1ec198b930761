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
