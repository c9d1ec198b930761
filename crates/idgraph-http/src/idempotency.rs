//! `Idempotency-Key` on any POST, with Stripe's semantics: the first response (status and body)
//! is kept for 24 hours and replayed to a repeat of the same request; the same key with another
//! request is a 422 `idempotency_key_reused`; a repeat while the first is still running is a 409
//! `idempotency_key_in_use`. Keys are scoped to the credential that sent them.
//!
//! Answers a retry could change are not kept: 5xx, 401, 403 and 429 release the key.

use axum::body::{Body, to_bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use idgraph_app::AppError;
use idgraph_core::auth::KeyToken;
use idgraph_core::tenancy::TenantId;
use idgraph_store::{IdempotencyBegin, IdempotencyRequest, Store, StoredResponse};
use jiff::{SignedDuration, Timestamp};
use sha2::{Digest, Sha256};

use crate::extract::basic_user;
use crate::{ApiError, AppState};

const HEADER: &str = "idempotency-key";
/// Requests with a key are read whole to fingerprint them; larger ones (imports) must rely on
/// their own idempotency (an import of the same file changes nothing).
const MAX_BODY: usize = 32 * 1024 * 1024;
/// Responses larger than this are answered but not kept.
const MAX_KEPT_RESPONSE: usize = 8 * 1024 * 1024;
const RETENTION: SignedDuration = SignedDuration::from_hours(24);
/// A claim older than this, never completed, belongs to a process that died.
const PENDING_TIMEOUT: SignedDuration = SignedDuration::from_mins(5);

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn error(status: StatusCode, code: &'static str, message: &str) -> Response {
    ApiError::new(status, code, message).into_response()
}

/// The tenant a credential belongs to, as far as it can be told without authenticating: keys
/// name their tenant; anything else can only be the master key, which lives in `default`.
fn tenant_of(authorization: &str) -> TenantId {
    let token = match authorization.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => {
            Some(token.trim().to_owned())
        }
        _ => basic_user(authorization),
    };
    token
        .and_then(|t| KeyToken::parse(&t))
        .map_or_else(TenantId::default_tenant, |t| t.tenant_id)
}

pub(crate) async fn around<S: Store>(
    State(state): State<AppState<S>>,
    request: Request,
    next: Next,
) -> Response {
    if request.method() != Method::POST {
        return next.run(request).await;
    }
    let Some(key) = request.headers().get(HEADER) else {
        return next.run(request).await;
    };
    let key = match key.to_str() {
        Ok(key)
            if !key.is_empty() && key.len() <= 255 && key.bytes().all(|b| b.is_ascii_graphic()) =>
        {
            key.to_owned()
        }
        _ => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_header",
                "Idempotency-Key must be 1 to 255 visible ASCII characters",
            );
        }
    };
    let Some(authorization) = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
    else {
        // Unauthenticated: the handler answers 401, and there is no one to scope the key to.
        return next.run(request).await;
    };
    let (parts, body) = request.into_parts();
    let Ok(body) = to_bytes(body, MAX_BODY).await else {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "a request with an Idempotency-Key may be at most 32 MB",
        );
    };
    let mut fingerprint = Sha256::new();
    fingerprint.update(parts.method.as_str());
    fingerprint.update([0]);
    fingerprint.update(parts.uri.path_and_query().map_or("", |p| p.as_str()));
    fingerprint.update([0]);
    fingerprint.update(&body);
    let claim = IdempotencyRequest {
        tenant_id: tenant_of(&authorization),
        scope: hex(&Sha256::digest(authorization.as_bytes())),
        key,
        fingerprint: hex(&fingerprint.finalize()),
        at: Timestamp::now(),
        retention: RETENTION,
        pending_timeout: PENDING_TIMEOUT,
    };
    match state.store.idempotency_begin(&claim).await {
        Err(e) => ApiError::from(AppError::from_store("idempotency key")(e)).into_response(),
        Ok(IdempotencyBegin::InProgress) => error(
            StatusCode::CONFLICT,
            "idempotency_key_in_use",
            "a request with this Idempotency-Key is still being processed; retry later",
        ),
        Ok(IdempotencyBegin::Mismatch) => error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "idempotency_key_reused",
            "this Idempotency-Key was used with a different request",
        ),
        Ok(IdempotencyBegin::Replay(stored)) => replay(stored),
        Ok(IdempotencyBegin::Run) => {
            let response = next.run(Request::from_parts(parts, Body::from(body))).await;
            keep(&state, &claim, response).await
        }
    }
}

fn replay(stored: StoredResponse) -> Response {
    let status = StatusCode::from_u16(stored.status).unwrap_or(StatusCode::OK);
    let mut response = (status, stored.body).into_response();
    if let Some(content_type) = stored
        .content_type
        .and_then(|c| HeaderValue::from_str(&c).ok())
    {
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, content_type);
    }
    response
        .headers_mut()
        .insert("idempotent-replayed", HeaderValue::from_static("true"));
    response
}

/// Stores the response for replay (or releases the key) and hands it on.
async fn keep<S: Store>(
    state: &AppState<S>,
    claim: &IdempotencyRequest,
    response: Response,
) -> Response {
    let status = response.status();
    let retryable = status.is_server_error()
        || matches!(
            status,
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN | StatusCode::TOO_MANY_REQUESTS
        );
    let (parts, body) = response.into_parts();
    let (bytes, stored) = match to_bytes(body, MAX_KEPT_RESPONSE).await {
        Ok(bytes) if !retryable => {
            let stored = StoredResponse {
                status: status.as_u16(),
                content_type: parts
                    .headers
                    .get(header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned),
                body: bytes.to_vec(),
            };
            (bytes, Some(stored))
        }
        Ok(bytes) => (bytes, None),
        Err(_) => {
            let _ = state.store.idempotency_finish(claim, None).await;
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "the response could not be read",
            );
        }
    };
    if let Err(e) = state.store.idempotency_finish(claim, stored).await {
        // The request has run; failing it now would invite a second run. The key stays pending
        // and frees itself after the pending timeout.
        tracing::error!(error = %e, "could not record an idempotent response");
    }
    Response::from_parts(parts, Body::from(bytes))
}
