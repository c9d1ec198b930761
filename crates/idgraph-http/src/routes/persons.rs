//! Persons: lookup, profile, timeline, merges; and the tenant's identity settings.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use futures_util::StreamExt;
use idgraph_app::persons::{self, PersonDetails};
use idgraph_app::settings::{self, SettingsDoc};
use idgraph_store::{ConflictRow, MergeRow, Store, TimelineEvent, TraitValueRow};
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use crate::extract::{Auth, Json, Path, Query};
use crate::wire::IdentifierDto;
use crate::{ApiError, AppState};

/// A stored JSON text as JSON; a value stored before it was validated comes back as a string.
fn json_text(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned()))
}

/// A trait's current value and where it came from.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct TraitDto {
    /// Any JSON value, as the source sent it.
    value: Value,
    source: &'static str,
    confidence: f64,
    observed_at: String,
    set_once: bool,
}

type TraitsDto = BTreeMap<String, TraitDto>;

fn traits_json<'a>(traits: impl Iterator<Item = (&'a String, &'a TraitValueRow)>) -> TraitsDto {
    traits
        .map(|(name, t)| {
            let entry = TraitDto {
                value: json_text(&t.value),
                source: t.provenance.class.as_str(),
                confidence: t.provenance.confidence,
                observed_at: t.provenance.observed_at.to_string(),
                set_once: t.set_once,
            };
            (name.clone(), entry)
        })
        .collect()
}

/// An identifier of a person, with its provenance.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct PersonIdentifierDto {
    kind: String,
    value: String,
    source: String,
    confidence: f64,
    first_seen: String,
    last_seen: String,
}

/// A workspace the person was seen in, and the traits recorded there.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct PersonWorkspaceDto {
    workspace: String,
    first_seen: String,
    last_seen: String,
    traits: TraitsDto,
}

/// A person's profile.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct PersonDto {
    id: String,
    /// Persons merged into this one.
    merged_from: Vec<String>,
    created_at: String,
    updated_at: String,
    identifiers: Vec<PersonIdentifierDto>,
    traits: TraitsDto,
    workspaces: Vec<PersonWorkspaceDto>,
}

fn person_json(details: PersonDetails) -> PersonDto {
    let identifiers = details
        .identifiers
        .iter()
        .map(|n| PersonIdentifierDto {
            kind: n.kind.as_str().to_owned(),
            value: n.value.clone(),
            source: n.source.clone(),
            confidence: n.confidence,
            first_seen: n.first_seen.to_string(),
            last_seen: n.last_seen.to_string(),
        })
        .collect();
    let workspaces = details
        .workspaces
        .iter()
        .map(|(contact, traits)| PersonWorkspaceDto {
            workspace: contact.workspace.as_str().to_owned(),
            first_seen: contact.first_seen.to_string(),
            last_seen: contact.last_seen.to_string(),
            traits: traits_json(traits.iter()),
        })
        .collect();
    PersonDto {
        id: details.person.person_id,
        merged_from: details.merged_from,
        created_at: details.person.created_at.to_string(),
        updated_at: details.person.updated_at.to_string(),
        identifiers,
        traits: traits_json(details.traits.iter()),
        workspaces,
    }
}

/// An identifier, as `?kind=&value=`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct LookupQuery {
    /// `external_id`, `email`, `phone`, `anonymous_id` or a custom kind.
    kind: String,
    /// Normalized by the kind's rules before the lookup.
    value: String,
}

/// The person holding an identifier.
#[utoipa::path(get, path = "/api/v1/persons/lookup", tag = "persons", params(LookupQuery),
    responses((status = 200, description = "The person.", body = PersonDto),
              (status = 404, description = "No person holds it.", body = crate::error::ErrorBody)))]
pub(crate) async fn lookup<S: Store>(
    State(state): State<AppState<S>>,
    Auth(principal): Auth,
    Query(query): Query<LookupQuery>,
) -> Result<Json<PersonDto>, ApiError> {
    let details = persons::lookup(&state.store, &principal, &query.kind, &query.value).await?;
    Ok(Json(person_json(details)))
}

/// A person; the id of a person merged away answers with its survivor.
#[utoipa::path(get, path = "/api/v1/persons/{id}", tag = "persons", params(PersonId),
    responses((status = 200, description = "The person.", body = PersonDto)))]
pub(crate) async fn get<S: Store>(
    State(state): State<AppState<S>>,
    Auth(principal): Auth,
    Path(person_id): Path<String>,
) -> Result<Json<PersonDto>, ApiError> {
    Ok(Json(person_json(
        persons::get(&state.store, &principal, &person_id).await?,
    )))
}

/// `{id}` of the person routes.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub(crate) struct PersonId {
    /// A person's id (or the id of a person merged into it).
    #[allow(dead_code, reason = "read by the OpenAPI document only")]
    id: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct DeletionDto {
    /// `deletion_requested`.
    status: &'static str,
    person_id: String,
    /// Every person of the merged group that was deleted.
    persons_deleted: Vec<String>,
}

/// `DELETE /api/v1/persons/{id}`: 202, the person is gone from every read at once and its data
/// is purged after the retention window.
#[utoipa::path(delete, path = "/api/v1/persons/{id}", tag = "persons", params(PersonId),
    responses((status = 202, description = "Deleted from every read; purged later.", body = DeletionDto)))]
pub(crate) async fn delete<S: Store>(
    State(state): State<AppState<S>>,
    Auth(principal): Auth,
    Path(person_id): Path<String>,
) -> Result<(StatusCode, Json<DeletionDto>), ApiError> {
    let outcome = idgraph_app::privacy::delete_person(
        &state.store,
        &principal,
        &person_id,
        state.deletion_retention,
    )
    .await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(DeletionDto {
            status: "deletion_requested",
            person_id: outcome.person_id,
            persons_deleted: outcome.members,
        }),
    ))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct TimelineQuery {
    /// Events per page: 1 to 1000, default 50.
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
    /// Only events of this kind (`track`, `identify`, ...).
    kind: Option<String>,
}

/// An event on a person's timeline.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct EventDto {
    id: String,
    kind: String,
    name: Option<String>,
    occurred_at: String,
    ingested_at: String,
    workspace: String,
    /// The person the event was recorded for (it may since have merged).
    person_at_ingest: String,
    /// Any JSON, as sent.
    properties: Value,
}

fn event_json(event: TimelineEvent) -> EventDto {
    EventDto {
        id: event.event_id,
        kind: event.kind,
        name: event.name,
        occurred_at: event.occurred_at.to_string(),
        ingested_at: event.ingested_at.to_string(),
        workspace: event.workspace.as_str().to_owned(),
        person_at_ingest: event.person_id,
        properties: json_text(&event.properties),
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct TimelineDto {
    events: Vec<EventDto>,
    next_cursor: Option<String>,
}

/// A person's events, newest first, including those of persons merged into it.
#[utoipa::path(get, path = "/api/v1/persons/{id}/timeline", tag = "persons", params(PersonId, TimelineQuery),
    responses((status = 200, description = "A page of events.", body = TimelineDto)))]
pub(crate) async fn timeline<S: Store>(
    State(state): State<AppState<S>>,
    Auth(principal): Auth,
    Path(person_id): Path<String>,
    Query(query): Query<TimelineQuery>,
) -> Result<Json<TimelineDto>, ApiError> {
    let page = crate::extract::page_request(query.limit, query.cursor)?;
    let kind = query.kind.filter(|k| !k.is_empty());
    let events =
        persons::timeline(&state.store, &principal, &person_id, kind.as_deref(), &page).await?;
    Ok(Json(TimelineDto {
        events: events.items.into_iter().map(event_json).collect(),
        next_cursor: events.next_cursor,
    }))
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct MergeReasonDto {
    /// The identifiers the two persons shared.
    identifiers: Vec<IdentifierDto>,
    /// The signal that joined them.
    signal: String,
    rule: String,
}

/// One merge: `absorbed` became part of `survivor`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct MergeRecordDto {
    id: String,
    survivor: String,
    absorbed: String,
    reason: MergeReasonDto,
    at: String,
}

fn merge_json(merge: MergeRow) -> MergeRecordDto {
    MergeRecordDto {
        id: merge.merge_id,
        survivor: merge.survivor,
        absorbed: merge.absorbed,
        reason: MergeReasonDto {
            identifiers: merge.identifiers.iter().map(IdentifierDto::from).collect(),
            signal: merge.signal_id,
            rule: merge.rule,
        },
        at: merge.at.to_string(),
    }
}

/// A merge the rules refused, and why.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ConflictDto {
    id: String,
    person: String,
    other_person: Option<String>,
    identifier: IdentifierDto,
    rule: String,
    signal: String,
    at: String,
}

fn conflict_json(conflict: ConflictRow) -> ConflictDto {
    ConflictDto {
        id: conflict.conflict_id,
        person: conflict.person_id,
        other_person: conflict.other_person_id,
        identifier: IdentifierDto::from(&conflict.identifier),
        rule: conflict.rule,
        signal: conflict.signal_id,
        at: conflict.at.to_string(),
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct MergesDto {
    merges: Vec<MergeRecordDto>,
    conflicts: Vec<ConflictDto>,
}

/// The merges in force that built a person, and the merges its rules refused.
#[utoipa::path(get, path = "/api/v1/persons/{id}/merges", tag = "persons", params(PersonId),
    responses((status = 200, description = "Merges and conflicts.", body = MergesDto)))]
pub(crate) async fn merges<S: Store>(
    State(state): State<AppState<S>>,
    Auth(principal): Auth,
    Path(person_id): Path<String>,
) -> Result<Json<MergesDto>, ApiError> {
    let (merges, conflicts) = persons::merges(&state.store, &principal, &person_id).await?;
    Ok(Json(MergesDto {
        merges: merges.into_iter().map(merge_json).collect(),
        conflicts: conflicts.into_iter().map(conflict_json).collect(),
    }))
}

/// The tenant's identity settings.
#[utoipa::path(get, path = "/api/v1/settings/identity", tag = "persons",
    responses((status = 200, description = "The settings.", body = SettingsDoc)))]
pub(crate) async fn get_settings<S: Store>(
    State(state): State<AppState<S>>,
    Auth(principal): Auth,
) -> Result<Json<SettingsDoc>, ApiError> {
    Ok(Json(settings::get(&state.store, &principal).await?))
}

/// Change the identity settings; fields left out keep their value.
#[utoipa::path(put, path = "/api/v1/settings/identity", tag = "persons", request_body = SettingsDoc,
    responses((status = 200, description = "The settings now in force.", body = SettingsDoc)))]
pub(crate) async fn put_settings<S: Store>(
    State(state): State<AppState<S>>,
    Auth(principal): Auth,
    Json(doc): Json<SettingsDoc>,
) -> Result<Json<SettingsDoc>, ApiError> {
    Ok(Json(settings::put(&state.store, &principal, &doc).await?))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct PreviewQuery {
    /// Replay at most this many signals of the log.
    max_signals: Option<u64>,
}

/// Persons and merges of the graph under one set of rules.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct GraphCountsDto {
    persons: u64,
    merges: u64,
}

/// One group of persons the proposed rules would join or split.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct PreviewPartDto {
    person_id: Option<String>,
    identifier_count: u64,
    identifiers: Vec<IdentifierDto>,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct PreviewChangeDto {
    parts: Vec<PreviewPartDto>,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct PreviewChangesDto {
    count: u64,
    samples: Vec<PreviewChangeDto>,
}

/// What the proposed rules would merge and split, had they applied to the whole log.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct PreviewDto {
    signals: u64,
    /// False when `max_signals` stopped the replay early.
    complete: bool,
    current: GraphCountsDto,
    proposed: GraphCountsDto,
    identifiers_dropped: u64,
    signals_rejected: u64,
    would_merge: PreviewChangesDto,
    would_split: PreviewChangesDto,
}

/// `POST /api/v1/settings/identity/preview`: what the proposed rules would merge and split.
#[utoipa::path(post, path = "/api/v1/settings/identity/preview", tag = "persons",
    params(PreviewQuery), request_body = SettingsDoc,
    responses((status = 200, description = "The dry run; nothing changed.", body = PreviewDto)))]
pub(crate) async fn preview_settings<S: Store>(
    State(state): State<AppState<S>>,
    Auth(principal): Auth,
    Query(query): Query<PreviewQuery>,
    Json(doc): Json<SettingsDoc>,
) -> Result<Json<PreviewDto>, ApiError> {
    let preview =
        idgraph_app::preview::preview(&state.store, &principal, &doc, query.max_signals).await?;
    let changes = |count: u64, changes: &[idgraph_app::preview::Change]| PreviewChangesDto {
        count,
        samples: changes
            .iter()
            .map(|change| PreviewChangeDto {
                parts: change
                    .parts
                    .iter()
                    .map(|part| PreviewPartDto {
                        person_id: part.person_id.clone(),
                        identifier_count: part.identifier_count,
                        identifiers: part.identifiers.iter().map(IdentifierDto::from).collect(),
                    })
                    .collect(),
            })
            .collect(),
    };
    Ok(Json(PreviewDto {
        signals: preview.signals,
        complete: preview.complete,
        current: GraphCountsDto {
            persons: preview.current.persons,
            merges: preview.current.merges,
        },
        proposed: GraphCountsDto {
            persons: preview.proposed.persons,
            merges: preview.proposed.merges,
        },
        identifiers_dropped: preview.identifiers_dropped,
        signals_rejected: preview.signals_rejected,
        would_merge: changes(preview.merge_count, &preview.merges),
        would_split: changes(preview.split_count, &preview.splits),
    }))
}

/// One step of how an identifier came to belong to a person.
#[derive(Debug, Serialize, ToSchema)]
#[serde(tag = "step", rename_all = "snake_case")]
pub(crate) enum ExplainStep {
    /// The signal that attached the identifier (or created the person).
    Attached {
        person: String,
        signal: Option<String>,
        signal_kind: Option<String>,
        signal_identifiers: Option<Vec<IdentifierDto>>,
        at: String,
        source: String,
        rule: &'static str,
    },
    /// A merge that brought it along.
    Merged {
        merge_id: String,
        survivor: String,
        absorbed: String,
        signal: String,
        identifiers: Vec<IdentifierDto>,
        at: String,
        rule: String,
    },
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ExplanationDto {
    person_id: String,
    identifier: IdentifierDto,
    path: Vec<ExplainStep>,
    conflicts: Vec<ConflictDto>,
}

/// How an identifier came to belong to the person: the links and merges, each with its
/// signal, time, source and rule.
#[utoipa::path(get, path = "/api/v1/persons/{id}/explain", tag = "persons", params(PersonId, LookupQuery),
    responses((status = 200, description = "The path.", body = ExplanationDto)))]
pub(crate) async fn explain<S: Store>(
    State(state): State<AppState<S>>,
    Auth(principal): Auth,
    Path(person_id): Path<String>,
    Query(query): Query<LookupQuery>,
) -> Result<Json<ExplanationDto>, ApiError> {
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
    let mut path = vec![ExplainStep::Attached {
        person: node.person_id.clone(),
        signal: node.signal_id.clone(),
        signal_kind: signal.map(|s| s.event.kind.clone()),
        signal_identifiers: signal.map(|s| s.identifiers.iter().map(IdentifierDto::from).collect()),
        at: node.first_seen.to_string(),
        source: node.source.clone(),
        rule: attach_rule,
    }];
    for merge in &explanation.merges {
        path.push(ExplainStep::Merged {
            merge_id: merge.merge_id.clone(),
            survivor: merge.survivor.clone(),
            absorbed: merge.absorbed.clone(),
            signal: merge.signal_id.clone(),
            identifiers: merge.identifiers.iter().map(IdentifierDto::from).collect(),
            at: merge.at.to_string(),
            rule: merge.rule.clone(),
        });
    }
    Ok(Json(ExplanationDto {
        person_id: explanation.person_id.clone(),
        identifier: IdentifierDto {
            kind: node.kind.as_str().to_owned(),
            value: node.value.clone(),
        },
        path,
        conflicts: explanation
            .conflicts
            .into_iter()
            .map(conflict_json)
            .collect(),
    }))
}

/// A manual merge.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ManualMergeDto {
    survivor: String,
    absorbed: String,
    /// Why, for the merge's record.
    reason: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ManualMergeResultDto {
    merge: MergeRecordDto,
    /// The survivor after the merge.
    person: PersonDto,
}

/// Merge `absorbed` into `survivor`, as an operator decided.
#[utoipa::path(post, path = "/api/v1/persons/merge", tag = "persons", request_body = ManualMergeDto,
    responses((status = 200, description = "Merged.", body = ManualMergeResultDto),
              (status = 404, description = "No such person.", body = crate::error::ErrorBody)))]
pub(crate) async fn merge<S: Store>(
    State(state): State<AppState<S>>,
    Auth(principal): Auth,
    Json(dto): Json<ManualMergeDto>,
) -> Result<Json<ManualMergeResultDto>, ApiError> {
    let (merge, details) = persons::merge(
        &state.store,
        &principal,
        &dto.survivor,
        &dto.absorbed,
        &dto.reason,
    )
    .await?;
    Ok(Json(ManualMergeResultDto {
        merge: merge_json(merge),
        person: person_json(details),
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListPersonsQuery {
    /// Only persons with at least this many identifiers (default 1).
    min_identifiers: Option<u32>,
    /// Persons per page: 1 to 1000, default 50.
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct PersonCountDto {
    id: String,
    /// How many identifiers the person holds.
    identifiers: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct PersonPage {
    persons: Vec<PersonCountDto>,
    next_cursor: Option<String>,
}

/// Persons by their number of identifiers, most first: where mega persons show up.
#[utoipa::path(get, path = "/api/v1/persons", tag = "persons", params(ListPersonsQuery),
    responses((status = 200, description = "A page of persons.", body = PersonPage)))]
pub(crate) async fn list<S: Store>(
    State(state): State<AppState<S>>,
    Auth(principal): Auth,
    Query(query): Query<ListPersonsQuery>,
) -> Result<Json<PersonPage>, ApiError> {
    let page = crate::extract::page_request(query.limit, query.cursor)?;
    let persons = persons::by_identifier_count(
        &state.store,
        &principal,
        query.min_identifiers.unwrap_or(1),
        &page,
    )
    .await?;
    Ok(Json(PersonPage {
        persons: persons
            .items
            .into_iter()
            .map(|(id, identifiers)| PersonCountDto { id, identifiers })
            .collect(),
        next_cursor: persons.next_cursor,
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct StatsQuery {
    /// Count events of the last this many days (default 30).
    days: Option<u32>,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct DayCountDto {
    day: String,
    kind: String,
    count: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct StatsDto {
    persons: u64,
    persons_absorbed: u64,
    /// Identifiers by kind.
    identifiers: BTreeMap<String, u64>,
    events: Vec<DayCountDto>,
    events_since: String,
    merges: u64,
    conflicts: u64,
    imports: ImportStatsDto,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ImportStatsDto {
    /// Import jobs, all statuses.
    jobs: u64,
    /// Jobs by status: `landing`, `processing`, `completed`, `failed`.
    by_status: BTreeMap<String, u64>,
    /// Rows landed by all jobs.
    rows: u64,
}

/// Counts of the acting tenant's graph.
#[utoipa::path(get, path = "/api/v1/stats", tag = "persons", params(StatsQuery),
    responses((status = 200, description = "The counts.", body = StatsDto)))]
pub(crate) async fn stats<S: Store>(
    State(state): State<AppState<S>>,
    Auth(principal): Auth,
    Query(query): Query<StatsQuery>,
) -> Result<Json<StatsDto>, ApiError> {
    let (since, stats) = persons::stats(&state.store, &principal, query.days.unwrap_or(30)).await?;
    Ok(Json(StatsDto {
        persons: stats.persons,
        persons_absorbed: stats.persons_absorbed,
        identifiers: stats.identifiers_by_kind.into_iter().collect(),
        events: stats
            .events_by_kind_and_day
            .into_iter()
            .map(|(day, kind, count)| DayCountDto { day, kind, count })
            .collect(),
        events_since: since.to_string(),
        merges: stats.merges,
        conflicts: stats.conflicts,
        imports: ImportStatsDto {
            jobs: stats.imports_by_status.iter().map(|(_, n)| n).sum(),
            by_status: stats.imports_by_status.into_iter().collect(),
            rows: stats.import_rows,
        },
    }))
}

/// Events are streamed in pages of this many: the whole timeline is never in memory.
const EXPORT_PAGE: u32 = 1000;

/// A consent event, as the export lists it (`evidence` as the text stored).
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ExportConsentDto {
    id: String,
    subject: String,
    purpose: String,
    action: &'static str,
    source: String,
    evidence: Option<String>,
    workspace: String,
    occurred_at: String,
    recorded_at: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ExportSuppressionDto {
    id: String,
    kind: String,
    value: String,
    reason: &'static str,
    scope: &'static str,
    action: &'static str,
    note: Option<String>,
    at: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ExportContactDto {
    id: String,
    channel: &'static str,
    from: String,
    to: String,
    vertical: Option<String>,
    campaign: Option<String>,
    workspace: String,
    at: String,
}

/// Every observation of a trait, not only the current value.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct TraitObservationDto {
    name: String,
    value: Value,
    workspace: String,
    person_at_ingest: String,
    source: &'static str,
    confidence: f64,
    observed_at: String,
    set_once: bool,
    signal: String,
}

/// The export without its events, which are streamed after it.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ExportHeadDto {
    exported_at: String,
    person: PersonDto,
    trait_history: Vec<TraitObservationDto>,
    consent: Vec<ExportConsentDto>,
    suppressions: Vec<ExportSuppressionDto>,
    contacts: Vec<ExportContactDto>,
    merges: Vec<MergeRecordDto>,
    conflicts: Vec<ConflictDto>,
}

/// Everything idgraph holds about a person. Only the document's schema: the answer is
/// `ExportHeadDto` with the `events` streamed after it.
// Serialize is derived only so that `flatten` is a serde attribute utoipa honours: the
// document then shows the head's fields beside `events`, as the stream writes them.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct PersonExportDto {
    #[serde(flatten)]
    #[allow(dead_code, reason = "read by the OpenAPI document only")]
    head: ExportHeadDto,
    #[allow(dead_code, reason = "read by the OpenAPI document only")]
    events: Vec<EventDto>,
}

/// `GET /api/v1/persons/{id}/export`: everything idgraph holds about a person, as one JSON
/// document whose `events` array is streamed page by page.
#[utoipa::path(get, path = "/api/v1/persons/{id}/export", tag = "persons", params(PersonId),
    responses((status = 200, description = "The whole record; `events` holds every event, newest first.", body = PersonExportDto)))]
pub(crate) async fn export<S: Store>(
    State(state): State<AppState<S>>,
    Auth(principal): Auth,
    Path(person_id): Path<String>,
) -> Result<axum::response::Response, ApiError> {
    let head = persons::export_head(&state.store, &principal, &person_id).await?;
    let person_id = head.details.person.person_id.clone();
    let consent = head
        .consent
        .iter()
        .map(|c| ExportConsentDto {
            id: c.event_id.clone(),
            subject: c.subject.clone(),
            purpose: c.purpose.as_str().to_owned(),
            action: c.action.as_str(),
            source: c.source.clone(),
            evidence: c.evidence.clone(),
            workspace: c.workspace.as_str().to_owned(),
            occurred_at: c.occurred_at.to_string(),
            recorded_at: c.recorded_at.to_string(),
        })
        .collect();
    let suppressions = head
        .suppressions
        .iter()
        .map(|s| ExportSuppressionDto {
            id: s.entry_id.clone(),
            kind: s.identifier.kind().as_str().to_owned(),
            value: s.identifier.value().to_owned(),
            reason: s.reason.as_str(),
            scope: s.scope.name(),
            action: idgraph_store::suppression_action_name(s.action),
            note: s.note.clone(),
            at: s.at.to_string(),
        })
        .collect();
    let contacts = head
        .contacts
        .iter()
        .map(|c| ExportContactDto {
            id: c.contact_id.clone(),
            channel: c.channel.as_str(),
            from: c.from.clone(),
            to: c.to.value().to_owned(),
            vertical: c.vertical.clone(),
            campaign: c.campaign.clone(),
            workspace: c.workspace.as_str().to_owned(),
            at: c.at.to_string(),
        })
        .collect();
    let trait_history = head
        .trait_history
        .iter()
        .map(|t| TraitObservationDto {
            name: t.name.clone(),
            value: json_text(&t.value),
            workspace: t.workspace.as_str().to_owned(),
            person_at_ingest: t.person_id.clone(),
            source: t.provenance.class.as_str(),
            confidence: t.provenance.confidence,
            observed_at: t.provenance.observed_at.to_string(),
            set_once: t.set_once,
            signal: t.signal_id.clone(),
        })
        .collect();
    let head = ExportHeadDto {
        exported_at: jiff::Timestamp::now().to_string(),
        person: person_json(head.details),
        trait_history,
        consent,
        suppressions,
        contacts,
        merges: head.merges.into_iter().map(merge_json).collect(),
        conflicts: head.conflicts.into_iter().map(conflict_json).collect(),
    };
    let mut document = serde_json::to_string(&head)
        .map_err(|e| ApiError::from(idgraph_app::AppError::internal(e.to_string())))?;
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
            match serde_json::to_string(&event_json(event)) {
                Ok(text) => chunk.push_str(&text),
                Err(e) => {
                    cursor.done = true;
                    return Some((Err(std::io::Error::other(e)), cursor));
                }
            }
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

/// Undo one merge (`merge_id`), or split identifiers (and what arrived with them) off.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct UnmergeDto {
    merge_id: Option<String>,
    identifiers: Option<Vec<IdentifierDto>>,
    reason: Option<String>,
}

/// One merge undone.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub(crate) struct UnmergeOutcomeDto {
    survivor: String,
    restored: String,
    restored_members: Vec<String>,
    events_moved: u64,
    identifiers_moved: u64,
    grants_withdrawn: u64,
    /// The keep-apart rule that stops the same evidence merging them again.
    keep_apart_rule: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct UnmergeResultDto {
    /// The persons after the split.
    persons: Vec<PersonDto>,
    /// Values both sides keep, declared shared.
    shared_values: Vec<IdentifierDto>,
    /// The one merge undone, when there was exactly one.
    #[serde(skip_serializing_if = "Option::is_none")]
    unmerge: Option<UnmergeOutcomeDto>,
    unmerges: Vec<UnmergeOutcomeDto>,
}

/// Undo a merge or split identifiers off a person.
#[utoipa::path(post, path = "/api/v1/persons/{id}/unmerge", tag = "persons", params(PersonId),
    request_body = UnmergeDto,
    responses((status = 200, description = "The persons after the split.", body = UnmergeResultDto)))]
pub(crate) async fn unmerge<S: Store>(
    State(state): State<AppState<S>>,
    Auth(principal): Auth,
    Path(person_id): Path<String>,
    Json(dto): Json<UnmergeDto>,
) -> Result<Json<UnmergeResultDto>, ApiError> {
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
    let unmerges: Vec<UnmergeOutcomeDto> = unmerged
        .outcomes
        .into_iter()
        .map(|outcome| UnmergeOutcomeDto {
            survivor: outcome.survivor,
            restored: outcome.restored,
            restored_members: outcome.restored_members,
            events_moved: outcome.events_moved,
            identifiers_moved: outcome.identifiers_moved,
            grants_withdrawn: outcome.grants_withdrawn,
            keep_apart_rule: outcome.rule_id,
        })
        .collect();
    // `unmerge` describes the one merge a merge_id names; a split lists each in `unmerges`.
    let unmerge = match unmerges.as_slice() {
        [only] => Some(only.clone()),
        _ => None,
    };
    Ok(Json(UnmergeResultDto {
        persons: unmerged.persons.into_iter().map(person_json).collect(),
        shared_values: unmerged.shared.iter().map(IdentifierDto::from).collect(),
        unmerge,
        unmerges,
    }))
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct KeepApartRuleDto {
    id: String,
    /// The two persons kept apart.
    persons: [String; 2],
    merge_id: String,
    created_at: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct KeepApartRulesDto {
    rules: Vec<KeepApartRuleDto>,
}

/// The keep-apart rules naming a person.
#[utoipa::path(get, path = "/api/v1/persons/{id}/keep-apart", tag = "persons", params(PersonId),
    responses((status = 200, description = "The rules.", body = KeepApartRulesDto)))]
pub(crate) async fn keep_apart<S: Store>(
    State(state): State<AppState<S>>,
    Auth(principal): Auth,
    Path(person_id): Path<String>,
) -> Result<Json<KeepApartRulesDto>, ApiError> {
    let rules = persons::keep_apart_rules(&state.store, &principal, &person_id).await?;
    Ok(Json(KeepApartRulesDto {
        rules: rules
            .into_iter()
            .map(|r| KeepApartRuleDto {
                id: r.rule_id,
                persons: [r.person_a, r.person_b],
                merge_id: r.merge_id,
                created_at: r.created_at.to_string(),
            })
            .collect(),
    }))
}

/// Remove a keep-apart rule: the same evidence may merge the two again.
#[utoipa::path(delete, path = "/api/v1/keep-apart/{id}", tag = "persons",
    params(("id" = String, Path, description = "The rule's id.")),
    responses((status = 204, description = "Removed.")))]
pub(crate) async fn remove_keep_apart<S: Store>(
    State(state): State<AppState<S>>,
    Auth(principal): Auth,
    Path(rule_id): Path<String>,
) -> Result<axum::http::StatusCode, ApiError> {
    persons::remove_keep_apart(&state.store, &principal, &rule_id).await?;
    Ok(axum::http::StatusCode::NO_CONTENT)
}
