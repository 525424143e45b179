//! The HTTP front end of the real binary, spoken to over raw TCP where a client library would hide
//! the behaviour: `max_body` refused before the body is read, the header read timeout, and
//! keep-alive.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::json;
use support::{config_for, fake_key, FakeGemini, Proxy, TEST_TOKEN};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long any raw read may take before the test gives up.
const READ_BOUND: Duration = Duration::from_secs(5);

async fn start(fake: &FakeGemini, server_lines: &[&str]) -> Proxy {
    let mut config = config_for(&fake.url(), &[fake_key(1)]);
    for line in server_lines {
        config = config.set("server", line);
    }
    Proxy::builder().config(config).start().await
}

async fn connect(addr: SocketAddr) -> TcpStream {
    tokio::time::timeout(READ_BOUND, TcpStream::connect(addr))
        .await
        .expect("connect: timed out")
        .expect("connect to the proxy")
}

/// Head of a POST to the chat endpoint, with the test token; `extra` ends with `\r\n` per line.
fn chat_head(extra: &str) -> String {
    format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: proxy\r\nAuthorization: Bearer {TEST_TOKEN}\r\n\
         Content-Type: application/json\r\n{extra}\r\n"
    )
}

/// Reads one HTTP/1.1 response (Content-Length or chunked) within `READ_BOUND`:
/// (status, head, body).
async fn read_response(stream: &mut TcpStream) -> (u16, String, String) {
    let read = async {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            if let Some(end) = find(&buf, b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).to_string();
                let body_start = end + 4;
                let lower = head.to_ascii_lowercase();
                let done = |b: &[u8]| {
                    if let Some(len) = header_value(&lower, "content-length") {
                        let len: usize = len.parse().unwrap_or(0);
                        (b.len() >= body_start + len).then(|| body_start + len)
                    } else if header_value(&lower, "transfer-encoding")
                        .is_some_and(|v| v.contains("chunked"))
                    {
                        find(&b[body_start..], b"0\r\n\r\n").map(|i| body_start + i + 5)
                    } else {
                        None
                    }
                };
                if let Some(stop) = done(&buf) {
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

/// Waits (bounded) for the server to close the connection: a read returning 0 or an error.
/// Returns how long it took, or `None` if the connection stayed open past `bound`.
async fn closed_within(stream: &mut TcpStream, bound: Duration) -> Option<Duration> {
    let start = Instant::now();
    let mut buf = [0u8; 1024];
    let until_closed = async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                // A 408 or similar before closing is fine.
                Ok(_) => continue,
            }
        }
    };
    tokio::time::timeout(bound, until_closed)
        .await
        .ok()
        .map(|()| start.elapsed())
}

fn small_chat(text: &str) -> String {
    json!({ "model": "gemini-2.5-flash", "messages": [{ "role": "user", "content": text }] })
        .to_string()
}

#[tokio::test]
async fn declared_oversize_body_is_refused_before_it_is_sent() {
    let fake = FakeGemini::start().await;
    let proxy = start(&fake, &[r#"max_body = "1KiB""#]).await;

    let mut stream = connect(proxy.addr()).await;
    let started = Instant::now();
    stream
        .write_all(chat_head("Content-Length: 100000\r\n").as_bytes())
        .await
        .expect("write headers");
    // Not one byte of the body is sent: the answer must not wait for it.
    let (status, _, body) = read_response(&mut stream).await;
    assert_eq!(status, 413, "{body}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    let body: serde_json::Value = serde_json::from_str(&body).expect("JSON error body");
    assert!(body["error"]["message"].is_string(), "{body}");

    // On /v1beta too, in Google's shape.
    let mut stream = connect(proxy.addr()).await;
    let head = format!(
        "POST /v1beta/models/gemini-2.5-flash:generateContent HTTP/1.1\r\nHost: proxy\r\n\
         x-goog-api-key: {TEST_TOKEN}\r\nContent-Length: 100000\r\n\r\n"
    );
    stream
        .write_all(head.as_bytes())
        .await
        .expect("write headers");
    let (status, _, body) = read_response(&mut stream).await;
    assert_eq!(status, 413, "{body}");
    let body: serde_json::Value = serde_json::from_str(&body).expect("JSON error body");
    assert_eq!(body["error"]["code"], 413, "{body}");
    assert!(body["error"]["status"].is_string(), "{body}");
    assert_eq!(fake.total_hits(), 0);
}

#[tokio::test]
async fn chunked_body_growing_past_the_limit_is_refused() {
    let fake = FakeGemini::start().await;
    let proxy = start(&fake, &[r#"max_body = "1KiB""#]).await;

    let mut stream = connect(proxy.addr()).await;
    stream
        .write_all(chat_head("Transfer-Encoding: chunked\r\n").as_bytes())
        .await
        .expect("write headers");
    let piece = "x".repeat(600);
    for _ in 0..2 {
        let chunk = format!("{:x}\r\n{piece}\r\n", piece.len());
        // The server may answer and close after the limit; a failed write is then expected.
        if stream.write_all(chunk.as_bytes()).await.is_err() {
            break;
        }
    }
    let (status, _, body) = read_response(&mut stream).await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(fake.total_hits(), 0);
}

#[tokio::test]
async fn body_under_the_limit_is_served() {
    let fake = FakeGemini::start().await;
    let proxy = start(&fake, &[r#"max_body = "1KiB""#]).await;

    let body = small_chat(&"y".repeat(500));
    assert!(body.len() < 1024);
    let resp = proxy
        .post("/v1/chat/completions")
        .header("content-type", "application/json")
        .body(body.clone())
        .send()
        .await
        .expect("request");
    assert_eq!(
        resp.status(),
        200,
        "{}",
        resp.text().await.unwrap_or_default()
    );

    // Chunked, under the limit, too.
    let mut stream = connect(proxy.addr()).await;
    let request = format!(
        "{}{:x}\r\n{body}\r\n0\r\n\r\n",
        chat_head("Transfer-Encoding: chunked\r\n"),
        body.len()
    );
    stream.write_all(request.as_bytes()).await.expect("write");
    let (status, _, reply) = read_response(&mut stream).await;
    assert_eq!(status, 200, "{reply}");
}

#[tokio::test]
async fn header_timeout_cuts_off_a_slow_client() {
    let fake = FakeGemini::start().await;
    let proxy = start(&fake, &[r#"header_timeout = "1s""#]).await;

    let mut stream = connect(proxy.addr()).await;
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: proxy\r\nX-Slow: ")
        .await
        .expect("write a partial head");
    let took = closed_within(&mut stream, READ_BOUND).await;
    let took = took.expect("a half-sent head kept the connection open past 5 s");
    assert!(
        took >= Duration::from_millis(500),
        "closed too early: {took:?}"
    );
}

#[tokio::test]
async fn header_timeout_cuts_off_a_silent_client() {
    let fake = FakeGemini::start().await;
    let proxy = start(&fake, &[r#"header_timeout = "1s""#]).await;

    let mut stream = connect(proxy.addr()).await;
    let took = closed_within(&mut stream, READ_BOUND).await;
    assert!(
        took.is_some(),
        "a connection that sent nothing stayed open past 5 s"
    );
}

#[tokio::test]
async fn keep_alive_serves_two_requests_on_one_connection() {
    let fake = FakeGemini::start().await;
    let proxy = start(&fake, &[]).await;

    let mut stream = connect(proxy.addr()).await;
    for path in ["/health", "/livez"] {
        let request = format!("GET {path} HTTP/1.1\r\nHost: proxy\r\n\r\n");
        stream.write_all(request.as_bytes()).await.expect("write");
        let (status, head, body) = read_response(&mut stream).await;
        assert_eq!(status, 200, "{path}: {head}\n{body}");
        assert!(
            !head.to_ascii_lowercase().contains("connection: close"),
            "{path} closed the connection: {head}"
        );
    }
    // And a client request with a body on the same connection.
    let body = small_chat("hi");
    let request = format!(
        "{}{body}",
        chat_head(&format!("Content-Length: {}\r\n", body.len()))
    );
    stream.write_all(request.as_bytes()).await.expect("write");
    let (status, _, reply) = read_response(&mut stream).await;
    assert_eq!(status, 200, "{reply}");
}

#[tokio::test]
async fn header_timeout_applies_to_later_requests_on_a_kept_alive_connection() {
    let fake = FakeGemini::start().await;
    let proxy = start(&fake, &[r#"header_timeout = "1s""#]).await;

    let mut stream = connect(proxy.addr()).await;
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: proxy\r\n\r\n")
        .await
        .expect("write");
    assert_eq!(read_response(&mut stream).await.0, 200);
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: pro")
        .await
        .expect("write a partial second head");
    let took = closed_within(&mut stream, READ_BOUND).await;
    assert!(
        took.is_some(),
        "a stalled second request kept the connection open"
    );
}

/// The names of the proxy's threads (Linux: `/proc/PID/task/*/comm`).
fn thread_names(pid: u32) -> Vec<String> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .map(|name| name.trim().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn workers_each_serve_their_own_connections() {
    let fake = FakeGemini::start().await;
    let proxy = start(&fake, &["workers = 3"]).await;

    let status: serde_json::Value = proxy
        .get("/status")
        .send()
        .await
        .expect("/status")
        .json()
        .await
        .expect("/status is JSON");
    assert_eq!(status["config"]["workers"], 3, "{status}");
    if cfg!(target_os = "linux") {
        let mut workers: Vec<String> = thread_names(proxy.pid())
            .into_iter()
            .filter(|n| n.starts_with("worker-"))
            .collect();
        workers.sort();
        assert_eq!(workers, ["worker-0", "worker-1", "worker-2"]);
    }

    // Twelve connections at once, two requests each (the second on the kept-alive
    // connection): the kernel spreads them over the workers, and every one is served.
    let addr = proxy.addr();
    let clients: Vec<_> = (0..12)
        .map(|i| {
            tokio::spawn(async move {
                let mut stream = connect(addr).await;
                let mut statuses = Vec::new();
                for turn in 0..2 {
                    let body = small_chat(&format!("client {i} turn {turn}"));
                    let request = format!(
                        "{}{body}",
                        chat_head(&format!("Content-Length: {}\r\n", body.len()))
                    );
                    stream.write_all(request.as_bytes()).await.expect("write");
                    let (status, _, reply) = read_response(&mut stream).await;
                    statuses.push((status, reply));
                }
                statuses
            })
        })
        .collect();
    for client in clients {
        for (status, reply) in client.await.expect("client task") {
            assert_eq!(status, 200, "{reply}");
        }
    }
    assert_eq!(fake.total_hits(), 24);
}

/// Every answer carries its request's id, also on errors and streams, and the request's log
/// line names it: a new `req_…` per request, or the client's own `x-request-id` when it is a
/// plain token; Anthropic's routes also send it as `request-id`, where its SDK reads it.
#[tokio::test]
async fn answers_carry_the_request_id_the_log_line_names() {
    let fake = FakeGemini::start().await;
    let proxy = start(&fake, &[]).await;
    let chat =
        json!({"model": "gemini-2.5-flash", "messages": [{"role": "user", "content": "hi"}]});
    let id_of = |r: &reqwest::Response, name: &str| {
        r.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_else(|| panic!("no {name}"))
            .to_string()
    };
    let mut ids = Vec::new();
    for _ in 0..2 {
        let r = proxy
            .post("/v1/chat/completions")
            .json(&chat)
            .send()
            .await
            .expect("chat");
        assert_eq!(r.status(), 200);
        ids.push(id_of(&r, "x-request-id"));
    }
    for id in &ids {
        let hex = id.strip_prefix("req_").unwrap_or_else(|| panic!("{id}"));
        assert!(
            hex.len() == 24 && hex.bytes().all(|b| b.is_ascii_hexdigit()),
            "{id}"
        );
    }
    assert_ne!(ids[0], ids[1]);
    // A client's own plain id is kept; one that could forge a log line is replaced.
    let r = proxy
        .post("/v1/chat/completions")
        .header("x-request-id", "trace-42.a:b_c")
        .json(&chat)
        .send()
        .await
        .expect("chat");
    assert_eq!(id_of(&r, "x-request-id"), "trace-42.a:b_c");
    for forged in ["a b", "x\" status=200", &"a".repeat(65)] {
        let r = proxy
            .post("/v1/chat/completions")
            .header("x-request-id", forged)
            .json(&chat)
            .send()
            .await
            .expect("chat");
        assert!(id_of(&r, "x-request-id").starts_with("req_"), "{forged}");
    }
    // Errors carry it too (a 400 before any upstream call), and streams.
    let r = proxy
        .post("/v1/chat/completions")
        .json(&json!({"model": "gemini-2.5-flash"}))
        .send()
        .await
        .expect("chat");
    assert_eq!(r.status(), 400);
    let refused = id_of(&r, "x-request-id");
    let mut streamed = chat.clone();
    streamed["stream"] = json!(true);
    let r = proxy
        .post("/v1/chat/completions")
        .json(&streamed)
        .send()
        .await
        .expect("stream");
    let stream_id = id_of(&r, "x-request-id");
    let _ = r.text().await;
    // Anthropic's header, the same id.
    let r = proxy
        .post("/v1/messages")
        .json(&json!({"model": "gemini-2.5-flash", "max_tokens": 16,
                      "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .expect("messages");
    assert_eq!(r.status(), 200);
    let anthropic = id_of(&r, "request-id");
    assert_eq!(id_of(&r, "x-request-id"), anthropic);
    // Each id is on its request's log line (bounded wait: a stream's line comes at its end).
    let deadline = Instant::now() + Duration::from_secs(10);
    let wanted = [&ids[0], &ids[1], &refused, &stream_id, &anthropic];
    loop {
        let logs = proxy.stderr();
        let missing: Vec<_> = wanted
            .iter()
            .filter(|id| {
                !logs
                    .lines()
                    .any(|l| l.contains("request") && l.contains(id.as_str()))
            })
            .collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no log line for {missing:?}:\n{logs}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
