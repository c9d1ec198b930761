//! Merges an operator asks for, on the writer thread like every resolution write, so they are
//! ordered with signals and checked against the same limits.

use idgraph_core::identity::IdentitySettings;
use idgraph_core::resolve::merge_breaks_limit;
use idgraph_store::{ManualMerge, MergeRow, StoreError, StoreResult, limit_refusal};
use rusqlite::{OptionalExtension, Transaction, params};

use crate::codec::{map_error, micros};
use crate::resolve::{GROUP, TxGraph};

fn canonical(tx: &Transaction<'_>, tenant: &str, person_id: &str) -> StoreResult<String> {
    let merged_into: Option<Option<String>> = tx
        .prepare_cached("SELECT merged_into FROM persons WHERE tenant_id = ?1 AND person_id = ?2")
        .and_then(|mut s| {
            s.query_row(params![tenant, person_id], |r| r.get(0))
                .optional()
        })
        .map_err(map_error)?;
    match merged_into {
        None => Err(StoreError::NotFound),
        Some(into) => Ok(into.unwrap_or_else(|| person_id.to_owned())),
    }
}

pub(crate) fn merge(
    tx: &Transaction<'_>,
    tenant: &str,
    settings: &IdentitySettings,
    merge: &ManualMerge,
) -> StoreResult<MergeRow> {
    let survivor = canonical(tx, tenant, &merge.survivor)?;
    let absorbed = canonical(tx, tenant, &merge.absorbed)?;
    if survivor == absorbed {
        return Err(StoreError::Conflict(format!(
            "{} and {} are already one person ({survivor})",
            merge.survivor, merge.absorbed
        )));
    }
    let graph = TxGraph::new(tx, tenant, settings);
    let survivor_view = graph.read_person(&survivor)?.ok_or(StoreError::NotFound)?;
    let absorbed_view = graph.read_person(&absorbed)?.ok_or(StoreError::NotFound)?;
    if let Some((kind, limit)) = merge_breaks_limit(settings, survivor_view, absorbed_view) {
        return Err(limit_refusal(&kind, limit));
    }
    let at = micros(merge.at);
    tx.prepare_cached(&format!(
        "UPDATE persons SET merged_into = ?3, updated_at = ?4 WHERE tenant_id = ?1 AND person_id IN ({GROUP})"
    ))
    .and_then(|mut s| s.execute(params![tenant, absorbed, survivor, at]))
    .map_err(map_error)?;
    tx.prepare_cached("UPDATE persons SET updated_at = ?3 WHERE tenant_id = ?1 AND person_id = ?2")
        .and_then(|mut s| s.execute(params![tenant, survivor, at]))
        .map_err(map_error)?;
    let row = MergeRow {
        merge_id: merge.merge_id.clone(),
        survivor,
        absorbed,
        identifiers: Vec::new(),
        signal_id: format!("manual:{}", merge.actor),
        rule: format!("manual: {}", merge.reason),
        at: merge.at,
    };
    tx.prepare_cached(
        "INSERT INTO merges (tenant_id, merge_id, survivor, absorbed, identifiers, signal_id, rule, at)
         VALUES (?1, ?2, ?3, ?4, '', ?5, ?6, ?7)",
    )
    .and_then(|mut s| {
        s.execute(params![
            tenant,
            row.merge_id,
            row.survivor,
            row.absorbed,
            row.signal_id,
            row.rule,
            at
        ])
    })
    .map_err(map_error)?;
    Ok(row)
}
