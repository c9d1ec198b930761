//! Webhook subscriptions, the outbox of deliveries, and the events a change announces.
//!
//! Backends write outbox rows in the transaction of the change they announce, so a committed
//! change always has its deliveries and a rolled-back one never does. The payloads are built
//! here, once, so both backends announce the same JSON.

use idgraph_core::resolve::Resolution;
use idgraph_core::tenancy::WorkspaceName;
use idgraph_core::webhooks::EventType;
use jiff::Timestamp;
use serde_json::{Value, json};

use crate::{
    ComplianceWrites, ImportJob, MergeRow, SignalRecord, Unmerge, UnmergeOutcome, derived_id,
};

/// A webhook endpoint of a workspace.
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookSubscription {
    pub subscription_id: String,
    pub workspace: WorkspaceName,
    pub url: String,
    pub events: Vec<EventType>,
    /// The signing secret, sealed with the operator's data key; the store never sees it plain.
    pub secret_sealed: Vec<u8>,
    pub created_at: Timestamp,
    /// Set when the receiver answered 410 Gone (or an operator disabled it).
    pub disabled_at: Option<Timestamp>,
    pub disabled_reason: Option<String>,
}

/// Encodes event types for storage: `person.created,person.merged`.
pub fn encode_event_types(events: &[EventType]) -> String {
    events
        .iter()
        .map(|e| e.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

/// Decodes what [`encode_event_types`] wrote; unknown names (a newer binary's) are skipped.
pub fn decode_event_types(encoded: &str) -> Vec<EventType> {
    encoded
        .split(',')
        .filter_map(|name| name.parse().ok())
        .collect()
}

/// What the outbox needs of an active subscription to decide whether it wants an event.
#[derive(Debug, Clone, PartialEq)]
pub struct Subscriber {
    pub subscription_id: String,
    pub workspace: WorkspaceName,
    pub events: Vec<EventType>,
}

impl Subscriber {
    /// An event of a workspace goes to that workspace's subscriptions; an event of the whole
    /// tenant (a person, a tenant-wide suppression) goes to every workspace's.
    pub fn wants(&self, event: &WebhookEvent) -> bool {
        self.events.contains(&event.event_type)
            && event
                .workspace
                .as_ref()
                .is_none_or(|w| *w == self.workspace)
    }
}

/// The active subscriptions of a tenant, read inside the writing transaction.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Subscribers(pub Vec<Subscriber>);

impl Subscribers {
    /// Whether anyone listens for `event_type`: when nobody does, the event is not even built.
    pub fn any(&self, event_type: EventType) -> bool {
        self.0.iter().any(|s| s.events.contains(&event_type))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// One outbox row per (event, interested subscription), in event order.
    pub fn deliveries(&self, events: &[WebhookEvent]) -> Vec<NewDelivery> {
        let mut rows = Vec::new();
        for event in events {
            for subscriber in self.0.iter().filter(|s| s.wants(event)) {
                rows.push(NewDelivery {
                    delivery_id: format!("msg_{}_{}", event.event_id, subscriber.subscription_id),
                    subscription_id: subscriber.subscription_id.clone(),
                    event_type: event.event_type,
                    payload: event.payload(),
                    created_at: event.at,
                });
            }
        }
        rows
    }
}

/// An outbox row to insert.
#[derive(Debug, Clone, PartialEq)]
pub struct NewDelivery {
    /// The Standard Webhooks `webhook-id`: the same on every retry, so receivers can dedupe.
    pub delivery_id: String,
    pub subscription_id: String,
    pub event_type: EventType,
    /// JSON text, exactly the body that is signed and sent.
    pub payload: String,
    pub created_at: Timestamp,
}

/// Something that happened, to be announced to the subscriptions that asked for its type.
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookEvent {
    pub event_type: EventType,
    /// Unique in the tenant and derived from the change, so a replay announces the same id.
    pub event_id: String,
    /// `None` for events of the whole tenant.
    pub workspace: Option<WorkspaceName>,
    pub at: Timestamp,
    pub data: Value,
}

impl WebhookEvent {
    /// The delivered body: `{"id", "type", "timestamp", "workspace", "data"}`.
    pub fn payload(&self) -> String {
        json!({
            "id": self.event_id,
            "type": self.event_type.as_str(),
            "timestamp": self.at.to_string(),
            "workspace": self.workspace.as_ref().map(WorkspaceName::as_str),
            "data": self.data,
        })
        .to_string()
    }
}

fn identifiers_json(identifiers: &[idgraph_core::identity::Identifier]) -> Value {
    identifiers
        .iter()
        .map(|i| json!({"kind": i.kind().as_str(), "value": i.value()}))
        .collect()
}

/// What resolving one signal announces: a created person, each merge, an inbound message.
pub fn signal_events(
    subscribers: &Subscribers,
    signal: &SignalRecord,
    resolution: &Resolution,
) -> Vec<WebhookEvent> {
    if subscribers.is_empty() {
        return Vec::new();
    }
    let event = &signal.event;
    let workspace = Some(event.workspace.clone());
    let mut events = Vec::new();
    if resolution.created && subscribers.any(EventType::PersonCreated) {
        events.push(WebhookEvent {
            event_type: EventType::PersonCreated,
            event_id: format!("{}p", event.event_id),
            workspace: workspace.clone(),
            at: event.ingested_at,
            data: json!({
                "person_id": resolution.person,
                "identifiers": identifiers_json(&signal.identifiers),
                "signal": event.event_id,
            }),
        });
    }
    if subscribers.any(EventType::PersonMerged) {
        for (index, merge) in resolution.merges.iter().enumerate() {
            let merge_id = derived_id(&event.event_id, 'm', index);
            events.push(WebhookEvent {
                event_type: EventType::PersonMerged,
                event_id: merge_id.clone(),
                workspace: workspace.clone(),
                at: event.ingested_at,
                data: json!({
                    "merge_id": merge_id,
                    "survivor": merge.survivor,
                    "absorbed": merge.absorbed,
                    "reason": {"identifiers": identifiers_json(&merge.identifiers), "signal": event.event_id},
                }),
            });
        }
    }
    if event.kind == "inbound_message" && subscribers.any(EventType::MessageInbound) {
        let properties: Value = serde_json::from_str(&event.properties).unwrap_or(Value::Null);
        events.push(WebhookEvent {
            event_type: EventType::MessageInbound,
            event_id: format!("{}i", event.event_id),
            workspace,
            at: event.ingested_at,
            data: json!({
                "person_id": resolution.person,
                "event_id": event.event_id,
                "message": properties,
            }),
        });
    }
    events
}

/// What an operator's merge announces.
pub fn merge_event(merge: &MergeRow) -> WebhookEvent {
    WebhookEvent {
        event_type: EventType::PersonMerged,
        event_id: merge.merge_id.clone(),
        workspace: None,
        at: merge.at,
        data: json!({
            "merge_id": merge.merge_id,
            "survivor": merge.survivor,
            "absorbed": merge.absorbed,
            "reason": {"identifiers": identifiers_json(&merge.identifiers), "signal": merge.signal_id},
        }),
    }
}

/// What undoing a merge announces. A merge is undone at most once, so its id makes the event's.
pub fn unmerge_event(request: &Unmerge, outcome: &UnmergeOutcome) -> WebhookEvent {
    WebhookEvent {
        event_type: EventType::PersonUnmerged,
        event_id: format!("{}u", request.merge_id),
        workspace: None,
        at: request.at,
        data: json!({
            "merge_id": request.merge_id,
            "survivor": outcome.survivor,
            "restored": outcome.restored,
            "restored_members": outcome.restored_members,
            "events_moved": outcome.events_moved,
            "identifiers_moved": outcome.identifiers_moved,
            "rule_id": outcome.rule_id,
            "reason": request.reason,
        }),
    }
}

/// What consent and suppression writes announce (lifts and contacts announce nothing).
pub fn compliance_events(
    subscribers: &Subscribers,
    writes: &ComplianceWrites,
) -> Vec<WebhookEvent> {
    let mut events = Vec::new();
    if subscribers.any(EventType::ConsentChanged) {
        for consent in &writes.consent {
            let subject = match &consent.subject {
                crate::ConsentSubject::Person(id) => json!({"person_id": id}),
                crate::ConsentSubject::Identifier(i) => {
                    json!({"identifier": {"kind": i.kind().as_str(), "value": i.value()}})
                }
            };
            events.push(WebhookEvent {
                event_type: EventType::ConsentChanged,
                event_id: consent.event_id.clone(),
                workspace: Some(consent.workspace.clone()),
                at: consent.recorded_at,
                data: json!({
                    "consent_event_id": consent.event_id,
                    "subject": subject,
                    "purpose": consent.purpose.to_string(),
                    "action": consent.action.as_str(),
                    "source": consent.source,
                    "occurred_at": consent.occurred_at.to_string(),
                }),
            });
        }
    }
    if subscribers.any(EventType::SuppressionAdded) {
        for entry in writes
            .suppressions
            .iter()
            .filter(|e| e.action == idgraph_core::compliance::SuppressionAction::Add)
        {
            let (scope, workspace) = crate::scope_columns(&entry.scope);
            let workspace = WorkspaceName::parse(workspace).ok();
            events.push(WebhookEvent {
                event_type: EventType::SuppressionAdded,
                event_id: entry.entry_id.clone(),
                workspace,
                at: entry.at,
                data: json!({
                    "entry_id": entry.entry_id,
                    "kind": entry.identifier.kind().as_str(),
                    "value": entry.identifier.value(),
                    "reason": entry.reason.as_str(),
                    "scope": scope,
                }),
            });
        }
    }
    events
}

/// What finishing an import announces; a reprocessed job announces again under a new id.
pub fn import_completed_event(job: &ImportJob, at: Timestamp) -> WebhookEvent {
    let counts = &job.counts;
    WebhookEvent {
        event_type: EventType::ImportCompleted,
        event_id: format!("{}v{}", job.job_id, job.mapping.version),
        workspace: Some(job.workspace.clone()),
        at,
        data: json!({
            "import_id": job.job_id,
            "mode": job.mode.as_str(),
            "mapping_version": job.mapping.version,
            "counts": {
                "rows": job.landed,
                "landed": job.landed,
                "processed": job.processed,
                "rejected": counts.rejected,
                "persons_created": counts.persons_created,
                "persons_merged": counts.persons_merged,
                "identifiers_attached": counts.identifiers_attached,
                "conflicts": counts.conflicts,
                "duplicates": counts.duplicates,
                "suppressed": counts.suppressed,
            },
        }),
    }
}

/// What a person's deletion announces. Deletion is built separately: its store method calls
/// the backend's outbox writer with this event inside the deleting transaction.
pub fn person_deleted_event(person_id: &str, request_id: &str, at: Timestamp) -> WebhookEvent {
    WebhookEvent {
        event_type: EventType::PersonDeleted,
        event_id: format!("{request_id}d"),
        workspace: None,
        at,
        data: json!({"person_id": person_id}),
    }
}

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryStatus {
    /// Waiting for its (next) attempt.
    Pending,
    Delivered,
    /// Retried until the window closed.
    Failed,
    /// Its subscription was deleted first.
    Cancelled,
}

impl DeliveryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Failed => "failed",
            DeliveryStatus::Cancelled => "cancelled",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        [
            DeliveryStatus::Pending,
            DeliveryStatus::Delivered,
            DeliveryStatus::Failed,
            DeliveryStatus::Cancelled,
        ]
        .into_iter()
        .find(|s| s.as_str() == raw)
    }
}

/// An outbox row with where it stands.
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookDelivery {
    pub delivery_id: String,
    pub subscription_id: String,
    pub event_type: EventType,
    pub payload: String,
    pub status: DeliveryStatus,
    pub attempts: u32,
    pub created_at: Timestamp,
    pub next_attempt_at: Option<Timestamp>,
    pub last_status_code: Option<u16>,
    pub last_error: Option<String>,
    pub finished_at: Option<Timestamp>,
    /// Position in the tenant's outbox: deliveries of one endpoint go out in this order.
    pub seq: i64,
}

/// One try at delivering, as the delivery log shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct DeliveryAttempt {
    pub delivery_id: String,
    /// 1 for the first try.
    pub attempt: u32,
    pub at: Timestamp,
    pub status_code: Option<u16>,
    pub latency_ms: u64,
    /// Why it failed (timeout, connection refused, the status), or `None` when delivered.
    pub error: Option<String>,
}

/// Taking due deliveries for sending.
#[derive(Debug, Clone, PartialEq)]
pub struct DeliveryClaim {
    /// Who takes them: only this owner may record their attempts until the lease ends.
    pub owner: String,
    pub now: Timestamp,
    /// When another process may take a delivery whose sender went silent.
    pub lease_until: Timestamp,
    pub limit: u32,
}

/// A delivery taken for sending, with what sending needs.
#[derive(Debug, Clone, PartialEq)]
pub struct ClaimedDelivery {
    pub delivery: WebhookDelivery,
    pub url: String,
    pub secret_sealed: Vec<u8>,
}

/// What follows an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptNext {
    Delivered,
    RetryAt(Timestamp),
    /// The retry window is over.
    Failed,
    /// The receiver answered 410: the subscription is disabled; the delivery waits for a
    /// re-enable.
    Disable,
}

/// An attempt to log, and what follows it.
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptRecord {
    pub owner: String,
    pub attempt: DeliveryAttempt,
    pub next: AttemptNext,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subscriber(workspace: &str, events: &[EventType]) -> Subscriber {
        Subscriber {
            subscription_id: format!("s-{workspace}"),
            workspace: WorkspaceName::parse(workspace).unwrap(),
            events: events.to_vec(),
        }
    }

    #[test]
    fn events_go_to_their_workspace_and_tenant_events_to_all() {
        let subscribers = Subscribers(vec![
            subscriber("web", &[EventType::PersonCreated, EventType::PersonMerged]),
            subscriber("app", &[EventType::PersonMerged]),
        ]);
        let event = |event_type, workspace: Option<&str>| WebhookEvent {
            event_type,
            event_id: "e1".into(),
            workspace: workspace.map(|w| WorkspaceName::parse(w).unwrap()),
            at: Timestamp::UNIX_EPOCH,
            data: Value::Null,
        };
        let rows = subscribers.deliveries(&[
            event(EventType::PersonCreated, Some("web")),
            event(EventType::PersonCreated, Some("app")),
            event(EventType::PersonMerged, None),
            event(EventType::ConsentChanged, Some("web")),
        ]);
        let to: Vec<(&str, EventType)> = rows
            .iter()
            .map(|r| (r.subscription_id.as_str(), r.event_type))
            .collect();
        assert_eq!(
            to,
            [
                ("s-web", EventType::PersonCreated),
                ("s-web", EventType::PersonMerged),
                ("s-app", EventType::PersonMerged),
            ]
        );
        assert_eq!(rows[0].delivery_id, "msg_e1_s-web");
    }

    #[test]
    fn event_types_round_trip_through_storage() {
        let events = [EventType::ConsentChanged, EventType::MessageInbound];
        assert_eq!(decode_event_types(&encode_event_types(&events)), events);
        assert_eq!(
            decode_event_types("person.created,future.thing"),
            [EventType::PersonCreated]
        );
    }
}
