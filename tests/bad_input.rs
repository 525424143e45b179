//! Bad input through the real binary: it costs nothing upstream and echoes nothing big.
//! `/v1beta` bodies that are not UTF-8 JSON objects, `/v1` media that is not base64 and
//! bodies in a content coding (a 415 in each dialect) are refused before any key is used; a
//! 10 MB bad value comes back (and is logged) only as a short excerpt; the passthrough forwards only Google's documented query parameters, never a
//! credential, and knows an SSE answer by its content type.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use support::*;

const MODEL: &str = "gemini-2.5-flash";
const WAIT: Duration = Duration::from_secs(10);

fn gemini_body() -> Value {
    json!({"contents": [{"role": "user", "parts": [{"text": "hi"}]}]})
}

/// POSTs raw `body` to a native route with the client token in Google's header.
async fn native_post(proxy: &Proxy, path_and_query: &str, body: Vec<u8>) -> reqwest::Response {
    client()
        .post(format!("{}{path_and_query}", proxy.url()))
        .header("x-goog-api-key", TEST_TOKEN)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("request")
}

#[tokio::test]
async fn passthrough_forwards_only_documented_query_parameters() {
    let fake = FakeGemini::start().await;
    let key = fake_key(1);
    let proxy = start(&fake, std::slice::from_ref(&key), |c| c).await;

    // The client's token in `?key=` authenticates it and goes no further; other credentials
    // and unknown parameters are dropped; the documented ones travel, `$` spellings plain.
    let response = native_post(
        &proxy,
        &format!(
            "/v1beta/models/{MODEL}:generateContent?key={TEST_TOKEN}&%24key=k2&access_token=t\
             &oauth_token=o&$oauth_token=o2&callback=cb&$.xgafv=1&userProject=p&quotaUser=q\
             &foo=bar&%24fields=candidates&prettyPrint=false&%24alt=json"
        ),
        gemini_body().to_string().into_bytes(),
    )
    .await;
    assert_eq!(response.status().as_u16(), 200);
    let seen = fake.last_request().expect("upstream request");
    assert_eq!(
        seen.query.as_deref(),
        Some("fields=candidates&prettyPrint=false&alt=json")
    );
    assert_eq!(seen.header("x-goog-api-key").as_deref(), Some(key.as_str()));
    assert_eq!(fake.keys_in_url(), 0);

    // models.list keeps its paging parameters, values decoded and re-encoded.
    let list = |query: String| {
        client()
            .get(format!("{}/v1beta/models?{query}", proxy.url()))
            .send()
    };
    let first: Value = list(format!("pageSize=1&key={TEST_TOKEN}"))
        .await
        .expect("request")
        .json()
        .await
        .unwrap_or(Value::Null);
    let token = first["nextPageToken"].as_str().unwrap_or("").to_string();
    assert!(token.starts_with("fakePage"), "{first}");
    let encoded = token.replacen("P", "%50", 1);
    let response = list(format!(
        "pageSize=1&key={TEST_TOKEN}&access_token=x&pageToken={encoded}"
    ))
    .await
    .expect("request");
    assert_eq!(response.status().as_u16(), 200);
    let seen = fake.last_request().expect("upstream request");
    assert_eq!(seen.path, "/v1beta/models");
    assert_eq!(
        seen.query.as_deref(),
        Some(format!("pageSize=1&pageToken={token}").as_str())
    );

    // With nothing to forward there is no query at all.
    let response = native_post(
        &proxy,
        &format!("/v1beta/models/{MODEL}:countTokens?key={TEST_TOKEN}&$key=x"),
        gemini_body().to_string().into_bytes(),
    )
    .await;
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(fake.last_request().and_then(|r| r.query), None);

    // `alt` asks for JSON or SSE; a protobuf or media answer is refused before any key is used.
    let before = fake.total_hits();
    for alt in ["proto", "media"] {
        let response = native_post(
            &proxy,
            &format!("/v1beta/models/{MODEL}:generateContent?%24alt={alt}"),
            gemini_body().to_string().into_bytes(),
        )
        .await;
        assert_google_400(response, "alt=sse or alt=json").await;
    }
    assert_eq!(fake.total_hits(), before);
}

#[tokio::test]
async fn dollar_alt_sse_streams_as_sse() {
    let fake = FakeGemini::start().await;
    fake.on_any().always(Reply::text("one two three").chunks(3));
    let proxy = start(&fake, &[fake_key(1)], |c| c).await;
    let response = native_post(
        &proxy,
        &format!("/v1beta/models/{MODEL}:streamGenerateContent?$alt=sse"),
        gemini_body().to_string().into_bytes(),
    )
    .await;
    assert_eq!(response.status().as_u16(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap_or("")
        .to_string();
    assert!(
        content_type.starts_with("text/event-stream"),
        "{content_type}"
    );
    let body = response.text().await.expect("body");
    let texts: String = sse_data(&body)
        .iter()
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|e| {
            e["candidates"][0]["content"]["parts"][0]["text"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(texts, "one two three", "{body}");
    assert_eq!(
        fake.last_request().and_then(|r| r.query).as_deref(),
        Some("alt=sse")
    );
}

/// A one-route upstream on 127.0.0.1 that answers every request with a 200 SSE stream whose
/// only event is a Google error (as Google ends a stream that failed after its headers).
struct SseUpstream {
    url: String,
    hits: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for SseUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn sse_upstream() -> SseUpstream {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    let task = tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                read_request(&mut socket).await;
                let event = json!({"error": {
                    "code": 503,
                    "message": "The model is overloaded. Please try again later.",
                    "status": "UNAVAILABLE",
                }});
                let body = format!("data: {event}\r\n\r\n");
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\
                     content-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                let _ = socket.write_all(head.as_bytes()).await;
                let _ = socket.write_all(body.as_bytes()).await;
                let _ = socket.shutdown().await;
            });
        }
    });
    SseUpstream { url, hits, task }
}

/// Reads one request's head and `content-length` body (bounded in size and time).
async fn read_request(socket: &mut tokio::net::TcpStream) {
    let mut seen = Vec::new();
    let mut buf = [0u8; 8192];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while seen.len() < 1 << 20 {
        let text = String::from_utf8_lossy(&seen).to_ascii_lowercase();
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if seen.len() >= end + 4 + length {
                return;
            }
        }
        match tokio::time::timeout_at(deadline, socket.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => seen.extend_from_slice(&buf[..n]),
            _ => return,
        }
    }
}

#[tokio::test]
async fn an_sse_answer_is_known_by_its_content_type_not_by_alt() {
    let upstream = sse_upstream().await;
    let proxy = Proxy::builder()
        .config(config_for(&upstream.url, &[fake_key(1)]).set("models", r#"list = "static""#))
        .start()
        .await;
    // No `alt=sse` in the client's spelling (Google's answer decides): the relay reads the
    // events as SSE and finds the error inside the 200.
    for query in ["", "?alt=SSE"] {
        let response = native_post(
            &proxy,
            &format!("/v1beta/models/{MODEL}:streamGenerateContent{query}"),
            gemini_body().to_string().into_bytes(),
        )
        .await;
        assert_eq!(response.status().as_u16(), 200);
        let body = response.text().await.expect("body");
        assert!(body.contains("UNAVAILABLE"), "{body}");
    }
    assert!(
        proxy
            .wait_for_log_count("upstream error inside the stream", 2, WAIT)
            .await,
        "the error event was not seen as SSE:\n{}",
        proxy.logs()
    );
    assert_eq!(upstream.hits.load(Ordering::SeqCst), 2);
}

/// Asserts a Google-shaped 400 naming `needle`.
async fn assert_google_400(response: reqwest::Response, needle: &str) {
    assert_eq!(response.status().as_u16(), 400);
    let body: Value = response.json().await.unwrap_or(Value::Null);
    assert_eq!(body["error"]["code"], 400, "{body}");
    assert_eq!(body["error"]["status"], "INVALID_ARGUMENT", "{body}");
    let message = body["error"]["message"].as_str().unwrap_or("");
    assert!(message.contains(needle), "{message}");
}

#[tokio::test]
async fn native_bodies_that_are_not_utf8_json_objects_cost_nothing_upstream() {
    let fake = FakeGemini::start().await;
    let proxy = start(&fake, &[fake_key(1)], |c| c).await;
    let generate = format!("/v1beta/models/{MODEL}:generateContent");
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"not json".to_vec(), "not valid JSON"),
        (b"{\"contents\": [}".to_vec(), "not valid JSON"),
        (b"{} trailing".to_vec(), "not valid JSON"),
        (Vec::new(), "not valid JSON"),
        (b"{\"contents\": \"\xff\xfe\"}".to_vec(), "not UTF-8"),
        (b"[{\"contents\": []}]".to_vec(), "must be a JSON object"),
    ];
    for (body, needle) in cases {
        assert_google_400(native_post(&proxy, &generate, body).await, needle).await;
    }
    // google-genai 3.x's `/v1/models/{m}:{action}` is the same passthrough.
    let v1 = format!("/v1/models/{MODEL}:streamGenerateContent?alt=sse");
    assert_google_400(
        native_post(&proxy, &v1, b"{\"a\":".to_vec()).await,
        "not valid JSON",
    )
    .await;
    assert_eq!(fake.total_hits(), 0, "a bad body reached the upstream");

    // A good body still goes byte for byte.
    let body = b"{ \"contents\" :[{\"parts\":[{\"text\":\"h\\u00e9\"}]}] }".to_vec();
    let response = native_post(&proxy, &generate, body.clone()).await;
    assert_eq!(response.status().as_u16(), 200);
    let seen = fake.last_request().expect("upstream request");
    assert_eq!(seen.raw_body.as_ref(), body.as_slice());
}

#[tokio::test]
async fn compressed_bodies_are_refused_in_each_dialect_before_any_upstream_call() {
    let fake = FakeGemini::start().await;
    let proxy = start(&fake, &[fake_key(1)], |c| c).await;
    let chat = json!({"model": MODEL, "messages": [{"role": "user", "content": "hi"}]});
    let messages = json!({"model": MODEL, "max_tokens": 10,
        "messages": [{"role": "user", "content": "hi"}]});
    let responses = json!({"model": MODEL, "input": "hi"});
    let native = format!("/v1beta/models/{MODEL}:generateContent");
    let cases = [
        ("/v1/chat/completions", chat, "gzip"),
        ("/v1/messages", messages, "br"),
        ("/v1/responses", responses, "zstd"),
        (native.as_str(), gemini_body(), "gzip, identity"),
    ];
    for (path, body, coding) in cases {
        // The body is sent plain: a proxy that ignored the header would serve it.
        let response = client()
            .post(format!("{}{path}", proxy.url()))
            .bearer_auth(TEST_TOKEN)
            .header("content-type", "application/json")
            .header("content-encoding", coding)
            .body(body.to_string())
            .send()
            .await
            .expect("request");
        assert_eq!(response.status().as_u16(), 415, "{path}");
        let error: Value = response.json().await.unwrap_or(Value::Null);
        let message = match path {
            "/v1/messages" => {
                assert_eq!(error["type"], "error", "{error}");
                assert_eq!(error["error"]["type"], "invalid_request_error", "{error}");
                error["error"]["message"].as_str()
            }
            p if p.starts_with("/v1beta") => {
                assert_eq!(error["error"]["code"], 415, "{error}");
                assert_eq!(error["error"]["status"], "INVALID_ARGUMENT", "{error}");
                error["error"]["message"].as_str()
            }
            _ => {
                assert_eq!(error["error"]["type"], "invalid_request_error", "{error}");
                error["error"]["message"].as_str()
            }
        }
        .unwrap_or("");
        assert!(
            message.contains(&format!("Content-Encoding '{coding}'")),
            "{path}: {message}"
        );
    }
    assert_eq!(
        fake.total_hits(),
        0,
        "a compressed body reached the upstream"
    );
    // `identity` is no coding.
    let response = client()
        .post(format!("{}{native}", proxy.url()))
        .bearer_auth(TEST_TOKEN)
        .header("content-type", "application/json")
        .header("content-encoding", "identity")
        .body(gemini_body().to_string())
        .send()
        .await
        .expect("request");
    assert_eq!(response.status().as_u16(), 200);
}

fn chat_with_part(part: Value) -> Value {
    json!({"model": MODEL, "messages": [{"role": "user", "content": [
        {"type": "text", "text": "What is this?"},
        part,
    ]}]})
}

#[tokio::test]
async fn media_that_is_not_base64_is_refused_naming_the_field() {
    let fake = FakeGemini::start().await;
    let proxy = start(&fake, &[fake_key(1)], |c| c).await;
    let cases = [
        (
            json!({"type": "image_url", "image_url": {"url": "data:image/png;base64,not base64!"}}),
            "messages[0].content[1].image_url.url",
        ),
        (
            json!({"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}),
            "",
        ),
        (
            json!({"type": "input_audio", "input_audio": {"data": "UklGR===", "format": "wav"}}),
            "messages[0].content[1].input_audio.data",
        ),
        (
            json!({"type": "file", "file": {"filename": "a.pdf", "file_data": "data:application/pdf;base64,JVBE%%"}}),
            "messages[0].content[1].file.file_data",
        ),
        (
            json!({"type": "file", "file": {"filename": "a.pdf", "file_data": "JVB"}}),
            "",
        ),
        (
            json!({"type": "file", "file": {"filename": "a.pdf", "file_data": "J"}}),
            "messages[0].content[1].file.file_data",
        ),
    ];
    let mut good = 0;
    for (part, field) in cases {
        let (status, body) = post_json(&proxy, "/v1/chat/completions", &chat_with_part(part)).await;
        if field.is_empty() {
            assert_eq!(status, 200, "{body}");
            good += 1;
            continue;
        }
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["error"]["type"], "invalid_request_error", "{body}");
        assert_eq!(body["error"]["param"], field, "{body}");
        let message = body["error"]["message"].as_str().unwrap_or("");
        assert!(message.contains("not valid base64"), "{message}");
        assert!(message.contains(field), "{message}");
    }
    assert_eq!(
        fake.total_hits(),
        good,
        "only the valid payloads went upstream"
    );
}

/// The longest line the proxy has logged so far.
fn longest_log_line(proxy: &Proxy) -> usize {
    proxy.logs().lines().map(str::len).max().unwrap_or(0)
}

#[tokio::test]
async fn a_huge_bad_value_echoes_only_an_excerpt() {
    let fake = FakeGemini::start().await;
    let proxy = start(&fake, &[fake_key(1)], |c| {
        c.set("logging", r#"level = "debug""#)
    })
    .await;
    let huge = "x".repeat(10 * 1024 * 1024);
    let user = || json!([{"role": "user", "content": "hi"}]);
    let cases = [
        ("model", json!({"model": huge, "messages": user()})),
        (
            "role",
            json!({"model": MODEL, "messages": [{"role": huge, "content": "hi"}]}),
        ),
        (
            "reasoning_effort",
            json!({"model": MODEL, "messages": user(), "reasoning_effort": huge}),
        ),
        (
            "max_tokens",
            json!({"model": MODEL, "messages": user(), "max_tokens": huge}),
        ),
        (
            "tool type",
            json!({"model": MODEL, "messages": user(),
                   "tools": [{"type": huge, "function": {"name": "f"}}]}),
        ),
        (
            "thinking_level",
            json!({"model": MODEL, "messages": user(),
                   "extra_body": {"google": {"thinking_config": {"thinking_level": huge}}}}),
        ),
    ];
    for (what, request) in cases {
        let response = proxy
            .post("/v1/chat/completions")
            .json(&request)
            .send()
            .await
            .expect("request");
        assert_eq!(response.status().as_u16(), 400, "{what}");
        let body = response.bytes().await.expect("body");
        assert!(
            body.len() < 2048,
            "{what}: a {}-byte error body: {}",
            body.len(),
            String::from_utf8_lossy(&body[..body.len().min(300)])
        );
        let error: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let message = error["error"]["message"].as_str().unwrap_or("");
        assert!(message.contains("xxxxx…"), "{what}: {message}");
    }
    // Embeddings and the native routes too.
    let response = proxy
        .post("/v1/embeddings")
        .json(&json!({"model": "gemini-embedding-001", "input": "hi", "encoding_format": huge}))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status().as_u16(), 400);
    assert!(response.bytes().await.map_or(0, |b| b.len()) < 2048);
    let long_name = "y".repeat(16 * 1024);
    let response = native_post(
        &proxy,
        &format!("/v1beta/models/{long_name}:generateContent"),
        gemini_body().to_string().into_bytes(),
    )
    .await;
    assert_eq!(response.status().as_u16(), 400);
    assert!(response.bytes().await.map_or(0, |b| b.len()) < 2048);

    assert!(
        proxy.wait_for_log_count("status=400", 8, WAIT).await,
        "{}",
        proxy.logs().chars().take(4000).collect::<String>()
    );
    let longest = longest_log_line(&proxy);
    assert!(longest < 4096, "a {longest}-byte log line");
    assert_eq!(fake.total_hits(), 0, "bad input reached the upstream");
}
