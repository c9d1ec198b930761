//! `idgraph-bench import` at a tiny size against this build's `idgraph`, so the benchmark
//! command keeps working: the file generator, the COPY baseline (when PostgreSQL is available),
//! both imports, the memory comparison and the quality figures.

#[test]
fn the_import_benchmark_runs_end_to_end() {
    let dir = tempfile::tempdir().expect("temp dir");
    let json = dir.path().join("import.json");
    idgraph_bench::run_command_line([
        "idgraph-bench",
        "import",
        "--idgraph",
        env!("CARGO_BIN_EXE_idgraph"),
        "--rows",
        "400",
        "--columns",
        "24",
        "--memory-rows",
        "1200",
        "--work-dir",
        dir.path().to_str().expect("utf-8 path"),
        "--json",
        json.to_str().expect("utf-8 path"),
    ])
    .expect("the benchmark runs");
    let results: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("the JSON results"))
            .expect("JSON");
    assert_eq!(results["rows"], 400);
    let embedded = &results["embedded"];
    assert!(embedded["timed"]["seconds"].as_f64().expect("seconds") > 0.0);
    assert!(embedded["peak_rss_bytes"].as_u64().expect("rss") > 1_000_000);
    assert!(
        embedded["quality"]["precision"]
            .as_f64()
            .expect("precision")
            >= 0.999
    );
    assert!(results["larger"]["peak_rss_bytes"].as_u64().expect("rss") > 1_000_000);
    if results["postgres"].is_object() {
        assert!(results["copy"]["seconds"].as_f64().expect("COPY") > 0.0);
        assert_eq!(
            results["on_postgres"]["quality"], embedded["quality"],
            "both stores find the same persons"
        );
    }
    // Only the temporary directory's own files remain: the run cleaned up after itself.
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .expect("list")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(left, [std::ffi::OsString::from("import.json")], "{left:?}");
}
