//! The embedded SQLite backend: one writer thread owns the only write connection, reads run on
//! a small pool of read-only connections on blocking threads.
//!
//! SQLite allows one writer at a time anyway; funnelling writes through one thread makes that
//! explicit, keeps prepared statements hot, and turns "concurrent signals" into an ordered log.

mod checkpoint;
mod codec;
mod compliance;
mod deletion;
mod idempotency;
mod imports;
mod merges;
mod nodes;
mod queries;
mod reads;
mod reseal;
mod resolve;
mod webhooks;

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use idgraph_store::{AppliedMigration, Migration, StoreError, StoreResult, plan_migrations};
use rusqlite::{Connection, OpenFlags, TransactionBehavior};
use tokio::sync::oneshot;

pub use checkpoint::{WAL_CHECKPOINT_BYTES, WAL_RESTART_BYTES};
pub use codec::map_error;

/// The schema, in order. Append new files; never edit a released one.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "foundation",
        sql: include_str!("../migrations/0001_foundation.sql"),
    },
    Migration {
        version: 2,
        name: "resolution",
        sql: include_str!("../migrations/0002_resolution.sql"),
    },
    Migration {
        version: 3,
        name: "compliance",
        sql: include_str!("../migrations/0003_compliance.sql"),
    },
    Migration {
        version: 4,
        name: "platform",
        sql: include_str!("../migrations/0004_platform.sql"),
    },
    Migration {
        version: 5,
        name: "imports",
        sql: include_str!("../migrations/0005_imports.sql"),
    },
    Migration {
        version: 6,
        name: "webhooks",
        sql: include_str!("../migrations/0006_webhooks.sql"),
    },
    Migration {
        version: 7,
        name: "deletion",
        sql: include_str!("../migrations/0007_deletion.sql"),
    },
    Migration {
        version: 8,
        name: "pii_at_rest",
        sql: include_str!("../migrations/0008_pii_at_rest.sql"),
    },
    Migration {
        version: 9,
        name: "sealed_compliance",
        sql: include_str!("../migrations/0009_sealed_compliance.sql"),
    },
    Migration {
        version: 10,
        name: "identity_values",
        sql: include_str!("../migrations/0010_identity_values.sql"),
    },
    Migration {
        version: 11,
        name: "trait_sets",
        sql: include_str!("../migrations/0011_trait_sets.sql"),
    },
    Migration {
        version: 12,
        name: "landed_rows_file",
        sql: include_str!("../migrations/0012_landed_rows_file.sql"),
    },
    Migration {
        version: 13,
        name: "slim_identity_nodes",
        sql: include_str!("../migrations/0013_slim_identity_nodes.sql"),
    },
    Migration {
        version: 14,
        name: "trait_sets_appended",
        sql: include_str!("../migrations/0014_trait_sets_appended.sql"),
    },
];

/// Migrations of the landed-rows file (decision 0022), numbered on their own.
pub const LANDED_MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    name: "import_rows",
    sql: include_str!("../migrations/landed/0001_import_rows.sql"),
}];

/// The database file inside a data dir.
pub const DATABASE_FILE: &str = "idgraph.db";
/// The file of an import's landed rows, beside it, with a writer thread of its own (decision
/// 0022).
pub const LANDED_FILE: &str = "landed.db";
const LOCK_FILE: &str = "idgraph.lock";
/// Read connections kept open between reads. A read finding none idle opens one (the schema
/// parsed, every statement prepared again) and closes it after: with 4 kept, eight concurrent
/// timeline readers of a 10M-event store saw a p99 of 8.2-9.8 ms, with 8 kept 5.4-6.0 ms.
const READERS: usize = 8;

/// How hard an acknowledged write is pushed to disk before the acknowledgement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// `synchronous=FULL`: the WAL is fsynced at every commit; survives power loss and OS crash.
    #[default]
    Full,
    /// `synchronous=NORMAL`: survives a crash of idgraph, may lose the last commits on power loss.
    Normal,
}

impl Durability {
    pub fn pragma(self) -> &'static str {
        match self {
            Durability::Full => "FULL",
            Durability::Normal => "NORMAL",
        }
    }
}

/// How to open a data dir.
#[derive(Debug, Clone)]
pub struct SqliteOptions {
    pub data_dir: PathBuf,
    pub durability: Durability,
}

/// A unit of work for the writer thread.
trait WriteJob: Send {
    /// Runs inside the group's transaction, in a savepoint of its own; returns what to do once
    /// the commit's fate is known.
    fn run(self: Box<Self>, tx: &rusqlite::Transaction<'_>) -> AfterCommit;
    /// The job could not run at all.
    fn fail(self: Box<Self>, error: StoreError);
    /// Whether the job can run again after a rollback (it does nothing outside the
    /// transaction), so that it may [`attempt`](Self::attempt) without a savepoint.
    fn retriable(&self) -> bool {
        false
    }
    /// Runs a retriable job without a savepoint and keeps its result for
    /// [`finish`](Self::finish). On an error the caller rolls the whole transaction back.
    fn attempt(&mut self, _tx: &rusqlite::Transaction<'_>) -> StoreResult<()> {
        Err(StoreError::Other("this write job cannot be retried".into()))
    }
    /// What to do once the commit's fate is known, after a successful `attempt`.
    fn finish(self: Box<Self>) -> AfterCommit {
        Box::new(|_| {})
    }
    /// Whether the job's answer waits for its commit to reach the disk (with
    /// `Durability::Full`). A group of jobs that need not wait commits without an fsync; the
    /// next commit that waits makes it durable too (decision 0023).
    fn durable(&self) -> bool {
        true
    }
}

type AfterCommit = Box<dyn FnOnce(StoreResult<()>) + Send>;

struct TypedJob<F, R> {
    job: F,
    reply: oneshot::Sender<StoreResult<R>>,
}

impl<F, R> WriteJob for TypedJob<F, R>
where
    R: Send + 'static,
    F: FnOnce(&rusqlite::Transaction<'_>) -> StoreResult<R> + Send + 'static,
{
    fn run(self: Box<Self>, tx: &rusqlite::Transaction<'_>) -> AfterCommit {
        let TypedJob { job, reply } = *self;
        let result = in_savepoint(tx, job);
        Box::new(move |committed: StoreResult<()>| {
            // The caller may have gone away (request cancelled); the write stands either way.
            let _ = reply.send(committed.and(result));
        })
    }

    fn fail(self: Box<Self>, error: StoreError) {
        let _ = self.reply.send(Err(error));
    }
}

/// A job that can run again: see [`SqliteStore::write_retriable`].
struct RetriableJob<F, R> {
    job: F,
    reply: oneshot::Sender<StoreResult<R>>,
    attempted: Option<R>,
    durable: bool,
}

impl<F, R> WriteJob for RetriableJob<F, R>
where
    R: Send + 'static,
    F: FnMut(&rusqlite::Transaction<'_>) -> StoreResult<R> + Send + 'static,
{
    fn run(self: Box<Self>, tx: &rusqlite::Transaction<'_>) -> AfterCommit {
        let RetriableJob { mut job, reply, .. } = *self;
        let result = in_savepoint(tx, &mut job);
        Box::new(move |committed: StoreResult<()>| {
            let _ = reply.send(committed.and(result));
        })
    }

    fn fail(self: Box<Self>, error: StoreError) {
        let _ = self.reply.send(Err(error));
    }

    fn retriable(&self) -> bool {
        true
    }

    fn durable(&self) -> bool {
        self.durable
    }

    fn attempt(&mut self, tx: &rusqlite::Transaction<'_>) -> StoreResult<()> {
        self.attempted = Some((self.job)(tx)?);
        Ok(())
    }

    fn finish(self: Box<Self>) -> AfterCommit {
        let RetriableJob {
            reply, attempted, ..
        } = *self;
        Box::new(move |committed: StoreResult<()>| {
            let result = attempted
                .ok_or_else(|| StoreError::Other("a write job finished without running".into()));
            let _ = reply.send(committed.and(result));
        })
    }
}

/// The most jobs one group commit takes; bounds the latency a job adds to the others.
const GROUP_COMMIT_JOBS: usize = 64;

/// The SQLite store. Cheap to clone; all clones share one writer and one reader pool.
#[derive(Clone, Debug)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    path: PathBuf,
    landed_path: PathBuf,
    writer: Mutex<Option<JobSender>>,
    writer_thread: Mutex<Option<JoinHandle<()>>>,
    landed_writer: Mutex<Option<JobSender>>,
    landed_thread: Mutex<Option<JoinHandle<()>>>,
    readers: Mutex<Vec<Connection>>,
    // Held until close: a second process on the same data dir is refused meanwhile.
    lock: Mutex<Option<File>>,
    vault: idgraph_store::vault::VaultSlot,
}

impl SqliteStore {
    /// Opens (creating if needed) the data dir, applies pending migrations and starts the writer.
    pub fn open(options: &SqliteOptions) -> StoreResult<Self> {
        let dir = &options.data_dir;
        std::fs::create_dir_all(dir).map_err(|e| {
            StoreError::Unusable(format!("cannot create data dir {}: {e}", dir.display()))
        })?;
        let lock = lock_data_dir(dir)?;
        let path = dir.join(DATABASE_FILE);
        let mut conn = Connection::open(&path).map_err(|e| {
            StoreError::Unusable(format!("cannot open database {}: {e}", path.display()))
        })?;
        configure(&conn, options.durability)
            .and_then(|()| {
                // A migration may build a temporary table as large as the table it rewrites
                // (0010 numbers every sealed identity node): on disk, so memory stays bounded.
                conn.pragma_update(None, "temp_store", "FILE")
            })
            .map_err(|e| StoreError::Unusable(format!("cannot use {}: {e}", path.display())))?;
        migrate(&mut conn, MIGRATIONS)?;
        let landed_path = dir.join(LANDED_FILE);
        let landed = open_landed(&landed_path, &path, &conn, options.durability)?;
        install_planner_statistics(&conn)
            .map_err(|e| StoreError::Unusable(format!("cannot write planner statistics: {e}")))?;
        // The planner reads its statistics when a connection loads the schema: start afresh.
        drop(conn);
        let mut conn = Connection::open(&path).map_err(|e| {
            StoreError::Unusable(format!("cannot open database {}: {e}", path.display()))
        })?;
        configure(&conn, options.durability)
            .map_err(|e| StoreError::Unusable(format!("cannot use {}: {e}", path.display())))?;
        let checkpoints = checkpoint::Checkpoints::start(&mut conn, &path, options.durability)?;

        let (sender, writer_thread) = start_writer(
            conn,
            Some(checkpoints),
            options.durability,
            "idgraph-sqlite-writer",
        )?;
        // The landed file has no WAL to checkpoint (`open_landed`).
        let (landed_sender, landed_thread) =
            start_writer(landed, None, options.durability, "idgraph-sqlite-land")?;
        Ok(Self {
            inner: Arc::new(Inner {
                path,
                landed_path,
                writer: Mutex::new(Some(sender)),
                writer_thread: Mutex::new(Some(writer_thread)),
                landed_writer: Mutex::new(Some(landed_sender)),
                landed_thread: Mutex::new(Some(landed_thread)),
                readers: Mutex::new(Vec::new()),
                lock: Mutex::new(Some(lock)),
                vault: idgraph_store::vault::VaultSlot::default(),
            }),
        })
    }

    /// The vault PII is sealed with right now.
    pub(crate) fn vault(&self) -> Arc<idgraph_store::vault::Vault> {
        self.inner.vault.get()
    }

    pub(crate) fn vault_slot_inner(&self) -> &idgraph_store::vault::VaultSlot {
        &self.inner.vault
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Runs `job` on the writer thread inside a transaction; its changes are rolled back if it
    /// fails, and the answer comes once they are committed (durably, with `Durability::Full`).
    ///
    /// Jobs that queue up while a commit is under way are run together in the next
    /// transaction, each inside its own savepoint, and committed with one fsync (group commit):
    /// a failing job rolls back only its own savepoint.
    pub async fn write<R, F>(&self, job: F) -> StoreResult<R>
    where
        R: Send + 'static,
        F: FnOnce(&rusqlite::Transaction<'_>) -> StoreResult<R> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let boxed: Box<dyn WriteJob> = Box::new(TypedJob { job, reply });
        self.submit(boxed)?;
        answer
            .await
            .map_err(|_| StoreError::Other("the writer thread stopped".into()))?
    }

    /// Like [`write`](Self::write), for a job that does nothing outside its transaction and
    /// so can run again: the writer runs such jobs of a group without a savepoint each, and
    /// only when one fails rolls the whole group back and runs it again, each job in its own
    /// savepoint. A savepoint makes SQLite copy every page a job first changes into a
    /// statement journal; for ingestion, which changes a few rows in many pages, that copying
    /// was about a tenth of the writer thread's time in a profile of `/v1/batch`.
    pub async fn write_retriable<R, F>(&self, job: F) -> StoreResult<R>
    where
        R: Send + 'static,
        F: FnMut(&rusqlite::Transaction<'_>) -> StoreResult<R> + Send + 'static,
    {
        self.queue_retriable(job, true)?.await
    }

    /// Queues a retriable job now and answers its outcome later, so the caller can go on
    /// working (sealing the rest of a batch) while the writer runs it. `durable: false` as in
    /// [`write_resumable`](Self::write_resumable).
    pub(crate) fn queue_retriable<R, F>(
        &self,
        job: F,
        durable: bool,
    ) -> StoreResult<impl Future<Output = StoreResult<R>> + use<R, F>>
    where
        R: Send + 'static,
        F: FnMut(&rusqlite::Transaction<'_>) -> StoreResult<R> + Send + 'static,
    {
        queue_retriable_to(&self.inner.writer, job, durable)
    }

    /// Like [`write_retriable`](Self::write_retriable), for work whose loss to a power cut is
    /// redone from progress recorded elsewhere (an import's chunks): answered once committed,
    /// without waiting for the disk when nothing else in its group does (decision 0023).
    pub(crate) async fn write_resumable<R, F>(&self, job: F) -> StoreResult<R>
    where
        R: Send + 'static,
        F: FnMut(&rusqlite::Transaction<'_>) -> StoreResult<R> + Send + 'static,
    {
        self.queue_retriable(job, false)?.await
    }

    fn submit(&self, job: Box<dyn WriteJob>) -> StoreResult<()> {
        submit_to(&self.inner.writer, job)
    }

    /// Like [`write_retriable`](Self::write_retriable), on the landed-rows file's writer: a
    /// transaction of that file only, committed independently of the main one.
    pub(crate) async fn write_landed<R, F>(&self, job: F) -> StoreResult<R>
    where
        R: Send + 'static,
        F: FnMut(&rusqlite::Transaction<'_>) -> StoreResult<R> + Send + 'static,
    {
        queue_retriable_to(&self.inner.landed_writer, job, true)?.await
    }

    /// Runs `job` on a read-only connection on a blocking thread.
    pub async fn read<R, F>(&self, job: F) -> StoreResult<R>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<R> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || {
            if inner.writer.lock().map_err(poisoned)?.is_none() {
                return Err(closed());
            }
            let pooled = inner.readers.lock().map_err(poisoned)?.pop();
            let conn = match pooled {
                Some(conn) => conn,
                None => open_reader(&inner.path, &inner.landed_path)?,
            };
            let result = job(&conn);
            let mut readers = inner.readers.lock().map_err(poisoned)?;
            if readers.len() < READERS {
                readers.push(conn);
            }
            result
        })
        .await
        .map_err(|e| StoreError::Other(format!("read task failed: {e}")))?
    }

    async fn shutdown(&self) {
        let sender = self.inner.writer.lock().ok().and_then(|mut w| w.take());
        let landed_sender = self
            .inner
            .landed_writer
            .lock()
            .ok()
            .and_then(|mut w| w.take());
        // Readers first: SQLite removes the WAL only when the last connection closes, and the
        // writer closes last after its checkpoint.
        if let Ok(mut readers) = self.inner.readers.lock() {
            readers.clear();
        }
        drop(sender);
        drop(landed_sender);
        for slot in [&self.inner.writer_thread, &self.inner.landed_thread] {
            let thread = slot.lock().ok().and_then(|mut t| t.take());
            if let Some(thread) = thread {
                let joined = tokio::task::spawn_blocking(move || thread.join()).await;
                if !matches!(joined, Ok(Ok(()))) {
                    tracing::error!("an SQLite writer thread did not stop cleanly");
                }
            }
        }
        // Closing the file releases the lock; the data dir is free for the next process.
        drop(self.inner.lock.lock().ok().and_then(|mut l| l.take()));
    }
}

fn lock_data_dir(dir: &Path) -> StoreResult<File> {
    let lock_path = dir.join(LOCK_FILE);
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| {
            StoreError::Unusable(format!("cannot write to data dir {}: {e}", dir.display()))
        })?;
    match lock.try_lock() {
        Ok(()) => Ok(lock),
        Err(std::fs::TryLockError::WouldBlock) => Err(StoreError::Unusable(format!(
            "data dir {} is in use by another idgraph process",
            dir.display()
        ))),
        Err(std::fs::TryLockError::Error(e)) => Err(StoreError::Unusable(format!(
            "cannot lock data dir {}: {e}",
            dir.display()
        ))),
    }
}

fn configure(conn: &Connection, durability: Durability) -> rusqlite::Result<()> {
    // Only a database without tables takes a page size; an existing store keeps its own.
    conn.pragma_update(None, "page_size", PAGE_SIZE)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", durability.pragma())?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.pragma_update(None, "busy_timeout", 5000)?;
    // Resolution touches index pages all over the identity tables; with SQLite's default 2 MB
    // page cache most of those touches become read() calls into the kernel.
    conn.pragma_update(None, "cache_size", WRITER_CACHE_KIB)?;
    // SQLite is built with STAT4, under which a statement whose plan might depend on a bound
    // value is re-prepared every time the value changes; the resolver's owner look-up was
    // spending a quarter of its time in the parser. Our plans never depend on values.
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
        true,
    )?;
    // Savepoints (one per job of a group commit) journal the pages they change; in a temp file
    // that costs a write() per page.
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    // Deleted rows are overwritten, not left in free pages: a purged person's data must not
    // survive in the file. Deletes are rare here, so the extra writes cost little.
    conn.pragma_update(None, "secure_delete", "ON")?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(())
}

/// Rows the planner is told each table has; only the ratios to the figures below matter.
const PLANNED_ROWS: u64 = 1_000_000;
/// Rows the planner is told one tenant has: every key leads with `tenant_id`, and a key's
/// tenant prefix alone selects a large share of the table.
const PLANNED_TENANT_ROWS: u64 = 100_000;
/// Columns with a handful of values: an equality on them narrows a tenant's rows only a little.
const LOW_CARDINALITY: &[&str] = &[
    "kind",
    "status",
    "is_master",
    "outcome",
    "workspace",
    "scope",
    "action",
    "purpose",
    "channel",
];

/// Writes `sqlite_stat1` by hand, the same on every start, so plans never depend on the data.
///
/// With the planner stability guarantee on (see `configure`) and no statistics, SQLite guesses
/// that `tenant_id = ?` matches a few rows and prefers a range of the primary key over any
/// secondary index whose rows need a primary-key look-up: `WHERE tenant_id = ? AND person_id
/// = ?` read every identity node, event or trait of the tenant. Statistics that say what the
/// schema means (the tenant prefix is large, the next key column selective, a unique key
/// exact) make it pick the index (`tests/schema.rs`). `ANALYZE` would measure instead, but it
/// reads every table (minutes on a large store) and could change plans as the data grows.
fn install_planner_statistics(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch("ANALYZE sqlite_schema")?;
    let tables: Vec<(String, bool)> = conn
        .prepare(
            "SELECT name, wr FROM pragma_table_list
             WHERE schema = 'main' AND type = 'table' AND name NOT LIKE 'sqlite_%'",
        )?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let mut rows: Vec<(String, String, String)> = Vec::new();
    for (table, without_rowid) in &tables {
        let indexes: Vec<(String, bool, String)> = conn
            .prepare("SELECT name, \"unique\", origin FROM pragma_index_list(?1)")?
            .query_map([table], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
            .collect::<rusqlite::Result<_>>()?;
        for (index, unique, origin) in indexes {
            let columns: Vec<String> = conn
                .prepare("SELECT name FROM pragma_index_info(?1) ORDER BY seqno")?
                .query_map([&index], |r| r.get::<_, Option<String>>(0))?
                .map(|name| name.map(Option::unwrap_or_default))
                .collect::<rusqlite::Result<_>>()?;
            let mut stat = PLANNED_ROWS.to_string();
            for (position, column) in columns.iter().enumerate() {
                let matching = if unique && position + 1 == columns.len() {
                    1
                } else if column == "tenant_id" {
                    PLANNED_TENANT_ROWS
                } else if LOW_CARDINALITY.contains(&column.as_str()) {
                    PLANNED_TENANT_ROWS / 5
                } else if position == 1 {
                    10
                } else {
                    2
                };
                stat.push_str(&format!(" {matching}"));
            }
            // A WITHOUT ROWID table's primary key is the table itself to the planner.
            let name = if origin == "pk" && *without_rowid {
                table.clone()
            } else {
                index
            };
            rows.push((table.clone(), name, stat));
        }
    }
    let tx = conn.unchecked_transaction()?;
    tx.execute("DELETE FROM sqlite_stat1", [])?;
    for (table, index, stat) in &rows {
        tx.execute(
            "INSERT INTO sqlite_stat1 (tbl, idx, stat) VALUES (?1, ?2, ?3)",
            [table, index, stat],
        )?;
    }
    tx.commit()
}

/// Page cache of the writer connection, in KiB (negative: SQLite's unit for "KiB, not pages").
const WRITER_CACHE_KIB: i64 = -128 * 1024;

/// Page cache of the landed-rows writer, in KiB (negative, as above).
const LANDED_WRITER_CACHE_KIB: i64 = -2 * 1024;

/// Page size of a new store. Larger pages won on small stores (imports 20% faster with 32 KiB)
/// and lost on grown ones: every random index insert dirties a whole page, and at 3M events
/// `/v1/batch` ran at 10,400 events/s with 32 KiB against 14,300 with 4 KiB (decision 0017).
const PAGE_SIZE: i64 = 4 * 1024;

fn open_reader(path: &Path, landed_path: &Path) -> StoreResult<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(map_error)?;
    // Landed rows are read as `landed.import_rows`, with their job from the main file in the
    // same statement.
    conn.execute(
        "ATTACH DATABASE ?1 AS landed",
        [landed_path.to_string_lossy()],
    )
    .map_err(map_error)?;
    conn.pragma_update(None, "busy_timeout", 5000)
        .map_err(map_error)?;
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
        true,
    )
    .map_err(map_error)?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

/// Where write jobs are sent, to one writer thread.
type JobSender = std::sync::mpsc::Sender<Box<dyn WriteJob>>;

fn start_writer(
    conn: Connection,
    checkpoints: Option<checkpoint::Checkpoints>,
    durability: Durability,
    name: &str,
) -> StoreResult<(JobSender, JoinHandle<()>)> {
    let (sender, receiver) = std::sync::mpsc::channel::<Box<dyn WriteJob>>();
    let thread = std::thread::Builder::new()
        .name(name.into())
        .spawn(move || writer_loop(conn, checkpoints, durability, receiver))
        .map_err(|e| StoreError::Other(format!("cannot start the writer thread {name}: {e}")))?;
    Ok((sender, thread))
}

fn queue_retriable_to<R, F>(
    writer: &Mutex<Option<JobSender>>,
    job: F,
    durable: bool,
) -> StoreResult<impl Future<Output = StoreResult<R>> + use<R, F>>
where
    R: Send + 'static,
    F: FnMut(&rusqlite::Transaction<'_>) -> StoreResult<R> + Send + 'static,
{
    let (reply, answer) = oneshot::channel();
    let boxed: Box<dyn WriteJob> = Box::new(RetriableJob {
        job,
        reply,
        attempted: None,
        durable,
    });
    submit_to(writer, boxed)?;
    Ok(async move {
        answer
            .await
            .map_err(|_| StoreError::Other("the writer thread stopped".into()))?
    })
}

fn submit_to(writer: &Mutex<Option<JobSender>>, job: Box<dyn WriteJob>) -> StoreResult<()> {
    let sender = writer
        .lock()
        .map_err(poisoned)?
        .clone()
        .ok_or_else(closed)?;
    sender.send(job).map_err(|_| closed())
}

/// Opens, creates or migrates the landed-rows file for its writer, and moves into it the rows a
/// store kept in its main file (`main_path`) before decision 0022 (migration 12 set them aside
/// as `import_rows_moving`). Copied first and dropped after, so a crash in between copies again
/// (the copy ignores rows already there) rather than losing any.
fn open_landed(
    landed_path: &Path,
    main_path: &Path,
    main: &Connection,
    durability: Durability,
) -> StoreResult<Connection> {
    let unusable = |e: rusqlite::Error| {
        StoreError::Unusable(format!("cannot use {}: {e}", landed_path.display()))
    };
    let mut landed = Connection::open(landed_path).map_err(unusable)?;
    configure(&landed, durability)
        .and_then(|()| {
            // Rows are appended and read back by readers, never looked up by this writer: the
            // main writer's large cache would only hold landed rows in memory.
            landed.pragma_update(None, "cache_size", LANDED_WRITER_CACHE_KIB)
        })
        .and_then(|()| {
            // A rollback journal, not a WAL: landing appends rows on pages past the end of the
            // file, which a rollback journal need not copy, so each landed byte is written once
            // (a WAL writes it twice, and a checkpointer reads it back in between); readers
            // wait out a commit, which only the runner's reads of landed rows notice
            // (decision 0025). Converts a file left in WAL mode by an earlier version.
            landed.pragma_update_and_check(None, "journal_mode", "TRUNCATE", |r| {
                r.get::<_, String>(0)
            })
        })
        .map_err(unusable)
        .and_then(|mode| {
            if mode.eq_ignore_ascii_case("truncate") {
                Ok(())
            } else {
                Err(StoreError::Unusable(format!(
                    "{} stayed in journal mode {mode}",
                    landed_path.display()
                )))
            }
        })?;
    migrate(&mut landed, LANDED_MIGRATIONS)?;
    let moving: i64 = main
        .query_row(
            "SELECT COUNT(*) FROM sqlite_schema WHERE type = 'table' AND name = 'import_rows_moving'",
            [],
            |r| r.get(0),
        )
        .map_err(unusable)?;
    if moving == 0 {
        return Ok(landed);
    }
    landed
        .execute("ATTACH DATABASE ?1 AS graph", [main_path.to_string_lossy()])
        .map_err(unusable)?;
    let moved = landed
        .execute(
            "INSERT OR IGNORE INTO main.import_rows (tenant_id, job_id, row_no, bytes, defect)
             SELECT tenant_id, job_id, row_no, bytes, defect FROM graph.import_rows_moving",
            [],
        )
        .map_err(unusable)?;
    landed
        .execute("DETACH DATABASE graph", [])
        .map_err(unusable)?;
    main.execute_batch("DROP TABLE import_rows_moving")
        .map_err(unusable)?;
    if moved > 0 {
        tracing::info!(rows = moved, "moved landed import rows to their own file");
    }
    Ok(landed)
}

fn migrate(conn: &mut Connection, migrations: &[Migration]) -> StoreResult<()> {
    let unusable = |e: rusqlite::Error| StoreError::Unusable(format!("cannot migrate: {e}"));
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS idgraph_migrations (
            version    INTEGER NOT NULL PRIMARY KEY,
            name       TEXT    NOT NULL,
            checksum   TEXT    NOT NULL,
            applied_at INTEGER NOT NULL
        )",
    )
    .map_err(unusable)?;
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Exclusive)
        .map_err(unusable)?;
    let applied = {
        let mut stmt = tx
            .prepare("SELECT version, name, checksum FROM idgraph_migrations ORDER BY version")
            .map_err(unusable)?;
        stmt.query_map([], |row| {
            Ok(AppliedMigration {
                version: row.get(0)?,
                name: row.get(1)?,
                checksum: row.get(2)?,
            })
        })
        .and_then(Iterator::collect::<rusqlite::Result<Vec<_>>>)
        .map_err(unusable)?
    };
    let pending =
        plan_migrations(migrations, &applied).map_err(|e| StoreError::Unusable(e.to_string()))?;
    for migration in pending {
        tracing::info!(
            version = migration.version,
            name = migration.name,
            "applying migration"
        );
        tx.execute_batch(migration.sql).map_err(unusable)?;
        tx.execute(
            "INSERT INTO idgraph_migrations (version, name, checksum, applied_at) VALUES (?1, ?2, ?3, ?4)",
            rusqlite::params![
                migration.version,
                migration.name,
                migration.checksum(),
                jiff::Timestamp::now().as_microsecond()
            ],
        )
        .map_err(unusable)?;
    }
    tx.commit().map_err(unusable)
}

fn in_savepoint<R>(
    tx: &rusqlite::Transaction<'_>,
    job: impl FnOnce(&rusqlite::Transaction<'_>) -> StoreResult<R>,
) -> StoreResult<R> {
    // After some errors (a full disk, an I/O error) SQLite rolls the whole transaction back.
    // A savepoint then would begin a transaction of its own and RELEASE commit it: the job's
    // writes kept while the failed group tells it they were not. The rest of the group is
    // refused instead.
    if tx.is_autocommit() {
        return Err(rolled_back());
    }
    tx.execute_batch("SAVEPOINT job").map_err(map_error)?;
    match job(tx) {
        Ok(value) => {
            tx.execute_batch("RELEASE job").map_err(map_error)?;
            Ok(value)
        }
        Err(error) => {
            // Undo this job only; the other jobs of the group keep their changes (unless
            // SQLite has rolled back everything already).
            if !tx.is_autocommit()
                && let Err(rollback) = tx.execute_batch("ROLLBACK TO job; RELEASE job")
            {
                tracing::error!(error = %rollback, "rolling back a failed write job failed");
            }
            Err(error)
        }
    }
}

fn rolled_back() -> StoreError {
    StoreError::Other(
        "SQLite rolled this write's transaction back after an error in it; nothing was kept".into(),
    )
}

fn writer_loop(
    mut conn: Connection,
    checkpoints: Option<checkpoint::Checkpoints>,
    durability: Durability,
    jobs: std::sync::mpsc::Receiver<Box<dyn WriteJob>>,
) {
    let mut group: Vec<Box<dyn WriteJob>> = Vec::with_capacity(GROUP_COMMIT_JOBS);
    let mut syncing = durability;
    while let Ok(first) = jobs.recv() {
        group.push(first);
        while group.len() < GROUP_COMMIT_JOBS {
            match jobs.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        run_group_synced(&mut conn, &mut group, durability, &mut syncing);
        if let Some(checkpoints) = &checkpoints {
            checkpoints.after_commit(&conn);
        }
    }
    if let Some(checkpoints) = checkpoints {
        checkpoints.stop(&mut conn);
        // All senders are gone: fold the WAL back into its database file, so a closed data
        // dir is its database files alone.
        if let Err(e) = conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)") {
            tracing::warn!(error = %e, "WAL checkpoint at close failed; it will be redone at next open");
        }
    }
    if let Err((_, e)) = conn.close() {
        tracing::error!(error = %e, "closing the SQLite database failed");
    }
}

/// [`run_group`], committed as durably as its jobs ask: a group none of whose jobs waits for
/// the disk commits without an fsync of the WAL (`synchronous=NORMAL`); the next fsync of the
/// WAL, at a commit that waits or at a checkpoint, covers its frames as well (decision 0023).
/// `syncing` is the connection's setting, kept between groups.
fn run_group_synced(
    conn: &mut Connection,
    group: &mut Vec<Box<dyn WriteJob>>,
    durability: Durability,
    syncing: &mut Durability,
) {
    let wanted = if group.iter().any(|job| job.durable()) {
        durability
    } else {
        Durability::Normal
    };
    if wanted != *syncing {
        match conn.pragma_update(None, "synchronous", wanted.pragma()) {
            Ok(()) => *syncing = wanted,
            Err(e) => {
                tracing::warn!(error = %e, "cannot change synchronous; the group commits as the one before it");
            }
        }
    }
    run_group(conn, group);
}

/// Runs a group of jobs in one transaction and tells each the outcome of the commit.
///
/// Retriable jobs run first, without savepoints. If one fails, the transaction is rolled back
/// and the group runs again in a new one, every job in its own savepoint, so that the failing
/// job alone is refused. Then the other jobs run, each in its own savepoint.
fn run_group(conn: &mut Connection, group: &mut Vec<Box<dyn WriteJob>>) {
    let (mut retriable, once): (Vec<_>, Vec<_>) = group.drain(..).partition(|j| j.retriable());
    if !retriable.is_empty() {
        let tx = match begin(conn) {
            Ok(tx) => tx,
            Err(error) => return fail_all(retriable.into_iter().chain(once), &error),
        };
        if retriable.iter_mut().all(|job| job.attempt(&tx).is_ok()) {
            let after: Vec<AfterCommit> = retriable.into_iter().map(|job| job.finish()).collect();
            return commit(tx, after, once);
        }
        tracing::debug!("a write failed in a group; running the group again job by job");
        // Dropped without a word when SQLite has already rolled it back.
        if !tx.is_autocommit()
            && let Err(e) = tx.rollback()
        {
            tracing::error!(error = %e, "rolling back a failed group of writes failed");
        }
    }
    let tx = match begin(conn) {
        Ok(tx) => tx,
        Err(error) => return fail_all(retriable.into_iter().chain(once), &error),
    };
    let after: Vec<AfterCommit> = retriable.into_iter().map(|job| job.run(&tx)).collect();
    commit(tx, after, once);
}

/// Runs the jobs that cannot be retried, each in its savepoint, commits, and tells every job.
fn commit(
    tx: rusqlite::Transaction<'_>,
    mut after: Vec<AfterCommit>,
    once: Vec<Box<dyn WriteJob>>,
) {
    after.extend(once.into_iter().map(|job| job.run(&tx)));
    let committed = if tx.is_autocommit() {
        Err(rolled_back())
    } else {
        tx.commit().map_err(map_error)
    };
    if let Err(error) = &committed {
        tracing::error!(%error, "commit failed; the group's writes are lost and reported");
    }
    for reply in after {
        reply(committed.clone());
    }
}

fn begin(conn: &mut Connection) -> StoreResult<rusqlite::Transaction<'_>> {
    conn.transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(|e| {
            let error = map_error(e);
            tracing::error!(%error, "cannot begin a write transaction");
            error
        })
}

fn fail_all(jobs: impl Iterator<Item = Box<dyn WriteJob>>, error: &StoreError) {
    for job in jobs {
        job.fail(error.clone());
    }
}

fn closed() -> StoreError {
    StoreError::Other("the store is closed".into())
}

fn poisoned<T>(_: T) -> StoreError {
    StoreError::Other("a store lock was poisoned by a panic".into())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// A connection to a fresh database with one table.
    fn connection(dir: &Path) -> Connection {
        let conn = Connection::open(dir.join("group.db")).expect("open");
        conn.execute_batch("CREATE TABLE t (v TEXT NOT NULL)")
            .expect("schema");
        conn
    }

    type Reply = oneshot::Receiver<StoreResult<()>>;

    /// A job that inserts `value` (and fails after the insert when `fail`), counting its runs.
    fn retriable(
        value: impl Into<String>,
        fail: bool,
        runs: Arc<AtomicUsize>,
    ) -> (Box<dyn WriteJob>, Reply) {
        let value = value.into();
        let job = move |tx: &rusqlite::Transaction<'_>| {
            runs.fetch_add(1, Ordering::SeqCst);
            tx.execute("INSERT INTO t (v) VALUES (?1)", [&value])
                .map_err(map_error)?;
            if fail {
                return Err(StoreError::Other(format!("{value} fails")));
            }
            Ok(())
        };
        boxed_retriable(job, true)
    }

    /// `job` as the writer takes it, and where its answer arrives.
    fn boxed_retriable<R, F>(
        job: F,
        durable: bool,
    ) -> (Box<dyn WriteJob>, oneshot::Receiver<StoreResult<R>>)
    where
        R: Send + 'static,
        F: FnMut(&rusqlite::Transaction<'_>) -> StoreResult<R> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job: Box<dyn WriteJob> = Box::new(RetriableJob {
            job,
            reply,
            attempted: None,
            durable,
        });
        (job, answer)
    }

    /// A retriable job that answers the connection's `synchronous` as it runs.
    fn synchronous(durable: bool) -> (Box<dyn WriteJob>, oneshot::Receiver<StoreResult<i64>>) {
        let job = |tx: &rusqlite::Transaction<'_>| {
            tx.pragma_query_value(None, "synchronous", |r| r.get::<_, i64>(0))
                .map_err(map_error)
        };
        boxed_retriable(job, durable)
    }

    #[test]
    fn a_group_of_resumable_jobs_alone_commits_without_waiting_for_the_disk() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut conn = connection(dir.path());
        configure(&conn, Durability::Full).expect("configure");
        let mut syncing = Durability::Full;
        // (jobs' durability, the `synchronous` they run under: 1 NORMAL, 2 FULL)
        for (jobs, expected) in [
            (vec![false, false], 1),
            (vec![false, true, false], 2),
            (vec![false], 1),
            (vec![true], 2),
        ] {
            let (mut group, replies): (Vec<_>, Vec<_>) = jobs.into_iter().map(synchronous).unzip();
            run_group_synced(&mut conn, &mut group, Durability::Full, &mut syncing);
            for mut reply in replies {
                assert_eq!(reply.try_recv().expect("answered").expect("ran"), expected);
            }
        }
        // A store opened for NORMAL never waits for the disk.
        let (job, mut reply) = synchronous(true);
        run_group_synced(&mut conn, &mut vec![job], Durability::Normal, &mut syncing);
        assert_eq!(reply.try_recv().expect("answered").expect("ran"), 1);
    }

    fn once(value: impl Into<String>) -> (Box<dyn WriteJob>, Reply) {
        let value = value.into();
        let (reply, answer) = oneshot::channel();
        let job = move |tx: &rusqlite::Transaction<'_>| {
            tx.execute("INSERT INTO t (v) VALUES (?1)", [value])
                .map(|_| ())
                .map_err(map_error)
        };
        (Box::new(TypedJob { job, reply }), answer)
    }

    fn rows(conn: &Connection) -> Vec<String> {
        conn.prepare("SELECT v FROM t ORDER BY v")
            .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
            .expect("rows")
    }

    fn answer(mut reply: Reply) -> StoreResult<()> {
        reply.try_recv().expect("the job was answered")
    }

    /// A full disk (here: the file's page limit) makes SQLite roll the whole transaction back.
    /// The jobs after it in the group must not run outside a transaction, where a savepoint
    /// would begin and commit one of its own while the job is told the group failed.
    #[test]
    fn after_sqlite_rolls_the_transaction_back_no_job_of_the_group_writes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut conn = connection(dir.path());
        conn.execute_batch("PRAGMA max_page_count = 8")
            .expect("page limit");
        // More than the file's page limit holds.
        let (fill, fill_reply) = once("x".repeat(200_000));
        let (after, after_reply) = once("after");
        run_group(&mut conn, &mut vec![once("before").0, fill, after]);
        assert!(answer(fill_reply).is_err());
        assert!(answer(after_reply).is_err(), "its group was not committed");
        assert!(conn.is_autocommit());
        assert_eq!(
            rows(&conn),
            Vec::<String>::new(),
            "nothing of the group was kept"
        );

        // The same among retriable jobs, which the group runs again job by job.
        let runs = Arc::new(AtomicUsize::new(0));
        let (fill, fill_reply) = retriable("y".repeat(200_000), false, runs.clone());
        let (first, first_reply) = retriable("first", false, runs.clone());
        let (last, last_reply) = retriable("last", false, runs.clone());
        run_group(&mut conn, &mut vec![first, fill, last]);
        for reply in [first_reply, fill_reply, last_reply] {
            assert!(answer(reply).is_err());
        }
        assert_eq!(
            rows(&conn),
            Vec::<String>::new(),
            "nothing of the retriable group was kept"
        );
    }

    #[test]
    fn a_group_that_succeeds_runs_each_retriable_job_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut conn = connection(dir.path());
        let runs = Arc::new(AtomicUsize::new(0));
        let (a, a_reply) = retriable("a", false, runs.clone());
        let (b, b_reply) = once("b");
        let (c, c_reply) = retriable("c", false, runs.clone());
        run_group(&mut conn, &mut vec![a, b, c]);
        for reply in [a_reply, b_reply, c_reply] {
            assert!(answer(reply).is_ok());
        }
        assert_eq!(runs.load(Ordering::SeqCst), 2);
        assert_eq!(rows(&conn), ["a", "b", "c"]);
    }

    #[test]
    fn a_failing_retriable_job_is_refused_alone_and_the_rest_of_its_group_stands() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut conn = connection(dir.path());
        let runs = Arc::new(AtomicUsize::new(0));
        let (a, a_reply) = retriable("a", false, runs.clone());
        let (b, b_reply) = retriable("b", true, runs.clone());
        let (c, c_reply) = once("c");
        let (d, d_reply) = retriable("d", false, runs.clone());
        run_group(&mut conn, &mut vec![a, b, c, d]);
        assert!(answer(a_reply).is_ok());
        let refused = answer(b_reply).expect_err("b fails");
        assert!(refused.to_string().contains("b fails"), "{refused}");
        assert!(answer(c_reply).is_ok());
        assert!(answer(d_reply).is_ok());
        // a and b ran without savepoints, then the group ran again job by job.
        assert_eq!(runs.load(Ordering::SeqCst), 5);
        // b's insert, made before it failed, is gone; a's is there once.
        assert_eq!(rows(&conn), ["a", "c", "d"]);
    }
}
