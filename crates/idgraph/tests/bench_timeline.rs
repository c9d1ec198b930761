//! `idgraph-bench timeline --store DIR` at a tiny size against this build's `idgraph`: the first
//! run loads and keeps the store, the second reads it without loading, and a run that asks for
//! another stream is refused rather than measured on the wrong store.

use std::path::Path;

fn timeline(store: &Path, json: &Path, events: &str) -> anyhow::Result<()> {
    idgraph_bench::run_command_line([
        "idgraph-bench",
        "timeline",
        "--idgraph",
        env!("CARGO_BIN_EXE_idgraph"),
        "--events",
        events,
        "--big-persons",
        "1",
        "--reads",
        "20",
        "--readers",
        "2",
        "--store",
        store.to_str().expect("utf-8 path"),
        "--json",
        json.to_str().expect("utf-8 path"),
    ])
}

fn results(json: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(json).expect("the JSON results")).expect("JSON")
}

#[test]
fn a_kept_store_is_read_again_without_loading() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = dir.path().join("store");
    let (first, second) = (
        dir.path().join("first.json"),
        dir.path().join("second.json"),
    );

    timeline(&store, &first, "12000").expect("the first run loads and reads");
    let first = results(&first);
    assert_eq!(first["load"]["events_acknowledged"], 12_000);
    assert!(store.join("timeline-load.json").is_file());
    assert!(store.join("data").is_dir(), "the store stays after the run");

    timeline(&store, &second, "12000").expect("the second run reads the kept store");
    let second = results(&second);
    assert!(
        second["load"].is_null(),
        "nothing loaded: {}",
        second["load"]
    );
    assert_eq!(second["loaded_by"], first["idgraph_version"]);
    assert_eq!(
        second["paging"]["events"], 10_000,
        "the whole timeline is there"
    );
    assert_eq!(second["first_page_sequential"]["idgraph"]["failed"], 0);

    let refused = timeline(&store, &dir.path().join("third.json"), "13000")
        .expect_err("another stream needs another store");
    assert!(
        format!("{refused:#}").contains("was loaded with --events 12000"),
        "{refused:#}"
    );
}

#[test]
fn a_store_whose_load_never_finished_is_not_read() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = dir.path().join("store");
    std::fs::create_dir_all(store.join("data")).expect("a data dir");
    let refused = timeline(&store, &dir.path().join("out.json"), "12000")
        .expect_err("a half-loaded store is refused");
    assert!(
        format!("{refused:#}").contains("load never finished"),
        "{refused:#}"
    );
}
