//! Reading the audit log. Entries are written by the HTTP layer, one per authenticated
//! management call; here they are only read, by keys with the `audit:read` scope.

use idgraph_core::auth::Scope;
use idgraph_store::{AuditEntry, Page, PageRequest, Store};

use crate::AppError;
use crate::access::Principal;

/// The acting tenant's entries, newest first.
pub async fn list<S: Store>(
    store: &S,
    principal: &Principal,
    page: &PageRequest,
) -> Result<Page<AuditEntry>, AppError> {
    principal.require(Scope::AuditRead)?;
    store
        .list_audit(&principal.tenant_id, page)
        .await
        .map_err(AppError::from_store("audit"))
}
