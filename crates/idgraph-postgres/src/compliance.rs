//! Consent, suppression and contact records on PostgreSQL, and the facts a compliance check
//! reads. A check reads in one REPEATABLE READ snapshot; every write is committed before it is
//! acknowledged, so a check that starts afterwards, in any process, sees it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::SystemTime;

use deadpool_postgres::{GenericClient, Transaction};
use idgraph_core::compliance::{Channel, ConsentAction, Purpose};
use idgraph_core::identity::{Identifier, IdentifierKind};
use idgraph_core::tenancy::{TenantId, WorkspaceName};
use idgraph_store::{
    AddressFacts, ComplianceWrites, ConsentEventRow, ConsentSubject, ContactRow, FactsQuery,
    GLOBAL_TENANT, StoreError, StoreResult, SuppressionRow, scope_applies, scope_columns,
    scope_from_columns, suppression_action_from, suppression_action_name, suppression_tenant,
};
use jiff::Timestamp;
use tokio_postgres::Row;

use crate::PostgresStore;
use idgraph_store::vault::{Vault, column};

use crate::codec::{map_error, to_sql_time};
use crate::resolve::{GROUP, query};

fn corrupt(what: impl std::fmt::Display) -> StoreError {
    StoreError::Other(format!("unreadable compliance row: {what}"))
}

fn time(row: &Row, index: usize) -> StoreResult<Timestamp> {
    let raw: SystemTime = row.try_get(index).map_err(map_error)?;
    Timestamp::try_from(raw).map_err(corrupt)
}

fn text(row: &Row, index: usize) -> StoreResult<String> {
    row.try_get(index).map_err(map_error)
}

fn identifier(row: &Row, kind: usize, value: usize) -> StoreResult<Identifier> {
    let kind = IdentifierKind::parse(&text(row, kind)?).map_err(corrupt)?;
    let value = text(row, value)?;
    if value.is_empty() {
        return Err(corrupt("empty identifier value"));
    }
    Ok(Identifier::from_stored(kind, value))
}

async fn members(
    client: &impl GenericClient,
    tenant: &str,
    canonical: &str,
) -> StoreResult<Vec<String>> {
    Ok(client
        .query(GROUP, &[&tenant, &canonical])
        .await
        .map_err(map_error)?
        .iter()
        .map(|r| r.get(0))
        .collect())
}

async fn canonical(
    client: &impl GenericClient,
    tenant: &str,
    person_id: &str,
) -> StoreResult<String> {
    let row = client
        .query_opt(
            "SELECT merged_into FROM persons WHERE tenant_id = $1 AND person_id = $2",
            &[&tenant, &person_id],
        )
        .await
        .map_err(map_error)?
        .ok_or(StoreError::NotFound)?;
    let merged_into: Option<String> = row.get(0);
    Ok(merged_into.unwrap_or_else(|| person_id.to_owned()))
}

pub(crate) async fn record(
    tx: &Transaction<'_>,
    vault: &Vault,
    tenant: &TenantId,
    writes: ComplianceWrites,
) -> StoreResult<()> {
    let t = tenant.as_str();
    for write in &writes.consent {
        // (lookup form, key): a person's key is its own lookup form.
        let subjects: Vec<(String, String)> = match &write.subject {
            ConsentSubject::Person(person_id) => {
                let canonical = canonical(tx, t, person_id).await?;
                members(tx, t, &canonical)
                    .await?
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
        for (subject, key) in subjects {
            let sealed = vault.seal_subject(t, &key)?;
            let evidence = seal_evidence(vault, t, write.evidence.as_deref())?;
            tx.execute(
                "INSERT INTO consent_events (tenant_id, event_id, subject, purpose, action, source, evidence,
                                             workspace, occurred_at, recorded_at, subject_sealed)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
                &[
                    &t,
                    &write.event_id,
                    &subject,
                    &write.purpose.as_str(),
                    &write.action.as_str(),
                    &write.source,
                    &evidence,
                    &write.workspace.as_str(),
                    &to_sql_time(write.occurred_at),
                    &to_sql_time(write.recorded_at),
                    &sealed,
                ],
            )
            .await
            .map_err(map_error)?;
        }
    }
    for row in &writes.suppressions {
        let (scope, workspace) = scope_columns(&row.scope);
        let stored_under = suppression_tenant(tenant, &row.scope);
        // A global entry is indexed under the global list's own label, which every tenant's
        // check also looks up.
        let (value, sealed) = vault.indexed(
            stored_under,
            column::SUPPRESSION_VALUE,
            row.identifier.kind().as_str(),
            row.identifier.value(),
        )?;
        tx.execute(
            "INSERT INTO suppression_entries (tenant_id, entry_id, scope, workspace, kind, value, reason,
                                              action, note, actor, at, value_sealed)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
            &[
                &stored_under,
                &row.entry_id,
                &scope,
                &workspace,
                &row.identifier.kind().as_str(),
                &value,
                &row.reason.as_str(),
                &suppression_action_name(row.action),
                &row.note,
                &row.actor,
                &to_sql_time(row.at),
                &sealed,
            ],
        )
        .await
        .map_err(map_error)?;
    }
    for contact in &writes.contacts {
        let (value, sealed) = vault.indexed(
            t,
            column::CONTACT_VALUE,
            contact.to.kind().as_str(),
            contact.to.value(),
        )?;
        tx.execute(
            "INSERT INTO contacts (tenant_id, contact_id, workspace, channel, from_addr, kind, value,
                                   vertical, campaign, at, recorded_at, value_sealed)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
            &[
                &t,
                &contact.contact_id,
                &contact.workspace.as_str(),
                &contact.channel.as_str(),
                &contact.from,
                &contact.to.kind().as_str(),
                &value,
                &contact.vertical,
                &contact.campaign,
                &to_sql_time(contact.at),
                &to_sql_time(contact.recorded_at),
                &sealed,
            ],
        )
        .await
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

fn consent_row(row: &Row) -> StoreResult<ConsentEventRow> {
    Ok(ConsentEventRow {
        event_id: text(row, 0)?,
        subject: text(row, 1)?,
        purpose: Purpose::parse(&text(row, 2)?).map_err(corrupt)?,
        action: text(row, 3)?.parse::<ConsentAction>().map_err(corrupt)?,
        source: text(row, 4)?,
        evidence: row.try_get(5).map_err(map_error)?,
        workspace: WorkspaceName::parse(&text(row, 6)?).map_err(corrupt)?,
        occurred_at: time(row, 7)?,
        recorded_at: time(row, 8)?,
        recorded: row.try_get(9).map_err(map_error)?,
    })
}

const SUPPRESSION_COLUMNS: &str =
    "entry_id, scope, workspace, kind, value, reason, action, note, actor, at, recorded";

fn suppression_row(row: &Row) -> StoreResult<SuppressionRow> {
    suppression_columns(row, 0)
}

/// A suppression entry from [`SUPPRESSION_COLUMNS`] starting at column `at`.
fn suppression_columns(row: &Row, at: usize) -> StoreResult<SuppressionRow> {
    let (scope, workspace) = (text(row, at + 1)?, text(row, at + 2)?);
    Ok(SuppressionRow {
        entry_id: text(row, at)?,
        scope: scope_from_columns(&scope, &workspace).ok_or_else(|| corrupt("unknown scope"))?,
        identifier: identifier(row, at + 3, at + 4)?,
        reason: text(row, at + 5)?.parse().map_err(corrupt)?,
        action: suppression_action_from(&text(row, at + 6)?)
            .ok_or_else(|| corrupt("unknown action"))?,
        note: row.try_get(at + 7).map_err(map_error)?,
        actor: text(row, at + 8)?,
        at: time(row, at + 9)?,
        recorded: row.try_get(at + 10).map_err(map_error)?,
    })
}

async fn person_subjects(
    client: &impl GenericClient,
    vault: &Vault,
    tenant: &str,
    persons: &[String],
    subjects: &mut BTreeSet<String>,
) -> StoreResult<()> {
    for person in persons {
        for member in members(client, tenant, person).await? {
            subjects.insert(ConsentSubject::key_of_person(&member));
        }
        let rows = client
            .query(
                &format!(
                    "SELECT kind, COALESCE(value_sealed, value) FROM identity_nodes WHERE tenant_id = $1 AND person_id IN ({GROUP})"
                ),
                &[&tenant, person],
            )
            .await
            .map_err(map_error)?;
        for row in &rows {
            let kind = IdentifierKind::parse(&text(row, 0)?).map_err(corrupt)?;
            let value = vault.open(tenant, column::IDENTIFIER, text(row, 1)?)?;
            subjects
                .insert(vault.identifier_subject(tenant, &Identifier::from_stored(kind, value)));
        }
    }
    Ok(())
}

/// Consent events of subjects given in their lookup form, with their subjects opened.
async fn consent_of(
    client: &impl GenericClient,
    vault: &Vault,
    tenant: &str,
    subjects: &BTreeSet<String>,
) -> StoreResult<Vec<ConsentEventRow>> {
    let subjects: Vec<&str> = subjects.iter().map(String::as_str).collect();
    let rows = client
        .query(
            &format!(
                "SELECT {CONSENT_COLUMNS} FROM consent_events
                 WHERE tenant_id = $1 AND subject = ANY($2) ORDER BY recorded"
            ),
            &[&tenant, &subjects],
        )
        .await
        .map_err(map_error)?;
    rows.iter()
        .map(|row| {
            let mut event = consent_row(row)?;
            vault.open_consent(tenant, &mut event)?;
            Ok(event)
        })
        .collect()
}

async fn suppressions_of(
    client: &impl GenericClient,
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
    let stone = crate::deletion::salt(client, tenant)
        .await?
        .map(|salt| idgraph_core::privacy::tombstone(&salt, address));
    let rows = client
        .query(
            &format!(
                "SELECT {SUPPRESSION_COLUMNS} FROM suppression_entries
                 WHERE tenant_id IN ($1, '{GLOBAL_TENANT}') AND kind = $2 AND value IN ($3, $4, $5)
                 ORDER BY at, recorded"
            ),
            &[&tenant, &kind, &own, &stone, &global],
        )
        .await
        .map_err(map_error)?;
    rows.iter()
        .map(|row| {
            suppression_row(row).map(|mut entry| {
                entry.identifier = address.clone();
                entry
            })
        })
        .collect()
}

impl PostgresStore {
    pub(crate) async fn write_compliance(
        &self,
        tenant: &TenantId,
        writes: ComplianceWrites,
    ) -> StoreResult<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(map_error)?;
        let subscribers = crate::webhooks::subscribers(&tx, tenant.as_str()).await?;
        let events = idgraph_store::compliance_events(&subscribers, &writes);
        record(&tx, &self.vault(), tenant, writes).await?;
        crate::webhooks::enqueue(&tx, &self.vault(), tenant.as_str(), &subscribers, &events)
            .await?;
        tx.commit().await.map_err(map_error)
    }

    pub(crate) async fn read_facts(
        &self,
        tenant: &str,
        workspace: &WorkspaceName,
        queries: Vec<FactsQuery>,
    ) -> StoreResult<Vec<AddressFacts>> {
        let mut client = self.client().await?;
        // One snapshot for every address of the call.
        let tx = client
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .map_err(map_error)?;
        let vault = self.vault();
        let salt = crate::deletion::salt(&tx, tenant).await?;
        let mut all = Vec::with_capacity(queries.len());
        for chunk in queries.chunks(FACTS_CHUNK) {
            let facts = chunk_facts(&tx, &vault, tenant, salt.as_deref(), chunk).await?;
            all.extend(facts.into_iter().map(|mut facts| {
                facts
                    .suppressions
                    .retain(|row| scope_applies(&row.scope, workspace));
                facts
            }));
        }
        tx.commit().await.map_err(map_error)?;
        Ok(all)
    }

    pub(crate) async fn read_person_consent(
        &self,
        tenant: &str,
        person_id: &str,
    ) -> StoreResult<Vec<ConsentEventRow>> {
        let mut client = self.client().await?;
        let tx = client
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .map_err(map_error)?;
        let canonical = canonical(&tx, tenant, person_id).await?;
        let mut subjects = BTreeSet::new();
        let vault = self.vault();
        person_subjects(&tx, &vault, tenant, &[canonical], &mut subjects).await?;
        let events = consent_of(&tx, &vault, tenant, &subjects).await?;
        tx.commit().await.map_err(map_error)?;
        Ok(events)
    }

    pub(crate) async fn read_suppression_history(
        &self,
        tenant: &str,
        address: &Identifier,
    ) -> StoreResult<Vec<SuppressionRow>> {
        let client = self.client().await?;
        suppressions_of(&client, &self.vault(), tenant, address).await
    }

    pub(crate) async fn read_tenant_setting(
        &self,
        tenant: &str,
        name: &str,
    ) -> StoreResult<Option<String>> {
        let row = self
            .client()
            .await?
            .query_opt(
                "SELECT settings FROM tenant_settings WHERE tenant_id = $1 AND name = $2",
                &[&tenant, &name],
            )
            .await
            .map_err(map_error)?;
        Ok(row.map(|r| r.get(0)))
    }

    pub(crate) async fn write_tenant_setting(
        &self,
        tenant: &str,
        name: &str,
        settings: &str,
        at: Timestamp,
    ) -> StoreResult<()> {
        self.client()
            .await?
            .execute(
                "INSERT INTO tenant_settings (tenant_id, name, settings, updated_at) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (tenant_id, name) DO UPDATE SET settings = EXCLUDED.settings, updated_at = EXCLUDED.updated_at",
                &[&tenant, &name, &settings, &to_sql_time(at)],
            )
            .await
            .map_err(map_error)?;
        Ok(())
    }
}

/// Addresses read together: five statements for each this many addresses, whatever they hold
/// (one address at a time, a check-batch of 100,000 numbers was a million round trips).
const FACTS_CHUNK: usize = 1_000;

/// What the gate needs to know about each of `queries`, in their order: the holders, the
/// subjects their consent can be recorded under, that consent, the address's suppression
/// entries (every scope: the caller keeps those of its workspace) and its contacts.
async fn chunk_facts(
    tx: &Transaction<'_>,
    vault: &Vault,
    tenant: &str,
    salt: Option<&[u8]>,
    queries: &[FactsQuery],
) -> StoreResult<Vec<AddressFacts>> {
    let kinds: Vec<&str> = queries.iter().map(|q| q.address.kind().as_str()).collect();
    // Each address's blind index, for the holders' and the contacts' reads.
    let indexes: Vec<String> = queries
        .iter()
        .map(|q| vault.index(tenant, q.address.kind().as_str(), q.address.value()))
        .collect();
    let mut facts = vec![AddressFacts::default(); queries.len()];

    // Holders: the canonical persons of the nodes carrying each address.
    let rows = query(
        tx,
        "SELECT a.i, h.holder
             FROM unnest($2::text[], $3::text[]) WITH ORDINALITY AS a(kind, value, i)
             CROSS JOIN LATERAL (
                 SELECT DISTINCT COALESCE(p.merged_into, p.person_id) AS holder
                 FROM identity_nodes n
                 JOIN persons p ON p.tenant_id = n.tenant_id AND p.person_id = n.person_id
                 WHERE n.tenant_id = $1 AND n.kind = a.kind AND n.value = a.value
                 OFFSET 0
             ) h",
        &[&tenant, &kinds, &indexes],
    )
    .await?;
    for row in &rows {
        facts[position(row, 0)?].persons.push(text(row, 1)?);
    }
    for address in &mut facts {
        address.persons.sort_unstable();
    }

    // Subjects: each holder's group members and every identifier the group holds.
    let holders: Vec<&str> = facts
        .iter()
        .flat_map(|f| f.persons.iter().map(String::as_str))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut held: HashMap<String, Vec<String>> = HashMap::new();
    if !holders.is_empty() {
        let rows = query(
            tx,
            "SELECT h.person, m.member, n.kind, COALESCE(n.value_sealed, n.value)
                 FROM unnest($2::text[]) AS h(person)
                 CROSS JOIN LATERAL (
                     SELECT h.person AS member
                     UNION ALL
                     SELECT person_id FROM persons WHERE tenant_id = $1 AND merged_into = h.person
                 ) m
                 LEFT JOIN LATERAL (
                     SELECT kind, value, value_sealed FROM identity_nodes
                     WHERE tenant_id = $1 AND person_id = m.member
                     OFFSET 0
                 ) n ON true",
            &[&tenant, &holders],
        )
        .await?;
        for row in &rows {
            let subjects = held.entry(text(row, 0)?).or_default();
            subjects.push(ConsentSubject::key_of_person(&text(row, 1)?));
            let kind: Option<String> = row.try_get(2).map_err(map_error)?;
            if let Some(kind) = kind {
                let kind = IdentifierKind::parse(&kind).map_err(corrupt)?;
                let value = vault.open(tenant, column::IDENTIFIER, text(row, 3)?)?;
                subjects
                    .push(vault.identifier_subject(tenant, &Identifier::from_stored(kind, value)));
            }
        }
    }
    // Which addresses each subject speaks for: the address itself, and every member and
    // identifier of the address's holders.
    let mut addressed: BTreeMap<String, BTreeSet<usize>> = BTreeMap::new();
    for (i, (query, address)) in queries.iter().zip(&facts).enumerate() {
        let own = vault.identifier_subject(tenant, &query.address);
        addressed.entry(own).or_default().insert(i);
        for subject in address.persons.iter().filter_map(|p| held.get(p)).flatten() {
            addressed.entry(subject.clone()).or_default().insert(i);
        }
    }

    // Consent under any of those subjects, handed to every address the subject speaks for.
    let wanted: Vec<&str> = addressed.keys().map(String::as_str).collect();
    let rows = query(
        tx,
        &format!(
            "SELECT {CONSENT_COLUMNS}, subject FROM consent_events
                 WHERE tenant_id = $1 AND subject = ANY($2) ORDER BY recorded"
        ),
        &[&tenant, &wanted],
    )
    .await?;
    for row in &rows {
        let Some(addresses) = addressed.get(&text(row, 10)?) else {
            continue;
        };
        let mut event = consent_row(row)?;
        vault.open_consent(tenant, &mut event)?;
        for &i in addresses {
            facts[i].consent.push(event.clone());
        }
    }

    // Suppression entries: the address's own, its global ones, and (an erased person's entries
    // stay in force) those under the tombstone of the address. Every (tenant, value) pair is
    // its own equality probe: written as `IN` lists, the planner kept only the tenant and kind
    // as the index condition and filtered every entry of the kind for each address.
    let owns: Vec<&str> = indexes.iter().map(String::as_str).collect();
    let globals: Vec<String> = queries
        .iter()
        .map(|q| vault.index(GLOBAL_TENANT, q.address.kind().as_str(), q.address.value()))
        .collect();
    let stones: Vec<Option<String>> = queries
        .iter()
        .map(|q| salt.map(|salt| idgraph_core::privacy::tombstone(salt, &q.address)))
        .collect();
    let rows = query(
        tx,
            &format!(
                "SELECT a.i, s.* FROM unnest($2::text[], $3::text[], $4::text[], $5::text[])
                     WITH ORDINALITY AS a(kind, own, stone, global, i)
                 CROSS JOIN LATERAL (
                     SELECT e.* FROM (VALUES ($1::text), ('{GLOBAL_TENANT}')) AS t(tenant)
                     CROSS JOIN (SELECT DISTINCT v FROM (VALUES (a.own), (a.stone), (a.global)) AS x(v)) AS v
                     CROSS JOIN LATERAL (
                         SELECT {SUPPRESSION_COLUMNS} FROM suppression_entries
                         WHERE tenant_id = t.tenant AND kind = a.kind AND value = v.v
                         OFFSET 0
                     ) e
                 ) s
                 ORDER BY a.i, s.at, s.recorded"
            ),
            &[&tenant, &kinds, &owns, &stones, &globals],
    )
        .await?;
    for row in &rows {
        let i = position(row, 0)?;
        let mut entry = suppression_columns(row, 1)?;
        entry.identifier = queries[i].address.clone();
        facts[i].suppressions.push(entry);
    }

    // Contacts within each address's window.
    let froms: Vec<SystemTime> = queries
        .iter()
        .map(|q| to_sql_time(q.contacts_from))
        .collect();
    let tos: Vec<SystemTime> = queries.iter().map(|q| to_sql_time(q.contacts_to)).collect();
    let rows = query(
        tx,
        "SELECT a.i, c.contact_id, c.workspace, c.channel, c.from_addr, c.vertical,
                    c.campaign, c.at, c.recorded_at
             FROM unnest($2::text[], $3::text[], $4::timestamptz[], $5::timestamptz[])
                 WITH ORDINALITY AS a(kind, value, from_at, to_at, i)
             CROSS JOIN LATERAL (
                 SELECT contact_id, workspace, channel, from_addr, vertical, campaign, at,
                        recorded_at
                 FROM contacts
                 WHERE tenant_id = $1 AND kind = a.kind AND value = a.value
                   AND at BETWEEN a.from_at AND a.to_at
                 OFFSET 0
             ) c",
        &[&tenant, &kinds, &owns, &froms, &tos],
    )
    .await?;
    for r in &rows {
        let i = position(r, 0)?;
        facts[i].contacts.push(ContactRow {
            contact_id: text(r, 1)?,
            workspace: WorkspaceName::parse(&text(r, 2)?).map_err(corrupt)?,
            channel: text(r, 3)?.parse::<Channel>().map_err(corrupt)?,
            from: text(r, 4)?,
            // Found by the address's blind index: it is the address.
            to: queries[i].address.clone(),
            vertical: r.try_get(5).map_err(map_error)?,
            campaign: r.try_get(6).map_err(map_error)?,
            at: time(r, 7)?,
            recorded_at: time(r, 8)?,
        });
    }
    Ok(facts)
}

/// The index into the chunk of a row's `WITH ORDINALITY` column (which counts from 1).
fn position(row: &Row, index: usize) -> StoreResult<usize> {
    let ordinal: i64 = row.try_get(index).map_err(map_error)?;
    usize::try_from(ordinal - 1).map_err(|_| corrupt("an ordinality out of range"))
}
