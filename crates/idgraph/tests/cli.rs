//! End-to-end tests of the `idgraph` binary: command-line errors, the master key bootstrap, the
//! data dir's guards, graceful shutdown, and several processes sharing one PostgreSQL database.
//!
//! Every test runs the real binary as a child process, talks to it only on 127.0.0.1, and kills
//! it if the test fails (see [`Proc`]'s `Drop`).

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_idgraph");
/// An operator-chosen master key: 30 characters, not in idgraph's generated format.
const CHOSEN_KEY: &str = "e2e-chosen-master-key-30-chars";
/// How a generated master key starts (tenant `default`, key id `master`).
const GENERATED_PREFIX: &str = "idg_default_master_";
/// Generous deadlines: the machine may have two cores and be busy compiling.
const STARTUP: Duration = Duration::from_secs(30);
const EXIT: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------------------------
// Child processes
// ---------------------------------------------------------------------------------------------

/// A command running the binary, with no `IDGRAPH_*` configuration inherited from the
/// environment of the test run.
fn idgraph(args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // A panic would then print "stack backtrace", which the error checks look for.
        .env("RUST_BACKTRACE", "1");
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("IDGRAPH_") {
            cmd.env_remove(name);
        }
    }
    cmd
}

/// Collects one of a child's pipes on a thread, so a test can look at it while the child runs.
struct Capture {
    bytes: Arc<Mutex<Vec<u8>>>,
    reader: Option<JoinHandle<()>>,
}

impl Capture {
    fn start(mut pipe: impl Read + Send + 'static) -> Self {
        let bytes = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&bytes);
        let reader = std::thread::spawn(move || {
            let mut chunk = [0u8; 8192];
            loop {
                match pipe.read(&mut chunk) {
                    Ok(0) => break,
                    Ok(n) => sink
                        .lock()
                        .expect("capture lock")
                        .extend_from_slice(&chunk[..n]),
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
        });
        Self {
            bytes,
            reader: Some(reader),
        }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes.lock().expect("capture lock")).into_owned()
    }

    /// Waits for the end of the pipe (the child has exited), so `text` is complete.
    fn finish(&mut self) {
        if let Some(reader) = self.reader.take() {
            reader.join().expect("the capture thread panicked");
        }
    }
}

/// A child `idgraph` process. Dropping it kills the child, so a failing test leaves nothing behind.
struct Proc {
    child: Child,
    stdout: Capture,
    stderr: Capture,
    status: Option<ExitStatus>,
}

impl Proc {
    fn spawn(mut cmd: Command) -> Self {
        let mut child = cmd.spawn().expect("spawning the idgraph binary");
        let stdout = Capture::start(child.stdout.take().expect("piped stdout"));
        let stderr = Capture::start(child.stderr.take().expect("piped stderr"));
        Self {
            child,
            stdout,
            stderr,
            status: None,
        }
    }

    fn stdout(&self) -> String {
        self.stdout.text()
    }

    fn stderr(&self) -> String {
        self.stderr.text()
    }

    /// Sends a signal ("TERM", "INT") with kill(1): the crate forbids the unsafe code libc needs.
    fn signal(&self, name: &str) {
        let sent = Command::new("kill")
            .args([format!("-{name}"), self.child.id().to_string()])
            .status()
            .expect("running kill");
        assert!(sent.success(), "kill -{name} failed: {sent}");
    }

    /// The exit status if the child has exited; its output is then complete.
    fn try_exit(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            let status = self.child.try_wait().expect("polling the child")?;
            self.stdout.finish();
            self.stderr.finish();
            self.status = Some(status);
        }
        self.status
    }

    /// Waits for the child to exit; kills it and fails the test after `within`.
    fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.try_exit() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "idgraph did not exit within {within:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
                    self.stdout(),
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.status.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// What a finished run left behind.
struct Finished {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

/// Runs the binary to completion; fails the test if it takes longer than `within`.
fn run_within(args: &[&str], within: Duration) -> Finished {
    let mut proc = Proc::spawn(idgraph(args));
    let status = proc.wait_exit(within);
    Finished {
        status,
        stdout: proc.stdout(),
        stderr: proc.stderr(),
    }
}

fn run(args: &[&str]) -> Finished {
    run_within(args, EXIT)
}

/// A loopback port nobody listens on right now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("binding 127.0.0.1:0")
        .port()
}

// ---------------------------------------------------------------------------------------------
// Error output
// ---------------------------------------------------------------------------------------------

fn assert_no_panic(output: &str) {
    for word in ["panicked", "backtrace", "RUST_BACKTRACE"] {
        assert!(!output.contains(word), "{word:?} in the output:\n{output}");
    }
}

/// The whole of stderr must be one `error: ` line; returns it.
fn sole_error_line(stderr: &str) -> &str {
    assert_no_panic(stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "expected exactly one line on stderr, got:\n{stderr}"
    );
    assert!(
        lines[0].starts_with("error: "),
        "not an error line: {stderr}"
    );
    lines[0]
}

/// Stderr of a server that failed after its logger started: JSON log lines, then one `error: `
/// line, which is returned.
fn error_line_after_logs(stderr: &str) -> &str {
    assert_no_panic(stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    let (last, logs) = lines
        .split_last()
        .unwrap_or_else(|| panic!("stderr is empty"));
    assert!(
        last.starts_with("error: "),
        "no final error line:\n{stderr}"
    );
    for line in logs {
        let parsed: Option<Value> = serde_json::from_str(line).ok();
        assert!(
            parsed.is_some_and(|v| v.is_object()),
            "a line besides the error line is not a JSON log line: {line:?}\n{stderr}"
        );
    }
    last
}

// ---------------------------------------------------------------------------------------------
// Servers
// ---------------------------------------------------------------------------------------------

/// A running `idgraph serve` that answered /healthz.
struct Server {
    proc: Proc,
    port: u16,
}

impl Server {
    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Sends `signal` and waits for the process to exit; returns its finished output.
    fn stop_with(mut self, signal: &str) -> Finished {
        self.proc.signal(signal);
        let status = self.proc.wait_exit(EXIT);
        Finished {
            status,
            stdout: self.proc.stdout(),
            stderr: self.proc.stderr(),
        }
    }

    /// SIGTERM, and the exit must be clean.
    fn stop(self) -> Finished {
        let finished = self.stop_with("TERM");
        assert!(
            finished.status.success(),
            "idgraph did not exit 0 on SIGTERM: {}\n{}",
            finished.status,
            finished.stderr
        );
        finished
    }
}

fn http() -> reqwest::Client {
    idgraph_app::webhooks::install_tls_provider();
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("building the HTTP client")
}

/// Starts `idgraph serve` on a free loopback port with `args` and waits until it is ready: its
/// log says it listens on that port and /healthz answers 200. Retries on another port if the
/// chosen one was taken in the meantime.
async fn start(args: &[&str]) -> Server {
    for _ in 0..3 {
        let port = free_port();
        let listen = format!("127.0.0.1:{port}");
        let mut full = vec!["serve", "--listen", &listen];
        full.extend_from_slice(args);
        let mut proc = Proc::spawn(idgraph(&full));
        if wait_ready(&mut proc, port).await {
            return Server { proc, port };
        }
        if !proc.stderr().contains("cannot listen on") {
            panic!(
                "idgraph exited before becoming ready ({:?})\n--- stdout ---\n{}\n--- stderr ---\n{}",
                proc.status,
                proc.stdout(),
                proc.stderr()
            );
        }
    }
    panic!("no free loopback port after 3 attempts");
}

/// True once `proc` serves on `port`; false if it exited first. Fails the test after `STARTUP`.
async fn wait_ready(proc: &mut Proc, port: u16) -> bool {
    let client = http();
    // The log line proves this process (not some other one) owns the port.
    let listening = format!("\"address\":\"127.0.0.1:{port}\"");
    let deadline = Instant::now() + STARTUP;
    loop {
        if proc.try_exit().is_some() {
            return false;
        }
        if proc.stderr().contains(&listening) {
            let health = client
                .get(format!("http://127.0.0.1:{port}/healthz"))
                .timeout(Duration::from_secs(5))
                .send()
                .await;
            if let Ok(response) = health
                && response.status() == 200
            {
                let body: Value = response.json().await.expect("/healthz body is JSON");
                assert_eq!(body, json!({"status": "ok"}));
                return true;
            }
        }
        if Instant::now() > deadline {
            panic!(
                "idgraph was not healthy within {STARTUP:?}\n--- stderr ---\n{}",
                proc.stderr()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One management API call with a Bearer key: the status and the JSON body (null when empty).
async fn call(method: reqwest::Method, url: &str, key: &str, body: Option<Value>) -> (u16, Value) {
    let mut request = http().request(method, url).bearer_auth(key);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("sending the request");
    let status = response.status().as_u16();
    let bytes = response.bytes().await.expect("reading the response body");
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).expect("the response body is JSON")
    };
    (status, body)
}

async fn whoami(server: &Server, key: &str) -> (u16, Value) {
    call(
        reqwest::Method::GET,
        &server.url("/api/v1/whoami"),
        key,
        None,
    )
    .await
}

/// The master key in the first-start banner on stdout, waiting a while for it to arrive.
async fn printed_master_key(proc: &Proc) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let stdout = proc.stdout();
        if let Some(key) = stdout
            .split_whitespace()
            .find(|word| word.starts_with(GENERATED_PREFIX))
        {
            return key.to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "no master key on stdout:\n{stdout}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Raw HTTP, for a request the test controls byte by byte
// ---------------------------------------------------------------------------------------------

/// Reads a response head (status line and headers) up to the blank line.
fn read_head(stream: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        stream
            .read_exact(&mut byte)
            .unwrap_or_else(|e| panic!("reading a response head failed after {head:?}: {e}"));
        head.push(byte[0]);
    }
    String::from_utf8(head).expect("the response head is UTF-8")
}

/// Reads a whole response with a Content-Length body: its head and body.
fn read_response(stream: &mut TcpStream) -> (String, String) {
    let head = read_head(stream);
    let length = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse::<usize>().ok())?
        })
        .unwrap_or_else(|| panic!("no Content-Length in {head:?}"));
    let mut body = vec![0u8; length];
    stream
        .read_exact(&mut body)
        .expect("reading the response body");
    (head, String::from_utf8(body).expect("the body is UTF-8"))
}

/// Waits until connecting to `port` is refused; fails the test after `within`.
fn wait_until_refused(port: u16, within: Duration) {
    let address = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + within;
    loop {
        match TcpStream::connect_timeout(&address, Duration::from_secs(1)) {
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => return,
            _ => {}
        }
        assert!(
            Instant::now() < deadline,
            "127.0.0.1:{port} still accepts connections after {within:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------------------------------------
// Command line and configuration errors
// ---------------------------------------------------------------------------------------------

// A mistyped flag is reported in one line naming it, with exit code 2, and no panic.
#[test]
fn an_unknown_flag_is_one_error_line_and_exit_code_2() {
    let run = run(&["serve", "--no-such-flag"]);
    assert_eq!(run.status.code(), Some(2), "stderr: {}", run.stderr);
    let line = sole_error_line(&run.stderr);
    assert!(line.contains("--no-such-flag"), "{line}");
    assert!(run.stdout.is_empty(), "stdout: {}", run.stdout);
}

// A data dir that is a regular file is refused in one line naming it, and the file is untouched.
#[test]
fn a_data_dir_that_is_a_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, "keep me").unwrap();
    let path = file.to_str().unwrap();
    let run = run(&["serve", "--listen", "127.0.0.1:0", "--data-dir", path]);
    assert_eq!(run.status.code(), Some(1), "stderr: {}", run.stderr);
    let line = sole_error_line(&run.stderr);
    assert!(line.contains(path), "{line}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "keep me");
}

// A malformed database URL is named as such, without echoing the password in it.
#[test]
fn a_malformed_database_url_is_refused_without_its_password() {
    let url = "postgres://u:hunter2@127.0.0.1:notaport/db";
    let run = run(&["serve", "--listen", "127.0.0.1:0", "--database-url", url]);
    assert_eq!(run.status.code(), Some(1), "stderr: {}", run.stderr);
    let line = sole_error_line(&run.stderr);
    assert!(line.contains("database URL"), "{line}");
    assert!(!run.stderr.contains("hunter2") && !run.stdout.contains("hunter2"));
}

// An unreachable PostgreSQL fails fast, naming host:port/db but not the password.
#[test]
fn an_unreachable_postgres_is_named_without_its_password() {
    let port = free_port();
    let url = format!("postgres://u:hunter2@127.0.0.1:{port}/db");
    let run = run_within(
        &["serve", "--listen", "127.0.0.1:0", "--database-url", &url],
        Duration::from_secs(20),
    );
    assert_eq!(run.status.code(), Some(1), "stderr: {}", run.stderr);
    let line = sole_error_line(&run.stderr);
    let target = format!("cannot connect to PostgreSQL at 127.0.0.1:{port}/db");
    assert!(line.contains(&target), "{line}");
    assert!(!run.stderr.contains("hunter2") && !run.stdout.contains("hunter2"));
}

// A typo in a config file is refused in one line naming the unknown key.
#[test]
fn an_unknown_config_key_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("idgraph.toml");
    std::fs::write(&config, "lisen = \"127.0.0.1:9999\"\n").unwrap();
    let run = run(&["serve", "--config", config.to_str().unwrap()]);
    assert_eq!(run.status.code(), Some(1), "stderr: {}", run.stderr);
    let line = sole_error_line(&run.stderr);
    assert!(line.contains("lisen"), "{line}");
}

// `config default` prints the documented defaults as TOML on stdout.
#[test]
fn config_default_prints_the_defaults() {
    let run = run(&["config", "default"]);
    assert!(run.status.success(), "{}: {}", run.status, run.stderr);
    assert!(
        run.stdout.contains("listen = \"127.0.0.1:8080\""),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("data_dir = \"./idgraph-data\""),
        "{}",
        run.stdout
    );
    assert!(run.stderr.is_empty(), "stderr: {}", run.stderr);
}

// ---------------------------------------------------------------------------------------------
// The master key
// ---------------------------------------------------------------------------------------------

// First start prints a working master key once on stdout, never in the logs; restarts keep it.
#[tokio::test]
async fn a_generated_master_key_is_printed_once_and_survives_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();

    let first = start(&["--data-dir", data]).await;
    let key = printed_master_key(&first.proc).await;
    let (status, me) = whoami(&first, &key).await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["master"], json!(true), "{me}");
    let (status, _) = whoami(&first, &format!("{key}0")).await;
    assert_eq!(status, 401, "a different key must not work");
    let first = first.stop();
    assert_eq!(first.stdout.matches(&key).count(), 1, "{}", first.stdout);
    assert!(!first.stderr.contains(&key), "the key reached the log");

    let second = start(&["--data-dir", data]).await;
    let (status, me) = whoami(&second, &key).await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["master"], json!(true), "{me}");
    let second = second.stop();
    assert!(
        second.stdout.trim().is_empty(),
        "a restart printed: {}",
        second.stdout
    );
    assert!(!second.stderr.contains(&key), "the key reached the log");
}

// A master key given on the command line is used as is, and nothing is printed.
#[tokio::test]
async fn a_chosen_master_key_works_and_nothing_is_printed() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let server = start(&["--data-dir", data, "--master-key", CHOSEN_KEY]).await;
    let (status, me) = whoami(&server, CHOSEN_KEY).await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["master"], json!(true), "{me}");
    let finished = server.stop();
    assert!(
        finished.stdout.trim().is_empty(),
        "printed: {}",
        finished.stdout
    );
    assert!(
        !finished.stderr.contains(CHOSEN_KEY),
        "the key reached the log"
    );
}

// A master key shorter than 24 characters is refused with one error line.
#[test]
fn a_short_master_key_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let short = "0123456789";
    let run = run(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        data,
        "--master-key",
        short,
    ]);
    assert_eq!(run.status.code(), Some(1), "stderr: {}", run.stderr);
    let line = error_line_after_logs(&run.stderr);
    assert!(line.contains("master key"), "{line}");
    assert!(!run.stdout.contains(short) && !run.stderr.contains(short));
}

// ---------------------------------------------------------------------------------------------
// The data dir
// ---------------------------------------------------------------------------------------------

// A database written by a newer idgraph is refused and left exactly as it was.
#[tokio::test]
async fn a_database_from_a_newer_idgraph_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let server = start(&["--data-dir", data, "--master-key", CHOSEN_KEY]).await;
    let stopped = server.stop_with("INT");
    assert!(
        stopped.status.success(),
        "SIGINT: {}\n{}",
        stopped.status,
        stopped.stderr
    );

    let db = dir.path().join("idgraph.db");
    {
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.execute(
            "INSERT INTO idgraph_migrations (version, name, checksum, applied_at) \
             VALUES (999, 'from_the_future', 'x', 0)",
            [],
        )
        .unwrap();
    }
    let before = std::fs::read(&db).unwrap();

    let run = run(&["serve", "--listen", "127.0.0.1:0", "--data-dir", data]);
    assert_eq!(run.status.code(), Some(1), "stderr: {}", run.stderr);
    let line = error_line_after_logs(&run.stderr);
    assert!(line.contains("newer idgraph"), "{line}");
    assert!(line.contains("999"), "{line}");

    assert!(
        std::fs::read(&db).unwrap() == before,
        "the refused database file was modified"
    );
    let conn = rusqlite::Connection::open(&db).unwrap();
    let newest: i64 = conn
        .query_row("SELECT MAX(version) FROM idgraph_migrations", [], |row| {
            row.get(0)
        })
        .unwrap();
    assert_eq!(newest, 999);
}

// A second process on the same data dir is refused; the first one keeps serving.
#[tokio::test]
async fn a_second_process_on_the_same_data_dir_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let first = start(&["--data-dir", data, "--master-key", CHOSEN_KEY]).await;

    let second = run(&["serve", "--listen", "127.0.0.1:0", "--data-dir", data]);
    assert_eq!(second.status.code(), Some(1), "stderr: {}", second.stderr);
    let line = error_line_after_logs(&second.stderr);
    assert!(line.contains("in use by another idgraph process"), "{line}");
    assert!(line.contains(data), "{line}");

    let (status, me) = whoami(&first, CHOSEN_KEY).await;
    assert_eq!(status, 200, "the first process stopped serving: {me}");
    first.stop();
}

// ---------------------------------------------------------------------------------------------
// Shutdown
// ---------------------------------------------------------------------------------------------

// SIGTERM stops accepting, finishes the request in flight, writes it durably, and exits 0.
#[tokio::test]
async fn sigterm_finishes_in_flight_requests() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let mut server = start(&["--data-dir", data, "--master-key", CHOSEN_KEY]).await;
    let port = server.port;

    let body = r#"{"name":"inflight","environment":"test"}"#;
    let (first_half, second_half) = body.split_at(body.len() / 2);
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    // `Expect: 100-continue` makes the server say when the handler starts reading the body,
    // so the signal provably arrives while the request is in flight.
    write!(
        stream,
        "POST /api/v1/workspaces HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\
         Authorization: Bearer {CHOSEN_KEY}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nExpect: 100-continue\r\n\r\n",
        body.len()
    )
    .unwrap();
    let interim = read_head(&mut stream);
    assert!(interim.starts_with("HTTP/1.1 100"), "{interim}");
    stream.write_all(first_half.as_bytes()).unwrap();

    server.proc.signal("TERM");
    let signalled = Instant::now();
    wait_until_refused(port, Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(300).saturating_sub(signalled.elapsed()));
    stream.write_all(second_half.as_bytes()).unwrap();

    let (head, response) = read_response(&mut stream);
    assert!(head.starts_with("HTTP/1.1 201"), "{head}{response}");
    let created: Value = serde_json::from_str(&response).unwrap();
    assert_eq!(created["name"], "inflight", "{created}");

    let status = server.proc.wait_exit(EXIT);
    assert!(status.success(), "{status}\n{}", server.proc.stderr());
    let refused = TcpStream::connect(("127.0.0.1", port)).unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::ConnectionRefused);
    drop(server);

    let restarted = start(&["--data-dir", data, "--master-key", CHOSEN_KEY]).await;
    let (status, list) = call(
        reqwest::Method::GET,
        &restarted.url("/api/v1/workspaces"),
        CHOSEN_KEY,
        None,
    )
    .await;
    assert_eq!(status, 200, "{list}");
    let workspaces = list["workspaces"].as_array().unwrap();
    assert!(
        workspaces
            .iter()
            .any(|w| w["name"] == "inflight" && w["environment"] == "test"),
        "{list}"
    );
    restarted.stop();
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL
// ---------------------------------------------------------------------------------------------

// Processes sharing one database share keys, and a revocation through one is seen by the other.
#[tokio::test]
async fn processes_sharing_postgres_share_keys_and_revocations() {
    let Some(db) = idgraph_testpg::test_database().await else {
        return;
    };
    let args = [
        "--database-url",
        db.url.as_str(),
        "--master-key",
        CHOSEN_KEY,
    ];
    // Started together: both migrate and bootstrap the same empty database at once.
    let (a, b) = tokio::join!(start(&args), start(&args));

    let (status, created) = call(
        reqwest::Method::POST,
        &a.url("/api/v1/keys"),
        CHOSEN_KEY,
        Some(json!({"name": "shared", "scopes": ["persons:read"]})),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap();
    let key = created["key"].as_str().unwrap();

    let (status, me) = whoami(&b, key).await;
    assert_eq!(status, 200, "a key made through A does not work on B: {me}");
    assert_eq!(me["key_id"], id, "{me}");
    assert_eq!(me["master"], false, "{me}");

    let (status, body) = call(
        reqwest::Method::DELETE,
        &b.url(&format!("/api/v1/keys/{id}")),
        CHOSEN_KEY,
        None,
    )
    .await;
    assert_eq!(status, 204, "{body}");

    let (status, body) = whoami(&a, key).await;
    assert_eq!(
        status, 401,
        "A still accepts a key revoked through B: {body}"
    );
    a.stop();
    b.stop();
}

/// Two processes sharing PostgreSQL, hammered with signals that share unique identifiers, never
/// create two persons for one identifier.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_sharing_postgres_never_split_a_person() {
    let Some(db) = idgraph_testpg::test_database().await else {
        return;
    };
    let args = [
        "--database-url",
        db.url.as_str(),
        "--master-key",
        CHOSEN_KEY,
    ];
    let (a, b) = tokio::join!(start(&args), start(&args));
    let (status, created) = call(
        reqwest::Method::POST,
        &a.url("/api/v1/keys"),
        CHOSEN_KEY,
        Some(json!({"name": "writer", "scopes": ["events:write"]})),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let write_key = created["key"].as_str().unwrap().to_owned();
    let client = http();
    let mut tasks = Vec::new();
    for i in 0..60 {
        let url = if i % 2 == 0 {
            a.url("/v1/identify")
        } else {
            b.url("/v1/identify")
        };
        // Half share a user id, half share an email; every signal brings its own anonymous id.
        let body = if i % 4 < 2 {
            json!({"userId": "race-user", "anonymousId": format!("race-anon-{i}")})
        } else {
            json!({"anonymousId": format!("race-anon-{i}"), "traits": {"email": "race@example.com"}})
        };
        let (client, key) = (client.clone(), write_key.clone());
        tasks.push(tokio::spawn(async move {
            let response = client
                .post(url)
                .basic_auth(key, Some(""))
                .json(&body)
                .send()
                .await
                .unwrap();
            response.status().as_u16()
        }));
    }
    for task in tasks {
        assert_eq!(task.await.unwrap(), 200);
    }
    let lookup = |kind: &str, value: &str| {
        a.url(&format!("/api/v1/persons/lookup?kind={kind}&value={value}"))
    };
    let (_, by_user) = call(
        reqwest::Method::GET,
        &lookup("external_id", "race-user"),
        CHOSEN_KEY,
        None,
    )
    .await;
    let (_, by_email) = call(
        reqwest::Method::GET,
        &lookup("email", "race%40example.com"),
        CHOSEN_KEY,
        None,
    )
    .await;
    let user_person = by_user["id"].as_str().unwrap();
    let email_person = by_email["id"].as_str().unwrap();
    for i in 0..60 {
        let (status, person) = call(
            reqwest::Method::GET,
            &lookup("anonymous_id", &format!("race-anon-{i}")),
            CHOSEN_KEY,
            None,
        )
        .await;
        assert_eq!(status, 200, "{person}");
        let expected = if i % 4 < 2 { user_person } else { email_person };
        assert_eq!(
            person["id"], expected,
            "race-anon-{i} resolved to another person"
        );
    }
    a.stop();
    b.stop();
}

/// The cardinal rule across processes: an opt-out acknowledged by one process is denied by
/// every check that starts afterwards in the other, while both are busy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_opt_out_through_one_process_is_seen_by_the_other_at_once() {
    let Some(db) = idgraph_testpg::test_database().await else {
        return;
    };
    let args = [
        "--database-url",
        db.url.as_str(),
        "--master-key",
        CHOSEN_KEY,
    ];
    let (a, b) = tokio::join!(start(&args), start(&args));
    let (status, created) = call(
        reqwest::Method::POST,
        &a.url("/api/v1/keys"),
        CHOSEN_KEY,
        Some(json!({"name": "sms webhook", "scopes": ["events:write"]})),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let write_key = created["key"].as_str().unwrap().to_owned();
    let client = http();
    let mut tasks = Vec::new();
    for i in 0..40 {
        // Opt-outs alternate between the processes; each is then checked on the other one.
        let (stop_url, check_url) = if i % 2 == 0 {
            (
                a.url("/v1/messages/inbound"),
                b.url("/api/v1/compliance/check"),
            )
        } else {
            (
                b.url("/v1/messages/inbound"),
                a.url("/api/v1/compliance/check"),
            )
        };
        let number = format!("+1415555{:04}", 4000 + i);
        let (client, key) = (client.clone(), write_key.clone());
        tasks.push(tokio::spawn(async move {
            let check = json!({"channel": "sms", "to": number, "purpose": "sms:marketing"});
            let before: Value = client
                .post(&check_url)
                .bearer_auth(CHOSEN_KEY)
                .json(&check)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            assert_eq!(before["allowed"], true, "{number} before STOP: {before}");
            let stop = client
                .post(&stop_url)
                .basic_auth(&key, Some(""))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(format!(
                    "From={}&To=%2B18005550100&Body=STOP&MessageSid=SM{i}",
                    number.replace('+', "%2B")
                ))
                .send()
                .await
                .unwrap();
            assert_eq!(stop.status(), 200);
            for _ in 0..3 {
                let after: Value = client
                    .post(&check_url)
                    .bearer_auth(CHOSEN_KEY)
                    .json(&check)
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                assert_eq!(
                    after["allowed"], false,
                    "{number} allowed after an acknowledged STOP"
                );
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    a.stop();
    b.stop();
}

// ---------------------------------------------------------------------------------------------
// Imports
// ---------------------------------------------------------------------------------------------

/// A lead file of `rows` rows about `rows / 3` people, deterministic, with everything that makes
/// a graph interesting: persons seen on several rows (emails in mixed case, phones written
/// differently), merges (a row that ties two persons together) and conflicts (a second
/// customer id for a person).
fn lead_file(rows: usize) -> String {
    let mut file = String::from("Customer ID,Email,Phone,First Name,Notes\n");
    let phone = |p: usize| format!("415-{:03}-{:04}", 200 + (p / 10_000) % 700, p % 10_000);
    for r in 0..rows {
        let p = r / 3;
        let customer = match (r % 3, p % 2, p % 97) {
            (0, 0, _) => format!("c-{p}"),
            (1, 0, 0) => format!("x-{p}"),
            _ => String::new(),
        };
        let email = if r % 2 == 0 {
            format!("user{p}@example.com")
        } else {
            format!("User{p}@Example.COM")
        };
        // Every 50th person's second row also brings the previous person's phone: a merge.
        let phone = if p % 50 == 1 && r % 3 == 1 {
            phone(p - 1)
        } else if r % 3 == 2 {
            format!("({}", phone(p).replacen('-', ") ", 1))
        } else {
            phone(p)
        };
        file.push_str(&format!(
            "{customer},{email},{phone},Name {p},\"note, {r}\"\n"
        ));
    }
    file
}

async fn upload_csv(server: &Server, key: &str, query: &str, body: String) -> (u16, Value) {
    let response = http()
        .post(server.url(&format!("/api/v1/imports{query}")))
        .bearer_auth(key)
        .header("content-type", "text/csv")
        .body(body)
        .send()
        .await
        .expect("uploading");
    let status = response.status().as_u16();
    (status, response.json().await.expect("JSON answer"))
}

async fn job(server: &Server, id: &str) -> Value {
    let (status, job) = call(
        reqwest::Method::GET,
        &server.url(&format!("/api/v1/imports/{id}")),
        CHOSEN_KEY,
        None,
    )
    .await;
    assert_eq!(status, 200, "{job}");
    job
}

async fn until_finished(server: &Server, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let job = job(server, id).await;
        if job["status"] == "completed" || job["status"] == "failed" {
            return job;
        }
        assert!(
            Instant::now() < deadline,
            "import {id} did not finish: {job}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn outcomes_csv(server: &Server, id: &str) -> String {
    let response = http()
        .get(server.url(&format!("/api/v1/imports/{id}/rows?format=csv")))
        .bearer_auth(CHOSEN_KEY)
        .send()
        .await
        .expect("rows");
    assert_eq!(response.status(), 200);
    response.text().await.expect("CSV")
}

/// Row → outcome, from an outcomes CSV (person ids differ between stores; outcomes must not).
fn outcome_by_row(csv: &str) -> Vec<(String, String)> {
    csv.lines()
        .skip(1)
        .map(|line| {
            let mut fields = line.splitn(4, ',');
            let row = fields.next().unwrap_or_default().to_owned();
            let _person = fields.next();
            (row, fields.next().unwrap_or_default().to_owned())
        })
        .collect()
}

/// The graph of a stopped server's data dir: each canonical person as the set of its
/// identifiers. Person ids are left out: two stores that resolved the same file agree on who
/// holds what, not on the ids they made up.
fn partition(data_dir: &std::path::Path) -> std::collections::BTreeSet<Vec<String>> {
    let conn = rusqlite::Connection::open(data_dir.join("idgraph.db")).expect("open the store");
    // Identifier values are sealed under the data dir's own keys: open them to compare stores.
    let kek = idgraph_app::data_key::DataKey::from_text(
        &std::fs::read_to_string(data_dir.join("data.key")).expect("the data key"),
    )
    .expect("a data key");
    let ring: String = conn
        .query_row(
            "SELECT settings FROM tenant_settings WHERE tenant_id = 'default' AND name = ?1",
            [idgraph_app::keyring::KEYRING_SETTING],
            |r| r.get(0),
        )
        .expect("the keyring");
    let ring: idgraph_app::keyring::Keyring = serde_json::from_str(&ring).expect("keyring");
    let vault = ring.vault(&kek).expect("the keyring opens");
    let mut statement = conn
        .prepare(
            "SELECT COALESCE(p.merged_into, p.person_id), n.kind, COALESCE(v.sealed, n.value)
             FROM identity_nodes n
             JOIN persons p ON p.tenant_id = n.tenant_id AND p.person_id = n.person_id
             LEFT JOIN identity_values v ON v.tenant_id = n.tenant_id AND v.value_id = n.value_id
             WHERE n.tenant_id = 'default'",
        )
        .expect("query");
    let mut persons: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    let rows = statement
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
            ))
        })
        .expect("rows");
    for row in rows {
        let (person, kind, value) = row.expect("row");
        let value = vault
            .open("default", idgraph_store::vault::column::IDENTIFIER, value)
            .expect("the value opens");
        persons
            .entry(person)
            .or_default()
            .push(format!("{kind}:{value}"));
    }
    persons
        .into_values()
        .map(|mut identifiers| {
            identifiers.sort();
            identifiers
        })
        .collect()
}

/// The crash test: `kill -9` in the middle of processing, restart on the same data dir, and the
/// job resumes by itself and ends with the graph, the counts and the row outcomes of an import
/// that was never interrupted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_killed_mid_way_resumes_and_ends_as_if_never_interrupted() {
    let rows = 30_000;
    let file = lead_file(rows);
    let crashed_dir = tempfile::tempdir().unwrap();
    let crashed = crashed_dir.path().to_str().unwrap();
    let mut server = start(&["--data-dir", crashed, "--master-key", CHOSEN_KEY]).await;
    let (status, created) = upload_csv(&server, CHOSEN_KEY, "", file.clone()).await;
    assert_eq!(status, 202, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    // Kill it once the file has landed and some chunks are recorded, well before the end.
    let deadline = Instant::now() + Duration::from_secs(300);
    let at_kill = loop {
        let now = job(&server, &id).await;
        let parsed = now["counts"]["parsed"].as_u64().unwrap();
        if parsed >= 1_000 && now["status"] == "processing" {
            server.proc.signal("KILL");
            break parsed;
        }
        assert!(
            now["status"] == "processing" || now["status"] == "landing",
            "{now}"
        );
        assert!(Instant::now() < deadline, "processing never started: {now}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let status = server.proc.wait_exit(EXIT);
    assert!(!status.success(), "idgraph was not killed: {status}");
    // At least one chunk is left to resume (rows are processed while the file lands, so a
    // slow landing may leave more than half of them done).
    assert!(
        at_kill + u64::from(idgraph_app::imports::CHUNK_ROWS) <= rows as u64,
        "the import was nearly done before the kill ({at_kill} rows); make the file bigger"
    );
    drop(server);

    let restarted = start(&["--data-dir", crashed, "--master-key", CHOSEN_KEY]).await;
    let resumed = until_finished(&restarted, &id).await;
    assert_eq!(resumed["status"], "completed", "{resumed}");
    let resumed_rows = outcome_by_row(&outcomes_csv(&restarted, &id).await);
    restarted.stop();

    let clean_dir = tempfile::tempdir().unwrap();
    let clean = clean_dir.path().to_str().unwrap();
    let reference = start(&["--data-dir", clean, "--master-key", CHOSEN_KEY]).await;
    let (status, created) = upload_csv(&reference, CHOSEN_KEY, "", file).await;
    assert_eq!(status, 202, "{created}");
    let reference_id = created["id"].as_str().unwrap().to_owned();
    let uninterrupted = until_finished(&reference, &reference_id).await;
    let reference_rows = outcome_by_row(&outcomes_csv(&reference, &reference_id).await);
    reference.stop();

    assert_eq!(
        resumed["counts"], uninterrupted["counts"],
        "the counts differ"
    );
    assert!(
        uninterrupted["counts"]["persons_merged"].as_u64().unwrap() > 0
            && uninterrupted["counts"]["conflicts"].as_u64().unwrap() > 0,
        "the file should exercise merges and conflicts: {uninterrupted}"
    );
    assert_eq!(resumed_rows.len(), rows);
    assert_eq!(resumed_rows, reference_rows, "the row outcomes differ");
    let (after_crash, reference_graph) =
        (partition(crashed_dir.path()), partition(clean_dir.path()));
    assert!(
        reference_graph.len() > rows / 4,
        "{}",
        reference_graph.len()
    );
    assert!(
        after_crash == reference_graph,
        "the graph after the crash differs from the uninterrupted import ({} vs {} persons)",
        after_crash.len(),
        reference_graph.len()
    );
}

/// An upload cut off by a crash cannot resume (the rest of the file is with the client): the
/// job is marked failed on restart, and uploading the file again finishes the work. The rows
/// the first attempt processed while its file was landing (decision 0020) are recognized as
/// already imported: across the two jobs, nothing is lost or imported twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_cut_off_by_a_crash_is_failed_and_uploading_again_finishes_it() {
    // More than a processing chunk (5,000 rows) arrives before the crash.
    let rows = 15_000;
    let file = lead_file(rows);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let mut server = start(&["--data-dir", data, "--master-key", CHOSEN_KEY]).await;
    let port = server.port;
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        stream,
        "POST /api/v1/imports HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\
         Authorization: Bearer {CHOSEN_KEY}\r\nContent-Type: text/csv\r\n\
         Content-Length: {}\r\n\r\n",
        file.len()
    )
    .unwrap();
    let part = file.len() * 2 / 3;
    stream.write_all(&file.as_bytes()[..part]).unwrap();
    stream.flush().unwrap();
    // Wait until the server has processed a chunk of it, with the rest not yet sent.
    let deadline = Instant::now() + Duration::from_secs(60);
    let (id, processed) = loop {
        let (_, list) = call(
            reqwest::Method::GET,
            &server.url("/api/v1/imports"),
            CHOSEN_KEY,
            None,
        )
        .await;
        if let Some(job) = list["imports"].as_array().and_then(|j| j.first())
            && job["counts"]["parsed"].as_u64().unwrap_or(0) > 0
        {
            assert_eq!(job["status"], "landing", "{job}");
            break (
                job["id"].as_str().unwrap().to_owned(),
                job["counts"]["parsed"].as_u64().unwrap(),
            );
        }
        assert!(Instant::now() < deadline, "nothing was processed: {list}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    server.proc.signal("KILL");
    server.proc.wait_exit(EXIT);
    drop(stream);
    drop(server);

    let restarted = start(&["--data-dir", data, "--master-key", CHOSEN_KEY]).await;
    let failed = until_finished(&restarted, &id).await;
    assert_eq!(failed["status"], "failed", "{failed}");
    assert!(
        failed["error"]
            .as_str()
            .unwrap()
            .contains("upload the file again"),
        "{failed}"
    );
    assert!(
        failed["counts"]["parsed"].as_u64().unwrap() >= processed,
        "{failed}"
    );
    let (status, created) = upload_csv(&restarted, CHOSEN_KEY, "", file.clone()).await;
    assert_eq!(status, 202, "{created}");
    let again = until_finished(&restarted, created["id"].as_str().unwrap()).await;
    assert_eq!(again["status"], "completed", "{again}");
    assert_eq!(again["counts"]["rows"], rows);
    restarted.stop();

    let clean_dir = tempfile::tempdir().unwrap();
    let reference = start(&[
        "--data-dir",
        clean_dir.path().to_str().unwrap(),
        "--master-key",
        CHOSEN_KEY,
    ])
    .await;
    let (_, created) = upload_csv(&reference, CHOSEN_KEY, "", file).await;
    let uninterrupted = until_finished(&reference, created["id"].as_str().unwrap()).await;
    reference.stop();
    // The rows the failed job resolved are duplicates the second time; what each did is
    // counted once, by one job or the other. A chunk the crash caught between its resolution
    // and its record is in the graph but in neither job's counts: its rows are duplicates of
    // the failed job too.
    let resolved = |job: &Value| {
        let c = &job["counts"];
        c["parsed"].as_u64().unwrap() - c["rejected"].as_u64().unwrap()
    };
    assert!(resolved(&failed) > 0, "{failed}");
    let duplicates = again["counts"]["duplicates"].as_u64().unwrap();
    let chunk = u64::from(idgraph_app::imports::CHUNK_ROWS);
    assert!(
        duplicates >= resolved(&failed) && duplicates <= resolved(&failed) + chunk,
        "{duplicates} duplicates after {failed}"
    );
    for count in [
        "persons_created",
        "persons_merged",
        "identifiers_attached",
        "conflicts",
    ] {
        let both =
            failed["counts"][count].as_u64().unwrap() + again["counts"][count].as_u64().unwrap();
        let once = uninterrupted["counts"][count].as_u64().unwrap();
        if duplicates == resolved(&failed) {
            assert_eq!(both, once, "{count}: {failed} + {again} vs {uninterrupted}");
        } else {
            assert!(
                both <= once,
                "{count}: {failed} + {again} vs {uninterrupted}"
            );
        }
    }
    assert!(
        partition(dir.path()) == partition(clean_dir.path()),
        "the graphs differ"
    );
}

// `idgraph import` straight into a data dir: a summary, the outcomes file, and a store a server
// then serves.
#[tokio::test]
async fn import_directly_into_a_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let csv = dir.path().join("leads.csv");
    let output = dir.path().join("rows.csv");
    std::fs::write(&csv, "email,phone\nann@example.com,415 555 2671\nbroken\n").unwrap();
    let mut command = idgraph(&[
        "import",
        csv.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
        "--mapping",
        "leads",
        "--output",
        output.to_str().unwrap(),
    ]);
    command.env("IDGRAPH_MASTER_KEY", CHOSEN_KEY);
    let mut proc = Proc::spawn(command);
    let status = proc.wait_exit(Duration::from_secs(60));
    assert!(status.success(), "{status}\n{}", proc.stderr());
    assert_no_panic(&proc.stderr());
    let summary = proc.stdout();
    assert!(summary.contains(": completed in"), "{summary}");
    assert!(summary.contains("persons created"), "{summary}");
    let rows = std::fs::read_to_string(&output).unwrap();
    let lines: Vec<&str> = rows.lines().collect();
    assert_eq!(lines[0], "row,person_id,outcome,reason");
    assert!(
        lines[1].starts_with("1,") && lines[1].contains(",created"),
        "{rows}"
    );
    assert!(lines[2].starts_with("2,,rejected,"), "{rows}");

    // The data dir is a normal store: a server on it finds what was imported.
    let server = start(&[
        "--data-dir",
        data.to_str().unwrap(),
        "--master-key",
        CHOSEN_KEY,
    ])
    .await;
    let (status, person) = call(
        reqwest::Method::GET,
        &server.url("/api/v1/persons/lookup?kind=phone&value=%2B14155552671"),
        CHOSEN_KEY,
        None,
    )
    .await;
    assert_eq!(status, 200, "{person}");
    // While it runs, a direct import is refused: the data dir is the server's.
    let refused = run(&[
        "import",
        csv.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
    ]);
    assert_eq!(refused.status.code(), Some(1));
    let line = sole_error_line(&refused.stderr);
    assert!(line.contains("in use by another idgraph process"), "{line}");
    assert!(line.contains("--server URL --key KEY"), "{line}");
    server.stop();
}

// `idgraph import --server --key`: a client of the HTTP API, with a mapping file uploaded first.
#[tokio::test]
async fn import_through_a_running_server() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = start(&[
        "--data-dir",
        data.to_str().unwrap(),
        "--master-key",
        CHOSEN_KEY,
    ])
    .await;
    let (status, created) = call(
        reqwest::Method::POST,
        &server.url("/api/v1/keys"),
        CHOSEN_KEY,
        Some(json!({"name": "importer", "scopes": ["imports:write", "imports:read"]})),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let key = created["key"].as_str().unwrap();
    let csv = dir.path().join("crm.csv");
    std::fs::write(&csv, "Contact,Mobile No\nann@example.com,415 555 2671\n").unwrap();
    let mapping = dir.path().join("crm.toml");
    std::fs::write(
        &mapping,
        "[columns]\nContact = \"email\"\n\"Mobile No\" = \"phone\"\n",
    )
    .unwrap();
    let output = dir.path().join("out.csv");
    let base = server.url("");
    let finished = run_within(
        &[
            "import",
            csv.to_str().unwrap(),
            "--server",
            &base,
            "--key",
            key,
            "--mapping",
            mapping.to_str().unwrap(),
            "--output",
            output.to_str().unwrap(),
        ],
        Duration::from_secs(60),
    );
    assert!(
        finished.status.success(),
        "{}\n{}",
        finished.status,
        finished.stderr
    );
    assert!(
        finished.stdout.contains("mapping crm v1"),
        "{}",
        finished.stdout
    );
    let rows = std::fs::read_to_string(&output).unwrap();
    assert!(rows.lines().nth(1).unwrap().contains(",created"), "{rows}");
    let (status, person) = call(
        reqwest::Method::GET,
        &server.url("/api/v1/persons/lookup?kind=phone&value=%2B14155552671"),
        CHOSEN_KEY,
        None,
    )
    .await;
    assert_eq!(status, 200, "{person}");

    // An unusable file is one error line with the server's reason, and exit code 1.
    let empty = dir.path().join("empty.csv");
    std::fs::write(&empty, "").unwrap();
    let refused = run(&[
        "import",
        empty.to_str().unwrap(),
        "--server",
        &base,
        "--key",
        key,
    ]);
    assert_eq!(refused.status.code(), Some(1));
    let line = sole_error_line(&refused.stderr);
    assert!(line.contains("the file is empty"), "{line}");
    let missing = run(&[
        "import",
        "/no/such/file.csv",
        "--server",
        &base,
        "--key",
        key,
    ]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(sole_error_line(&missing.stderr).contains("/no/such/file.csv"));
    server.stop();
}

// ---------------------------------------------------------------------------------------------
// Deletion
// ---------------------------------------------------------------------------------------------

/// A person deleted through one process is gone for the other at once, a stale signal through
/// the other cannot bring it back, and `idgraph purge --now` runs against the shared database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deletion_through_one_process_is_seen_by_the_other_at_once() {
    let Some(db) = idgraph_testpg::test_database().await else {
        return;
    };
    let args = [
        "--database-url",
        db.url.as_str(),
        "--master-key",
        CHOSEN_KEY,
    ];
    let (a, b) = tokio::join!(start(&args), start(&args));
    let (status, created) = call(
        reqwest::Method::POST,
        &a.url("/api/v1/keys"),
        CHOSEN_KEY,
        Some(json!({"name": "web", "scopes": ["events:write"]})),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let write_key = created["key"].as_str().unwrap().to_owned();
    let identify = |server: &Server, anonymous_id: &str| {
        http()
            .post(server.url("/v1/identify"))
            .basic_auth(&write_key, Some(""))
            .json(&json!({"anonymousId": anonymous_id, "traits": {"email": "gone@example.com"}}))
            .send()
    };
    let response = identify(&a, "a-1").await.unwrap();
    assert_eq!(response.status(), 200);
    let lookup = b.url("/api/v1/persons/lookup?kind=email&value=gone@example.com");
    let (status, person) = call(reqwest::Method::GET, &lookup, CHOSEN_KEY, None).await;
    assert_eq!(status, 200, "{person}");
    let id = person["id"].as_str().unwrap().to_owned();

    let (status, body) = call(
        reqwest::Method::DELETE,
        &a.url(&format!("/api/v1/persons/{id}")),
        CHOSEN_KEY,
        None,
    )
    .await;
    assert_eq!(status, 202, "{body}");
    for url in [b.url(&format!("/api/v1/persons/{id}")), lookup.clone()] {
        let (status, body) = call(reqwest::Method::GET, &url, CHOSEN_KEY, None).await;
        assert_eq!(status, 404, "{url}: {body}");
    }
    let answer: Value = identify(&b, "b-1").await.unwrap().json().await.unwrap();
    assert_eq!(answer["errors"][0]["code"], "erased_identifier", "{answer}");
    let (status, _) = call(reqwest::Method::GET, &lookup, CHOSEN_KEY, None).await;
    assert_eq!(status, 404, "a stale signal re-created the person");

    // The retention window has not passed: a plain purge leaves the data; --now does not wait.
    let purge = run(&["purge", "--database-url", db.url.as_str()]);
    assert!(purge.status.success(), "{}", purge.stderr);
    assert!(
        purge.stdout.contains("purged 0 deleted person(s)"),
        "{}",
        purge.stdout
    );
    let purge = run(&["purge", "--now", "--database-url", db.url.as_str()]);
    assert!(purge.status.success(), "{}", purge.stderr);
    assert!(
        purge.stdout.contains("purged 1 deleted person(s)"),
        "{}",
        purge.stdout
    );
    a.stop();
    b.stop();
}

/// `idgraph purge` on a data dir a server holds is refused, like any second process.
#[tokio::test]
async fn purge_refuses_a_data_dir_a_server_holds() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().to_str().unwrap();
    let server = start(&["--data-dir", data_dir, "--master-key", CHOSEN_KEY]).await;
    let purge = run(&["purge", "--now", "--data-dir", data_dir]);
    assert!(!purge.status.success(), "{}", purge.stdout);
    assert_no_panic(&purge.stderr);
    server.stop();
    let purge = run(&["purge", "--now", "--data-dir", data_dir]);
    assert!(purge.status.success(), "{}", purge.stderr);
    assert!(
        purge.stdout.contains("purged 0 deleted person(s)"),
        "{}",
        purge.stdout
    );
}

// ---------------------------------------------------------------------------------------------
// The README's quick start, as written
// ---------------------------------------------------------------------------------------------

/// The shell commands of the fenced block that follows `after` in the README, with `\`
/// continuations joined and `#` comments dropped.
fn readme_commands(readme: &str, after: &str) -> Vec<String> {
    let start = readme
        .find(after)
        .unwrap_or_else(|| panic!("the README has no {after:?}"));
    let block = readme[start..]
        .split("```sh\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .unwrap_or_else(|| panic!("no sh block after {after:?}"));
    let mut commands = Vec::new();
    let mut current = String::new();
    for line in block.lines() {
        // A comment starts at ` # ` outside single quotes.
        let line = match line.find(" # ") {
            Some(at) if line[..at].matches('\'').count() % 2 == 0 => &line[..at],
            _ => line,
        };
        let line = line.trim_end();
        match line.strip_suffix('\\') {
            Some(continued) => current.push_str(continued),
            None => {
                current.push_str(line);
                let command = current.split_whitespace().collect::<Vec<_>>().join(" ");
                if !command.is_empty() {
                    commands.push(command);
                }
                current.clear();
            }
        }
    }
    commands
}

/// The text between the first pair of `quote`s after `flag ` in `command`.
fn quoted_after(command: &str, flag: &str, quote: char) -> Option<String> {
    let rest = &command[command.find(&format!("{flag} "))? + flag.len() + 1..];
    let rest = rest.strip_prefix(quote)?;
    Some(rest[..rest.find(quote)?].to_owned())
}

// The set-up commands of the README name the binary and the test command CI runs, and its
// first steps (health, workspaces, a write key, an identify, a lookup) work against the
// server those commands start, with the README's own request bodies.
#[tokio::test]
async fn the_readme_quick_start_works_as_written() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let readme = std::fs::read_to_string(format!("{root}/README.md")).expect("README.md");
    let setup = readme_commands(&readme, "## Quick start");
    let run = setup
        .iter()
        .find(|c| c.starts_with("cargo run"))
        .expect("a cargo run line");
    // The workspace builds two binaries; `cargo run` without `--bin` refuses to choose.
    assert!(run.contains("--bin idgraph "), "{run}");
    let args: Vec<&str> = run
        .split_once(" -- ")
        .map(|(_, args)| args.split_whitespace().collect())
        .expect("arguments after --");
    let test = setup
        .iter()
        .find(|c| c.starts_with("cargo test"))
        .expect("a cargo test line");
    let ci = std::fs::read_to_string(format!("{root}/.ci/run")).expect(".ci/run");
    assert!(
        ci.lines().any(|line| line.trim() == test),
        "CI does not run the README's test command {test:?}"
    );

    // The README's server, in a directory of its own, on a free port instead of 8080.
    let cwd = tempfile::tempdir().unwrap();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut full = args.clone();
    full.extend(["--listen", &listen]);
    let mut command = idgraph(&full);
    command.current_dir(cwd.path());
    let mut proc = Proc::spawn(command);
    assert!(wait_ready(&mut proc, port).await, "{}", proc.stderr());
    let server = Server { proc, port };
    assert!(
        cwd.path().join("idgraph-data").is_dir(),
        "the README says the data goes to ./idgraph-data"
    );
    let master = printed_master_key(&server.proc).await;

    let steps = readme_commands(&readme, "On its first start the server prints");
    let mut write_key = None;
    let mut answers = Vec::new();
    for step in steps.iter().filter(|s| s.starts_with("curl")) {
        let url = step
            .split_whitespace()
            .map(|w| w.trim_matches('\''))
            .find(|w| w.starts_with("localhost:8080"))
            .unwrap_or_else(|| panic!("no URL in {step}"))
            .replacen("localhost:8080", &format!("http://127.0.0.1:{port}"), 1);
        let body = quoted_after(step, "-d", '\'');
        let mut request = match &body {
            Some(body) => http()
                .post(&url)
                .header("Content-Type", "application/json")
                .body(body.clone()),
            None => http().get(&url),
        };
        if step.contains("-u \"$WRITE_KEY:\"") {
            let key = write_key
                .as_deref()
                .expect("a write key made by an earlier step");
            request = request.basic_auth(key, Some(""));
        } else if step.contains("Bearer $KEY") {
            request = request.bearer_auth(&master);
        }
        let response = request.send().await.expect("the request");
        let status = response.status().as_u16();
        let answer: Value = response.json().await.unwrap_or(Value::Null);
        assert!((200..300).contains(&status), "{step}\n→ {status} {answer}");
        if url.ends_with("/api/v1/keys") {
            write_key = answer["key"].as_str().map(str::to_owned);
        }
        answers.push(answer);
    }
    assert_eq!(answers.len(), 5, "{steps:?}");
    assert_eq!(answers[0], json!({"status": "ok"}));
    let person = answers.last().expect("the lookup");
    let identifiers = person["identifiers"].as_array().expect("identifiers");
    assert!(
        identifiers
            .iter()
            .any(|i| i["kind"] == "email" && i["value"] == "ann@example.com"),
        "{person}"
    );
    server.stop();
}
