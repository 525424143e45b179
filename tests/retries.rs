//! Issue #14, items 1, 3, 4 and 16 (first half), through the real binary: a 403 is judged by
//! what it names (the key, the model, or a resource of the client's), the all-keys-out answer
//! takes no lease, retries are bounded (quota hops, deadline) and safe (a generation that may
//! have reached Google is not replayed unless `pool.retry_after_send`), network errors are not
//! the key's, and a model no key may serve is a 404.
//!
//! Each test runs the real binary against its own `FakeGemini`; waits are bounded.

mod support;

use std::time::Duration;

use reqwest::header::HeaderMap;
use serde_json::{json, Value};
use support::{fake_keys, start, FakeGemini, Proxy, Reply};

const FLASH: &str = "gemini-2.5-flash";
const PRO: &str = "gemini-2.5-pro";

async fn chat(proxy: &Proxy, model: &str) -> (u16, HeaderMap, Value) {
    let body = json!({ "model": model, "messages": [{ "role": "user", "content": "Say hello" }] });
    let resp = proxy
        .post("/v1/chat/completions")
        .json(&body)
        .send()
        .await
        .expect("chat request");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let text = resp.text().await.expect("chat body");
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, headers, body)
}

async fn chat_ok(proxy: &Proxy, model: &str) {
    let (status, _, body) = chat(proxy, model).await;
    assert_eq!(
        status, 200,
        "expected 200 for {model}, got {status}: {body}"
    );
}

/// POST `/v1beta/models/{model}:{action}` with a small Gemini body.
async fn native(proxy: &Proxy, model: &str, action: &str) -> (u16, Value) {
    let body = json!({ "contents": [{ "role": "user", "parts": [
        { "text": "Describe the file" },
        { "fileData": { "mimeType": "application/pdf",
                        "fileUri": "https://example.com/docs/abc123.pdf" } }
    ] }] });
    let resp = proxy
        .post(&format!("/v1beta/models/{model}:{action}"))
        .json(&body)
        .send()
        .await
        .expect("native request");
    let status = resp.status().as_u16();
    let text = resp.text().await.expect("native body");
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

async fn status(proxy: &Proxy) -> Value {
    let resp = proxy.get("/status").send().await.expect("/status");
    assert_eq!(resp.status(), 200, "/status from loopback");
    resp.json().await.expect("/status JSON")
}

/// `/status` entry of the key at `index` (config order).
async fn key_status(proxy: &Proxy, index: usize) -> Value {
    let st = status(proxy).await;
    st["keys"]
        .as_array()
        .and_then(|keys| keys.iter().find(|k| k["index"] == json!(index)))
        .cloned()
        .unwrap_or_else(|| panic!("no key {index} in /status: {st}"))
}

/// Every key enabled, and every model of every key in state "ok" with no failures counted.
async fn assert_all_healthy(proxy: &Proxy) {
    let st = status(proxy).await;
    let keys = st["keys"].as_array().expect("keys in /status");
    for k in keys {
        assert!(k["disabled"].is_null(), "key disabled: {k}");
        assert_eq!(k["isAvailable"], true, "{k}");
        assert_eq!(k["failureCount"], 0, "{k}");
        for (model, m) in k["models"].as_object().into_iter().flatten() {
            assert_eq!(m["state"], "ok", "{model}: {k}");
            assert_eq!(m["consecutive_failures"], 0, "{model}: {k}");
        }
    }
}

/// A loopback port nothing listens on (bound, then released).
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    let port = listener.local_addr().expect("local addr").port();
    drop(listener);
    port
}

// ---- item 1: 401/403 ---------------------------------------------------------------------------

#[tokio::test]
async fn a_model_scoped_403_rests_only_that_model_and_the_request_moves_on() {
    let keys = fake_keys(2);
    let fake = FakeGemini::start().await;
    fake.on(&keys[0], PRO).always(Reply::model_denied(PRO));
    let proxy = start(&fake, &keys, |c| c).await;

    // Round robin starts at key 1 for a fresh model: denied, then key 2 serves.
    chat_ok(&proxy, PRO).await;
    assert_eq!(fake.hits(&keys[0], PRO), 1);
    assert_eq!(fake.hits(&keys[1], PRO), 1);

    // Key 1 still serves the other model.
    for _ in 0..2 {
        chat_ok(&proxy, FLASH).await;
    }
    assert_eq!(
        fake.hits(&keys[0], FLASH),
        1,
        "key 1 must keep serving {FLASH}"
    );
    assert_eq!(fake.hits(&keys[1], FLASH), 1);

    // And is not asked for the denied model again.
    for _ in 0..3 {
        chat_ok(&proxy, PRO).await;
    }
    assert_eq!(fake.hits(&keys[0], PRO), 1);
    assert_eq!(fake.hits(&keys[1], PRO), 4);

    let k = key_status(&proxy, 0).await;
    assert!(
        k["disabled"].is_null(),
        "a model-scoped 403 disabled the key: {k}"
    );
    assert_eq!(k["isAvailable"], true, "{k}");
    assert_eq!(k["models"][FLASH]["state"], "ok", "{k}");
    assert_eq!(k["models"][PRO]["state"], "exhausted", "{k}");
    let last = k["models"][PRO]["last_error"].as_str().unwrap_or("");
    assert!(last.starts_with("model_denied: 403"), "{last}");
}

#[tokio::test]
async fn a_403_about_a_named_resource_goes_back_to_the_client_without_penalty() {
    let keys = fake_keys(2);
    let fake = FakeGemini::start().await;
    fake.on_model(FLASH)
        .then(Reply::file_denied("abc123"))
        .then(Reply::cached_content_denied());
    let proxy = start(&fake, &keys, |c| c).await;

    // /v1beta: Google's own body, as it came.
    let (code, body) = native(&proxy, FLASH, "generateContent").await;
    assert_eq!(code, 403, "{body}");
    assert_eq!(body["error"]["status"], "PERMISSION_DENIED", "{body}");
    let message = body["error"]["message"].as_str().unwrap_or("");
    assert!(message.contains("access the File abc123"), "{message}");
    assert_eq!(fake.total_hits(), 1, "no other key may be tried");

    // /v1: OpenAI's shape, a permission error, still one call.
    let (code, _, body) = chat(&proxy, FLASH).await;
    assert_eq!(code, 403, "{body}");
    assert_eq!(body["error"]["type"], "permission_error", "{body}");
    let message = body["error"]["message"].as_str().unwrap_or("");
    assert!(message.contains("CachedContent not found"), "{message}");
    assert_eq!(fake.total_hits(), 2, "no other key may be tried");

    assert_all_healthy(&proxy).await;
    // Both keys serve the next requests.
    for _ in 0..2 {
        chat_ok(&proxy, FLASH).await;
    }
    assert_eq!(fake.hits_for_key(&keys[0]) + fake.hits_for_key(&keys[1]), 4);
    assert!(fake.hits_for_key(&keys[0]) >= 1 && fake.hits_for_key(&keys[1]) >= 1);
}

#[tokio::test]
async fn a_403_about_the_key_itself_still_disables_it() {
    let keys = fake_keys(3);
    let fake = FakeGemini::start().await;
    fake.on_key(&keys[0]).always(Reply::service_disabled());
    fake.on_key(&keys[1]).always(Reply::api_key_invalid());
    let proxy = start(&fake, &keys, |c| c).await;

    chat_ok(&proxy, FLASH).await;
    let k0 = key_status(&proxy, 0).await;
    let reason = k0["disabled"].as_str().unwrap_or("");
    assert!(reason.contains("SERVICE_DISABLED"), "{k0}");
    let k1 = key_status(&proxy, 1).await;
    let reason = k1["disabled"].as_str().unwrap_or("");
    assert!(reason.contains("API_KEY_INVALID"), "{k1}");
    // Disabled for every model: another model never reaches them.
    chat_ok(&proxy, PRO).await;
    assert_eq!(fake.hits(&keys[0], PRO), 0);
    assert_eq!(fake.hits(&keys[1], PRO), 0);
}

// ---- item 3: Retry-After takes no lease --------------------------------------------------------

#[tokio::test]
async fn the_all_keys_out_answer_takes_no_lease() {
    let keys = fake_keys(2);
    let fake = FakeGemini::start().await;
    // Both keys 429 once with a zero delay: they are usable again at once.
    for key in &keys {
        fake.on(key, FLASH)
            .then(Reply::quota_per_minute(FLASH, Some("0s")));
    }
    let pool_keys = format!(
        r#"keys = [{{ key = "{}", daily_limit = 10 }}, {{ key = "{}", daily_limit = 10 }}]"#,
        keys[0], keys[1]
    );
    let proxy = start(&fake, &keys, |c| c.set("pool", &pool_keys)).await;

    let (code, headers, body) = chat(&proxy, FLASH).await;
    assert_eq!(code, 429, "{body}");
    assert!(headers.get("retry-after").is_some(), "{headers:?}");
    assert_eq!(fake.total_hits(), 2);
    // One request each, the one that was sent: computing Retry-After charged nothing.
    for i in 0..2 {
        let k = key_status(&proxy, i).await;
        assert_eq!(k["models"][FLASH]["daily_requests"], 1, "key {i}: {k}");
    }
    // Neither key is held as a probe in flight: the next two requests use both.
    chat_ok(&proxy, FLASH).await;
    chat_ok(&proxy, FLASH).await;
    assert_eq!(
        fake.hits(&keys[0], FLASH),
        2,
        "a key was left blocked as probing"
    );
    assert_eq!(
        fake.hits(&keys[1], FLASH),
        2,
        "a key was left blocked as probing"
    );
}

// ---- item 4: bounded and safe retries ----------------------------------------------------------

#[tokio::test]
async fn a_generation_that_timed_out_after_sending_is_not_replayed_by_default() {
    let keys = fake_keys(2);
    let fake = FakeGemini::start().await;
    fake.on_model(FLASH).then(Reply::hang());
    let proxy = start(&fake, &keys, |c| {
        c.set("upstream", r#"first_byte_timeout = "1s""#)
    })
    .await;

    let (code, _, body) = chat(&proxy, FLASH).await;
    assert_eq!(code, 504, "{body}");
    assert_eq!(body["error"]["code"], "upstream_timeout", "{body}");
    assert_eq!(
        fake.total_hits(),
        1,
        "the generation was replayed on another key"
    );

    // The streaming passthrough likewise.
    fake.on_model(FLASH).then(Reply::hang());
    let (code, _) = native(&proxy, FLASH, "streamGenerateContent?alt=sse").await;
    assert_eq!(code, 504);
    assert_eq!(
        fake.total_hits(),
        2,
        "the stream was replayed on another key"
    );

    // countTokens costs nothing to repeat: it is.
    fake.on_model(FLASH).then(Reply::hang());
    let (code, body) = native(&proxy, FLASH, "countTokens").await;
    assert_eq!(code, 200, "{body}");
    assert!(body["totalTokens"].is_number(), "{body}");
    assert_eq!(fake.total_hits(), 4);
}

#[tokio::test]
async fn retry_after_send_opts_back_into_replaying_a_timed_out_generation() {
    let keys = fake_keys(2);
    let fake = FakeGemini::start().await;
    fake.on_model(FLASH).then(Reply::hang());
    let proxy = start(&fake, &keys, |c| {
        c.set("upstream", r#"first_byte_timeout = "1s""#)
            .set("pool", "retry_after_send = true")
    })
    .await;

    chat_ok(&proxy, FLASH).await;
    assert_eq!(fake.total_hits(), 2);
    assert_eq!(fake.hits(&keys[0], FLASH), 1);
    assert_eq!(fake.hits(&keys[1], FLASH), 1);
}

#[tokio::test]
async fn connection_refused_upstream_does_not_count_against_keys() {
    let keys = fake_keys(3);
    let base = format!("http://127.0.0.1:{}", closed_port());
    let proxy = Proxy::builder()
        .config(
            support::config_for(&base, &keys)
                .set("models", r#"list = "static""#)
                .set("pool", "failure_threshold = 1"),
        )
        .start()
        .await;

    for round in 0..2 {
        let (code, _, body) = chat(&proxy, FLASH).await;
        // Not a 429/503 "no key": the keys were not rested by the first round.
        assert_eq!(code, 502, "round {round}: {body}");
        let message = body["error"]["message"].as_str().unwrap_or("");
        assert!(
            message.contains("could not reach the upstream"),
            "{message}"
        );
    }
    assert_all_healthy(&proxy).await;
}

#[tokio::test]
async fn twenty_keys_all_answering_429_cost_at_most_max_quota_hops_calls() {
    let keys = fake_keys(20);
    let fake = FakeGemini::start().await;
    fake.on_any()
        .always(Reply::quota_per_minute(FLASH, Some("54s")));
    let proxy = start(&fake, &keys, |c| c).await;

    let (code, headers, body) = chat(&proxy, FLASH).await;
    assert_eq!(code, 429, "{body}");
    assert_eq!(body["error"]["type"], "rate_limit_error", "{body}");
    assert!(headers.get("retry-after").is_some(), "{headers:?}");
    assert_eq!(fake.total_hits(), 8, "default pool.max_quota_hops is 8");

    // A lower cap is honoured too.
    drop(proxy);
    fake.reset_counters();
    let proxy = start(&fake, &keys, |c| c.set("pool", "max_quota_hops = 3")).await;
    let (code, _, body) = chat(&proxy, FLASH).await;
    assert_eq!(code, 429, "{body}");
    assert_eq!(fake.total_hits(), 3);
}

#[tokio::test]
async fn the_process_wide_retry_budget_stops_a_retry_storm() {
    let keys = fake_keys(20);
    let fake = FakeGemini::start().await;
    // Every key 429s with a zero delay, so every request walks all 20 keys again.
    fake.on_any()
        .always(Reply::quota_per_minute(FLASH, Some("0s")));
    let proxy = start(&fake, &keys, |c| c.set("pool", "max_quota_hops = 20")).await;

    // A quiet proxy gets 10 retries a second over 10 s: 100 retries, then first attempts only.
    let mut costs = Vec::new();
    for _ in 0..10 {
        let before = fake.total_hits();
        let (code, _, body) = chat(&proxy, FLASH).await;
        assert_eq!(code, 429, "{body}");
        costs.push(fake.total_hits() - before);
        if costs.last() == Some(&1) {
            break;
        }
    }
    assert_eq!(costs[0], 20, "the first request walks every key: {costs:?}");
    assert_eq!(
        costs.last(),
        Some(&1),
        "the budget never ran out: {costs:?}"
    );
    // Exactly 100 when the run fits one window (it takes well under a second); never fewer.
    let retries: u64 = costs.iter().map(|c| c - 1).sum();
    assert!(retries >= 100, "the floor was not granted: {costs:?}");
}

#[tokio::test]
async fn no_new_attempt_starts_after_the_request_deadline() {
    let keys = fake_keys(3);
    let fake = FakeGemini::start().await;
    fake.on_any()
        .always(Reply::delay(Duration::from_millis(1500), Reply::internal()));
    let proxy = start(&fake, &keys, |c| {
        c.set("pool", r#"request_deadline = "1s""#)
    })
    .await;

    let (code, _, body) = chat(&proxy, FLASH).await;
    assert_eq!(code, 500, "{body}");
    assert_eq!(
        fake.total_hits(),
        1,
        "an attempt started after the deadline"
    );
}

// ---- item 16: a model no key may serve ---------------------------------------------------------

#[tokio::test]
async fn a_model_no_key_may_serve_is_a_404_not_found() {
    let keys = fake_keys(2);
    let fake = FakeGemini::start().await;
    let pool_keys = format!(
        r#"keys = [{{ key = "{}", models = ["{FLASH}"] }}, {{ key = "{}", models = ["gemini-2.5-flash*"] }}]"#,
        keys[0], keys[1]
    );
    let proxy = start(&fake, &keys, |c| c.set("pool", &pool_keys)).await;

    let (code, headers, body) = chat(&proxy, PRO).await;
    assert_eq!(code, 404, "{body}");
    assert_eq!(body["error"]["type"], "invalid_request_error", "{body}");
    assert_eq!(body["error"]["code"], "model_not_found", "{body}");
    assert_eq!(body["error"]["param"], "model", "{body}");
    assert!(headers.get("retry-after").is_none(), "{headers:?}");

    let (code, body) = native(&proxy, PRO, "generateContent").await;
    assert_eq!(code, 404, "{body}");
    assert_eq!(body["error"]["code"], 404, "{body}");
    assert_eq!(body["error"]["status"], "NOT_FOUND", "{body}");
    assert_eq!(fake.total_hits(), 0);

    // The allowed model still works.
    chat_ok(&proxy, FLASH).await;
}
