//! Resolution on the embedded store: runs on the writer thread, so signals are applied one at a
//! time in a total order and no two can race for the same identifier.

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};

use idgraph_core::identity::{Identifier, IdentifierKind, IdentitySettings};
use idgraph_core::privacy::ErasedIdentifiers;
use idgraph_core::resolve::{GraphView, PersonId, PersonView, Resolution, Signal, resolve};
use idgraph_core::tenancy::TenantId;
use idgraph_store::trait_set::SetForm;
use idgraph_store::vault::{SealedSignal, Vault, column};
use idgraph_store::{
    IngestOutcome, LAST_SEEN_RESOLUTION_SECONDS, SignalRecord, StoreError, StoreResult,
    conflict_rule_text, derived_id, erased_kinds,
};
use jiff::Timestamp;
use rusqlite::{OptionalExtension, Transaction, params};

use crate::codec::{map_error, micros};
use crate::nodes::{NODE_STORED_VALUE, NewNode, ValueIds, insert_node};

const RESOLUTION_MICROS: i64 = LAST_SEEN_RESOLUTION_SECONDS * 1_000_000;

/// The persons of a canonical person's group: itself and everyone merged into it. A UNION, not
/// `person_id = ?2 OR merged_into = ?2`, which SQLite answers by scanning the tenant's persons.
pub(crate) const GROUP: &str =
    "SELECT ?2 UNION ALL SELECT person_id FROM persons WHERE tenant_id = ?1 AND merged_into = ?2";

/// The sealed form of a job's signals, in order: those sealed before the job was queued, then
/// the rest as the caller seals them while the writer resolves the first (a large batch, such
/// as an import's chunk, keeps both cores busy). Kept once received, so a job that runs again
/// has them all.
pub(crate) struct SealedFeed {
    received: Vec<SealedSignal>,
    rest: Option<std::sync::mpsc::Receiver<StoreResult<SealedSignal>>>,
    /// Why the rest stopped coming, answered again to a job that runs again.
    failed: Option<StoreError>,
}

impl SealedFeed {
    pub(crate) fn new(
        first: Vec<SealedSignal>,
        rest: Option<std::sync::mpsc::Receiver<StoreResult<SealedSignal>>>,
    ) -> Self {
        Self {
            received: first,
            rest,
            failed: None,
        }
    }

    fn get(&mut self, index: usize) -> StoreResult<&SealedSignal> {
        while self.received.len() <= index {
            if let Some(error) = &self.failed {
                return Err(error.clone());
            }
            let next = match self.rest.as_ref().map(|rest| rest.recv()) {
                Some(Ok(next)) => next,
                _ => Err(StoreError::Other(
                    "the signals stopped coming before all were sealed".into(),
                )),
            };
            match next {
                Ok(sealed) => self.received.push(sealed),
                Err(error) => {
                    self.rest = None;
                    self.failed = Some(error);
                }
            }
        }
        Ok(&self.received[index])
    }
}

pub(crate) fn ingest(
    tx: &Transaction<'_>,
    vault: &Vault,
    tenant_id: &TenantId,
    settings: &IdentitySettings,
    signals: &[SignalRecord],
    sealed: &mut SealedFeed,
) -> StoreResult<Vec<IngestOutcome>> {
    let tenant = tenant_id.as_str();
    // The writer thread is the only writer, so the next position in the log is simply the last
    // one plus one.
    let mut seq: i64 = tx
        .prepare_cached("SELECT COALESCE(MAX(seq), 0) FROM events WHERE tenant_id = ?1")
        .and_then(|mut s| s.query_row(params![tenant], |r| r.get(0)))
        .map_err(map_error)?;
    // Tombstones exist only once the tenant deleted someone; most tenants never pay for them.
    let salt = match settings.erased_identifiers {
        ErasedIdentifiers::Block => crate::deletion::salt(tx, tenant)?,
        ErasedIdentifiers::Allow => None,
    };
    let subscribers = crate::webhooks::subscribers(tx, tenant)?;
    let mut recorder = Recorder {
        tx,
        vault,
        tenant,
        values: ValueIds::new(tenant),
    };
    let mut outcomes = Vec::with_capacity(signals.len());
    for (index, signal) in signals.iter().enumerate() {
        let sealed = sealed.get(index)?;
        let sealed = if sealed.key == vault.current_key() {
            Cow::Borrowed(sealed)
        } else {
            Cow::Owned(vault.seal_signal(tenant, signal)?)
        };
        let event = &signal.event;
        let seen = tx
            .prepare_cached(
                "SELECT 1 FROM events WHERE tenant_id = ?1 AND workspace = ?2 AND message_id = ?3",
            )
            .and_then(|mut s| {
                s.query_row(
                    params![tenant, event.workspace.as_str(), event.message_id],
                    |_| Ok(()),
                )
                .optional()
            })
            .map_err(map_error)?;
        if seen.is_some() {
            outcomes.push(IngestOutcome::Duplicate);
            continue;
        }
        if let Some(salt) = &salt {
            let mut error = None;
            let kinds = erased_kinds(salt, &signal.identifiers, |stone| {
                crate::deletion::is_erased(tx, tenant, stone).unwrap_or_else(|e| {
                    error.get_or_insert(e);
                    false
                })
            });
            if let Some(error) = error {
                return Err(error);
            }
            if !kinds.is_empty() {
                outcomes.push(IngestOutcome::Erased { kinds });
                continue;
            }
        }
        let graph = TxGraph {
            tx,
            vault,
            tenant,
            settings,
            signal: Some((signal, &sealed)),
            error: RefCell::new(None),
            seen: RefCell::new(Vec::new()),
        };
        let resolution = resolve(
            settings,
            &graph,
            &Signal {
                identifiers: &signal.identifiers,
                new_person_id: event.event_id.clone(),
                at: event.ingested_at,
            },
        );
        if let Some(error) = graph.error.into_inner() {
            return Err(error);
        }
        seq += 1;
        recorder.apply(seq, signal, &sealed, &resolution, &graph.seen.into_inner())?;
        let announced = idgraph_store::signal_events(&subscribers, signal, &resolution);
        crate::webhooks::enqueue(tx, vault, tenant, &subscribers, &announced)?;
        outcomes.push(IngestOutcome::Recorded {
            person_id: resolution.person.clone(),
            created: resolution.created,
            merges: resolution.merges.len(),
            conflicts: resolution.conflicts.len(),
            attached: resolution.attach.len(),
        });
    }
    Ok(outcomes)
}

/// The graph as the writer's transaction sees it, read on demand: the resolver asks for a
/// person's identifiers only when a limit must be checked, which the common signal (a known
/// person's known identifiers) never needs.
pub(crate) struct TxGraph<'a, 'conn> {
    tx: &'a Transaction<'conn>,
    vault: &'a Vault,
    tenant: &'a str,
    settings: &'a IdentitySettings,
    /// The signal being resolved, whose identifiers' blind indexes were computed before.
    signal: Option<(&'a SignalRecord, &'a SealedSignal)>,
    /// The first error a read met; `GraphView` cannot return one, so `ingest` checks it after
    /// resolving and discards the resolution.
    error: RefCell<Option<StoreError>>,
    /// Every node [`GraphView::owners`] read, so that `apply` can tell which of the signal's
    /// known identifiers need their `last_seen` moved without reading them again.
    seen: RefCell<Vec<SeenIdentifier>>,
}

/// An identifier's nodes as the owners read found them, before the signal changed anything.
struct SeenIdentifier {
    kind: IdentifierKind,
    index: String,
    nodes: Vec<SeenNode>,
}

struct SeenNode {
    /// The person the node was attached to.
    person: String,
    /// That person's canonical person when read.
    owner: PersonId,
    last_seen: i64,
}

impl<'a, 'conn> TxGraph<'a, 'conn> {
    pub(crate) fn new(
        tx: &'a Transaction<'conn>,
        vault: &'a Vault,
        tenant: &'a str,
        settings: &'a IdentitySettings,
    ) -> Self {
        Self {
            tx,
            vault,
            tenant,
            settings,
            signal: None,
            error: RefCell::new(None),
            seen: RefCell::new(Vec::new()),
        }
    }

    fn index(&self, identifier: &Identifier) -> String {
        self.signal
            .and_then(|(signal, sealed)| sealed.node(signal, identifier))
            .map(|(index, _)| index.clone())
            .unwrap_or_else(|| {
                self.vault
                    .index(self.tenant, identifier.kind().as_str(), identifier.value())
            })
    }

    fn failed(&self, error: StoreError) {
        self.error.borrow_mut().get_or_insert(error);
    }

    /// What a node of `kind` whose lookup value is `stored` stands for in a person's view:
    /// the signal's value when it is one of the signal's identifiers, else `stored` itself,
    /// unless no signal is being resolved or `stored` could be mistaken for one of its plain
    /// values (a node not yet sealed) — then `None`, and the node's value must be opened.
    fn as_signal_value(&self, kind: &IdentifierKind, stored: &str) -> Option<String> {
        let (signal, sealed) = self.signal?;
        let mut looks_plain = false;
        for (identifier, (index, _)) in signal.identifiers.iter().zip(&sealed.nodes) {
            if identifier.kind() != kind {
                continue;
            }
            if index == stored {
                return Some(identifier.value().to_owned());
            }
            looks_plain |= identifier.value() == stored;
        }
        (!looks_plain).then(|| stored.to_owned())
    }

    /// A node's value, opened.
    fn node_value(
        &self,
        kind: &IdentifierKind,
        stored: String,
        person: &str,
    ) -> StoreResult<String> {
        let value: String = self
            .tx
            .prepare_cached(&format!(
                "SELECT {NODE_STORED_VALUE} FROM identity_nodes
                 WHERE tenant_id = ?1 AND kind = ?2 AND value = ?3 AND person_id = ?4"
            ))
            .and_then(|mut s| {
                s.query_row(params![self.tenant, kind.as_str(), stored, person], |r| {
                    r.get(0)
                })
            })
            .map_err(map_error)?;
        self.vault.open(self.tenant, column::IDENTIFIER, value)
    }

    pub(crate) fn read_person(&self, id: &PersonId) -> StoreResult<Option<PersonView>> {
        let created_at: Option<i64> = self
            .tx
            .prepare_cached(
                "SELECT created_at FROM persons WHERE tenant_id = ?1 AND person_id = ?2",
            )
            .and_then(|mut s| {
                s.query_row(params![self.tenant, id], |r| r.get(0))
                    .optional()
            })
            .map_err(map_error)?;
        let Some(created_at) = created_at else {
            return Ok(None);
        };
        let mut identifiers: BTreeMap<IdentifierKind, BTreeSet<String>> = BTreeMap::new();
        // Only the index (kind and lookup value come with it, no table row): the resolver
        // compares a person's values of a limited kind with the signal's and counts them, so
        // a value the signal does not carry can stand for itself by its lookup value, and
        // only a value that might be mistaken for one of the signal's is opened.
        let mut nodes = self
            .tx
            .prepare_cached(&format!(
                "SELECT kind, value, person_id FROM identity_nodes INDEXED BY identity_nodes_by_person
                 WHERE tenant_id = ?1 AND person_id IN ({GROUP})"
            ))
            .map_err(map_error)?;
        let mut rows = nodes.query(params![self.tenant, id]).map_err(map_error)?;
        while let Some(row) = rows.next().map_err(map_error)? {
            let kind: String = row.get(0).map_err(map_error)?;
            // Only limited kinds matter to the resolver; skipping the rest keeps persons with
            // thousands of anonymous ids cheap.
            let Some((kind, rule)) = self.settings.kinds.get_key_value(kind.as_str()) else {
                continue;
            };
            if rule.limit.is_some() {
                let stored: String = row.get(1).map_err(map_error)?;
                let value = match self.as_signal_value(kind, &stored) {
                    Some(value) => value,
                    None => {
                        let person: String = row.get(2).map_err(map_error)?;
                        self.node_value(kind, stored, &person)?
                    }
                };
                identifiers.entry(kind.clone()).or_default().insert(value);
            }
        }
        let created_at = Timestamp::from_microsecond(created_at)
            .map_err(|e| StoreError::Other(format!("unreadable person row: {e}")))?;
        Ok(Some(PersonView {
            id: id.clone(),
            created_at,
            identifiers,
        }))
    }
}

impl GraphView for TxGraph<'_, '_> {
    fn owners(&self, identifier: &Identifier) -> Vec<PersonId> {
        let owners = self
            .tx
            .prepare_cached(
                "SELECT COALESCE(p.merged_into, p.person_id), n.person_id, n.last_seen
                 FROM identity_nodes n
                 JOIN persons p ON p.tenant_id = n.tenant_id AND p.person_id = n.person_id
                 WHERE n.tenant_id = ?1 AND n.kind = ?2 AND n.value = ?3",
            )
            .and_then(|mut s| {
                let index = self.index(identifier);
                let mut owners = Vec::new();
                let mut nodes = Vec::new();
                let mut rows = s.query(params![self.tenant, identifier.kind().as_str(), index])?;
                while let Some(row) = rows.next()? {
                    let owner: PersonId = row.get(0)?;
                    nodes.push(SeenNode {
                        person: row.get(1)?,
                        owner: owner.clone(),
                        last_seen: row.get(2)?,
                    });
                    owners.push(owner);
                }
                self.seen.borrow_mut().push(SeenIdentifier {
                    kind: identifier.kind().clone(),
                    index,
                    nodes,
                });
                Ok(owners)
            })
            // Persons sharing a value may have merged since; DISTINCT in SQL would build a temp
            // B-tree on every call for what is nearly always one row.
            .map(|mut owners| {
                if owners.len() > 1 {
                    owners.sort_unstable();
                    owners.dedup();
                }
                owners
            });
        owners.unwrap_or_else(|e| {
            self.failed(map_error(e));
            Vec::new()
        })
    }

    fn person(&self, id: &PersonId) -> Option<PersonView> {
        self.read_person(id).unwrap_or_else(|e| {
            self.failed(e);
            None
        })
    }

    fn kept_apart(&self, a: &PersonId, b: &PersonId) -> bool {
        crate::merges::kept_apart(self.tx, self.tenant, a, b).unwrap_or_else(|e| {
            self.failed(e);
            // Unknown: the resolution is discarded anyway; refusing is the safe guess.
            true
        })
    }
}

/// Writes what the resolver decided, one signal after another, within one job.
struct Recorder<'a, 'conn> {
    tx: &'a Transaction<'conn>,
    vault: &'a Vault,
    tenant: &'a str,
    values: ValueIds<'a>,
}

impl Recorder<'_, '_> {
    fn apply(
        &mut self,
        seq: i64,
        signal: &SignalRecord,
        sealed: &SealedSignal,
        resolution: &Resolution,
        seen_nodes: &[SeenIdentifier],
    ) -> StoreResult<()> {
        let (tx, vault, tenant) = (self.tx, self.vault, self.tenant);
        let event = &signal.event;
        let signal_id = event.event_id.as_str();
        let now = micros(event.ingested_at);
        let seen = micros(event.occurred_at);
        let person = resolution.person.as_str();
        if resolution.created {
            tx.prepare_cached("INSERT INTO persons (tenant_id, person_id, merged_into, created_at, updated_at) VALUES (?1, ?2, NULL, ?3, ?3)")
            .and_then(|mut s| s.execute(params![tenant, person, now]))
            .map_err(map_error)?;
        } else if signal.changes_person(resolution) {
            tx.prepare_cached(
                "UPDATE persons SET updated_at = ?3 WHERE tenant_id = ?1 AND person_id = ?2",
            )
            .and_then(|mut s| s.execute(params![tenant, person, now]))
            .map_err(map_error)?;
        }
        for (index, merge) in resolution.merges.iter().enumerate() {
            // merged_into always names the final survivor, so the group is one indexed lookup.
            tx.prepare_cached(&format!(
                "UPDATE persons SET merged_into = ?3, updated_at = ?4
             WHERE tenant_id = ?1 AND person_id IN ({GROUP})"
            ))
            .and_then(|mut s| s.execute(params![tenant, merge.absorbed, merge.survivor, now]))
            .map_err(map_error)?;
            let identifiers = vault.seal_merge_identifiers(tenant, &merge.identifiers)?;
            tx.prepare_cached(
            "INSERT INTO merges (tenant_id, merge_id, survivor, absorbed, identifiers, signal_id, rule, at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )
        .and_then(|mut s| {
            s.execute(params![
                tenant,
                derived_id(signal_id, 'm', index),
                merge.survivor,
                merge.absorbed,
                identifiers,
                signal_id,
                merge.rule,
                now
            ])
        })
        .map_err(map_error)?;
        }
        for identifier in &resolution.attach {
            // The resolver attaches only identifiers the signal carried.
            let computed;
            let (index, value_sealed) = match sealed.node(signal, identifier) {
                Some(node) => node,
                None => {
                    computed =
                        vault.identifier(tenant, identifier.kind().as_str(), identifier.value())?;
                    &computed
                }
            };
            insert_node(
                tx,
                &mut self.values,
                &NewNode {
                    kind: identifier.kind().as_str(),
                    value: index,
                    sealed: value_sealed.as_deref(),
                    person,
                    source: &signal.source,
                    confidence: 1.0,
                    first_seen: seen,
                    last_seen: seen,
                    signal_id: Some(signal_id),
                },
            )?;
        }
        // Update the stale nodes one by one by their whole key. One UPDATE over the group would
        // be a multi-row write, for which SQLite opens and releases a statement journal on
        // every execution, stale or not: 7% of the writer thread's time in a profile of
        // `/v1/batch`, where nearly every signal touches a known identifier and few touches
        // are stale. Which nodes are stale is known from the owners read: after this signal's
        // merges, the group is the person and every person it absorbed.
        let in_group =
            |owner: &str| owner == person || resolution.merges.iter().any(|m| m.absorbed == owner);
        for identifier in &resolution.touch {
            let kind = identifier.kind().as_str();
            let index = match sealed.node(signal, identifier) {
                Some((index, _)) => index.clone(),
                None => vault.index(tenant, kind, identifier.value()),
            };
            // The resolver reads the owners of every identifier it touches
            // (`known_identifiers_move_last_seen_across_the_group` fails if it stops).
            let stale = seen_nodes
                .iter()
                .find(|s| s.kind == *identifier.kind() && s.index == index)
                .into_iter()
                .flat_map(|read| &read.nodes)
                .filter(|n| n.last_seen < seen - RESOLUTION_MICROS && in_group(&n.owner));
            for node in stale {
                tx.prepare_cached(
                    "UPDATE identity_nodes SET last_seen = ?5
                     WHERE tenant_id = ?1 AND kind = ?2 AND value = ?3 AND person_id = ?4",
                )
                .and_then(|mut s| s.execute(params![tenant, kind, index, node.person, seen]))
                .map_err(map_error)?;
            }
        }
        for (index, conflict) in resolution.conflicts.iter().enumerate() {
            let value = vault.seal(tenant, column::CONFLICT_VALUE, conflict.identifier.value())?;
            tx.prepare_cached(
            "INSERT INTO conflicts (tenant_id, conflict_id, person_id, other_person_id, kind, value, rule, signal_id, at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        )
        .and_then(|mut s| {
            s.execute(params![
                tenant,
                derived_id(signal_id, 'c', index),
                conflict.person,
                conflict.other_person,
                conflict.identifier.kind().as_str(),
                value,
                conflict_rule_text(&conflict.rule),
                signal_id,
                now
            ])
        })
        .map_err(map_error)?;
        }
        tx.prepare_cached(
        "INSERT INTO events (tenant_id, event_id, workspace, person_id, kind, name, occurred_at, ingested_at,
                             schema_version, message_id, properties, context, seq, identifiers, source)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
    )
    .and_then(|mut s| {
        s.execute(params![
            tenant,
            signal_id,
            event.workspace.as_str(),
            person,
            event.kind,
            event.name,
            seen,
            now,
            event.schema_version,
            event.message_id,
            sealed.properties,
            sealed.context,
            seq,
            sealed.identifiers,
            signal.source,
        ])
    })
    .map_err(map_error)?;
        if let Some(set) = &sealed.traits {
            tx.prepare_cached(
                "INSERT OR IGNORE INTO trait_sets
                 (tenant_id, person_id, workspace, signal_id, form, observed, observations)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )
            .and_then(|mut s| {
                s.execute(params![
                    tenant,
                    person,
                    event.workspace.as_str(),
                    signal_id,
                    SetForm::Compact.code(),
                    i64::try_from(set.observed).unwrap_or(i64::MAX),
                    set.stored
                ])
            })
            .map_err(map_error)?;
        }
        tx.prepare_cached(&format!(
        "INSERT INTO workspace_contacts (tenant_id, person_id, workspace, first_seen, last_seen)
         VALUES (?1, ?2, ?3, ?4, ?4)
         ON CONFLICT (tenant_id, person_id, workspace) DO UPDATE SET
            first_seen = MIN(first_seen, excluded.first_seen), last_seen = MAX(last_seen, excluded.last_seen)
         WHERE excluded.first_seen < first_seen OR excluded.last_seen >= last_seen + {RESOLUTION_MICROS}"
    ))
    .and_then(|mut s| s.execute(params![tenant, person, event.workspace.as_str(), seen]))
    .map_err(map_error)?;
        Ok(())
    }
}
