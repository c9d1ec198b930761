//! Resolution on PostgreSQL. Writers of one tenant are serialized by a transaction-scoped
//! advisory lock on the tenant, so processes sharing the database never race for an identifier
//! (and never create two persons for one `unique` identifier); readers are never blocked.
//! Finer-grained locks (per identifier) are a later optimization, see decision 0005.

use std::collections::BTreeSet;

use deadpool_postgres::Transaction;
use idgraph_core::identity::{Identifier, IdentifierKind, IdentitySettings};
use idgraph_core::resolve::{Resolution, Signal, resolve};
use idgraph_core::tenancy::TenantId;
use idgraph_store::{
    IngestOutcome, LAST_SEEN_RESOLUTION_SECONDS, SignalRecord, Snapshot, StoreError, StoreResult,
    conflict_rule_text, derived_id, encode_identifiers,
};
use jiff::Timestamp;

use crate::PostgresStore;
use crate::codec::{map_error, to_sql_time};

/// The persons of a canonical person's group: itself and everyone merged into it. A UNION, so
/// that each branch is one index look-up.
pub(crate) const GROUP: &str = "SELECT $2::text UNION ALL SELECT person_id FROM persons WHERE tenant_id = $1 AND merged_into = $2";

impl PostgresStore {
    pub(crate) async fn ingest_signals(
        &self,
        tenant_id: &TenantId,
        settings: &IdentitySettings,
        signals: Vec<SignalRecord>,
    ) -> StoreResult<Vec<IngestOutcome>> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(map_error)?;
        tx.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
            &[&format!("idgraph:resolve:{tenant_id}")],
        )
        .await
        .map_err(map_error)?;
        let tenant = tenant_id.as_str();
        // Under the tenant's lock, so the next position in the log is the last one plus one.
        let mut seq: i64 = tx
            .query_one(
                "SELECT COALESCE(MAX(seq), 0) FROM events WHERE tenant_id = $1",
                &[&tenant],
            )
            .await
            .map_err(map_error)?
            .get(0);
        let mut outcomes = Vec::with_capacity(signals.len());
        for signal in signals {
            let event = &signal.event;
            let seen = tx
                .query_opt(
                    "SELECT 1 FROM events WHERE tenant_id = $1 AND workspace = $2 AND message_id = $3",
                    &[&tenant, &event.workspace.as_str(), &event.message_id],
                )
                .await
                .map_err(map_error)?;
            if seen.is_some() {
                outcomes.push(IngestOutcome::Duplicate);
                continue;
            }
            let snapshot = snapshot(&tx, tenant, settings, &signal.identifiers).await?;
            let resolution = resolve(
                settings,
                &snapshot,
                &Signal {
                    identifiers: &signal.identifiers,
                    new_person_id: event.event_id.clone(),
                    at: event.ingested_at,
                },
            );
            seq += 1;
            apply(&tx, tenant, seq, &signal, &resolution).await?;
            outcomes.push(IngestOutcome::Recorded {
                person_id: resolution.person.clone(),
                created: resolution.created,
                merges: resolution.merges.len(),
                conflicts: resolution.conflicts.len(),
            });
        }
        tx.commit().await.map_err(map_error)?;
        Ok(outcomes)
    }
}

async fn snapshot(
    tx: &Transaction<'_>,
    tenant: &str,
    settings: &IdentitySettings,
    identifiers: &[Identifier],
) -> StoreResult<Snapshot> {
    let mut snapshot = Snapshot::default();
    let owners_stmt = tx
        .prepare_cached(
            "SELECT DISTINCT COALESCE(p.merged_into, p.person_id) FROM identity_nodes n
             JOIN persons p ON p.tenant_id = n.tenant_id AND p.person_id = n.person_id
             WHERE n.tenant_id = $1 AND n.kind = $2 AND n.value = $3",
        )
        .await
        .map_err(map_error)?;
    let mut canonical = BTreeSet::new();
    for identifier in identifiers {
        let rows = tx
            .query(
                &owners_stmt,
                &[&tenant, &identifier.kind().as_str(), &identifier.value()],
            )
            .await
            .map_err(map_error)?;
        let owners: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
        canonical.extend(owners.iter().cloned());
        snapshot.owners.insert(identifier.clone(), owners);
    }
    for person_id in canonical {
        let row = tx
            .query_one(
                "SELECT created_at FROM persons WHERE tenant_id = $1 AND person_id = $2",
                &[&tenant, &person_id],
            )
            .await
            .map_err(map_error)?;
        let created_at: std::time::SystemTime = row.get(0);
        let created_at =
            Timestamp::try_from(created_at).map_err(|e| StoreError::Other(e.to_string()))?;
        let nodes = tx
            .query(
                &format!("SELECT kind, value FROM identity_nodes WHERE tenant_id = $1 AND person_id IN ({GROUP})"),
                &[&tenant, &person_id],
            )
            .await
            .map_err(map_error)?;
        let limited = nodes.iter().filter_map(|row| {
            let kind = IdentifierKind::parse(row.get::<_, &str>(0)).ok()?;
            settings
                .rule(&kind)
                .is_some_and(|rule| rule.limit.is_some())
                .then(|| (kind, row.get::<_, String>(1)))
        });
        snapshot.add_person(person_id, created_at, limited.collect::<Vec<_>>());
    }
    Ok(snapshot)
}

async fn apply(
    tx: &Transaction<'_>,
    tenant: &str,
    seq: i64,
    signal: &SignalRecord,
    resolution: &Resolution,
) -> StoreResult<()> {
    let event = &signal.event;
    let signal_id = event.event_id.as_str();
    let now = to_sql_time(event.ingested_at);
    let seen = to_sql_time(event.occurred_at);
    let person = resolution.person.as_str();
    if resolution.created {
        tx.execute(
            "INSERT INTO persons (tenant_id, person_id, merged_into, created_at, updated_at) VALUES ($1, $2, NULL, $3, $3)",
            &[&tenant, &person, &now],
        )
        .await
        .map_err(map_error)?;
    } else if signal.changes_person(resolution) {
        tx.execute(
            "UPDATE persons SET updated_at = $3 WHERE tenant_id = $1 AND person_id = $2",
            &[&tenant, &person, &now],
        )
        .await
        .map_err(map_error)?;
    }
    for (index, merge) in resolution.merges.iter().enumerate() {
        tx.execute(
            &format!(
                "UPDATE persons SET merged_into = $3, updated_at = $4
                 WHERE tenant_id = $1 AND person_id IN ({GROUP})"
            ),
            &[&tenant, &merge.absorbed, &merge.survivor, &now],
        )
        .await
        .map_err(map_error)?;
        tx.execute(
            "INSERT INTO merges (tenant_id, merge_id, survivor, absorbed, identifiers, signal_id, rule, at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            &[
                &tenant,
                &derived_id(signal_id, 'm', index),
                &merge.survivor,
                &merge.absorbed,
                &encode_identifiers(&merge.identifiers),
                &signal_id,
                &merge.rule,
                &now,
            ],
        )
        .await
        .map_err(map_error)?;
    }
    for identifier in &resolution.attach {
        tx.execute(
            "INSERT INTO identity_nodes
             (tenant_id, kind, value, person_id, source, confidence, first_seen, last_seen, signal_id)
             VALUES ($1, $2, $3, $4, $5, 1.0, $6, $6, $7) ON CONFLICT DO NOTHING",
            &[&tenant, &identifier.kind().as_str(), &identifier.value(), &person, &signal.source, &seen, &signal_id],
        )
        .await
        .map_err(map_error)?;
    }
    for identifier in &resolution.touch {
        tx.execute(
            &format!(
                "UPDATE identity_nodes SET last_seen = $5
                 WHERE tenant_id = $1 AND kind = $3 AND value = $4 AND person_id IN ({GROUP})
                   AND last_seen < $5::timestamptz - interval '{LAST_SEEN_RESOLUTION_SECONDS} seconds'"
            ),
            &[
                &tenant,
                &person,
                &identifier.kind().as_str(),
                &identifier.value(),
                &seen,
            ],
        )
        .await
        .map_err(map_error)?;
    }
    for (index, conflict) in resolution.conflicts.iter().enumerate() {
        tx.execute(
            "INSERT INTO conflicts (tenant_id, conflict_id, person_id, other_person_id, kind, value, rule, signal_id, at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            &[
                &tenant,
                &derived_id(signal_id, 'c', index),
                &conflict.person,
                &conflict.other_person,
                &conflict.identifier.kind().as_str(),
                &conflict.identifier.value(),
                &conflict_rule_text(&conflict.rule),
                &signal_id,
                &now,
            ],
        )
        .await
        .map_err(map_error)?;
    }
    let schema_version = i32::try_from(event.schema_version).unwrap_or(i32::MAX);
    tx.execute(
        "INSERT INTO events (tenant_id, event_id, workspace, person_id, kind, name, occurred_at, ingested_at,
                             schema_version, message_id, properties, context, seq, identifiers, source)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
        &[
            &tenant,
            &signal_id,
            &event.workspace.as_str(),
            &person,
            &event.kind,
            &event.name,
            &seen,
            &now,
            &schema_version,
            &event.message_id,
            &event.properties,
            &event.context,
            &seq,
            &encode_identifiers(&signal.identifiers),
            &signal.source,
        ],
    )
    .await
    .map_err(map_error)?;
    for observed in &signal.traits {
        tx.execute(
            "INSERT INTO trait_values
             (tenant_id, person_id, workspace, name, value, source_class, confidence, observed_at, set_once, signal_id)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT DO NOTHING",
            &[
                &tenant,
                &person,
                &event.workspace.as_str(),
                &observed.name,
                &observed.value,
                &observed.provenance.class.as_str(),
                &observed.provenance.confidence,
                &to_sql_time(observed.provenance.observed_at),
                &observed.set_once,
                &signal_id,
            ],
        )
        .await
        .map_err(map_error)?;
    }
    tx.execute(
        &format!(
            "INSERT INTO workspace_contacts (tenant_id, person_id, workspace, first_seen, last_seen)
             VALUES ($1, $2, $3, $4, $4)
             ON CONFLICT (tenant_id, person_id, workspace) DO UPDATE SET
                first_seen = LEAST(workspace_contacts.first_seen, EXCLUDED.first_seen),
                last_seen = GREATEST(workspace_contacts.last_seen, EXCLUDED.last_seen)
             WHERE EXCLUDED.first_seen < workspace_contacts.first_seen
                OR EXCLUDED.last_seen >= workspace_contacts.last_seen
                                         + interval '{LAST_SEEN_RESOLUTION_SECONDS} seconds'"
        ),
        &[&tenant, &person, &event.workspace.as_str(), &seen],
    )
    .await
    .map_err(map_error)?;
    Ok(())
}
