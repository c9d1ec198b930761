//! Tenants (master key) and workspaces.

use axum::extract::State;
use axum::http::StatusCode;
use idgraph_app::tenants;
use idgraph_store::Store;

use crate::extract::{Auth, Json, ListQuery, Query};
use crate::wire::{
    NewTenantDto, NewWorkspaceDto, TenantDto, TenantPage, WorkspaceDto, WorkspacePage,
};
use crate::{ApiError, AppState};

/// Create a tenant (master key only).
#[utoipa::path(post, path = "/api/v1/tenants", tag = "tenancy", request_body = NewTenantDto,
    responses((status = 201, description = "The tenant.", body = TenantDto),
              (status = 409, description = "A tenant with that id exists.", body = crate::error::ErrorBody)))]
pub(crate) async fn create_tenant<S: Store>(
    State(state): State<AppState<S>>,
    Auth(principal): Auth,
    Json(body): Json<NewTenantDto>,
) -> Result<(StatusCode, Json<TenantDto>), ApiError> {
    let tenant =
        tenants::create_tenant(&state.store, &principal, body.id.as_deref(), &body.name).await?;
    Ok((StatusCode::CREATED, Json(tenant.into())))
}

/// List tenants (master key only).
#[utoipa::path(get, path = "/api/v1/tenants", tag = "tenancy", params(ListQuery),
    responses((status = 200, description = "A page of tenants.", body = TenantPage)))]
pub(crate) async fn list_tenants<S: Store>(
    State(state): State<AppState<S>>,
    Auth(principal): Auth,
    Query(query): Query<ListQuery>,
) -> Result<Json<TenantPage>, ApiError> {
    let page = tenants::list_tenants(&state.store, &principal, &query.page()?).await?;
    Ok(Json(TenantPage {
        tenants: page.items.into_iter().map(Into::into).collect(),
        next_cursor: page.next_cursor,
    }))
}

/// Create a workspace in the acting tenant.
#[utoipa::path(post, path = "/api/v1/workspaces", tag = "tenancy", request_body = NewWorkspaceDto,
    responses((status = 201, description = "The workspace.", body = WorkspaceDto),
              (status = 409, description = "A workspace with that name exists.", body = crate::error::ErrorBody)))]
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

/// List the acting tenant's workspaces.
#[utoipa::path(get, path = "/api/v1/workspaces", tag = "tenancy", params(ListQuery),
    responses((status = 200, description = "A page of workspaces.", body = WorkspacePage)))]
pub(crate) async fn list_workspaces<S: Store>(
    State(state): State<AppState<S>>,
    Auth(principal): Auth,
    Query(query): Query<ListQuery>,
) -> Result<Json<WorkspacePage>, ApiError> {
    let page = tenants::list_workspaces(&state.store, &principal, &query.page()?).await?;
    Ok(Json(WorkspacePage {
        workspaces: page.items.into_iter().map(Into::into).collect(),
        next_cursor: page.next_cursor,
    }))
}
