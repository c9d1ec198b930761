//! Segment-compatible ingestion and the persons API, through a real server on both backends.

mod common;

use std::io::Write;

use common::{MASTER_KEY, TestApp, error_code, lookup, urlencode};
use reqwest::StatusCode;
use serde_json::{Value, json};

on_both_backends!(
    identify_creates_a_person_with_normalized_identifiers_and_traits,
    anonymous_activity_is_linked_when_the_visitor_identifies,
    two_user_ids_never_merge,
    a_repeated_message_id_is_stored_once,
    batches_accept_valid_items_and_report_invalid_ones,
    gzip_bodies_and_size_limits,
    bad_messages_get_clear_errors,
    the_recorded_client_payloads_are_accepted,
    timelines_page_newest_first_and_filter_by_kind,
    identity_settings_change_how_new_signals_resolve,
    client_clock_skew_is_corrected,
    persons_are_not_visible_across_tenants,
    concurrent_signals_sharing_an_identifier_make_one_person,
    explain_shows_the_path_of_links_and_merges,
    operators_merge_persons_within_the_limits,
    mega_persons_can_be_found,
    stats_count_the_graph,
    a_person_exports_whole_with_every_event,
    an_unmerge_restores_both_persons_and_keeps_them_apart,
    a_settings_preview_reports_merges_and_splits_and_changes_nothing,
    a_mega_person_glued_by_a_shared_device_splits_with_one_call,
);

fn identifier_values(person: &Value, kind: &str) -> Vec<String> {
    person["identifiers"]
        .as_array()
        .expect("identifiers")
        .iter()
        .filter(|i| i["kind"] == kind)
        .map(|i| i["value"].as_str().expect("value").to_owned())
        .collect()
}

async fn timeline(app: &TestApp, person_id: &str) -> Vec<Value> {
    let (status, body) = app
        .get(
            &format!("/api/v1/persons/{person_id}/timeline?limit=1000"),
            MASTER_KEY,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["events"].as_array().expect("events").clone()
}

async fn identify_creates_a_person_with_normalized_identifiers_and_traits(app: &TestApp) {
    let key = app.write_key().await;
    let (status, body) = app
        .track(
            "/v1/identify",
            &key,
            json!({
                "userId": "user-1", "anonymousId": "anon-1", "messageId": "m-1",
                "traits": {"email": "  Ann.Lee@Example.COM ", "phone": "(415) 555-2671", "firstName": "Ann", "plan": null}
            }),
        )
        .await;
    assert_eq!((status, body), (StatusCode::OK, json!({"success": true})));
    let (status, person) = lookup(app, "email", "ANN.LEE@example.com").await;
    assert_eq!(status, StatusCode::OK, "{person}");
    assert_eq!(identifier_values(&person, "email"), ["ann.lee@example.com"]);
    assert_eq!(identifier_values(&person, "phone"), ["+14155552671"]);
    assert_eq!(identifier_values(&person, "external_id"), ["user-1"]);
    assert_eq!(identifier_values(&person, "anonymous_id"), ["anon-1"]);
    assert_eq!(person["traits"]["firstName"]["value"], "Ann");
    assert_eq!(person["traits"]["firstName"]["source"], "user");
    assert!(
        person["traits"].get("plan").is_none(),
        "a null trait is absence"
    );
    assert_eq!(person["workspaces"][0]["workspace"], "default");
    assert_eq!(
        person["workspaces"][0]["traits"]["firstName"]["value"],
        "Ann"
    );
    let source = person["identifiers"][0]["source"].as_str().expect("source");
    assert_eq!(source, "segment:identify");
    // The same person by every identifier, and by id.
    let id = person["id"].as_str().expect("id");
    for (kind, value) in [
        ("phone", "+1 415-555-2671"),
        ("external_id", "user-1"),
        ("anonymous_id", "anon-1"),
    ] {
        assert_eq!(lookup(app, kind, value).await.1["id"], id, "{kind}");
    }
    assert_eq!(
        app.get(&format!("/api/v1/persons/{id}"), MASTER_KEY)
            .await
            .1["id"],
        id
    );
    let (status, body) = lookup(app, "email", "nobody@example.com").await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::NOT_FOUND, "not_found")
    );
    let (status, body) = lookup(app, "email", "not-an-email").await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::BAD_REQUEST, "invalid_identifier")
    );
}

async fn anonymous_activity_is_linked_when_the_visitor_identifies(app: &TestApp) {
    let key = app.write_key().await;
    // A known customer...
    app.track(
        "/v1/identify",
        &key,
        json!({"userId": "u-42", "traits": {"email": "bo@example.com"}}),
    )
    .await;
    let (_, known) = lookup(app, "external_id", "u-42").await;
    let known_id = known["id"].as_str().expect("id").to_owned();
    // ...browses anonymously on a new device: a second person, for now.
    app.track(
        "/v1/track",
        &key,
        json!({"anonymousId": "device-9", "event": "Viewed Pricing"}),
    )
    .await;
    app.track(
        "/v1/page",
        &key,
        json!({"anonymousId": "device-9", "name": "Pricing"}),
    )
    .await;
    let (_, visitor) = lookup(app, "anonymous_id", "device-9").await;
    let visitor_id = visitor["id"].as_str().expect("id").to_owned();
    assert_ne!(visitor_id, known_id);
    // ...then logs in on that device with the same email: one person, the known one survives.
    let (status, _) = app
        .track(
            "/v1/identify",
            &key,
            json!({"anonymousId": "device-9", "traits": {"email": "BO@example.com"}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (_, merged) = lookup(app, "anonymous_id", "device-9").await;
    assert_eq!(merged["id"], known_id.as_str());
    assert_eq!(merged["merged_from"], json!([visitor_id]));
    // The absorbed id answers with its survivor, and the timeline holds both persons' events.
    let (status, via_absorbed) = app
        .get(&format!("/api/v1/persons/{visitor_id}"), MASTER_KEY)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(via_absorbed["id"], known_id.as_str());
    let events = timeline(app, &known_id).await;
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["kind"].as_str().expect("kind"))
        .collect();
    assert_eq!(kinds.len(), 4, "{kinds:?}");
    assert!(kinds.contains(&"track") && kinds.contains(&"page"));
    assert_eq!(
        timeline(app, &visitor_id).await.len(),
        4,
        "the absorbed id reads the survivor's timeline"
    );
    // The merge is recorded with the identifier and the signal that caused it.
    let (_, merges) = app
        .get(&format!("/api/v1/persons/{known_id}/merges"), MASTER_KEY)
        .await;
    let merge = &merges["merges"][0];
    assert_eq!(merge["survivor"], known_id.as_str());
    assert_eq!(merge["absorbed"], visitor_id.as_str());
    // The signal's identifiers that tied the two: the email found the survivor, the device the visitor.
    let mut tied = merge["reason"]["identifiers"]
        .as_array()
        .expect("identifiers")
        .clone();
    tied.sort_by_key(|i| i["kind"].to_string());
    assert_eq!(
        tied,
        [
            json!({"kind": "anonymous_id", "value": "device-9"}),
            json!({"kind": "email", "value": "bo@example.com"})
        ]
    );
    let signal = merge["reason"]["signal"].as_str().expect("signal");
    assert!(
        events.iter().any(|e| e["id"] == signal),
        "the merge names the event that caused it"
    );
}

async fn two_user_ids_never_merge(app: &TestApp) {
    let key = app.write_key().await;
    app.track(
        "/v1/identify",
        &key,
        json!({"userId": "alice", "traits": {"email": "shared@example.com"}}),
    )
    .await;
    let (status, _) = app
        .track(
            "/v1/identify",
            &key,
            json!({"userId": "bob", "traits": {"email": "shared@example.com"}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (_, alice) = lookup(app, "external_id", "alice").await;
    let (_, bob) = lookup(app, "external_id", "bob").await;
    assert_ne!(
        alice["id"], bob["id"],
        "two external ids must never be merged"
    );
    assert_eq!(
        lookup(app, "email", "shared@example.com").await.1["id"],
        alice["id"],
        "the email stays where it was"
    );
    assert!(identifier_values(&bob, "email").is_empty());
    let (_, merges) = app
        .get(
            &format!("/api/v1/persons/{}/merges", bob["id"].as_str().expect("id")),
            MASTER_KEY,
        )
        .await;
    assert_eq!(merges["merges"], json!([]));
    let conflict = &merges["conflicts"][0];
    assert_eq!(
        conflict["identifier"],
        json!({"kind": "email", "value": "shared@example.com"})
    );
    assert_eq!(conflict["other_person"], alice["id"]);
    assert!(
        conflict["rule"]
            .as_str()
            .expect("rule")
            .contains("external_id")
    );
}

async fn a_repeated_message_id_is_stored_once(app: &TestApp) {
    let key = app.write_key().await;
    let message = json!({"userId": "dup", "event": "Paid", "messageId": "same-id", "properties": {"amount": 10}});
    for _ in 0..3 {
        assert_eq!(
            app.track("/v1/track", &key, message.clone()).await.0,
            StatusCode::OK
        );
    }
    let batch = json!({"batch": [
        {"type": "track", "userId": "dup", "event": "Paid", "messageId": "same-id"},
        {"type": "track", "userId": "dup", "event": "Paid", "messageId": "other-id"},
        {"type": "track", "userId": "dup", "event": "Paid", "messageId": "other-id"},
    ]});
    let (status, body) = app.track("/v1/batch", &key, batch).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (body["accepted"].clone(), body["duplicates"].clone()),
        (json!(1), json!(2)),
        "{body}"
    );
    let (_, person) = lookup(app, "external_id", "dup").await;
    let events = timeline(app, person["id"].as_str().expect("id")).await;
    assert_eq!(events.len(), 2);
    assert_eq!(
        events
            .iter()
            .find(|e| e["properties"]["amount"] == 10)
            .map(|e| e["name"].clone()),
        Some(json!("Paid"))
    );
}

async fn batches_accept_valid_items_and_report_invalid_ones(app: &TestApp) {
    let key = app.write_key().await;
    let batch = json!({"sentAt": "2026-11-22T11:51:44Z", "batch": [
        {"type": "identify", "userId": "b-1", "traits": {"email": "b1@example.com"}},
        {"type": "teleport", "userId": "b-2"},
        {"type": "track", "userId": "b-3"},
        {"type": "track", "anonymousId": "a-4", "event": "Clicked"},
        {"type": "identify"},
        {"type": "identify", "userId": "null"},
        {"type": "identify", "userId": "b-7", "traits": {"email": "not an email"}},
    ]});
    let (status, body) = app.track("/v1/batch", &key, batch).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["accepted"], 3, "{body}");
    assert_eq!(body["rejected"], 4, "{body}");
    assert_eq!(body["identifiers_rejected"], 1, "the invalid email of b-7");
    let errors: Vec<(u64, &str)> = body["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .map(|e| {
            (
                e["index"].as_u64().expect("index"),
                e["code"].as_str().expect("code"),
            )
        })
        .collect();
    assert_eq!(
        errors,
        [
            (1, "unknown_type"),
            (2, "missing_field"),
            (4, "missing_field"),
            (5, "no_identifier")
        ]
    );
    assert_eq!(lookup(app, "external_id", "b-1").await.0, StatusCode::OK);
    assert_eq!(lookup(app, "anonymous_id", "a-4").await.0, StatusCode::OK);
    let (_, b7) = lookup(app, "external_id", "b-7").await;
    assert_eq!(
        b7["traits"]["email"]["value"], "not an email",
        "the trait is kept as given"
    );
    assert!(identifier_values(&b7, "email").is_empty());

    let metrics = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    let rejected = metrics
        .lines()
        .find(|l| l.starts_with("idgraph_ingest_messages_total{outcome=\"rejected\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse::<f64>().ok())
        .expect("a rejected counter");
    assert!(rejected >= 4.0, "{rejected}");

    let all_bad = json!({"batch": [{"type": "track"}, {"type": "nope"}]});
    let (status, body) = app.track("/v1/batch", &key, all_bad).await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::BAD_REQUEST, "invalid_batch"),
        "{body}"
    );
    assert_eq!(body["error"]["details"]["rejected"], "2");
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes).expect("gzip");
    encoder.finish().expect("gzip")
}

async fn gzip_bodies_and_size_limits(app: &TestApp) {
    let key = app.write_key().await;
    let batch = json!({"batch": [{"type": "identify", "userId": "gz-1", "traits": {"email": "gz@example.com"}}]});
    let (status, body) = app
        .track_raw("/v1/batch", &key, gzip(batch.to_string().as_bytes()), true)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        lookup(app, "email", "gz@example.com").await.0,
        StatusCode::OK
    );
    let (status, body) = app
        .track_raw("/v1/batch", &key, b"not gzip".to_vec(), true)
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::BAD_REQUEST, "invalid_body")
    );

    let big = "x".repeat(33 * 1024);
    let (status, body) = app
        .track(
            "/v1/track",
            &key,
            json!({"userId": "big", "event": "e", "properties": {"p": big}}),
        )
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::BAD_REQUEST, "payload_too_large"),
        "{body}"
    );
    // A batch over 500 KB is refused whole, even when it compresses well.
    let items: Vec<Value> = (0..40)
        .map(|i| json!({"type": "track", "userId": format!("big-{i}"), "event": "e", "properties": {"p": "y".repeat(15_000)}}))
        .collect();
    let huge = json!({"batch": items}).to_string();
    assert!(huge.len() > 500 * 1024);
    let (status, body) = app
        .track_raw("/v1/batch", &key, gzip(huge.as_bytes()), true)
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::BAD_REQUEST, "payload_too_large"),
        "{body}"
    );
    assert_eq!(
        lookup(app, "external_id", "big-0").await.0,
        StatusCode::NOT_FOUND,
        "nothing of it was stored"
    );
}

async fn bad_messages_get_clear_errors(app: &TestApp) {
    let key = app.write_key().await;
    let cases = [
        ("/v1/identify", b"{not json".to_vec(), "invalid_json"),
        (
            "/v1/identify",
            br#"{"traits": {"email": "x@example.com"}}"#.to_vec(),
            "missing_field",
        ),
        (
            "/v1/identify",
            br#"{"userId": "undefined"}"#.to_vec(),
            "no_identifier",
        ),
        (
            "/v1/identify",
            br#"{"userId": ["a"]}"#.to_vec(),
            "invalid_field",
        ),
        ("/v1/track", br#"{"userId": "u"}"#.to_vec(), "missing_field"),
        (
            "/v1/track",
            br#"{"userId": "u", "event": "e", "timestamp": "-009999-01-01T00:00:00Z"}"#.to_vec(),
            "invalid_field",
        ),
        ("/v1/alias", br#"{"userId": "u"}"#.to_vec(), "missing_field"),
        (
            "/v1/batch",
            br#"{"batch": "nope"}"#.to_vec(),
            "invalid_json",
        ),
    ];
    for (path, body, code) in cases {
        let (status, response) = app.track_raw(path, &key, body, false).await;
        assert_eq!(
            (status, error_code(&response)),
            (StatusCode::BAD_REQUEST, code),
            "{path} {response}"
        );
        assert!(
            !response["error"]["message"]
                .as_str()
                .expect("message")
                .is_empty()
        );
    }
    let (status, _) = app
        .track("/v1/teleport", &key, json!({"userId": "u"}))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // No write key, or a management-only key: never accepted.
    let response = app
        .client
        .post(app.url("/v1/track"))
        .json(&json!({"userId": "u", "event": "e"}))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
}

async fn the_recorded_client_payloads_are_accepted(app: &TestApp) {
    let key = app.write_key().await;
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/segment");
    let mut sent = 0;
    for entry in std::fs::read_dir(&dir).expect("fixtures") {
        let path = entry.expect("entry").path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let capture: Value =
            serde_json::from_slice(&std::fs::read(&path).expect("read")).expect("json");
        let mut body = capture.get("body").cloned().unwrap_or(capture.clone());
        let endpoint = if body.get("batch").is_some() {
            "/v1/batch".to_owned()
        } else {
            format!("/v1/{}", body["type"].as_str().expect("type"))
        };
        if let Some(object) = body.as_object_mut() {
            object.remove("_stub_note");
        }
        let (status, response) = app.track(&endpoint, &key, body).await;
        assert_eq!(status, StatusCode::OK, "{}: {response}", path.display());
        if endpoint == "/v1/batch" {
            assert_eq!(response["rejected"], 0, "{}: {response}", path.display());
        }
        sent += 1;
    }
    assert!(sent >= 15, "expected the recorded payloads, found {sent}");
    let (status, person) = lookup(app, "email", "jane.doe+bench@example.com").await;
    assert_eq!(
        status,
        StatusCode::OK,
        "the Node client's identify carried this email"
    );
    assert_eq!(identifier_values(&person, "phone"), ["+14155552671"]);
}

async fn timelines_page_newest_first_and_filter_by_kind(app: &TestApp) {
    let key = app.write_key().await;
    let items: Vec<Value> = (0..7)
        .map(|i| {
            let kind = if i % 2 == 0 { "track" } else { "page" };
            json!({"type": kind, "userId": "pager", "event": format!("E{i}"), "name": format!("P{i}"),
                   "timestamp": format!("2026-01-01T00:00:0{i}Z"), "messageId": format!("t-{i}")})
        })
        .collect();
    assert_eq!(
        app.track("/v1/batch", &key, json!({"batch": items}))
            .await
            .0,
        StatusCode::OK
    );
    let (_, person) = lookup(app, "external_id", "pager").await;
    let id = person["id"].as_str().expect("id");
    let mut seen = Vec::new();
    let mut path = format!("/api/v1/persons/{id}/timeline?limit=3");
    loop {
        let (status, page) = app.get(&path, MASTER_KEY).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        for event in page["events"].as_array().expect("events") {
            seen.push(event["occurred_at"].as_str().expect("time").to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(cursor) => {
                path = format!(
                    "/api/v1/persons/{id}/timeline?limit=3&cursor={}",
                    urlencode(cursor)
                )
            }
            None => break,
        }
    }
    let expected: Vec<String> = (0..7)
        .rev()
        .map(|i| format!("2026-01-01T00:00:0{i}Z"))
        .collect();
    assert_eq!(seen, expected);
    let (_, tracks) = app
        .get(
            &format!("/api/v1/persons/{id}/timeline?kind=track"),
            MASTER_KEY,
        )
        .await;
    assert_eq!(tracks["events"].as_array().expect("events").len(), 4);
    let (status, body) = app
        .get(
            &format!("/api/v1/persons/{id}/timeline?cursor=garbage"),
            MASTER_KEY,
        )
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::BAD_REQUEST, "invalid_cursor")
    );
    assert_eq!(
        app.get("/api/v1/persons/nobody-here/timeline", MASTER_KEY)
            .await
            .0,
        StatusCode::NOT_FOUND
    );
}

async fn identity_settings_change_how_new_signals_resolve(app: &TestApp) {
    let (status, settings) = app.get("/api/v1/settings/identity", MASTER_KEY).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(settings["default_region"], "US");
    assert_eq!(
        settings["kinds"]["external_id"],
        json!({"priority": 1, "policy": "unique", "limit": 1})
    );
    assert_eq!(settings["kinds"]["anonymous_id"]["limit"], Value::Null);

    let update = json!({"default_region": "GB", "kinds": {"device_id": {"priority": 5, "policy": "shared"}},
                        "blocked_values": {"*": ["N/A-CUSTOMER"]}});
    let (status, updated) = app
        .call("PUT", "/api/v1/settings/identity", MASTER_KEY, Some(update))
        .await;
    assert_eq!(status, StatusCode::OK, "{updated}");
    assert_eq!(updated["default_region"], "GB");
    assert_eq!(
        updated["kinds"]["email"]["limit"], 5,
        "fields left out keep their value"
    );
    assert_eq!(
        app.get("/api/v1/settings/identity", MASTER_KEY).await.1,
        updated
    );

    let key = app.write_key().await;
    app.track(
        "/v1/identify",
        &key,
        json!({"userId": "uk-1", "traits": {"phone": "020 7946 0958"}}),
    )
    .await;
    let (_, person) = lookup(app, "external_id", "uk-1").await;
    assert_eq!(
        identifier_values(&person, "phone"),
        ["+442079460958"],
        "the new default region applies"
    );
    let (status, body) = app
        .track("/v1/identify", &key, json!({"userId": "n/a-customer"}))
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::BAD_REQUEST, "no_identifier")
    );
    // A shared custom kind links two persons without merging them.
    for user in ["fam-1", "fam-2"] {
        app.track("/v1/identify", &key, json!({"userId": user, "context": {"idgraph": {"identifiers": {"device_id": "tablet-1"}}}})).await;
    }
    let (_, one) = lookup(app, "external_id", "fam-1").await;
    let (_, two) = lookup(app, "external_id", "fam-2").await;
    assert_ne!(one["id"], two["id"]);
    assert_eq!(identifier_values(&two, "device_id"), ["tablet-1"]);

    for bad in [
        json!({"default_region": "XX"}),
        json!({"kinds": {"email": {"policy": "sometimes"}}}),
        json!({"kinds": {"brand_new": {"policy": "unique"}}}),
        json!({"kinds": {"email": {"limit": 0}}}),
        json!({"unknown_field": 1}),
    ] {
        let (status, body) = app
            .call(
                "PUT",
                "/api/v1/settings/identity",
                MASTER_KEY,
                Some(bad.clone()),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad} → {body}");
    }
    assert_eq!(
        app.get("/api/v1/settings/identity", MASTER_KEY).await.1,
        updated,
        "refused changes changed nothing"
    );
    let (_, reader) = app.key_for("default", &["persons:read"]).await;
    assert_eq!(
        app.call("PUT", "/api/v1/settings/identity", &reader, Some(json!({})))
            .await
            .0,
        StatusCode::FORBIDDEN
    );
}

async fn client_clock_skew_is_corrected(app: &TestApp) {
    let key = app.write_key().await;
    // The client's clock is a year behind; it stamped the event 2 seconds before sending.
    let (status, _) = app
        .track(
            "/v1/track",
            &key,
            json!({"userId": "skewed", "event": "e", "timestamp": "2025-06-01T12:00:00Z", "sentAt": "2025-06-01T12:00:02Z"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (_, person) = lookup(app, "external_id", "skewed").await;
    let event = &timeline(app, person["id"].as_str().expect("id")).await[0];
    let occurred: jiff::Timestamp = event["occurred_at"]
        .as_str()
        .expect("time")
        .parse()
        .expect("rfc3339");
    let ingested: jiff::Timestamp = event["ingested_at"]
        .as_str()
        .expect("time")
        .parse()
        .expect("rfc3339");
    let lag = ingested.duration_since(occurred).as_secs_f64();
    assert!(
        (1.0..=60.0).contains(&lag),
        "occurred {occurred}, ingested {ingested}"
    );
}

async fn persons_are_not_visible_across_tenants(app: &TestApp) {
    let key = app.write_key().await;
    app.track(
        "/v1/identify",
        &key,
        json!({"userId": "secret-person", "traits": {"email": "secret@example.com"}}),
    )
    .await;
    let (_, person) = lookup(app, "email", "secret@example.com").await;
    let id = person["id"].as_str().expect("id");
    app.post(
        "/api/v1/tenants",
        MASTER_KEY,
        json!({"id": "other", "name": "Other"}),
    )
    .await;
    let (_, other_admin) = app.key_for("other", &["admin"]).await;
    for path in [
        format!("/api/v1/persons/{id}"),
        format!("/api/v1/persons/{id}/timeline"),
        format!("/api/v1/persons/{id}/merges"),
        "/api/v1/persons/lookup?kind=email&value=secret%40example.com".to_owned(),
    ] {
        let (status, body) = app.get(&path, &other_admin).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
        assert!(!body.to_string().contains("secret"), "{path} leaked {body}");
    }
    // The other tenant's write key lands in the other tenant.
    let (_, other_writer) = app.key_for("other", &["events:write"]).await;
    app.track(
        "/v1/identify",
        &other_writer,
        json!({"userId": "secret-person"}),
    )
    .await;
    let (_, mine) = lookup(app, "external_id", "secret-person").await;
    assert_eq!(
        mine["id"], id,
        "the same user id in another tenant is another person"
    );
}

async fn concurrent_signals_sharing_an_identifier_make_one_person(app: &TestApp) {
    let key = app.write_key().await;
    let mut tasks = Vec::new();
    for i in 0..40 {
        let (client, url, key) = (app.client.clone(), app.url("/v1/identify"), key.clone());
        tasks.push(tokio::spawn(async move {
            let body = json!({"anonymousId": format!("c-anon-{i}"), "traits": {"email": "crowd@example.com"}});
            client.post(url).basic_auth(key, Some("")).json(&body).send().await.expect("request").status()
        }));
    }
    for task in tasks {
        assert_eq!(task.await.expect("join"), StatusCode::OK);
    }
    let (_, person) = lookup(app, "email", "crowd@example.com").await;
    let id = person["id"].as_str().expect("id");
    for i in 0..40 {
        assert_eq!(
            lookup(app, "anonymous_id", &format!("c-anon-{i}")).await.1["id"],
            id,
            "c-anon-{i}"
        );
    }
    assert_eq!(identifier_values(&person, "anonymous_id").len(), 40);
}

async fn explain_shows_the_path_of_links_and_merges(app: &TestApp) {
    let key = app.write_key().await;
    // device-9 is first seen anonymously and leaves an email; the customer "lee" later shows up
    // with that email, which merges the visitor into lee.
    app.track(
        "/v1/track",
        &key,
        json!({"anonymousId": "device-9", "event": "Visit"}),
    )
    .await;
    app.track(
        "/v1/identify",
        &key,
        json!({"anonymousId": "device-9", "traits": {"email": "lee@example.com"}}),
    )
    .await;
    app.track(
        "/v1/identify",
        &key,
        json!({"userId": "lee", "traits": {"phone": "+14155550150"}}),
    )
    .await;
    app.track(
        "/v1/identify",
        &key,
        json!({"userId": "lee", "traits": {"email": "LEE@example.com"}}),
    )
    .await;
    let (_, person) = lookup(app, "external_id", "lee").await;
    let id = person["id"].as_str().expect("id");
    let (status, explained) = app
        .get(
            &format!("/api/v1/persons/{id}/explain?kind=anonymous_id&value=device-9"),
            MASTER_KEY,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{explained}");
    let path = explained["path"].as_array().expect("path");
    assert_eq!(path.len(), 2, "{explained}");
    assert_eq!(path[0]["step"], "attached");
    assert!(
        path[0]["rule"]
            .as_str()
            .expect("rule")
            .starts_with("created")
    );
    assert_eq!(path[0]["signal_kind"], "track");
    assert_eq!(path[1]["step"], "merged");
    assert_eq!(path[1]["survivor"], id);
    assert_eq!(path[1]["absorbed"], path[0]["person"]);
    assert!(
        path[1]["rule"]
            .as_str()
            .expect("rule")
            .contains("external_id found the survivor")
    );
    // The phone was attached to the known person directly.
    let (_, phone) = app
        .get(
            &format!("/api/v1/persons/{id}/explain?kind=phone&value=%2B1%20415%20555%200150"),
            MASTER_KEY,
        )
        .await;
    assert_eq!(phone["path"].as_array().expect("path").len(), 1);
    assert_eq!(
        phone["path"][0]["signal_identifiers"][0],
        json!({"kind": "external_id", "value": "lee"})
    );
    // Not held, or not an identifier at all.
    let (status, body) = app
        .get(
            &format!("/api/v1/persons/{id}/explain?kind=email&value=nobody%40example.com"),
            MASTER_KEY,
        )
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::NOT_FOUND, "not_found")
    );
    let (status, body) = app
        .get(
            &format!("/api/v1/persons/{id}/explain?kind=email&value=nope"),
            MASTER_KEY,
        )
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::BAD_REQUEST, "invalid_identifier")
    );
}

async fn operators_merge_persons_within_the_limits(app: &TestApp) {
    let key = app.write_key().await;
    app.track(
        "/v1/identify",
        &key,
        json!({"userId": "ops-1", "traits": {"email": "ops1@example.com"}}),
    )
    .await;
    app.track("/v1/identify", &key, json!({"userId": "ops-2"}))
        .await;
    app.track(
        "/v1/identify",
        &key,
        json!({"anonymousId": "kiosk-5", "traits": {"phone": "+14155550160"}}),
    )
    .await;
    let id = |kind: &'static str, value: &'static str| async move {
        lookup(app, kind, value).await.1["id"]
            .as_str()
            .expect("id")
            .to_owned()
    };
    let (one, two, kiosk) = (
        id("external_id", "ops-1").await,
        id("external_id", "ops-2").await,
        id("anonymous_id", "kiosk-5").await,
    );
    let merge = |survivor: &str, absorbed: &str, reason: &str| json!({"survivor": survivor, "absorbed": absorbed, "reason": reason});
    // Two external ids: refused, and nothing changes.
    let (status, body) = app
        .post(
            "/api/v1/persons/merge",
            MASTER_KEY,
            merge(&one, &two, "same customer"),
        )
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::CONFLICT, "merge_refused"),
        "{body}"
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .expect("message")
            .contains("external_id")
    );
    assert_eq!(
        lookup(app, "external_id", "ops-2").await.1["id"],
        two.as_str()
    );
    // Within the limits: merged, recorded with the reason, and the absorbed id answers with
    // the survivor.
    let (status, body) = app
        .post(
            "/api/v1/persons/merge",
            MASTER_KEY,
            merge(&one, &kiosk, "verified at the desk"),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["person"]["id"], one.as_str());
    assert_eq!(
        body["merge"]["reason"]["rule"],
        "manual: verified at the desk"
    );
    assert_eq!(
        app.get(&format!("/api/v1/persons/{kiosk}"), MASTER_KEY)
            .await
            .1["id"],
        one.as_str()
    );
    let (_, explained) = app
        .get(
            &format!("/api/v1/persons/{one}/explain?kind=phone&value=%2B14155550160"),
            MASTER_KEY,
        )
        .await;
    assert_eq!(explained["path"][1]["rule"], "manual: verified at the desk");
    // Again: already one person.
    let (status, _) = app
        .post(
            "/api/v1/persons/merge",
            MASTER_KEY,
            merge(&kiosk, &one, "again"),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (status, _) = app
        .post(
            "/api/v1/persons/merge",
            MASTER_KEY,
            merge(&one, "nobody", "x"),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, body) = app
        .post("/api/v1/persons/merge", MASTER_KEY, merge(&one, &two, " "))
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::BAD_REQUEST, "invalid_input")
    );
    // A read-only key may not merge.
    let (_, reader) = app.key_for("default", &["persons:read"]).await;
    let (status, _) = app
        .post("/api/v1/persons/merge", &reader, merge(&one, &two, "x"))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

async fn mega_persons_can_be_found(app: &TestApp) {
    let key = app.write_key().await;
    // A kiosk's device id glues twelve anonymous visitors' ids together.
    for i in 0..12 {
        app.track("/v1/identify", &key, json!({"anonymousId": format!("kiosk-visitor-{i}"), "traits": {"email": "kiosk@example.com"}})).await;
    }
    app.track(
        "/v1/identify",
        &key,
        json!({"userId": "small", "anonymousId": "small-1"}),
    )
    .await;
    let (status, body) = app
        .get("/api/v1/persons?min_identifiers=10", MASTER_KEY)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let persons = body["persons"].as_array().expect("persons");
    assert_eq!(persons.len(), 1, "{body}");
    assert_eq!(persons[0]["identifiers"], 13);
    let (_, kiosk) = lookup(app, "email", "kiosk@example.com").await;
    assert_eq!(persons[0]["id"], kiosk["id"]);
    // Paging over everyone, biggest first.
    let (_, first) = app.get("/api/v1/persons?limit=1", MASTER_KEY).await;
    assert_eq!(first["persons"][0]["identifiers"], 13);
    let cursor = first["next_cursor"].as_str().expect("more");
    let (_, second) = app
        .get(
            &format!("/api/v1/persons?limit=1&cursor={}", urlencode(cursor)),
            MASTER_KEY,
        )
        .await;
    assert_eq!(second["persons"][0]["identifiers"], 2);
    let (status, body) = app.get("/api/v1/persons?cursor=garbage", MASTER_KEY).await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::BAD_REQUEST, "invalid_cursor")
    );
}

async fn stats_count_the_graph(app: &TestApp) {
    let key = app.write_key().await;
    app.track(
        "/v1/track",
        &key,
        json!({"anonymousId": "st-1", "event": "Visit"}),
    )
    .await;
    app.track(
        "/v1/page",
        &key,
        json!({"anonymousId": "st-1", "name": "Home"}),
    )
    .await;
    app.track(
        "/v1/identify",
        &key,
        json!({"userId": "st-u", "traits": {"email": "st@example.com"}}),
    )
    .await;
    app.track(
        "/v1/identify",
        &key,
        json!({"userId": "st-u", "anonymousId": "st-1"}),
    )
    .await;
    let (status, stats) = app.get("/api/v1/stats", MASTER_KEY).await;
    assert_eq!(status, StatusCode::OK, "{stats}");
    assert_eq!(stats["persons"], 1);
    assert_eq!(stats["persons_absorbed"], 1);
    assert_eq!(stats["merges"], 1);
    assert_eq!(
        stats["imports"],
        json!({"jobs": 0, "by_status": {}, "rows": 0})
    );
    assert_eq!(
        stats["identifiers"],
        json!({"anonymous_id": 1, "email": 1, "external_id": 1})
    );
    let events = stats["events"].as_array().expect("events");
    let count = |kind: &str| {
        events
            .iter()
            .filter(|e| e["kind"] == kind)
            .map(|e| e["count"].as_u64().expect("n"))
            .sum::<u64>()
    };
    assert_eq!(
        (count("track"), count("page"), count("identify")),
        (1, 1, 2)
    );
    let (status, _) = app.get("/api/v1/stats?days=0", MASTER_KEY).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

async fn a_person_exports_whole_with_every_event(app: &TestApp) {
    let key = app.write_key().await;
    // 2,500 events over two merged persons: the events array spans several streamed pages.
    for chunk in 0..25 {
        let batch: Vec<Value> = (0..100)
            .map(|i| {
                let who = if (chunk * 100 + i) % 2 == 0 {
                    json!({"userId": "ex-user"})
                } else {
                    json!({"anonymousId": "ex-anon"})
                };
                let mut item = json!({"type": "track", "event": format!("E{}", chunk * 100 + i)});
                item.as_object_mut()
                    .expect("object")
                    .extend(who.as_object().expect("object").clone());
                item
            })
            .collect();
        assert_eq!(
            app.track("/v1/batch", &key, json!({"batch": batch}))
                .await
                .0,
            StatusCode::OK
        );
    }
    app.track("/v1/identify", &key, json!({"userId": "ex-user", "anonymousId": "ex-anon", "traits": {"email": "ex@example.com", "plan": "pro"}})).await;
    app.track(
        "/v1/identify",
        &key,
        json!({"userId": "ex-user", "traits": {"plan": "team"}}),
    )
    .await;
    app.post("/api/v1/consent", MASTER_KEY, json!({"identifier": {"kind": "email", "value": "ex@example.com"}, "purpose": "email:news", "action": "grant", "source": "form"})).await;
    app.post(
        "/api/v1/suppressions",
        MASTER_KEY,
        json!({"kind": "email", "value": "ex@example.com", "reason": "bounce", "scope": "tenant"}),
    )
    .await;
    app.post("/api/v1/contacts", MASTER_KEY, json!({"channel": "email", "from": "news@shop.example", "to": "ex@example.com", "campaign": "launch"})).await;
    let (_, person) = lookup(app, "external_id", "ex-user").await;
    let id = person["id"].as_str().expect("id");

    let response = app
        .client
        .get(app.url(&format!("/api/v1/persons/{id}/export")))
        .bearer_auth(MASTER_KEY)
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), StatusCode::OK);
    let export: Value = response.json().await.expect("one JSON document");
    assert_eq!(export["person"]["id"], id);
    let events = export["events"].as_array().expect("events");
    // 2,500 tracks, 2 identifies and the contact.
    assert_eq!(events.len(), 2_503);
    let mut names: Vec<&str> = events.iter().filter_map(|e| e["name"].as_str()).collect();
    names.sort_unstable();
    names.dedup();
    assert!(names.len() >= 2_500, "every event once");
    let plans: Vec<&Value> = export["trait_history"]
        .as_array()
        .expect("history")
        .iter()
        .filter(|t| t["name"] == "plan")
        .map(|t| &t["value"])
        .collect();
    assert_eq!(
        plans,
        [&json!("pro"), &json!("team")],
        "the whole history, not just the current value"
    );
    assert_eq!(export["consent"][0]["purpose"], "email:news");
    assert_eq!(export["suppressions"][0]["reason"], "bounce");
    assert_eq!(export["contacts"][0]["campaign"], "launch");
    assert_eq!(export["merges"].as_array().expect("merges").len(), 1);
    // Exports need both person and consent reading rights.
    let (_, reader) = app.key_for("default", &["persons:read"]).await;
    assert_eq!(
        app.get(&format!("/api/v1/persons/{id}/export"), &reader)
            .await
            .0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        app.get("/api/v1/persons/nobody/export", MASTER_KEY).await.0,
        StatusCode::NOT_FOUND
    );
}

async fn an_unmerge_restores_both_persons_and_keeps_them_apart(app: &TestApp) {
    let key = app.write_key().await;
    let track = |who: Value, event: &str| {
        let mut body = who;
        body["event"] = json!(event);
        body
    };
    // A visitor and a customer; a shared kiosk login wrongly ties the visitor to the customer.
    app.track(
        "/v1/identify",
        &key,
        json!({"anonymousId": "kiosk-v", "traits": {"email": "visitor@example.com"}}),
    )
    .await;
    app.track(
        "/v1/track",
        &key,
        track(json!({"anonymousId": "kiosk-v"}), "Before"),
    )
    .await;
    app.track(
        "/v1/identify",
        &key,
        json!({"userId": "cust", "traits": {"email": "cust@example.com"}}),
    )
    .await;
    let visitor = lookup(app, "anonymous_id", "kiosk-v").await.1["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let customer = lookup(app, "external_id", "cust").await.1["id"]
        .as_str()
        .expect("id")
        .to_owned();
    app.track(
        "/v1/identify",
        &key,
        json!({"userId": "cust", "anonymousId": "kiosk-v"}),
    )
    .await;
    assert_eq!(
        lookup(app, "anonymous_id", "kiosk-v").await.1["id"],
        customer.as_str()
    );
    // After the merge: the visitor's device alone (and a new email it brings), the customer
    // alone, and both together.
    app.track(
        "/v1/identify",
        &key,
        json!({"anonymousId": "kiosk-v", "traits": {"email": "visitor2@example.com"}}),
    )
    .await;
    app.track(
        "/v1/track",
        &key,
        track(json!({"userId": "cust"}), "Customer only"),
    )
    .await;
    app.track(
        "/v1/track",
        &key,
        track(json!({"userId": "cust", "anonymousId": "kiosk-v"}), "Both"),
    )
    .await;

    let (_, merges) = app
        .get(&format!("/api/v1/persons/{customer}/merges"), MASTER_KEY)
        .await;
    let merge_id = merges["merges"][0]["id"]
        .as_str()
        .expect("merge")
        .to_owned();
    let (status, body) = app
        .post(
            &format!("/api/v1/persons/{visitor}/unmerge"),
            MASTER_KEY,
            json!({"merge_id": merge_id, "reason": "kiosk login"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["unmerge"]["restored"], visitor.as_str());
    assert_eq!(body["unmerge"]["events_moved"], 1);
    assert_eq!(body["unmerge"]["identifiers_moved"], 1);
    // The visitor is live again, with what came with its own device.
    let (status, restored) = app
        .get(&format!("/api/v1/persons/{visitor}"), MASTER_KEY)
        .await;
    assert_eq!(
        (status, restored["id"].as_str()),
        (StatusCode::OK, Some(visitor.as_str()))
    );
    assert_eq!(
        identifier_values(&restored, "email"),
        ["visitor2@example.com", "visitor@example.com"]
    );
    assert_eq!(
        lookup(app, "email", "visitor2@example.com").await.1["id"],
        visitor.as_str()
    );
    let names = |events: Vec<Value>| -> Vec<String> {
        events
            .iter()
            .map(|e| {
                format!(
                    "{}:{}",
                    e["kind"].as_str().expect("kind"),
                    e["name"].as_str().unwrap_or("-")
                )
            })
            .collect()
    };
    let visitor_events = names(timeline(app, &visitor).await);
    assert_eq!(
        visitor_events,
        ["identify:-", "track:Before", "identify:-"],
        "{visitor_events:?}"
    );
    let customer_events = names(timeline(app, &customer).await);
    assert!(
        customer_events.contains(&"track:Customer only".to_owned())
            && customer_events.contains(&"track:Both".to_owned())
    );
    assert_eq!(customer_events.len(), 4, "{customer_events:?}");
    let (_, merges) = app
        .get(&format!("/api/v1/persons/{customer}/merges"), MASTER_KEY)
        .await;
    assert_eq!(
        merges["merges"],
        json!([]),
        "the undone merge is no longer in force"
    );

    // The same evidence does not merge them again: a visible rule keeps them apart.
    app.track(
        "/v1/identify",
        &key,
        json!({"userId": "cust", "anonymousId": "kiosk-v"}),
    )
    .await;
    assert_eq!(
        lookup(app, "anonymous_id", "kiosk-v").await.1["id"],
        visitor.as_str()
    );
    let (_, rules) = app
        .get(&format!("/api/v1/persons/{visitor}/keep-apart"), MASTER_KEY)
        .await;
    let rule = rules["rules"][0]["id"].as_str().expect("a rule").to_owned();
    let (_, conflicts) = app
        .get(&format!("/api/v1/persons/{customer}/merges"), MASTER_KEY)
        .await;
    assert!(
        conflicts["conflicts"]
            .as_array()
            .expect("conflicts")
            .iter()
            .any(|c| c["rule"].as_str().expect("rule").starts_with("kept apart"))
    );
    // Undoing twice is refused; removing the rule lets the evidence merge them again.
    let (status, _) = app
        .post(
            &format!("/api/v1/persons/{visitor}/unmerge"),
            MASTER_KEY,
            json!({"merge_id": merge_id}),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "the merge is no longer in force"
    );
    let (status, _) = app
        .call(
            "DELETE",
            &format!("/api/v1/keep-apart/{rule}"),
            MASTER_KEY,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    app.track(
        "/v1/identify",
        &key,
        json!({"userId": "cust", "anonymousId": "kiosk-v"}),
    )
    .await;
    assert_eq!(
        lookup(app, "anonymous_id", "kiosk-v").await.1["id"],
        customer.as_str()
    );
    let (status, body) = app
        .post(
            &format!("/api/v1/persons/{customer}/unmerge"),
            MASTER_KEY,
            json!({"identifiers": [{"kind": "email", "value": "x@example.com"}]}),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::CONFLICT,
        "no merge was caused by it: {body}"
    );
    for bad in [
        json!({}),
        json!({"merge_id": "m", "identifiers": [{"kind": "email", "value": "x@example.com"}]}),
        json!({"identifiers": []}),
        json!({"identifiers": [{"kind": "email", "value": "not an email"}]}),
        json!({"identifiers": [{"kind": "email"}]}),
    ] {
        let (status, body) = app
            .post(
                &format!("/api/v1/persons/{customer}/unmerge"),
                MASTER_KEY,
                bad.clone(),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad} {body}");
    }
}

async fn a_mega_person_glued_by_a_shared_device_splits_with_one_call(app: &TestApp) {
    let key = app.write_key().await;
    // Visitor 0 has a second device, linked by email: a merge the split must leave alone.
    app.track("/v1/identify", &key, json!({"anonymousId": "phone-0"}))
        .await;
    for i in 0..4 {
        let (status, body) = app
            .track(
                "/v1/identify",
                &key,
                json!({"anonymousId": format!("own-{i}"),
                       "traits": {"email": format!("v{i}@example.com")}}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        app.track(
            "/v1/track",
            &key,
            json!({"anonymousId": format!("own-{i}"), "event": format!("Visit {i}")}),
        )
        .await;
    }
    app.track(
        "/v1/identify",
        &key,
        json!({"anonymousId": "phone-0", "traits": {"email": "v0@example.com"}}),
    )
    .await;
    // Every visitor signs in on the shop's kiosk: the kiosk's id glues them all together.
    for i in 0..4 {
        app.track(
            "/v1/identify",
            &key,
            json!({"anonymousId": "kiosk", "traits": {"email": format!("v{i}@example.com")}}),
        )
        .await;
    }
    let mega = lookup(app, "anonymous_id", "kiosk").await.1;
    let mega_id = mega["id"].as_str().expect("id").to_owned();
    for i in 0..4 {
        assert_eq!(
            lookup(app, "email", &format!("v{i}@example.com")).await.1["id"],
            mega_id.as_str()
        );
    }
    let (_, found) = app
        .get("/api/v1/persons?min_identifiers=8", MASTER_KEY)
        .await;
    assert!(
        found.to_string().contains(&mega_id),
        "the mega person is found: {found}"
    );

    let (status, body) = app
        .post(
            &format!("/api/v1/persons/{mega_id}/unmerge"),
            MASTER_KEY,
            json!({"identifiers": [{"kind": "anonymous_id", "value": " kiosk "}],
                   "reason": "shared kiosk"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["unmerges"].as_array().map(Vec::len), Some(3), "{body}");
    assert_eq!(body["persons"].as_array().map(Vec::len), Some(4), "{body}");

    // Four people again, each with their own device and visit; visitor 0 keeps its phone.
    let mut people = std::collections::BTreeSet::new();
    for i in 0..4 {
        let (status, person) = lookup(app, "email", &format!("v{i}@example.com")).await;
        assert_eq!(status, StatusCode::OK);
        let id = person["id"].as_str().expect("id").to_owned();
        assert_eq!(
            lookup(app, "anonymous_id", &format!("own-{i}")).await.1["id"],
            id.as_str()
        );
        let (_, timeline) = app
            .get(
                &format!("/api/v1/persons/{id}/timeline?kind=track"),
                MASTER_KEY,
            )
            .await;
        let names: Vec<&str> = timeline["events"]
            .as_array()
            .expect("events")
            .iter()
            .filter_map(|e| e["name"].as_str())
            .collect();
        assert_eq!(names, [format!("Visit {i}")], "{timeline}");
        people.insert(id);
    }
    assert_eq!(people.len(), 4);
    assert_eq!(
        lookup(app, "anonymous_id", "phone-0").await.1["id"],
        lookup(app, "email", "v0@example.com").await.1["id"],
        "the merge by email stays"
    );
    // The kiosk's id is now declared shared, visibly: the same evidence does not glue any
    // two of them together again.
    assert_eq!(
        body["shared_values"],
        json!([{"kind": "anonymous_id", "value": "kiosk"}])
    );
    let (_, settings) = app.get("/api/v1/settings/identity", MASTER_KEY).await;
    assert_eq!(
        settings["shared_values"],
        json!({"anonymous_id": ["kiosk"]})
    );
    app.track(
        "/v1/identify",
        &key,
        json!({"anonymousId": "kiosk", "traits": {"email": "v3@example.com"}}),
    )
    .await;
    let after: std::collections::BTreeSet<String> = {
        let mut ids = std::collections::BTreeSet::new();
        for i in 0..4 {
            let (_, person) = lookup(app, "email", &format!("v{i}@example.com")).await;
            ids.insert(person["id"].as_str().expect("id").to_owned());
        }
        ids
    };
    assert_eq!(after, people);
}

async fn a_settings_preview_reports_merges_and_splits_and_changes_nothing(app: &TestApp) {
    // A household landline is shared today; one device was used by two people.
    let (status, body) = app
        .call(
            "PUT",
            "/api/v1/settings/identity",
            MASTER_KEY,
            Some(json!({"kinds": {"phone": {"policy": "shared"}}})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let key = app.write_key().await;
    for (anonymous_id, email, phone) in [
        ("kid-1", "kid@example.com", "+14155552671"),
        ("parent-1", "parent@example.com", "+14155552671"),
        ("tablet", "first@example.com", "+14155550100"),
        ("tablet", "second@example.com", "+14155550101"),
    ] {
        let (status, body) = app
            .track(
                "/v1/identify",
                &key,
                json!({"anonymousId": anonymous_id, "traits": {"email": email, "phone": phone}}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let settings_before = app.get("/api/v1/settings/identity", MASTER_KEY).await.1;
    let kid = lookup(app, "email", "kid@example.com").await.1["id"].clone();
    let parent = lookup(app, "email", "parent@example.com").await.1["id"].clone();
    let tablet = lookup(app, "anonymous_id", "tablet").await.1["id"].clone();
    assert_ne!(kid, parent);
    assert_eq!(
        lookup(app, "email", "second@example.com").await.1["id"],
        tablet
    );

    let preview = |doc: Value| async move {
        let (status, body) = app
            .post("/api/v1/settings/identity/preview", MASTER_KEY, doc)
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    };
    // Making the landline unique joins the household.
    let body = preview(json!({"kinds": {"phone": {"policy": "unique"}}})).await;
    assert_eq!(body["signals"], 4);
    assert_eq!(body["complete"], true);
    assert_eq!(body["current"]["persons"], 3, "{body}");
    assert_eq!(body["proposed"]["persons"], 2, "{body}");
    assert_eq!(body["would_merge"]["count"], 1, "{body}");
    assert_eq!(body["would_split"]["count"], 0, "{body}");
    let parts = body["would_merge"]["samples"][0]["parts"]
        .as_array()
        .expect("parts");
    let mut joined: Vec<&Value> = parts.iter().map(|part| &part["person_id"]).collect();
    joined.sort_by_key(|id| id.as_str().map(str::to_owned));
    let mut expected = vec![&kid, &parent];
    expected.sort_by_key(|id| id.as_str().map(str::to_owned));
    assert_eq!(joined, expected, "{body}");

    // Sharing the device id separates the two people who used the tablet.
    let body = preview(json!({"kinds": {"anonymous_id": {"policy": "shared"}}})).await;
    assert_eq!(body["would_split"]["count"], 1, "{body}");
    assert_eq!(body["would_merge"]["count"], 0, "{body}");
    assert_eq!(body["proposed"]["persons"], 4, "{body}");
    let split = &body["would_split"]["samples"][0]["parts"];
    assert_eq!(split.as_array().map(Vec::len), Some(2), "{body}");
    assert_eq!(
        split[0]["person_id"], tablet,
        "both parts are the tablet's person today"
    );

    // Blocking a value drops it from every signal that carried it.
    let body = preview(json!({"blocked_values": {"email": ["second@example.com"]}})).await;
    assert_eq!(body["identifiers_dropped"], 1, "{body}");
    assert_eq!(body["would_split"]["count"], 0, "{body}");

    // Nothing changed.
    assert_eq!(
        app.get("/api/v1/settings/identity", MASTER_KEY).await.1,
        settings_before
    );
    assert_eq!(lookup(app, "email", "kid@example.com").await.1["id"], kid);
    assert_eq!(
        lookup(app, "email", "second@example.com").await.1["id"],
        tablet
    );

    // Bad input and scope.
    for (path, doc) in [
        (
            "/api/v1/settings/identity/preview",
            json!({"kinds": {"phone": {"policy": "maybe"}}}),
        ),
        (
            "/api/v1/settings/identity/preview",
            json!({"colour": "red"}),
        ),
        ("/api/v1/settings/identity/preview?max_signals=0", json!({})),
    ] {
        let (status, body) = app.post(path, MASTER_KEY, doc).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path} {body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
    }
    let (status, _) = app
        .post("/api/v1/settings/identity/preview", &key, json!({}))
        .await;
    assert!(status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN);
}
