//! The OpenAPI 3.1 document, generated from the handlers' `#[utoipa::path]` annotations and the
//! wire types' `ToSchema` derives, served at `/api/v1/openapi.json`; and Swagger UI at
//! `/api/docs`, served from files compiled into the binary so it works with no network.
//!
//! To document a new handler: annotate it with `#[utoipa::path(...)]` (method, path, params,
//! request body, success responses and any error status peculiar to it) and list it in
//! `ApiDoc`'s `paths(...)`. `Conventions` adds what every endpoint shares: the security scheme
//! by API, and the error answers every authenticated call can give.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use idgraph_store::Store;
use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};
use utoipa::{Modify, OpenApi};

use crate::error::ErrorBody;
use crate::extract::Path;
use crate::routes::{
    audit, compliance, data_key, imports, ingest, keys, persons, system, tenancy, webhooks,
};
use crate::{ApiError, AppState};

/// Where the document is served; Swagger UI loads it from here.
pub(crate) const DOCUMENT_PATH: &str = "/api/v1/openapi.json";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "idgraph",
        description = "Identity graph and customer profile server. The management API under \
            `/api/v1` takes `Authorization: Bearer <key>`; the Segment-compatible ingestion API \
            under `/v1` takes HTTP Basic with the write key as user name and an empty password. \
            Every error is `{\"error\": {\"code\", \"message\", \"details\"}}`.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    paths(
        system::healthz,
        system::metrics,
        document,
        tenancy::list_tenants,
        tenancy::create_tenant,
        tenancy::list_workspaces,
        tenancy::create_workspace,
        keys::list,
        keys::create,
        keys::revoke,
        keys::whoami,
        keys::write_key_whoami,
        audit::list,
        data_key::status,
        data_key::rotate,
        persons::stats,
        ingest::batch,
        ingest::single,
        persons::list,
        persons::lookup,
        persons::merge,
        persons::get,
        persons::delete,
        persons::timeline,
        persons::merges,
        persons::explain,
        persons::export,
        persons::unmerge,
        persons::keep_apart,
        persons::remove_keep_apart,
        persons::get_settings,
        persons::put_settings,
        persons::preview_settings,
        compliance::record_consent,
        compliance::person_consent,
        compliance::suppression_history,
        compliance::add_suppression,
        compliance::lift_suppression,
        compliance::check,
        compliance::check_batch,
        compliance::record_contact,
        compliance::get_settings,
        compliance::put_settings,
        webhooks::create,
        webhooks::list,
        webhooks::get,
        webhooks::delete,
        webhooks::enable,
        webhooks::disable,
        webhooks::deliveries,
        compliance::inbound,
        imports::list,
        imports::create,
        imports::get,
        imports::rows,
        imports::reprocess,
        imports::get_mapping,
        imports::put_mapping,
    ),
    components(schemas(ErrorBody)),
    modifiers(&Conventions),
    tags(
        (name = "system", description = "Health, metrics and this document; no key needed."),
        (name = "tenancy", description = "Tenants (master key) and workspaces."),
        (name = "keys", description = "API keys."),
        (name = "audit", description = "The audit log of management calls."),
        (name = "ingestion", description = "Segment HTTP Tracking API compatible ingestion."),
        (name = "persons", description = "Profiles, timelines, merges, deletion, identity settings."),
        (name = "compliance", description = "Consent, suppression, contacts and the compliance gate."),
        (name = "imports", description = "CSV imports and their mappings."),
    ),
)]
pub(crate) struct ApiDoc;

/// Security scheme names, as the document's `components.securitySchemes` lists them.
const BEARER: &str = "bearer";
const WRITE_KEY: &str = "write_key";

/// What every endpoint shares, added here once rather than on each handler, so a new handler
/// cannot forget it: the authentication of its API and the errors any call of that API may get.
struct Conventions;

impl Modify for Conventions {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            BEARER,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("An API key: `Authorization: Bearer <key>`."))
                    .build(),
            ),
        );
        components.add_security_scheme(
            WRITE_KEY,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Basic)
                    .description(Some(
                        "HTTP Basic with a write key (scope `events:write`) as user name and an \
                         empty password, as Segment's client libraries send it.",
                    ))
                    .build(),
            ),
        );
        for (path, item) in openapi.paths.paths.iter_mut() {
            let scheme = if path.starts_with("/api/v1/") && path != DOCUMENT_PATH {
                Some(BEARER)
            } else if path.starts_with("/v1/") {
                Some(WRITE_KEY)
            } else {
                None
            };
            let has_path_parameter = path.contains('{');
            for (is_post, operation) in [
                (false, item.get.as_mut()),
                (true, item.post.as_mut()),
                (false, item.put.as_mut()),
                (false, item.delete.as_mut()),
            ]
            .into_iter()
            .filter_map(|(is_post, op)| op.map(|op| (is_post, op)))
            {
                let Some(scheme) = scheme else { continue };
                operation.security =
                    Some(vec![SecurityRequirement::new(scheme, Vec::<String>::new())]);
                add_common_errors(operation, is_post, has_path_parameter);
            }
        }
    }
}

/// The error answers of the platform around every authenticated handler (extractors, rate
/// limits, idempotency keys, the store), unless the handler's annotation already names them.
fn add_common_errors(operation: &mut Operation, is_post: bool, has_path_parameter: bool) {
    let has_body = operation.request_body.is_some();
    let mut errors = vec![
        (
            "400",
            "Invalid input: a parameter, header or body the endpoint cannot use.",
        ),
        ("401", "Missing, malformed, unknown or revoked key."),
        (
            "403",
            "The key lacks the scope, or the object belongs to another tenant.",
        ),
        (
            "429",
            "Over the key's rate limit; `Retry-After` says when to retry.",
        ),
        (
            "500",
            "Internal error; the details are in the server's log.",
        ),
        ("503", "The database is unavailable; retry later."),
    ];
    if has_path_parameter {
        errors.push(("404", "No such object in the acting tenant."));
    }
    if has_body {
        errors.push(("413", "The body is larger than the endpoint accepts."));
        errors.push((
            "415",
            "The body's Content-Type is not one the endpoint reads.",
        ));
    }
    if is_post {
        errors.push((
            "409",
            "A request with the same `Idempotency-Key` is still running.",
        ));
        errors.push((
            "422",
            "The `Idempotency-Key` was used before with a different request.",
        ));
    }
    for (status, description) in errors {
        operation
            .responses
            .responses
            .entry(status.to_owned())
            .or_insert_with(|| error_response(description));
    }
}

/// A response whose body is the shared error schema.
pub(crate) fn error_response(description: &str) -> RefOr<utoipa::openapi::Response> {
    RefOr::T(
        ResponseBuilder::new()
            .description(description)
            .content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("ErrorBody")))
                    .build(),
            )
            .build(),
    )
}

/// The document, rendered once per process: it is a pure function of the code.
pub(crate) fn document_json() -> Arc<str> {
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    Arc::from(
        doc.to_pretty_json()
            .unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}")),
    )
}

/// `GET /api/v1/openapi.json`: public, like any published API reference.
#[utoipa::path(
    get,
    path = "/api/v1/openapi.json",
    tag = "system",
    responses((status = 200, description = "This OpenAPI 3.1 document.", content_type = "application/json", body = Object)),
)]
pub(crate) async fn document<S: Store>(State(state): State<AppState<S>>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        state.openapi.to_string(),
    )
        .into_response()
}

/// `GET /api/docs`: Swagger UI lives under the trailing slash, where its relative links resolve.
pub(crate) async fn docs_index() -> Redirect {
    Redirect::permanent("/api/docs/")
}

/// `GET /api/docs/`: Swagger UI's page.
pub(crate) async fn docs_page() -> Result<Response, ApiError> {
    swagger_file("index.html")
}

/// `GET /api/docs/{*file}`: Swagger UI's scripts and styles, compiled into the binary.
pub(crate) async fn docs_file(Path(file): Path<String>) -> Result<Response, ApiError> {
    swagger_file(&file)
}

fn swagger_file(file: &str) -> Result<Response, ApiError> {
    let config = Arc::new(utoipa_swagger_ui::Config::from(DOCUMENT_PATH));
    match utoipa_swagger_ui::serve(file, config) {
        Ok(Some(found)) => Ok((
            [(header::CONTENT_TYPE, found.content_type)],
            found.bytes.into_owned(),
        )
            .into_response()),
        // The name is not echoed: whatever a caller puts in a path stays out of the answer.
        Ok(None) => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "no such file in the API reference",
        )),
        Err(e) => Err(ApiError::from(idgraph_app::AppError::internal(format!(
            "the API reference could not be rendered: {e}"
        )))),
    }
}
