//! Idempotency keys on PostgreSQL: a claim is an insert that only one transaction can win, so
//! two processes handed the same key can never both run the request.

use idgraph_store::{IdempotencyBegin, IdempotencyRequest, StoreResult, StoredResponse};

use crate::PostgresStore;
use crate::codec::{map_error, to_sql_time};

impl PostgresStore {
    pub(crate) async fn claim_idempotency(
        &self,
        request: &IdempotencyRequest,
    ) -> StoreResult<IdempotencyBegin> {
        let tenant = request.tenant_id.as_str();
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(map_error)?;
        tx.execute(
            "DELETE FROM idempotency_keys WHERE tenant_id = $1 AND created_at < $2",
            &[&tenant, &to_sql_time(request.expired_before())],
        )
        .await
        .map_err(map_error)?;
        let claimed = tx
            .execute(
                "INSERT INTO idempotency_keys (tenant_id, scope, key, fingerprint, state, created_at)
                 VALUES ($1, $2, $3, $4, 'pending', $5) ON CONFLICT DO NOTHING",
                &[&tenant, &request.scope, &request.key, &request.fingerprint, &to_sql_time(request.at)],
            )
            .await
            .map_err(map_error)?;
        if claimed == 1 {
            tx.commit().await.map_err(map_error)?;
            return Ok(IdempotencyBegin::Run);
        }
        // Someone holds the key: lock its row to read a settled state.
        let row = tx
            .query_one(
                "SELECT fingerprint, state, status, content_type, body,
                        created_at < $4 AS abandoned
                 FROM idempotency_keys WHERE tenant_id = $1 AND scope = $2 AND key = $3 FOR UPDATE",
                &[
                    &tenant,
                    &request.scope,
                    &request.key,
                    &to_sql_time(request.abandoned_before()),
                ],
            )
            .await
            .map_err(map_error)?;
        let fingerprint: String = row.get(0);
        let state: String = row.get(1);
        let outcome = if fingerprint != request.fingerprint {
            IdempotencyBegin::Mismatch
        } else if state == "done" {
            let status: Option<i32> = row.get(2);
            IdempotencyBegin::Replay(StoredResponse {
                status: status.and_then(|s| u16::try_from(s).ok()).unwrap_or(200),
                content_type: row.get(3),
                body: row.get::<_, Option<Vec<u8>>>(4).unwrap_or_default(),
            })
        } else if row.get::<_, bool>(5) {
            tx.execute(
                "UPDATE idempotency_keys SET created_at = $4 WHERE tenant_id = $1 AND scope = $2 AND key = $3",
                &[&tenant, &request.scope, &request.key, &to_sql_time(request.at)],
            )
            .await
            .map_err(map_error)?;
            IdempotencyBegin::Run
        } else {
            IdempotencyBegin::InProgress
        };
        tx.commit().await.map_err(map_error)?;
        Ok(outcome)
    }

    pub(crate) async fn finish_idempotency(
        &self,
        request: &IdempotencyRequest,
        response: Option<StoredResponse>,
    ) -> StoreResult<()> {
        let tenant = request.tenant_id.as_str();
        let client = self.client().await?;
        match response {
            Some(response) => client
                .execute(
                    "UPDATE idempotency_keys SET state = 'done', status = $4, content_type = $5, body = $6
                     WHERE tenant_id = $1 AND scope = $2 AND key = $3",
                    &[
                        &tenant,
                        &request.scope,
                        &request.key,
                        &i32::from(response.status),
                        &response.content_type,
                        &response.body,
                    ],
                )
                .await,
            None => client
                .execute(
                    "DELETE FROM idempotency_keys WHERE tenant_id = $1 AND scope = $2 AND key = $3",
                    &[&tenant, &request.scope, &request.key],
                )
                .await,
        }
        .map(|_| ())
        .map_err(map_error)
    }
}
