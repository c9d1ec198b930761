//! Segment-compatible ingestion: `/v1/{identify,track,page,screen,group,alias}` and `/v1/batch`.
//!
//! A batch with some invalid items accepts the valid ones and reports the others by index in
//! the response (`rejected`, `errors`) and in `idgraph_ingest_messages_total{outcome="rejected"}`;
//! a batch whose every item is invalid is a 400. Nothing valid is dropped for a neighbour's fault.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use idgraph_app::access::Principal;
use idgraph_app::ingest::{self, IngestReport, MessageKind, Prepared};
use idgraph_app::{AppError, settings};
use idgraph_core::tenancy::WorkspaceName;
use idgraph_store::{Store, erased_reason};
use jiff::Timestamp;
use serde::Serialize;

use crate::extract::{Json, Path, WriteKey};
use crate::segment::{self, ItemError, MAX_BATCH_BYTES, MAX_MESSAGE_BYTES};
use crate::{ApiError, AppState};

/// An item the server did not store, by its position in the request.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct ItemErrorDto {
    index: usize,
    code: &'static str,
    message: String,
}

/// The answer to a single call. Segment clients read `success`; the counts appear only when the
/// message was not stored.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct SingleAck {
    success: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    accepted: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rejected: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    errors: Option<Vec<ItemErrorDto>>,
}

/// The answer to a batch: what was stored, what was a repeat, what was refused and why.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct BatchAck {
    success: bool,
    accepted: usize,
    /// Items whose `messageId` was seen before in the workspace: stored once.
    duplicates: usize,
    rejected: usize,
    /// Identifiers dropped from otherwise valid items (blocked or unparseable values).
    identifiers_rejected: usize,
    errors: Vec<ItemErrorDto>,
}

fn workspace_of(principal: &Principal) -> WorkspaceName {
    principal
        .workspace
        .clone()
        .unwrap_or_else(WorkspaceName::default_workspace)
}

fn count(outcome: &'static str, n: usize) {
    if n > 0 {
        metrics::counter!("idgraph_ingest_messages_total", "outcome" => outcome)
            .increment(n as u64);
    }
}

fn record_metrics(report: &IngestReport, rejected: usize) {
    count("accepted", report.accepted);
    count("erased", report.erased.len());
    count("duplicate", report.duplicates);
    count("rejected", rejected);
    if report.identifiers_rejected > 0 {
        metrics::counter!("idgraph_ingest_identifiers_rejected_total")
            .increment(report.identifiers_rejected as u64);
    }
}

/// One Segment call: `identify`, `track`, `page`, `screen`, `group` or `alias`.
#[utoipa::path(post, path = "/v1/{kind}", tag = "ingestion",
    params(("kind" = String, Path, description = "The call kind.",
            example = "identify")),
    request_body(content = Object, description = "A Segment message: `userId`, `anonymousId`, `previousId`, `traits`, `properties`, `event`, `context`, `timestamp`, `messageId`. At most 32 KB; `Content-Encoding: gzip` is read.", content_type = "application/json"),
    responses((status = 200, description = "Stored (or a repeat of a stored `messageId`).", body = SingleAck),
              (status = 404, description = "Not a call kind.", body = crate::error::ErrorBody),
              (status = 413, description = "More than 32 KB.", body = crate::error::ErrorBody)))]
pub(crate) async fn single<S: Store>(
    State(state): State<AppState<S>>,
    WriteKey(principal): WriteKey,
    Path(kind): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<SingleAck>, ApiError> {
    let kind = MessageKind::parse(&kind).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no route for POST /v1/{kind}"),
        )
    })?;
    let bytes = segment::read_body(&headers, body, MAX_MESSAGE_BYTES).await?;
    let raw = std::str::from_utf8(&bytes).map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            "the body is not UTF-8",
        )
    })?;
    let settings = settings::load(&state.store, &principal.tenant_id).await?;
    let received_at = Timestamp::now();
    let event_id = state.event_ids.next();
    let message = segment::parse_message(raw, Some(kind), None, received_at, || {
        format!("idg-{event_id}")
    })
    .map_err(|e| {
        count("rejected", 1);
        ApiError::new(StatusCode::BAD_REQUEST, e.code, e.message)
    })?;
    let prepared = ingest::prepare(
        &settings,
        &workspace_of(&principal),
        message,
        event_id,
        received_at,
    )
    .inspect_err(|_| count("rejected", 1))?;
    let report = ingest::record(
        &state.store,
        &principal.tenant_id,
        &settings,
        vec![prepared],
    )
    .await?;
    record_metrics(&report, 0);
    if let Some((_, kinds)) = report.erased.first() {
        return Ok(Json(SingleAck {
            success: true,
            accepted: Some(0),
            rejected: Some(1),
            errors: Some(vec![ItemErrorDto {
                index: 0,
                code: "erased_identifier",
                message: erased_reason(kinds),
            }]),
        }));
    }
    Ok(Json(SingleAck {
        success: true,
        accepted: None,
        rejected: None,
        errors: None,
    }))
}

/// A Segment batch: `{"batch": [...], "sentAt"}`, each item carrying its `type`.
#[utoipa::path(post, path = "/v1/batch", tag = "ingestion",
    request_body(content = Object, description = "`{\"batch\": [message, ...], \"sentAt\"?}`; at most 500 KB; `Content-Encoding: gzip` is read.", content_type = "application/json"),
    responses((status = 200, description = "The valid items were stored; the others are listed in `errors`.", body = BatchAck),
              (status = 413, description = "More than 500 KB.", body = crate::error::ErrorBody)))]
pub(crate) async fn batch<S: Store>(
    State(state): State<AppState<S>>,
    WriteKey(principal): WriteKey,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<BatchAck>, ApiError> {
    let bytes = segment::read_body(&headers, body, MAX_BATCH_BYTES).await?;
    let settings = settings::load(&state.store, &principal.tenant_id).await?;
    let workspace = workspace_of(&principal);
    let received_at = Timestamp::now();
    let event_ids = state.event_ids.clone();
    let prepare_settings = settings.clone();
    // Parsing and normalizing (phone numbers especially) is CPU work: keep it off the runtime.
    let (prepared, indexes, mut errors) =
        tokio::task::spawn_blocking(move || -> Result<_, ApiError> {
            let envelope = segment::parse_batch(&bytes)?;
            let mut prepared: Vec<Prepared> = Vec::with_capacity(envelope.batch.len());
            let mut indexes: Vec<usize> = Vec::with_capacity(envelope.batch.len());
            let mut errors: Vec<(usize, ItemError)> = Vec::new();
            for (index, raw) in envelope.batch.iter().enumerate() {
                let event_id = event_ids.next();
                let fresh = || format!("idg-{event_id}");
                let parsed = segment::parse_message(
                    raw.get(),
                    None,
                    envelope.sent_at.as_ref(),
                    received_at,
                    fresh,
                );
                let outcome = parsed.and_then(|message| {
                    ingest::prepare(
                        &prepare_settings,
                        &workspace,
                        message,
                        event_id.clone(),
                        received_at,
                    )
                    .map_err(|e: AppError| ItemError {
                        code: e.code,
                        message: e.message,
                    })
                });
                match outcome {
                    Ok(item) => {
                        prepared.push(item);
                        indexes.push(index);
                    }
                    Err(error) => errors.push((index, error)),
                }
            }
            Ok((prepared, indexes, errors))
        })
        .await
        .map_err(|e| ApiError::from(AppError::internal(format!("batch parsing failed: {e}"))))??;

    if prepared.is_empty() && !errors.is_empty() {
        count("rejected", errors.len());
        let (index, first) = &errors[0];
        return Err(ApiError::from(
            AppError::invalid(
                "invalid_batch",
                format!(
                    "no valid message in the batch; item {index}: {}",
                    first.message
                ),
            )
            .with_detail("rejected", errors.len().to_string()),
        ));
    }
    let report = if prepared.is_empty() {
        IngestReport::default()
    } else {
        ingest::record(&state.store, &principal.tenant_id, &settings, prepared).await?
    };
    for (position, kinds) in &report.erased {
        errors.push((
            indexes[*position],
            ItemError {
                code: "erased_identifier",
                message: erased_reason(kinds),
            },
        ));
    }
    errors.sort_by_key(|(index, _)| *index);
    record_metrics(&report, errors.len());
    let errors: Vec<ItemErrorDto> = errors
        .into_iter()
        .map(|(index, e)| ItemErrorDto {
            index,
            code: e.code,
            message: e.message,
        })
        .collect();
    Ok(Json(BatchAck {
        success: true,
        accepted: report.accepted,
        duplicates: report.duplicates,
        rejected: errors.len(),
        identifiers_rejected: report.identifiers_rejected,
        errors,
    }))
}
