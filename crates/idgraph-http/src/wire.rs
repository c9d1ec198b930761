//! Wire types: the JSON of the public contract. Domain types convert into these explicitly, so a
//! change to a domain type never silently changes the API.

use idgraph_store::{ApiKeyRecord, Tenant, Workspace};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct TenantDto {
    id: String,
    name: String,
    created_at: String,
}

impl From<Tenant> for TenantDto {
    fn from(t: Tenant) -> Self {
        Self {
            id: t.id.to_string(),
            name: t.name,
            created_at: t.created_at.to_string(),
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewTenantDto {
    pub(crate) id: Option<String>,
    pub(crate) name: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct WorkspaceDto {
    id: String,
    name: String,
    environment: &'static str,
    created_at: String,
}

impl From<Workspace> for WorkspaceDto {
    fn from(w: Workspace) -> Self {
        Self {
            id: w.id,
            name: w.name.to_string(),
            environment: w.environment.as_str(),
            created_at: w.created_at.to_string(),
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewWorkspaceDto {
    pub(crate) name: String,
    pub(crate) environment: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct KeyDto {
    id: String,
    name: String,
    scopes: Vec<&'static str>,
    workspace: Option<String>,
    rate_limit_per_sec: Option<u32>,
    master: bool,
    created_at: String,
    revoked_at: Option<String>,
}

impl From<ApiKeyRecord> for KeyDto {
    fn from(k: ApiKeyRecord) -> Self {
        Self {
            id: k.key_id,
            name: k.name,
            scopes: k.scopes.iter().map(|s| s.as_str()).collect(),
            workspace: k.workspace.map(|w| w.to_string()),
            rate_limit_per_sec: k.rate_limit_per_sec,
            master: k.is_master,
            created_at: k.created_at.to_string(),
            revoked_at: k.revoked_at.map(|t| t.to_string()),
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewKeyDto {
    pub(crate) name: String,
    pub(crate) scopes: Vec<String>,
    pub(crate) workspace: Option<String>,
    pub(crate) rate_limit_per_sec: Option<u32>,
}

/// The one response that carries a key's secret.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct CreatedKeyDto {
    pub(crate) id: String,
    pub(crate) key: String,
    pub(crate) name: String,
    pub(crate) scopes: Vec<&'static str>,
    pub(crate) workspace: Option<String>,
    pub(crate) rate_limit_per_sec: Option<u32>,
    pub(crate) created_at: String,
}

/// `GET /api/v1/tenants`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct TenantPage {
    pub(crate) tenants: Vec<TenantDto>,
    /// Pass as `cursor` for the next page; null at the end.
    pub(crate) next_cursor: Option<String>,
}

/// `GET /api/v1/workspaces`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct WorkspacePage {
    pub(crate) workspaces: Vec<WorkspaceDto>,
    /// Pass as `cursor` for the next page; null at the end.
    pub(crate) next_cursor: Option<String>,
}

/// `GET /api/v1/keys`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct KeyPage {
    pub(crate) keys: Vec<KeyDto>,
    /// Pass as `cursor` for the next page; null at the end.
    pub(crate) next_cursor: Option<String>,
}

/// A kind and a value, as identifiers appear in requests and answers.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct IdentifierDto {
    pub(crate) kind: String,
    pub(crate) value: String,
}

impl From<&idgraph_core::identity::Identifier> for IdentifierDto {
    fn from(i: &idgraph_core::identity::Identifier) -> Self {
        Self {
            kind: i.kind().as_str().to_owned(),
            value: i.value().to_owned(),
        }
    }
}

/// Parses an RFC 3339 timestamp from a client and keeps it within years 1900 to 9000: both
/// stores represent those exactly, and anything outside is a client's mistake, not a date.
pub(crate) fn client_time(raw: &str) -> Option<jiff::Timestamp> {
    let at: jiff::Timestamp = raw.parse().ok()?;
    let year = at.to_zoned(jiff::tz::TimeZone::UTC).year();
    (1900..=9000).contains(&year).then_some(at)
}
