//! The route table. Every route is listed here, so the table can be walked by tests.

mod ingest;
mod keys;
mod persons;
mod system;
mod tenancy;

use axum::Router;
use axum::routing::{delete, get, post};
use idgraph_store::Store;

use crate::AppState;

pub(crate) fn all<S: Store>() -> Router<AppState<S>> {
    Router::new()
        .route("/healthz", get(system::healthz::<S>))
        .route("/metrics", get(system::metrics::<S>))
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
        .route("/v1/whoami", get(keys::write_key_whoami))
        .route("/v1/batch", post(ingest::batch::<S>))
        .route("/v1/{kind}", post(ingest::single::<S>))
        .route("/api/v1/persons/lookup", get(persons::lookup::<S>))
        .route("/api/v1/persons/{id}", get(persons::get::<S>))
        .route("/api/v1/persons/{id}/timeline", get(persons::timeline::<S>))
        .route("/api/v1/persons/{id}/merges", get(persons::merges::<S>))
        .route(
            "/api/v1/settings/identity",
            get(persons::get_settings::<S>).put(persons::put_settings::<S>),
        )
}
