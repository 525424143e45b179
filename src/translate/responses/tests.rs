//! Table tests of the Responses translator on the shapes OpenAI documents (and Codex sends).

use serde_json::{json, Value};

use super::*;
use crate::translate::chat::to_gemini;
use crate::translate::Target;

/// The Gemini body for a Responses request on `model`.
fn gemini(input: &Value, model: &str) -> Result<Value, TranslateError> {
    let body = input.to_string();
    let req = parse_request(body.as_bytes())?;
    let conversation = parse_input(req.input, "input")?;
    let mut names = Names::default();
    let chat = to_chat(
        &req,
        &conversation,
        &Shaping {
            model,
            alias_effort: None,
        },
        body.len(),
        &mut names,
    )?;
    let out = to_gemini(
        &chat,
        &Target {
            model,
            ..Target::default()
        },
    )?;
    Ok(serde_json::from_slice(&out).unwrap_or_default())
}

fn check(input: Value, model: &str, expected: Value) {
    match gemini(&input, model) {
        Ok(got) => assert_eq!(got, expected, "{input}"),
        Err(e) => panic!("{input}: {e}"),
    }
}

/// `param` "": a type error serde reports by position only (the message names the value).
fn check_invalid(input: Value, param: &str) {
    match gemini(&input, "gemini-2.5-flash") {
        Err(TranslateError::InvalidRequest { param: p, .. }) => {
            assert_eq!(p.as_deref().unwrap_or(""), param, "{input}")
        }
        other => panic!("{input}: expected a 400, got {other:?}"),
    }
}

#[test]
fn requests() {
    // A string input with instructions.
    check(
        json!({"model": "m", "instructions": "Be brief.", "input": "Hi"}),
        "gemini-2.5-flash",
        json!({"contents": [{"role": "user", "parts": [{"text": "Hi"}]}],
               "systemInstruction": {"parts": [{"text": "Be brief."}]}}),
    );
    // Items with and without `type`, a developer message, assistant output_text history.
    check(
        json!({"model": "m", "input": [
            {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "You are Codex."}]},
            {"role": "user", "content": "one"},
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "two", "annotations": []}]},
            {"role": "user", "content": [{"type": "input_text", "text": "three"}]}
        ]}),
        "gemini-2.5-flash",
        json!({"contents": [
            {"role": "user", "parts": [{"text": "one"}]},
            {"role": "model", "parts": [{"text": "two"}]},
            {"role": "user", "parts": [{"text": "three"}]}],
            "systemInstruction": {"parts": [{"text": "You are Codex."}]}}),
    );
    // The function-tool loop of OpenAI's guide, on Gemini 3 with the signature replayed from
    // the reasoning item's encrypted_content; strict tools with $schema are cleaned.
    let sig = encode_signatures(&[("call_1".into(), "sig-A".into())]);
    check(
        json!({"model": "m",
        "tools": [{"type": "function", "name": "get_weather", "description": "Weather",
                   "strict": true,
                   "parameters": {"$schema": "http://json-schema.org/draft-07/schema#",
                                  "type": "object", "properties": {"city": {"type": "string"}},
                                  "required": ["city"], "additionalProperties": false}}],
        "input": [
            {"role": "user", "content": "Weather in Paris?"},
            {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": sig},
            {"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "get_weather",
             "arguments": "{\"city\":\"Paris\"}"},
            {"type": "function_call_output", "call_id": "call_1", "output": "21C"}
        ]}),
        "gemini-3-pro-preview",
        json!({"contents": [
            {"role": "user", "parts": [{"text": "Weather in Paris?"}]},
            {"role": "model", "parts": [{"functionCall": {"id": "call_1", "name": "get_weather",
                                          "args": {"city": "Paris"}},
                                          "thoughtSignature": "sig-A"}]},
            {"role": "user", "parts": [{"functionResponse": {"id": "call_1", "name": "get_weather",
                                         "response": {"output": "21C"}}}]}],
            "tools": [{"functionDeclarations": [{"name": "get_weather", "description": "Weather",
                "parametersJsonSchema": {"type": "object", "properties": {"city": {"type": "string"}},
                                         "required": ["city"], "additionalProperties": false}}]}]}),
    );
    // Images: a data URL becomes inline data; a namespace tool is flattened; web_search beside
    // functions is dropped (Gemini refuses the mix); tool_choice required is ANY.
    check(
        json!({"model": "m", "tool_choice": "required",
            "tools": [{"type": "namespace", "name": "crm", "description": "CRM",
                       "tools": [{"type": "function", "name": "lookup", "parameters": {"type": "object"}}]},
                      {"type": "web_search", "search_context_size": "low"},
                      {"type": "image_generation"}],
            "input": [{"role": "user", "content": [
                {"type": "input_text", "text": "What is this?"},
                {"type": "input_image", "image_url": "data:image/png;base64,aGk=", "detail": "auto"},
                {"type": "input_file", "filename": "a.pdf", "file_data": "data:application/pdf;base64,aGk="}]}]}),
        "gemini-2.5-flash",
        json!({"contents": [{"role": "user", "parts": [
                {"text": "What is this?"},
                {"inlineData": {"mimeType": "image/png", "data": "aGk="}},
                {"inlineData": {"mimeType": "application/pdf", "data": "aGk="}}]}],
               "tools": [{"functionDeclarations": [{"name": "crm__lookup"}]}],
               "toolConfig": {"functionCallingConfig": {"mode": "ANY"}}}),
    );
    // allowed_tools: only the allowed functions are declared (Gemini's AUTO has no list).
    let two_tools = json!([
        {"type": "function", "name": "get_weather", "parameters": {"type": "object"}},
        {"type": "function", "name": "other", "parameters": {"type": "object"}}]);
    for (mode, gemini_mode) in [("auto", "AUTO"), ("required", "ANY")] {
        check(
            json!({"model": "m", "input": "hi", "tools": two_tools,
                   "tool_choice": {"type": "allowed_tools", "mode": mode,
                                   "tools": [{"type": "function", "name": "get_weather"}]}}),
            "gemini-2.5-flash",
            json!({"contents": [{"role": "user", "parts": [{"text": "hi"}]}],
                   "tools": [{"functionDeclarations": [{"name": "get_weather"}]}],
                   "toolConfig": {"functionCallingConfig": {"mode": gemini_mode}}}),
        );
    }
    // A replayed namespaced call, reasoning effort on Gemini 3, output limits, JSON schema.
    check(
        json!({"model": "m", "reasoning": {"effort": "high", "summary": "auto"},
               "max_output_tokens": 100, "temperature": 0.5, "top_p": 0.9,
               "text": {"format": {"type": "json_schema", "name": "x", "strict": true,
                                   "schema": {"type": "object", "additionalProperties": false}}},
               "store": false, "include": ["reasoning.encrypted_content"],
               "prompt_cache_key": "k", "client_metadata": {"a": 1}, "service_tier": "auto",
               "metadata": {"m": "1"}, "user": "u", "parallel_tool_calls": false,
               "some_future_field": {"x": 1},
               "input": [{"role": "user", "content": "hi"},
                         {"type": "function_call", "call_id": "c", "name": "lookup",
                          "namespace": "crm", "arguments": "{}"},
                         {"type": "function_call_output", "call_id": "c",
                          "output": [{"type": "input_text", "text": "{\"ok\":true}"}]}]}),
        "gemini-3-flash-preview",
        json!({"contents": [
            {"role": "user", "parts": [{"text": "hi"}]},
            {"role": "model", "parts": [{"functionCall": {"id": "c", "name": "crm__lookup", "args": {}},
                                          "thoughtSignature": "skip_thought_signature_validator"}]},
            {"role": "user", "parts": [{"functionResponse": {"id": "c", "name": "crm__lookup",
                                         "response": {"ok": true}}}]}],
            "generationConfig": {"temperature": 0.5, "topP": 0.9, "maxOutputTokens": 100,
                "responseMimeType": "application/json",
                "responseJsonSchema": {"type": "object", "additionalProperties": false},
                "thinkingConfig": {"thinkingLevel": "high", "includeThoughts": true}}}),
    );
    // web_search alone is Google Search.
    check(
        json!({"model": "m", "input": "news?", "tools": [{"type": "web_search_preview"}]}),
        "gemini-2.5-flash",
        json!({"contents": [{"role": "user", "parts": [{"text": "news?"}]}],
               "tools": [{"googleSearch": {}}]}),
    );
    // A summary asked for without an effort turns thoughts on.
    check(
        json!({"model": "m", "reasoning": {"summary": "auto"}, "input": "hi",
               "text": {"format": {"type": "json_object"}}}),
        "gemini-2.5-pro",
        json!({"contents": [{"role": "user", "parts": [{"text": "hi"}]}],
               "generationConfig": {"responseMimeType": "application/json",
                                    "thinkingConfig": {"includeThoughts": true}}}),
    );
}

#[test]
fn invalid_requests() {
    check_invalid(json!({"input": "hi"}), "model");
    check_invalid(
        json!({"model": "m", "input": "hi", "temperature": "hot"}),
        "",
    );
    check_invalid(json!({"model": "m", "input": 5}), "input");
    check_invalid(
        json!({"model": "m", "input": [{"role": "robot", "content": "x"}]}),
        "input[0].role",
    );
    check_invalid(
        json!({"model": "m", "input": [{"type": "function_call", "name": "f"}]}),
        "input[0]",
    );
    check_invalid(
        json!({"model": "m", "input": "hi", "tool_choice": "sometimes"}),
        "tool_choice",
    );
    check_invalid(
        json!({"model": "m", "input": "hi", "tool_choice": {"type": "allowed_tools", "mode": "auto"}}),
        "tool_choice.tools",
    );
    check_invalid(
        json!({"model": "m", "input": "hi", "temperature": 2.5}),
        "temperature",
    );
    check_invalid(
        json!({"model": "m", "input": "hi",
               "tools": [{"type": "function", "name": "f", "parameters": {"type": "object"}}],
               "tool_choice": {"type": "function", "name": "g"}}),
        "tool_choice",
    );
    check_invalid(
        json!({"model": "m", "input": "hi", "text": {"format": {"type": "yaml"}}}),
        "text.format.type",
    );
    check_invalid(
        json!({"model": "m", "input": "hi", "reasoning": {"effort": "extreme"}}),
        "reasoning_effort",
    );
    check_invalid(
        json!({"model": "m", "input": [{"role": "user", "content": [{"type": "input_image"}]}]}),
        "input[0].content[0].image_url",
    );
    check_invalid(json!({"model": "m", "instructions": "only this"}), "input");
}

#[test]
fn hosted_tools_without_a_counterpart_are_named() {
    let body = json!({"model": "m", "input": "hi", "tools": [
        {"type": "function", "name": "f", "parameters": {"type": "object"}},
        {"type": "file_search", "vector_store_ids": ["vs_1"]},
        {"type": "web_search"},
        {"type": "mcp", "server_label": "x", "server_url": "http://127.0.0.1:9"}]})
    .to_string();
    let req = parse_request(body.as_bytes()).expect("parses");
    let conversation = parse_input(req.input, "input").expect("input");
    let mut names = Names::default();
    let shaping = Shaping {
        model: "gemini-2.5-flash",
        alias_effort: None,
    };
    to_chat(&req, &conversation, &shaping, body.len(), &mut names).expect("builds");
    assert_eq!(names.left_out, ["file_search", "mcp"]);
}

fn ctx(include_encrypted: bool) -> Ctx {
    let mut names = Names::default();
    names
        .namespaced
        .insert("crm__lookup".into(), ("crm".into(), "lookup".into()));
    names.custom.insert("apply_patch".into());
    Ctx {
        id: "resp_abc".into(),
        created_at: 1_700_000_000,
        model: "gpt-5-codex".into(),
        echo: serde_json::Map::new(),
        include_encrypted,
        names,
        tool_names: Default::default(),
    }
}

#[test]
fn whole_responses() {
    let body = json!({"candidates": [{"content": {"role": "model", "parts": [
            {"text": "Thinking about it", "thought": true},
            {"text": "Let me look."},
            {"functionCall": {"name": "crm__lookup", "args": {"id": 7}}, "thoughtSignature": "sig-1"},
            {"functionCall": {"id": "g2", "name": "other", "args": {}}}]},
        "finishReason": "STOP"}],
        "usageMetadata": {"promptTokenCount": 10, "candidatesTokenCount": 5, "thoughtsTokenCount": 3,
                          "cachedContentTokenCount": 4, "totalTokenCount": 18}});
    let done =
        from_gemini(body.to_string().as_bytes(), &ctx(true)).unwrap_or_else(|e| panic!("{e}"));
    let encrypted = encode_signatures(&[("call_abc_0".into(), "sig-1".into())]);
    assert_eq!(
        done.response,
        json!({
        "id": "resp_abc", "object": "response", "created_at": 1_700_000_000, "status": "completed",
        "error": null, "incomplete_details": null, "model": "gpt-5-codex",
        "output": [
            {"id": "rs_abc_0", "type": "reasoning",
             "summary": [{"type": "summary_text", "text": "Thinking about it"}],
             "encrypted_content": encrypted},
            {"id": "msg_abc_1", "type": "message", "role": "assistant", "status": "completed",
             "content": [{"type": "output_text", "text": "Let me look.", "annotations": [], "logprobs": []}]},
            {"id": "fc_abc_2", "type": "function_call", "status": "completed", "call_id": "call_abc_0",
             "name": "lookup", "namespace": "crm", "arguments": "{\"id\":7}"},
            {"id": "fc_abc_3", "type": "function_call", "status": "completed", "call_id": "g2",
             "name": "other", "arguments": "{}"}],
        "usage": {"input_tokens": 10, "input_tokens_details": {"cached_tokens": 4, "cache_write_tokens": 0},
                  "output_tokens": 8, "output_tokens_details": {"reasoning_tokens": 3}, "total_tokens": 18}})
    );
    assert_eq!(
        done.signatures,
        vec![("call_abc_0".to_string(), "sig-1".to_string())]
    );
    assert!(done.has_output);
    assert_eq!(decode_signatures(&encrypted), done.signatures);

    // Without include, the client's reasoning item has no encrypted_content (the stored one does).
    let done =
        from_gemini(body.to_string().as_bytes(), &ctx(false)).unwrap_or_else(|e| panic!("{e}"));
    assert!(done.response["output"][0]
        .get("encrypted_content")
        .is_none());
    assert!(done.output[0].get("encrypted_content").is_some());

    // MAX_TOKENS: incomplete.
    let body = json!({"candidates": [{"content": {"parts": [{"text": "Once upon"}]}, "finishReason": "MAX_TOKENS"}]});
    let done =
        from_gemini(body.to_string().as_bytes(), &ctx(false)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(done.response["status"], "incomplete");
    assert_eq!(
        done.response["incomplete_details"],
        json!({"reason": "max_output_tokens"})
    );
    assert_eq!(done.response["output"][0]["status"], "incomplete");
}

/// The events of a stream: `(type, data)` in order; checks framing and sequence numbers.
fn events(bytes: &[u8]) -> Vec<(String, Value)> {
    let text = String::from_utf8_lossy(bytes);
    let mut out = Vec::new();
    for block in text.split("\n\n").filter(|b| !b.is_empty()) {
        let (event, data) = block.split_once('\n').unwrap_or_else(|| panic!("{block}"));
        let kind = event
            .strip_prefix("event: ")
            .unwrap_or_else(|| panic!("{block}"));
        let data: Value =
            serde_json::from_str(data.strip_prefix("data: ").unwrap_or("")).unwrap_or_default();
        assert_eq!(data["type"], kind);
        assert_eq!(data["sequence_number"], out.len() as u64, "{block}");
        out.push((kind.to_string(), data));
    }
    out
}

#[test]
fn stream_event_order() {
    let mut s = ResponsesStream::new(ctx(true));
    let mut all = Vec::new();
    for e in [
        json!({"candidates": [{"content": {"parts": [{"text": "Hmm", "thought": true}]}}]}),
        json!({"candidates": [{"content": {"parts": [{"text": " ok", "thought": true}]}}]}),
        json!({"candidates": [{"content": {"parts": [{"text": "Hel"}]}}]}),
        json!({"candidates": [{"content": {"parts": [{"text": "lo"}]}}]}),
        json!({"candidates": [{"content": {"parts": [
            {"functionCall": {"name": "f", "args": {"a": 1}}, "thoughtSignature": "sig-9"}]},
            "finishReason": "STOP"}],
            "usageMetadata": {"promptTokenCount": 2, "candidatesTokenCount": 3, "totalTokenCount": 5}}),
    ] {
        all.extend_from_slice(
            &s.on_event(e.to_string().as_bytes())
                .unwrap_or_else(|e| panic!("{e}")),
        );
    }
    all.extend_from_slice(&s.finish().unwrap_or_else(|e| panic!("{e}")));
    let evs = events(&all);
    let kinds: Vec<&str> = evs.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        kinds,
        vec![
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.reasoning_summary_part.added",
            "response.reasoning_summary_text.delta",
            "response.reasoning_summary_text.delta",
            "response.reasoning_summary_text.done",
            "response.reasoning_summary_part.done",
            "response.output_item.done",
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "reasoning-for-signature-added",
            "reasoning-for-signature-done",
            "response.output_item.added",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.done",
            "response.output_item.done",
            "response.completed",
        ]
        .into_iter()
        .map(|k| match k {
            "reasoning-for-signature-added" => "response.output_item.added",
            "reasoning-for-signature-done" => "response.output_item.done",
            k => k,
        })
        .collect::<Vec<_>>()
    );
    let by = |i: usize| &evs[i].1;
    assert_eq!(by(0)["response"]["status"], "in_progress");
    assert_eq!(by(2)["output_index"], 0);
    assert_eq!(by(6)["text"], "Hmm ok");
    assert_eq!(by(13)["text"], "Hello");
    assert_eq!(by(15)["item"]["content"][0]["text"], "Hello");
    assert_eq!(by(11)["item_id"], "msg_abc_1");
    // The signature rides a reasoning item just before its call.
    assert_eq!(by(17)["output_index"], 2);
    assert_eq!(
        decode_signatures(by(17)["item"]["encrypted_content"].as_str().unwrap_or("")),
        vec![("call_abc_0".to_string(), "sig-9".to_string())]
    );
    assert_eq!(by(18)["output_index"], 3);
    assert_eq!(by(18)["item"]["arguments"], "");
    assert_eq!(by(19)["delta"], "{\"a\":1}");
    assert_eq!(by(21)["item"]["call_id"], "call_abc_0");
    let done = &by(22)["response"];
    assert_eq!(done["status"], "completed");
    assert_eq!(done["output"].as_array().map(Vec::len), Some(4));
    assert_eq!(done["usage"]["total_tokens"], 5);
    assert_eq!(
        s.take_signatures(),
        vec![("call_abc_0".to_string(), "sig-9".to_string())]
    );
    assert!(s.take_finished().is_some());

    // A signature while thoughts are open goes on that reasoning item.
    let mut s = ResponsesStream::new(ctx(true));
    let mut all = Vec::new();
    for e in [
        json!({"candidates": [{"content": {"parts": [{"text": "Hmm", "thought": true}]}}]}),
        json!({"candidates": [{"content": {"parts": [
            {"functionCall": {"id": "x", "name": "f", "args": {}}, "thoughtSignature": "sig-2"}]}}]}),
    ] {
        all.extend_from_slice(
            &s.on_event(e.to_string().as_bytes())
                .unwrap_or_else(|e| panic!("{e}")),
        );
    }
    all.extend_from_slice(&s.finish().unwrap_or_else(|e| panic!("{e}")));
    let evs = events(&all);
    let reasoning_done = &evs[7].1;
    assert_eq!(reasoning_done["type"], "response.output_item.done");
    assert_eq!(reasoning_done["item"]["summary"][0]["text"], "Hmm");
    assert_eq!(
        decode_signatures(
            reasoning_done["item"]["encrypted_content"]
                .as_str()
                .unwrap_or("")
        ),
        vec![("x".to_string(), "sig-2".to_string())]
    );

    // Thoughts only: an empty answer; a failure mid-stream is response.failed.
    let mut s = ResponsesStream::new(ctx(false));
    let first = s
        .on_event(
            json!({"candidates": [{"content": {"parts": [{"text": "Hmm", "thought": true}]}}]})
                .to_string()
                .as_bytes(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(matches!(
        s.finish(),
        Err(TranslateError::EmptyAnswer { .. })
    ));
    let mut all = first.to_vec();
    all.extend_from_slice(&s.failed(json!({"code": "rate_limit_exceeded", "message": "quota"})));
    let evs = events(&all);
    let (kind, failed) = &evs[evs.len() - 1];
    assert_eq!(kind, "response.failed");
    assert_eq!(failed["response"]["status"], "failed");
    assert_eq!(failed["response"]["error"]["code"], "rate_limit_exceeded");

    // A failure before any event still opens the response first.
    let s = ResponsesStream::new(ctx(false));
    let evs = events(&s.failed(json!({"code": "server_error", "message": "broken"})));
    let kinds: Vec<&str> = evs.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "response.created",
            "response.in_progress",
            "response.failed"
        ]
    );
}

/// Codex's `apply_patch` is a `custom` tool with a Lark grammar: a function of one string.
#[test]
fn custom_tools() {
    let input = json!({"model": "m",
        "tools": [{"type": "custom", "name": "apply_patch", "description": "Edit files.",
                   "format": {"type": "grammar", "syntax": "lark", "definition": "start: patch"}}],
        "input": [{"role": "user", "content": "fix it"},
                  {"type": "custom_tool_call", "call_id": "c1", "name": "apply_patch",
                   "input": "*** Begin Patch\n*** End Patch"},
                  {"type": "custom_tool_call_output", "call_id": "c1", "output": "Done"}]});
    let got = gemini(&input, "gemini-2.5-flash").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        got["tools"][0]["functionDeclarations"][0],
        json!({"name": "apply_patch",
               "description": "Edit files.\n\nThe `input` follows this lark grammar:\nstart: patch",
               "parametersJsonSchema": {"type": "object", "properties": {"input": {"type": "string",
                   "description": "The whole input, as raw text in the format the tool describes"}},
                   "required": ["input"]}})
    );
    assert_eq!(
        got["contents"][1]["parts"][0]["functionCall"],
        json!({"id": "c1", "name": "apply_patch",
               "args": {"input": "*** Begin Patch\n*** End Patch"}})
    );
    assert_eq!(
        got["contents"][2]["parts"][0]["functionResponse"],
        json!({"id": "c1", "name": "apply_patch", "response": {"output": "Done"}})
    );

    let body = json!({"candidates": [{"content": {"parts": [
        {"functionCall": {"id": "c2", "name": "apply_patch", "args": {"input": "*** Begin Patch"}}}]}}]});
    let done =
        from_gemini(body.to_string().as_bytes(), &ctx(false)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        done.response["output"][0],
        json!({"id": "ctc_abc_0", "type": "custom_tool_call",
        "status": "completed", "call_id": "c2", "name": "apply_patch", "input": "*** Begin Patch"})
    );

    let mut s = ResponsesStream::new(ctx(false));
    let mut all = s
        .on_event(body.to_string().as_bytes())
        .unwrap_or_else(|e| panic!("{e}"))
        .to_vec();
    all.extend_from_slice(&s.finish().unwrap_or_else(|e| panic!("{e}")));
    let evs = events(&all);
    let kinds: Vec<&str> = evs.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.custom_tool_call_input.delta",
            "response.custom_tool_call_input.done",
            "response.output_item.done",
            "response.completed"
        ]
    );
    assert_eq!(evs[2].1["item"]["input"], "");
    assert_eq!(evs[3].1["delta"], "*** Begin Patch");
    assert_eq!(evs[4].1["input"], "*** Begin Patch");
    assert_eq!(evs[5].1["item"]["type"], "custom_tool_call");
}

#[test]
fn a_streamed_namespaced_call_names_its_own_tool_in_every_event() {
    let mut s = ResponsesStream::new(ctx(false));
    let call = json!({"candidates": [{"content": {"parts": [
        {"functionCall": {"id": "c1", "name": "crm__lookup", "args": {"id": 7}}}]},
        "finishReason": "STOP"}]});
    let mut all = s
        .on_event(call.to_string().as_bytes())
        .unwrap_or_else(|e| panic!("{e}"))
        .to_vec();
    all.extend_from_slice(&s.finish().unwrap_or_else(|e| panic!("{e}")));
    let evs = events(&all);
    let of = |kind: &str| {
        evs.iter()
            .find(|(k, _)| k == kind)
            .map(|(_, d)| d.clone())
            .unwrap_or_else(|| panic!("no {kind}"))
    };
    assert_eq!(of("response.output_item.added")["item"]["name"], "lookup");
    assert_eq!(of("response.output_item.added")["item"]["namespace"], "crm");
    assert_eq!(
        of("response.function_call_arguments.done")["name"],
        "lookup"
    );
    assert_eq!(of("response.output_item.done")["item"]["name"], "lookup");
    assert_eq!(of("response.output_item.done")["item"]["namespace"], "crm");
}
