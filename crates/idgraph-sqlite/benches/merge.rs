//! What a merge costs: two persons with many events each merged by one signal, against two
//! persons with one event each, in the same run. A merge re-points persons, never events, so the
//! two should take about as long; the survivor's timeline holds both persons' events at once.
//!
//! `cargo bench -p idgraph-sqlite --bench merge` (events per person: `IDGRAPH_BENCH_EVENTS`,
//! default 100k; repetitions: 5, the median is reported).

use std::time::{Duration, Instant};

use idgraph_core::identity::{Identifier, IdentitySettings};
use idgraph_core::tenancy::{TenantId, WorkspaceName};
use idgraph_sqlite::{Durability, SqliteOptions, SqliteStore};
use idgraph_store::{EventRow, IngestOutcome, PageRequest, SignalRecord, Store};
use jiff::Timestamp;

const REPETITIONS: usize = 5;

fn signal(n: &mut u64, identifiers: Vec<Identifier>) -> SignalRecord {
    *n += 1;
    let at = Timestamp::from_second(1_800_000_000).expect("in range")
        + jiff::SignedDuration::from_micros(*n as i64);
    SignalRecord {
        event: EventRow {
            event_id: format!("01{n:024}"),
            workspace: WorkspaceName::parse("default").expect("valid"),
            kind: "track".into(),
            name: Some("Viewed Page".into()),
            occurred_at: at,
            ingested_at: at,
            schema_version: 1,
            message_id: format!("m{n}"),
            properties: r#"{"path":"/pricing"}"#.into(),
            context: "{}".into(),
        },
        identifiers,
        traits: Vec::new(),
        source: "bench".into(),
    }
}

struct Case {
    store: SqliteStore,
    tenant: TenantId,
    settings: IdentitySettings,
    n: u64,
}

impl Case {
    fn id(&self, kind: &str, raw: &str) -> Identifier {
        self.settings.normalize(kind, raw).expect("valid")
    }

    /// Gives the person holding `identifier` `events` events, in batches like a busy client.
    async fn events(&mut self, identifier: &Identifier, events: usize) {
        let mut left = events;
        while left > 0 {
            let batch: Vec<SignalRecord> = (0..left.min(1_000))
                .map(|_| signal(&mut self.n, vec![identifier.clone()]))
                .collect();
            left -= batch.len();
            self.store
                .ingest(&self.tenant, &self.settings, batch)
                .await
                .expect("ingest");
        }
    }

    /// Merges the person holding `anonymous` into the one holding `user`; returns the time.
    async fn merge(&mut self, user: &Identifier, anonymous: &Identifier) -> Duration {
        let signal = signal(&mut self.n, vec![user.clone(), anonymous.clone()]);
        let started = Instant::now();
        let outcome = self
            .store
            .ingest(&self.tenant, &self.settings, vec![signal])
            .await
            .expect("merge");
        let elapsed = started.elapsed();
        assert!(
            matches!(outcome[0], IngestOutcome::Recorded { merges: 1, .. }),
            "{outcome:?}"
        );
        elapsed
    }
}

fn median(mut runs: Vec<Duration>) -> Duration {
    runs.sort();
    runs[runs.len() / 2]
}

fn main() {
    let events: usize = std::env::var("IDGRAPH_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(&SqliteOptions {
        data_dir: dir.path().to_owned(),
        durability: Durability::Full,
    })
    .expect("open");
    let mut case = Case {
        store,
        tenant: TenantId::default_tenant(),
        settings: IdentitySettings::default(),
        n: 0,
    };
    runtime.block_on(async {
        let (mut small, mut large) = (Vec::new(), Vec::new());
        for rep in 0..REPETITIONS {
            for (per_person, runs) in [(1, &mut small), (events, &mut large)] {
                let user = case.id("external_id", &format!("user-{per_person}-{rep}"));
                let anonymous = case.id("anonymous_id", &format!("anon-{per_person}-{rep}"));
                case.events(&user, per_person).await;
                case.events(&anonymous, per_person).await;
                runs.push(case.merge(&user, &anonymous).await);
                if per_person == events && rep == 0 {
                    check_timeline(&case, &user, per_person).await;
                }
            }
        }
        let (small, large) = (median(small), median(large));
        println!(
            "merge of two persons by one signal, SQLite, synchronous=FULL, median of {REPETITIONS}"
        );
        println!(
            "  1 event each        : {:>8.3} ms",
            small.as_secs_f64() * 1e3
        );
        println!(
            "  {events} events each : {:>8.3} ms",
            large.as_secs_f64() * 1e3
        );
        println!(
            "  ratio               : {:.2}x  (a merge that moved events would be ~{}x)",
            large.as_secs_f64() / small.as_secs_f64(),
            events
        );
        case.store.close().await;
    });
}

/// The survivor's first page already shows the absorbed person's events (they are the
/// newest), and both persons' events are counted on the way down.
async fn check_timeline(case: &Case, user: &Identifier, per_person: usize) {
    let person = case
        .store
        .lookup_person(&case.tenant, user)
        .await
        .expect("lookup")
        .expect("exists");
    let started = Instant::now();
    let page = case
        .store
        .timeline(&case.tenant, &person, None, &PageRequest::first(50))
        .await
        .expect("timeline");
    let first_page = started.elapsed();
    let absorbed = page.items.iter().filter(|e| e.person_id != person).count();
    assert!(
        absorbed > 0,
        "the absorbed person's events are on the survivor's timeline"
    );
    println!(
        "timeline of the survivor right after the merge ({} events): first page of 50 in {:.2} ms, \
         {absorbed} of them from the absorbed person",
        2 * per_person + 1,
        first_page.as_secs_f64() * 1e3
    );
}
