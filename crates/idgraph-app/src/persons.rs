//! Reading persons: lookup by identifier, the profile with current traits derived from their
//! history, the timeline and the merge record. An absorbed person's id answers with its survivor.

use std::collections::BTreeMap;

use idgraph_core::auth::Scope;
use idgraph_core::traits::replaces;
use idgraph_store::{
    ConflictRow, IdentityNodeRow, LoggedSignal, ManualMerge, MergeRow, Page, PageRequest,
    PersonRow, Store, StoreError, TimelineEvent, TraitValueRow, WorkspaceContactRow,
};

use crate::access::Principal;
use crate::{AppError, settings};

/// A person as the API shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct PersonDetails {
    pub person: PersonRow,
    pub merged_from: Vec<String>,
    pub identifiers: Vec<IdentityNodeRow>,
    /// Current value per trait name across workspaces.
    pub traits: BTreeMap<String, TraitValueRow>,
    pub workspaces: Vec<(WorkspaceContactRow, BTreeMap<String, TraitValueRow>)>,
}

/// The canonical id of a person id: itself, or the survivor it was merged into.
async fn canonical<S: Store>(
    store: &S,
    principal: &Principal,
    person_id: &str,
) -> Result<String, AppError> {
    if person_id.is_empty() || person_id.len() > 64 {
        return Err(AppError::not_found("person"));
    }
    match store.get_person(&principal.tenant_id, person_id).await {
        Ok(row) => Ok(row.merged_into.unwrap_or(row.person_id)),
        Err(StoreError::NotFound) => Err(AppError::not_found("person")),
        Err(e) => Err(AppError::from_store("person")(e)),
    }
}

/// Current values by precedence: observations are replayed in ingest order.
pub fn current_traits<'a>(
    history: impl Iterator<Item = &'a TraitValueRow>,
) -> BTreeMap<String, TraitValueRow> {
    let mut current: BTreeMap<String, TraitValueRow> = BTreeMap::new();
    for observed in history {
        let existing = current.get(&observed.name);
        let set_once = observed.set_once || existing.is_some_and(|e| e.set_once);
        if replaces(
            &observed.provenance,
            existing.map(|e| &e.provenance),
            set_once,
        ) {
            current.insert(observed.name.clone(), observed.clone());
        }
    }
    current
}

pub async fn lookup<S: Store>(
    store: &S,
    principal: &Principal,
    kind: &str,
    value: &str,
) -> Result<PersonDetails, AppError> {
    principal.require(Scope::PersonsRead)?;
    let settings = settings::load(store, &principal.tenant_id).await?;
    let identifier = settings
        .normalize(kind, value)
        .map_err(|rejection| AppError::invalid("invalid_identifier", rejection.to_string()))?;
    let person_id = store
        .lookup_person(&principal.tenant_id, &identifier)
        .await
        .map_err(AppError::from_store("person"))?
        .ok_or_else(|| AppError::not_found("person"))?;
    details(store, principal, &person_id).await
}

pub async fn get<S: Store>(
    store: &S,
    principal: &Principal,
    person_id: &str,
) -> Result<PersonDetails, AppError> {
    principal.require(Scope::PersonsRead)?;
    let person_id = canonical(store, principal, person_id).await?;
    details(store, principal, &person_id).await
}

async fn details<S: Store>(
    store: &S,
    principal: &Principal,
    person_id: &str,
) -> Result<PersonDetails, AppError> {
    let profile = store
        .person_profile(&principal.tenant_id, person_id)
        .await
        .map_err(AppError::from_store("person"))?;
    let traits = current_traits(profile.traits.iter());
    let workspaces = profile
        .workspaces
        .into_iter()
        .map(|contact| {
            let scoped = current_traits(
                profile
                    .traits
                    .iter()
                    .filter(|t| t.workspace == contact.workspace),
            );
            (contact, scoped)
        })
        .collect();
    Ok(PersonDetails {
        person: profile.person,
        merged_from: profile.merged_from,
        identifiers: profile.identifiers,
        traits,
        workspaces,
    })
}

pub async fn timeline<S: Store>(
    store: &S,
    principal: &Principal,
    person_id: &str,
    kind: Option<&str>,
    page: &PageRequest,
) -> Result<Page<TimelineEvent>, AppError> {
    principal.require(Scope::PersonsRead)?;
    let person_id = canonical(store, principal, person_id).await?;
    store
        .timeline(&principal.tenant_id, &person_id, kind, page)
        .await
        .map_err(|e| match e {
            StoreError::Conflict(message) => AppError::invalid("invalid_cursor", message),
            other => AppError::from_store("person")(other),
        })
}

pub async fn merges<S: Store>(
    store: &S,
    principal: &Principal,
    person_id: &str,
) -> Result<(Vec<MergeRow>, Vec<ConflictRow>), AppError> {
    principal.require(Scope::PersonsRead)?;
    let person_id = canonical(store, principal, person_id).await?;
    store
        .merges_of(&principal.tenant_id, &person_id)
        .await
        .map_err(AppError::from_store("person"))
}

/// How an identifier came to belong to a person: the signal that attached it to the person it
/// was first seen on, then each merge that carried that person into the one asked about.
#[derive(Debug, Clone, PartialEq)]
pub struct Explanation {
    pub person_id: String,
    pub node: IdentityNodeRow,
    /// The signal that attached the identifier, when it is still in the log.
    pub attached_by: Option<LoggedSignal>,
    /// Whether that signal created the person (rather than finding it).
    pub created_person: bool,
    /// The merges from the node's person to `person_id`, oldest first.
    pub merges: Vec<MergeRow>,
    /// Conflicts recorded for this identifier: merges or attachments refused because of it.
    pub conflicts: Vec<ConflictRow>,
}

pub async fn explain<S: Store>(
    store: &S,
    principal: &Principal,
    person_id: &str,
    kind: &str,
    value: &str,
) -> Result<Explanation, AppError> {
    principal.require(Scope::PersonsRead)?;
    let person_id = canonical(store, principal, person_id).await?;
    let settings = settings::load(store, &principal.tenant_id).await?;
    let identifier = settings
        .normalize(kind, value)
        .map_err(|rejection| AppError::invalid("invalid_identifier", rejection.to_string()))?;
    let tenant = &principal.tenant_id;
    let nodes = store
        .find_identity_nodes(tenant, identifier.kind(), identifier.value())
        .await
        .map_err(AppError::from_store("identifier"))?;
    let mut held = None;
    for node in nodes {
        if canonical(store, principal, &node.person_id).await? == person_id {
            held = Some(node);
            break;
        }
    }
    let node = held.ok_or_else(|| {
        AppError::not_found("identifier").with_detail("reason", "the person does not hold it")
    })?;
    let (merges, conflicts) = store
        .merges_of(tenant, &person_id)
        .await
        .map_err(AppError::from_store("person"))?;
    // merged_into names the final survivor, but each merge record names the survivor of its
    // day: walk them from the node's person up to the person asked about.
    let mut path = Vec::new();
    let mut current = node.person_id.clone();
    while current != person_id && path.len() <= merges.len() {
        let Some(step) = merges.iter().find(|m| m.absorbed == current) else {
            break;
        };
        current = step.survivor.clone();
        path.push(step.clone());
    }
    let attached_by = match &node.signal_id {
        Some(signal) => match store.get_signal(tenant, signal).await {
            Ok(logged) => Some(logged),
            Err(StoreError::NotFound) => None,
            Err(e) => return Err(AppError::from_store("signal")(e)),
        },
        None => None,
    };
    let created_person = node.signal_id.as_deref() == Some(node.person_id.as_str());
    let conflicts = conflicts
        .into_iter()
        .filter(|c| c.identifier == identifier)
        .collect();
    Ok(Explanation {
        person_id,
        node,
        attached_by,
        created_person,
        merges: path,
        conflicts,
    })
}

/// Merges `absorbed` into `survivor` on an operator's word. The same limits apply as to any
/// merge (a refusal is a 409 naming the limit), and it is recorded like any merge, with the
/// reason given and the key that asked.
pub async fn merge<S: Store>(
    store: &S,
    principal: &Principal,
    survivor: &str,
    absorbed: &str,
    reason: &str,
) -> Result<(MergeRow, PersonDetails), AppError> {
    principal.require(Scope::PersonsWrite)?;
    if reason.trim().is_empty() {
        return Err(AppError::invalid("invalid_input", "a merge needs a reason")
            .with_detail("field", "reason"));
    }
    let survivor = canonical(store, principal, survivor).await?;
    let absorbed = canonical(store, principal, absorbed).await?;
    let settings = settings::load(store, &principal.tenant_id).await?;
    let request = ManualMerge {
        merge_id: crate::new_id(),
        survivor,
        absorbed,
        reason: reason.trim().to_owned(),
        actor: principal.key_id.clone(),
        at: jiff::Timestamp::now(),
    };
    let row = store
        .merge_persons(&principal.tenant_id, &settings, request)
        .await
        .map_err(|e| match e {
            StoreError::Conflict(message) => {
                AppError::new(crate::ErrorKind::Conflict, "merge_refused", message)
            }
            other => AppError::from_store("person")(other),
        })?;
    let details = details(store, principal, &row.survivor).await?;
    Ok((row, details))
}

/// Persons whose group holds at least `min_identifiers` identifiers, most first: how an
/// operator finds the "mega persons" a shared device or a junk value glued together.
pub async fn by_identifier_count<S: Store>(
    store: &S,
    principal: &Principal,
    min_identifiers: u32,
    page: &PageRequest,
) -> Result<Page<(String, u64)>, AppError> {
    principal.require(Scope::PersonsRead)?;
    store
        .persons_by_identifier_count(&principal.tenant_id, min_identifiers.max(1), page)
        .await
        .map_err(|e| match e {
            StoreError::Conflict(message) => AppError::invalid("invalid_cursor", message),
            other => AppError::from_store("person")(other),
        })
}

/// The tenant's counts; events are counted per kind and day over the last `days` days.
pub async fn stats<S: Store>(
    store: &S,
    principal: &Principal,
    days: u32,
) -> Result<(jiff::Timestamp, idgraph_store::TenantStats), AppError> {
    principal.require(Scope::PersonsRead)?;
    if days == 0 || days > 366 {
        return Err(
            AppError::invalid("invalid_input", "days must be between 1 and 366")
                .with_detail("field", "days"),
        );
    }
    let since = jiff::Timestamp::now()
        .checked_sub(jiff::SignedDuration::from_hours(i64::from(days) * 24))
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    let stats = store
        .stats(&principal.tenant_id, since)
        .await
        .map_err(AppError::from_store("stats"))?;
    Ok((since, stats))
}

/// Everything held about a person except its events, which the caller streams page by page
/// (`timeline`) so a person with a million events is never held in memory.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportHead {
    pub details: PersonDetails,
    /// Every trait observation, oldest first, not just the current values.
    pub trait_history: Vec<TraitValueRow>,
    pub consent: Vec<idgraph_store::ConsentEventRow>,
    pub suppressions: Vec<idgraph_store::SuppressionRow>,
    pub contacts: Vec<idgraph_store::ContactRow>,
    pub merges: Vec<MergeRow>,
    pub conflicts: Vec<ConflictRow>,
}

/// The first part of an access request's answer: who the person is and everything but events.
pub async fn export_head<S: Store>(
    store: &S,
    principal: &Principal,
    person_id: &str,
) -> Result<ExportHead, AppError> {
    principal.require(Scope::PersonsRead)?;
    principal.require(Scope::ConsentRead)?;
    let person_id = canonical(store, principal, person_id).await?;
    let tenant = &principal.tenant_id;
    let profile = store
        .person_profile(tenant, &person_id)
        .await
        .map_err(AppError::from_store("person"))?;
    let trait_history = profile.traits.clone();
    let details = details(store, principal, &person_id).await?;
    let consent = store
        .person_consent(tenant, &person_id)
        .await
        .map_err(AppError::from_store("person"))?;
    let mut suppressions = Vec::new();
    let mut queries = Vec::new();
    for node in &details.identifiers {
        let identifier =
            idgraph_core::identity::Identifier::from_stored(node.kind.clone(), node.value.clone());
        if matches!(
            node.kind.as_str(),
            idgraph_core::identity::IdentifierKind::PHONE
                | idgraph_core::identity::IdentifierKind::EMAIL
        ) {
            suppressions.extend(
                store
                    .suppression_history(tenant, &identifier)
                    .await
                    .map_err(AppError::from_store("suppression"))?,
            );
            queries.push(idgraph_store::FactsQuery {
                address: identifier,
                // Every contact: PostgreSQL cannot represent jiff's MIN, and no contact predates 1970.
                contacts_from: jiff::Timestamp::UNIX_EPOCH,
                contacts_to: jiff::Timestamp::MAX,
            });
        }
    }
    let contacts = store
        .compliance_facts(
            tenant,
            &idgraph_core::tenancy::WorkspaceName::default_workspace(),
            queries,
        )
        .await
        .map_err(AppError::from_store("contacts"))?
        .into_iter()
        .flat_map(|facts| facts.contacts)
        .collect();
    let (merges, conflicts) = store
        .merges_of(tenant, &person_id)
        .await
        .map_err(AppError::from_store("person"))?;
    Ok(ExportHead {
        details,
        trait_history,
        consent,
        suppressions,
        contacts,
        merges,
        conflicts,
    })
}

/// What an unmerge left: every person it touched as they now are, and what moved.
#[derive(Debug, Clone, PartialEq)]
pub struct Unmerged {
    /// One per merge undone, in the order they were undone.
    pub outcomes: Vec<idgraph_store::UnmergeOutcome>,
    /// The survivor first, then each restored person.
    pub persons: Vec<PersonDetails>,
    /// Values a split declared shared in the tenant's identity settings.
    pub shared: Vec<idgraph_core::identity::Identifier>,
}

/// What to undo.
#[derive(Debug, Clone, PartialEq)]
pub enum UnmergeTarget {
    /// One merge of the person's group, by id (from `GET .../merges`).
    Merge(String),
    /// Every merge in force in the person's group that one of these identifiers (kind, raw
    /// value) caused, newest first: the way to split a person glued together by a shared
    /// device id or a junk value.
    Identifiers(Vec<(String, String)>),
}

/// Most identifiers one split names.
const SPLIT_IDENTIFIERS: usize = 100;

/// Undoes merges of the person's group; each undone merge leaves its own keep-apart rule, and
/// a split by identifiers also declares those values shared (`shared_values` in the identity
/// settings, where an operator sees and can remove them).
/// Merges are undone one transaction each, newest first; should one fail, those undone before
/// it stay undone (each is whole) and the error says which failed.
pub async fn unmerge<S: Store>(
    store: &S,
    principal: &Principal,
    person_id: &str,
    merge_id: Option<String>,
    identifiers: Option<Vec<(String, String)>>,
    reason: &str,
) -> Result<Unmerged, AppError> {
    principal.require(Scope::PersonsWrite)?;
    // The person first: another tenant's id is a 404 whatever the body says.
    let person_id = canonical(store, principal, person_id).await?;
    let target = match (merge_id, identifiers) {
        (Some(merge_id), None) => UnmergeTarget::Merge(merge_id),
        (None, Some(identifiers)) => UnmergeTarget::Identifiers(identifiers),
        _ => {
            return Err(AppError::invalid(
                "invalid_input",
                "give either merge_id (see GET /api/v1/persons/{id}/merges) or identifiers \
                 (a list of {kind, value} whose merges to undo), not both",
            ));
        }
    };
    let mut shared = Vec::new();
    let (mut merges, _) = store
        .merges_of(&principal.tenant_id, &person_id)
        .await
        .map_err(AppError::from_store("person"))?;
    let to_undo: Vec<String> = match target {
        UnmergeTarget::Merge(merge_id) => {
            if !merges.iter().any(|m| m.merge_id == merge_id) {
                return Err(AppError::not_found("merge").with_detail("merge_id", merge_id));
            }
            vec![merge_id]
        }
        UnmergeTarget::Identifiers(raw) => {
            if raw.is_empty() || raw.len() > SPLIT_IDENTIFIERS {
                return Err(AppError::invalid(
                    "invalid_input",
                    format!("identifiers must list 1 to {SPLIT_IDENTIFIERS} identifiers"),
                )
                .with_detail("field", "identifiers"));
            }
            let settings = settings::load(store, &principal.tenant_id).await?;
            let mut wanted = Vec::with_capacity(raw.len());
            for (index, (kind, value)) in raw.iter().enumerate() {
                let identifier = settings.normalize(kind, value).map_err(|rejection| {
                    AppError::invalid("invalid_identifier", rejection.to_string())
                        .with_detail("field", format!("identifiers[{index}]"))
                })?;
                wanted.push(identifier);
            }
            merges.retain(|m| m.identifiers.iter().any(|i| wanted.contains(i)));
            if merges.is_empty() {
                return Err(AppError::new(
                    crate::ErrorKind::Conflict,
                    "unmerge_refused",
                    "none of these identifiers caused a merge of this person that is still in force",
                ));
            }
            // Newest first, so each undo finds the group as it was just after its merge.
            merges.sort_by(|a, b| b.at.cmp(&a.at).then_with(|| b.merge_id.cmp(&a.merge_id)));
            // Declared shared before anything is undone, so no signal can glue the parts back
            // together in between. A keep-apart rule per undone merge only covers the pair
            // that merge joined; the glue may link any two of the parts.
            shared = settings::share_values(store, &principal.tenant_id, settings, &wanted).await?;
            merges.into_iter().map(|m| m.merge_id).collect()
        }
    };
    let reason = if reason.trim().is_empty() {
        "unspecified".to_owned()
    } else {
        reason.trim().to_owned()
    };
    let mut outcomes = Vec::with_capacity(to_undo.len());
    for merge_id in to_undo {
        let request = idgraph_store::Unmerge {
            merge_id: merge_id.clone(),
            reason: reason.clone(),
            actor: principal.key_id.clone(),
            at: jiff::Timestamp::now(),
            rule_id: crate::new_id(),
        };
        let outcome = store
            .unmerge(&principal.tenant_id, request)
            .await
            .map_err(|e| {
                let undone = outcomes.len();
                match e {
                    StoreError::Conflict(message) => {
                        AppError::new(crate::ErrorKind::Conflict, "unmerge_refused", message)
                    }
                    other => AppError::from_store("merge")(other),
                }
                .with_detail("merge_id", merge_id.clone())
                .with_detail("merges_undone_before", undone.to_string())
            })?;
        outcomes.push(outcome);
    }
    let mut persons = Vec::with_capacity(outcomes.len() + 1);
    if let Some(first) = outcomes.first() {
        persons.push(details(store, principal, &first.survivor).await?);
    }
    for outcome in &outcomes {
        persons.push(details(store, principal, &outcome.restored).await?);
    }
    Ok(Unmerged {
        outcomes,
        persons,
        shared,
    })
}

pub async fn keep_apart_rules<S: Store>(
    store: &S,
    principal: &Principal,
    person_id: &str,
) -> Result<Vec<idgraph_store::KeepApartRule>, AppError> {
    principal.require(Scope::PersonsRead)?;
    let person_id = canonical(store, principal, person_id).await?;
    store
        .keep_apart_rules(&principal.tenant_id, &person_id)
        .await
        .map_err(AppError::from_store("person"))
}

/// Lifts a keep-apart rule: the two persons may be merged again by a signal.
pub async fn remove_keep_apart<S: Store>(
    store: &S,
    principal: &Principal,
    rule_id: &str,
) -> Result<(), AppError> {
    principal.require(Scope::PersonsWrite)?;
    store
        .remove_keep_apart(&principal.tenant_id, rule_id, jiff::Timestamp::now())
        .await
        .map_err(AppError::from_store("rule"))
}
