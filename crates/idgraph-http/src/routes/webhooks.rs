//! Webhook subscriptions and their delivery log.

use axum::extract::State;
use axum::http::StatusCode;
use idgraph_app::webhooks::{self, NewWebhook};
use idgraph_store::{DeliveryAttempt, Store, WebhookDelivery, WebhookSubscription};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::extract::{Auth, Json, ListQuery, Path, Query};
use crate::wire::page_json;
use crate::{ApiError, AppState};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewWebhookDto {
    url: String,
    events: Vec<String>,
    workspace: Option<String>,
}

/// A subscription as the API shows it: never its secret.
fn subscription_json(subscription: &WebhookSubscription) -> Value {
    json!({
        "id": subscription.subscription_id,
        "url": subscription.url,
        "events": subscription.events.iter().map(|e| e.as_str()).collect::<Vec<_>>(),
        "workspace": subscription.workspace.as_str(),
        "enabled": subscription.disabled_at.is_none(),
        "disabled_at": subscription.disabled_at.map(|t| t.to_string()),
        "disabled_reason": subscription.disabled_reason,
        "created_at": subscription.created_at.to_string(),
    })
}

fn delivery_json(delivery: &WebhookDelivery, attempts: &[DeliveryAttempt]) -> Value {
    let payload: Value = serde_json::from_str(&delivery.payload).unwrap_or(Value::Null);
    json!({
        "id": delivery.delivery_id,
        "event_type": delivery.event_type.as_str(),
        "status": delivery.status.as_str(),
        "attempts": attempts.iter().map(|a| json!({
            "attempt": a.attempt,
            "at": a.at.to_string(),
            "response_status": a.status_code,
            "latency_ms": a.latency_ms,
            "error": a.error,
        })).collect::<Vec<_>>(),
        "attempt_count": delivery.attempts,
        "created_at": delivery.created_at.to_string(),
        "next_attempt_at": delivery.next_attempt_at.map(|t| t.to_string()),
        "last_response_status": delivery.last_status_code,
        "last_error": delivery.last_error,
        "finished_at": delivery.finished_at.map(|t| t.to_string()),
        "payload": payload,
    })
}

pub(crate) async fn create<S: Store>(
    State(state): State<AppState<S>>,
    Auth(principal): Auth,
    Json(body): Json<NewWebhookDto>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let request = NewWebhook {
        url: body.url,
        events: body.events,
        workspace: body.workspace,
    };
    let created =
        webhooks::create_webhook(&state.store, state.data_key.as_ref(), &principal, request)
            .await?;
    let mut shown = subscription_json(&created.subscription);
    shown["secret"] = Value::String(created.secret);
    Ok((StatusCode::CREATED, Json(shown)))
}

pub(crate) async fn list<S: Store>(
    State(state): State<AppState<S>>,
    Auth(principal): Auth,
    Query(query): Query<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let page = webhooks::list_webhooks(&state.store, &principal, &query.page()?).await?;
    let items: Vec<Value> = page.items.iter().map(subscription_json).collect();
    Ok(Json(page_json("webhooks", items, page.next_cursor)))
}

pub(crate) async fn get<S: Store>(
    State(state): State<AppState<S>>,
    Auth(principal): Auth,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let subscription = webhooks::get_webhook(&state.store, &principal, &id).await?;
    Ok(Json(subscription_json(&subscription)))
}

pub(crate) async fn delete<S: Store>(
    State(state): State<AppState<S>>,
    Auth(principal): Auth,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    webhooks::delete_webhook(&state.store, &principal, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub(crate) async fn enable<S: Store>(
    State(state): State<AppState<S>>,
    Auth(principal): Auth,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let subscription = webhooks::enable_webhook(&state.store, &principal, &id).await?;
    if let Some(worker) = &state.webhook_worker {
        worker.wake();
    }
    Ok(Json(subscription_json(&subscription)))
}

pub(crate) async fn disable<S: Store>(
    State(state): State<AppState<S>>,
    Auth(principal): Auth,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let subscription = webhooks::disable_webhook(&state.store, &principal, &id).await?;
    Ok(Json(subscription_json(&subscription)))
}

pub(crate) async fn deliveries<S: Store>(
    State(state): State<AppState<S>>,
    Auth(principal): Auth,
    Path(id): Path<String>,
    Query(query): Query<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let page = webhooks::deliveries(&state.store, &principal, &id, &query.page()?).await?;
    let items: Vec<Value> = page
        .items
        .iter()
        .map(|(delivery, attempts)| delivery_json(delivery, attempts))
        .collect();
    Ok(Json(page_json("deliveries", items, page.next_cursor)))
}
