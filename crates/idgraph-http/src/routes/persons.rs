//! Persons: lookup, profile, timeline, merges; and the tenant's identity settings.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use futures_util::StreamExt;
use idgraph_app::persons::{self, PersonDetails};
use idgraph_app::settings::{self, SettingsDoc};
use idgraph_store::{ConflictRow, MergeRow, Store, TimelineEvent, TraitValueRow};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::extract::{Auth, Json, Path, Query};
use crate::{ApiError, AppState};

fn json_text(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned()))
}

fn traits_json<'a>(traits: impl Iterator<Item = (&'a String, &'a TraitValueRow)>) -> Value {
    let map: Map<String, Value> = traits
        .map(|(name, t)| {
            let entry = json!({
                "value": json_text(&t.value),
                "source": t.provenance.class.as_str(),
                "confidence": t.provenance.confidence,
                "observed_at": t.provenance.observed_at.to_string(),
                "set_once": t.set_once,
            });
            (name.clone(), entry)
        })
        .collect();
    Value::Object(map)
}

fn person_json(details: PersonDetails) -> Value {
    let identifiers: Vec<Value> = details
        .identifiers
        .iter()
        .map(|n| {
            json!({
                "kind": n.kind.as_str(),
                "value": n.value,
                "source": n.source,
                "confidence": n.confidence,
                "first_seen": n.first_seen.to_string(),
                "last_seen": n.last_seen.to_string(),
            })
        })
        .collect();
    let workspaces: Vec<Value> = details
        .workspaces
        .iter()
        .map(|(contact, traits)| {
            json!({
                "workspace": contact.workspace.as_str(),
                "first_seen": contact.first_seen.to_string(),
                "last_seen": contact.last_seen.to_string(),
                "traits": traits_json(traits.iter()),
            })
        })
        .collect();
    json!({
        "id": details.person.person_id,
        "merged_from": details.merged_from,
        "created_at": details.person.created_at.to_string(),
        "updated_at": details.person.updated_at.to_string(),
        "identifiers": identifiers,
        "traits": traits_json(details.traits.iter()),
        "workspaces": workspaces,
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LookupQuery {
    kind: String,
    value: String,
}

pub(crate) async fn lookup<S: Store>(
    State(state): State<AppState<S>>,
    Auth(principal): Auth,
    Query(query): Query<LookupQuery>,
) -> Result<Json<Value>, ApiError> {
    let details = persons::lookup(&state.store, &principal, &query.kind, &query.value).await?;
    Ok(Json(person_json(details)))
}

pub(crate) async fn get<S: Store>(
    State(state): State<AppState<S>>,
    Auth(principal): Auth,
    Path(person_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(person_json(
        persons::get(&state.store, &principal, &person_id).await?,
    )))
}

/// `DELETE /api/v1/persons/{id}`: 202, the person is gone from every read at once and its data
/// is purged after the retention window.
pub(crate) async fn delete<S: Store>(
    State(state): State<AppState<S>>,
    Auth(principal): Auth,
    Path(person_id): Path<String>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let outcome = idgraph_app::privacy::delete_person(
        &state.store,
        &principal,
        &person_id,
        state.deletion_retention,
    )
    .await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({
            "status": "deletion_requested",
            "person_id": outcome.person_id,
            "persons_deleted": outcome.members,
        })),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TimelineQuery {
    limit: Option<u32>,
    cursor: Option<String>,
    kind: Option<String>,
}

fn event_json(event: TimelineEvent) -> Value {
    json!({
        "id": event.event_id,
        "kind": event.kind,
        "name": event.name,
        "occurred_at": event.occurred_at.to_string(),
        "ingested_at": event.ingested_at.to_string(),
        "workspace": event.workspace.as_str(),
        "person_at_ingest": event.person_id,
        "properties": json_text(&event.properties),
    })
}

pub(crate) async fn timeline<S: Store>(
    State(state): State<AppState<S>>,
    Auth(principal): Auth,
    Path(person_id): Path<String>,
    Query(query): Query<TimelineQuery>,
) -> Result<Json<Value>, ApiError> {
    let page = crate::extract::page_request(query.limit, query.cursor)?;
    let kind = query.kind.filter(|k| !k.is_empty());
    let events =
        persons::timeline(&state.store, &principal, &person_id, kind.as_deref(), &page).await?;
    let items: Vec<Value> = events.items.into_iter().map(event_json).collect();
    Ok(Json(
        json!({"events": items, "next_cursor": events.next_cursor}),
    ))
}

fn merge_json(merge: MergeRow) -> Value {
    json!({
        "id": merge.merge_id,
        "survivor": merge.survivor,
        "absorbed": merge.absorbed,
        "reason": {
            "identifiers": merge.identifiers.iter().map(|i| json!({"kind": i.kind().as_str(), "value": i.value()})).collect::<Vec<_>>(),
            "signal": merge.signal_id,
            "rule": merge.rule,
        },
        "at": merge.at.to_string(),
    })
}

fn conflict_json(conflict: ConflictRow) -> Value {
    json!({
        "id": conflict.conflict_id,
        "person": conflict.person_id,
        "other_person": conflict.other_person_id,
        "identifier": {"kind": conflict.identifier.kind().as_str(), "value": conflict.identifier.value()},
        "rule": conflict.rule,
        "signal": conflict.signal_id,
        "at": conflict.at.to_string(),
    })
}

pub(crate) async fn merges<S: Store>(
    State(state): State<AppState<S>>,
    Auth(principal): Auth,
    Path(person_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let (merges, conflicts) = persons::merges(&state.store, &principal, &person_id).await?;
    Ok(Json(json!({
        "merges": merges.into_iter().map(merge_json).collect::<Vec<_>>(),
        "conflicts": conflicts.into_iter().map(conflict_json).collect::<Vec<_>>(),
    })))
}

pub(crate) async fn get_settings<S: Store>(
    State(state): State<AppState<S>>,
    Auth(principal): Auth,
) -> Result<Json<SettingsDoc>, ApiError> {
    Ok(Json(settings::get(&state.store, &principal).await?))
}

pub(crate) async fn put_settings<S: Store>(
    State(state): State<AppState<S>>,
    Auth(principal): Auth,
    Json(doc): Json<SettingsDoc>,
) -> Result<Json<SettingsDoc>, ApiError> {
    Ok(Json(settings::put(&state.store, &principal, &doc).await?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PreviewQuery {
    max_signals: Option<u64>,
}

/// `POST /api/v1/settings/identity/preview`: what the proposed rules would merge and split.
pub(crate) async fn preview_settings<S: Store>(
    State(state): State<AppState<S>>,
    Auth(principal): Auth,
    Query(query): Query<PreviewQuery>,
    Json(doc): Json<SettingsDoc>,
) -> Result<Json<Value>, ApiError> {
    let preview =
        idgraph_app::preview::preview(&state.store, &principal, &doc, query.max_signals).await?;
    let changes = |changes: &[idgraph_app::preview::Change]| -> Vec<Value> {
        changes
            .iter()
            .map(|change| {
                let parts: Vec<Value> = change
                    .parts
                    .iter()
                    .map(|part| {
                        json!({
                            "person_id": part.person_id,
                            "identifier_count": part.identifier_count,
                            "identifiers": identifiers_json(part.identifiers.iter()),
                        })
                    })
                    .collect();
                json!({ "parts": parts })
            })
            .collect()
    };
    Ok(Json(json!({
        "signals": preview.signals,
        "complete": preview.complete,
        "current": {"persons": preview.current.persons, "merges": preview.current.merges},
        "proposed": {"persons": preview.proposed.persons, "merges": preview.proposed.merges},
        "identifiers_dropped": preview.identifiers_dropped,
        "signals_rejected": preview.signals_rejected,
        "would_merge": {"count": preview.merge_count, "samples": changes(&preview.merges)},
        "would_split": {"count": preview.split_count, "samples": changes(&preview.splits)},
    })))
}

fn identifiers_json<'a>(
    identifiers: impl Iterator<Item = &'a idgraph_core::identity::Identifier>,
) -> Vec<Value> {
    identifiers
        .map(|i| json!({"kind": i.kind().as_str(), "value": i.value()}))
        .collect()
}

pub(crate) async fn explain<S: Store>(
    State(state): State<AppState<S>>,
    Auth(principal): Auth,
    Path(person_id): Path<String>,
    Query(query): Query<LookupQuery>,
) -> Result<Json<Value>, ApiError> {
    let explanation = persons::explain(
        &state.store,
        &principal,
        &person_id,
        &query.kind,
        &query.value,
    )
    .await?;
    let node = &explanation.node;
    let signal = explanation.attached_by.as_ref();
    let attach_rule = if explanation.created_person {
        "created: none of the signal's identifiers belonged to a person, so the signal made this person"
    } else {
        "attached: the signal's other identifiers led to this person and the kind was within its limit"
    };
    let mut path = vec![json!({
        "step": "attached",
        "person": node.person_id,
        "signal": node.signal_id,
        "signal_kind": signal.map(|s| s.event.kind.clone()),
        "signal_identifiers": signal.map(|s| identifiers_json(s.identifiers.iter())),
        "at": node.first_seen.to_string(),
        "source": node.source,
        "rule": attach_rule,
    })];
    for merge in &explanation.merges {
        path.push(json!({
            "step": "merged",
            "merge_id": merge.merge_id,
            "survivor": merge.survivor,
            "absorbed": merge.absorbed,
            "signal": merge.signal_id,
            "identifiers": identifiers_json(merge.identifiers.iter()),
            "at": merge.at.to_string(),
            "rule": merge.rule,
        }));
    }
    Ok(Json(json!({
        "person_id": explanation.person_id,
        "identifier": {"kind": node.kind.as_str(), "value": node.value},
        "path": path,
        "conflicts": explanation.conflicts.into_iter().map(conflict_json).collect::<Vec<_>>(),
    })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct MergeDto {
    survivor: String,
    absorbed: String,
    reason: String,
}

pub(crate) async fn merge<S: Store>(
    State(state): State<AppState<S>>,
    Auth(principal): Auth,
    Json(dto): Json<MergeDto>,
) -> Result<Json<Value>, ApiError> {
    let (merge, details) = persons::merge(
        &state.store,
        &principal,
        &dto.survivor,
        &dto.absorbed,
        &dto.reason,
    )
    .await?;
    Ok(Json(json!({
        "merge": merge_json(merge),
        "person": person_json(details),
    })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListPersonsQuery {
    min_identifiers: Option<u32>,
    limit: Option<u32>,
    cursor: Option<String>,
}

pub(crate) async fn list<S: Store>(
    State(state): State<AppState<S>>,
    Auth(principal): Auth,
    Query(query): Query<ListPersonsQuery>,
) -> Result<Json<Value>, ApiError> {
    let page = crate::extract::page_request(query.limit, query.cursor)?;
    let persons = persons::by_identifier_count(
        &state.store,
        &principal,
        query.min_identifiers.unwrap_or(1),
        &page,
    )
    .await?;
    let items: Vec<Value> = persons
        .items
        .into_iter()
        .map(|(id, count)| json!({"id": id, "identifiers": count}))
        .collect();
    Ok(Json(
        json!({"persons": items, "next_cursor": persons.next_cursor}),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StatsQuery {
    days: Option<u32>,
}

pub(crate) async fn stats<S: Store>(
    State(state): State<AppState<S>>,
    Auth(principal): Auth,
    Query(query): Query<StatsQuery>,
) -> Result<Json<Value>, ApiError> {
    let (since, stats) = persons::stats(&state.store, &principal, query.days.unwrap_or(30)).await?;
    let identifiers: Map<String, Value> = stats
        .identifiers_by_kind
        .into_iter()
        .map(|(kind, n)| (kind, json!(n)))
        .collect();
    let events: Vec<Value> = stats
        .events_by_kind_and_day
        .into_iter()
        .map(|(day, kind, n)| json!({"day": day, "kind": kind, "count": n}))
        .collect();
    Ok(Json(json!({
        "persons": stats.persons,
        "persons_absorbed": stats.persons_absorbed,
        "identifiers": identifiers,
        "events": events,
        "events_since": since.to_string(),
        "merges": stats.merges,
        "conflicts": stats.conflicts,
    })))
}

/// Events are streamed in pages of this many: the whole timeline is never in memory.
const EXPORT_PAGE: u32 = 1000;

/// `GET /api/v1/persons/{id}/export`: everything idgraph holds about a person, as one JSON
/// document whose `events` array is streamed page by page.
pub(crate) async fn export<S: Store>(
    State(state): State<AppState<S>>,
    Auth(principal): Auth,
    Path(person_id): Path<String>,
) -> Result<axum::response::Response, ApiError> {
    let head = persons::export_head(&state.store, &principal, &person_id).await?;
    let person_id = head.details.person.person_id.clone();
    let consent: Vec<Value> = head
        .consent
        .iter()
        .map(|c| {
            json!({"id": c.event_id, "subject": c.subject, "purpose": c.purpose.as_str(),
                   "action": c.action.as_str(), "source": c.source, "evidence": c.evidence,
                   "workspace": c.workspace.as_str(), "occurred_at": c.occurred_at.to_string(),
                   "recorded_at": c.recorded_at.to_string()})
        })
        .collect();
    let suppressions: Vec<Value> = head
        .suppressions
        .iter()
        .map(|s| {
            json!({"id": s.entry_id, "kind": s.identifier.kind().as_str(), "value": s.identifier.value(),
                   "reason": s.reason.as_str(), "scope": s.scope.name(),
                   "action": idgraph_store::suppression_action_name(s.action), "note": s.note,
                   "at": s.at.to_string()})
        })
        .collect();
    let contacts: Vec<Value> = head
        .contacts
        .iter()
        .map(|c| {
            json!({"id": c.contact_id, "channel": c.channel.as_str(), "from": c.from, "to": c.to.value(),
                   "vertical": c.vertical, "campaign": c.campaign, "workspace": c.workspace.as_str(),
                   "at": c.at.to_string()})
        })
        .collect();
    let trait_history: Vec<Value> = head
        .trait_history
        .iter()
        .map(|t| {
            json!({"name": t.name, "value": json_text(&t.value), "workspace": t.workspace.as_str(),
                   "person_at_ingest": t.person_id, "source": t.provenance.class.as_str(),
                   "confidence": t.provenance.confidence, "observed_at": t.provenance.observed_at.to_string(),
                   "set_once": t.set_once, "signal": t.signal_id})
        })
        .collect();
    let mut document = json!({
        "exported_at": jiff::Timestamp::now().to_string(),
        "person": person_json(head.details),
        "trait_history": trait_history,
        "consent": consent,
        "suppressions": suppressions,
        "contacts": contacts,
        "merges": head.merges.into_iter().map(merge_json).collect::<Vec<_>>(),
        "conflicts": head.conflicts.into_iter().map(conflict_json).collect::<Vec<_>>(),
    })
    .to_string();
    // The document stays open for the events array that follows.
    document.pop();
    document.push_str(",\"events\":[");

    struct Cursor<S> {
        state: AppState<S>,
        principal: idgraph_app::access::Principal,
        person_id: String,
        after: Option<String>,
        first: bool,
        done: bool,
    }
    let start = Cursor {
        state,
        principal,
        person_id,
        after: None,
        first: true,
        done: false,
    };
    let events = futures_util::stream::unfold(start, |mut cursor| async move {
        if cursor.done {
            return None;
        }
        let page = idgraph_store::PageRequest {
            limit: EXPORT_PAGE,
            after: cursor.after.take(),
        };
        let result = persons::timeline(
            &cursor.state.store,
            &cursor.principal,
            &cursor.person_id,
            None,
            &page,
        )
        .await;
        let page = match result {
            Ok(page) => page,
            Err(e) => {
                // Past the headers a status can no longer be sent: cut the body short, which the
                // client sees as a failed transfer rather than a complete document.
                cursor.done = true;
                return Some((Err(std::io::Error::other(e.message)), cursor));
            }
        };
        let mut chunk = String::new();
        for event in page.items {
            if !cursor.first {
                chunk.push(',');
            }
            cursor.first = false;
            chunk.push_str(&event_json(event).to_string());
        }
        match page.next_cursor {
            Some(next) => cursor.after = Some(next),
            None => {
                chunk.push_str("]}");
                cursor.done = true;
            }
        }
        Some((Ok(axum::body::Bytes::from(chunk)), cursor))
    });
    let body = futures_util::stream::once(async move {
        Ok::<_, std::io::Error>(axum::body::Bytes::from(document))
    })
    .chain(events);
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        axum::body::Body::from_stream(body),
    )
        .into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct UnmergeDto {
    merge_id: Option<String>,
    identifiers: Option<Vec<IdentifierDto>>,
    reason: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct IdentifierDto {
    kind: String,
    value: String,
}

pub(crate) async fn unmerge<S: Store>(
    State(state): State<AppState<S>>,
    Auth(principal): Auth,
    Path(person_id): Path<String>,
    Json(dto): Json<UnmergeDto>,
) -> Result<Json<Value>, ApiError> {
    let unmerged = persons::unmerge(
        &state.store,
        &principal,
        &person_id,
        dto.merge_id,
        dto.identifiers
            .map(|list| list.into_iter().map(|i| (i.kind, i.value)).collect()),
        dto.reason.as_deref().unwrap_or(""),
    )
    .await?;
    let unmerges: Vec<Value> = unmerged
        .outcomes
        .iter()
        .map(|outcome| {
            json!({
                "survivor": outcome.survivor,
                "restored": outcome.restored,
                "restored_members": outcome.restored_members,
                "events_moved": outcome.events_moved,
                "identifiers_moved": outcome.identifiers_moved,
                "grants_withdrawn": outcome.grants_withdrawn,
                "keep_apart_rule": outcome.rule_id,
            })
        })
        .collect();
    let mut body = json!({
        "persons": unmerged.persons.into_iter().map(person_json).collect::<Vec<_>>(),
        "shared_values": identifiers_json(unmerged.shared.iter()),
    });
    // `unmerge` describes the one merge a merge_id names; a split lists each in `unmerges`.
    if let [only] = unmerges.as_slice() {
        body["unmerge"] = only.clone();
    }
    body["unmerges"] = Value::Array(unmerges);
    Ok(Json(body))
}

pub(crate) async fn keep_apart<S: Store>(
    State(state): State<AppState<S>>,
    Auth(principal): Auth,
    Path(person_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let rules = persons::keep_apart_rules(&state.store, &principal, &person_id).await?;
    let rules: Vec<Value> = rules
        .into_iter()
        .map(|r| {
            json!({"id": r.rule_id, "persons": [r.person_a, r.person_b], "merge_id": r.merge_id,
                   "created_at": r.created_at.to_string()})
        })
        .collect();
    Ok(Json(json!({"rules": rules})))
}

pub(crate) async fn remove_keep_apart<S: Store>(
    State(state): State<AppState<S>>,
    Auth(principal): Auth,
    Path(rule_id): Path<String>,
) -> Result<axum::http::StatusCode, ApiError> {
    persons::remove_keep_apart(&state.store, &principal, &rule_id).await?;
    Ok(axum::http::StatusCode::NO_CONTENT)
}
