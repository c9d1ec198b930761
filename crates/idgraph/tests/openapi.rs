//! The OpenAPI document and the API reference: every route of the table (read from its source)
//! is documented, the document is public and well formed, and Swagger UI is served from the
//! binary with no network.

mod common;

use common::{TestApp, route_table};
use reqwest::StatusCode;
use serde_json::Value;

/// Swagger UI's own routes: a page for people, not an API.
const NOT_API: &str = "/api/docs";

async fn document(app: &TestApp) -> Value {
    let response = app
        .client
        .get(app.url("/api/v1/openapi.json"))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), StatusCode::OK, "public, no key needed");
    assert_eq!(
        response.headers()["content-type"],
        "application/json",
        "served as JSON"
    );
    response.json().await.expect("the document is JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_is_in_the_document() {
    let app = TestApp::start(None).await;
    let doc = document(&app).await;
    assert_eq!(doc["openapi"], "3.1.0");
    let routes = route_table();
    assert!(
        routes.len() >= 40,
        "the route table was not read: {routes:?}"
    );
    let mut missing = Vec::new();
    for (method, path) in &routes {
        if path.starts_with(NOT_API) {
            continue;
        }
        let operation = &doc["paths"][path.as_str()][method.to_lowercase()];
        if !operation.is_object() {
            missing.push(format!("{method} {path}"));
        }
    }
    assert!(
        missing.is_empty(),
        "routes without #[utoipa::path] (annotate the handler and list it in openapi::ApiDoc): {missing:?}"
    );
    // And the document names nothing the server does not route.
    let documented: usize = doc["paths"]
        .as_object()
        .expect("paths")
        .values()
        .map(|item| item.as_object().expect("path item").len())
        .sum();
    let routed = routes
        .iter()
        .filter(|(_, p)| !p.starts_with(NOT_API))
        .count();
    assert_eq!(documented, routed, "operations in the document vs routes");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operations_carry_their_security_errors_and_real_schemas() {
    let app = TestApp::start(None).await;
    let doc = document(&app).await;
    let schemes = &doc["components"]["securitySchemes"];
    assert_eq!(schemes["bearer"]["scheme"], "bearer");
    assert_eq!(schemes["write_key"]["scheme"], "basic");
    let error = &doc["components"]["schemas"]["ErrorBody"];
    assert_eq!(
        error["properties"]["error"]["$ref"], "#/components/schemas/ErrorDetail",
        "{error}"
    );
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, operation) in item.as_object().expect("path item") {
            let what = format!("{method} {path}");
            let security = &operation["security"];
            let responses = operation["responses"].as_object().expect("responses");
            if path.starts_with("/api/v1/") && path != "/api/v1/openapi.json" {
                assert!(security[0].get("bearer").is_some(), "{what}: {security}");
            } else if path.starts_with("/v1/") {
                assert!(security[0].get("write_key").is_some(), "{what}: {security}");
            } else {
                assert!(security.is_null(), "{what} is public: {security}");
                continue;
            }
            for status in ["400", "401", "403", "429", "500"] {
                let schema = &responses[status]["content"]["application/json"]["schema"];
                assert_eq!(
                    schema["$ref"], "#/components/schemas/ErrorBody",
                    "{what} answers {status} with the error contract"
                );
            }
            let success = responses
                .iter()
                .find(|(status, _)| status.starts_with('2'))
                .unwrap_or_else(|| panic!("{what} has no success response"));
            if success.0 == "204" {
                continue;
            }
            let schema = &success.1["content"]
                .as_object()
                .and_then(|content| content.values().next())
                .unwrap_or_else(|| panic!("{what} documents no body"))["schema"];
            // A schema that says "some object" would let any answer pass the schema check.
            let described = schema.get("$ref").is_some()
                || schema.get("properties").is_some()
                || schema["type"] == "string";
            assert!(described, "{what}: {success:?} has no real schema");
        }
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_reference_is_served_from_the_binary() {
    let app = TestApp::start(None).await;
    // `/api/docs` sends the browser to the page, whose relative links resolve under the slash.
    let page = app
        .client
        .get(app.url("/api/docs"))
        .send()
        .await
        .expect("request");
    assert_eq!(page.status(), StatusCode::OK);
    assert_eq!(page.url().path(), "/api/docs/");
    assert!(
        page.headers()["content-type"]
            .to_str()
            .expect("header")
            .starts_with("text/html")
    );
    let html = page.text().await.expect("body");
    assert!(html.contains("swagger-ui"), "{html}");
    // Offline means no script or style from anywhere but this server.
    for attribute in ["src=\"http", "href=\"http", "src=\"//", "href=\"//"] {
        assert!(!html.contains(attribute), "an external resource: {html}");
    }
    let get = |file: &'static str| {
        let request = app.client.get(app.url(&format!("/api/docs/{file}")));
        async move {
            let response = request.send().await.expect("request");
            let status = response.status();
            (status, response.text().await.expect("body"))
        }
    };
    let (status, initializer) = get("swagger-initializer.js").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        initializer.contains("/api/v1/openapi.json"),
        "the page loads our document: {initializer}"
    );
    let (status, bundle) = get("swagger-ui-bundle.js").await;
    assert_eq!(status, StatusCode::OK);
    assert!(bundle.len() > 100_000, "the whole bundle is in the binary");
    let (status, missing) = get("no-such-file.js").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let missing: Value = serde_json::from_str(&missing).expect("a JSON error");
    assert_eq!(common::error_code(&missing), "not_found");
    app.stop().await;
}

/// The properties a schema promises, through `$ref` and `allOf` (which is how a flattened
/// struct is documented).
fn documented_properties(doc: &Value, schema: &Value) -> Vec<String> {
    if let Some(reference) = schema["$ref"].as_str() {
        let name = reference.trim_start_matches("#/components/schemas/");
        return documented_properties(doc, &doc["components"]["schemas"][name]);
    }
    let mut names: Vec<String> = schema["properties"]
        .as_object()
        .map(|properties| properties.keys().cloned().collect())
        .unwrap_or_default();
    for part in schema["allOf"].as_array().into_iter().flatten() {
        names.extend(documented_properties(doc, part));
    }
    names.sort();
    names
}

/// The export is written by hand as a stream, not serialized from its documented struct, so
/// the document and the bytes can drift apart unless a real answer is held against it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_export_has_the_documented_shape() {
    let app = TestApp::start(None).await;
    let doc = document(&app).await;
    let key = app.write_key().await;
    let (status, _) = app
        .track(
            "/v1/identify",
            &key,
            serde_json::json!({"userId": "doc-user", "traits": {"email": "doc@example.com"}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (_, person) = common::lookup(&app, "external_id", "doc-user").await;
    let id = person["id"].as_str().expect("id");
    let (status, export) = app
        .get(&format!("/api/v1/persons/{id}/export"), common::MASTER_KEY)
        .await;
    assert_eq!(status, StatusCode::OK, "{export}");
    let mut sent: Vec<String> = export
        .as_object()
        .expect("object")
        .keys()
        .cloned()
        .collect();
    sent.sort();
    let schema = &doc["paths"]["/api/v1/persons/{id}/export"]["get"]["responses"]["200"]["content"]
        ["application/json"]["schema"];
    assert_eq!(documented_properties(&doc, schema), sent, "{schema}");
    app.stop().await;
}
