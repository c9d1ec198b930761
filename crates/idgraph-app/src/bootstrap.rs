//! First start: the default tenant and workspace, and the master key.

use idgraph_core::auth::{KeyHash, KeyToken, Scopes, check_master_key};
use idgraph_core::tenancy::{Environment, TenantId, WorkspaceName};
use idgraph_store::{ApiKeyRecord, Store, StoreError, Tenant, Workspace};
use jiff::Timestamp;

use crate::AppError;
use crate::ids::{new_id, secret_bytes};

/// The key id of the master key row.
pub const MASTER_KEY_ID: &str = "master";

/// What bootstrap did that the operator must hear about.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct BootstrapOutcome {
    /// A master key generated on this start; print it once, it is never shown again.
    pub generated_master_key: Option<String>,
    pub created_default_tenant: bool,
}

/// Ensures the default tenant, workspace and master key exist. Safe to run on every start and
/// from several processes at once (conflicts mean another process did it first).
pub async fn bootstrap<S: Store>(
    store: &S,
    master_key: Option<&str>,
) -> Result<BootstrapOutcome, AppError> {
    let mut outcome = BootstrapOutcome::default();
    let tenant_id = TenantId::default_tenant();
    let now = Timestamp::now();
    match store.get_tenant(&tenant_id).await {
        Ok(_) => {}
        Err(StoreError::NotFound) => {
            let tenant = Tenant {
                id: tenant_id.clone(),
                name: "Default".into(),
                created_at: now,
            };
            outcome.created_default_tenant = ignore_conflict(store.create_tenant(&tenant).await)?;
        }
        Err(e) => return Err(AppError::from_store("tenant")(e)),
    }
    ensure_default_workspace(store, &tenant_id).await?;

    let existing = match store.get_api_key(&tenant_id, MASTER_KEY_ID).await {
        Ok(record) => Some(record),
        Err(StoreError::NotFound) => None,
        Err(e) => return Err(AppError::from_store("master key")(e)),
    };
    let record = |hash: KeyHash| ApiKeyRecord {
        tenant_id: tenant_id.clone(),
        key_id: MASTER_KEY_ID.into(),
        name: "master".into(),
        hash,
        scopes: Scopes::all(),
        workspace: None,
        rate_limit_per_sec: None,
        is_master: true,
        created_at: now,
        revoked_at: None,
    };
    match (master_key, existing) {
        (Some(given), existing) => {
            check_master_key(given)?;
            let hash = KeyHash::of(given);
            if existing.is_none_or(|e| e.hash != hash) {
                store
                    .put_master_key(&record(hash))
                    .await
                    .map_err(AppError::from_store("master key"))?;
                tracing::info!("master key set from configuration");
            }
        }
        (None, Some(_)) => {}
        (None, None) => {
            let token = KeyToken::new(tenant_id.clone(), MASTER_KEY_ID, secret_bytes()?)?;
            // Insert, not upsert: if another process generated one at the same moment, keep
            // theirs and print nothing, rather than invalidate the key they printed.
            if ignore_conflict(store.insert_api_key(&record(token.hash())).await)? {
                outcome.generated_master_key = Some(token.expose());
            }
        }
    }
    Ok(outcome)
}

/// Creates the `default` workspace of a tenant unless it exists.
pub(crate) async fn ensure_default_workspace<S: Store>(
    store: &S,
    tenant_id: &TenantId,
) -> Result<(), AppError> {
    let name = WorkspaceName::default_workspace();
    match store.get_workspace(tenant_id, &name).await {
        Ok(_) => Ok(()),
        Err(StoreError::NotFound) => {
            let workspace = Workspace {
                tenant_id: tenant_id.clone(),
                id: new_id(),
                name,
                environment: Environment::Prod,
                created_at: Timestamp::now(),
            };
            ignore_conflict(store.create_workspace(&workspace).await).map(drop)
        }
        Err(e) => Err(AppError::from_store("workspace")(e)),
    }
}

/// `Ok(true)` when the write happened, `Ok(false)` when someone else's identical write won.
fn ignore_conflict(result: Result<(), StoreError>) -> Result<bool, AppError> {
    match result {
        Ok(()) => Ok(true),
        Err(StoreError::Conflict(_)) => Ok(false),
        Err(e) => Err(AppError::from_store("bootstrap object")(e)),
    }
}
