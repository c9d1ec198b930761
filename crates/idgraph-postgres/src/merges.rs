//! Merges an operator asks for, under the tenant's resolution lock so they are ordered with
//! signals (in every process) and checked against the same limits.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::SystemTime;

use deadpool_postgres::Transaction;
use idgraph_core::identity::{IdentifierKind, IdentitySettings};
use idgraph_core::resolve::{PersonView, merge_breaks_limit};
use idgraph_core::tenancy::TenantId;
use idgraph_store::{
    ConsentSubject, KeepApartRule, ManualMerge, MergeRow, StoreError, StoreResult, Unmerge,
    UnmergeOutcome, limit_refusal,
};
use jiff::Timestamp;

use crate::PostgresStore;
use idgraph_store::vault::{Vault, column};

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
    vault: &Vault,
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
            &format!("SELECT kind, COALESCE(value_sealed, value) FROM identity_nodes WHERE tenant_id = $1 AND person_id IN ({GROUP})"),
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
            let value = vault.open(tenant, column::IDENTIFIER, row.get(1))?;
            identifiers.entry(kind.clone()).or_default().insert(value);
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
        let vault = self.vault();
        let survivor_view = view(&tx, &vault, tenant, settings, &survivor).await?;
        let absorbed_view = view(&tx, &vault, tenant, settings, &absorbed).await?;
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
        let subscribers = crate::webhooks::subscribers(&tx, tenant).await?;
        if subscribers.any(idgraph_core::webhooks::EventType::PersonMerged) {
            let event = idgraph_store::merge_event(&row);
            crate::webhooks::enqueue(&tx, &vault, tenant, &subscribers, &[event]).await?;
        }
        tx.commit().await.map_err(map_error)?;
        Ok(row)
    }
}

impl PostgresStore {
    pub(crate) async fn undo_merge(
        &self,
        tenant_id: &TenantId,
        request: Unmerge,
    ) -> StoreResult<UnmergeOutcome> {
        let tenant = tenant_id.as_str();
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(map_error)?;
        tx.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
            &[&format!("idgraph:resolve:{tenant_id}")],
        )
        .await
        .map_err(map_error)?;
        let merge = tx
            .query_opt(
                "SELECT absorbed, at FROM merges WHERE tenant_id = $1 AND merge_id = $2",
                &[&tenant, &request.merge_id],
            )
            .await
            .map_err(map_error)?
            .ok_or(StoreError::NotFound)?;
        let absorbed: String = merge.get(0);
        let merge_at: SystemTime = merge.get(1);
        let undone = tx
            .query_opt(
                "SELECT 1 FROM unmerges WHERE tenant_id = $1 AND merge_id = $2",
                &[&tenant, &request.merge_id],
            )
            .await
            .map_err(map_error)?;
        if undone.is_some() {
            return Err(StoreError::Conflict(format!(
                "merge {} was already undone",
                request.merge_id
            )));
        }
        let survivor = canonical(&tx, tenant, &absorbed).await?;
        if survivor == absorbed {
            return Err(StoreError::Conflict(format!(
                "{absorbed} is not merged into anyone any more"
            )));
        }
        let members: Vec<String> = tx
            .query(GROUP, &[&tenant, &survivor])
            .await
            .map_err(map_error)?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let merges = tx
            .query(
                "SELECT merge_id, survivor, absorbed, at <= $3 FROM merges
                 WHERE tenant_id = $1 AND absorbed = ANY($2)
                   AND merge_id NOT IN (SELECT merge_id FROM unmerges WHERE tenant_id = $1)",
                &[&tenant, &members, &merge_at],
            )
            .await
            .map_err(map_error)?;
        // The absorbed person's side as it was at the merge: itself and whoever had been
        // merged into it (directly or not) before, by merges still in force.
        let mut side: BTreeSet<String> = BTreeSet::from([absorbed.clone()]);
        loop {
            let before = side.len();
            for row in &merges {
                let (id, into, from, before_merge): (String, String, String, bool) =
                    (row.get(0), row.get(1), row.get(2), row.get(3));
                if id != request.merge_id && before_merge && side.contains(&into) {
                    side.insert(from);
                }
            }
            if side.len() == before {
                break;
            }
        }
        let now = to_sql_time(request.at);
        for member in &side {
            let into: Option<&str> = (member != &absorbed).then_some(absorbed.as_str());
            tx.execute(
                "UPDATE persons SET merged_into = $3, updated_at = $4 WHERE tenant_id = $1 AND person_id = $2",
                &[&tenant, member, &into, &now],
            )
            .await
            .map_err(map_error)?;
        }
        let side_list: Vec<&String> = side.iter().collect();
        let vault = self.vault();
        let remaining: Vec<&String> = members.iter().filter(|m| !side.contains(*m)).collect();
        let later = tx
            .query(
                "SELECT event_id, identifiers FROM events
                 WHERE tenant_id = $1 AND person_id = ANY($2) AND ingested_at > $3 ORDER BY seq",
                &[&tenant, &remaining, &merge_at],
            )
            .await
            .map_err(map_error)?;
        let later_ids: HashSet<String> = later.iter().map(|r| r.get::<_, String>(0)).collect();
        // Which identifiers each side holds, to re-attribute what arrived after the merge. An
        // identifier a later signal attached is on neither side until that signal is decided.
        let mut absorbed_side: HashSet<(String, String)> = tx
            .query(
                "SELECT kind, value FROM identity_nodes WHERE tenant_id = $1 AND person_id = ANY($2)",
                &[&tenant, &side_list],
            )
            .await
            .map_err(map_error)?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        let mut survivor_side: HashSet<(String, String)> = HashSet::new();
        let mut attached_by: HashMap<String, Vec<(String, String)>> = HashMap::new();
        for row in tx
            .query(
                "SELECT kind, value, signal_id FROM identity_nodes WHERE tenant_id = $1 AND person_id = ANY($2)",
                &[&tenant, &remaining],
            )
            .await
            .map_err(map_error)?
        {
            let node: (String, String) = (row.get(0), row.get(1));
            match row.get::<_, Option<String>>(2) {
                Some(signal) if later_ids.contains(&signal) => {
                    attached_by.entry(signal).or_default().push(node);
                }
                _ => {
                    survivor_side.insert(node);
                }
            }
        }
        let (mut events_moved, mut identifiers_moved) = (0u64, 0u64);
        for row in &later {
            let event_id: String = row.get(0);
            // Nodes are compared in their stored (lookup) form.
            let carried: Vec<(String, String)> = vault
                .open_identifiers(tenant, row.get(1))?
                .into_iter()
                .map(|i| {
                    let index = vault.index(tenant, i.kind().as_str(), i.value());
                    (i.kind().to_string(), index)
                })
                .collect();
            let attached = attached_by.remove(&event_id).unwrap_or_default();
            let theirs = carried.iter().any(|i| absorbed_side.contains(i));
            let ours = carried.iter().any(|i| survivor_side.contains(i));
            if !theirs || ours {
                survivor_side.extend(attached);
                continue;
            }
            tx.execute(
                "UPDATE events SET person_id = $3 WHERE tenant_id = $1 AND event_id = $2",
                &[&tenant, &event_id, &absorbed],
            )
            .await
            .map_err(map_error)?;
            tx.execute(
                "UPDATE trait_values SET person_id = $3 WHERE tenant_id = $1 AND signal_id = $2",
                &[&tenant, &event_id, &absorbed],
            )
            .await
            .map_err(map_error)?;
            for (kind, value) in attached {
                tx.execute(
                    "UPDATE identity_nodes SET person_id = $5
                     WHERE tenant_id = $1 AND kind = $2 AND value = $3 AND signal_id = $4
                       AND NOT EXISTS (SELECT 1 FROM identity_nodes o WHERE o.tenant_id = $1
                                       AND o.kind = $2 AND o.value = $3 AND o.person_id = $5)",
                    &[&tenant, &kind, &value, &event_id, &absorbed],
                )
                .await
                .map_err(map_error)?;
                absorbed_side.insert((kind, value));
                identifiers_moved += 1;
            }
            events_moved += 1;
        }
        // A consent event recorded on the group while merged was copied to every member (the
        // survivor always among them). Whose a grant was cannot be known, so the restored side
        // loses its copies of grants; it keeps revocations, honouring an opt-out for both
        // people being the safe side of the doubt.
        let side_subjects: Vec<String> = side
            .iter()
            .map(|member| ConsentSubject::key_of_person(member))
            .collect();
        let grants_withdrawn = tx
            .execute(
                "DELETE FROM consent_events
                 WHERE tenant_id = $1 AND subject = ANY($2) AND action = 'grant' AND recorded_at >= $3
                   AND event_id IN (SELECT event_id FROM consent_events
                                    WHERE tenant_id = $1 AND subject = $4)",
                &[
                    &tenant,
                    &side_subjects,
                    &merge_at,
                    &ConsentSubject::key_of_person(&survivor),
                ],
            )
            .await
            .map_err(map_error)?;
        tx.execute(
            "INSERT INTO unmerges (tenant_id, merge_id, at, actor, reason) VALUES ($1, $2, $3, $4, $5)",
            &[&tenant, &request.merge_id, &now, &request.actor, &request.reason],
        )
        .await
        .map_err(map_error)?;
        tx.execute(
            "INSERT INTO keep_apart (tenant_id, rule_id, person_a, person_b, merge_id, created_at)
             VALUES ($1, $2, $3, $4, $5, $6)",
            &[
                &tenant,
                &request.rule_id,
                &absorbed,
                &survivor,
                &request.merge_id,
                &now,
            ],
        )
        .await
        .map_err(map_error)?;
        let outcome = UnmergeOutcome {
            survivor,
            restored_members: side.iter().filter(|m| **m != absorbed).cloned().collect(),
            restored: absorbed,
            events_moved,
            identifiers_moved,
            grants_withdrawn,
            rule_id: request.rule_id.clone(),
        };
        let subscribers = crate::webhooks::subscribers(&tx, tenant).await?;
        if subscribers.any(idgraph_core::webhooks::EventType::PersonUnmerged) {
            let event = idgraph_store::unmerge_event(&request, &outcome);
            crate::webhooks::enqueue(&tx, &vault, tenant, &subscribers, &[event]).await?;
        }
        tx.commit().await.map_err(map_error)?;
        Ok(outcome)
    }

    pub(crate) async fn rules_of(
        &self,
        tenant: &str,
        person: &str,
    ) -> StoreResult<Vec<KeepApartRule>> {
        let rows = self
            .client()
            .await?
            .query(
                "SELECT rule_id, person_a, person_b, merge_id, created_at FROM keep_apart
                 WHERE tenant_id = $1 AND person_a = $2 AND removed_at IS NULL
                 UNION ALL
                 SELECT rule_id, person_a, person_b, merge_id, created_at FROM keep_apart
                 WHERE tenant_id = $1 AND person_b = $2 AND removed_at IS NULL
                 ORDER BY 5, 1",
                &[&tenant, &person],
            )
            .await
            .map_err(map_error)?;
        rows.iter()
            .map(|r| {
                let created: SystemTime = r.get(4);
                Ok(KeepApartRule {
                    rule_id: r.get(0),
                    person_a: r.get(1),
                    person_b: r.get(2),
                    merge_id: r.get(3),
                    created_at: Timestamp::try_from(created)
                        .map_err(|e| StoreError::Other(e.to_string()))?,
                })
            })
            .collect()
    }

    pub(crate) async fn lift_rule(
        &self,
        tenant: &str,
        rule_id: &str,
        at: Timestamp,
    ) -> StoreResult<()> {
        let changed = self
            .client()
            .await?
            .execute(
                "UPDATE keep_apart SET removed_at = $3 WHERE tenant_id = $1 AND rule_id = $2 AND removed_at IS NULL",
                &[&tenant, &rule_id, &to_sql_time(at)],
            )
            .await
            .map_err(map_error)?;
        if changed == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }
}
