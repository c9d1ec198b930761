//! Rate limits and the audit log, through a real server on both backends.

mod common;

use common::{MASTER_KEY, TestApp};
use reqwest::StatusCode;
use serde_json::{Value, json};

on_both_backends!(
    keys_are_rate_limited_with_headers_and_retry_after,
    every_management_call_is_audited,
    idempotency_keys_replay_the_first_response,
);

async fn create_key(app: &TestApp, body: Value) -> String {
    let (status, created) = app.post("/api/v1/keys", MASTER_KEY, body).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    created["key"].as_str().expect("key").to_owned()
}

async fn keys_are_rate_limited_with_headers_and_retry_after(app: &TestApp) {
    let key = create_key(
        app,
        json!({"name": "slow", "scopes": ["persons:read"], "rate_limit_per_sec": 3}),
    )
    .await;
    let mut answers = Vec::new();
    for _ in 0..4 {
        let response = app
            .client
            .get(app.url("/api/v1/whoami"))
            .bearer_auth(&key)
            .send()
            .await
            .expect("request");
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .map(|v| v.to_str().expect("ascii").to_owned())
        };
        answers.push((
            response.status(),
            header("ratelimit-limit"),
            header("ratelimit-remaining"),
            header("retry-after"),
        ));
    }
    assert_eq!(answers[0].0, StatusCode::OK);
    assert_eq!(answers[0].1.as_deref(), Some("3"));
    assert_eq!(answers[0].2.as_deref(), Some("2"));
    assert_eq!(answers[2].2.as_deref(), Some("0"));
    let (status, _, remaining, retry_after) = &answers[3];
    assert_eq!(*status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(remaining.as_deref(), Some("0"));
    assert_eq!(retry_after.as_deref(), Some("1"));
    // The bucket refills.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let (status, _) = app.get("/api/v1/whoami", &key).await;
    assert_eq!(status, StatusCode::OK);

    // Write keys are limited on /v1 too, with the same headers; the error body is ours.
    let write = create_key(
        app,
        json!({"name": "browser", "scopes": ["events:write"], "rate_limit_per_sec": 2}),
    )
    .await;
    let mut last = None;
    for i in 0..3 {
        last = Some(
            app.track(
                "/v1/track",
                &write,
                json!({"anonymousId": "a", "event": "e", "messageId": format!("rl-{i}")}),
            )
            .await,
        );
    }
    let (status, body) = last.expect("three calls");
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(body["error"]["code"], "rate_limited");
    // The master key is the operator's and is not limited.
    for _ in 0..20 {
        assert_eq!(
            app.get("/api/v1/whoami", MASTER_KEY).await.0,
            StatusCode::OK
        );
    }
}

async fn every_management_call_is_audited(app: &TestApp) {
    app.post(
        "/api/v1/tenants",
        MASTER_KEY,
        json!({"id": "globex", "name": "Globex"}),
    )
    .await;
    let (auditor_id, auditor) = app
        .key_for("default", &["audit:read", "persons:read"])
        .await;
    let (_, globex_auditor) = app.key_for("globex", &["audit:read"]).await;
    let (_, writer) = app.key_for("default", &["events:write"]).await;
    app.get("/api/v1/persons/no-such-person", &auditor).await;
    // The master key acting for another tenant is audited in that tenant's log.
    let response = app
        .client
        .get(app.url("/api/v1/workspaces"))
        .bearer_auth(MASTER_KEY)
        .header("X-Idgraph-On-Behalf-Of", "globex")
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), StatusCode::OK);
    // Ingestion is not a management call.
    app.track(
        "/v1/track",
        &writer,
        json!({"anonymousId": "a", "event": "e"}),
    )
    .await;

    let (status, log) = app.get("/api/v1/audit?limit=50", &auditor).await;
    assert_eq!(status, StatusCode::OK, "{log}");
    let entries = log["entries"].as_array().expect("entries");
    let lookup = entries
        .iter()
        .find(|e| e["action"] == "GET /api/v1/persons/{id}")
        .expect("the person read is audited");
    assert_eq!(lookup["object"], "no-such-person");
    assert_eq!(lookup["status"], 404);
    assert_eq!(lookup["actor"], auditor_id.as_str());
    assert!(
        entries.iter().all(|e| !e["action"]
            .as_str()
            .expect("action")
            .starts_with("POST /v1")),
        "ingestion calls are not in the audit log"
    );
    // Newest first, and the log's own read shows up in the next page of reads.
    let (_, again) = app.get("/api/v1/audit?limit=1", &auditor).await;
    assert_eq!(again["entries"][0]["action"], "GET /api/v1/audit");
    assert!(again["next_cursor"].is_string());

    let (_, globex) = app.get("/api/v1/audit", &globex_auditor).await;
    let acted = globex["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .find(|e| e["action"] == "GET /api/v1/workspaces")
        .expect("the master key's call for globex is in globex's log");
    assert_eq!(acted["on_behalf_of"], "globex");
    assert_eq!(acted["actor_tenant"], "default");
    // Reading the log needs its scope.
    let (_, reader) = app.key_for("default", &["persons:read"]).await;
    assert_eq!(
        app.get("/api/v1/audit", &reader).await.0,
        StatusCode::FORBIDDEN
    );
}

async fn post_with_key(
    app: &TestApp,
    path: &str,
    token: &str,
    idempotency_key: &str,
    body: Value,
) -> (StatusCode, Option<String>, Value) {
    let response = app
        .client
        .post(app.url(path))
        .bearer_auth(token)
        .header("Idempotency-Key", idempotency_key)
        .json(&body)
        .send()
        .await
        .expect("request");
    let status = response.status();
    let replayed = response
        .headers()
        .get("idempotent-replayed")
        .map(|v| v.to_str().expect("ascii").to_owned());
    (status, replayed, response.json().await.expect("json"))
}

async fn idempotency_keys_replay_the_first_response(app: &TestApp) {
    let body = json!({"name": "created once", "scopes": ["persons:read"]});
    let (status, replayed, first) = post_with_key(
        app,
        "/api/v1/keys",
        MASTER_KEY,
        "create-reader-1",
        body.clone(),
    )
    .await;
    assert_eq!((status, replayed), (StatusCode::CREATED, None));
    let (status, replayed, again) = post_with_key(
        app,
        "/api/v1/keys",
        MASTER_KEY,
        "create-reader-1",
        body.clone(),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(replayed.as_deref(), Some("true"));
    assert_eq!(again, first, "the same key, shown again, not a second key");
    let (_, keys) = app.get("/api/v1/keys?limit=1000", MASTER_KEY).await;
    let named: Vec<&Value> = keys["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .filter(|k| k["name"] == "created once")
        .collect();
    assert_eq!(named.len(), 1, "{keys}");

    // The same key with another body is refused; another credential has its own keys.
    let (status, _, error) = post_with_key(
        app,
        "/api/v1/keys",
        MASTER_KEY,
        "create-reader-1",
        json!({"name": "something else", "scopes": ["persons:read"]}),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(error["error"]["code"], "idempotency_key_reused");
    let (_, writer) = app.key_for("default", &["consent:write"]).await;
    let suppress =
        json!({"kind": "phone", "value": "+14155550177", "reason": "dnc", "scope": "tenant"});
    let (status, replayed, _) = post_with_key(
        app,
        "/api/v1/suppressions",
        &writer,
        "create-reader-1",
        suppress.clone(),
    )
    .await;
    assert_eq!((status, replayed), (StatusCode::CREATED, None));
    // A client error is kept and replayed too, like any answer.
    let bad =
        json!({"kind": "phone", "value": "+14155550177", "reason": "annoyed", "scope": "tenant"});
    let (status, _, _) =
        post_with_key(app, "/api/v1/suppressions", &writer, "bad-1", bad.clone()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, replayed, _) =
        post_with_key(app, "/api/v1/suppressions", &writer, "bad-1", bad).await;
    assert_eq!(
        (status, replayed.as_deref()),
        (StatusCode::BAD_REQUEST, Some("true"))
    );
    // A malformed key is refused before anything runs.
    let (status, _, error) = post_with_key(
        app,
        "/api/v1/suppressions",
        &writer,
        &"k".repeat(300),
        suppress,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error["error"]["code"], "invalid_header");
}
