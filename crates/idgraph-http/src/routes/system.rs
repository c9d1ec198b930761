//! Unauthenticated operational endpoints.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use idgraph_store::Store;
use serde::Serialize;

use crate::{ApiError, AppState};

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct HealthDto {
    /// Always `ok`.
    status: &'static str,
}

/// Liveness and readiness in one: 200 only when the database answers.
#[utoipa::path(get, path = "/healthz", tag = "system",
    responses((status = 200, description = "The database answers.", body = HealthDto),
              (status = 503, description = "The database does not answer.", body = crate::error::ErrorBody)))]
pub(crate) async fn healthz<S: Store>(State(state): State<AppState<S>>) -> impl IntoResponse {
    match state.store.ping().await {
        Ok(()) => (StatusCode::OK, axum::Json(HealthDto { status: "ok" })).into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "health check failed");
            ApiError::from(idgraph_app::AppError::new(
                idgraph_app::ErrorKind::Unavailable,
                "store_unavailable",
                e.to_string(),
            ))
            .into_response()
        }
    }
}

/// Prometheus metrics of this process.
#[utoipa::path(get, path = "/metrics", tag = "system",
    responses((status = 200, description = "Prometheus text exposition format.", content_type = "text/plain", body = String)))]
pub(crate) async fn metrics<S: Store>(State(state): State<AppState<S>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
}
