//! The idgraph server under test: a child process on a free loopback port with a fresh store,
//! stopped with SIGTERM on every way out of the benchmark (including errors and Ctrl-C).

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rand::RngExt;
use rand::distr::Alphanumeric;
use serde::Serialize;

use crate::progress;

const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// idgraph's own shutdown grace is 30 s by default; past that it is stuck, not draining.
const STOP_TIMEOUT: Duration = Duration::from_secs(40);

/// Which store the server runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct ServerOptions {
    pub(crate) binary: PathBuf,
    pub(crate) backend: Backend,
    pub(crate) database_url: Option<String>,
    /// Starts the server with `unsafe_plaintext_pii`: the baseline of what sealing PII costs.
    pub(crate) plaintext_pii: bool,
}

/// Memory of the server process, from `/proc/<pid>/status`.
#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) struct Memory {
    /// VmHWM: the peak resident set since the process started.
    pub(crate) peak_rss_bytes: u64,
    /// VmRSS at the time of reading.
    pub(crate) rss_bytes: u64,
}

/// The server process over a run: memory, footprint, log and shutdown.
#[derive(Debug, Serialize)]
pub(crate) struct ServerFigures {
    pub(crate) memory_after_start: Memory,
    pub(crate) memory_at_end: Memory,
    /// Files in the SQLite data dir at the end; absent for PostgreSQL.
    pub(crate) store_bytes: Option<u64>,
    pub(crate) log: LogProblems,
    pub(crate) stopped: Stopped,
    /// Resident memory over the run, when it was sampled.
    pub(crate) rss_trace: Option<RssTrace>,
}

/// Resident memory sampled while the workload ran: if memory grows with the input, the second
/// half of the run peaks well above the first.
#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) struct RssTrace {
    pub(crate) samples: usize,
    pub(crate) first_half_max_bytes: u64,
    pub(crate) second_half_max_bytes: u64,
}

impl RssTrace {
    fn of(samples: &[u64]) -> Option<Self> {
        if samples.len() < 2 {
            return None;
        }
        let (first, second) = samples.split_at(samples.len() / 2);
        Some(Self {
            samples: samples.len(),
            first_half_max_bytes: first.iter().copied().max().unwrap_or(0),
            second_half_max_bytes: second.iter().copied().max().unwrap_or(0),
        })
    }

    pub(crate) fn growth(&self) -> f64 {
        self.second_half_max_bytes as f64 / self.first_half_max_bytes.max(1) as f64
    }
}

/// A thread reading the server's VmRSS every few tens of milliseconds until stopped.
#[derive(Debug)]
struct Sampler {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<Vec<u64>>,
}

impl Sampler {
    fn start(pid: u32) -> Self {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopping = std::sync::Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let path = format!("/proc/{pid}/status");
            let mut samples = Vec::new();
            while !stopping.load(std::sync::atomic::Ordering::Relaxed) {
                if let Some(memory) = std::fs::read_to_string(&path)
                    .ok()
                    .and_then(|s| parse_memory(&s))
                {
                    samples.push(memory.rss_bytes);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            samples
        });
        Self { stop, thread }
    }

    fn finish(self) -> Vec<u64> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().unwrap_or_default()
    }
}

/// How the server ended when asked to.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Stopped {
    pub(crate) exit: String,
    pub(crate) clean: bool,
    pub(crate) seconds: f64,
}

/// A running idgraph. Dropping it stops the process and then removes its temporary directory,
/// with the data dir unless it was a [`KeptStore`]'s.
#[derive(Debug)]
pub(crate) struct ServerProcess {
    child: Option<Child>,
    pid: u32,
    backend: Backend,
    version: String,
    base_url: String,
    master_key: String,
    log_path: PathBuf,
    /// The embedded store's data dir (unused on PostgreSQL).
    data_dir: PathBuf,
    sampler: Option<Sampler>,
    // Dropped after `Drop::drop` has stopped the process that writes into it.
    _dir: tempfile::TempDir,
}

/// An embedded store kept between runs, at a directory of the caller's choosing, with the master
/// key its first server was started with.
#[derive(Debug, Clone)]
pub(crate) struct KeptStore {
    pub(crate) data_dir: PathBuf,
    pub(crate) master_key: String,
}

impl KeptStore {
    /// A store not made yet: the first server creates it with a new master key.
    pub(crate) fn new(data_dir: PathBuf) -> Self {
        Self {
            data_dir,
            master_key: random_master_key(),
        }
    }
}

impl ServerProcess {
    /// Starts the server on a fresh store and waits until `GET /healthz` answers 200.
    pub(crate) async fn start(
        options: &ServerOptions,
        client: &reqwest::Client,
    ) -> anyhow::Result<Self> {
        Self::start_on(options, client, None).await
    }

    /// Starts the server, on `kept`'s data dir if given (the embedded store only), and waits
    /// until `GET /healthz` answers 200.
    pub(crate) async fn start_on(
        options: &ServerOptions,
        client: &reqwest::Client,
        kept: Option<&KeptStore>,
    ) -> anyhow::Result<Self> {
        if kept.is_some() && options.backend != Backend::Sqlite {
            bail!("a kept store is an embedded one: it needs --backend sqlite");
        }
        let dir = tempfile::Builder::new()
            .prefix("idgraph-bench-")
            .tempdir()
            .context("cannot create a temporary directory for the server")?;
        let data_dir = kept.map_or_else(|| dir.path().join("data"), |k| k.data_dir.clone());
        let log_path = dir.path().join("server.log");
        let log = File::create(&log_path)
            .with_context(|| format!("cannot create {}", log_path.display()))?;
        // The server runs in its temporary directory: a relative path must not depend on that.
        let binary = std::path::absolute(&options.binary)
            .with_context(|| format!("cannot resolve {}", options.binary.display()))?;
        let version = version_of(&binary)?;
        let port = free_port()?;
        let master_key = kept.map_or_else(random_master_key, |k| k.master_key.clone());

        let mut command = Command::new(&binary);
        command
            .arg("serve")
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--master-key")
            .arg(&master_key)
            .arg("--log-format")
            .arg("json");
        match options.backend {
            Backend::Sqlite => {
                command.arg("--data-dir").arg(&data_dir);
            }
            Backend::Postgres => {
                let url = options
                    .database_url
                    .as_deref()
                    .context("--backend postgres needs --database-url")?;
                command.arg("--database-url").arg(url);
            }
        }
        // Settings from the caller's environment would change what is measured (an
        // IDGRAPH_DATABASE_URL would even switch the backend): only the flags above count.
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("IDGRAPH_") {
                command.env_remove(name);
            }
        }
        // A production server on PostgreSQL has a data key, so PII is sealed as it would be
        // (the embedded store generates its own key file).
        if options.backend == Backend::Postgres {
            command.env("IDGRAPH_DATA_KEY", random_data_key());
        }
        if options.plaintext_pii {
            command.env("IDGRAPH_UNSAFE_PLAINTEXT_PII", "true");
        }
        // stderr goes to a file: a pipe nobody drains would stall the server once its
        // per-request log lines filled it.
        command
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log));
        let child = command
            .spawn()
            .with_context(|| format!("cannot start {}", options.binary.display()))?;
        let pid = child.id();
        let mut server = Self {
            child: Some(child),
            pid,
            backend: options.backend,
            version,
            base_url: format!("http://127.0.0.1:{port}"),
            master_key,
            log_path,
            data_dir,
            sampler: None,
            _dir: dir,
        };
        server.wait_ready(client).await?;
        Ok(server)
    }

    /// Starts sampling the server's resident memory, for [`ServerFigures::rss_trace`]: call it
    /// when the workload's input starts to flow.
    pub(crate) fn start_sampling(&mut self) {
        self.sampler = Some(Sampler::start(self.pid));
    }

    pub(crate) fn base_url(&self) -> &str {
        &self.base_url
    }

    /// What `idgraph --version` printed.
    pub(crate) fn version(&self) -> &str {
        &self.version
    }

    pub(crate) fn master_key(&self) -> &str {
        &self.master_key
    }

    async fn wait_ready(&mut self, client: &reqwest::Client) -> anyhow::Result<()> {
        let started = Instant::now();
        let url = format!("{}/healthz", self.base_url);
        loop {
            self.check_running()?;
            let answer = client
                .get(&url)
                .timeout(Duration::from_secs(2))
                .send()
                .await;
            if let Ok(response) = answer
                && response.status() == reqwest::StatusCode::OK
            {
                return Ok(());
            }
            if started.elapsed() > READY_TIMEOUT {
                bail!(
                    "idgraph did not answer GET /healthz with 200 within {} s; from its log:\n{}",
                    READY_TIMEOUT.as_secs(),
                    self.log_tail(20)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// An error with the server's last log lines if the process has exited.
    pub(crate) fn check_running(&mut self) -> anyhow::Result<()> {
        let Some(child) = self.child.as_mut() else {
            bail!("idgraph was already stopped");
        };
        if let Some(status) = child
            .try_wait()
            .context("cannot poll the idgraph process")?
        {
            self.child = None;
            bail!(
                "idgraph exited ({status}); from its log:\n{}",
                self.log_tail(20)
            );
        }
        Ok(())
    }

    pub(crate) fn memory(&self) -> anyhow::Result<Memory> {
        let path = format!("/proc/{}/status", self.pid);
        let status =
            std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
        parse_memory(&status).with_context(|| format!("no VmHWM/VmRSS in {path}"))
    }

    /// Bytes the process has passed to write calls so far (`wchar` of `/proc/<pid>/io`): for
    /// the embedded store, the WAL frames, the checkpoints' copies and the log files.
    pub(crate) fn bytes_written(&self) -> anyhow::Result<u64> {
        let path = format!("/proc/{}/io", self.pid);
        let io = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
        parse_bytes_written(&io).with_context(|| format!("no wchar in {path}"))
    }

    /// CPU time the process has used so far, user and system, in seconds.
    pub(crate) fn cpu_seconds(&self) -> anyhow::Result<f64> {
        let path = format!("/proc/{}/stat", self.pid);
        let stat = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
        parse_cpu_seconds(&stat, rustix::param::clock_ticks_per_second())
            .with_context(|| format!("no utime/stime in {path}"))
    }

    /// SIGTERM, then wait for the exit (SIGKILL if it does not come).
    pub(crate) fn stop(&mut self) -> anyhow::Result<Stopped> {
        let Some(mut child) = self.child.take() else {
            bail!("idgraph was already stopped");
        };
        let started = Instant::now();
        let pid = i32::try_from(self.pid)
            .ok()
            .and_then(rustix::process::Pid::from_raw)
            .context("the idgraph process id is not a valid pid")?;
        if child.try_wait()?.is_none() {
            rustix::process::kill_process(pid, rustix::process::Signal::TERM)
                .context("cannot send SIGTERM to idgraph")?;
        }
        loop {
            if let Some(status) = child.try_wait().context("cannot wait for idgraph")? {
                return Ok(Stopped {
                    exit: describe_exit(status),
                    clean: status.success(),
                    seconds: started.elapsed().as_secs_f64(),
                });
            }
            if started.elapsed() > STOP_TIMEOUT {
                let _ = child.kill();
                let status = child.wait().context("cannot wait for idgraph")?;
                bail!(
                    "idgraph did not exit within {} s of SIGTERM and was killed ({status})",
                    STOP_TIMEOUT.as_secs()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The end of what the server wrote to stderr, for error messages: its last lines other than
    /// routine INFO lines (per-request lines would bury a panic or an error), or the last few
    /// lines if there is nothing else.
    pub(crate) fn log_tail(&self, lines: usize) -> String {
        match std::fs::read_to_string(&self.log_path) {
            Ok(text) => log_excerpt(&text, lines),
            Err(e) => format!("(cannot read the server log: {e})"),
        }
    }

    /// Log lines at WARN or ERROR: a benchmark run should not produce any.
    pub(crate) fn log_problems(&self) -> anyhow::Result<LogProblems> {
        log_problems(&self.log_path)
    }

    /// Stops the server and collects its memory (read just before), log and store size.
    pub(crate) fn finish(&mut self, memory_after_start: Memory) -> anyhow::Result<ServerFigures> {
        let memory_at_end = self.memory()?;
        let rss_trace = self
            .sampler
            .take()
            .and_then(|sampler| RssTrace::of(&sampler.finish()));
        progress("stopping idgraph");
        let stopped = self.stop()?;
        // Read after the stop so that complaints during shutdown count too.
        let log = self.log_problems()?;
        // Measured after the stop, when SQLite has checkpointed its WAL into the database file.
        let store_bytes = match self.backend {
            Backend::Sqlite => Some(directory_bytes(&self.data_dir)?),
            Backend::Postgres => None,
        };
        Ok(ServerFigures {
            memory_after_start,
            memory_at_end,
            store_bytes,
            log,
            stopped,
            rss_trace,
        })
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if self.child.is_some()
            && let Err(e) = self.stop()
        {
            progress(&format!("stopping idgraph: {e:#}"));
        }
    }
}

/// Warnings and errors from the server's JSON log lines.
#[derive(Debug, Default, Clone, Serialize)]
pub(crate) struct LogProblems {
    pub(crate) warnings: u64,
    pub(crate) errors: u64,
    /// The first few, as logged.
    pub(crate) first: Vec<String>,
}

fn log_problems(path: &Path) -> anyhow::Result<LogProblems> {
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut problems = LogProblems::default();
    for line in BufReader::new(file).lines() {
        let line = line.with_context(|| format!("cannot read {}", path.display()))?;
        let level = serde_json::from_str::<serde_json::Value>(&line)
            .ok()
            .and_then(|v| v.get("level").and_then(|l| l.as_str()).map(str::to_owned));
        let is_problem = match level.as_deref() {
            Some("WARN") => {
                problems.warnings += 1;
                true
            }
            Some("ERROR") => {
                problems.errors += 1;
                true
            }
            Some(_) => false,
            // Not a log line (a panic message, say): worth showing.
            None => {
                problems.errors += 1;
                true
            }
        };
        if is_problem && problems.first.len() < 5 {
            problems.first.push(line);
        }
    }
    Ok(problems)
}

/// Total size of the files under `dir`, for the store's footprint on disk.
fn directory_bytes(dir: &std::path::Path) -> anyhow::Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let entry = entry.with_context(|| format!("cannot list {}", dir.display()))?;
        let meta = entry
            .metadata()
            .with_context(|| format!("cannot stat {}", entry.path().display()))?;
        total += if meta.is_dir() {
            directory_bytes(&entry.path())?
        } else {
            meta.len()
        };
    }
    Ok(total)
}

fn log_excerpt(text: &str, lines: usize) -> String {
    let is_routine = |line: &str| {
        serde_json::from_str::<serde_json::Value>(line)
            .ok()
            .and_then(|v| v.get("level").and_then(|l| l.as_str()).map(|l| l == "INFO"))
            .unwrap_or(false)
    };
    let notable: Vec<&str> = text.lines().filter(|l| !is_routine(l)).collect();
    let chosen: Vec<&str> = if notable.is_empty() {
        text.lines().collect()
    } else {
        notable
    };
    let keep = lines.min(chosen.len());
    let excerpt = chosen[chosen.len() - keep..].join("\n");
    if excerpt.is_empty() {
        "(the server log is empty)".to_owned()
    } else {
        excerpt
    }
}

fn describe_exit(status: ExitStatus) -> String {
    match status.code() {
        Some(code) => format!("exit code {code}"),
        None => status.to_string(),
    }
}

/// `idgraph --version`, for the record; also a cheap check that the path is an idgraph binary.
pub(crate) fn version_of(binary: &Path) -> anyhow::Result<String> {
    let output = Command::new(binary)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {}", binary.display()))?;
    let printed = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    if !output.status.success() || !printed.starts_with("idgraph") {
        bail!(
            "{} --version did not print an idgraph version (got {printed:?}, {})",
            binary.display(),
            describe_exit(output.status)
        );
    }
    Ok(printed)
}

/// A port nobody listens on right now. The server binds it a moment later; a collision in
/// between shows up as the server failing to start, with its log.
fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
        .context("cannot find a free loopback port")?;
    Ok(listener.local_addr()?.port())
}

fn random_data_key() -> String {
    use base64::Engine;
    let mut key = [0u8; 32];
    rand::fill(&mut key);
    base64::engine::general_purpose::STANDARD.encode(key)
}

fn random_master_key() -> String {
    let suffix: String = rand::rng()
        .sample_iter(Alphanumeric)
        .take(40)
        .map(char::from)
        .collect();
    format!("bench-master-{suffix}")
}

/// utime + stime of a `/proc/<pid>/stat` line. The command name (field 2) may hold spaces and
/// parentheses, so the fields are counted from the last `)`.
fn parse_cpu_seconds(stat: &str, ticks_per_second: u64) -> Option<f64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let user: u64 = fields.next()?.parse().ok()?;
    let system: u64 = fields.next()?.parse().ok()?;
    Some((user + system) as f64 / ticks_per_second.max(1) as f64)
}

fn parse_bytes_written(io: &str) -> Option<u64> {
    io.lines()
        .find_map(|line| line.strip_prefix("wchar:"))?
        .trim()
        .parse()
        .ok()
}

pub(crate) fn parse_memory(status: &str) -> Option<Memory> {
    let kilobytes = |field: &str| -> Option<u64> {
        let line = status.lines().find(|l| l.starts_with(field))?;
        line[field.len()..]
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()
    };
    Some(Memory {
        peak_rss_bytes: kilobytes("VmHWM:")? * 1024,
        rss_bytes: kilobytes("VmRSS:")? * 1024,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_written_are_read_from_wchar() {
        let io = "rchar: 5120\nwchar: 1048576\nsyscr: 10\nsyscw: 4\nwrite_bytes: 8192\n";
        assert_eq!(parse_bytes_written(io), Some(1_048_576));
        assert_eq!(parse_bytes_written("rchar: 5120\n"), None);
    }

    #[test]
    fn cpu_time_is_read_past_a_command_name_with_spaces() {
        let stat = "4242 (idgraph (x) y) S 1 4242 4242 0 -1 4194560 900 0 3 0 250 130 0 0 20 0 9 0";
        assert_eq!(parse_cpu_seconds(stat, 100), Some(3.8));
        assert_eq!(parse_cpu_seconds("4242 (idgraph) S 1", 100), None);
    }

    #[test]
    fn proc_status_memory_is_parsed() {
        let status =
            "Name:\tidgraph\nVmPeak:\t  999 kB\nVmHWM:\t   87040 kB\nVmRSS:\t   51200 kB\n";
        let memory = parse_memory(status).unwrap();
        assert_eq!(memory.peak_rss_bytes, 87040 * 1024);
        assert_eq!(memory.rss_bytes, 51200 * 1024);
        assert!(parse_memory("Name:\tx\n").is_none());
    }

    #[test]
    fn problems_are_counted_from_json_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        std::fs::write(
            &path,
            concat!(
                "{\"level\":\"INFO\",\"fields\":{\"message\":\"request\"}}\n",
                "{\"level\":\"WARN\",\"fields\":{\"message\":\"slow\"}}\n",
                "thread 'main' panicked\n",
                "{\"level\":\"ERROR\",\"fields\":{\"message\":\"boom\"}}\n",
            ),
        )
        .unwrap();
        let problems = log_problems(&path).unwrap();
        assert_eq!((problems.warnings, problems.errors), (1, 2));
        assert_eq!(problems.first.len(), 3);
    }

    #[test]
    fn excerpts_skip_routine_lines() {
        let text = "{\"level\":\"INFO\",\"message\":\"a\"}\nerror: cannot listen\n{\"level\":\"INFO\",\"message\":\"b\"}\n";
        assert_eq!(log_excerpt(text, 40), "error: cannot listen");
        let routine =
            "{\"level\":\"INFO\",\"message\":\"a\"}\n{\"level\":\"INFO\",\"message\":\"b\"}\n";
        assert_eq!(
            log_excerpt(routine, 1),
            "{\"level\":\"INFO\",\"message\":\"b\"}"
        );
        assert_eq!(log_excerpt("", 5), "(the server log is empty)");
    }

    #[test]
    fn master_keys_are_long_enough_and_differ() {
        let (a, b) = (random_master_key(), random_master_key());
        assert!(a.len() >= 32);
        assert_ne!(a, b);
        assert!(!a.chars().any(char::is_whitespace));
    }
}
