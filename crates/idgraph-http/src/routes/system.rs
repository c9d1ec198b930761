//! Unauthenticated operational endpoints.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use idgraph_store::Store;
use serde_json::json;

use crate::{ApiError, AppState};

/// Liveness and readiness in one: 200 only when the database answers.
pub(crate) async fn healthz<S: Store>(State(state): State<AppState<S>>) -> impl IntoResponse {
    match state.store.ping().await {
        Ok(()) => (StatusCode::OK, axum::Json(json!({"status": "ok"}))).into_response(),
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

pub(crate) async fn metrics<S: Store>(State(state): State<AppState<S>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
}
