//! Webhook subscriptions, the outbox and the delivery log on the embedded store.
//!
//! Outbox rows are written by `enqueue` inside the writer's transaction of the change they
//! announce; the worker claims them through the same writer, so a claim never races a write.

use idgraph_core::tenancy::WorkspaceName;
use idgraph_core::webhooks::EventType;
use idgraph_store::{
    AttemptNext, AttemptRecord, ClaimedDelivery, DeliveryAttempt, DeliveryClaim, DeliveryStatus,
    Page, PageRequest, StoreError, StoreResult, Subscriber, Subscribers, WebhookDelivery,
    WebhookEvent, WebhookSubscription, decode_event_types, encode_event_types,
};
use jiff::Timestamp;
use rusqlite::{Connection, OptionalExtension, Row, params};

use idgraph_store::vault::{Vault, column};

use crate::codec::{map_error, micros};

fn bad(index: usize, what: impl std::fmt::Display) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(
        index,
        rusqlite::types::Type::Text,
        what.to_string().into(),
    )
}

fn time(row: &Row<'_>, index: usize) -> rusqlite::Result<Timestamp> {
    Timestamp::from_microsecond(row.get(index)?).map_err(|e| bad(index, e))
}

fn maybe_time(row: &Row<'_>, index: usize) -> rusqlite::Result<Option<Timestamp>> {
    row.get::<_, Option<i64>>(index)?
        .map(|t| Timestamp::from_microsecond(t).map_err(|e| bad(index, e)))
        .transpose()
}

/// The active subscriptions of a tenant: one primary-key range read, cheap enough to do in
/// every writing transaction.
pub(crate) fn subscribers(conn: &Connection, tenant: &str) -> StoreResult<Subscribers> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT subscription_id, workspace, events FROM webhook_subscriptions
             WHERE tenant_id = ?1 AND deleted_at IS NULL AND disabled_at IS NULL",
        )
        .map_err(map_error)?;
    let rows = stmt
        .query_map(params![tenant], |row| {
            Ok(Subscriber {
                subscription_id: row.get(0)?,
                workspace: WorkspaceName::parse(&row.get::<_, String>(1)?)
                    .map_err(|e| bad(1, e))?,
                events: decode_event_types(&row.get::<_, String>(2)?),
            })
        })
        .and_then(Iterator::collect::<rusqlite::Result<Vec<_>>>)
        .map_err(map_error)?;
    Ok(Subscribers(rows))
}

/// Writes the outbox rows of `events` for the subscriptions that want them.
pub(crate) fn enqueue(
    conn: &Connection,
    vault: &Vault,
    tenant: &str,
    subscribers: &Subscribers,
    events: &[WebhookEvent],
) -> StoreResult<()> {
    let deliveries = subscribers.deliveries(events);
    if deliveries.is_empty() {
        return Ok(());
    }
    // Only the writer thread writes, so MAX + 1 cannot be taken twice.
    let mut seq: i64 = conn
        .prepare_cached("SELECT COALESCE(MAX(seq), 0) FROM webhook_deliveries WHERE tenant_id = ?1")
        .and_then(|mut s| s.query_row(params![tenant], |r| r.get(0)))
        .map_err(map_error)?;
    let mut insert = conn
        .prepare_cached(
            "INSERT INTO webhook_deliveries (tenant_id, delivery_id, seq, subscription_id,
                 event_type, payload, status, attempts, created_at, next_attempt_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'pending', 0, ?7, ?7)
             ON CONFLICT (tenant_id, delivery_id) DO NOTHING",
        )
        .map_err(map_error)?;
    for delivery in deliveries {
        seq += 1;
        let payload = vault.seal(tenant, column::WEBHOOK_PAYLOAD, &delivery.payload)?;
        insert
            .execute(params![
                tenant,
                delivery.delivery_id,
                seq,
                delivery.subscription_id,
                delivery.event_type.as_str(),
                payload,
                micros(delivery.created_at),
            ])
            .map_err(map_error)?;
    }
    Ok(())
}

const SUBSCRIPTION_COLUMNS: &str = "subscription_id, workspace, url, events, secret_sealed, \
                                    created_at, disabled_at, disabled_reason";

fn subscription(row: &Row<'_>) -> rusqlite::Result<WebhookSubscription> {
    Ok(WebhookSubscription {
        subscription_id: row.get(0)?,
        workspace: WorkspaceName::parse(&row.get::<_, String>(1)?).map_err(|e| bad(1, e))?,
        url: row.get(2)?,
        events: decode_event_types(&row.get::<_, String>(3)?),
        secret_sealed: row.get(4)?,
        created_at: time(row, 5)?,
        disabled_at: maybe_time(row, 6)?,
        disabled_reason: row.get(7)?,
    })
}

pub(crate) fn create(
    conn: &Connection,
    tenant: &str,
    subscription: &WebhookSubscription,
) -> StoreResult<()> {
    conn.prepare_cached(
        "INSERT INTO webhook_subscriptions (tenant_id, subscription_id, workspace, url, events,
             secret_sealed, created_at, disabled_at, disabled_reason)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )
    .and_then(|mut s| {
        s.execute(params![
            tenant,
            subscription.subscription_id,
            subscription.workspace.as_str(),
            subscription.url,
            encode_event_types(&subscription.events),
            subscription.secret_sealed,
            micros(subscription.created_at),
            subscription.disabled_at.map(micros),
            subscription.disabled_reason,
        ])
    })
    .map_err(map_error)?;
    Ok(())
}

pub(crate) fn get(conn: &Connection, tenant: &str, id: &str) -> StoreResult<WebhookSubscription> {
    conn.prepare_cached(&format!(
        "SELECT {SUBSCRIPTION_COLUMNS} FROM webhook_subscriptions
         WHERE tenant_id = ?1 AND subscription_id = ?2 AND deleted_at IS NULL"
    ))
    .and_then(|mut s| s.query_row(params![tenant, id], subscription).optional())
    .map_err(map_error)?
    .ok_or(StoreError::NotFound)
}

pub(crate) fn list(
    conn: &Connection,
    tenant: &str,
    page: &PageRequest,
) -> StoreResult<Page<WebhookSubscription>> {
    let rows = conn
        .prepare_cached(&format!(
            "SELECT {SUBSCRIPTION_COLUMNS} FROM webhook_subscriptions
             WHERE tenant_id = ?1 AND subscription_id > ?2 AND deleted_at IS NULL
             ORDER BY subscription_id LIMIT ?3"
        ))
        .and_then(|mut s| {
            s.query_map(
                params![
                    tenant,
                    page.after.clone().unwrap_or_default(),
                    i64::from(page.limit) + 1
                ],
                subscription,
            )
            .and_then(Iterator::collect::<rusqlite::Result<Vec<_>>>)
        })
        .map_err(map_error)?;
    Ok(Page::from_overfetch(rows, page.limit, |s| {
        s.subscription_id.clone()
    }))
}

pub(crate) fn delete(conn: &Connection, tenant: &str, id: &str, at: Timestamp) -> StoreResult<()> {
    let changed = conn
        .prepare_cached(
            "UPDATE webhook_subscriptions SET deleted_at = ?3
             WHERE tenant_id = ?1 AND subscription_id = ?2 AND deleted_at IS NULL",
        )
        .and_then(|mut s| s.execute(params![tenant, id, micros(at)]))
        .map_err(map_error)?;
    if changed == 0 {
        return Err(StoreError::NotFound);
    }
    conn.prepare_cached(
        "UPDATE webhook_deliveries SET status = 'cancelled', finished_at = ?3,
             next_attempt_at = NULL, lease_owner = NULL, lease_until = NULL
         WHERE tenant_id = ?1 AND subscription_id = ?2 AND status = 'pending'",
    )
    .and_then(|mut s| s.execute(params![tenant, id, micros(at)]))
    .map_err(map_error)?;
    Ok(())
}

pub(crate) fn set_disabled(
    conn: &Connection,
    tenant: &str,
    id: &str,
    disabled: Option<&str>,
    at: Timestamp,
) -> StoreResult<WebhookSubscription> {
    let changed = conn
        .prepare_cached(
            "UPDATE webhook_subscriptions SET disabled_at = ?4, disabled_reason = ?3
             WHERE tenant_id = ?1 AND subscription_id = ?2 AND deleted_at IS NULL",
        )
        .and_then(|mut s| s.execute(params![tenant, id, disabled, disabled.map(|_| micros(at))]))
        .map_err(map_error)?;
    if changed == 0 {
        return Err(StoreError::NotFound);
    }
    if disabled.is_none() {
        // Whatever waited while it was disabled is due now, not after its old backoff.
        conn.prepare_cached(
            "UPDATE webhook_deliveries SET next_attempt_at = ?3
             WHERE tenant_id = ?1 AND subscription_id = ?2 AND status = 'pending'
               AND next_attempt_at > ?3",
        )
        .and_then(|mut s| s.execute(params![tenant, id, micros(at)]))
        .map_err(map_error)?;
    }
    get(conn, tenant, id)
}

const DELIVERY_COLUMNS: &str = "d.delivery_id, d.subscription_id, d.event_type, d.payload, \
     d.status, d.attempts, d.created_at, d.next_attempt_at, d.last_status_code, d.last_error, \
     d.finished_at, d.seq";

fn delivery(row: &Row<'_>) -> rusqlite::Result<WebhookDelivery> {
    Ok(WebhookDelivery {
        delivery_id: row.get(0)?,
        subscription_id: row.get(1)?,
        event_type: row
            .get::<_, String>(2)?
            .parse::<EventType>()
            .map_err(|e| bad(2, e))?,
        payload: row.get(3)?,
        status: DeliveryStatus::parse(&row.get::<_, String>(4)?)
            .ok_or_else(|| bad(4, "unknown delivery status"))?,
        attempts: row.get(5)?,
        created_at: time(row, 6)?,
        next_attempt_at: maybe_time(row, 7)?,
        last_status_code: row.get(8)?,
        last_error: row.get(9)?,
        finished_at: maybe_time(row, 10)?,
        seq: row.get(11)?,
    })
}

pub(crate) fn deliveries(
    conn: &Connection,
    tenant: &str,
    subscription_id: &str,
    page: &PageRequest,
) -> StoreResult<Page<WebhookDelivery>> {
    let before: i64 = match &page.after {
        Some(cursor) => cursor
            .parse()
            .map_err(|_| StoreError::Conflict("invalid cursor".into()))?,
        None => i64::MAX,
    };
    let rows = conn
        .prepare_cached(&format!(
            "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries d
             WHERE d.tenant_id = ?1 AND d.subscription_id = ?2 AND d.seq < ?3
             ORDER BY d.seq DESC LIMIT ?4"
        ))
        .and_then(|mut s| {
            s.query_map(
                params![tenant, subscription_id, before, i64::from(page.limit) + 1],
                delivery,
            )
            .and_then(Iterator::collect::<rusqlite::Result<Vec<_>>>)
        })
        .map_err(map_error)?;
    Ok(Page::from_overfetch(rows, page.limit, |d| {
        d.seq.to_string()
    }))
}

pub(crate) fn attempts(
    conn: &Connection,
    tenant: &str,
    delivery_ids: &[String],
) -> StoreResult<Vec<DeliveryAttempt>> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT delivery_id, attempt, at, status_code, latency_ms, error
             FROM webhook_attempts WHERE tenant_id = ?1 AND delivery_id = ?2 ORDER BY attempt",
        )
        .map_err(map_error)?;
    let mut all = Vec::new();
    for id in delivery_ids {
        let rows = stmt
            .query_map(params![tenant, id], |row| {
                Ok(DeliveryAttempt {
                    delivery_id: row.get(0)?,
                    attempt: row.get(1)?,
                    at: time(row, 2)?,
                    status_code: row.get(3)?,
                    latency_ms: row.get::<_, i64>(4)?.unsigned_abs(),
                    error: row.get(5)?,
                })
            })
            .and_then(Iterator::collect::<rusqlite::Result<Vec<_>>>)
            .map_err(map_error)?;
        all.extend(rows);
    }
    Ok(all)
}

pub(crate) fn claim(
    conn: &Connection,
    tenant: &str,
    claim: &DeliveryClaim,
) -> StoreResult<Vec<ClaimedDelivery>> {
    let now = micros(claim.now);
    // Each enabled subscription's oldest pending delivery, if due and not held by a live lease.
    let ids: Vec<String> = conn
        .prepare_cached(
            "SELECT d.delivery_id
             FROM webhook_subscriptions s
             JOIN webhook_deliveries d
               ON d.tenant_id = s.tenant_id AND d.subscription_id = s.subscription_id
             WHERE s.tenant_id = ?1 AND s.deleted_at IS NULL AND s.disabled_at IS NULL
               AND d.seq = (SELECT MIN(seq) FROM webhook_deliveries
                            WHERE tenant_id = ?1 AND subscription_id = s.subscription_id
                              AND status = 'pending')
               AND d.next_attempt_at <= ?2
               AND (d.lease_until IS NULL OR d.lease_until <= ?2)
             ORDER BY d.next_attempt_at, d.seq LIMIT ?3",
        )
        .and_then(|mut s| {
            s.query_map(params![tenant, now, claim.limit], |r| r.get(0))
                .and_then(Iterator::collect::<rusqlite::Result<Vec<_>>>)
        })
        .map_err(map_error)?;
    let mut claimed = Vec::with_capacity(ids.len());
    for id in ids {
        conn.prepare_cached(
            "UPDATE webhook_deliveries SET lease_owner = ?3, lease_until = ?4
             WHERE tenant_id = ?1 AND delivery_id = ?2",
        )
        .and_then(|mut s| s.execute(params![tenant, id, claim.owner, micros(claim.lease_until)]))
        .map_err(map_error)?;
        let found = conn
            .prepare_cached(&format!(
                "SELECT {DELIVERY_COLUMNS}, s.url, s.secret_sealed
                 FROM webhook_deliveries d
                 JOIN webhook_subscriptions s
                   ON s.tenant_id = d.tenant_id AND s.subscription_id = d.subscription_id
                 WHERE d.tenant_id = ?1 AND d.delivery_id = ?2"
            ))
            .and_then(|mut s| {
                s.query_row(params![tenant, id], |row| {
                    Ok(ClaimedDelivery {
                        delivery: delivery(row)?,
                        url: row.get(12)?,
                        secret_sealed: row.get(13)?,
                    })
                })
            })
            .map_err(map_error)?;
        claimed.push(found);
    }
    Ok(claimed)
}

pub(crate) fn record(
    conn: &Connection,
    tenant: &str,
    delivery_id: &str,
    record: &AttemptRecord,
) -> StoreResult<()> {
    let held: Option<String> = conn
        .prepare_cached(
            "SELECT subscription_id FROM webhook_deliveries
             WHERE tenant_id = ?1 AND delivery_id = ?2 AND status = 'pending' AND lease_owner = ?3",
        )
        .and_then(|mut s| {
            s.query_row(params![tenant, delivery_id, record.owner], |r| r.get(0))
                .optional()
        })
        .map_err(map_error)?;
    let Some(subscription_id) = held else {
        return Err(StoreError::Conflict(format!(
            "delivery {delivery_id} is not held by {}",
            record.owner
        )));
    };
    let attempt = &record.attempt;
    conn.prepare_cached(
        "INSERT INTO webhook_attempts (tenant_id, delivery_id, attempt, at, status_code,
             latency_ms, error)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )
    .and_then(|mut s| {
        s.execute(params![
            tenant,
            delivery_id,
            attempt.attempt,
            micros(attempt.at),
            attempt.status_code,
            i64::try_from(attempt.latency_ms).unwrap_or(i64::MAX),
            attempt.error,
        ])
    })
    .map_err(map_error)?;
    let (status, next_attempt_at, finished_at) = match record.next {
        AttemptNext::Delivered => ("delivered", None, Some(micros(attempt.at))),
        AttemptNext::Failed => ("failed", None, Some(micros(attempt.at))),
        AttemptNext::RetryAt(at) => ("pending", Some(micros(at)), None),
        AttemptNext::Disable => ("pending", Some(micros(attempt.at)), None),
    };
    conn.prepare_cached(
        "UPDATE webhook_deliveries
         SET status = ?3, attempts = ?4, next_attempt_at = ?5, finished_at = ?6,
             last_status_code = ?7, last_error = ?8, lease_owner = NULL, lease_until = NULL
         WHERE tenant_id = ?1 AND delivery_id = ?2",
    )
    .and_then(|mut s| {
        s.execute(params![
            tenant,
            delivery_id,
            status,
            attempt.attempt,
            next_attempt_at,
            finished_at,
            attempt.status_code,
            attempt.error,
        ])
    })
    .map_err(map_error)?;
    if record.next == AttemptNext::Disable {
        conn.prepare_cached(
            "UPDATE webhook_subscriptions SET disabled_at = ?3,
                 disabled_reason = 'the endpoint answered 410 Gone'
             WHERE tenant_id = ?1 AND subscription_id = ?2 AND disabled_at IS NULL",
        )
        .and_then(|mut s| s.execute(params![tenant, subscription_id, micros(attempt.at)]))
        .map_err(map_error)?;
    }
    Ok(())
}

pub(crate) fn prune(
    conn: &Connection,
    tenant: &str,
    finished_before: Timestamp,
    limit: u32,
) -> StoreResult<u64> {
    let doomed: Vec<String> = conn
        .prepare_cached(
            "SELECT delivery_id FROM webhook_deliveries
             WHERE tenant_id = ?1 AND status <> 'pending' AND finished_at < ?2
             ORDER BY seq LIMIT ?3",
        )
        .and_then(|mut s| {
            s.query_map(params![tenant, micros(finished_before), limit], |r| {
                r.get(0)
            })?
            .collect::<rusqlite::Result<_>>()
        })
        .map_err(map_error)?;
    for delivery_id in &doomed {
        for sql in [
            "DELETE FROM webhook_attempts WHERE tenant_id = ?1 AND delivery_id = ?2",
            "DELETE FROM webhook_deliveries WHERE tenant_id = ?1 AND delivery_id = ?2",
        ] {
            conn.prepare_cached(sql)
                .and_then(|mut s| s.execute(params![tenant, delivery_id]))
                .map_err(map_error)?;
        }
    }
    Ok(doomed.len() as u64)
}
