//! Identity settings per tenant: the stored JSON form, reading with defaults, and partial
//! updates. Changes apply to signals resolved after them; nothing already resolved is redone.

use std::collections::{BTreeMap, BTreeSet};

use idgraph_core::auth::Scope;
use idgraph_core::identity::{IdentifierKind, IdentitySettings, KindRule, Policy};
use idgraph_core::privacy::ErasedIdentifiers;
use idgraph_store::Store;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::AppError;
use crate::access::Principal;

/// The JSON shape of `GET/PUT /api/v1/settings/identity`, also how settings are stored.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SettingsDoc {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_region: Option<String>,
    #[serde(default)]
    pub kinds: BTreeMap<String, KindDoc>,
    #[serde(default)]
    pub blocked_values: BTreeMap<String, BTreeSet<String>>,
    /// Values of `unique` kinds that link persons without merging them. In an update, a
    /// kind listed here replaces that kind's list (an empty list clears it).
    #[serde(default)]
    pub shared_values: BTreeMap<String, BTreeSet<String>>,
    /// `block` (default) or `allow`: what a signal carrying a deleted person's identifier does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub erased_identifiers: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KindDoc {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    /// `null` means unlimited; absent in an update means unchanged.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "double_option"
    )]
    pub limit: Option<Option<u32>>,
}

mod double_option {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub(super) fn serialize<S: Serializer>(
        value: &Option<Option<u32>>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        value.flatten().serialize(s)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Option<u32>>, D::Error> {
        Option::<u32>::deserialize(d).map(Some)
    }
}

fn policy_name(policy: Policy) -> &'static str {
    match policy {
        Policy::Unique => "unique",
        Policy::Shared => "shared",
    }
}

/// Renders settings in the API's shape, every field present.
pub fn to_doc(settings: &IdentitySettings) -> SettingsDoc {
    SettingsDoc {
        default_region: Some(settings.default_region.clone()),
        kinds: settings
            .kinds
            .iter()
            .map(|(kind, rule)| {
                let doc = KindDoc {
                    priority: Some(rule.priority),
                    policy: Some(policy_name(rule.policy).to_owned()),
                    limit: Some(rule.limit),
                };
                (kind.to_string(), doc)
            })
            .collect(),
        blocked_values: settings.blocked_values.clone(),
        shared_values: settings.shared_values.clone(),
        erased_identifiers: Some(settings.erased_identifiers.as_str().to_owned()),
    }
}

/// Applies a (partial) document on top of settings; fields left out keep their value.
pub fn apply_doc(base: &IdentitySettings, doc: &SettingsDoc) -> Result<IdentitySettings, AppError> {
    let mut settings = base.clone();
    if let Some(region) = &doc.default_region {
        settings.default_region = region.trim().to_ascii_uppercase();
    }
    for (name, kind_doc) in &doc.kinds {
        let kind = IdentifierKind::parse(name)?;
        let existing = settings.kinds.get(&kind).cloned();
        let is_new = existing.is_none();
        let mut rule = existing.unwrap_or(KindRule {
            priority: 0,
            policy: Policy::Unique,
            limit: None,
        });
        if let Some(priority) = kind_doc.priority {
            rule.priority = priority;
        } else if is_new {
            return Err(AppError::invalid(
                "invalid_settings",
                format!("new kind {kind} needs a priority"),
            )
            .with_detail("field", format!("kinds.{kind}.priority")));
        }
        if let Some(policy) = &kind_doc.policy {
            rule.policy = match policy.as_str() {
                "unique" => Policy::Unique,
                "shared" => Policy::Shared,
                other => {
                    return Err(AppError::invalid(
                        "invalid_settings",
                        format!("policy {other:?} of {kind} is not one of unique, shared"),
                    ));
                }
            };
        }
        if let Some(limit) = kind_doc.limit {
            rule.limit = limit;
        }
        settings.kinds.insert(kind, rule);
    }
    make_room_for_configured_kinds(&mut settings, doc);
    for (scope, values) in &doc.blocked_values {
        let normalized: BTreeSet<String> = values.iter().map(|v| v.trim().to_lowercase()).collect();
        settings.blocked_values.insert(scope.clone(), normalized);
    }
    for (kind, values) in &doc.shared_values {
        let mut normalized = BTreeSet::new();
        for value in values {
            let identifier = settings.normalize(kind, value).map_err(|rejection| {
                AppError::invalid("invalid_settings", rejection.to_string())
                    .with_detail("field", format!("shared_values.{kind}"))
            })?;
            normalized.insert(identifier.value().to_owned());
        }
        if normalized.is_empty() {
            settings.shared_values.remove(kind);
        } else {
            settings.shared_values.insert(kind.clone(), normalized);
        }
    }
    if let Some(raw) = &doc.erased_identifiers {
        settings.erased_identifiers = ErasedIdentifiers::parse(raw).ok_or_else(|| {
            AppError::invalid(
                "invalid_settings",
                format!("erased_identifiers {raw:?} is not one of block, allow"),
            )
            .with_detail("field", "erased_identifiers")
        })?;
    }
    settings
        .validate()
        .map_err(|e| AppError::invalid("invalid_settings", e.to_string()))?;
    Ok(settings)
}

/// `identity_hash` is a built-in kind with a default priority (5) that tenants configured before
/// it existed may already have given to a kind of their own. A kind the document names wins
/// the priority, and an `identity_hash` the document does not name moves after every other kind,
/// so a stored document keeps loading and a tenant's explicit choice is never refused because
/// of a default it did not choose.
fn make_room_for_configured_kinds(settings: &mut IdentitySettings, doc: &SettingsDoc) {
    let hash = IdentifierKind::IDENTITY_HASH;
    if doc.kinds.contains_key(hash) {
        return;
    }
    let Some(priority) = settings.kinds.get(hash).map(|rule| rule.priority) else {
        return;
    };
    let taken = settings
        .kinds
        .iter()
        .any(|(kind, rule)| kind.as_str() != hash && rule.priority == priority);
    if taken {
        let last = settings
            .kinds
            .values()
            .map(|rule| rule.priority)
            .max()
            .unwrap_or(priority);
        if let Some(rule) = settings.kinds.get_mut(hash) {
            rule.priority = last + 1;
        }
    }
}

/// The tenant's settings: the stored document over the defaults.
pub async fn load<S: Store>(
    store: &S,
    principal_tenant: &idgraph_core::tenancy::TenantId,
) -> Result<IdentitySettings, AppError> {
    let stored = store
        .identity_settings(principal_tenant)
        .await
        .map_err(AppError::from_store("settings"))?;
    let Some(text) = stored else {
        return Ok(IdentitySettings::default());
    };
    let doc: SettingsDoc = serde_json::from_str(&text)
        .map_err(|e| AppError::internal(format!("stored identity settings are unreadable: {e}")))?;
    apply_doc(&IdentitySettings::default(), &doc)
}

pub async fn get<S: Store>(store: &S, principal: &Principal) -> Result<SettingsDoc, AppError> {
    principal.require(Scope::PersonsRead)?;
    Ok(to_doc(&load(store, &principal.tenant_id).await?))
}

pub async fn put<S: Store>(
    store: &S,
    principal: &Principal,
    doc: &SettingsDoc,
) -> Result<SettingsDoc, AppError> {
    principal.require(Scope::Admin)?;
    let current = load(store, &principal.tenant_id).await?;
    let updated = apply_doc(&current, doc)?;
    let full = to_doc(&updated);
    let text = serde_json::to_string(&full).map_err(|e| AppError::internal(e.to_string()))?;
    store
        .put_identity_settings(&principal.tenant_id, text, Timestamp::now())
        .await
        .map_err(AppError::from_store("settings"))?;
    tracing::info!(tenant = %principal.tenant_id, "identity settings changed");
    Ok(full)
}

/// Declares these values shared (see `IdentitySettings::shared_values`): from now on they link
/// the persons who carry them without merging anyone. Values of kinds that are shared already
/// need nothing. `settings` are the tenant's as just loaded. Returns the values it added.
pub(crate) async fn share_values<S: Store>(
    store: &S,
    tenant: &idgraph_core::tenancy::TenantId,
    mut settings: IdentitySettings,
    identifiers: &[idgraph_core::identity::Identifier],
) -> Result<Vec<idgraph_core::identity::Identifier>, AppError> {
    let mut added = Vec::new();
    for identifier in identifiers {
        if settings.policy_of(identifier) == Some(Policy::Unique) {
            settings
                .shared_values
                .entry(identifier.kind().as_str().to_owned())
                .or_default()
                .insert(identifier.value().to_owned());
            added.push(identifier.clone());
        }
    }
    if added.is_empty() {
        return Ok(added);
    }
    let text =
        serde_json::to_string(&to_doc(&settings)).map_err(|e| AppError::internal(e.to_string()))?;
    store
        .put_identity_settings(tenant, text, Timestamp::now())
        .await
        .map_err(AppError::from_store("settings"))?;
    tracing::info!(tenant = %tenant, values = added.len(), "identifier values declared shared");
    Ok(added)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_hash_is_built_in_and_gives_way_to_a_configured_kind() {
        let defaults = IdentitySettings::default();
        let hash = defaults.kinds.get(IdentifierKind::IDENTITY_HASH).unwrap();
        assert_eq!(
            (hash.priority, hash.policy, hash.limit),
            (5, Policy::Unique, None)
        );

        let doc: SettingsDoc = serde_json::from_str(
            r#"{"kinds": {"device_id": {"priority": 5, "policy": "shared"}}}"#,
        )
        .unwrap();
        let settings = apply_doc(&defaults, &doc).unwrap();
        assert_eq!(settings.kinds.get("device_id").unwrap().priority, 5);
        assert_eq!(
            settings
                .kinds
                .get(IdentifierKind::IDENTITY_HASH)
                .unwrap()
                .priority,
            6
        );

        // Named explicitly, the clash is the tenant's own and is refused.
        let clash: SettingsDoc = serde_json::from_str(
            r#"{"kinds": {"device_id": {"priority": 5}, "identity_hash": {"priority": 5}}}"#,
        )
        .unwrap();
        assert!(apply_doc(&defaults, &clash).is_err());
    }
}
