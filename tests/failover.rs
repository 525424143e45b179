//! Key rotation and failover on non-streaming `/v1/chat/completions` (SPEC §6): even spreading
//! per model, rests after quota 429s (RetryInfo or `pool.cooldown`), disabled keys, client errors
//! passed back without penalty, 5xx failure thresholds, `max_attempts`, the all-keys-out answers,
//! aliases with fallback chains, and keys never travelling in a URL.
//!
//! Each test runs the real binary against its own `FakeGemini`; waits are bounded polls.

mod support;

use std::time::{Duration, Instant};

use reqwest::header::HeaderMap;
use serde_json::{json, Value};
use support::{default_text, fake_key, fake_keys, start, FakeGemini, Proxy, Reply, TestConfig};

const FLASH: &str = "gemini-2.5-flash";
const FLASH_20: &str = "gemini-2.0-flash";
const PRO: &str = "gemini-2.5-pro";

fn chat_body(model: &str) -> Value {
    json!({ "model": model, "messages": [{ "role": "user", "content": "Say hello" }] })
}

async fn chat(proxy: &Proxy, model: &str) -> (u16, HeaderMap, Value) {
    let resp = proxy
        .post("/v1/chat/completions")
        .json(&chat_body(model))
        .send()
        .await
        .expect("chat request");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let text = resp.text().await.expect("chat body");
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, headers, body)
}

/// A chat that must succeed; returns the answer's text.
async fn chat_ok(proxy: &Proxy, model: &str) -> String {
    let (status, _, body) = chat(proxy, model).await;
    assert_eq!(status, 200, "expected 200, got {status}: {body}");
    body["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Asserts OpenAI's error shape and returns the message.
fn openai_error(body: &Value) -> String {
    let err = &body["error"];
    assert!(err.is_object(), "not an OpenAI error: {body}");
    for field in ["message", "type", "param", "code"] {
        assert!(err.get(field).is_some(), "error lacks `{field}`: {body}");
    }
    err["message"].as_str().expect("message string").to_string()
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

/// Sends chats until `key` has `n` hits for `model` (every chat must succeed), bounded by
/// `timeout`; returns the time from `since` to the moment it was seen.
async fn chat_until_hits(
    proxy: &Proxy,
    fake: &FakeGemini,
    key: &str,
    n: u64,
    since: Instant,
    timeout: Duration,
) -> Duration {
    let deadline = Instant::now() + timeout;
    loop {
        chat_ok(proxy, FLASH).await;
        if fake.hits(key, FLASH) >= n {
            return since.elapsed();
        }
        assert!(
            Instant::now() < deadline,
            "{key} did not reach {n} hits within {timeout:?} (has {})",
            fake.hits(key, FLASH)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The first key is rate-limited by `limit` once: the client never notices, and the key is back
/// after `rest` (not before, and within a bound).
async fn check_rest_after_429(limit: Reply, rest: Duration, tweak: fn(TestConfig) -> TestConfig) {
    let fake = FakeGemini::start().await;
    let keys = fake_keys(2);
    fake.on(&keys[0], FLASH).then(limit);
    let proxy = start(&fake, &keys, tweak).await;

    let t0 = Instant::now();
    // Rotation order is the pool's business: chat until key 1 has taken its 429.
    chat_until_hits(&proxy, &fake, &keys[0], 1, t0, Duration::from_secs(2)).await;
    assert!(
        fake.hits(&keys[1], FLASH) >= 1,
        "key 2 served the 429'd request"
    );

    let back = chat_until_hits(
        &proxy,
        &fake,
        &keys[0],
        2,
        t0,
        rest + Duration::from_secs(4),
    )
    .await;
    assert!(
        back >= rest,
        "key 1 got traffic after {back:?}, before its {rest:?} rest ended"
    );
}

#[tokio::test]
async fn rotation_spreads_evenly_over_keys() {
    let fake = FakeGemini::start().await;
    let keys = fake_keys(3);
    let proxy = start(&fake, &keys, |c| c).await;
    for _ in 0..30 {
        chat_ok(&proxy, FLASH).await;
    }
    for key in &keys {
        assert_eq!(fake.hits(key, FLASH), 10, "hits for {}", support::mask(key));
    }
}

#[tokio::test]
async fn rotation_is_per_model() {
    // Two keys and two alternating models: one shared cursor would send every FLASH request to
    // one key and every PRO request to the other.
    let fake = FakeGemini::start().await;
    let keys = fake_keys(2);
    let proxy = start(&fake, &keys, |c| c).await;
    for _ in 0..10 {
        chat_ok(&proxy, FLASH).await;
        chat_ok(&proxy, PRO).await;
    }
    for key in &keys {
        for model in [FLASH, PRO] {
            assert_eq!(
                fake.hits(key, model),
                5,
                "{model} on {}",
                support::mask(key)
            );
        }
    }
}

#[tokio::test]
async fn quota_429_with_retry_info_rests_the_key_for_that_delay() {
    check_rest_after_429(
        Reply::quota_per_minute(FLASH, Some("2s")),
        Duration::from_secs(2),
        |c| c,
    )
    .await;
}

#[tokio::test]
async fn quota_429_without_retry_info_rests_the_key_for_the_cooldown() {
    check_rest_after_429(
        Reply::quota_per_minute(FLASH, None),
        Duration::from_secs(1),
        |c| c.set("pool", r#"cooldown = "1s""#),
    )
    .await;
}

#[tokio::test]
async fn invalid_and_leaked_keys_are_disabled_for_good() {
    let fake = FakeGemini::start().await;
    let keys = fake_keys(3);
    fake.on_key(&keys[0]).always(Reply::api_key_invalid());
    fake.on_key(&keys[1]).always(Reply::leaked_key());
    let proxy = start(&fake, &keys, |c| c).await;

    for _ in 0..9 {
        let text = chat_ok(&proxy, FLASH).await;
        assert_eq!(text, default_text(FLASH, &keys[2]));
    }
    // Disabled for every model, not just the one that found out.
    for _ in 0..3 {
        chat_ok(&proxy, PRO).await;
    }
    for (i, key) in keys[..2].iter().enumerate() {
        assert_eq!(fake.hits_for_key(key), 1, "key {} called again", i + 1);
        let st = key_status(&proxy, i).await;
        assert_eq!(st["isAvailable"], json!(false), "key {}: {st}", i + 1);
        assert_eq!(
            st["models"][FLASH]["state"],
            "disabled",
            "key {}: {st}",
            i + 1
        );
    }
}

#[tokio::test]
async fn client_error_is_passed_back_without_retry_or_penalty() {
    let fake = FakeGemini::start().await;
    let keys = fake_keys(2);
    let message = "Invalid JSON payload received. Unknown name \"foo\"";
    fake.on_any().then(Reply::bad_request(message));
    // With a threshold of 1, counting the 400 as a failure would rest the key.
    let proxy = start(&fake, &keys, |c| c.set("pool", "failure_threshold = 1")).await;

    let (status, _, body) = chat(&proxy, FLASH).await;
    assert_eq!(status, 400, "{body}");
    assert!(openai_error(&body).contains("Unknown name"), "{body}");
    assert_eq!(body["error"]["type"], "invalid_request_error", "{body}");
    assert_eq!(fake.total_hits(), 1, "a client error is not retried");

    for _ in 0..4 {
        chat_ok(&proxy, FLASH).await;
    }
    for (i, key) in keys.iter().enumerate() {
        assert!(
            fake.hits(key, FLASH) >= 2,
            "key {} left the rotation",
            i + 1
        );
        let st = key_status(&proxy, i).await;
        assert_eq!(
            st["models"][FLASH]["consecutive_failures"],
            json!(0),
            "{st}"
        );
        assert_eq!(st["models"][FLASH]["state"], "ok", "{st}");
    }
}

#[tokio::test]
async fn server_errors_rest_the_key_at_the_failure_threshold() {
    let fake = FakeGemini::start().await;
    let keys = fake_keys(2);
    fake.on_key(&keys[0]).always(Reply::internal());
    let proxy = start(&fake, &keys, |c| c.set("pool", "failure_threshold = 2")).await;

    for _ in 0..10 {
        let text = chat_ok(&proxy, FLASH).await;
        assert_eq!(text, default_text(FLASH, &keys[1]));
    }
    assert_eq!(
        fake.hits(&keys[0], FLASH),
        2,
        "rests after exactly 2 failures"
    );
    let st = key_status(&proxy, 0).await;
    assert_eq!(st["models"][FLASH]["state"], "cooling", "{st}");
}

#[tokio::test]
async fn max_attempts_bounds_the_keys_tried() {
    let fake = FakeGemini::start().await;
    let keys = fake_keys(5);
    fake.on_any().always(Reply::internal());
    let proxy = start(&fake, &keys, |c| c.set("pool", "max_attempts = 3")).await;

    let (status, _, body) = chat(&proxy, FLASH).await;
    assert!((500..600).contains(&status), "status {status}: {body}");
    openai_error(&body);
    assert_eq!(fake.total_hits(), 3);
    let distinct = keys.iter().filter(|k| fake.hits(k, FLASH) == 1).count();
    assert_eq!(distinct, 3, "3 distinct keys, once each");
}

#[tokio::test]
async fn all_keys_rate_limited_gives_429_with_retry_after_then_fails_fast() {
    let fake = FakeGemini::start().await;
    let keys = fake_keys(2);
    fake.on_any()
        .always(Reply::quota_per_minute(FLASH, Some("30s")));
    let proxy = start(&fake, &keys, |c| c).await;

    for round in 0..2 {
        let (status, headers, body) = chat(&proxy, FLASH).await;
        assert_eq!(status, 429, "round {round}: {body}");
        openai_error(&body);
        assert_eq!(body["error"]["type"], "rate_limit_error", "{body}");
        let retry_after: u64 = headers
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("round {round}: Retry-After in seconds: {headers:?}"));
        assert!((1..=60).contains(&retry_after), "Retry-After {retry_after}");
        assert_eq!(
            fake.total_hits(),
            2,
            "round {round}: each key tried once, then none"
        );
    }
}

#[tokio::test]
async fn all_keys_invalid_fails_clearly_then_fast() {
    let fake = FakeGemini::start().await;
    let keys = fake_keys(2);
    fake.on_any().always(Reply::api_key_invalid());
    let proxy = start(&fake, &keys, |c| c).await;

    let (status, _, body) = chat(&proxy, FLASH).await;
    assert!(status == 502 || status == 503, "status {status}: {body}");
    let message = openai_error(&body).to_lowercase();
    assert!(
        message.contains("invalid") || message.contains("rejected"),
        "message should say the keys were rejected: {body}"
    );
    assert_eq!(fake.total_hits(), 2);

    let (status, headers, body) = chat(&proxy, FLASH).await;
    assert_eq!(status, 503, "{body}");
    openai_error(&body);
    assert_eq!(
        headers.get("x-should-retry").map(|v| v.as_bytes()),
        Some(&b"false"[..]),
        "{headers:?}"
    );
    assert_eq!(
        fake.total_hits(),
        2,
        "no upstream call once every key is disabled"
    );
    let health = proxy.get("/health").send().await.expect("/health");
    assert_eq!(health.status(), 200, "still serving");
}

#[tokio::test]
async fn overloaded_503_is_not_held_against_the_key() {
    let fake = FakeGemini::start().await;
    let keys = fake_keys(2);
    fake.on_key(&keys[0]).always(Reply::overloaded());
    let proxy = start(&fake, &keys, |c| c.set("pool", "failure_threshold = 1")).await;

    for _ in 0..6 {
        chat_ok(&proxy, FLASH).await;
    }
    assert!(
        fake.hits(&keys[0], FLASH) >= 3,
        "key 1 left the rotation after an overload: {} hits",
        fake.hits(&keys[0], FLASH)
    );
    let st = key_status(&proxy, 0).await;
    assert_eq!(
        st["models"][FLASH]["consecutive_failures"],
        json!(0),
        "{st}"
    );
    assert_eq!(st["models"][FLASH]["state"], "ok", "{st}");
}

#[tokio::test]
async fn aliases_map_models_and_fallback_chains_move_on() {
    let fake = FakeGemini::start().await;
    let keys = fake_keys(2);
    fake.on_model(FLASH)
        .always(Reply::quota_per_minute(FLASH, Some("30s")));
    let proxy = start(&fake, &keys, |c| {
        c.set(
            "models.aliases",
            &format!(r#""fast" = {{ models = ["{FLASH}", "{FLASH_20}"] }}"#),
        )
        .set("models.aliases", &format!(r#""gpt-4o" = "{PRO}""#))
    })
    .await;

    let (status, _, body) = chat(&proxy, "gpt-4o").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["model"], "gpt-4o", "the model the client asked for");
    assert_eq!(fake.hits_for_model(PRO), 1);

    let (status, _, body) = chat(&proxy, "fast").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["model"], "fast");
    let text = body["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or("");
    assert!(
        text.starts_with(&format!("Hello from {FLASH_20} ")),
        "{body}"
    );
    assert_eq!(
        fake.hits_for_model(FLASH),
        2,
        "every key tried on the first model"
    );
    assert_eq!(fake.hits_for_model(FLASH_20), 1);
}

#[tokio::test]
async fn keys_travel_only_in_the_header() {
    let fake = FakeGemini::start().await;
    let keys = fake_keys(2);
    fake.on(&keys[0], FLASH)
        .then(Reply::quota_per_minute(FLASH, Some("1s")));
    let proxy = start(&fake, &keys, |c| c).await;

    chat_ok(&proxy, FLASH).await;
    chat_ok(&proxy, PRO).await;
    let stream = json!({ "model": FLASH, "stream": true,
                         "messages": [{ "role": "user", "content": "hi" }] });
    let resp = proxy
        .post("/v1/chat/completions")
        .json(&stream)
        .send()
        .await
        .expect("stream");
    assert_eq!(resp.status(), 200);
    resp.text().await.expect("stream body");
    // A Google SDK puts the client's token in `?key=`: it must not be forwarded either.
    let native = json!({ "contents": [{ "parts": [{ "text": "hi" }] }] });
    let resp = support::client()
        .post(format!(
            "{}/v1beta/models/{FLASH}:generateContent?key={}",
            proxy.url(),
            support::TEST_TOKEN
        ))
        .json(&native)
        .send()
        .await
        .expect("native request");
    assert_eq!(resp.status(), 200);

    let requests = fake.requests();
    assert!(requests.len() >= 5, "{} upstream requests", requests.len());
    assert_eq!(fake.keys_in_url(), 0, "a key went upstream in a URL");
    for r in &requests {
        let header = r.header("x-goog-api-key").unwrap_or_default();
        assert!(
            keys.contains(&header),
            "{} {} carried no pool key",
            r.method,
            r.path
        );
        assert!(
            !r.query.as_deref().unwrap_or("").contains("key="),
            "{:?}",
            r.query
        );
    }
    assert!(fake.hits_for_key(&fake_key(1)) >= 1 && fake.hits_for_key(&fake_key(2)) >= 1);
}
