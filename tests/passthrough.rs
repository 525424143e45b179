//! `/v1beta/...`: native Gemini requests pass through with the key swapped.

mod support;

use serde_json::{json, Value};
use support::*;

const MODEL: &str = "gemini-2.5-flash";

#[tokio::test]
async fn generate_content_passes_bytes_through_with_a_pool_key() {
    let (k1, k2) = (fake_key(1), fake_key(2));
    let fake = FakeGemini::start().await;
    fake.on(&k1, MODEL)
        .always(Reply::quota_per_minute(MODEL, Some("30s")));
    let proxy = Proxy::builder()
        .config(config_for(&fake.url(), &[&k1, &k2]))
        .start()
        .await;
    // Field order and spacing are the client's: the proxy must not re-serialise.
    let body = r#"{"contents": [{"role":"user","parts":[{"text":"hi"}]}],   "generationConfig":{"temperature":0.5}}"#;
    let response = client()
        .post(format!(
            "{}/v1beta/models/{MODEL}:generateContent?key={TEST_TOKEN}",
            proxy.url()
        ))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("request");
    assert_eq!(response.status().as_u16(), 200);
    let answer: Value = response.json().await.unwrap_or(Value::Null);
    let text = answer["candidates"][0]["content"]["parts"][0]["text"]
        .as_str()
        .unwrap_or("");
    assert_eq!(
        text,
        default_text(MODEL, &k2),
        "failed over to the second key"
    );
    let seen = fake.last_request().expect("upstream request");
    assert_eq!(seen.raw_body.as_ref(), body.as_bytes());
    assert_eq!(seen.header("x-goog-api-key").as_deref(), Some(k2.as_str()));
    let query = seen.query.clone().unwrap_or_default();
    assert!(
        !query.contains("key="),
        "client credential forwarded: {query}"
    );
    assert_eq!(fake.keys_in_url(), 0);
}

#[tokio::test]
async fn stream_generate_content_passes_sse_through() {
    let key = fake_key(1);
    let fake = FakeGemini::start().await;
    fake.on_any().always(Reply::text("one two three").chunks(3));
    let proxy = Proxy::builder()
        .config(config_for(&fake.url(), &[&key]))
        .start()
        .await;
    let response = client()
        .post(format!(
            "{}/v1beta/models/{MODEL}:streamGenerateContent?alt=sse",
            proxy.url()
        ))
        .header("x-goog-api-key", TEST_TOKEN)
        .json(&json!({"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status().as_u16(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap_or("")
        .to_string();
    assert!(
        content_type.starts_with("text/event-stream"),
        "{content_type}"
    );
    let raw = response.text().await.unwrap_or_default();
    assert_eq!(sse_data(&raw).len(), 3, "{raw}");
    assert_eq!(answer_text(&raw), "one two three");
    assert!(!raw.contains(": keep-alive"));
}

/// The text of a native answer, whole or streamed (SSE events joined).
fn answer_text(raw: &str) -> String {
    let events = sse_data(raw);
    let bodies: Vec<&str> = if events.is_empty() {
        vec![raw]
    } else {
        events.iter().map(String::as_str).collect()
    };
    bodies
        .iter()
        .filter_map(|e| serde_json::from_str::<Value>(e).ok())
        .filter_map(|v| {
            v["candidates"][0]["content"]["parts"][0]["text"]
                .as_str()
                .map(String::from)
        })
        .collect()
}

#[tokio::test]
async fn alias_chains_move_on_after_an_overload_as_chat_does() {
    const FALLBACK: &str = "gemini-2.0-flash";
    let key = fake_key(1);
    let fake = FakeGemini::start().await;
    fake.on_model(MODEL).always(Reply::overloaded());
    fake.on_model(FALLBACK)
        .always(Reply::text("from the fallback"));
    let proxy = Proxy::builder()
        .config(config_for(&fake.url(), &[&key]).set(
            "models.aliases",
            &format!(r#""fast" = {{ models = ["{MODEL}", "{FALLBACK}"] }}"#),
        ))
        .start()
        .await;
    let body = json!({"contents": [{"role": "user", "parts": [{"text": "hi"}]}]});
    for action in ["generateContent", "streamGenerateContent?alt=sse"] {
        let response = client()
            .post(format!("{}/v1beta/models/fast:{action}", proxy.url()))
            .header("x-goog-api-key", TEST_TOKEN)
            .json(&body)
            .send()
            .await
            .expect("request");
        let status = response.status().as_u16();
        let raw = response.text().await.unwrap_or_default();
        assert_eq!(status, 200, "{action}: {raw}");
        assert_eq!(answer_text(&raw), "from the fallback", "{action}: {raw}");
    }
    assert_eq!(fake.hits_for_model(MODEL), 2, "the first model was tried");
    assert_eq!(fake.hits_for_model(FALLBACK), 2);

    // A client error would fail the same way on the next model: it is the answer.
    fake.on_model(MODEL)
        .always(Reply::bad_request("bad request"));
    let response = client()
        .post(format!(
            "{}/v1beta/models/fast:generateContent",
            proxy.url()
        ))
        .header("x-goog-api-key", TEST_TOKEN)
        .json(&body)
        .send()
        .await
        .expect("request");
    assert_eq!(response.status().as_u16(), 400);
    assert_eq!(fake.hits_for_model(FALLBACK), 2, "no fallback after a 400");
}

#[tokio::test]
async fn list_get_count_and_embed_pass_through() {
    let key = fake_key(1);
    let fake = FakeGemini::start().await;
    let proxy = Proxy::builder()
        .config(config_for(&fake.url(), &[&key]))
        .start()
        .await;
    let c = client();
    let get = |path: &str| {
        c.get(format!("{}{path}", proxy.url()))
            .header("x-goog-api-key", TEST_TOKEN)
            .send()
    };
    let list: Value = get("/v1beta/models?pageSize=3")
        .await
        .expect("list")
        .json()
        .await
        .unwrap_or(Value::Null);
    assert_eq!(list["models"].as_array().map(Vec::len), Some(3), "{list}");
    assert!(list["nextPageToken"].is_string());
    let one: Value = get("/v1beta/models/gemini-2.5-pro")
        .await
        .expect("get")
        .json()
        .await
        .unwrap_or(Value::Null);
    assert_eq!(one["name"], "models/gemini-2.5-pro");

    let post = |action: &str, body: Value| {
        c.post(format!("{}/v1beta/models/{MODEL}:{action}", proxy.url()))
            .bearer_auth(TEST_TOKEN)
            .json(&body)
            .send()
    };
    let count: Value = post(
        "countTokens",
        json!({"contents": [{"parts": [{"text": "a b c"}]}]}),
    )
    .await
    .expect("count")
    .json()
    .await
    .unwrap_or(Value::Null);
    assert!(count["totalTokens"].as_u64().is_some(), "{count}");
    let embed: Value = post(
        "embedContent",
        json!({"content": {"parts": [{"text": "a"}]}}),
    )
    .await
    .expect("embed")
    .json()
    .await
    .unwrap_or(Value::Null);
    assert!(
        embed["embedding"]["values"]
            .as_array()
            .is_some_and(|v| !v.is_empty()),
        "{embed}"
    );
}

#[tokio::test]
async fn google_errors_keep_googles_shape() {
    let key = fake_key(1);
    let fake = FakeGemini::start().await;
    fake.on_any().always(Reply::bad_request(
        "Invalid JSON payload received. Unknown name \"x\"",
    ));
    let proxy = Proxy::builder()
        .config(config_for(&fake.url(), &[&key]))
        .start()
        .await;
    let response = client()
        .post(format!(
            "{}/v1beta/models/{MODEL}:generateContent",
            proxy.url()
        ))
        .header("x-goog-api-key", TEST_TOKEN)
        .body("{}")
        .send()
        .await
        .expect("request");
    assert_eq!(response.status().as_u16(), 400);
    let body: Value = response.json().await.unwrap_or(Value::Null);
    assert_eq!(body["error"]["status"], "INVALID_ARGUMENT", "{body}");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap_or("")
        .contains("Unknown name"));
    assert_eq!(fake.total_hits(), 1, "the client's error is not retried");
}
