//! Re-sealing under the current data-encryption key: a rotation, or the first start with a key
//! on a store that holds plain values. One bounded batch per call, one transaction.

use idgraph_store::StoreResult;
use idgraph_store::vault::column;

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
                    "SELECT event_id, properties, context, identifiers FROM events
                     WHERE tenant_id = $1 AND (substr(properties, 1, $2) <> $3
                        OR substr(context, 1, $2) <> $3 OR substr(identifiers, 1, $2) <> $3)
                     LIMIT $4",
                    &[&tenant, &prefix_len, &prefix, &left],
                )
                .await
                .map_err(map_error)?;
            for row in &events {
                let reseal = |col: &str, index: usize| -> StoreResult<String> {
                    let plain = vault.open(tenant, col, row.get(index))?;
                    vault.seal(tenant, col, &plain)
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
            }
        }
        tx.commit().await.map_err(map_error)?;
        Ok(done)
    }
}
