//! API fidelity against the fake upstream: Gemini 3 tool loops with thought signatures (the
//! fake validates them as Google does), images (data URLs and fetched URLs), JSON schema,
//! thinking, honest endings, logprobs, every native method with failover, and `/run-gemini`.

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const G3: &str = "gemini-3-pro-preview";
const FLASH: &str = "gemini-2.5-flash";

async fn chat(proxy: &Proxy, body: &Value) -> (u16, Value) {
    post_json(proxy, "/v1/chat/completions", body).await
}

/// The body of the last generate call the fake saw.
fn last_generate(fake: &FakeGemini) -> Value {
    fake.requests()
        .into_iter()
        .rev()
        .find(|r| r.path.contains("enerateContent"))
        .and_then(|r| r.body)
        .expect("a generate request reached the fake")
}

fn weather_tool() -> Value {
    json!([{"type": "function", "function": {
        "name": "get_weather", "description": "Current weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                       "required": ["city"], "additionalProperties": false},
        "strict": true}}])
}

fn signed_call(signature: &str) -> Value {
    json!({"functionCall": {"name": "get_weather", "args": {"city": "Paris"}},
           "thoughtSignature": signature})
}

/// The first `functionCall` part of the last model turn the fake received.
fn replayed_call(body: &Value) -> Value {
    body["contents"]
        .as_array()
        .and_then(|contents| {
            contents
                .iter()
                .rev()
                .find(|c| c["role"] == "model")
                .and_then(|c| c["parts"].as_array())
                .and_then(|parts| parts.iter().find(|p| p.get("functionCall").is_some()))
                .cloned()
        })
        .unwrap_or(Value::Null)
}

/// Step two of a tool loop: the history with the assistant's call (as `call`) and its result.
fn second_step(call: Value) -> Value {
    json!({"model": G3, "tools": weather_tool(), "messages": [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": null, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": call["id"], "content": "{\"temp_c\": 21}"},
    ]})
}

async fn gemini3_setup() -> (FakeGemini, Proxy) {
    let fake = FakeGemini::start().await;
    fake.require_signatures(true);
    let proxy = start(&fake, &[fake_key(1)], |c| c).await;
    (fake, proxy)
}

#[tokio::test]
async fn fake_rejects_a_missing_signature_like_google() {
    // The control for the loop tests below: the fake's check is real, and native requests pass
    // through untouched (the proxy adds no signature to /v1beta bodies).
    let (_fake, proxy) = gemini3_setup().await;
    let body = json!({"contents": [
        {"role": "user", "parts": [{"text": "Weather in Paris?"}]},
        {"role": "model", "parts": [{"functionCall": {"name": "get_weather", "args": {}}}]},
        {"role": "user", "parts": [{"functionResponse": {"name": "get_weather", "response": {"t": 1}}}]},
    ]});
    let response = proxy
        .post(&format!("/v1beta/models/{G3}:generateContent"))
        .json(&body)
        .send()
        .await
        .expect("request");
    assert_eq!(response.status().as_u16(), 400);
    let error: Value = response.json().await.unwrap_or(Value::Null);
    assert_eq!(error["error"]["status"], "INVALID_ARGUMENT", "{error}");
    let message = error["error"]["message"].as_str().unwrap_or("");
    assert!(
        message.starts_with("Function call is missing a thought_signature in functionCall parts."),
        "{message}"
    );
    // A forged signature is refused too; older models are not checked.
    let mut forged = body.clone();
    forged["contents"][1]["parts"][0]["thoughtSignature"] = json!("forged");
    let status = proxy
        .post(&format!("/v1beta/models/{G3}:generateContent"))
        .json(&forged)
        .send()
        .await
        .expect("request")
        .status();
    assert_eq!(status.as_u16(), 400);
    let status = proxy
        .post(&format!("/v1beta/models/{FLASH}:generateContent"))
        .json(&body)
        .send()
        .await
        .expect("request")
        .status();
    assert_eq!(status.as_u16(), 200);
}

#[tokio::test]
async fn tool_loop_on_gemini3_with_a_client_that_echoes_extra_content() {
    let (fake, proxy) = gemini3_setup().await;
    fake.on_model(G3)
        .then(Reply::parts(vec![signed_call("sig-echo-1")]))
        .then(Reply::text("It is 21 °C in Paris."));
    let (status, first) = chat(
        &proxy,
        &json!({"model": G3, "tools": weather_tool(), "tool_choice": "auto",
                "parallel_tool_calls": false,
                "messages": [{"role": "user", "content": "Weather in Paris?"}]}),
    )
    .await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["choices"][0]["finish_reason"], "tool_calls");
    let call = first["choices"][0]["message"]["tool_calls"][0].clone();
    assert_eq!(call["function"]["name"], "get_weather");
    assert_eq!(call["function"]["arguments"], "{\"city\":\"Paris\"}");
    assert_eq!(
        call["extra_content"]["google"]["thought_signature"],
        "sig-echo-1"
    );
    // The tool went out as raw JSON Schema, minus `strict`.
    let decl = &last_generate(&fake)["tools"][0]["functionDeclarations"][0];
    assert_eq!(decl["parametersJsonSchema"]["additionalProperties"], false);
    assert!(decl["parametersJsonSchema"].get("strict").is_none());
    assert!(decl.get("strict").is_none());

    let (status, second) = chat(&proxy, &second_step(call)).await;
    assert_eq!(status, 200, "{second}");
    assert_eq!(
        second["choices"][0]["message"]["content"],
        "It is 21 °C in Paris."
    );
    let sent = last_generate(&fake);
    assert_eq!(replayed_call(&sent)["thoughtSignature"], "sig-echo-1");
    let result = &sent["contents"][2]["parts"][0]["functionResponse"];
    assert_eq!(result["name"], "get_weather", "{sent}");
    assert_eq!(result["response"], json!({"temp_c": 21}));
}

#[tokio::test]
async fn tool_loop_on_gemini3_with_a_client_that_drops_extra_content() {
    let (fake, proxy) = gemini3_setup().await;
    fake.on_model(G3)
        .then(Reply::parts(vec![signed_call("sig-stream-1")]))
        .then(Reply::text("Sunny."));
    // Step one streams, as Cline does.
    let raw = proxy
        .post("/v1/chat/completions")
        .json(
            &json!({"model": G3, "tools": weather_tool(), "stream": true,
                      "messages": [{"role": "user", "content": "Weather in Paris?"}]}),
        )
        .send()
        .await
        .expect("stream")
        .text()
        .await
        .unwrap_or_default();
    let chunks: Vec<Value> = sse_data(&raw)
        .iter()
        .filter(|d| *d != "[DONE]")
        .filter_map(|d| serde_json::from_str(d).ok())
        .collect();
    let delta = chunks
        .iter()
        .find_map(|c| {
            c["choices"][0]["delta"]["tool_calls"][0]
                .as_object()
                .cloned()
        })
        .unwrap_or_else(|| panic!("no tool call delta in {raw}"));
    assert_eq!(delta["index"], 0);
    assert_eq!(delta["type"], "function");
    assert_eq!(delta["function"]["name"], "get_weather");
    assert!(delta["id"].as_str().is_some_and(|id| !id.is_empty()));
    let finish = chunks
        .iter()
        .find_map(|c| c["choices"][0]["finish_reason"].as_str())
        .unwrap_or("");
    assert_eq!(finish, "tool_calls");

    // The client keeps only id, type and function: extra_content is gone.
    let call = json!({"id": delta["id"], "type": "function", "function": delta["function"]});
    let (status, second) = chat(&proxy, &second_step(call)).await;
    assert_eq!(status, 200, "{second}");
    assert_eq!(second["choices"][0]["message"]["content"], "Sunny.");
    assert_eq!(
        replayed_call(&last_generate(&fake))["thoughtSignature"],
        "sig-stream-1",
        "restored from the proxy's memory"
    );
}

#[tokio::test]
async fn unknown_signature_gets_googles_stand_in() {
    let (fake, proxy) = gemini3_setup().await;
    fake.on_model(G3).then(Reply::text("Done."));
    // A history from elsewhere (another proxy, a restart): the id was never seen here.
    let call = json!({"id": "call_from_elsewhere", "type": "function",
                      "function": {"name": "get_weather", "arguments": "{\"city\":\"Oslo\"}"}});
    let (status, body) = chat(&proxy, &second_step(call)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        replayed_call(&last_generate(&fake))["thoughtSignature"],
        "skip_thought_signature_validator"
    );
}

#[tokio::test]
async fn image_data_url_becomes_inline_data() {
    let fake = FakeGemini::start().await;
    let proxy = start(&fake, &[fake_key(1)], |c| c).await;
    let (status, body) = chat(
        &proxy,
        &json!({"model": FLASH, "messages": [{"role": "user", "content": [
            {"type": "text", "text": "What is this?"},
            {"type": "image_url", "image_url": {"url": "data:image/jpg;base64,/9j/4AAQ", "detail": "high"}},
        ]}]}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let parts = &last_generate(&fake)["contents"][0]["parts"];
    assert_eq!(parts[0], json!({"text": "What is this?"}));
    assert_eq!(
        parts[1],
        json!({"inlineData": {"mimeType": "image/jpeg", "data": "/9j/4AAQ"}})
    );
}

/// A one-route HTTP server on 127.0.0.1 that answers every request with `status`,
/// `content_type` and `body`, and counts requests.
struct ImageServer {
    url: String,
    hits: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ImageServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn image_server(status: u16, content_type: &'static str, body: Vec<u8>) -> ImageServer {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/cat.png", listener.local_addr().expect("addr"));
    let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = hits.clone();
    let task = tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let body = body.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                // Read the request head (small GETs arrive in one read).
                let _ = tokio::time::timeout(Duration::from_secs(5), socket.read(&mut buf)).await;
                let head = format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                let _ = socket.write_all(head.as_bytes()).await;
                let _ = socket.write_all(&body).await;
                let _ = socket.shutdown().await;
            });
        }
    });
    ImageServer { url, hits, task }
}

fn image_request(url: &str) -> Value {
    json!({"model": FLASH, "messages": [{"role": "user", "content": [
        {"type": "text", "text": "Describe"},
        {"type": "image_url", "image_url": {"url": url}},
    ]}]})
}

#[tokio::test]
async fn http_image_url_is_fetched_and_inlined() {
    let png = b"\x89PNG\r\n\x1a\nfake image bytes".to_vec();
    let server = image_server(200, "image/png", png).await;
    let fake = FakeGemini::start().await;
    let proxy = start(&fake, &[fake_key(1)], |c| {
        c.set("upstream", "fetch_private_urls = true")
    })
    .await;
    let (status, body) = chat(&proxy, &image_request(&server.url)).await;
    assert_eq!(status, 200, "{body}");
    let parts = &last_generate(&fake)["contents"][0]["parts"];
    assert_eq!(
        parts[1],
        // base64 of the bytes above
        json!({"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgpmYWtlIGltYWdlIGJ5dGVz"}})
    );

    // The server says octet-stream: the bytes decide.
    let server = image_server(
        200,
        "application/octet-stream",
        b"\x89PNG\r\n\x1a\nx".to_vec(),
    )
    .await;
    let (status, body) = chat(&proxy, &image_request(&server.url)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        last_generate(&fake)["contents"][0]["parts"][1]["inlineData"]["mimeType"],
        "image/png"
    );
}

#[tokio::test]
async fn failed_image_fetches_are_the_clients_400() {
    let fake = FakeGemini::start().await;
    let proxy = start(&fake, &[fake_key(1)], |c| {
        c.set("upstream", "fetch_private_urls = true")
    })
    .await;
    let missing = image_server(404, "text/html", b"<h1>gone</h1>".to_vec()).await;
    let (status, body) = chat(&proxy, &image_request(&missing.url)).await;
    assert_eq!(status, 400, "{body}");
    let message = body["error"]["message"].as_str().unwrap_or("");
    assert!(
        message.contains("HTTP 404") && message.contains(&missing.url),
        "{message}"
    );

    let html = image_server(200, "text/html", b"<html></html>".to_vec()).await;
    let (status, body) = chat(&proxy, &image_request(&html.url)).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("not an image"),
        "{body}"
    );

    let huge = image_server(200, "image/png", vec![0u8; 21 * 1024 * 1024]).await;
    let (status, body) = chat(&proxy, &image_request(&huge.url)).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("larger than 20 MiB"),
        "{body}"
    );
    assert_eq!(fake.total_hits(), 0, "nothing reached Gemini");
}

#[tokio::test]
async fn private_image_urls_are_refused_by_default() {
    let server = image_server(200, "image/png", b"\x89PNG\r\n\x1a\n".to_vec()).await;
    let fake = FakeGemini::start().await;
    let proxy = start(&fake, &[fake_key(1)], |c| c).await;
    let (status, body) = chat(&proxy, &image_request(&server.url)).await;
    assert_eq!(status, 400, "{body}");
    let message = body["error"]["message"].as_str().unwrap_or("");
    assert!(message.contains("fetch_private_urls"), "{message}");
    // A name that resolves to loopback is caught after resolution, not by its spelling.
    let by_name = server.url.replace("127.0.0.1", "localhost");
    let (status, body) = chat(&proxy, &image_request(&by_name)).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("public address"),
        "{body}"
    );
    assert_eq!(
        server.hits.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "the private server was never contacted"
    );
    assert_eq!(fake.total_hits(), 0);
}

#[tokio::test]
async fn json_schema_with_ref_reaches_gemini_as_json_schema() {
    let fake = FakeGemini::start().await;
    fake.on_any()
        .then(Reply::text(r#"{"city":{"name":"Paris"}}"#));
    let proxy = start(&fake, &[fake_key(1)], |c| c).await;
    let schema = json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "properties": {"city": {"$ref": "#/$defs/City"}},
        "required": ["city"],
        "additionalProperties": false,
        "$defs": {"City": {"type": "object", "properties": {"name": {"type": ["string", "null"]}},
                           "required": ["name"], "additionalProperties": false}},
    });
    let (status, body) = chat(
        &proxy,
        &json!({"model": FLASH, "messages": [{"role": "user", "content": "Where?"}],
                "response_format": {"type": "json_schema",
                    "json_schema": {"name": "answer", "strict": true, "schema": schema}}}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["choices"][0]["message"]["content"],
        r#"{"city":{"name":"Paris"}}"#
    );
    let config = &last_generate(&fake)["generationConfig"];
    assert_eq!(config["responseMimeType"], "application/json");
    let sent = &config["responseJsonSchema"];
    assert_eq!(sent["properties"]["city"]["$ref"], "#/$defs/City");
    assert_eq!(
        sent["$defs"]["City"]["properties"]["name"]["type"],
        json!(["string", "null"])
    );
    assert!(
        sent.get("$schema").is_none() && sent.get("strict").is_none(),
        "{sent}"
    );

    // json_object: JSON mode without a schema.
    let (status, _) = chat(
        &proxy,
        &json!({"model": FLASH, "messages": [{"role": "user", "content": "JSON please"}],
                "response_format": {"type": "json_object"}}),
    )
    .await;
    assert_eq!(status, 200);
    let config = &last_generate(&fake)["generationConfig"];
    assert_eq!(config["responseMimeType"], "application/json");
    assert!(config.get("responseJsonSchema").is_none());
}

#[tokio::test]
async fn reasoning_streams_as_reasoning_content() {
    let fake = FakeGemini::start().await;
    fake.on_any().then(
        Reply::parts(vec![
            json!({"text": "Weighing the options", "thought": true}),
            json!({"text": "; then deciding.", "thought": true}),
            json!({"text": "Take the train."}),
        ])
        .thoughts_tokens(42),
    );
    let proxy = start(&fake, &[fake_key(1)], |c| c).await;
    let raw = proxy
        .post("/v1/chat/completions")
        .json(&json!({"model": "gemini-3-flash-preview", "stream": true,
                      "stream_options": {"include_usage": true}, "reasoning_effort": "high",
                      "messages": [{"role": "user", "content": "Train or plane?"}]}))
        .send()
        .await
        .expect("stream")
        .text()
        .await
        .unwrap_or_default();
    let chunks: Vec<Value> = sse_data(&raw)
        .iter()
        .filter(|d| *d != "[DONE]")
        .filter_map(|d| serde_json::from_str(d).ok())
        .collect();
    let reasoning: Vec<&str> = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["reasoning_content"].as_str())
        .collect();
    assert_eq!(
        reasoning,
        ["Weighing the options", "; then deciding."],
        "thoughts arrive as separate deltas: {raw}"
    );
    let content: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(content, "Take the train.");
    let usage = chunks
        .iter()
        .find(|c| c["usage"].is_object())
        .map(|c| c["usage"].clone())
        .unwrap_or(Value::Null);
    assert_eq!(usage["completion_tokens_details"]["reasoning_tokens"], 42);
    let thinking = &last_generate(&fake)["generationConfig"]["thinkingConfig"];
    assert_eq!(
        *thinking,
        json!({"thinkingLevel": "high", "includeThoughts": true})
    );
}

#[tokio::test]
async fn googles_compat_extras_set_thinking_and_refuse_a_cache() {
    let fake = FakeGemini::start().await;
    fake.on_any().then(Reply::parts(vec![
        json!({"text": "Counting first", "thought": true}),
        json!({"text": "Four."}),
    ]));
    let proxy = start(&fake, &[fake_key(1)], |c| c).await;
    // What Google's docs show for the openai SDK: extra_body={"extra_body": {"google": …}}.
    let (status, body) = chat(
        &proxy,
        &json!({"model": FLASH, "messages": [{"role": "user", "content": "2+2?"}],
                "extra_body": {"google": {"thinking_config": {
                    "thinking_budget": 800, "include_thoughts": true}}}}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        last_generate(&fake)["generationConfig"]["thinkingConfig"],
        json!({"thinkingBudget": 800, "includeThoughts": true})
    );
    let message = &body["choices"][0]["message"];
    assert_eq!(message["reasoning_content"], "Counting first", "{body}");
    assert_eq!(message["content"], "Four.");

    let before = fake.requests().len();
    let (status, body) = chat(
        &proxy,
        &json!({"model": FLASH, "messages": [{"role": "user", "content": "hi"}],
                "google": {"cached_content": "cachedContents/abc123"}}),
    )
    .await;
    // A cache this proxy never saw made (tests/images.rs has the ones it did).
    assert_eq!(status, 404, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("cachedContents/abc123"),
        "{body}"
    );
    assert_eq!(
        fake.requests().len(),
        before,
        "refused before any key was used"
    );
}

#[tokio::test]
async fn empty_and_blocked_answers_are_errors() {
    let fake = FakeGemini::start().await;
    let proxy = start(&fake, &[fake_key(1)], |c| c).await;
    let ask = |stream: bool| {
        json!({"model": FLASH, "stream": stream,
               "messages": [{"role": "user", "content": "Hi"}]})
    };
    let blocked = json!({"promptFeedback": {"blockReason": "PROHIBITED_CONTENT"},
                         "usageMetadata": {"promptTokenCount": 2, "totalTokenCount": 2}});

    fake.on_any().then(Reply::json(200, blocked.clone()));
    let (status, body) = chat(&proxy, &ask(false)).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("PROHIBITED_CONTENT"),
        "{body}"
    );

    fake.on_any().then(
        Reply::parts(vec![json!({"text": "hmm", "thought": true})]).finish_reason("MAX_TOKENS"),
    );
    let (status, retry, body) = chat_with_retry_header(&proxy, &ask(false)).await;
    assert_eq!(status, 502, "{body}");
    let message = body["error"]["message"].as_str().unwrap_or("");
    assert!(
        message.contains("empty answer") && message.contains("MAX_TOKENS"),
        "{message}"
    );
    // The same request would stop at the same limit: the SDKs are told not to retry it.
    assert_eq!(retry.as_deref(), Some("false"), "{body}");
    assert_eq!(fake.requests().len(), 2, "no retry by the proxy");

    // A malformed call may come out right on a second try: a retryable 502.
    fake.on_any().then(Reply::json(
        200,
        json!({"candidates": [{"finishReason": "MALFORMED_FUNCTION_CALL", "index": 0}]}),
    ));
    let (status, retry, body) = chat_with_retry_header(&proxy, &ask(false)).await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["error"]["type"], "server_error", "{body}");
    assert_eq!(retry.as_deref(), Some("true"), "{body}");

    // Streams: an error event, never a silent `stop`.
    for reply in [
        Reply::stream(vec![blocked]),
        Reply::parts(vec![json!({"text": "only thinking", "thought": true})]),
    ] {
        fake.on_any().then(reply);
        let raw = proxy
            .post("/v1/chat/completions")
            .json(&ask(true))
            .send()
            .await
            .expect("stream")
            .text()
            .await
            .unwrap_or_default();
        let events = sse_data(&raw);
        let errors: Vec<Value> = events
            .iter()
            .filter_map(|d| serde_json::from_str::<Value>(d).ok())
            .filter(|v| v.get("error").is_some())
            .collect();
        assert_eq!(errors.len(), 1, "one error event: {raw}");
        let stops = events
            .iter()
            .filter_map(|d| serde_json::from_str::<Value>(d).ok())
            .filter(|v| v["choices"][0]["finish_reason"] == "stop")
            .count();
        assert_eq!(stops, 0, "no silent stop: {raw}");
    }
}

/// A chat completion's status, `x-should-retry` header and JSON body.
async fn chat_with_retry_header(proxy: &Proxy, body: &Value) -> (u16, Option<String>, Value) {
    let response = proxy
        .post("/v1/chat/completions")
        .json(body)
        .send()
        .await
        .expect("request");
    let retry = response
        .headers()
        .get("x-should-retry")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let status = response.status().as_u16();
    (status, retry, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn logprobs_are_mapped_both_ways() {
    let fake = FakeGemini::start().await;
    fake.on_any().then(Reply::json(
        200,
        json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "Yes"}]},
            "finishReason": "STOP", "index": 0,
            "logprobsResult": {
                "topCandidates": [{"candidates": [{"token": "Yes", "logProbability": -0.2},
                                                  {"token": "No", "logProbability": -1.8}]}],
                "chosenCandidates": [{"token": "Yes", "logProbability": -0.2}]}}],
            "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 1, "totalTokenCount": 4}}),
    ));
    let proxy = start(&fake, &[fake_key(1)], |c| c).await;
    let (status, body) = chat(
        &proxy,
        &json!({"model": FLASH, "logprobs": true, "top_logprobs": 2,
                "messages": [{"role": "user", "content": "Yes or no?"}]}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let config = &last_generate(&fake)["generationConfig"];
    assert_eq!(config["responseLogprobs"], true);
    assert_eq!(config["logprobs"], 2);
    let token = &body["choices"][0]["logprobs"]["content"][0];
    assert_eq!(token["token"], "Yes");
    assert_eq!(token["logprob"], -0.2);
    assert_eq!(token["top_logprobs"][1]["token"], "No");
}

/// Every native method, each on its own model so that each first attempt meets a scripted
/// failure and must move to the other key.
#[tokio::test]
async fn every_native_method_passes_through_with_failover() {
    let (k1, k2) = (fake_key(1), fake_key(2));
    let fake = FakeGemini::start().await;
    let proxy = Proxy::builder()
        .config(config_for(&fake.url(), &[&k1, &k2]).set("models", r#"list = "static""#))
        .start()
        .await;
    let contents = json!({"contents": [{"role": "user", "parts": [{"text": "hi"}]}]});
    let cases: Vec<(&str, reqwest::Method, String, Option<Value>)> = vec![
        (
            "gemini-2.5-pro",
            reqwest::Method::GET,
            "/v1beta/models/gemini-2.5-pro".into(),
            None,
        ),
        (
            "gemini-2.5-flash",
            reqwest::Method::POST,
            "/v1beta/models/gemini-2.5-flash:generateContent".into(),
            Some(contents.clone()),
        ),
        (
            "gemini-2.0-flash",
            reqwest::Method::POST,
            "/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse".into(),
            Some(contents.clone()),
        ),
        (
            "gemini-2.0-flash-lite",
            reqwest::Method::POST,
            "/v1beta/models/gemini-2.0-flash-lite:streamGenerateContent".into(),
            Some(contents.clone()),
        ),
        (
            "gemini-2.5-flash-lite",
            reqwest::Method::POST,
            "/v1beta/models/gemini-2.5-flash-lite:countTokens".into(),
            Some(contents.clone()),
        ),
        (
            "gemini-embedding-001",
            reqwest::Method::POST,
            "/v1beta/models/gemini-embedding-001:embedContent".into(),
            Some(json!({"content": {"parts": [{"text": "hi"}]}})),
        ),
        (
            "text-embedding-004",
            reqwest::Method::POST,
            "/v1beta/models/text-embedding-004:batchEmbedContents".into(),
            Some(json!({"requests": [
                {"model": "models/text-embedding-004", "content": {"parts": [{"text": "a"}]}},
                {"model": "models/text-embedding-004", "content": {"parts": [{"text": "b"}]}}]})),
        ),
    ];
    for (model, method, path, body) in cases {
        fake.on_model(model).then(Reply::internal());
        let mut request = proxy
            .request(method, &path)
            .header("x-goog-api-key", TEST_TOKEN);
        if let Some(body) = &body {
            request = request.json(body);
        }
        let response = request.send().await.expect("request");
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        assert_eq!(status, 200, "{path}: {text}");
        assert_eq!(
            (fake.hits(&k1, model), fake.hits(&k2, model)),
            (1, 1),
            "{path}: one attempt per key"
        );
        let served = fake
            .requests()
            .into_iter()
            .rev()
            .find(|r| r.model.as_deref() == Some(model))
            .expect("recorded");
        if let Some(body) = &body {
            let sent: Value = serde_json::from_slice(&served.raw_body).unwrap_or(Value::Null);
            assert_eq!(&sent, body, "{path}: body forwarded");
        }
        let check = match path.rsplit_once(':').map(|(_, a)| a) {
            Some("streamGenerateContent?alt=sse") => text.starts_with("data: "),
            Some("streamGenerateContent") => text.trim_start().starts_with('['),
            Some("countTokens") => text.contains("totalTokens"),
            Some("embedContent") => text.contains("\"embedding\""),
            Some("batchEmbedContents") => text.contains("\"embeddings\""),
            Some("generateContent") => text.contains("candidates"),
            _ => text.contains("models/gemini-2.5-pro"),
        };
        assert!(check, "{path}: {text}");
    }

    // The list: a failure on the first key, then the catalog from the second.
    fake.on_models_list().then(Reply::internal());
    let response = proxy
        .get("/v1beta/models?pageSize=5")
        .header("x-goog-api-key", TEST_TOKEN)
        .send()
        .await
        .expect("list");
    assert_eq!(response.status().as_u16(), 200);
    let list: Value = response.json().await.unwrap_or(Value::Null);
    assert_eq!(list["models"].as_array().map(Vec::len), Some(5), "{list}");
    assert_eq!(fake.keys_in_url(), 0);
}

async fn run_gemini(proxy: &Proxy, body: &Value) -> (u16, Value) {
    let response = proxy
        .post("/run-gemini")
        .json(body)
        .send()
        .await
        .expect("request");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn run_gemini_success_and_failure() {
    let key = fake_key(1);
    let fake = FakeGemini::start().await;
    fake.on_model(FLASH).then(Reply::text("4"));
    let proxy = start(&fake, std::slice::from_ref(&key), |c| c).await;
    let (status, body) = run_gemini(&proxy, &json!({"command": "2+2?", "model": FLASH})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["success"], true);
    assert_eq!(body["stdout"], "4");
    assert_eq!(body["stderr"], "");
    assert_eq!(body["exit_code"], 0);
    assert_eq!(body["command_executed"], "2+2?");
    assert!(body["execution_time"].is_number(), "{body}");
    assert_eq!(body["api_key_used"], mask(&key));
    let sent = last_generate(&fake);
    assert_eq!(sent["contents"][0]["parts"][0]["text"], "2+2?");

    fake.on_model(FLASH).then(Reply::model_not_found(FLASH));
    let (status, body) = run_gemini(&proxy, &json!({"command": "again", "model": FLASH})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["success"], false);
    assert_eq!(body["stdout"], "");
    assert_ne!(body["exit_code"], 0);
    assert!(
        body["stderr"].as_str().unwrap_or("").contains("not found"),
        "{body}"
    );

    // Bad requests are refused as such, before any upstream call.
    let hits = fake.total_hits();
    let (status, body) = run_gemini(&proxy, &json!({"model": FLASH})).await;
    assert_eq!(status, 400, "{body}");
    let (status, _) = run_gemini(&proxy, &json!({"command": "x", "model": "../etc"})).await;
    assert_eq!(status, 400);
    assert_eq!(fake.total_hits(), hits);
}

#[tokio::test]
async fn native_methods_on_v1_are_served_like_v1beta() {
    // google-genai 3.x calls `/v1/models/{m}:{action}` unless told otherwise.
    let fake = FakeGemini::start().await;
    let proxy = start(&fake, &[fake_key(1)], |c| c).await;
    let body = r#"{"contents":[{"role":"user","parts":[{"text":"hi"}]}]}"#;
    let response = proxy
        .request(
            reqwest::Method::POST,
            &format!("/v1/models/{FLASH}:generateContent"),
        )
        .header("x-goog-api-key", TEST_TOKEN)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("request");
    assert_eq!(response.status().as_u16(), 200);
    let answer: Value = response.json().await.unwrap_or(Value::Null);
    assert_eq!(
        answer["candidates"][0]["content"]["parts"][0]["text"],
        default_text(FLASH, &fake_key(1))
    );
    let seen = fake.last_request().expect("upstream request");
    assert_eq!(seen.path, format!("/v1beta/models/{FLASH}:generateContent"));
    assert_eq!(seen.raw_body.as_ref(), body.as_bytes());
    // Errors there are Google-shaped; GET /v1/models stays OpenAI's list.
    let response = client()
        .post(format!("{}/v1/models/{FLASH}:generateContent", proxy.url()))
        .header("x-goog-api-key", "not-a-token")
        .body(body)
        .send()
        .await
        .expect("request");
    assert_eq!(response.status().as_u16(), 401);
    let error: Value = response.json().await.unwrap_or(Value::Null);
    assert_eq!(error["error"]["status"], "UNAUTHENTICATED", "{error}");
    let list: Value = proxy
        .get("/v1/models")
        .send()
        .await
        .expect("list")
        .json()
        .await
        .unwrap_or(Value::Null);
    assert_eq!(list["object"], "list", "{list}");
}
