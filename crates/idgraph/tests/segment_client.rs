//! The official Segment Python client, unchanged, against a live idgraph: every call kind,
//! gzip and batching on. The client comes from PyPI (`segment-analytics-python`); `.ci/run`
//! installs it and sets `IDGRAPH_SEGMENT_PYTHON`. Without it the test says SKIPPED loudly, and
//! `IDGRAPH_REQUIRE_SEGMENT_CLIENT=1` (set by CI) turns that into a failure.

mod common;

use std::io::Write;
use std::process::Command;

use common::{MASTER_KEY, TestApp};
use reqwest::StatusCode;
use serde_json::Value;

fn python_with_client() -> Option<String> {
    let candidates = std::env::var("IDGRAPH_SEGMENT_PYTHON")
        .ok()
        .into_iter()
        .chain(["python3".to_owned()]);
    for python in candidates {
        let ok = Command::new(&python)
            .args(["-c", "import segment.analytics"])
            .output()
            .is_ok_and(|o| o.status.success());
        if ok {
            return Some(python);
        }
    }
    let required =
        std::env::var("IDGRAPH_REQUIRE_SEGMENT_CLIENT").is_ok_and(|v| v == "1" || v == "true");
    assert!(
        !required,
        "IDGRAPH_REQUIRE_SEGMENT_CLIENT is set but no python with segment-analytics-python was found"
    );
    let _ = writeln!(
        std::io::stderr(),
        "\n========================================================================\n\
         SKIPPED: Segment client test did not run: no python with segment-analytics-python\n\
         (pip install segment-analytics-python, or set IDGRAPH_SEGMENT_PYTHON)\n\
         ========================================================================"
    );
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_python_client_works_unchanged() {
    let Some(python) = python_with_client() else {
        return;
    };
    let app = TestApp::start(None).await;
    let write_key = app.write_key().await;
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/segment_client/send.py");
    let host = format!("http://{}", app.address);
    let output = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .arg(script)
            .arg(write_key)
            .arg(host)
            .output()
    })
    .await
    .expect("join")
    .expect("python runs");
    assert!(
        output.status.success(),
        "client failed: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );

    let (status, person) = app
        .get(
            "/api/v1/persons/lookup?kind=email&value=py.user%40example.com",
            MASTER_KEY,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{person}");
    let identifiers: Vec<(String, String)> = person["identifiers"]
        .as_array()
        .expect("identifiers")
        .iter()
        .map(|i| {
            (
                i["kind"].as_str().expect("kind").to_owned(),
                i["value"].as_str().expect("value").to_owned(),
            )
        })
        .collect();
    for expected in [
        ("external_id", "py-user-1"),
        ("email", "py.user@example.com"),
        ("phone", "+14155550199"),
        ("anonymous_id", "py-anon-1"),
    ] {
        assert!(
            identifiers.contains(&(expected.0.to_owned(), expected.1.to_owned())),
            "{expected:?} missing from {identifiers:?}"
        );
    }
    assert_eq!(person["traits"]["firstName"]["value"], "Py");
    // The anonymous browsing before sign-up is on the same timeline, with every call kind.
    let id = person["id"].as_str().expect("id");
    let (_, timeline) = app
        .get(
            &format!("/api/v1/persons/{id}/timeline?limit=100"),
            MASTER_KEY,
        )
        .await;
    let mut kinds: Vec<&str> = timeline["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e["kind"].as_str())
        .collect();
    kinds.sort_unstable();
    kinds.dedup();
    for kind in ["alias", "group", "identify", "page", "track"] {
        assert!(kinds.contains(&kind), "{kind} missing from {kinds:?}");
    }
    let names: Vec<&Value> = timeline["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| &e["name"])
        .collect();
    assert!(
        names.iter().any(|n| *n == "Viewed Pricing") && names.iter().any(|n| *n == "Signed Up"),
        "{names:?}"
    );
    app.stop().await;
}
