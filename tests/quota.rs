//! Quota intelligence against the real binary (SPEC §6, issue "Quota intelligence"): limits are
//! per model, quota 429s rest keys once per cooldown while other keys serve, all-keys-out is
//! answered at once without calling Google, `/explain` says who serves next and why not the
//! others, `/status` shows the tokens Gemini reported, and an error inside a passthrough stream
//! rests the key.
//!
//! Each test runs the real binary against its own `FakeGemini`; waits are bounded polls.

mod support;

use std::time::Duration;

use reqwest::header::HeaderMap;
use serde_json::{json, Value};
use support::{fake_keys, start, text_chunk, FakeGemini, Proxy, Reply};

const FLASH: &str = "gemini-2.5-flash";
const PRO: &str = "gemini-2.5-pro";

async fn send(req: reqwest::RequestBuilder) -> (u16, HeaderMap, Value) {
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let text = resp.text().await.expect("body");
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, headers, body)
}

async fn chat(proxy: &Proxy, model: &str) -> (u16, HeaderMap, Value) {
    send(
        proxy.post("/v1/chat/completions").json(
            &json!({ "model": model, "messages": [{ "role": "user", "content": "Say hello" }] }),
        ),
    )
    .await
}

async fn chat_ok(proxy: &Proxy, model: &str) {
    let (status, _, body) = chat(proxy, model).await;
    assert_eq!(status, 200, "{body}");
}

async fn get_json(proxy: &Proxy, path: &str) -> (u16, Value) {
    let (status, _, body) = send(proxy.get(path)).await;
    (status, body)
}

/// `/status` detail for key `index` and `model`.
async fn model_status(proxy: &Proxy, index: usize, model: &str) -> Value {
    let (status, body) = get_json(proxy, "/status").await;
    assert_eq!(status, 200, "{body}");
    body["keys"][index]["models"][model].clone()
}

fn gemini_body() -> Value {
    json!({ "contents": [{ "role": "user", "parts": [{ "text": "Say hello" }] }] })
}

/// A `/v1beta` passthrough call; returns status and the raw body text.
async fn native(proxy: &Proxy, model: &str, action_and_query: &str) -> (u16, String) {
    let resp = proxy
        .post(&format!("/v1beta/models/{model}:{action_and_query}"))
        .json(&gemini_body())
        .send()
        .await
        .expect("native request");
    let status = resp.status().as_u16();
    (status, resp.text().await.expect("native body"))
}

fn usage(prompt: u64, candidates: u64, thoughts: u64) -> Value {
    json!({ "promptTokenCount": prompt, "candidatesTokenCount": candidates,
            "thoughtsTokenCount": thoughts, "totalTokenCount": prompt + candidates + thoughts })
}

/// One response or stream event with `text` and (optionally) usage.
fn event(text: &str, finish: Option<&str>, usage: Option<Value>) -> Value {
    let mut ev = text_chunk(text, finish);
    if let Some(u) = usage {
        ev["usageMetadata"] = u;
    }
    ev["modelVersion"] = json!(FLASH);
    ev
}

#[tokio::test]
async fn a_key_limited_on_one_model_still_serves_another() {
    let fake = FakeGemini::start().await;
    let keys = fake_keys(1);
    fake.on(&keys[0], PRO)
        .always(Reply::quota_per_minute(PRO, Some("40s")));
    let proxy = start(&fake, &keys, |c| c).await;

    let (status, _, body) = chat(&proxy, PRO).await;
    assert_eq!(status, 429, "{body}");
    chat_ok(&proxy, FLASH).await;
    chat_ok(&proxy, FLASH).await;
    // Pro is still resting: answered without calling Google again.
    let (status, _, body) = chat(&proxy, PRO).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(fake.hits(&keys[0], PRO), 1);
    assert_eq!(fake.hits(&keys[0], FLASH), 2);

    let pro = model_status(&proxy, 0, PRO).await;
    assert_eq!(pro["state"], "cooling", "{pro}");
    assert_eq!(pro["last_error"], "rate_limited", "{pro}");
    let flash = model_status(&proxy, 0, FLASH).await;
    assert_eq!(flash["state"], "ok", "{flash}");
}

#[tokio::test]
async fn seven_of_ten_keys_out_every_request_succeeds_and_each_is_called_once() {
    let fake = FakeGemini::start().await;
    let keys = fake_keys(10);
    let limited: Vec<&String> = keys.iter().take(7).collect();
    for (i, key) in limited.iter().enumerate() {
        // Every flavour of quota 429: per minute with and without RetryInfo, per day.
        let reply = match i % 3 {
            0 => Reply::quota_per_minute(FLASH, Some("45s")),
            1 => Reply::quota_per_minute(FLASH, None),
            _ => Reply::quota_per_day(FLASH),
        };
        fake.on(key, FLASH).always(reply);
    }
    // Default max_attempts (3): quota 429s do not use it up.
    let proxy = start(&fake, &keys, |c| c.set("pool", r#"cooldown = "60s""#)).await;

    for _ in 0..40 {
        chat_ok(&proxy, FLASH).await;
    }
    for key in &limited {
        assert_eq!(fake.hits(key, FLASH), 1, "{}", support::mask(key));
    }
    let served: u64 = keys[7..].iter().map(|k| fake.hits(k, FLASH)).sum();
    assert_eq!(served, 40);
    for key in &keys[7..] {
        assert!(fake.hits(key, FLASH) >= 10, "{}", support::mask(key));
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

#[tokio::test]
async fn all_keys_out_answers_429_at_once_without_calling_google() {
    let fake = FakeGemini::start().await;
    let keys = fake_keys(3);
    fake.on_model(FLASH).always(Reply::quota_per_day(FLASH));
    fake.on_model(PRO)
        .always(Reply::quota_per_minute(PRO, Some("30s")));
    let proxy = start(&fake, &keys, |c| c).await;

    // Learning that every key is out costs one call per key.
    let (status, _, body) = chat(&proxy, FLASH).await;
    assert_eq!(status, 429, "{body}");
    let (status, _, body) = chat(&proxy, PRO).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(fake.total_hits(), 6);
    fake.reset_counters();

    for _ in 0..5 {
        // Out for the day: the longest honest wait, and no retry.
        let (status, headers, body) = chat(&proxy, FLASH).await;
        assert_eq!(status, 429, "{body}");
        assert_eq!(body["error"]["type"], "rate_limit_error", "{body}");
        assert_eq!(header(&headers, "retry-after"), Some("60"), "{headers:?}");
        assert_eq!(header(&headers, "x-should-retry"), Some("false"));

        // Per minute: wait until the first key returns, and do retry.
        let (status, headers, body) = chat(&proxy, PRO).await;
        assert_eq!(status, 429, "{body}");
        let wait: u64 = header(&headers, "retry-after")
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("Retry-After in seconds: {headers:?}"));
        assert!((1..=30).contains(&wait), "Retry-After {wait}");
        assert_eq!(header(&headers, "x-should-retry"), Some("true"));

        // The native API answers the same way, in Google's shape, with the details native
        // clients decide on (Gemini CLI stops on a PerDay quota id, waits out a RetryInfo).
        let (status, body) = native(&proxy, FLASH, "generateContent").await;
        assert_eq!(status, 429, "{body}");
        let (quota_id, delay, message) = quota_details(&body);
        assert_eq!(
            quota_id, "GenerateRequestsPerDayPerProjectPerModel",
            "{body}"
        );
        let day_wait = seconds(&delay);
        assert!(day_wait >= 1, "the wait to the quota day's end: {body}");
        assert!(
            message.ends_with(&format!("Please retry in {day_wait}s.")),
            "{body}"
        );
        let (status, body) = native(&proxy, PRO, "generateContent").await;
        assert_eq!(status, 429, "{body}");
        let (quota_id, delay, message) = quota_details(&body);
        assert_eq!(
            quota_id, "GenerateRequestsPerMinutePerProjectPerModel",
            "{body}"
        );
        assert!((1..=30).contains(&seconds(&delay)), "{body}");
        assert!(message.contains("Please retry in"), "{body}");
    }
    assert_eq!(
        fake.total_hits(),
        0,
        "no upstream call once all keys are out"
    );
}

/// A Google 429 body's `(QuotaFailure quotaId, RetryInfo retryDelay, message)`.
fn quota_details(body: &str) -> (String, String, String) {
    let value: Value = serde_json::from_str(body).expect("JSON error body");
    let error = &value["error"];
    assert_eq!(error["status"], "RESOURCE_EXHAUSTED", "{body}");
    let details = error["details"].as_array().expect("details");
    let of = |kind: &str| {
        details
            .iter()
            .find(|d| d["@type"] == format!("type.googleapis.com/google.rpc.{kind}"))
            .unwrap_or_else(|| panic!("a {kind} in {body}"))
    };
    let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
    (
        text(&of("QuotaFailure")["violations"][0]["quotaId"]),
        text(&of("RetryInfo")["retryDelay"]),
        text(&error["message"]),
    )
}

/// `"34s"` as 34.
fn seconds(delay: &str) -> u64 {
    delay
        .strip_suffix('s')
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("a delay in whole seconds: {delay}"))
}

#[tokio::test]
async fn explain_says_who_serves_next_and_why_not_the_others() {
    let fake = FakeGemini::start().await;
    let keys = fake_keys(7);
    fake.on(&keys[0], FLASH)
        .always(Reply::quota_per_minute(FLASH, Some("40s")));
    fake.on(&keys[1], FLASH).always(Reply::leaked_key());
    fake.on(&keys[2], FLASH).always(Reply::quota_per_day(FLASH));
    fake.on(&keys[3], FLASH).always(Reply::no_quota(FLASH));
    let list = format!(
        r#"keys = ["{}", "{}", "{}", "{}", {{ key = "{}", name = "capped", daily_limit = 1 }}, {{ key = "{}", models = ["gemini-2.0-*"] }}, {{ key = "{}", name = "spare", project = "proj-b" }}]"#,
        keys[0], keys[1], keys[2], keys[3], keys[4], keys[5], keys[6]
    );
    let proxy = start(&fake, &keys, |c| {
        c.set("pool", &list).set("pool", "max_attempts = 5").set(
            "models.aliases",
            r#"fast = { models = ["gemini-2.5-flash"] }"#,
        )
    })
    .await;

    // One request walks keys 1..5 (4 learn their state, 5 serves); the next uses key 7.
    chat_ok(&proxy, FLASH).await;
    chat_ok(&proxy, FLASH).await;
    assert_eq!(fake.hits(&keys[4], FLASH), 1);
    assert_eq!(fake.hits(&keys[6], FLASH), 1);

    let (status, body) = get_json(&proxy, "/explain?model=fast").await;
    assert_eq!(status, 200, "{body}");
    let text = body.to_string();
    for key in &keys {
        assert!(!text.contains(key.as_str()), "a whole key in /explain");
    }
    assert_eq!(body["model"], "fast");
    assert_eq!(body["next"]["key"], support::mask(&keys[6]), "{body}");
    assert_eq!(body["next"]["name"], "spare");
    assert_eq!(body["next"]["model"], FLASH);
    let m = &body["models"][0];
    assert_eq!(m["model"], FLASH);
    assert_eq!(m["strategy"], "round_robin");
    let k = |i: usize| &m["keys"][i];
    let states: Vec<&str> = (0..7)
        .map(|i| k(i)["state"].as_str().unwrap_or("?"))
        .collect();
    assert_eq!(
        states,
        [
            "cooling",
            "disabled",
            "out_for_day",
            "no_quota",
            "daily_limit",
            "not_allowed",
            "next"
        ],
        "{body}"
    );
    assert_eq!(k(0)["last_error"], "rate_limited");
    let left = k(0)["seconds_left"].as_u64().expect("seconds_left");
    assert!((1..=40).contains(&left), "{}", k(0));
    assert!(k(0)["until"].as_str().is_some_and(|t| t.ends_with('Z')));
    let reason = k(0)["reason"].as_str().unwrap_or("");
    assert!(
        reason.starts_with("cooling until ") && reason.contains("after rate_limited"),
        "{reason}"
    );
    assert!(
        k(1)["disabled"]
            .as_str()
            .is_some_and(|r| r.contains("leaked")),
        "{}",
        k(1)
    );
    assert_eq!(k(2)["last_error"], "quota_daily");
    assert!(k(2)["seconds_left"]
        .as_u64()
        .is_some_and(|s| s > 40 && s <= 25 * 3600));
    assert_eq!(k(3)["last_error"], "no_quota");
    assert_eq!(k(4)["daily_limit"], 1);
    assert_eq!(k(4)["daily_requests"], 1);
    assert_eq!(k(4)["name"], "capped");
    assert_eq!(k(6)["project"], "proj-b");
    for i in 0..7 {
        assert!(
            k(i)["reason"].as_str().is_some_and(|r| !r.is_empty()),
            "{}",
            k(i)
        );
    }

    // Asking changes nothing.
    let (_, again) = get_json(&proxy, "/explain?model=gemini-2.5-flash").await;
    assert_eq!(again["next"], body["next"]);
    let before = fake.total_hits();
    chat_ok(&proxy, FLASH).await;
    assert_eq!(fake.hits(&keys[6], FLASH), 2, "the explained key served");
    assert_eq!(fake.total_hits(), before + 1);

    // Another model: key 6's globs allow 2.0 only, and no key has a history there.
    let (_, other) = get_json(&proxy, "/explain?model=gemini-2.0-flash").await;
    assert_eq!(other["models"][0]["keys"][5]["state"], "ready", "{other}");
    assert_eq!(other["models"][0]["keys"][1]["state"], "disabled");

    // A model is required, in OpenAI's error shape.
    for path in ["/explain", "/explain?model=", "/explain?other=1"] {
        let (status, body) = get_json(&proxy, path).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert_eq!(body["error"]["type"], "invalid_request_error", "{body}");
        assert_eq!(body["error"]["param"], "model", "{body}");
    }
}

#[tokio::test]
async fn explain_when_every_key_is_out() {
    let fake = FakeGemini::start().await;
    let keys = fake_keys(2);
    fake.on_model(FLASH).always(Reply::quota_per_day(FLASH));
    let proxy = start(&fake, &keys, |c| c).await;
    let (status, _, _) = chat(&proxy, FLASH).await;
    assert_eq!(status, 429);
    let (status, body) = get_json(&proxy, "/explain?model=gemini-2.5-flash").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["next"], Value::Null, "{body}");
    assert_eq!(body["all_out_for_day"], true, "{body}");
    assert!(body["retry_after_seconds"].as_u64().is_some_and(|s| s > 60));
    let states: Vec<&str> = body["models"][0]["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .map(|k| k["state"].as_str().unwrap_or("?"))
        .collect();
    assert_eq!(states, ["out_for_day", "out_for_day"]);
}

#[tokio::test]
async fn status_shows_the_tokens_gemini_reported() {
    let fake = FakeGemini::start().await;
    let keys = fake_keys(1);
    let key = &keys[0];
    // OpenAI, not streamed.
    fake.on(key, FLASH)
        .then(Reply::json(
            200,
            event("Hello.", Some("STOP"), Some(usage(11, 7, 5))),
        ))
        // OpenAI, streamed: usage is cumulative, the last one counts.
        .then(Reply::stream(vec![
            event("Hel", None, Some(usage(20, 1, 3))),
            event("lo.", Some("STOP"), Some(usage(20, 9, 3))),
        ]))
        // Native, not streamed.
        .then(Reply::json(
            200,
            event("Hi.", Some("STOP"), Some(usage(100, 200, 300))),
        ))
        // Native SSE stream.
        .then(Reply::stream(vec![
            event("a", None, Some(usage(1000, 1, 0))),
            event("b", Some("STOP"), Some(usage(1000, 2000, 3000))),
        ]))
        // Native JSON-array stream (no alt=sse).
        .then(Reply::stream(vec![
            event("c", None, None),
            event("d", Some("STOP"), Some(usage(10000, 20000, 30000))),
        ]));
    let proxy = start(&fake, &keys, |c| c).await;

    chat_ok(&proxy, FLASH).await;
    let (status, _, body) = send(proxy.post("/v1/chat/completions").json(&json!({
        "model": FLASH, "stream": true,
        "messages": [{ "role": "user", "content": "Say hello" }] })))
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = native(&proxy, FLASH, "generateContent").await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = native(&proxy, FLASH, "streamGenerateContent?alt=sse").await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = native(&proxy, FLASH, "streamGenerateContent").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.trim_start().starts_with('['), "{body}");
    assert_eq!(fake.hits(key, FLASH), 5);

    // Streams record when they end, just after the client has its last byte: poll briefly.
    let want = (
        11 + 20 + 100 + 1000 + 10000,
        7 + 9 + 200 + 2000 + 20000,
        5 + 3 + 300 + 3000 + 30000,
    );
    let mut seen = Value::Null;
    for _ in 0..100 {
        seen = model_status(&proxy, 0, FLASH).await;
        let got = (
            seen["prompt_tokens"].as_u64(),
            seen["completion_tokens"].as_u64(),
            seen["thoughts_tokens"].as_u64(),
        );
        if got == (Some(want.0), Some(want.1), Some(want.2)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(seen["prompt_tokens"], want.0, "{seen}");
    assert_eq!(seen["completion_tokens"], want.1, "{seen}");
    assert_eq!(seen["thoughts_tokens"], want.2, "{seen}");
    assert_eq!(seen["daily_requests"], 5, "{seen}");
}

#[tokio::test]
async fn an_error_inside_a_passthrough_stream_rests_the_key() {
    let fake = FakeGemini::start().await;
    let keys = fake_keys(2);
    // SSE: a text event, then Google's per-minute quota error inside the 200.
    fake.on(&keys[0], FLASH).always(Reply::error_in_stream(
        vec![text_chunk("Partial", None)],
        Reply::quota_per_minute(FLASH, Some("50s")),
    ));
    // JSON-array stream: the per-day error arrives as the array's last element.
    fake.on(&keys[0], PRO).always(Reply::error_in_stream(
        vec![text_chunk("Partial", None)],
        Reply::quota_per_day(PRO),
    ));
    let proxy = start(&fake, &keys, |c| c).await;

    let (status, body) = native(&proxy, FLASH, "streamGenerateContent?alt=sse").await;
    assert_eq!(status, 200, "{body}");
    // The bytes reach the client untouched, error included.
    assert!(
        body.contains("Partial") && body.contains("RESOURCE_EXHAUSTED"),
        "{body}"
    );
    assert!(
        body.contains("GenerateRequestsPerMinutePerProjectPerModel-FreeTier"),
        "{body}"
    );

    let (status, body) = native(&proxy, PRO, "streamGenerateContent").await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("GenerateRequestsPerDayPerProjectPerModel-FreeTier"),
        "{body}"
    );

    // The report happens as the stream passes: poll /status briefly.
    let mut flash = Value::Null;
    let mut pro = Value::Null;
    for _ in 0..100 {
        flash = model_status(&proxy, 0, FLASH).await;
        pro = model_status(&proxy, 0, PRO).await;
        if flash["state"] == "cooling" && pro["state"] == "exhausted" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(flash["state"], "cooling", "{flash}");
    assert_eq!(flash["last_error"], "rate_limited");
    assert!(
        flash["cooldown_seconds"]
            .as_u64()
            .is_some_and(|s| (1..=50).contains(&s)),
        "{flash}"
    );
    assert_eq!(pro["state"], "exhausted", "{pro}");
    assert_eq!(pro["last_error"], "quota_daily");

    // The rested key gets no more traffic for either model.
    for _ in 0..4 {
        let (status, body) = native(&proxy, FLASH, "streamGenerateContent?alt=sse").await;
        assert_eq!(status, 200, "{body}");
        let (status, body) = native(&proxy, PRO, "generateContent").await;
        assert_eq!(status, 200, "{body}");
    }
    assert_eq!(fake.hits(&keys[0], FLASH), 1);
    assert_eq!(fake.hits(&keys[0], PRO), 1);
    assert_eq!(fake.hits(&keys[1], FLASH), 4);
}

/// `countTokens` is metered by Google apart from generations (a far higher quota of its own):
/// with every key out of the model's generation quota for the day, counting still reaches
/// Google on every surface, and a count's own 429 moves on to another key without resting
/// anything.
#[tokio::test]
async fn counting_tokens_goes_on_when_the_generation_quota_is_out() {
    let fake = FakeGemini::start().await;
    let keys = fake_keys(3);
    for _ in 0..keys.len() {
        fake.on_model(FLASH).then(Reply::quota_per_day(FLASH));
    }
    let proxy = start(&fake, &keys, |c| c).await;
    let (status, _, body) = chat(&proxy, FLASH).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(fake.total_hits(), 3, "one call per key to learn it");
    fake.reset_counters();

    let (status, _, body) = chat(&proxy, FLASH).await;
    assert_eq!(status, 429, "generations stay refused: {body}");
    assert_eq!(fake.total_hits(), 0);

    let (status, body) = native(&proxy, FLASH, "countTokens").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("totalTokens"), "{body}");
    let (status, _, body) =
        send(proxy.post("/v1/messages/count_tokens").json(
            &json!({"model": FLASH, "messages": [{"role": "user", "content": "Say hello"}]}),
        ))
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body["input_tokens"].as_u64().is_some_and(|n| n > 0),
        "{body}"
    );
    let (status, _, body) = send(
        proxy
            .post("/v1/responses/input_tokens")
            .json(&json!({"model": FLASH, "input": "Say hello"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(fake.total_hits(), 3, "each count reached Google once");

    // A count refused on its own quota: the next key counts, and no key rests for it.
    fake.reset_counters();
    fake.on_model(PRO)
        .then(Reply::quota_per_minute(PRO, Some("30s")));
    let (status, body) = native(&proxy, PRO, "countTokens").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(fake.total_hits(), 2);
    for index in 0..keys.len() {
        let state = model_status(&proxy, index, PRO).await;
        assert!(
            state.is_null() || state["state"] == "ok",
            "key {index}: {state}"
        );
    }
    chat_ok(&proxy, PRO).await;
}
