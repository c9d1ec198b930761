//! Consent, suppression, contacts, the compliance gate and inbound messages.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use idgraph_app::AppError;
use idgraph_app::compliance::{
    self, CheckOutcome, CheckRequest, ComplianceSettingsDoc, ConsentRequest, ContactRequest,
    InboundMessage, SuppressionRequest,
};
use idgraph_core::compliance::SuppressionAction;
use idgraph_store::{ConsentEventRow, Store, SuppressionRow};
use jiff::Timestamp;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use crate::error::ErrorBody;
use crate::extract::{Auth, Json, Path, Query, WriteKey};
use crate::routes::persons::PersonId;
use crate::wire::IdentifierDto;
use crate::{ApiError, AppState};

fn timestamp(field: &str, raw: Option<&str>) -> Result<Option<Timestamp>, AppError> {
    raw.map(|raw| {
        crate::wire::client_time(raw).ok_or_else(|| {
            AppError::invalid(
                "invalid_input",
                format!("{field} must be an RFC 3339 timestamp between the years 1900 and 9000, got {raw:?}"),
            )
            .with_detail("field", field)
        })
    })
    .transpose()
}

/// A consent event, about a person or an identifier.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ConsentDto {
    person_id: Option<String>,
    identifier: Option<IdentifierDto>,
    purpose: String,
    action: String,
    source: String,
    /// Any JSON: stored as given.
    evidence: Option<Value>,
    occurred_at: Option<String>,
    workspace: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ConsentRecordedDto {
    id: String,
    purpose: String,
    action: String,
}

/// Record a grant or a revoke of consent for a purpose.
#[utoipa::path(post, path = "/api/v1/consent", tag = "compliance", request_body = ConsentDto,
    responses((status = 201, description = "Recorded.", body = ConsentRecordedDto),
              (status = 404, description = "No such person or workspace.", body = ErrorBody)))]
pub(crate) async fn record_consent<S: Store>(
    State(state): State<AppState<S>>,
    Auth(principal): Auth,
    Json(dto): Json<ConsentDto>,
) -> Result<(StatusCode, Json<ConsentRecordedDto>), ApiError> {
    let occurred_at = timestamp("occurred_at", dto.occurred_at.as_deref())?;
    let request = ConsentRequest {
        person_id: dto.person_id,
        identifier: dto.identifier.map(|i| (i.kind, i.value)),
        purpose: dto.purpose.clone(),
        action: dto.action.clone(),
        source: dto.source,
        evidence: dto.evidence.map(|e| e.to_string()),
        occurred_at,
        workspace: dto.workspace,
    };
    let id = compliance::record_consent(&state.store, &principal, request).await?;
    Ok((
        StatusCode::CREATED,
        Json(ConsentRecordedDto {
            id,
            purpose: dto.purpose,
            action: dto.action,
        }),
    ))
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ConsentEventDto {
    id: String,
    subject: String,
    purpose: String,
    action: &'static str,
    source: String,
    /// Any JSON, as recorded.
    evidence: Option<Value>,
    workspace: String,
    occurred_at: String,
    recorded_at: String,
}

fn consent_json(event: &ConsentEventRow) -> ConsentEventDto {
    ConsentEventDto {
        id: event.event_id.clone(),
        subject: event.subject.clone(),
        purpose: event.purpose.as_str().to_owned(),
        action: event.action.as_str(),
        source: event.source.clone(),
        evidence: event
            .evidence
            .as_deref()
            .map(|e| serde_json::from_str::<Value>(e).unwrap_or(Value::String(e.to_owned()))),
        workspace: event.workspace.as_str().to_owned(),
        occurred_at: event.occurred_at.to_string(),
        recorded_at: event.recorded_at.to_string(),
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct PurposeStateDto {
    /// `granted` or `revoked`.
    state: &'static str,
    /// The event that set it.
    event: ConsentEventDto,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct PersonConsentDto {
    person_id: String,
    /// The current state per purpose.
    purposes: BTreeMap<String, PurposeStateDto>,
    history: Vec<ConsentEventDto>,
}

/// A person's consent: the current state per purpose, and the history.
#[utoipa::path(get, path = "/api/v1/persons/{id}/consent", tag = "compliance", params(PersonId),
    responses((status = 200, description = "The consent.", body = PersonConsentDto)))]
pub(crate) async fn person_consent<S: Store>(
    State(state): State<AppState<S>>,
    Auth(principal): Auth,
    Path(person_id): Path<String>,
) -> Result<Json<PersonConsentDto>, ApiError> {
    let consent = compliance::person_consent(&state.store, &principal, &person_id).await?;
    let purposes = consent
        .current
        .iter()
        .map(|(purpose, event)| {
            let state = match event.action {
                idgraph_core::compliance::ConsentAction::Grant => "granted",
                idgraph_core::compliance::ConsentAction::Revoke => "revoked",
            };
            (
                purpose.clone(),
                PurposeStateDto {
                    state,
                    event: consent_json(event),
                },
            )
        })
        .collect();
    Ok(Json(PersonConsentDto {
        person_id: consent.person_id,
        purposes,
        history: consent.history.iter().map(consent_json).collect(),
    }))
}

/// An address to suppress (or lift), and at which scope.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SuppressionDto {
    kind: String,
    value: String,
    reason: String,
    scope: String,
    workspace: Option<String>,
    note: Option<String>,
}

/// An entry of the suppression list: an add or a lift.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct SuppressionEntryDto {
    id: String,
    kind: String,
    value: String,
    reason: &'static str,
    /// `global`, `tenant` or `workspace`.
    scope: &'static str,
    workspace: Option<String>,
    /// `add` or `lift`.
    action: &'static str,
    note: Option<String>,
    actor: String,
    at: String,
}

fn suppression_json(row: &SuppressionRow) -> SuppressionEntryDto {
    let workspace = match &row.scope {
        idgraph_core::compliance::SuppressionScope::Workspace(name) => Some(name.to_string()),
        _ => None,
    };
    SuppressionEntryDto {
        id: row.entry_id.clone(),
        kind: row.identifier.kind().as_str().to_owned(),
        value: row.identifier.value().to_owned(),
        reason: row.reason.as_str(),
        scope: row.scope.name(),
        workspace,
        action: idgraph_store::suppression_action_name(row.action),
        note: row.note.clone(),
        actor: row.actor.clone(),
        at: row.at.to_string(),
    }
}

async fn suppression<S: Store>(
    state: AppState<S>,
    principal: idgraph_app::access::Principal,
    dto: SuppressionDto,
    action: SuppressionAction,
) -> Result<(StatusCode, Json<SuppressionEntryDto>), ApiError> {
    let request = SuppressionRequest {
        kind: dto.kind,
        value: dto.value,
        reason: dto.reason,
        scope: dto.scope,
        workspace: dto.workspace,
        note: dto.note,
    };
    let row = compliance::suppress(&state.store, &principal, request, action).await?;
    Ok((StatusCode::CREATED, Json(suppression_json(&row))))
}

/// Suppress an address.
#[utoipa::path(post, path = "/api/v1/suppressions", tag = "compliance", request_body = SuppressionDto,
    responses((status = 201, description = "The entry.", body = SuppressionEntryDto),
              (status = 404, description = "No such workspace.", body = ErrorBody)))]
pub(crate) async fn add_suppression<S: Store>(
    State(state): State<AppState<S>>,
    Auth(principal): Auth,
    Json(dto): Json<SuppressionDto>,
) -> Result<(StatusCode, Json<SuppressionEntryDto>), ApiError> {
    suppression(state, principal, dto, SuppressionAction::Add).await
}

/// Lift a suppression: a new entry, the old one stays in the history.
#[utoipa::path(post, path = "/api/v1/suppressions/lift", tag = "compliance", request_body = SuppressionDto,
    responses((status = 201, description = "The lift entry.", body = SuppressionEntryDto),
              (status = 404, description = "No such workspace.", body = ErrorBody)))]
pub(crate) async fn lift_suppression<S: Store>(
    State(state): State<AppState<S>>,
    Auth(principal): Auth,
    Json(dto): Json<SuppressionDto>,
) -> Result<(StatusCode, Json<SuppressionEntryDto>), ApiError> {
    suppression(state, principal, dto, SuppressionAction::Lift).await
}

/// An address, as `?kind=&value=`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct SuppressionQuery {
    kind: String,
    value: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct SuppressionHistoryDto {
    entries: Vec<SuppressionEntryDto>,
}

/// Every add and lift of an address, at every scope the caller sees.
#[utoipa::path(get, path = "/api/v1/suppressions", tag = "compliance", params(SuppressionQuery),
    responses((status = 200, description = "The history.", body = SuppressionHistoryDto)))]
pub(crate) async fn suppression_history<S: Store>(
    State(state): State<AppState<S>>,
    Auth(principal): Auth,
    Query(query): Query<SuppressionQuery>,
) -> Result<Json<SuppressionHistoryDto>, ApiError> {
    let rows = compliance::suppression_history(&state.store, &principal, &query.kind, &query.value)
        .await?;
    Ok(Json(SuppressionHistoryDto {
        entries: rows.iter().map(suppression_json).collect(),
    }))
}

/// May this address be contacted on this channel for this purpose?
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CheckDto {
    channel: String,
    to: String,
    from: Option<String>,
    purpose: String,
    vertical: Option<String>,
    at: Option<String>,
    workspace: Option<String>,
}

impl CheckDto {
    fn into_request(
        self,
        index: Option<usize>,
    ) -> Result<(CheckRequest, Option<String>), ApiError> {
        let at = timestamp("at", self.at.as_deref()).map_err(|e| match index {
            Some(index) => e.with_detail("index", index.to_string()),
            None => e,
        })?;
        // `from` is accepted for the record; cooldowns are per recipient.
        let _ = self.from;
        Ok((
            CheckRequest {
                channel: self.channel,
                to: self.to,
                purpose: self.purpose,
                vertical: self.vertical,
                at,
            },
            self.workspace,
        ))
    }
}

/// Why a check denied (or what it noted).
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ReasonDto {
    /// `suppressed`, `consent_revoked`, `consent_missing`, `cooldown`, `invalid_address`, ...
    code: &'static str,
    detail: String,
    /// The id of the row that decided, if one did.
    evidence: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct CheckResultDto {
    allowed: bool,
    reasons: Vec<ReasonDto>,
    /// The person holding the address, if any.
    person_id: Option<String>,
}

fn outcome_json(outcome: &CheckOutcome) -> CheckResultDto {
    CheckResultDto {
        allowed: outcome.decision.allowed,
        reasons: outcome
            .decision
            .reasons
            .iter()
            .map(|r| ReasonDto {
                code: r.code.as_str(),
                detail: r.detail.clone(),
                evidence: r.evidence.clone(),
            })
            .collect(),
        person_id: outcome.persons.first().cloned(),
    }
}

/// The compliance gate, for one address.
#[utoipa::path(post, path = "/api/v1/compliance/check", tag = "compliance", request_body = CheckDto,
    responses((status = 200, description = "The decision, with every reason.", body = CheckResultDto),
              (status = 404, description = "No such workspace.", body = ErrorBody)))]
pub(crate) async fn check<S: Store>(
    State(state): State<AppState<S>>,
    Auth(principal): Auth,
    Json(dto): Json<CheckDto>,
) -> Result<Json<CheckResultDto>, ApiError> {
    let (request, workspace) = dto.into_request(None)?;
    let outcomes = compliance::check(
        &state.store,
        &principal,
        workspace.as_deref(),
        vec![request],
    )
    .await?;
    let outcome = outcomes
        .first()
        .ok_or_else(|| ApiError::from(AppError::internal("a check gave no answer")))?;
    Ok(Json(outcome_json(outcome)))
}

/// Many checks in one workspace.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CheckBatchDto {
    checks: Vec<CheckDto>,
    workspace: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct CheckBatchResultDto {
    /// One decision per check, in order.
    results: Vec<CheckResultDto>,
}

/// The compliance gate, for many addresses (up to 32 MB of checks).
#[utoipa::path(post, path = "/api/v1/compliance/check-batch", tag = "compliance", request_body = CheckBatchDto,
    responses((status = 200, description = "The decisions, in order.", body = CheckBatchResultDto),
              (status = 404, description = "No such workspace.", body = ErrorBody)))]
pub(crate) async fn check_batch<S: Store>(
    State(state): State<AppState<S>>,
    Auth(principal): Auth,
    Json(dto): Json<CheckBatchDto>,
) -> Result<Json<CheckBatchResultDto>, ApiError> {
    let mut requests = Vec::with_capacity(dto.checks.len());
    for (index, check) in dto.checks.into_iter().enumerate() {
        let (request, workspace) = check.into_request(Some(index))?;
        if workspace.is_some() && workspace != dto.workspace {
            return Err(ApiError::from(
                AppError::invalid(
                    "invalid_input",
                    "a check-batch runs in one workspace: name it once, at the top level",
                )
                .with_detail("index", index.to_string()),
            ));
        }
        requests.push(request);
    }
    let outcomes =
        compliance::check(&state.store, &principal, dto.workspace.as_deref(), requests).await?;
    Ok(Json(CheckBatchResultDto {
        results: outcomes.iter().map(outcome_json).collect(),
    }))
}

/// A contact attempt, which feeds cooldowns.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ContactDto {
    channel: String,
    from: String,
    to: String,
    vertical: Option<String>,
    campaign: Option<String>,
    at: Option<String>,
    workspace: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct CreatedIdDto {
    id: String,
}

/// Record a contact attempt.
#[utoipa::path(post, path = "/api/v1/contacts", tag = "compliance", request_body = ContactDto,
    responses((status = 201, description = "Recorded.", body = CreatedIdDto),
              (status = 404, description = "No such workspace.", body = ErrorBody)))]
pub(crate) async fn record_contact<S: Store>(
    State(state): State<AppState<S>>,
    Auth(principal): Auth,
    Json(dto): Json<ContactDto>,
) -> Result<(StatusCode, Json<CreatedIdDto>), ApiError> {
    let request = ContactRequest {
        at: timestamp("at", dto.at.as_deref())?,
        channel: dto.channel,
        from: dto.from,
        to: dto.to,
        vertical: dto.vertical,
        campaign: dto.campaign,
        workspace: dto.workspace,
    };
    let id = compliance::record_contact(&state.store, &principal, request).await?;
    Ok((StatusCode::CREATED, Json(CreatedIdDto { id })))
}

/// The tenant's compliance settings.
#[utoipa::path(get, path = "/api/v1/settings/compliance", tag = "compliance",
    responses((status = 200, description = "The settings.", body = ComplianceSettingsDoc)))]
pub(crate) async fn get_settings<S: Store>(
    State(state): State<AppState<S>>,
    Auth(principal): Auth,
) -> Result<Json<ComplianceSettingsDoc>, ApiError> {
    Ok(Json(
        compliance::get_settings(&state.store, &principal).await?,
    ))
}

/// Change the compliance settings; fields left out keep their value.
#[utoipa::path(put, path = "/api/v1/settings/compliance", tag = "compliance", request_body = ComplianceSettingsDoc,
    responses((status = 200, description = "The settings now in force.", body = ComplianceSettingsDoc)))]
pub(crate) async fn put_settings<S: Store>(
    State(state): State<AppState<S>>,
    Auth(principal): Auth,
    Json(doc): Json<ComplianceSettingsDoc>,
) -> Result<Json<ComplianceSettingsDoc>, ApiError> {
    Ok(Json(
        compliance::put_settings(&state.store, &principal, &doc).await?,
    ))
}

/// Twilio's webhook fields (it sends many more; only these are read).
#[derive(Debug, Deserialize, ToSchema)]
#[allow(non_snake_case, reason = "Twilio's field names")]
pub(crate) struct TwilioForm {
    From: Option<String>,
    To: Option<String>,
    Body: Option<String>,
    MessageSid: Option<String>,
}

/// An inbound message as JSON.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct InboundJson {
    from: String,
    to: String,
    body: String,
    channel: Option<String>,
    message_id: Option<String>,
}

fn bad_body(message: impl Into<String>) -> ApiError {
    ApiError::from(AppError::invalid("invalid_body", message))
}

/// At most this much body: an SMS webhook is small.
const MAX_INBOUND_BYTES: usize = 64 * 1024;

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct InboundAck {
    success: bool,
    /// The STOP/START/HELP keyword recognised, if any.
    keyword: Option<&'static str>,
    /// True when the message id was seen before.
    duplicate: bool,
}

/// `POST /v1/messages/inbound`: a Twilio-style form body or its JSON equivalent. A form request
/// is answered with empty TwiML (so Twilio sends no reply of its own), JSON with JSON.
#[utoipa::path(post, path = "/v1/messages/inbound", tag = "compliance",
    request_body(content(
        (InboundJson = "application/json"),
        (TwilioForm = "application/x-www-form-urlencoded"),
    )),
    responses((status = 200, description = "Recorded; a STOP revokes consent and suppresses the sender.",
               content((InboundAck = "application/json"), (String = "text/xml"))),
              (status = 413, description = "More than 64 KB.", body = ErrorBody)))]
pub(crate) async fn inbound<S: Store>(
    State(state): State<AppState<S>>,
    WriteKey(principal): WriteKey,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    if body.len() > MAX_INBOUND_BYTES {
        return Err(bad_body(format!(
            "an inbound message may be at most {} KB",
            MAX_INBOUND_BYTES / 1024
        )));
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let is_form = content_type.starts_with("application/x-www-form-urlencoded");
    let message = if is_form {
        let form: TwilioForm = serde_urlencoded::from_bytes(&body)
            .map_err(|e| bad_body(format!("unreadable form body: {e}")))?;
        let field = |value: Option<String>, name: &str| {
            value.ok_or_else(|| bad_body(format!("the form lacks {name}")))
        };
        InboundMessage {
            from: field(form.From, "From")?,
            to: field(form.To, "To")?,
            body: form.Body.unwrap_or_default(),
            channel: None,
            message_id: form.MessageSid,
        }
    } else if content_type.starts_with("application/json") || content_type.is_empty() {
        let dto: InboundJson =
            serde_json::from_slice(&body).map_err(|e| bad_body(format!("invalid JSON: {e}")))?;
        InboundMessage {
            from: dto.from,
            to: dto.to,
            body: dto.body,
            channel: dto.channel,
            message_id: dto.message_id,
        }
    } else {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send application/x-www-form-urlencoded (Twilio) or application/json",
        ));
    };
    let outcome = compliance::inbound(&state.store, &principal, message).await?;
    if is_form {
        return Ok((
            [(header::CONTENT_TYPE, "text/xml")],
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response></Response>",
        )
            .into_response());
    }
    Ok(Json(InboundAck {
        success: true,
        keyword: outcome.keyword.map(|k| k.as_str()),
        duplicate: !outcome.recorded,
    })
    .into_response())
}
