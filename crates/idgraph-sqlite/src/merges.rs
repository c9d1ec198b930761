//! Merges an operator asks for, on the writer thread like every resolution write, so they are
//! ordered with signals and checked against the same limits.

use idgraph_core::identity::IdentitySettings;
use idgraph_core::resolve::merge_breaks_limit;
use std::collections::{BTreeSet, HashMap, HashSet};

use idgraph_store::{
    ConsentSubject, KeepApartRule, ManualMerge, MergeRow, StoreError, StoreResult, Unmerge,
    UnmergeOutcome, limit_refusal,
};
use rusqlite::{OptionalExtension, Transaction, params};

use idgraph_store::vault::Vault;

use crate::codec::{map_error, micros};
use crate::nodes::{NODE_FROM, NODE_SIGNAL};
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
    vault: &Vault,
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
    let graph = TxGraph::new(tx, vault, tenant, settings);
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

/// An identifier (kind, value) a person holds, and the signal that attached it.
type HeldNode = ((String, String), Option<String>);

pub(crate) fn unmerge(
    tx: &Transaction<'_>,
    vault: &Vault,
    tenant: &str,
    request: &Unmerge,
) -> StoreResult<UnmergeOutcome> {
    let (absorbed, merge_at): (String, i64) = tx
        .prepare_cached("SELECT absorbed, at FROM merges WHERE tenant_id = ?1 AND merge_id = ?2")
        .and_then(|mut s| {
            s.query_row(params![tenant, request.merge_id], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
        })
        .map_err(map_error)?;
    let undone: Option<i64> = tx
        .prepare_cached("SELECT 1 FROM unmerges WHERE tenant_id = ?1 AND merge_id = ?2")
        .and_then(|mut s| {
            s.query_row(params![tenant, request.merge_id], |r| r.get(0))
                .optional()
        })
        .map_err(map_error)?;
    if undone.is_some() {
        return Err(StoreError::Conflict(format!(
            "merge {} was already undone",
            request.merge_id
        )));
    }
    let survivor = match canonical(tx, tenant, &absorbed)? {
        canonical if canonical == absorbed => {
            return Err(StoreError::Conflict(format!(
                "{absorbed} is not merged into anyone any more"
            )));
        }
        canonical => canonical,
    };
    let members: Vec<String> = tx
        .prepare_cached(GROUP)
        .and_then(|mut s| {
            s.query_map(params![tenant, survivor], |r| r.get(0))?
                .collect()
        })
        .map_err(map_error)?;
    // The absorbed person's side as it was at the merge: itself and whoever had been merged
    // into it (directly or not) before, by merges still in force.
    let mut merges: Vec<(String, String, String, i64)> = Vec::new();
    {
        let mut statement = tx
            .prepare_cached(
                "SELECT merge_id, survivor, absorbed, at FROM merges
                 WHERE tenant_id = ?1 AND absorbed = ?2
                   AND merge_id NOT IN (SELECT merge_id FROM unmerges WHERE tenant_id = ?1)",
            )
            .map_err(map_error)?;
        for member in &members {
            let rows = statement
                .query_map(params![tenant, member], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
                })
                .map_err(map_error)?;
            for row in rows {
                merges.push(row.map_err(map_error)?);
            }
        }
    }
    let mut side: BTreeSet<String> = BTreeSet::from([absorbed.clone()]);
    loop {
        let before = side.len();
        for (id, into, from, at) in &merges {
            if *id != request.merge_id && side.contains(into) && *at <= merge_at {
                side.insert(from.clone());
            }
        }
        if side.len() == before {
            break;
        }
    }
    let now = micros(request.at);
    for member in &side {
        let into = (member != &absorbed).then_some(absorbed.as_str());
        tx.prepare_cached(
            "UPDATE persons SET merged_into = ?3, updated_at = ?4 WHERE tenant_id = ?1 AND person_id = ?2",
        )
        .and_then(|mut s| s.execute(params![tenant, member, into, now]))
        .map_err(map_error)?;
    }
    let remaining: Vec<&String> = members.iter().filter(|m| !side.contains(*m)).collect();

    // Which identifiers each side holds, to re-attribute what arrived after the merge. An
    // identifier a later signal attached is on neither side until that signal is decided.
    let nodes_of = |people: &mut dyn Iterator<Item = &String>| -> StoreResult<Vec<HeldNode>> {
        let mut statement = tx
            .prepare_cached(
                &format!("SELECT n.kind, n.value, v.signal_id FROM {NODE_FROM} WHERE n.tenant_id = ?1 AND n.person_id = ?2"),
            )
            .map_err(map_error)?;
        let mut held = Vec::new();
        for person in people {
            let rows = statement
                .query_map(params![tenant, person], |r| {
                    Ok(((r.get(0)?, r.get(1)?), r.get(2)?))
                })
                .map_err(map_error)?;
            for row in rows {
                held.push(row.map_err(map_error)?);
            }
        }
        Ok(held)
    };
    // (seq, event, identifiers, person, workspace): a signal's trait set is found by the last two.
    let mut later: Vec<(i64, String, String, String, String)> = Vec::new();
    {
        let mut statement = tx
            .prepare_cached(
                "SELECT seq, event_id, identifiers, person_id, workspace FROM events
                 WHERE tenant_id = ?1 AND person_id = ?2 AND ingested_at > ?3",
            )
            .map_err(map_error)?;
        for person in &remaining {
            let rows = statement
                .query_map(params![tenant, person, merge_at], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
                })
                .map_err(map_error)?;
            for row in rows {
                later.push(row.map_err(map_error)?);
            }
        }
    }
    later.sort();
    let later_ids: HashSet<&str> = later.iter().map(|(_, id, ..)| id.as_str()).collect();
    let mut absorbed_side: HashSet<(String, String)> = nodes_of(&mut side.iter())?
        .into_iter()
        .map(|(node, _)| node)
        .collect();
    let mut survivor_side: HashSet<(String, String)> = HashSet::new();
    let mut attached_by: HashMap<String, Vec<(String, String)>> = HashMap::new();
    for (node, signal) in nodes_of(&mut remaining.iter().copied())? {
        match signal {
            Some(signal) if later_ids.contains(signal.as_str()) => {
                attached_by.entry(signal).or_default().push(node);
            }
            _ => {
                survivor_side.insert(node);
            }
        }
    }
    let (mut events_moved, mut identifiers_moved) = (0u64, 0u64);
    for (_, event_id, encoded, person, workspace) in &later {
        // Nodes are compared in their stored (lookup) form.
        let carried: Vec<(String, String)> = vault
            .open_identifiers(tenant, encoded.clone())?
            .into_iter()
            .map(|i| {
                let index = vault.index(tenant, i.kind().as_str(), i.value());
                (i.kind().to_string(), index)
            })
            .collect();
        let attached = attached_by.remove(event_id).unwrap_or_default();
        let theirs = carried.iter().any(|i| absorbed_side.contains(i));
        let ours = carried.iter().any(|i| survivor_side.contains(i));
        if !theirs || ours {
            // Arrived with the survivor's identifiers (or with both): it stays, with what it
            // attached.
            survivor_side.extend(attached);
            continue;
        }
        tx.prepare_cached(
            "UPDATE events SET person_id = ?3 WHERE tenant_id = ?1 AND event_id = ?2",
        )
        .and_then(|mut s| s.execute(params![tenant, event_id, absorbed]))
        .map_err(map_error)?;
        tx.prepare_cached(
            "UPDATE trait_sets SET person_id = ?5
             WHERE tenant_id = ?1 AND person_id = ?2 AND workspace = ?3 AND signal_id = ?4",
        )
        .and_then(|mut s| s.execute(params![tenant, person, workspace, event_id, absorbed]))
        .map_err(map_error)?;
        for (kind, value) in attached {
            tx.prepare_cached(&format!(
                "UPDATE OR IGNORE identity_nodes SET person_id = ?5
                 WHERE tenant_id = ?1 AND kind = ?2 AND value = ?3 AND {NODE_SIGNAL} = ?4"
            ))
            .and_then(|mut s| s.execute(params![tenant, kind, value, event_id, absorbed]))
            .map_err(map_error)?;
            absorbed_side.insert((kind, value));
            identifiers_moved += 1;
        }
        events_moved += 1;
    }
    // A consent event recorded on the group while merged was copied to every member (the
    // survivor always among them). Whose a grant was cannot be known, so the restored side
    // loses its copies of grants; it keeps revocations, honouring an opt-out for both people
    // being the safe side of the doubt.
    let mut grants_withdrawn = 0u64;
    {
        let mut withdraw = tx
            .prepare_cached(
                "DELETE FROM consent_events
                 WHERE tenant_id = ?1 AND subject = ?2 AND action = 'grant' AND recorded_at >= ?3
                   AND event_id IN (SELECT event_id FROM consent_events
                                    WHERE tenant_id = ?1 AND subject = ?4)",
            )
            .map_err(map_error)?;
        let survivor_subject = ConsentSubject::key_of_person(&survivor);
        for member in &side {
            let subject = ConsentSubject::key_of_person(member);
            grants_withdrawn += withdraw
                .execute(params![tenant, subject, merge_at, survivor_subject])
                .map_err(map_error)? as u64;
        }
    }
    tx.prepare_cached(
        "INSERT INTO unmerges (tenant_id, merge_id, at, actor, reason) VALUES (?1, ?2, ?3, ?4, ?5)",
    )
    .and_then(|mut s| {
        s.execute(params![
            tenant,
            request.merge_id,
            now,
            request.actor,
            request.reason
        ])
    })
    .map_err(map_error)?;
    tx.prepare_cached(
        "INSERT INTO keep_apart (tenant_id, rule_id, person_a, person_b, merge_id, created_at, removed_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, NULL)",
    )
    .and_then(|mut s| s.execute(params![tenant, request.rule_id, absorbed, survivor, request.merge_id, now]))
    .map_err(map_error)?;
    Ok(UnmergeOutcome {
        survivor,
        restored: absorbed.clone(),
        restored_members: side.into_iter().filter(|m| *m != absorbed).collect(),
        events_moved,
        identifiers_moved,
        grants_withdrawn,
        rule_id: request.rule_id.clone(),
    })
}

pub(crate) fn rules_of(
    conn: &rusqlite::Connection,
    tenant: &str,
    person: &str,
) -> StoreResult<Vec<KeepApartRule>> {
    conn.prepare_cached(
        "SELECT rule_id, person_a, person_b, merge_id, created_at FROM keep_apart
         WHERE tenant_id = ?1 AND person_a = ?2 AND removed_at IS NULL
         UNION ALL
         SELECT rule_id, person_a, person_b, merge_id, created_at FROM keep_apart
         WHERE tenant_id = ?1 AND person_b = ?2 AND removed_at IS NULL
         ORDER BY 5, 1",
    )
    .and_then(|mut s| {
        s.query_map(params![tenant, person], |r| {
            let created: i64 = r.get(4)?;
            Ok(KeepApartRule {
                rule_id: r.get(0)?,
                person_a: r.get(1)?,
                person_b: r.get(2)?,
                merge_id: r.get(3)?,
                created_at: jiff::Timestamp::from_microsecond(created)
                    .unwrap_or(jiff::Timestamp::UNIX_EPOCH),
            })
        })?
        .collect()
    })
    .map_err(map_error)
}

pub(crate) fn remove_rule(
    tx: &Transaction<'_>,
    tenant: &str,
    rule_id: &str,
    at: jiff::Timestamp,
) -> StoreResult<()> {
    let changed = tx
        .prepare_cached(
            "UPDATE keep_apart SET removed_at = ?3 WHERE tenant_id = ?1 AND rule_id = ?2 AND removed_at IS NULL",
        )
        .and_then(|mut s| s.execute(params![tenant, rule_id, micros(at)]))
        .map_err(map_error)?;
    if changed == 0 {
        return Err(StoreError::NotFound);
    }
    Ok(())
}

/// Whether a keep-apart rule in force names these two persons.
pub(crate) fn kept_apart(
    tx: &rusqlite::Connection,
    tenant: &str,
    a: &str,
    b: &str,
) -> StoreResult<bool> {
    tx.prepare_cached(
        "SELECT 1 FROM keep_apart WHERE tenant_id = ?1 AND person_a = ?2 AND person_b = ?3 AND removed_at IS NULL
         UNION ALL
         SELECT 1 FROM keep_apart WHERE tenant_id = ?1 AND person_a = ?3 AND person_b = ?2 AND removed_at IS NULL
         LIMIT 1",
    )
    .and_then(|mut s| s.query_row(params![tenant, a, b], |_| Ok(())).optional())
    .map(|found| found.is_some())
    .map_err(map_error)
}
