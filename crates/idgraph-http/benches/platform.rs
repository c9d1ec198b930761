//! What per-key rate limits and the audit log cost: the same requests through the full router
//! and through one without the `platform` layer (and with no bucket to check), over one SQLite
//! store, in alternating rounds of one run so that machine noise hits both alike.
//!
//! Two workloads: `POST /v1/batch` with 100 Segment messages (rate limited, not audited: ingestion
//! is counted by metrics) and `GET /api/v1/persons/lookup` (rate limited and audited), each with
//! `IDGRAPH_BENCH_CONCURRENCY` requests in flight (default 8). Requests go through the router
//! in-process, without sockets, so the layer's share of each request is as large as it can be.
//!
//! `cargo bench -p idgraph-http --bench platform` (rounds: `IDGRAPH_BENCH_ROUNDS`, default 3;
//! batches per round: `IDGRAPH_BENCH_BATCHES`, default 300; lookups per round:
//! `IDGRAPH_BENCH_LOOKUPS`, default 5000).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use base64::Engine;
use idgraph_http::{AppState, RateLimitDefaults, router, router_without_platform};
use idgraph_sqlite::{Durability, SqliteOptions, SqliteStore};
use idgraph_store::Store;
use serde_json::{Value, json};
use tower::ServiceExt;

const MASTER_KEY: &str = "bench-master-key-0123456789abcdef";
/// Users the messages are about: enough that most batches attach to existing persons.
const USERS: u64 = 5_000;
const MESSAGES_PER_BATCH: u64 = 100;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn call(app: &Router, request: Request<Body>) -> (StatusCode, Value) {
    let response = app.clone().oneshot(request).await.expect("infallible");
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .expect("body");
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

async fn create_key(app: &Router, scopes: &[&str]) -> String {
    let request = Request::post("/api/v1/keys")
        .header(header::AUTHORIZATION, format!("Bearer {MASTER_KEY}"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(
            json!({"name": "bench", "scopes": scopes}).to_string(),
        ))
        .expect("request");
    let (status, body) = call(app, request).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body["key"].as_str().expect("key").to_owned()
}

/// One batch of identify and track calls about 20 users; message ids never repeat.
fn batch_body(next_message: &AtomicU64) -> String {
    let first = next_message.fetch_add(MESSAGES_PER_BATCH, Ordering::Relaxed);
    let batch: Vec<Value> = (first..first + MESSAGES_PER_BATCH)
        .map(|n| {
            let user = format!("bench-u-{}", (n / 5) % USERS);
            if n % 5 == 0 {
                json!({"type": "identify", "userId": user, "messageId": format!("m-{n}"),
                       "traits": {"email": format!("{user}@example.com"), "plan": "pro"}})
            } else {
                json!({"type": "track", "userId": user, "messageId": format!("m-{n}"),
                       "event": "Viewed Page", "properties": {"path": "/pricing"}})
            }
        })
        .collect();
    json!({"batch": batch}).to_string()
}

#[derive(Clone, Copy)]
enum Workload {
    Batch,
    Lookup,
}

struct Keys {
    write_basic: String,
    read_bearer: String,
}

/// Sends `requests` requests with `concurrency` in flight; the wall time they took.
async fn drive(
    app: &Router,
    keys: &Arc<Keys>,
    workload: Workload,
    requests: u64,
    concurrency: u64,
    next_message: &Arc<AtomicU64>,
) -> Duration {
    let issued = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (app, keys, issued, next_message) = (
            app.clone(),
            Arc::clone(keys),
            Arc::clone(&issued),
            Arc::clone(next_message),
        );
        tasks.spawn(async move {
            while issued.fetch_add(1, Ordering::Relaxed) < requests {
                let request = match workload {
                    Workload::Batch => Request::post("/v1/batch")
                        .header(header::AUTHORIZATION, &keys.write_basic)
                        .header(header::CONTENT_TYPE, "application/json")
                        .body(Body::from(batch_body(&next_message))),
                    Workload::Lookup => {
                        let n = next_message.fetch_add(1, Ordering::Relaxed) % USERS;
                        Request::get(format!(
                            "/api/v1/persons/lookup?kind=external_id&value=bench-u-{n}"
                        ))
                        .header(header::AUTHORIZATION, &keys.read_bearer)
                        .body(Body::empty())
                    }
                }
                .expect("request");
                let (status, body) = call(&app, request).await;
                assert!(
                    status == StatusCode::OK || status == StatusCode::NOT_FOUND,
                    "{status}: {body}"
                );
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("a request task panicked");
    }
    started.elapsed()
}

fn main() {
    let rounds = env_u64("IDGRAPH_BENCH_ROUNDS", 3);
    let batches = env_u64("IDGRAPH_BENCH_BATCHES", 300);
    let lookups = env_u64("IDGRAPH_BENCH_LOOKUPS", 5_000);
    let concurrency = env_u64("IDGRAPH_BENCH_CONCURRENCY", 8).max(1);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = SqliteStore::open(&SqliteOptions {
            data_dir: dir.path().to_owned(),
            // Commits that wait for fsync would hide the layer's cost behind the disk.
            durability: Durability::Normal,
        })
        .expect("open store");
        idgraph_app::bootstrap::bootstrap(&store, Some(MASTER_KEY))
            .await
            .expect("bootstrap");
        // Limited: every key gets a bucket far above what is sent, so every request takes a
        // token and nothing is refused. Bare: no bucket, no platform layer.
        let limited = router(AppState::with_rate_limits(
            store.clone(),
            RateLimitDefaults {
                ingestion_per_sec: 1_000_000,
                management_per_sec: 1_000_000,
            },
        ));
        let bare = router_without_platform(AppState::with_rate_limits(
            store.clone(),
            RateLimitDefaults {
                ingestion_per_sec: 0,
                management_per_sec: 0,
            },
        ));
        let write = create_key(&limited, &["events:write"]).await;
        let read = create_key(&limited, &["persons:read"]).await;
        let keys = Arc::new(Keys {
            write_basic: format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{write}:"))
            ),
            read_bearer: format!("Bearer {read}"),
        });
        let next_message = Arc::new(AtomicU64::new(0));
        // Warm up: the persons exist before anything is timed, and both paths are hot.
        for app in [&limited, &bare] {
            drive(app, &keys, Workload::Batch, 60, concurrency, &next_message).await;
            drive(app, &keys, Workload::Lookup, 500, concurrency, &next_message).await;
        }
        for (workload, name, requests, unit_per_request, unit) in [
            (Workload::Batch, "POST /v1/batch", batches, MESSAGES_PER_BATCH, "events/s"),
            (Workload::Lookup, "GET /api/v1/persons/lookup", lookups, 1, "requests/s"),
        ] {
            let (mut with, mut without) = (Duration::ZERO, Duration::ZERO);
            for round in 0..rounds {
                // Alternate which goes first, so a trend in the machine's speed cancels out.
                let order = if round % 2 == 0 { [true, false] } else { [false, true] };
                for platform in order {
                    let app = if platform { &limited } else { &bare };
                    let took = drive(app, &keys, workload, requests, concurrency, &next_message).await;
                    if platform {
                        with += took;
                    } else {
                        without += took;
                    }
                }
            }
            let units = (requests * rounds * unit_per_request) as f64;
            let (rate_with, rate_without) = (units / with.as_secs_f64(), units / without.as_secs_f64());
            let cost = (1.0 - rate_with / rate_without) * 100.0;
            println!(
                "{name:<28} with rate limits + audit {rate_with:>10.0} {unit}   without {rate_without:>10.0} {unit}   cost {cost:>5.1}%"
            );
        }
        store.close().await;
    });
}
