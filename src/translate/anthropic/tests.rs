//! Table tests of the Anthropic mapping on the shapes of Anthropic's own documentation (the
//! Messages API reference, the tool-use, vision, PDF and extended-thinking guides, the
//! streaming event reference): each case is one `check_*` call, input in, exact output out.

use serde_json::{json, Value};

use super::*;
use crate::translate::{EventStream, Extras, ResponseCtx, Target};

fn ctx() -> ResponseCtx {
    ResponseCtx {
        id: "msg_013Zva2CMHLNnXjNJJKqJ2EF".into(),
        created: 0,
        model: "claude-sonnet-4-5".into(),
        one_call: false,
        legacy_functions: false,
        tool_names: Default::default(),
    }
}

/// The Gemini body built for `request` on `model`, as JSON.
fn gemini(request: &Value, model: &str) -> Result<Value, TranslateError> {
    gemini_with(request, model, "", None)
}

/// As `gemini`, with an `anthropic-beta` header and fetched media.
fn gemini_with(
    request: &Value,
    model: &str,
    beta: &str,
    media: Option<&std::collections::HashMap<String, crate::translate::FetchedFile>>,
) -> Result<Value, TranslateError> {
    let text = request.to_string();
    let parsed = parse(text.as_bytes(), beta)?;
    let lookup = |id: &str| (id == "toolu_cached").then(|| "sig-from-cache".to_string());
    let built = to_gemini(
        &parsed,
        &Target {
            model,
            ..Target::default()
        },
        &Extras {
            signatures: Some(&lookup),
            media,
        },
    )?;
    Ok(serde_json::from_slice(&built.body).unwrap_or_default())
}

fn check_request(request: Value, model: &str, expected: Value) {
    match gemini(&request, model) {
        Ok(got) => assert_eq!(got, expected, "\nrequest: {request}"),
        Err(e) => panic!("{e}\nrequest: {request}"),
    }
}

fn check_refused(request: Value, param: &str) {
    match gemini(&request, "gemini-2.5-flash") {
        Err(TranslateError::InvalidRequest { param: got, .. }) => {
            assert_eq!(got.as_deref(), Some(param), "{request}")
        }
        other => panic!("expected a 400 on {param}, got {other:?}\nrequest: {request}"),
    }
}

fn check_response(gemini_body: Value, expected: Value) {
    let whole = from_gemini(gemini_body.to_string().as_bytes(), &ctx()).expect("translates");
    let got: Value = serde_json::from_slice(&whole.body).unwrap_or_default();
    assert_eq!(got, expected, "\ngemini: {gemini_body}");
}

/// Feeds `events` through a stream translator: every Anthropic event out, as (name, data).
fn run_stream(events: &[Value]) -> Vec<(String, Value)> {
    let mut translator = StreamTranslator::new(ctx());
    let mut out = Vec::new();
    for e in events {
        let bytes = translator
            .on_event(e.to_string().as_bytes())
            .expect("event");
        out.extend_from_slice(&bytes);
    }
    out.extend_from_slice(&translator.finish());
    let text = String::from_utf8(out).unwrap_or_default();
    text.split("\n\n")
        .filter(|e| !e.is_empty())
        .map(|e| {
            let (name, data) = e.split_once('\n').unwrap_or((e, ""));
            let name = name.strip_prefix("event: ").unwrap_or("?").to_string();
            let data: Value =
                serde_json::from_str(data.strip_prefix("data: ").unwrap_or("")).unwrap_or_default();
            assert_eq!(data["type"], name.as_str(), "{e}");
            (name, data)
        })
        .collect()
}

const WEATHER_SCHEMA: &str = r#"{"type":"object","properties":{"location":{"type":"string","description":"The city and state, e.g. San Francisco, CA"},"unit":{"type":"string","enum":["celsius","fahrenheit"]}},"required":["location"]}"#;

fn weather_tool() -> Value {
    json!({"name": "get_weather", "description": "Get the current weather in a given location",
           "input_schema": serde_json::from_str::<Value>(WEATHER_SCHEMA).unwrap_or_default()})
}

#[test]
fn requests() {
    // The API reference's first example, with a string system prompt.
    check_request(
        json!({"model": "claude-sonnet-4-5", "max_tokens": 1024, "system": "You are a scientist",
               "messages": [{"role": "user", "content": "Hello, world"}]}),
        "gemini-2.5-pro",
        json!({"contents": [{"role": "user", "parts": [{"text": "Hello, world"}]}],
               "systemInstruction": {"parts": [{"text": "You are a scientist"}]},
               "generationConfig": {"maxOutputTokens": 1024}}),
    );
    // Multiple turns and a prefilled answer; system blocks with cache_control; sampling.
    check_request(
        json!({"model": "m", "max_tokens": 1, "temperature": 0.5, "top_p": 0.9, "top_k": 40,
               "stop_sequences": ["\n\nHuman:"],
               "system": [{"type": "text", "text": "A", "cache_control": {"type": "ephemeral"}},
                          {"type": "text", "text": "B"}],
               "messages": [
                   {"role": "user", "content": "Hello there."},
                   {"role": "assistant", "content": "Hi, I'm Claude. How can I help you?"},
                   {"role": "user", "content": "What is latin for Ant? (A) Apoidea, (B) Rhopalocera, (C) Formicidae"},
                   {"role": "assistant", "content": "The answer is ("}]}),
        "gemini-2.5-flash",
        json!({"contents": [
                   {"role": "user", "parts": [{"text": "Hello there."}]},
                   {"role": "model", "parts": [{"text": "Hi, I'm Claude. How can I help you?"}]},
                   {"role": "user", "parts": [{"text": "What is latin for Ant? (A) Apoidea, (B) Rhopalocera, (C) Formicidae"}]},
                   {"role": "model", "parts": [{"text": "The answer is ("}]}],
               "systemInstruction": {"parts": [{"text": "A"}, {"text": "B"}]},
               "generationConfig": {"temperature": 0.5, "topP": 0.9, "maxOutputTokens": 1,
                                    "stopSequences": ["\n\nHuman:"], "topK": 40}}),
    );
    // Vision: a base64 image before the question; a PDF document.
    check_request(
        json!({"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": [
            {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": "/9j/4AAQSkZJRg=="}},
            {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0xLjQ="},
             "title": "paper", "citations": {"enabled": true}},
            {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "plain words"}},
            {"type": "text", "text": "Describe this image."}]}]}),
        "gemini-2.5-flash",
        json!({"contents": [{"role": "user", "parts": [
                   {"inlineData": {"mimeType": "image/jpeg", "data": "/9j/4AAQSkZJRg=="}},
                   {"text": "Document title: paper"},
                   {"inlineData": {"mimeType": "application/pdf", "data": "JVBERi0xLjQ="}},
                   {"text": "plain words"},
                   {"text": "Describe this image."}]}],
               "generationConfig": {"maxOutputTokens": 1}}),
    );
    // The tool-use guide's loop: tool_use then tool_result; tool_choice any.
    check_request(
        json!({"model": "m", "max_tokens": 1, "tools": [weather_tool()], "tool_choice": {"type": "any"},
               "messages": [
                   {"role": "user", "content": "What is the weather like in San Francisco?"},
                   {"role": "assistant", "content": [
                       {"type": "text", "text": "<thinking>I need to use get_weather</thinking>"},
                       {"type": "tool_use", "id": "toolu_01A09q90qw90lq917835lq9", "name": "get_weather",
                        "input": {"location": "San Francisco, CA", "unit": "celsius"}}]},
                   {"role": "user", "content": [
                       {"type": "tool_result", "tool_use_id": "toolu_01A09q90qw90lq917835lq9",
                        "content": "15 degrees"}]}]}),
        "gemini-2.5-flash",
        json!({"contents": [
                   {"role": "user", "parts": [{"text": "What is the weather like in San Francisco?"}]},
                   {"role": "model", "parts": [
                       {"text": "<thinking>I need to use get_weather</thinking>"},
                       {"functionCall": {"id": "toolu_01A09q90qw90lq917835lq9", "name": "get_weather",
                                         "args": {"location": "San Francisco, CA", "unit": "celsius"}}}]},
                   {"role": "user", "parts": [
                       {"functionResponse": {"id": "toolu_01A09q90qw90lq917835lq9", "name": "get_weather",
                                             "response": {"output": "15 degrees"}}}]}],
               "tools": [{"functionDeclarations": [{"name": "get_weather",
                   "description": "Get the current weather in a given location",
                   "parametersJsonSchema": serde_json::from_str::<Value>(WEATHER_SCHEMA).unwrap_or_default()}]}],
               "toolConfig": {"functionCallingConfig": {"mode": "ANY"}},
               "generationConfig": {"maxOutputTokens": 1}}),
    );
    // Extended thinking with tools on Gemini 3: the thinking block's signature goes onto the
    // call after it; a call whose block was dropped gets the remembered signature; a result
    // made of blocks (text and an image) keeps its text and sends the image beside it.
    check_request(
        json!({"model": "m", "max_tokens": 16000, "thinking": {"type": "enabled", "budget_tokens": 10000},
               "tools": [weather_tool()],
               "messages": [
                   {"role": "user", "content": "Weather in Paris and Oslo?"},
                   {"role": "assistant", "content": [
                       {"type": "thinking", "thinking": "Two calls.", "signature": "gr1.EqQBCgIYAhIM1gbcDa9GJwZA2b3h"},
                       {"type": "tool_use", "id": "toolu_a", "name": "get_weather", "input": {"location": "Paris"}},
                       {"type": "tool_use", "id": "toolu_cached", "name": "get_weather", "input": {"location": "Oslo"}}]},
                   {"role": "user", "content": [
                       {"type": "tool_result", "tool_use_id": "toolu_a", "content": [
                           {"type": "text", "text": "12C"},
                           {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}]},
                       {"type": "tool_result", "tool_use_id": "toolu_cached", "content": "{\"temp\": -3}"}]}]}),
        "gemini-3-pro-preview",
        json!({"contents": [
                   {"role": "user", "parts": [{"text": "Weather in Paris and Oslo?"}]},
                   {"role": "model", "parts": [
                       {"functionCall": {"id": "toolu_a", "name": "get_weather", "args": {"location": "Paris"}},
                        "thoughtSignature": "EqQBCgIYAhIM1gbcDa9GJwZA2b3h"},
                       {"functionCall": {"id": "toolu_cached", "name": "get_weather", "args": {"location": "Oslo"}},
                        "thoughtSignature": "sig-from-cache"}]},
                   {"role": "user", "parts": [
                       {"functionResponse": {"id": "toolu_a", "name": "get_weather", "response": {"output": "12C"}}},
                       {"functionResponse": {"id": "toolu_cached", "name": "get_weather", "response": {"temp": -3}}},
                       {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}}]}],
               "tools": [{"functionDeclarations": [{"name": "get_weather",
                   "description": "Get the current weather in a given location",
                   "parametersJsonSchema": serde_json::from_str::<Value>(WEATHER_SCHEMA).unwrap_or_default()}]}],
               "generationConfig": {"maxOutputTokens": 16000,
                                    "thinkingConfig": {"thinkingLevel": "high", "includeThoughts": true}}}),
    );
    // Gemini 3 without any signature: the documented stand-in on the step's first call; a
    // system-role message joins the system instruction; server tools are left out.
    check_request(
        json!({"model": "m", "max_tokens": 5,
               "tools": [weather_tool(), {"type": "bash_20250124", "name": "bash"}],
               "messages": [
                   {"role": "system", "content": [{"type": "text", "text": "Be brief."}]},
                   {"role": "user", "content": "go"},
                   {"role": "assistant", "content": [
                       {"type": "redacted_thinking", "data": "EmwKAhgBEgy3va3pzix"},
                       {"type": "tool_use", "id": "toolu_x", "name": "get_weather", "input": {}}]},
                   {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_x"}]}]}),
        "gemini-3-flash-preview",
        json!({"contents": [
                   {"role": "user", "parts": [{"text": "go"}]},
                   {"role": "model", "parts": [
                       {"functionCall": {"id": "toolu_x", "name": "get_weather", "args": {}},
                        "thoughtSignature": "skip_thought_signature_validator"}]},
                   {"role": "user", "parts": [
                       {"functionResponse": {"id": "toolu_x", "name": "get_weather", "response": {"output": ""}}}]}],
               "systemInstruction": {"parts": [{"text": "Be brief."}]},
               "tools": [{"functionDeclarations": [{"name": "get_weather",
                   "description": "Get the current weather in a given location",
                   "parametersJsonSchema": serde_json::from_str::<Value>(WEATHER_SCHEMA).unwrap_or_default()}]}],
               "generationConfig": {"maxOutputTokens": 5}}),
    );
    // A signature this proxy never issued (a session begun on Anthropic): never sent to
    // Gemini, which would refuse it. The call gets the remembered signature, or the stand-in;
    // a text part none.
    check_request(
        json!({"model": "m", "max_tokens": 5, "tools": [weather_tool()],
               "messages": [
                   {"role": "user", "content": "go"},
                   {"role": "assistant", "content": [
                       {"type": "thinking", "thinking": "Hm.", "signature": "EqQBCkgIARABGAIiQL2anthropic"},
                       {"type": "text", "text": "Checking."},
                       {"type": "thinking", "thinking": "", "signature": "EqQBCkgIAnotherForeign"},
                       {"type": "tool_use", "id": "toolu_x", "name": "get_weather", "input": {}},
                       {"type": "thinking", "thinking": "", "signature": "ErUBforeign"},
                       {"type": "tool_use", "id": "toolu_cached", "name": "get_weather", "input": {}}]},
                   {"role": "user", "content": [
                       {"type": "tool_result", "tool_use_id": "toolu_x"},
                       {"type": "tool_result", "tool_use_id": "toolu_cached"}]}]}),
        "gemini-3-flash-preview",
        json!({"contents": [
                   {"role": "user", "parts": [{"text": "go"}]},
                   {"role": "model", "parts": [
                       {"text": "Checking."},
                       {"functionCall": {"id": "toolu_x", "name": "get_weather", "args": {}},
                        "thoughtSignature": "skip_thought_signature_validator"},
                       {"functionCall": {"id": "toolu_cached", "name": "get_weather", "args": {}},
                        "thoughtSignature": "sig-from-cache"}]},
                   {"role": "user", "parts": [
                       {"functionResponse": {"id": "toolu_x", "name": "get_weather", "response": {"output": ""}}},
                       {"functionResponse": {"id": "toolu_cached", "name": "get_weather", "response": {"output": ""}}}]}],
               "tools": [{"functionDeclarations": [{"name": "get_weather",
                   "description": "Get the current weather in a given location",
                   "parametersJsonSchema": serde_json::from_str::<Value>(WEATHER_SCHEMA).unwrap_or_default()}]}],
               "generationConfig": {"maxOutputTokens": 5}}),
    );
    // The web search server tool alone is Google Search grounding; thinking disabled.
    check_request(
        json!({"model": "m", "max_tokens": 5, "thinking": {"type": "disabled"},
               "tools": [{"type": "web_search_20250305", "name": "web_search", "max_uses": 5}],
               "messages": [{"role": "user", "content": "news?"}]}),
        "gemini-2.5-flash",
        json!({"contents": [{"role": "user", "parts": [{"text": "news?"}]}],
               "tools": [{"googleSearch": {}}],
               "generationConfig": {"maxOutputTokens": 5, "thinkingConfig": {"thinkingBudget": 0}}}),
    );
}

#[test]
fn thinking_settings() {
    let config = |thinking: Value, output: Value, model: &str| {
        let mut request = json!({"model": "m", "max_tokens": 200000,
                                 "messages": [{"role": "user", "content": "x"}]});
        if !thinking.is_null() {
            request["thinking"] = thinking;
        }
        if !output.is_null() {
            request["output_config"] = output;
        }
        gemini(&request, model).expect("builds")["generationConfig"]["thinkingConfig"].clone()
    };
    let enabled = |budget: u32| json!({"type": "enabled", "budget_tokens": budget});
    assert_eq!(
        config(enabled(1024), Value::Null, "gemini-2.5-pro"),
        json!({"thinkingBudget": 1024, "includeThoughts": true})
    );
    // Within the model's range.
    assert_eq!(
        config(enabled(100_000), Value::Null, "gemini-2.5-pro"),
        json!({"thinkingBudget": 32768, "includeThoughts": true})
    );
    assert_eq!(
        config(enabled(1024), Value::Null, "gemini-3-pro-preview"),
        json!({"thinkingLevel": "low", "includeThoughts": true})
    );
    assert_eq!(
        config(enabled(31999), Value::Null, "gemini-3-pro-preview"),
        json!({"thinkingLevel": "high", "includeThoughts": true})
    );
    let adaptive = json!({"type": "adaptive"});
    assert_eq!(
        config(adaptive.clone(), Value::Null, "gemini-2.5-flash"),
        json!({"includeThoughts": true})
    );
    assert_eq!(
        config(
            adaptive,
            json!({"effort": "medium"}),
            "gemini-3-flash-preview"
        ),
        json!({"thinkingLevel": "medium", "includeThoughts": true})
    );
    assert_eq!(
        config(Value::Null, json!({"effort": "high"}), "gemini-2.5-flash"),
        json!({"thinkingBudget": 24576, "includeThoughts": true})
    );
    assert_eq!(
        config(Value::Null, Value::Null, "gemini-2.5-flash"),
        Value::Null
    );
}

#[test]
fn refusals() {
    let msg = |content: Value| json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": content}]});
    check_refused(
        json!({"model": "m", "max_tokens": 5, "messages": []}),
        "messages",
    );
    check_refused(
        json!({"model": "", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}),
        "model",
    );
    check_refused(
        msg(
            json!([{"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "%%%"}}]),
        ),
        "messages[0].content[0].source.data",
    );
    check_refused(
        msg(json!([{"type": "image", "source": {"type": "file", "file_id": "file_1"}}])),
        "messages[0].content[0].source.type",
    );
    check_refused(
        msg(
            json!([{"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}}]),
        ),
        "messages[0].content[0].source.url",
    );
    check_refused(
        msg(json!([{"type": "video"}])),
        "messages[0].content[0].type",
    );
    check_refused(
        msg(json!([{"type": "tool_result"}])),
        "messages[0].content[0].tool_use_id",
    );
    let mut r = msg(json!("x"));
    r["tool_choice"] = json!({"type": "tool"});
    r["tools"] = json!([weather_tool()]);
    check_refused(r.clone(), "tool_choice.name");
    r["tool_choice"] = json!({"type": "sometimes"});
    check_refused(r, "tool_choice.type");
    let mut r = msg(json!("x"));
    r["output_config"] = json!({"effort": "extreme"});
    check_refused(r, "output_config.effort");
    let mut r = msg(json!("x"));
    r["stop_sequences"] = json!(["a", "b", "c", "d", "e", "f"]);
    check_refused(r, "stop_sequences");
    let mut r = msg(json!("x"));
    r["system"] = json!([{"type": "image"}]);
    check_refused(r, "system[0].type");
}

#[test]
fn responses() {
    // The API reference's answer.
    check_response(
        json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "Hi! My name is Claude."}]},
                               "finishReason": "STOP"}],
               "usageMetadata": {"promptTokenCount": 2095, "candidatesTokenCount": 503, "totalTokenCount": 2598}}),
        json!({"id": "msg_013Zva2CMHLNnXjNJJKqJ2EF", "type": "message", "role": "assistant",
               "model": "claude-sonnet-4-5",
               "content": [{"type": "text", "text": "Hi! My name is Claude."}],
               "stop_reason": "end_turn", "stop_sequence": null,
               "usage": {"input_tokens": 2095, "output_tokens": 503,
                         "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}}),
    );
    // A signed tool call (Gemini 3): thinking block with the signature, then tool_use; cached
    // prompt tokens are cache reads; thoughts count as output.
    check_response(
        json!({"candidates": [{"content": {"parts": [
                   {"text": "I should check.", "thought": true},
                   {"text": "Checking."},
                   {"functionCall": {"name": "get_weather", "args": {"location": "San Francisco, CA"}},
                    "thoughtSignature": "c2lnLTE="},
                   {"functionCall": {"id": "call-2", "name": "get_time", "args": {}}}]},
                   "finishReason": "STOP"}],
               "usageMetadata": {"promptTokenCount": 100, "cachedContentTokenCount": 60,
                                 "candidatesTokenCount": 10, "thoughtsTokenCount": 5}}),
        json!({"id": "msg_013Zva2CMHLNnXjNJJKqJ2EF", "type": "message", "role": "assistant",
               "model": "claude-sonnet-4-5",
               "content": [
                   {"type": "thinking", "thinking": "I should check.", "signature": ""},
                   {"type": "text", "text": "Checking."},
                   {"type": "thinking", "thinking": "", "signature": "gr1.c2lnLTE="},
                   {"type": "tool_use", "id": "toolu_013Zva2CMHLNnXjNJJKqJ2EF_0", "name": "get_weather",
                    "input": {"location": "San Francisco, CA"}},
                   {"type": "tool_use", "id": "call-2", "name": "get_time", "input": {}}],
               "stop_reason": "tool_use", "stop_sequence": null,
               "usage": {"input_tokens": 40, "output_tokens": 15,
                         "cache_creation_input_tokens": 0, "cache_read_input_tokens": 60}}),
    );
    // Thoughts then a signed call: the signature lands on the thoughts' own block.
    check_response(
        json!({"candidates": [{"content": {"parts": [
                   {"text": "Plan.", "thought": true},
                   {"functionCall": {"name": "f", "args": {"a": 1}}, "thoughtSignature": "sig"}]},
                   "finishReason": "MAX_TOKENS"}]}),
        json!({"id": "msg_013Zva2CMHLNnXjNJJKqJ2EF", "type": "message", "role": "assistant",
               "model": "claude-sonnet-4-5",
               "content": [
                   {"type": "thinking", "thinking": "Plan.", "signature": "gr1.sig"},
                   {"type": "tool_use", "id": "toolu_013Zva2CMHLNnXjNJJKqJ2EF_0", "name": "f", "input": {"a": 1}}],
               "stop_reason": "max_tokens", "stop_sequence": null,
               "usage": {"input_tokens": 0, "output_tokens": 0,
                         "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}}),
    );
    let whole = from_gemini(
        br#"{"candidates":[{"content":{"parts":[{"functionCall":{"name":"f","args":{}},"thoughtSignature":"s1"}]}}]}"#,
        &ctx(),
    )
    .expect("translates");
    assert_eq!(
        whole.signatures,
        [(
            "toolu_013Zva2CMHLNnXjNJJKqJ2EF_0".to_string(),
            "s1".to_string()
        )]
    );
    assert!(whole.answered);
}

/// An answer with nothing but thoughts, or nothing at all: Anthropic's own `max_tokens` and
/// `refusal` stops come that way and are answers; any other empty stop is not.
#[test]
fn empty_answers_that_anthropic_gives_too() {
    let cases: [(&[u8], Option<&str>); 6] = [
        (
            br#"{"candidates":[{"content":{"parts":[{"text":"hmm","thought":true}]},"finishReason":"MAX_TOKENS"}]}"#,
            Some("max_tokens"),
        ),
        (
            br#"{"candidates":[{"finishReason":"MAX_TOKENS"}],"usageMetadata":{"promptTokenCount":3,"thoughtsTokenCount":31999}}"#,
            Some("max_tokens"),
        ),
        (
            br#"{"candidates":[{"finishReason":"SAFETY","safetyRatings":[]}]}"#,
            Some("refusal"),
        ),
        (
            br#"{"promptFeedback":{"blockReason":"PROHIBITED_CONTENT"},"usageMetadata":{"promptTokenCount":3}}"#,
            Some("refusal"),
        ),
        (
            br#"{"candidates":[{"content":{"parts":[{"text":"hmm","thought":true}]},"finishReason":"STOP"}]}"#,
            None,
        ),
        (
            br#"{"candidates":[{"finishReason":"MALFORMED_FUNCTION_CALL"}]}"#,
            None,
        ),
    ];
    for (gemini, stop) in cases {
        let whole = from_gemini(gemini, &ctx()).expect("translates");
        let body: Value = serde_json::from_slice(&whole.body).expect("json");
        let shown = String::from_utf8_lossy(gemini);
        assert_eq!(whole.answered, stop.is_some(), "{shown}");
        if let Some(stop) = stop {
            assert_eq!(body["stop_reason"], stop, "{shown}");
            assert!(
                body["content"]
                    .as_array()
                    .expect("content")
                    .iter()
                    .all(|b| b["type"] == "thinking"),
                "{shown}"
            );
        }
        // The same as a stream: it closes with message_delta, or it is the empty-stream error.
        let mut stream = StreamTranslator::new(ctx());
        stream.on_event(gemini).expect("event");
        let end = EventStream::finish(&mut stream);
        match stop {
            Some(stop) => {
                let end = String::from_utf8(end.expect("closes").to_vec()).expect("utf-8");
                assert!(
                    end.contains(&format!(r#""stop_reason":"{stop}""#)),
                    "{shown}: {end}"
                );
                assert!(end.contains("event: message_stop"), "{end}");
            }
            None => assert!(
                matches!(end, Err(TranslateError::EmptyAnswer { .. })),
                "{shown}"
            ),
        }
    }
    assert!(matches!(
        from_gemini(
            br#"{"error":{"code":429,"message":"quota","status":"RESOURCE_EXHAUSTED"}}"#,
            &ctx()
        ),
        Err(TranslateError::UpstreamError { code: 429, .. })
    ));
}

#[test]
fn stream_event_order() {
    let usage = json!({"promptTokenCount": 25, "candidatesTokenCount": 3});
    // The streaming reference's text answer.
    let events = run_stream(&[
        json!({"candidates": [{"content": {"parts": [{"text": "Hello"}]}}], "usageMetadata": usage}),
        json!({"candidates": [{"content": {"parts": [{"text": "!"}]}, "finishReason": "STOP"}], "usageMetadata": usage}),
    ]);
    let expected = vec![
        (
            "message_start",
            json!({"type": "message_start", "message": {
            "id": "msg_013Zva2CMHLNnXjNJJKqJ2EF", "type": "message", "role": "assistant",
            "model": "claude-sonnet-4-5", "content": [], "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": 25, "output_tokens": 0, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}}}),
        ),
        ("ping", json!({"type": "ping"})),
        (
            "content_block_start",
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        ),
        (
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hello"}}),
        ),
        (
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "!"}}),
        ),
        (
            "content_block_stop",
            json!({"type": "content_block_stop", "index": 0}),
        ),
        (
            "message_delta",
            json!({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null},
            "usage": {"input_tokens": 25, "output_tokens": 3, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}}),
        ),
        ("message_stop", json!({"type": "message_stop"})),
    ];
    let got: Vec<(&str, Value)> = events
        .iter()
        .map(|(n, d)| (n.as_str(), d.clone()))
        .collect();
    assert_eq!(got, expected);

    // Thinking, then a signed tool call (the extended-thinking-with-tools reference).
    let events = run_stream(&[
        json!({"candidates": [{"content": {"parts": [{"text": "Let me", "thought": true}]}}]}),
        json!({"candidates": [{"content": {"parts": [{"text": " think.", "thought": true}]}}]}),
        json!({"candidates": [{"content": {"parts": [{"functionCall": {"name": "get_weather", "args": {"location": "Paris"}},
                                                       "thoughtSignature": "EqQBCg"}]},
                               "finishReason": "STOP"}]}),
    ]);
    let deltas: Vec<Value> = events
        .iter()
        .filter(|(n, _)| n == "content_block_delta" || n == "content_block_start")
        .map(|(_, d)| {
            let mut d = d.clone();
            d.as_object_mut().map(|o| o.remove("type"));
            d
        })
        .collect();
    assert_eq!(
        deltas,
        vec![
            json!({"index": 0, "content_block": {"type": "thinking", "thinking": "", "signature": ""}}),
            json!({"index": 0, "delta": {"type": "thinking_delta", "thinking": "Let me"}}),
            json!({"index": 0, "delta": {"type": "thinking_delta", "thinking": " think."}}),
            json!({"index": 0, "delta": {"type": "signature_delta", "signature": "gr1.EqQBCg"}}),
            json!({"index": 1, "content_block": {"type": "tool_use", "id": "toolu_013Zva2CMHLNnXjNJJKqJ2EF_0",
                                                  "name": "get_weather", "input": {}}}),
            json!({"index": 1, "delta": {"type": "input_json_delta", "partial_json": "{\"location\":\"Paris\"}"}}),
        ]
    );
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "message_start",
            "ping",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "content_block_start",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    assert_eq!(events[10].1["delta"]["stop_reason"], "tool_use");

    // An upstream error inside the stream is the translator's error (the relay frames it).
    let mut translator = StreamTranslator::new(ctx());
    let error = translator
        .on_event(br#"{"error":{"code":503,"message":"overloaded","status":"UNAVAILABLE"}}"#);
    assert!(matches!(
        error,
        Err(TranslateError::UpstreamError { code: 503, .. })
    ));
}

#[test]
fn count_tokens_bodies() {
    let request = json!({"model": "m", "system": "S", "messages": [{"role": "user", "content": "Hello"}],
                         "temperature": 0.2});
    let text = request.to_string();
    let parsed = parse(text.as_bytes(), "").expect("parses");
    let body = count_tokens_body(
        &parsed,
        &Target {
            model: "gemini-2.5-pro",
            ..Target::default()
        },
        &Extras::default(),
    )
    .expect("builds");
    let got: Value = serde_json::from_slice(&body).unwrap_or_default();
    assert_eq!(
        got,
        json!({"generateContentRequest": {"model": "models/gemini-2.5-pro",
               "contents": [{"role": "user", "parts": [{"text": "Hello"}]}],
               "systemInstruction": {"parts": [{"text": "S"}]}}})
    );
    let answer =
        count_tokens_answer(br#"{"totalTokens": 14, "promptTokensDetails": []}"#).expect("reads");
    assert_eq!(
        serde_json::from_slice::<Value>(&answer).unwrap_or_default(),
        json!({"input_tokens": 14})
    );
}

#[test]
fn remote_image_urls_are_listed_for_fetching() {
    let request = json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": [
        {"type": "image", "source": {"type": "url", "url": "https://upload.wikimedia.org/a.jpg"}},
        {"type": "tool_result", "tool_use_id": "t", "content": [
            {"type": "image", "source": {"type": "url", "url": "http://example.com/b.png"}}]},
        {"type": "image", "source": {"type": "url", "url": "ftp://example.com/c.png"}}]}]});
    let text = request.to_string();
    let parsed = parse(text.as_bytes(), "").expect("parses");
    assert_eq!(
        remote_media_urls(&parsed),
        [
            "https://upload.wikimedia.org/a.jpg",
            "http://example.com/b.png"
        ]
    );
}

/// `tool_choice.disable_parallel_tool_use` (`ResponseCtx::one_call`): the first call only,
/// whole and streamed.
#[test]
fn one_call_when_parallel_tool_use_is_disabled() {
    let gemini = br#"{"candidates":[{"content":{"parts":[{"functionCall":{"name":"f","args":{"a":1}}},{"functionCall":{"name":"g","args":{}}}]},"finishReason":"STOP"}]}"#;
    for one_call in [false, true] {
        let ctx = ResponseCtx { one_call, ..ctx() };
        let whole = from_gemini(gemini, &ctx).expect("translates");
        let body: Value = serde_json::from_slice(&whole.body).expect("json");
        let names: Vec<&str> = body["content"]
            .as_array()
            .expect("content")
            .iter()
            .filter_map(|b| b["name"].as_str())
            .collect();
        assert_eq!(names, if one_call { vec!["f"] } else { vec!["f", "g"] });
        let mut stream = StreamTranslator::new(ctx);
        let out =
            String::from_utf8(stream.on_event(gemini).expect("event").to_vec()).expect("utf-8");
        assert_eq!(out.contains(r#""name":"g""#), !one_call, "{out}");
        assert!(out.contains(r#""name":"f""#), "{out}");
    }
}

/// Documents as Anthropic's PDF and citations guides send them: `title` and `context` said
/// before the document, `text` and `content` sources, a fetched `url`; `search_result` blocks
/// as text, in a turn and inside a tool result.
#[test]
fn documents_and_search_results() {
    let user = |content: Value| json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": content}]});
    let parts = |content: Value| {
        gemini(&user(content), "gemini-2.5-flash").expect("builds")["contents"][0]["parts"].clone()
    };
    assert_eq!(
        parts(json!([
            {"type": "document", "title": "Q3 report", "context": "Internal, draft",
             "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0x"},
             "citations": {"enabled": true}},
            {"type": "text", "text": "Summarise"}])),
        json!([{"text": "Document title: Q3 report\nDocument context: Internal, draft"},
               {"inlineData": {"mimeType": "application/pdf", "data": "JVBERi0x"}},
               {"text": "Summarise"}])
    );
    assert_eq!(
        parts(json!([
            {"type": "document", "source": {"type": "content", "content": [
                {"type": "text", "text": "First chunk"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0K"}}]}},
            {"type": "document", "title": "Notes", "source": {"type": "content", "content": "Plain"}},
            {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "Grass is green."}}])),
        json!([{"text": "First chunk"},
               {"inlineData": {"mimeType": "image/png", "data": "iVBORw0K"}},
               {"text": "Document title: Notes"}, {"text": "Plain"},
               {"text": "Grass is green."}])
    );
    let search = json!({"type": "search_result", "source": "https://example.com/kb/1",
                        "title": "Refunds", "citations": {"enabled": true},
                        "content": [{"type": "text", "text": "Refunds take 5 days."},
                                    {"type": "text", "text": "Ask support."}]});
    assert_eq!(
        parts(json!([search.clone(), {"type": "text", "text": "When?"}])),
        json!([{"text": "Search result: Refunds\nSource: https://example.com/kb/1\nRefunds take 5 days.\nAsk support."},
               {"text": "When?"}])
    );
    // Inside a tool result, the search result is what the tool answered.
    let request = json!({"model": "m", "max_tokens": 5, "messages": [
        {"role": "user", "content": "Look it up"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "kb", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1",
                                      "content": [{"type": "text", "text": "1 hit"}, search]}]}]});
    let built = gemini(&request, "gemini-2.5-flash").expect("builds");
    assert_eq!(
        built["contents"][2]["parts"],
        json!([{"functionResponse": {"id": "toolu_1", "name": "kb", "response": {"output":
            "1 hit\nSearch result: Refunds\nSource: https://example.com/kb/1\nRefunds take 5 days.\nAsk support."}}}])
    );

    // A URL document is fetched by the caller (listed, then handed back); it must be a PDF.
    let request = user(json!([
        {"type": "document", "source": {"type": "url", "url": "https://example.com/a.pdf"}},
        {"type": "document", "source": {"type": "content", "content": [
            {"type": "image", "source": {"type": "url", "url": "https://example.com/b.png"}}]}}]));
    let text = request.to_string();
    let parsed = parse(text.as_bytes(), "").expect("parses");
    assert_eq!(
        remote_media_urls(&parsed),
        ["https://example.com/a.pdf", "https://example.com/b.png"]
    );
    let file = |mime: &str, bytes: &[u8]| crate::translate::FetchedFile {
        mime_type: mime.into(),
        bytes: bytes.to_vec(),
    };
    let mut media = std::collections::HashMap::new();
    media.insert(
        "https://example.com/a.pdf".to_string(),
        file("application/pdf", b"%PDF-1"),
    );
    media.insert(
        "https://example.com/b.png".to_string(),
        file("image/png", b"\x89PNG"),
    );
    let built = gemini_with(&request, "gemini-2.5-flash", "", Some(&media)).expect("builds");
    assert_eq!(
        built["contents"][0]["parts"],
        json!([{"inlineData": {"mimeType": "application/pdf", "data": "JVBERi0x"}},
               {"inlineData": {"mimeType": "image/png", "data": "iVBORw=="}}])
    );
    // An image where a PDF is wanted is the client's 400 naming the URL's field.
    media.insert(
        "https://example.com/a.pdf".to_string(),
        file("image/png", b"\x89PNG"),
    );
    match gemini_with(&request, "gemini-2.5-flash", "", Some(&media)) {
        Err(TranslateError::InvalidRequest { param, message }) => {
            assert_eq!(param.as_deref(), Some("messages[0].content[0].source.url"));
            assert!(message.contains("not a PDF"), "{message}");
        }
        other => panic!("expected a 400, got {other:?}"),
    }
}

/// Anthropic's own limits on numbers and on the thinking budget, and a `tool` choice that
/// names no declared tool: the client's 400 naming the field, before any upstream call.
#[test]
fn anthropic_limits() {
    let base = || json!({"model": "m", "max_tokens": 2048, "messages": [{"role": "user", "content": "x"}]});
    let with = |field: &str, value: Value| {
        let mut r = base();
        r[field] = value;
        r
    };
    check_refused(with("max_tokens", json!(-1)), "max_tokens");
    check_refused(with("max_tokens", json!(0)), "max_tokens");
    check_refused(with("top_k", json!(-5)), "top_k");
    let thinking = |budget: i64| {
        with(
            "thinking",
            json!({"type": "enabled", "budget_tokens": budget}),
        )
    };
    check_refused(thinking(512), "thinking.budget_tokens");
    check_refused(thinking(-1), "thinking.budget_tokens");
    check_refused(thinking(2048), "thinking.budget_tokens");
    assert!(gemini(&thinking(2047), "gemini-2.5-flash").is_ok());
    // Interleaved thinking lets the budget exceed max_tokens (Claude Code sends the beta).
    let beta = "claude-code-20250219,interleaved-thinking-2025-05-14";
    assert!(gemini_with(&thinking(31999), "gemini-2.5-flash", beta, None).is_ok());
    // A disabled thinking's budget is not checked.
    assert!(gemini(
        &with("thinking", json!({"type": "disabled", "budget_tokens": 1})),
        "gemini-2.5-flash"
    )
    .is_ok());
    // `top_k: 0` restricts nothing and is not sent.
    let built = gemini(&with("top_k", json!(0)), "gemini-2.5-flash").expect("builds");
    assert_eq!(built["generationConfig"], json!({"maxOutputTokens": 2048}));

    let mut r = base();
    r["tools"] = json!([weather_tool()]);
    r["tool_choice"] = json!({"type": "tool", "name": "get_time"});
    check_refused(r.clone(), "tool_choice.name");
    r["tool_choice"] = json!({"type": "tool", "name": "get_weather"});
    let built = gemini(&r, "gemini-2.5-flash").expect("builds");
    assert_eq!(
        built["toolConfig"],
        json!({"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}})
    );
    r["tools"] = json!([]);
    check_refused(r, "tool_choice.name");
    // Two names Gemini would get alike cannot be told apart in its calls.
    let mapped = crate::translate::tool_name::gemini_name("my tool").into_owned();
    check_refused(
        with("tools", json!([{"name": "my tool"}, {"name": mapped}])),
        "tools[1].name",
    );
    check_refused(
        with(
            "messages",
            json!([{"role": "user", "content": [{"type": "search_result", "title": "t"}]}]),
        ),
        "messages[0].content[0].content",
    );
    check_refused(
        with(
            "messages",
            json!([{"role": "user", "content": [{"type": "image", "source": "https://x/y.png"}]}]),
        ),
        "messages[0].content[0].source",
    );
}

/// Gemini 3: a tool result that carries a screenshot beside its response is still a step of
/// the current turn, so the earlier call whose signature the client lost gets the stand-in;
/// user text beside it starts a new turn, as Gemini counts turns.
#[test]
fn media_beside_a_tool_result_keeps_the_turn() {
    let request = json!({"model": "m", "max_tokens": 5, "messages": [
        {"role": "user", "content": "Take a screenshot"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_a", "name": "shot", "input": {}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_a", "content": [
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0K"}}]}]}]});
    let built = gemini(&request, "gemini-3-pro-preview").expect("builds");
    assert_eq!(
        built["contents"][1]["parts"][0]["thoughtSignature"],
        "skip_thought_signature_validator"
    );
    let mut request = request;
    request["messages"][2]["content"]
        .as_array_mut()
        .expect("blocks")
        .push(json!({"type": "text", "text": "<system-reminder>go on</system-reminder>"}));
    let built = gemini(&request, "gemini-3-pro-preview").expect("builds");
    assert_eq!(
        built["contents"][1]["parts"][0].get("thoughtSignature"),
        None
    );
}
