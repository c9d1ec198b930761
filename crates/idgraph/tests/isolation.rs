//! Tenant isolation, driven by the route table: every route of `idgraph-http`'s table (read from
//! its source, so a new endpoint is covered without anyone adding it here) is called with tenant
//! B's keys on tenant A's objects. No answer may carry anything of tenant A, and a route naming
//! one of A's objects in its path must answer 403 or 404.

mod common;

use std::collections::BTreeMap;

use common::{MASTER_KEY, TestApp, route_table};
use reqwest::StatusCode;
use serde_json::{Value, json};

on_both_backends!(no_route_lets_one_tenant_see_another);

/// What tenant A owns, and the strings that must never reach tenant B.
struct TenantA {
    person: String,
    other_person: String,
    key_id: String,
    email: &'static str,
    phone: &'static str,
    secrets: Vec<String>,
}

async fn seed_tenant_a(app: &TestApp) -> TenantA {
    app.post(
        "/api/v1/tenants",
        MASTER_KEY,
        json!({"id": "tenant-a", "name": "A"}),
    )
    .await;
    let (key_id, admin) = app
        .key_for(
            "tenant-a",
            &[
                "events:write",
                "persons:read",
                "persons:write",
                "consent:read",
                "consent:write",
                "audit:read",
                "keys:manage",
            ],
        )
        .await;
    let (email, phone) = ("alice.secret@a.example", "+14155550999");
    app.track(
        "/v1/identify",
        &admin,
        json!({"userId": "a-user-1", "traits": {"email": email, "phone": phone, "name": "Alice Secret"}}),
    )
    .await;
    app.track("/v1/identify", &admin, json!({"anonymousId": "a-anon-2"}))
        .await;
    let lookup = |kind: &str, value: &str| {
        format!(
            "/api/v1/persons/lookup?kind={kind}&value={}",
            value.replace('+', "%2B")
        )
    };
    let person = app.get(&lookup("email", email), &admin).await.1["id"]
        .as_str()
        .expect("A's person")
        .to_owned();
    let other_person = app.get(&lookup("anonymous_id", "a-anon-2"), &admin).await.1["id"]
        .as_str()
        .expect("A's other person")
        .to_owned();
    let (_, consent) = app
        .post(
            "/api/v1/consent",
            &admin,
            json!({"person_id": person, "purpose": "sms:marketing", "action": "revoke", "source": "a-secret-source"}),
        )
        .await;
    let (_, entry) = app
        .post(
            "/api/v1/suppressions",
            &admin,
            json!({"kind": "phone", "value": phone, "reason": "dnc", "scope": "tenant", "note": "a-secret-note"}),
        )
        .await;
    let (_, contact) = app
        .post(
            "/api/v1/contacts",
            &admin,
            json!({"channel": "sms", "from": "+18005550100", "to": phone, "campaign": "a-secret-campaign"}),
        )
        .await;
    let mut secrets = vec![
        person.clone(),
        other_person.clone(),
        key_id.clone(),
        email.to_owned(),
        "a-user-1".to_owned(),
        "Alice Secret".to_owned(),
        "a-secret-source".to_owned(),
        "a-secret-note".to_owned(),
        "a-secret-campaign".to_owned(),
        "tenant-a".to_owned(),
    ];
    for value in [&consent["id"], &entry["id"], &contact["id"]] {
        secrets.push(value.as_str().expect("an id").to_owned());
    }
    TenantA {
        person,
        other_person,
        key_id,
        email,
        phone,
        secrets,
    }
}

/// A path with its `{params}` filled with A's objects, and the query that names A's data.
fn concrete_path(pattern: &str, a: &TenantA) -> (String, bool) {
    let mut names_an_object = false;
    let segments: Vec<String> = pattern
        .split('/')
        .map(|segment| match segment {
            "{kind}" => "identify".to_owned(),
            // A name the caller chooses for its own object (PUT creates or replaces it).
            "{name}" => "b-chosen-name".to_owned(),
            "{id}" if pattern.starts_with("/api/v1/keys/") => {
                names_an_object = true;
                a.key_id.clone()
            }
            s if s.starts_with('{') => {
                names_an_object = true;
                a.person.clone()
            }
            s => s.to_owned(),
        })
        .collect();
    let mut path = segments.join("/");
    let query: BTreeMap<&str, String> = BTreeMap::from([
        (
            "/api/v1/persons/lookup",
            format!("kind=email&value={}", a.email),
        ),
        (
            "/api/v1/persons/{id}/explain",
            format!("kind=email&value={}", a.email),
        ),
        (
            "/api/v1/suppressions",
            format!("kind=phone&value={}", a.phone.replace('+', "%2B")),
        ),
    ]);
    if let Some(query) = query.get(pattern) {
        path = format!("{path}?{query}");
    }
    (path, names_an_object)
}

/// A body aimed at A's data where the route takes one; `{}` for routes this test does not know.
fn body_for(method: &str, pattern: &str, a: &TenantA) -> Option<Value> {
    if method == "GET" || method == "DELETE" {
        return None;
    }
    Some(match pattern {
        "/api/v1/persons/merge" => {
            json!({"survivor": a.person, "absorbed": a.other_person, "reason": "b tries"})
        }
        "/api/v1/consent" => {
            json!({"person_id": a.person, "purpose": "sms:marketing", "action": "grant", "source": "b"})
        }
        "/api/v1/compliance/check" => {
            json!({"channel": "sms", "to": a.phone, "purpose": "sms:marketing"})
        }
        "/api/v1/compliance/check-batch" => {
            json!({"checks": [{"channel": "sms", "to": a.phone, "purpose": "sms:marketing"}]})
        }
        "/api/v1/suppressions/lift" => {
            json!({"kind": "phone", "value": a.phone, "reason": "dnc", "scope": "tenant"})
        }
        "/v1/identify" | "/v1/{kind}" => json!({"userId": "b-user"}),
        "/v1/messages/inbound" => {
            json!({"from": "+14155550888", "to": "+18005550100", "body": "hi"})
        }
        _ => json!({}),
    })
}

async fn no_route_lets_one_tenant_see_another(app: &TestApp) {
    let a = seed_tenant_a(app).await;
    app.post(
        "/api/v1/tenants",
        MASTER_KEY,
        json!({"id": "tenant-b", "name": "B"}),
    )
    .await;
    // B holds every scope of its own tenant.
    let (_, b) = app
        .key_for(
            "tenant-b",
            &[
                "events:write",
                "persons:read",
                "persons:write",
                "consent:read",
                "consent:write",
                "imports:write",
                "imports:read",
                "webhooks:manage",
                "keys:manage",
                "audit:read",
                "admin",
            ],
        )
        .await;
    let routes = route_table();
    assert!(
        routes.len() >= 30,
        "the route table was not read: {routes:?}"
    );
    for (method, pattern) in routes {
        let (path, names_an_object) = concrete_path(&pattern, &a);
        let mut request = app.client.request(
            reqwest::Method::from_bytes(method.as_bytes()).expect("method"),
            app.url(&path),
        );
        // Ingestion authenticates with HTTP Basic, the rest with Bearer.
        request = if pattern.starts_with("/v1/") {
            request.basic_auth(&b, Some(""))
        } else {
            request.bearer_auth(&b)
        };
        if let Some(body) = body_for(&method, &pattern, &a) {
            request = request.json(&body);
        }
        let response = request.send().await.expect("request");
        let status = response.status();
        let text = response.text().await.expect("body");
        if pattern == "/api/v1/audit" {
            // B's log records B's own attempts, including the ids of A's objects B sent in its
            // paths; what must not be there is any call made by, or for, tenant A.
            let log: Value = serde_json::from_str(&text).expect("json");
            for entry in log["entries"].as_array().expect("entries") {
                assert!(
                    entry["actor_tenant"] != "tenant-a" && entry["on_behalf_of"] != "tenant-a",
                    "tenant A's call in tenant B's audit log: {entry}"
                );
            }
            continue;
        }
        for secret in &a.secrets {
            assert!(
                !text.contains(secret.as_str()),
                "{method} {path} with tenant B's key answered {status} carrying A's {secret:?}: {text}"
            );
        }
        if names_an_object {
            assert!(
                matches!(status, StatusCode::NOT_FOUND | StatusCode::FORBIDDEN),
                "{method} {path} (A's object) answered {status} to tenant B: {text}"
            );
        }
        assert!(
            !status.is_server_error(),
            "{method} {path}: {status} {text}"
        );
    }
    // And A's data is untouched by all of B's attempts.
    let person: Value = app
        .client
        .get(app.url(&format!("/api/v1/persons/{}", a.person)))
        .bearer_auth(MASTER_KEY)
        .header("X-Idgraph-On-Behalf-Of", "tenant-a")
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("json");
    assert_eq!(
        person["id"],
        a.person.as_str(),
        "A's person is still A's: {person}"
    );
    assert_eq!(
        person["merged_from"],
        json!([]),
        "B's merge attempt changed nothing"
    );
}
