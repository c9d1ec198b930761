//! Who is calling: turning a presented key into a principal, and checking what it may do.

use idgraph_core::auth::{KeyHash, KeyToken, Scope, Scopes};
use idgraph_core::tenancy::{TenantId, WorkspaceName};
use idgraph_store::{ApiKeyRecord, Store, StoreError};

use crate::{AppError, ErrorKind};

/// An authenticated caller, and the tenant it acts on.
#[derive(Debug, Clone, PartialEq)]
pub struct Principal {
    pub key_id: String,
    /// The tenant the key belongs to.
    pub key_tenant: TenantId,
    /// The tenant this request acts on: the key's own, or another one for the master key.
    pub tenant_id: TenantId,
    /// Set when the master key acts for another tenant (audited by the HTTP layer).
    pub on_behalf_of: Option<TenantId>,
    pub scopes: Scopes,
    pub workspace: Option<WorkspaceName>,
    pub is_master: bool,
    pub rate_limit_per_sec: Option<u32>,
}

fn unauthenticated() -> AppError {
    AppError::new(
        ErrorKind::Unauthenticated,
        "unauthenticated",
        "invalid or revoked API key",
    )
}

fn principal_of(record: ApiKeyRecord) -> Principal {
    Principal {
        key_id: record.key_id,
        tenant_id: record.tenant_id.clone(),
        key_tenant: record.tenant_id,
        on_behalf_of: None,
        scopes: if record.is_master {
            Scopes::all()
        } else {
            record.scopes
        },
        workspace: record.workspace,
        is_master: record.is_master,
        rate_limit_per_sec: record.rate_limit_per_sec,
    }
}

/// Authenticates a presented key. Every request reads the key's row, so a revocation is
/// effective on the very next request, in every process sharing the database.
pub async fn authenticate<S: Store>(store: &S, token: &str) -> Result<Principal, AppError> {
    let record = match KeyToken::parse(token) {
        Some(parsed) => match store.get_api_key(&parsed.tenant_id, &parsed.key_id).await {
            // The row is found by id; the secret is checked against its stored hash.
            Ok(record) if record.hash == parsed.hash() => record,
            Ok(_) | Err(StoreError::NotFound) => return Err(unauthenticated()),
            Err(e) => return Err(AppError::from_store("key")(e)),
        },
        // Not in idgraph's format: it can only be an operator-chosen master key.
        None => match store.find_master_key(&KeyHash::of(token)).await {
            Ok(record) => record,
            Err(StoreError::NotFound) => return Err(unauthenticated()),
            Err(e) => return Err(AppError::from_store("key")(e)),
        },
    };
    if record.revoked_at.is_some() {
        return Err(unauthenticated());
    }
    Ok(principal_of(record))
}

impl Principal {
    /// Whoever runs idgraph directly on a store it has opened (`idgraph import --data-dir`):
    /// being able to open the store is being its operator, with every scope, in `tenant`.
    pub fn operator(tenant: TenantId) -> Self {
        Self {
            key_id: "operator".to_owned(),
            key_tenant: tenant.clone(),
            tenant_id: tenant,
            on_behalf_of: None,
            scopes: Scopes::all(),
            workspace: None,
            is_master: true,
            rate_limit_per_sec: None,
        }
    }

    /// Fails with 403 unless the key holds `scope` (or `admin`).
    pub fn require(&self, scope: Scope) -> Result<(), AppError> {
        if self.scopes.allows(scope) {
            Ok(())
        } else {
            Err(
                AppError::forbidden(format!("this key lacks the {scope} scope"))
                    .with_detail("needed_scope", scope.as_str()),
            )
        }
    }

    pub fn require_master(&self) -> Result<(), AppError> {
        if self.is_master {
            Ok(())
        } else {
            Err(AppError::forbidden("only the master key may do this"))
        }
    }

    /// Switches the acting tenant for the master key (`X-Idgraph-On-Behalf-Of`). Any other key
    /// may only name its own tenant.
    pub async fn acting_for<S: Store>(mut self, store: &S, tenant: &str) -> Result<Self, AppError> {
        let tenant_id = TenantId::parse(tenant)?;
        if tenant_id == self.key_tenant {
            return Ok(self);
        }
        if !self.is_master {
            return Err(AppError::forbidden(
                "only the master key may act on behalf of another tenant",
            ));
        }
        store
            .get_tenant(&tenant_id)
            .await
            .map_err(AppError::from_store("tenant"))?;
        self.on_behalf_of = Some(tenant_id.clone());
        self.tenant_id = tenant_id;
        Ok(self)
    }
}
