//! Merges an operator asks for, under the tenant's resolution lock so they are ordered with
//! signals (in every process) and checked against the same limits.

use std::collections::{BTreeMap, BTreeSet};
use std::time::SystemTime;

use deadpool_postgres::Transaction;
use idgraph_core::identity::{IdentifierKind, IdentitySettings};
use idgraph_core::resolve::{PersonView, merge_breaks_limit};
use idgraph_core::tenancy::TenantId;
use idgraph_store::{ManualMerge, MergeRow, StoreError, StoreResult, limit_refusal};
use jiff::Timestamp;

use crate::PostgresStore;
use crate::codec::{map_error, to_sql_time};
use crate::resolve::GROUP;

async fn canonical(tx: &Transaction<'_>, tenant: &str, person_id: &str) -> StoreResult<String> {
    let row = tx
        .query_opt(
            "SELECT merged_into FROM persons WHERE tenant_id = $1 AND person_id = $2",
            &[&tenant, &person_id],
        )
        .await
        .map_err(map_error)?
        .ok_or(StoreError::NotFound)?;
    let into: Option<String> = row.get(0);
    Ok(into.unwrap_or_else(|| person_id.to_owned()))
}

/// The person's creation time and its values of limited kinds, across its group.
async fn view(
    tx: &Transaction<'_>,
    tenant: &str,
    settings: &IdentitySettings,
    person: &str,
) -> StoreResult<PersonView> {
    let row = tx
        .query_one(
            "SELECT created_at FROM persons WHERE tenant_id = $1 AND person_id = $2",
            &[&tenant, &person],
        )
        .await
        .map_err(map_error)?;
    let created_at: SystemTime = row.get(0);
    let created_at =
        Timestamp::try_from(created_at).map_err(|e| StoreError::Other(e.to_string()))?;
    let rows = tx
        .query(
            &format!("SELECT kind, value FROM identity_nodes WHERE tenant_id = $1 AND person_id IN ({GROUP})"),
            &[&tenant, &person],
        )
        .await
        .map_err(map_error)?;
    let mut identifiers: BTreeMap<IdentifierKind, BTreeSet<String>> = BTreeMap::new();
    for row in &rows {
        let kind: String = row.get(0);
        let Some((kind, rule)) = settings.kinds.get_key_value(kind.as_str()) else {
            continue;
        };
        if rule.limit.is_some() {
            identifiers
                .entry(kind.clone())
                .or_default()
                .insert(row.get(1));
        }
    }
    Ok(PersonView {
        id: person.to_owned(),
        created_at,
        identifiers,
    })
}

impl PostgresStore {
    pub(crate) async fn manual_merge(
        &self,
        tenant_id: &TenantId,
        settings: &IdentitySettings,
        merge: ManualMerge,
    ) -> StoreResult<MergeRow> {
        let tenant = tenant_id.as_str();
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(map_error)?;
        // The same lock resolution takes: no signal of the tenant runs meanwhile.
        tx.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
            &[&format!("idgraph:resolve:{tenant_id}")],
        )
        .await
        .map_err(map_error)?;
        let survivor = canonical(&tx, tenant, &merge.survivor).await?;
        let absorbed = canonical(&tx, tenant, &merge.absorbed).await?;
        if survivor == absorbed {
            return Err(StoreError::Conflict(format!(
                "{} and {} are already one person ({survivor})",
                merge.survivor, merge.absorbed
            )));
        }
        let survivor_view = view(&tx, tenant, settings, &survivor).await?;
        let absorbed_view = view(&tx, tenant, settings, &absorbed).await?;
        if let Some((kind, limit)) = merge_breaks_limit(settings, survivor_view, absorbed_view) {
            return Err(limit_refusal(&kind, limit));
        }
        let at = to_sql_time(merge.at);
        tx.execute(
            &format!(
                "UPDATE persons SET merged_into = $3, updated_at = $4 WHERE tenant_id = $1 AND person_id IN ({GROUP})"
            ),
            &[&tenant, &absorbed, &survivor, &at],
        )
        .await
        .map_err(map_error)?;
        tx.execute(
            "UPDATE persons SET updated_at = $3 WHERE tenant_id = $1 AND person_id = $2",
            &[&tenant, &survivor, &at],
        )
        .await
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
        tx.execute(
            "INSERT INTO merges (tenant_id, merge_id, survivor, absorbed, identifiers, signal_id, rule, at)
             VALUES ($1, $2, $3, $4, '', $5, $6, $7)",
            &[&tenant, &row.merge_id, &row.survivor, &row.absorbed, &row.signal_id, &row.rule, &at],
        )
        .await
        .map_err(map_error)?;
        tx.commit().await.map_err(map_error)?;
        Ok(row)
    }
}
