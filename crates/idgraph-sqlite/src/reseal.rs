//! Re-sealing under the current data-encryption key: a rotation, or the first start with a key
//! on a store that holds plain values. One bounded batch per call, one transaction.

use idgraph_store::StoreResult;
use idgraph_store::vault::{Vault, column};
use rusqlite::{Transaction, params};

use crate::codec::map_error;

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

    let nodes: Vec<(String, String, String, Option<String>)> = tx
        .prepare_cached(
            "SELECT kind, value, person_id, value_sealed FROM identity_nodes
             WHERE tenant_id = ?1 AND (value_sealed IS NULL OR substr(value_sealed, 1, ?2) <> ?3)
             LIMIT ?4",
        )
        .and_then(|mut s| {
            s.query_map(params![tenant, prefix_len, prefix, left], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })?
            .collect()
        })
        .map_err(map_error)?;
    for (kind, stored, person, sealed) in nodes {
        let plain = match sealed {
            Some(sealed) => vault.open(tenant, column::IDENTIFIER, sealed)?,
            None => stored.clone(),
        };
        let (index, sealed) = vault.identifier(tenant, &kind, &plain)?;
        tx.prepare_cached(
            "UPDATE identity_nodes SET value = ?5, value_sealed = ?6
             WHERE tenant_id = ?1 AND kind = ?2 AND value = ?3 AND person_id = ?4",
        )
        .and_then(|mut s| s.execute(params![tenant, kind, stored, person, index, sealed]))
        .map_err(map_error)?;
        done += 1;
        left -= 1;
    }
    if left <= 0 {
        return Ok(done);
    }

    let traits: Vec<(String, String, String, String, String)> = tx
        .prepare_cached(
            "SELECT person_id, workspace, name, signal_id, value FROM trait_values
             WHERE tenant_id = ?1 AND substr(value, 1, ?2) <> ?3 LIMIT ?4",
        )
        .and_then(|mut s| {
            s.query_map(params![tenant, prefix_len, prefix, left], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
            })?
            .collect()
        })
        .map_err(map_error)?;
    for (person, workspace, name, signal, value) in traits {
        let plain = vault.open(tenant, column::TRAIT, value)?;
        let sealed = vault.seal(tenant, column::TRAIT, &plain)?;
        tx.prepare_cached(
            "UPDATE trait_values SET value = ?6
             WHERE tenant_id = ?1 AND person_id = ?2 AND workspace = ?3 AND name = ?4 AND signal_id = ?5",
        )
        .and_then(|mut s| s.execute(params![tenant, person, workspace, name, signal, sealed]))
        .map_err(map_error)?;
        done += 1;
        left -= 1;
    }
    if left <= 0 {
        return Ok(done);
    }

    let events: Vec<(String, String, String, String)> = tx
        .prepare_cached(
            "SELECT event_id, properties, context, identifiers FROM events
             WHERE tenant_id = ?1 AND (substr(properties, 1, ?2) <> ?3
                OR substr(context, 1, ?2) <> ?3 OR substr(identifiers, 1, ?2) <> ?3)
             LIMIT ?4",
        )
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
            vault.seal(tenant, col, &plain)
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
    }
    Ok(done)
}
