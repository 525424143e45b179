//! The OpenAI side of the native surface (issue #18 item 7): `google.cached_content` on chat,
//! pinned to the key that made the cache and owned by its token; chat answers with images
//! (`message.images`, streamed `delta.images`) from Gemini's image models; and
//! `POST /v1/images/generations` over Imagen's `:predict` and Gemini image models, with bad
//! input refused before any upstream call and failover off a rate-limited key.

mod support;

use serde_json::{json, Value};
use support::*;

const MODEL: &str = "gemini-2.5-flash";
const IMAGE_MODEL: &str = "gemini-2.5-flash-image";
const PRO_IMAGE_MODEL: &str = "gemini-3-pro-image-preview";
const IMAGEN: &str = "imagen-4.0-generate-001";
const OTHER_TOKEN: &str = "sk-test-token-OTHER-0123456789";

async fn setup(keys: u32) -> (FakeGemini, Proxy, Vec<String>) {
    let keys = fake_keys(keys);
    let fake = FakeGemini::start().await;
    let proxy = start(&fake, &keys, |c| {
        c.set(
            "auth",
            &format!(r#"tokens = ["{TEST_TOKEN}", {{ name = "other", token = "{OTHER_TOKEN}" }}]"#),
        )
    })
    .await;
    (fake, proxy, keys)
}

async fn post_as(
    proxy: &Proxy,
    token: &str,
    path: &str,
    body: &Value,
) -> (u16, Value, Option<String>) {
    let response = client()
        .post(format!("{}{path}", proxy.url()))
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .expect("request");
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    (
        status,
        response.json().await.unwrap_or(Value::Null),
        retry_after,
    )
}

fn cached_chat(cache: &str) -> Value {
    json!({
        "model": MODEL,
        "messages": [{"role": "user", "content": "Summarise the document."}],
        "extra_body": {"google": {"cached_content": cache}},
    })
}

#[tokio::test]
async fn a_chat_with_cached_content_goes_to_the_key_that_made_the_cache() {
    let (fake, proxy, _) = setup(3).await;
    let cache = create_cache(&proxy, TEST_TOKEN, MODEL).await;
    let creator = fake.owner_of(&cache).expect("the cache exists at the fake");
    fake.reset_counters();
    for i in 0..9 {
        // Both spellings the openai SDK and Google's samples use.
        let body = if i % 2 == 0 {
            cached_chat(&cache)
        } else {
            json!({"model": MODEL, "messages": [{"role": "user", "content": "Again."}],
                   "google": {"cached_content": cache}})
        };
        let (status, answer, _) = post_as(&proxy, TEST_TOKEN, "/v1/chat/completions", &body).await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(
            answer["choices"][0]["message"]["content"],
            default_text(MODEL, &creator)
        );
    }
    assert_eq!(fake.permission_denied(), 0);
    let requests = fake.requests();
    assert_eq!(requests.len(), 9);
    for r in &requests {
        assert_eq!(r.key.as_deref(), Some(creator.as_str()), "never rotated");
        let body = r.body.clone().unwrap_or(Value::Null);
        assert_eq!(
            body["cachedContent"],
            cache.as_str(),
            "sent as Gemini's field"
        );
    }
}

#[tokio::test]
async fn another_tokens_or_an_unknown_cache_is_refused_before_any_upstream_call() {
    let (fake, proxy, _) = setup(2).await;
    let cache = create_cache(&proxy, TEST_TOKEN, MODEL).await;
    fake.reset_counters();
    let (status, body, _) = post_as(
        &proxy,
        OTHER_TOKEN,
        "/v1/chat/completions",
        &cached_chat(&cache),
    )
    .await;
    assert_eq!(status, 404, "{body}");
    let message = body["error"]["message"].as_str().unwrap_or("");
    assert!(message.contains(&cache), "names the cache: {message}");
    let (status, body, _) = post_as(
        &proxy,
        TEST_TOKEN,
        "/v1/chat/completions",
        &cached_chat("cachedContents/nosuchcache"),
    )
    .await;
    assert_eq!(status, 404, "{body}");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap_or("")
        .contains("cachedContents/nosuchcache"));
    let (status, body, _) = post_as(
        &proxy,
        TEST_TOKEN,
        "/v1/chat/completions",
        &cached_chat("files/abc"),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["param"], "google.cached_content");
    assert_eq!(fake.total_hits(), 0, "nothing reached Google");
}

#[tokio::test]
async fn a_cache_on_a_resting_key_is_a_429_naming_it_and_a_403_disables_nothing() {
    let (fake, proxy, _) = setup(2).await;
    let cache = create_cache(&proxy, TEST_TOKEN, MODEL).await;
    let creator = fake.owner_of(&cache).expect("creator");
    // A 403 on the pinned call is the client's: the key stays in service.
    fake.on(&creator, MODEL)
        .then(Reply::cached_content_denied());
    let (status, _, _) = post_as(
        &proxy,
        TEST_TOKEN,
        "/v1/chat/completions",
        &cached_chat(&cache),
    )
    .await;
    assert_eq!(status, 403);
    let (status, body, _) = post_as(
        &proxy,
        TEST_TOKEN,
        "/v1/chat/completions",
        &cached_chat(&cache),
    )
    .await;
    assert_eq!(status, 200, "the key was not disabled: {body}");
    fake.on(&creator, MODEL)
        .always(Reply::quota_per_minute(MODEL, Some("40s")));
    fake.reset_counters();
    for _ in 0..2 {
        let (status, body, retry_after) = post_as(
            &proxy,
            TEST_TOKEN,
            "/v1/chat/completions",
            &cached_chat(&cache),
        )
        .await;
        assert_eq!(status, 429, "{body}");
        let message = body["error"]["message"].as_str().unwrap_or("");
        assert!(
            message.contains(&cache) && message.contains("resting"),
            "{message}"
        );
        let wait: u64 = retry_after.and_then(|v| v.parse().ok()).unwrap_or(0);
        assert!((30..=60).contains(&wait), "Retry-After {wait}");
    }
    assert!(fake
        .requests()
        .iter()
        .all(|r| r.key.as_deref() == Some(creator.as_str())));
    assert_eq!(fake.total_hits(), 1, "the second call never reached Google");
}

fn image_url(model: &str, prompt: &str) -> String {
    format!("data:image/png;base64,{}", fake_image_b64(model, prompt, 0))
}

#[tokio::test]
async fn a_chat_with_an_image_model_returns_message_images() {
    let (fake, proxy, _) = setup(1).await;
    // The model alone asks for images.
    let (status, body) = post_json(
        &proxy,
        "/v1/chat/completions",
        &json!({"model": IMAGE_MODEL, "messages": [{"role": "user", "content": "a red square"}]}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let message = &body["choices"][0]["message"];
    assert_eq!(message["content"], "Here is a red square.");
    assert_eq!(message["images"][0]["type"], "image_url");
    assert_eq!(
        message["images"][0]["image_url"]["url"],
        image_url(IMAGE_MODEL, "a red square")
    );
    let sent = fake
        .last_request()
        .and_then(|r| r.body)
        .unwrap_or(Value::Null);
    assert_eq!(
        sent["generationConfig"]["responseModalities"],
        json!(["TEXT", "IMAGE"])
    );
    // `modalities` as OpenRouter sends it, on the other image model.
    let (status, body) = post_json(
        &proxy,
        "/v1/chat/completions",
        &json!({"model": PRO_IMAGE_MODEL, "modalities": ["image", "text"],
                "messages": [{"role": "user", "content": "a blue circle"}]}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["choices"][0]["message"]["images"][0]["image_url"]["url"],
        image_url(PRO_IMAGE_MODEL, "a blue circle")
    );
    // A text model gets no modalities unless asked; a bad modality is a 400 before Google.
    let (status, body) = post_json(
        &proxy,
        "/v1/chat/completions",
        &json!({"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(body["choices"][0]["message"].get("images").is_none());
    let sent = fake
        .last_request()
        .and_then(|r| r.body)
        .unwrap_or(Value::Null);
    assert!(sent["generationConfig"].get("responseModalities").is_none());
    fake.reset_counters();
    let (status, body) = post_json(
        &proxy,
        "/v1/chat/completions",
        &json!({"model": IMAGE_MODEL, "modalities": ["audio"],
                "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["param"], "modalities");
    assert_eq!(fake.total_hits(), 0);
}

#[tokio::test]
async fn a_streamed_chat_with_an_image_model_streams_delta_images() {
    let (_fake, proxy, _) = setup(1).await;
    let response = proxy
        .post("/v1/chat/completions")
        .json(&json!({"model": IMAGE_MODEL, "stream": true,
                      "messages": [{"role": "user", "content": "a green star"}]}))
        .send()
        .await
        .expect("stream");
    assert_eq!(response.status().as_u16(), 200);
    let text = response.text().await.unwrap_or_default();
    let events = sse_data(&text);
    assert_eq!(
        events.last().map(String::as_str),
        Some("[DONE]"),
        "{text:.300}"
    );
    let chunks: Vec<Value> = events
        .iter()
        .filter(|e| *e != "[DONE]")
        .map(|e| serde_json::from_str(e).unwrap_or(Value::Null))
        .collect();
    let images: Vec<&Value> = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["images"].as_array())
        .flatten()
        .collect();
    assert_eq!(images.len(), 1, "{text:.300}");
    assert_eq!(
        images[0]["image_url"]["url"],
        image_url(IMAGE_MODEL, "a green star")
    );
    let content: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(content, "Here is a green star.");
    assert!(chunks
        .iter()
        .any(|c| c["choices"][0]["finish_reason"] == "stop"));
}

#[tokio::test]
async fn imagen_makes_n_images_in_one_predict_call() {
    let (fake, proxy, _) = setup(1).await;
    let (status, body) = post_json(
        &proxy,
        "/v1/images/generations",
        &json!({"model": IMAGEN, "prompt": "a lighthouse", "n": 2, "size": "1792x1024"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(body["created"].as_u64().unwrap_or(0) > 1_700_000_000);
    let data = body["data"].as_array().cloned().unwrap_or_default();
    assert_eq!(data.len(), 2, "{body}");
    for (i, d) in data.iter().enumerate() {
        assert_eq!(d["b64_json"], fake_image_b64(IMAGEN, "a lighthouse", i));
    }
    let requests = fake.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].path, format!("/v1beta/models/{IMAGEN}:predict"));
    assert_eq!(
        requests[0].body,
        Some(json!({"instances": [{"prompt": "a lighthouse"}],
                    "parameters": {"sampleCount": 2, "aspectRatio": "16:9"}}))
    );
    // Imagen has no 3:2: the nearest it has; `url` is a data URL.
    let (status, body) = post_json(
        &proxy,
        "/v1/images/generations",
        &json!({"model": IMAGEN, "prompt": "a lighthouse", "size": "1536x1024",
                "response_format": "url"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["data"][0]["url"],
        format!(
            "data:image/png;base64,{}",
            fake_image_b64(IMAGEN, "a lighthouse", 0)
        )
    );
    let sent = fake
        .last_request()
        .and_then(|r| r.body)
        .unwrap_or(Value::Null);
    assert_eq!(sent["parameters"]["aspectRatio"], "4:3");
}

#[tokio::test]
async fn a_gemini_image_model_makes_n_images_in_n_calls() {
    let (fake, proxy, _) = setup(1).await;
    for (size, ratio) in [
        ("1536x1024", "3:2"),
        ("1024x1536", "2:3"),
        ("1024x1024", "1:1"),
    ] {
        fake.reset_counters();
        let (status, body) = post_json(
            &proxy,
            "/v1/images/generations",
            &json!({"model": IMAGE_MODEL, "prompt": "a fox", "n": 2, "size": size,
                    "quality": "hd", "user": "u-1"}),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        let data = body["data"].as_array().cloned().unwrap_or_default();
        assert_eq!(data.len(), 2);
        for d in &data {
            assert_eq!(d["b64_json"], fake_image_b64(IMAGE_MODEL, "a fox", 0));
        }
        assert!(
            body["usage"]["input_tokens"].as_u64().unwrap_or(0) > 0,
            "{body}"
        );
        let requests = fake.requests();
        assert_eq!(requests.len(), 2, "one call per image");
        for r in &requests {
            assert_eq!(
                r.path,
                format!("/v1beta/models/{IMAGE_MODEL}:generateContent")
            );
            let sent = r.body.clone().unwrap_or(Value::Null);
            assert_eq!(
                sent["generationConfig"],
                json!({"responseModalities": ["IMAGE"], "imageConfig": {"aspectRatio": ratio}})
            );
            assert_eq!(sent["contents"][0]["parts"][0]["text"], "a fox");
        }
    }
}

#[tokio::test]
async fn bad_image_requests_are_refused_before_any_upstream_call() {
    let (fake, proxy, _) = setup(1).await;
    let cases = [
        (
            json!({"model": IMAGEN, "prompt": "p", "size": "1000x1000"}),
            "size",
        ),
        (json!({"model": IMAGEN, "prompt": ""}), "prompt"),
        (json!({"model": IMAGEN}), "prompt"),
        (json!({"prompt": "p"}), "model"),
        (json!({"model": IMAGEN, "prompt": "p", "n": 9}), "n"),
        (
            json!({"model": IMAGEN, "prompt": "p", "response_format": "png"}),
            "response_format",
        ),
        (json!({"model": "../etc", "prompt": "p"}), "model"),
    ];
    for (body, param) in cases {
        let (status, answer) = post_json(&proxy, "/v1/images/generations", &body).await;
        assert_eq!(status, 400, "{body} -> {answer}");
        assert_eq!(answer["error"]["param"], param, "{answer}");
        assert_eq!(answer["error"]["type"], "invalid_request_error", "{answer}");
    }
    let response = proxy
        .post("/v1/images/generations")
        .body("{not json")
        .send()
        .await
        .expect("request");
    assert_eq!(response.status().as_u16(), 400);
    assert_eq!(fake.total_hits(), 0, "nothing reached Google");
}

#[tokio::test]
async fn image_generation_fails_over_off_a_rate_limited_key() {
    let (fake, proxy, keys) = setup(2).await;
    for model in [IMAGEN, IMAGE_MODEL] {
        fake.on(&keys[0], model)
            .always(Reply::quota_per_minute(model, Some("30s")));
    }
    for model in [IMAGEN, IMAGE_MODEL, IMAGEN] {
        let (status, body) = post_json(
            &proxy,
            "/v1/images/generations",
            &json!({"model": model, "prompt": "a bridge"}),
        )
        .await;
        assert_eq!(status, 200, "{model}: {body}");
        assert_eq!(
            body["data"][0]["b64_json"],
            fake_image_b64(model, "a bridge", 0)
        );
    }
    assert_eq!(
        fake.hits_for_key(&keys[1]),
        3,
        "every image came from the second key"
    );
    assert!(
        fake.hits_for_key(&keys[0]) <= 2,
        "the resting key was tried at most once per model"
    );
}

#[tokio::test]
async fn a_cache_whose_key_was_disabled_is_a_clear_error_naming_it() {
    let (fake, proxy, keys) = setup(2).await;
    let cache = create_cache(&proxy, TEST_TOKEN, MODEL).await;
    let creator = fake.owner_of(&cache).expect("creator");
    // Google rejects the creating key: the pinned call fails on it (no other key is tried),
    // and the pool disables it.
    fake.revoke_key(&creator);
    for key in keys.iter().filter(|k| **k != creator) {
        fake.allow_key(key);
    }
    fake.reset_counters();
    let (status, body, _) = post_as(
        &proxy,
        TEST_TOKEN,
        "/v1/chat/completions",
        &cached_chat(&cache),
    )
    .await;
    assert!(status >= 400, "{body}");
    assert!(fake
        .requests()
        .iter()
        .all(|r| r.key.as_deref() == Some(creator.as_str())));
    fake.reset_counters();
    let (status, body, _) = post_as(
        &proxy,
        TEST_TOKEN,
        "/v1/chat/completions",
        &cached_chat(&cache),
    )
    .await;
    assert_eq!(status, 409, "{body}");
    let message = body["error"]["message"].as_str().unwrap_or("");
    assert!(
        message.contains(&cache) && message.contains("disabled"),
        "{message}"
    );
    assert_eq!(fake.total_hits(), 0, "refused without a call");
    // The other key still serves plain chats.
    let other = keys.iter().find(|k| **k != creator).expect("another key");
    let (status, body) = post_json(
        &proxy,
        "/v1/chat/completions",
        &json!({"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["choices"][0]["message"]["content"],
        default_text(MODEL, other)
    );
}
