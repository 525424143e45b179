//! `Proxy`: runs the real `gemini-rotator` binary for integration tests.
//!
//! It owns a fresh config home (a `TempDir` holding `config.toml` and any other files), the child
//! process, and its captured output (stderr and stdout, read by threads into shared buffers and
//! teed to the test's stderr when `GR_TEST_LOG=1`). It finds the bound address from the
//! `listening addr=IP:PORT` log line, with a bounded wait. It must not touch anything outside its
//! temp dir, and it kills the child when dropped (printing the logs if the test is panicking).
//! Also here: `config_for` (a minimal config pointing at a fake upstream), `fake_key`, and
//! `run_check` for one-shot runs such as `--check`.

use std::fmt;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_gemini-rotator");

/// The client token `config_for` puts in `[auth] tokens`.
pub const TEST_TOKEN: &str = "sk-test-token-0123456789abcdef";

/// How long `start` waits for the `listening` line.
pub const START_TIMEOUT: Duration = Duration::from_secs(15);

/// An obviously fake key in Google's format: 39 chars, `AIza` + `FAKE`, and the number in the
/// last four characters so masked forms differ (`AIza****0007`).
pub fn fake_key(n: u32) -> String {
    format!("AIzaFAKE-test-key-{n:04}-xxxxxxxxxxxx{n:04}")
}

/// `fake_key(1..=n)`.
pub fn fake_keys(n: u32) -> Vec<String> {
    (1..=n).map(fake_key).collect()
}

fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// A TOML config built by sections, so tests can add lines to `[server]` or `[auth]` without
/// writing a table twice.
#[derive(Clone, Debug)]
pub struct TestConfig {
    sections: Vec<(String, Vec<String>)>,
    tail: String,
}

/// A minimal config: listen on 127.0.0.1:0, upstream at `upstream_url`, `keys` in the pool,
/// `TEST_TOKEN` as the only client token, info-level text logs.
pub fn config_for<S: AsRef<str>>(upstream_url: &str, keys: &[S]) -> TestConfig {
    let keys: Vec<String> = keys.iter().map(|k| toml_string(k.as_ref())).collect();
    TestConfig {
        sections: Vec::new(),
        tail: String::new(),
    }
    .set("server", r#"listen = "127.0.0.1:0""#)
    .set(
        "upstream",
        &format!("base_url = {}", toml_string(upstream_url)),
    )
    .set("auth", &format!("tokens = [{}]", toml_string(TEST_TOKEN)))
    .set("pool", &format!("keys = [{}]", keys.join(", ")))
    .set("logging", r#"level = "info""#)
    .set("logging", r#"format = "text""#)
}

impl TestConfig {
    /// Sets `line` (`name = value`) in `[section]` (dotted names such as `models.aliases` work),
    /// replacing an earlier line for the same name.
    pub fn set(mut self, section: &str, line: &str) -> Self {
        let name = |l: &str| l.split('=').next().unwrap_or("").trim().to_string();
        let new_name = name(line);
        let idx = match self.sections.iter().position(|(s, _)| s == section) {
            Some(i) => i,
            None => {
                self.sections.push((section.to_string(), Vec::new()));
                self.sections.len() - 1
            }
        };
        let lines = &mut self.sections[idx].1;
        match lines.iter().position(|l| name(l) == new_name) {
            Some(i) => lines[i] = line.to_string(),
            None => lines.push(line.to_string()),
        }
        self
    }

    /// Removes `name` from `[section]`.
    pub fn unset(mut self, section: &str, name: &str) -> Self {
        if let Some((_, lines)) = self.sections.iter_mut().find(|(s, _)| s == section) {
            lines.retain(|l| l.split('=').next().unwrap_or("").trim() != name);
        }
        self
    }

    /// Appends raw TOML after the sections (for tables not otherwise touched).
    pub fn raw(mut self, toml: &str) -> Self {
        self.tail.push_str(toml);
        self.tail.push('\n');
        self
    }

    pub fn render(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for TestConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (section, lines) in &self.sections {
            writeln!(f, "[{section}]")?;
            for line in lines {
                writeln!(f, "{line}")?;
            }
            writeln!(f)?;
        }
        f.write_str(&self.tail)
    }
}

/// Unix signals the harness can send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    Term,
    Hup,
    Int,
    Kill,
}

impl Signal {
    fn name(self) -> &'static str {
        match self {
            Signal::Term => "TERM",
            Signal::Hup => "HUP",
            Signal::Int => "INT",
            Signal::Kill => "KILL",
        }
    }
}

/// Shared output of the child: everything in arrival order, plus each stream apart.
#[derive(Default)]
struct Output {
    all: String,
    stdout: String,
    stderr: String,
    /// Reader threads that reached EOF (2 = the child's output is complete).
    closed: usize,
}

type SharedOutput = Arc<Mutex<Output>>;

fn lock(out: &SharedOutput) -> std::sync::MutexGuard<'_, Output> {
    out.lock().unwrap_or_else(|e| e.into_inner())
}

fn spawn_reader<R: Read + Send + 'static>(reader: R, out: SharedOutput, is_stdout: bool) {
    let tee = std::env::var("GR_TEST_LOG").is_ok_and(|v| v == "1");
    std::thread::spawn(move || {
        let mut reader = BufReader::new(reader);
        let mut buf = Vec::new();
        // Ends at EOF, i.e. when the child exits or is killed.
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => {
                    lock(&out).closed += 1;
                    return;
                }
                Ok(_) => {
                    let line = String::from_utf8_lossy(&buf);
                    if tee {
                        eprint!("[proxy {}] {line}", if is_stdout { "out" } else { "err" });
                    }
                    let mut out = lock(&out);
                    out.all.push_str(&line);
                    if is_stdout {
                        out.stdout.push_str(&line);
                    } else {
                        out.stderr.push_str(&line);
                    }
                }
            }
        }
    });
}

/// Removes ANSI escape sequences (`ESC [ … letter`).
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

/// Finds `IP:PORT` in a `listening` line: `addr=1.2.3.4:5`, `addr="…"` or JSON `"addr":"…"`.
pub fn parse_listening_addr(logs: &str) -> Option<std::net::SocketAddr> {
    strip_ansi(logs)
        .lines()
        .filter(|l| l.contains("listening"))
        .find_map(|line| {
            let rest = line
                .split_once("addr=")
                .or_else(|| line.split_once("\"addr\":"))?
                .1
                .trim_start_matches('"');
            let end = rest
                .find(|c: char| c.is_whitespace() || c == '"' || c == ',' || c == '}')
                .unwrap_or(rest.len());
            rest[..end].parse().ok()
        })
}

/// Lays out files in the config home before the binary starts (symlinks, folders…).
type Prepare = Box<dyn FnOnce(&Path) + Send>;

/// Builder for [`Proxy`].
#[derive(Default)]
pub struct ProxyBuilder {
    config: Option<String>,
    files: Vec<(String, String)>,
    args: Vec<String>,
    envs: Vec<(String, String)>,
    config_path: Option<String>,
    prepare: Option<Prepare>,
}

impl ProxyBuilder {
    /// The content of `config.toml` (a `TestConfig` or a plain string).
    pub fn config(mut self, toml: impl ToString) -> Self {
        self.config = Some(toml.to_string());
        self
    }

    /// Another file in the config home (`keys.txt`, `tokens.txt`…); `name` may hold subfolders.
    pub fn file(mut self, name: &str, contents: &str) -> Self {
        self.files.push((name.to_string(), contents.to_string()));
        self
    }

    /// An extra command-line argument after `--config <dir>/config.toml`.
    pub fn arg(mut self, arg: &str) -> Self {
        self.args.push(arg.to_string());
        self
    }

    pub fn env(mut self, name: &str, value: &str) -> Self {
        self.envs.push((name.to_string(), value.to_string()));
        self
    }

    /// Runs with `--config <dir>/<relative>` instead of `<dir>/config.toml` (the file must be
    /// laid out by `prepare` or `file`).
    pub fn config_path(mut self, relative: &str) -> Self {
        self.config_path = Some(relative.to_string());
        self
    }

    /// Lays out the config home before the binary starts.
    pub fn prepare(mut self, f: impl FnOnce(&Path) + Send + 'static) -> Self {
        self.prepare = Some(Box::new(f));
        self
    }

    /// Spawns the binary without waiting for it to listen (for exit-code tests).
    pub fn spawn(self) -> Proxy {
        let dir = tempfile::tempdir().expect("proxy: temp dir");
        if let Some(config) = &self.config {
            write_into(dir.path(), "config.toml", config);
        }
        for (name, contents) in &self.files {
            write_into(dir.path(), name, contents);
        }
        if let Some(prepare) = self.prepare {
            prepare(dir.path());
        }
        let mut cmd = base_command(dir.path());
        let config = self.config_path.as_deref().unwrap_or("config.toml");
        cmd.arg("--config").arg(dir.path().join(config));
        cmd.args(&self.args);
        for (k, v) in &self.envs {
            cmd.env(k, v);
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("proxy: spawn the gemini-rotator binary");
        let output = SharedOutput::default();
        if let Some(out) = child.stdout.take() {
            spawn_reader(out, output.clone(), true);
        }
        if let Some(err) = child.stderr.take() {
            spawn_reader(err, output.clone(), false);
        }
        Proxy {
            child,
            dir,
            output,
            addr: None,
            exit: None,
        }
    }

    /// Spawns the binary and waits (up to `START_TIMEOUT`) for its `listening addr=…` line.
    /// Panics with the captured logs if it exits or stays silent.
    pub async fn start(self) -> Proxy {
        let mut proxy = self.spawn();
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(addr) = parse_listening_addr(&proxy.logs()) {
                proxy.addr = Some(addr);
                return proxy;
            }
            if let Some(status) = proxy.try_exit() {
                proxy.wait_output_closed(Duration::from_secs(2)).await;
                panic!(
                    "proxy exited ({status}) before listening; logs:\n{}",
                    proxy.logs()
                );
            }
            if Instant::now() >= deadline {
                panic!(
                    "proxy did not log `listening addr=` within {START_TIMEOUT:?}; logs:\n{}",
                    proxy.logs()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn write_into(dir: &Path, name: &str, contents: &str) {
    let path = dir.join(name);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).expect("proxy: create config subfolder");
    }
    std::fs::write(&path, contents).expect("proxy: write config file");
}

fn base_command(dir: &Path) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.current_dir(dir)
        .env_remove("GEMINI_ROTATOR_CONFIG")
        .env_remove("RUST_LOG")
        .env("NO_COLOR", "1");
    if let Ok(filter) = std::env::var("GR_TEST_RUST_LOG") {
        cmd.env("RUST_LOG", filter);
    }
    cmd
}

/// The real binary, running in its own config home.
pub struct Proxy {
    child: Child,
    dir: TempDir,
    output: SharedOutput,
    addr: Option<std::net::SocketAddr>,
    exit: Option<ExitStatus>,
}

impl Proxy {
    pub fn builder() -> ProxyBuilder {
        ProxyBuilder::default()
    }

    /// `http://127.0.0.1:PORT` (panics if the proxy was `spawn`ed and never listened).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr())
    }

    pub fn addr(&self) -> std::net::SocketAddr {
        self.addr
            .expect("proxy: not listening (use start(), not spawn())")
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The config home (holds `config.toml`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Overwrites (or creates) a file in the config home.
    pub fn write_file(&self, name: &str, contents: &str) {
        write_into(self.dir.path(), name, contents);
    }

    /// Stderr and stdout so far, interleaved in arrival order, ANSI escapes removed.
    pub fn logs(&self) -> String {
        strip_ansi(&lock(&self.output).all)
    }

    pub fn stdout(&self) -> String {
        strip_ansi(&lock(&self.output).stdout)
    }

    pub fn stderr(&self) -> String {
        strip_ansi(&lock(&self.output).stderr)
    }

    /// Polls the logs every 20 ms until `needle` appears or `timeout` passes.
    pub async fn wait_for_log(&self, needle: &str, timeout: Duration) -> bool {
        self.wait_for_log_count(needle, 1, timeout).await
    }

    /// Like `wait_for_log`, until `needle` has appeared at least `count` times.
    pub async fn wait_for_log_count(&self, needle: &str, count: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.logs().matches(needle).count() >= count {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A request to `path` (e.g. `/v1/chat/completions`) carrying `Bearer TEST_TOKEN`.
    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        super::client()
            .request(method, format!("{}{path}", self.url()))
            .bearer_auth(TEST_TOKEN)
    }

    pub fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.request(reqwest::Method::GET, path)
    }

    pub fn post(&self, path: &str) -> reqwest::RequestBuilder {
        self.request(reqwest::Method::POST, path)
    }

    /// The `/metrics` exposition text (empty if the body could not be read).
    pub async fn metrics(&self) -> String {
        self.get("/metrics")
            .send()
            .await
            .expect("/metrics")
            .text()
            .await
            .unwrap_or_default()
    }

    /// After the child exited: waits (bounded) until its stdout and stderr are fully captured.
    pub async fn wait_output_closed(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if lock(&self.output).closed >= 2 {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Sends a signal with the `kill` command.
    pub fn signal(&self, signal: Signal) {
        let status = Command::new("kill")
            .arg(format!("-{}", signal.name()))
            .arg(self.child.id().to_string())
            .status()
            .expect("proxy: run kill");
        assert!(status.success(), "kill -{} failed", signal.name());
    }

    fn try_exit(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none() {
            self.exit = self.child.try_wait().ok().flatten();
        }
        self.exit
    }

    /// Polls until the process exits or `timeout` passes; on exit, its output is complete.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_exit() {
                self.wait_output_closed(Duration::from_secs(2)).await;
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if self.try_exit().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() && !std::env::var("GR_TEST_LOG").is_ok_and(|v| v == "1") {
            eprintln!("----- proxy logs -----\n{}----- end -----", self.logs());
        }
    }
}

/// Runs the binary once with `args` (e.g. `["--config", "config.toml", "--check"]`) in a fresh
/// dir holding `files`, and returns (exit code, stdout, stderr). `{dir}` in an argument is
/// replaced by that dir. Blocking; bounded at 30 s (then killed, code -1).
pub fn run_check(args: &[&str], files: &[(&str, &str)]) -> (i32, String, String) {
    let dir = tempfile::tempdir().expect("run_check: temp dir");
    for (name, contents) in files {
        write_into(dir.path(), name, contents);
    }
    let dir_str = dir.path().to_string_lossy().into_owned();
    let mut child = base_command(dir.path())
        .args(args.iter().map(|a| a.replace("{dir}", &dir_str)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run_check: spawn the gemini-rotator binary");
    let read_all = |r: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut s = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut s);
            }
            strip_ansi(&String::from_utf8_lossy(&s))
        })
    };
    let out = read_all(
        child
            .stdout
            .take()
            .map(|r| Box::new(r) as Box<dyn Read + Send>),
    );
    let err = read_all(
        child
            .stderr
            .take()
            .map(|r| Box::new(r) as Box<dyn Read + Send>),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let code = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status.code().unwrap_or(-1),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                break -1;
            }
        }
    };
    let stdout = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    (code, stdout, stderr)
}
