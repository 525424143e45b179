//! Table tests for translation, one `check_*` helper per direction; inputs are shaped like what
//! Cline, the openai SDK and the Vercel AI SDK send (protocol.md §7, §10).

use serde_json::{json, Value};

use std::collections::HashMap;

use super::*;
use crate::translate::FetchedFile;

fn ctx() -> ResponseCtx {
    ResponseCtx {
        id: "chatcmpl-abc".into(),
        created: 1_700_000_000,
        model: "gpt-4o".into(),
        one_call: false,
        legacy_functions: false,
        tool_names: Default::default(),
    }
}

fn target(model: &str) -> Target<'_> {
    Target {
        model,
        reasoning_effort: None,
        safety: None,
    }
}

/// OpenAI request → Gemini request body.
fn check_request(input: Value, target: Target<'_>, expected: Value) {
    let text = input.to_string();
    let req = parse_chat_request(text.as_bytes()).expect("parses");
    let body = to_gemini(&req, &target).expect("translates");
    let got: Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(got, expected, "input: {input}");
}

/// An OpenAI request that must be refused with `param`.
fn check_invalid(input: &str, target: Target<'_>, param: Option<&str>) {
    let result = parse_chat_request(input.as_bytes()).and_then(|r| to_gemini(&r, &target));
    match result {
        Err(TranslateError::InvalidRequest { param: p, message }) => {
            assert_eq!(p.as_deref(), param, "input: {input}, message: {message}");
            assert!(!message.is_empty());
        }
        other => panic!("expected InvalidRequest for {input}, got {other:?}"),
    }
}

/// Gemini response → OpenAI chat.completion.
fn check_response(input: Value, expected: Value) {
    let body = from_gemini(input.to_string().as_bytes(), &ctx()).expect("translates");
    let got: Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(got, expected, "input: {input}");
}

/// Gemini stream events → the OpenAI chunks' JSON (`[DONE]` as the string "[DONE]").
fn check_stream(events: &[Value], include_usage: bool, expected: Vec<Value>) {
    let mut t = StreamTranslator::new(ctx(), include_usage);
    let mut out = Vec::new();
    for e in events {
        out.extend_from_slice(&t.on_event(e.to_string().as_bytes()).expect("event"));
    }
    out.extend_from_slice(&t.finish());
    let text = String::from_utf8(out).expect("utf8");
    let got: Vec<Value> = text
        .split_terminator("\n\n")
        .map(|ev| {
            let data = ev.strip_prefix("data: ").expect("data: prefix");
            if data == "[DONE]" {
                Value::String(data.into())
            } else {
                serde_json::from_str(data).expect("chunk json")
            }
        })
        .collect();
    assert_eq!(got, expected, "events: {events:?}");
}

/// A chunk as the translator frames it, for `check_stream`'s expectations.
fn chunk(choice: Value) -> Value {
    json!({"id": "chatcmpl-abc", "object": "chat.completion.chunk", "created": 1_700_000_000,
           "model": "gpt-4o", "choices": [choice]})
}

// ---------- requests ----------

#[test]
fn request_messages() {
    // openai SDK: plain strings, system first.
    check_request(
        json!({"model": "gpt-4o", "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "hi"}]}),
        target("gemini-2.5-flash"),
        json!({"contents": [{"role": "user", "parts": [{"text": "hi"}]}],
               "systemInstruction": {"parts": [{"text": "be brief"}]}}),
    );
    // developer role (Cline for o-series ids), part arrays, adjacent user turns merged,
    // unknown fields dropped.
    check_request(
        json!({"model": "m", "user": "u1", "store": true, "metadata": {"a": 1},
               "messages": [
            {"role": "developer", "content": [{"type": "text", "text": "sys"}]},
            {"role": "system", "content": "more"},
            {"role": "user", "content": [{"type": "text", "text": "a"}]},
            {"role": "user", "content": "b", "name": "bob"},
            {"role": "assistant", "content": "c", "refusal": null},
            {"role": "assistant", "content": [{"type": "text", "text": "d"}]},
            {"role": "user", "content": "e"}]}),
        target("gemini-2.5-pro"),
        json!({"contents": [
                {"role": "user", "parts": [{"text": "a"}, {"text": "b"}]},
                {"role": "model", "parts": [{"text": "c"}, {"text": "d"}]},
                {"role": "user", "parts": [{"text": "e"}]}],
               "systemInstruction": {"parts": [{"text": "sys"}, {"text": "more"}]}}),
    );
    // History opening with the assistant gets a user turn first; empty content is dropped.
    check_request(
        json!({"model": "m", "messages": [
            {"role": "assistant", "content": "hello"},
            {"role": "assistant", "content": ""},
            {"role": "user", "content": null},
            {"role": "user", "content": "go"}]}),
        target("gemini-2.5-flash"),
        json!({"contents": [
            {"role": "user", "parts": [{"text": "Continue."}]},
            {"role": "model", "parts": [{"text": "hello"}]},
            {"role": "user", "parts": [{"text": "go"}]}]}),
    );
    // System text alone is asked as the user's turn: Gemini refuses a request without contents.
    check_request(
        json!({"model": "m", "messages": [
            {"role": "system", "content": "Write a haiku about rust."},
            {"role": "user", "content": ""}]}),
        target("gemini-2.5-flash"),
        json!({"contents": [
            {"role": "user", "parts": [{"text": "Write a haiku about rust."}]}]}),
    );
}

#[test]
fn request_generation_config() {
    // Cline: temperature 0, max_tokens, stream with include_usage.
    check_request(
        json!({"model": "m", "messages": [{"role": "user", "content": "x"}],
               "temperature": 0, "max_tokens": 100, "stream": true,
               "stream_options": {"include_usage": true}}),
        target("gemini-2.5-flash"),
        json!({"contents": [{"role": "user", "parts": [{"text": "x"}]}],
               "generationConfig": {"temperature": 0.0, "maxOutputTokens": 100}}),
    );
    // max_completion_tokens wins; stop string; penalties, seed, n, top_p, logprobs.
    check_request(
        json!({"model": "m", "messages": [{"role": "user", "content": "x"}],
               "max_tokens": 100, "max_completion_tokens": 200, "stop": "END", "n": 2,
               "seed": 7, "top_p": 0.5, "presence_penalty": 0.1, "frequency_penalty": 0.2,
               "logprobs": true, "top_logprobs": 3, "parallel_tool_calls": false}),
        target("gemini-2.5-flash"),
        json!({"contents": [{"role": "user", "parts": [{"text": "x"}]}],
               "generationConfig": {"maxOutputTokens": 200, "stopSequences": ["END"],
                 "candidateCount": 2, "seed": 7, "topP": 0.5, "presencePenalty": 0.1,
                 "frequencyPenalty": 0.2, "responseLogprobs": true, "logprobs": 3}}),
    );
    // Gemini 3 rejects penalties: dropped. Stop arrays pass through. Nulls are absent.
    check_request(
        json!({"model": "m", "messages": [{"role": "user", "content": "x"}],
               "presence_penalty": 0.5, "frequency_penalty": 0.5, "stop": ["a", "b"],
               "temperature": null, "max_tokens": null, "stream": null, "tools": null}),
        target("models/gemini-3-pro-preview"),
        json!({"contents": [{"role": "user", "parts": [{"text": "x"}]}],
               "generationConfig": {"stopSequences": ["a", "b"]}}),
    );
}

#[test]
fn request_safety() {
    let mut t = target("gemini-2.5-flash");
    t.safety = Some("BLOCK_NONE");
    check_request(
        json!({"model": "m", "messages": [{"role": "user", "content": "x"}]}),
        t,
        json!({"contents": [{"role": "user", "parts": [{"text": "x"}]}],
               "safetySettings": [
                 {"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_NONE"},
                 {"category": "HARM_CATEGORY_HATE_SPEECH", "threshold": "BLOCK_NONE"},
                 {"category": "HARM_CATEGORY_SEXUALLY_EXPLICIT", "threshold": "BLOCK_NONE"},
                 {"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "threshold": "BLOCK_NONE"}]}),
    );
}

#[test]
fn request_invalid() {
    let t = || target("gemini-2.5-flash");
    check_invalid(
        r#"{"messages":[{"role":"user","content":"x"}]}"#,
        t(),
        Some("model"),
    );
    check_invalid(r#"{"model":"m"}"#, t(), Some("messages"));
    check_invalid(r#"{"model":"m","messages":[]}"#, t(), Some("messages"));
    // Nothing to send once empty text is dropped: refused here, not by Google's 400.
    check_invalid(
        r#"{"model":"m","messages":[{"role":"user","content":""},{"role":"user","content":[{"type":"text","text":""}]}]}"#,
        t(),
        Some("messages"),
    );
    check_invalid(
        r#"{"model":"","messages":[{"role":"user","content":"x"}]}"#,
        t(),
        Some("model"),
    );
    check_invalid("not json", t(), None);
    check_invalid(
        r#"{"model":"m","messages":[{"role":"user","content":"x"}],"temperature":"hot"}"#,
        t(),
        None,
    );
    check_invalid(
        r#"{"model":"m","messages":[{"role":"user","content":5}]}"#,
        t(),
        None,
    );
    check_invalid(
        r#"{"model":"m","messages":[{"role":"user","content":"x"}],"stop":["1","2","3","4","5","6"]}"#,
        t(),
        Some("stop"),
    );
    check_invalid(
        r#"{"model":"m","messages":[{"role":"user","content":"x"}],"tool_choice":"sometimes"}"#,
        t(),
        None,
    );
    // OpenAI's ranges (Gemini's too; at most 8 candidates), refused before Google sees them.
    for (field, value) in [
        ("n", "0"),
        ("n", "9"),
        ("temperature", "2.5"),
        ("temperature", "-1"),
        ("top_p", "1.5"),
        ("presence_penalty", "3"),
        ("frequency_penalty", "-2.5"),
        ("top_logprobs", "21"),
    ] {
        check_invalid(
            &format!(
                r#"{{"model":"m","messages":[{{"role":"user","content":"x"}}],"{field}":{value}}}"#
            ),
            t(),
            Some(field),
        );
    }
    // A named tool_choice must name one of the tools.
    check_invalid(
        r#"{"model":"m","messages":[{"role":"user","content":"x"}],"tools":[{"type":"function","function":{"name":"f"}}],"tool_choice":{"type":"function","function":{"name":"g"}}}"#,
        t(),
        Some("tool_choice"),
    );
}

#[test]
fn request_flags() {
    let parse = |s: &'static str| parse_chat_request(s.as_bytes()).expect("parses");
    let r = parse(
        r#"{"model":"m","messages":[{"role":"user","content":"x"}],"stream":true,"stream_options":{"include_usage":true},"reasoning_effort":"high"}"#,
    );
    assert!(r.stream && r.include_usage());
    assert_eq!(r.reasoning_effort.as_deref(), Some("high"));
    let r = parse(r#"{"model":"m","messages":[{"role":"user","content":"x"}]}"#);
    assert!(!r.stream && !r.include_usage());
}

// ---------- whole responses ----------

fn completion(choices: Value, usage: Value) -> Value {
    json!({"id": "chatcmpl-abc", "object": "chat.completion", "created": 1_700_000_000,
           "model": "gpt-4o", "choices": choices, "usage": usage})
}

fn usage(prompt: u64, completion: u64, total: u64, cached: u64, reasoning: u64) -> Value {
    json!({"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": total,
           "prompt_tokens_details": {"cached_tokens": cached},
           "completion_tokens_details": {"reasoning_tokens": reasoning}})
}

fn message(content: Value) -> Value {
    json!({"role": "assistant", "content": content, "refusal": null})
}

#[test]
fn response_text() {
    check_response(
        json!({"candidates": [{"content": {"role": "model", "parts": [
                  {"text": "plan", "thought": true}, {"text": "Hel"}, {"text": "lo"}]},
                "finishReason": "STOP", "index": 0}],
               "usageMetadata": {"promptTokenCount": 10, "candidatesTokenCount": 5,
                 "thoughtsTokenCount": 7, "toolUsePromptTokenCount": 2,
                 "cachedContentTokenCount": 4, "totalTokenCount": 24},
               "modelVersion": "gemini-2.5-flash", "responseId": "r1"}),
        completion(
            json!([{"index": 0, "message": {"role": "assistant", "content": "Hello",
                     "reasoning_content": "plan", "refusal": null},
                    "finish_reason": "stop", "logprobs": null}]),
            usage(12, 12, 24, 4, 7),
        ),
    );
}

#[test]
fn response_finish_reasons() {
    let cases = [
        ("STOP", "stop"),
        ("MAX_TOKENS", "length"),
        ("SAFETY", "content_filter"),
        ("RECITATION", "content_filter"),
        ("BLOCKLIST", "content_filter"),
        ("PROHIBITED_CONTENT", "content_filter"),
        ("SPII", "content_filter"),
        ("IMAGE_SAFETY", "content_filter"),
        ("OTHER", "stop"),
        ("MALFORMED_FUNCTION_CALL", "stop"),
        ("FINISH_REASON_UNSPECIFIED", "stop"),
    ];
    for (gemini, openai) in cases {
        check_response(
            json!({"candidates": [{"content": {"parts": [{"text": "t"}]}, "finishReason": gemini}],
                   "usageMetadata": {"promptTokenCount": 1, "candidatesTokenCount": 1}}),
            completion(
                json!([{"index": 0, "message": message(json!("t")),
                        "finish_reason": openai, "logprobs": null}]),
                usage(1, 1, 2, 0, 0),
            ),
        );
    }
}

#[test]
fn response_blocked_and_multi() {
    check_response(
        json!({"promptFeedback": {"blockReason": "PROHIBITED_CONTENT"},
               "usageMetadata": {"promptTokenCount": 3, "totalTokenCount": 3}}),
        completion(
            json!([{"index": 0, "message": message(json!("")),
                    "finish_reason": "content_filter", "logprobs": null}]),
            usage(3, 0, 3, 0, 0),
        ),
    );
    check_response(
        json!({"candidates": [
            {"content": {"parts": [{"text": "a"}]}, "finishReason": "STOP", "index": 0},
            {"content": {"parts": [{"text": "b"}]}, "finishReason": "MAX_TOKENS", "index": 1}]}),
        completion(
            json!([{"index": 0, "message": message(json!("a")), "finish_reason": "stop",
                    "logprobs": null},
                   {"index": 1, "message": message(json!("b")), "finish_reason": "length",
                    "logprobs": null}]),
            usage(0, 0, 0, 0, 0),
        ),
    );
}

#[test]
fn response_errors() {
    let err = br#"{"error": {"code": 429, "message": "Quota exceeded", "status": "RESOURCE_EXHAUSTED", "details": []}}"#;
    let arr = br#"[{"error": {"code": 503, "message": "The model is overloaded.", "status": "UNAVAILABLE"}}]"#;
    for (body, code, status) in [
        (&err[..], 429, "RESOURCE_EXHAUSTED"),
        (&arr[..], 503, "UNAVAILABLE"),
    ] {
        match from_gemini(body, &ctx()) {
            Err(TranslateError::UpstreamError {
                code: c,
                status: s,
                raw,
                message,
            }) => {
                assert_eq!((c, s.as_str()), (code, status));
                assert!(!message.is_empty());
                let raw: Value = serde_json::from_slice(&raw).expect("raw json");
                assert!(raw.get("error").is_some(), "raw is the object form");
            }
            other => panic!("expected UpstreamError, got {other:?}"),
        }
    }
    for bad in [&b"nope"[..], b"[1,2]", b"{\"candidates\": 5}"] {
        assert!(matches!(
            from_gemini(bad, &ctx()),
            Err(TranslateError::BadUpstream { .. })
        ));
    }
}

// ---------- streams ----------

#[test]
fn stream_text_with_usage() {
    // Shaped like vercel/ai's google-text.chunks.txt: thoughts, text, then a final chunk
    // with an empty signed text part, finishReason and the cumulative usage.
    check_stream(
        &[
            json!({"candidates": [{"content": {"role": "model", "parts": [
                {"text": "think", "thought": true}]}, "index": 0}],
                "usageMetadata": {"promptTokenCount": 5}}),
            json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "Hi"}]},
                "index": 0}]}),
            json!({"candidates": [{"content": {"role": "model", "parts": [
                {"text": "", "thoughtSignature": "c2ln"}]}, "finishReason": "STOP", "index": 0}],
                "usageMetadata": {"promptTokenCount": 5, "candidatesTokenCount": 1,
                  "thoughtsTokenCount": 3, "totalTokenCount": 9}}),
        ],
        true,
        vec![
            chunk(
                json!({"index": 0, "delta": {"role": "assistant", "reasoning_content": "think"},
                         "finish_reason": null}),
            ),
            chunk(json!({"index": 0, "delta": {"content": "Hi"}, "finish_reason": null})),
            chunk(json!({"index": 0, "delta": {}, "finish_reason": "stop"})),
            json!({"id": "chatcmpl-abc", "object": "chat.completion.chunk",
                   "created": 1_700_000_000, "model": "gpt-4o", "choices": [],
                   "usage": usage(5, 4, 9, 0, 3)}),
            json!("[DONE]"),
        ],
    );
}

#[test]
fn stream_without_finish_or_usage() {
    // Upstream ended without finishReason: finish() supplies `stop`; no usage unless asked.
    check_stream(
        &[
            json!({"candidates": [{"content": {"parts": [{"text": "a"}]}}],
                   "usageMetadata": {"promptTokenCount": 1}}),
            json!({"candidates": [], "usageMetadata": {"promptTokenCount": 1}}),
        ],
        false,
        vec![
            chunk(
                json!({"index": 0, "delta": {"role": "assistant", "content": "a"},
                         "finish_reason": null}),
            ),
            chunk(json!({"index": 0, "delta": {}, "finish_reason": "stop"})),
            json!("[DONE]"),
        ],
    );
    // Nothing at all: still a role, a finish reason and [DONE].
    check_stream(
        &[],
        false,
        vec![
            chunk(json!({"index": 0, "delta": {"role": "assistant"}, "finish_reason": "stop"})),
            json!("[DONE]"),
        ],
    );
}

#[test]
fn stream_finish_with_content_and_block() {
    check_stream(
        &[
            json!({"candidates": [{"content": {"parts": [{"text": "end"}]},
                  "finishReason": "MAX_TOKENS", "index": 0}]}),
        ],
        false,
        vec![
            chunk(
                json!({"index": 0, "delta": {"role": "assistant", "content": "end"},
                         "finish_reason": "length"}),
            ),
            json!("[DONE]"),
        ],
    );
    check_stream(
        &[json!({"promptFeedback": {"blockReason": "SAFETY"},
                  "usageMetadata": {"promptTokenCount": 2, "totalTokenCount": 2}})],
        true,
        vec![
            chunk(json!({"index": 0, "delta": {"role": "assistant"},
                         "finish_reason": "content_filter"})),
            json!({"id": "chatcmpl-abc", "object": "chat.completion.chunk",
                   "created": 1_700_000_000, "model": "gpt-4o", "choices": [],
                   "usage": usage(2, 0, 2, 0, 0)}),
            json!("[DONE]"),
        ],
    );
}

#[test]
fn stream_errors() {
    let mut t = StreamTranslator::new(ctx(), true);
    let first = t
        .on_event(br#"{"candidates":[{"content":{"parts":[{"text":"a"}]}}]}"#)
        .expect("ok");
    assert!(!first.is_empty());
    assert!(t.has_output());
    match t.on_event(br#"{"error":{"code":500,"message":"Internal error","status":"INTERNAL"}}"#) {
        Err(TranslateError::UpstreamError {
            code: 500, status, ..
        }) => {
            assert_eq!(status, "INTERNAL")
        }
        other => panic!("expected UpstreamError, got {other:?}"),
    }
    assert!(matches!(
        t.on_event(b"{\"candidates\":[{\"index\":4000000000}]}"),
        Err(TranslateError::BadUpstream { .. })
    ));
    let mut thoughts_only = StreamTranslator::new(ctx(), false);
    thoughts_only
        .on_event(br#"{"candidates":[{"content":{"parts":[{"text":"x","thought":true}]}}]}"#)
        .expect("ok");
    assert!(!thoughts_only.has_output());
}

// ---------- phase 2: tools, media, thinking, response_format ----------

fn user_x() -> Value {
    json!({"role": "user", "content": "x"})
}

/// Only `generationConfig` of the translated request, for the parameter tables.
fn check_config(extra: Value, model: &str, expected: Value) {
    let mut req = json!({"model": "m", "messages": [user_x()]});
    if let (Some(r), Some(e)) = (req.as_object_mut(), extra.as_object()) {
        r.extend(e.clone());
    }
    let text = req.to_string();
    let parsed = parse_chat_request(text.as_bytes()).expect("parses");
    let body = to_gemini(&parsed, &target(model)).expect("translates");
    let got: Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(
        got.get("generationConfig").cloned().unwrap_or(Value::Null),
        expected,
        "{extra} on {model}"
    );
}

#[test]
fn request_allowed_tools() {
    // GPT-5's allowed_tools: only the allowed functions are declared; required is ANY.
    for (mode, gemini_mode) in [("auto", "AUTO"), ("required", "ANY")] {
        check_request(
            json!({"model": "m", "messages": [user_x()],
                   "tools": [{"type": "function", "function": {"name": "get_weather"}},
                             {"type": "function", "function": {"name": "other"}}],
                   "tool_choice": {"type": "allowed_tools", "allowed_tools": {"mode": mode,
                       "tools": [{"type": "function", "function": {"name": "get_weather"}}]}}}),
            target("gemini-2.5-flash"),
            json!({"contents": [{"role": "user", "parts": [{"text": "x"}]}],
                   "tools": [{"functionDeclarations": [{"name": "get_weather"}]}],
                   "toolConfig": {"functionCallingConfig": {"mode": gemini_mode}}}),
        );
    }
    check_invalid(
        r#"{"model":"m","messages":[{"role":"user","content":"x"}],"tool_choice":{"type":"allowed_tools","allowed_tools":{"mode":"sometimes","tools":[]}}}"#,
        target("gemini-2.5-flash"),
        None,
    );
}

#[test]
fn request_tools() {
    // Cline CLI: schemas with $schema, additionalProperties, anyOf with null; a no-arg tool;
    // a duplicate name; tool_choice auto; parallel_tool_calls false.
    check_request(
        json!({"model": "m", "messages": [user_x()], "tool_choice": "auto",
               "parallel_tool_calls": false, "tools": [
            {"type": "function", "function": {"name": "read_file", "description": "Read",
              "strict": true, "parameters": {
                "$schema": "http://json-schema.org/draft-07/schema#", "type": "object",
                "properties": {"path": {"type": "string"},
                               "strict": {"anyOf": [{"type": "boolean"}, {"type": "null"}]}},
                "required": ["path"], "additionalProperties": false}}},
            {"type": "function", "function": {"name": "list", "description": "",
              "parameters": {"type": "object", "properties": {}, "required": []}}},
            {"type": "function", "function": {"name": "read_file", "parameters": {}}}]}),
        target("gemini-2.5-pro"),
        json!({"contents": [{"role": "user", "parts": [{"text": "x"}]}],
               "tools": [{"functionDeclarations": [
                 {"name": "read_file", "description": "Read", "parametersJsonSchema": {
                   "type": "object",
                   "properties": {"path": {"type": "string"},
                                  "strict": {"anyOf": [{"type": "boolean"}, {"type": "null"}]}},
                   "required": ["path"], "additionalProperties": false}},
                 {"name": "list"}]}],
               "toolConfig": {"functionCallingConfig": {"mode": "AUTO"}}}),
    );
    let tools = json!([{"type": "function", "function": {"name": "f"}}]);
    for (choice, config) in [
        (json!("none"), json!({"mode": "NONE"})),
        (json!("required"), json!({"mode": "ANY"})),
        (
            json!({"type": "function", "function": {"name": "f"}}),
            json!({"mode": "ANY", "allowedFunctionNames": ["f"]}),
        ),
    ] {
        check_request(
            json!({"model": "m", "messages": [user_x()], "tools": tools, "tool_choice": choice}),
            target("gemini-2.5-flash"),
            json!({"contents": [{"role": "user", "parts": [{"text": "x"}]}],
                   "tools": [{"functionDeclarations": [{"name": "f"}]}],
                   "toolConfig": {"functionCallingConfig": config}}),
        );
    }
}

#[test]
fn request_web_search() {
    check_request(
        json!({"model": "m", "messages": [user_x()],
               "web_search_options": {"search_context_size": "low"}}),
        target("gemini-2.5-flash"),
        json!({"contents": [{"role": "user", "parts": [{"text": "x"}]}],
               "tools": [{"googleSearch": {}}]}),
    );
    // Beside functions, and the function calling config still applies to the functions only.
    check_request(
        json!({"model": "m", "messages": [user_x()], "web_search_options": {},
               "tool_choice": "required",
               "tools": [{"type": "function", "function": {"name": "f"}}]}),
        target("gemini-3-flash-preview"),
        json!({"contents": [{"role": "user", "parts": [{"text": "x"}]}],
               "tools": [{"functionDeclarations": [{"name": "f"}]}, {"googleSearch": {}}],
               "toolConfig": {"functionCallingConfig": {"mode": "ANY"}}}),
    );
    check_request(
        json!({"model": "m", "messages": [user_x()], "web_search_options": null,
               "tool_choice": "auto"}),
        target("gemini-2.5-flash"),
        json!({"contents": [{"role": "user", "parts": [{"text": "x"}]}]}),
    );
}

#[test]
fn request_tool_history() {
    // openai SDK / AI SDK loop: parallel calls, results carrying only tool_call_id, one with
    // a JSON object result; LangChain's `content: ""`; an image in a following user message
    // (Cline); a signature echoed through extra_content (new Cline).
    check_request(
        json!({"model": "m", "messages": [
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "content": "", "tool_calls": [
                {"id": "call_1", "type": "function", "extra_content": {"google": {"thought_signature": "U0lH"}},
                 "function": {"name": "get", "arguments": "{\"city\":\"Paris\"}"}},
                {"id": "call_2", "type": "function",
                 "function": {"name": "now", "arguments": ""}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "{\"temp\": 20}"},
            {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "noon"}]},
            {"role": "user", "content": [{"type": "image_url",
              "image_url": {"url": "data:image/jpg;base64,AAAA", "detail": "auto"}}]},
            {"role": "tool", "tool_call_id": "gone", "content": "late"}]}),
        target("gemini-2.5-flash"),
        json!({"contents": [
            {"role": "user", "parts": [{"text": "weather?"}]},
            {"role": "model", "parts": [
                {"functionCall": {"id": "call_1", "name": "get", "args": {"city": "Paris"}},
                 "thoughtSignature": "U0lH"},
                {"functionCall": {"id": "call_2", "name": "now", "args": {}}}]},
            {"role": "user", "parts": [
                {"functionResponse": {"id": "call_1", "name": "get", "response": {"temp": 20}}},
                {"functionResponse": {"id": "call_2", "name": "now", "response": {"output": "noon"}}},
                {"inlineData": {"mimeType": "image/jpeg", "data": "AAAA"}},
                {"text": "Result of tool call gone: late"}]}]}),
    );
}

#[test]
fn request_signature_standin() {
    // Gemini 3 without echoed signatures: the current turn's steps get the stand-in on their
    // first call only; the earlier turn (before the last user prompt) is left alone; a
    // signature the caller remembered wins over the stand-in.
    let input = json!({"model": "m", "messages": [
        {"role": "user", "content": "old"},
        {"role": "assistant", "tool_calls": [
            {"id": "a", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "a", "content": "1"},
        {"role": "user", "content": "new"},
        {"role": "assistant", "tool_calls": [
            {"id": "b", "type": "function", "function": {"name": "f", "arguments": "{}"}},
            {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "b", "content": "2"},
        {"role": "tool", "tool_call_id": "c", "content": "3"},
        {"role": "assistant", "tool_calls": [
            {"id": "d", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "d", "content": "4"}]});
    let text = input.to_string();
    let req = parse_chat_request(text.as_bytes()).expect("parses");
    let lookup = |id: &str| (id == "d").then(|| "REMEMBERED".to_owned());
    let extras = Extras {
        signatures: Some(&lookup),
        media: None,
    };
    let body = to_gemini_with(&req, &target("gemini-3-flash-preview"), &extras).expect("ok");
    let got: Value = serde_json::from_slice(&body).expect("json");
    let sigs: Vec<Value> = got["contents"]
        .as_array()
        .expect("contents")
        .iter()
        .flat_map(|c| c["parts"].as_array().cloned().unwrap_or_default())
        .filter(|p| p.get("functionCall").is_some())
        .map(|p| p.get("thoughtSignature").cloned().unwrap_or(Value::Null))
        .collect();
    assert_eq!(
        sigs,
        vec![
            Value::Null,
            json!("skip_thought_signature_validator"),
            Value::Null,
            json!("REMEMBERED"),
        ]
    );
}

#[test]
fn request_media() {
    let check_part = |part: Value, expected: Value| {
        check_request(
            json!({"model": "m", "messages": [{"role": "user", "content": [part]}]}),
            target("gemini-2.5-flash"),
            json!({"contents": [{"role": "user", "parts": [expected]}]}),
        );
    };
    check_part(
        json!({"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBO"}}),
        json!({"inlineData": {"mimeType": "image/png", "data": "iVBO"}}),
    );
    check_part(
        json!({"type": "input_audio", "input_audio": {"data": "UklG", "format": "wav"}}),
        json!({"inlineData": {"mimeType": "audio/wav", "data": "UklG"}}),
    );
    check_part(
        json!({"type": "input_audio", "input_audio": {"data": "SUQz", "format": "mp3"}}),
        json!({"inlineData": {"mimeType": "audio/mp3", "data": "SUQz"}}),
    );
    check_part(
        json!({"type": "file", "file": {"filename": "a.pdf", "file_data": "data:application/pdf;base64,JVBE"}}),
        json!({"inlineData": {"mimeType": "application/pdf", "data": "JVBE"}}),
    );
    check_part(
        json!({"type": "file", "file": {"filename": "a.pdf", "file_data": "JVBE"}}),
        json!({"inlineData": {"mimeType": "application/pdf", "data": "JVBE"}}),
    );
    let t = || target("gemini-2.5-flash");
    let part =
        |p: &str| format!(r#"{{"model":"m","messages":[{{"role":"user","content":[{p}]}}]}}"#);
    check_invalid(
        &part(r#"{"type":"file","file":{"file_id":"file-1"}}"#),
        t(),
        Some("messages[0].content[0].file.file_id"),
    );
    check_invalid(
        &part(r#"{"type":"image_url","image_url":{"url":"https://x/y.png"}}"#),
        t(),
        Some("messages[0].content[0].image_url.url"),
    );
    check_invalid(
        &part(r#"{"type":"image_url","image_url":{"url":"data:text/plain,hello"}}"#),
        t(),
        Some("messages[0].content[0].image_url.url"),
    );
    // Fetched bytes for an http URL are inlined (base64 encoded here).
    let text = part(r#"{"type":"image_url","image_url":{"url":"https://x/y.png"}}"#);
    let req = parse_chat_request(text.as_bytes()).expect("parses");
    assert_eq!(remote_media_urls(&req), vec!["https://x/y.png"]);
    let mut media = HashMap::new();
    media.insert(
        "https://x/y.png".to_owned(),
        FetchedFile {
            mime_type: "image/jpg".into(),
            bytes: b"hello!?".to_vec(),
        },
    );
    let extras = Extras {
        signatures: None,
        media: Some(&media),
    };
    let body = to_gemini_with(&req, &t(), &extras).expect("ok");
    let got: Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(
        got["contents"][0]["parts"][0],
        json!({"inlineData": {"mimeType": "image/jpeg", "data": "aGVsbG8hPw=="}})
    );
}

#[test]
fn request_thinking() {
    let level = |l: &str| json!({"thinkingConfig": {"thinkingLevel": l, "includeThoughts": true}});
    let budget = |b: u32| json!({"thinkingConfig": {"thinkingBudget": b, "includeThoughts": true}});
    let cases = [
        ("none", "gemini-3-flash-preview", level("minimal")),
        ("minimal", "gemini-3-flash-preview", level("minimal")),
        ("minimal", "gemini-3-pro-preview", level("low")),
        ("none", "gemini-3-pro-preview", level("low")),
        ("low", "gemini-3-flash-preview", level("low")),
        ("medium", "gemini-3-flash-preview", level("medium")),
        ("medium", "gemini-3.1-pro-preview", level("medium")),
        ("medium", "gemini-3-pro-preview", level("high")),
        ("xhigh", "gemini-3-pro-preview", level("high")),
        ("none", "gemini-2.5-flash", budget(0)),
        ("none", "gemini-2.5-flash-lite", budget(0)),
        ("none", "gemini-2.5-pro", budget(128)),
        ("low", "gemini-2.5-flash-lite", budget(1024)),
        ("medium", "gemini-2.5-flash", budget(8192)),
        ("high", "gemini-2.5-flash", budget(24576)),
        ("high", "models/gemini-2.5-pro", budget(32768)),
        ("max", "gemini-2.5-flash", budget(24576)),
        ("high", "gemini-2.0-flash", Value::Null),
    ];
    for (effort, model, expected) in cases {
        check_config(json!({"reasoning_effort": effort}), model, expected);
    }
    // The alias's effort applies unless the request sets its own.
    let req = parse_chat_request(br#"{"model":"m","messages":[{"role":"user","content":"x"}]}"#)
        .expect("parses");
    let mut t = target("gemini-2.5-flash");
    t.reasoning_effort = Some("low");
    let got: Value = serde_json::from_slice(&to_gemini(&req, &t).expect("ok")).expect("json");
    assert_eq!(got["generationConfig"], budget(1024));
    check_invalid(
        r#"{"model":"m","messages":[{"role":"user","content":"x"}],"reasoning_effort":"extreme"}"#,
        target("gemini-2.5-flash"),
        Some("reasoning_effort"),
    );
}

#[test]
fn request_google_extras() {
    // The openai SDK's extra_body={"google": …} lands at the top level; Google's samples nest
    // a second extra_body. Both reach Gemini as written.
    let config = json!({"thinking_config": {"thinking_budget": -1, "include_thoughts": true}});
    let expected = json!({"thinkingConfig": {"thinkingBudget": -1, "includeThoughts": true}});
    check_config(
        json!({"google": config}),
        "gemini-2.5-flash",
        expected.clone(),
    );
    check_config(
        json!({"extra_body": {"google": config}}),
        "gemini-2.5-flash",
        expected,
    );
    check_config(
        json!({"google": {"thinking_config": {"thinking_level": "LOW"}}}),
        "gemini-3-pro-preview",
        json!({"thinkingConfig": {"thinkingLevel": "low"}}),
    );
    // The client's config wins over an alias's effort...
    let body = json!({"model": "m", "messages": [user_x()],
                      "google": {"thinking_config": {"thinking_budget": 0}}})
    .to_string();
    let req = parse_chat_request(body.as_bytes()).expect("parses");
    let mut t = target("gemini-2.5-flash");
    t.reasoning_effort = Some("high");
    let got: Value = serde_json::from_slice(&to_gemini(&req, &t).expect("ok")).expect("json");
    assert_eq!(
        got["generationConfig"],
        json!({"thinkingConfig": {"thinkingBudget": 0}})
    );
    // ...but the request's own reasoning_effort and thinking_config exclude each other, a cache
    // must be named as one (the handler checks who owns it), and levels are Gemini's.
    for (extra, param) in [
        (
            r#""reasoning_effort":"low","google":{"thinking_config":{"thinking_budget":1024}}"#,
            Some("reasoning_effort"),
        ),
        (
            r#""extra_body":{"google":{"cached_content":"files/abc"}}"#,
            Some("google.cached_content"),
        ),
        (
            r#""google":{"cached_content":"cachedContents/a/../b"}"#,
            Some("google.cached_content"),
        ),
        (
            r#""google":{"thinking_config":{"thinking_level":"extreme"}}"#,
            Some("google.thinking_config.thinking_level"),
        ),
        (
            r#""google":{"thinking_config":{"thinking_budget":"lots"}}"#,
            None,
        ),
    ] {
        let body =
            format!(r#"{{"model":"m","messages":[{{"role":"user","content":"x"}}],{extra}}}"#);
        check_invalid(&body, target("gemini-2.5-flash"), param);
    }
}

#[test]
fn request_response_format() {
    check_config(
        json!({"response_format": {"type": "json_object"}}),
        "gemini-2.5-flash",
        json!({"responseMimeType": "application/json"}),
    );
    check_config(
        json!({"response_format": {"type": "text"}}),
        "gemini-2.5-flash",
        Value::Null,
    );
    check_config(
        json!({"response_format": {"type": "json_schema", "json_schema": {"name": "r", "strict": true,
            "schema": {"$schema": "x", "type": "object", "strict": true,
                       "properties": {"a": {"type": ["string", "null"]}},
                       "$defs": {"D": {"type": "integer", "$comment": "c"}}}}}}),
        "gemini-2.5-flash",
        json!({"responseMimeType": "application/json", "responseJsonSchema": {
            "type": "object", "properties": {"a": {"type": ["string", "null"]}},
            "$defs": {"D": {"type": "integer"}}}}),
    );
}

#[test]
fn response_tool_calls() {
    // Parallel calls, one with Gemini's own id and a signature, one without args.
    let input = json!({"candidates": [{"content": {"role": "model", "parts": [
            {"functionCall": {"name": "get", "args": {"city": "Paris"}, "id": "g1"},
             "thoughtSignature": "U0lH"},
            {"functionCall": {"name": "now"}}]},
        "finishReason": "STOP", "index": 0}],
        "usageMetadata": {"promptTokenCount": 1, "candidatesTokenCount": 2, "totalTokenCount": 3}});
    check_response(
        input.clone(),
        completion(
            json!([{"index": 0, "message": {"role": "assistant", "content": null, "refusal": null,
                "tool_calls": [
                  {"id": "g1", "type": "function",
                   "function": {"name": "get", "arguments": "{\"city\":\"Paris\"}"},
                   "extra_content": {"google": {"thought_signature": "U0lH"}}},
                  {"id": "call_abc_1", "type": "function",
                   "function": {"name": "now", "arguments": "{}"}}]},
                "finish_reason": "tool_calls", "logprobs": null}]),
            usage(1, 2, 3, 0, 0),
        ),
    );
    let detailed = from_gemini_detailed(input.to_string().as_bytes(), &ctx()).expect("ok");
    assert_eq!(detailed.signatures, vec![("g1".into(), "U0lH".into())]);
    assert!(detailed.has_output);
    let empty = from_gemini_detailed(
        br#"{"candidates":[{"content":{"parts":[{"text":"t","thought":true}]},"finishReason":"MAX_TOKENS"}]}"#,
        &ctx(),
    )
    .expect("ok");
    assert!(!empty.has_output);
}

#[test]
fn stream_tool_calls() {
    // Calls arrive whole, across chunks: `index` counts calls in the message, ids are unique.
    let mut t = StreamTranslator::new(ctx(), false);
    let events = [
        json!({"candidates": [{"content": {"parts": [{"text": "Let me check."}]}, "index": 0}]}),
        json!({"candidates": [{"content": {"parts": [
            {"functionCall": {"name": "a", "args": {"x": 1}}, "thoughtSignature": "U0lH"},
            {"functionCall": {"name": "b", "args": {}}}]}, "index": 0}]}),
        json!({"candidates": [{"content": {"parts": [
            {"functionCall": {"name": "c"}}]}, "finishReason": "STOP", "index": 0}]}),
    ];
    let mut text = String::new();
    let mut signatures = Vec::new();
    for e in &events {
        let out = t.on_event(e.to_string().as_bytes()).expect("event");
        text.push_str(std::str::from_utf8(&out).expect("utf8"));
        signatures.extend(t.take_signatures());
    }
    assert_eq!(signatures, vec![("call_abc_0".into(), "U0lH".into())]);
    text.push_str(std::str::from_utf8(&t.finish()).expect("utf8"));
    let got: Vec<Value> = text
        .split_terminator("\n\n")
        .filter_map(|ev| serde_json::from_str(ev.strip_prefix("data: ")?).ok())
        .collect();
    assert_eq!(
        got,
        vec![
            chunk(
                json!({"index": 0, "delta": {"role": "assistant", "content": "Let me check."},
                         "finish_reason": null})
            ),
            chunk(json!({"index": 0, "delta": {"tool_calls": [
                {"index": 0, "id": "call_abc_0", "type": "function",
                 "function": {"name": "a", "arguments": "{\"x\":1}"},
                 "extra_content": {"google": {"thought_signature": "U0lH"}}},
                {"index": 1, "id": "call_abc_1", "type": "function",
                 "function": {"name": "b", "arguments": "{}"}}]}, "finish_reason": null})),
            chunk(json!({"index": 0, "delta": {"tool_calls": [
                {"index": 2, "id": "call_abc_2", "type": "function",
                 "function": {"name": "c", "arguments": "{}"}}]},
                "finish_reason": "tool_calls"})),
        ]
    );
    assert!(text.ends_with("data: [DONE]\n\n"));
}

#[test]
fn stream_tool_calls_without_finish() {
    check_stream(
        &[
            json!({"candidates": [{"content": {"parts": [{"functionCall": {"name": "f", "id": "x"}}]}}]}),
        ],
        false,
        vec![
            chunk(
                json!({"index": 0, "delta": {"role": "assistant", "tool_calls": [
                {"index": 0, "id": "x", "type": "function",
                 "function": {"name": "f", "arguments": "{}"}}]}, "finish_reason": null}),
            ),
            chunk(json!({"index": 0, "delta": {}, "finish_reason": "tool_calls"})),
            json!("[DONE]"),
        ],
    );
}

#[test]
fn response_logprobs() {
    let logprobs = json!({
        "topCandidates": [
            {"candidates": [{"token": "Hi", "tokenId": 1, "logProbability": -0.1},
                            {"token": "Yo", "tokenId": 2, "logProbability": -2.5}]},
            {"candidates": [{"token": "!", "tokenId": 3, "logProbability": -0.01}]}],
        "chosenCandidates": [{"token": "Hi", "tokenId": 1, "logProbability": -0.1},
                             {"token": "!", "tokenId": 3, "logProbability": -0.01}]});
    let openai = json!({"content": [
        {"token": "Hi", "logprob": -0.1, "bytes": [72, 105],
         "top_logprobs": [{"token": "Hi", "logprob": -0.1, "bytes": [72, 105]},
                          {"token": "Yo", "logprob": -2.5, "bytes": [89, 111]}]},
        {"token": "!", "logprob": -0.01, "bytes": [33],
         "top_logprobs": [{"token": "!", "logprob": -0.01, "bytes": [33]}]}],
        "refusal": null});
    check_response(
        json!({"candidates": [{"content": {"parts": [{"text": "Hi!"}]}, "finishReason": "STOP",
                               "logprobsResult": logprobs.clone(), "avgLogprobs": -0.05}]}),
        completion(
            json!([{"index": 0, "message": message(json!("Hi!")), "finish_reason": "stop",
                    "logprobs": openai.clone()}]),
            usage(0, 0, 0, 0, 0),
        ),
    );
    check_stream(
        &[
            json!({"candidates": [{"content": {"parts": [{"text": "Hi!"}]}, "finishReason": "STOP",
                                 "logprobsResult": logprobs}]}),
        ],
        false,
        vec![
            chunk(
                json!({"index": 0, "delta": {"role": "assistant", "content": "Hi!"},
                         "finish_reason": "stop", "logprobs": openai}),
            ),
            json!("[DONE]"),
        ],
    );
}

#[test]
fn stream_holds_back_the_finish_of_an_empty_answer() {
    let mut t = StreamTranslator::new(ctx(), false);
    let out = t
        .on_event(
            json!({"candidates": [{"content": {"parts": [{"text": "hmm", "thought": true}]},
                                   "finishReason": "MAX_TOKENS"}]})
            .to_string()
            .as_bytes(),
        )
        .expect("event");
    let text = String::from_utf8_lossy(&out);
    assert!(text.contains("\"reasoning_content\":\"hmm\""), "{text}");
    assert!(text.contains("\"finish_reason\":null"), "{text}");
    assert!(!t.has_output());
}

#[test]
fn empty_object_schemas_are_recognised_without_reading_real_ones() {
    use crate::translate::schema::is_empty_object;
    let raw = |v: Value| serde_json::value::RawValue::from_string(v.to_string()).expect("raw");
    for empty in [
        json!({}),
        json!({"type": "object", "properties": {}, "required": []}),
        json!({"$schema": "x", "title": "t", "description": "d", "additionalProperties": false,
               "strict": true, "type": "object", "properties": {}}),
    ] {
        assert!(is_empty_object(&raw(empty.clone())), "{empty}");
    }
    for real in [
        json!({"type": "object", "properties": {"a": {"type": "string"}}}),
        json!({"properties": {}, "type": "string"}),
        json!({"type": "object", "properties": {}, "required": ["a"]}),
        json!({"properties": {}, "additionalProperties": {"type": "string"}}),
        json!({"properties": true}),
        json!({"type": "object", "minProperties": 1}),
        json!([]),
        json!(true),
    ] {
        assert!(!is_empty_object(&raw(real.clone())), "{real}");
    }
}

#[test]
fn response_grounding_becomes_url_citations() {
    let first = "Paris is the capital of France. ";
    let second = "Café prices rose.";
    let answer = json!({"candidates": [{
        "content": {"role": "model", "parts": [
            {"text": "Searching", "thought": true},
            {"text": first},
            {"text": second}]},
        "finishReason": "STOP",
        "groundingMetadata": {
            "webSearchQueries": ["capital of france"],
            "groundingChunks": [
                {"web": {"uri": "https://example.com/a", "title": "example.com"}},
                {"web": {"uri": "https://example.org/b", "title": "example.org"}},
                {"retrievedContext": {"uri": "gs://not-web"}}],
            "groundingSupports": [
                {"segment": {"partIndex": 1, "startIndex": 0, "endIndex": 31,
                             "text": "Paris is the capital of France."},
                 "groundingChunkIndices": [0]},
                // Byte offsets in Gemini ('é' is two bytes), characters in OpenAI.
                {"segment": {"partIndex": 2, "startIndex": 0, "endIndex": second.len()},
                 "groundingChunkIndices": [0, 1, 2, 9]},
                {"segment": {"partIndex": 0, "startIndex": 0, "endIndex": 3},
                 "groundingChunkIndices": [0]}]}}]});
    let body = from_gemini(answer.to_string().as_bytes(), &ctx()).expect("translates");
    let got: Value = serde_json::from_slice(&body).expect("json");
    let message = &got["choices"][0]["message"];
    assert_eq!(message["content"], format!("{first}{second}"));
    let cite = |start: usize, end: usize, url: &str, title: &str| {
        json!({"type": "url_citation", "url_citation": {
            "start_index": start, "end_index": end, "url": url, "title": title}})
    };
    let second_start = first.chars().count();
    let second_end = second_start + second.chars().count();
    assert_eq!(
        message["annotations"],
        json!([
            cite(0, 31, "https://example.com/a", "example.com"),
            cite(
                second_start,
                second_end,
                "https://example.com/a",
                "example.com"
            ),
            cite(
                second_start,
                second_end,
                "https://example.org/b",
                "example.org"
            ),
        ]),
        "thought parts and non-web chunks cite nothing: {got}"
    );
    // Without grounding there is no annotations field at all.
    let plain = json!({"candidates": [{"content": {"parts": [{"text": "hi"}]}}]});
    let body = from_gemini(plain.to_string().as_bytes(), &ctx()).expect("translates");
    let got: Value = serde_json::from_slice(&body).expect("json");
    assert!(
        got["choices"][0]["message"].get("annotations").is_none(),
        "{got}"
    );
}

#[test]
fn request_cached_content_and_image_modalities() {
    check_request(
        json!({"model": "m", "messages": [{"role": "user", "content": "x"}],
               "extra_body": {"google": {"cached_content": "cachedContents/abc-1"}}}),
        target("gemini-2.5-flash"),
        json!({"contents": [{"role": "user", "parts": [{"text": "x"}]}],
               "cachedContent": "cachedContents/abc-1"}),
    );
    // An image model answers with images unless told otherwise; `modalities` decides when
    // given (text first, as Google writes it).
    check_request(
        json!({"model": "m", "messages": [{"role": "user", "content": "x"}]}),
        target("gemini-2.5-flash-image"),
        json!({"contents": [{"role": "user", "parts": [{"text": "x"}]}],
               "generationConfig": {"responseModalities": ["TEXT", "IMAGE"]}}),
    );
    check_request(
        json!({"model": "m", "modalities": ["image", "text", "image"],
               "messages": [{"role": "user", "content": "x"}]}),
        target("gemini-3-pro-image-preview"),
        json!({"contents": [{"role": "user", "parts": [{"text": "x"}]}],
               "generationConfig": {"responseModalities": ["TEXT", "IMAGE"]}}),
    );
    check_request(
        json!({"model": "m", "modalities": ["text"],
               "messages": [{"role": "user", "content": "x"}]}),
        target("gemini-2.5-flash-image"),
        json!({"contents": [{"role": "user", "parts": [{"text": "x"}]}],
               "generationConfig": {"responseModalities": ["TEXT"]}}),
    );
    check_invalid(
        r#"{"model":"m","modalities":["audio"],"messages":[{"role":"user","content":"x"}]}"#,
        target("gemini-2.5-flash-image"),
        Some("modalities"),
    );
    assert!(!super::is_image_model("gemini-2.5-flash"));
    assert!(super::is_image_model("models/gemini-2.5-flash-image"));
    assert!(!super::is_image_model("imagen-4.0-generate-001"));
}

#[test]
fn response_and_stream_images() {
    let parts = json!([
        {"text": "Here."},
        {"inlineData": {"mimeType": "image/png", "data": "ZHJhZnQ="}, "thought": true},
        {"inlineData": {"mimeType": "image/png", "data": "aGk="}},
        {"inlineData": {"mimeType": "text/html;x", "data": "aGk="}},
        {"inlineData": {"mimeType": "image/png", "data": "not base64!"}},
    ]);
    let body = json!({"candidates": [{"content": {"parts": parts}, "finishReason": "STOP"}]});
    let out = from_gemini_detailed(body.to_string().as_bytes(), &ctx()).expect("translates");
    let got: Value = serde_json::from_slice(&out.body).expect("json");
    assert_eq!(
        got["choices"][0]["message"]["images"],
        json!([{"type": "image_url", "image_url": {"url": "data:image/png;base64,aGk="}}])
    );
    assert_eq!(got["choices"][0]["message"]["content"], "Here.");
    // An image alone is an answer.
    let body = json!({"candidates": [{"content": {"parts": [
        {"inlineData": {"mimeType": "image/jpeg", "data": "aGk="}}]}, "finishReason": "STOP"}]});
    let out = from_gemini_detailed(body.to_string().as_bytes(), &ctx()).expect("translates");
    assert!(out.has_output);
    let mut t = StreamTranslator::new(ctx(), false);
    let event = json!({"candidates": [{"content": {"parts": [
        {"inlineData": {"mimeType": "image/png", "data": "aGk="}}]}, "finishReason": "STOP"}]});
    let text = String::from_utf8(
        t.on_event(event.to_string().as_bytes())
            .expect("event")
            .to_vec(),
    )
    .expect("utf8");
    let data = text.trim().strip_prefix("data: ").expect("one chunk");
    let chunk: Value = serde_json::from_str(data).expect("json");
    assert_eq!(
        chunk["choices"][0]["delta"]["images"][0]["image_url"]["url"],
        "data:image/png;base64,aGk="
    );
    assert_eq!(chunk["choices"][0]["finish_reason"], "stop");
    assert!(t.has_output());
}

/// `parallel_tool_calls: false` (Cline sends it): a choice keeps Gemini's first call only,
/// whole and streamed; without it both calls stay.
#[test]
fn one_call_when_parallel_tool_calls_is_false() {
    let call =
        |city: &str| json!({"functionCall": {"name": "get_weather", "args": {"city": city}}});
    let answer = json!({"candidates": [{"content": {"role": "model",
        "parts": [call("Paris"), call("Oslo")]}, "finishReason": "STOP"}]});
    let calls_in = |one_call: bool| -> Vec<String> {
        let ctx = ResponseCtx { one_call, ..ctx() };
        let body = from_gemini(answer.to_string().as_bytes(), &ctx).expect("translates");
        let got: Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(got["choices"][0]["finish_reason"], "tool_calls", "{got}");
        got["choices"][0]["message"]["tool_calls"]
            .as_array()
            .map(|calls| {
                calls
                    .iter()
                    .map(|c| {
                        c["function"]["arguments"]
                            .as_str()
                            .unwrap_or("")
                            .to_string()
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    assert_eq!(calls_in(false).len(), 2);
    assert_eq!(calls_in(true), [r#"{"city":"Paris"}"#]);

    let streamed = |one_call: bool| -> usize {
        let ctx = ResponseCtx { one_call, ..ctx() };
        let mut t = StreamTranslator::new(ctx, false);
        let mut out = Vec::new();
        for event in [
            json!({"candidates": [{"content": {"role": "model", "parts": [call("Paris")]}}]}),
            json!({"candidates": [{"content": {"role": "model", "parts": [call("Oslo")]},
                                   "finishReason": "STOP"}]}),
        ] {
            out.extend_from_slice(&t.on_event(event.to_string().as_bytes()).expect("event"));
        }
        out.extend_from_slice(&t.finish());
        String::from_utf8_lossy(&out)
            .matches("\"get_weather\"")
            .count()
    };
    assert_eq!(streamed(false), 2);
    assert_eq!(streamed(true), 1);
}

/// OpenAI's deprecated function calling (`functions`, `function_call`, `role: "function"`), as
/// older clients send it: the same Gemini request as `tools`, the answer's one call named
/// `function_call`.
#[test]
fn legacy_functions() {
    let req = json!({
        "model": "gemini-2.5-flash",
        "functions": [{"name": "get_weather", "description": "Weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}],
        "function_call": {"name": "get_weather"},
        "messages": [
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": null,
             "function_call": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
            {"role": "function", "name": "get_weather", "content": "{\"temp\": 21}"},
            {"role": "assistant", "content": null,
             "function_call": {"name": "get_time", "arguments": "{}"}},
            {"role": "function", "name": "get_time", "content": "noon"},
            // A result some clients add with no call before it.
            {"role": "function", "name": "lookup", "content": "found"},
        ],
    });
    let text = req.to_string();
    let parsed = parse_chat_request(text.as_bytes()).expect("parses");
    assert!(parsed.legacy_functions);
    let body: Value = serde_json::from_slice(
        &to_gemini(&parsed, &target("gemini-2.5-flash")).expect("translates"),
    )
    .expect("json");
    assert_eq!(
        body["tools"][0]["functionDeclarations"][0]["name"],
        "get_weather"
    );
    assert_eq!(
        body["toolConfig"]["functionCallingConfig"],
        json!({"mode": "ANY", "allowedFunctionNames": ["get_weather"]})
    );
    assert_eq!(
        body["contents"][1]["parts"][0],
        json!({"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}})
    );
    assert_eq!(
        body["contents"][2]["parts"][0]["functionResponse"]["name"],
        "get_weather"
    );
    // Each result is paired with its call by the function's name.
    assert_eq!(
        body["contents"][4]["parts"][0]["functionResponse"]["name"], "get_time",
        "{body}"
    );
    assert_eq!(
        body["contents"][4]["parts"][1]["functionResponse"]["name"], "lookup",
        "{body}"
    );
    for (choice, mode) in [("\"none\"", "NONE"), ("\"auto\"", "AUTO")] {
        let text = text.replace("{\"name\":\"get_weather\"}", choice);
        let parsed = parse_chat_request(text.as_bytes()).expect("parses");
        let body: Value = serde_json::from_slice(
            &to_gemini(&parsed, &target("gemini-2.5-flash")).expect("translates"),
        )
        .expect("json");
        assert_eq!(
            body["toolConfig"]["functionCallingConfig"]["mode"], mode,
            "{choice}"
        );
    }

    // Both spellings at once, or a choice of another shape: the client's 400.
    let tools = r#"[{"type":"function","function":{"name":"f"}}]"#;
    let both = format!(
        r#"{{"model":"m","messages":[{{"role":"user","content":"x"}}],"tools":{tools},"functions":[{{"name":"f"}}]}}"#
    );
    check_invalid(&both, target("m"), Some("functions"));
    check_invalid(
        r#"{"model":"m","messages":[{"role":"user","content":"x"}],"functions":[{"name":"f"}],"function_call":"required"}"#,
        target("m"),
        Some("function_call"),
    );
    check_invalid(
        r#"{"model":"m","messages":[{"role":"function","content":"x"}]}"#,
        target("m"),
        None,
    );

    // The answer: its first call as `function_call`, ended `function_call`.
    let legacy = ResponseCtx {
        legacy_functions: true,
        one_call: true,
        ..ctx()
    };
    let answer = json!({"candidates": [{"content": {"role": "model", "parts": [
        {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}},
        {"functionCall": {"name": "get_weather", "args": {"city": "Rome"}}},
    ]}, "finishReason": "STOP"}]});
    let out: Value = serde_json::from_slice(
        &from_gemini(answer.to_string().as_bytes(), &legacy).expect("translates"),
    )
    .expect("json");
    let choice = &out["choices"][0];
    assert_eq!(choice["finish_reason"], "function_call", "{out}");
    assert_eq!(
        choice["message"]["function_call"],
        json!({"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"})
    );
    assert!(choice["message"].get("tool_calls").is_none(), "{out}");

    // Streamed: the call whole in one delta, then the same finish.
    let mut t = StreamTranslator::new(legacy, false);
    let mut chunks = Vec::new();
    for event in [
        json!({"candidates": [{"content": {"role": "model", "parts": [
            {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}}]}}]}),
        json!({"candidates": [{"content": {"role": "model", "parts": [{"text": ""}]},
            "finishReason": "STOP"}]}),
    ] {
        chunks.push(t.on_event(event.to_string().as_bytes()).expect("event"));
    }
    chunks.push(t.finish());
    let text: String = chunks
        .iter()
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect();
    let deltas: Vec<Value> = text
        .split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .filter_map(|d| serde_json::from_str(d).ok())
        .collect();
    assert_eq!(
        deltas[0]["choices"][0]["delta"]["function_call"],
        json!({"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}),
        "{text}"
    );
    assert!(deltas[0]["choices"][0]["delta"].get("tool_calls").is_none());
    let finishes: Vec<&Value> = deltas
        .iter()
        .map(|d| &d["choices"][0]["finish_reason"])
        .filter(|f| !f.is_null())
        .collect();
    assert_eq!(finishes, vec![&json!("function_call")], "{text}");
}
