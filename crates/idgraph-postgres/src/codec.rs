//! Conversions between PostgreSQL values and domain types, and error mapping.

use std::time::SystemTime;

use idgraph_core::auth::{KeyHash, Scopes};
use idgraph_core::identity::IdentifierKind;
use idgraph_core::tenancy::{TenantId, WorkspaceName};
use idgraph_store::{
    ApiKeyRecord, AuditEntry, IdentityNodeRow, StoreError, StoreResult, Tenant, Workspace,
};
use jiff::Timestamp;
use tokio_postgres::Row;
use tokio_postgres::error::SqlState;

/// Maps a driver error to the store's small error set; the driver type never leaves this crate.
pub fn map_error(error: tokio_postgres::Error) -> StoreError {
    match error.as_db_error() {
        Some(db) if *db.code() == SqlState::UNIQUE_VIOLATION => {
            StoreError::Conflict(db.message().to_owned())
        }
        _ => StoreError::Other(chain(&error)),
    }
}

/// The error and its sources on one line: tokio-postgres puts the useful part in the source.
pub(crate) fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let next = cause.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = cause.source();
    }
    text
}

pub(crate) fn to_sql_time(ts: Timestamp) -> SystemTime {
    SystemTime::from(ts)
}

/// A timestamp as PostgreSQL keeps it: whole microseconds, truncated toward 2000-01-01 the way
/// the driver encodes a `SystemTime`. Values compared in memory with values read back from the
/// database must be at this precision, or a nanosecond could decide what the database would
/// call a tie.
pub(crate) fn at_stored_precision(ts: Timestamp) -> Timestamp {
    const POSTGRES_EPOCH_NANOS: i128 = 946_684_800 * 1_000_000_000;
    let since_epoch = ts.as_nanosecond() - POSTGRES_EPOCH_NANOS;
    // Integer division truncates toward zero, that is toward the epoch on both sides of it.
    let truncated = since_epoch / 1_000 * 1_000;
    // Between `ts` and the epoch, so always in range.
    Timestamp::from_nanosecond(POSTGRES_EPOCH_NANOS + truncated).unwrap_or(ts)
}

pub(crate) fn corrupt(what: impl std::fmt::Display) -> StoreError {
    StoreError::Other(format!("unreadable row: {what}"))
}

pub(crate) fn time(row: &Row, index: usize) -> StoreResult<Timestamp> {
    let raw: SystemTime = row.try_get(index).map_err(map_error)?;
    Timestamp::try_from(raw).map_err(corrupt)
}

pub(crate) fn text(row: &Row, index: usize) -> StoreResult<String> {
    row.try_get(index).map_err(map_error)
}

/// `tenant_id, name, created_at`
pub(crate) fn tenant(row: &Row) -> StoreResult<Tenant> {
    Ok(Tenant {
        id: TenantId::parse(&text(row, 0)?).map_err(corrupt)?,
        name: text(row, 1)?,
        created_at: time(row, 2)?,
    })
}

/// `tenant_id, name, workspace_id, environment, created_at`
pub(crate) fn workspace(row: &Row) -> StoreResult<Workspace> {
    Ok(Workspace {
        tenant_id: TenantId::parse(&text(row, 0)?).map_err(corrupt)?,
        name: WorkspaceName::parse(&text(row, 1)?).map_err(corrupt)?,
        id: text(row, 2)?,
        environment: text(row, 3)?.parse().map_err(corrupt)?,
        created_at: time(row, 4)?,
    })
}

pub(crate) const API_KEY_COLUMNS: &str = "tenant_id, key_id, name, key_hash, scopes, workspace, \
     rate_limit_per_sec, is_master, created_at, revoked_at";

pub(crate) fn api_key(row: &Row) -> StoreResult<ApiKeyRecord> {
    let hash: Vec<u8> = row.try_get(3).map_err(map_error)?;
    let hash: [u8; 32] = hash
        .try_into()
        .map_err(|_| corrupt("key hash is not 32 bytes"))?;
    let workspace: Option<String> = row.try_get(5).map_err(map_error)?;
    let rate: Option<i32> = row.try_get(6).map_err(map_error)?;
    let revoked: Option<SystemTime> = row.try_get(9).map_err(map_error)?;
    Ok(ApiKeyRecord {
        tenant_id: TenantId::parse(&text(row, 0)?).map_err(corrupt)?,
        key_id: text(row, 1)?,
        name: text(row, 2)?,
        hash: KeyHash(hash),
        scopes: Scopes::from_storage(&text(row, 4)?).map_err(corrupt)?,
        workspace: workspace
            .map(|w| WorkspaceName::parse(&w).map_err(corrupt))
            .transpose()?,
        rate_limit_per_sec: rate
            .map(|r| u32::try_from(r).map_err(corrupt))
            .transpose()?,
        is_master: row.try_get(7).map_err(map_error)?,
        created_at: time(row, 8)?,
        revoked_at: revoked
            .map(|t| Timestamp::try_from(t).map_err(corrupt))
            .transpose()?,
    })
}

pub(crate) const NODE_COLUMNS: &str =
    "kind, value, person_id, source, confidence, first_seen, last_seen, signal_id";
/// `NODE_COLUMNS` with the value as stored: sealed when there is a sealed copy (open it with
/// `Vault::open_nodes`), plain otherwise.
pub(crate) const NODE_READ_COLUMNS: &str = "kind, COALESCE(value_sealed, value) AS value, \
    person_id, source, confidence, first_seen, last_seen, signal_id";

pub(crate) fn identity_node(row: &Row) -> StoreResult<IdentityNodeRow> {
    Ok(IdentityNodeRow {
        kind: IdentifierKind::parse(&text(row, 0)?).map_err(corrupt)?,
        value: text(row, 1)?,
        person_id: text(row, 2)?,
        source: text(row, 3)?,
        confidence: row.try_get(4).map_err(map_error)?,
        first_seen: time(row, 5)?,
        last_seen: time(row, 6)?,
        signal_id: row.try_get(7).map_err(map_error)?,
    })
}

/// `tenant_id, entry_id, at, actor, actor_tenant, on_behalf_of, action, object, status, latency_us`
pub(crate) fn audit_entry(row: &Row) -> StoreResult<AuditEntry> {
    let on_behalf_of: Option<String> = row.try_get(5).map_err(map_error)?;
    let status: i32 = row.try_get(8).map_err(map_error)?;
    let latency: i64 = row.try_get(9).map_err(map_error)?;
    Ok(AuditEntry {
        tenant_id: TenantId::parse(&text(row, 0)?).map_err(corrupt)?,
        entry_id: text(row, 1)?,
        at: time(row, 2)?,
        actor: text(row, 3)?,
        actor_tenant: TenantId::parse(&text(row, 4)?).map_err(corrupt)?,
        on_behalf_of: on_behalf_of
            .map(|t| TenantId::parse(&t).map_err(corrupt))
            .transpose()?,
        action: text(row, 6)?,
        object: row.try_get(7).map_err(map_error)?,
        status: u16::try_from(status).map_err(corrupt)?,
        latency_us: u64::try_from(latency).unwrap_or(0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_precision_truncates_toward_the_postgres_epoch() {
        let after = Timestamp::from_nanosecond(1_800_000_000_123_456_789).unwrap();
        assert_eq!(
            at_stored_precision(after),
            Timestamp::from_nanosecond(1_800_000_000_123_456_000).unwrap()
        );
        // Before 2000-01-01 the driver counts microseconds back from it, so truncation goes up.
        let before = Timestamp::from_nanosecond(900_000_000_123_456_789).unwrap();
        assert_eq!(
            at_stored_precision(before),
            Timestamp::from_nanosecond(900_000_000_123_457_000).unwrap()
        );
    }
}
