//! Rows of the compliance logs (consent events, suppression entries, contact records) and what
//! the store gathers for a check. All three logs are append-only: a lift or a revoke is a new
//! row, never an update, so the history of every decision stays readable.

use idgraph_core::compliance::{
    Channel, ConsentAction, ConsentFact, ContactFact, Purpose, SuppressionAction, SuppressionFact,
    SuppressionReason, SuppressionScope,
};
use idgraph_core::identity::Identifier;
use idgraph_core::tenancy::{TenantId, WorkspaceName};
use jiff::Timestamp;

/// Suppression entries of scope `global` are stored under this tenant id. It cannot be a real
/// tenant's id (those start with a letter or digit), and only the master key writes it.
pub const GLOBAL_TENANT: &str = "_global";

/// What every person subject key starts with.
pub const PERSON_SUBJECT_PREFIX: &str = "person:";

/// Whose consent an event is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConsentSubject {
    /// A person: the store records the event for every person merged into it too, so a
    /// revocation outlives an unmerge and a later merge cannot hide it (an unmerge withdraws
    /// the restored side's copies of grants).
    Person(String),
    /// A raw identifier, known to the graph or not; it follows the identifier into whichever
    /// person holds it.
    Identifier(Identifier),
}

impl ConsentSubject {
    /// The stored key of a subject: `person:<id>` or `<kind>:<value>`.
    pub fn key_of_person(person_id: &str) -> String {
        format!("{PERSON_SUBJECT_PREFIX}{person_id}")
    }

    pub fn key_of_identifier(identifier: &Identifier) -> String {
        format!("{}:{}", identifier.kind(), identifier.value())
    }
}

/// A consent event to record.
#[derive(Debug, Clone, PartialEq)]
pub struct ConsentWrite {
    pub event_id: String,
    pub subject: ConsentSubject,
    pub purpose: Purpose,
    pub action: ConsentAction,
    /// Where it came from (`api`, `sms:inbound`, an import job...).
    pub source: String,
    /// JSON text: what proves it (a form URL, an IP address, the message that said STOP).
    pub evidence: Option<String>,
    pub workspace: WorkspaceName,
    pub occurred_at: Timestamp,
    pub recorded_at: Timestamp,
}

/// A stored consent event. `recorded` orders events recorded in the same tenant.
#[derive(Debug, Clone, PartialEq)]
pub struct ConsentEventRow {
    pub event_id: String,
    /// `person:<id>` or `<kind>:<value>`.
    pub subject: String,
    pub purpose: Purpose,
    pub action: ConsentAction,
    pub source: String,
    pub evidence: Option<String>,
    pub workspace: WorkspaceName,
    pub occurred_at: Timestamp,
    pub recorded_at: Timestamp,
    pub recorded: i64,
}

impl ConsentEventRow {
    pub fn fact(&self) -> ConsentFact {
        ConsentFact {
            subject: self.subject.clone(),
            purpose: self.purpose.clone(),
            action: self.action,
            occurred_at: self.occurred_at,
            recorded: self.recorded,
            event_id: self.event_id.clone(),
        }
    }
}

/// A suppression add or lift to record, or as stored (`recorded` is set by the store).
#[derive(Debug, Clone, PartialEq)]
pub struct SuppressionRow {
    pub entry_id: String,
    pub scope: SuppressionScope,
    pub identifier: Identifier,
    pub reason: SuppressionReason,
    pub action: SuppressionAction,
    /// Why a lift was made, or any note on an add.
    pub note: Option<String>,
    /// The key that recorded it, or `inbound` for a keyword reply.
    pub actor: String,
    pub at: Timestamp,
    pub recorded: i64,
}

impl SuppressionRow {
    pub fn fact(&self) -> SuppressionFact {
        SuppressionFact {
            scope: self.scope.clone(),
            reason: self.reason,
            action: self.action,
            recorded: self.recorded,
            entry_id: self.entry_id.clone(),
            at: self.at,
        }
    }
}

/// A contact attempt: what cooldown rules read.
#[derive(Debug, Clone, PartialEq)]
pub struct ContactRow {
    pub contact_id: String,
    pub workspace: WorkspaceName,
    pub channel: Channel,
    pub from: String,
    pub to: Identifier,
    pub vertical: Option<String>,
    pub campaign: Option<String>,
    pub at: Timestamp,
    pub recorded_at: Timestamp,
}

impl ContactRow {
    pub fn fact(&self) -> ContactFact {
        ContactFact {
            at: self.at,
            vertical: self.vertical.clone(),
            contact_id: self.contact_id.clone(),
        }
    }
}

/// Compliance records written together, in one transaction.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ComplianceWrites {
    pub consent: Vec<ConsentWrite>,
    pub suppressions: Vec<SuppressionRow>,
    pub contacts: Vec<ContactRow>,
}

/// What to gather for one address being checked.
#[derive(Debug, Clone, PartialEq)]
pub struct FactsQuery {
    pub address: Identifier,
    /// Contacts of the address with `at` in `contacts_from..=contacts_to` matter.
    pub contacts_from: Timestamp,
    pub contacts_to: Timestamp,
}

/// Everything stored that bears on checking one address in one workspace.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AddressFacts {
    /// The canonical persons holding the address: none, one, or several for a shared value.
    pub persons: Vec<String>,
    /// Adds and lifts of the address at the global, tenant and workspace scopes that apply.
    pub suppressions: Vec<SuppressionRow>,
    /// Consent events of the address, and of its persons' members and identifiers.
    pub consent: Vec<ConsentEventRow>,
    pub contacts: Vec<ContactRow>,
}

impl AddressFacts {
    pub fn facts(&self) -> idgraph_core::compliance::Facts {
        idgraph_core::compliance::Facts {
            suppressions: self.suppressions.iter().map(SuppressionRow::fact).collect(),
            consent: self.consent.iter().map(ConsentEventRow::fact).collect(),
            contacts: self.contacts.iter().map(ContactRow::fact).collect(),
        }
    }
}

/// Whether a suppression stored at `scope` (and, for the workspace scope, that workspace)
/// applies to a check in `workspace`.
pub fn scope_applies(scope: &SuppressionScope, workspace: &WorkspaceName) -> bool {
    match scope {
        SuppressionScope::Global | SuppressionScope::Tenant => true,
        SuppressionScope::Workspace(name) => name == workspace.as_str(),
    }
}

/// The tenant id a suppression row is stored under.
pub fn suppression_tenant<'a>(tenant: &'a TenantId, scope: &SuppressionScope) -> &'a str {
    match scope {
        SuppressionScope::Global => GLOBAL_TENANT,
        _ => tenant.as_str(),
    }
}

/// Stored form of a scope: its name, and the workspace (empty unless scope = workspace).
pub fn scope_columns(scope: &SuppressionScope) -> (&'static str, &str) {
    match scope {
        SuppressionScope::Workspace(name) => ("workspace", name.as_str()),
        other => (other.name(), ""),
    }
}

pub fn scope_from_columns(name: &str, workspace: &str) -> Option<SuppressionScope> {
    match name {
        "global" => Some(SuppressionScope::Global),
        "tenant" => Some(SuppressionScope::Tenant),
        "workspace" => Some(SuppressionScope::Workspace(workspace.to_owned())),
        _ => None,
    }
}

pub fn suppression_action_name(action: SuppressionAction) -> &'static str {
    match action {
        SuppressionAction::Add => "add",
        SuppressionAction::Lift => "lift",
    }
}

pub fn suppression_action_from(name: &str) -> Option<SuppressionAction> {
    match name {
        "add" => Some(SuppressionAction::Add),
        "lift" => Some(SuppressionAction::Lift),
        _ => None,
    }
}
