//! Conversions between SQLite values and domain types, and error mapping.

use idgraph_core::auth::{KeyHash, Scopes};
use idgraph_core::identity::IdentifierKind;
use idgraph_core::tenancy::{TenantId, WorkspaceName};
use idgraph_store::{ApiKeyRecord, AuditEntry, IdentityNodeRow, StoreError, Tenant, Workspace};
use jiff::Timestamp;
use rusqlite::Row;
use rusqlite::types::Type;

/// Maps a driver error to the store's small error set; the driver type never leaves this crate.
pub fn map_error(error: rusqlite::Error) -> StoreError {
    match &error {
        rusqlite::Error::QueryReturnedNoRows => StoreError::NotFound,
        rusqlite::Error::SqliteFailure(e, message)
            if e.code == rusqlite::ErrorCode::ConstraintViolation =>
        {
            StoreError::Conflict(message.clone().unwrap_or_else(|| error.to_string()))
        }
        rusqlite::Error::ToSqlConversionFailure(inner) => StoreError::Other(inner.to_string()),
        _ => StoreError::Other(error.to_string()),
    }
}

/// Carries a store error (a value that does not open) out of a row mapper.
pub(crate) fn in_row(error: StoreError) -> rusqlite::Error {
    rusqlite::Error::ToSqlConversionFailure(Box::new(error))
}

/// A column that holds text in some rows and bytes in others (a trait set's first and compact
/// forms), as bytes.
pub(crate) fn text_or_bytes(row: &Row<'_>, index: usize) -> rusqlite::Result<Vec<u8>> {
    match row.get_ref(index)? {
        rusqlite::types::ValueRef::Text(bytes) | rusqlite::types::ValueRef::Blob(bytes) => {
            Ok(bytes.to_vec())
        }
        other => Err(rusqlite::Error::FromSqlConversionFailure(
            index,
            other.data_type(),
            "neither text nor bytes".into(),
        )),
    }
}

pub(crate) fn micros(ts: Timestamp) -> i64 {
    ts.as_microsecond()
}

fn bad_column(index: usize, what: impl std::fmt::Display) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(index, Type::Text, what.to_string().into())
}

fn timestamp(row: &Row<'_>, index: usize) -> rusqlite::Result<Timestamp> {
    Timestamp::from_microsecond(row.get(index)?).map_err(|e| bad_column(index, e))
}

fn parsed<T, E: std::fmt::Display>(
    row: &Row<'_>,
    index: usize,
    parse: impl Fn(&str) -> Result<T, E>,
) -> rusqlite::Result<T> {
    let raw: String = row.get(index)?;
    parse(&raw).map_err(|e| bad_column(index, e))
}

/// `tenant_id, name, created_at`
pub(crate) fn tenant(row: &Row<'_>) -> rusqlite::Result<Tenant> {
    Ok(Tenant {
        id: parsed(row, 0, TenantId::parse)?,
        name: row.get(1)?,
        created_at: timestamp(row, 2)?,
    })
}

/// `tenant_id, name, workspace_id, environment, created_at`
pub(crate) fn workspace(row: &Row<'_>) -> rusqlite::Result<Workspace> {
    Ok(Workspace {
        tenant_id: parsed(row, 0, TenantId::parse)?,
        name: parsed(row, 1, WorkspaceName::parse)?,
        id: row.get(2)?,
        environment: parsed(row, 3, str::parse)?,
        created_at: timestamp(row, 4)?,
    })
}

pub(crate) const API_KEY_COLUMNS: &str = "tenant_id, key_id, name, key_hash, scopes, workspace, \
     rate_limit_per_sec, is_master, created_at, revoked_at";

pub(crate) fn api_key(row: &Row<'_>) -> rusqlite::Result<ApiKeyRecord> {
    let hash: Vec<u8> = row.get(3)?;
    let hash: [u8; 32] = hash
        .try_into()
        .map_err(|_| bad_column(3, "key hash is not 32 bytes"))?;
    let workspace: Option<String> = row.get(5)?;
    let revoked_at: Option<i64> = row.get(9)?;
    Ok(ApiKeyRecord {
        tenant_id: parsed(row, 0, TenantId::parse)?,
        key_id: row.get(1)?,
        name: row.get(2)?,
        hash: KeyHash(hash),
        scopes: parsed(row, 4, Scopes::from_storage)?,
        workspace: workspace
            .map(|w| WorkspaceName::parse(&w).map_err(|e| bad_column(5, e)))
            .transpose()?,
        rate_limit_per_sec: row.get(6)?,
        is_master: row.get(7)?,
        created_at: timestamp(row, 8)?,
        revoked_at: revoked_at
            .map(|t| Timestamp::from_microsecond(t).map_err(|e| bad_column(9, e)))
            .transpose()?,
    })
}

/// Reads a node from [`crate::nodes::NODE_COLUMNS`].
pub(crate) fn identity_node(row: &Row<'_>) -> rusqlite::Result<IdentityNodeRow> {
    Ok(IdentityNodeRow {
        kind: parsed(row, 0, IdentifierKind::parse)?,
        value: row.get(1)?,
        person_id: row.get(2)?,
        source: row.get(3)?,
        confidence: row.get(4)?,
        first_seen: timestamp(row, 5)?,
        last_seen: timestamp(row, 6)?,
        signal_id: row.get(7)?,
    })
}

/// `tenant_id, entry_id, at, actor, actor_tenant, on_behalf_of, action, object, status, latency_us`
pub(crate) fn audit_entry(row: &Row<'_>) -> rusqlite::Result<AuditEntry> {
    let on_behalf_of: Option<String> = row.get(5)?;
    let latency: i64 = row.get(9)?;
    Ok(AuditEntry {
        tenant_id: parsed(row, 0, TenantId::parse)?,
        entry_id: row.get(1)?,
        at: timestamp(row, 2)?,
        actor: row.get(3)?,
        actor_tenant: parsed(row, 4, TenantId::parse)?,
        on_behalf_of: on_behalf_of
            .map(|t| TenantId::parse(&t).map_err(|e| bad_column(5, e)))
            .transpose()?,
        action: row.get(6)?,
        object: row.get(7)?,
        status: row.get(8)?,
        latency_us: u64::try_from(latency).unwrap_or(0),
    })
}
