//! Deleting persons (an erasure request) and purging what deleted persons left once their
//! retention window has passed. Decision 0011 explains the lifecycle.

use idgraph_core::auth::Scope;
use idgraph_core::privacy::SALT_BYTES;
use idgraph_store::{
    DeletionOutcome, DeletionRequest, PageRequest, PurgeOutcome, Store, StoreError,
};
use jiff::{SignedDuration, Timestamp};

use crate::AppError;
use crate::access::Principal;

/// How long a deleted person's data waits, unreachable, before the purge removes it.
pub const DEFAULT_RETENTION: SignedDuration = SignedDuration::from_hours(30 * 24);

/// Deletes the person (with every person merged into it) for the principal's tenant.
pub async fn delete_person<S: Store>(
    store: &S,
    principal: &Principal,
    person_id: &str,
    retention: SignedDuration,
) -> Result<DeletionOutcome, AppError> {
    principal.require(Scope::PersonsWrite)?;
    if person_id.is_empty() || person_id.len() > 64 {
        return Err(AppError::not_found("person"));
    }
    let mut salt = vec![0u8; SALT_BYTES];
    getrandom::fill(&mut salt)
        .map_err(|e| AppError::internal(format!("no randomness for the tombstone salt: {e}")))?;
    let at = Timestamp::now();
    let purge_after = at.checked_add(retention).unwrap_or(Timestamp::MAX);
    let outcome = store
        .delete_person(
            &principal.tenant_id,
            DeletionRequest {
                person_id: person_id.to_owned(),
                at,
                purge_after,
                salt_candidate: salt,
            },
        )
        .await
        .map_err(|e| match e {
            // Never echo the id: the isolation rule is that another tenant's ids reveal nothing.
            StoreError::NotFound => AppError::not_found("person"),
            other => AppError::from_store("person")(other),
        })?;
    tracing::info!(tenant = %principal.tenant_id, person = %outcome.person_id,
                   members = outcome.members.len(), identifiers = outcome.identifiers_erased,
                   "person deleted; data kept until the purge");
    Ok(outcome)
}

/// Purges, in every tenant, what deleted persons left whose window ended at or before `now`.
pub async fn purge_due<S: Store>(store: &S, now: Timestamp) -> Result<PurgeOutcome, AppError> {
    let mut total = PurgeOutcome::default();
    let mut page = PageRequest::first(PageRequest::MAX_LIMIT);
    loop {
        let tenants = store
            .list_tenants(&page)
            .await
            .map_err(AppError::from_store("tenant"))?;
        for tenant in &tenants.items {
            let purged = store
                .purge_deleted(&tenant.id, now)
                .await
                .map_err(AppError::from_store("person"))?;
            if purged.persons > 0 {
                tracing::info!(tenant = %tenant.id, persons = purged.persons, events = purged.events,
                               "purged deleted persons");
            }
            total.add(&purged);
        }
        match tenants.next_cursor {
            Some(cursor) => page.after = Some(cursor),
            None => return Ok(total),
        }
    }
}
