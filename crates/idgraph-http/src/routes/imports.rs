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
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use crate::extract::{Auth, Json, ListQuery, Path, Query, page_request};
use crate::{ApiError, AppState};

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateQuery {
    /// The workspace the rows belong to (default: the key's, else `default`).
    workspace: Option<String>,
    /// `universe` (default), `enrichment` or `suppression`.
    mode: Option<String>,
    /// A built-in or stored mapping name (default: guessed from the header).
    mapping: Option<String>,
    /// The suppression reason of a `suppression` import.
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

/// What an import did so far.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ImportCountsDto {
    rows: u64,
    landed: u64,
    parsed: u64,
    rejected: u64,
    persons_created: u64,
    persons_merged: u64,
    identifiers_attached: u64,
    conflicts: u64,
    skipped: u64,
    duplicates: u64,
    suppressed: u64,
}

fn counts_json(job: &ImportJob) -> ImportCountsDto {
    let c = &job.counts;
    ImportCountsDto {
        rows: job.landed,
        landed: job.landed,
        parsed: job.processed,
        rejected: c.rejected,
        persons_created: c.persons_created,
        persons_merged: c.persons_merged,
        identifiers_attached: c.identifiers_attached,
        conflicts: c.conflicts,
        skipped: c.skipped,
        duplicates: c.duplicates,
        suppressed: c.suppressed,
    }
}

/// A column of the file and what the mapping made of it.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ColumnDto {
    column: String,
    maps_to: String,
}

/// An import job.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ImportJobDto {
    id: String,
    /// `landing`, `processing`, `completed` or `failed`.
    status: &'static str,
    workspace: String,
    mode: &'static str,
    mapping: String,
    /// 1 for the upload, +1 per reprocess.
    mapping_version: u32,
    mapping_digest: String,
    parser_version: u32,
    file_sha256: Option<String>,
    file_bytes: u64,
    counts: ImportCountsDto,
    columns: Vec<ColumnDto>,
    warnings: Vec<String>,
    error: Option<String>,
    created_at: String,
    updated_at: String,
    finished_at: Option<String>,
}

fn job_json(view: &ImportView) -> ImportJobDto {
    let job = &view.job;
    ImportJobDto {
        id: job.job_id.clone(),
        status: job.status.as_str(),
        workspace: job.workspace.as_str().to_owned(),
        mode: job.mode.as_str(),
        mapping: job.mapping.name.clone(),
        mapping_version: job.mapping.version,
        mapping_digest: job.mapping.digest.clone(),
        parser_version: idgraph_import::PARSER_VERSION,
        file_sha256: job.file_sha256.clone(),
        file_bytes: job.file_bytes,
        counts: counts_json(job),
        columns: view
            .columns
            .iter()
            .map(|(column, target)| ColumnDto {
                column: column.clone(),
                maps_to: target.clone(),
            })
            .collect(),
        warnings: job.warnings.clone(),
        error: job.error.clone(),
        created_at: job.created_at.to_string(),
        updated_at: job.updated_at.to_string(),
        finished_at: job.finished_at.map(|t| t.to_string()),
    }
}

/// The answer to an upload: landed, processing in the background.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ImportCreatedDto {
    id: String,
    status: &'static str,
    rows: u64,
    file_sha256: Option<String>,
    warnings: Vec<String>,
}

/// Upload a CSV file (streamed, never buffered whole); rows are resolved in the background.
#[utoipa::path(post, path = "/api/v1/imports", tag = "imports", params(CreateQuery),
    request_body(content = String, description = "The CSV file; the first line is the header.", content_type = "text/csv"),
    responses((status = 202, description = "Landed; follow `Location` for progress.", body = ImportCreatedDto,
               headers(("Location" = String, description = "The job's URL."))),
              (status = 404, description = "No such workspace or mapping.", body = crate::error::ErrorBody)))]
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
    let body = ImportCreatedDto {
        id: job.job_id.clone(),
        status: job.status.as_str(),
        rows: job.landed,
        file_sha256: job.file_sha256.clone(),
        warnings: job.warnings.clone(),
    };
    let location = format!("/api/v1/imports/{}", job.job_id);
    Ok((
        StatusCode::ACCEPTED,
        [(header::LOCATION, location)],
        axum::Json(body),
    )
        .into_response())
}

/// An import job and its counts.
#[utoipa::path(get, path = "/api/v1/imports/{id}", tag = "imports", params(JobId),
    responses((status = 200, description = "The job.", body = ImportJobDto)))]
pub(crate) async fn get<S: Store>(
    State(state): State<AppState<S>>,
    Auth(principal): Auth,
    Path(job_id): Path<String>,
) -> Result<Json<ImportJobDto>, ApiError> {
    let view = imports::get(&state.store, &principal, &job_id).await?;
    Ok(Json(job_json(&view)))
}

/// `{id}` of an import job.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub(crate) struct JobId {
    /// The job's id.
    #[allow(dead_code, reason = "read by the OpenAPI document only")]
    id: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ImportPage {
    imports: Vec<ImportJobDto>,
    next_cursor: Option<String>,
}

/// The acting tenant's import jobs, newest first.
#[utoipa::path(get, path = "/api/v1/imports", tag = "imports", params(ListQuery),
    responses((status = 200, description = "A page of jobs.", body = ImportPage)))]
pub(crate) async fn list<S: Store>(
    State(state): State<AppState<S>>,
    Auth(principal): Auth,
    Query(query): Query<ListQuery>,
) -> Result<Json<ImportPage>, ApiError> {
    let page = query.page()?;
    let jobs = imports::list(&state.store, &principal, &page).await?;
    Ok(Json(ImportPage {
        imports: jobs.items.iter().map(job_json).collect(),
        next_cursor: jobs.next_cursor,
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct RowsQuery {
    /// Only rows with this outcome (`created`, `merged`, `rejected`, ...).
    outcome: Option<String>,
    /// `json` (default, paged) or `csv` (every matching row, streamed).
    format: Option<String>,
    /// Rows per page: 1 to 1000, default 50 (`json` only).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// What became of one row.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct RowOutcomeDto {
    /// 1 is the first data row after the header.
    row: u64,
    outcome: String,
    /// The person the row belongs to now: the survivor when a later merge absorbed the person
    /// the row was first put on.
    person_id: Option<String>,
    reason: Option<String>,
}

fn row_json(row: &RowOutcome) -> RowOutcomeDto {
    RowOutcomeDto {
        row: row.row,
        outcome: row.outcome.clone(),
        person_id: row.person_id.clone(),
        reason: row.reason.clone(),
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct RowPage {
    rows: Vec<RowOutcomeDto>,
    next_cursor: Option<String>,
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

/// Per-row outcomes of an import.
#[utoipa::path(get, path = "/api/v1/imports/{id}/rows", tag = "imports", params(JobId, RowsQuery),
    responses((status = 200, description = "A page of rows (JSON), or every matching row (CSV).",
               content((RowPage = "application/json"), (String = "text/csv")))))]
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
            Ok(Json(RowPage {
                rows: rows.items.iter().map(row_json).collect(),
                next_cursor: rows.next_cursor,
            })
            .into_response())
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

/// Reprocess with another mapping; no body keeps the job's own.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReprocessDto {
    mapping: Option<String>,
}

/// Run the landed rows through a mapping again, as a new mapping version.
#[utoipa::path(post, path = "/api/v1/imports/{id}/reprocess", tag = "imports", params(JobId),
    request_body(content = Option<ReprocessDto>, content_type = "application/json"),
    responses((status = 202, description = "Reprocessing in the background.", body = ImportJobDto)))]
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

/// A stored mapping.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct MappingDto {
    name: String,
    /// How many times it was saved.
    version: u32,
    /// The mapping document, as JSON.
    mapping: Value,
    updated_at: String,
}

fn mapping_json(stored: &StoredMapping) -> Result<MappingDto, ApiError> {
    Ok(MappingDto {
        name: stored.name.clone(),
        version: stored.version,
        mapping: serde_json::to_value(&stored.mapping)
            .map_err(|e| ApiError::from(AppError::internal(e.to_string())))?,
        updated_at: stored.updated_at.clone(),
    })
}

/// `{name}` of a mapping.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub(crate) struct MappingName {
    /// 1-64 characters of a-z, 0-9, `_` and `-`.
    #[allow(dead_code, reason = "read by the OpenAPI document only")]
    name: String,
}

/// `PUT /api/v1/import-mappings/{name}` with a TOML or JSON mapping document.
#[utoipa::path(put, path = "/api/v1/import-mappings/{name}", tag = "imports", params(MappingName),
    request_body(content = String, description = "A mapping document, TOML or JSON.", content_type = "text/plain"),
    responses((status = 200, description = "Stored.", body = MappingDto)))]
pub(crate) async fn put_mapping<S: Store>(
    State(state): State<AppState<S>>,
    Auth(principal): Auth,
    Path(name): Path<String>,
    body: Body,
) -> Result<Json<MappingDto>, ApiError> {
    let body = small_body(body).await?;
    let text = std::str::from_utf8(&body).map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_mapping",
            "the mapping is not UTF-8 text",
        )
    })?;
    let stored = imports::put_mapping(&state.store, &principal, &name, text).await?;
    Ok(Json(mapping_json(&stored)?))
}

/// A stored mapping.
#[utoipa::path(get, path = "/api/v1/import-mappings/{name}", tag = "imports", params(MappingName),
    responses((status = 200, description = "The mapping.", body = MappingDto)))]
pub(crate) async fn get_mapping<S: Store>(
    State(state): State<AppState<S>>,
    Auth(principal): Auth,
    Path(name): Path<String>,
) -> Result<Json<MappingDto>, ApiError> {
    let stored = imports::get_mapping(&state.store, &principal, &name).await?;
    Ok(Json(mapping_json(&stored)?))
}
