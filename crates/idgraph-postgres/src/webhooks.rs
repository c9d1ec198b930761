//! Webhook subscriptions, the outbox and the delivery log on PostgreSQL.
//!
//! Outbox rows are written by `enqueue` inside the transaction of the change they announce.
//! Several idgraph processes may claim from one database: a claim is one UPDATE whose WHERE
//! clause PostgreSQL re-checks on the locked row, so a delivery is leased to one owner at a time.

use std::time::SystemTime;

use deadpool_postgres::GenericClient;
use idgraph_core::tenancy::WorkspaceName;
use idgraph_core::webhooks::EventType;
use idgraph_store::vault::{Vault, column};
use idgraph_store::{
    AttemptNext, AttemptRecord, ClaimedDelivery, DeliveryAttempt, DeliveryClaim, DeliveryStatus,
    Page, PageRequest, StoreError, StoreResult, Subscriber, Subscribers, WebhookDelivery,
    WebhookEvent, WebhookSubscription, decode_event_types, encode_event_types,
};
use jiff::Timestamp;
use tokio_postgres::Row;

use crate::PostgresStore;
use crate::codec::{corrupt, map_error, text, time, to_sql_time};

fn maybe_time(row: &Row, index: usize) -> StoreResult<Option<Timestamp>> {
    let raw: Option<SystemTime> = row.try_get(index).map_err(map_error)?;
    raw.map(|t| Timestamp::try_from(t).map_err(corrupt))
        .transpose()
}

/// The active subscriptions of a tenant: one primary-key range read, cheap enough to do in
/// every writing transaction.
pub(crate) async fn subscribers(
    client: &impl GenericClient,
    tenant: &str,
) -> StoreResult<Subscribers> {
    let rows = client
        .query(
            "SELECT subscription_id, workspace, events FROM webhook_subscriptions
             WHERE tenant_id = $1 AND deleted_at IS NULL AND disabled_at IS NULL",
            &[&tenant],
        )
        .await
        .map_err(map_error)?;
    let subscribers = rows
        .iter()
        .map(|row| {
            Ok(Subscriber {
                subscription_id: text(row, 0)?,
                workspace: WorkspaceName::parse(&text(row, 1)?).map_err(corrupt)?,
                events: decode_event_types(&text(row, 2)?),
            })
        })
        .collect::<StoreResult<Vec<_>>>()?;
    Ok(Subscribers(subscribers))
}

/// Writes the outbox rows of `events` for the subscriptions that want them, in one statement.
pub(crate) async fn enqueue(
    client: &impl GenericClient,
    vault: &Vault,
    tenant: &str,
    subscribers: &Subscribers,
    events: &[WebhookEvent],
) -> StoreResult<()> {
    let deliveries = subscribers.deliveries(events);
    if deliveries.is_empty() {
        return Ok(());
    }
    let ids: Vec<&str> = deliveries.iter().map(|d| d.delivery_id.as_str()).collect();
    let subs: Vec<&str> = deliveries
        .iter()
        .map(|d| d.subscription_id.as_str())
        .collect();
    let types: Vec<&str> = deliveries.iter().map(|d| d.event_type.as_str()).collect();
    let payloads: Vec<String> = deliveries
        .iter()
        .map(|d| vault.seal(tenant, column::WEBHOOK_PAYLOAD, &d.payload))
        .collect::<StoreResult<_>>()?;
    let created: Vec<SystemTime> = deliveries
        .iter()
        .map(|d| to_sql_time(d.created_at))
        .collect();
    // WITH ORDINALITY keeps the events' order in the identity column that orders delivery.
    client
        .execute(
            "INSERT INTO webhook_deliveries (tenant_id, delivery_id, subscription_id, event_type,
                 payload, status, attempts, created_at, next_attempt_at)
             SELECT $1, d.id, d.sub, d.type, d.payload, 'pending', 0, d.created, d.created
             FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::timestamptz[])
                  WITH ORDINALITY AS d(id, sub, type, payload, created, n)
             ORDER BY d.n
             ON CONFLICT (tenant_id, delivery_id) DO NOTHING",
            &[&tenant, &ids, &subs, &types, &payloads, &created],
        )
        .await
        .map_err(map_error)?;
    Ok(())
}

const SUBSCRIPTION_COLUMNS: &str = "subscription_id, workspace, url, events, secret_sealed, \
                                    created_at, disabled_at, disabled_reason";

fn subscription(row: &Row) -> StoreResult<WebhookSubscription> {
    Ok(WebhookSubscription {
        subscription_id: text(row, 0)?,
        workspace: WorkspaceName::parse(&text(row, 1)?).map_err(corrupt)?,
        url: text(row, 2)?,
        events: decode_event_types(&text(row, 3)?),
        secret_sealed: row.try_get(4).map_err(map_error)?,
        created_at: time(row, 5)?,
        disabled_at: maybe_time(row, 6)?,
        disabled_reason: row.try_get(7).map_err(map_error)?,
    })
}

const DELIVERY_COLUMNS: &str = "d.delivery_id, d.subscription_id, d.event_type, d.payload, \
     d.status, d.attempts, d.created_at, d.next_attempt_at, d.last_status_code, d.last_error, \
     d.finished_at, d.seq";

fn delivery(row: &Row) -> StoreResult<WebhookDelivery> {
    let attempts: i32 = row.try_get(5).map_err(map_error)?;
    let code: Option<i32> = row.try_get(8).map_err(map_error)?;
    Ok(WebhookDelivery {
        delivery_id: text(row, 0)?,
        subscription_id: text(row, 1)?,
        event_type: text(row, 2)?.parse::<EventType>().map_err(corrupt)?,
        payload: text(row, 3)?,
        status: DeliveryStatus::parse(&text(row, 4)?)
            .ok_or_else(|| corrupt("unknown delivery status"))?,
        attempts: attempts.unsigned_abs(),
        created_at: time(row, 6)?,
        next_attempt_at: maybe_time(row, 7)?,
        last_status_code: code.and_then(|c| u16::try_from(c).ok()),
        last_error: row.try_get(9).map_err(map_error)?,
        finished_at: maybe_time(row, 10)?,
        seq: row.try_get(11).map_err(map_error)?,
    })
}

impl PostgresStore {
    pub(crate) async fn write_webhook(
        &self,
        tenant: &str,
        subscription: &WebhookSubscription,
    ) -> StoreResult<()> {
        self.client()
            .await?
            .execute(
                "INSERT INTO webhook_subscriptions (tenant_id, subscription_id, workspace, url,
                     events, secret_sealed, created_at, disabled_at, disabled_reason)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                &[
                    &tenant,
                    &subscription.subscription_id,
                    &subscription.workspace.as_str(),
                    &subscription.url,
                    &encode_event_types(&subscription.events),
                    &subscription.secret_sealed,
                    &to_sql_time(subscription.created_at),
                    &subscription.disabled_at.map(to_sql_time),
                    &subscription.disabled_reason,
                ],
            )
            .await
            .map_err(map_error)?;
        Ok(())
    }

    pub(crate) async fn read_webhook(
        &self,
        tenant: &str,
        id: &str,
    ) -> StoreResult<WebhookSubscription> {
        read_subscription(&self.client().await?, tenant, id).await
    }

    pub(crate) async fn read_webhooks(
        &self,
        tenant: &str,
        page: &PageRequest,
    ) -> StoreResult<Page<WebhookSubscription>> {
        let after = page.after.clone().unwrap_or_default();
        let rows = self
            .client()
            .await?
            .query(
                &format!(
                    "SELECT {SUBSCRIPTION_COLUMNS} FROM webhook_subscriptions
                     WHERE tenant_id = $1 AND subscription_id > $2 AND deleted_at IS NULL
                     ORDER BY subscription_id LIMIT $3"
                ),
                &[&tenant, &after, &(i64::from(page.limit) + 1)],
            )
            .await
            .map_err(map_error)?;
        let rows = rows.iter().map(subscription).collect::<StoreResult<_>>()?;
        Ok(Page::from_overfetch(rows, page.limit, |s| {
            s.subscription_id.clone()
        }))
    }

    pub(crate) async fn write_webhook_deleted(
        &self,
        tenant: &str,
        id: &str,
        at: Timestamp,
    ) -> StoreResult<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(map_error)?;
        let at = to_sql_time(at);
        let changed = tx
            .execute(
                "UPDATE webhook_subscriptions SET deleted_at = $3
                 WHERE tenant_id = $1 AND subscription_id = $2 AND deleted_at IS NULL",
                &[&tenant, &id, &at],
            )
            .await
            .map_err(map_error)?;
        if changed == 0 {
            return Err(StoreError::NotFound);
        }
        tx.execute(
            "UPDATE webhook_deliveries SET status = 'cancelled', finished_at = $3,
                 next_attempt_at = NULL, lease_owner = NULL, lease_until = NULL
             WHERE tenant_id = $1 AND subscription_id = $2 AND status = 'pending'",
            &[&tenant, &id, &at],
        )
        .await
        .map_err(map_error)?;
        tx.commit().await.map_err(map_error)
    }

    pub(crate) async fn write_webhook_disabled(
        &self,
        tenant: &str,
        id: &str,
        disabled: Option<String>,
        at: Timestamp,
    ) -> StoreResult<WebhookSubscription> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(map_error)?;
        let at = to_sql_time(at);
        let changed = tx
            .execute(
                "UPDATE webhook_subscriptions SET disabled_at = $4, disabled_reason = $3
                 WHERE tenant_id = $1 AND subscription_id = $2 AND deleted_at IS NULL",
                &[&tenant, &id, &disabled, &disabled.as_ref().map(|_| at)],
            )
            .await
            .map_err(map_error)?;
        if changed == 0 {
            return Err(StoreError::NotFound);
        }
        if disabled.is_none() {
            // Whatever waited while it was disabled is due now, not after its old backoff.
            tx.execute(
                "UPDATE webhook_deliveries SET next_attempt_at = $3
                 WHERE tenant_id = $1 AND subscription_id = $2 AND status = 'pending'
                   AND next_attempt_at > $3",
                &[&tenant, &id, &at],
            )
            .await
            .map_err(map_error)?;
        }
        let subscription = read_subscription(&tx, tenant, id).await?;
        tx.commit().await.map_err(map_error)?;
        Ok(subscription)
    }

    pub(crate) async fn read_deliveries(
        &self,
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
        let rows = self
            .client()
            .await?
            .query(
                &format!(
                    "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries d
                     WHERE d.tenant_id = $1 AND d.subscription_id = $2 AND d.seq < $3
                     ORDER BY d.seq DESC LIMIT $4"
                ),
                &[
                    &tenant,
                    &subscription_id,
                    &before,
                    &(i64::from(page.limit) + 1),
                ],
            )
            .await
            .map_err(map_error)?;
        let rows = rows.iter().map(delivery).collect::<StoreResult<_>>()?;
        Ok(Page::from_overfetch(rows, page.limit, |d| {
            d.seq.to_string()
        }))
    }

    pub(crate) async fn read_attempts(
        &self,
        tenant: &str,
        delivery_ids: &[String],
    ) -> StoreResult<Vec<DeliveryAttempt>> {
        let rows = self
            .client()
            .await?
            .query(
                "SELECT a.delivery_id, a.attempt, a.at, a.status_code, a.latency_ms, a.error
                 FROM unnest($2::text[]) WITH ORDINALITY AS i(id, n)
                 JOIN webhook_attempts a ON a.tenant_id = $1 AND a.delivery_id = i.id
                 ORDER BY i.n, a.attempt",
                &[&tenant, &delivery_ids],
            )
            .await
            .map_err(map_error)?;
        rows.iter()
            .map(|row| {
                let attempt: i32 = row.try_get(1).map_err(map_error)?;
                let code: Option<i32> = row.try_get(3).map_err(map_error)?;
                let latency: i64 = row.try_get(4).map_err(map_error)?;
                Ok(DeliveryAttempt {
                    delivery_id: text(row, 0)?,
                    attempt: attempt.unsigned_abs(),
                    at: time(row, 2)?,
                    status_code: code.and_then(|c| u16::try_from(c).ok()),
                    latency_ms: latency.unsigned_abs(),
                    error: row.try_get(5).map_err(map_error)?,
                })
            })
            .collect()
    }

    pub(crate) async fn write_delivery_claim(
        &self,
        tenant: &str,
        claim: &DeliveryClaim,
    ) -> StoreResult<Vec<ClaimedDelivery>> {
        let now = to_sql_time(claim.now);
        let rows = self
            .client()
            .await?
            .query(
                &format!(
                    "WITH heads AS (
                         SELECT d.delivery_id
                         FROM webhook_subscriptions s
                         CROSS JOIN LATERAL (
                             SELECT delivery_id, next_attempt_at, lease_until
                             FROM webhook_deliveries
                             WHERE tenant_id = $1 AND subscription_id = s.subscription_id
                               AND status = 'pending'
                             ORDER BY seq LIMIT 1
                         ) d
                         WHERE s.tenant_id = $1 AND s.deleted_at IS NULL AND s.disabled_at IS NULL
                           AND d.next_attempt_at <= $2
                           AND (d.lease_until IS NULL OR d.lease_until <= $2)
                         ORDER BY d.next_attempt_at LIMIT $5
                     )
                     UPDATE webhook_deliveries d SET lease_owner = $3, lease_until = $4
                     FROM heads h, webhook_subscriptions s
                     WHERE d.tenant_id = $1 AND d.delivery_id = h.delivery_id
                       AND d.status = 'pending'
                       AND (d.lease_until IS NULL OR d.lease_until <= $2)
                       AND s.tenant_id = $1 AND s.subscription_id = d.subscription_id
                     RETURNING {DELIVERY_COLUMNS}, s.url, s.secret_sealed"
                ),
                &[
                    &tenant,
                    &now,
                    &claim.owner,
                    &to_sql_time(claim.lease_until),
                    &i64::from(claim.limit),
                ],
            )
            .await
            .map_err(map_error)?;
        rows.iter()
            .map(|row| {
                Ok(ClaimedDelivery {
                    delivery: delivery(row)?,
                    url: text(row, 12)?,
                    secret_sealed: row.try_get(13).map_err(map_error)?,
                })
            })
            .collect()
    }

    pub(crate) async fn prune_deliveries(
        &self,
        tenant: &str,
        finished_before: Timestamp,
        limit: u32,
    ) -> StoreResult<u64> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(map_error)?;
        let doomed: Vec<String> = tx
            .query(
                "SELECT delivery_id FROM webhook_deliveries
                 WHERE tenant_id = $1 AND status <> 'pending' AND finished_at < $2
                 ORDER BY seq LIMIT $3",
                &[&tenant, &to_sql_time(finished_before), &i64::from(limit)],
            )
            .await
            .map_err(map_error)?
            .iter()
            .map(|row| text(row, 0))
            .collect::<StoreResult<_>>()?;
        tx.execute(
            "DELETE FROM webhook_attempts WHERE tenant_id = $1 AND delivery_id = ANY($2)",
            &[&tenant, &doomed],
        )
        .await
        .map_err(map_error)?;
        let gone = tx
            .execute(
                "DELETE FROM webhook_deliveries WHERE tenant_id = $1 AND delivery_id = ANY($2)",
                &[&tenant, &doomed],
            )
            .await
            .map_err(map_error)?;
        tx.commit().await.map_err(map_error)?;
        Ok(gone)
    }

    pub(crate) async fn write_attempt(
        &self,
        tenant: &str,
        delivery_id: &str,
        record: &AttemptRecord,
    ) -> StoreResult<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(map_error)?;
        let attempt = &record.attempt;
        let at = to_sql_time(attempt.at);
        let (status, next_attempt_at, finished_at) = match record.next {
            AttemptNext::Delivered => ("delivered", None, Some(at)),
            AttemptNext::Failed => ("failed", None, Some(at)),
            AttemptNext::RetryAt(next) => ("pending", Some(to_sql_time(next)), None),
            AttemptNext::Disable => ("pending", Some(at), None),
        };
        let number = i32::try_from(attempt.attempt).unwrap_or(i32::MAX);
        let code = attempt.status_code.map(i32::from);
        let held = tx
            .query_opt(
                "UPDATE webhook_deliveries
                 SET status = $4, attempts = $5, next_attempt_at = $6, finished_at = $7,
                     last_status_code = $8, last_error = $9, lease_owner = NULL, lease_until = NULL
                 WHERE tenant_id = $1 AND delivery_id = $2 AND status = 'pending'
                   AND lease_owner = $3
                 RETURNING subscription_id",
                &[
                    &tenant,
                    &delivery_id,
                    &record.owner,
                    &status,
                    &number,
                    &next_attempt_at,
                    &finished_at,
                    &code,
                    &attempt.error,
                ],
            )
            .await
            .map_err(map_error)?;
        let Some(held) = held else {
            return Err(StoreError::Conflict(format!(
                "delivery {delivery_id} is not held by {}",
                record.owner
            )));
        };
        let subscription_id = text(&held, 0)?;
        tx.execute(
            "INSERT INTO webhook_attempts (tenant_id, delivery_id, attempt, at, status_code,
                 latency_ms, error)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
            &[
                &tenant,
                &delivery_id,
                &number,
                &at,
                &code,
                &i64::try_from(attempt.latency_ms).unwrap_or(i64::MAX),
                &attempt.error,
            ],
        )
        .await
        .map_err(map_error)?;
        if record.next == AttemptNext::Disable {
            tx.execute(
                "UPDATE webhook_subscriptions SET disabled_at = $3,
                     disabled_reason = 'the endpoint answered 410 Gone'
                 WHERE tenant_id = $1 AND subscription_id = $2 AND disabled_at IS NULL",
                &[&tenant, &subscription_id, &at],
            )
            .await
            .map_err(map_error)?;
        }
        tx.commit().await.map_err(map_error)
    }
}

async fn read_subscription(
    client: &impl GenericClient,
    tenant: &str,
    id: &str,
) -> StoreResult<WebhookSubscription> {
    let row = client
        .query_opt(
            &format!(
                "SELECT {SUBSCRIPTION_COLUMNS} FROM webhook_subscriptions
                 WHERE tenant_id = $1 AND subscription_id = $2 AND deleted_at IS NULL"
            ),
            &[&tenant, &id],
        )
        .await
        .map_err(map_error)?
        .ok_or(StoreError::NotFound)?;
    subscription(&row)
}
