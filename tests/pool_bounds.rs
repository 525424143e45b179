//! What a client cannot do to the pool's state (issue #14): junk model names leave no per-key
//! state and no metrics label, and never restart a real model's daily count; a stream is judged
//! at its end, so a key whose streams break mid-way is rested like any failing key; `/health`
//! counts a key usable for at least one model.
//!
//! Each test runs the real binary against its own `FakeGemini`; waits are bounded polls.

mod support;

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::{fake_keys, start, text_chunk, FakeGemini, Proxy, Reply};

const FLASH: &str = "gemini-2.5-flash";
const PRO: &str = "gemini-2.5-pro";
const WAIT: Duration = Duration::from_secs(10);

async fn chat(proxy: &Proxy, model: &str, stream: bool) -> (u16, String) {
    let resp = proxy
        .post("/v1/chat/completions")
        .json(&json!({ "model": model, "stream": stream,
                       "messages": [{ "role": "user", "content": "Say hello" }] }))
        .send()
        .await
        .expect("chat request");
    let status = resp.status().as_u16();
    // A stream cut by the upstream ends with an error event; a broken body keeps what came.
    let text = resp.text().await.unwrap_or_default();
    (status, text)
}

async fn json_get(proxy: &Proxy, path: &str) -> Value {
    let resp = proxy.get(path).send().await.expect(path);
    assert_eq!(resp.status(), 200, "{path}");
    resp.json().await.expect("JSON")
}

fn key(status: &Value, index: usize) -> &Value {
    status["keys"]
        .as_array()
        .and_then(|keys| keys.iter().find(|k| k["index"] == json!(index)))
        .unwrap_or_else(|| panic!("no key {index} in /status: {status}"))
}

#[tokio::test]
async fn junk_model_names_leave_no_trace_and_do_not_reset_a_daily_count() {
    let fake = FakeGemini::start().await;
    let keys = fake_keys(1);
    let junk: Vec<String> = (0..70).map(|i| format!("junk-model-{i:02}")).collect();
    for name in &junk {
        fake.on_model(name).always(Reply::model_not_found(name));
    }
    let proxy = start(&fake, &keys, |c| {
        c.set(
            "pool",
            &format!(r#"keys = [{{ key = "{}", daily_limit = 2 }}]"#, keys[0]),
        )
    })
    .await;

    for _ in 0..2 {
        assert_eq!(chat(&proxy, FLASH, false).await.0, 200);
    }
    let (code, body) = chat(&proxy, FLASH, false).await;
    assert_ne!(code, 200, "the key is at its daily limit: {body}");
    assert_eq!(fake.hits(&keys[0], FLASH), 2);

    for name in &junk {
        let (code, body) = chat(&proxy, name, false).await;
        assert_eq!(code, 404, "{name}: {body}");
    }
    assert_eq!(
        fake.hits(&keys[0], "junk-model-69"),
        1,
        "junk reached Google"
    );

    // The real model's count survived 70 junk names: still refused, without a call.
    let (code, body) = chat(&proxy, FLASH, false).await;
    assert_ne!(code, 200, "daily_limit bypassed after junk names: {body}");
    assert_eq!(fake.hits(&keys[0], FLASH), 2);

    let status = json_get(&proxy, "/status").await;
    let models = key(&status, 0)["models"]
        .as_object()
        .expect("models")
        .clone();
    assert_eq!(
        models.keys().collect::<Vec<_>>(),
        vec![FLASH],
        "junk names got per-key state: {status}"
    );
    assert_eq!(models[FLASH]["daily_requests"], 2, "{status}");
    assert_eq!(models[FLASH]["state"], "exhausted", "{status}");

    let metrics = proxy.metrics().await;
    assert!(!metrics.contains("junk-model"), "a junk label: {metrics}");
    assert!(
        metrics.contains(&format!(r#"model="{FLASH}""#)),
        "the real model keeps its label: {metrics}"
    );
    assert!(metrics.contains(r#"model="other""#), "{metrics}");
}

#[tokio::test]
async fn streams_that_break_midway_rest_the_key() {
    let fake = FakeGemini::start().await;
    let keys = fake_keys(2);
    fake.on(&keys[0], FLASH)
        .always(Reply::stream_then_close(vec![text_chunk("Hel", None)]));
    let proxy = start(&fake, &keys, |c| {
        c.set("pool", "failure_threshold = 2")
            .set("pool", r#"cooldown = "10m""#)
            .set("pool", r#"strategy = "round_robin""#)
    })
    .await;

    // Round robin: every other stream goes to key 1 until it has failed twice.
    let deadline = Instant::now() + WAIT;
    while fake.hits(&keys[0], FLASH) < 2 {
        assert!(Instant::now() < deadline, "key 1 was not tried twice");
        let (code, _) = chat(&proxy, FLASH, true).await;
        assert_eq!(code, 200, "a stream's status is sent at its headers");
    }
    let st = json_get(&proxy, "/status").await;
    let k1 = &key(&st, 0)["models"][FLASH];
    assert_eq!(
        k1["state"], "cooling",
        "two broken streams rest the key: {st}"
    );
    assert!(
        k1["last_error"]
            .as_str()
            .is_some_and(|e| e.starts_with("transient")),
        "{st}"
    );
    assert_eq!(key(&st, 1)["models"][FLASH]["state"], "ok", "{st}");

    let before = fake.hits(&keys[1], FLASH);
    for _ in 0..4 {
        let (code, body) = chat(&proxy, FLASH, true).await;
        assert_eq!(code, 200);
        assert!(body.contains("[DONE]"), "a clean stream from key 2: {body}");
    }
    assert_eq!(fake.hits(&keys[0], FLASH), 2, "a rested key was picked");
    assert_eq!(fake.hits(&keys[1], FLASH), before + 4);
}

#[tokio::test]
async fn an_error_event_inside_a_passthrough_stream_counts_against_the_key() {
    let fake = FakeGemini::start().await;
    let keys = fake_keys(2);
    fake.on(&keys[0], FLASH).always(Reply::error_in_stream(
        vec![text_chunk("Hel", None)],
        Reply::internal(),
    ));
    let proxy = start(&fake, &keys, |c| {
        c.set("pool", "failure_threshold = 2")
            .set("pool", r#"cooldown = "10m""#)
    })
    .await;
    let path = format!("/v1beta/models/{FLASH}:streamGenerateContent?alt=sse");
    let body = json!({ "contents": [{ "role": "user", "parts": [{ "text": "hi" }] }] });
    let deadline = Instant::now() + WAIT;
    while fake.hits(&keys[0], FLASH) < 2 {
        assert!(Instant::now() < deadline, "key 1 was not tried twice");
        let resp = proxy.post(&path).json(&body).send().await.expect("stream");
        assert_eq!(resp.status(), 200);
        let _ = resp.text().await;
    }
    let st = json_get(&proxy, "/status").await;
    assert_eq!(key(&st, 0)["models"][FLASH]["state"], "cooling", "{st}");
}

#[tokio::test]
async fn health_counts_a_key_cooling_on_one_model_as_available() {
    let fake = FakeGemini::start().await;
    let keys = fake_keys(2);
    fake.on(&keys[0], PRO)
        .always(Reply::quota_per_minute(PRO, Some("600s")));
    let proxy = start(&fake, &keys, |c| {
        c.set("models", &format!(r#"static = ["{PRO}", "{FLASH}"]"#))
            .set("pool", r#"strategy = "round_robin""#)
    })
    .await;

    let deadline = Instant::now() + WAIT;
    while fake.hits(&keys[0], PRO) < 1 {
        assert!(Instant::now() < deadline, "key 1 was not tried for {PRO}");
        assert_eq!(chat(&proxy, PRO, false).await.0, 200);
    }
    let st = json_get(&proxy, "/status").await;
    assert_eq!(key(&st, 0)["models"][PRO]["state"], "cooling", "{st}");
    assert_eq!(key(&st, 0)["isAvailable"], true, "usable for {FLASH}: {st}");
    assert_eq!(st["availableKeys"], 2, "{st}");
    // The first /health computes its count now; it has the same shape as ever.
    let health = json_get(&proxy, "/health").await;
    assert_eq!(health["availableKeys"], 2, "{health}");
    assert_eq!(health["totalKeys"], 2, "{health}");
    assert_eq!(health["status"], "healthy", "{health}");
    assert!(health["timestamp"].is_string(), "{health}");
    assert_eq!(health.as_object().map(|o| o.len()), Some(4), "{health}");

    // Out on every model it may serve: no longer available.
    fake.on(&keys[0], FLASH)
        .always(Reply::quota_per_minute(FLASH, Some("600s")));
    let deadline = Instant::now() + WAIT;
    while fake.hits(&keys[0], FLASH) < 1 {
        assert!(Instant::now() < deadline, "key 1 was not tried for {FLASH}");
        assert_eq!(chat(&proxy, FLASH, false).await.0, 200);
    }
    let st = json_get(&proxy, "/status").await;
    assert_eq!(key(&st, 0)["isAvailable"], false, "{st}");
    assert_eq!(st["availableKeys"], 1, "{st}");
    // /health's count is reused for up to a second: poll, bounded.
    let deadline = Instant::now() + WAIT;
    loop {
        let health = json_get(&proxy, "/health").await;
        if health["availableKeys"] == 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "/health never caught up: {health}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
