//! Re-sealing under the current data-encryption key: a rotation, or the first start with a key
//! on a store that holds plain values. One bounded batch per call, one transaction.

use deadpool_postgres::Transaction;
use idgraph_core::privacy::TOMBSTONE_PREFIX;
use idgraph_store::vault::{
    EMPTY_JSON_SQL, MERGE_RECORD_COLUMNS, SealedTextColumn, Vault, WEBHOOK_PAYLOADS, column,
};
use idgraph_store::{GLOBAL_TENANT, StoreResult};

use crate::PostgresStore;
use crate::codec::map_error;

impl PostgresStore {
    pub(crate) async fn reseal_batch(&self, tenant: &str, limit: u32) -> StoreResult<u64> {
        let vault = self.vault();
        let Some(prefix) = vault.current_prefix() else {
            return Ok(0);
        };
        let prefix_len = i32::try_from(prefix.len()).unwrap_or(i32::MAX);
        let mut left = i64::from(limit);
        let mut done = 0u64;
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(map_error)?;
        // The tenant's resolution lock: a batch is short, and ingestion, merges and deletions
        // (which take it too) then never interleave with it or deadlock on its rows.
        tx.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
            &[&format!("idgraph:resolve:{tenant}")],
        )
        .await
        .map_err(map_error)?;
        let nodes = tx
            .query(
                "SELECT kind, value, person_id, value_sealed FROM identity_nodes
                 WHERE tenant_id = $1 AND (value_sealed IS NULL OR substr(value_sealed, 1, $2) <> $3)
                 LIMIT $4",
                &[&tenant, &prefix_len, &prefix, &left],
            )
            .await
            .map_err(map_error)?;
        for row in &nodes {
            let (kind, stored, person): (String, String, String) =
                (row.get(0), row.get(1), row.get(2));
            let plain = match row.get::<_, Option<String>>(3) {
                Some(sealed) => vault.open(tenant, column::IDENTIFIER, sealed)?,
                None => stored.clone(),
            };
            let (index, sealed) = vault.identifier(tenant, &kind, &plain)?;
            tx.execute(
                "UPDATE identity_nodes SET value = $5, value_sealed = $6
                 WHERE tenant_id = $1 AND kind = $2 AND value = $3 AND person_id = $4",
                &[&tenant, &kind, &stored, &person, &index, &sealed],
            )
            .await
            .map_err(map_error)?;
            done += 1;
            left -= 1;
        }

        if left > 0 {
            let traits = tx
                .query(
                    "SELECT person_id, workspace, name, signal_id, value FROM trait_values
                     WHERE tenant_id = $1 AND substr(value, 1, $2) <> $3 LIMIT $4",
                    &[&tenant, &prefix_len, &prefix, &left],
                )
                .await
                .map_err(map_error)?;
            for row in &traits {
                let plain = vault.open(tenant, column::TRAIT, row.get(4))?;
                let sealed = vault.seal(tenant, column::TRAIT, &plain)?;
                tx.execute(
                    "UPDATE trait_values SET value = $6 WHERE tenant_id = $1 AND person_id = $2
                       AND workspace = $3 AND name = $4 AND signal_id = $5",
                    &[
                        &tenant,
                        &row.get::<_, &str>(0),
                        &row.get::<_, &str>(1),
                        &row.get::<_, &str>(2),
                        &row.get::<_, &str>(3),
                        &sealed,
                    ],
                )
                .await
                .map_err(map_error)?;
                done += 1;
                left -= 1;
            }
        }

        if left > 0 {
            let events = tx
                .query(
                    &format!(
                        "SELECT event_id, properties, context, identifiers FROM events
                         WHERE tenant_id = $1
                           AND ((substr(properties, 1, $2) <> $3 AND properties NOT IN {EMPTY_JSON_SQL})
                             OR (substr(context, 1, $2) <> $3 AND context NOT IN {EMPTY_JSON_SQL})
                             OR substr(identifiers, 1, $2) <> $3)
                         LIMIT $4"
                    ),
                    &[&tenant, &prefix_len, &prefix, &left],
                )
                .await
                .map_err(map_error)?;
            for row in &events {
                let reseal = |col: &str, index: usize| -> StoreResult<String> {
                    let plain = vault.open(tenant, col, row.get(index))?;
                    // The identifiers are always sealed: the search above selects them by
                    // prefix alone.
                    if col == column::EVENT_IDENTIFIERS {
                        vault.seal(tenant, col, &plain)
                    } else {
                        vault.seal_json(tenant, col, &plain)
                    }
                };
                let properties = reseal(column::EVENT_PROPERTIES, 1)?;
                let context = reseal(column::EVENT_CONTEXT, 2)?;
                let identifiers = reseal(column::EVENT_IDENTIFIERS, 3)?;
                tx.execute(
                    "UPDATE events SET properties = $3, context = $4, identifiers = $5
                     WHERE tenant_id = $1 AND event_id = $2",
                    &[
                        &tenant,
                        &row.get::<_, &str>(0),
                        &properties,
                        &context,
                        &identifiers,
                    ],
                )
                .await
                .map_err(map_error)?;
                done += 1;
                left -= 1;
            }
        }
        if left > 0 {
            done += compliance(&tx, &vault, tenant, prefix, &mut left).await?;
        }
        if left > 0 {
            done += merges(&tx, &vault, tenant, prefix, &mut left).await?;
        }
        if left > 0 {
            done += imports(&tx, &vault, tenant, prefix, &mut left).await?;
        }
        if left > 0 {
            done += replies(&tx, &vault, tenant, prefix, &mut left).await?;
        }
        tx.commit().await.map_err(map_error)?;
        Ok(done)
    }
}

/// Consent subjects, suppression values and contact addresses: a plain row (no sealed column
/// yet) gets its blind index in the lookup column as well, or lookups would miss it.
async fn compliance(
    tx: &Transaction<'_>,
    vault: &Vault,
    tenant: &str,
    prefix: &str,
    left: &mut i64,
) -> StoreResult<u64> {
    let prefix_len = i32::try_from(prefix.len()).unwrap_or(i32::MAX);
    let mut done = 0u64;

    let consent = tx
        .query(
            "SELECT event_id, subject, subject_sealed, evidence FROM consent_events
             WHERE tenant_id = $1 AND (subject_sealed IS NULL OR substr(subject_sealed, 1, $2) <> $3
                OR substr(evidence, 1, $2) <> $3)
             LIMIT $4",
            &[&tenant, &prefix_len, &prefix, &*left],
        )
        .await
        .map_err(map_error)?;
    for row in &consent {
        let (event_id, subject, sealed, evidence): (
            String,
            String,
            Option<String>,
            Option<String>,
        ) = (row.get(0), row.get(1), row.get(2), row.get(3));
        let lookup = match &sealed {
            Some(_) => subject.clone(),
            None => vault.subject_key_index(tenant, &subject),
        };
        let key = match sealed {
            Some(sealed) => vault.open(tenant, column::CONSENT_SUBJECT, sealed)?,
            None => subject.clone(),
        };
        let sealed = vault.seal_subject(tenant, &key)?;
        let evidence = evidence
            .map(|e| {
                let plain = vault.open(tenant, column::CONSENT_EVIDENCE, e)?;
                vault.seal(tenant, column::CONSENT_EVIDENCE, &plain)
            })
            .transpose()?;
        tx.execute(
            "UPDATE consent_events SET subject = $4, subject_sealed = $5, evidence = $6
             WHERE tenant_id = $1 AND event_id = $2 AND subject = $3",
            &[&tenant, &event_id, &subject, &lookup, &sealed, &evidence],
        )
        .await
        .map_err(map_error)?;
        done += 1;
        *left -= 1;
    }
    if *left <= 0 {
        return Ok(done);
    }

    // Global entries belong to no tenant and no tenant's lock covers them: every tenant's pass
    // moves them too, and each row is rewritten only if it is still what was read.
    let suppressions = tx
        .query(
            &format!(
                "SELECT tenant_id, entry_id, kind, value, value_sealed FROM suppression_entries
                 WHERE tenant_id IN ($1, '{GLOBAL_TENANT}')
                   AND (value_sealed IS NULL AND substr(value, 1, {stone}) <> '{TOMBSTONE_PREFIX}'
                        OR substr(value_sealed, 1, $2) <> $3)
                 LIMIT $4",
                stone = TOMBSTONE_PREFIX.len()
            ),
            &[&tenant, &prefix_len, &prefix, &*left],
        )
        .await
        .map_err(map_error)?;
    for row in &suppressions {
        let (owner, entry_id, kind, stored, sealed): (
            String,
            String,
            String,
            String,
            Option<String>,
        ) = (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4));
        let (index, sealed_now) = match &sealed {
            Some(old) => {
                let plain = vault.open(&owner, column::SUPPRESSION_VALUE, old.clone())?;
                (
                    stored.clone(),
                    Some(vault.seal(&owner, column::SUPPRESSION_VALUE, &plain)?),
                )
            }
            None => vault.indexed(&owner, column::SUPPRESSION_VALUE, &kind, &stored)?,
        };
        tx.execute(
            "UPDATE suppression_entries SET value = $5, value_sealed = $6
             WHERE tenant_id = $1 AND entry_id = $2 AND value = $3
               AND value_sealed IS NOT DISTINCT FROM $4",
            &[&owner, &entry_id, &stored, &sealed, &index, &sealed_now],
        )
        .await
        .map_err(map_error)?;
        done += 1;
        *left -= 1;
    }
    if *left <= 0 {
        return Ok(done);
    }

    let contacts = tx
        .query(
            "SELECT contact_id, kind, value, value_sealed FROM contacts
             WHERE tenant_id = $1 AND (value_sealed IS NULL OR substr(value_sealed, 1, $2) <> $3)
             LIMIT $4",
            &[&tenant, &prefix_len, &prefix, &*left],
        )
        .await
        .map_err(map_error)?;
    for row in &contacts {
        let (contact_id, kind, stored, sealed): (String, String, String, Option<String>) =
            (row.get(0), row.get(1), row.get(2), row.get(3));
        let (index, sealed) = match sealed {
            Some(old) => {
                let plain = vault.open(tenant, column::CONTACT_VALUE, old)?;
                (
                    stored,
                    Some(vault.seal(tenant, column::CONTACT_VALUE, &plain)?),
                )
            }
            None => vault.indexed(tenant, column::CONTACT_VALUE, &kind, &stored)?,
        };
        tx.execute(
            "UPDATE contacts SET value = $3, value_sealed = $4 WHERE tenant_id = $1 AND contact_id = $2",
            &[&tenant, &contact_id, &index, &sealed],
        )
        .await
        .map_err(map_error)?;
        done += 1;
        *left -= 1;
    }
    Ok(done)
}

/// The identifiers merges and conflicts were recorded on.
async fn merges(
    tx: &Transaction<'_>,
    vault: &Vault,
    tenant: &str,
    prefix: &str,
    left: &mut i64,
) -> StoreResult<u64> {
    let mut done = 0;
    for records in &MERGE_RECORD_COLUMNS {
        if *left <= 0 {
            break;
        }
        done += text_column((tx, vault, tenant, prefix), left, records).await?;
    }
    Ok(done)
}

/// Re-seals one [`SealedTextColumn`]. Empty text holds nothing and stays empty.
async fn text_column(
    (tx, vault, tenant, prefix): (&Transaction<'_>, &Vault, &str, &str),
    left: &mut i64,
    target: &SealedTextColumn,
) -> StoreResult<u64> {
    let SealedTextColumn {
        table,
        key: id,
        column: col,
        sealed_as,
    } = *target;
    let prefix_len = i32::try_from(prefix.len()).unwrap_or(i32::MAX);
    let rows = tx
        .query(
            &format!(
                "SELECT {id}, {col} FROM {table}
                 WHERE tenant_id = $1 AND {col} <> '' AND substr({col}, 1, $2) <> $3 LIMIT $4"
            ),
            &[&tenant, &prefix_len, &prefix, &*left],
        )
        .await
        .map_err(map_error)?;
    let mut done = 0u64;
    for row in &rows {
        let plain = vault.open(tenant, sealed_as, row.get(1))?;
        let sealed = vault.seal(tenant, sealed_as, &plain)?;
        tx.execute(
            &format!("UPDATE {table} SET {col} = $3 WHERE tenant_id = $1 AND {id} = $2"),
            &[&tenant, &row.get::<_, &str>(0), &sealed],
        )
        .await
        .map_err(map_error)?;
        done += 1;
        *left -= 1;
    }
    Ok(done)
}

/// Landed import rows (bytes; an erased row is empty and stays so) and row outcomes' reasons.
async fn imports(
    tx: &Transaction<'_>,
    vault: &Vault,
    tenant: &str,
    prefix: &str,
    left: &mut i64,
) -> StoreResult<u64> {
    let prefix_len = i32::try_from(prefix.len()).unwrap_or(i32::MAX);
    // Bytes columns are sealed as bytes, after a prefix of their own.
    let bytes_prefix = vault.current_bytes_prefix().unwrap_or_default();
    let bytes_len = i32::try_from(bytes_prefix.len()).unwrap_or(i32::MAX);
    let mut done = 0u64;
    let rows = tx
        .query(
            "SELECT job_id, row_no, bytes FROM import_rows
             WHERE tenant_id = $1 AND length(bytes) > 0 AND substring(bytes FROM 1 FOR $2) <> $3
             LIMIT $4",
            &[&tenant, &bytes_len, &bytes_prefix, &*left],
        )
        .await
        .map_err(map_error)?;
    for row in &rows {
        let plain = vault.open_bytes(tenant, column::IMPORT_ROW, row.get(2))?;
        let sealed = vault.seal_bytes(tenant, column::IMPORT_ROW, &plain)?;
        tx.execute(
            "UPDATE import_rows SET bytes = $4 WHERE tenant_id = $1 AND job_id = $2 AND row_no = $3",
            &[&tenant, &row.get::<_, &str>(0), &row.get::<_, i64>(1), &sealed],
        )
        .await
        .map_err(map_error)?;
        done += 1;
        *left -= 1;
    }
    if *left <= 0 {
        return Ok(done);
    }
    let outcomes = tx
        .query(
            "SELECT job_id, row_no, reason FROM import_outcomes
             WHERE tenant_id = $1 AND substr(reason, 1, $2) <> $3 LIMIT $4",
            &[&tenant, &prefix_len, &prefix, &*left],
        )
        .await
        .map_err(map_error)?;
    for row in &outcomes {
        let plain = vault.open(tenant, column::IMPORT_REASON, row.get(2))?;
        let sealed = vault.seal(tenant, column::IMPORT_REASON, &plain)?;
        tx.execute(
            "UPDATE import_outcomes SET reason = $4 WHERE tenant_id = $1 AND job_id = $2 AND row_no = $3",
            &[&tenant, &row.get::<_, &str>(0), &row.get::<_, i64>(1), &sealed],
        )
        .await
        .map_err(map_error)?;
        done += 1;
        *left -= 1;
    }
    Ok(done)
}

/// Stored idempotent responses (bytes) and webhook payloads in the outbox.
async fn replies(
    tx: &Transaction<'_>,
    vault: &Vault,
    tenant: &str,
    prefix: &str,
    left: &mut i64,
) -> StoreResult<u64> {
    // Bytes columns are sealed as bytes, after a prefix of their own.
    let bytes_prefix = vault.current_bytes_prefix().unwrap_or_default();
    let bytes_len = i32::try_from(bytes_prefix.len()).unwrap_or(i32::MAX);
    let mut done = 0u64;
    let bodies = tx
        .query(
            "SELECT scope, key, body FROM idempotency_keys
             WHERE tenant_id = $1 AND length(body) > 0 AND substring(body FROM 1 FOR $2) <> $3
             LIMIT $4",
            &[&tenant, &bytes_len, &bytes_prefix, &*left],
        )
        .await
        .map_err(map_error)?;
    for row in &bodies {
        let plain = vault.open_bytes(tenant, column::IDEMPOTENT_BODY, row.get(2))?;
        let sealed = vault.seal_bytes(tenant, column::IDEMPOTENT_BODY, &plain)?;
        tx.execute(
            "UPDATE idempotency_keys SET body = $4 WHERE tenant_id = $1 AND scope = $2 AND key = $3",
            &[&tenant, &row.get::<_, &str>(0), &row.get::<_, &str>(1), &sealed],
        )
        .await
        .map_err(map_error)?;
        done += 1;
        *left -= 1;
    }
    if *left <= 0 {
        return Ok(done);
    }
    done += text_column((tx, vault, tenant, prefix), left, &WEBHOOK_PAYLOADS).await?;
    Ok(done)
}
