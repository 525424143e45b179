//! `/v1/messages` and `/v1/messages/count_tokens` (Anthropic's Messages API, issue #17) through
//! the real binary and the fake Gemini: whole and streamed answers, tools and thought
//! signatures, thinking, token counts, Anthropic's error shapes, failover, and a request shaped
//! like Claude Code's.

mod support;

use serde_json::{json, Value};
use support::*;

const MODEL: &str = "gemini-2.5-flash";
const GEMINI3: &str = "gemini-3-pro-preview";

async fn setup(keys: &[String]) -> (FakeGemini, Proxy) {
    let fake = FakeGemini::start().await;
    let proxy = start(&fake, keys, |c| {
        c.set("models.aliases", r#""claude-*" = "gemini-2.5-pro""#)
            .set("models.aliases", r#""claude-*haiku*" = "gemini-2.5-flash""#)
    })
    .await;
    (fake, proxy)
}

/// POSTs `body` with `x-api-key` (as the anthropic SDKs do): status, headers, JSON answer.
async fn post(proxy: &Proxy, path: &str, body: &Value) -> (u16, reqwest::header::HeaderMap, Value) {
    let response = client()
        .post(format!("{}{path}", proxy.url()))
        .header("x-api-key", TEST_TOKEN)
        .header("anthropic-version", "2023-06-01")
        .json(body)
        .send()
        .await
        .expect("request");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (
        status,
        headers,
        response.json().await.unwrap_or(Value::Null),
    )
}

async fn messages(proxy: &Proxy, body: Value) -> (u16, Value) {
    let (status, _, body) = post(proxy, "/v1/messages", &body).await;
    (status, body)
}

/// A streamed answer as `(event name, data)` pairs, checking each event's `type` matches its
/// name (the SDK dispatches on the name, and reads the type).
async fn stream(proxy: &Proxy, mut body: Value) -> (u16, Vec<(String, Value)>) {
    body["stream"] = json!(true);
    let response = client()
        .post(format!("{}/v1/messages?beta=true", proxy.url()))
        .header("x-api-key", TEST_TOKEN)
        .header("anthropic-version", "2023-06-01")
        .json(&body)
        .send()
        .await
        .expect("request");
    let status = response.status().as_u16();
    let text = response.text().await.unwrap_or_default();
    let mut events = Vec::new();
    for raw in text.split("\n\n").filter(|e| !e.trim().is_empty()) {
        let lines: Vec<&str> = raw.lines().filter(|l| !l.starts_with(':')).collect();
        if lines.is_empty() {
            continue; // a heartbeat comment
        }
        assert_eq!(lines.len(), 2, "one event line and one data line: {raw:?}");
        let name = lines[0].strip_prefix("event: ").expect("event line");
        let data: Value = serde_json::from_str(lines[1].strip_prefix("data: ").expect("data line"))
            .expect("JSON data");
        assert_eq!(data["type"], name, "{raw}");
        events.push((name.to_string(), data));
    }
    (status, events)
}

fn names(events: &[(String, Value)]) -> Vec<&str> {
    events.iter().map(|(n, _)| n.as_str()).collect()
}

fn upstream_body(fake: &FakeGemini) -> Value {
    fake.last_request()
        .and_then(|r| r.body)
        .expect("the upstream saw a JSON body")
}

fn hi(model: &str) -> Value {
    json!({"model": model, "max_tokens": 1024,
           "messages": [{"role": "user", "content": "Hello, Claude"}]})
}

#[tokio::test]
async fn a_whole_answer_in_anthropic_shape() {
    let (fake, proxy) = setup(&[fake_key(1)]).await;
    let (status, body) = messages(&proxy, hi(MODEL)).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body["id"].as_str().unwrap_or("").starts_with("msg_"),
        "{body}"
    );
    assert_eq!(body["type"], "message");
    assert_eq!(body["role"], "assistant");
    assert_eq!(body["model"], MODEL);
    assert_eq!(body["content"][0]["type"], "text");
    assert_eq!(
        body["content"][0]["text"],
        default_text(MODEL, &fake_key(1))
    );
    assert_eq!(body["stop_reason"], "end_turn");
    assert_eq!(body["stop_sequence"], Value::Null);
    assert!(
        body["usage"]["input_tokens"].as_u64().unwrap_or(0) > 0,
        "{body}"
    );
    assert!(
        body["usage"]["output_tokens"].as_u64().unwrap_or(0) > 0,
        "{body}"
    );
    let sent = upstream_body(&fake);
    assert_eq!(sent["contents"][0]["role"], "user");
    assert_eq!(sent["contents"][0]["parts"][0]["text"], "Hello, Claude");
    assert_eq!(sent["generationConfig"]["maxOutputTokens"], 1024);
    let request = fake.last_request().expect("a request");
    assert!(
        request.path.ends_with(":generateContent"),
        "{}",
        request.path
    );
}

#[tokio::test]
async fn claude_model_names_resolve_through_glob_aliases() {
    let (fake, proxy) = setup(&[fake_key(1)]).await;
    for (name, upstream) in [
        ("claude-sonnet-4-5-20250929", "gemini-2.5-pro"),
        ("claude-haiku-4-5", "gemini-2.5-flash"),
    ] {
        let (status, body) = messages(&proxy, hi(name)).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["model"], name, "the client's name comes back");
        let path = fake.last_request().expect("a request").path;
        assert!(
            path.contains(&format!("/models/{upstream}:")),
            "{name}: {path}"
        );
    }
}

#[tokio::test]
async fn bearer_and_x_api_key_both_authenticate() {
    let (_fake, proxy) = setup(&[fake_key(1)]).await;
    let response = proxy
        .post("/v1/messages")
        .json(&hi(MODEL))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 200, "Authorization: Bearer works too");
    let response = client()
        .post(format!("{}/v1/messages", proxy.url()))
        .header("x-api-key", "sk-wrong-token-000000000000")
        .json(&hi(MODEL))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 401);
    let body: Value = response.json().await.unwrap_or(Value::Null);
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "authentication_error", "{body}");
    // x-api-key is Anthropic's only: chat still wants a bearer token.
    let response = client()
        .post(format!("{}/v1/chat/completions", proxy.url()))
        .header("x-api-key", TEST_TOKEN)
        .json(&json!({"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 401);
}

#[tokio::test]
async fn a_stream_follows_anthropics_event_order() {
    let (fake, proxy) = setup(&[fake_key(1)]).await;
    fake.on_any().always(Reply::text("one two three").chunks(3));
    let (status, events) = stream(&proxy, hi(MODEL)).await;
    assert_eq!(status, 200);
    let names = names(&events);
    assert_eq!(
        names[..3],
        ["message_start", "ping", "content_block_start"],
        "{names:?}"
    );
    assert_eq!(
        names[names.len() - 3..],
        ["content_block_stop", "message_delta", "message_stop"],
        "{names:?}"
    );
    let start = &events[0].1["message"];
    assert!(start["id"].as_str().unwrap_or("").starts_with("msg_"));
    assert_eq!(start["content"], json!([]));
    assert_eq!(start["model"], MODEL);
    let text: String = events
        .iter()
        .filter(|(n, _)| n == "content_block_delta")
        .map(|(_, d)| {
            assert_eq!(d["delta"]["type"], "text_delta");
            assert_eq!(d["index"], 0);
            d["delta"]["text"].as_str().unwrap_or("").to_string()
        })
        .collect();
    assert_eq!(text, "one two three");
    let delta = &events[events.len() - 2].1;
    assert_eq!(delta["delta"]["stop_reason"], "end_turn");
    assert!(
        delta["usage"]["output_tokens"].as_u64().unwrap_or(0) > 0,
        "{delta}"
    );
    let path = fake.last_request().expect("a request").path;
    assert!(path.ends_with(":streamGenerateContent"), "{path}");
}

fn weather_tool() -> Value {
    json!({"name": "get_weather", "description": "Get the current weather in a given location",
           "input_schema": {"type": "object", "properties": {"location": {"type": "string"}},
                            "required": ["location"]}})
}

fn call(city: &str, signature: &str) -> Value {
    json!({"functionCall": {"name": "get_weather", "args": {"location": city}},
           "thoughtSignature": signature})
}

/// Anthropic's documented tool loop: the call comes back as `tool_use` (with the thought
/// signature in a `thinking` block before it), and the replayed history (thinking block,
/// tool_use, tool_result) reaches Gemini as a signed functionCall and its functionResponse.
#[tokio::test]
async fn a_tool_loop_keeps_gemini_3_signatures() {
    let (fake, proxy) = setup(&[fake_key(1)]).await;
    fake.require_signatures(true);
    fake.on_model(GEMINI3)
        .then(Reply::parts(vec![call("San Francisco, CA", "sig-whole-1")]))
        .then(Reply::text("It is 15 degrees and sunny."))
        .then(Reply::parts(vec![call("Oslo", "sig-stream-2")]))
        .then(Reply::text("Cold."));
    let question = json!({"role": "user", "content": "What is the weather like in San Francisco?"});
    let (status, first) = messages(
        &proxy,
        json!({"model": GEMINI3, "max_tokens": 1024, "tools": [weather_tool()],
               "tool_choice": {"type": "auto"}, "messages": [question]}),
    )
    .await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["stop_reason"], "tool_use");
    let content = first["content"].as_array().cloned().unwrap_or_default();
    assert_eq!(content.len(), 2, "{first}");
    assert_eq!(content[0]["type"], "thinking");
    assert_eq!(content[0]["signature"], "gr1.sig-whole-1");
    assert_eq!(content[1]["type"], "tool_use");
    assert_eq!(content[1]["name"], "get_weather");
    assert_eq!(
        content[1]["input"],
        json!({"location": "San Francisco, CA"})
    );
    let id = content[1]["id"].as_str().unwrap_or("").to_string();
    assert!(id.starts_with("toolu_"), "{id}");
    let sent = upstream_body(&fake);
    let decl = &sent["tools"][0]["functionDeclarations"][0];
    assert_eq!(decl["name"], "get_weather");
    assert_eq!(
        decl["parametersJsonSchema"]["required"],
        json!(["location"])
    );
    assert_eq!(sent["toolConfig"]["functionCallingConfig"]["mode"], "AUTO");

    // The client sends the whole history back, with the result.
    let result = json!({"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": id, "content": "15 degrees"}]});
    let (status, second) = messages(
        &proxy,
        json!({"model": GEMINI3, "max_tokens": 1024, "tools": [weather_tool()],
               "messages": [question, {"role": "assistant", "content": content}, result]}),
    )
    .await;
    assert_eq!(status, 200, "{second}");
    assert_eq!(second["content"][0]["text"], "It is 15 degrees and sunny.");
    let sent = upstream_body(&fake);
    let model_turn = &sent["contents"][1];
    assert_eq!(model_turn["role"], "model");
    assert_eq!(
        model_turn["parts"].as_array().map(Vec::len),
        Some(1),
        "{sent}"
    );
    assert_eq!(model_turn["parts"][0]["thoughtSignature"], "sig-whole-1");
    assert_eq!(
        model_turn["parts"][0]["functionCall"]["args"]["location"],
        "San Francisco, CA"
    );
    let response = &sent["contents"][2]["parts"][0]["functionResponse"];
    assert_eq!(response["name"], "get_weather", "{sent}");
    assert_eq!(response["response"]["output"], "15 degrees");

    // Streamed: the signature arrives as a signature_delta, the arguments as input_json_delta.
    let (status, events) = stream(
        &proxy,
        json!({"model": GEMINI3, "max_tokens": 1024, "tools": [weather_tool()],
               "messages": [{"role": "user", "content": "And in Oslo?"}]}),
    )
    .await;
    assert_eq!(status, 200);
    let names = names(&events);
    assert_eq!(
        names,
        [
            "message_start",
            "ping",
            "content_block_start",
            "content_block_delta",
            "content_block_stop",
            "content_block_start",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    assert_eq!(events[2].1["content_block"]["type"], "thinking");
    assert_eq!(
        events[3].1["delta"],
        json!({"type": "signature_delta", "signature": "gr1.sig-stream-2"})
    );
    let block = &events[5].1["content_block"];
    assert_eq!(block["type"], "tool_use");
    assert_eq!(block["name"], "get_weather");
    assert_eq!(block["input"], json!({}));
    assert_eq!(events[5].1["index"], 1);
    let delta = &events[6].1["delta"];
    assert_eq!(delta["type"], "input_json_delta");
    let args: Value =
        serde_json::from_str(delta["partial_json"].as_str().unwrap_or("")).unwrap_or_default();
    assert_eq!(args, json!({"location": "Oslo"}));
    assert_eq!(events[8].1["delta"]["stop_reason"], "tool_use");

    // A client that drops the thinking block: the proxy remembered the signature by id.
    let stream_id = block["id"].as_str().unwrap_or("").to_string();
    let (status, body) = messages(
        &proxy,
        json!({"model": GEMINI3, "max_tokens": 1024, "tools": [weather_tool()],
               "messages": [{"role": "user", "content": "And in Oslo?"},
                            {"role": "assistant", "content": [{"type": "tool_use", "id": stream_id,
                              "name": "get_weather", "input": {"location": "Oslo"}}]},
                            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": stream_id,
                              "content": [{"type": "text", "text": "-3 degrees"}], "is_error": false}]}]}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let sent = upstream_body(&fake);
    assert_eq!(
        sent["contents"][1]["parts"][0]["thoughtSignature"], "sig-stream-2",
        "{sent}"
    );
}

#[tokio::test]
async fn tool_errors_and_choices_map_to_gemini() {
    let (fake, proxy) = setup(&[fake_key(1)]).await;
    let history = json!([
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": [{"type": "text", "text": "Let me check."},
            {"type": "tool_use", "id": "toolu_01A", "name": "get_weather", "input": {"location": "Paris"}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_01A", "content": "service down", "is_error": true},
            {"type": "text", "text": "try again"}]}
    ]);
    let (status, body) = messages(
        &proxy,
        json!({"model": MODEL, "max_tokens": 100, "tools": [weather_tool()],
               "tool_choice": {"type": "tool", "name": "get_weather"}, "messages": history}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let sent = upstream_body(&fake);
    let config = &sent["toolConfig"]["functionCallingConfig"];
    assert_eq!(config["mode"], "ANY");
    assert_eq!(config["allowedFunctionNames"], json!(["get_weather"]));
    let user = &sent["contents"][2]["parts"];
    assert_eq!(
        user[0]["functionResponse"]["response"],
        json!({"error": "service down"})
    );
    assert_eq!(user[0]["functionResponse"]["id"], "toolu_01A");
    assert_eq!(user[1]["text"], "try again");
    let (status, _) = messages(
        &proxy,
        json!({"model": MODEL, "max_tokens": 100, "tools": [weather_tool()],
               "tool_choice": {"type": "none"}, "messages": [{"role": "user", "content": "x"}]}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        upstream_body(&fake)["toolConfig"]["functionCallingConfig"]["mode"],
        "NONE"
    );
}

#[tokio::test]
async fn thinking_comes_back_as_thinking_blocks() {
    let (fake, proxy) = setup(&[fake_key(1)]).await;
    let parts = vec![
        json!({"text": "Let me think about primes.", "thought": true}),
        json!({"text": "There are infinitely many primes."}),
    ];
    fake.on_any()
        .always(Reply::parts(parts).thoughts_tokens(30));
    let request = json!({"model": MODEL, "max_tokens": 16000,
        "thinking": {"type": "enabled", "budget_tokens": 10000},
        "messages": [{"role": "user", "content": "Are there infinitely many primes?"}]});
    let (status, body) = messages(&proxy, request.clone()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["content"][0]["type"], "thinking");
    assert_eq!(body["content"][0]["thinking"], "Let me think about primes.");
    assert!(body["content"][0]["signature"].is_string());
    assert_eq!(
        body["content"][1],
        json!({"type": "text", "text": "There are infinitely many primes."})
    );
    assert!(
        body["usage"]["output_tokens"].as_u64().unwrap_or(0) > 30,
        "{body}"
    );
    let config = &upstream_body(&fake)["generationConfig"]["thinkingConfig"];
    assert_eq!(config["thinkingBudget"], 10000);
    assert_eq!(config["includeThoughts"], true);

    let (status, events) = stream(&proxy, request).await;
    assert_eq!(status, 200);
    let blocks: Vec<&str> = events
        .iter()
        .filter(|(n, _)| n == "content_block_start")
        .map(|(_, d)| d["content_block"]["type"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(blocks, ["thinking", "text"]);
    let thinking = events
        .iter()
        .find(|(_, d)| d["delta"]["type"] == "thinking_delta")
        .map(|(_, d)| d["delta"]["thinking"].clone());
    assert_eq!(thinking, Some(json!("Let me think about primes.")));

    // Adaptive thinking with an effort (Claude Code's) becomes a budget on Gemini 2.5.
    let (status, _) = messages(
        &proxy,
        json!({"model": MODEL, "max_tokens": 100, "thinking": {"type": "adaptive"},
               "output_config": {"effort": "low"}, "messages": [{"role": "user", "content": "x"}]}),
    )
    .await;
    assert_eq!(status, 200);
    let config = &upstream_body(&fake)["generationConfig"]["thinkingConfig"];
    assert_eq!(config["thinkingBudget"], 1024, "{config}");
    assert_eq!(config["includeThoughts"], true);
}

#[tokio::test]
async fn count_tokens_asks_gemini() {
    let (fake, proxy) = setup(&[fake_key(1)]).await;
    let (status, _, body) = post(
        &proxy,
        "/v1/messages/count_tokens",
        &json!({"model": "claude-sonnet-4-5", "system": "You are a scientist",
                "tools": [weather_tool()],
                "messages": [{"role": "user", "content": "Hello, Claude"}]}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(body["input_tokens"].as_u64().unwrap_or(0) > 0, "{body}");
    assert_eq!(body.as_object().map(|o| o.len()), Some(1), "{body}");
    let request = fake.last_request().expect("a request");
    assert!(
        request.path.ends_with("/models/gemini-2.5-pro:countTokens"),
        "{}",
        request.path
    );
    let sent = request.body.unwrap_or_default();
    let inner = &sent["generateContentRequest"];
    assert_eq!(inner["model"], "models/gemini-2.5-pro");
    assert_eq!(inner["contents"][0]["parts"][0]["text"], "Hello, Claude");
    assert_eq!(
        inner["systemInstruction"]["parts"][0]["text"],
        "You are a scientist"
    );
}

#[tokio::test]
async fn bad_requests_are_invalid_request_errors_before_any_upstream_call() {
    let (fake, proxy) = setup(&[fake_key(1)]).await;
    for (body, needle) in [
        (
            json!({"model": MODEL, "max_tokens": "many", "messages": [{"role": "user", "content": "x"}]}),
            "expected i64",
        ),
        (
            json!({"model": MODEL, "messages": [{"role": "user", "content": "x"}]}),
            "max_tokens",
        ),
        (json!({"model": MODEL, "max_tokens": 5}), "messages"),
        (
            json!({"model": MODEL, "max_tokens": 5, "messages": [{"role": "user", "content": 5}]}),
            "content blocks",
        ),
        (
            json!({"model": MODEL, "max_tokens": 5, "messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]}),
            "string",
        ),
        (
            json!({"model": MODEL, "max_tokens": 5, "messages": [{"role": "bot", "content": "x"}]}),
            "role",
        ),
        (
            json!({"model": MODEL, "max_tokens": 5, "thinking": {"type": "enabled"}, "messages": [{"role": "user", "content": "x"}]}),
            "budget_tokens",
        ),
        (
            json!({"model": MODEL, "max_tokens": 5, "temperature": "hot", "messages": [{"role": "user", "content": "x"}]}),
            "expected f64",
        ),
        // Anthropic's ranges: temperature and top_p 0 to 1, max_tokens at least 1.
        (
            json!({"model": MODEL, "max_tokens": 5, "temperature": 1.5, "messages": [{"role": "user", "content": "x"}]}),
            "`temperature` must be from 0 to 1",
        ),
        (
            json!({"model": MODEL, "max_tokens": 5, "top_p": -0.1, "messages": [{"role": "user", "content": "x"}]}),
            "`top_p`",
        ),
        (
            json!({"model": MODEL, "max_tokens": 0, "messages": [{"role": "user", "content": "x"}]}),
            "`max_tokens` must be from 1",
        ),
        (
            json!({"model": MODEL, "max_tokens": -1, "messages": [{"role": "user", "content": "x"}]}),
            "`max_tokens` must be from 1",
        ),
        (
            json!({"model": MODEL, "max_tokens": 5, "top_k": -1, "messages": [{"role": "user", "content": "x"}]}),
            "`top_k` must be from 0",
        ),
        // Anthropic's thinking budget: at least 1024, and below max_tokens without the
        // interleaved-thinking beta.
        (
            json!({"model": MODEL, "max_tokens": 4096, "thinking": {"type": "enabled", "budget_tokens": 100},
                   "messages": [{"role": "user", "content": "x"}]}),
            "`thinking.budget_tokens` must be from 1024",
        ),
        (
            json!({"model": MODEL, "max_tokens": 2000, "thinking": {"type": "enabled", "budget_tokens": 2000},
                   "messages": [{"role": "user", "content": "x"}]}),
            "greater than `thinking.budget_tokens`",
        ),
        (
            json!({"model": MODEL, "max_tokens": 5, "tools": [weather_tool()],
                   "tool_choice": {"type": "tool", "name": "get_time"},
                   "messages": [{"role": "user", "content": "x"}]}),
            "not one of the declared tools",
        ),
        (
            json!({"model": MODEL, "max_tokens": 5, "messages": [{"role": "user", "content": [
                {"type": "search_result", "source": "https://kb/1", "title": "t"}]}]}),
            "needs `content`",
        ),
        (
            json!({"model": MODEL, "max_tokens": 5, "messages": [{"role": "user", "content": [
                {"type": "document", "source": {"type": "url", "url": "ftp://example.com/a.pdf"}}]}]}),
            "document URLs must be http(s)",
        ),
        (
            json!({"model": MODEL, "max_tokens": 5, "messages": [{"role": "user", "content": [
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "not base64!"}}]}]}),
            "base64",
        ),
    ] {
        let (status, _, answer) = post(&proxy, "/v1/messages", &body).await;
        assert_eq!(status, 400, "{body} -> {answer}");
        assert_eq!(answer["type"], "error");
        assert_eq!(answer["error"]["type"], "invalid_request_error", "{answer}");
        let message = answer["error"]["message"].as_str().unwrap_or("");
        assert!(message.contains(needle), "{needle:?} not in {message:?}");
    }
    assert_eq!(fake.total_hits(), 0);
    let response = client()
        .post(format!("{}/v1/messages", proxy.url()))
        .header("x-api-key", TEST_TOKEN)
        .body("{not json")
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 400);
}

#[tokio::test]
async fn only_an_unknown_model_is_a_404() {
    let (fake, proxy) = setup(&[fake_key(1)]).await;
    fake.on_model("gemini-nope")
        .always(Reply::model_not_found("gemini-nope"));
    let (status, body) = messages(&proxy, hi("gemini-nope")).await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"]["type"], "not_found_error");
    // An unknown path under /v1/messages is not a 404 (Claude Code would say the model does not
    // exist).
    let (status, _, body) = post(&proxy, "/v1/messages/batches", &json!({})).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["type"], "invalid_request_error");
}

#[tokio::test]
async fn a_429_on_the_first_key_is_invisible() {
    let (k1, k2) = (fake_key(1), fake_key(2));
    let (fake, proxy) = setup(&[k1.clone(), k2.clone()]).await;
    fake.on(&k1, MODEL)
        .always(Reply::quota_per_minute(MODEL, Some("30s")));
    for _ in 0..2 {
        let (status, body) = messages(&proxy, hi(MODEL)).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["content"][0]["text"], default_text(MODEL, &k2));
        let (status, events) = stream(&proxy, hi(MODEL)).await;
        assert_eq!(status, 200);
        assert_eq!(events.last().map(|(n, _)| n.as_str()), Some("message_stop"));
    }
}

#[tokio::test]
async fn all_keys_out_is_a_rate_limit_error_with_retry_after() {
    let (k1, k2) = (fake_key(1), fake_key(2));
    let (fake, proxy) = setup(&[k1.clone(), k2.clone()]).await;
    fake.on_any()
        .always(Reply::quota_per_minute(MODEL, Some("20s")));
    let (status, headers, body) = post(&proxy, "/v1/messages", &hi(MODEL)).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "rate_limit_error", "{body}");
    let wait: u64 = headers
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("retry-after");
    assert!((1..=60).contains(&wait), "{wait}");
    let (status, _, body) = post(&proxy, "/v1/messages", &hi(MODEL)).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["type"], "rate_limit_error", "{body}");
}

#[tokio::test]
async fn an_upstream_failure_mid_stream_is_an_error_event() {
    let (fake, proxy) = setup(&[fake_key(1)]).await;
    fake.on_any().always(Reply::error_in_stream(
        vec![text_chunk("partial ", None)],
        Reply::overloaded(),
    ));
    let (status, events) = stream(&proxy, hi(MODEL)).await;
    assert_eq!(status, 200);
    let names = names(&events);
    assert_eq!(names.last(), Some(&"error"), "{names:?}");
    assert!(!names.contains(&"message_stop"), "{names:?}");
    let error = &events[events.len() - 1].1;
    assert_eq!(error["error"]["type"], "overloaded_error", "{error}");
    assert!(error["error"]["message"].is_string());
}

/// What Claude Code sends (its shape as of late 2025), accepted as is.
#[tokio::test]
async fn a_claude_code_request_is_accepted() {
    let (fake, proxy) = setup(&[fake_key(1)]).await;
    fake.strict(true);
    fake.on_any().always(Reply::text("I'll help.").chunks(1));
    let schema = |props: Value| {
        json!({"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object",
               "properties": props, "required": [], "additionalProperties": false})
    };
    let mut tools: Vec<Value> = [
        "Task",
        "Bash",
        "Glob",
        "Grep",
        "ExitPlanMode",
        "Read",
        "Edit",
        "Write",
        "NotebookEdit",
        "WebFetch",
        "TodoWrite",
        "WebSearch",
    ]
    .iter()
    .map(|name| {
        json!({"name": name, "description": format!("The {name} tool"),
               "input_schema": schema(json!({"command": {"type": "string", "description": "what"},
                   "timeout": {"type": "number", "exclusiveMinimum": 0},
                   "items": {"type": "array", "items": {"$ref": "#/$defs/item"}}}))})
    })
    .collect();
    tools[11]["defer_loading"] = json!(true);
    tools[11]["cache_control"] = json!({"type": "ephemeral"});
    let body = json!({
        "model": "claude-sonnet-4-5-20250929",
        "max_tokens": 32000,
        "stream": true,
        "system": [
            {"type": "text", "text": "You are Claude Code, Anthropic's official CLI for Claude.",
             "cache_control": {"type": "ephemeral"}},
            {"type": "text", "text": "You are an interactive CLI tool.", "cache_control": {"type": "ephemeral", "ttl": "1h"}}
        ],
        "messages": [
            {"role": "system", "content": "Extra instructions."},
            {"role": "user", "content": [
                {"type": "text", "text": "<system-reminder>context</system-reminder>"},
                {"type": "text", "text": "fix the bug", "cache_control": {"type": "ephemeral"}}]}
        ],
        "tools": tools,
        "tool_choice": {"type": "auto", "disable_parallel_tool_use": false},
        "thinking": {"type": "adaptive"},
        "output_config": {"effort": "high"},
        "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
        "metadata": {"user_id": "user_abc_account_123_session_456"},
        "temperature": 1
    });
    let response = client()
        .post(format!("{}/v1/messages?beta=true", proxy.url()))
        .header("x-api-key", TEST_TOKEN)
        .header("anthropic-version", "2023-06-01")
        .header(
            "anthropic-beta",
            "claude-code-20250219,interleaved-thinking-2025-05-14,context-management-2025-06-27,fine-grained-tool-streaming-2025-05-14",
        )
        .header("x-app", "cli")
        .header("user-agent", "claude-cli/2.0.50 (external, cli)")
        .json(&body)
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap_or_default();
    assert!(text.contains("event: message_stop"), "{text}");
    assert!(text.contains("I'll help."), "{text}");
    let sent = upstream_body(&fake);
    let path = fake.last_request().expect("a request").path;
    assert!(
        path.contains("/models/gemini-2.5-pro:streamGenerateContent"),
        "{path}"
    );
    let system: Vec<&str> = sent["systemInstruction"]["parts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["text"].as_str())
        .collect();
    assert_eq!(
        system,
        [
            "You are Claude Code, Anthropic's official CLI for Claude.",
            "You are an interactive CLI tool.",
            "Extra instructions."
        ]
    );
    let decls = sent["tools"][0]["functionDeclarations"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(decls.len(), 12, "{sent}");
    let text = sent.to_string();
    for leaked in [
        "cache_control",
        "defer_loading",
        "context_management",
        "user_id",
        "$schema",
    ] {
        assert!(!text.contains(leaked), "{leaked} reached Gemini: {text}");
    }
    assert_eq!(sent["generationConfig"]["maxOutputTokens"], 32000);
    assert_eq!(
        sent["generationConfig"]["thinkingConfig"]["includeThoughts"],
        true
    );
}

/// Serves `body` as a PNG once, on loopback: the URL to fetch.
async fn one_png(body: &'static [u8]) -> String {
    serve_once("image/png", "cat.png", body).await
}

/// Serves `body` once as `content_type`, on loopback: the URL to fetch.
async fn serve_once(content_type: &'static str, name: &str, body: &'static [u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/{name}", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        if let Ok((mut socket, _)) = listener.accept().await {
            let mut head = vec![0u8; 8192];
            let read = socket.read(&mut head);
            let _ = tokio::time::timeout(std::time::Duration::from_secs(5), read).await;
            let reply = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                body.len()
            );
            let _ = socket.write_all(reply.as_bytes()).await;
            let _ = socket.write_all(body).await;
            let _ = socket.shutdown().await;
        }
    });
    url
}

#[tokio::test]
async fn image_urls_are_fetched_like_chats() {
    let fake = FakeGemini::start().await;
    let proxy = start(&fake, &[fake_key(1)], |c| {
        c.set("upstream", "fetch_private_urls = true")
    })
    .await;
    let url = one_png(b"\x89PNG\r\n\x1a\nfake image bytes").await;
    let (status, body) = messages(
        &proxy,
        json!({"model": MODEL, "max_tokens": 64, "messages": [{"role": "user", "content": [
            {"type": "image", "source": {"type": "url", "url": url}},
            {"type": "text", "text": "Describe this image."}]}]}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let parts = &upstream_body(&fake)["contents"][0]["parts"];
    assert_eq!(
        parts[0],
        json!({"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgpmYWtlIGltYWdlIGJ5dGVz"}})
    );
    // Without the opt-in a loopback URL is the client's 400, before any key is used.
    let fake = FakeGemini::start().await;
    let proxy = start(&fake, &[fake_key(1)], |c| c).await;
    let url = one_png(b"\x89PNG\r\n\x1a\n").await;
    let (status, body) = messages(
        &proxy,
        json!({"model": MODEL, "max_tokens": 64, "messages": [{"role": "user", "content": [
            {"type": "image", "source": {"type": "url", "url": url}}]}]}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["type"], "invalid_request_error");
    assert_eq!(fake.total_hits(), 0);
}

/// A tool choice naming no declared tool is refused before the request's media is fetched: the
/// URL's server never sees a connection.
#[tokio::test]
async fn a_bad_tool_choice_is_refused_before_any_fetch() {
    let fake = FakeGemini::start().await;
    let proxy = start(&fake, &[fake_key(1)], |c| {
        c.set("upstream", "fetch_private_urls = true")
    })
    .await;
    let image = Unfetched::new("cat.png").await;
    let url = &image.url;
    let (status, body) = messages(
        &proxy,
        json!({"model": MODEL, "max_tokens": 64,
               "tools": [{"name": "read", "input_schema": {"type": "object"}}],
               "tool_choice": {"type": "tool", "name": "write"},
               "messages": [{"role": "user", "content": [
                   {"type": "image", "source": {"type": "url", "url": url}}]}]}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["type"], "invalid_request_error");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("tool_choice"),
        "{body}"
    );
    image.assert_unfetched().await;
    assert_eq!(fake.total_hits(), 0);
}

/// Documents as Anthropic's PDF and search-result guides send them, through the real binary: a
/// PDF at a URL is fetched and inlined with its title said before it; a search result and a
/// content-source document become text; the interleaved-thinking beta lets the budget exceed
/// `max_tokens`.
#[tokio::test]
async fn documents_by_url_and_search_results_reach_gemini() {
    let fake = FakeGemini::start().await;
    let proxy = start(&fake, &[fake_key(1)], |c| {
        c.set("upstream", "fetch_private_urls = true")
    })
    .await;
    let url = serve_once("application/pdf", "report.pdf", b"%PDF-1.4 tiny").await;
    let (status, body) = messages(
        &proxy,
        json!({"model": MODEL, "max_tokens": 64, "messages": [{"role": "user", "content": [
            {"type": "document", "title": "Report", "source": {"type": "url", "url": url}},
            {"type": "document", "source": {"type": "content", "content": [{"type": "text", "text": "Chunk A"}]}},
            {"type": "search_result", "source": "https://kb.example/1", "title": "KB",
             "content": [{"type": "text", "text": "Answer B"}]},
            {"type": "text", "text": "Summarise"}]}]}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        upstream_body(&fake)["contents"][0]["parts"],
        json!([{"text": "Document title: Report"},
               {"inlineData": {"mimeType": "application/pdf", "data": "JVBERi0xLjQgdGlueQ=="}},
               {"text": "Chunk A"},
               {"text": "Search result: KB\nSource: https://kb.example/1\nAnswer B"},
               {"text": "Summarise"}])
    );
    // A URL that serves an image where a PDF is wanted: the client's 400, no key used.
    let hits = fake.total_hits();
    let url = one_png(b"\x89PNG\r\n\x1a\n").await;
    let (status, body) = messages(
        &proxy,
        json!({"model": MODEL, "max_tokens": 64, "messages": [{"role": "user", "content": [
            {"type": "document", "source": {"type": "url", "url": url}}]}]}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("not a PDF"),
        "{body}"
    );
    assert_eq!(fake.total_hits(), hits);
    // Claude Code's interleaved-thinking beta: a budget above max_tokens is accepted.
    let request = json!({"model": MODEL, "max_tokens": 2048,
                         "thinking": {"type": "enabled", "budget_tokens": 4096},
                         "messages": [{"role": "user", "content": "think"}]});
    let (status, _) = messages(&proxy, request.clone()).await;
    assert_eq!(status, 400);
    let response = client()
        .post(format!("{}/v1/messages", proxy.url()))
        .header("x-api-key", TEST_TOKEN)
        .header("anthropic-beta", "fine-grained-tool-streaming-2025-05-14")
        .header("anthropic-beta", "interleaved-thinking-2025-05-14")
        .json(&request)
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn usage_and_metrics_count_messages_like_chat() {
    let (fake, proxy) = setup(&[fake_key(1)]).await;
    fake.on_any().always(Reply::text("counted").chunks(2));
    let (status, _) = messages(&proxy, hi(MODEL)).await;
    assert_eq!(status, 200);
    let (status, events) = stream(&proxy, hi(MODEL)).await;
    assert_eq!(status, 200);
    assert_eq!(events.last().map(|(n, _)| n.as_str()), Some("message_stop"));
    // The stream's usage is recorded when it ends: bounded wait for it.
    let mut stats = Value::Null;
    for _ in 0..100 {
        let response = proxy.get("/stats").send().await.expect("/stats");
        stats = response.json().await.unwrap_or(Value::Null);
        if stats["clients"]
            .as_object()
            .into_iter()
            .flatten()
            .any(|(_, c)| c["requests"] == 2)
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let clients = stats["clients"].as_object().cloned().unwrap_or_default();
    assert_eq!(clients.len(), 1, "{stats}");
    let (_, mine) = clients.iter().next().expect("one client");
    assert_eq!(mine["requests"], 2, "{stats}");
    assert!(mine["prompt_tokens"].as_u64().unwrap_or(0) > 0, "{stats}");
    let key = &stats["api_key_stats"][mask(&fake_key(1))]["models"][MODEL];
    assert_eq!(key["total_requests"], 2, "{stats}");
    let metrics = proxy.metrics().await;
    assert!(metrics.contains("route=\"messages\""), "{metrics}");
}

/// Glob aliases work wherever aliases do: chat, the native API, /v1/models.
#[tokio::test]
async fn glob_aliases_work_on_every_route() {
    let fake = FakeGemini::start().await;
    let proxy = start(&fake, &[fake_key(1)], |c| {
        c.set("models.aliases", r#""gpt-5*" = "gemini-2.5-pro""#)
            .set("models.aliases", r#""gpt-5*mini*" = "gemini-2.5-flash""#)
    })
    .await;
    for (name, upstream) in [
        ("gpt-5-codex", "gemini-2.5-pro"),
        ("gpt-5-mini", "gemini-2.5-flash"),
    ] {
        let (status, body) = post_json(
            &proxy,
            "/v1/chat/completions",
            &json!({"model": name, "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        let path = fake.last_request().expect("a request").path;
        assert!(
            path.contains(&format!("/models/{upstream}:")),
            "{name}: {path}"
        );
    }
    let (status, body) = post_json(
        &proxy,
        "/v1beta/models/gpt-5.1:generateContent",
        &json!({"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let path = fake.last_request().expect("a request").path;
    assert!(path.contains("/models/gemini-2.5-pro:"), "{path}");
    // A glob is a pattern, not a model id: not listed; a name it matches exists.
    let listed = proxy.get("/v1/models").send().await.expect("list");
    let listed: Value = listed.json().await.unwrap_or(Value::Null);
    assert!(listed["data"].is_array(), "{listed}");
    assert!(!listed.to_string().contains('*'), "{listed}");
    let one = proxy
        .get("/v1/models/gpt-5-codex")
        .send()
        .await
        .expect("get");
    assert_eq!(one.status(), 200);
}

/// Gemini's empty answers as Anthropic's own: thoughts only at the token limit (Claude Code's
/// `max_tokens` 32000 with `budget_tokens` 31999) is a 200 `max_tokens`, a blocked answer or
/// prompt a 200 `refusal`, whole and streamed, each from one upstream call; any other empty
/// stop is a retryable 502 `api_error`.
#[tokio::test]
async fn empty_answers_are_anthropics_max_tokens_and_refusal() {
    let (fake, proxy) = setup(&[fake_key(1)]).await;
    let request = json!({"model": MODEL, "max_tokens": 32000,
        "thinking": {"type": "enabled", "budget_tokens": 31999},
        "messages": [{"role": "user", "content": "Prove it."}]});
    let thoughts_only = || {
        Reply::parts(vec![json!({"text": "Still thinking", "thought": true})])
            .finish_reason("MAX_TOKENS")
            .thoughts_tokens(31999)
    };
    let safety = json!({"candidates": [{"finishReason": "SAFETY", "index": 0,
        "safetyRatings": [{"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "HIGH", "blocked": true}]}],
        "usageMetadata": {"promptTokenCount": 4, "totalTokenCount": 4}});
    let blocked = json!({"promptFeedback": {"blockReason": "PROHIBITED_CONTENT"},
        "usageMetadata": {"promptTokenCount": 4, "totalTokenCount": 4}});
    let cases = [
        (
            thoughts_only(),
            thoughts_only(),
            "max_tokens",
            vec!["thinking"],
        ),
        (
            Reply::json(200, safety.clone()),
            Reply::stream(vec![safety]),
            "refusal",
            vec![],
        ),
        (
            Reply::json(200, blocked.clone()),
            Reply::stream(vec![blocked]),
            "refusal",
            vec![],
        ),
    ];
    for (whole, streamed, stop, blocks) in cases {
        fake.on_any().then(whole);
        let before = fake.requests().len();
        let (status, body) = messages(&proxy, request.clone()).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["stop_reason"], stop, "{body}");
        let kinds: Vec<&str> = body["content"]
            .as_array()
            .expect("content")
            .iter()
            .map(|b| b["type"].as_str().unwrap_or(""))
            .collect();
        assert_eq!(kinds, blocks, "{body}");
        assert_eq!(fake.requests().len(), before + 1, "one upstream call");

        fake.on_any().then(streamed);
        let (status, events) = stream(&proxy, request.clone()).await;
        assert_eq!(status, 200);
        assert!(!names(&events).contains(&"error"), "{events:?}");
        assert_eq!(names(&events).last(), Some(&"message_stop"), "{events:?}");
        let delta = events
            .iter()
            .find(|(n, _)| n == "message_delta")
            .map(|(_, d)| d["delta"]["stop_reason"].clone());
        assert_eq!(delta, Some(json!(stop)), "{events:?}");
    }

    // A malformed call is no answer: a 502 the client may retry (a second try may succeed).
    fake.on_any().then(Reply::json(
        200,
        json!({"candidates": [{"finishReason": "MALFORMED_FUNCTION_CALL", "index": 0}]}),
    ));
    let (status, headers, body) = post(&proxy, "/v1/messages", &request).await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["error"]["type"], "api_error", "{body}");
    assert_eq!(
        headers.get("x-should-retry").and_then(|v| v.to_str().ok()),
        Some("true")
    );
}

/// Whether Gemini takes `name` as a function name: a letter or `_` first, then letters,
/// digits, `_ . : -`, at most 64 characters.
fn gemini_accepts(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.len() <= 64
        && chars.all(|c| c.is_ascii_alphanumeric() || "_.:-".contains(c))
}

/// Claude Code's MCP tools are often longer than the 64 characters Gemini allows (Gemini
/// refuses the whole request): the proxy sends a valid name, the same in declarations, history
/// and `allowedFunctionNames`, and gives the client's name back on Gemini's calls.
#[tokio::test]
async fn tool_names_gemini_refuses_are_mapped_and_mapped_back() {
    let (fake, proxy) = setup(&[fake_key(1)]).await;
    let long = "mcp__claude-in-chrome__navigate_to_the_page_and_take_a_screenshot_of_it";
    assert!(!gemini_accepts(long));
    let tools = json!([
        {"name": long, "description": "Navigate", "input_schema": {"type": "object", "properties": {"url": {"type": "string"}}}},
        {"name": "get_weather", "input_schema": {"type": "object"}},
    ]);
    let request = json!({"model": MODEL, "max_tokens": 1024, "tools": tools,
    "tool_choice": {"type": "tool", "name": long},
    "messages": [
        {"role": "user", "content": "Open example.com"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": long, "input": {"url": "https://example.com"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "done"}]},
    ]});
    let (status, body) = messages(&proxy, request.clone()).await;
    assert_eq!(status, 200, "{body}");
    let sent = upstream_body(&fake);
    let declared = declared_names(&sent);
    assert!(declared.iter().all(|n| gemini_accepts(n)), "{declared:?}");
    assert_eq!(declared[1], "get_weather", "a valid name is kept");
    let mapped = declared[0].clone();
    assert_ne!(mapped, long);
    assert_eq!(
        sent["contents"][1]["parts"][0]["functionCall"]["name"],
        mapped.as_str()
    );
    assert_eq!(
        sent["contents"][2]["parts"][0]["functionResponse"]["name"],
        mapped.as_str()
    );
    assert_eq!(
        sent["toolConfig"]["functionCallingConfig"]["allowedFunctionNames"],
        json!([mapped])
    );

    let call = json!({"functionCall": {"name": mapped, "args": {"url": "https://example.org"}}});
    fake.on_any().then(Reply::parts(vec![call.clone()]));
    let (status, body) = messages(&proxy, request.clone()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["content"][0]["type"], "tool_use", "{body}");
    assert_eq!(body["content"][0]["name"], long, "{body}");
    assert_eq!(body["stop_reason"], "tool_use");

    fake.on_any().then(Reply::parts(vec![call]));
    let (status, events) = stream(&proxy, request).await;
    assert_eq!(status, 200);
    let started = events
        .iter()
        .find(|(n, d)| n == "content_block_start" && d["content_block"]["type"] == "tool_use")
        .map(|(_, d)| d["content_block"]["name"].clone());
    assert_eq!(started, Some(json!(long)), "{events:?}");
}

/// `tool_choice.disable_parallel_tool_use: true`: Gemini cannot be told, so the client gets
/// the answer's first tool call only.
#[tokio::test]
async fn disabled_parallel_tool_use_keeps_the_first_call() {
    let (fake, proxy) = setup(&[fake_key(1)]).await;
    let calls = || {
        Reply::parts(vec![
            json!({"functionCall": {"name": "get_weather", "args": {"location": "Oslo"}}}),
            json!({"functionCall": {"name": "get_weather", "args": {"location": "Paris"}}}),
        ])
    };
    for (disable, expected) in [(false, 2), (true, 1)] {
        fake.on_any().then(calls());
        let (status, body) = messages(
            &proxy,
            json!({"model": MODEL, "max_tokens": 100, "tools": [weather_tool()],
                   "tool_choice": {"type": "auto", "disable_parallel_tool_use": disable},
                   "messages": [{"role": "user", "content": "Weather in Oslo and Paris?"}]}),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        let uses = body["content"]
            .as_array()
            .expect("content")
            .iter()
            .filter(|b| b["type"] == "tool_use")
            .count();
        assert_eq!(uses, expected, "{body}");
        assert_eq!(body["content"][0]["input"]["location"], "Oslo", "{body}");
    }
}
