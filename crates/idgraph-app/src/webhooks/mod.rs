//! Webhook subscriptions: created with a `whsec_` secret shown once and sealed at rest, listed,
//! deleted, re-enabled, and their delivery log. The sending itself is `worker`.

mod worker;

use std::sync::Arc;

use idgraph_core::auth::Scope;
use idgraph_core::tenancy::WorkspaceName;
use idgraph_core::webhooks::{EndpointUrl, EventType, WebhookSecret};
use idgraph_store::{
    DeliveryAttempt, Page, PageRequest, Store, StoreError, WebhookDelivery, WebhookSubscription,
};
use jiff::Timestamp;

pub use worker::{WebhookWorker, WorkerSettings, install_tls_provider};

use crate::access::Principal;
use crate::data_key::DataKey;
use crate::ids::{new_id, secret_bytes};
use crate::{AppError, ErrorKind};

/// What a caller asks for when subscribing.
#[derive(Debug, Clone, Default)]
pub struct NewWebhook {
    pub url: String,
    pub events: Vec<String>,
    /// Absent means the key's workspace, or `default`.
    pub workspace: Option<String>,
}

/// A new subscription and its secret, which is never shown again.
#[derive(Debug)]
pub struct CreatedWebhook {
    pub subscription: WebhookSubscription,
    pub secret: String,
}

/// What seals a subscription's secret: the row it belongs to, so a sealed secret copied into
/// another row does not open.
pub(crate) fn secret_context(tenant: &str, subscription_id: &str) -> Vec<u8> {
    format!("webhook_secret:{tenant}:{subscription_id}").into_bytes()
}

fn no_data_key() -> AppError {
    AppError::new(
        ErrorKind::Unavailable,
        "data_key_missing",
        "webhooks need a data key to seal their secrets; the operator must set data_key_file \
         or IDGRAPH_DATA_KEY",
    )
}

pub async fn create_webhook<S: Store>(
    store: &S,
    data_key: Option<&Arc<DataKey>>,
    principal: &Principal,
    request: NewWebhook,
) -> Result<CreatedWebhook, AppError> {
    principal.require(Scope::WebhooksManage)?;
    let url = EndpointUrl::parse(&request.url)
        .map_err(|e| AppError::invalid("invalid_url", e.reason).with_detail("field", "url"))?;
    if request.events.is_empty() {
        return Err(
            AppError::invalid("invalid_input", "events must name at least one event type")
                .with_detail("field", "events"),
        );
    }
    let mut events = Vec::with_capacity(request.events.len());
    for raw in &request.events {
        let event: EventType = raw.parse().map_err(|e: idgraph_core::ParseError| {
            AppError::invalid("unknown_event_type", e.reason).with_detail("field", "events")
        })?;
        if !events.contains(&event) {
            events.push(event);
        }
    }
    let workspace = match (&request.workspace, &principal.workspace) {
        (Some(raw), _) => WorkspaceName::parse(raw)?,
        (None, Some(own)) => own.clone(),
        (None, None) => WorkspaceName::default_workspace(),
    };
    if principal
        .workspace
        .as_ref()
        .is_some_and(|own| own != &workspace)
        && !principal.is_master
    {
        return Err(AppError::forbidden(
            "this key may only subscribe to its own workspace",
        ));
    }
    store
        .get_workspace(&principal.tenant_id, &workspace)
        .await
        .map_err(|e| match e {
            StoreError::NotFound => AppError::invalid(
                "unknown_workspace",
                format!("workspace {workspace} does not exist"),
            )
            .with_detail("field", "workspace"),
            other => AppError::from_store("workspace")(other),
        })?;
    let data_key = data_key.ok_or_else(no_data_key)?;
    let secret = WebhookSecret::from_bytes(secret_bytes()?.to_vec())?;
    let subscription_id = new_id();
    let secret_sealed = data_key.seal(
        &secret_context(principal.tenant_id.as_str(), &subscription_id),
        secret.bytes(),
    )?;
    let subscription = WebhookSubscription {
        subscription_id,
        workspace,
        url: url.as_str().to_owned(),
        events,
        secret_sealed,
        created_at: Timestamp::now(),
        disabled_at: None,
        disabled_reason: None,
    };
    store
        .create_webhook(&principal.tenant_id, &subscription)
        .await
        .map_err(AppError::from_store("webhook"))?;
    tracing::info!(subscription = %subscription.subscription_id, tenant = %principal.tenant_id, "webhook created");
    Ok(CreatedWebhook {
        subscription,
        secret: secret.expose(),
    })
}

/// A key bound to a workspace sees only that workspace's subscriptions.
fn visible(principal: &Principal, subscription: &WebhookSubscription) -> bool {
    principal.is_master
        || principal
            .workspace
            .as_ref()
            .is_none_or(|own| *own == subscription.workspace)
}

pub async fn get_webhook<S: Store>(
    store: &S,
    principal: &Principal,
    subscription_id: &str,
) -> Result<WebhookSubscription, AppError> {
    principal.require(Scope::WebhooksManage)?;
    let subscription = store
        .get_webhook(&principal.tenant_id, subscription_id)
        .await
        .map_err(AppError::from_store("webhook"))?;
    if !visible(principal, &subscription) {
        return Err(AppError::not_found("webhook"));
    }
    Ok(subscription)
}

pub async fn list_webhooks<S: Store>(
    store: &S,
    principal: &Principal,
    page: &PageRequest,
) -> Result<Page<WebhookSubscription>, AppError> {
    principal.require(Scope::WebhooksManage)?;
    let mut page = store
        .list_webhooks(&principal.tenant_id, page)
        .await
        .map_err(AppError::from_store("webhook"))?;
    page.items.retain(|s| visible(principal, s));
    Ok(page)
}

pub async fn delete_webhook<S: Store>(
    store: &S,
    principal: &Principal,
    subscription_id: &str,
) -> Result<(), AppError> {
    get_webhook(store, principal, subscription_id).await?;
    store
        .delete_webhook(&principal.tenant_id, subscription_id, Timestamp::now())
        .await
        .map_err(AppError::from_store("webhook"))
}

/// Re-enables a subscription (disabled after a 410); what waited is sent in order.
pub async fn enable_webhook<S: Store>(
    store: &S,
    principal: &Principal,
    subscription_id: &str,
) -> Result<WebhookSubscription, AppError> {
    get_webhook(store, principal, subscription_id).await?;
    store
        .set_webhook_disabled(
            &principal.tenant_id,
            subscription_id,
            None,
            Timestamp::now(),
        )
        .await
        .map_err(AppError::from_store("webhook"))
}

/// Stops sending to a subscription until it is enabled again: queued deliveries wait, and
/// later events are not recorded for it.
pub async fn disable_webhook<S: Store>(
    store: &S,
    principal: &Principal,
    subscription_id: &str,
) -> Result<WebhookSubscription, AppError> {
    get_webhook(store, principal, subscription_id).await?;
    store
        .set_webhook_disabled(
            &principal.tenant_id,
            subscription_id,
            Some(format!("disabled by key {}", principal.key_id)),
            Timestamp::now(),
        )
        .await
        .map_err(AppError::from_store("webhook"))
}

/// A delivery and its attempts, newest delivery first.
pub async fn deliveries<S: Store>(
    store: &S,
    principal: &Principal,
    subscription_id: &str,
    page: &PageRequest,
) -> Result<Page<(WebhookDelivery, Vec<DeliveryAttempt>)>, AppError> {
    get_webhook(store, principal, subscription_id).await?;
    if page
        .after
        .as_ref()
        .is_some_and(|c| c.parse::<i64>().is_err())
    {
        return Err(AppError::invalid(
            "invalid_cursor",
            "cursor is not one this endpoint returned",
        )
        .with_detail("field", "cursor"));
    }
    let found = store
        .list_webhook_deliveries(&principal.tenant_id, subscription_id, page)
        .await
        .map_err(AppError::from_store("webhook"))?;
    let ids = found.items.iter().map(|d| d.delivery_id.clone()).collect();
    let mut attempts = store
        .webhook_attempts(&principal.tenant_id, ids)
        .await
        .map_err(AppError::from_store("webhook"))?;
    let items = found
        .items
        .into_iter()
        .map(|delivery| {
            let (mine, rest): (Vec<_>, Vec<_>) = attempts
                .drain(..)
                .partition(|a| a.delivery_id == delivery.delivery_id);
            attempts = rest;
            (delivery, mine)
        })
        .collect();
    Ok(Page {
        items,
        next_cursor: found.next_cursor,
    })
}
