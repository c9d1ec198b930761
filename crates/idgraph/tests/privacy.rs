//! Deleting a person over HTTP, against a real server on both backends: every read forgets it at
//! once, erased identifiers stay blocked, the opt-out of its number still denies, and after the
//! purge none of its PII is left in the database files.

mod common;

use std::time::{Duration, Instant};

use common::{MASTER_KEY, TestApp, error_code};
use reqwest::StatusCode;
use serde_json::{Value, json};

const EMAIL: &str = "erase.me@example.com";
const PHONE: &str = "+14155550177";
const MARKER: &str = "ann-secret-note-7c1f";

async fn upload_csv(app: &TestApp, body: &str) -> String {
    let response = app
        .client
        .post(app.url("/api/v1/imports?mode=universe"))
        .bearer_auth(MASTER_KEY)
        .header("content-type", "text/csv")
        .body(body.to_owned())
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let job: Value = response.json().await.expect("json");
    let id = job["id"].as_str().expect("id").to_owned();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (_, job) = app.get(&format!("/api/v1/imports/{id}"), MASTER_KEY).await;
        if job["status"] == "completed" {
            return id;
        }
        assert_ne!(job["status"], "failed", "{job}");
        assert!(Instant::now() < deadline, "import did not finish: {job}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Ann: a Segment identity with traits and an event, an anonymous visit merged into her, an
/// imported row, consent, a contact and an opt-out of her number. Returns her person id.
async fn ann(app: &TestApp) -> String {
    let write_key = app.write_key().await;
    let (status, body) = app
        .track(
            "/v1/batch",
            &write_key,
            json!({"batch": [
                {"type": "page", "anonymousId": "anon-ann", "properties": {"path": "/pricing"}},
                {"type": "identify", "userId": "u-ann",
                 "traits": {"email": EMAIL, "phone": PHONE, "name": "Ann Erase"}},
                // Ties the anonymous visitor to Ann: two persons merge.
                {"type": "track", "userId": "u-ann", "anonymousId": "anon-ann",
                 "event": "Signed Up", "properties": {"note": MARKER}},
                {"type": "identify", "userId": "u-bob", "traits": {"email": "bob@example.com"}},
            ]}),
        )
        .await;
    assert_eq!(
        (status, &body["accepted"]),
        (StatusCode::OK, &json!(4)),
        "{body}"
    );
    upload_csv(
        app,
        &format!("customer id,email,phone\nu-ann,{EMAIL},{PHONE}\n"),
    )
    .await;
    let (status, person) = app
        .get(
            &format!("/api/v1/persons/lookup?kind=email&value={EMAIL}"),
            MASTER_KEY,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{person}");
    let id = person["id"].as_str().expect("id").to_owned();
    for (path, body) in [
        (
            "/api/v1/consent",
            json!({"person_id": id, "purpose": "email:marketing", "action": "grant", "source": "form"}),
        ),
        (
            "/api/v1/consent",
            json!({"identifier": {"kind": "phone", "value": PHONE}, "purpose": "sms", "action": "revoke", "source": "sms"}),
        ),
        (
            "/api/v1/suppressions",
            json!({"kind": "phone", "value": PHONE, "reason": "opt_out", "scope": "tenant"}),
        ),
        (
            "/api/v1/contacts",
            json!({"channel": "sms", "from": "+14155550000", "to": PHONE}),
        ),
    ] {
        let (status, answer) = app.post(path, MASTER_KEY, body).await;
        assert_eq!(status, StatusCode::CREATED, "{path}: {answer}");
    }
    id
}

async fn check_phone(app: &TestApp) -> Value {
    let (status, check) = app
        .post(
            "/api/v1/compliance/check",
            MASTER_KEY,
            json!({"channel": "sms", "to": PHONE, "purpose": "sms:marketing"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{check}");
    check
}

async fn deleting_a_person_forgets_it_everywhere_and_blocks_its_identifiers(app: &TestApp) {
    let id = ann(app).await;
    let (_, merges) = app
        .get(&format!("/api/v1/persons/{id}/merges"), MASTER_KEY)
        .await;
    let absorbed = merges["merges"][0]["absorbed"]
        .as_str()
        .expect("a merge")
        .to_owned();

    // The scope: persons:read is not enough; persons:write is.
    let (_, reader) = app.key_for("default", &["persons:read"]).await;
    let (status, body) = app
        .call("DELETE", &format!("/api/v1/persons/{id}"), &reader, None)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (_, writer) = app.key_for("default", &["persons:write"]).await;
    // Asking by the absorbed id deletes the group it belongs to.
    let (status, body) = app
        .call(
            "DELETE",
            &format!("/api/v1/persons/{absorbed}"),
            &writer,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["status"], "deletion_requested");
    assert_eq!(body["person_id"], json!(id));

    for path in [
        format!("/api/v1/persons/{id}"),
        format!("/api/v1/persons/{absorbed}"),
        format!("/api/v1/persons/{id}/timeline"),
        format!("/api/v1/persons/{id}/export"),
        format!("/api/v1/persons/{id}/merges"),
        format!("/api/v1/persons/{id}/consent"),
        format!("/api/v1/persons/{id}/explain?kind=email&value={EMAIL}"),
        format!("/api/v1/persons/lookup?kind=email&value={EMAIL}"),
        format!("/api/v1/persons/lookup?kind=phone&value={PHONE}"),
        "/api/v1/persons/lookup?kind=external_id&value=u-ann".to_owned(),
        "/api/v1/persons/lookup?kind=anonymous_id&value=anon-ann".to_owned(),
    ] {
        let (status, body) = app.get(&path, MASTER_KEY).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}: {body}");
        assert_eq!(error_code(&body), "not_found", "{path}: {body}");
    }
    for deleted in [&id, &absorbed, &"01NOSUCHPERSON".to_owned()] {
        let (status, body) = app
            .call(
                "DELETE",
                &format!("/api/v1/persons/{deleted}"),
                MASTER_KEY,
                None,
            )
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{body}"
        );
    }
    let (_, stats) = app.get("/api/v1/stats", MASTER_KEY).await;
    assert_eq!(stats["persons"], 1, "only Bob is left: {stats}");
    let (_, listed) = app
        .get("/api/v1/persons?min_identifiers=1", MASTER_KEY)
        .await;
    let listed = listed["persons"].as_array().expect("persons").clone();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_ne!(listed[0]["id"], json!(id));

    // The opt-out of her number still denies.
    let check = check_phone(app).await;
    assert_eq!(check["allowed"], false, "{check}");
    assert!(
        check["reasons"]
            .as_array()
            .expect("reasons")
            .iter()
            .any(|r| r["code"] == "suppressed"),
        "{check}"
    );

    // A stale signal with her email is refused and reported; the rest of the batch goes in.
    let write_key = app.write_key().await;
    let (status, body) = app
        .track(
            "/v1/batch",
            &write_key,
            json!({"batch": [
                {"type": "identify", "userId": "u-carl", "traits": {"email": "carl@example.com"}},
                {"type": "identify", "anonymousId": "anon-new", "traits": {"email": EMAIL}},
            ]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        (&body["accepted"], &body["rejected"]),
        (&json!(1), &json!(1)),
        "{body}"
    );
    assert_eq!(body["errors"][0]["index"], 1, "{body}");
    assert_eq!(body["errors"][0]["code"], "erased_identifier", "{body}");
    assert!(
        !body.to_string().contains(EMAIL),
        "the reason never quotes the value: {body}"
    );
    let (status, _) = app
        .get(
            &format!("/api/v1/persons/lookup?kind=email&value={EMAIL}"),
            MASTER_KEY,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // So is an import row.
    let job = upload_csv(
        app,
        &format!("customer id,email\nu-dan,dan@example.com\nu-x,{EMAIL}\n"),
    )
    .await;
    let (_, rows) = app
        .get(&format!("/api/v1/imports/{job}/rows"), MASTER_KEY)
        .await;
    let rows = rows["rows"].as_array().expect("rows").clone();
    assert_eq!(rows[0]["outcome"], "created", "{rows:?}");
    assert_eq!(rows[1]["outcome"], "rejected", "{rows:?}");
    assert!(
        rows[1]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("deleted person")),
        "{rows:?}"
    );

    // A tenant may choose to let erased identifiers start a new person.
    let (status, body) = app
        .call(
            "PUT",
            "/api/v1/settings/identity",
            MASTER_KEY,
            Some(json!({"erased_identifiers": "allow"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["erased_identifiers"], "allow", "{body}");
    let (status, body) = app
        .call(
            "PUT",
            "/api/v1/settings/identity",
            MASTER_KEY,
            Some(json!({"erased_identifiers": "sometimes"})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (_, body) = app
        .track(
            "/v1/identify",
            &write_key,
            json!({"anonymousId": "anon-again", "traits": {"email": EMAIL}}),
        )
        .await;
    assert_eq!(body, json!({"success": true}));
    let (status, again) = app
        .get(
            &format!("/api/v1/persons/lookup?kind=email&value={EMAIL}"),
            MASTER_KEY,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_ne!(again["id"], json!(id));
}

on_both_backends!(deleting_a_person_forgets_it_everywhere_and_blocks_its_identifiers);

/// Every byte of the SQLite data dir (the database and any WAL left next to it).
fn data_dir_bytes(dir: &std::path::Path) -> Vec<u8> {
    let mut all = Vec::new();
    for entry in std::fs::read_dir(dir).expect("data dir") {
        let path = entry.expect("entry").path();
        if path.is_file() {
            all.extend(std::fs::read(&path).expect("read"));
        }
    }
    all
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

/// A plain-text dump of the database, by the cluster's own pg_dump.
fn pg_dump(url: &str) -> Vec<u8> {
    let bin = idgraph_testpg::postgres_bin_dir().expect("PostgreSQL binaries");
    let output = std::process::Command::new(bin.join("pg_dump"))
        .arg("--no-owner")
        .arg(url)
        .output()
        .expect("pg_dump runs");
    assert!(
        output.status.success(),
        "pg_dump: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

/// Deletes Ann, stops the server, runs what `idgraph purge --now` runs, and searches the
/// database (the SQLite data dir, or what `dump` gives) for her PII before and after.
async fn delete_then_purge(database_url: Option<String>, dump: impl Fn() -> Vec<u8>) {
    let kept = tempfile::tempdir().expect("temp dir");
    let data_dir = kept.path().to_owned();
    let app = TestApp::start_with(database_url.clone(), |c| c.data_dir = data_dir.clone()).await;
    let id = ann(&app).await;
    let (status, body) = app
        .call("DELETE", &format!("/api/v1/persons/{id}"), MASTER_KEY, None)
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    // A later file carrying her email is refused; its row must not keep the email either.
    upload_csv(&app, &format!("customer id,email\nu-late,{EMAIL}\n")).await;
    let config = TestApp::config(&data_dir, database_url.clone());
    let probe = || {
        if database_url.is_some() {
            dump()
        } else {
            data_dir_bytes(&data_dir)
        }
    };
    app.stop().await;

    // Before the purge her data is still stored (invisible): the search below can fail. Her
    // properties are sealed at rest; her event's name is not, and only she has it.
    let before = probe();
    assert!(
        contains(&before, "Signed Up"),
        "her event waits for the purge"
    );
    assert!(
        !contains(&before, MARKER),
        "her event's properties are sealed"
    );
    let purged = idgraph::purge_directly(&config, true).await.expect("purge");
    assert!(purged.persons >= 2 && purged.events >= 3, "{purged:?}");
    let after = probe();
    for pii in [
        EMAIL,
        PHONE,
        MARKER,
        "Ann Erase",
        "u-ann",
        "anon-ann",
        "Signed Up",
    ] {
        assert!(
            !contains(&after, pii),
            "{pii} is still in the database after the purge"
        );
    }
    if database_url.is_none() {
        // Sealed values hide from the search above: count the embedded store's sealed
        // identifier values that no identity node names any more (hers, if left behind).
        let conn = rusqlite::Connection::open(data_dir.join("idgraph.db")).expect("open");
        let orphans: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM identity_values v WHERE NOT EXISTS (SELECT 1 FROM identity_nodes n
                   WHERE n.tenant_id = v.tenant_id AND n.value_id = v.value_id)",
                [],
                |r| r.get(0),
            )
            .expect("count");
        assert_eq!(orphans, 0, "sealed values outlive their identity nodes");
    }

    // The opt-out still denies her number after the purge, on a restarted server.
    let app = TestApp::start_with(database_url, |c| c.data_dir = data_dir.clone()).await;
    let check = check_phone(&app).await;
    assert_eq!(check["allowed"], false, "{check}");
    // Bob (sealed at rest like her) is untouched.
    let (status, bob) = common::lookup(&app, "email", "bob@example.com").await;
    assert_eq!(status, StatusCode::OK, "{bob}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_the_purge_no_pii_is_left_in_the_sqlite_file() {
    delete_then_purge(None, Vec::new).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_the_purge_no_pii_is_left_in_a_pg_dump() {
    let Some(database) = idgraph_testpg::test_database().await else {
        return;
    };
    let url = database.url.clone();
    delete_then_purge(Some(database.url), move || pg_dump(&url)).await;
}
