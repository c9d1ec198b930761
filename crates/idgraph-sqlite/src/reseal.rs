//! Re-sealing under the current data-encryption key: a rotation, or the first start with a key
//! on a store that holds plain values. One bounded batch per call, one transaction.

use idgraph_core::privacy::TOMBSTONE_PREFIX;
use idgraph_store::trait_set::{self, SetForm};
use idgraph_store::vault::{
    EMPTY_JSON_SQL, MERGE_RECORD_COLUMNS, SealedTextColumn, Vault, WEBHOOK_PAYLOADS, column,
};
use idgraph_store::{GLOBAL_TENANT, StoreResult};
use rusqlite::{Transaction, params};

use crate::codec::map_error;
use crate::nodes::NODE_FROM;

pub(crate) fn batch(
    tx: &Transaction<'_>,
    vault: &Vault,
    tenant: &str,
    limit: u32,
) -> StoreResult<u64> {
    let Some(prefix) = vault.current_prefix() else {
        return Ok(0);
    };
    let prefix_len = i64::try_from(prefix.len()).unwrap_or(i64::MAX);
    let mut left = i64::from(limit);
    let mut done = 0u64;

    // Nodes stored in the clear, from before the store had a key: index and seal them.
    let plain_nodes: Vec<(String, String, String, i64)> = tx
        .prepare_cached(&format!(
            "SELECT n.kind, n.value, n.person_id, n.value_id FROM {NODE_FROM}
             WHERE n.tenant_id = ?1 AND v.sealed IS NULL LIMIT ?2"
        ))
        .and_then(|mut s| {
            s.query_map(params![tenant, left], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })?
            .collect()
        })
        .map_err(map_error)?;
    for (kind, plain, person, value_id) in plain_nodes {
        let (index, sealed) = vault.identifier(tenant, &kind, &plain)?;
        tx.prepare_cached(
            "UPDATE identity_nodes SET value = ?5
             WHERE tenant_id = ?1 AND kind = ?2 AND value = ?3 AND person_id = ?4",
        )
        .and_then(|mut s| s.execute(params![tenant, kind, plain, person, index]))
        .map_err(map_error)?;
        tx.prepare_cached(
            "UPDATE identity_values SET sealed = ?3 WHERE tenant_id = ?1 AND value_id = ?2",
        )
        .and_then(|mut s| s.execute(params![tenant, value_id, sealed]))
        .map_err(map_error)?;
        done += 1;
        left -= 1;
    }
    if left <= 0 {
        return Ok(done);
    }
    let values: Vec<(i64, String)> = tx
        .prepare_cached(
            "SELECT value_id, sealed FROM identity_values
             WHERE tenant_id = ?1 AND substr(sealed, 1, ?2) <> ?3 LIMIT ?4",
        )
        .and_then(|mut s| {
            s.query_map(params![tenant, prefix_len, prefix, left], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })?
            .collect()
        })
        .map_err(map_error)?;
    for (value_id, sealed) in values {
        let plain = vault.open(tenant, column::IDENTIFIER, sealed)?;
        let sealed = vault.seal(tenant, column::IDENTIFIER, &plain)?;
        tx.prepare_cached(
            "UPDATE identity_values SET sealed = ?3 WHERE tenant_id = ?1 AND value_id = ?2",
        )
        .and_then(|mut s| s.execute(params![tenant, value_id, sealed]))
        .map_err(map_error)?;
        done += 1;
        left -= 1;
    }
    if left <= 0 {
        return Ok(done);
    }

    // Sets under another key, and sets of the first form (text; moved from the
    // one-row-per-value layout, whose array is plain whatever the key of its values, or sealed
    // whole): all are rewritten compact under the current key.
    let set_prefix = vault.current_bytes_prefix().unwrap_or_default();
    let set_prefix_len = i64::try_from(set_prefix.len()).unwrap_or(i64::MAX);
    let sets: Vec<(String, String, String, i64, Vec<u8>)> = tx
        .prepare_cached(
            "SELECT person_id, workspace, signal_id, form, observations FROM trait_sets
             WHERE tenant_id = ?1 AND (form <> ?5 OR substr(observations, 1, ?2) <> ?3) LIMIT ?4",
        )
        .and_then(|mut s| {
            s.query_map(
                params![
                    tenant,
                    set_prefix_len,
                    set_prefix,
                    left,
                    SetForm::Compact.code()
                ],
                |r| {
                    Ok((
                        r.get(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        crate::codec::text_or_bytes(r, 4)?,
                    ))
                },
            )?
            .collect()
        })
        .map_err(map_error)?;
    for (person, workspace, signal, form, stored) in sets {
        let sealed = trait_set::reseal(vault, tenant, SetForm::from_code(form)?, stored)?;
        tx.prepare_cached(
            "UPDATE trait_sets SET form = ?5, observations = ?6
             WHERE tenant_id = ?1 AND person_id = ?2 AND workspace = ?3 AND signal_id = ?4",
        )
        .and_then(|mut s| {
            s.execute(params![
                tenant,
                person,
                workspace,
                signal,
                SetForm::Compact.code(),
                sealed
            ])
        })
        .map_err(map_error)?;
        done += 1;
        left -= 1;
    }
    if left <= 0 {
        return Ok(done);
    }

    let events: Vec<(String, String, String, String)> = tx
        .prepare_cached(&format!(
            "SELECT event_id, properties, context, identifiers FROM events
             WHERE tenant_id = ?1
               AND ((substr(properties, 1, ?2) <> ?3 AND properties NOT IN {EMPTY_JSON_SQL})
                 OR (substr(context, 1, ?2) <> ?3 AND context NOT IN {EMPTY_JSON_SQL})
                 OR substr(identifiers, 1, ?2) <> ?3)
             LIMIT ?4"
        ))
        .and_then(|mut s| {
            s.query_map(params![tenant, prefix_len, prefix, left], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })?
            .collect()
        })
        .map_err(map_error)?;
    for (event_id, properties, context, identifiers) in events {
        let reseal = |col: &str, stored: String| -> StoreResult<String> {
            let plain = vault.open(tenant, col, stored)?;
            // The identifiers are always sealed: the search above selects them by prefix alone.
            if col == column::EVENT_IDENTIFIERS {
                vault.seal(tenant, col, &plain)
            } else {
                vault.seal_json(tenant, col, &plain)
            }
        };
        let properties = reseal(column::EVENT_PROPERTIES, properties)?;
        let context = reseal(column::EVENT_CONTEXT, context)?;
        let identifiers = reseal(column::EVENT_IDENTIFIERS, identifiers)?;
        tx.prepare_cached(
            "UPDATE events SET properties = ?3, context = ?4, identifiers = ?5
             WHERE tenant_id = ?1 AND event_id = ?2",
        )
        .and_then(|mut s| s.execute(params![tenant, event_id, properties, context, identifiers]))
        .map_err(map_error)?;
        done += 1;
        left -= 1;
    }
    if left <= 0 {
        return Ok(done);
    }
    done += compliance(tx, vault, tenant, prefix, &mut left)?;
    if left <= 0 {
        return Ok(done);
    }
    done += merges(tx, vault, tenant, prefix, &mut left)?;
    if left <= 0 {
        return Ok(done);
    }
    done += imports(tx, vault, tenant, prefix, &mut left)?;
    if left <= 0 {
        return Ok(done);
    }
    done += replies(tx, vault, tenant, prefix, &mut left)?;
    Ok(done)
}

/// Stored idempotent responses (bytes) and webhook payloads in the outbox.
fn replies(
    tx: &Transaction<'_>,
    vault: &Vault,
    tenant: &str,
    prefix: &str,
    left: &mut i64,
) -> StoreResult<u64> {
    // Bytes columns are sealed as bytes, after a prefix of their own.
    let bytes_prefix = vault.current_bytes_prefix().unwrap_or_default();
    let bytes_len = i64::try_from(bytes_prefix.len()).unwrap_or(i64::MAX);
    let mut done = 0u64;
    let bodies: Vec<(String, String, Vec<u8>)> = tx
        .prepare_cached(
            "SELECT scope, key, body FROM idempotency_keys
             WHERE tenant_id = ?1 AND length(body) > 0 AND substr(body, 1, ?2) <> ?3 LIMIT ?4",
        )
        .and_then(|mut s| {
            s.query_map(params![tenant, bytes_len, bytes_prefix, *left], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })?
            .collect()
        })
        .map_err(map_error)?;
    for (scope, key, stored) in bodies {
        let plain = vault.open_bytes(tenant, column::IDEMPOTENT_BODY, stored)?;
        let sealed = vault.seal_bytes(tenant, column::IDEMPOTENT_BODY, &plain)?;
        tx.prepare_cached(
            "UPDATE idempotency_keys SET body = ?4 WHERE tenant_id = ?1 AND scope = ?2 AND key = ?3",
        )
        .and_then(|mut s| s.execute(params![tenant, scope, key, sealed]))
        .map_err(map_error)?;
        done += 1;
        *left -= 1;
    }
    if *left <= 0 {
        return Ok(done);
    }
    done += text_column((tx, vault, tenant, prefix), left, &WEBHOOK_PAYLOADS)?;
    Ok(done)
}

/// Landed import rows (bytes; an erased row is empty and stays so) and row outcomes' reasons.
fn imports(
    tx: &Transaction<'_>,
    vault: &Vault,
    tenant: &str,
    prefix: &str,
    left: &mut i64,
) -> StoreResult<u64> {
    let prefix_len = i64::try_from(prefix.len()).unwrap_or(i64::MAX);
    let mut done = 0u64;
    let outcomes: Vec<(String, i64, String)> = tx
        .prepare_cached(
            "SELECT job_id, row_no, reason FROM import_outcomes
             WHERE tenant_id = ?1 AND substr(reason, 1, ?2) <> ?3 LIMIT ?4",
        )
        .and_then(|mut s| {
            s.query_map(params![tenant, prefix_len, prefix, *left], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })?
            .collect()
        })
        .map_err(map_error)?;
    for (job_id, row_no, stored) in outcomes {
        let plain = vault.open(tenant, column::IMPORT_REASON, stored)?;
        let sealed = vault.seal(tenant, column::IMPORT_REASON, &plain)?;
        tx.prepare_cached(
            "UPDATE import_outcomes SET reason = ?4 WHERE tenant_id = ?1 AND job_id = ?2 AND row_no = ?3",
        )
        .and_then(|mut s| s.execute(params![tenant, job_id, row_no, sealed]))
        .map_err(map_error)?;
        done += 1;
        *left -= 1;
    }
    Ok(done)
}

/// The identifiers merges and conflicts were recorded on.
fn merges(
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
        done += text_column((tx, vault, tenant, prefix), left, records)?;
    }
    Ok(done)
}

/// Re-seals one [`SealedTextColumn`]. Empty text holds nothing and stays empty.
fn text_column(
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
    let prefix_len = i64::try_from(prefix.len()).unwrap_or(i64::MAX);
    let rows: Vec<(String, String)> = tx
        .prepare_cached(&format!(
            "SELECT {id}, {col} FROM {table}
             WHERE tenant_id = ?1 AND {col} <> '' AND substr({col}, 1, ?2) <> ?3 LIMIT ?4"
        ))
        .and_then(|mut s| {
            s.query_map(params![tenant, prefix_len, prefix, *left], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })?
            .collect()
        })
        .map_err(map_error)?;
    let mut done = 0u64;
    for (key, stored) in rows {
        let plain = vault.open(tenant, sealed_as, stored)?;
        let sealed = vault.seal(tenant, sealed_as, &plain)?;
        tx.prepare_cached(&format!(
            "UPDATE {table} SET {col} = ?3 WHERE tenant_id = ?1 AND {id} = ?2"
        ))
        .and_then(|mut s| s.execute(params![tenant, key, sealed]))
        .map_err(map_error)?;
        done += 1;
        *left -= 1;
    }
    Ok(done)
}

/// Consent subjects, suppression values and contact addresses: a plain row (no sealed column
/// yet) gets its blind index in the lookup column as well, or lookups would miss it.
fn compliance(
    tx: &Transaction<'_>,
    vault: &Vault,
    tenant: &str,
    prefix: &str,
    left: &mut i64,
) -> StoreResult<u64> {
    let prefix_len = i64::try_from(prefix.len()).unwrap_or(i64::MAX);
    let mut done = 0u64;

    let consent: Vec<(String, String, Option<String>, Option<String>)> = tx
        .prepare_cached(
            "SELECT event_id, subject, subject_sealed, evidence FROM consent_events
             WHERE tenant_id = ?1 AND (subject_sealed IS NULL OR substr(subject_sealed, 1, ?2) <> ?3
                OR substr(evidence, 1, ?2) <> ?3)
             LIMIT ?4",
        )
        .and_then(|mut s| {
            s.query_map(params![tenant, prefix_len, prefix, *left], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })?
            .collect()
        })
        .map_err(map_error)?;
    for (event_id, subject, sealed, evidence) in consent {
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
        tx.prepare_cached(
            "UPDATE consent_events SET subject = ?4, subject_sealed = ?5, evidence = ?6
             WHERE tenant_id = ?1 AND event_id = ?2 AND subject = ?3",
        )
        .and_then(|mut s| s.execute(params![tenant, event_id, subject, lookup, sealed, evidence]))
        .map_err(map_error)?;
        done += 1;
        *left -= 1;
    }
    if *left <= 0 {
        return Ok(done);
    }

    // Global entries belong to no tenant: every tenant's pass moves them too, and each row is
    // rewritten only if it is still what was read.
    let suppressions: Vec<(String, String, String, String, Option<String>)> = tx
        .prepare_cached(&format!(
            "SELECT tenant_id, entry_id, kind, value, value_sealed FROM suppression_entries
             WHERE tenant_id IN (?1, '{GLOBAL_TENANT}')
               AND (value_sealed IS NULL AND substr(value, 1, {stone}) <> '{TOMBSTONE_PREFIX}'
                    OR substr(value_sealed, 1, ?2) <> ?3)
             LIMIT ?4",
            stone = TOMBSTONE_PREFIX.len()
        ))
        .and_then(|mut s| {
            s.query_map(params![tenant, prefix_len, prefix, *left], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
            })?
            .collect()
        })
        .map_err(map_error)?;
    for (owner, entry_id, kind, stored, sealed) in suppressions {
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
        tx.prepare_cached(
            "UPDATE suppression_entries SET value = ?5, value_sealed = ?6
             WHERE tenant_id = ?1 AND entry_id = ?2 AND value = ?3 AND value_sealed IS ?4",
        )
        .and_then(|mut s| s.execute(params![owner, entry_id, stored, sealed, index, sealed_now]))
        .map_err(map_error)?;
        done += 1;
        *left -= 1;
    }
    if *left <= 0 {
        return Ok(done);
    }

    let contacts: Vec<(String, String, String, Option<String>)> = tx
        .prepare_cached(
            "SELECT contact_id, kind, value, value_sealed FROM contacts
             WHERE tenant_id = ?1 AND (value_sealed IS NULL OR substr(value_sealed, 1, ?2) <> ?3)
             LIMIT ?4",
        )
        .and_then(|mut s| {
            s.query_map(params![tenant, prefix_len, prefix, *left], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })?
            .collect()
        })
        .map_err(map_error)?;
    for (contact_id, kind, stored, sealed) in contacts {
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
        tx.prepare_cached(
            "UPDATE contacts SET value = ?3, value_sealed = ?4 WHERE tenant_id = ?1 AND contact_id = ?2",
        )
        .and_then(|mut s| s.execute(params![tenant, contact_id, index, sealed]))
        .map_err(map_error)?;
        done += 1;
        *left -= 1;
    }
    Ok(done)
}

/// One bounded batch of the landed-rows file (decision 0022), on its own writer: the landed
/// rows not under the current key. Bytes columns are sealed as bytes, after a prefix of their
/// own.
pub(crate) fn landed_batch(
    tx: &Transaction<'_>,
    vault: &Vault,
    tenant: &str,
    limit: u64,
) -> StoreResult<u64> {
    let Some(bytes_prefix) = vault.current_bytes_prefix() else {
        return Ok(0);
    };
    let bytes_len = i64::try_from(bytes_prefix.len()).unwrap_or(i64::MAX);
    let rows: Vec<(String, i64, Vec<u8>)> = tx
        .prepare_cached(
            "SELECT job_id, row_no, bytes FROM import_rows
             WHERE tenant_id = ?1 AND length(bytes) > 0 AND substr(bytes, 1, ?2) <> ?3 LIMIT ?4",
        )
        .and_then(|mut s| {
            s.query_map(
                params![
                    tenant,
                    bytes_len,
                    bytes_prefix,
                    i64::try_from(limit).unwrap_or(i64::MAX)
                ],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )?
            .collect()
        })
        .map_err(map_error)?;
    let mut done = 0u64;
    for (job_id, row_no, stored) in rows {
        let plain = vault.open_bytes(tenant, column::IMPORT_ROW, stored)?;
        let sealed = vault.seal_bytes(tenant, column::IMPORT_ROW, &plain)?;
        tx.prepare_cached(
            "UPDATE import_rows SET bytes = ?4 WHERE tenant_id = ?1 AND job_id = ?2 AND row_no = ?3",
        )
        .and_then(|mut s| s.execute(params![tenant, job_id, row_no, sealed]))
        .map_err(map_error)?;
        done += 1;
    }
    Ok(done)
}
