//! Streaming (`"stream": true` on `/v1/chat/completions`, and `/v1beta` SSE passthrough):
//! chunk shape, usage last, failover only before the first byte, error events after it,
//! cancellation of the upstream when the client leaves, heartbeats and the idle timeout
//! (SPEC §5, §6, `[upstream]`).
//!
//! Each test runs the real binary against its own `FakeGemini`; waits are bounded.

mod support;

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::{default_text, fake_keys, sse_data, start, text_chunk, FakeGemini, Proxy, Reply};

const FLASH: &str = "gemini-2.5-flash";
const WAIT: Duration = Duration::from_secs(5);

fn stream_body(extra: Value) -> Value {
    let mut body = json!({ "model": FLASH, "stream": true,
                           "messages": [{ "role": "user", "content": "Say hello" }] });
    if let (Value::Object(b), Value::Object(e)) = (&mut body, extra) {
        b.extend(e);
    }
    body
}

async fn open_stream(proxy: &Proxy, body: &Value) -> reqwest::Response {
    let resp = proxy
        .post("/v1/chat/completions")
        .json(body)
        .send()
        .await
        .expect("stream request");
    assert_eq!(resp.status(), 200, "stream status");
    resp
}

/// The whole body as it arrives, bounded by `WAIT`; a broken body ends it (what came is kept).
async fn read_all(mut resp: reqwest::Response) -> String {
    let mut raw = Vec::new();
    let read = async {
        while let Ok(Some(chunk)) = resp.chunk().await {
            raw.extend_from_slice(&chunk);
        }
    };
    tokio::time::timeout(WAIT, read)
        .await
        .expect("stream did not end in time");
    String::from_utf8(raw).expect("UTF-8 body")
}

/// The JSON events of an OpenAI stream (everything but `[DONE]`).
fn parse_chunks(body: &str) -> Vec<Value> {
    sse_data(body)
        .iter()
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str(d).unwrap_or_else(|e| panic!("bad event {d}: {e}")))
        .collect()
}

fn content(chunks: &[Value]) -> String {
    chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect()
}

fn error_events(chunks: &[Value]) -> Vec<&Value> {
    chunks.iter().filter(|c| c.get("error").is_some()).collect()
}

async fn key_status(proxy: &Proxy, index: usize) -> Value {
    let resp = proxy.get("/status").send().await.expect("/status");
    let st: Value = resp.json().await.expect("/status JSON");
    st["keys"][index].clone()
}

#[tokio::test]
async fn streams_openai_chunks() {
    let fake = FakeGemini::start().await;
    let keys = fake_keys(1);
    let proxy = start(&fake, &keys, |c| c).await;

    let resp = open_stream(&proxy, &stream_body(json!({}))).await;
    let ct = resp.headers()["content-type"]
        .to_str()
        .unwrap_or("")
        .to_string();
    assert!(ct.starts_with("text/event-stream"), "content-type {ct}");
    let body = read_all(resp).await;
    let data = sse_data(&body);
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"), "{body}");
    let chunks = parse_chunks(&body);
    assert!(chunks.len() >= 3, "{body}");

    assert_eq!(
        chunks[0]["choices"][0]["delta"]["role"], "assistant",
        "{body}"
    );
    assert_eq!(content(&chunks), default_text(FLASH, &keys[0]));
    let finishes: Vec<&Value> = chunks
        .iter()
        .map(|c| &c["choices"][0]["finish_reason"])
        .filter(|f| !f.is_null())
        .collect();
    assert_eq!(finishes, [&json!("stop")], "{body}");
    for c in &chunks {
        assert_eq!(c["id"], chunks[0]["id"], "one id per stream: {body}");
        assert_eq!(c["object"], "chat.completion.chunk");
    }
}

#[tokio::test]
async fn usage_comes_once_after_the_finish_only_when_asked() {
    let fake = FakeGemini::start().await;
    let proxy = start(&fake, &fake_keys(1), |c| c).await;

    let asked = json!({ "stream_options": { "include_usage": true } });
    let body = read_all(open_stream(&proxy, &stream_body(asked)).await).await;
    let chunks = parse_chunks(&body);
    let with_usage: Vec<usize> = (0..chunks.len())
        .filter(|&i| !chunks[i]["usage"].is_null())
        .collect();
    assert_eq!(with_usage.len(), 1, "one usage chunk: {body}");
    let usage_at = with_usage[0];
    let finish_at = chunks
        .iter()
        .position(|c| !c["choices"][0]["finish_reason"].is_null())
        .expect("a finish chunk");
    assert!(usage_at > finish_at, "usage after the finish: {body}");
    assert_eq!(chunks[usage_at]["choices"], json!([]), "{body}");
    assert!(chunks[usage_at]["usage"]["total_tokens"].as_u64() > Some(0));

    let body = read_all(open_stream(&proxy, &stream_body(json!({}))).await).await;
    assert!(
        parse_chunks(&body).iter().all(|c| c["usage"].is_null()),
        "no usage unless asked: {body}"
    );
}

#[tokio::test]
async fn quota_429_before_the_first_byte_is_retried_on_another_key() {
    let fake = FakeGemini::start().await;
    let keys = fake_keys(2);
    fake.on(&keys[0], FLASH)
        .always(Reply::quota_per_minute(FLASH, Some("30s")));
    let proxy = start(&fake, &keys, |c| c).await;

    // Two streams: whichever key rotation tries first, one of them meets key 1's 429.
    for _ in 0..2 {
        let body = read_all(open_stream(&proxy, &stream_body(json!({}))).await).await;
        let chunks = parse_chunks(&body);
        assert!(error_events(&chunks).is_empty(), "{body}");
        assert_eq!(content(&chunks), default_text(FLASH, &keys[1]));
    }
    assert_eq!(fake.hits(&keys[0], FLASH), 1);
    assert_eq!(fake.hits(&keys[1], FLASH), 2);
}

#[tokio::test]
async fn upstream_cut_after_the_first_byte_ends_with_an_error_event() {
    let fake = FakeGemini::start().await;
    let keys = fake_keys(2);
    fake.on_any().always(Reply::stream_then_close(vec![
        text_chunk("Hel", None),
        text_chunk("lo", None),
    ]));
    let proxy = start(&fake, &keys, |c| c).await;

    let body = read_all(open_stream(&proxy, &stream_body(json!({}))).await).await;
    let chunks = parse_chunks(&body);
    assert_eq!(content(&chunks), "Hello", "{body}");
    let last = chunks.last().expect("events");
    assert!(
        last.get("error").is_some(),
        "ends with an error event: {body}"
    );
    assert_eq!(fake.total_hits(), 1, "never retried after the first byte");
}

#[tokio::test]
async fn error_inside_a_200_stream_reaches_client_and_pool() {
    let fake = FakeGemini::start().await;
    let keys = fake_keys(1);
    fake.on_any().always(Reply::error_in_stream(
        vec![text_chunk("Hi", None)],
        Reply::quota_per_minute(FLASH, Some("30s")),
    ));
    let proxy = start(&fake, &keys, |c| c).await;

    let body = read_all(open_stream(&proxy, &stream_body(json!({}))).await).await;
    let chunks = parse_chunks(&body);
    assert_eq!(content(&chunks), "Hi", "{body}");
    assert_eq!(error_events(&chunks).len(), 1, "an error event: {body}");
    assert_eq!(fake.total_hits(), 1);

    let st = key_status(&proxy, 0).await;
    let model = &st["models"][FLASH];
    assert!(model["last_error"].is_string(), "{st}");
    assert_eq!(model["state"], "cooling", "a quota 429 rests the key: {st}");
}

#[tokio::test]
async fn client_leaving_a_stream_cancels_the_upstream() {
    let fake = FakeGemini::start().await;
    fake.on_any()
        .always(Reply::stream_then_hang(vec![text_chunk("Hi", None)]));
    let proxy = start(&fake, &fake_keys(1), |c| c).await;

    let mut resp = open_stream(&proxy, &stream_body(json!({}))).await;
    let first = tokio::time::timeout(WAIT, resp.chunk()).await;
    assert!(matches!(first, Ok(Ok(Some(_)))), "a first chunk: {first:?}");
    drop(resp);
    assert!(
        fake.wait_for(|f| f.cancellations() >= 1, WAIT).await,
        "upstream not cancelled"
    );
}

#[tokio::test]
async fn client_leaving_a_buffered_request_cancels_the_upstream() {
    let fake = FakeGemini::start().await;
    fake.on_any().always(Reply::hang());
    let proxy = start(&fake, &fake_keys(1), |c| c).await;

    let sent = proxy
        .post("/v1/chat/completions")
        .timeout(Duration::from_millis(300))
        .json(&json!({ "model": FLASH, "messages": [{ "role": "user", "content": "hi" }] }))
        .send()
        .await;
    assert!(sent.is_err(), "the upstream hangs, so the client times out");
    assert!(
        fake.wait_for(|f| f.cancellations() >= 1, WAIT).await,
        "upstream not cancelled"
    );
}

#[tokio::test]
async fn heartbeats_fill_upstream_silence() {
    let fake = FakeGemini::start().await;
    fake.on_any().always(
        Reply::text("Hello there")
            .chunks(2)
            .event_delay(Duration::from_secs(1)),
    );
    let proxy = start(&fake, &fake_keys(1), |c| {
        c.set("upstream", r#"heartbeat = "200ms""#)
    })
    .await;

    let body = read_all(open_stream(&proxy, &stream_body(json!({}))).await).await;
    // Lines in arrival order: a comment line must sit between the two content events.
    let lines: Vec<&str> = body.lines().collect();
    let content_lines: Vec<usize> = (0..lines.len())
        .filter(|&i| lines[i].starts_with("data:") && lines[i].contains("\"content\""))
        .collect();
    assert!(content_lines.len() >= 2, "{body}");
    let between = &lines[content_lines[0]..content_lines[1]];
    assert!(
        between.iter().any(|l| l.starts_with(": keep-alive")),
        "no heartbeat during a 1 s silence: {body}"
    );
}

#[tokio::test]
async fn idle_upstream_ends_the_stream_with_an_error() {
    let fake = FakeGemini::start().await;
    fake.on_any()
        .always(Reply::stream_then_hang(vec![text_chunk("Hi", None)]));
    // Heartbeats are ours: they must not count as upstream activity.
    let proxy = start(&fake, &fake_keys(1), |c| {
        c.set("upstream", r#"idle_timeout = "1s""#)
            .set("upstream", r#"heartbeat = "200ms""#)
    })
    .await;

    let t0 = Instant::now();
    let body = read_all(open_stream(&proxy, &stream_body(json!({}))).await).await;
    let took = t0.elapsed();
    let chunks = parse_chunks(&body);
    assert_eq!(content(&chunks), "Hi", "{body}");
    assert_eq!(error_events(&chunks).len(), 1, "an error event: {body}");
    assert!(took >= Duration::from_millis(900), "ended after {took:?}");
    assert!(took < WAIT, "ended after {took:?}");
}

/// Three events spelling "Hello!", the last one finished.
fn hello_events() -> Vec<Value> {
    vec![
        text_chunk("Hel", None),
        text_chunk("lo", None),
        text_chunk("!", Some("STOP")),
    ]
}

#[tokio::test]
async fn native_sse_passes_through_untouched_without_heartbeats() {
    let fake = FakeGemini::start().await;
    let events = hello_events();
    fake.on_any()
        .always(Reply::stream(events.clone()).event_delay(Duration::from_millis(600)));
    let proxy = start(&fake, &fake_keys(1), |c| {
        c.set("upstream", r#"heartbeat = "200ms""#)
    })
    .await;

    let resp = proxy
        .post(&format!(
            "/v1beta/models/{FLASH}:streamGenerateContent?alt=sse"
        ))
        .json(&json!({ "contents": [{ "parts": [{ "text": "hi" }] }] }))
        .send()
        .await
        .expect("native stream");
    assert_eq!(resp.status(), 200);
    let body = read_all(resp).await;
    let expected: String = events
        .iter()
        .map(|e| format!("data: {e}\r\n\r\n"))
        .collect();
    assert_eq!(body, expected, "bytes changed on the way");
    assert!(!body.lines().any(|l| l.starts_with(':')), "{body}");
}

/// The relay holds what is ready for a few scheduler turns so that events Google sent
/// together leave in one write (`relay::Outgoing`); an event must never wait for the next one.
/// With 400 ms between the upstream's events, the first reaches the client long before the
/// stream ends, on the passthrough and on the translated path alike.
#[tokio::test]
async fn an_event_is_not_held_back_for_the_next_one() {
    let fake = FakeGemini::start().await;
    let events = hello_events();
    fake.on_any()
        .always(Reply::stream(events).event_delay(Duration::from_millis(400)));
    let proxy = start(&fake, &fake_keys(1), |c| {
        c.set("upstream", r#"heartbeat = "0s""#)
    })
    .await;

    let native = format!("/v1beta/models/{FLASH}:streamGenerateContent?alt=sse");
    for (path, body) in [
        (
            native.as_str(),
            json!({ "contents": [{ "parts": [{ "text": "hi" }] }] }),
        ),
        ("/v1/chat/completions", stream_body(json!({}))),
    ] {
        let mut resp = proxy.post(path).json(&body).send().await.expect("stream");
        assert_eq!(resp.status(), 200, "{path}");
        let mut raw = Vec::new();
        let mut first_at = None;
        let read = async {
            while let Ok(Some(chunk)) = resp.chunk().await {
                raw.extend_from_slice(&chunk);
                if first_at.is_none() && String::from_utf8_lossy(&raw).contains("Hel") {
                    first_at = Some(Instant::now());
                }
            }
        };
        tokio::time::timeout(WAIT, read)
            .await
            .expect("stream did not end in time");
        let text = String::from_utf8_lossy(&raw).into_owned();
        let first_at = first_at.unwrap_or_else(|| panic!("{path}: no first event: {text}"));
        assert!(
            text.contains('!'),
            "{path}: the stream's end is missing: {text}"
        );
        let rest = first_at.elapsed();
        assert!(
            rest >= Duration::from_millis(600),
            "{path}: the first event came only {rest:?} before the end: it was held back"
        );
    }
}
