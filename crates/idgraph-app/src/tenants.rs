//! Tenants (master key only) and the workspaces inside a tenant.

use idgraph_core::auth::Scope;
use idgraph_core::tenancy::{Environment, TenantId, WorkspaceName};
use idgraph_store::{Page, PageRequest, Store, Tenant, Workspace};
use jiff::Timestamp;

use crate::AppError;
use crate::access::Principal;
use crate::bootstrap::ensure_default_workspace;
use crate::ids::new_id;

/// Creates a tenant with its `default` workspace. `id` defaults to a fresh ULID.
pub async fn create_tenant<S: Store>(
    store: &S,
    principal: &Principal,
    id: Option<&str>,
    name: &str,
) -> Result<Tenant, AppError> {
    principal.require_master()?;
    let id = match id {
        Some(raw) => TenantId::parse(raw)?,
        None => TenantId::parse(&new_id())?,
    };
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 200 {
        return Err(
            AppError::invalid("invalid_input", "name must be 1 to 200 characters")
                .with_detail("field", "name"),
        );
    }
    let tenant = Tenant {
        id,
        name: name.to_owned(),
        created_at: Timestamp::now(),
    };
    store
        .create_tenant(&tenant)
        .await
        .map_err(AppError::from_store("tenant"))?;
    ensure_default_workspace(store, &tenant.id).await?;
    tracing::info!(tenant = %tenant.id, "tenant created");
    Ok(tenant)
}

pub async fn list_tenants<S: Store>(
    store: &S,
    principal: &Principal,
    page: &PageRequest,
) -> Result<Page<Tenant>, AppError> {
    principal.require_master()?;
    store
        .list_tenants(page)
        .await
        .map_err(AppError::from_store("tenant"))
}

pub async fn create_workspace<S: Store>(
    store: &S,
    principal: &Principal,
    name: &str,
    environment: Option<&str>,
) -> Result<Workspace, AppError> {
    principal.require(Scope::Admin)?;
    let workspace = Workspace {
        tenant_id: principal.tenant_id.clone(),
        id: new_id(),
        name: WorkspaceName::parse(name)?,
        environment: environment
            .map(str::parse)
            .transpose()?
            .unwrap_or(Environment::Prod),
        created_at: Timestamp::now(),
    };
    store
        .create_workspace(&workspace)
        .await
        .map_err(AppError::from_store("workspace"))?;
    Ok(workspace)
}

pub async fn list_workspaces<S: Store>(
    store: &S,
    principal: &Principal,
    page: &PageRequest,
) -> Result<Page<Workspace>, AppError> {
    principal.require(Scope::Admin)?;
    store
        .list_workspaces(&principal.tenant_id, page)
        .await
        .map_err(AppError::from_store("workspace"))
}
