//! The audit log: `GET /api/v1/audit`.

use axum::extract::State;
use idgraph_app::audit;
use idgraph_store::Store;
use serde::Serialize;

use crate::extract::{Auth, Json, ListQuery, Query};
use crate::{ApiError, AppState};

/// One management call.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct AuditEntryDto {
    id: String,
    at: String,
    /// The key that called.
    actor: String,
    actor_tenant: String,
    on_behalf_of: Option<String>,
    /// `METHOD /route/{pattern}`.
    action: String,
    /// The object named in the path, if any.
    object: Option<String>,
    status: u16,
    latency_ms: f64,
}

/// `GET /api/v1/audit`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct AuditPage {
    entries: Vec<AuditEntryDto>,
    next_cursor: Option<String>,
}

/// The acting tenant's audit log, newest first.
#[utoipa::path(get, path = "/api/v1/audit", tag = "audit", params(ListQuery),
    responses((status = 200, description = "A page of entries.", body = AuditPage)))]
pub(crate) async fn list<S: Store>(
    State(state): State<AppState<S>>,
    Auth(principal): Auth,
    Query(query): Query<ListQuery>,
) -> Result<Json<AuditPage>, ApiError> {
    // Entries are written in the background: what was queued before this read is in the log.
    state.audit.flush().await;
    let page = audit::list(&state.store, &principal, &query.page()?).await?;
    let entries = page
        .items
        .into_iter()
        .map(|e| AuditEntryDto {
            id: e.entry_id,
            at: e.at.to_string(),
            actor: e.actor,
            actor_tenant: e.actor_tenant.as_str().to_owned(),
            on_behalf_of: e.on_behalf_of.as_ref().map(|t| t.as_str().to_owned()),
            action: e.action,
            object: e.object,
            status: e.status,
            latency_ms: e.latency_us as f64 / 1000.0,
        })
        .collect();
    Ok(Json(AuditPage {
        entries,
        next_cursor: page.next_cursor,
    }))
}
