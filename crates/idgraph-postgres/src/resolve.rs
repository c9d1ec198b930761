//! Resolution on PostgreSQL. Writers of one tenant are serialized by a transaction-scoped
//! advisory lock on the tenant, so processes sharing the database never race for an identifier
//! (and never create two persons for one `unique` identifier); readers are never blocked.
//! Finer-grained locks (per identifier) are a later optimization, see decision 0005.
//!
//! A batch costs about a dozen round trips whatever its size: under the lock, one query finds
//! the message ids already stored, one the nodes (and so the owners) of every identifier of the
//! batch, one the members, created_at and limited-kind values of those owners' groups. The
//! signals are then resolved one after another against a [`BatchGraph`] seeded with that, which
//! applies each resolution as the store will, and the batch's rows are written with one
//! statement per table (see [`crate::batch`]).
//!
//! Every statement touches a few hundred keys of tables of any size, so each key must cost one
//! index probe. The planner does not always see it that way: without fresh statistics (a new
//! database, a fast-growing tenant) it may take a tenant's rows to be few and hash-join all of
//! them on every batch, and a cached plan keeps doing so. So reads look each key up in a
//! `LATERAL` subquery that `OFFSET 0` keeps the planner from flattening into a join, and writes
//! are `INSERT`s (upserts for rows that change), which probe the primary key per row.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::SystemTime;

use deadpool_postgres::Transaction;
use idgraph_core::identity::{Identifier, IdentifierKind, IdentitySettings};
use idgraph_core::privacy::{ErasedIdentifiers, tombstone};
use idgraph_core::resolve::{PersonId, Signal, resolve};
use idgraph_core::tenancy::TenantId;
use idgraph_store::{
    BatchGraph, IdentityNodeRow, IngestOutcome, SignalRecord, StoreError, StoreResult, erased_kinds,
};
use jiff::Timestamp;
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use crate::PostgresStore;
use crate::batch::{
    BatchWrites, ConflictWrite, ContactKey, EventWrite, MergeWrite, PersonWrite, StoredNode,
    StoredPerson, TraitWrite,
};
use idgraph_store::vault::{Vault, column};

use crate::codec::{
    NODE_COLUMNS, NODE_READ_COLUMNS, at_stored_precision, corrupt, identity_node, map_error, text,
    time, to_sql_time,
};

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
        let fresh = first_occurrences(&tx, tenant, &signals).await?;
        let erased = erased_tombstones(&tx, tenant, settings, &signals).await?;
        let mut graph = BatchGraph::new(settings);
        let vault = self.vault();
        let mut writes = read_graph(&tx, &vault, tenant, &mut graph, &signals, &fresh).await?;
        let subscribers = crate::webhooks::subscribers(&tx, tenant).await?;
        let mut announced = Vec::new();
        let mut outcomes = Vec::with_capacity(signals.len());
        for (signal, fresh) in signals.into_iter().zip(fresh) {
            if !fresh {
                outcomes.push(IngestOutcome::Duplicate);
                continue;
            }
            if let Some((salt, erased)) = &erased {
                let kinds = erased_kinds(salt, &signal.identifiers, |stone| erased.contains(stone));
                if !kinds.is_empty() {
                    outcomes.push(IngestOutcome::Erased { kinds });
                    continue;
                }
            }
            let event = &signal.event;
            let resolution = resolve(
                settings,
                &graph,
                &Signal {
                    identifiers: &signal.identifiers,
                    new_person_id: event.event_id.clone(),
                    at: event.ingested_at,
                },
            );
            let now = at_stored_precision(event.ingested_at);
            let seen = at_stored_precision(event.occurred_at);
            graph.apply(&resolution, now);
            seq += 1;
            outcomes.push(IngestOutcome::Recorded {
                person_id: resolution.person.clone(),
                created: resolution.created,
                merges: resolution.merges.len(),
                conflicts: resolution.conflicts.len(),
                attached: resolution.attach.len(),
            });
            announced.extend(idgraph_store::signal_events(
                &subscribers,
                &signal,
                &resolution,
            ));
            writes.record(&graph, seq, signal, &resolution, now, seen)?;
        }
        write(&tx, &vault, tenant, &writes).await?;
        crate::webhooks::enqueue(&tx, &vault, tenant, &subscribers, &announced).await?;
        tx.commit().await.map_err(map_error)?;
        Ok(outcomes)
    }
}

/// The tenant's salt and which of the batch's identifiers are tombstones, when the tenant blocks
/// erased identifiers and ever deleted someone (otherwise there is nothing to look up).
async fn erased_tombstones(
    tx: &Transaction<'_>,
    tenant: &str,
    settings: &IdentitySettings,
    signals: &[SignalRecord],
) -> StoreResult<Option<(Vec<u8>, HashSet<String>)>> {
    if settings.erased_identifiers == ErasedIdentifiers::Allow {
        return Ok(None);
    }
    let Some(salt) = crate::deletion::salt(tx, tenant).await? else {
        return Ok(None);
    };
    let stones: Vec<String> = signals
        .iter()
        .flat_map(|s| s.identifiers.iter())
        .map(|identifier| tombstone(&salt, identifier))
        .collect();
    let erased = crate::deletion::erased(tx, tenant, &stones).await?;
    Ok(Some((salt, erased)))
}

/// Whether each signal is the first of its message id: not stored in its workspace, and not
/// repeating an earlier signal of the batch (which the store would have recorded by then).
async fn first_occurrences(
    tx: &Transaction<'_>,
    tenant: &str,
    signals: &[SignalRecord],
) -> StoreResult<Vec<bool>> {
    let mut pairs: Vec<(&str, &str)> = signals
        .iter()
        .map(|s| (s.event.workspace.as_str(), s.event.message_id.as_str()))
        .collect();
    pairs.sort_unstable();
    pairs.dedup();
    let (workspaces, message_ids): (Vec<&str>, Vec<&str>) = pairs.into_iter().unzip();
    let rows = query(
        tx,
        "SELECT m.workspace, m.message_id
         FROM unnest($2::text[], $3::text[]) AS m(workspace, message_id)
         CROSS JOIN LATERAL (
             SELECT 1 FROM events
             WHERE tenant_id = $1 AND workspace = m.workspace AND message_id = m.message_id
             OFFSET 0
         ) stored",
        &[&tenant, &workspaces, &message_ids],
    )
    .await?;
    let mut seen: HashSet<(String, String)> = rows
        .iter()
        .map(|row| Ok((text(row, 0)?, text(row, 1)?)))
        .collect::<StoreResult<_>>()?;
    Ok(signals
        .iter()
        .map(|s| {
            seen.insert((
                s.event.workspace.as_str().to_owned(),
                s.event.message_id.clone(),
            ))
        })
        .collect())
}

/// Seeds `graph` with what the batch's signals can ask of the graph, and returns what the
/// writes start from: the stored nodes of the batch's identifiers and their owners' groups.
async fn read_graph(
    tx: &Transaction<'_>,
    vault: &Vault,
    tenant: &str,
    graph: &mut BatchGraph,
    signals: &[SignalRecord],
    fresh: &[bool],
) -> StoreResult<BatchWrites> {
    let identifiers: BTreeSet<&Identifier> = signals
        .iter()
        .zip(fresh)
        .filter(|(_, fresh)| **fresh)
        .flat_map(|(signal, _)| &signal.identifiers)
        .collect();
    let kinds: Vec<&str> = identifiers.iter().map(|i| i.kind().as_str()).collect();
    let values: Vec<String> = identifiers
        .iter()
        .map(|i| vault.index(tenant, i.kind().as_str(), i.value()))
        .collect();
    let rows = query(
        tx,
        &format!(
            "SELECT n.*, p.canonical
             FROM unnest($2::text[], $3::text[]) AS i(kind, value)
             CROSS JOIN LATERAL (
                 SELECT {NODE_READ_COLUMNS} FROM identity_nodes
                 WHERE tenant_id = $1 AND kind = i.kind AND value = i.value
                 OFFSET 0
             ) n
             CROSS JOIN LATERAL (
                 SELECT COALESCE(merged_into, person_id) AS canonical FROM persons
                 WHERE tenant_id = $1 AND person_id = n.person_id
                 OFFSET 0
             ) p"
        ),
        &[&tenant, &kinds, &values],
    )
    .await?;
    let mut nodes = Vec::with_capacity(rows.len());
    let mut owners: BTreeSet<PersonId> = BTreeSet::new();
    for row in &rows {
        let mut node = identity_node(row)?;
        node.value = vault.open(tenant, column::IDENTIFIER, node.value)?;
        let canonical: PersonId = text(row, 8)?;
        graph.add_owner(
            Identifier::from_stored(node.kind.clone(), node.value.clone()),
            canonical.clone(),
        );
        owners.insert(canonical.clone());
        nodes.push(StoredNode {
            row: node,
            canonical,
        });
    }
    if owners.is_empty() {
        return Ok(BatchWrites::new(nodes, Vec::new()));
    }

    let owners: Vec<PersonId> = owners.into_iter().collect();
    // Keep-apart rules naming any owner: the resolver may be asked about any pair of them.
    let rules = query(
        tx,
        "SELECT k.person_a, k.person_b FROM unnest($2::text[]) AS o(person_id)
         CROSS JOIN LATERAL (
             SELECT person_a, person_b FROM keep_apart
             WHERE tenant_id = $1 AND person_a = o.person_id AND removed_at IS NULL
             UNION ALL
             SELECT person_a, person_b FROM keep_apart
             WHERE tenant_id = $1 AND person_b = o.person_id AND removed_at IS NULL
         ) k",
        &[&tenant, &owners],
    )
    .await?;
    for row in &rules {
        graph.add_kept_apart(text(row, 0)?, text(row, 1)?);
    }
    let limited: Vec<&str> = graph.limited_kinds().map(IdentifierKind::as_str).collect();
    // One row per member of each owner's group and limited-kind node it holds (or none). The
    // kinds are filtered in the join, not in the fenced subquery: there, `kind = ANY(..)` let
    // the planner scan the primary key (tenant, kind, value, person) for the kinds and filter
    // on the person, a plan it switched to now and then during long ingests (after autovacuum
    // analyzed `persons`) and kept for seconds, at ~0.7 s a batch under the tenant's lock.
    // Without it only `identity_nodes_by_person` fits.
    let rows = query(
        tx,
        "SELECT o.person_id, g.member, g.created_at, n.kind, n.value
         FROM unnest($2::text[]) AS o(person_id)
         CROSS JOIN LATERAL (
             SELECT person_id AS member, created_at FROM persons
             WHERE tenant_id = $1 AND person_id = o.person_id
             UNION ALL
             SELECT person_id, created_at FROM persons
             WHERE tenant_id = $1 AND merged_into = o.person_id
         ) g
         LEFT JOIN LATERAL (
             SELECT kind, COALESCE(value_sealed, value) AS value FROM identity_nodes
             WHERE tenant_id = $1 AND person_id = g.member
             OFFSET 0
         ) n ON n.kind = ANY($3::text[])",
        &[&tenant, &owners, &limited],
    )
    .await?;
    let mut groups: HashMap<PersonId, Group> = HashMap::with_capacity(owners.len());
    for row in &rows {
        let owner: PersonId = text(row, 0)?;
        let member: PersonId = text(row, 1)?;
        let group = groups.entry(owner.clone()).or_default();
        if member == owner {
            group.created_at = Some(time(row, 2)?);
        } else {
            group.members.insert(member, time(row, 2)?);
        }
        let kind_text: Option<&str> = row.try_get(3).map_err(map_error)?;
        if kind_text.is_some() {
            let value = vault.open(tenant, column::IDENTIFIER, text(row, 4)?)?;
            group.values.push((kind(row, 3)?, value));
        }
    }
    let mut persons = Vec::with_capacity(owners.len());
    for owner in owners {
        let group = groups.remove(&owner).unwrap_or_default();
        // A node's person merged into a person that does not exist: the store is corrupt, and
        // resolving around it would only spread the damage.
        let created_at = group.created_at.ok_or_else(|| {
            StoreError::Other(format!("person {owner} owns identity nodes but has no row"))
        })?;
        graph.add_person(owner.clone(), created_at, group.values);
        persons.push(StoredPerson {
            person_id: owner,
            created_at,
            members: group.members.into_iter().collect(),
        });
    }
    Ok(BatchWrites::new(nodes, persons))
}

/// A stored group as the graph query returns it, one row per member and node.
#[derive(Debug, Default)]
struct Group {
    created_at: Option<Timestamp>,
    /// Persons merged into it (the query lists each once per node it holds).
    members: BTreeMap<PersonId, Timestamp>,
    values: Vec<(IdentifierKind, String)>,
}

/// Writes what the batch did, one statement per table and kind of change.
async fn write(
    tx: &Transaction<'_>,
    vault: &Vault,
    tenant: &str,
    writes: &BatchWrites,
) -> StoreResult<()> {
    // Events first: a signal id used twice fails here, as a conflict, before anything keyed by
    // it (the person it would create) is written.
    write_events(tx, vault, tenant, &writes.events).await?;
    write_persons(tx, tenant, &writes.persons()).await?;
    write_merges(tx, vault, tenant, &writes.merges).await?;
    write_conflicts(tx, vault, tenant, &writes.conflicts).await?;
    // A node exists by the time it is touched, so an upsert of a touched node only moves its
    // last_seen; a new one keeps the per-signal `DO NOTHING`.
    write_nodes(tx, vault, tenant, writes.node_inserts(), "DO NOTHING").await?;
    write_nodes(
        tx,
        vault,
        tenant,
        writes.node_touches(),
        "(tenant_id, kind, value, person_id) DO UPDATE SET last_seen = EXCLUDED.last_seen",
    )
    .await?;
    write_traits(tx, vault, tenant, &writes.traits).await?;
    write_contacts(tx, tenant, writes).await
}

async fn write_events(
    tx: &Transaction<'_>,
    vault: &Vault,
    tenant: &str,
    events: &[EventWrite],
) -> StoreResult<()> {
    if events.is_empty() {
        return Ok(());
    }
    let ids: Vec<&str> = events.iter().map(|e| e.event.event_id.as_str()).collect();
    let workspaces: Vec<&str> = events.iter().map(|e| e.event.workspace.as_str()).collect();
    let persons: Vec<&str> = events.iter().map(|e| e.person_id.as_str()).collect();
    let kinds: Vec<&str> = events.iter().map(|e| e.event.kind.as_str()).collect();
    let names: Vec<Option<&str>> = events.iter().map(|e| e.event.name.as_deref()).collect();
    let occurred: Vec<SystemTime> = events
        .iter()
        .map(|e| to_sql_time(e.event.occurred_at))
        .collect();
    let ingested: Vec<SystemTime> = events
        .iter()
        .map(|e| to_sql_time(e.event.ingested_at))
        .collect();
    let versions: Vec<i32> = events
        .iter()
        .map(|e| i32::try_from(e.event.schema_version).unwrap_or(i32::MAX))
        .collect();
    let message_ids: Vec<&str> = events.iter().map(|e| e.event.message_id.as_str()).collect();
    let properties: Vec<String> = events
        .iter()
        .map(|e| vault.seal_json(tenant, column::EVENT_PROPERTIES, &e.event.properties))
        .collect::<StoreResult<_>>()?;
    let contexts: Vec<String> = events
        .iter()
        .map(|e| vault.seal_json(tenant, column::EVENT_CONTEXT, &e.event.context))
        .collect::<StoreResult<_>>()?;
    let seqs: Vec<i64> = events.iter().map(|e| e.seq).collect();
    let identifiers: Vec<String> = events
        .iter()
        .map(|e| vault.seal(tenant, column::EVENT_IDENTIFIERS, &e.identifiers))
        .collect::<StoreResult<_>>()?;
    let sources: Vec<&str> = events.iter().map(|e| e.source.as_str()).collect();
    execute(
        tx,
        "INSERT INTO events (tenant_id, event_id, workspace, person_id, kind, name, occurred_at,
                             ingested_at, schema_version, message_id, properties, context, seq,
                             identifiers, source)
         SELECT $1, * FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                                  $7::timestamptz[], $8::timestamptz[], $9::int4[], $10::text[],
                                  $11::text[], $12::text[], $13::int8[], $14::text[], $15::text[])",
        &[
            &tenant,
            &ids,
            &workspaces,
            &persons,
            &kinds,
            &names,
            &occurred,
            &ingested,
            &versions,
            &message_ids,
            &properties,
            &contexts,
            &seqs,
            &identifiers,
            &sources,
        ],
    )
    .await
}

/// Persons created or changed: upserts of their final values.
async fn write_persons(
    tx: &Transaction<'_>,
    tenant: &str,
    persons: &[PersonWrite],
) -> StoreResult<()> {
    if persons.is_empty() {
        return Ok(());
    }
    let ids: Vec<&str> = persons.iter().map(|p| p.person_id.as_str()).collect();
    let survivors: Vec<Option<&str>> = persons.iter().map(|p| p.merged_into.as_deref()).collect();
    let created_at: Vec<SystemTime> = persons.iter().map(|p| to_sql_time(p.created_at)).collect();
    let updated: Vec<SystemTime> = persons.iter().map(|p| to_sql_time(p.updated_at)).collect();
    execute(
        tx,
        "INSERT INTO persons (tenant_id, person_id, merged_into, created_at, updated_at)
         SELECT $1, * FROM unnest($2::text[], $3::text[], $4::timestamptz[], $5::timestamptz[])
         ON CONFLICT (tenant_id, person_id) DO UPDATE SET
            merged_into = EXCLUDED.merged_into, updated_at = EXCLUDED.updated_at",
        &[&tenant, &ids, &survivors, &created_at, &updated],
    )
    .await
}

async fn write_merges(
    tx: &Transaction<'_>,
    vault: &Vault,
    tenant: &str,
    merges: &[MergeWrite],
) -> StoreResult<()> {
    if merges.is_empty() {
        return Ok(());
    }
    let ids: Vec<&str> = merges.iter().map(|m| m.merge_id.as_str()).collect();
    let survivors: Vec<&str> = merges.iter().map(|m| m.survivor.as_str()).collect();
    let absorbed: Vec<&str> = merges.iter().map(|m| m.absorbed.as_str()).collect();
    let identifiers: Vec<String> = merges
        .iter()
        .map(|m| vault.seal(tenant, column::MERGE_IDENTIFIERS, &m.identifiers))
        .collect::<StoreResult<_>>()?;
    let signal_ids: Vec<&str> = merges.iter().map(|m| m.signal_id.as_str()).collect();
    let rules: Vec<&str> = merges.iter().map(|m| m.rule.as_str()).collect();
    let at: Vec<SystemTime> = merges.iter().map(|m| to_sql_time(m.at)).collect();
    execute(
        tx,
        "INSERT INTO merges (tenant_id, merge_id, survivor, absorbed, identifiers, signal_id, rule, at)
         SELECT $1, * FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                                  $7::text[], $8::timestamptz[])",
        &[
            &tenant,
            &ids,
            &survivors,
            &absorbed,
            &identifiers,
            &signal_ids,
            &rules,
            &at,
        ],
    )
    .await
}

async fn write_conflicts(
    tx: &Transaction<'_>,
    vault: &Vault,
    tenant: &str,
    conflicts: &[ConflictWrite],
) -> StoreResult<()> {
    if conflicts.is_empty() {
        return Ok(());
    }
    let ids: Vec<&str> = conflicts.iter().map(|c| c.conflict_id.as_str()).collect();
    let persons: Vec<&str> = conflicts.iter().map(|c| c.person_id.as_str()).collect();
    let others: Vec<Option<&str>> = conflicts
        .iter()
        .map(|c| c.other_person_id.as_deref())
        .collect();
    let kinds: Vec<&str> = conflicts
        .iter()
        .map(|c| c.identifier.kind().as_str())
        .collect();
    let values: Vec<String> = conflicts
        .iter()
        .map(|c| vault.seal(tenant, column::CONFLICT_VALUE, c.identifier.value()))
        .collect::<StoreResult<_>>()?;
    let rules: Vec<&str> = conflicts.iter().map(|c| c.rule.as_str()).collect();
    let signal_ids: Vec<&str> = conflicts.iter().map(|c| c.signal_id.as_str()).collect();
    let at: Vec<SystemTime> = conflicts.iter().map(|c| to_sql_time(c.at)).collect();
    execute(
        tx,
        "INSERT INTO conflicts (tenant_id, conflict_id, person_id, other_person_id, kind, value, rule, signal_id, at)
         SELECT $1, * FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                                  $7::text[], $8::text[], $9::timestamptz[])",
        &[
            &tenant,
            &ids,
            &persons,
            &others,
            &kinds,
            &values,
            &rules,
            &signal_ids,
            &at,
        ],
    )
    .await
}

async fn write_traits(
    tx: &Transaction<'_>,
    vault: &Vault,
    tenant: &str,
    traits: &[TraitWrite],
) -> StoreResult<()> {
    if traits.is_empty() {
        return Ok(());
    }
    let persons: Vec<&str> = traits.iter().map(|t| t.person_id.as_str()).collect();
    let workspaces: Vec<&str> = traits.iter().map(|t| t.workspace.as_str()).collect();
    let names: Vec<&str> = traits.iter().map(|t| t.observed.name.as_str()).collect();
    let values: Vec<String> = traits
        .iter()
        .map(|t| vault.seal(tenant, column::TRAIT, &t.observed.value))
        .collect::<StoreResult<_>>()?;
    let classes: Vec<&str> = traits
        .iter()
        .map(|t| t.observed.provenance.class.as_str())
        .collect();
    let confidences: Vec<f64> = traits
        .iter()
        .map(|t| t.observed.provenance.confidence)
        .collect();
    let observed_at: Vec<SystemTime> = traits
        .iter()
        .map(|t| to_sql_time(t.observed.provenance.observed_at))
        .collect();
    let set_once: Vec<bool> = traits.iter().map(|t| t.observed.set_once).collect();
    let signal_ids: Vec<&str> = traits.iter().map(|t| t.signal_id.as_str()).collect();
    // A signal observing one trait twice keeps the first observation, as one INSERT per
    // observation did.
    execute(
        tx,
        "INSERT INTO trait_values
             (tenant_id, person_id, workspace, name, value, source_class, confidence,
              observed_at, set_once, signal_id)
         SELECT $1, * FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                                  $7::float8[], $8::timestamptz[], $9::bool[], $10::text[])
         ON CONFLICT DO NOTHING",
        &[
            &tenant,
            &persons,
            &workspaces,
            &names,
            &values,
            &classes,
            &confidences,
            &observed_at,
            &set_once,
            &signal_ids,
        ],
    )
    .await
}

/// Workspace contacts: the stored rows of the batch's (person, workspace) pairs are read, the
/// batch's signals applied to them in order, and the rows that changed written.
async fn write_contacts(
    tx: &Transaction<'_>,
    tenant: &str,
    writes: &BatchWrites,
) -> StoreResult<()> {
    let keys = writes.contact_keys();
    if keys.is_empty() {
        return Ok(());
    }
    let persons: Vec<&str> = keys.iter().map(|(person, _)| person.as_str()).collect();
    let workspaces: Vec<&str> = keys
        .iter()
        .map(|(_, workspace)| workspace.as_str())
        .collect();
    let rows = query(
        tx,
        "SELECT k.person_id, k.workspace, c.first_seen, c.last_seen
         FROM unnest($2::text[], $3::text[]) AS k(person_id, workspace)
         CROSS JOIN LATERAL (
             SELECT first_seen, last_seen FROM workspace_contacts
             WHERE tenant_id = $1 AND person_id = k.person_id AND workspace = k.workspace
             OFFSET 0
         ) c",
        &[&tenant, &persons, &workspaces],
    )
    .await?;
    let mut stored: HashMap<ContactKey, (Timestamp, Timestamp)> = HashMap::new();
    for row in &rows {
        stored.insert(
            (text(row, 0)?, text(row, 1)?),
            (time(row, 2)?, time(row, 3)?),
        );
    }
    let contacts = writes.contact_writes(&stored);
    if contacts.is_empty() {
        return Ok(());
    }
    let persons: Vec<&str> = contacts.iter().map(|c| c.person_id.as_str()).collect();
    let workspaces: Vec<&str> = contacts.iter().map(|c| c.workspace.as_str()).collect();
    let first_seen: Vec<SystemTime> = contacts.iter().map(|c| to_sql_time(c.first_seen)).collect();
    let last_seen: Vec<SystemTime> = contacts.iter().map(|c| to_sql_time(c.last_seen)).collect();
    execute(
        tx,
        "INSERT INTO workspace_contacts (tenant_id, person_id, workspace, first_seen, last_seen)
         SELECT $1, * FROM unnest($2::text[], $3::text[], $4::timestamptz[], $5::timestamptz[])
         ON CONFLICT (tenant_id, person_id, workspace) DO UPDATE SET
            first_seen = EXCLUDED.first_seen, last_seen = EXCLUDED.last_seen",
        &[&tenant, &persons, &workspaces, &first_seen, &last_seen],
    )
    .await
}

/// Inserts identity nodes, `conflict` saying what happens to a node that exists.
async fn write_nodes(
    tx: &Transaction<'_>,
    vault: &Vault,
    tenant: &str,
    rows: impl Iterator<Item = &IdentityNodeRow>,
    conflict: &str,
) -> StoreResult<()> {
    let rows: Vec<&IdentityNodeRow> = rows.collect();
    if rows.is_empty() {
        return Ok(());
    }
    let kinds: Vec<&str> = rows.iter().map(|r| r.kind.as_str()).collect();
    let (values, sealed): (Vec<String>, Vec<Option<String>>) = rows
        .iter()
        .map(|r| vault.identifier(tenant, r.kind.as_str(), &r.value))
        .collect::<StoreResult<Vec<_>>>()?
        .into_iter()
        .unzip();
    let persons: Vec<&str> = rows.iter().map(|r| r.person_id.as_str()).collect();
    let sources: Vec<&str> = rows.iter().map(|r| r.source.as_str()).collect();
    let confidences: Vec<f64> = rows.iter().map(|r| r.confidence).collect();
    let first_seen: Vec<SystemTime> = rows.iter().map(|r| to_sql_time(r.first_seen)).collect();
    let last_seen: Vec<SystemTime> = rows.iter().map(|r| to_sql_time(r.last_seen)).collect();
    let signals: Vec<Option<&str>> = rows.iter().map(|r| r.signal_id.as_deref()).collect();
    execute(
        tx,
        &format!(
            "INSERT INTO identity_nodes (tenant_id, {NODE_COLUMNS}, value_sealed)
             SELECT $1, * FROM unnest($2::text[], $3::text[], $4::text[], $5::text[],
                 $6::float8[], $7::timestamptz[], $8::timestamptz[], $9::text[], $10::text[])
             ON CONFLICT {conflict}"
        ),
        &[
            &tenant,
            &kinds,
            &values,
            &persons,
            &sources,
            &confidences,
            &first_seen,
            &last_seen,
            &signals,
            &sealed,
        ],
    )
    .await
}

/// Runs `sql` as a statement prepared once per connection.
pub(crate) async fn query(
    tx: &Transaction<'_>,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> StoreResult<Vec<Row>> {
    let stmt = tx.prepare_cached(sql).await.map_err(map_error)?;
    tx.query(&stmt, params).await.map_err(map_error)
}

async fn execute(
    tx: &Transaction<'_>,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> StoreResult<()> {
    let stmt = tx.prepare_cached(sql).await.map_err(map_error)?;
    tx.execute(&stmt, params).await.map_err(map_error)?;
    Ok(())
}

fn kind(row: &Row, index: usize) -> StoreResult<IdentifierKind> {
    IdentifierKind::parse(&text(row, index)?).map_err(corrupt)
}
