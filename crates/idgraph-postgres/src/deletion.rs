//! Deleting persons on the server store: the request runs under the tenant's resolution lock, so
//! no signal of any process can attach to the person while it goes, or resolve against a
//! tombstone not yet written.

use std::collections::HashSet;

use deadpool_postgres::{GenericClient, Transaction};
use idgraph_core::identity::{Identifier, IdentifierKind};
use idgraph_core::privacy::tombstone;
use idgraph_core::tenancy::TenantId;
use idgraph_store::{
    ConsentSubject, DeletionOutcome, DeletionRequest, PurgeOutcome, StoreError, StoreResult,
};
use jiff::Timestamp;
use tokio_postgres::types::ToSql;

use idgraph_store::vault::{Vault, column};

use crate::PostgresStore;
use crate::codec::{map_error, to_sql_time};
use crate::resolve::GROUP;

/// The tenant's tombstone salt, if it ever deleted a person.
pub(crate) async fn salt(
    client: &impl GenericClient,
    tenant: &str,
) -> StoreResult<Option<Vec<u8>>> {
    Ok(client
        .query_opt(
            "SELECT salt FROM erasure_salts WHERE tenant_id = $1",
            &[&tenant],
        )
        .await
        .map_err(map_error)?
        .map(|row| row.get(0)))
}

/// Which of `tombstones` are recorded.
pub(crate) async fn erased(
    client: &impl GenericClient,
    tenant: &str,
    tombstones: &[String],
) -> StoreResult<HashSet<String>> {
    if tombstones.is_empty() {
        return Ok(HashSet::new());
    }
    Ok(client
        .query(
            "SELECT tombstone FROM erased_identifiers WHERE tenant_id = $1 AND tombstone = ANY($2)",
            &[&tenant, &tombstones],
        )
        .await
        .map_err(map_error)?
        .iter()
        .map(|row| row.get(0))
        .collect())
}

impl PostgresStore {
    pub(crate) async fn request_deletion(
        &self,
        tenant_id: &TenantId,
        request: DeletionRequest,
    ) -> StoreResult<DeletionOutcome> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(map_error)?;
        tx.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
            &[&format!("idgraph:resolve:{tenant_id}")],
        )
        .await
        .map_err(map_error)?;
        let outcome = delete_person(&tx, &self.vault(), tenant_id.as_str(), &request).await?;
        tx.commit().await.map_err(map_error)?;
        Ok(outcome)
    }

    pub(crate) async fn purge(
        &self,
        tenant_id: &TenantId,
        now: Timestamp,
    ) -> StoreResult<PurgeOutcome> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(map_error)?;
        let outcome = purge(&tx, tenant_id.as_str(), now).await?;
        tx.commit().await.map_err(map_error)?;
        Ok(outcome)
    }
}

async fn delete_person(
    tx: &Transaction<'_>,
    vault: &Vault,
    tenant: &str,
    request: &DeletionRequest,
) -> StoreResult<DeletionOutcome> {
    let merged_into: Option<String> = tx
        .query_opt(
            "SELECT merged_into FROM persons WHERE tenant_id = $1 AND person_id = $2",
            &[&tenant, &request.person_id],
        )
        .await
        .map_err(map_error)?
        .ok_or(StoreError::NotFound)?
        .get(0);
    let canonical = merged_into.unwrap_or_else(|| request.person_id.clone());
    let members: Vec<String> = tx
        .query(GROUP, &[&tenant, &canonical])
        .await
        .map_err(map_error)?
        .iter()
        .map(|row| row.get(0))
        .collect();
    let at = to_sql_time(request.at);
    exec(
        tx,
        "INSERT INTO erasure_salts (tenant_id, salt, created_at) VALUES ($1, $2, $3)
         ON CONFLICT (tenant_id) DO NOTHING",
        &[&tenant, &request.salt_candidate, &at],
    )
    .await?;
    let salt = salt(tx, tenant)
        .await?
        .ok_or_else(|| StoreError::Other("no salt".to_owned()))?;

    let mut identifiers: Vec<Identifier> = Vec::new();
    for row in tx
        .query(
            "DELETE FROM identity_nodes WHERE tenant_id = $1 AND person_id = ANY($2)
             RETURNING kind, COALESCE(value_sealed, value)",
            &[&tenant, &members],
        )
        .await
        .map_err(map_error)?
    {
        let kind: String = row.get(0);
        let kind = IdentifierKind::parse(&kind)
            .map_err(|e| StoreError::Other(format!("unreadable identity node: {e}")))?;
        let value = vault.open(tenant, column::IDENTIFIER, row.get(1))?;
        identifiers.push(Identifier::from_stored(kind, value));
    }
    identifiers.sort();
    identifiers.dedup();

    let mut erased = 0u64;
    let mut quoted: Vec<&str> = Vec::new();
    for identifier in &identifiers {
        let (kind, value) = (identifier.kind().as_str(), identifier.value());
        // A shared value another person still holds is theirs too: it is neither a tombstone
        // nor removed from the records about that address.
        let held_elsewhere = tx
            .query_opt(
                "SELECT 1 FROM identity_nodes WHERE tenant_id = $1 AND kind = $2 AND value = $3 LIMIT 1",
                &[&tenant, &kind, &vault.index(tenant, kind, value)],
            )
            .await
            .map_err(map_error)?
            .is_some();
        if held_elsewhere {
            continue;
        }
        erased += 1;
        let stone = tombstone(&salt, identifier);
        exec(
            tx,
            "INSERT INTO erased_identifiers (tenant_id, tombstone, erased_at) VALUES ($1, $2, $3)
             ON CONFLICT DO NOTHING",
            &[&tenant, &stone, &at],
        )
        .await?;
        let index = vault.index(tenant, kind, value);
        // The suppression stays in force, known only by its tombstone (the cardinal rule); its
        // sealed value goes, or the key would still give the address back.
        exec(
            tx,
            "UPDATE suppression_entries SET value = $4, value_sealed = NULL
             WHERE tenant_id = $1 AND kind = $2 AND value = $3",
            &[&tenant, &kind, &index, &stone],
        )
        .await?;
        exec(
            tx,
            "DELETE FROM consent_events WHERE tenant_id = $1 AND subject = $2",
            &[&tenant, &vault.identifier_subject(tenant, identifier)],
        )
        .await?;
        exec(
            tx,
            "DELETE FROM contacts WHERE tenant_id = $1 AND kind = $2 AND value = $3",
            &[&tenant, &kind, &index],
        )
        .await?;
        quoted.push(value);
    }
    // A replayable response may quote an erased value (a check's `to`, an import's report).
    // Bodies are sealed, so they are opened and searched here; they expire within a day, so
    // the tenant's are few.
    if !quoted.is_empty() {
        let stored = tx
            .query(
                "SELECT scope, key, body FROM idempotency_keys WHERE tenant_id = $1 AND body IS NOT NULL",
                &[&tenant],
            )
            .await
            .map_err(map_error)?;
        for row in &stored {
            if vault.body_quotes(tenant, row.get(2), &quoted)? {
                exec(
                    tx,
                    "DELETE FROM idempotency_keys WHERE tenant_id = $1 AND scope = $2 AND key = $3",
                    &[&tenant, &row.get::<_, &str>(0), &row.get::<_, &str>(1)],
                )
                .await?;
            }
        }
    }

    // Merge records carry the identifiers that caused them; with either side gone they explain
    // nothing anyone may still read.
    let statements = [
        "DELETE FROM unmerges WHERE tenant_id = $1 AND merge_id IN
         (SELECT merge_id FROM merges WHERE tenant_id = $1 AND (survivor = ANY($2) OR absorbed = ANY($2)))",
        "DELETE FROM merges WHERE tenant_id = $1 AND (survivor = ANY($2) OR absorbed = ANY($2))",
        "DELETE FROM conflicts WHERE tenant_id = $1 AND (person_id = ANY($2) OR other_person_id = ANY($2))",
        "DELETE FROM keep_apart WHERE tenant_id = $1 AND (person_a = ANY($2) OR person_b = ANY($2))",
        "DELETE FROM persons WHERE tenant_id = $1 AND person_id = ANY($2)",
    ];
    for sql in statements {
        exec(tx, sql, &[&tenant, &members]).await?;
    }
    exec(
        tx,
        "INSERT INTO deleted_persons (tenant_id, person_id, requested_as, requested_at, purge_after)
         SELECT $1, member, $3, $4, $5 FROM unnest($2::text[]) AS member",
        &[
            &tenant,
            &members,
            &canonical,
            &at,
            &to_sql_time(request.purge_after),
        ],
    )
    .await?;
    let outcome = DeletionOutcome {
        person_id: canonical,
        members,
        identifiers_erased: erased,
    };
    person_deleted(tx, vault, tenant, &outcome, request.at).await?;
    Ok(outcome)
}

/// Runs inside the deletion's transaction, after everything else: the one place where what
/// must follow a deletion atomically (a `person.deleted` outbox row) is written.
async fn person_deleted(
    tx: &Transaction<'_>,
    vault: &Vault,
    tenant: &str,
    outcome: &DeletionOutcome,
    at: Timestamp,
) -> StoreResult<()> {
    let subscribers = crate::webhooks::subscribers(tx, tenant).await?;
    // A person is deleted once, so its id makes the event's id.
    let event = idgraph_store::person_deleted_event(&outcome.person_id, &outcome.person_id, at);
    crate::webhooks::enqueue(tx, vault, tenant, &subscribers, &[event]).await
}

async fn purge(tx: &Transaction<'_>, tenant: &str, now: Timestamp) -> StoreResult<PurgeOutcome> {
    let now = to_sql_time(now);
    let due: Vec<String> = tx
        .query(
            "SELECT person_id FROM deleted_persons
             WHERE tenant_id = $1 AND purged_at IS NULL AND purge_after <= $2
             FOR UPDATE",
            &[&tenant, &now],
        )
        .await
        .map_err(map_error)?
        .iter()
        .map(|row| row.get(0))
        .collect();
    if due.is_empty() {
        return Ok(PurgeOutcome::default());
    }
    let persons: &(dyn ToSql + Sync) = &due;
    let consent_subjects: Vec<String> = due
        .iter()
        .map(|p| ConsentSubject::key_of_person(p))
        .collect();
    // The verbatim file rows the person came from: emptied, and marked so a reprocess rejects
    // them instead of reading nothing.
    let import_rows = exec(
        tx,
        "UPDATE import_rows r SET bytes = '\\x'::bytea, defect = 'erased: the person was deleted'
         FROM import_outcomes o
         WHERE r.tenant_id = $1 AND o.tenant_id = $1 AND o.person_id = ANY($2)
           AND r.job_id = o.job_id AND r.row_no = o.row_no",
        &[&tenant, persons],
    )
    .await?;
    exec(
        tx,
        "UPDATE import_outcomes SET outcome = 'erased', person_id = NULL,
         reason = 'the person was deleted' WHERE tenant_id = $1 AND person_id = ANY($2)",
        &[&tenant, persons],
    )
    .await?;
    let events = exec(
        tx,
        "DELETE FROM events WHERE tenant_id = $1 AND person_id = ANY($2)",
        &[&tenant, persons],
    )
    .await?;
    let trait_values = exec(
        tx,
        "DELETE FROM trait_values WHERE tenant_id = $1 AND person_id = ANY($2)",
        &[&tenant, persons],
    )
    .await?;
    exec(
        tx,
        "DELETE FROM workspace_contacts WHERE tenant_id = $1 AND person_id = ANY($2)",
        &[&tenant, persons],
    )
    .await?;
    let consent_events = exec(
        tx,
        "DELETE FROM consent_events WHERE tenant_id = $1 AND subject = ANY($2)",
        &[&tenant, &consent_subjects],
    )
    .await?;
    exec(
        tx,
        "UPDATE deleted_persons SET purged_at = $3 WHERE tenant_id = $1 AND person_id = ANY($2)",
        &[&tenant, persons, &now],
    )
    .await?;
    Ok(PurgeOutcome {
        persons: due.len() as u64,
        events,
        trait_values,
        consent_events,
        import_rows,
    })
}

async fn exec(tx: &Transaction<'_>, sql: &str, params: &[&(dyn ToSql + Sync)]) -> StoreResult<u64> {
    tx.execute(sql, params).await.map_err(map_error)
}
