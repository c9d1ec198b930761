//! Ingestion: a Segment-style message becomes a signal (normalized identifiers, an event, trait
//! observations) and is resolved and recorded by the store.
//!
//! Identifiers come from `userId` (external_id), `anonymousId` (anonymous_id), `previousId` of an
//! alias (anonymous_id), `traits.email`/`context.traits.email` (email),
//! `traits.phone`/`context.traits.phone` (phone) and `context.idgraph.identifiers` (any kind,
//! including custom ones). Identify traits become trait observations of source class `user`
//! unless `context.idgraph.source_class` says otherwise; `context.idgraph.set_once` lists trait
//! names that are never overwritten once set.

use std::collections::BTreeSet;

use idgraph_core::identity::{Identifier, IdentifierKind, IdentitySettings};
use idgraph_core::tenancy::{TenantId, WorkspaceName};
use idgraph_core::traits::{Provenance, SourceClass};
use idgraph_store::{EventRow, IngestOutcome, SignalRecord, Store, TraitObservation};
use jiff::Timestamp;
use serde_json::{Map, Value};

use crate::AppError;

/// Segment's call types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageKind {
    Identify,
    Track,
    Page,
    Screen,
    Group,
    Alias,
}

impl MessageKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MessageKind::Identify => "identify",
            MessageKind::Track => "track",
            MessageKind::Page => "page",
            MessageKind::Screen => "screen",
            MessageKind::Group => "group",
            MessageKind::Alias => "alias",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        [
            Self::Identify,
            Self::Track,
            Self::Page,
            Self::Screen,
            Self::Group,
            Self::Alias,
        ]
        .into_iter()
        .find(|k| k.as_str() == raw)
    }
}

/// One message as the wire layer parsed it; `occurred_at` is already corrected for clock skew.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub kind: MessageKind,
    pub message_id: String,
    pub user_id: Option<String>,
    pub anonymous_id: Option<String>,
    pub previous_id: Option<String>,
    /// The event of a track call, the name of a page or screen.
    pub name: Option<String>,
    pub traits: Map<String, Value>,
    pub properties: Value,
    pub context: Value,
    pub group_id: Option<String>,
    pub occurred_at: Timestamp,
}

/// Why an identifier of an accepted message was left out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentifierRejection {
    pub kind: String,
    pub reason: String,
}

/// The result of preparing a message: a signal, or why the message cannot be one.
#[derive(Debug)]
pub struct Prepared {
    pub signal: SignalRecord,
    pub rejected_identifiers: Vec<IdentifierRejection>,
}

fn text_of(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        // Segment clients send numeric ids as numbers.
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn idgraph_context(context: &Value) -> Option<&Map<String, Value>> {
    context.get("idgraph").and_then(Value::as_object)
}

/// Turns a message into a signal: normalizes identifiers (keeping rejections to report), and
/// collects trait observations. Fails when no usable identifier is left.
pub fn prepare(
    settings: &IdentitySettings,
    workspace: &WorkspaceName,
    message: Message,
    event_id: String,
    ingested_at: Timestamp,
) -> Result<Prepared, AppError> {
    let mut raw: Vec<(String, String)> = Vec::new();
    if let Some(user_id) = &message.user_id {
        raw.push((IdentifierKind::EXTERNAL_ID.into(), user_id.clone()));
    }
    if let Some(anonymous_id) = &message.anonymous_id {
        raw.push((IdentifierKind::ANONYMOUS_ID.into(), anonymous_id.clone()));
    }
    if let Some(previous_id) = &message.previous_id {
        raw.push((IdentifierKind::ANONYMOUS_ID.into(), previous_id.clone()));
    }
    let context_traits = message.context.get("traits").and_then(Value::as_object);
    for kind in [IdentifierKind::EMAIL, IdentifierKind::PHONE] {
        let found = message
            .traits
            .get(kind)
            .or_else(|| context_traits.and_then(|t| t.get(kind)));
        if let Some(value) = found.and_then(text_of) {
            raw.push((kind.into(), value));
        }
    }
    let extra = idgraph_context(&message.context);
    if let Some(custom) = extra
        .and_then(|c| c.get("identifiers"))
        .and_then(Value::as_object)
    {
        for (kind, value) in custom {
            if let Some(value) = text_of(value) {
                raw.push((kind.clone(), value));
            }
        }
    }

    let mut identifiers: Vec<Identifier> = Vec::new();
    let mut rejected = Vec::new();
    for (kind, value) in raw {
        match settings.normalize(&kind, &value) {
            Ok(identifier) if !identifiers.contains(&identifier) => identifiers.push(identifier),
            Ok(_) => {}
            Err(rejection) => rejected.push(IdentifierRejection {
                kind,
                reason: rejection.to_string(),
            }),
        }
    }
    if identifiers.is_empty() {
        let why = rejected
            .iter()
            .map(|r| r.reason.clone())
            .collect::<Vec<_>>()
            .join("; ");
        return Err(AppError::invalid(
            "no_identifier",
            if why.is_empty() {
                "a message needs a userId or an anonymousId".to_owned()
            } else {
                format!("no usable identifier: {why}")
            },
        ));
    }

    let traits = if message.kind == MessageKind::Identify {
        trait_observations(&message, extra)?
    } else {
        Vec::new()
    };
    let properties = match message.kind {
        MessageKind::Identify => Value::Object(message.traits.clone()),
        MessageKind::Group => {
            serde_json::json!({"groupId": message.group_id, "traits": message.traits})
        }
        MessageKind::Alias => serde_json::json!({"previousId": message.previous_id}),
        _ => message.properties.clone(),
    };
    let source = format!("segment:{}", message.kind.as_str());
    let event = EventRow {
        event_id,
        workspace: workspace.clone(),
        kind: message.kind.as_str().to_owned(),
        name: message.name.clone(),
        occurred_at: message.occurred_at,
        ingested_at,
        schema_version: 1,
        message_id: message.message_id.clone(),
        properties: properties.to_string(),
        context: message.context.to_string(),
    };
    Ok(Prepared {
        signal: SignalRecord {
            event,
            identifiers,
            traits,
            source,
        },
        rejected_identifiers: rejected,
    })
}

fn trait_observations(
    message: &Message,
    extra: Option<&Map<String, Value>>,
) -> Result<Vec<TraitObservation>, AppError> {
    let class = match extra.and_then(|c| c.get("source_class")).and_then(Value::as_str) {
        Some(raw) => raw.parse::<SourceClass>().map_err(|_| {
            AppError::invalid(
                "invalid_input",
                format!("context.idgraph.source_class {raw:?} is not one of user, system, import, inferred"),
            )
        })?,
        None => SourceClass::User,
    };
    let confidence = match extra.and_then(|c| c.get("confidence")) {
        None => 1.0,
        Some(value) => value
            .as_f64()
            .filter(|c| (0.0..=1.0).contains(c))
            .ok_or_else(|| {
                AppError::invalid(
                    "invalid_input",
                    "context.idgraph.confidence must be a number from 0 to 1",
                )
            })?,
    };
    let set_once: BTreeSet<&str> = extra
        .and_then(|c| c.get("set_once"))
        .and_then(Value::as_array)
        .map(|names| names.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    Ok(message
        .traits
        .iter()
        .filter(|(_, value)| !value.is_null())
        .map(|(name, value)| TraitObservation {
            name: name.clone(),
            value: value.to_string(),
            provenance: Provenance {
                class,
                confidence,
                observed_at: message.occurred_at,
            },
            set_once: set_once.contains(name.as_str()),
        })
        .collect())
}

/// Counts of what happened to a batch.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct IngestReport {
    pub accepted: usize,
    pub duplicates: usize,
    pub persons_created: usize,
    pub merges: usize,
    pub conflicts: usize,
    pub identifiers_rejected: usize,
    /// Signals refused because they carry a deleted person's identifier: their position among
    /// the prepared signals and the erased identifiers' kinds.
    pub erased: Vec<(usize, Vec<String>)>,
}

/// Resolves and records prepared signals in order.
pub async fn record<S: Store>(
    store: &S,
    tenant_id: &TenantId,
    settings: &IdentitySettings,
    prepared: Vec<Prepared>,
) -> Result<IngestReport, AppError> {
    let mut report = IngestReport::default();
    let mut signals = Vec::with_capacity(prepared.len());
    for item in prepared {
        report.identifiers_rejected += item.rejected_identifiers.len();
        signals.push(item.signal);
    }
    let outcomes = store
        .ingest(tenant_id, settings, signals)
        .await
        .map_err(AppError::from_store("signal"))?;
    for (position, outcome) in outcomes.into_iter().enumerate() {
        match outcome {
            IngestOutcome::Duplicate => report.duplicates += 1,
            IngestOutcome::Erased { kinds } => report.erased.push((position, kinds)),
            IngestOutcome::Recorded {
                created,
                merges,
                conflicts,
                ..
            } => {
                report.accepted += 1;
                report.persons_created += usize::from(created);
                report.merges += merges;
                report.conflicts += conflicts;
            }
        }
    }
    Ok(report)
}
