//! API keys, and `whoami` for both kinds of authentication.

use axum::extract::State;
use axum::http::StatusCode;
use idgraph_app::access::Principal;
use idgraph_app::keys::{self, NewKey};
use idgraph_store::Store;
use serde_json::{Value, json};

use crate::extract::{Auth, Json, ListQuery, Path, Query, WriteKey};
use crate::wire::{CreatedKeyDto, KeyDto, NewKeyDto, page_json};
use crate::{ApiError, AppState};

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

pub(crate) async fn list<S: Store>(
    State(state): State<AppState<S>>,
    Auth(principal): Auth,
    Query(query): Query<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let page = keys::list_keys(&state.store, &principal, &query.page()?).await?;
    let items: Vec<KeyDto> = page.items.into_iter().map(Into::into).collect();
    Ok(Json(page_json("keys", items, page.next_cursor)))
}

pub(crate) async fn revoke<S: Store>(
    State(state): State<AppState<S>>,
    Auth(principal): Auth,
    Path(key_id): Path<String>,
) -> Result<StatusCode, ApiError> {
    keys::revoke_key(&state.store, &principal, &key_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

fn describe(principal: &Principal) -> Value {
    json!({
        "key_id": principal.key_id,
        "tenant": principal.tenant_id.as_str(),
        "on_behalf_of": principal.on_behalf_of.as_ref().map(|t| t.as_str()),
        "workspace": principal.workspace.as_ref().map(|w| w.as_str()),
        "scopes": principal.scopes.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
        "master": principal.is_master,
    })
}

/// What the presented Bearer key is: lets operators and tests check a key without side effects.
pub(crate) async fn whoami(Auth(principal): Auth) -> Json<Value> {
    Json(describe(&principal))
}

/// The same for a write key over HTTP Basic, as a Segment client would authenticate.
pub(crate) async fn write_key_whoami(WriteKey(principal): WriteKey) -> Json<Value> {
    Json(describe(&principal))
}
