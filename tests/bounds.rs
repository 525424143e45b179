//! Resource bounds of the real binary under load and abuse (issue #14, items 12 to 14):
//! admission (`max_in_flight`, `max_connections`), the body and write deadlines, the memory
//! budget, the embeddings input cap, and logging that never stalls a request (an unread stderr
//! pipe, a log file in the watched config folder at `trace`).
//!
//! Raw TCP where a client library would hide the behaviour; every wait is bounded.

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::{config_for, fake_key, text_chunk, FakeGemini, Proxy, Reply, Signal, TEST_TOKEN};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// How long any raw read may take before the test gives up.
const READ_BOUND: Duration = Duration::from_secs(10);
const FLASH: &str = "gemini-2.5-flash";

async fn start(fake: &FakeGemini, lines: &[(&str, &str)]) -> Proxy {
    let mut config = config_for(&fake.url(), &[fake_key(1)]).set("models", r#"list = "static""#);
    for (section, line) in lines {
        config = config.set(section, line);
    }
    Proxy::builder().config(config).start().await
}

async fn connect(addr: SocketAddr) -> TcpStream {
    tokio::time::timeout(READ_BOUND, TcpStream::connect(addr))
        .await
        .expect("connect: timed out")
        .expect("connect to the proxy")
}

/// Head of a POST to `path` with the test token (both dialects' headers); `extra` ends with
/// `\r\n` per line.
fn post_head(path: &str, extra: &str) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: proxy\r\nAuthorization: Bearer {TEST_TOKEN}\r\n\
         x-goog-api-key: {TEST_TOKEN}\r\nContent-Type: application/json\r\n{extra}\r\n"
    )
}

fn chat(text: &str, stream: bool) -> String {
    json!({ "model": FLASH, "stream": stream, "messages": [{ "role": "user", "content": text }] })
        .to_string()
}

/// Reads one HTTP/1.1 response (Content-Length or chunked) within `READ_BOUND`:
/// (status, lower-cased head, body).
async fn read_response(stream: &mut TcpStream) -> (u16, String, String) {
    let read = async {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            if let Some(end) = find(&buf, b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                let body_start = end + 4;
                let stop = if let Some(len) = header_value(&head, "content-length") {
                    let len: usize = len.parse().unwrap_or(0);
                    (buf.len() >= body_start + len).then_some(body_start + len)
                } else if header_value(&head, "transfer-encoding")
                    .is_some_and(|v| v.contains("chunked"))
                {
                    find(&buf[body_start..], b"0\r\n\r\n").map(|i| body_start + i + 5)
                } else {
                    None
                };
                if let Some(stop) = stop {
                    let status = head
                        .split_whitespace()
                        .nth(1)
                        .and_then(|s| s.parse().ok())
                        .unwrap_or(0);
                    let body = String::from_utf8_lossy(&buf[body_start..stop]).to_string();
                    return (status, head, body);
                }
            }
            let n = stream.read(&mut chunk).await.expect("read from the proxy");
            assert!(
                n > 0,
                "connection closed mid-response: {:?}",
                String::from_utf8_lossy(&buf)
            );
            buf.extend_from_slice(&chunk[..n]);
        }
    };
    tokio::time::timeout(READ_BOUND, read)
        .await
        .expect("no complete response within the bound")
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn header_value<'a>(lower_head: &'a str, name: &str) -> Option<&'a str> {
    lower_head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k.trim() == name).then(|| v.trim())
    })
}

/// Reads until the server closes the connection (within `READ_BOUND`); what it sent first.
async fn read_until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let until_closed = async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(READ_BOUND, until_closed)
        .await
        .expect("the proxy kept the connection open");
    got
}

fn json_of(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or(Value::Null)
}

// ---- item 12: admission --------------------------------------------------------------------

#[tokio::test]
async fn requests_beyond_max_in_flight_get_a_fast_503_and_the_admitted_succeed() {
    let fake = FakeGemini::start().await;
    // The admitted requests are held well past the time the refused ones need.
    fake.on_any()
        .always(Reply::delay(Duration::from_secs(8), Reply::text("held")));
    let proxy = start(&fake, &[("server", "max_in_flight = 4")]).await;

    let url = format!("{}/v1/chat/completions", proxy.url());
    let tasks: Vec<_> = (0..40)
        .map(|i| {
            let request = support::client()
                .post(&url)
                .bearer_auth(TEST_TOKEN)
                .header("content-type", "application/json")
                .body(chat(&format!("request {i}"), false));
            tokio::spawn(async move {
                let response = request.send().await.expect("request");
                let status = response.status().as_u16();
                let retry_after = response
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                let body: Value = response.json().await.unwrap_or(Value::Null);
                (status, retry_after, body, Instant::now())
            })
        })
        .collect();

    // While the four are held: probes still answer, and the Gemini dialect gets its own 503.
    assert!(
        fake.wait_for(|f| f.in_flight() == 4, READ_BOUND).await,
        "four requests should reach the upstream"
    );
    let livez = support::client()
        .get(format!("{}/livez", proxy.url()))
        .send()
        .await
        .expect("livez");
    assert_eq!(livez.status().as_u16(), 200);
    let google = proxy
        .post(&format!("/v1beta/models/{FLASH}:generateContent"))
        .header("x-goog-api-key", TEST_TOKEN)
        .json(&json!({"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}))
        .send()
        .await
        .expect("v1beta request");
    assert_eq!(google.status().as_u16(), 503);
    assert_eq!(google.headers()["retry-after"], "1");
    let google: Value = google.json().await.unwrap_or(Value::Null);
    assert_eq!(google["error"]["status"], "UNAVAILABLE", "{google}");
    assert_eq!(google["error"]["code"], 503, "{google}");

    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.expect("request task"));
    }
    let ok: Vec<_> = results.iter().filter(|r| r.0 == 200).collect();
    let refused: Vec<_> = results.iter().filter(|r| r.0 == 503).collect();
    assert_eq!(
        ok.len(),
        4,
        "{:?}",
        results.iter().map(|r| r.0).collect::<Vec<_>>()
    );
    assert_eq!(refused.len(), 36);
    for (_, retry_after, body, _) in &refused {
        assert_eq!(retry_after.as_deref(), Some("1"));
        assert_eq!(body["error"]["type"], "server_error", "{body}");
        assert_eq!(body["error"]["code"], "overloaded", "{body}");
    }
    // Fast: every refusal came back before the first admitted request was answered.
    let first_ok = ok.iter().map(|r| r.3).min().expect("an admitted request");
    assert!(refused.iter().all(|r| r.3 < first_ok));
    for (_, _, body, _) in &ok {
        assert_eq!(body["choices"][0]["message"]["content"], "held", "{body}");
    }
    // Refused requests never reached the upstream.
    assert_eq!(fake.total_hits(), 4);
}

#[tokio::test]
async fn connections_beyond_max_connections_get_a_503_then_are_closed() {
    let fake = FakeGemini::start().await;
    // One worker: connections are accepted in the order they were opened.
    let proxy = start(
        &fake,
        &[("server", "max_connections = 2"), ("server", "workers = 1")],
    )
    .await;
    let addr = proxy.addr();
    let livez = "GET /livez HTTP/1.1\r\nHost: proxy\r\n\r\n";

    // Two kept-alive connections fill max_connections.
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut c = connect(addr).await;
        c.write_all(livez.as_bytes()).await.expect("write");
        let (status, _, _) = read_response(&mut c).await;
        assert_eq!(status, 200);
        held.push(c);
    }

    // The next one is in the reserve: its request gets the 503, and the connection is closed.
    let mut over = connect(addr).await;
    let body = chat("hi", false);
    over.write_all(
        format!(
            "{}{body}",
            post_head(
                "/v1/chat/completions",
                &format!("Content-Length: {}\r\n", body.len())
            )
        )
        .as_bytes(),
    )
    .await
    .expect("write");
    let (status, head, body) = read_response(&mut over).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(header_value(&head, "retry-after"), Some("1"), "{head}");
    assert_eq!(json_of(&body)["error"]["code"], "overloaded", "{body}");
    read_until_closed(&mut over).await;
    // A probe in the reserve still answers.
    let mut probe = connect(addr).await;
    probe.write_all(livez.as_bytes()).await.expect("write");
    let (status, _, _) = read_response(&mut probe).await;
    assert_eq!(status, 200);
    read_until_closed(&mut probe).await;
    assert_eq!(fake.total_hits(), 0);

    // Fill the reserve (max_connections / 16, at least 8) with idle connections: the next one
    // is closed at once, without a byte of answer.
    let mut idle = Vec::new();
    for _ in 0..8 {
        idle.push(connect(addr).await);
    }
    let mut refused = connect(addr).await;
    let _ = refused.write_all(livez.as_bytes()).await;
    let got = read_until_closed(&mut refused).await;
    assert!(got.is_empty(), "{:?}", String::from_utf8_lossy(&got));

    // The held connections still work.
    for c in &mut held {
        c.write_all(livez.as_bytes()).await.expect("write");
        let (status, _, _) = read_response(c).await;
        assert_eq!(status, 200);
    }
}

// ---- item 13: deadlines --------------------------------------------------------------------

#[tokio::test]
async fn a_body_that_trickles_gets_408_within_body_timeout() {
    let fake = FakeGemini::start().await;
    let proxy = start(&fake, &[("server", r#"body_timeout = "1s""#)]).await;

    for (path, google) in [
        ("/v1/chat/completions", false),
        ("/v1beta/models/gemini-2.5-flash:generateContent", true),
    ] {
        let stream = connect(proxy.addr()).await;
        let (mut read, mut write) = stream.into_split();
        write
            .write_all(post_head(path, "Content-Length: 1000\r\n").as_bytes())
            .await
            .expect("write head");
        write
            .write_all(&[b' '; 500])
            .await
            .expect("write half the body");
        // Slowloris: a byte now and then, never the whole body.
        let trickle = tokio::spawn(async move {
            for _ in 0..200 {
                tokio::time::sleep(Duration::from_millis(100)).await;
                if write.write_all(b" ").await.is_err() {
                    return;
                }
            }
        });
        let mut buf = Vec::new();
        let read_all = async {
            let mut chunk = [0u8; 4096];
            loop {
                match read.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
        };
        tokio::time::timeout(READ_BOUND, read_all)
            .await
            .expect("no 408 and close within the bound");
        trickle.abort();
        let text = String::from_utf8_lossy(&buf).to_string();
        assert!(text.starts_with("HTTP/1.1 408"), "{text}");
        let body = json_of(text.split("\r\n\r\n").nth(1).unwrap_or(""));
        if google {
            assert_eq!(body["error"]["code"], 408, "{text}");
            assert_eq!(body["error"]["status"], "DEADLINE_EXCEEDED", "{text}");
        } else {
            assert_eq!(body["error"]["code"], "request_timeout", "{text}");
            assert_eq!(body["error"]["type"], "invalid_request_error", "{text}");
        }
    }
    assert_eq!(fake.total_hits(), 0);
}

#[tokio::test]
async fn a_client_that_stops_reading_is_cut_and_its_upstream_stream_cancelled() {
    let fake = FakeGemini::start().await;
    // Far more than the socket buffers on the way hold, then an open, silent stream.
    let big = "x".repeat(64 * 1024);
    let events: Vec<Value> = (0..300).map(|_| text_chunk(&big, None)).collect();
    fake.on_any().always(Reply::stream_then_hang(events));
    let proxy = start(
        &fake,
        &[
            ("server", r#"write_timeout = "1s""#),
            ("upstream", r#"heartbeat = "0s""#),
        ],
    )
    .await;

    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .set_recv_buffer_size(4096)
        .expect("small receive buffer");
    let mut client = tokio::time::timeout(READ_BOUND, socket.connect(proxy.addr()))
        .await
        .expect("connect: timed out")
        .expect("connect");
    let body = chat("a long answer, please", true);
    client
        .write_all(
            format!(
                "{}{body}",
                post_head(
                    "/v1/chat/completions",
                    &format!("Content-Length: {}\r\n", body.len())
                )
            )
            .as_bytes(),
        )
        .await
        .expect("write the request");
    // Never read: the proxy must give up on us and let go of the upstream.
    assert!(
        fake.wait_for(|f| f.cancellations() >= 1, Duration::from_secs(30))
            .await,
        "the upstream stream was not cancelled (in flight: {})",
        fake.in_flight()
    );
    assert!(
        proxy
            .wait_for_log("client disconnected", Duration::from_secs(5))
            .await,
        "the stream's log line"
    );
    drop(client);
}

// ---- item 14: memory budget, embeddings cap, logging ---------------------------------------

/// A connection that has sent the head of a chat request declaring a `len`-byte body, and
/// none of the body.
async fn declare_chat(proxy: &Proxy, len: usize) -> TcpStream {
    let mut stream = connect(proxy.addr()).await;
    let head = post_head(
        "/v1/chat/completions",
        &format!("Content-Length: {len}\r\n"),
    );
    stream
        .write_all(head.as_bytes())
        .await
        .expect("write the head");
    stream
}

/// `gemini_rotator_memory_budget_used_bytes` from `/metrics`.
async fn budget_used(proxy: &Proxy) -> u64 {
    let text = proxy.metrics().await;
    text.lines()
        .find_map(|line| line.strip_prefix("gemini_rotator_memory_budget_used_bytes "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no memory budget gauge in {text}"))
}

#[tokio::test]
async fn the_memory_budget_refuses_a_second_big_body() {
    let fake = FakeGemini::start().await;
    let proxy = start(&fake, &[("server", r#"memory_budget = "1MiB""#)]).await;
    let big = chat(&"y".repeat(700 * 1024), false);

    // A declares its body and sends half of it: its 700 KiB are reserved while it trickles.
    let mut a = declare_chat(&proxy, big.len()).await;
    let half = big.len() / 2;
    a.write_all(&big.as_bytes()[..half])
        .await
        .expect("write half");

    // Once the proxy has read A's head (the gauge says so; bounded wait), B, as big, does not
    // fit beside it. Sending B before that raced A: B could take the budget first and A be
    // refused instead, and every later B then fit.
    let mut held = 0;
    for _ in 0..200 {
        held = budget_used(&proxy).await;
        if held >= big.len() as u64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(
        held >= big.len() as u64,
        "A's body was never reserved: {held} bytes held"
    );
    // B declares its body and waits: refused on its head alone (a client still writing a body
    // the proxy will not read may see its connection reset before the answer).
    let mut b = declare_chat(&proxy, big.len()).await;
    let (status, head, body) = read_response(&mut b).await;
    assert_eq!(status, 503, "B fit beside A: {body}");
    assert_eq!(header_value(&head, "retry-after"), Some("1"), "{head}");
    let body: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    assert_eq!(body["error"]["code"], "overloaded", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("memory budget"),
        "{body}"
    );

    // A completes and is served; then the budget is free again for B.
    a.write_all(&big.as_bytes()[half..])
        .await
        .expect("write the rest");
    let (status, _, body) = read_response(&mut a).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(budget_used(&proxy).await, 0, "A's reservation outlived it");
    let again = proxy
        .post("/v1/chat/completions")
        .header("content-type", "application/json")
        .body(big.clone())
        .send()
        .await
        .expect("request B again");
    assert_eq!(again.status().as_u16(), 200);

    // A body larger than the whole budget can never fit: 413 before it is read.
    let mut c = declare_chat(&proxy, 2_000_000).await;
    let (status, _, body) = read_response(&mut c).await;
    assert_eq!(status, 413, "{body}");
}

#[tokio::test]
async fn embeddings_inputs_are_capped_at_2048() {
    // Small vectors: 2,048 full-size ones are tens of MB of JSON for a debug build to parse.
    let fake = FakeGemini::builder().embedding_dims(8).start().await;
    let proxy = start(&fake, &[]).await;
    let inputs: Vec<String> = (0..2049).map(|i| format!("text {i}")).collect();
    let (status, body) = support::post_json(
        &proxy,
        "/v1/embeddings",
        &json!({"model": "gemini-embedding-001", "input": inputs}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["param"], "input", "{body}");
    assert_eq!(body["error"]["type"], "invalid_request_error", "{body}");
    assert_eq!(fake.total_hits(), 0);

    let (status, body) = support::post_json(
        &proxy,
        "/v1/embeddings",
        &json!({"model": "gemini-embedding-001", "input": &inputs[..2048]}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"].as_array().map(Vec::len), Some(2048));
}

/// The binary run by hand, with a stderr pipe that is read only until `listening`.
struct Unread {
    child: std::process::Child,
    _stderr: std::process::ChildStderr,
    _dir: tempfile::TempDir,
}

impl Drop for Unread {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn an_unread_stderr_pipe_does_not_stall_requests() {
    use std::io::BufRead;
    let fake = FakeGemini::start().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let config = config_for(&fake.url(), &[fake_key(1)]).set("models", r#"list = "static""#);
    std::fs::write(dir.path().join("config.toml"), config.render()).expect("write config");
    let mut child = std::process::Command::new(support::proxy::BIN)
        .arg("--config")
        .arg(dir.path().join("config.toml"))
        .current_dir(dir.path())
        .env_remove("RUST_LOG")
        .env("NO_COLOR", "1")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn the binary");
    let stderr = child.stderr.take().expect("stderr pipe");
    // Read up to the `listening` line on a thread (bounded by the join below), then keep the
    // pipe open and never read it again.
    let reading = tokio::task::spawn_blocking(move || {
        let mut reader = std::io::BufReader::new(stderr);
        let mut seen = String::new();
        let mut line = String::new();
        while reader.read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
            seen.push_str(&line);
            if let Some(addr) = support::proxy::parse_listening_addr(&seen) {
                return (Some(addr), reader.into_inner());
            }
            line.clear();
        }
        (None, reader.into_inner())
    });
    let (addr, stderr) = tokio::time::timeout(Duration::from_secs(15), reading)
        .await
        .expect("no `listening` line in time")
        .expect("reader thread");
    let guard = Unread {
        child,
        _stderr: stderr,
        _dir: dir,
    };
    let addr = addr.expect("the proxy exited before listening");

    // 1000 requests, each a log line at info: far more than the 64 KiB a pipe holds.
    let url = format!("http://{addr}/v1/chat/completions");
    let client = support::client();
    let run = async {
        let mut served = 0;
        for batch in 0..125 {
            let requests = (0..8).map(|i| {
                client
                    .post(&url)
                    .bearer_auth(TEST_TOKEN)
                    .header("content-type", "application/json")
                    .body(chat(&format!("request {batch}-{i}"), false))
                    .send()
            });
            for response in futures_util::future::join_all(requests).await {
                let response = response.expect("request (a stalled proxy times out here)");
                assert_eq!(response.status().as_u16(), 200);
                served += 1;
            }
        }
        served
    };
    let served = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("1000 requests did not complete in time: logging stalls the workers");
    assert_eq!(served, 1000);
    assert_eq!(fake.total_hits(), 1000);
    drop(guard);
}

fn log_files(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with("gemini-rotator.") && n.ends_with(".log"))
                })
                .collect()
        })
        .unwrap_or_default()
}

fn total_size(files: &[PathBuf]) -> u64 {
    files
        .iter()
        .filter_map(|f| std::fs::metadata(f).ok())
        .map(|m| m.len())
        .sum()
}

#[tokio::test]
async fn log_files_in_the_watched_config_folder_do_not_feed_the_watcher_at_trace() {
    let fake = FakeGemini::start().await;
    let proxy = start(
        &fake,
        &[
            ("logging", r#"level = "trace""#),
            ("logging", r#"directory = ".""#),
            // No periodic check: with no traffic and no edit, nothing has reason to log.
            ("server", r#"reload_poll = "0s""#),
        ],
    )
    .await;
    // One request, so the log has something in it.
    let (status, _) = support::post_json(
        &proxy,
        "/v1/chat/completions",
        &json!({"model": FLASH, "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(status, 200);

    // With no traffic, the log must come to rest: a 2 s window (8 samples, 250 ms apart) in
    // which it does not grow, found within 20 s. Feeding on itself it grows forever: by
    // megabytes a second through the watcher's own trace lines, by a line per debounce through
    // the reloads its events start.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut samples: Vec<u64> = Vec::new();
    let settled = loop {
        let files = log_files(proxy.dir());
        assert!(
            !files.is_empty() || Instant::now() < deadline,
            "no log file written"
        );
        samples.push(total_size(&files));
        if samples.len() >= 9 {
            let window = &samples[samples.len() - 9..];
            if window[8] > 0 && window[8] == window[0] {
                break true;
            }
        }
        if Instant::now() >= deadline {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert!(
        settled,
        "the log kept growing: {:?}",
        samples.iter().rev().take(9).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn the_last_log_lines_are_written_at_exit() {
    let fake = FakeGemini::start().await;
    let mut proxy = start(&fake, &[]).await;
    proxy.signal(Signal::Term);
    let status = proxy
        .wait_exit(Duration::from_secs(15))
        .await
        .expect("the proxy did not exit");
    assert!(status.success(), "{status}");
    assert!(
        proxy.logs().contains("shut down cleanly"),
        "{}",
        proxy.logs()
    );
}

/// The binary under `sh -c 'ulimit -n N; exec …'`, its stderr collected by a thread.
struct Limited {
    child: std::process::Child,
    stderr: std::sync::Arc<std::sync::Mutex<String>>,
    _dir: tempfile::TempDir,
}

impl Limited {
    fn logs(&self) -> String {
        self.stderr.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

impl Drop for Limited {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("----- proxy logs -----\n{}----- end -----", self.logs());
        }
    }
}

#[tokio::test]
async fn out_of_file_descriptors_the_accept_loop_backs_off_and_recovers() {
    use std::io::BufRead;
    let fake = FakeGemini::start().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let config = config_for(&fake.url(), &[fake_key(1)])
        .set("models", r#"list = "static""#)
        .set("server", "workers = 1")
        // Above the descriptor limit, so accept() itself runs out.
        .set("server", "max_connections = 1000");
    let config_path = dir.path().join("config.toml");
    std::fs::write(&config_path, config.render()).expect("write config");
    let mut child = std::process::Command::new("sh")
        .arg("-c")
        .arg(r#"ulimit -n 64 && exec "$0" --config "$1""#)
        .arg(support::proxy::BIN)
        .arg(&config_path)
        .current_dir(dir.path())
        .env_remove("RUST_LOG")
        .env("NO_COLOR", "1")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn the binary");
    let stderr = child.stderr.take().expect("stderr pipe");
    let logs = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let sink = logs.clone();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines() {
            let Ok(line) = line else { return };
            if let Ok(mut all) = sink.lock() {
                all.push_str(&line);
                all.push('\n');
            }
        }
    });
    let proxy = Limited {
        child,
        stderr: logs,
        _dir: dir,
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    let addr = loop {
        if let Some(addr) = support::proxy::parse_listening_addr(&proxy.logs()) {
            break addr;
        }
        assert!(Instant::now() < deadline, "not listening: {}", proxy.logs());
        tokio::time::sleep(Duration::from_millis(20)).await;
    };

    // More connections than the proxy has descriptors, held for a while.
    let mut held = Vec::new();
    for _ in 0..100 {
        held.push(connect(addr).await);
    }
    let deadline = Instant::now() + READ_BOUND;
    while !proxy.logs().contains("accept failed") {
        assert!(
            Instant::now() < deadline,
            "accept never failed: {}",
            proxy.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    // Backing off (5 ms doubling to 1 s, a line at the 1st, 2nd, 4th… failure) rather than
    // retrying in a loop: a handful of lines in 3 s, not one per attempt.
    let failures = proxy.logs().matches("accept failed").count();
    assert!(failures <= 6, "{failures} accept failures logged");

    // Once the descriptors are free again, the proxy serves.
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let probe = support::client()
            .get(format!("http://{addr}/livez"))
            .timeout(Duration::from_secs(2))
            .send()
            .await;
        if probe.is_ok_and(|r| r.status().as_u16() == 200) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the proxy did not recover: {}",
            proxy.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
