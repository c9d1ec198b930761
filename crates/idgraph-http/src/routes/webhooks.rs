//! Webhook subscriptions and their delivery log.

use axum::extract::State;
use axum::http::StatusCode;
use idgraph_app::webhooks::{self, NewWebhook};
use idgraph_store::{DeliveryAttempt, Store, WebhookDelivery, WebhookSubscription};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::extract::{Auth, Json, ListQuery, Path, Query};
use crate::{ApiError, AppState};

/// A subscription to create.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewWebhookDto {
    /// An absolute `http` or `https` URL.
    url: String,
    /// Event types: `person.created`, `person.merged`, `person.unmerged`, `person.deleted`,
    /// `consent.changed`, `suppression.added`, `import.completed`, `message.inbound`.
    events: Vec<String>,
    /// Only this workspace's events; every workspace's when left out.
    workspace: Option<String>,
}

/// A subscription as the API shows it: never its secret, except once at creation.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct WebhookDto {
    id: String,
    url: String,
    events: Vec<&'static str>,
    workspace: String,
    enabled: bool,
    disabled_at: Option<String>,
    disabled_reason: Option<String>,
    created_at: String,
    /// `whsec_…`, only in the answer that creates the subscription.
    #[serde(skip_serializing_if = "Option::is_none")]
    secret: Option<String>,
}

impl From<&WebhookSubscription> for WebhookDto {
    fn from(subscription: &WebhookSubscription) -> Self {
        WebhookDto {
            id: subscription.subscription_id.clone(),
            url: subscription.url.clone(),
            events: subscription.events.iter().map(|e| e.as_str()).collect(),
            workspace: subscription.workspace.as_str().to_owned(),
            enabled: subscription.disabled_at.is_none(),
            disabled_at: subscription.disabled_at.map(|t| t.to_string()),
            disabled_reason: subscription.disabled_reason.clone(),
            created_at: subscription.created_at.to_string(),
            secret: None,
        }
    }
}

/// `GET /api/v1/webhooks`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct WebhookPage {
    webhooks: Vec<WebhookDto>,
    next_cursor: Option<String>,
}

/// One attempt to deliver.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct AttemptDto {
    attempt: u32,
    at: String,
    response_status: Option<u16>,
    latency_ms: u64,
    error: Option<String>,
}

/// One event for one subscription, with every attempt to deliver it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct DeliveryDto {
    id: String,
    event_type: &'static str,
    /// `pending`, `delivered`, `failed` or `cancelled`.
    status: &'static str,
    attempts: Vec<AttemptDto>,
    attempt_count: u32,
    created_at: String,
    next_attempt_at: Option<String>,
    last_response_status: Option<u16>,
    last_error: Option<String>,
    finished_at: Option<String>,
    /// The body that is (or was) sent.
    #[schema(value_type = Object)]
    payload: Value,
}

/// `GET /api/v1/webhooks/{id}/deliveries`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct DeliveryPage {
    deliveries: Vec<DeliveryDto>,
    next_cursor: Option<String>,
}

fn delivery_dto(delivery: &WebhookDelivery, attempts: &[DeliveryAttempt]) -> DeliveryDto {
    DeliveryDto {
        id: delivery.delivery_id.clone(),
        event_type: delivery.event_type.as_str(),
        status: delivery.status.as_str(),
        attempts: attempts
            .iter()
            .map(|a| AttemptDto {
                attempt: a.attempt,
                at: a.at.to_string(),
                response_status: a.status_code,
                latency_ms: a.latency_ms,
                error: a.error.clone(),
            })
            .collect(),
        attempt_count: delivery.attempts,
        created_at: delivery.created_at.to_string(),
        next_attempt_at: delivery.next_attempt_at.map(|t| t.to_string()),
        last_response_status: delivery.last_status_code,
        last_error: delivery.last_error.clone(),
        finished_at: delivery.finished_at.map(|t| t.to_string()),
        payload: serde_json::from_str(&delivery.payload)
            .unwrap_or_else(|_| Value::Object(Default::default())),
    }
}

const ID: &str = "The subscription's id.";

/// Subscribe an endpoint to events; the answer carries the signing secret, once.
#[utoipa::path(post, path = "/api/v1/webhooks", tag = "webhooks", request_body = NewWebhookDto,
    responses((status = 201, description = "The subscription, with its secret.", body = WebhookDto)))]
pub(crate) async fn create<S: Store>(
    State(state): State<AppState<S>>,
    Auth(principal): Auth,
    Json(body): Json<NewWebhookDto>,
) -> Result<(StatusCode, Json<WebhookDto>), ApiError> {
    let request = NewWebhook {
        url: body.url,
        events: body.events,
        workspace: body.workspace,
    };
    let created =
        webhooks::create_webhook(&state.store, state.data_key.as_ref(), &principal, request)
            .await?;
    let mut shown = WebhookDto::from(&created.subscription);
    shown.secret = Some(created.secret);
    Ok((StatusCode::CREATED, Json(shown)))
}

/// The tenant's subscriptions.
#[utoipa::path(get, path = "/api/v1/webhooks", tag = "webhooks", params(ListQuery),
    responses((status = 200, description = "A page of subscriptions.", body = WebhookPage)))]
pub(crate) async fn list<S: Store>(
    State(state): State<AppState<S>>,
    Auth(principal): Auth,
    Query(query): Query<ListQuery>,
) -> Result<Json<WebhookPage>, ApiError> {
    let page = webhooks::list_webhooks(&state.store, &principal, &query.page()?).await?;
    Ok(Json(WebhookPage {
        webhooks: page.items.iter().map(WebhookDto::from).collect(),
        next_cursor: page.next_cursor,
    }))
}

/// One subscription.
#[utoipa::path(get, path = "/api/v1/webhooks/{id}", tag = "webhooks",
    params(("id" = String, Path, description = ID)),
    responses((status = 200, description = "The subscription.", body = WebhookDto)))]
pub(crate) async fn get<S: Store>(
    State(state): State<AppState<S>>,
    Auth(principal): Auth,
    Path(id): Path<String>,
) -> Result<Json<WebhookDto>, ApiError> {
    let subscription = webhooks::get_webhook(&state.store, &principal, &id).await?;
    Ok(Json(WebhookDto::from(&subscription)))
}

/// Delete a subscription; its pending deliveries are cancelled.
#[utoipa::path(delete, path = "/api/v1/webhooks/{id}", tag = "webhooks",
    params(("id" = String, Path, description = ID)),
    responses((status = 204, description = "Deleted.")))]
pub(crate) async fn delete<S: Store>(
    State(state): State<AppState<S>>,
    Auth(principal): Auth,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    webhooks::delete_webhook(&state.store, &principal, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Enable a subscription again (after a 410, or a disable); what waited is delivered in order.
#[utoipa::path(post, path = "/api/v1/webhooks/{id}/enable", tag = "webhooks",
    params(("id" = String, Path, description = ID)),
    responses((status = 200, description = "The subscription.", body = WebhookDto)))]
pub(crate) async fn enable<S: Store>(
    State(state): State<AppState<S>>,
    Auth(principal): Auth,
    Path(id): Path<String>,
) -> Result<Json<WebhookDto>, ApiError> {
    let subscription = webhooks::enable_webhook(&state.store, &principal, &id).await?;
    if let Some(worker) = &state.webhook_worker {
        worker.wake();
    }
    Ok(Json(WebhookDto::from(&subscription)))
}

/// Disable a subscription: queued deliveries wait, later events are not recorded for it.
#[utoipa::path(post, path = "/api/v1/webhooks/{id}/disable", tag = "webhooks",
    params(("id" = String, Path, description = ID)),
    responses((status = 200, description = "The subscription.", body = WebhookDto)))]
pub(crate) async fn disable<S: Store>(
    State(state): State<AppState<S>>,
    Auth(principal): Auth,
    Path(id): Path<String>,
) -> Result<Json<WebhookDto>, ApiError> {
    let subscription = webhooks::disable_webhook(&state.store, &principal, &id).await?;
    Ok(Json(WebhookDto::from(&subscription)))
}

/// The delivery log of a subscription, newest first.
#[utoipa::path(get, path = "/api/v1/webhooks/{id}/deliveries", tag = "webhooks",
    params(("id" = String, Path, description = ID), ListQuery),
    responses((status = 200, description = "A page of deliveries.", body = DeliveryPage)))]
pub(crate) async fn deliveries<S: Store>(
    State(state): State<AppState<S>>,
    Auth(principal): Auth,
    Path(id): Path<String>,
    Query(query): Query<ListQuery>,
) -> Result<Json<DeliveryPage>, ApiError> {
    let page = webhooks::deliveries(&state.store, &principal, &id, &query.page()?).await?;
    Ok(Json(DeliveryPage {
        deliveries: page
            .items
            .iter()
            .map(|(delivery, attempts)| delivery_dto(delivery, attempts))
            .collect(),
        next_cursor: page.next_cursor,
    }))
}
