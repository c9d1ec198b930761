//! Idempotency keys on the embedded store: claims run on the writer thread, one at a time, so
//! two requests with one key can never both be told to run.

use idgraph_store::{IdempotencyBegin, IdempotencyRequest, StoreResult, StoredResponse};
use rusqlite::{OptionalExtension, Transaction, params};

use crate::codec::{map_error, micros};

type Row = (
    String,
    String,
    Option<u16>,
    Option<String>,
    Option<Vec<u8>>,
    i64,
);

pub(crate) fn begin(
    tx: &Transaction<'_>,
    request: &IdempotencyRequest,
) -> StoreResult<IdempotencyBegin> {
    let tenant = request.tenant_id.as_str();
    let now = micros(request.at);
    let expired_before = micros(request.expired_before());
    tx.prepare_cached("DELETE FROM idempotency_keys WHERE tenant_id = ?1 AND created_at < ?2")
        .and_then(|mut s| s.execute(params![tenant, expired_before]))
        .map_err(map_error)?;
    let existing: Option<Row> = tx
        .prepare_cached(
            "SELECT fingerprint, state, status, content_type, body, created_at FROM idempotency_keys
             WHERE tenant_id = ?1 AND scope = ?2 AND key = ?3",
        )
        .and_then(|mut s| {
            s.query_row(params![tenant, request.scope, request.key], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?))
            })
            .optional()
        })
        .map_err(map_error)?;
    let abandoned_before = micros(request.abandoned_before());
    let outcome = match existing {
        Some((fingerprint, _, _, _, _, _)) if fingerprint != request.fingerprint => {
            return Ok(IdempotencyBegin::Mismatch);
        }
        Some((_, state, Some(status), content_type, body, _)) if state == "done" => {
            return Ok(IdempotencyBegin::Replay(StoredResponse {
                status,
                content_type,
                body: body.unwrap_or_default(),
            }));
        }
        Some((_, _, _, _, _, created_at)) if created_at >= abandoned_before => {
            return Ok(IdempotencyBegin::InProgress);
        }
        // No row, or a claim whose process died: claim it.
        _ => IdempotencyBegin::Run,
    };
    tx.prepare_cached(
        "INSERT INTO idempotency_keys (tenant_id, scope, key, fingerprint, state, created_at)
         VALUES (?1, ?2, ?3, ?4, 'pending', ?5)
         ON CONFLICT (tenant_id, scope, key) DO UPDATE SET
            fingerprint = excluded.fingerprint, state = 'pending', status = NULL,
            content_type = NULL, body = NULL, created_at = excluded.created_at",
    )
    .and_then(|mut s| {
        s.execute(params![
            tenant,
            request.scope,
            request.key,
            request.fingerprint,
            now
        ])
    })
    .map_err(map_error)?;
    Ok(outcome)
}

pub(crate) fn finish(
    tx: &Transaction<'_>,
    request: &IdempotencyRequest,
    response: Option<&StoredResponse>,
) -> StoreResult<()> {
    let tenant = request.tenant_id.as_str();
    match response {
        Some(response) => tx
            .prepare_cached(
                "UPDATE idempotency_keys SET state = 'done', status = ?4, content_type = ?5, body = ?6
                 WHERE tenant_id = ?1 AND scope = ?2 AND key = ?3",
            )
            .and_then(|mut s| {
                s.execute(params![
                    tenant,
                    request.scope,
                    request.key,
                    response.status,
                    response.content_type,
                    response.body
                ])
            }),
        None => tx
            .prepare_cached(
                "DELETE FROM idempotency_keys WHERE tenant_id = ?1 AND scope = ?2 AND key = ?3",
            )
            .and_then(|mut s| s.execute(params![tenant, request.scope, request.key])),
    }
    .map(|_| ())
    .map_err(map_error)
}
