//! API keys, and `whoami` for both kinds of authentication.

use axum::extract::State;
use axum::http::StatusCode;
use idgraph_app::access::Principal;
use idgraph_app::keys::{self, NewKey};
use idgraph_store::Store;
use serde::Serialize;

use crate::extract::{Auth, Json, ListQuery, Path, Query, WriteKey};
use crate::wire::{CreatedKeyDto, KeyPage, NewKeyDto};
use crate::{ApiError, AppState};

/// Create an API key; its secret `key` is in this answer only.
#[utoipa::path(post, path = "/api/v1/keys", tag = "keys", request_body = NewKeyDto,
    responses((status = 201, description = "The key, with its secret.", body = CreatedKeyDto),
              (status = 404, description = "No such workspace.", body = crate::error::ErrorBody)))]
pub(crate) async fn create<S: Store>(
    State(state): State<AppState<S>>,
    Auth(principal): Auth,
    Json(body): Json<NewKeyDto>,
) -> Result<(StatusCode, Json<CreatedKeyDto>), ApiError> {
    let request = NewKey {
        name: body.name,
        scopes: body.scopes,
        workspace: body.workspace,
        rate_limit_per_sec: body.rate_limit_per_sec,
    };
    let created = keys::create_key(&state.store, &principal, request).await?;
    let record = created.record;
    Ok((
        StatusCode::CREATED,
        Json(CreatedKeyDto {
            id: record.key_id,
            key: created.token,
            name: record.name,
            scopes: record.scopes.iter().map(|s| s.as_str()).collect(),
            workspace: record.workspace.map(|w| w.to_string()),
            rate_limit_per_sec: record.rate_limit_per_sec,
            created_at: record.created_at.to_string(),
        }),
    ))
}

/// List the acting tenant's keys (never their secrets).
#[utoipa::path(get, path = "/api/v1/keys", tag = "keys", params(ListQuery),
    responses((status = 200, description = "A page of keys.", body = KeyPage)))]
pub(crate) async fn list<S: Store>(
    State(state): State<AppState<S>>,
    Auth(principal): Auth,
    Query(query): Query<ListQuery>,
) -> Result<Json<KeyPage>, ApiError> {
    let page = keys::list_keys(&state.store, &principal, &query.page()?).await?;
    Ok(Json(KeyPage {
        keys: page.items.into_iter().map(Into::into).collect(),
        next_cursor: page.next_cursor,
    }))
}

/// Revoke a key: it is refused (401) from now on.
#[utoipa::path(delete, path = "/api/v1/keys/{id}", tag = "keys",
    params(("id" = String, Path, description = "The key's id.")),
    responses((status = 204, description = "Revoked.")))]
pub(crate) async fn revoke<S: Store>(
    State(state): State<AppState<S>>,
    Auth(principal): Auth,
    Path(key_id): Path<String>,
) -> Result<StatusCode, ApiError> {
    keys::revoke_key(&state.store, &principal, &key_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// What a key is and may do.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct WhoamiDto {
    key_id: String,
    tenant: String,
    /// The tenant a master key acts for (`X-Idgraph-On-Behalf-Of`).
    on_behalf_of: Option<String>,
    workspace: Option<String>,
    scopes: Vec<&'static str>,
    master: bool,
}

fn describe(principal: &Principal) -> WhoamiDto {
    WhoamiDto {
        key_id: principal.key_id.clone(),
        tenant: principal.tenant_id.as_str().to_owned(),
        on_behalf_of: principal
            .on_behalf_of
            .as_ref()
            .map(|t| t.as_str().to_owned()),
        workspace: principal.workspace.as_ref().map(|w| w.as_str().to_owned()),
        scopes: principal.scopes.iter().map(|s| s.as_str()).collect(),
        master: principal.is_master,
    }
}

/// What the presented Bearer key is: lets operators and tests check a key without side effects.
#[utoipa::path(get, path = "/api/v1/whoami", tag = "keys",
    responses((status = 200, description = "The key.", body = WhoamiDto)))]
pub(crate) async fn whoami(Auth(principal): Auth) -> Json<WhoamiDto> {
    Json(describe(&principal))
}

/// The same for a write key over HTTP Basic, as a Segment client would authenticate.
#[utoipa::path(get, path = "/v1/whoami", tag = "ingestion",
    responses((status = 200, description = "The write key.", body = WhoamiDto)))]
pub(crate) async fn write_key_whoami(WriteKey(principal): WriteKey) -> Json<WhoamiDto> {
    Json(describe(&principal))
}
