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
use serde::Deserialize;
use serde_json::{Value, json};

use crate::extract::{Auth, Json, Path, Query, WriteKey};
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct IdentifierDto {
    kind: String,
    value: String,
}

#[derive(Debug, Deserialize)]
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

pub(crate) async fn record_consent<S: Store>(
    State(state): State<AppState<S>>,
    Auth(principal): Auth,
    Json(dto): Json<ConsentDto>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
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
        Json(json!({"id": id, "purpose": dto.purpose, "action": dto.action})),
    ))
}

fn consent_json(event: &ConsentEventRow) -> Value {
    json!({
        "id": event.event_id,
        "subject": event.subject,
        "purpose": event.purpose.as_str(),
        "action": event.action.as_str(),
        "source": event.source,
        "evidence": event.evidence.as_deref().map(|e| serde_json::from_str::<Value>(e).unwrap_or(Value::String(e.to_owned()))),
        "workspace": event.workspace.as_str(),
        "occurred_at": event.occurred_at.to_string(),
        "recorded_at": event.recorded_at.to_string(),
    })
}

pub(crate) async fn person_consent<S: Store>(
    State(state): State<AppState<S>>,
    Auth(principal): Auth,
    Path(person_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let consent = compliance::person_consent(&state.store, &principal, &person_id).await?;
    let purposes: serde_json::Map<String, Value> = consent
        .current
        .iter()
        .map(|(purpose, event)| {
            let state = match event.action {
                idgraph_core::compliance::ConsentAction::Grant => "granted",
                idgraph_core::compliance::ConsentAction::Revoke => "revoked",
            };
            (
                purpose.clone(),
                json!({"state": state, "event": consent_json(event)}),
            )
        })
        .collect();
    Ok(Json(json!({
        "person_id": consent.person_id,
        "purposes": purposes,
        "history": consent.history.iter().map(consent_json).collect::<Vec<_>>(),
    })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SuppressionDto {
    kind: String,
    value: String,
    reason: String,
    scope: String,
    workspace: Option<String>,
    note: Option<String>,
}

fn suppression_json(row: &SuppressionRow) -> Value {
    let workspace = match &row.scope {
        idgraph_core::compliance::SuppressionScope::Workspace(name) => Some(name.clone()),
        _ => None,
    };
    json!({
        "id": row.entry_id,
        "kind": row.identifier.kind().as_str(),
        "value": row.identifier.value(),
        "reason": row.reason.as_str(),
        "scope": row.scope.name(),
        "workspace": workspace,
        "action": idgraph_store::suppression_action_name(row.action),
        "note": row.note,
        "actor": row.actor,
        "at": row.at.to_string(),
    })
}

async fn suppression<S: Store>(
    state: AppState<S>,
    principal: idgraph_app::access::Principal,
    dto: SuppressionDto,
    action: SuppressionAction,
) -> Result<(StatusCode, Json<Value>), ApiError> {
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

pub(crate) async fn add_suppression<S: Store>(
    State(state): State<AppState<S>>,
    Auth(principal): Auth,
    Json(dto): Json<SuppressionDto>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    suppression(state, principal, dto, SuppressionAction::Add).await
}

pub(crate) async fn lift_suppression<S: Store>(
    State(state): State<AppState<S>>,
    Auth(principal): Auth,
    Json(dto): Json<SuppressionDto>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    suppression(state, principal, dto, SuppressionAction::Lift).await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SuppressionQuery {
    kind: String,
    value: String,
}

pub(crate) async fn suppression_history<S: Store>(
    State(state): State<AppState<S>>,
    Auth(principal): Auth,
    Query(query): Query<SuppressionQuery>,
) -> Result<Json<Value>, ApiError> {
    let rows = compliance::suppression_history(&state.store, &principal, &query.kind, &query.value)
        .await?;
    Ok(Json(json!({
        "entries": rows.iter().map(suppression_json).collect::<Vec<_>>(),
    })))
}

#[derive(Debug, Deserialize)]
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

fn outcome_json(outcome: &CheckOutcome) -> Value {
    let reasons: Vec<Value> = outcome
        .decision
        .reasons
        .iter()
        .map(|r| json!({"code": r.code.as_str(), "detail": r.detail, "evidence": r.evidence}))
        .collect();
    json!({
        "allowed": outcome.decision.allowed,
        "reasons": reasons,
        "person_id": outcome.persons.first(),
    })
}

pub(crate) async fn check<S: Store>(
    State(state): State<AppState<S>>,
    Auth(principal): Auth,
    Json(dto): Json<CheckDto>,
) -> Result<Json<Value>, ApiError> {
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CheckBatchDto {
    checks: Vec<CheckDto>,
    workspace: Option<String>,
}

pub(crate) async fn check_batch<S: Store>(
    State(state): State<AppState<S>>,
    Auth(principal): Auth,
    Json(dto): Json<CheckBatchDto>,
) -> Result<Json<Value>, ApiError> {
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
    Ok(Json(json!({
        "results": outcomes.iter().map(outcome_json).collect::<Vec<_>>(),
    })))
}

#[derive(Debug, Deserialize)]
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

pub(crate) async fn record_contact<S: Store>(
    State(state): State<AppState<S>>,
    Auth(principal): Auth,
    Json(dto): Json<ContactDto>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
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
    Ok((StatusCode::CREATED, Json(json!({"id": id}))))
}

pub(crate) async fn get_settings<S: Store>(
    State(state): State<AppState<S>>,
    Auth(principal): Auth,
) -> Result<Json<ComplianceSettingsDoc>, ApiError> {
    Ok(Json(
        compliance::get_settings(&state.store, &principal).await?,
    ))
}

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
#[derive(Debug, Deserialize)]
#[allow(non_snake_case, reason = "Twilio's field names")]
struct TwilioForm {
    From: Option<String>,
    To: Option<String>,
    Body: Option<String>,
    MessageSid: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct InboundJson {
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

/// `POST /v1/messages/inbound`: a Twilio-style form body or its JSON equivalent. A form request
/// is answered with empty TwiML (so Twilio sends no reply of its own), JSON with JSON.
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
    Ok(Json(json!({
        "success": true,
        "keyword": outcome.keyword.map(|k| k.as_str()),
        "duplicate": !outcome.recorded,
    }))
    .into_response())
}
