//! `idgraph-bench bench` at its smallest against this build's `idgraph`, so the one command
//! that measures every workload keeps working: each workload reports its rows, and the outreach
//! slice's correctness checks (every STOP'd number denied afterwards) hold.

#[test]
fn every_workload_runs_and_reports() {
    let dir = tempfile::tempdir().expect("temp dir");
    let json = dir.path().join("bench.json");
    idgraph_bench::run_command_line([
        "idgraph-bench",
        "bench",
        "--tiny",
        "--idgraph",
        env!("CARGO_BIN_EXE_idgraph"),
        "--json",
        json.to_str().expect("utf-8 path"),
    ])
    .expect("the benchmark runs without failures");
    let results: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("the JSON results"))
            .expect("JSON");
    assert_eq!(results["failures"], serde_json::json!([]));
    let workloads = results["workloads"].as_object().expect("workloads");
    for name in [
        "ingest",
        "resolve",
        "import",
        "compliance",
        "timeline",
        "outreach",
    ] {
        assert!(workloads.contains_key(name), "{name} is missing");
    }
    let rows = results["rows"].as_array().expect("rows");
    for row in rows {
        assert_ne!(row["figure"], "FAILED", "{row}");
    }
    // Every headline row with a baseline has a positive ratio.
    for row in rows.iter().filter(|r| r["baseline_value"].is_number()) {
        assert!(row["ratio"].as_f64().expect("ratio") > 0.0, "{row}");
    }

    let ingest = &workloads["ingest"];
    assert!(
        ingest["idgraph"]["events_per_second"]
            .as_f64()
            .expect("rate")
            > 0.0
    );
    assert_eq!(
        ingest["idgraph"]["events_acknowledged"],
        ingest["idgraph"]["events_sent"]
    );
    // The same stream into a server on PostgreSQL, whenever the machine has it (CI must).
    if let Some(on_postgres) = on_postgres(workloads, "ingest-postgres") {
        assert_eq!(on_postgres["backend"], "postgres");
        assert_eq!(
            on_postgres["idgraph"]["events_acknowledged"],
            ingest["idgraph"]["events_sent"]
        );
        assert!(
            rows.iter()
                .any(|r| r["workload"] == "ingest postgres /v1/batch p99")
        );
    }
    assert!(
        workloads["resolve"]["sqlite"]["signals_per_second"]
            .as_f64()
            .expect("rate")
            > 0.0
    );

    let compliance = &workloads["compliance"];
    assert_eq!(compliance["batch"]["suppressed_but_allowed"], 0);
    assert_eq!(compliance["batch"]["denied_without_cause"], 0);
    assert_eq!(compliance["batch"]["denied"], compliance["suppressed"]);
    if let Some(on_postgres) = on_postgres(workloads, "compliance-postgres") {
        assert_eq!(on_postgres["batch"]["suppressed_but_allowed"], 0);
        assert_eq!(on_postgres["batch"]["denied_without_cause"], 0);
        assert_eq!(on_postgres["batch"]["denied"], on_postgres["suppressed"]);
    }

    let outreach = &workloads["outreach"];
    let stops = outreach["stops_sent"].as_u64().expect("stops");
    assert!(stops > 0, "some numbers replied STOP");
    assert_eq!(outreach["stopped_denied"].as_u64(), Some(stops));
    assert_eq!(
        outreach["others_allowed_again"],
        outreach["others_expected"]
    );
    assert_eq!(outreach["timelines_complete"], outreach["timelines_read"]);
    assert_eq!(outreach["stages"].as_array().expect("stages").len(), 6);
    assert!(
        outreach["server"]["memory_at_end"]["peak_rss_bytes"]
            .as_u64()
            .expect("rss")
            > 1_000_000
    );
}

/// A workload's run on PostgreSQL; required when `IDGRAPH_REQUIRE_POSTGRES` is set (CI), which
/// is when the machine has PostgreSQL for certain.
fn on_postgres<'a>(
    workloads: &'a serde_json::Map<String, serde_json::Value>,
    name: &str,
) -> Option<&'a serde_json::Value> {
    let run = workloads.get(name);
    assert!(
        run.is_some() || std::env::var_os("IDGRAPH_REQUIRE_POSTGRES").is_none(),
        "no {name} run"
    );
    run
}
