//! Table tests for translation, one `check_*` helper per direction; inputs are shaped like what
//! Cline, the openai SDK and the Vercel AI SDK send (protocol.md §7, §10).

use serde_json::{json, Value};

use super::*;

fn ctx() -> ResponseCtx {
    ResponseCtx {
        id: "chatcmpl-abc".into(),
        created: 1_700_000_000,
        model: "gpt-4o".into(),
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
    let req = parse_chat_request(input.to_string().as_bytes()).expect("parses");
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
        r#"{"model":"m","messages":[{"role":"function","name":"f","content":"x"}]}"#,
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
}

#[test]
fn request_flags() {
    let parse = |s: &str| parse_chat_request(s.as_bytes()).expect("parses");
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

#[test]
fn error_event_shape() {
    let ev = error_event("boom", "server_error", Some("upstream"));
    let text = std::str::from_utf8(&ev).expect("utf8");
    let data = text
        .strip_prefix("data: ")
        .and_then(|t| t.strip_suffix("\n\n"))
        .expect("framed");
    let v: Value = serde_json::from_str(data).expect("json");
    assert_eq!(
        v,
        json!({"error": {"message": "boom", "type": "server_error", "param": null, "code": "upstream"}})
    );
}
