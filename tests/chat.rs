//! `/v1/chat/completions` without streaming: what the client gets back, and what reaches Gemini.

mod support;

use serde_json::{json, Value};
use support::*;

const MODEL: &str = "gemini-2.5-flash";

async fn setup(extra: impl FnOnce(TestConfig) -> TestConfig) -> (FakeGemini, Proxy, String) {
    let key = fake_key(1);
    let fake = FakeGemini::start().await;
    let proxy = Proxy::builder()
        .config(extra(config_for(&fake.url(), &[&key])))
        .start()
        .await;
    (fake, proxy, key)
}

async fn chat(proxy: &Proxy, body: Value) -> (u16, Value) {
    let response = proxy
        .post("/v1/chat/completions")
        .json(&body)
        .send()
        .await
        .expect("request");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn upstream_body(fake: &FakeGemini) -> Value {
    fake.last_request()
        .and_then(|r| r.body)
        .expect("the upstream saw a JSON body")
}

#[tokio::test]
async fn answers_in_openai_shape() {
    let (_fake, proxy, key) = setup(|c| c).await;
    let (status, body) = chat(
        &proxy,
        json!({"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["object"], "chat.completion");
    assert!(body["id"].as_str().unwrap_or("").starts_with("chatcmpl-"));
    assert_eq!(body["model"], MODEL);
    let choice = &body["choices"][0];
    assert_eq!(choice["index"], 0);
    assert_eq!(choice["message"]["role"], "assistant");
    assert_eq!(choice["message"]["content"], default_text(MODEL, &key));
    assert_eq!(choice["finish_reason"], "stop");
    let usage = &body["usage"];
    let (p, c, t) = (
        usage["prompt_tokens"].as_u64().unwrap_or(0),
        usage["completion_tokens"].as_u64().unwrap_or(0),
        usage["total_tokens"].as_u64().unwrap_or(0),
    );
    assert!(p > 0 && c > 0 && t == p + c, "{usage}");
}

#[tokio::test]
async fn thought_tokens_count_as_completion_tokens() {
    let (fake, proxy, _key) = setup(|c| c).await;
    fake.on_any()
        .always(Reply::text("done").thoughts_tokens(40));
    let (status, body) = chat(
        &proxy,
        json!({"model": MODEL, "messages": [{"role": "user", "content": "think"}]}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let usage = &body["usage"];
    assert_eq!(usage["completion_tokens_details"]["reasoning_tokens"], 40);
    assert!(
        usage["completion_tokens"].as_u64().unwrap_or(0) > 40,
        "{usage}"
    );
}

#[tokio::test]
async fn max_tokens_finish_is_length() {
    let (fake, proxy, _key) = setup(|c| c).await;
    fake.on_any()
        .always(Reply::text("cut sh").finish_reason("MAX_TOKENS"));
    let (_, body) = chat(
        &proxy,
        json!({"model": MODEL, "max_tokens": 3, "messages": [{"role": "user", "content": "long"}]}),
    )
    .await;
    assert_eq!(body["choices"][0]["finish_reason"], "length", "{body}");
}

#[tokio::test]
async fn roles_turns_and_parameters_reach_gemini() {
    let (fake, proxy, _key) = setup(|c| c).await;
    let (status, body) = chat(
        &proxy,
        json!({
            "model": MODEL,
            "messages": [
                {"role": "system", "content": "You are terse."},
                {"role": "developer", "content": "Answer in English."},
                {"role": "user", "content": "first"},
                {"role": "user", "content": [{"type": "text", "text": "second"}]},
                {"role": "assistant", "content": "ok"},
                {"role": "user", "content": "third"}
            ],
            "temperature": 0.3,
            "top_p": 0.9,
            "max_tokens": 50,
            "max_completion_tokens": 70,
            "stop": ["END"],
            "seed": 7,
            "presence_penalty": 0.5,
            "frequency_penalty": 0.25
        }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let sent = upstream_body(&fake);
    let system: Vec<&str> = sent["systemInstruction"]["parts"]
        .as_array()
        .map(|p| p.iter().filter_map(|x| x["text"].as_str()).collect())
        .unwrap_or_default();
    assert!(system.join(" ").contains("terse"), "{sent}");
    assert!(system.join(" ").contains("English"), "{sent}");
    let roles: Vec<&str> = sent["contents"]
        .as_array()
        .map(|c| c.iter().filter_map(|x| x["role"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(
        roles,
        ["user", "model", "user"],
        "adjacent user turns merge: {sent}"
    );
    assert_eq!(
        sent["contents"][0]["parts"].as_array().map(Vec::len),
        Some(2)
    );
    let g = &sent["generationConfig"];
    assert_eq!(g["temperature"], 0.3);
    assert_eq!(g["topP"], 0.9);
    assert_eq!(g["maxOutputTokens"], 70, "max_completion_tokens wins");
    assert_eq!(g["stopSequences"], json!(["END"]));
    assert_eq!(g["seed"], 7);
    assert_eq!(g["presencePenalty"], 0.5);
    assert_eq!(g["frequencyPenalty"], 0.25);
}

#[tokio::test]
async fn unknown_openai_fields_are_not_forwarded() {
    let (fake, proxy, _key) = setup(|c| c).await;
    // In strict mode the fake answers like Google does to an unknown field: 400.
    fake.strict(true);
    let (status, body) = chat(
        &proxy,
        json!({
            "model": MODEL,
            "messages": [{"role": "user", "content": "hi"}],
            "user": "u-1", "store": false, "metadata": {"a": "b"}, "logit_bias": {"1": 2},
            "service_tier": "auto", "parallel_tool_calls": false, "prompt_cache_key": "x",
            "some_future_field": {"x": 1}
        }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let sent = upstream_body(&fake);
    for field in [
        "user",
        "store",
        "metadata",
        "logit_bias",
        "some_future_field",
    ] {
        assert!(sent.get(field).is_none(), "{field} leaked upstream: {sent}");
    }
}

#[tokio::test]
async fn safety_threshold_applies_unless_default() {
    let (fake, proxy, _key) = setup(|c| c).await;
    chat(
        &proxy,
        json!({"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    let settings = upstream_body(&fake)["safetySettings"].clone();
    let settings = settings.as_array().cloned().unwrap_or_default();
    assert_eq!(
        settings.len(),
        4,
        "BLOCK_NONE is the default for every category"
    );
    assert!(settings.iter().all(|s| s["threshold"] == "BLOCK_NONE"));

    let (fake, proxy, _key) = setup(|c| c.set("upstream", r#"safety = "default""#)).await;
    chat(
        &proxy,
        json!({"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert!(upstream_body(&fake).get("safetySettings").is_none());
}

#[tokio::test]
async fn model_prefixes_are_stripped_and_bad_names_refused() {
    let (fake, proxy, _key) = setup(|c| c).await;
    let (status, body) = chat(
        &proxy,
        json!({"model": "models/gemini-2.5-flash", "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        fake.last_request().and_then(|r| r.model).as_deref(),
        Some(MODEL)
    );

    let before = fake.total_hits();
    for bad in ["../../v1beta/files", "gemini?key=x", "a b", ""] {
        let (status, body) = chat(
            &proxy,
            json!({"model": bad, "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert_eq!(body["error"]["type"], "invalid_request_error");
    }
    assert_eq!(
        fake.total_hits(),
        before,
        "bad model names never reach upstream"
    );
}

#[tokio::test]
async fn upstream_model_not_found_is_the_clients_404() {
    let (fake, proxy, key) = setup(|c| c).await;
    fake.on_any().always(Reply::model_not_found("gemini-9"));
    let (status, body) = chat(
        &proxy,
        json!({"model": "gemini-9", "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(status, 404, "{body}");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap_or("")
        .contains("gemini-9"));
    assert_eq!(fake.hits_for_key(&key), 1, "not retried");
}

#[tokio::test]
async fn aliases_resolve_and_answer_under_the_alias_name() {
    let (fake, proxy, _key) = setup(|c| {
        c.set("models.aliases", r#""gpt-4o" = "gemini-2.5-pro""#)
            .set(
                "models.aliases",
                r#""thinker" = { model = "gemini-2.5-flash", reasoning_effort = "high" }"#,
            )
    })
    .await;
    let (status, body) = chat(
        &proxy,
        json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["model"], "gpt-4o");
    assert_eq!(
        fake.last_request().and_then(|r| r.model).as_deref(),
        Some("gemini-2.5-pro")
    );
    let (status, _) = chat(
        &proxy,
        json!({"model": "thinker", "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        fake.last_request().and_then(|r| r.model).as_deref(),
        Some(MODEL)
    );
}

/// OpenAI tools may be named anything; Gemini refuses a name with a space or a leading digit
/// (the fake does, as Gemini). The proxy maps them to valid names in declarations, history and
/// `tool_choice`, and the answer's call comes back under the declared name. Two declared names
/// Gemini would get alike are the client's 400, before any upstream call.
#[tokio::test]
async fn tool_names_gemini_refuses_round_trip() {
    let (fake, proxy, _) = setup(|c| c).await;
    let tool = |name: &str| {
        json!({"type": "function", "function": {"name": name,
               "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}})
    };
    let request = json!({"model": MODEL,
        "tools": [tool("look up"), tool("3d_render"), tool("ok_name")],
        "tool_choice": {"type": "function", "function": {"name": "look up"}},
        "messages": [
            {"role": "user", "content": "find it"},
            {"role": "assistant", "tool_calls": [{"id": "call_1", "type": "function",
                "function": {"name": "3d_render", "arguments": "{\"q\":\"a\"}"}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "rendered"}]});
    let (status, body) = chat(&proxy, request.clone()).await;
    assert_eq!(status, 200, "{body}");
    let sent = upstream_body(&fake);
    let declared = declared_names(&sent);
    assert_eq!(declared.len(), 3, "{declared:?}");
    assert!(declared[0].starts_with("look_up_"), "{declared:?}");
    assert!(declared[1].starts_with("_3d_render_"), "{declared:?}");
    assert_eq!(declared[2], "ok_name");
    assert_eq!(
        sent["contents"][1]["parts"][0]["functionCall"]["name"],
        declared[1].as_str()
    );
    assert_eq!(
        sent["toolConfig"]["functionCallingConfig"]["allowedFunctionNames"],
        json!([declared[0]])
    );
    // Gemini calls the mapped name: the client sees its own.
    let call = json!({"functionCall": {"name": declared[0], "args": {"q": "b"}}});
    fake.on_any().then(Reply::parts(vec![call]));
    let (status, body) = chat(&proxy, request).await;
    assert_eq!(status, 200, "{body}");
    let calls = &body["choices"][0]["message"]["tool_calls"];
    assert_eq!(calls[0]["function"]["name"], "look up", "{body}");

    let hits = fake.total_hits();
    let clash = json!({"model": MODEL, "tools": [tool("look up"), tool(&declared[0])],
        "messages": [{"role": "user", "content": "x"}]});
    let (status, body) = chat(&proxy, clash).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["param"], "tools[1].function.name", "{body}");
    assert_eq!(fake.total_hits(), hits);
}

/// A tool choice naming no declared tool is refused before the request's image is fetched.
#[tokio::test]
async fn a_bad_tool_choice_is_refused_before_any_fetch() {
    let (fake, proxy, _) = setup(|c| c.set("upstream", "fetch_private_urls = true")).await;
    let image = Unfetched::new("cat.png").await;
    let (status, body) = chat(
        &proxy,
        json!({"model": MODEL,
               "tools": [{"type": "function", "function": {"name": "read", "parameters": {"type": "object"}}}],
               "tool_choice": {"type": "function", "function": {"name": "write"}},
               "messages": [{"role": "user", "content": [
                   {"type": "image_url", "image_url": {"url": image.url}}]}]}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["param"], "tool_choice", "{body}");
    image.assert_unfetched().await;
    assert_eq!(fake.total_hits(), 0);
}
