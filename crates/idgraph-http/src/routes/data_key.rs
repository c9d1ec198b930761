//! The PII keyring (master key only): rotate the data-encryption key, see where it stands.

use axum::extract::State;
use axum::http::StatusCode;
use idgraph_app::keyring::{self, RotationStatus};
use idgraph_store::Store;
use serde::Serialize;

use crate::extract::{Auth, Json};
use crate::{ApiError, AppState};

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct DataKeyStatusDto {
    /// `staged` (the new key waits until every process can open what it seals), `resealing`
    /// (stored rows are being re-sealed with it) or `done` (no rotation under way).
    status: &'static str,
    /// The id of the data-encryption key being rotated to, or the current one when done.
    key: u32,
}

impl From<RotationStatus> for DataKeyStatusDto {
    fn from(status: RotationStatus) -> Self {
        match status {
            RotationStatus::Staged { to, .. } => Self {
                status: "staged",
                key: to,
            },
            RotationStatus::Resealing { to } => Self {
                status: "resealing",
                key: to,
            },
            RotationStatus::Done { current } => Self {
                status: "done",
                key: current,
            },
        }
    }
}

/// Rotate the data-encryption key of PII (master key only). Answers at once; the server
/// re-seals stored rows in small batches in the background while it keeps serving. Asking
/// again during a rotation reports it, it does not start another.
#[utoipa::path(post, path = "/api/v1/data-key/rotate", tag = "system",
    responses((status = 202, description = "The rotation under way.", body = DataKeyStatusDto),
              (status = 503, description = "No data key is configured (`data_key_missing`).", body = crate::error::ErrorBody)))]
pub(crate) async fn rotate<S: Store>(
    State(state): State<AppState<S>>,
    Auth(principal): Auth,
) -> Result<(StatusCode, Json<DataKeyStatusDto>), ApiError> {
    let status =
        keyring::request_rotation(&state.store, &principal, state.data_key.as_deref()).await?;
    Ok((StatusCode::ACCEPTED, Json(status.into())))
}

/// Where the PII keyring stands (master key only).
#[utoipa::path(get, path = "/api/v1/data-key", tag = "system",
    responses((status = 200, description = "The keyring's rotation status.", body = DataKeyStatusDto),
              (status = 503, description = "No data key is configured (`data_key_missing`).", body = crate::error::ErrorBody)))]
pub(crate) async fn status<S: Store>(
    State(state): State<AppState<S>>,
    Auth(principal): Auth,
) -> Result<Json<DataKeyStatusDto>, ApiError> {
    let status =
        keyring::rotation_status(&state.store, &principal, state.data_key.as_deref()).await?;
    Ok(Json(status.into()))
}
