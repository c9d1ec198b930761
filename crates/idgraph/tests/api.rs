//! The management and ingestion auth contract, through a real server on a loopback port, on
//! both backends: every case runs once on a fresh SQLite data dir and once on a fresh
//! PostgreSQL database.

mod common;

use common::{MASTER_KEY, TestApp, error_code};
use reqwest::StatusCode;
use serde_json::{Value, json};

on_both_backends!(
    health_and_metrics,
    missing_or_unknown_keys_get_401,
    keys_are_shown_once_scoped_and_revocable,
    keys_cannot_escalate,
    workspaces_are_created_listed_and_paged,
    tenants_are_isolated,
    write_keys_authenticate_with_http_basic,
    bad_requests_get_the_json_error_contract,
);

async fn health_and_metrics(app: &TestApp) {
    let response = app
        .client
        .get(app.url("/healthz"))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.json::<Value>().await.expect("json"),
        json!({"status": "ok"})
    );
    app.get("/api/v1/whoami", MASTER_KEY).await;
    let metrics = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .expect("request");
    assert!(
        metrics.headers()["content-type"]
            .to_str()
            .expect("header")
            .starts_with("text/plain")
    );
    let text = metrics.text().await.expect("text");
    assert!(text.contains("idgraph_http_requests_total{"), "{text}");
    assert!(text.contains("route=\"/api/v1/whoami\""), "{text}");
}

async fn missing_or_unknown_keys_get_401(app: &TestApp) {
    let response = app
        .client
        .get(app.url("/api/v1/keys"))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(response.headers()["www-authenticate"], "Bearer");
    let body: Value = response.json().await.expect("json");
    assert_eq!(error_code(&body), "unauthenticated");
    assert!(
        body["error"]["message"]
            .as_str()
            .expect("message")
            .contains("Bearer")
    );

    let well_formed_but_unknown = format!("idg_default_01unknown_{}", "ab".repeat(32));
    for key in [
        "nonsense",
        well_formed_but_unknown.as_str(),
        &MASTER_KEY[..MASTER_KEY.len() - 1],
    ] {
        let (status, body) = app.get("/api/v1/keys", key).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{key}");
        assert_eq!(error_code(&body), "unauthenticated");
    }
}

async fn keys_are_shown_once_scoped_and_revocable(app: &TestApp) {
    let (status, created) = app
        .post(
            "/api/v1/keys",
            MASTER_KEY,
            json!({"name": "reader", "scopes": ["persons:read"], "rate_limit_per_sec": 50}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let token = created["key"].as_str().expect("key").to_owned();
    let id = created["id"].as_str().expect("id").to_owned();
    assert!(token.starts_with("idg_default_"), "{token}");
    assert_eq!(created["scopes"], json!(["persons:read"]));
    assert_eq!(created["workspace"], "default");

    // Listed, but never with its secret.
    let (status, listed) = app.get("/api/v1/keys", MASTER_KEY).await;
    assert_eq!(status, StatusCode::OK);
    let listed_text = listed.to_string();
    let secret = token.rsplit('_').next().expect("secret");
    assert!(!listed_text.contains(secret), "a listing leaked the secret");
    let entry = listed["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .find(|k| k["id"] == id.as_str())
        .expect("listed");
    assert_eq!(entry["rate_limit_per_sec"], 50);
    assert_eq!(entry["revoked_at"], Value::Null);

    // The key works, but only within its scopes.
    let (status, me) = app.get("/api/v1/whoami", &token).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(me["scopes"], json!(["persons:read"]));
    let (status, body) = app.get("/api/v1/keys", &token).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body["error"]["details"]["needed_scope"], "keys:manage");

    // Revocation is effective on the next request.
    let (status, _) = app
        .call("DELETE", &format!("/api/v1/keys/{id}"), MASTER_KEY, None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = app.get("/api/v1/whoami", &token).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, body) = app
        .call("DELETE", &format!("/api/v1/keys/{id}"), MASTER_KEY, None)
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::NOT_FOUND, "not_found")
    );

    // The master key is not revocable through the API.
    let (status, _) = app
        .call("DELETE", "/api/v1/keys/master", MASTER_KEY, None)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(
        app.get("/api/v1/whoami", MASTER_KEY).await.0,
        StatusCode::OK
    );
}

async fn keys_cannot_escalate(app: &TestApp) {
    let (_, manager) = app.key_for("default", &["keys:manage"]).await;
    let (status, _) = app
        .post(
            "/api/v1/keys",
            &manager,
            json!({"name": "ok", "scopes": ["keys:manage"]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, body) = app
        .post(
            "/api/v1/keys",
            &manager,
            json!({"name": "no", "scopes": ["admin"]}),
        )
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::FORBIDDEN, "forbidden")
    );
    let (status, body) = app
        .post(
            "/api/v1/keys",
            &manager,
            json!({"name": "x", "scopes": ["persons:delete"]}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["error"]["message"]
            .as_str()
            .expect("message")
            .contains("persons:delete")
    );
    let (status, body) = app
        .post(
            "/api/v1/keys",
            MASTER_KEY,
            json!({"name": "x", "scopes": ["admin"], "workspace": "nope"}),
        )
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::BAD_REQUEST, "unknown_workspace")
    );
    let (status, _) = app
        .post(
            "/api/v1/keys",
            MASTER_KEY,
            json!({"name": "x", "scopes": []}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    // Managing workspaces needs admin.
    let (status, _) = app
        .post("/api/v1/workspaces", &manager, json!({"name": "shop"}))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

async fn workspaces_are_created_listed_and_paged(app: &TestApp) {
    for (name, env) in [("shop", "prod"), ("staging", "sandbox"), ("ci", "test")] {
        let (status, body) = app
            .post(
                "/api/v1/workspaces",
                MASTER_KEY,
                json!({"name": name, "environment": env}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        assert_eq!(body["environment"], env);
    }
    let (status, body) = app
        .post("/api/v1/workspaces", MASTER_KEY, json!({"name": "shop"}))
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::CONFLICT, "conflict")
    );
    let (status, body) = app
        .post(
            "/api/v1/workspaces",
            MASTER_KEY,
            json!({"name": "x", "environment": "production"}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["error"]["message"]
            .as_str()
            .expect("message")
            .contains("prod, sandbox, test")
    );
    let (status, _) = app
        .post(
            "/api/v1/workspaces",
            MASTER_KEY,
            json!({"name": "Bad Name"}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    let mut names = Vec::new();
    let mut path = "/api/v1/workspaces?limit=2".to_owned();
    loop {
        let (status, page) = app.get(&path, MASTER_KEY).await;
        assert_eq!(status, StatusCode::OK);
        let items = page["workspaces"].as_array().expect("workspaces");
        assert!(items.len() <= 2);
        names.extend(
            items
                .iter()
                .map(|w| w["name"].as_str().expect("name").to_owned()),
        );
        match page["next_cursor"].as_str() {
            Some(cursor) => path = format!("/api/v1/workspaces?limit=2&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(names, ["ci", "default", "shop", "staging"]);
    for bad in ["limit=0", "limit=1001", "limit=abc"] {
        let (status, body) = app
            .get(&format!("/api/v1/workspaces?{bad}"), MASTER_KEY)
            .await;
        assert_eq!(
            (status, error_code(&body)),
            (StatusCode::BAD_REQUEST, "invalid_query"),
            "{bad}"
        );
    }
}

async fn tenants_are_isolated(app: &TestApp) {
    let (status, tenant) = app
        .post(
            "/api/v1/tenants",
            MASTER_KEY,
            json!({"id": "acme", "name": "Acme"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{tenant}");
    let (status, _) = app
        .post(
            "/api/v1/tenants",
            MASTER_KEY,
            json!({"id": "acme", "name": "Again"}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);

    let (default_key_id, default_admin) = app.key_for("default", &["admin"]).await;
    let (_, acme_admin) = app.key_for("acme", &["admin"]).await;
    assert!(acme_admin.starts_with("idg_acme_"));

    // Each tenant sees only its own keys and workspaces.
    let (_, acme_keys) = app.get("/api/v1/keys", &acme_admin).await;
    assert!(!acme_keys.to_string().contains(&default_key_id));
    assert_eq!(acme_keys["keys"].as_array().expect("keys").len(), 1);
    let (status, body) = app
        .call(
            "DELETE",
            &format!("/api/v1/keys/{default_key_id}"),
            &acme_admin,
            None,
        )
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::NOT_FOUND, "not_found")
    );
    assert_eq!(
        app.get("/api/v1/whoami", &default_admin).await.0,
        StatusCode::OK
    );
    app.post(
        "/api/v1/workspaces",
        &acme_admin,
        json!({"name": "acme-only"}),
    )
    .await;
    let (_, default_ws) = app.get("/api/v1/workspaces", &default_admin).await;
    assert!(!default_ws.to_string().contains("acme-only"));

    // Only the master key may act for another tenant or list tenants.
    let response = app
        .client
        .get(app.url("/api/v1/keys"))
        .bearer_auth(&acme_admin)
        .header("X-Idgraph-On-Behalf-Of", "default")
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        app.get("/api/v1/tenants", &acme_admin).await.0,
        StatusCode::FORBIDDEN
    );
    let (status, tenants) = app.get("/api/v1/tenants", MASTER_KEY).await;
    assert_eq!(status, StatusCode::OK);
    let ids: Vec<&str> = tenants["tenants"]
        .as_array()
        .expect("tenants")
        .iter()
        .filter_map(|t| t["id"].as_str())
        .collect();
    assert_eq!(ids, ["acme", "default"]);
    let response = app
        .client
        .get(app.url("/api/v1/keys"))
        .bearer_auth(MASTER_KEY)
        .header("X-Idgraph-On-Behalf-Of", "no-such-tenant")
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
}

async fn write_keys_authenticate_with_http_basic(app: &TestApp) {
    let (_, write_key) = app.key_for("default", &["events:write"]).await;
    let response = app
        .client
        .get(app.url("/v1/whoami"))
        .basic_auth(&write_key, Some(""))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), StatusCode::OK);
    let me: Value = response.json().await.expect("json");
    assert_eq!(me["workspace"], "default");
    assert_eq!(me["scopes"], json!(["events:write"]));

    let (_, reader) = app.key_for("default", &["persons:read"]).await;
    let response = app
        .client
        .get(app.url("/v1/whoami"))
        .basic_auth(&reader, Some(""))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    // A write key is no management key.
    assert_eq!(
        app.get("/api/v1/keys", &write_key).await.0,
        StatusCode::FORBIDDEN
    );
    let response = app
        .client
        .get(app.url("/v1/whoami"))
        .bearer_auth(&write_key)
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
}

async fn bad_requests_get_the_json_error_contract(app: &TestApp) {
    let raw = |body: &'static str, content_type: &'static str| {
        app.client
            .post(app.url("/api/v1/workspaces"))
            .bearer_auth(MASTER_KEY)
            .header("content-type", content_type)
            .body(body)
            .send()
    };
    let cases = [
        (
            raw("{not json", "application/json").await,
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            raw("{\"name\": 5}", "application/json").await,
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            raw("{\"name\": \"a\", \"nmae\": 1}", "application/json").await,
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            raw("name=a", "application/x-www-form-urlencoded").await,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
    ];
    for (response, status, code) in cases {
        let response = response.expect("request");
        assert_eq!(response.status(), status);
        let body: Value = response.json().await.expect("json error body");
        assert_eq!(error_code(&body), code, "{body}");
        assert!(
            !body["error"]["message"]
                .as_str()
                .expect("message")
                .is_empty()
        );
    }
    let (status, body) = app.get("/api/v1/nothing-here", MASTER_KEY).await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::NOT_FOUND, "not_found")
    );
    let (status, body) = app
        .call("PUT", "/api/v1/keys", MASTER_KEY, Some(json!({})))
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed")
    );
}
