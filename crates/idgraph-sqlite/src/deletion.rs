//! Deleting persons on the embedded store: the request and the purge, each one writer job.

use idgraph_core::identity::{Identifier, IdentifierKind};
use idgraph_core::privacy::tombstone;
use idgraph_store::{
    ConsentSubject, DeletionOutcome, DeletionRequest, PurgeOutcome, StoreError, StoreResult,
};
use jiff::Timestamp;
use rusqlite::{Connection, OptionalExtension, Transaction, params};

use idgraph_store::vault::{Vault, column};

use crate::codec::{map_error, micros};
use crate::nodes::{NODE_STORED_VALUE, delete_person_nodes};
use crate::resolve::GROUP;

/// The tenant's tombstone salt, if it ever deleted a person.
pub(crate) fn salt(conn: &Connection, tenant: &str) -> StoreResult<Option<Vec<u8>>> {
    conn.prepare_cached("SELECT salt FROM erasure_salts WHERE tenant_id = ?1")
        .and_then(|mut s| s.query_row(params![tenant], |r| r.get(0)).optional())
        .map_err(map_error)
}

/// Whether a tombstone is recorded.
pub(crate) fn is_erased(conn: &Connection, tenant: &str, tombstone: &str) -> StoreResult<bool> {
    conn.prepare_cached("SELECT 1 FROM erased_identifiers WHERE tenant_id = ?1 AND tombstone = ?2")
        .and_then(|mut s| {
            s.query_row(params![tenant, tombstone], |_| Ok(()))
                .optional()
        })
        .map(|found| found.is_some())
        .map_err(map_error)
}

pub(crate) fn delete_person(
    tx: &Transaction<'_>,
    vault: &Vault,
    tenant: &str,
    request: &DeletionRequest,
) -> StoreResult<DeletionOutcome> {
    let merged_into: Option<String> = tx
        .prepare_cached("SELECT merged_into FROM persons WHERE tenant_id = ?1 AND person_id = ?2")
        .and_then(|mut s| {
            s.query_row(params![tenant, request.person_id], |r| r.get(0))
                .optional()
        })
        .map_err(map_error)?
        .ok_or(StoreError::NotFound)?;
    let canonical = merged_into.unwrap_or_else(|| request.person_id.clone());
    let members: Vec<String> = tx
        .prepare_cached(GROUP)
        .and_then(|mut s| {
            s.query_map(params![tenant, canonical], |r| r.get(0))?
                .collect()
        })
        .map_err(map_error)?;
    let at = micros(request.at);
    tx.prepare_cached(
        "INSERT OR IGNORE INTO erasure_salts (tenant_id, salt, created_at) VALUES (?1, ?2, ?3)",
    )
    .and_then(|mut s| s.execute(params![tenant, request.salt_candidate, at]))
    .map_err(map_error)?;
    let salt = salt(tx, tenant)?.ok_or_else(|| StoreError::Other("no salt".to_owned()))?;

    let mut identifiers: Vec<Identifier> = Vec::new();
    for member in &members {
        let mut nodes = tx
            .prepare_cached(&format!(
                "SELECT kind, {NODE_STORED_VALUE} FROM identity_nodes WHERE tenant_id = ?1 AND person_id = ?2"
            ))
            .map_err(map_error)?;
        let rows = nodes
            .query_map(params![tenant, member], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
            })
            .map_err(map_error)?;
        for row in rows {
            let (kind, value) = row.map_err(map_error)?;
            let kind = IdentifierKind::parse(&kind)
                .map_err(|e| StoreError::Other(format!("unreadable identity node: {e}")))?;
            let value = vault.open(tenant, column::IDENTIFIER, value)?;
            identifiers.push(Identifier::from_stored(kind, value));
        }
        delete_person_nodes(tx, tenant, member)?;
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
            .prepare_cached(
                "SELECT 1 FROM identity_nodes WHERE tenant_id = ?1 AND kind = ?2 AND value = ?3 LIMIT 1",
            )
            .and_then(|mut s| {
                s.query_row(params![tenant, kind, vault.index(tenant, kind, value)], |_| Ok(()))
                    .optional()
            })
            .map_err(map_error)?
            .is_some();
        if held_elsewhere {
            continue;
        }
        erased += 1;
        let stone = tombstone(&salt, identifier);
        exec(
            tx,
            "INSERT OR IGNORE INTO erased_identifiers (tenant_id, tombstone, erased_at) VALUES (?1, ?2, ?3)",
            params![tenant, stone, at],
        )?;
        let index = vault.index(tenant, kind, value);
        // The suppression stays in force, known only by its tombstone (the cardinal rule); its
        // sealed value goes, or the key would still give the address back.
        exec(
            tx,
            "UPDATE suppression_entries SET value = ?4, value_sealed = NULL
             WHERE tenant_id = ?1 AND kind = ?2 AND value = ?3",
            params![tenant, kind, index, stone],
        )?;
        exec(
            tx,
            "DELETE FROM consent_events WHERE tenant_id = ?1 AND subject = ?2",
            params![tenant, vault.identifier_subject(tenant, identifier)],
        )?;
        exec(
            tx,
            "DELETE FROM contacts WHERE tenant_id = ?1 AND kind = ?2 AND value = ?3",
            params![tenant, kind, index],
        )?;
        quoted.push(value);
    }
    // A replayable response may quote an erased value (a check's `to`, an import's report).
    // Bodies are sealed, so they are opened and searched here; they expire within a day, so
    // the tenant's are few.
    if !quoted.is_empty() {
        let stored: Vec<(String, String, Vec<u8>)> = tx
            .prepare_cached(
                "SELECT scope, key, body FROM idempotency_keys WHERE tenant_id = ?1 AND body IS NOT NULL",
            )
            .and_then(|mut s| {
                s.query_map(params![tenant], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                    .collect()
            })
            .map_err(map_error)?;
        for (scope, key, body) in stored {
            if vault.body_quotes(tenant, body, &quoted)? {
                exec(
                    tx,
                    "DELETE FROM idempotency_keys WHERE tenant_id = ?1 AND scope = ?2 AND key = ?3",
                    params![tenant, scope, key],
                )?;
            }
        }
    }

    let purge_after = micros(request.purge_after);
    for member in &members {
        // Merge records carry the identifiers that caused them; with either side gone they
        // explain nothing anyone may still read.
        exec(
            tx,
            "DELETE FROM unmerges WHERE tenant_id = ?1 AND merge_id IN
             (SELECT merge_id FROM merges WHERE tenant_id = ?1 AND survivor = ?2
              UNION ALL SELECT merge_id FROM merges WHERE tenant_id = ?1 AND absorbed = ?2)",
            params![tenant, member],
        )?;
        exec(
            tx,
            "DELETE FROM merges WHERE tenant_id = ?1 AND survivor = ?2",
            params![tenant, member],
        )?;
        exec(
            tx,
            "DELETE FROM merges WHERE tenant_id = ?1 AND absorbed = ?2",
            params![tenant, member],
        )?;
        exec(
            tx,
            "DELETE FROM conflicts WHERE tenant_id = ?1 AND person_id = ?2",
            params![tenant, member],
        )?;
        exec(
            tx,
            "DELETE FROM conflicts WHERE tenant_id = ?1 AND other_person_id = ?2",
            params![tenant, member],
        )?;
        exec(
            tx,
            "DELETE FROM keep_apart WHERE tenant_id = ?1 AND person_a = ?2",
            params![tenant, member],
        )?;
        exec(
            tx,
            "DELETE FROM keep_apart WHERE tenant_id = ?1 AND person_b = ?2",
            params![tenant, member],
        )?;
        exec(
            tx,
            "DELETE FROM persons WHERE tenant_id = ?1 AND person_id = ?2",
            params![tenant, member],
        )?;
        exec(
            tx,
            "INSERT INTO deleted_persons (tenant_id, person_id, requested_as, requested_at, purge_after)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![tenant, member, canonical, at, purge_after],
        )?;
    }
    let outcome = DeletionOutcome {
        person_id: canonical,
        members,
        identifiers_erased: erased,
    };
    person_deleted(tx, vault, tenant, &outcome, request.at)?;
    Ok(outcome)
}

/// Runs inside the deletion's transaction, after everything else: the one place where what
/// must follow a deletion atomically (a `person.deleted` outbox row) is written.
fn person_deleted(
    tx: &Transaction<'_>,
    vault: &Vault,
    tenant: &str,
    outcome: &DeletionOutcome,
    at: jiff::Timestamp,
) -> StoreResult<()> {
    let subscribers = crate::webhooks::subscribers(tx, tenant)?;
    // A person is deleted once, so its id makes the event's id.
    let event = idgraph_store::person_deleted_event(&outcome.person_id, &outcome.person_id, at);
    crate::webhooks::enqueue(tx, vault, tenant, &subscribers, &[event])
}

/// The landed rows (job, row) the persons due for purging at `now` came from, which the purge
/// empties in the landed-rows file before it runs (decision 0022).
pub(crate) fn landed_rows_of_due(
    conn: &Connection,
    tenant: &str,
    now: Timestamp,
) -> StoreResult<Vec<(String, u64)>> {
    conn.prepare_cached(
        "SELECT job_id, row_no FROM import_outcomes
         WHERE tenant_id = ?1 AND person_id IN
             (SELECT person_id FROM deleted_persons
              WHERE tenant_id = ?1 AND purged_at IS NULL AND purge_after <= ?2)",
    )
    .and_then(|mut s| {
        s.query_map(params![tenant, micros(now)], |r| {
            Ok((r.get(0)?, u64::try_from(r.get::<_, i64>(1)?).unwrap_or(0)))
        })?
        .collect()
    })
    .map_err(map_error)
}

pub(crate) fn purge(
    tx: &Transaction<'_>,
    tenant: &str,
    now: Timestamp,
) -> StoreResult<PurgeOutcome> {
    let now = micros(now);
    let due: Vec<String> = tx
        .prepare_cached(
            "SELECT person_id FROM deleted_persons
             WHERE tenant_id = ?1 AND purged_at IS NULL AND purge_after <= ?2",
        )
        .and_then(|mut s| s.query_map(params![tenant, now], |r| r.get(0))?.collect())
        .map_err(map_error)?;
    let mut purged = PurgeOutcome::default();
    for person in &due {
        exec(
            tx,
            "UPDATE import_outcomes SET outcome = 'erased', person_id = NULL,
             reason = 'the person was deleted' WHERE tenant_id = ?1 AND person_id = ?2",
            params![tenant, person],
        )?;
        purged.events += exec(
            tx,
            "DELETE FROM events WHERE tenant_id = ?1 AND person_id = ?2",
            params![tenant, person],
        )?;
        // Reported as observations, which each set counts.
        let observations: Vec<i64> = tx
            .prepare_cached(
                "DELETE FROM trait_sets WHERE tenant_id = ?1 AND person_id = ?2 RETURNING observed",
            )
            .and_then(|mut s| {
                s.query_map(params![tenant, person], |r| r.get(0))?
                    .collect()
            })
            .map_err(map_error)?;
        purged.trait_values += observations
            .into_iter()
            .map(|n| u64::try_from(n).unwrap_or(0))
            .sum::<u64>();
        exec(
            tx,
            "DELETE FROM workspace_contacts WHERE tenant_id = ?1 AND person_id = ?2",
            params![tenant, person],
        )?;
        purged.consent_events += exec(
            tx,
            "DELETE FROM consent_events WHERE tenant_id = ?1 AND subject = ?2",
            params![tenant, ConsentSubject::key_of_person(person)],
        )?;
        exec(
            tx,
            "UPDATE deleted_persons SET purged_at = ?3 WHERE tenant_id = ?1 AND person_id = ?2",
            params![tenant, person, now],
        )?;
        purged.persons += 1;
    }
    Ok(purged)
}

fn exec(tx: &Transaction<'_>, sql: &str, params: impl rusqlite::Params) -> StoreResult<u64> {
    tx.prepare_cached(sql)
        .and_then(|mut s| s.execute(params))
        .map(|n| n as u64)
        .map_err(map_error)
}
