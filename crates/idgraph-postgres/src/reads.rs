//! Read models of persons on PostgreSQL: profile, timeline, merges.

use std::time::SystemTime;

use idgraph_core::identity::{Identifier, IdentifierKind};
use idgraph_core::tenancy::WorkspaceName;
use idgraph_core::traits::{Provenance, SourceClass};
use idgraph_store::{
    ConflictRow, EventRow, LoggedSignal, MergeRow, Page, PageRequest, PersonProfile, PersonRow,
    StoreError, StoreResult, TenantStats, TimelineEvent, TraitValueRow, WorkspaceContactRow,
    count_cursor, newest_first_page, parse_count_cursor, parse_timeline_cursor,
};
use jiff::Timestamp;
use tokio_postgres::Row;

use crate::PostgresStore;
use idgraph_store::vault::{Vault, column};

use crate::codec::{self, NODE_READ_COLUMNS, map_error, to_sql_time};
use crate::resolve::GROUP;

fn corrupt(what: impl std::fmt::Display) -> StoreError {
    StoreError::Other(format!("unreadable row: {what}"))
}

fn time(row: &Row, index: usize) -> StoreResult<Timestamp> {
    let raw: SystemTime = row.try_get(index).map_err(map_error)?;
    Timestamp::try_from(raw).map_err(corrupt)
}

fn workspace(row: &Row, index: usize) -> StoreResult<WorkspaceName> {
    WorkspaceName::parse(row.try_get(index).map_err(map_error)?).map_err(corrupt)
}

fn person_row(row: &Row) -> StoreResult<PersonRow> {
    Ok(PersonRow {
        person_id: row.try_get(0).map_err(map_error)?,
        merged_into: row.try_get(1).map_err(map_error)?,
        created_at: time(row, 2)?,
        updated_at: time(row, 3)?,
    })
}

impl PostgresStore {
    pub(crate) async fn read_person(
        &self,
        tenant: &str,
        person_id: &str,
    ) -> StoreResult<PersonRow> {
        let row = self
            .client()
            .await?
            .query_opt(
                "SELECT person_id, merged_into, created_at, updated_at FROM persons WHERE tenant_id = $1 AND person_id = $2",
                &[&tenant, &person_id],
            )
            .await
            .map_err(map_error)?;
        person_row(&row.ok_or(StoreError::NotFound)?)
    }

    pub(crate) async fn read_lookup(
        &self,
        tenant: &str,
        identifier: &Identifier,
    ) -> StoreResult<Option<String>> {
        let row = self
            .client()
            .await?
            .query_opt(
                "SELECT DISTINCT COALESCE(p.merged_into, p.person_id) AS owner FROM identity_nodes n
                 JOIN persons p ON p.tenant_id = n.tenant_id AND p.person_id = n.person_id
                 WHERE n.tenant_id = $1 AND n.kind = $2 AND n.value = $3 ORDER BY owner LIMIT 1",
                &[
                    &tenant,
                    &identifier.kind().as_str(),
                    &self.vault().index(tenant, identifier.kind().as_str(), identifier.value()),
                ],
            )
            .await
            .map_err(map_error)?;
        Ok(row.map(|r| r.get(0)))
    }

    pub(crate) async fn read_profile(
        &self,
        tenant: &str,
        person_id: &str,
    ) -> StoreResult<PersonProfile> {
        let person = self.read_person(tenant, person_id).await?;
        let client = self.client().await?;
        let merged_from = client
            .query("SELECT person_id FROM persons WHERE tenant_id = $1 AND merged_into = $2 ORDER BY person_id", &[&tenant, &person_id])
            .await
            .map_err(map_error)?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let identifiers = client
            .query(
                &format!("SELECT {NODE_READ_COLUMNS} FROM identity_nodes WHERE tenant_id = $1 AND person_id IN ({GROUP}) ORDER BY kind, value, person_id"),
                &[&tenant, &person_id],
            )
            .await
            .map_err(map_error)?
            .iter()
            .map(codec::identity_node)
            .collect::<StoreResult<Vec<_>>>()?;
        let vault = self.vault();
        let identifiers = vault.open_nodes(tenant, identifiers)?;
        let mut traits = client
            .query(
                &format!(
                    "SELECT person_id, workspace, name, value, source_class, confidence, observed_at, set_once, signal_id
                     FROM trait_values WHERE tenant_id = $1 AND person_id IN ({GROUP}) ORDER BY signal_id, name"
                ),
                &[&tenant, &person_id],
            )
            .await
            .map_err(map_error)?
            .iter()
            .map(|r| {
                let class: SourceClass = r.get::<_, &str>(4).parse().map_err(|_| corrupt("unknown source class"))?;
                Ok(TraitValueRow {
                    person_id: r.get(0),
                    workspace: workspace(r, 1)?,
                    name: r.get(2),
                    value: r.get(3),
                    provenance: Provenance { class, confidence: r.get(5), observed_at: time(r, 6)? },
                    set_once: r.get(7),
                    signal_id: r.get(8),
                })
            })
            .collect::<StoreResult<Vec<_>>>()?;
        vault.open_traits(tenant, &mut traits)?;
        let workspaces = client
            .query(
                &format!(
                    "SELECT workspace, MIN(first_seen), MAX(last_seen) FROM workspace_contacts
                     WHERE tenant_id = $1 AND person_id IN ({GROUP}) GROUP BY workspace ORDER BY workspace"
                ),
                &[&tenant, &person_id],
            )
            .await
            .map_err(map_error)?
            .iter()
            .map(|r| Ok(WorkspaceContactRow { workspace: workspace(r, 0)?, first_seen: time(r, 1)?, last_seen: time(r, 2)? }))
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(PersonProfile {
            person,
            merged_from,
            identifiers,
            traits,
            workspaces,
        })
    }

    pub(crate) async fn read_timeline(
        &self,
        tenant: &str,
        person_id: &str,
        kind: Option<&str>,
        page: &PageRequest,
    ) -> StoreResult<Page<TimelineEvent>> {
        let (before_at, before_id) = match page.after.as_deref() {
            Some(cursor) => parse_timeline_cursor(cursor)
                .ok_or_else(|| StoreError::Conflict("malformed timeline cursor".into()))?,
            None => (Timestamp::MAX, String::new()),
        };
        let client = self.client().await?;
        let members: Vec<String> = client
            .query(GROUP, &[&tenant, &person_id])
            .await
            .map_err(map_error)?
            .iter()
            .map(|r| r.get(0))
            .collect();
        // Each member's newest events straight off events_by_person, merged in Rust: one query
        // over the whole group would sort the group's entire history for every page.
        let statement = client
            .prepare_cached(
                "SELECT event_id, workspace, person_id, kind, name, occurred_at, ingested_at, properties FROM events
                 WHERE tenant_id = $1 AND person_id = $2 AND (occurred_at, event_id) < ($3, $4)
                   AND ($5::text IS NULL OR kind = $5)
                 ORDER BY occurred_at DESC, event_id DESC LIMIT $6",
            )
            .await
            .map_err(map_error)?;
        let mut items = Vec::new();
        for member in &members {
            let rows = client
                .query(
                    &statement,
                    &[
                        &tenant,
                        member,
                        &to_sql_time(before_at),
                        &before_id,
                        &kind,
                        &(i64::from(page.limit) + 1),
                    ],
                )
                .await
                .map_err(map_error)?;
            for r in &rows {
                items.push(TimelineEvent {
                    event_id: r.get(0),
                    workspace: workspace(r, 1)?,
                    person_id: r.get(2),
                    kind: r.get(3),
                    name: r.get(4),
                    occurred_at: time(r, 5)?,
                    ingested_at: time(r, 6)?,
                    properties: r.get(7),
                });
            }
        }
        self.vault().open_timeline(tenant, &mut items)?;
        Ok(newest_first_page(items, page.limit))
    }

    pub(crate) async fn read_signal_log(
        &self,
        tenant: &str,
        after: i64,
        limit: u32,
    ) -> StoreResult<Vec<LoggedSignal>> {
        let rows = self
            .client()
            .await?
            .query(
                &format!(
                    "SELECT {LOGGED_COLUMNS} FROM events WHERE tenant_id = $1 AND seq > $2 AND {NOT_DELETED} ORDER BY seq LIMIT $3"
                ),
                &[&tenant, &after, &i64::from(limit)],
            )
            .await
            .map_err(map_error)?;
        let vault = self.vault();
        rows.iter()
            .map(|r| logged_signal(r, &vault, tenant))
            .collect()
    }

    pub(crate) async fn read_persons_by_count(
        &self,
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
        let rows = self
            .client()
            .await?
            .query(
                "SELECT canon, n FROM (
                     SELECT COALESCE(p.merged_into, p.person_id) AS canon, COUNT(*) AS n
                     FROM identity_nodes i
                     JOIN persons p ON p.tenant_id = i.tenant_id AND p.person_id = i.person_id
                     WHERE i.tenant_id = $1 GROUP BY canon HAVING COUNT(*) >= $2) grouped
                 WHERE $3::bigint IS NULL OR n < $3 OR (n = $3 AND canon > $4)
                 ORDER BY n DESC, canon LIMIT $5",
                &[
                    &tenant,
                    &i64::from(min_identifiers),
                    &after_count,
                    &after_id,
                    &(i64::from(page.limit) + 1),
                ],
            )
            .await
            .map_err(map_error)?;
        let items = rows
            .iter()
            .map(|r| {
                let n: i64 = r.get(1);
                (r.get::<_, String>(0), u64::try_from(n).unwrap_or(0))
            })
            .collect();
        Ok(Page::from_overfetch(items, page.limit, count_cursor))
    }

    pub(crate) async fn read_stats(
        &self,
        tenant: &str,
        events_since: Timestamp,
    ) -> StoreResult<TenantStats> {
        let mut client = self.client().await?;
        let tx = client
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .map_err(map_error)?;
        let counts = tx
            .query_one(
                "SELECT (SELECT COUNT(*) FROM persons WHERE tenant_id = $1 AND merged_into IS NULL),
                        (SELECT COUNT(*) FROM persons WHERE tenant_id = $1 AND merged_into IS NOT NULL),
                        (SELECT COUNT(*) FROM merges WHERE tenant_id = $1),
                        (SELECT COUNT(*) FROM conflicts WHERE tenant_id = $1),
                        (SELECT COALESCE(SUM(landed), 0)::bigint FROM import_jobs WHERE tenant_id = $1)",
                &[&tenant],
            )
            .await
            .map_err(map_error)?;
        let n = |i: usize| u64::try_from(counts.get::<_, i64>(i)).unwrap_or(0);
        let identifiers_by_kind = tx
            .query(
                "SELECT kind, COUNT(*) FROM identity_nodes WHERE tenant_id = $1 GROUP BY kind ORDER BY kind",
                &[&tenant],
            )
            .await
            .map_err(map_error)?
            .iter()
            .map(|r| (r.get::<_, String>(0), u64::try_from(r.get::<_, i64>(1)).unwrap_or(0)))
            .collect();
        let events_by_kind_and_day = tx
            .query(
                &format!("SELECT to_char(occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD') AS day, kind, COUNT(*)
                 FROM events WHERE tenant_id = $1 AND occurred_at >= $2 AND {NOT_DELETED}
                 GROUP BY day, kind ORDER BY day, kind"),
                &[&tenant, &to_sql_time(events_since)],
            )
            .await
            .map_err(map_error)?
            .iter()
            .map(|r| {
                (
                    r.get::<_, String>(0),
                    r.get::<_, String>(1),
                    u64::try_from(r.get::<_, i64>(2)).unwrap_or(0),
                )
            })
            .collect();
        let imports_by_status = tx
            .query(
                "SELECT status, COUNT(*) FROM import_jobs WHERE tenant_id = $1 GROUP BY status ORDER BY status",
                &[&tenant],
            )
            .await
            .map_err(map_error)?
            .iter()
            .map(|r| (r.get::<_, String>(0), u64::try_from(r.get::<_, i64>(1)).unwrap_or(0)))
            .collect();
        tx.commit().await.map_err(map_error)?;
        Ok(TenantStats {
            persons: n(0),
            persons_absorbed: n(1),
            identifiers_by_kind,
            events_by_kind_and_day,
            merges: n(2),
            conflicts: n(3),
            imports_by_status,
            import_rows: n(4),
        })
    }

    pub(crate) async fn read_signal(
        &self,
        tenant: &str,
        event_id: &str,
    ) -> StoreResult<LoggedSignal> {
        let row = self
            .client()
            .await?
            .query_opt(
                &format!(
                    "SELECT {LOGGED_COLUMNS} FROM events WHERE tenant_id = $1 AND event_id = $2 AND {NOT_DELETED}"
                ),
                &[&tenant, &event_id],
            )
            .await
            .map_err(map_error)?
            .ok_or(StoreError::NotFound)?;
        logged_signal(&row, &self.vault(), tenant)
    }

    pub(crate) async fn read_merges(
        &self,
        tenant: &str,
        person_id: &str,
    ) -> StoreResult<(Vec<MergeRow>, Vec<ConflictRow>)> {
        let client = self.client().await?;
        let vault = self.vault();
        let merges = client
            .query(
                &format!(
                    "SELECT merge_id, survivor, absorbed, identifiers, signal_id, rule, at FROM merges
                     WHERE tenant_id = $1 AND (survivor IN ({GROUP}) OR absorbed IN ({GROUP}))
                       AND merge_id NOT IN (SELECT merge_id FROM unmerges WHERE tenant_id = $1)
                     ORDER BY at, merge_id"
                ),
                &[&tenant, &person_id],
            )
            .await
            .map_err(map_error)?
            .iter()
            .map(|r| {
                Ok(MergeRow {
                    merge_id: r.get(0),
                    survivor: r.get(1),
                    absorbed: r.get(2),
                    identifiers: vault.open_merge_identifiers(tenant, r.get(3))?,
                    signal_id: r.get(4),
                    rule: r.get(5),
                    at: time(r, 6)?,
                })
            })
            .collect::<StoreResult<Vec<_>>>()?;
        let conflicts = client
            .query(
                &format!(
                    "SELECT conflict_id, person_id, other_person_id, kind, value, rule, signal_id, at FROM conflicts
                     WHERE tenant_id = $1 AND (person_id IN ({GROUP}) OR other_person_id IN ({GROUP})) ORDER BY at, conflict_id"
                ),
                &[&tenant, &person_id],
            )
            .await
            .map_err(map_error)?
            .iter()
            .map(|r| {
                let kind = IdentifierKind::parse(r.get::<_, &str>(3)).map_err(corrupt)?;
                Ok(ConflictRow {
                    conflict_id: r.get(0),
                    person_id: r.get(1),
                    other_person_id: r.get(2),
                    identifier: Identifier::from_stored(
                        kind,
                        vault.open(tenant, column::CONFLICT_VALUE, r.get(4))?,
                    ),
                    rule: r.get(5),
                    signal_id: r.get(6),
                    at: time(r, 7)?,
                })
            })
            .collect::<StoreResult<Vec<_>>>()?;
        Ok((merges, conflicts))
    }
}

/// Events of a deleted person wait for the purge; no read may see them meanwhile.
const NOT_DELETED: &str = "NOT EXISTS (SELECT 1 FROM deleted_persons d \
    WHERE d.tenant_id = events.tenant_id AND d.person_id = events.person_id)";

const LOGGED_COLUMNS: &str = "seq, event_id, workspace, kind, name, occurred_at, ingested_at, \
    schema_version, message_id, properties, context, identifiers, source";

fn logged_signal(r: &Row, vault: &Vault, tenant: &str) -> StoreResult<LoggedSignal> {
    let schema_version: i32 = r.get(7);
    let mut logged = LoggedSignal {
        seq: r.get(0),
        event: EventRow {
            event_id: r.get(1),
            workspace: workspace(r, 2)?,
            kind: r.get(3),
            name: r.get(4),
            occurred_at: time(r, 5)?,
            ingested_at: time(r, 6)?,
            schema_version: u32::try_from(schema_version).map_err(corrupt)?,
            message_id: r.get(8),
            properties: r.get(9),
            context: r.get(10),
        },
        identifiers: vault.open_identifiers(tenant, r.get(11))?,
        source: r.get(12),
    };
    vault.open_event(tenant, &mut logged.event)?;
    Ok(logged)
}
