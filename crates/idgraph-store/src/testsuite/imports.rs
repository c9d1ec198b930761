//! Conformance cases for import jobs: landing and processing move only by compare-and-set (so a
//! repeated batch, a resumed job or a second runner changes nothing twice), jobs stay in their
//! tenant, and a stored signal's effects can be read back by its message id.

use idgraph_core::compliance::{SuppressionAction, SuppressionReason, SuppressionScope};
use idgraph_core::identity::{Identifier, IdentitySettings};
use idgraph_core::tenancy::{TenantId, WorkspaceName};

use super::{ts, with_tenants};
use crate::{
    ComplianceWrites, EventRow, ImportCounts, ImportJob, ImportMode, ImportStatus, JobMapping,
    LandedRow, PageRequest, RecordedChunk, RowOutcome, SignalRecord, Store, StoreError,
    SuppressionRow,
};

/// A job of the `auto` mapping, `landing`, created at second 0.
pub fn new_job(job_id: &str) -> ImportJob {
    ImportJob {
        job_id: job_id.to_owned(),
        workspace: WorkspaceName::default_workspace(),
        mode: ImportMode::Universe,
        status: ImportStatus::Landing,
        mapping: JobMapping {
            name: "auto".into(),
            version: 1,
            document: r#"{"name":"auto"}"#.into(),
            digest: "d1".into(),
        },
        options: "{}".into(),
        header: b"email,name".to_vec(),
        delimiter: b',',
        file_sha256: None,
        file_bytes: 0,
        landed: 0,
        processed: 0,
        counts: ImportCounts::default(),
        warnings: vec!["column 3 has no name".into()],
        error: None,
        runner: None,
        heartbeat: None,
        created_at: ts(0),
        updated_at: ts(0),
        finished_at: None,
    }
}

pub(super) fn rows(from: u64, to: u64) -> Vec<LandedRow> {
    (from..=to)
        .map(|row| LandedRow {
            row,
            // Bytes are stored verbatim, invalid UTF-8 included.
            bytes: format!("r{row}@x.com,\"Name\n{row}\"\u{1}")
                .into_bytes()
                .into_iter()
                .chain([0xFF])
                .collect(),
            defect: (row % 3 == 0).then(|| "unbalanced_quote".to_owned()),
        })
        .collect()
}

fn outcome(row: u64, outcome: &str) -> RowOutcome {
    RowOutcome {
        row,
        outcome: outcome.to_owned(),
        person_id: (outcome != "rejected").then(|| format!("p{row}")),
        reason: (outcome == "rejected").then(|| "empty row".to_owned()),
    }
}

pub(super) fn chunk(runner: &str, from: u64, to: u64, created: u64) -> RecordedChunk {
    RecordedChunk {
        runner: runner.to_owned(),
        mapping_version: 1,
        from,
        to,
        outcomes: (from + 1..=to)
            .map(|row| outcome(row, if row % 2 == 0 { "rejected" } else { "created" }))
            .collect(),
        counts: ImportCounts {
            persons_created: created,
            rejected: (to - from) - created,
            ..ImportCounts::default()
        },
        at: ts(100 + i64::try_from(to).expect("small")),
        erase_landed: Vec::new(),
    }
}

fn is_conflict<T: std::fmt::Debug>(result: Result<T, StoreError>) -> bool {
    matches!(result, Err(StoreError::Conflict(_)))
}

pub async fn import_jobs_progress_by_compare_and_set<S: Store>(store: &S) {
    let ids = with_tenants(store, &["importer"]).await;
    let t = &ids[0];
    let job = new_job("job-1");
    store.create_import(t, &job).await.expect("create");
    assert!(is_conflict(store.create_import(t, &job).await));
    assert_eq!(store.get_import(t, "job-1").await.expect("get"), job);

    // LAND: batches must follow on from what is landed.
    store
        .land_import_rows(t, "job-1", rows(1, 3), ts(1))
        .await
        .expect("land");
    assert!(is_conflict(
        store.land_import_rows(t, "job-1", rows(1, 3), ts(2)).await
    ));
    assert!(is_conflict(
        store.land_import_rows(t, "job-1", rows(5, 6), ts(2)).await
    ));
    store
        .land_import_rows(t, "job-1", rows(4, 5), ts(2))
        .await
        .expect("land");
    assert_eq!(
        store.landed_rows(t, "job-1", 2, 2).await.expect("rows"),
        rows(3, 4)
    );
    assert_eq!(
        store.landed_rows(t, "job-1", 5, 10).await.expect("rows"),
        []
    );
    assert_eq!(
        store.unfinished_imports(t).await.expect("unfinished").len(),
        1
    );
    // A job is held by one runner; a stale holder can be replaced. A landing job is processed
    // while its rows arrive, up to the rows landed.
    let held = store
        .claim_import(t, "job-1", "runner-a", ts(10), ts(0))
        .await
        .expect("claim");
    assert_eq!(
        held.map(|j| (j.status, j.runner)),
        Some((ImportStatus::Landing, Some("runner-a".to_owned())))
    );
    assert_eq!(
        store
            .claim_import(t, "job-1", "runner-b", ts(11), ts(5))
            .await
            .expect("claim"),
        None,
        "runner-a's heartbeat is newer than the staleness limit"
    );
    assert!(
        store
            .claim_import(t, "job-1", "runner-b", ts(12), ts(11))
            .await
            .expect("claim")
            .is_some()
    );
    assert!(is_conflict(
        store
            .record_import_chunk(t, "job-1", chunk("runner-a", 0, 3, 2))
            .await
    ));
    store
        .record_import_chunk(t, "job-1", chunk("runner-b", 0, 3, 2))
        .await
        .expect("record");
    // The same chunk again (a retry after an unanswered commit) changes nothing.
    assert!(is_conflict(
        store
            .record_import_chunk(t, "job-1", chunk("runner-b", 0, 3, 2))
            .await
    ));
    // Past the landed rows is refused.
    assert!(is_conflict(
        store
            .record_import_chunk(t, "job-1", chunk("runner-b", 3, 6, 2))
            .await
    ));
    store
        .record_import_chunk(t, "job-1", chunk("runner-b", 3, 5, 1))
        .await
        .expect("record");
    // Every landed row is processed, but more may come until the landing finishes.
    assert!(is_conflict(
        store.complete_import(t, "job-1", "runner-b", ts(20)).await
    ));
    store
        .finish_import_landing(
            t,
            "job-1",
            "abc123",
            999,
            vec!["w1".into(), "w2".into()],
            ts(3),
        )
        .await
        .expect("finish");
    assert!(is_conflict(
        store.land_import_rows(t, "job-1", rows(6, 6), ts(4)).await
    ));
    let landed = store.get_import(t, "job-1").await.expect("get");
    assert_eq!(
        (landed.status, landed.landed, landed.file_bytes),
        (ImportStatus::Processing, 5, 999)
    );
    assert_eq!(landed.runner.as_deref(), Some("runner-b"));
    assert_eq!(landed.file_sha256.as_deref(), Some("abc123"));
    assert_eq!(landed.warnings, ["w1", "w2"]);
    assert!(is_conflict(
        store.complete_import(t, "job-1", "runner-a", ts(21)).await
    ));
    store
        .complete_import(t, "job-1", "runner-b", ts(21))
        .await
        .expect("complete");
    let done = store.get_import(t, "job-1").await.expect("get");
    assert_eq!(done.status, ImportStatus::Completed);
    assert_eq!((done.processed, done.runner.clone()), (5, None));
    assert_eq!((done.counts.persons_created, done.counts.rejected), (3, 2));
    assert_eq!(done.finished_at, Some(ts(21)));
    assert!(
        store
            .unfinished_imports(t)
            .await
            .expect("unfinished")
            .is_empty()
    );

    // Outcomes page in row order, filtered or not.
    let mut all = Vec::new();
    let mut page = PageRequest::first(2);
    loop {
        let got = store
            .import_outcomes(t, "job-1", None, &page)
            .await
            .expect("outcomes");
        all.extend(got.items);
        match got.next_cursor {
            Some(cursor) => page.after = Some(cursor),
            None => break,
        }
    }
    assert_eq!(
        all.iter().map(|o| o.row).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5]
    );
    assert_eq!(all[1], outcome(2, "rejected"));
    let rejected = store
        .import_outcomes(t, "job-1", Some("rejected"), &PageRequest::first(10))
        .await
        .expect("outcomes");
    assert_eq!(
        rejected.items.iter().map(|o| o.row).collect::<Vec<_>>(),
        [2, 4]
    );

    // Reprocessing clears outcomes and counts under the next mapping version only.
    let v2 = JobMapping {
        name: "crm".into(),
        version: 2,
        document: "{}".into(),
        digest: "d2".into(),
    };
    let mut wrong = v2.clone();
    wrong.version = 3;
    assert!(is_conflict(
        store
            .reprocess_import(t, "job-1", wrong, "{}".into(), "runner-c", ts(30))
            .await
    ));
    let again = store
        .reprocess_import(
            t,
            "job-1",
            v2.clone(),
            r#"{"reason":"dnc"}"#.into(),
            "runner-c",
            ts(31),
        )
        .await
        .expect("reprocess");
    assert_eq!(again.status, ImportStatus::Processing);
    assert_eq!(
        (again.processed, again.counts),
        (0, ImportCounts::default())
    );
    assert_eq!(again.mapping, v2);
    assert_eq!(again.options, r#"{"reason":"dnc"}"#);
    assert_eq!(again.runner.as_deref(), Some("runner-c"));
    assert!(
        store
            .import_outcomes(t, "job-1", None, &PageRequest::first(10))
            .await
            .expect("outcomes")
            .items
            .is_empty()
    );
    let mut v3 = v2.clone();
    v3.version = 3;
    assert!(is_conflict(
        store
            .reprocess_import(t, "job-1", v3, "{}".into(), "runner-c", ts(32))
            .await
    ));
    // The old mapping version cannot record any more.
    assert!(is_conflict(
        store
            .record_import_chunk(t, "job-1", chunk("runner-c", 0, 1, 1))
            .await
    ));

    store
        .fail_import(t, "job-1", "the upload broke off", ts(40))
        .await
        .expect("fail");
    let failed = store.get_import(t, "job-1").await.expect("get");
    assert_eq!(failed.status, ImportStatus::Failed);
    assert_eq!(failed.error.as_deref(), Some("the upload broke off"));
    assert_eq!(failed.runner, None);
    assert_eq!(
        store.fail_import(t, "nope", "x", ts(41)).await,
        Err(StoreError::NotFound)
    );
}

pub async fn import_jobs_list_newest_first_and_stay_in_their_tenant<S: Store>(store: &S) {
    let ids = with_tenants(store, &["imp-a", "imp-b"]).await;
    let (a, b) = (&ids[0], &ids[1]);
    for id in ["j1", "j2", "j3"] {
        store.create_import(a, &new_job(id)).await.expect("create");
    }
    // The same id in another tenant is another job.
    store
        .create_import(b, &new_job("j1"))
        .await
        .expect("create");
    store
        .land_import_rows(a, "j1", rows(1, 2), ts(1))
        .await
        .expect("land");
    let first = store
        .list_imports(a, &PageRequest::first(2))
        .await
        .expect("list");
    assert_eq!(
        first
            .items
            .iter()
            .map(|j| j.job_id.as_str())
            .collect::<Vec<_>>(),
        ["j3", "j2"]
    );
    let rest = store
        .list_imports(
            a,
            &PageRequest {
                limit: 2,
                after: first.next_cursor,
            },
        )
        .await
        .expect("list");
    assert_eq!(
        rest.items
            .iter()
            .map(|j| j.job_id.as_str())
            .collect::<Vec<_>>(),
        ["j1"]
    );
    assert_eq!(rest.next_cursor, None);

    assert_eq!(store.get_import(b, "j1").await.expect("get").landed, 0);
    assert!(
        store
            .landed_rows(b, "j1", 0, 10)
            .await
            .expect("rows")
            .is_empty()
    );
    assert_eq!(store.get_import(b, "j2").await, Err(StoreError::NotFound));
    assert_eq!(
        store.unfinished_imports(b).await.expect("unfinished").len(),
        1
    );
    let other = TenantId::parse("imp-nobody").expect("valid");
    assert!(
        store
            .list_imports(&other, &PageRequest::first(5))
            .await
            .expect("list")
            .items
            .is_empty()
    );
}

fn signal(n: usize, identifiers: Vec<Identifier>) -> SignalRecord {
    let at = ts(i64::try_from(n).expect("small"));
    SignalRecord {
        event: EventRow {
            event_id: format!("ev{n:05}"),
            workspace: WorkspaceName::default_workspace(),
            kind: "import_row".into(),
            name: None,
            occurred_at: at,
            ingested_at: at,
            schema_version: 1,
            message_id: format!("import:sha:{n}"),
            properties: "{}".into(),
            context: "{}".into(),
        },
        identifiers,
        traits: Vec::new(),
        source: "import:job-x".into(),
    }
}

pub async fn signal_effects_are_read_back_by_message_id<S: Store>(store: &S) {
    let ids = with_tenants(store, &["effects"]).await;
    let t = &ids[0];
    let settings = IdentitySettings::default();
    let id = |kind: &str, value: &str| settings.normalize(kind, value).expect("valid");
    let signals = vec![
        signal(1, vec![id("email", "a@x.com"), id("phone", "+14155552671")]),
        signal(2, vec![id("email", "b@x.com")]),
        // Joins both: a merge, and nothing new to attach.
        signal(3, vec![id("email", "a@x.com"), id("email", "b@x.com")]),
        // Two external ids on one person: a conflict; the new phone attaches.
        signal(4, vec![id("external_id", "u1"), id("email", "a@x.com")]),
        signal(
            5,
            vec![
                id("external_id", "u2"),
                id("email", "a@x.com"),
                id("phone", "+14155550000"),
            ],
        ),
    ];
    store.ingest(t, &settings, signals).await.expect("ingest");
    let workspace = WorkspaceName::default_workspace();
    let message_ids: Vec<String> = [
        "import:sha:1",
        "import:sha:3",
        "import:sha:nope",
        "import:sha:5",
    ]
    .iter()
    .map(|m| (*m).to_owned())
    .collect();
    let effects = store
        .signal_effects(t, &workspace, message_ids)
        .await
        .expect("effects");
    assert_eq!(effects.len(), 4);
    let first = effects[0].as_ref().expect("stored");
    assert_eq!(
        (
            first.event_id.as_str(),
            first.person_id.as_str(),
            first.created
        ),
        ("ev00001", "ev00001", true)
    );
    assert_eq!((first.attached, first.merges, first.conflicts), (2, 0, 0));
    assert_eq!(first.source, "import:job-x");
    let third = effects[1].as_ref().expect("stored");
    assert_eq!((third.created, third.merges, third.attached), (false, 1, 0));
    assert_eq!(effects[2], None);
    let fifth = effects[3].as_ref().expect("stored");
    assert!(fifth.conflicts >= 1, "{fifth:?}");
    // Another workspace's message ids are other messages.
    let elsewhere = WorkspaceName::parse("elsewhere").expect("valid");
    assert_eq!(
        store
            .signal_effects(t, &elsewhere, vec!["import:sha:1".into()])
            .await
            .expect("effects"),
        [None]
    );
}

pub async fn stored_suppression_entries_are_found_by_id<S: Store>(store: &S) {
    let ids = with_tenants(store, &["supp-ids", "supp-other"]).await;
    let settings = IdentitySettings::default();
    let entry = SuppressionRow {
        entry_id: "imp-abc-1-0".into(),
        scope: SuppressionScope::Tenant,
        identifier: settings.normalize("phone", "+14155552671").expect("valid"),
        reason: SuppressionReason::Dnc,
        action: SuppressionAction::Add,
        note: None,
        actor: "import:job".into(),
        at: ts(1),
        recorded: 0,
    };
    store
        .record_compliance(
            &ids[0],
            ComplianceWrites {
                suppressions: vec![entry],
                ..ComplianceWrites::default()
            },
        )
        .await
        .expect("record");
    let asked = vec!["imp-abc-1-0".to_owned(), "imp-abc-2-0".to_owned()];
    assert_eq!(
        store
            .stored_suppression_entries(&ids[0], asked.clone())
            .await
            .expect("stored"),
        ["imp-abc-1-0"]
    );
    assert!(
        store
            .stored_suppression_entries(&ids[1], asked)
            .await
            .expect("stored")
            .is_empty()
    );
}
