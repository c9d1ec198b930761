//! The delivery worker: one background task that claims due deliveries, sends them signed, and
//! logs each attempt with what follows it (done, retry later, failed, endpoint disabled).
//!
//! At most `concurrency` requests are in flight; the store hands out only each endpoint's
//! oldest pending delivery, so an endpoint sees one request at a time, in order. A delivery is
//! leased while it is sent: if this process dies, the lease runs out and any process sends it
//! again (at least once).

use std::sync::Arc;
use std::time::{Duration, Instant};

use idgraph_core::tenancy::TenantId;
use idgraph_core::webhooks::{AttemptVerdict, RetrySchedule, WebhookSecret, verdict};
use idgraph_store::{
    AttemptNext, AttemptRecord, ClaimedDelivery, DeliveryAttempt, DeliveryClaim, PageRequest, Store,
};
use jiff::Timestamp;
use tokio::sync::{Notify, Semaphore, watch};
use tokio::task::JoinSet;

use super::secret_context;
use crate::data_key::DataKey;

/// How the worker sends.
#[derive(Debug, Clone)]
pub struct WorkerSettings {
    /// Requests in flight at most, over all endpoints.
    pub concurrency: usize,
    /// The whole request, connection included.
    pub timeout: Duration,
    /// How often due deliveries (retries) are looked for when nothing wakes the worker.
    pub poll: Duration,
    pub schedule: RetrySchedule,
    /// How long finished deliveries stay in the log; `None` keeps them.
    pub retention: Option<Duration>,
    /// How often the log is pruned.
    pub prune_every: Duration,
}

impl Default for WorkerSettings {
    fn default() -> Self {
        Self {
            concurrency: 16,
            timeout: Duration::from_secs(10),
            poll: Duration::from_secs(1),
            schedule: RetrySchedule::default(),
            retention: Some(Duration::from_secs(30 * 24 * 3600)),
            prune_every: Duration::from_secs(3600),
        }
    }
}

/// The running worker; cheap to clone.
#[derive(Debug, Clone)]
pub struct WebhookWorker {
    stop: watch::Sender<bool>,
    wake: Arc<Notify>,
    task: Arc<tokio::sync::Mutex<Option<tokio::task::JoinHandle<()>>>>,
}

struct Sender<S> {
    store: S,
    data_key: Option<Arc<DataKey>>,
    settings: WorkerSettings,
    client: reqwest::Client,
    owner: String,
    wake: Arc<Notify>,
}

impl WebhookWorker {
    /// Starts the worker on the current tokio runtime.
    pub fn start<S: Store>(
        store: S,
        data_key: Option<Arc<DataKey>>,
        settings: WorkerSettings,
    ) -> Result<Self, crate::AppError> {
        install_tls_provider();
        let client = reqwest::Client::builder()
            // A receiver must answer itself: a redirect could point the signed payload anywhere.
            .redirect(reqwest::redirect::Policy::none())
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout.min(Duration::from_secs(5)))
            .user_agent(concat!("idgraph-webhooks/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| crate::AppError::internal(format!("cannot build the HTTP client: {e}")))?;
        let (stop, stopped) = watch::channel(false);
        let wake = Arc::new(Notify::new());
        let sender = Arc::new(Sender {
            store,
            data_key,
            settings,
            client,
            owner: format!("worker-{}", crate::new_id()),
            wake: Arc::clone(&wake),
        });
        let task = tokio::spawn(sender.run(stopped));
        Ok(Self {
            stop,
            wake,
            task: Arc::new(tokio::sync::Mutex::new(Some(task))),
        })
    }

    /// Looks for due deliveries now rather than at the next poll.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Stops claiming and waits for requests in flight (each bounded by the timeout).
    pub async fn stop(&self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.lock().await.take() {
            let _ = task.await;
        }
    }
}

impl<S: Store> Sender<S> {
    async fn run(self: Arc<Self>, mut stopped: watch::Receiver<bool>) {
        let permits = Arc::new(Semaphore::new(self.settings.concurrency.max(1)));
        let mut in_flight = JoinSet::new();
        // The first pass soon after start, so a server that restarts often still prunes.
        let mut next_prune = Instant::now() + self.settings.poll;
        loop {
            while in_flight.try_join_next().is_some() {}
            if Instant::now() >= next_prune {
                next_prune = Instant::now() + self.settings.prune_every;
                if let Err(error) = self.prune().await {
                    tracing::warn!(%error, "pruning the webhook delivery log failed");
                }
            }
            if let Err(error) = self.claim_and_send(&permits, &mut in_flight).await {
                tracing::warn!(%error, "webhook claim failed");
            }
            tokio::select! {
                _ = stopped.changed() => break,
                () = self.wake.notified() => {}
                () = tokio::time::sleep(self.settings.poll) => {}
            }
        }
        // Requests in flight finish (each within the timeout) and are logged; nothing new starts.
        while in_flight.join_next().await.is_some() {}
    }

    /// Deletes finished deliveries older than the retention, a bounded batch per transaction so
    /// that ingestion is never held up behind one long delete.
    async fn prune(&self) -> Result<(), idgraph_store::StoreError> {
        const BATCH: u32 = 1000;
        let Some(retention) = self.settings.retention else {
            return Ok(());
        };
        let Ok(retention) = jiff::SignedDuration::try_from(retention) else {
            return Ok(());
        };
        let Ok(cutoff) = Timestamp::now().checked_sub(retention) else {
            return Ok(());
        };
        let mut page = PageRequest::first(PageRequest::MAX_LIMIT);
        let mut pruned = 0u64;
        loop {
            let tenants = self.store.list_tenants(&page).await?;
            for tenant in &tenants.items {
                loop {
                    let gone = self
                        .store
                        .prune_webhook_deliveries(&tenant.id, cutoff, BATCH)
                        .await?;
                    pruned += gone;
                    if gone < u64::from(BATCH) {
                        break;
                    }
                }
            }
            match tenants.next_cursor {
                Some(cursor) => page.after = Some(cursor),
                None => break,
            }
        }
        if pruned > 0 {
            tracing::info!(
                pruned,
                "pruned finished webhook deliveries past their retention"
            );
        }
        Ok(())
    }

    async fn claim_and_send(
        self: &Arc<Self>,
        permits: &Arc<Semaphore>,
        in_flight: &mut JoinSet<()>,
    ) -> Result<(), idgraph_store::StoreError> {
        let mut page = PageRequest::first(PageRequest::MAX_LIMIT);
        loop {
            let tenants = self.store.list_tenants(&page).await?;
            for tenant in tenants.items {
                let free = permits.available_permits();
                if free == 0 {
                    return Ok(());
                }
                let now = Timestamp::now();
                let lease = self.settings.timeout + Duration::from_secs(30);
                let claim = DeliveryClaim {
                    owner: self.owner.clone(),
                    now,
                    lease_until: now
                        .checked_add(jiff::SignedDuration::try_from(lease).unwrap_or_default())
                        .unwrap_or(now),
                    limit: u32::try_from(free).unwrap_or(u32::MAX),
                };
                let claimed = self
                    .store
                    .claim_webhook_deliveries(&tenant.id, &claim)
                    .await?;
                for delivery in claimed {
                    let Ok(permit) = Arc::clone(permits).try_acquire_owned() else {
                        // Cannot happen (we claimed no more than were free); the lease will
                        // run out and the delivery is claimed again.
                        break;
                    };
                    let this = Arc::clone(self);
                    let tenant_id = tenant.id.clone();
                    in_flight.spawn(async move {
                        this.deliver(&tenant_id, delivery).await;
                        drop(permit);
                        // The endpoint's next delivery (if any) is claimable now.
                        this.wake.notify_one();
                    });
                }
            }
            match tenants.next_cursor {
                Some(cursor) => page.after = Some(cursor),
                None => return Ok(()),
            }
        }
    }

    async fn deliver(&self, tenant_id: &TenantId, claimed: ClaimedDelivery) {
        let delivery = &claimed.delivery;
        let number = delivery.attempts + 1;
        let started = Instant::now();
        let at = Timestamp::now();
        let (status, error) = match self.secret(tenant_id, &claimed) {
            Ok(secret) => self.send(&claimed, &secret, at).await,
            Err(message) => (None, Some(message)),
        };
        let latency_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let next = match verdict(status) {
            AttemptVerdict::Delivered => AttemptNext::Delivered,
            AttemptVerdict::Disable => AttemptNext::Disable,
            AttemptVerdict::Retry => {
                let wait = self.settings.schedule.delay(number, jitter());
                let age =
                    Duration::try_from(at.duration_since(delivery.created_at)).unwrap_or_default();
                if self.settings.schedule.retries(age, wait) {
                    let signed = jiff::SignedDuration::try_from(wait).unwrap_or_default();
                    AttemptNext::RetryAt(at.checked_add(signed).unwrap_or(at))
                } else {
                    AttemptNext::Failed
                }
            }
        };
        let outcome = match next {
            AttemptNext::Delivered => "delivered",
            AttemptNext::RetryAt(_) => "retry",
            AttemptNext::Failed => "failed",
            AttemptNext::Disable => "disabled",
        };
        metrics::counter!("idgraph_webhook_attempts_total", "outcome" => outcome).increment(1);
        tracing::info!(
            delivery = %delivery.delivery_id,
            subscription = %delivery.subscription_id,
            attempt = number,
            status = status.map(i64::from),
            latency_ms,
            outcome,
            error = error.as_deref(),
            "webhook attempt"
        );
        let record = AttemptRecord {
            owner: self.owner.clone(),
            attempt: DeliveryAttempt {
                delivery_id: delivery.delivery_id.clone(),
                attempt: number,
                at,
                status_code: status,
                latency_ms,
                error: if next == AttemptNext::Delivered {
                    None
                } else {
                    error.or_else(|| status.map(|s| format!("the endpoint answered {s}")))
                },
            },
            next,
        };
        if let Err(error) = self
            .store
            .record_webhook_attempt(tenant_id, &delivery.delivery_id, record)
            .await
        {
            // The lease ran out and someone else has it, or the store is down: the delivery
            // stays pending and is sent again, which at-least-once allows.
            tracing::warn!(delivery = %delivery.delivery_id, %error, "webhook attempt not recorded");
        }
    }

    fn secret(
        &self,
        tenant_id: &TenantId,
        claimed: &ClaimedDelivery,
    ) -> Result<WebhookSecret, String> {
        let key = self
            .data_key
            .as_ref()
            .ok_or_else(|| "no data key is configured to open the signing secret".to_owned())?;
        let context = secret_context(tenant_id.as_str(), &claimed.delivery.subscription_id);
        let bytes = key
            .open(&context, &claimed.secret_sealed)
            .map_err(|e| e.message)?;
        WebhookSecret::from_bytes(bytes).map_err(|e| e.to_string())
    }

    async fn send(
        &self,
        claimed: &ClaimedDelivery,
        secret: &WebhookSecret,
        at: Timestamp,
    ) -> (Option<u16>, Option<String>) {
        let delivery = &claimed.delivery;
        let timestamp = at.as_second();
        let body = delivery.payload.as_bytes();
        let signature = secret.sign(&delivery.delivery_id, timestamp, body);
        let sent = self
            .client
            .post(&claimed.url)
            .header("content-type", "application/json")
            .header("webhook-id", &delivery.delivery_id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(delivery.payload.clone())
            .send()
            .await;
        match sent {
            Ok(response) => (Some(response.status().as_u16()), None),
            Err(error) => {
                let kind = if error.is_timeout() {
                    "timed out"
                } else if error.is_connect() {
                    "could not connect"
                } else {
                    "request failed"
                };
                (None, Some(format!("{kind}: {}", error_chain(&error))))
            }
        }
    }
}

/// Installs ring as the process's TLS provider. reqwest is built without a provider of its own
/// (another would pull a second crypto library and clash with ring at run time), so every
/// process that builds an HTTP client calls this first. Calling it again is harmless.
pub fn install_tls_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// A uniform value in `[0, 1)` for spreading retries.
fn jitter() -> f64 {
    let mut bytes = [0u8; 8];
    if getrandom::fill(&mut bytes).is_err() {
        return 0.5;
    }
    // 53 random bits make every f64 step in [0, 1) equally likely.
    (u64::from_le_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64
}
