//! Consent, suppression and contact records on the embedded store, and the facts a compliance
//! check reads. Writes run on the writer thread; a check reads in one snapshot.

use std::collections::BTreeSet;

use idgraph_core::compliance::{Channel, ConsentAction, Purpose};
use idgraph_core::identity::{Identifier, IdentifierKind};
use idgraph_core::tenancy::{TenantId, WorkspaceName};
use idgraph_store::{
    AddressFacts, ComplianceWrites, ConsentEventRow, ConsentSubject, ContactRow, FactsQuery,
    GLOBAL_TENANT, StoreResult, SuppressionRow, scope_applies, scope_columns, scope_from_columns,
    suppression_action_from, suppression_action_name, suppression_tenant,
};
use jiff::Timestamp;
use rusqlite::{Connection, OptionalExtension, Row, Transaction, params};

use idgraph_store::vault::{Vault, column};

use crate::codec::{in_row, map_error, micros};
use crate::nodes::NODE_STORED_VALUE;
use crate::resolve::GROUP;

fn bad(index: usize, what: impl std::fmt::Display) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(
        index,
        rusqlite::types::Type::Text,
        what.to_string().into(),
    )
}

fn time(row: &Row<'_>, index: usize) -> rusqlite::Result<Timestamp> {
    Timestamp::from_microsecond(row.get(index)?).map_err(|e| bad(index, e))
}

fn parsed<T, E: std::fmt::Display>(
    row: &Row<'_>,
    index: usize,
    parse: impl Fn(&str) -> Result<T, E>,
) -> rusqlite::Result<T> {
    let raw: String = row.get(index)?;
    parse(&raw).map_err(|e| bad(index, e))
}

fn identifier(row: &Row<'_>, kind: usize, value: usize) -> rusqlite::Result<Identifier> {
    let kind = parsed(row, kind, IdentifierKind::parse)?;
    let value: String = row.get(value)?;
    if value.is_empty() {
        return Err(bad(0, "empty identifier value"));
    }
    Ok(Identifier::from_stored(kind, value))
}

/// The canonical id of a person, `NotFound` when there is none.
fn canonical(tx: &Connection, tenant: &str, person_id: &str) -> StoreResult<String> {
    let merged_into: Option<String> = tx
        .prepare_cached("SELECT merged_into FROM persons WHERE tenant_id = ?1 AND person_id = ?2")
        .and_then(|mut s| s.query_row(params![tenant, person_id], |r| r.get(0)))
        .map_err(map_error)?;
    Ok(merged_into.unwrap_or_else(|| person_id.to_owned()))
}

fn members(conn: &Connection, tenant: &str, canonical: &str) -> StoreResult<Vec<String>> {
    conn.prepare_cached(GROUP)
        .and_then(|mut s| {
            s.query_map(params![tenant, canonical], |r| r.get(0))?
                .collect()
        })
        .map_err(map_error)
}

pub(crate) fn record(
    tx: &Transaction<'_>,
    vault: &Vault,
    tenant: &TenantId,
    writes: &ComplianceWrites,
) -> StoreResult<()> {
    let t = tenant.as_str();
    let next = |table: &str, tenant: &str| -> StoreResult<i64> {
        tx.prepare_cached(&format!(
            "SELECT COALESCE(MAX(recorded), 0) + 1 FROM {table} WHERE tenant_id = ?1"
        ))
        .and_then(|mut s| s.query_row(params![tenant], |r| r.get(0)))
        .map_err(map_error)
    };
    let mut recorded = next("consent_events", t)?;
    for write in &writes.consent {
        // (lookup form, key): a person's key is its own lookup form.
        let subjects: Vec<(String, String)> = match &write.subject {
            ConsentSubject::Person(person_id) => {
                let canonical = canonical(tx, t, person_id)?;
                members(tx, t, &canonical)?
                    .iter()
                    .map(|m| {
                        let key = ConsentSubject::key_of_person(m);
                        (key.clone(), key)
                    })
                    .collect()
            }
            ConsentSubject::Identifier(identifier) => vec![(
                vault.identifier_subject(t, identifier),
                ConsentSubject::key_of_identifier(identifier),
            )],
        };
        let mut insert = tx
            .prepare_cached(
                "INSERT INTO consent_events (tenant_id, event_id, subject, recorded, purpose, action, source,
                                             evidence, workspace, occurred_at, recorded_at, subject_sealed)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
            )
            .map_err(map_error)?;
        for (subject, key) in subjects {
            let sealed = vault.seal_subject(t, &key)?;
            let evidence = seal_evidence(vault, t, write.evidence.as_deref())?;
            insert
                .execute(params![
                    t,
                    write.event_id,
                    subject,
                    recorded,
                    write.purpose.as_str(),
                    write.action.as_str(),
                    write.source,
                    evidence,
                    write.workspace.as_str(),
                    micros(write.occurred_at),
                    micros(write.recorded_at),
                    sealed,
                ])
                .map_err(map_error)?;
            recorded += 1;
        }
    }
    for row in &writes.suppressions {
        let stored_under = suppression_tenant(tenant, &row.scope);
        let (scope, workspace) = scope_columns(&row.scope);
        let recorded = next("suppression_entries", stored_under)?;
        // A global entry is indexed under the global list's own label, which every tenant's
        // check also looks up.
        let (value, sealed) = vault.indexed(
            stored_under,
            column::SUPPRESSION_VALUE,
            row.identifier.kind().as_str(),
            row.identifier.value(),
        )?;
        tx.prepare_cached(
            "INSERT INTO suppression_entries (tenant_id, entry_id, recorded, scope, workspace, kind, value,
                                              reason, action, note, actor, at, value_sealed)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
        )
        .and_then(|mut s| {
            s.execute(params![
                stored_under,
                row.entry_id,
                recorded,
                scope,
                workspace,
                row.identifier.kind().as_str(),
                value,
                row.reason.as_str(),
                suppression_action_name(row.action),
                row.note,
                row.actor,
                micros(row.at),
                sealed,
            ])
        })
        .map_err(map_error)?;
    }
    for contact in &writes.contacts {
        let (value, sealed) = vault.indexed(
            t,
            column::CONTACT_VALUE,
            contact.to.kind().as_str(),
            contact.to.value(),
        )?;
        tx.prepare_cached(
            "INSERT INTO contacts (tenant_id, contact_id, workspace, channel, from_addr, kind, value,
                                   vertical, campaign, at, recorded_at, value_sealed)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
        )
        .and_then(|mut s| {
            s.execute(params![
                t,
                contact.contact_id,
                contact.workspace.as_str(),
                contact.channel.as_str(),
                contact.from,
                contact.to.kind().as_str(),
                value,
                contact.vertical,
                contact.campaign,
                micros(contact.at),
                micros(contact.recorded_at),
                sealed,
            ])
        })
        .map_err(map_error)?;
    }
    Ok(())
}

/// Evidence quotes what proves consent (the message that said STOP, with its sender): PII.
fn seal_evidence(
    vault: &Vault,
    tenant: &str,
    evidence: Option<&str>,
) -> StoreResult<Option<String>> {
    evidence
        .map(|e| vault.seal(tenant, column::CONSENT_EVIDENCE, e))
        .transpose()
}

const CONSENT_COLUMNS: &str = "event_id, COALESCE(subject_sealed, subject), purpose, action, source, evidence, workspace, occurred_at, recorded_at, recorded";

fn consent_row(row: &Row<'_>) -> rusqlite::Result<ConsentEventRow> {
    Ok(ConsentEventRow {
        event_id: row.get(0)?,
        subject: row.get(1)?,
        purpose: parsed(row, 2, Purpose::parse)?,
        action: parsed(row, 3, str::parse::<ConsentAction>)?,
        source: row.get(4)?,
        evidence: row.get(5)?,
        workspace: parsed(row, 6, WorkspaceName::parse)?,
        occurred_at: time(row, 7)?,
        recorded_at: time(row, 8)?,
        recorded: row.get(9)?,
    })
}

const SUPPRESSION_COLUMNS: &str =
    "entry_id, scope, workspace, kind, value, reason, action, note, actor, at, recorded";

fn suppression_row(row: &Row<'_>) -> rusqlite::Result<SuppressionRow> {
    let scope: String = row.get(1)?;
    let workspace: String = row.get(2)?;
    Ok(SuppressionRow {
        entry_id: row.get(0)?,
        scope: scope_from_columns(&scope, &workspace).ok_or_else(|| bad(1, "unknown scope"))?,
        identifier: identifier(row, 3, 4)?,
        reason: parsed(row, 5, str::parse)?,
        action: parsed(row, 6, |raw| {
            suppression_action_from(raw).ok_or("unknown action")
        })?,
        note: row.get(7)?,
        actor: row.get(8)?,
        at: time(row, 9)?,
        recorded: row.get(10)?,
    })
}

/// Subjects whose consent bears on the persons: every member and every identifier of them.
fn person_subjects(
    conn: &Connection,
    vault: &Vault,
    tenant: &str,
    persons: &[String],
    subjects: &mut BTreeSet<String>,
) -> StoreResult<()> {
    for person in persons {
        for member in members(conn, tenant, person)? {
            subjects.insert(ConsentSubject::key_of_person(&member));
        }
        let mut nodes = conn
            .prepare_cached(&format!(
                "SELECT kind, {NODE_STORED_VALUE} FROM identity_nodes WHERE tenant_id = ?1 AND person_id IN ({GROUP})"
            ))
            .map_err(map_error)?;
        let rows = nodes
            .query_map(params![tenant, person], |r| {
                let kind = parsed(r, 0, IdentifierKind::parse)?;
                let value = vault
                    .open(tenant, column::IDENTIFIER, r.get(1)?)
                    .map_err(in_row)?;
                Ok(Identifier::from_stored(kind, value))
            })
            .map_err(map_error)?;
        for node in rows {
            subjects.insert(vault.identifier_subject(tenant, &node.map_err(map_error)?));
        }
    }
    Ok(())
}

/// Consent events of subjects given in their lookup form, with their subjects opened.
fn consent_of(
    conn: &Connection,
    vault: &Vault,
    tenant: &str,
    subjects: &BTreeSet<String>,
) -> StoreResult<Vec<ConsentEventRow>> {
    let mut statement = conn
        .prepare_cached(&format!(
            "SELECT {CONSENT_COLUMNS} FROM consent_events WHERE tenant_id = ?1 AND subject = ?2"
        ))
        .map_err(map_error)?;
    let mut events = Vec::new();
    for subject in subjects {
        let rows = statement
            .query_map(params![tenant, subject], consent_row)
            .map_err(map_error)?;
        for row in rows {
            let mut event = row.map_err(map_error)?;
            vault.open_consent(tenant, &mut event)?;
            events.push(event);
        }
    }
    events.sort_by_key(|e| e.recorded);
    Ok(events)
}

pub(crate) fn suppression_history(
    conn: &Connection,
    vault: &Vault,
    tenant: &str,
    address: &Identifier,
) -> StoreResult<Vec<SuppressionRow>> {
    let kind = address.kind().as_str();
    let (own, global) = (
        vault.index(tenant, kind, address.value()),
        vault.index(GLOBAL_TENANT, kind, address.value()),
    );
    // An erased person's entries stay in force under the tombstone of their address.
    let stone = crate::deletion::salt(conn, tenant)?
        .map(|salt| idgraph_core::privacy::tombstone(&salt, address));
    // Left to itself the planner walks `suppression_by_recorded` for the ORDER BY, reading every
    // entry of the tenant for each address: a check-batch grew with the square of its size.
    let mut rows = conn
        .prepare_cached(&format!(
            "SELECT {SUPPRESSION_COLUMNS} FROM suppression_entries INDEXED BY suppression_by_value
             WHERE tenant_id IN (?1, '{GLOBAL_TENANT}') AND kind = ?2 AND value IN (?3, ?4, ?5)
             ORDER BY tenant_id, recorded"
        ))
        .and_then(|mut s| {
            s.query_map(params![tenant, kind, own, stone, global], suppression_row)?
                .collect::<rusqlite::Result<Vec<_>>>()
        })
        .map_err(map_error)?;
    for row in &mut rows {
        row.identifier = address.clone();
    }
    rows.sort_by_key(|r| r.at);
    Ok(rows)
}

pub(crate) fn facts(
    conn: &Connection,
    vault: &Vault,
    tenant: &str,
    workspace: &WorkspaceName,
    queries: &[FactsQuery],
) -> StoreResult<Vec<AddressFacts>> {
    // One read transaction: every address is judged against the same snapshot.
    let tx = conn.unchecked_transaction().map_err(map_error)?;
    let mut all = Vec::with_capacity(queries.len());
    for query in queries {
        let address = &query.address;
        let persons: Vec<String> = tx
            .prepare_cached(
                "SELECT DISTINCT COALESCE(p.merged_into, p.person_id) FROM identity_nodes n
                 JOIN persons p ON p.tenant_id = n.tenant_id AND p.person_id = n.person_id
                 WHERE n.tenant_id = ?1 AND n.kind = ?2 AND n.value = ?3 ORDER BY 1",
            )
            .and_then(|mut s| {
                s.query_map(
                    params![
                        tenant,
                        address.kind().as_str(),
                        vault.index(tenant, address.kind().as_str(), address.value())
                    ],
                    |r| r.get(0),
                )?
                .collect()
            })
            .map_err(map_error)?;
        let mut subjects = BTreeSet::from([vault.identifier_subject(tenant, address)]);
        person_subjects(&tx, vault, tenant, &persons, &mut subjects)?;
        let consent = consent_of(&tx, vault, tenant, &subjects)?;
        let suppressions = suppression_history(&tx, vault, tenant, address)?
            .into_iter()
            .filter(|row| scope_applies(&row.scope, workspace))
            .collect();
        let contacts = tx
            .prepare_cached(
                "SELECT contact_id, workspace, channel, from_addr, vertical, campaign, at, recorded_at
                 FROM contacts WHERE tenant_id = ?1 AND kind = ?2 AND value = ?3 AND at BETWEEN ?4 AND ?5",
            )
            .and_then(|mut s| {
                s.query_map(
                    params![
                        tenant,
                        address.kind().as_str(),
                        vault.index(tenant, address.kind().as_str(), address.value()),
                        micros(query.contacts_from),
                        micros(query.contacts_to)
                    ],
                    |r| {
                        Ok(ContactRow {
                            contact_id: r.get(0)?,
                            workspace: parsed(r, 1, WorkspaceName::parse)?,
                            channel: parsed(r, 2, str::parse::<Channel>)?,
                            from: r.get(3)?,
                            // Found by the address's blind index: it is the address.
                            to: address.clone(),
                            vertical: r.get(4)?,
                            campaign: r.get(5)?,
                            at: time(r, 6)?,
                            recorded_at: time(r, 7)?,
                        })
                    },
                )?
                .collect()
            })
            .map_err(map_error)?;
        all.push(AddressFacts {
            persons,
            suppressions,
            consent,
            contacts,
        });
    }
    tx.finish().map_err(map_error)?;
    Ok(all)
}

pub(crate) fn person_consent(
    conn: &Connection,
    vault: &Vault,
    tenant: &str,
    person_id: &str,
) -> StoreResult<Vec<ConsentEventRow>> {
    let tx = conn.unchecked_transaction().map_err(map_error)?;
    let canonical = canonical(&tx, tenant, person_id)?;
    let mut subjects = BTreeSet::new();
    person_subjects(&tx, vault, tenant, &[canonical], &mut subjects)?;
    let events = consent_of(&tx, vault, tenant, &subjects)?;
    tx.finish().map_err(map_error)?;
    Ok(events)
}

pub(crate) fn tenant_setting(
    conn: &Connection,
    tenant: &str,
    name: &str,
) -> StoreResult<Option<String>> {
    conn.prepare_cached("SELECT settings FROM tenant_settings WHERE tenant_id = ?1 AND name = ?2")
        .and_then(|mut s| s.query_row(params![tenant, name], |r| r.get(0)).optional())
        .map_err(map_error)
}

pub(crate) fn put_tenant_setting(
    tx: &Transaction<'_>,
    tenant: &str,
    name: &str,
    settings: &str,
    at: Timestamp,
) -> StoreResult<()> {
    tx.prepare_cached(
        "INSERT INTO tenant_settings (tenant_id, name, settings, updated_at) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (tenant_id, name) DO UPDATE SET settings = excluded.settings, updated_at = excluded.updated_at",
    )
    .and_then(|mut s| s.execute(params![tenant, name, settings, micros(at)]))
    .map(|_| ())
    .map_err(map_error)
}
