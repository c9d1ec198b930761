//! Webhooks end to end: a real server sends to a receiver on loopback, whose requests are
//! verified by the `standardwebhooks` package from PyPI (an implementation independent of
//! ours). `.ci/run` installs it and sets `IDGRAPH_WEBHOOK_PYTHON`; without it the signature
//! check says SKIPPED loudly, and `IDGRAPH_REQUIRE_WEBHOOK_VERIFIER=1` (set by CI) makes that a
//! failure.

mod common;

use std::collections::{BTreeMap, VecDeque};
use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode as AxumStatus};
use common::{MASTER_KEY, TestApp, error_code};
use idgraph::config::{Config, Secret};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// A fixed key, so a restarted server (or a PostgreSQL one) opens what the first one sealed.
const DATA_KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

fn fast(config: &mut Config) {
    config.webhook_poll_ms = 50;
    config.webhook_retry_base_ms = 200;
    config.webhook_timeout_seconds = 5;
    config.data_key = Some(Secret::from(DATA_KEY.to_owned()));
}

#[derive(Debug, Clone)]
struct Received {
    headers: BTreeMap<String, String>,
    body: String,
}

/// A webhook endpoint on loopback that records what it gets and answers as scripted (200 once
/// the script is used up).
#[derive(Debug, Clone, Default)]
struct Receiver {
    received: Arc<Mutex<Vec<Received>>>,
    answers: Arc<Mutex<VecDeque<u16>>>,
    url: String,
}

impl Receiver {
    async fn start(answers: &[u16]) -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let mut receiver = Receiver {
            answers: Arc::new(Mutex::new(answers.iter().copied().collect())),
            ..Receiver::default()
        };
        receiver.url = format!("http://{}/hook", listener.local_addr().expect("address"));
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(receive))
            .with_state(receiver.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        receiver
    }

    fn received(&self) -> Vec<Received> {
        self.received.lock().expect("lock").clone()
    }

    fn answer_from_now_on(&self, status: u16) {
        let mut answers = self.answers.lock().expect("lock");
        answers.clear();
        answers.push_back(status);
        answers.push_back(status);
        answers.push_back(status);
    }
}

async fn receive(State(receiver): State<Receiver>, headers: HeaderMap, body: String) -> AxumStatus {
    let headers = headers
        .iter()
        .map(|(name, value)| {
            (
                name.as_str().to_owned(),
                value.to_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    receiver
        .received
        .lock()
        .expect("lock")
        .push(Received { headers, body });
    let status = receiver
        .answers
        .lock()
        .expect("lock")
        .pop_front()
        .unwrap_or(200);
    AxumStatus::from_u16(status).expect("status")
}

/// Polls until `check` holds, or fails the test after 20 s.
async fn eventually<T>(what: &str, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(found) = check().await {
            return found;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn subscribe(app: &TestApp, url: &str, events: &[&str]) -> (String, String) {
    let (status, body) = app
        .post(
            "/api/v1/webhooks",
            MASTER_KEY,
            json!({"url": url, "events": events}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    (
        body["id"].as_str().expect("id").to_owned(),
        body["secret"].as_str().expect("secret").to_owned(),
    )
}

async fn deliveries(app: &TestApp, id: &str) -> Vec<Value> {
    let (status, body) = app
        .get(&format!("/api/v1/webhooks/{id}/deliveries"), MASTER_KEY)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["deliveries"].as_array().expect("deliveries").clone()
}

fn event_types(received: &[Received]) -> Vec<String> {
    received
        .iter()
        .map(|r| {
            let body: Value = serde_json::from_str(&r.body).expect("json body");
            body["type"].as_str().expect("type").to_owned()
        })
        .collect()
}

/// Python with `standardwebhooks`, or `None` after a loud SKIPPED (a failure when required).
fn python_with_verifier() -> Option<String> {
    let candidates = std::env::var("IDGRAPH_WEBHOOK_PYTHON")
        .ok()
        .into_iter()
        .chain(["python3".to_owned()]);
    for python in candidates {
        let ok = Command::new(&python)
            .args(["-c", "import standardwebhooks"])
            .output()
            .is_ok_and(|o| o.status.success());
        if ok {
            return Some(python);
        }
    }
    let required =
        std::env::var("IDGRAPH_REQUIRE_WEBHOOK_VERIFIER").is_ok_and(|v| v == "1" || v == "true");
    assert!(
        !required,
        "IDGRAPH_REQUIRE_WEBHOOK_VERIFIER is set but no python with standardwebhooks was found"
    );
    let _ = writeln!(
        std::io::stderr(),
        "\n========================================================================\n\
         SKIPPED: webhook signatures were not checked by standardwebhooks\n\
         (pip install standardwebhooks, or set IDGRAPH_WEBHOOK_PYTHON)\n\
         ========================================================================"
    );
    None
}

fn verify_with_python(secret: &str, received: &[Received]) {
    let Some(python) = python_with_verifier() else {
        return;
    };
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/webhooks/verify.py");
    let request = json!({
        "secret": secret,
        "messages": received.iter().map(|r| json!({"headers": r.headers, "body": r.body})).collect::<Vec<_>>(),
    });
    let mut child = Command::new(python)
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python runs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(request.to_string().as_bytes())
        .expect("write");
    let output = child.wait_with_output().expect("python finishes");
    assert!(
        output.status.success(),
        "standardwebhooks refused a delivery: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let said = String::from_utf8_lossy(&output.stdout);
    assert!(
        said.contains(&format!("verified {}", received.len())),
        "{said}"
    );
}

async fn signed_deliveries_of_a_create_and_a_merge_verify(app: &TestApp) {
    let receiver = Receiver::start(&[]).await;
    let (id, secret) = subscribe(app, &receiver.url, &["person.created", "person.merged"]).await;
    assert!(secret.starts_with("whsec_"), "{secret}");
    // The secret is shown once: reads never carry it.
    let (_, shown) = app.get(&format!("/api/v1/webhooks/{id}"), MASTER_KEY).await;
    assert!(shown.get("secret").is_none() && !shown.to_string().contains(&secret[6..]));
    assert_eq!(shown["enabled"], true);

    let write_key = app.write_key().await;
    for body in [
        json!({"userId": "wh-user-1", "traits": {"name": "Ann"}}),
        json!({"anonymousId": "wh-anon-1", "traits": {"email": "wh1@example.com"}}),
        json!({"userId": "wh-user-1", "traits": {"email": "wh1@example.com"}}),
    ] {
        let (status, answer) = app.track("/v1/identify", &write_key, body).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
    }
    let received = eventually("three deliveries", async || {
        let received = receiver.received();
        (received.len() >= 3).then_some(received)
    })
    .await;
    assert_eq!(
        event_types(&received),
        ["person.created", "person.created", "person.merged"]
    );
    for message in &received {
        for header in ["webhook-id", "webhook-timestamp", "webhook-signature"] {
            assert!(message.headers.contains_key(header), "{header} missing");
        }
        assert!(message.headers["webhook-signature"].starts_with("v1,"));
    }
    let merged: Value = serde_json::from_str(&received[2].body).expect("json");
    let created: Value = serde_json::from_str(&received[0].body).expect("json");
    assert_eq!(merged["data"]["survivor"], created["data"]["person_id"]);
    verify_with_python(&secret, &received);

    let log = eventually("the log to show three delivered", async || {
        let log = deliveries(app, &id).await;
        (log.len() == 3 && log.iter().all(|d| d["status"] == "delivered")).then_some(log)
    })
    .await;
    let attempt = &log[0]["attempts"][0];
    assert_eq!(attempt["response_status"], 200);
    assert!(attempt["latency_ms"].is_u64(), "{attempt}");
    // Newest first.
    assert_eq!(log[0]["event_type"], "person.merged");
    assert_eq!(
        log[0]["id"].as_str(),
        Some(received[2].headers["webhook-id"].as_str())
    );
}

async fn bad_subscriptions_are_refused_with_a_reason(app: &TestApp) {
    for (body, code) in [
        (
            json!({"url": "not a url", "events": ["person.created"]}),
            "invalid_url",
        ),
        (
            json!({"url": "ftp://example.com/x", "events": ["person.created"]}),
            "invalid_url",
        ),
        (
            json!({"url": "/relative", "events": ["person.created"]}),
            "invalid_url",
        ),
        (
            json!({"url": "http://127.0.0.1:9/x", "events": ["person.updated"]}),
            "unknown_event_type",
        ),
        (
            json!({"url": "http://127.0.0.1:9/x", "events": []}),
            "invalid_input",
        ),
    ] {
        let (status, answer) = app.post("/api/v1/webhooks", MASTER_KEY, body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body} → {answer}");
        assert_eq!(error_code(&answer), code, "{answer}");
        assert!(
            answer["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
    }
    let (_, reader) = app.key_for("default", &["persons:read"]).await;
    let (status, _) = app
        .post(
            "/api/v1/webhooks",
            &reader,
            json!({"url": "http://127.0.0.1:9/x", "events": ["person.created"]}),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = app.get("/api/v1/webhooks/nope", MASTER_KEY).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = app
        .get("/api/v1/webhooks/nope/deliveries", MASTER_KEY)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let (id, _) = subscribe(app, "http://127.0.0.1:9/x", &["consent.changed"]).await;
    let (status, list) = app.get("/api/v1/webhooks", MASTER_KEY).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        list["webhooks"]
            .as_array()
            .expect("list")
            .iter()
            .any(|w| w["id"] == id.as_str())
    );
    let (status, _) = app
        .call(
            "DELETE",
            &format!("/api/v1/webhooks/{id}"),
            MASTER_KEY,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = app.get(&format!("/api/v1/webhooks/{id}"), MASTER_KEY).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

async fn a_failed_delivery_is_retried_with_the_same_id(app: &TestApp) {
    let receiver = Receiver::start(&[500]).await;
    let (id, _) = subscribe(app, &receiver.url, &["consent.changed"]).await;
    let (status, answer) = app
        .post(
            "/api/v1/consent",
            MASTER_KEY,
            json!({"identifier": {"kind": "email", "value": "retry@example.com"},
                   "purpose": "email:marketing", "action": "grant", "source": "test"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    let log = eventually("a retried delivery", async || {
        let log = deliveries(app, &id).await;
        (log.len() == 1 && log[0]["status"] == "delivered").then_some(log)
    })
    .await;
    let attempts = log[0]["attempts"].as_array().expect("attempts");
    assert_eq!(attempts.len(), 2, "{log:?}");
    assert_eq!(attempts[0]["response_status"], 500);
    assert!(
        attempts[0]["error"]
            .as_str()
            .is_some_and(|e| e.contains("500"))
    );
    assert_eq!(attempts[1]["response_status"], 200);
    let received = receiver.received();
    assert_eq!(received.len(), 2);
    assert_eq!(
        received[0].headers["webhook-id"],
        received[1].headers["webhook-id"]
    );
    assert_eq!(received[0].body, received[1].body);
}

async fn a_gone_endpoint_is_disabled_until_enabled_again(app: &TestApp) {
    let receiver = Receiver::start(&[410]).await;
    let (id, _) = subscribe(app, &receiver.url, &["suppression.added"]).await;
    let (status, answer) = app
        .post(
            "/api/v1/suppressions",
            MASTER_KEY,
            json!({"kind": "phone", "value": "+14155550123", "reason": "dnc", "scope": "tenant"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    let shown = eventually("the endpoint to be disabled", async || {
        let (_, shown) = app.get(&format!("/api/v1/webhooks/{id}"), MASTER_KEY).await;
        (shown["enabled"] == false).then_some(shown)
    })
    .await;
    assert!(
        shown["disabled_reason"]
            .as_str()
            .is_some_and(|r| r.contains("410"))
    );
    // Nothing more is sent while it is disabled.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(receiver.received().len(), 1);
    assert_eq!(deliveries(app, &id).await[0]["status"], "pending");

    receiver.answer_from_now_on(200);
    let (status, shown) = app
        .post(
            &format!("/api/v1/webhooks/{id}/enable"),
            MASTER_KEY,
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{shown}");
    assert_eq!(shown["enabled"], true);
    eventually("the waiting delivery to go out", async || {
        let log = deliveries(app, &id).await;
        (log[0]["status"] == "delivered").then_some(())
    })
    .await;
    assert_eq!(receiver.received().len(), 2);
}

async fn an_inbound_stop_announces_the_message_and_the_opt_out(app: &TestApp) {
    let receiver = Receiver::start(&[]).await;
    subscribe(
        app,
        &receiver.url,
        &["message.inbound", "suppression.added", "consent.changed"],
    )
    .await;
    let write_key = app.write_key().await;
    let (status, answer) = app
        .track(
            "/v1/messages/inbound",
            &write_key,
            json!({"from": "+14155550199", "to": "+18005550100", "body": "STOP"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let received = eventually("three deliveries", async || {
        let received = receiver.received();
        (received.len() >= 3).then_some(received)
    })
    .await;
    let mut types = event_types(&received);
    types.sort();
    assert_eq!(
        types,
        ["consent.changed", "message.inbound", "suppression.added"]
    );
}

async fn a_deletion_is_announced_without_the_persons_data(app: &TestApp) {
    let receiver = Receiver::start(&[]).await;
    let (_, secret) = subscribe(app, &receiver.url, &["person.deleted"]).await;
    let write_key = app.write_key().await;
    let (status, answer) = app
        .track(
            "/v1/identify",
            &write_key,
            json!({"userId": "wh-gone", "traits": {"email": "gone@example.com"}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let (_, person) = app
        .get(
            "/api/v1/persons/lookup?kind=external_id&value=wh-gone",
            MASTER_KEY,
        )
        .await;
    let person_id = person["id"].as_str().expect("id").to_owned();
    let (status, answer) = app
        .call(
            "DELETE",
            &format!("/api/v1/persons/{person_id}"),
            MASTER_KEY,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    let received = eventually("the deletion delivery", async || {
        let received = receiver.received();
        (!received.is_empty()).then_some(received)
    })
    .await;
    assert_eq!(event_types(&received), ["person.deleted"]);
    let body: Value = serde_json::from_str(&received[0].body).expect("json");
    assert_eq!(body["data"]["person_id"], person_id.as_str());
    assert!(
        !received[0].body.contains("gone@example.com") && !received[0].body.contains("wh-gone"),
        "a deletion notice carries no PII: {}",
        received[0].body
    );
    verify_with_python(&secret, &received);
}

async fn an_unmerge_is_announced_with_both_persons(app: &TestApp) {
    let receiver = Receiver::start(&[]).await;
    let (_, secret) = subscribe(app, &receiver.url, &["person.merged", "person.unmerged"]).await;
    let write_key = app.write_key().await;
    for body in [
        json!({"userId": "wh-split-1", "traits": {"name": "Ann"}}),
        json!({"anonymousId": "wh-split-anon", "traits": {"email": "split@example.com"}}),
        json!({"userId": "wh-split-1", "traits": {"email": "split@example.com"}}),
    ] {
        let (status, answer) = app.track("/v1/identify", &write_key, body).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
    }
    let merged = eventually("the merge delivery", async || {
        let received = receiver.received();
        (!received.is_empty()).then_some(received)
    })
    .await;
    let merged: Value = serde_json::from_str(&merged[0].body).expect("json");
    let merge_id = merged["data"]["merge_id"].as_str().expect("merge id");
    let survivor = merged["data"]["survivor"].as_str().expect("survivor");
    let (status, answer) = app
        .post(
            &format!("/api/v1/persons/{survivor}/unmerge"),
            MASTER_KEY,
            json!({"merge_id": merge_id, "reason": "two people"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let received = eventually("the unmerge delivery", async || {
        let received = receiver.received();
        (received.len() >= 2).then_some(received)
    })
    .await;
    assert_eq!(event_types(&received), ["person.merged", "person.unmerged"]);
    let unmerged: Value = serde_json::from_str(&received[1].body).expect("json");
    assert_eq!(unmerged["data"]["merge_id"], merge_id);
    assert_eq!(unmerged["data"]["survivor"], survivor);
    assert_eq!(unmerged["data"]["restored"], merged["data"]["absorbed"]);
    assert_eq!(unmerged["data"]["reason"], "two people");
    assert!(unmerged["data"]["rule_id"].is_string(), "{unmerged}");
    verify_with_python(&secret, &received);
}

/// Like `on_both_backends!`, with fast retries and a configured data key.
macro_rules! on_both_backends_fast {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let dir = tempfile::tempdir().expect("temp dir");
                    let app = super::TestApp::start_configured(None, dir, super::fast).await;
                    super::$case(&app).await;
                    app.stop().await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let Some(database) = idgraph_testpg::test_database().await else { return };
                    let dir = tempfile::tempdir().expect("temp dir");
                    let app =
                        super::TestApp::start_configured(Some(database.url), dir, super::fast).await;
                    super::$case(&app).await;
                    app.stop().await;
                }
            )*
        }
    };
}

on_both_backends_fast!(
    signed_deliveries_of_a_create_and_a_merge_verify,
    bad_subscriptions_are_refused_with_a_reason,
    a_failed_delivery_is_retried_with_the_same_id,
    a_gone_endpoint_is_disabled_until_enabled_again,
    an_inbound_stop_announces_the_message_and_the_opt_out,
    a_deletion_is_announced_without_the_persons_data,
    an_unmerge_is_announced_with_both_persons,
);

/// A pending delivery outlives the server: it was committed with the change it announces.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_delivery_is_sent_after_a_restart() {
    let receiver = Receiver::start(&[]).await;
    let data_dir = tempfile::tempdir().expect("temp dir");
    // The first server looks for due deliveries only once a minute: it stops before sending.
    let app = TestApp::start_configured(None, data_dir, |config| {
        fast(config);
        config.webhook_poll_ms = 60_000;
    })
    .await;
    let (id, _) = subscribe(&app, &receiver.url, &["person.created"]).await;
    let write_key = app.write_key().await;
    let (status, _) = app
        .track("/v1/identify", &write_key, json!({"userId": "durable-1"}))
        .await;
    assert_eq!(status, StatusCode::OK);
    let log = deliveries(&app, &id).await;
    assert_eq!(log.len(), 1);
    assert_eq!(log[0]["status"], "pending");
    let data_dir = app.stop_keeping_data().await;
    assert!(receiver.received().is_empty());
    // The generated-key path is not used: the configured key seals, and a restart needs it.
    assert!(!data_dir.path().join("data.key").exists());

    let app = TestApp::start_configured(None, data_dir, fast).await;
    eventually("the pending delivery after the restart", async || {
        (receiver.received().len() == 1).then_some(())
    })
    .await;
    // The attempt is recorded after the receiver answered: wait for it too.
    eventually("the delivery to be recorded as delivered", async || {
        (deliveries(&app, &id).await[0]["status"] == "delivered").then_some(())
    })
    .await;
    app.stop().await;
}

/// A new embedded store gets a key file (0600); a restart without the key it sealed with, or
/// with another one, is refused with a message that says what to do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_data_key_is_generated_once_and_required_afterwards() {
    use std::os::unix::fs::PermissionsExt;
    let data_dir = tempfile::tempdir().expect("temp dir");
    let app = TestApp::start_configured(None, data_dir, |_| {}).await;
    let (status, body) = app
        .post(
            "/api/v1/webhooks",
            MASTER_KEY,
            json!({"url": "http://127.0.0.1:9/x", "events": ["person.created"]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let data_dir = app.stop_keeping_data().await;
    let key_file = data_dir.path().join("data.key");
    let mode = std::fs::metadata(&key_file)
        .expect("key file")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    // With the generated key in place, a restart works.
    let app = TestApp::start_configured(None, data_dir, |_| {}).await;
    let data_dir = app.stop_keeping_data().await;

    let saved = std::fs::read_to_string(&key_file).expect("read");
    std::fs::remove_file(&key_file).expect("remove");
    let config = Config {
        data_dir: data_dir.path().to_owned(),
        master_key: Some(Secret::from(MASTER_KEY.to_owned())),
        ..Config::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let error = idgraph::launch(&config, listener, async {})
        .await
        .expect_err("a missing key is refused");
    assert!(error.to_string().contains("no key was found"), "{error:#}");

    let wrong = Config {
        data_key: Some(Secret::from(DATA_KEY.to_owned())),
        ..config.clone()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let error = idgraph::launch(&wrong, listener, async {})
        .await
        .expect_err("a different key is refused");
    assert!(error.to_string().contains("not the key"), "{error:#}");
    assert_ne!(saved.trim(), DATA_KEY);
}
