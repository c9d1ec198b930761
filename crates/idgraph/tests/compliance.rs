//! Consent, suppression, contacts, inbound messages and the compliance gate, through a real
//! server on both backends.

mod common;

use std::sync::Arc;

use common::{MASTER_KEY, TestApp, error_code};
use reqwest::StatusCode;
use serde_json::{Value, json};

on_both_backends!(
    an_inbound_stop_denies_and_start_allows_again,
    twilio_form_bodies_are_understood,
    suppressions_apply_by_scope_until_lifted,
    consent_follows_identifiers_into_persons_and_survives_merges,
    cooldowns_follow_contacts_and_the_vertical,
    compliance_settings_require_grants_and_change_cooldowns,
    check_batch_answers_in_order_with_every_reason,
    bad_compliance_input_gets_clear_errors,
    compliance_needs_its_scopes_and_stays_in_its_tenant,
    an_acknowledged_opt_out_denies_every_later_check,
);

async fn check(app: &TestApp, body: Value) -> Value {
    let (status, answer) = app.post("/api/v1/compliance/check", MASTER_KEY, body).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    answer
}

fn codes(answer: &Value) -> Vec<String> {
    answer["reasons"]
        .as_array()
        .expect("reasons")
        .iter()
        .map(|r| r["code"].as_str().expect("code").to_owned())
        .collect()
}

async fn sms_check(app: &TestApp, to: &str) -> Value {
    check(
        app,
        json!({"channel": "sms", "to": to, "purpose": "sms:marketing"}),
    )
    .await
}

async fn inbound(app: &TestApp, key: &str, from: &str, body: &str) -> (StatusCode, Value) {
    app.track(
        "/v1/messages/inbound",
        key,
        json!({"from": from, "to": "+18005550100", "body": body}),
    )
    .await
}

async fn an_inbound_stop_denies_and_start_allows_again(app: &TestApp) {
    let key = app.write_key().await;
    assert_eq!(sms_check(app, "+1 (415) 555-2671").await["allowed"], true);
    let (status, answer) = inbound(app, &key, "(415) 555-2671", " Stop ").await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["keyword"], "stop");
    let denied = sms_check(app, "+14155552671").await;
    assert_eq!(denied["allowed"], false);
    assert_eq!(codes(&denied), ["suppressed", "consent_revoked"]);
    // Email and other purposes of the same person on SMS are all blocked.
    let other = check(
        app,
        json!({"channel": "sms", "to": "+14155552671", "purpose": "sms:alerts"}),
    )
    .await;
    assert_eq!(other["allowed"], false);
    // An ordinary message changes nothing; START re-subscribes.
    inbound(app, &key, "+14155552671", "stop texting me at night please").await;
    assert_eq!(sms_check(app, "+14155552671").await["allowed"], false);
    let (_, answer) = inbound(app, &key, "+14155552671", "start").await;
    assert_eq!(answer["keyword"], "start");
    let allowed = sms_check(app, "+14155552671").await;
    assert_eq!(allowed["allowed"], true, "{allowed}");
    // Every inbound message is on the sender's timeline.
    let person = allowed["person_id"].as_str().expect("person");
    let (_, timeline) = app
        .get(&format!("/api/v1/persons/{person}/timeline"), MASTER_KEY)
        .await;
    let names: Vec<&str> = timeline["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["kind"].as_str().expect("kind"))
        .collect();
    assert_eq!(names, ["inbound_message"; 3]);
    assert_eq!(timeline["events"][2]["properties"]["body"], " Stop ");
    // The consent history shows the STOP and the START with their evidence.
    let (_, consent) = app
        .get(&format!("/api/v1/persons/{person}/consent"), MASTER_KEY)
        .await;
    assert_eq!(consent["purposes"]["sms"]["state"], "granted");
    assert_eq!(consent["history"].as_array().expect("history").len(), 2);
    assert_eq!(consent["history"][0]["evidence"]["body"], " Stop ");
}

async fn twilio_form_bodies_are_understood(app: &TestApp) {
    let key = app.write_key().await;
    let send = |body: &'static str| {
        app.client
            .post(app.url("/v1/messages/inbound"))
            .basic_auth(&key, Some(""))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
    };
    let form = "ToCountry=US&SmsMessageSid=SM9&NumMedia=0&From=%2B14155550142&To=%2B18005550100\
                &Body=UNSUBSCRIBE&MessageSid=SM9&AccountSid=AC1&ApiVersion=2010-04-01";
    let response = send(form).await.expect("request");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["content-type"].to_str().expect("ascii"),
        "text/xml"
    );
    assert!(response.text().await.expect("body").contains("<Response>"));
    assert_eq!(sms_check(app, "+14155550142").await["allowed"], false);
    // Twilio retries a webhook it did not see answered: the message is stored once.
    assert_eq!(send(form).await.expect("request").status(), StatusCode::OK);
    let person = sms_check(app, "+14155550142").await["person_id"]
        .as_str()
        .expect("person")
        .to_owned();
    let (_, timeline) = app
        .get(&format!("/api/v1/persons/{person}/timeline"), MASTER_KEY)
        .await;
    assert_eq!(timeline["events"].as_array().expect("events").len(), 1);
    // A form without From is a 400 that says so.
    let response = send("To=%2B18005550100&Body=STOP").await.expect("request");
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body: Value = response.json().await.expect("json");
    assert!(
        body["error"]["message"]
            .as_str()
            .expect("message")
            .contains("From")
    );
}

async fn suppressions_apply_by_scope_until_lifted(app: &TestApp) {
    let address = json!({"kind": "email", "value": "Pat@Example.com"});
    let add = |reason: &str, scope: &str, workspace: Option<&str>| {
        let mut body = address.clone();
        body["reason"] = json!(reason);
        body["scope"] = json!(scope);
        if let Some(workspace) = workspace {
            body["workspace"] = json!(workspace);
        }
        body
    };
    let email_check = |workspace: &str| json!({"channel": "email", "to": "pat@example.com", "purpose": "email:news", "workspace": workspace});
    app.post(
        "/api/v1/workspaces",
        MASTER_KEY,
        json!({"name": "brand-b", "environment": "prod"}),
    )
    .await;
    let (status, entry) = app
        .post(
            "/api/v1/suppressions",
            MASTER_KEY,
            add("bounce", "workspace", Some("brand-b")),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{entry}");
    assert_eq!(entry["value"], "pat@example.com", "stored normalized");
    assert_eq!(check(app, email_check("default")).await["allowed"], true);
    assert_eq!(check(app, email_check("brand-b")).await["allowed"], false);
    // A tenant-wide complaint applies everywhere; lifting the bounce leaves it in place.
    app.post(
        "/api/v1/suppressions",
        MASTER_KEY,
        add("complaint", "tenant", None),
    )
    .await;
    let (status, _) = app
        .post(
            "/api/v1/suppressions/lift",
            MASTER_KEY,
            add("bounce", "workspace", Some("brand-b")),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let denied = check(app, email_check("brand-b")).await;
    assert_eq!(codes(&denied), ["suppressed"]);
    assert!(
        denied["reasons"][0]["detail"]
            .as_str()
            .expect("detail")
            .contains("complaint")
    );
    app.post(
        "/api/v1/suppressions/lift",
        MASTER_KEY,
        add("complaint", "tenant", None),
    )
    .await;
    assert_eq!(check(app, email_check("brand-b")).await["allowed"], true);
    // The history keeps every add and lift.
    let (_, history) = app
        .get(
            "/api/v1/suppressions?kind=email&value=PAT%40example.com",
            MASTER_KEY,
        )
        .await;
    let actions: Vec<&str> = history["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| e["action"].as_str().expect("action"))
        .collect();
    assert_eq!(actions, ["add", "add", "lift", "lift"]);
}

async fn consent_follows_identifiers_into_persons_and_survives_merges(app: &TestApp) {
    let key = app.write_key().await;
    // A revoke on a raw address nobody has seen yet...
    let (status, body) = app
        .post(
            "/api/v1/consent",
            MASTER_KEY,
            json!({"identifier": {"kind": "email", "value": "kim@example.com"},
                   "purpose": "email:news", "action": "revoke", "source": "unsubscribe link",
                   "evidence": {"url": "https://example.com/u/1"}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    // ...follows the address into the person who later shows up with it.
    app.track(
        "/v1/identify",
        &key,
        json!({"userId": "kim", "traits": {"email": "kim@example.com", "phone": "+14155550177"}}),
    )
    .await;
    let (_, person) = app
        .get(
            "/api/v1/persons/lookup?kind=external_id&value=kim",
            MASTER_KEY,
        )
        .await;
    let kim = person["id"].as_str().expect("id").to_owned();
    let (_, consent) = app
        .get(&format!("/api/v1/persons/{kim}/consent"), MASTER_KEY)
        .await;
    assert_eq!(consent["purposes"]["email:news"]["state"], "revoked");
    let news = |to: &str| json!({"channel": "email", "to": to, "purpose": "email:news"});
    assert_eq!(
        codes(&check(app, news("kim@example.com")).await),
        ["consent_revoked"]
    );

    // A grant for an anonymous visitor's person, then the visitor turns out to be kim: the
    // merged person keeps the most restrictive state.
    app.track(
        "/v1/identify",
        &key,
        json!({"anonymousId": "visitor-7", "traits": {"email": "kim.other@example.com"}}),
    )
    .await;
    let (_, visitor) = app
        .get(
            "/api/v1/persons/lookup?kind=anonymous_id&value=visitor-7",
            MASTER_KEY,
        )
        .await;
    let visitor = visitor["id"].as_str().expect("id").to_owned();
    app.post(
        "/api/v1/consent",
        MASTER_KEY,
        json!({"person_id": visitor, "purpose": "email:news", "action": "grant", "source": "form"}),
    )
    .await;
    assert_eq!(
        check(app, news("kim.other@example.com")).await["allowed"],
        true
    );
    app.track(
        "/v1/identify",
        &key,
        json!({"userId": "kim", "anonymousId": "visitor-7"}),
    )
    .await;
    let merged = check(app, news("kim.other@example.com")).await;
    assert_eq!(merged["person_id"], kim.as_str());
    assert_eq!(codes(&merged), ["consent_revoked"]);
    // A grant for the merged person (named by either id) opts every member back in; the
    // address-level revoke still needs its own grant.
    app.post(
        "/api/v1/consent",
        MASTER_KEY,
        json!({"person_id": visitor, "purpose": "email:news", "action": "grant", "source": "form"}),
    )
    .await;
    assert_eq!(
        codes(&check(app, news("kim.other@example.com")).await),
        ["consent_revoked"]
    );
    app.post(
        "/api/v1/consent",
        MASTER_KEY,
        json!({"identifier": {"kind": "email", "value": "kim@example.com"},
               "purpose": "email:news", "action": "grant", "source": "preference center"}),
    )
    .await;
    assert_eq!(
        check(app, news("kim.other@example.com")).await["allowed"],
        true
    );
    // A consent event dated before the revoke does not undo it.
    app.post(
        "/api/v1/consent",
        MASTER_KEY,
        json!({"person_id": kim, "purpose": "email:promo", "action": "revoke", "source": "api",
               "occurred_at": "2026-06-01T00:00:00Z"}),
    )
    .await;
    app.post(
        "/api/v1/consent",
        MASTER_KEY,
        json!({"person_id": kim, "purpose": "email:promo", "action": "grant", "source": "api",
               "occurred_at": "2026-01-01T00:00:00Z"}),
    )
    .await;
    let promo = json!({"channel": "email", "to": "kim@example.com", "purpose": "email:promo"});
    assert_eq!(codes(&check(app, promo).await), ["consent_revoked"]);
}

async fn cooldowns_follow_contacts_and_the_vertical(app: &TestApp) {
    let contact = json!({"channel": "sms", "from": "+18005550100", "to": "+14155550188",
                         "vertical": "solar", "campaign": "spring", "at": "2026-03-01T12:00:00Z"});
    let (status, body) = app.post("/api/v1/contacts", MASTER_KEY, contact).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let at = |date: &str, vertical: &str| {
        json!({"channel": "sms", "to": "+14155550188", "purpose": "sms:marketing",
               "vertical": vertical, "at": date})
    };
    let cases = [
        ("2026-05-29T00:00:00Z", "solar", false),
        ("2026-06-01T00:00:00Z", "solar", true),
        ("2026-04-14T00:00:00Z", "roofing", false),
        ("2026-04-16T00:00:00Z", "roofing", true),
    ];
    for (date, vertical, allowed) in cases {
        let answer = check(app, at(date, vertical)).await;
        assert_eq!(answer["allowed"], allowed, "{date} {vertical}: {answer}");
        if !allowed {
            assert_eq!(codes(&answer), ["cooldown"]);
        }
    }
    // The contact is on the recipient's timeline.
    let (_, person) = app
        .get(
            "/api/v1/persons/lookup?kind=phone&value=%2B14155550188",
            MASTER_KEY,
        )
        .await;
    let id = person["id"].as_str().expect("id");
    let (_, timeline) = app
        .get(&format!("/api/v1/persons/{id}/timeline"), MASTER_KEY)
        .await;
    assert_eq!(timeline["events"][0]["kind"], "contact");
    assert_eq!(timeline["events"][0]["name"], "spring");
}

async fn compliance_settings_require_grants_and_change_cooldowns(app: &TestApp) {
    let (status, settings) = app.get("/api/v1/settings/compliance", MASTER_KEY).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        settings,
        json!({"require_grant": [], "cooldown_days": {"same_vertical": 90, "cross_vertical": 45}})
    );
    let (status, settings) = app
        .call(
            "PUT",
            "/api/v1/settings/compliance",
            MASTER_KEY,
            Some(
                json!({"require_grant": ["sms:marketing"], "cooldown_days": {"same_vertical": 30}}),
            ),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{settings}");
    assert_eq!(
        settings["cooldown_days"]["cross_vertical"], 45,
        "left out keeps its value"
    );
    let to = "+14155550199";
    assert_eq!(codes(&sms_check(app, to).await), ["consent_missing"]);
    app.post(
        "/api/v1/consent",
        MASTER_KEY,
        json!({"identifier": {"kind": "phone", "value": to}, "purpose": "sms:marketing",
               "action": "grant", "source": "web form", "evidence": {"ip": "203.0.113.9"}}),
    )
    .await;
    assert_eq!(sms_check(app, to).await["allowed"], true);
    app.post(
        "/api/v1/contacts",
        MASTER_KEY,
        json!({"channel": "sms", "from": "+18005550100", "to": to, "at": "2026-01-01T00:00:00Z"}),
    )
    .await;
    let later = json!({"channel": "sms", "to": to, "purpose": "sms:marketing", "at": "2026-02-01T00:00:00Z"});
    assert_eq!(check(app, later).await["allowed"], true, "30 days now");
    let (status, body) = app
        .call(
            "PUT",
            "/api/v1/settings/compliance",
            MASTER_KEY,
            Some(json!({"require_grant": ["fax:marketing"]})),
        )
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::BAD_REQUEST, "invalid_input")
    );
}

async fn check_batch_answers_in_order_with_every_reason(app: &TestApp) {
    let key = app.write_key().await;
    inbound(app, &key, "+14155550111", "STOP").await;
    app.post(
        "/api/v1/contacts",
        MASTER_KEY,
        json!({"channel": "sms", "from": "+18005550100", "to": "+14155550111"}),
    )
    .await;
    let checks: Vec<Value> = ["+14155550111", "not a phone", "+14155550112"]
        .iter()
        .map(|to| json!({"channel": "sms", "to": to, "purpose": "sms:marketing"}))
        .collect();
    let (status, answer) = app
        .post(
            "/api/v1/compliance/check-batch",
            MASTER_KEY,
            json!({"checks": checks}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let results = answer["results"].as_array().expect("results");
    assert_eq!(
        codes(&results[0]),
        ["suppressed", "consent_revoked", "cooldown"]
    );
    assert_eq!(codes(&results[1]), ["invalid_address"]);
    assert_eq!(results[2]["allowed"], true);
    // A large batch is answered whole.
    let many: Vec<Value> = (0..2_000)
        .map(|i| json!({"channel": "sms", "to": format!("+1415555{:04}", 2000 + i), "purpose": "sms:marketing"}))
        .collect();
    let (status, answer) = app
        .post(
            "/api/v1/compliance/check-batch",
            MASTER_KEY,
            json!({"checks": many}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(answer["results"].as_array().expect("results").len(), 2_000);
}

async fn bad_compliance_input_gets_clear_errors(app: &TestApp) {
    let cases = [
        (
            "/api/v1/compliance/check",
            json!({"channel": "fax", "to": "+14155550100", "purpose": "sms:marketing"}),
            "invalid_input",
        ),
        (
            "/api/v1/compliance/check",
            json!({"channel": "sms", "to": "+14155550100", "purpose": "email:news"}),
            "invalid_input",
        ),
        (
            "/api/v1/compliance/check",
            json!({"channel": "sms", "to": "+14155550100", "purpose": "sms:x", "at": "yesterday"}),
            "invalid_input",
        ),
        (
            "/api/v1/consent",
            json!({"purpose": "sms:marketing", "action": "grant", "source": "api"}),
            "invalid_input",
        ),
        (
            "/api/v1/consent",
            json!({"identifier": {"kind": "phone", "value": "123"}, "purpose": "sms:marketing",
                   "action": "grant", "source": "api"}),
            "invalid_identifier",
        ),
        (
            "/api/v1/consent",
            json!({"identifier": {"kind": "phone", "value": "+14155550100"}, "purpose": "sms:marketing",
                   "action": "maybe", "source": "api"}),
            "invalid_input",
        ),
        (
            "/api/v1/suppressions",
            json!({"kind": "phone", "value": "+14155550100", "reason": "annoyed", "scope": "tenant"}),
            "invalid_input",
        ),
        (
            "/api/v1/suppressions",
            json!({"kind": "phone", "value": "+14155550100", "reason": "dnc", "scope": "planet"}),
            "invalid_input",
        ),
        (
            "/api/v1/contacts",
            json!({"channel": "sms", "from": "+18005550100", "to": "call me"}),
            "invalid_address",
        ),
        (
            "/api/v1/compliance/check",
            json!({"channel": "sms", "to": "+14155550100"}),
            "invalid_json",
        ),
    ];
    for (path, body, code) in cases {
        let (status, answer) = app.post(path, MASTER_KEY, body.clone()).await;
        assert_eq!(
            (status, error_code(&answer)),
            (StatusCode::BAD_REQUEST, code),
            "{path} {body}: {answer}"
        );
    }
    let (status, _) = app
        .post(
            "/api/v1/consent",
            MASTER_KEY,
            json!({"person_id": "no-such-person", "purpose": "sms", "action": "revoke", "source": "api"}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let key = app.write_key().await;
    let (status, answer) = inbound(app, &key, "not a number", "STOP").await;
    assert_eq!(
        (status, error_code(&answer)),
        (StatusCode::BAD_REQUEST, "invalid_address")
    );
}

async fn compliance_needs_its_scopes_and_stays_in_its_tenant(app: &TestApp) {
    app.post(
        "/api/v1/tenants",
        MASTER_KEY,
        json!({"id": "acme", "name": "Acme"}),
    )
    .await;
    let (_, reader) = app.key_for("default", &["consent:read"]).await;
    let (_, writer) = app.key_for("default", &["consent:write"]).await;
    let (_, acme) = app
        .key_for("acme", &["consent:read", "consent:write"])
        .await;
    let suppress =
        json!({"kind": "phone", "value": "+14155550123", "reason": "dnc", "scope": "tenant"});
    let (status, _) = app
        .post("/api/v1/suppressions", &reader, suppress.clone())
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = app.post("/api/v1/suppressions", &writer, suppress).await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, _) = app
        .post(
            "/api/v1/compliance/check",
            &writer,
            json!({"channel": "sms", "to": "+14155550123", "purpose": "sms:marketing"}),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "checking needs consent:read");
    let probe = json!({"channel": "sms", "to": "+14155550123", "purpose": "sms:marketing"});
    let (_, answer) = app
        .post("/api/v1/compliance/check", &reader, probe.clone())
        .await;
    assert_eq!(answer["allowed"], false);
    // Another tenant's lists are not ours...
    let (_, answer) = app
        .post("/api/v1/compliance/check", &acme, probe.clone())
        .await;
    assert_eq!(answer["allowed"], true);
    // ...but the deployment's global list applies to every tenant, and only the master key
    // may change it.
    let global =
        json!({"kind": "phone", "value": "+14155550124", "reason": "litigator", "scope": "global"});
    let (status, _) = app
        .post("/api/v1/suppressions", &acme, global.clone())
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = app.post("/api/v1/suppressions", MASTER_KEY, global).await;
    assert_eq!(status, StatusCode::CREATED);
    let litigator = json!({"channel": "sms", "to": "+14155550124", "purpose": "sms:marketing"});
    let (_, answer) = app.post("/api/v1/compliance/check", &acme, litigator).await;
    assert_eq!(codes(&answer), ["suppressed"]);
}

/// The cardinal rule under concurrency: while opt-outs and checks race, every check that
/// starts after an opt-out was acknowledged denies.
async fn an_acknowledged_opt_out_denies_every_later_check(app: &TestApp) {
    let key = Arc::new(app.write_key().await);
    let app_url = Arc::new(app.url(""));
    let numbers: Vec<String> = (0..24)
        .map(|i| format!("+1415555{:04}", 3000 + i))
        .collect();
    let mut tasks = Vec::new();
    for number in numbers {
        let (client, key, base) = (app.client.clone(), Arc::clone(&key), Arc::clone(&app_url));
        tasks.push(tokio::spawn(async move {
            let stop = client
                .post(format!("{base}/v1/messages/inbound"))
                .basic_auth(key.as_str(), Some(""))
                .json(&json!({"from": number, "to": "+18005550100", "body": "STOP"}))
                .send()
                .await
                .expect("request");
            assert_eq!(stop.status(), StatusCode::OK);
            // Acknowledged: from now on, every check must deny.
            for _ in 0..5 {
                let answer: Value = client
                    .post(format!("{base}/api/v1/compliance/check"))
                    .bearer_auth(MASTER_KEY)
                    .json(&json!({"channel": "sms", "to": number, "purpose": "sms:marketing"}))
                    .send()
                    .await
                    .expect("request")
                    .json()
                    .await
                    .expect("json");
                assert_eq!(
                    answer["allowed"], false,
                    "{number} was allowed after STOP: {answer}"
                );
            }
        }));
    }
    for task in tasks {
        task.await.expect("no check allowed an opted-out number");
    }
}
