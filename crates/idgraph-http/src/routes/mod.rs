//! The route table. Every route is listed here, so the table can be walked by tests.

pub(crate) mod audit;
pub(crate) mod compliance;
pub(crate) mod data_key;
pub(crate) mod imports;
pub(crate) mod ingest;
pub(crate) mod keys;
pub(crate) mod persons;
pub(crate) mod system;
pub(crate) mod tenancy;
pub(crate) mod webhooks;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{delete, get, post};
use idgraph_store::Store;

use crate::{AppState, openapi};

/// Largest `check-batch` body.
const CHECK_BATCH_BYTES: usize = 32 * 1024 * 1024;

pub(crate) fn all<S: Store>() -> Router<AppState<S>> {
    Router::new()
        .route("/healthz", get(system::healthz::<S>))
        .route("/metrics", get(system::metrics::<S>))
        .route("/api/v1/openapi.json", get(openapi::document::<S>))
        // Swagger UI, not an API: the one prefix the OpenAPI coverage test skips.
        .route("/api/docs", get(openapi::docs_index))
        .route("/api/docs/", get(openapi::docs_page))
        .route("/api/docs/{*file}", get(openapi::docs_file))
        .route(
            "/api/v1/tenants",
            get(tenancy::list_tenants::<S>).post(tenancy::create_tenant::<S>),
        )
        .route(
            "/api/v1/workspaces",
            get(tenancy::list_workspaces::<S>).post(tenancy::create_workspace::<S>),
        )
        .route("/api/v1/keys", get(keys::list::<S>).post(keys::create::<S>))
        .route("/api/v1/keys/{id}", delete(keys::revoke::<S>))
        .route("/api/v1/whoami", get(keys::whoami))
        .route("/api/v1/audit", get(audit::list::<S>))
        .route("/api/v1/data-key", get(data_key::status::<S>))
        .route("/api/v1/data-key/rotate", post(data_key::rotate::<S>))
        .route("/api/v1/stats", get(persons::stats::<S>))
        .route("/v1/whoami", get(keys::write_key_whoami))
        .route("/v1/batch", post(ingest::batch::<S>))
        .route("/v1/{kind}", post(ingest::single::<S>))
        .route("/api/v1/persons", get(persons::list::<S>))
        .route("/api/v1/persons/lookup", get(persons::lookup::<S>))
        .route("/api/v1/persons/merge", post(persons::merge::<S>))
        .route(
            "/api/v1/persons/{id}",
            get(persons::get::<S>).delete(persons::delete::<S>),
        )
        .route("/api/v1/persons/{id}/timeline", get(persons::timeline::<S>))
        .route("/api/v1/persons/{id}/merges", get(persons::merges::<S>))
        .route("/api/v1/persons/{id}/explain", get(persons::explain::<S>))
        .route("/api/v1/persons/{id}/export", get(persons::export::<S>))
        .route("/api/v1/persons/{id}/unmerge", post(persons::unmerge::<S>))
        .route(
            "/api/v1/persons/{id}/keep-apart",
            get(persons::keep_apart::<S>),
        )
        .route(
            "/api/v1/keep-apart/{id}",
            delete(persons::remove_keep_apart::<S>),
        )
        .route(
            "/api/v1/settings/identity",
            get(persons::get_settings::<S>).put(persons::put_settings::<S>),
        )
        .route(
            "/api/v1/settings/identity/preview",
            post(persons::preview_settings::<S>),
        )
        .route("/api/v1/consent", post(compliance::record_consent::<S>))
        .route(
            "/api/v1/persons/{id}/consent",
            get(compliance::person_consent::<S>),
        )
        .route(
            "/api/v1/suppressions",
            get(compliance::suppression_history::<S>).post(compliance::add_suppression::<S>),
        )
        .route(
            "/api/v1/suppressions/lift",
            post(compliance::lift_suppression::<S>),
        )
        .route("/api/v1/compliance/check", post(compliance::check::<S>))
        .route(
            "/api/v1/compliance/check-batch",
            // 100,000 checks of ~150 bytes each; the default 2 MB would stop at ~13,000.
            post(compliance::check_batch::<S>).layer(DefaultBodyLimit::max(CHECK_BATCH_BYTES)),
        )
        .route("/api/v1/contacts", post(compliance::record_contact::<S>))
        .route(
            "/api/v1/settings/compliance",
            get(compliance::get_settings::<S>).put(compliance::put_settings::<S>),
        )
        .route("/v1/messages/inbound", post(compliance::inbound::<S>))
        .route(
            "/api/v1/imports",
            // The body is streamed into LAND, never buffered: no size limit applies.
            get(imports::list::<S>)
                .post(imports::create::<S>)
                .layer(DefaultBodyLimit::disable()),
        )
        .route("/api/v1/imports/{id}", get(imports::get::<S>))
        .route("/api/v1/imports/{id}/rows", get(imports::rows::<S>))
        .route(
            "/api/v1/imports/{id}/reprocess",
            post(imports::reprocess::<S>),
        )
        .route(
            "/api/v1/webhooks",
            get(webhooks::list::<S>).post(webhooks::create::<S>),
        )
        .route(
            "/api/v1/webhooks/{id}",
            get(webhooks::get::<S>).delete(webhooks::delete::<S>),
        )
        .route("/api/v1/webhooks/{id}/enable", post(webhooks::enable::<S>))
        .route(
            "/api/v1/webhooks/{id}/disable",
            post(webhooks::disable::<S>),
        )
        .route(
            "/api/v1/webhooks/{id}/deliveries",
            get(webhooks::deliveries::<S>),
        )
        .route(
            "/api/v1/import-mappings/{name}",
            get(imports::get_mapping::<S>).put(imports::put_mapping::<S>),
        )
}
