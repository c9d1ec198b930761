//! PII at rest, against real servers on both backends: a live person's identifiers, traits and
//! event payloads are nowhere in the SQLite file or a `pg_dump`, lookups still find them, the
//! server refuses to start without its key or with another one, and a rotation re-seals every
//! row while the server keeps serving, resuming when interrupted.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{MASTER_KEY, PG_DATA_KEY, TestApp, lookup};
use idgraph_app::data_key::DataKey;
use idgraph_app::keyring::{self, RotationStatus};
use idgraph_store::Store;
use reqwest::StatusCode;
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_idgraph");
const EMAIL: &str = "zed.sealed@example.com";
const PHONE: &str = "+14155550199";
const NAME: &str = "Zed Sealedname";
const NOTE: &str = "zed-private-note-41d9";
const USER_ID: &str = "u-zed-sealed";
/// A second user id sent with Zed's email: a conflict.
const OTHER_ID: &str = "u-zed-conflicting";
/// Zed's street, in an imported row (with the name, it makes an `identity_hash`).
const STREET: &str = "4107 Sealedzed Lane";
/// A malformed address in an imported row: its rejection quotes it.
const BAD_EMAIL: &str = "zed-not-an-email-7c1e";
/// Not PII: event names stay plain, which makes it the search's positive control.
const EVENT_NAME: &str = "Sealed Test Happened";

/// Zed: a visitor with Zed's phone, an identify with traits that a third call merges with the
/// visitor, a track with a property, and another user id with Zed's email (a conflict).
async fn zed(app: &TestApp) {
    let write_key = app.write_key().await;
    let (status, body) = app
        .track(
            "/v1/batch",
            &write_key,
            json!({"batch": [
                {"type": "identify", "anonymousId": "anon-zed", "traits": {"phone": PHONE}},
                {"type": "identify", "userId": USER_ID,
                 "traits": {"email": EMAIL, "name": NAME}},
                {"type": "identify", "userId": USER_ID, "traits": {"phone": PHONE}},
                {"type": "track", "userId": USER_ID, "event": EVENT_NAME,
                 "properties": {"note": NOTE}},
                {"type": "identify", "userId": OTHER_ID, "traits": {"email": EMAIL}},
            ]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["accepted"], 5, "{body}");
    zed_compliance(app).await;
}

/// Zed's compliance records: consent on an address, a tenant and a global suppression, a
/// contact, and an inbound STOP (a consent revoke quoting the message, and a suppression).
async fn zed_compliance(app: &TestApp) {
    // An endpoint nobody listens on: its deliveries wait in the outbox, payloads and all.
    let (status, body) = app
        .post(
            "/api/v1/webhooks",
            MASTER_KEY,
            json!({"url": "http://127.0.0.1:9/zed", "events": ["suppression.added", "consent.changed"]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = app
        .post(
            "/api/v1/consent",
            MASTER_KEY,
            json!({"identifier": {"kind": "email", "value": EMAIL}, "purpose": "email:news",
                   "action": "revoke", "source": "unsubscribe link",
                   "evidence": {"note": NOTE}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    for (kind, value, scope) in [("email", EMAIL, "tenant"), ("phone", PHONE, "global")] {
        let (status, body) = app
            .post(
                "/api/v1/suppressions",
                MASTER_KEY,
                json!({"kind": kind, "value": value, "reason": "complaint", "scope": scope}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    let (status, body) = app
        .post(
            "/api/v1/contacts",
            MASTER_KEY,
            json!({"channel": "sms", "from": "+18005550100", "to": PHONE,
                   "at": "2026-01-01T00:00:00Z"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let write_key = app.write_key().await;
    let (status, body) = app
        .track(
            "/v1/messages/inbound",
            &write_key,
            json!({"from": PHONE, "to": "+18005550100", "body": "STOP"}),
        )
        .await;
    assert!(status.is_success(), "{body}");
    zed_import(app).await;
    // A check sent with an idempotency key: its answer, which quotes the address, is kept.
    let first = zed_idempotent_check(app).await;
    assert!(first.contains(EMAIL), "{first}");
}

async fn zed_idempotent_check(app: &TestApp) -> String {
    let response = app
        .client
        .post(app.url("/api/v1/compliance/check"))
        .bearer_auth(MASTER_KEY)
        .header("Idempotency-Key", "zed-check-1")
        .json(&json!({"channel": "email", "to": EMAIL, "purpose": "email:news"}))
        .send()
        .await
        .expect("check");
    assert_eq!(response.status(), StatusCode::OK);
    response.text().await.expect("body")
}

/// The outbox's payloads, read back in the clear.
async fn zed_deliveries(app: &TestApp) -> String {
    let (status, hooks) = app.get("/api/v1/webhooks", MASTER_KEY).await;
    assert_eq!(status, StatusCode::OK, "{hooks}");
    let id = hooks["webhooks"][0]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{hooks}"))
        .to_owned();
    let (status, deliveries) = app
        .get(&format!("/api/v1/webhooks/{id}/deliveries"), MASTER_KEY)
        .await;
    assert_eq!(status, StatusCode::OK, "{deliveries}");
    deliveries.to_string()
}

/// An import of Zed (name and street make an identity hash) and of a row rejected for a
/// malformed address.
async fn zed_import(app: &TestApp) {
    let file = format!(
        "full name,street,city,state,zip,email,phone\n\
         {NAME},{STREET},Springfield,IL,62701,{EMAIL},{PHONE}\n\
         Someone Else,,,,,{BAD_EMAIL},\n"
    );
    let response = app
        .client
        .post(app.url("/api/v1/imports"))
        .bearer_auth(MASTER_KEY)
        .header("content-type", "text/csv")
        .body(file)
        .send()
        .await
        .expect("upload");
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let created: Value = response.json().await.expect("json");
    let id = created["id"].as_str().expect("id");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (status, job) = app.get(&format!("/api/v1/imports/{id}"), MASTER_KEY).await;
        assert_eq!(status, StatusCode::OK, "{job}");
        if job["status"] == "completed" {
            break;
        }
        assert!(
            job["status"] == "processing" && Instant::now() < deadline,
            "{job}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, rows) = app
        .get(&format!("/api/v1/imports/{id}/rows"), MASTER_KEY)
        .await;
    assert_eq!(status, StatusCode::OK, "{rows}");
    assert!(
        rows.to_string().contains(BAD_EMAIL),
        "the rejection's reason opens: {rows}"
    );
}

/// The identity hash Zed's imported row made, read back in the clear.
async fn zed_identity_hash(app: &TestApp) -> String {
    let (status, body) = lookup(app, "email", EMAIL).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["identifiers"]
        .as_array()
        .expect("identifiers")
        .iter()
        .find(|i| i["kind"] == "identity_hash")
        .and_then(|i| i["value"].as_str())
        .unwrap_or_else(|| panic!("the import gave Zed an identity hash: {body}"))
        .to_owned()
}

/// Zed's compliance records read back in the clear: found by address, subjects opened.
async fn zed_compliance_reads_back(app: &TestApp, person: &str) {
    for (channel, to, purpose) in [("email", EMAIL, "email:news"), ("sms", PHONE, "sms:alerts")] {
        let (status, body) = app
            .post(
                "/api/v1/compliance/check",
                MASTER_KEY,
                json!({"channel": channel, "to": to, "purpose": purpose}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["allowed"], false, "{to}: {body}");
    }
    for (kind, value, n) in [
        ("email", "zed.sealed%40example.com", 1),
        ("phone", "%2B14155550199", 2),
    ] {
        let (status, body) = app
            .get(
                &format!("/api/v1/suppressions?kind={kind}&value={value}"),
                MASTER_KEY,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let entries = body["entries"].as_array().expect("entries");
        assert_eq!(entries.len(), n, "{kind}: {body}");
        for entry in entries {
            assert!(entry["value"] == EMAIL || entry["value"] == PHONE, "{body}");
        }
    }
    let (status, consent) = app
        .get(&format!("/api/v1/persons/{person}/consent"), MASTER_KEY)
        .await;
    assert_eq!(status, StatusCode::OK, "{consent}");
    let text = consent.to_string();
    assert!(text.contains(&format!("email:{EMAIL}")), "{consent}");
    assert!(text.contains(&format!("phone:{PHONE}")), "{consent}");
    assert!(text.contains(NOTE), "the evidence opens: {consent}");
}

/// Zed reads back in the clear through the API: found by every identifier (blind index),
/// traits and the event's properties intact.
async fn zed_reads_back(app: &TestApp) -> String {
    let mut person = None;
    for (kind, value) in [("email", EMAIL), ("phone", PHONE), ("external_id", USER_ID)] {
        let (status, body) = lookup(app, kind, value).await;
        assert_eq!(status, StatusCode::OK, "{kind}: {body}");
        let id = body["id"].as_str().expect("id").to_owned();
        assert!(person.as_ref().is_none_or(|p| p == &id), "{body}");
        person = Some(id);
    }
    let id = person.expect("found");
    let (status, profile) = app.get(&format!("/api/v1/persons/{id}"), MASTER_KEY).await;
    assert_eq!(status, StatusCode::OK, "{profile}");
    let text = profile.to_string();
    for pii in [EMAIL, PHONE, NAME, USER_ID] {
        assert!(text.contains(pii), "{pii} in {profile}");
    }
    let (status, timeline) = app
        .get(&format!("/api/v1/persons/{id}/timeline"), MASTER_KEY)
        .await;
    assert_eq!(status, StatusCode::OK, "{timeline}");
    assert!(timeline.to_string().contains(NOTE), "{timeline}");
    let (status, merges) = app
        .get(&format!("/api/v1/persons/{id}/merges"), MASTER_KEY)
        .await;
    assert_eq!(status, StatusCode::OK, "{merges}");
    let text = merges.to_string();
    assert!(
        text.contains(PHONE),
        "the merge's identifiers open: {merges}"
    );
    assert!(
        text.contains(OTHER_ID) || text.matches(EMAIL).count() > 0 && text.contains("conflict"),
        "the conflict's identifier opens: {merges}"
    );
    zed_compliance_reads_back(app, &id).await;
    let replayed = zed_idempotent_check(app).await;
    assert!(
        replayed.contains(EMAIL),
        "the kept answer opens: {replayed}"
    );
    let deliveries = zed_deliveries(app).await;
    assert!(
        deliveries.contains(EMAIL) && deliveries.contains(PHONE),
        "the outbox's payloads open: {deliveries}"
    );
    id
}

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

fn pg_dump(url: &str) -> Vec<u8> {
    let bin = idgraph_testpg::postgres_bin_dir().expect("PostgreSQL binaries");
    let output = Command::new(bin.join("pg_dump"))
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

fn assert_no_live_pii(bytes: &[u8], identity_hash: &str) {
    assert!(
        contains(bytes, EVENT_NAME),
        "the search finds what is stored in the clear"
    );
    for pii in [
        EMAIL,
        PHONE,
        NAME,
        NOTE,
        USER_ID,
        OTHER_ID,
        STREET,
        BAD_EMAIL,
        identity_hash,
    ] {
        assert!(!contains(bytes, pii), "{pii} is stored in the clear");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_persons_pii_is_not_in_the_sqlite_file() {
    let app = TestApp::start(None).await;
    zed(&app).await;
    zed_reads_back(&app).await;
    let hash = zed_identity_hash(&app).await;
    let data_dir = app.stop_keeping_data().await;
    assert_no_live_pii(&data_dir_bytes(data_dir.path()), &hash);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_persons_pii_is_not_in_a_pg_dump() {
    let Some(database) = idgraph_testpg::test_database().await else {
        return;
    };
    let app = TestApp::start(Some(database.url.clone())).await;
    zed(&app).await;
    zed_reads_back(&app).await;
    let hash = zed_identity_hash(&app).await;
    app.stop().await;
    assert_no_live_pii(&pg_dump(&database.url), &hash);
}

/// Runs `idgraph serve` and expects it to refuse to start: its stderr.
fn refused_serve(data_dir: &std::path::Path, data_key: Option<&str>) -> String {
    let mut cmd = Command::new(BIN);
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .args(["--master-key", MASTER_KEY])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("IDGRAPH_") {
            cmd.env_remove(name);
        }
    }
    if let Some(key) = data_key {
        cmd.env("IDGRAPH_DATA_KEY", key);
    }
    let mut child = cmd.spawn().expect("spawn idgraph");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            assert!(!status.success(), "the server must refuse to start");
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the server started although it must refuse to");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let output = child.wait_with_output().expect("output");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_refuses_to_start_without_its_key_or_with_another() {
    let app = TestApp::start(None).await;
    zed(&app).await;
    let data_dir = app.stop_keeping_data().await;
    let key_file = data_dir.path().join("data.key");
    let saved = std::fs::read_to_string(&key_file).expect("the key was generated");

    let other = DataKey::generate().expect("key").to_text();
    let stderr = refused_serve(data_dir.path(), Some(&other));
    assert!(stderr.contains("not the key"), "{stderr}");

    std::fs::remove_file(&key_file).expect("remove the key");
    let stderr = refused_serve(data_dir.path(), None);
    assert!(stderr.contains("no key was found"), "{stderr}");
    assert!(!stderr.contains(saved.trim()), "the key is never printed");

    // With its key back, it starts and reads Zed.
    std::fs::write(&key_file, saved).expect("restore the key");
    let app = TestApp::start_configured(None, data_dir, |_| {}).await;
    zed_reads_back(&app).await;
    app.stop().await;
}

/// Persons 0..n with an email and a trait each, in batches of 50.
async fn many(app: &TestApp, from: usize, n: usize) {
    let write_key = app.write_key().await;
    let all: Vec<Value> = (from..from + n)
        .map(|i| {
            json!({"type": "identify", "userId": format!("u-{i}"),
                   "traits": {"email": format!("p{i}@example.com"), "plan": format!("plan-{i}")}})
        })
        .collect();
    for chunk in all.chunks(50) {
        let (status, body) = app
            .track("/v1/batch", &write_key, json!({ "batch": chunk }))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
}

async fn assert_many_readable(app: &TestApp, n: usize) {
    for i in (0..n).step_by(7) {
        let (status, body) = lookup(app, "email", &format!("p{i}@example.com")).await;
        assert_eq!(status, StatusCode::OK, "p{i}: {body}");
        let id = body["id"].as_str().expect("id");
        let (status, profile) = app.get(&format!("/api/v1/persons/{id}"), MASTER_KEY).await;
        assert_eq!(status, StatusCode::OK, "{profile}");
        assert!(
            profile.to_string().contains(&format!("plan-{i}")),
            "{profile}"
        );
    }
}

async fn wait_rotated(app: &TestApp, key: u64) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (status, body) = app.get("/api/v1/data-key", MASTER_KEY).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        if body["status"] == "done" {
            assert_eq!(body["key"], key, "{body}");
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the rotation did not end: {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A rotation asked of a running server re-seals everything while the server keeps ingesting
/// and answering; afterwards only the new key's prefix is in the file. Zed's records put a
/// value in every sealed column (a merge, a conflict, compliance logs, webhook payloads).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_reseals_every_row_while_the_server_serves() {
    let app = TestApp::start(None).await;
    zed(&app).await;
    many(&app, 0, 400).await;
    let (status, body) = app
        .call("POST", "/api/v1/data-key/rotate", MASTER_KEY, None)
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["key"], 2, "{body}");
    let key = app.key_for("default", &["persons:read"]).await.1;
    let (status, _) = app
        .call("POST", "/api/v1/data-key/rotate", &key, None)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "master key only");
    // Serving goes on during the rotation: writes and reads.
    many(&app, 400, 100).await;
    assert_many_readable(&app, 500).await;
    wait_rotated(&app, 2).await;
    assert_many_readable(&app, 500).await;
    let data_dir = app.stop_keeping_data().await;
    let bytes = data_dir_bytes(data_dir.path());
    assert!(contains(&bytes, "~1.2."), "values are sealed with key 2");
    assert!(!contains(&bytes, "~1.1."), "no value is left under key 1");
    assert!(!contains(&bytes, "~b1.1."), "no bytes are left under key 1");
}

/// Interrupted after one batch (as if killed), a rotation leaves every row readable; the next
/// `idgraph data-key rotate` (embedded store) or server start (PostgreSQL) finishes it, with
/// the same key rather than another.
async fn an_interrupted_rotation_resumes(database_url: Option<String>) {
    let app = TestApp::start(database_url.clone()).await;
    many(&app, 0, 300).await;
    let data_dir = app.stop_keeping_data().await;
    let config = TestApp::config(data_dir.path(), database_url.clone());
    let text = match &database_url {
        Some(_) => PG_DATA_KEY.to_owned(),
        None => std::fs::read_to_string(data_dir.path().join("data.key")).expect("key"),
    };
    let kek = DataKey::from_text(&text).expect("key");

    // A process that stages the key, promotes it, re-seals one batch and dies.
    async fn interrupt<S: Store>(store: S, kek: &DataKey) {
        keyring::install(&store, kek).await.expect("install");
        let staged = keyring::start_rotation(&store, kek).await.expect("start");
        assert!(
            matches!(staged, RotationStatus::Staged { to: 2, .. }),
            "{staged:?}"
        );
        let now = keyring::advance_rotation(&store, kek, Duration::ZERO, Some(1))
            .await
            .expect("advance");
        assert_eq!(now, RotationStatus::Resealing { to: 2 });
        store.close().await;
    }
    match &database_url {
        Some(url) => {
            let store =
                idgraph_postgres::PostgresStore::connect(&idgraph_postgres::PostgresOptions {
                    url: url.clone(),
                    pool_size: 2,
                    connect_timeout: Duration::from_secs(10),
                })
                .await
                .expect("connect");
            interrupt(store, &kek).await;
        }
        None => {
            let store = idgraph_sqlite::SqliteStore::open(&idgraph_sqlite::SqliteOptions {
                data_dir: config.data_dir.clone(),
                durability: idgraph_sqlite::Durability::Full,
            })
            .expect("open");
            interrupt(store, &kek).await;
        }
    }

    match &database_url {
        None => {
            let output = Command::new(BIN)
                .args(["data-key", "rotate", "--log-level", "warn", "--data-dir"])
                .arg(data_dir.path())
                .env_remove("IDGRAPH_DATA_KEY")
                .output()
                .expect("run idgraph data-key rotate");
            let stdout = String::from_utf8_lossy(&output.stdout);
            assert!(
                output.status.success(),
                "{stdout}{}",
                String::from_utf8_lossy(&output.stderr)
            );
            assert!(stdout.contains("data-encryption key 2"), "{stdout}");
            let app = TestApp::start_configured(None, data_dir, |_| {}).await;
            assert_many_readable(&app, 300).await;
            wait_rotated(&app, 2).await;
            app.stop().await;
        }
        Some(_) => {
            let app = TestApp::start_configured(database_url, data_dir, |_| {}).await;
            // Half the rows under key 1, half under key 2: all of them read.
            assert_many_readable(&app, 300).await;
            wait_rotated(&app, 2).await;
            assert_many_readable(&app, 300).await;
            app.stop().await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_rotation_resumes_on_sqlite() {
    an_interrupted_rotation_resumes(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_rotation_resumes_on_postgres() {
    let Some(database) = idgraph_testpg::test_database().await else {
        return;
    };
    an_interrupted_rotation_resumes(Some(database.url.clone())).await;
}
