//! The shared test harness: a real server on a loopback port, on SQLite or PostgreSQL.

#![allow(
    dead_code,
    reason = "each test file uses a different part of the harness"
)]

use std::net::SocketAddr;

use idgraph::config::{Config, Secret};
use reqwest::StatusCode;
use serde_json::{Value, json};

pub(crate) const MASTER_KEY: &str = "test-master-key-0123456789abcdef";
/// The data key of test servers on PostgreSQL (the embedded store generates its own), so that
/// every test on PostgreSQL runs with PII sealed, as a production server with a key does.
pub(crate) const PG_DATA_KEY: &str = "ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=";

pub(crate) struct TestApp {
    pub(crate) address: SocketAddr,
    pub(crate) client: reqwest::Client,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    _data_dir: tempfile::TempDir,
}

impl TestApp {
    pub(crate) async fn start(database_url: Option<String>) -> TestApp {
        let data_dir = tempfile::tempdir().expect("temp dir");
        Self::start_configured(database_url, data_dir, |_| {}).await
    }

    /// A server on a fresh temporary data dir, with the test's changes to the configuration.
    pub(crate) async fn start_with(
        database_url: Option<String>,
        configure: impl FnOnce(&mut Config),
    ) -> TestApp {
        let data_dir = tempfile::tempdir().expect("temp dir");
        Self::start_configured(database_url, data_dir, configure).await
    }

    /// The configuration a test server runs with, for tests that also run commands on its store.
    pub(crate) fn config(data_dir: &std::path::Path, database_url: Option<String>) -> Config {
        Config {
            data_key: database_url
                .is_some()
                .then(|| Secret::from(PG_DATA_KEY.to_owned())),
            data_dir: data_dir.to_owned(),
            database_url: database_url.map(Secret::from),
            master_key: Some(Secret::from(MASTER_KEY.to_owned())),
            pg_pool_size: 4,
            ..Config::default()
        }
    }

    /// A server on `data_dir` (kept by the app, and handed back by `stop_keeping_data`), with
    /// the test's changes to the configuration.
    pub(crate) async fn start_configured(
        database_url: Option<String>,
        data_dir: tempfile::TempDir,
        tweak: impl FnOnce(&mut Config),
    ) -> TestApp {
        let mut config = Self::config(data_dir.path(), database_url);
        tweak(&mut config);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("address");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let running = idgraph::launch(&config, listener, async move {
            let _ = stopped.await;
        })
        .await
        .expect("launch");
        assert_eq!(
            running.generated_master_key, None,
            "a configured master key is not generated"
        );
        let server = tokio::spawn(running.wait());
        TestApp {
            address,
            client: {
                idgraph_app::webhooks::install_tls_provider();
                reqwest::Client::new()
            },
            stop: Some(stop),
            server: Some(server),
            _data_dir: data_dir,
        }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    pub(crate) async fn call(
        &self,
        method: &str,
        path: &str,
        key: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut request = self.client.request(method, self.url(path)).bearer_auth(key);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("request");
        let status = response.status();
        let text = response.text().await.expect("body");
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    pub(crate) async fn get(&self, path: &str, key: &str) -> (StatusCode, Value) {
        self.call("GET", path, key, None).await
    }

    pub(crate) async fn post(&self, path: &str, key: &str, body: Value) -> (StatusCode, Value) {
        self.call("POST", path, key, Some(body)).await
    }

    /// Creates a key with the master key (acting for `tenant`) and returns (id, token).
    pub(crate) async fn key_for(&self, tenant: &str, scopes: &[&str]) -> (String, String) {
        let response = self
            .client
            .post(self.url("/api/v1/keys"))
            .bearer_auth(MASTER_KEY)
            .header("X-Idgraph-On-Behalf-Of", tenant)
            .json(&json!({"name": "test key", "scopes": scopes}))
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), StatusCode::CREATED);
        let body: Value = response.json().await.expect("json");
        (
            body["id"].as_str().expect("id").to_owned(),
            body["key"].as_str().expect("key").to_owned(),
        )
    }

    /// A write key of the default workspace, as a Segment client would be configured with.
    pub(crate) async fn write_key(&self) -> String {
        self.key_for("default", &["events:write"]).await.1
    }

    /// Sends a raw body to an ingestion endpoint with HTTP Basic auth, as Segment clients do.
    pub(crate) async fn track_raw(
        &self,
        path: &str,
        write_key: &str,
        body: Vec<u8>,
        gzip: bool,
    ) -> (StatusCode, Value) {
        let mut request = self
            .client
            .post(self.url(path))
            .basic_auth(write_key, Some(""))
            .header("content-type", "application/json");
        if gzip {
            request = request.header("content-encoding", "gzip");
        }
        let response = request.body(body).send().await.expect("request");
        let status = response.status();
        let text = response.text().await.expect("body");
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    pub(crate) async fn track(
        &self,
        path: &str,
        write_key: &str,
        body: Value,
    ) -> (StatusCode, Value) {
        self.track_raw(path, write_key, body.to_string().into_bytes(), false)
            .await
    }

    pub(crate) async fn stop(self) {
        self.stop_keeping_data().await;
    }

    /// Stops the server and hands back its data dir, to start another server on it.
    pub(crate) async fn stop_keeping_data(mut self) -> tempfile::TempDir {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            server.await.expect("join").expect("server stopped cleanly");
        }
        self._data_dir
    }
}

/// (method, path pattern) of every route of `idgraph-http`'s table, read from its source so a
/// new endpoint is covered by the tests that walk the table without anyone adding it there.
pub(crate) fn route_table() -> Vec<(String, String)> {
    let source = include_str!("../../../idgraph-http/src/routes/mod.rs");
    let mut routes = Vec::new();
    for chunk in source.split(".route(").skip(1) {
        let Some(path) = chunk.split('"').nth(1) else {
            continue;
        };
        // The route's handlers end where the next route begins.
        for method in ["get", "post", "put", "delete", "patch"] {
            let called = chunk.contains(&format!(" {method}("))
                || chunk.contains(&format!("({method}("))
                || chunk.contains(&format!(".{method}("));
            if called {
                routes.push((method.to_uppercase(), path.to_owned()));
            }
        }
    }
    routes
}

pub(crate) fn error_code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("<no error code>")
}

#[macro_export]
macro_rules! on_both_backends {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let app = $crate::common::TestApp::start(None).await;
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
                    let app = $crate::common::TestApp::start(Some(database.url)).await;
                    super::$case(&app).await;
                    app.stop().await;
                }
            )*
        }
    };
}

/// `GET /api/v1/persons/lookup` with the master key.
pub(crate) async fn lookup(app: &TestApp, kind: &str, value: &str) -> (StatusCode, Value) {
    let path = format!(
        "/api/v1/persons/lookup?kind={kind}&value={}",
        urlencode(value)
    );
    app.get(&path, MASTER_KEY).await
}

/// Percent-encodes a query value (everything but RFC 3986 unreserved characters).
pub(crate) fn urlencode(raw: &str) -> String {
    raw.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
