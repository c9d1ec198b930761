//! Imports: `POST /api/v1/imports` streams a CSV body into LAND (never buffered whole), then
//! answers 202 while processing runs in the background; reading jobs and their row outcomes;
//! reprocessing; user mappings under `/api/v1/import-mappings/{name}`.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use idgraph_app::AppError;
use idgraph_app::imports::{self, ImportRequest, ImportView, Landing, StoredMapping};
use idgraph_store::{ImportJob, PageRequest, RowOutcome, Store};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::extract::{Auth, Json, ListQuery, Path, Query, page_request};
use crate::{ApiError, AppState};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateQuery {
    workspace: Option<String>,
    mode: Option<String>,
    mapping: Option<String>,
    reason: Option<String>,
}

/// Bodies a CSV upload may be sent as; anything else (JSON, a form) is a mistake worth naming.
fn check_content_type(headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Ok(());
    };
    let media = value
        .to_str()
        .unwrap_or_default()
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    let accepted = [
        "text/csv",
        "application/csv",
        "text/plain",
        "text/tab-separated-values",
        "application/octet-stream",
        "",
    ];
    if accepted.contains(&media.as_str()) {
        return Ok(());
    }
    // The two a first try most often sends: curl's --data-binary without a Content-Type, and
    // the file as a field of a form (curl -F).
    let hint = match media.as_str() {
        "application/x-www-form-urlencoded" => {
            " (curl sends that for --data-binary unless told otherwise: add -H 'Content-Type: text/csv')"
        }
        "multipart/form-data" => {
            " (send the file itself as the body, not as a form field: curl --data-binary @FILE -H 'Content-Type: text/csv')"
        }
        _ => "",
    };
    Err(ApiError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
        format!("expected a CSV body (Content-Type: text/csv), got {media:?}{hint}"),
    ))
}

fn counts_json(job: &ImportJob) -> Value {
    let c = &job.counts;
    json!({
        "rows": job.landed,
        "landed": job.landed,
        "parsed": job.processed,
        "rejected": c.rejected,
        "persons_created": c.persons_created,
        "persons_merged": c.persons_merged,
        "identifiers_attached": c.identifiers_attached,
        "conflicts": c.conflicts,
        "skipped": c.skipped,
        "duplicates": c.duplicates,
        "suppressed": c.suppressed,
    })
}

fn job_json(view: &ImportView) -> Value {
    let job = &view.job;
    let columns: Vec<Value> = view
        .columns
        .iter()
        .map(|(column, target)| json!({"column": column, "maps_to": target}))
        .collect();
    json!({
        "id": job.job_id,
        "status": job.status.as_str(),
        "workspace": job.workspace.as_str(),
        "mode": job.mode.as_str(),
        "mapping": job.mapping.name,
        "mapping_version": job.mapping.version,
        "mapping_digest": job.mapping.digest,
        "parser_version": idgraph_import::PARSER_VERSION,
        "file_sha256": job.file_sha256,
        "file_bytes": job.file_bytes,
        "counts": counts_json(job),
        "columns": columns,
        "warnings": job.warnings,
        "error": job.error,
        "created_at": job.created_at.to_string(),
        "updated_at": job.updated_at.to_string(),
        "finished_at": job.finished_at.map(|t| t.to_string()),
    })
}

pub(crate) async fn create<S: Store>(
    State(state): State<AppState<S>>,
    Auth(principal): Auth,
    Query(query): Query<CreateQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    check_content_type(&headers)?;
    if headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|e| !e.trim().eq_ignore_ascii_case("identity"))
    {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_encoding",
            "send the CSV uncompressed",
        ));
    }
    let request = ImportRequest {
        workspace: query.workspace,
        mode: query.mode,
        mapping: query.mapping,
        reason: query.reason,
    };
    let mut landing = Landing::begin(&state.importer, &principal, request).await?;
    let mut stream = body.into_data_stream();
    while let Some(piece) = stream.next().await {
        match piece {
            Ok(bytes) => landing.push(&bytes).await?,
            Err(error) => {
                let why = error.to_string();
                landing.abort(&why).await;
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "upload_interrupted",
                    format!("the body could not be read to its end: {why}"),
                ));
            }
        }
    }
    let job = landing.finish().await?;
    let body = json!({
        "id": job.job_id,
        "status": job.status.as_str(),
        "rows": job.landed,
        "file_sha256": job.file_sha256,
        "warnings": job.warnings,
    });
    let location = format!("/api/v1/imports/{}", job.job_id);
    Ok((
        StatusCode::ACCEPTED,
        [(header::LOCATION, location)],
        axum::Json(body),
    )
        .into_response())
}

pub(crate) async fn get<S: Store>(
    State(state): State<AppState<S>>,
    Auth(principal): Auth,
    Path(job_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let view = imports::get(&state.store, &principal, &job_id).await?;
    Ok(Json(job_json(&view)))
}

pub(crate) async fn list<S: Store>(
    State(state): State<AppState<S>>,
    Auth(principal): Auth,
    Query(query): Query<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let page = query.page()?;
    let jobs = imports::list(&state.store, &principal, &page).await?;
    let items: Vec<Value> = jobs.items.iter().map(job_json).collect();
    Ok(Json(
        json!({"imports": items, "next_cursor": jobs.next_cursor}),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RowsQuery {
    outcome: Option<String>,
    format: Option<String>,
    limit: Option<u32>,
    cursor: Option<String>,
}

fn row_json(row: &RowOutcome) -> Value {
    json!({"row": row.row, "outcome": row.outcome, "person_id": row.person_id, "reason": row.reason})
}

/// One CSV field, quoted when it must be.
fn csv_field(out: &mut String, value: &str) {
    if value.contains([',', '"', '\n', '\r']) {
        out.push('"');
        out.push_str(&value.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(value);
    }
}

fn csv_line(row: &RowOutcome) -> String {
    let mut line = row.row.to_string();
    line.push(',');
    csv_field(&mut line, &row.person_id.clone().unwrap_or_default());
    line.push(',');
    csv_field(&mut line, &row.outcome);
    line.push(',');
    csv_field(&mut line, &row.reason.clone().unwrap_or_default());
    line.push('\n');
    line
}

/// Rows per page read while streaming CSV.
const CSV_PAGE: u32 = 1000;

pub(crate) async fn rows<S: Store>(
    State(state): State<AppState<S>>,
    Auth(principal): Auth,
    Path(job_id): Path<String>,
    Query(query): Query<RowsQuery>,
) -> Result<Response, ApiError> {
    let outcome = query.outcome.filter(|o| !o.is_empty());
    match query.format.as_deref().unwrap_or("json") {
        "json" => {
            let page = page_request(query.limit, query.cursor)?;
            let rows =
                imports::rows(&state.store, &principal, &job_id, outcome.as_deref(), &page).await?;
            let items: Vec<Value> = rows.items.iter().map(row_json).collect();
            Ok(Json(json!({"rows": items, "next_cursor": rows.next_cursor})).into_response())
        }
        "csv" => {
            // The first page is read before answering, so a bad id or filter is still a 4xx.
            let first = imports::rows(
                &state.store,
                &principal,
                &job_id,
                outcome.as_deref(),
                &PageRequest::first(CSV_PAGE),
            )
            .await?;
            let store = state.store.clone();
            let pages = futures_util::stream::unfold((Some(first), true), move |(page, header)| {
                let (store, principal, job_id, outcome) = (
                    store.clone(),
                    principal.clone(),
                    job_id.clone(),
                    outcome.clone(),
                );
                async move {
                    if header {
                        let text = "row,person_id,outcome,reason\n".to_owned();
                        return Some((Ok::<_, std::io::Error>(text), (page, false)));
                    }
                    let page = page?;
                    let text: String = page.items.iter().map(csv_line).collect();
                    let next = match page.next_cursor {
                        None => None,
                        Some(cursor) => {
                            let request = PageRequest {
                                limit: CSV_PAGE,
                                after: Some(cursor),
                            };
                            match imports::rows(
                                &store,
                                &principal,
                                &job_id,
                                outcome.as_deref(),
                                &request,
                            )
                            .await
                            {
                                Ok(next) => Some(next),
                                Err(e) => {
                                    return Some((
                                        Err(std::io::Error::other(e.message)),
                                        (None, false),
                                    ));
                                }
                            }
                        }
                    };
                    Some((Ok(text), (next, false)))
                }
            });
            Ok((
                [(header::CONTENT_TYPE, "text/csv; charset=utf-8")],
                Body::from_stream(pages),
            )
                .into_response())
        }
        other => Err(ApiError::from(
            AppError::invalid(
                "invalid_query",
                format!("format {other:?} is not one of json, csv"),
            )
            .with_detail("field", "format"),
        )),
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReprocessDto {
    mapping: Option<String>,
}

pub(crate) async fn reprocess<S: Store>(
    State(state): State<AppState<S>>,
    Auth(principal): Auth,
    Path(job_id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let body = small_body(body).await?;
    // The body is optional: no body (or `{}`) reprocesses with the job's own mapping name.
    let dto: ReprocessDto = if body.iter().all(u8::is_ascii_whitespace) {
        ReprocessDto::default()
    } else {
        let is_json = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json"));
        if !is_json {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "expected a body with Content-Type: application/json",
            ));
        }
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_json", e.to_string()))?
    };
    let view =
        imports::reprocess(&state.importer, &principal, &job_id, dto.mapping.as_deref()).await?;
    Ok((StatusCode::ACCEPTED, axum::Json(job_json(&view))).into_response())
}

/// Mapping documents and reprocess requests are small.
const SMALL_BODY_BYTES: usize = 1 << 20;

async fn small_body(body: Body) -> Result<axum::body::Bytes, ApiError> {
    axum::body::to_bytes(body, SMALL_BODY_BYTES)
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("the body is larger than {} KB", SMALL_BODY_BYTES / 1024),
            )
        })
}

fn mapping_json(stored: &StoredMapping) -> Value {
    json!({
        "name": stored.name,
        "version": stored.version,
        "mapping": stored.mapping,
        "updated_at": stored.updated_at,
    })
}

/// `PUT /api/v1/import-mappings/{name}` with a TOML or JSON mapping document.
pub(crate) async fn put_mapping<S: Store>(
    State(state): State<AppState<S>>,
    Auth(principal): Auth,
    Path(name): Path<String>,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let body = small_body(body).await?;
    let text = std::str::from_utf8(&body).map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_mapping",
            "the mapping is not UTF-8 text",
        )
    })?;
    let stored = imports::put_mapping(&state.store, &principal, &name, text).await?;
    Ok(Json(mapping_json(&stored)))
}

pub(crate) async fn get_mapping<S: Store>(
    State(state): State<AppState<S>>,
    Auth(principal): Auth,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let stored = imports::get_mapping(&state.store, &principal, &name).await?;
    Ok(Json(mapping_json(&stored)))
}
