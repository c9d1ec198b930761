//! The audit log: `GET /api/v1/audit`.

use axum::extract::State;
use idgraph_app::audit;
use idgraph_store::Store;
use serde_json::{Value, json};

use crate::extract::{Auth, Json, ListQuery, Query};
use crate::{ApiError, AppState};

pub(crate) async fn list<S: Store>(
    State(state): State<AppState<S>>,
    Auth(principal): Auth,
    Query(query): Query<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    // Entries are written in the background: what was queued before this read is in the log.
    state.audit.flush().await;
    let page = audit::list(&state.store, &principal, &query.page()?).await?;
    let entries: Vec<Value> = page
        .items
        .iter()
        .map(|e| {
            json!({
                "id": e.entry_id,
                "at": e.at.to_string(),
                "actor": e.actor,
                "actor_tenant": e.actor_tenant.as_str(),
                "on_behalf_of": e.on_behalf_of.as_ref().map(|t| t.as_str()),
                "action": e.action,
                "object": e.object,
                "status": e.status,
                "latency_ms": e.latency_us as f64 / 1000.0,
            })
        })
        .collect();
    Ok(Json(
        json!({"entries": entries, "next_cursor": page.next_cursor}),
    ))
}
