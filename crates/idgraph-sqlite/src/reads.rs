//! Read models of persons on the embedded store: profile, timeline, merges.

use idgraph_core::identity::{Identifier, IdentifierKind};
use idgraph_core::tenancy::WorkspaceName;
use idgraph_store::{
    ConflictRow, EventRow, LoggedSignal, MergeRow, Page, PageRequest, PersonProfile, PersonRow,
    StoreError, StoreResult, TenantStats, TimelineEvent, TraitValueRow, WorkspaceContactRow,
    count_cursor, newest_first_page, parse_count_cursor, parse_timeline_cursor,
};
use jiff::Timestamp;
use rusqlite::{Connection, Row, params};

use idgraph_store::trait_set::{self, SetForm};
use idgraph_store::vault::{Vault, column};

use crate::codec::{self, in_row, map_error};
use crate::nodes::{NODE_COLUMNS, NODE_FROM};
use crate::resolve::GROUP;

fn time(row: &Row<'_>, index: usize) -> rusqlite::Result<Timestamp> {
    Timestamp::from_microsecond(row.get(index)?).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(
            index,
            rusqlite::types::Type::Integer,
            e.to_string().into(),
        )
    })
}

fn workspace(row: &Row<'_>, index: usize) -> rusqlite::Result<WorkspaceName> {
    let raw: String = row.get(index)?;
    WorkspaceName::parse(&raw).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(
            index,
            rusqlite::types::Type::Text,
            e.to_string().into(),
        )
    })
}

pub(crate) fn person(conn: &Connection, tenant: &str, person_id: &str) -> StoreResult<PersonRow> {
    conn.prepare_cached(
        "SELECT person_id, merged_into, created_at, updated_at FROM persons WHERE tenant_id = ?1 AND person_id = ?2",
    )
    .and_then(|mut s| {
        s.query_row(params![tenant, person_id], |r| {
            Ok(PersonRow { person_id: r.get(0)?, merged_into: r.get(1)?, created_at: time(r, 2)?, updated_at: time(r, 3)? })
        })
    })
    .map_err(map_error)
}

pub(crate) fn lookup(
    conn: &Connection,
    tenant: &str,
    identifier: &Identifier,
    index: &str,
) -> StoreResult<Option<String>> {
    let owners: Vec<String> = conn
        .prepare_cached(
            "SELECT DISTINCT COALESCE(p.merged_into, p.person_id) FROM identity_nodes n
             JOIN persons p ON p.tenant_id = n.tenant_id AND p.person_id = n.person_id
             WHERE n.tenant_id = ?1 AND n.kind = ?2 AND n.value = ?3 ORDER BY 1",
        )
        .and_then(|mut s| {
            s.query_map(params![tenant, identifier.kind().as_str(), index], |r| {
                r.get(0)
            })?
            .collect()
        })
        .map_err(map_error)?;
    // A shared identifier may link several persons; the lookup answers with the oldest id.
    Ok(owners.into_iter().next())
}

/// A person's profile, its traits still in their stored sets (see [`open_trait_sets`]).
pub(crate) fn profile(
    conn: &Connection,
    tenant: &str,
    person_id: &str,
) -> StoreResult<(PersonProfile, Vec<StoredTraitSet>)> {
    let person = person(conn, tenant, person_id)?;
    let merged_from: Vec<String> = conn
        .prepare_cached("SELECT person_id FROM persons WHERE tenant_id = ?1 AND merged_into = ?2 ORDER BY person_id")
        .and_then(|mut s| s.query_map(params![tenant, person_id], |r| r.get(0))?.collect())
        .map_err(map_error)?;
    let identifiers = conn
        .prepare_cached(&format!(
            "SELECT {NODE_COLUMNS} FROM {NODE_FROM} WHERE n.tenant_id = ?1 AND n.person_id IN ({GROUP})"
        ))
        .and_then(|mut s| s.query_map(params![tenant, person_id], codec::identity_node)?.collect())
        .map_err(map_error)?;
    let traits = conn
        .prepare_cached(&format!(
            "SELECT person_id, workspace, signal_id, form, observations
             FROM trait_sets WHERE tenant_id = ?1 AND person_id IN ({GROUP})"
        ))
        .and_then(|mut s| {
            s.query_map(params![tenant, person_id], |r| {
                Ok(StoredTraitSet {
                    person_id: r.get(0)?,
                    workspace: workspace(r, 1)?,
                    signal_id: r.get(2)?,
                    form: r.get(3)?,
                    observations: crate::codec::text_or_bytes(r, 4)?,
                })
            })?
            .collect()
        })
        .map_err(map_error)?;
    let workspaces = conn
        .prepare_cached(&format!(
            "SELECT workspace, MIN(first_seen), MAX(last_seen) FROM workspace_contacts
             WHERE tenant_id = ?1 AND person_id IN ({GROUP}) GROUP BY workspace ORDER BY workspace"
        ))
        .and_then(|mut s| {
            s.query_map(params![tenant, person_id], |r| {
                Ok(WorkspaceContactRow {
                    workspace: workspace(r, 0)?,
                    first_seen: time(r, 1)?,
                    last_seen: time(r, 2)?,
                })
            })?
            .collect()
        })
        .map_err(map_error)?;
    Ok((
        PersonProfile {
            person,
            merged_from,
            identifiers,
            traits: Vec::new(),
            workspaces,
        },
        traits,
    ))
}

/// A trait set of a person's group as stored: opening it takes the vault, which reads leave to
/// the caller.
pub(crate) struct StoredTraitSet {
    person_id: String,
    workspace: WorkspaceName,
    signal_id: String,
    form: i64,
    /// Text in the first form, bytes in the compact one.
    observations: Vec<u8>,
}

/// Every observation of `sets`, in signal then name order.
pub(crate) fn open_trait_sets(
    vault: &Vault,
    tenant: &str,
    sets: Vec<StoredTraitSet>,
) -> StoreResult<Vec<TraitValueRow>> {
    let mut traits = Vec::new();
    for set in sets {
        let form = SetForm::from_code(set.form)?;
        for observed in trait_set::open(vault, tenant, form, set.observations)? {
            traits.push(TraitValueRow {
                person_id: set.person_id.clone(),
                workspace: set.workspace.clone(),
                name: observed.name,
                value: observed.value,
                provenance: observed.provenance,
                set_once: observed.set_once,
                signal_id: set.signal_id.clone(),
            });
        }
    }
    traits.sort_by(|a, b| (&a.signal_id, &a.name).cmp(&(&b.signal_id, &b.name)));
    Ok(traits)
}

pub(crate) fn timeline(
    conn: &Connection,
    tenant: &str,
    person_id: &str,
    kind: Option<&str>,
    page: &PageRequest,
) -> StoreResult<Page<TimelineEvent>> {
    let (before_at, before_id) = match page.after.as_deref() {
        Some(cursor) => {
            let (at, id) = parse_timeline_cursor(cursor)
                .ok_or_else(|| StoreError::Conflict("malformed timeline cursor".into()))?;
            (at.as_microsecond(), id)
        }
        None => (i64::MAX, String::new()),
    };
    let members: Vec<String> = conn
        .prepare_cached(GROUP)
        .and_then(|mut s| {
            s.query_map(params![tenant, person_id], |r| r.get(0))?
                .collect()
        })
        .map_err(map_error)?;
    // Each member's newest events straight off events_by_person, merged in Rust: one query
    // over the whole group would sort the group's entire history for every page.
    let mut events = conn
        .prepare_cached(
            "SELECT event_id, workspace, person_id, kind, name, occurred_at, ingested_at, properties FROM events
             WHERE tenant_id = ?1 AND person_id = ?2 AND (occurred_at, event_id) < (?3, ?4)
               AND (?5 IS NULL OR kind = ?5)
             ORDER BY occurred_at DESC, event_id DESC LIMIT ?6",
        )
        .map_err(map_error)?;
    let mut rows: Vec<TimelineEvent> = Vec::new();
    for member in &members {
        let mapped = events
            .query_map(
                params![
                    tenant,
                    member,
                    before_at,
                    before_id,
                    kind,
                    i64::from(page.limit) + 1
                ],
                |r| {
                    Ok(TimelineEvent {
                        event_id: r.get(0)?,
                        workspace: workspace(r, 1)?,
                        person_id: r.get(2)?,
                        kind: r.get(3)?,
                        name: r.get(4)?,
                        occurred_at: time(r, 5)?,
                        ingested_at: time(r, 6)?,
                        properties: r.get(7)?,
                    })
                },
            )
            .map_err(map_error)?;
        for row in mapped {
            rows.push(row.map_err(map_error)?);
        }
    }
    Ok(newest_first_page(rows, page.limit))
}

pub(crate) fn merges_of(
    conn: &Connection,
    vault: &Vault,
    tenant: &str,
    person_id: &str,
) -> StoreResult<(Vec<MergeRow>, Vec<ConflictRow>)> {
    let merges: Vec<MergeRow> = conn
        .prepare_cached(&format!(
            "SELECT merge_id, survivor, absorbed, identifiers, signal_id, rule, at FROM merges
             WHERE tenant_id = ?1 AND (survivor IN ({GROUP}) OR absorbed IN ({GROUP}))
               AND merge_id NOT IN (SELECT merge_id FROM unmerges WHERE tenant_id = ?1)
             ORDER BY at, merge_id"
        ))
        .and_then(|mut s| {
            s.query_map(params![tenant, person_id], |r| {
                let encoded: String = r.get(3)?;
                Ok(MergeRow {
                    merge_id: r.get(0)?,
                    survivor: r.get(1)?,
                    absorbed: r.get(2)?,
                    identifiers: vault
                        .open_merge_identifiers(tenant, encoded)
                        .map_err(in_row)?,
                    signal_id: r.get(4)?,
                    rule: r.get(5)?,
                    at: time(r, 6)?,
                })
            })?
            .collect()
        })
        .map_err(map_error)?;
    let conflicts = conn
        .prepare_cached(&format!(
            "SELECT conflict_id, person_id, other_person_id, kind, value, rule, signal_id, at FROM conflicts
             WHERE tenant_id = ?1 AND (person_id IN ({GROUP}) OR other_person_id IN ({GROUP})) ORDER BY at, conflict_id"
        ))
        .and_then(|mut s| {
            s.query_map(params![tenant, person_id], |r| {
                let kind: String = r.get(3)?;
                let kind = IdentifierKind::parse(&kind).map_err(|e| {
                    rusqlite::Error::FromSqlConversionFailure(3, rusqlite::types::Type::Text, e.to_string().into())
                })?;
                Ok(ConflictRow {
                    conflict_id: r.get(0)?,
                    person_id: r.get(1)?,
                    other_person_id: r.get(2)?,
                    identifier: Identifier::from_stored(
                        kind,
                        vault
                            .open(tenant, column::CONFLICT_VALUE, r.get(4)?)
                            .map_err(in_row)?,
                    ),
                    rule: r.get(5)?,
                    signal_id: r.get(6)?,
                    at: time(r, 7)?,
                })
            })?
            .collect()
        })
        .map_err(map_error)?;
    Ok((merges, conflicts))
}

/// Events of a deleted person wait for the purge; no read may see them meanwhile.
const NOT_DELETED: &str = "NOT EXISTS (SELECT 1 FROM deleted_persons d \
    WHERE d.tenant_id = events.tenant_id AND d.person_id = events.person_id)";

const LOGGED_COLUMNS: &str = "seq, event_id, workspace, kind, name, occurred_at, ingested_at, \
    schema_version, message_id, properties, context, identifiers, source";

pub(crate) fn get_signal(
    conn: &Connection,
    vault: &Vault,
    tenant: &str,
    event_id: &str,
) -> StoreResult<LoggedSignal> {
    conn.prepare_cached(&format!(
        "SELECT {LOGGED_COLUMNS} FROM events WHERE tenant_id = ?1 AND event_id = ?2 AND {NOT_DELETED}"
    ))
    .and_then(|mut s| s.query_row(params![tenant, event_id], |r| logged_signal(r, vault, tenant)))
    .map_err(map_error)
}

pub(crate) fn signal_log(
    conn: &Connection,
    vault: &Vault,
    tenant: &str,
    after: i64,
    limit: u32,
) -> StoreResult<Vec<LoggedSignal>> {
    conn.prepare_cached(&format!(
        "SELECT {LOGGED_COLUMNS} FROM events WHERE tenant_id = ?1 AND seq > ?2 AND {NOT_DELETED} ORDER BY seq LIMIT ?3"
    ))
    .and_then(|mut s| {
        s.query_map(params![tenant, after, limit], |r| logged_signal(r, vault, tenant))?
            .collect()
    })
    .map_err(map_error)
}

fn logged_signal(r: &Row<'_>, vault: &Vault, tenant: &str) -> rusqlite::Result<LoggedSignal> {
    let identifiers: String = r.get(11)?;
    let mut logged = LoggedSignal {
        seq: r.get(0)?,
        event: EventRow {
            event_id: r.get(1)?,
            workspace: workspace(r, 2)?,
            kind: r.get(3)?,
            name: r.get(4)?,
            occurred_at: time(r, 5)?,
            ingested_at: time(r, 6)?,
            schema_version: r.get(7)?,
            message_id: r.get(8)?,
            properties: r.get(9)?,
            context: r.get(10)?,
        },
        identifiers: vault
            .open_identifiers(tenant, identifiers)
            .map_err(in_row)?,
        source: r.get(12)?,
    };
    vault
        .open_event(tenant, &mut logged.event)
        .map_err(in_row)?;
    Ok(logged)
}

/// Persons by how many identifiers their group holds: one pass over the tenant's nodes, an
/// operator's diagnostic rather than a hot path.
pub(crate) fn persons_by_identifier_count(
    conn: &Connection,
    tenant: &str,
    min_identifiers: u32,
    page: &PageRequest,
) -> StoreResult<Page<(String, u64)>> {
    let (after_count, after_id) = match page.after.as_deref() {
        Some(cursor) => {
            let (count, id) = parse_count_cursor(cursor)
                .ok_or_else(|| StoreError::Conflict("malformed cursor".into()))?;
            (Some(count), id)
        }
        None => (None, String::new()),
    };
    let rows: Vec<(String, i64)> = conn
        .prepare_cached(
            "SELECT canon, n FROM (
                 SELECT COALESCE(p.merged_into, p.person_id) AS canon, COUNT(*) AS n
                 FROM identity_nodes i
                 JOIN persons p ON p.tenant_id = i.tenant_id AND p.person_id = i.person_id
                 WHERE i.tenant_id = ?1 GROUP BY canon HAVING COUNT(*) >= ?2)
             WHERE ?3 IS NULL OR n < ?3 OR (n = ?3 AND canon > ?4)
             ORDER BY n DESC, canon LIMIT ?5",
        )
        .and_then(|mut s| {
            s.query_map(
                params![
                    tenant,
                    min_identifiers,
                    after_count,
                    after_id,
                    i64::from(page.limit) + 1
                ],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?
            .collect()
        })
        .map_err(map_error)?;
    let rows = rows
        .into_iter()
        .map(|(id, n)| (id, u64::try_from(n).unwrap_or(0)))
        .collect();
    Ok(Page::from_overfetch(rows, page.limit, count_cursor))
}

pub(crate) fn stats(
    conn: &Connection,
    tenant: &str,
    events_since: i64,
) -> StoreResult<TenantStats> {
    let tx = conn.unchecked_transaction().map_err(map_error)?;
    let count = |sql: &str| -> StoreResult<u64> {
        tx.prepare_cached(sql)
            .and_then(|mut s| s.query_row(params![tenant], |r| r.get::<_, i64>(0)))
            .map(|n| u64::try_from(n).unwrap_or(0))
            .map_err(map_error)
    };
    let persons =
        count("SELECT COUNT(*) FROM persons WHERE tenant_id = ?1 AND merged_into IS NULL")?;
    let absorbed =
        count("SELECT COUNT(*) FROM persons WHERE tenant_id = ?1 AND merged_into IS NOT NULL")?;
    let merges = count("SELECT COUNT(*) FROM merges WHERE tenant_id = ?1")?;
    let conflicts = count("SELECT COUNT(*) FROM conflicts WHERE tenant_id = ?1")?;
    let identifiers_by_kind = tx
        .prepare_cached(
            "SELECT kind, COUNT(*) FROM identity_nodes WHERE tenant_id = ?1 GROUP BY kind ORDER BY kind",
        )
        .and_then(|mut s| {
            s.query_map(params![tenant], |r| {
                Ok((r.get::<_, String>(0)?, u64::try_from(r.get::<_, i64>(1)?).unwrap_or(0)))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()
        })
        .map_err(map_error)?;
    let events_by_kind_and_day = tx
        .prepare_cached(
            &format!("SELECT date(occurred_at / 1000000, 'unixepoch') AS day, kind, COUNT(*) FROM events
             WHERE tenant_id = ?1 AND occurred_at >= ?2 AND {NOT_DELETED} GROUP BY day, kind ORDER BY day, kind"),
        )
        .and_then(|mut s| {
            s.query_map(params![tenant, events_since], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    u64::try_from(r.get::<_, i64>(2)?).unwrap_or(0),
                ))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()
        })
        .map_err(map_error)?;
    let imports_by_status = tx
        .prepare_cached(
            "SELECT status, COUNT(*) FROM import_jobs WHERE tenant_id = ?1 GROUP BY status ORDER BY status",
        )
        .and_then(|mut s| {
            s.query_map(params![tenant], |r| {
                Ok((r.get::<_, String>(0)?, u64::try_from(r.get::<_, i64>(1)?).unwrap_or(0)))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()
        })
        .map_err(map_error)?;
    let import_rows =
        count("SELECT COALESCE(SUM(landed), 0) FROM import_jobs WHERE tenant_id = ?1")?;
    tx.finish().map_err(map_error)?;
    Ok(TenantStats {
        persons,
        persons_absorbed: absorbed,
        identifiers_by_kind,
        events_by_kind_and_day,
        merges,
        conflicts,
        imports_by_status,
        import_rows,
    })
}
