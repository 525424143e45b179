//! Self-tests of the fake Gemini upstream in `tests/support`: routing, scripting order, SSE
//! framing, pagination, hit counting, error anatomy, cancellation and key-in-URL detection, plus
//! the pure helpers of the proxy harness (the binary itself is not exercised here).

mod support;

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::{fake_key, sse_data, FakeGemini, Reply};

const FLASH: &str = "gemini-2.5-flash";
const PRO: &str = "gemini-2.5-pro";
const WAIT: Duration = Duration::from_secs(5);

fn hello() -> Value {
    json!({ "contents": [{ "role": "user", "parts": [{ "text": "Say hello to the tests" }] }] })
}

async fn post(
    fake: &FakeGemini,
    key: &str,
    path_and_query: &str,
    body: &Value,
) -> reqwest::Response {
    support::client()
        .post(format!("{}/v1beta/{path_and_query}", fake.url()))
        .header("x-goog-api-key", key)
        .json(body)
        .send()
        .await
        .expect("request to the fake")
}

async fn generate(fake: &FakeGemini, key: &str, model: &str) -> (u16, Value) {
    let resp = post(
        fake,
        key,
        &format!("models/{model}:generateContent"),
        &hello(),
    )
    .await;
    let status = resp.status().as_u16();
    (status, resp.json().await.expect("JSON body"))
}

fn text_of(v: &Value) -> String {
    v["candidates"][0]["content"]["parts"]
        .as_array()
        .map(|parts| {
            parts
                .iter()
                .filter_map(|p| p["text"].as_str())
                .collect::<String>()
        })
        .unwrap_or_default()
}

fn detail_types(v: &Value) -> Vec<String> {
    v["error"]["details"]
        .as_array()
        .map(|d| {
            d.iter()
                .filter_map(|x| x["@type"].as_str())
                .map(|t| {
                    t.trim_start_matches("type.googleapis.com/google.rpc.")
                        .to_string()
                })
                .collect()
        })
        .unwrap_or_default()
}

fn detail<'a>(v: &'a Value, kind: &str) -> &'a Value {
    v["error"]["details"]
        .as_array()
        .and_then(|d| {
            d.iter()
                .find(|x| x["@type"] == json!(format!("type.googleapis.com/google.rpc.{kind}")))
        })
        .unwrap_or(&Value::Null)
}

#[tokio::test]
async fn default_reply_names_model_and_masked_key() {
    let fake = FakeGemini::start().await;
    let key = fake_key(7);
    let (status, body) = generate(&fake, &key, FLASH).await;
    assert_eq!(status, 200);
    assert_eq!(text_of(&body), support::default_text(FLASH, &key));
    assert!(text_of(&body).contains("AIza****0007"));
    assert!(
        !body.to_string().contains(&key),
        "full key leaked into a reply"
    );
    assert_eq!(body["modelVersion"], json!(FLASH));
    assert!(body["responseId"].as_str().is_some_and(|s| !s.is_empty()));
    assert_eq!(body["candidates"][0]["finishReason"], json!("STOP"));
    let usage = &body["usageMetadata"];
    let total = usage["promptTokenCount"].as_u64().unwrap()
        + usage["candidatesTokenCount"].as_u64().unwrap();
    assert_eq!(usage["totalTokenCount"].as_u64(), Some(total));
}

#[tokio::test]
async fn scripted_replies_are_consumed_in_order_then_fallback() {
    let fake = FakeGemini::start().await;
    let (k1, k2) = (fake_key(1), fake_key(2));
    fake.on(&k1, FLASH)
        .then(Reply::text("first"))
        .then(Reply::overloaded())
        .always(Reply::text("sticky"));
    fake.on_key(&k2).then(Reply::text("key scope"));
    fake.on_model(PRO).always(Reply::internal());

    assert_eq!(text_of(&generate(&fake, &k1, FLASH).await.1), "first");
    assert_eq!(generate(&fake, &k1, FLASH).await.0, 503);
    assert_eq!(text_of(&generate(&fake, &k1, FLASH).await.1), "sticky");
    assert_eq!(text_of(&generate(&fake, &k1, FLASH).await.1), "sticky");
    // k1 has nothing for PRO: the model scope applies.
    assert_eq!(generate(&fake, &k1, PRO).await.0, 500);
    // k2: its key queue first (before the model scope), then the model scope, then default.
    assert_eq!(text_of(&generate(&fake, &k2, PRO).await.1), "key scope");
    assert_eq!(generate(&fake, &k2, PRO).await.0, 500);
    assert_eq!(
        text_of(&generate(&fake, &k2, FLASH).await.1),
        support::default_text(FLASH, &k2)
    );
    fake.on_any().then(Reply::text("any"));
    assert_eq!(text_of(&generate(&fake, &k2, FLASH).await.1), "any");
    fake.on(&k1, FLASH).clear();
    assert_eq!(
        text_of(&generate(&fake, &k1, FLASH).await.1),
        support::default_text(FLASH, &k1)
    );
}

#[tokio::test]
async fn hits_are_counted_per_key_and_model() {
    let fake = FakeGemini::start().await;
    let (k1, k2) = (fake_key(1), fake_key(2));
    for _ in 0..3 {
        generate(&fake, &k1, FLASH).await;
    }
    generate(&fake, &k1, PRO).await;
    generate(&fake, &k2, PRO).await;
    assert_eq!(fake.hits(&k1, FLASH), 3);
    assert_eq!(fake.hits(&k1, PRO), 1);
    assert_eq!(fake.hits(&k2, FLASH), 0);
    assert_eq!(fake.hits_for_key(&k1), 4);
    assert_eq!(fake.hits_for_model(PRO), 2);
    assert_eq!(fake.total_hits(), 5);
    let last = fake.last_request().unwrap();
    assert_eq!(last.method, "POST");
    assert_eq!(last.path, format!("/v1beta/models/{PRO}:generateContent"));
    assert_eq!(last.key.as_deref(), Some(k2.as_str()));
    assert_eq!(last.header("x-goog-api-key"), Some(k2.clone()));
    assert_eq!(last.body, Some(hello()));
    fake.reset_counters();
    assert_eq!(fake.total_hits(), 0);
}

#[tokio::test]
async fn sse_stream_uses_crlf_framing_and_cumulative_usage() {
    let fake = FakeGemini::start().await;
    let key = fake_key(1);
    fake.on_any().then(Reply::text("abcdefghijkl").chunks(4));
    let resp = post(
        &fake,
        &key,
        &format!("models/{FLASH}:streamGenerateContent?alt=sse"),
        &hello(),
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let raw = resp.text().await.unwrap();
    assert!(!raw.contains("[DONE]"));
    let frames: Vec<&str> = raw.split_terminator("\r\n\r\n").collect();
    assert_eq!(frames.len(), 4, "raw: {raw:?}");
    assert!(frames
        .iter()
        .all(|f| f.starts_with("data: ") && !f.contains('\n')));
    assert!(raw.ends_with("\r\n\r\n"));

    let events: Vec<Value> = sse_data(&raw)
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert_eq!(events.len(), 4);
    let text: String = events.iter().map(text_of).collect();
    assert_eq!(text, "abcdefghijkl");
    let mut last_candidates = 0;
    for (i, ev) in events.iter().enumerate() {
        assert_eq!(ev["modelVersion"], json!(FLASH));
        assert_eq!(ev["responseId"], events[0]["responseId"]);
        let c = ev["usageMetadata"]["candidatesTokenCount"]
            .as_u64()
            .unwrap();
        assert!(c >= last_candidates, "usage must be cumulative");
        last_candidates = c;
        let finish = &ev["candidates"][0]["finishReason"];
        assert_eq!(
            finish.is_null(),
            i < 3,
            "finishReason only on the last chunk"
        );
    }
    assert_eq!(events[3]["candidates"][0]["finishReason"], json!("STOP"));
}

#[tokio::test]
async fn stream_without_alt_is_a_json_array() {
    let fake = FakeGemini::start().await;
    let resp = post(
        &fake,
        &fake_key(1),
        &format!("models/{FLASH}:streamGenerateContent"),
        &hello(),
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    let body: Value = resp.json().await.unwrap();
    let chunks = body.as_array().expect("a JSON array");
    assert_eq!(chunks.len(), 3);
    let text: String = chunks.iter().map(text_of).collect();
    assert_eq!(text, support::default_text(FLASH, &fake_key(1)));

    // Google's errors on this route come wrapped in an array.
    fake.on_any().then(Reply::overloaded());
    let resp = post(
        &fake,
        &fake_key(1),
        &format!("models/{FLASH}:streamGenerateContent"),
        &hello(),
    )
    .await;
    assert_eq!(resp.status(), 503);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body[0]["error"]["status"], json!("UNAVAILABLE"));
}

#[tokio::test]
async fn raw_streams_and_stream_errors() {
    let fake = FakeGemini::start().await;
    let key = fake_key(1);
    let call = support::chunk_with_parts(
        vec![json!({ "functionCall": { "name": "get_weather", "args": { "city": "Paris" } } })],
        Some("STOP"),
    );
    fake.on_any()
        .then(
            Reply::stream(vec![support::text_chunk("Hi", None), call.clone()])
                .event_delay(Duration::from_millis(5)),
        )
        .then(Reply::error_in_stream(
            vec![support::text_chunk("Hel", None)],
            Reply::overloaded(),
        ))
        .then(Reply::stream_then_close(vec![support::text_chunk(
            "cut", None,
        )]));
    let path = format!("models/{FLASH}:streamGenerateContent?alt=sse");

    let raw = post(&fake, &key, &path, &hello())
        .await
        .text()
        .await
        .unwrap();
    let events = sse_data(&raw);
    assert_eq!(events.len(), 2);
    assert_eq!(serde_json::from_str::<Value>(&events[1]).unwrap(), call);

    let resp = post(&fake, &key, &path, &hello()).await;
    assert_eq!(resp.status(), 200);
    let events = sse_data(&resp.text().await.unwrap());
    let err: Value = serde_json::from_str(&events[1]).unwrap();
    assert_eq!(err["error"]["code"], json!(503));

    let mut resp = post(&fake, &key, &path, &hello()).await;
    assert_eq!(resp.status(), 200);
    let first = resp.chunk().await.expect("first chunk").expect("some data");
    assert!(String::from_utf8_lossy(&first).contains("cut"));
    assert!(
        resp.chunk().await.is_err(),
        "an abrupt close is a body error, not a clean EOF"
    );
    // The fake closed it, not the client.
    assert_eq!(fake.cancellations(), 0);
}

#[tokio::test]
async fn models_list_paginates_and_get_finds_one() {
    let fake = FakeGemini::start().await;
    let client = support::client();
    let mut names = Vec::new();
    let mut token: Option<String> = None;
    let mut pages = 0;
    for _ in 0..20 {
        let mut url = format!("{}/v1beta/models?pageSize=5", fake.url());
        if let Some(t) = &token {
            url.push_str(&format!("&pageToken={t}"));
        }
        let page: Value = client
            .get(url)
            .header("x-goog-api-key", fake_key(1))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        pages += 1;
        let models = page["models"].as_array().unwrap();
        assert!(models.len() <= 5);
        for m in models {
            assert!(m["supportedGenerationMethods"].is_array());
            assert!(m["inputTokenLimit"].is_u64());
            assert!(m["displayName"].is_string());
            names.push(m["name"].as_str().unwrap().to_string());
        }
        token = page["nextPageToken"].as_str().map(str::to_owned);
        if token.is_none() {
            break;
        }
    }
    assert_eq!(pages, 3);
    let expected: Vec<String> = support::fake_gemini::DEFAULT_MODELS
        .iter()
        .map(|m| format!("models/{m}"))
        .collect();
    assert_eq!(names, expected);

    let get = |m: &str| {
        client
            .get(format!("{}/v1beta/models/{m}", fake.url()))
            .header("x-goog-api-key", fake_key(1))
            .send()
    };
    let one: Value = get(FLASH).await.unwrap().json().await.unwrap();
    assert_eq!(one["name"], json!(format!("models/{FLASH}")));
    assert_eq!(one["displayName"], json!("Gemini 2.5 Flash"));
    assert_eq!(get("no-such-model").await.unwrap().status(), 404);

    fake.on_models_list().then(Reply::internal());
    let resp = client
        .get(format!("{}/v1beta/models", fake.url()))
        .header("x-goog-api-key", fake_key(1))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 500);
}

#[tokio::test]
async fn error_presets_carry_googles_anatomy() {
    let fake = FakeGemini::start().await;
    let key = fake_key(1);
    let cases: Vec<(Reply, u16, &str, Vec<&str>)> = vec![
        (
            Reply::quota_per_minute(FLASH, Some("54s")),
            429,
            "RESOURCE_EXHAUSTED",
            vec!["DebugInfo", "QuotaFailure", "Help", "RetryInfo"],
        ),
        (
            Reply::quota_per_minute(FLASH, None),
            429,
            "RESOURCE_EXHAUSTED",
            vec!["DebugInfo", "QuotaFailure", "Help"],
        ),
        (
            Reply::quota_per_day(FLASH),
            429,
            "RESOURCE_EXHAUSTED",
            vec!["Help", "QuotaFailure", "RetryInfo"],
        ),
        (
            Reply::no_quota(FLASH),
            429,
            "RESOURCE_EXHAUSTED",
            vec!["Help", "QuotaFailure", "RetryInfo"],
        ),
        (
            Reply::api_key_invalid(),
            400,
            "INVALID_ARGUMENT",
            vec!["ErrorInfo", "LocalizedMessage"],
        ),
        (Reply::leaked_key(), 403, "PERMISSION_DENIED", vec![]),
        (Reply::overloaded(), 503, "UNAVAILABLE", vec![]),
        (Reply::internal(), 500, "INTERNAL", vec![]),
        (Reply::bad_request("nope"), 400, "INVALID_ARGUMENT", vec![]),
    ];
    let mut bodies = Vec::new();
    for (reply, status, google_status, details) in cases {
        fake.on_any().then(reply);
        let (got_status, body) = generate(&fake, &key, FLASH).await;
        assert_eq!(got_status, status, "{body}");
        assert_eq!(body["error"]["code"], json!(status));
        assert_eq!(body["error"]["status"], json!(google_status));
        assert_eq!(detail_types(&body), details, "{body}");
        bodies.push(body);
    }
    let per_minute = &bodies[0];
    let violation = &detail(per_minute, "QuotaFailure")["violations"][0];
    assert_eq!(
        violation["quotaId"],
        json!("GenerateRequestsPerMinutePerProjectPerModel-FreeTier")
    );
    assert_eq!(violation["quotaDimensions"]["model"], json!(FLASH));
    assert_eq!(detail(per_minute, "RetryInfo")["retryDelay"], json!("54s"));
    let message = per_minute["error"]["message"].as_str().unwrap();
    assert!(message.contains("Quota exceeded for metric: ") && message.contains("limit: 2"));
    assert!(message.contains("Please retry in 54s."));
    assert!(!bodies[1]["error"]["message"]
        .as_str()
        .unwrap()
        .contains("Please retry"));
    let per_day = &detail(&bodies[2], "QuotaFailure")["violations"][0]["quotaId"];
    assert!(per_day.as_str().unwrap().contains("PerDay"));
    assert!(bodies[3]["error"]["message"]
        .as_str()
        .unwrap()
        .contains("limit: 0"));
    assert_eq!(
        detail(&bodies[4], "ErrorInfo")["reason"],
        json!("API_KEY_INVALID")
    );
    assert!(bodies[5]["error"]["message"]
        .as_str()
        .unwrap()
        .contains("leaked"));
    assert_eq!(
        bodies[6]["error"]["message"],
        json!("The model is overloaded. Please try again later.")
    );
}

#[tokio::test]
async fn keys_are_checked_like_google() {
    let (good, bad) = (fake_key(1), fake_key(99));
    let fake = FakeGemini::builder().keys([&good]).start().await;
    assert_eq!(generate(&fake, &good, FLASH).await.0, 200);

    let (status, body) = generate(&fake, &bad, FLASH).await;
    assert_eq!(status, 400);
    assert_eq!(
        detail(&body, "ErrorInfo")["reason"],
        json!("API_KEY_INVALID")
    );
    assert_eq!(
        fake.hits(&bad, FLASH),
        1,
        "rejected keys still count as hits"
    );

    let resp = support::client()
        .post(format!(
            "{}/v1beta/models/{FLASH}:generateContent",
            fake.url()
        ))
        .json(&hello())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    let body: Value = resp.json().await.unwrap();
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("unregistered callers"));

    fake.allow_key(&bad);
    assert_eq!(generate(&fake, &bad, FLASH).await.0, 200);
    fake.revoke_key(&good);
    assert_eq!(generate(&fake, &good, FLASH).await.0, 400);
}

#[tokio::test]
async fn keys_in_the_url_are_counted() {
    let fake = FakeGemini::start().await;
    generate(&fake, &fake_key(1), FLASH).await;
    assert_eq!(fake.keys_in_url(), 0);
    let resp = support::client()
        .post(format!(
            "{}/v1beta/models/{FLASH}:generateContent?key={}",
            fake.url(),
            fake_key(2)
        ))
        .json(&hello())
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        200,
        "Google accepts it, so does the fake; it just counts"
    );
    assert_eq!(fake.keys_in_url(), 1);
    assert_eq!(fake.hits(&fake_key(2), FLASH), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_dropping_a_hanging_request_is_a_cancellation() {
    let fake = FakeGemini::start().await;
    fake.on_any().then(Reply::hang());
    let url = format!("{}/v1beta/models/{FLASH}:generateContent", fake.url());
    let request = tokio::spawn(async move {
        support::client()
            .post(url)
            .header("x-goog-api-key", fake_key(1))
            .json(&hello())
            .send()
            .await
    });
    assert!(fake.wait_for(|f| f.in_flight() == 1, WAIT).await);
    assert_eq!(fake.cancellations(), 0);
    request.abort();
    assert!(fake.wait_for(|f| f.cancellations() == 1, WAIT).await);
    assert!(fake.wait_for(|f| f.in_flight() == 0, WAIT).await);
}

#[tokio::test]
async fn a_client_leaving_mid_stream_is_a_cancellation() {
    let fake = FakeGemini::start().await;
    fake.on_any()
        .then(Reply::stream_then_hang(vec![support::text_chunk(
            "partial", None,
        )]));
    let mut resp = post(
        &fake,
        &fake_key(1),
        &format!("models/{FLASH}:streamGenerateContent?alt=sse"),
        &hello(),
    )
    .await;
    let first = resp.chunk().await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&first).starts_with("data: "));
    assert_eq!(fake.in_flight(), 1);
    drop(resp);
    assert!(
        fake.wait_for(|f| f.cancellations() == 1 && f.in_flight() == 0, WAIT)
            .await
    );

    // Completed replies never count.
    post(
        &fake,
        &fake_key(1),
        &format!("models/{FLASH}:streamGenerateContent?alt=sse"),
        &hello(),
    )
    .await
    .text()
    .await
    .unwrap();
    generate(&fake, &fake_key(1), FLASH).await;
    assert_eq!(fake.cancellations(), 1);
    assert_eq!(fake.in_flight(), 0);
}

#[tokio::test]
async fn delay_holds_the_headers_back() {
    let fake = FakeGemini::start().await;
    fake.on_any().then(Reply::delay(
        Duration::from_millis(200),
        Reply::text("late"),
    ));
    let started = Instant::now();
    let (status, body) = generate(&fake, &fake_key(1), FLASH).await;
    assert!(started.elapsed() >= Duration::from_millis(200));
    assert_eq!((status, text_of(&body)), (200, "late".to_string()));
}

#[tokio::test]
async fn strict_mode_rejects_unknown_fields() {
    let fake = FakeGemini::builder().strict(true).start().await;
    let mut body = hello();
    body["stream_options"] = json!({ "include_usage": true });
    let resp = post(
        &fake,
        &fake_key(1),
        &format!("models/{FLASH}:generateContent"),
        &body,
    )
    .await;
    assert_eq!(resp.status(), 400);
    let err: Value = resp.json().await.unwrap();
    assert_eq!(
        err["error"]["message"],
        json!("Invalid JSON payload received. Unknown name \"stream_options\": Cannot find field.")
    );
    fake.strict(false);
    let resp = post(
        &fake,
        &fake_key(1),
        &format!("models/{FLASH}:generateContent"),
        &body,
    )
    .await;
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn count_tokens_and_embeddings() {
    let fake = FakeGemini::builder().embedding_dims(8).start().await;
    let key = fake_key(1);
    let count: Value = post(
        &fake,
        &key,
        &format!("models/{FLASH}:countTokens"),
        &hello(),
    )
    .await
    .json()
    .await
    .unwrap();
    assert!(count["totalTokens"].as_u64().unwrap() > 0);

    let model = "gemini-embedding-001";
    let one: Value = post(
        &fake,
        &key,
        &format!("models/{model}:embedContent"),
        &json!({ "content": { "parts": [{ "text": "hi" }] }, "outputDimensionality": 4 }),
    )
    .await
    .json()
    .await
    .unwrap();
    let values: Vec<f32> = serde_json::from_value(one["embedding"]["values"].clone()).unwrap();
    assert_eq!(values, support::fake_embedding("hi", 4));

    let requests: Vec<Value> = ["a", "b", "c"]
        .iter()
        .map(|t| json!({ "model": format!("models/{model}"), "content": { "parts": [{ "text": t }] } }))
        .collect();
    let batch: Value = post(
        &fake,
        &key,
        &format!("models/{model}:batchEmbedContents"),
        &json!({ "requests": requests }),
    )
    .await
    .json()
    .await
    .unwrap();
    let embeddings = batch["embeddings"].as_array().unwrap();
    assert_eq!(embeddings.len(), 3);
    let second: Vec<f32> = serde_json::from_value(embeddings[1]["values"].clone()).unwrap();
    assert_eq!(second, support::fake_embedding("b", 8));

    let too_many: Vec<Value> = (0..101).map(|_| requests[0].clone()).collect();
    let resp = post(
        &fake,
        &key,
        &format!("models/{model}:batchEmbedContents"),
        &json!({ "requests": too_many }),
    )
    .await;
    assert_eq!(resp.status(), 400);
    let err: Value = resp.json().await.unwrap();
    assert!(err["error"]["message"]
        .as_str()
        .unwrap()
        .contains("at most 100 requests can be in one batch"));
}

#[test]
fn harness_helpers() {
    let key = fake_key(7);
    assert!(key.starts_with("AIza") && key.contains("FAKE") && key.len() >= 39);
    assert_eq!(support::mask(&key), "AIza****0007");

    let config = support::config_for("http://127.0.0.1:9", &[fake_key(1), fake_key(2)])
        .set("server", r#"shutdown_grace = "1s""#)
        .set("auth", r#"tokens = ["other"]"#)
        .raw("[models]\nlist = \"static\"");
    let parsed: toml::Table = config.render().parse().expect("valid TOML");
    assert_eq!(parsed["server"]["listen"].as_str(), Some("127.0.0.1:0"));
    assert_eq!(parsed["server"]["shutdown_grace"].as_str(), Some("1s"));
    assert_eq!(
        parsed["upstream"]["base_url"].as_str(),
        Some("http://127.0.0.1:9")
    );
    assert_eq!(parsed["auth"]["tokens"].as_array().unwrap().len(), 1);
    assert_eq!(parsed["pool"]["keys"].as_array().unwrap().len(), 2);
    assert_eq!(parsed["models"]["list"].as_str(), Some("static"));

    let line = "\u{1b}[2m2026-01-01T00:00:00Z\u{1b}[0m \u{1b}[32m INFO\u{1b}[0m gemini_rotator::server: listening \u{1b}[3maddr\u{1b}[0m\u{1b}[2m=\u{1b}[0m127.0.0.1:43125\n";
    assert_eq!(
        support::proxy::parse_listening_addr(line),
        Some("127.0.0.1:43125".parse().unwrap())
    );
    let json_line = r#"{"level":"INFO","fields":{"message":"listening","addr":"127.0.0.1:7"}}"#;
    assert_eq!(
        support::proxy::parse_listening_addr(json_line),
        Some("127.0.0.1:7".parse().unwrap())
    );

    let events = sse_data("data: a\r\n\r\n: comment\n\ndata: b\ndata: c\n\ndata: unfinished");
    assert_eq!(events, vec!["a".to_string(), "b\nc".to_string()]);
}

/// Process plumbing only: whatever the binary does with a broken config today (the stub exits
/// at once, the real one exits 1), it must exit, be reaped and have its output captured.
#[tokio::test]
async fn harness_spawns_and_reaps_the_binary() {
    let mut proxy = support::Proxy::builder()
        .config("this is = not [valid toml")
        .file("keys.txt", &format!("{}\n", fake_key(1)))
        .spawn();
    assert!(proxy.dir().join("config.toml").is_file());
    assert!(proxy.dir().join("keys.txt").is_file());
    let status = proxy.wait_exit(Duration::from_secs(15)).await;
    assert!(
        status.is_some(),
        "binary did not exit; logs:\n{}",
        proxy.logs()
    );

    let (code, _stdout, _stderr) = support::run_check(
        &["--config", "{dir}/config.toml", "--check"],
        &[("config.toml", "this is = not [valid toml")],
    );
    assert_ne!(code, -1, "run_check timed out or was killed by a signal");
}
