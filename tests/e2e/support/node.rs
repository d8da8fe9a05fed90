//! Starts the real `edgemirror` binary with a generated config, and restarts or kills it.
//!
//! [`NodeBuilder`] renders a TOML config into a fresh temp dir and spawns
//! `edgemirror --config <file>`. Readiness is the one stdout line the node prints when both
//! listeners are bound: `edgemirror ready data=127.0.0.1:PORT admin=127.0.0.1:PORT`. Both
//! listeners use port 0, so that line is also the only way to learn the ports. With a `[tls]`
//! section the line ends with ` tls=127.0.0.1:PORT`, the HTTPS listener ([`Node::tls_addr`]).
//!
//! The temp dir (config, `store/`, `stderr.log`) lives as long as the [`Node`], across restarts,
//! which is what makes persistence and crash tests possible: [`Node::kill9`] is a SIGKILL (no
//! chance to flush or clean up), [`Node::stop`] a SIGTERM, [`Node::restart`] starts the same
//! config again on the same store. The node's stderr goes to `stderr.log` (appended across
//! restarts) and is printed when a test panics with the node alive, so failures come with logs.
//!
//! Every wait is bounded: 20 s for readiness, 10 s for an exit.

use std::fmt::Write as _;
use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// How long the node may take to print its ready line (cold store scan on a busy 2-core box).
pub const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// How long the node may take to exit after SIGTERM or SIGKILL, or after a bad config.
pub const EXIT_TIMEOUT: Duration = Duration::from_secs(10);

const READY_PREFIX: &str = "edgemirror ready ";

/// One `[[buckets]]` entry and its ordered `[[buckets.mirror]]` rules.
#[derive(Clone, Debug)]
struct BucketSpec {
    name: String,
    /// `(url, key_prefix)`, in match order.
    rules: Vec<(String, String)>,
}

/// Builds a config and starts a node from it.
///
/// ```ignore
/// let node = NodeBuilder::new()
///     .mirror(&format!("{}/dir1/", origin.url()), "")   // rule on "example-bucket"
///     .bucket("other")                                 // later rules go to "other"
///     .with_first_byte_timeout_ms(1000)
///     .start();
/// ```
#[derive(Clone, Debug)]
pub struct NodeBuilder {
    listen: String,
    workers: u32,
    memory_bytes: u64,
    disk_bytes: u64,
    connect_timeout_ms: u64,
    first_byte_timeout_ms: u64,
    idle_timeout_ms: u64,
    buckets: Vec<BucketSpec>,
    /// Raw `key = value` lines appended to a named top-level section.
    section_lines: Vec<(String, String)>,
    /// Raw TOML appended after everything else (should open its own table).
    extra_toml: String,
    env: Vec<(String, String)>,
    /// Files written into the node's temp dir before it starts: `(path relative to the dir,
    /// contents)`. Relative paths in the config (certificates) resolve against that dir.
    files: Vec<(String, Vec<u8>)>,
    /// Another executable in place of `edgemirror`: lets the harness test this launcher
    /// with a stand-in script.
    binary: Option<PathBuf>,
    ready_timeout: Duration,
    /// `store.dir` outside the node's temp dir (a small file system); default `<temp dir>/store`.
    store_dir: Option<PathBuf>,
}

impl Default for NodeBuilder {
    fn default() -> Self {
        NodeBuilder::new()
    }
}

impl NodeBuilder {
    /// The suite's default config, with no buckets yet.
    pub fn new() -> NodeBuilder {
        NodeBuilder {
            listen: "127.0.0.1:0".into(),
            workers: 2,
            memory_bytes: 16 * 1024 * 1024,
            disk_bytes: 64 * 1024 * 1024,
            connect_timeout_ms: 2000,
            first_byte_timeout_ms: 3000,
            idle_timeout_ms: 3000,
            buckets: Vec::new(),
            section_lines: Vec::new(),
            extra_toml: String::new(),
            env: Vec::new(),
            files: Vec::new(),
            binary: None,
            ready_timeout: READY_TIMEOUT,
            store_dir: None,
        }
    }

    /// Adds a bucket; following `mirror` calls add rules to it.
    pub fn bucket(mut self, name: &str) -> NodeBuilder {
        self.buckets.push(BucketSpec { name: name.to_string(), rules: Vec::new() });
        self
    }

    /// Adds a mirror rule to the last bucket (creating `example-bucket` if there is none).
    /// Rules are written in call order, which is their match order.
    pub fn mirror(mut self, url: &str, key_prefix: &str) -> NodeBuilder {
        if self.buckets.is_empty() {
            self = self.bucket("example-bucket");
        }
        let bucket = self.buckets.last_mut().expect("a bucket exists");
        bucket.rules.push((url.to_string(), key_prefix.to_string()));
        self
    }

    /// `[server] listen`, normally `127.0.0.1:0`; bad-config tests set garbage.
    pub fn with_listen(mut self, listen: &str) -> NodeBuilder {
        self.listen = listen.to_string();
        self
    }

    pub fn with_workers(mut self, workers: u32) -> NodeBuilder {
        self.workers = workers;
        self
    }

    pub fn with_memory_bytes(mut self, bytes: u64) -> NodeBuilder {
        self.memory_bytes = bytes;
        self
    }

    pub fn with_disk_bytes(mut self, bytes: u64) -> NodeBuilder {
        self.disk_bytes = bytes;
        self
    }

    pub fn with_connect_timeout_ms(mut self, ms: u64) -> NodeBuilder {
        self.connect_timeout_ms = ms;
        self
    }

    pub fn with_first_byte_timeout_ms(mut self, ms: u64) -> NodeBuilder {
        self.first_byte_timeout_ms = ms;
        self
    }

    pub fn with_idle_timeout_ms(mut self, ms: u64) -> NodeBuilder {
        self.idle_timeout_ms = ms;
        self
    }

    /// Appends a raw `key = value` line to top-level `section` (`server`, `admin`, `store`,
    /// `cache`, `origin`): for options the builder does not model, and for unknown keys.
    pub fn with_line(mut self, section: &str, line: &str) -> NodeBuilder {
        self.section_lines.push((section.to_string(), line.to_string()));
        self
    }

    /// Appends raw TOML at the end of the file. It lands after the last `[[buckets.mirror]]`,
    /// so it should open its own table.
    pub fn with_extra_toml(mut self, toml: &str) -> NodeBuilder {
        self.extra_toml.push_str(toml);
        self.extra_toml.push('\n');
        self
    }

    /// An environment variable for the node process (e.g. `RUST_LOG`,
    /// `MONOIO_FORCE_LEGACY_DRIVER`).
    pub fn with_env(mut self, key: &str, value: &str) -> NodeBuilder {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    /// Writes `contents` to `rel_path` inside the node's temp dir (the config file's directory)
    /// before the node starts; parent directories are created. For certificates and keys that
    /// the config names by relative path.
    pub fn with_file(mut self, rel_path: &str, contents: impl Into<Vec<u8>>) -> NodeBuilder {
        self.files.push((rel_path.to_string(), contents.into()));
        self
    }

    /// Runs `path` instead of the `edgemirror` binary (harness self-tests only).
    pub fn with_binary(mut self, path: &Path) -> NodeBuilder {
        self.binary = Some(path.to_path_buf());
        self
    }

    /// Puts the store at `dir` (e.g. on a small tmpfs the test filled up) instead of
    /// `<temp dir>/store`. The test owns `dir`; it outlives restarts like the default one.
    pub fn with_store_dir(mut self, dir: &Path) -> NodeBuilder {
        self.store_dir = Some(dir.to_path_buf());
        self
    }

    /// How long to wait for the ready line (default [`READY_TIMEOUT`]).
    pub fn with_ready_timeout(mut self, timeout: Duration) -> NodeBuilder {
        self.ready_timeout = timeout;
        self
    }

    /// The config text for a store at `store_dir`.
    pub fn render(&self, store_dir: &Path) -> String {
        let mut out = String::new();
        let section = |out: &mut String, name: &str| {
            for (s, line) in &self.section_lines {
                if s == name {
                    let _ = writeln!(out, "{line}");
                }
            }
        };
        let _ = writeln!(out, "[server]");
        let _ = writeln!(out, "listen = {}", toml_string(&self.listen));
        let _ = writeln!(out, "workers = {}", self.workers);
        section(&mut out, "server");
        let _ = writeln!(out, "\n[admin]");
        let _ = writeln!(out, "listen = \"127.0.0.1:0\"");
        let _ = writeln!(out, "token = \"test-token\"");
        section(&mut out, "admin");
        let _ = writeln!(out, "\n[store]");
        let _ = writeln!(out, "dir = {}", toml_string(&store_dir.to_string_lossy()));
        section(&mut out, "store");
        let _ = writeln!(out, "\n[cache]");
        let _ = writeln!(out, "memory_bytes = {}", self.memory_bytes);
        let _ = writeln!(out, "disk_bytes = {}", self.disk_bytes);
        section(&mut out, "cache");
        let _ = writeln!(out, "\n[origin]");
        let _ = writeln!(out, "connect_timeout_ms = {}", self.connect_timeout_ms);
        let _ = writeln!(out, "first_byte_timeout_ms = {}", self.first_byte_timeout_ms);
        let _ = writeln!(out, "idle_timeout_ms = {}", self.idle_timeout_ms);
        section(&mut out, "origin");
        for bucket in &self.buckets {
            let _ = writeln!(out, "\n[[buckets]]");
            let _ = writeln!(out, "name = {}", toml_string(&bucket.name));
            for (url, key_prefix) in &bucket.rules {
                let _ = writeln!(out, "[[buckets.mirror]]");
                let _ = writeln!(out, "url = {}", toml_string(url));
                let _ = writeln!(out, "key_prefix = {}", toml_string(key_prefix));
            }
        }
        if !self.extra_toml.is_empty() {
            let _ = writeln!(out, "\n{}", self.extra_toml);
        }
        out
    }

    /// Writes the config and starts the node; panics (with the node's stderr) if it is not
    /// ready within [`READY_TIMEOUT`].
    pub fn start(self) -> Node {
        let mut node = self.prepare();
        node.spawn();
        node
    }

    /// Writes the config and runs the node expecting it to exit on its own (bad config).
    /// Panics if it becomes ready instead, or does not exit within [`READY_TIMEOUT`].
    pub fn start_expecting_exit(self) -> Exited {
        let node = self.prepare();
        let mut child = node.spawn_child();
        let lines = read_stdout_lines(&mut child);
        let deadline = Instant::now() + node.ready_timeout;
        loop {
            // Drain stdout as we go: a node that became ready must fail the test, not be
            // mistaken for a slow exit.
            while let Ok(line) = lines.try_recv() {
                if line.starts_with(READY_PREFIX) {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "node started although its config is invalid:\n{}\nstderr:\n{}",
                        fs::read_to_string(&node.config_path).unwrap_or_default(),
                        node.stderr()
                    );
                }
            }
            if let Some(status) = child.try_wait().expect("try_wait") {
                return Exited { status, stderr: node.stderr() };
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "node with an invalid config neither exited nor became ready in {:?}; stderr:\n{}",
                    node.ready_timeout,
                    node.stderr()
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Creates the temp dir and config file; the node is not started.
    fn prepare(self) -> Node {
        let dir = tempfile::Builder::new().prefix("edgemirror-e2e-").tempdir().expect("create temp dir");
        let store_dir = self.store_dir.clone().unwrap_or_else(|| dir.path().join("store"));
        let config_path = dir.path().join("edgemirror.toml");
        fs::write(&config_path, self.render(&store_dir)).expect("write config");
        for (rel_path, contents) in &self.files {
            let path = dir.path().join(rel_path);
            if let Some(parent) = path.parent() {
                fs::create_dir_all(parent).expect("create dir for a node file");
            }
            fs::write(&path, contents).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        }
        let stderr_path = dir.path().join("stderr.log");
        Node {
            config_path,
            stderr_path,
            store_dir,
            binary: self.binary.unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_edgemirror"))),
            ready_timeout: self.ready_timeout,
            env: self.env,
            child: None,
            data: None,
            admin: None,
            tls: None,
            starts: 0,
            stdout: None,
            dir,
        }
    }
}

/// A node process that exited on its own.
#[derive(Debug)]
pub struct Exited {
    pub status: ExitStatus,
    pub stderr: String,
}

/// A running (or stopped, between restarts) node. Drop kills it.
pub struct Node {
    config_path: PathBuf,
    stderr_path: PathBuf,
    store_dir: PathBuf,
    binary: PathBuf,
    ready_timeout: Duration,
    env: Vec<(String, String)>,
    child: Option<Child>,
    data: Option<SocketAddr>,
    admin: Option<SocketAddr>,
    /// The HTTPS listener, when the config has a `[tls]` section.
    tls: Option<SocketAddr>,
    /// How many times the process was started; labels the stderr log.
    starts: u32,
    /// The lines the running node printed on stdout after its ready line.
    stdout: Option<Receiver<String>>,
    dir: TempDir,
}

impl Node {
    /// The data-plane address printed on the ready line. Changes on every (re)start.
    pub fn data_addr(&self) -> SocketAddr {
        self.data.expect("node is not running")
    }

    /// The admin address printed on the ready line.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin.expect("node is not running")
    }

    /// The HTTPS address printed on the ready line (`tls=...`), when `[tls]` is configured and
    /// the node is running. Changes on every (re)start.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The node process's id, for reading `/proc/PID/status` (memory tests).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("node is not running").id()
    }

    pub fn store_dir(&self) -> &Path {
        &self.store_dir
    }

    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// Everything the node wrote to stderr, across restarts.
    pub fn stderr(&self) -> String {
        fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => child.try_wait().ok().flatten().is_none(),
            None => false,
        }
    }

    /// Sends `signal` to the running node (SIGHUP: reload, SIGUSR1: reopen the access log).
    pub fn signal(&self, signal: libc::c_int) {
        let pid = libc::pid_t::try_from(self.pid()).expect("pid fits pid_t");
        // SAFETY: kill(2) only sends a signal, to our own child, which is running (we hold its
        // `Child` and have not waited on it), so the pid cannot have been reused.
        let rc = unsafe { libc::kill(pid, signal) };
        assert_eq!(rc, 0, "kill: {}", std::io::Error::last_os_error());
    }

    /// The next line the node prints on stdout after its ready line, waiting up to `timeout`.
    pub fn next_stdout_line(&self, timeout: Duration) -> Option<String> {
        self.stdout.as_ref()?.recv_timeout(timeout).ok()
    }

    /// SIGKILL, then wait: the process gets no chance to flush, sync or clean up.
    pub fn kill9(&mut self) {
        let mut child = self.child.take().expect("kill9: node is not running");
        self.data = None;
        self.admin = None;
        self.tls = None;
        // std's Child::kill is SIGKILL on Unix.
        let _ = child.kill();
        wait_with_timeout(&mut child, EXIT_TIMEOUT)
            .unwrap_or_else(|| panic!("node did not die within {EXIT_TIMEOUT:?} of SIGKILL"));
    }

    /// SIGTERM, then wait for a clean exit; panics (after a SIGKILL) if it takes longer than
    /// [`EXIT_TIMEOUT`]. Returns the exit status.
    pub fn stop(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("stop: node is not running");
        self.data = None;
        self.admin = None;
        self.tls = None;
        let pid = libc::pid_t::try_from(child.id()).expect("pid fits pid_t");
        // SAFETY: kill(2) only sends a signal; `pid` is our own child, not yet reaped (we hold
        // its `Child` and have not waited), so the pid cannot have been reused by another process.
        let rc = unsafe { libc::kill(pid, libc::SIGTERM) };
        assert_eq!(rc, 0, "kill(SIGTERM) failed: {}", std::io::Error::last_os_error());
        match wait_with_timeout(&mut child, EXIT_TIMEOUT) {
            Some(status) => status,
            None => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("node did not exit within {EXIT_TIMEOUT:?} of SIGTERM; stderr:\n{}", self.stderr());
            }
        }
    }

    /// Stops the node (SIGTERM) if it runs, then starts it again on the same config and store.
    /// The listen ports change: read [`Node::data_addr`] again afterwards.
    pub fn restart(&mut self) {
        if self.child.is_some() {
            self.stop();
        }
        self.spawn();
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(&self.binary);
        cmd.arg("--config")
            .arg(&self.config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(self.stderr_file()));
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd
    }

    /// Spawns the process. Retries ETXTBSY: a script written by a self-test can still be open
    /// for writing in a child that another test thread forked at that moment (until it execs).
    fn spawn_child(&self) -> Child {
        let mut tries = 0;
        loop {
            match self.command().spawn() {
                Ok(child) => return child,
                Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && tries < 20 => {
                    tries += 1;
                    thread::sleep(Duration::from_millis(50));
                }
                Err(e) => panic!("spawn {}: {e}", self.binary.display()),
            }
        }
    }

    /// The stderr log, opened for append so restarts keep earlier runs' output.
    fn stderr_file(&self) -> File {
        OpenOptions::new().create(true).append(true).open(&self.stderr_path).expect("open stderr log")
    }

    /// Starts the process and waits for its ready line.
    fn spawn(&mut self) {
        assert!(self.child.is_none(), "node already running");
        self.starts += 1;
        let _ = writeln!(self.stderr_file(), "=== e2e: start #{} ===", self.starts);
        let mut child = self.spawn_child();
        let lines = read_stdout_lines(&mut child);
        match wait_ready(&lines, self.ready_timeout) {
            Ok((data, admin, tls)) => {
                self.data = Some(data);
                self.admin = Some(admin);
                self.tls = tls;
                self.child = Some(child);
                self.stdout = Some(lines);
            }
            Err(why) => {
                let _ = child.kill();
                let status = child.wait();
                panic!(
                    "node did not become ready: {why} (exit: {status:?})\nconfig:\n{}\nstderr:\n{}",
                    fs::read_to_string(&self.config_path).unwrap_or_default(),
                    self.stderr()
                );
            }
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = wait_with_timeout(&mut child, EXIT_TIMEOUT);
        }
        // A failing test gets the node's side of the story in its captured output.
        if thread::panicking() {
            eprintln!("---- edgemirror stderr ({}) ----\n{}---- end ----", self.stderr_path.display(), self.stderr());
        }
    }
}

/// Forwards the child's stdout lines to a channel from a thread that keeps draining the pipe
/// after readiness, so the node can never block on a full stdout.
fn read_stdout_lines(child: &mut Child) -> Receiver<String> {
    let stdout = child.stdout.take().expect("stdout is piped");
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            // The receiver is dropped after readiness; keep reading anyway.
            let _ = tx.send(line);
        }
    });
    rx
}

/// Waits for `edgemirror ready data=ADDR admin=ADDR`; other lines are skipped.
fn wait_ready(
    lines: &Receiver<String>,
    timeout: Duration,
) -> Result<(SocketAddr, SocketAddr, Option<SocketAddr>), String> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => {
                if line.starts_with(READY_PREFIX) {
                    let (data, admin) =
                        parse_ready_line(&line).ok_or_else(|| format!("malformed ready line {line:?}"))?;
                    return Ok((data, admin, parse_ready_tls(&line)));
                }
            }
            Err(RecvTimeoutError::Timeout) => return Err(format!("no ready line within {timeout:?}")),
            Err(RecvTimeoutError::Disconnected) => return Err("stdout closed before the ready line".to_string()),
        }
    }
}

/// `edgemirror ready data=127.0.0.1:P admin=127.0.0.1:Q` -> the two addresses.
pub fn parse_ready_line(line: &str) -> Option<(SocketAddr, SocketAddr)> {
    let rest = line.strip_prefix(READY_PREFIX)?;
    let mut data = None;
    let mut admin = None;
    for field in rest.split_whitespace() {
        match field.split_once('=')? {
            ("data", v) => data = v.parse().ok(),
            ("admin", v) => admin = v.parse().ok(),
            _ => {}
        }
    }
    Some((data?, admin?))
}

/// The optional `tls=127.0.0.1:R` field of the ready line (present when `[tls]` is configured).
/// [`parse_ready_line`] skips fields it does not know, so the line parses either way.
pub fn parse_ready_tls(line: &str) -> Option<SocketAddr> {
    let rest = line.strip_prefix(READY_PREFIX)?;
    rest.split_whitespace().find_map(|field| field.strip_prefix("tls=")).and_then(|v| v.parse().ok())
}

/// Polls for the child's exit; std has no wait with a timeout.
fn wait_with_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if Instant::now() > deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// A TOML basic string. JSON string escaping is a subset TOML accepts (`\"`, `\\`, `\n`,
/// `\uXXXX`), which covers any temp path or URL.
fn toml_string(s: &str) -> String {
    serde_json::to_string(s).expect("string serializes")
}
