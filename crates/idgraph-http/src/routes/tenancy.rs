//! Tenants (master key) and workspaces.

use axum::extract::State;
use axum::http::StatusCode;
use idgraph_app::tenants;
use idgraph_store::Store;
use serde_json::Value;

use crate::extract::{Auth, Json, ListQuery, Query};
use crate::wire::{NewTenantDto, NewWorkspaceDto, TenantDto, WorkspaceDto, page_json};
use crate::{ApiError, AppState};

pub(crate) async fn create_tenant<S: Store>(
    State(state): State<AppState<S>>,
    Auth(principal): Auth,
    Json(body): Json<NewTenantDto>,
) -> Result<(StatusCode, Json<TenantDto>), ApiError> {
    let tenant =
        tenants::create_tenant(&state.store, &principal, body.id.as_deref(), &body.name).await?;
    Ok((StatusCode::CREATED, Json(tenant.into())))
}

pub(crate) async fn list_tenants<S: Store>(
    State(state): State<AppState<S>>,
    Auth(principal): Auth,
    Query(query): Query<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let page = tenants::list_tenants(&state.store, &principal, &query.page()?).await?;
    let items: Vec<TenantDto> = page.items.into_iter().map(Into::into).collect();
    Ok(Json(page_json("tenants", items, page.next_cursor)))
}

pub(crate) async fn create_workspace<S: Store>(
    State(state): State<AppState<S>>,
    Auth(principal): Auth,
    Json(body): Json<NewWorkspaceDto>,
) -> Result<(StatusCode, Json<WorkspaceDto>), ApiError> {
    let workspace = tenants::create_workspace(
        &state.store,
        &principal,
        &body.name,
        body.environment.as_deref(),
    )
    .await?;
    Ok((StatusCode::CREATED, Json(workspace.into())))
}

pub(crate) async fn list_workspaces<S: Store>(
    State(state): State<AppState<S>>,
    Auth(principal): Auth,
    Query(query): Query<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let page = tenants::list_workspaces(&state.store, &principal, &query.page()?).await?;
    let items: Vec<WorkspaceDto> = page.items.into_iter().map(Into::into).collect();
    Ok(Json(page_json("workspaces", items, page.next_cursor)))
}
