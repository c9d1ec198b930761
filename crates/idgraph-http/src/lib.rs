//! idgraph's HTTP surface: the axum router for ingestion (`/v1`) and management (`/api/v1`), the
//! JSON error contract, authentication extractors, and request metrics and logs.
//!
//! Handlers stay thin: extract, call one use case from `idgraph-app`, map the result.

mod audit_sink;
mod error;
mod extract;
mod idempotency;
mod observe;
mod openapi;
mod platform;
mod routes;
mod segment;
mod wire;

use std::future::Future;
use std::sync::{Arc, OnceLock};

use axum::Router;
use idgraph_app::EventIds;
use idgraph_app::data_key::DataKey;
use idgraph_app::imports::Importer;
use idgraph_app::webhooks::{WebhookWorker, WorkerSettings};
use idgraph_store::Store;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

pub use audit_sink::AuditSink;
pub use error::ApiError;
pub use platform::{RateLimitDefaults, RateLimits};

/// Everything a handler may use. Passed in, never global, so tests run many servers at once.
#[derive(Debug, Clone)]
pub struct AppState<S> {
    pub store: S,
    pub metrics: PrometheusHandle,
    pub event_ids: Arc<EventIds>,
    pub limits: Arc<RateLimits>,
    pub audit: AuditSink,
    /// Runs import jobs in the background; shares the event id generator.
    pub importer: Importer<S>,
    /// How long a deleted person's data waits for the purge.
    pub deletion_retention: jiff::SignedDuration,
    /// Seals webhook secrets; `None` when the operator configured no data key (PostgreSQL).
    pub data_key: Option<Arc<DataKey>>,
    /// Sends webhook deliveries; stopped with the server.
    pub webhook_worker: Option<WebhookWorker>,
    /// The rendered OpenAPI document of this build.
    pub openapi: Arc<str>,
}

impl<S: Store> AppState<S> {
    pub fn new(store: S) -> Self {
        Self::with_rate_limits(store, RateLimitDefaults::default())
    }

    /// Must be called on a tokio runtime: it starts the audit writer.
    pub fn with_rate_limits(store: S, defaults: RateLimitDefaults) -> Self {
        let event_ids = Arc::new(EventIds::default());
        Self {
            audit: AuditSink::start(store.clone()),
            importer: Importer::new(store.clone(), Arc::clone(&event_ids)),
            store,
            metrics: metrics_handle(),
            event_ids,
            limits: Arc::new(RateLimits::new(defaults)),
            deletion_retention: idgraph_app::privacy::DEFAULT_RETENTION,
            data_key: None,
            webhook_worker: None,
            openapi: openapi::document_json(),
        }
    }

    /// Adds the data key and starts the webhook worker. Must be called on a tokio runtime.
    pub fn with_webhooks(
        mut self,
        data_key: Option<DataKey>,
        settings: WorkerSettings,
    ) -> Result<Self, idgraph_app::AppError> {
        self.data_key = data_key.map(Arc::new);
        self.webhook_worker = Some(WebhookWorker::start(
            self.store.clone(),
            self.data_key.clone(),
            settings,
        )?);
        Ok(self)
    }
}

/// How long a stopping server lets running imports finish their current chunk.
const IMPORT_STOP_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

/// The Prometheus recorder. The `metrics` facade is process-wide by design, so the recorder is
/// installed once and every server in the process renders the same registry.
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets(&[
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
                ])
                .expect("the bucket list is not empty");
            match builder.install_recorder() {
                Ok(handle) => handle,
                // Someone else installed a recorder first: serve an empty registry rather than
                // fail to start.
                Err(_) => PrometheusBuilder::new().build_recorder().handle(),
            }
        })
        .clone()
}

/// The whole router. Around every route, outermost first: metrics and logs, panics, rate
/// limits and the audit log (`platform`), idempotency keys.
pub fn router<S: Store>(state: AppState<S>) -> Router {
    build_router(state, true)
}

/// The router without the `platform` layer: no rate-limit headers and no audit entries (a
/// state whose defaults are 0 also checks no bucket). Only for measuring what that layer costs
/// (`benches/platform.rs`); never served.
#[doc(hidden)]
pub fn router_without_platform<S: Store>(state: AppState<S>) -> Router {
    build_router(state, false)
}

fn build_router<S: Store>(state: AppState<S>, platform: bool) -> Router {
    let routes = routes::all::<S>().layer(axum::middleware::from_fn_with_state(
        state.clone(),
        idempotency::around::<S>,
    ));
    let routes = if platform {
        routes.layer(axum::middleware::from_fn_with_state(
            state.clone(),
            platform::around::<S>,
        ))
    } else {
        routes
    };
    routes
        .fallback(error::no_route)
        .method_not_allowed_fallback(error::method_not_allowed)
        .layer(axum::middleware::from_fn(observe::observe))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            error::panic_response,
        ))
        .with_state(state)
}

/// Serves until `shutdown` resolves, then stops accepting, lets in-flight requests finish, and
/// closes the store.
pub async fn serve<S: Store>(
    state: AppState<S>,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let store = state.store.clone();
    let audit = state.audit.clone();
    let importer = state.importer.clone();
    let webhook_worker = state.webhook_worker.clone();
    metrics::gauge!("idgraph_build_info", "version" => env!("CARGO_PKG_VERSION"), "backend" => store.backend()).set(1.0);
    let served = axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await;
    // Imports stop at a chunk boundary before the store closes; they resume at the next start.
    importer.stop(IMPORT_STOP_GRACE).await;
    // Requests in flight finish and are logged; what is still pending waits in the outbox.
    if let Some(worker) = webhook_worker {
        worker.stop().await;
    }
    // The last calls' audit entries are written before the store closes.
    audit.flush().await;
    store.close().await;
    tracing::info!("store closed");
    served
}
