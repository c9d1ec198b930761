//! Consent, suppression, contact records, inbound messages and the compliance gate.
//!
//! The cardinal rule: never allow contacting an opted-out, suppressed or in-cooldown address.
//! Every write here is committed before it is acknowledged and every check reads the store
//! afresh (there is no cache to go stale), so a check that starts after an acknowledged opt-out
//! denies, in any process sharing the database.

use std::collections::{BTreeMap, BTreeSet};

use idgraph_core::auth::Scope;
use idgraph_core::compliance::{
    Channel, Check, ComplianceSettings, ConsentAction, Decision, Keyword, Purpose,
    SuppressionAction, SuppressionReason, SuppressionScope, evaluate,
};
use idgraph_core::identity::{Identifier, IdentitySettings};
use idgraph_core::tenancy::{TenantId, WorkspaceName};
use idgraph_store::{
    ComplianceWrites, ConsentEventRow, ConsentSubject, ConsentWrite, ContactRow, EventRow,
    FactsQuery, SignalRecord, Store, StoreError, SuppressionRow,
};
use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};

use crate::access::Principal;
use crate::{AppError, ingest, new_id, settings};

/// The name compliance settings are stored under.
const SETTINGS: &str = "compliance";

/// The JSON shape of `GET/PUT /api/v1/settings/compliance`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ComplianceSettingsDoc {
    /// Purposes that need a current explicit grant before any contact.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub require_grant: Option<BTreeSet<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cooldown_days: Option<CooldownDoc>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CooldownDoc {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub same_vertical: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cross_vertical: Option<u32>,
}

fn days(n: u32) -> SignedDuration {
    SignedDuration::from_hours(i64::from(n) * 24)
}

pub fn settings_to_doc(settings: &ComplianceSettings) -> ComplianceSettingsDoc {
    let whole_days = |d: SignedDuration| u32::try_from(d.as_hours() / 24).unwrap_or(u32::MAX);
    ComplianceSettingsDoc {
        require_grant: Some(
            settings
                .require_grant
                .iter()
                .map(|p| p.as_str().to_owned())
                .collect(),
        ),
        cooldown_days: Some(CooldownDoc {
            same_vertical: Some(whole_days(settings.cooldown_same_vertical)),
            cross_vertical: Some(whole_days(settings.cooldown_cross_vertical)),
        }),
    }
}

fn apply_doc(
    base: &ComplianceSettings,
    doc: &ComplianceSettingsDoc,
) -> Result<ComplianceSettings, AppError> {
    let mut settings = base.clone();
    if let Some(purposes) = &doc.require_grant {
        settings.require_grant = purposes
            .iter()
            .map(|p| Purpose::parse(p))
            .collect::<Result<_, _>>()?;
    }
    if let Some(cooldown) = &doc.cooldown_days {
        if let Some(same) = cooldown.same_vertical {
            settings.cooldown_same_vertical = days(same);
        }
        if let Some(cross) = cooldown.cross_vertical {
            settings.cooldown_cross_vertical = days(cross);
        }
    }
    settings.validate()?;
    Ok(settings)
}

pub async fn load_settings<S: Store>(
    store: &S,
    tenant: &TenantId,
) -> Result<ComplianceSettings, AppError> {
    let stored = store
        .tenant_setting(tenant, SETTINGS)
        .await
        .map_err(AppError::from_store("settings"))?;
    let Some(text) = stored else {
        return Ok(ComplianceSettings::default());
    };
    let doc: ComplianceSettingsDoc = serde_json::from_str(&text)
        .map_err(|e| AppError::internal(format!("stored compliance settings unreadable: {e}")))?;
    apply_doc(&ComplianceSettings::default(), &doc)
}

pub async fn get_settings<S: Store>(
    store: &S,
    principal: &Principal,
) -> Result<ComplianceSettingsDoc, AppError> {
    principal.require(Scope::ConsentRead)?;
    Ok(settings_to_doc(
        &load_settings(store, &principal.tenant_id).await?,
    ))
}

/// Changes the tenant's compliance rules; fields left out keep their value. Applies to every
/// check made afterwards.
pub async fn put_settings<S: Store>(
    store: &S,
    principal: &Principal,
    doc: &ComplianceSettingsDoc,
) -> Result<ComplianceSettingsDoc, AppError> {
    principal.require(Scope::ConsentWrite)?;
    let current = load_settings(store, &principal.tenant_id).await?;
    let updated = apply_doc(&current, doc)?;
    let stored = serde_json::to_string(&settings_to_doc(&updated))
        .map_err(|e| AppError::internal(e.to_string()))?;
    store
        .put_tenant_setting(&principal.tenant_id, SETTINGS, stored, Timestamp::now())
        .await
        .map_err(AppError::from_store("settings"))?;
    Ok(settings_to_doc(&updated))
}

/// The workspace a management call acts in: the key's own, or the one named (default
/// `default`). A key bound to a workspace cannot name another.
pub fn workspace_for(
    principal: &Principal,
    named: Option<&str>,
) -> Result<WorkspaceName, AppError> {
    let named = named.map(WorkspaceName::parse).transpose()?;
    match (&principal.workspace, named) {
        (Some(own), Some(named)) if *own != named => Err(AppError::forbidden(format!(
            "this key is bound to workspace {own}"
        ))),
        (Some(own), _) => Ok(own.clone()),
        (None, Some(named)) => Ok(named),
        (None, None) => Ok(WorkspaceName::default_workspace()),
    }
}

fn address_of(
    identity: &IdentitySettings,
    channel: Channel,
    raw: &str,
) -> Result<Identifier, String> {
    identity
        .normalize(channel.identifier_kind(), raw)
        .map_err(|rejection| rejection.to_string())
}

fn normalized(identity: &IdentitySettings, kind: &str, raw: &str) -> Result<Identifier, AppError> {
    identity
        .normalize(kind, raw)
        .map_err(|rejection| AppError::invalid("invalid_identifier", rejection.to_string()))
}

/// `POST /api/v1/consent`.
#[derive(Debug, Clone, PartialEq)]
pub struct ConsentRequest {
    pub person_id: Option<String>,
    pub identifier: Option<(String, String)>,
    pub purpose: String,
    pub action: String,
    pub source: String,
    pub evidence: Option<String>,
    pub occurred_at: Option<Timestamp>,
    pub workspace: Option<String>,
}

/// Records a consent event; returns its id.
pub async fn record_consent<S: Store>(
    store: &S,
    principal: &Principal,
    request: ConsentRequest,
) -> Result<String, AppError> {
    principal.require(Scope::ConsentWrite)?;
    let workspace = workspace_for(principal, request.workspace.as_deref())?;
    let purpose = Purpose::parse(&request.purpose)?;
    let action: ConsentAction = request.action.parse()?;
    if request.source.trim().is_empty() {
        return Err(
            AppError::invalid("invalid_input", "source must not be empty")
                .with_detail("field", "source"),
        );
    }
    let subject = match (request.person_id, request.identifier) {
        (Some(person_id), None) => ConsentSubject::Person(person_id),
        (None, Some((kind, value))) => {
            let identity = settings::load(store, &principal.tenant_id).await?;
            ConsentSubject::Identifier(normalized(&identity, &kind, &value)?)
        }
        _ => {
            return Err(AppError::invalid(
                "invalid_input",
                "give exactly one of person_id and identifier",
            ));
        }
    };
    let now = Timestamp::now();
    let event_id = new_id();
    let write = ConsentWrite {
        event_id: event_id.clone(),
        subject,
        purpose,
        action,
        source: request.source,
        evidence: request.evidence,
        workspace,
        occurred_at: request.occurred_at.unwrap_or(now),
        recorded_at: now,
    };
    store
        .record_compliance(
            &principal.tenant_id,
            ComplianceWrites {
                consent: vec![write],
                ..ComplianceWrites::default()
            },
        )
        .await
        .map_err(AppError::from_store("person"))?;
    Ok(event_id)
}

/// `POST /api/v1/suppressions` and `/suppressions/lift`.
#[derive(Debug, Clone, PartialEq)]
pub struct SuppressionRequest {
    pub kind: String,
    pub value: String,
    pub reason: String,
    pub scope: String,
    pub workspace: Option<String>,
    pub note: Option<String>,
}

pub async fn suppress<S: Store>(
    store: &S,
    principal: &Principal,
    request: SuppressionRequest,
    action: SuppressionAction,
) -> Result<SuppressionRow, AppError> {
    principal.require(Scope::ConsentWrite)?;
    let scope = match request.scope.as_str() {
        "global" => {
            // The global list is shared by every tenant of the deployment.
            if !principal.is_master {
                return Err(AppError::forbidden(
                    "only the master key may change the global suppression list",
                ));
            }
            SuppressionScope::Global
        }
        "tenant" => SuppressionScope::Tenant,
        "workspace" => SuppressionScope::Workspace(
            workspace_for(principal, request.workspace.as_deref())?
                .as_str()
                .to_owned(),
        ),
        other => {
            return Err(AppError::invalid(
                "invalid_input",
                format!("scope {other:?} is not one of global, tenant, workspace"),
            )
            .with_detail("field", "scope"));
        }
    };
    let reason: SuppressionReason = request.reason.parse()?;
    let identity = settings::load(store, &principal.tenant_id).await?;
    let row = SuppressionRow {
        entry_id: new_id(),
        scope,
        identifier: normalized(&identity, &request.kind, &request.value)?,
        reason,
        action,
        note: request.note,
        actor: principal.key_id.clone(),
        at: Timestamp::now(),
        recorded: 0,
    };
    store
        .record_compliance(
            &principal.tenant_id,
            ComplianceWrites {
                suppressions: vec![row.clone()],
                ..ComplianceWrites::default()
            },
        )
        .await
        .map_err(AppError::from_store("suppression"))?;
    Ok(row)
}

/// Every add and lift of an address, in the tenant's lists and the global one.
pub async fn suppression_history<S: Store>(
    store: &S,
    principal: &Principal,
    kind: &str,
    value: &str,
) -> Result<Vec<SuppressionRow>, AppError> {
    principal.require(Scope::ConsentRead)?;
    let identity = settings::load(store, &principal.tenant_id).await?;
    let address = normalized(&identity, kind, value)?;
    store
        .suppression_history(&principal.tenant_id, &address)
        .await
        .map_err(AppError::from_store("suppression"))
}

/// One check of `POST /api/v1/compliance/check`.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckRequest {
    pub channel: String,
    pub to: String,
    pub purpose: String,
    pub vertical: Option<String>,
    pub at: Option<Timestamp>,
}

/// A decision, and the person the address belongs to if any.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckOutcome {
    pub decision: Decision,
    pub persons: Vec<String>,
}

/// Most checks a single call may carry.
pub const MAX_CHECKS: usize = 100_000;

/// Checks contacts against every rule; the answers come in the order of the requests. A
/// request that is malformed (unknown channel or purpose) fails the whole call; an address that
/// does not parse is a denial (`invalid_address`), not an error.
pub async fn check<S: Store>(
    store: &S,
    principal: &Principal,
    workspace: Option<&str>,
    requests: Vec<CheckRequest>,
) -> Result<Vec<CheckOutcome>, AppError> {
    principal.require(Scope::ConsentRead)?;
    if requests.len() > MAX_CHECKS {
        return Err(AppError::invalid(
            "too_many_checks",
            format!("at most {MAX_CHECKS} checks per call"),
        ));
    }
    let workspace = workspace_for(principal, workspace)?;
    let identity = settings::load(store, &principal.tenant_id).await?;
    let rules = load_settings(store, &principal.tenant_id).await?;
    let now = Timestamp::now();
    let window = rules.longest_cooldown();

    struct Parsed {
        purpose: Purpose,
        vertical: Option<String>,
        at: Timestamp,
        address: Result<Identifier, String>,
    }
    let mut parsed = Vec::with_capacity(requests.len());
    for (index, request) in requests.into_iter().enumerate() {
        let at_index = |e: AppError| e.with_detail("index", index.to_string());
        let channel: Channel = request
            .channel
            .parse()
            .map_err(|e: idgraph_core::ParseError| at_index(e.into()))?;
        let purpose = Purpose::parse(&request.purpose).map_err(|e| at_index(e.into()))?;
        if purpose.channel() != channel {
            return Err(at_index(AppError::invalid(
                "invalid_input",
                format!("purpose {purpose} is not a purpose of the {channel} channel"),
            )));
        }
        parsed.push(Parsed {
            address: address_of(&identity, channel, &request.to),
            purpose,
            vertical: request.vertical.filter(|v| !v.trim().is_empty()),
            at: request.at.unwrap_or(now),
        });
    }
    let queries: Vec<FactsQuery> = parsed
        .iter()
        .filter_map(|p| {
            let address = p.address.as_ref().ok()?;
            Some(FactsQuery {
                address: address.clone(),
                contacts_from: p.at.checked_sub(window).unwrap_or(Timestamp::MIN),
                contacts_to: p.at.checked_add(window).unwrap_or(Timestamp::MAX),
            })
        })
        .collect();
    let mut facts = store
        .compliance_facts(&principal.tenant_id, &workspace, queries)
        .await
        .map_err(AppError::from_store("facts"))?
        .into_iter();
    let mut outcomes = Vec::with_capacity(parsed.len());
    for p in &parsed {
        let (invalid, address_facts) = match &p.address {
            Ok(_) => (None, facts.next().unwrap_or_default()),
            Err(why) => (Some(why.as_str()), Default::default()),
        };
        let decision = evaluate(
            &rules,
            &Check {
                purpose: &p.purpose,
                vertical: p.vertical.as_deref(),
                at: p.at,
                invalid_address: invalid,
            },
            &address_facts.facts(),
        );
        metrics::counter!(
            "idgraph_compliance_checks_total",
            "allowed" => if decision.allowed { "true" } else { "false" }
        )
        .increment(1);
        outcomes.push(CheckOutcome {
            decision,
            persons: address_facts.persons,
        });
    }
    Ok(outcomes)
}

/// `POST /api/v1/contacts`.
#[derive(Debug, Clone, PartialEq)]
pub struct ContactRequest {
    pub channel: String,
    pub from: String,
    pub to: String,
    pub vertical: Option<String>,
    pub campaign: Option<String>,
    pub at: Option<Timestamp>,
    pub workspace: Option<String>,
}

/// Records a contact attempt (what cooldowns read) and puts it on the person's timeline.
pub async fn record_contact<S: Store>(
    store: &S,
    principal: &Principal,
    request: ContactRequest,
) -> Result<String, AppError> {
    principal.require(Scope::ConsentWrite)?;
    let workspace = workspace_for(principal, request.workspace.as_deref())?;
    let channel: Channel = request.channel.parse()?;
    let identity = settings::load(store, &principal.tenant_id).await?;
    let to = address_of(&identity, channel, &request.to)
        .map_err(|why| AppError::invalid("invalid_address", why).with_detail("field", "to"))?;
    if request.from.trim().is_empty() {
        return Err(AppError::invalid("invalid_input", "from must not be empty")
            .with_detail("field", "from"));
    }
    let now = Timestamp::now();
    let contact = ContactRow {
        contact_id: new_id(),
        workspace: workspace.clone(),
        channel,
        from: request.from.trim().to_owned(),
        to: to.clone(),
        vertical: request.vertical.filter(|v| !v.trim().is_empty()),
        campaign: request.campaign.filter(|c| !c.trim().is_empty()),
        at: request.at.unwrap_or(now),
        recorded_at: now,
    };
    // The record cooldowns read is written first: if the timeline entry then fails, the
    // contact still counts.
    store
        .record_compliance(
            &principal.tenant_id,
            ComplianceWrites {
                contacts: vec![contact.clone()],
                ..ComplianceWrites::default()
            },
        )
        .await
        .map_err(AppError::from_store("contact"))?;
    let properties = serde_json::json!({
        "channel": channel.as_str(),
        "from": contact.from,
        "to": to.value(),
        "vertical": contact.vertical,
        "campaign": contact.campaign,
        "contact_id": contact.contact_id,
    });
    timeline_event(
        store,
        &principal.tenant_id,
        &identity,
        TimelineEntry {
            workspace,
            kind: "contact",
            name: contact.campaign.clone(),
            occurred_at: contact.at,
            message_id: format!("contact:{}", contact.contact_id),
            properties,
            identifier: to,
            source: "contact",
        },
    )
    .await?;
    Ok(contact.contact_id)
}

struct TimelineEntry {
    workspace: WorkspaceName,
    kind: &'static str,
    name: Option<String>,
    occurred_at: Timestamp,
    message_id: String,
    properties: serde_json::Value,
    identifier: Identifier,
    source: &'static str,
}

/// Resolves the address like any signal and records the entry on its person's timeline.
async fn timeline_event<S: Store>(
    store: &S,
    tenant: &TenantId,
    identity: &IdentitySettings,
    entry: TimelineEntry,
) -> Result<ingest::IngestReport, AppError> {
    let now = Timestamp::now();
    let signal = SignalRecord {
        event: EventRow {
            event_id: new_id(),
            workspace: entry.workspace,
            kind: entry.kind.to_owned(),
            name: entry.name,
            occurred_at: entry.occurred_at,
            ingested_at: now,
            schema_version: 1,
            message_id: entry.message_id,
            properties: entry.properties.to_string(),
            context: "{}".to_owned(),
        },
        identifiers: vec![entry.identifier],
        traits: Vec::new(),
        source: entry.source.to_owned(),
    };
    ingest::record(
        store,
        tenant,
        identity,
        vec![ingest::Prepared {
            signal,
            rejected_identifiers: Vec::new(),
        }],
    )
    .await
}

/// An inbound message, from a Twilio-style webhook or its JSON equivalent.
#[derive(Debug, Clone, PartialEq)]
pub struct InboundMessage {
    pub from: String,
    pub to: String,
    pub body: String,
    pub channel: Option<String>,
    pub message_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct InboundOutcome {
    pub keyword: Option<Keyword>,
    /// False when the message id was seen before: nothing new was recorded.
    pub recorded: bool,
}

/// Records an inbound message on the sender's timeline; a STOP-family message opts the sender
/// out (a channel-wide consent revoke and a tenant-wide `opt_out` suppression), a START-family
/// message opts it back in (a channel-wide grant and a lift of that suppression). The opt-out
/// is written before anything else and is what the acknowledgement waits for.
pub async fn inbound<S: Store>(
    store: &S,
    principal: &Principal,
    message: InboundMessage,
) -> Result<InboundOutcome, AppError> {
    principal.require(Scope::EventsWrite)?;
    let workspace = principal
        .workspace
        .clone()
        .unwrap_or_else(WorkspaceName::default_workspace);
    let channel: Channel = match message.channel.as_deref() {
        None | Some("") => Channel::Sms,
        Some(raw) => raw.parse()?,
    };
    let identity = settings::load(store, &principal.tenant_id).await?;
    let from = address_of(&identity, channel, &message.from)
        .map_err(|why| AppError::invalid("invalid_address", why).with_detail("field", "from"))?;
    if message.to.trim().is_empty() {
        return Err(
            AppError::invalid("invalid_input", "to must not be empty").with_detail("field", "to")
        );
    }
    let keyword = Keyword::of(&message.body);
    let now = Timestamp::now();
    let message_id = message
        .message_id
        .filter(|id| !id.trim().is_empty())
        .unwrap_or_else(new_id);
    if let Some(keyword) = keyword {
        let evidence = serde_json::json!({
            "message_id": message_id, "from": message.from, "to": message.to, "body": message.body,
        })
        .to_string();
        let (action, suppression) = match keyword {
            Keyword::Stop => (ConsentAction::Revoke, SuppressionAction::Add),
            Keyword::Start => (ConsentAction::Grant, SuppressionAction::Lift),
        };
        let writes = ComplianceWrites {
            consent: vec![ConsentWrite {
                event_id: new_id(),
                subject: ConsentSubject::Identifier(from.clone()),
                purpose: Purpose::channel_wide(channel),
                action,
                source: format!("{channel}:inbound"),
                evidence: Some(evidence),
                workspace: workspace.clone(),
                occurred_at: now,
                recorded_at: now,
            }],
            suppressions: vec![SuppressionRow {
                entry_id: new_id(),
                scope: SuppressionScope::Tenant,
                identifier: from.clone(),
                reason: SuppressionReason::OptOut,
                action: suppression,
                note: Some(format!(
                    "{} reply to {}",
                    keyword.as_str().to_uppercase(),
                    message.to
                )),
                actor: "inbound".to_owned(),
                at: now,
                recorded: 0,
            }],
            contacts: Vec::new(),
        };
        store
            .record_compliance(&principal.tenant_id, writes)
            .await
            .map_err(AppError::from_store("opt-out"))?;
        metrics::counter!("idgraph_inbound_keywords_total", "keyword" => keyword.as_str())
            .increment(1);
    }
    let properties = serde_json::json!({
        "channel": channel.as_str(),
        "from": from.value(),
        "to": message.to,
        "body": message.body,
        "message_id": message_id,
        "keyword": keyword.map(Keyword::as_str),
    });
    let report = timeline_event(
        store,
        &principal.tenant_id,
        &identity,
        TimelineEntry {
            workspace,
            kind: "inbound_message",
            name: keyword.map(|k| k.as_str().to_owned()),
            occurred_at: now,
            message_id,
            properties,
            identifier: from,
            source: "inbound",
        },
    )
    .await?;
    Ok(InboundOutcome {
        keyword,
        recorded: report.duplicates == 0,
    })
}

/// The current consent of a person per purpose, with the event that set it, and the history.
#[derive(Debug, Clone, PartialEq)]
pub struct PersonConsent {
    pub person_id: String,
    /// Purpose → the deciding event (the most restrictive subject's latest).
    pub current: BTreeMap<String, ConsentEventRow>,
    pub history: Vec<ConsentEventRow>,
}

pub async fn person_consent<S: Store>(
    store: &S,
    principal: &Principal,
    person_id: &str,
) -> Result<PersonConsent, AppError> {
    principal.require(Scope::ConsentRead)?;
    let person = match store.get_person(&principal.tenant_id, person_id).await {
        Ok(row) => row.merged_into.unwrap_or(row.person_id),
        Err(StoreError::NotFound) => return Err(AppError::not_found("person")),
        Err(e) => return Err(AppError::from_store("person")(e)),
    };
    let history = store
        .person_consent(&principal.tenant_id, &person)
        .await
        .map_err(AppError::from_store("person"))?;
    // Per purpose and subject the latest event; then per purpose a revoke wins.
    let mut latest: BTreeMap<(&str, &str), &ConsentEventRow> = BTreeMap::new();
    for event in &history {
        let slot = latest
            .entry((event.purpose.as_str(), event.subject.as_str()))
            .or_insert(event);
        if (event.occurred_at, event.recorded) > (slot.occurred_at, slot.recorded) {
            *slot = event;
        }
    }
    let mut current: BTreeMap<String, ConsentEventRow> = BTreeMap::new();
    for ((purpose, _), event) in latest {
        let replace = match current.get(purpose) {
            None => true,
            Some(existing) => match (existing.action, event.action) {
                (ConsentAction::Grant, ConsentAction::Revoke) => true,
                (ConsentAction::Revoke, ConsentAction::Grant) => false,
                _ => {
                    (event.occurred_at, event.recorded) > (existing.occurred_at, existing.recorded)
                }
            },
        };
        if replace {
            current.insert(purpose.to_owned(), event.clone());
        }
    }
    Ok(PersonConsent {
        person_id: person,
        current,
        history,
    })
}
