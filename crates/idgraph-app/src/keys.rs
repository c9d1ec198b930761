//! API keys: minted with scopes no stronger than the caller's, shown once, stored hashed.

use idgraph_core::auth::{KeyToken, Scope, Scopes};
use idgraph_core::tenancy::WorkspaceName;
use idgraph_store::{ApiKeyRecord, Page, PageRequest, Store};
use jiff::Timestamp;

use crate::access::Principal;
use crate::ids::{new_id, secret_bytes};
use crate::{AppError, ErrorKind};

/// What a caller asks for when creating a key.
#[derive(Debug, Clone, Default)]
pub struct NewKey {
    pub name: String,
    pub scopes: Vec<String>,
    /// Absent means the `default` workspace.
    pub workspace: Option<String>,
    pub rate_limit_per_sec: Option<u32>,
}

/// A freshly created key: the token is returned exactly once and never stored.
#[derive(Debug)]
pub struct CreatedKey {
    pub record: ApiKeyRecord,
    pub token: String,
}

pub const MAX_RATE_LIMIT_PER_SEC: u32 = 1_000_000;

pub async fn create_key<S: Store>(
    store: &S,
    principal: &Principal,
    request: NewKey,
) -> Result<CreatedKey, AppError> {
    principal.require(Scope::KeysManage)?;
    let name = request.name.trim();
    if name.is_empty() || name.chars().count() > 200 {
        return Err(
            AppError::invalid("invalid_input", "name must be 1 to 200 characters")
                .with_detail("field", "name"),
        );
    }
    let scopes = Scopes::parse(request.scopes.iter().map(String::as_str))?;
    if !principal.scopes.covers(&scopes) {
        return Err(AppError::forbidden(
            "a key cannot grant scopes its creator does not hold",
        ));
    }
    let workspace = WorkspaceName::parse(
        request
            .workspace
            .as_deref()
            .unwrap_or(WorkspaceName::DEFAULT),
    )?;
    if principal
        .workspace
        .as_ref()
        .is_some_and(|own| own != &workspace)
        && !principal.is_master
    {
        return Err(AppError::forbidden(
            "this key may only create keys for its own workspace",
        ));
    }
    store
        .get_workspace(&principal.tenant_id, &workspace)
        .await
        .map_err(|e| match e {
            idgraph_store::StoreError::NotFound => AppError::invalid(
                "unknown_workspace",
                format!("workspace {workspace} does not exist"),
            )
            .with_detail("field", "workspace"),
            other => AppError::from_store("workspace")(other),
        })?;
    if let Some(rate) = request.rate_limit_per_sec
        && !(1..=MAX_RATE_LIMIT_PER_SEC).contains(&rate)
    {
        return Err(AppError::invalid(
            "invalid_input",
            format!("rate_limit_per_sec must be between 1 and {MAX_RATE_LIMIT_PER_SEC}"),
        )
        .with_detail("field", "rate_limit_per_sec"));
    }

    let key_id = new_id();
    let token = KeyToken::new(principal.tenant_id.clone(), &key_id, secret_bytes()?)?;
    let record = ApiKeyRecord {
        tenant_id: principal.tenant_id.clone(),
        key_id,
        name: name.to_owned(),
        hash: token.hash(),
        scopes,
        workspace: Some(workspace),
        rate_limit_per_sec: request.rate_limit_per_sec,
        is_master: false,
        created_at: Timestamp::now(),
        revoked_at: None,
    };
    store
        .insert_api_key(&record)
        .await
        .map_err(AppError::from_store("key"))?;
    tracing::info!(key_id = %record.key_id, tenant = %record.tenant_id, "api key created");
    Ok(CreatedKey {
        record,
        token: token.expose(),
    })
}

pub async fn list_keys<S: Store>(
    store: &S,
    principal: &Principal,
    page: &PageRequest,
) -> Result<Page<ApiKeyRecord>, AppError> {
    principal.require(Scope::KeysManage)?;
    store
        .list_api_keys(&principal.tenant_id, page)
        .await
        .map_err(AppError::from_store("key"))
}

pub async fn revoke_key<S: Store>(
    store: &S,
    principal: &Principal,
    key_id: &str,
) -> Result<(), AppError> {
    principal.require(Scope::KeysManage)?;
    let record = store
        .get_api_key(&principal.tenant_id, key_id)
        .await
        .map_err(AppError::from_store("key"))?;
    if record.is_master {
        return Err(AppError::new(
            ErrorKind::Forbidden,
            "forbidden",
            "the master key cannot be revoked through the API; restart idgraph with a new master key",
        ));
    }
    store
        .revoke_api_key(&principal.tenant_id, key_id, Timestamp::now())
        .await
        .map_err(AppError::from_store("key"))?;
    tracing::info!(key_id, tenant = %principal.tenant_id, "api key revoked");
    Ok(())
}
