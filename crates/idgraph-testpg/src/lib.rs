//! Throwaway PostgreSQL for tests: one private cluster per test process, one fresh database per test.

use std::fs;
use std::hash::BuildHasher;
use std::io::Write;
use std::os::unix::fs::{PermissionsExt, chown};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio_postgres::NoTls;

/// A database handed to one test: its connection URL. Dropping it does nothing (the cluster is shared).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestDatabase {
    /// Connection URL of the database, e.g. `postgres://idgraph@127.0.0.1:PORT/NAME`.
    pub url: String,
    /// Name of the database the URL points at.
    pub name: String,
}

/// The port of the process-wide cluster, or why it could not be started. Started at most once:
/// retrying after a failure would only repeat the same slow failure in every test.
static CLUSTER: OnceLock<Result<u16, String>> = OnceLock::new();
/// The same for [`durable_database`]'s cluster.
static DURABLE_CLUSTER: OnceLock<Result<u16, String>> = OnceLock::new();
static COUNTER: AtomicU64 = AtomicU64::new(0);

/// User owning the throwaway cluster's files and processes when we are root.
type RunAs = Option<(u32, u32)>;

/// Returns a fresh, empty database for one test, or None when PostgreSQL is unavailable.
///
/// Uses `IDGRAPH_TEST_DATABASE_URL` when set, otherwise a throwaway cluster started once per
/// process. When neither works it panics if `IDGRAPH_REQUIRE_POSTGRES` is `1`/`true`, and
/// otherwise prints a loud `SKIPPED` banner to stderr and returns None.
pub async fn test_database() -> Option<TestDatabase> {
    match provision().await {
        Ok(db) => Some(db),
        Err(reason) => unavailable(&reason),
    }
}

/// A fresh, empty database on a throwaway cluster that keeps PostgreSQL's default durability
/// (fsync, synchronous commit and full page writes on, which the tests' cluster turns off), for
/// benchmarks whose figures must compare with a real server's. Started once per process from
/// the system's PostgreSQL binaries, and stopped and deleted once the process has exited.
pub async fn durable_database() -> Result<TestDatabase, String> {
    let port = tokio::task::spawn_blocking(|| {
        DURABLE_CLUSTER
            .get_or_init(|| start_cluster(Durability::Durable))
            .clone()
    })
    .await
    .map_err(|e| format!("cluster start-up task failed: {e}"))??;
    let name = unique_name();
    let base = format!("postgres://idgraph@127.0.0.1:{port}");
    create_database(&format!("{base}/postgres"), &name, "the throwaway cluster").await?;
    Ok(TestDatabase {
        url: format!("{base}/{name}"),
        name,
    })
}

/// Same, for code that is not async (blocks on its own small runtime or thread).
pub fn test_database_blocking() -> Option<TestDatabase> {
    // A separate thread keeps this usable from inside another runtime, where block_on would panic.
    std::thread::spawn(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("building a tokio runtime for test_database_blocking")
            .block_on(test_database())
    })
    .join()
    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

/// Directory holding `initdb`, `pg_ctl` and `postgres`: `IDGRAPH_PG_BIN`, else the newest
/// `/usr/lib/postgresql/<ver>/bin`, else `pg_config --bindir`. None when PostgreSQL is absent.
pub fn postgres_bin_dir() -> Option<PathBuf> {
    let usable = |dir: PathBuf| {
        ["initdb", "pg_ctl", "postgres"]
            .iter()
            .all(|tool| dir.join(tool).is_file())
            .then_some(dir)
    };
    // An explicit override that is wrong should surface, not silently pick another version.
    if let Some(dir) = std::env::var_os("IDGRAPH_PG_BIN") {
        return usable(dir.into());
    }
    let newest = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            let version: Option<Vec<u32>> = name.split('.').map(|p| p.parse().ok()).collect();
            Some((version?, entry.path().join("bin")))
        })
        .max_by(|a, b| a.0.cmp(&b.0));
    if let Some(dir) = newest.and_then(|(_, dir)| usable(dir)) {
        return Some(dir);
    }
    let out = Command::new("pg_config").arg("--bindir").output().ok()?;
    let dir = String::from_utf8(out.stdout).ok()?;
    usable(PathBuf::from(dir.trim()))
}

async fn provision() -> Result<TestDatabase, String> {
    let name = unique_name();
    if let Some(url) = std::env::var("IDGRAPH_TEST_DATABASE_URL")
        .ok()
        .filter(|u| !u.is_empty())
    {
        // Without a database libpq would pick one named after the user, which rarely exists.
        let parsed = url.parse::<tokio_postgres::Config>();
        let admin_url = match parsed.map(|c| c.get_dbname().is_none()) {
            Ok(true) => with_dbname(&url, "postgres"),
            _ => url.clone(),
        };
        create_database(&admin_url, &name, "IDGRAPH_TEST_DATABASE_URL").await?;
        return Ok(TestDatabase {
            url: with_dbname(&url, &name),
            name,
        });
    }
    // Initialisation blocks for seconds; doing it on the blocking pool keeps current_thread
    // runtimes (the #[tokio::test] default) free to drive other tests meanwhile.
    let port = tokio::task::spawn_blocking(|| {
        CLUSTER
            .get_or_init(|| start_cluster(Durability::Fast))
            .clone()
    })
    .await
    .map_err(|e| format!("cluster start-up task failed: {e}"))??;
    let base = format!("postgres://idgraph@127.0.0.1:{port}");
    create_database(&format!("{base}/postgres"), &name, "the throwaway cluster").await?;
    Ok(TestDatabase {
        url: format!("{base}/{name}"),
        name,
    })
}

async fn create_database(admin_url: &str, name: &str, what: &str) -> Result<(), String> {
    // `what` rather than the URL goes into messages: the URL may carry a password.
    let (client, connection) = tokio_postgres::connect(admin_url, NoTls)
        .await
        .map_err(|e| format!("cannot connect to {what}: {}", describe(&e)))?;
    tokio::spawn(connection);
    client
        .batch_execute(&format!("CREATE DATABASE \"{name}\""))
        .await
        .map_err(|e| format!("CREATE DATABASE {name} on {what} failed: {}", describe(&e)))
}

/// tokio-postgres' Display says only "db error"; the useful part is in the source chain.
fn describe(error: &tokio_postgres::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text = format!("{text}: {cause}");
        source = cause.source();
    }
    text
}

/// Replaces the database of a URL or key=value connection string, keeping everything else.
fn with_dbname(url: &str, name: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, tail) = rest.split_at(rest.find(['/', '?']).unwrap_or(rest.len()));
            let query = tail.find('?').map_or("", |i| &tail[i..]);
            format!("{scheme}://{authority}/{name}{query}")
        }
        // In key=value form the last dbname wins.
        None => format!("{url} dbname={name}"),
    }
}

fn unique_name() -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    // The random part avoids clashing with databases left on a shared server by an earlier run
    // that happened to have the same pid.
    let random = std::collections::hash_map::RandomState::new().hash_one(n) as u32;
    format!("idgraph_test_{}_{n}_{random:08x}", std::process::id())
}

fn unavailable(reason: &str) -> Option<TestDatabase> {
    let required = std::env::var("IDGRAPH_REQUIRE_POSTGRES")
        .is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
    if required {
        panic!("IDGRAPH_REQUIRE_POSTGRES is set but PostgreSQL could not be provisioned: {reason}");
    }
    // Written to the stderr handle, not with eprintln!: the test harness captures the print
    // macros of passing tests, and a silently skipped suite is what this banner exists to prevent.
    let banner = "=".repeat(78);
    let _ = writeln!(
        std::io::stderr(),
        "\n{banner}\nSKIPPED: PostgreSQL tests did not run: {reason}\n\
         (set IDGRAPH_REQUIRE_POSTGRES=1 to turn this into a failure)\n{banner}"
    );
    None
}

/// How a throwaway cluster treats its disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Durability {
    /// fsync, synchronous commit and full page writes off: tests do not survive a power cut.
    Fast,
    /// PostgreSQL's defaults.
    Durable,
}

fn start_cluster(durability: Durability) -> Result<u16, String> {
    let bin = postgres_bin_dir().ok_or(
        "no PostgreSQL server binaries (checked IDGRAPH_PG_BIN, /usr/lib/postgresql/*/bin, \
         pg_config --bindir)",
    )?;
    // PostgreSQL refuses to run as root.
    let run_as = is_root().then(nobody);
    let dir = make_cluster_dir(run_as)?;
    spawn_watchdog(&bin, &dir, run_as.is_some())?;
    let data = dir.join("data");
    let log = dir.join("postgres.log");
    run(
        pg_command(&bin, "initdb", &dir, run_as)
            .arg("-D")
            .arg(&data)
            .args("-U idgraph --auth=trust --encoding=UTF8 --locale=C --no-sync".split(' ')),
        "initdb",
    )?;
    let socket_dir = dir.to_string_lossy().replace('\'', "''");
    let mut settings = format!(
        "\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{socket_dir}'\n\
         max_connections = 200\n"
    );
    if durability == Durability::Fast {
        settings.push_str("fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n");
    }
    fs::OpenOptions::new()
        .append(true)
        .open(data.join("postgresql.conf"))
        .and_then(|mut f| f.write_all(settings.as_bytes()))
        .map_err(|e| format!("cannot write postgresql.conf: {e}"))?;
    // The port is free when probed but may be taken before postgres binds it; retry a few times.
    let mut last_error = String::new();
    for _ in 0..3 {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("cannot find a free port on 127.0.0.1: {e}"))?
            .port();
        let started = run(
            pg_command(&bin, "pg_ctl", &dir, run_as)
                .arg("-D")
                .arg(&data)
                .arg("-l")
                .arg(&log)
                .args(["-w", "-t", "60", "-o", &format!("-p {port}"), "start"]),
            "pg_ctl start",
        );
        match started {
            Ok(()) => return Ok(port),
            Err(e) => {
                last_error = format!("{e}\n--- tail of {} ---\n{}", log.display(), tail(&log))
            }
        }
    }
    Err(last_error)
}

/// Stops the cluster and deletes its directory once this process is gone. Statics are never
/// dropped and the harness may exit abruptly, so only an outside process can clean up reliably.
fn spawn_watchdog(bin: &Path, dir: &Path, as_nobody: bool) -> Result<(), String> {
    // pg_ctl refuses to run as root; the kill fallback covers a missing runuser or pg_ctl failure.
    let stop_as = if as_nobody {
        "runuser -u nobody -- "
    } else {
        ""
    };
    let script = format!(
        "while kill -0 \"$1\" 2>/dev/null; do sleep 0.5; done\n\
         {stop_as}\"$2\" -D \"$3/data\" stop -m immediate \
         || kill -QUIT \"$(head -n 1 \"$3/data/postmaster.pid\")\"\n\
         rm -rf \"$3\"\n"
    );
    let child = Command::new("sh")
        .arg("-c")
        .arg(script)
        .arg("idgraph-testpg-watchdog")
        .arg(std::process::id().to_string())
        .arg(bin.join("pg_ctl"))
        .arg(dir)
        .current_dir("/")
        // Inherited pipes would make `cargo test` wait for EOF until the watchdog exits.
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        // Own process group: a Ctrl-C aimed at the tests must not also kill their cleaner.
        .process_group(0)
        .spawn()
        .map_err(|e| format!("cannot start the cleanup watchdog: {e}"))?;
    // Deliberately never waited for: it must outlive us, and init reaps it afterwards.
    drop(child);
    Ok(())
}

fn pg_command(bin: &Path, tool: &str, dir: &Path, run_as: RunAs) -> Command {
    let mut cmd = Command::new(bin.join(tool));
    // The test's own working directory may be unreadable for `nobody`, which upsets pg_ctl.
    cmd.current_dir(dir).stdin(Stdio::null());
    if let Some((uid, gid)) = run_as {
        cmd.uid(uid).gid(gid);
    }
    cmd
}

fn run(cmd: &mut Command, what: &str) -> Result<(), String> {
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run {what}: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    Err(format!("{what} failed ({}):\n{stdout}{stderr}", out.status))
}

fn make_cluster_dir(run_as: RunAs) -> Result<PathBuf, String> {
    let mut base = std::env::temp_dir();
    // `nobody` must be able to reach the cluster through every parent directory.
    let traversable = |p: &Path| {
        p.ancestors()
            .all(|a| fs::metadata(a).is_ok_and(|m| m.permissions().mode() & 0o001 != 0))
    };
    if run_as.is_some() && !traversable(&base) {
        base = PathBuf::from("/tmp");
    }
    let dir = tempfile::Builder::new()
        .prefix("idgraph-testpg-")
        .tempdir_in(&base)
        .map_err(|e| format!("cannot create a directory under {}: {e}", base.display()))?
        .keep();
    if let Some((uid, gid)) = run_as {
        chown(&dir, Some(uid), Some(gid))
            .map_err(|e| format!("cannot chown {} to nobody: {e}", dir.display()))?;
    }
    Ok(dir)
}

/// Effective uid 0, read from /proc (or `id -u`) because getuid would need unsafe libc.
fn is_root() -> bool {
    let from_proc = fs::read_to_string("/proc/self/status").ok().and_then(|s| {
        let uids = s.lines().find_map(|l| l.strip_prefix("Uid:"))?;
        uids.split_whitespace().nth(1).map(|euid| euid == "0")
    });
    from_proc.unwrap_or_else(|| {
        Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| o.stdout.trim_ascii() == b"0")
    })
}

fn nobody() -> (u32, u32) {
    let passwd = fs::read_to_string("/etc/passwd").unwrap_or_default();
    passwd
        .lines()
        .find_map(|line| {
            let mut fields = line.split(':');
            if fields.next() != Some("nobody") {
                return None;
            }
            let mut ids = fields.skip(1).map(|f| f.parse().ok());
            Some((ids.next()??, ids.next()??))
        })
        .unwrap_or((65534, 65534))
}

fn tail(log: &Path) -> String {
    let text = fs::read_to_string(log).unwrap_or_else(|e| format!("(unreadable: {e})"));
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}
