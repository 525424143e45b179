//! The binary as an operator runs it (SPEC §1, §7): `--check`, `GEMINI_ROTATOR_CONFIG`, exit
//! codes, graceful shutdown on SIGTERM, and logs that never carry a key.

mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::{
    config_for, fake_key, fake_keys, mask, run_check, sse_data, text_chunk, FakeGemini, Proxy,
    Reply, Signal, TEST_TOKEN,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const FLASH: &str = "gemini-2.5-flash";
/// An upstream nobody listens on: `--check` must not need one.
const NO_UPSTREAM: &str = "http://127.0.0.1:9";
const EXIT_BOUND: Duration = Duration::from_secs(10);

fn check(files: &[(&str, &str)]) -> (i32, String, String) {
    run_check(&["--config", "{dir}/config.toml", "--check"], files)
}

fn valid_config() -> String {
    config_for(NO_UPSTREAM, &fake_keys(2)).render()
}

/// Asserts that no full key or client token appears in `text`.
fn assert_no_secrets(text: &str, secrets: &[String]) {
    for secret in secrets {
        assert!(!text.contains(secret.as_str()), "a secret leaked:\n{text}");
    }
}

fn all_secrets() -> Vec<String> {
    let mut secrets = fake_keys(9);
    secrets.push(TEST_TOKEN.to_string());
    secrets
}

fn chat(model: &str, stream: bool) -> Value {
    json!({ "model": model, "stream": stream, "messages": [{ "role": "user", "content": "hi" }] })
}

// ---------------------------------------------------------------------------------------------
// --check

#[test]
fn check_accepts_a_valid_config() {
    let (code, stdout, stderr) = check(&[("config.toml", &valid_config())]);
    assert_eq!(code, 0, "stdout: {stdout}\nstderr: {stderr}");
    assert!(stdout.contains("ok"), "stdout: {stdout}");
    assert_no_secrets(&format!("{stdout}{stderr}"), &all_secrets());
}

#[test]
fn check_reports_a_syntax_error_with_its_position() {
    let config = format!("{}\n[server]\nlisten = \"127.0.0.1:0\n", valid_config());
    let broken_line = config.lines().count();
    let (code, stdout, stderr) = check(&[("config.toml", &config)]);
    assert_eq!(code, 1, "stdout: {stdout}\nstderr: {stderr}");
    assert!(
        stderr.contains(&format!("config.toml:{broken_line}:")),
        "expected config.toml:{broken_line}:COL in:\n{stderr}"
    );
    assert_no_secrets(&format!("{stdout}{stderr}"), &all_secrets());
}

/// Runs `--check` on `files` and asserts exit 1 with a problem line naming `file:LINE:COL`
/// (`position` is `file:` or `file:LINE:`) and `field`, and no secret in the output.
fn expect_problem(name: &str, files: &[(&str, &str)], position: &str, field: &str) {
    let (code, stdout, stderr) = check(files);
    assert_eq!(code, 1, "{name}: stdout: {stdout}\nstderr: {stderr}");
    let problem = stderr
        .lines()
        .find(|l| l.contains(position) && l.contains(field))
        .unwrap_or_else(|| panic!("{name}: no `{position}…` line naming {field} in:\n{stderr}"));
    let file = position.split(':').next().unwrap_or(position);
    let after = &problem[problem.find(&format!("{file}:")).unwrap_or(0) + file.len() + 1..];
    let numbers: Vec<&str> = after.splitn(3, ':').take(2).collect();
    assert!(
        numbers.len() == 2 && numbers.iter().all(|n| n.parse::<u32>().is_ok()),
        "{name}: no {file}:LINE:COL in `{problem}`"
    );
    assert_no_secrets(&format!("{stdout}{stderr}"), &all_secrets());
}

#[test]
fn check_reports_semantic_errors_with_file_line_col_and_field() {
    let base = || config_for(NO_UPSTREAM, &fake_keys(1));

    let bad_cidr = base().set("access", r#"allow = ["10.0.0.0/33"]"#).render();
    let at = at_line(&bad_cidr, "10.0.0.0/33");
    expect_problem(
        "bad CIDR",
        &[("config.toml", &bad_cidr)],
        &at,
        "access.allow",
    );

    let empty_pool = base().set("pool", "keys = []").render();
    let at = at_line(&empty_pool, "keys = []");
    expect_problem(
        "empty pool",
        &[("config.toml", &empty_pool)],
        &at,
        "pool.keys",
    );

    let alias_loop = base()
        .raw("[models.aliases]\n\"fast\" = \"quick\"\n\"quick\" = \"fast\"")
        .render();
    let files = [("config.toml", alias_loop.as_str())];
    expect_problem("alias loop", &files, "config.toml:", "models.aliases");

    let with_file = base().set("pool", r#"key_files = ["keys.txt"]"#).render();
    let keys_txt = format!("{}\n# a comment\n{}\n", fake_key(2), fake_key(2));
    let files = [("config.toml", with_file.as_str()), ("keys.txt", &keys_txt)];
    expect_problem("duplicate key", &files, "keys.txt:3:", "pool.key_files");
}

/// `config.toml:N:` for the 1-based line of `config` holding `needle`.
fn at_line(config: &str, needle: &str) -> String {
    let line = config
        .lines()
        .position(|l| l.contains(needle))
        .map(|i| i + 1)
        .unwrap_or_else(|| panic!("`{needle}` not in the config"));
    format!("config.toml:{line}:")
}

/// Runs the binary with `--check` in `dir`, no `--config`, and `GEMINI_ROTATOR_CONFIG` set.
fn check_with_env(dir: &Path, env_config: &Path) -> (i32, String, String) {
    let output = Command::new(support::proxy::BIN)
        .current_dir(dir)
        .arg("--check")
        .env("GEMINI_ROTATOR_CONFIG", env_config)
        .env_remove("RUST_LOG")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .expect("run the binary");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn config_path_comes_from_the_environment_without_flag() {
    let dir = tempfile::tempdir().expect("temp dir");
    let good = dir.path().join("elsewhere.toml");
    let bad = dir.path().join("config.toml");
    std::fs::write(&good, valid_config()).expect("write");
    std::fs::write(&bad, "this is not toml [").expect("write");

    // ./config.toml is broken; the env var points to the good one.
    let (code, stdout, stderr) = check_with_env(dir.path(), &good);
    assert_eq!(code, 0, "stdout: {stdout}\nstderr: {stderr}");
    assert!(stdout.contains("elsewhere.toml"), "stdout: {stdout}");

    // And the other way round: the env var wins over a good ./config.toml.
    std::fs::write(&bad, valid_config()).expect("write");
    std::fs::write(&good, "this is not toml [").expect("write");
    let (code, stdout, stderr) = check_with_env(dir.path(), &good);
    assert_eq!(code, 1, "stdout: {stdout}\nstderr: {stderr}");
    assert!(stderr.contains("elsewhere.toml"), "stderr: {stderr}");
}

// ---------------------------------------------------------------------------------------------
// Exit codes

#[tokio::test]
async fn bad_config_at_start_exits_1() {
    let mut proxy = Proxy::builder()
        .config(config_for(NO_UPSTREAM, &fake_keys(1)).set("access", r#"allow = ["nope"]"#))
        .spawn();
    let status = proxy.wait_exit(EXIT_BOUND).await.expect("still running");
    assert_eq!(status.code(), Some(1), "logs:\n{}", proxy.logs());
}

#[tokio::test]
async fn port_in_use_exits_2() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let mut proxy = Proxy::builder()
        .config(
            config_for(NO_UPSTREAM, &fake_keys(1))
                .set("server", &format!(r#"listen = "127.0.0.1:{port}""#)),
        )
        .spawn();
    let status = proxy.wait_exit(EXIT_BOUND).await.expect("still running");
    assert_eq!(status.code(), Some(2), "logs:\n{}", proxy.logs());
    drop(taken);
}

#[tokio::test]
async fn a_second_proxy_on_the_same_port_exits_2() {
    // Workers share their port (SO_REUSEPORT); another proxy must not join them silently.
    let fake = FakeGemini::start().await;
    let config = config_for(&fake.url(), &fake_keys(1)).set("server", "workers = 2");
    let first = Proxy::builder().config(&config).start().await;
    let port = first.addr().port();
    let mut second = Proxy::builder()
        .config(config.set("server", &format!(r#"listen = "127.0.0.1:{port}""#)))
        .spawn();
    let status = second.wait_exit(EXIT_BOUND).await.expect("still running");
    assert_eq!(status.code(), Some(2), "logs:\n{}", second.logs());
    assert_eq!(
        first
            .get("/livez")
            .send()
            .await
            .map(|r| r.status().as_u16())
            .ok(),
        Some(200),
        "the first proxy keeps serving"
    );
}

// ---------------------------------------------------------------------------------------------
// Graceful shutdown

#[tokio::test]
async fn sigterm_when_idle_exits_0_quickly() {
    let fake = FakeGemini::start().await;
    let mut proxy = Proxy::builder()
        .config(config_for(&fake.url(), &fake_keys(1)))
        .start()
        .await;
    let sent = Instant::now();
    proxy.signal(Signal::Term);
    let status = proxy.wait_exit(EXIT_BOUND).await.expect("still running");
    assert_eq!(status.code(), Some(0), "logs:\n{}", proxy.logs());
    assert!(
        sent.elapsed() < Duration::from_secs(3),
        "{:?}",
        sent.elapsed()
    );

    let mut proxy = Proxy::builder()
        .config(config_for(&fake.url(), &fake_keys(1)))
        .start()
        .await;
    proxy.signal(Signal::Int);
    let status = proxy
        .wait_exit(EXIT_BOUND)
        .await
        .expect("still running after SIGINT");
    assert_eq!(status.code(), Some(0), "logs:\n{}", proxy.logs());
}

/// Sends `GET /readyz` on an open raw connection; `None` when the connection is closed instead.
async fn readyz_on(stream: &mut tokio::net::TcpStream) -> Option<u16> {
    let exchange = async {
        stream
            .write_all(b"GET /readyz HTTP/1.1\r\nHost: proxy\r\n\r\n")
            .await
            .ok()?;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 1024];
        loop {
            let n = stream.read(&mut chunk).await.ok()?;
            if n == 0 {
                return None;
            }
            buf.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&buf);
            // The readiness bodies are tiny JSON objects.
            if text.contains("\r\n\r\n") && text.trim_end().ends_with('}') {
                return text.split_whitespace().nth(1)?.parse().ok();
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .expect("readyz: no answer and no close within 5 s")
}

#[tokio::test]
async fn sigterm_drains_then_ends_open_streams_with_an_error_event() {
    let fake = FakeGemini::start().await;
    fake.on_any()
        .always(Reply::stream_then_hang(vec![text_chunk(
            "first words",
            None,
        )]));
    let mut proxy = Proxy::builder()
        .config(config_for(&fake.url(), &fake_keys(1)).set("server", r#"shutdown_grace = "1s""#))
        .start()
        .await;

    let mut keep_alive = tokio::net::TcpStream::connect(proxy.addr())
        .await
        .expect("connect");
    assert_eq!(readyz_on(&mut keep_alive).await, Some(200));

    let mut resp = proxy
        .post("/v1/chat/completions")
        .json(&chat(FLASH, true))
        .send()
        .await
        .expect("stream request");
    assert_eq!(resp.status(), 200);
    let mut body = String::new();
    while !body.contains("first words") {
        let chunk = tokio::time::timeout(Duration::from_secs(5), resp.chunk())
            .await
            .expect("no first chunk within 5 s")
            .expect("stream read");
        let Some(chunk) = chunk else {
            panic!("stream ended before its first words: {body}")
        };
        body.push_str(&String::from_utf8_lossy(&chunk));
    }

    let sent = Instant::now();
    proxy.signal(Signal::Term);

    // Once the signal is handled, readiness fails on the open connection (or the idle
    // connection is closed).
    assert!(
        proxy
            .wait_for_log("stopped accepting", Duration::from_secs(2))
            .await,
        "SIGTERM not handled within 2 s:\n{}",
        proxy.logs()
    );
    let ready = readyz_on(&mut keep_alive).await;
    assert_ne!(ready, Some(200), "still ready after SIGTERM");

    // New connections are refused soon.
    let mut refused = false;
    while sent.elapsed() < Duration::from_secs(2) {
        if tokio::net::TcpStream::connect(proxy.addr()).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(refused, "still accepting 2 s after SIGTERM");

    // The in-flight stream lasts the grace period, then ends with an error event.
    let rest = tokio::time::timeout(Duration::from_secs(8), async {
        while let Ok(Some(chunk)) = resp.chunk().await {
            body.push_str(&String::from_utf8_lossy(&chunk));
        }
    })
    .await;
    assert!(rest.is_ok(), "the stream did not end within 8 s: {body}");
    let ended = sent.elapsed();
    assert!(
        ended >= Duration::from_millis(900),
        "cut before the grace: {ended:?}"
    );
    let events = sse_data(&body);
    let last_json = events
        .iter()
        .rev()
        .find(|e| *e != "[DONE]")
        .and_then(|e| serde_json::from_str::<Value>(e).ok())
        .unwrap_or_else(|| panic!("no JSON event in: {body}"));
    assert!(
        last_json.get("error").is_some(),
        "last event is not an error: {body}"
    );

    let status = proxy.wait_exit(EXIT_BOUND).await.expect("still running");
    assert_eq!(status.code(), Some(0), "logs:\n{}", proxy.logs());
}

// ---------------------------------------------------------------------------------------------
// Secrets in logs

#[tokio::test]
async fn logs_never_contain_a_key() {
    let keys = fake_keys(3);
    let fake = FakeGemini::start().await;
    fake.on_key(&keys[1])
        .always(Reply::quota_per_minute(FLASH, Some("30s")));
    fake.on_key(&keys[2]).always(Reply::api_key_invalid());
    let mut proxy = Proxy::builder()
        .config(
            config_for(&fake.url(), &keys)
                .set("logging", r#"level = "debug""#)
                .set("logging", r#"directory = "logs""#),
        )
        .start()
        .await;

    for stream in [false, true, false, false, true, false] {
        let resp = proxy
            .post("/v1/chat/completions")
            .json(&chat(FLASH, stream))
            .send()
            .await
            .expect("request");
        assert_eq!(resp.status(), 200);
        let _ = resp.text().await;
    }
    let gemini = proxy
        .post(&format!("/v1beta/models/{FLASH}:generateContent"))
        .json(&json!({ "contents": [{ "parts": [{ "text": "hi" }] }] }))
        .send()
        .await
        .expect("request");
    assert_eq!(gemini.status(), 200);
    let models = proxy.get("/v1/models").send().await.expect("request");
    assert_eq!(models.status(), 200);
    assert!(fake.hits_for_key(&keys[1]) > 0 && fake.hits_for_key(&keys[2]) > 0);

    proxy.signal(Signal::Term);
    let status = proxy.wait_exit(EXIT_BOUND).await.expect("still running");
    assert_eq!(status.code(), Some(0));

    let stderr = proxy.stderr();
    let mut files = String::new();
    let entries = std::fs::read_dir(proxy.path("logs")).expect("the log directory exists");
    for entry in entries.flatten() {
        files.push_str(&std::fs::read_to_string(entry.path()).unwrap_or_default());
    }
    assert!(!files.is_empty(), "no log file written");

    for (name, text) in [("stderr", &stderr), ("log files", &files)] {
        assert_no_secrets(text, &all_secrets());
        assert!(
            text.contains(&mask(&keys[0])),
            "{name}: no masked key:\n{text}"
        );
        let request_line = text
            .lines()
            .find(|l| l.contains("chat_completions") && l.contains("status=200"))
            .unwrap_or_else(|| panic!("{name}: no request line:\n{text}"));
        for field in ["model=", "key=", "status=", "attempts=", "latency_ms="] {
            assert!(
                request_line.contains(field),
                "{name}: no {field} in {request_line}"
            );
        }
        assert!(request_line.contains(FLASH), "{request_line}");
    }
}
