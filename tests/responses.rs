//! `/v1/responses` (the OpenAI Responses API) through the real binary and the fake Gemini:
//! whole and streamed answers, a function-tool loop on Gemini 3 with thought signatures
//! round-tripping through `encrypted_content`, stored responses (`previous_response_id`,
//! `GET`, `DELETE`, per token), `input_tokens`, failover and errors in OpenAI's shape, and a
//! request shaped like Codex CLI's.

mod support;

use serde_json::{json, Value};
use support::*;

const MODEL: &str = "gemini-2.5-flash";
const TOOL_MODEL: &str = "gemini-3-flash-preview";
const OTHER_TOKEN: &str = "sk-other-token-0123456789abcdef";

fn tokens(c: TestConfig) -> TestConfig {
    c.set(
        "auth",
        &format!(r#"tokens = ["{TEST_TOKEN}", {{ name = "other", token = "{OTHER_TOKEN}" }}]"#),
    )
}

async fn create(proxy: &Proxy, body: &Value) -> (u16, Value) {
    post_json(proxy, "/v1/responses", body).await
}

/// The events of a Responses stream as `(event, data)`; checks the framing (`event:` names the
/// data's `type`) and that sequence numbers count up from 0.
async fn stream(proxy: &Proxy, body: &Value) -> Vec<(String, Value)> {
    let response = proxy
        .post("/v1/responses")
        .json(body)
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap_or(""),
        "text/event-stream"
    );
    let text = response.text().await.expect("body");
    parse_events(&text)
}

fn parse_events(text: &str) -> Vec<(String, Value)> {
    let mut out: Vec<(String, Value)> = Vec::new();
    for block in text.split("\n\n").filter(|b| !b.trim().is_empty()) {
        if block.starts_with(':') {
            continue;
        }
        let mut event = None;
        let mut data = None;
        for line in block.lines() {
            if let Some(e) = line.strip_prefix("event: ") {
                event = Some(e.to_string());
            } else if let Some(d) = line.strip_prefix("data: ") {
                data = serde_json::from_str::<Value>(d).ok();
            }
        }
        let (Some(event), Some(data)) = (event, data) else {
            panic!("not an event: {block:?}");
        };
        assert_eq!(data["type"], event.as_str(), "{block}");
        assert_eq!(data["sequence_number"], out.len() as u64, "{block}");
        out.push((event, data));
    }
    out
}

fn kinds(events: &[(String, Value)]) -> Vec<&str> {
    events.iter().map(|(k, _)| k.as_str()).collect()
}

fn upstream_body(fake: &FakeGemini) -> Value {
    fake.last_request()
        .and_then(|r| r.body)
        .expect("the upstream saw a JSON body")
}

fn openai_error(body: &Value, kind: &str) {
    assert_eq!(body["error"]["type"], kind, "{body}");
    assert!(body["error"]["message"].as_str().is_some(), "{body}");
}

#[tokio::test]
async fn whole_answer_is_a_response_object_then_stored() {
    let fake = FakeGemini::start().await;
    fake.on_any()
        .always(Reply::text("Hello there.").thoughts_tokens(5));
    let proxy = start(&fake, &[fake_key(1)], tokens).await;

    let (status, body) = create(
        &proxy,
        &json!({"model": MODEL, "instructions": "Be nice.", "input": "Say hello",
                "metadata": {"k": "v"}, "user": "u1", "service_tier": "auto"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let id = body["id"].as_str().unwrap_or("").to_string();
    assert!(id.starts_with("resp_"), "{body}");
    assert_eq!(body["object"], "response");
    assert_eq!(body["status"], "completed");
    assert_eq!(body["model"], MODEL);
    assert_eq!(body["output"][0]["type"], "message");
    assert_eq!(body["output"][0]["role"], "assistant");
    assert_eq!(body["output"][0]["content"][0]["type"], "output_text");
    assert_eq!(body["output"][0]["content"][0]["text"], "Hello there.");
    assert_eq!(body["tools"], json!([]));
    assert_eq!(body["tool_choice"], "auto");
    assert_eq!(body["parallel_tool_calls"], true);
    assert_eq!(body["metadata"], json!({"k": "v"}));
    let usage = &body["usage"];
    assert_eq!(usage["output_tokens_details"]["reasoning_tokens"], 5);
    let (i, o, t) = (
        usage["input_tokens"].as_u64().unwrap_or(0),
        usage["output_tokens"].as_u64().unwrap_or(0),
        usage["total_tokens"].as_u64().unwrap_or(0),
    );
    assert!(i > 0 && o > 5 && t == i + o, "{usage}");
    let sent = upstream_body(&fake);
    assert_eq!(sent["systemInstruction"]["parts"][0]["text"], "Be nice.");
    assert_eq!(sent["contents"][0]["parts"][0]["text"], "Say hello");

    // GET returns it, to its token only; DELETE removes it.
    let got = proxy
        .get(&format!("/v1/responses/{id}"))
        .send()
        .await
        .expect("get");
    assert_eq!(got.status(), 200);
    let got: Value = got.json().await.unwrap_or_default();
    assert_eq!(got, body);
    let other = client()
        .get(format!("{}/v1/responses/{id}", proxy.url()))
        .bearer_auth(OTHER_TOKEN)
        .send()
        .await
        .expect("get");
    assert_eq!(other.status(), 404);
    openai_error(
        &other.json().await.unwrap_or_default(),
        "invalid_request_error",
    );
    let deleted = proxy
        .request(reqwest::Method::DELETE, &format!("/v1/responses/{id}"))
        .send()
        .await
        .expect("delete");
    assert_eq!(deleted.status(), 200);
    let deleted: Value = deleted.json().await.unwrap_or_default();
    assert_eq!(deleted["deleted"], true);
    assert_eq!(deleted["id"], id.as_str());
    let gone = proxy
        .get(&format!("/v1/responses/{id}"))
        .send()
        .await
        .expect("get");
    assert_eq!(gone.status(), 404);
    let again = proxy
        .request(reqwest::Method::DELETE, &format!("/v1/responses/{id}"))
        .send()
        .await
        .expect("delete");
    assert_eq!(again.status(), 404);

    // store: false keeps nothing.
    let (status, body) = create(
        &proxy,
        &json!({"model": MODEL, "input": "x", "store": false}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let id = body["id"].as_str().unwrap_or("");
    let got = proxy
        .get(&format!("/v1/responses/{id}"))
        .send()
        .await
        .expect("get");
    assert_eq!(got.status(), 404);
}

async fn get_json(proxy: &Proxy, path: &str, token: &str) -> (u16, Value) {
    let response = client()
        .get(format!("{}{path}", proxy.url()))
        .bearer_auth(token)
        .send()
        .await
        .expect("get");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or_default())
}

/// `GET /v1/responses/{id}/input_items`: the conversation a stored response was answered from
/// (a follow-up's includes the turn before it), newest first by default, paged with `limit`
/// and `after`, to the storing token only.
#[tokio::test]
async fn input_items_list_what_a_stored_response_was_answered_from() {
    let fake = FakeGemini::start().await;
    fake.on_any().always(Reply::text("Noted."));
    let proxy = start(&fake, &[fake_key(1)], tokens).await;
    let (status, first) = create(&proxy, &json!({"model": MODEL, "input": "one"})).await;
    assert_eq!(status, 200, "{first}");
    let first_id = first["id"].as_str().unwrap_or("").to_string();
    let (status, second) = create(
        &proxy,
        &json!({"model": MODEL, "previous_response_id": first_id, "input": [
            {"role": "user", "content": [{"type": "input_text", "text": "two"}]},
            {"type": "message", "role": "user", "content": "three", "id": "msg_mine"}]}),
    )
    .await;
    assert_eq!(status, 200, "{second}");
    let id = second["id"].as_str().unwrap_or("").to_string();

    let texts = |list: &Value| -> Vec<String> {
        list["data"]
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .map(|i| i["content"][0]["text"].as_str().unwrap_or("?").to_string())
                    .collect()
            })
            .unwrap_or_default()
    };
    let path = format!("/v1/responses/{id}/input_items");
    let (status, list) = get_json(&proxy, &path, TEST_TOKEN).await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["object"], "list");
    // Newest first: this turn's two inputs, the first turn's answer, its input.
    assert_eq!(texts(&list), ["three", "two", "Noted.", "one"], "{list}");
    assert_eq!(list["has_more"], false);
    assert_eq!(list["data"][0]["id"], "msg_mine");
    for item in list["data"].as_array().into_iter().flatten() {
        assert_eq!(item["type"], "message", "{item}");
        assert!(item["id"].as_str().is_some_and(|i| !i.is_empty()), "{item}");
    }
    assert_eq!(list["data"][3]["content"][0]["type"], "input_text");
    assert_eq!(list["data"][2]["content"][0]["type"], "output_text");
    assert_eq!(list["first_id"], "msg_mine");

    // Oldest first, two at a time.
    let (_, page) = get_json(&proxy, &format!("{path}?order=asc&limit=2"), TEST_TOKEN).await;
    assert_eq!(texts(&page), ["one", "Noted."], "{page}");
    assert_eq!(page["has_more"], true);
    let after = page["last_id"].as_str().unwrap_or("").to_string();
    let (_, next) = get_json(
        &proxy,
        &format!("{path}?order=asc&limit=2&after={after}"),
        TEST_TOKEN,
    )
    .await;
    assert_eq!(texts(&next), ["two", "three"], "{next}");
    assert_eq!(next["has_more"], false);

    // Another token, an unknown id, a bad limit.
    let (status, other) = get_json(&proxy, &path, OTHER_TOKEN).await;
    assert_eq!(status, 404, "{other}");
    openai_error(&other, "invalid_request_error");
    let (status, _) = get_json(&proxy, "/v1/responses/resp_nope/input_items", TEST_TOKEN).await;
    assert_eq!(status, 404);
    let (status, bad) = get_json(&proxy, &format!("{path}?limit=0"), TEST_TOKEN).await;
    assert_eq!(status, 400, "{bad}");
    assert_eq!(bad["error"]["param"], "limit", "{bad}");
}

/// An `item_reference` in `input` is replaced by the stored item it names (this token's
/// only); one that names nothing is a 400 before any upstream call.
#[tokio::test]
async fn item_references_are_resolved_from_stored_responses() {
    let fake = FakeGemini::start().await;
    fake.on_any().always(Reply::text("Paris is the capital."));
    let proxy = start(&fake, &[fake_key(1)], tokens).await;
    let (status, first) = create(&proxy, &json!({"model": MODEL, "input": "capital?"})).await;
    assert_eq!(status, 200, "{first}");
    let item = first["output"][0]["id"].as_str().unwrap_or("").to_string();
    let (status, second) = create(
        &proxy,
        &json!({"model": MODEL, "store": false, "input": [
            {"role": "user", "content": "capital?"},
            {"type": "item_reference", "id": item},
            {"role": "user", "content": "and of Italy?"}]}),
    )
    .await;
    assert_eq!(status, 200, "{second}");
    let sent = upstream_body(&fake);
    assert_eq!(sent["contents"][1]["role"], "model", "{sent}");
    assert_eq!(
        sent["contents"][1]["parts"][0]["text"], "Paris is the capital.",
        "{sent}"
    );
    assert_eq!(sent["contents"][2]["parts"][0]["text"], "and of Italy?");

    let hits = fake.total_hits();
    for (token, id) in [
        (TEST_TOKEN, "msg_nothing_0".to_string()),
        (TEST_TOKEN, "nonsense".to_string()),
        (OTHER_TOKEN, item.clone()),
    ] {
        let response = client()
            .post(format!("{}/v1/responses", proxy.url()))
            .bearer_auth(token)
            .json(&json!({"model": MODEL, "input": [{"type": "item_reference", "id": id}]}))
            .send()
            .await
            .expect("post");
        assert_eq!(response.status(), 400, "{id}");
        let body: Value = response.json().await.unwrap_or_default();
        openai_error(&body, "invalid_request_error");
        assert_eq!(body["error"]["param"], "input[0].id", "{body}");
    }
    assert_eq!(fake.total_hits(), hits);
}

#[tokio::test]
async fn streamed_answer_then_previous_response_id() {
    let fake = FakeGemini::start().await;
    fake.on_any()
        .then(Reply::text("The first answer.").chunks(3));
    let proxy = start(&fake, &[fake_key(1)], tokens).await;

    let events = stream(
        &proxy,
        &json!({"model": MODEL, "input": "first", "stream": true}),
    )
    .await;
    assert_eq!(
        kinds(&events),
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.completed",
        ]
    );
    let deltas: String = events
        .iter()
        .filter(|(k, _)| k == "response.output_text.delta")
        .map(|(_, d)| d["delta"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(deltas, "The first answer.");
    let item_id = &events[2].1["item"]["id"];
    assert!(events[3..10].iter().all(|(_, d)| d["output_index"] == 0));
    assert!(events[3..9].iter().all(|(_, d)| &d["item_id"] == item_id));
    let completed = &events[10].1["response"];
    assert_eq!(completed["status"], "completed");
    assert_eq!(
        completed["output"][0]["content"][0]["text"],
        "The first answer."
    );
    assert!(completed["usage"]["total_tokens"].as_u64().unwrap_or(0) > 0);
    let id = completed["id"].as_str().unwrap_or("").to_string();
    assert_eq!(events[0].1["response"]["id"], id.as_str());

    // The stored conversation continues: the upstream sees the first turn, then the new input.
    fake.on_any().then(Reply::text("The second answer."));
    let (status, body) = create(
        &proxy,
        &json!({"model": MODEL, "previous_response_id": id, "input": [{"role": "user", "content": "second"}]}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["previous_response_id"], id.as_str());
    let sent = upstream_body(&fake);
    let texts: Vec<(&str, &str)> = sent["contents"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            (
                c["role"].as_str().unwrap_or(""),
                c["parts"][0]["text"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        texts,
        [
            ("user", "first"),
            ("model", "The first answer."),
            ("user", "second")
        ]
    );
    // …and a third turn continues from the second.
    let second = body["id"].as_str().unwrap_or("").to_string();
    let (status, _) = create(
        &proxy,
        &json!({"model": MODEL, "previous_response_id": second, "input": "third"}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        upstream_body(&fake)["contents"].as_array().map(Vec::len),
        Some(5)
    );

    // An unknown id, or another token's: 404 before any upstream call.
    let hits = fake.total_hits();
    let (status, body) = create(
        &proxy,
        &json!({"model": MODEL, "previous_response_id": "resp_nope", "input": "x"}),
    )
    .await;
    assert_eq!(status, 404, "{body}");
    openai_error(&body, "invalid_request_error");
    let other = client()
        .post(format!("{}/v1/responses", proxy.url()))
        .bearer_auth(OTHER_TOKEN)
        .json(&json!({"model": MODEL, "previous_response_id": second, "input": "x"}))
        .send()
        .await
        .expect("post");
    assert_eq!(other.status(), 404);
    assert_eq!(fake.total_hits(), hits);
}

fn weather_tool() -> Value {
    json!({"type": "function", "name": "get_weather", "description": "Weather for a city",
           "strict": true,
           "parameters": {"$schema": "https://json-schema.org/draft/2020-12/schema",
                          "type": "object", "properties": {"city": {"type": "string"}},
                          "required": ["city"], "additionalProperties": false}})
}

fn signed_call(city: &str, signature: &str) -> Value {
    json!({"functionCall": {"name": "get_weather", "args": {"city": city}},
           "thoughtSignature": signature})
}

/// A Gemini 3 tool loop with `store: false`: the client replays the items it got, to another
/// replica (no shared signature cache), and the signature comes back from
/// `encrypted_content`.
#[tokio::test]
async fn function_tool_loop_round_trips_signatures_through_encrypted_content() {
    let fake = FakeGemini::start().await;
    fake.require_signatures(true);
    fake.on_model(TOOL_MODEL)
        .then(Reply::parts(vec![
            json!({"text": "Checking the weather.", "thought": true}),
            signed_call("Paris", "sig-loop-1"),
        ]))
        .then(Reply::text("It is 21C in Paris."));
    let first = start(&fake, &[fake_key(1)], |c| c).await;
    let second = start(&fake, &[fake_key(2)], |c| c).await;

    let input = vec![json!({"role": "user", "content": "Weather in Paris?"})];
    let request = |input: &Vec<Value>| {
        json!({"model": TOOL_MODEL, "input": input, "tools": [weather_tool()], "store": false,
               "include": ["reasoning.encrypted_content"], "reasoning": {"effort": "low", "summary": "auto"}})
    };
    let (status, body) = create(&first, &request(&input)).await;
    assert_eq!(status, 200, "{body}");
    let output = body["output"].as_array().cloned().unwrap_or_default();
    let kinds: Vec<&str> = output
        .iter()
        .map(|i| i["type"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(kinds, ["reasoning", "function_call"], "{body}");
    assert_eq!(output[0]["summary"][0]["text"], "Checking the weather.");
    let encrypted = output[0]["encrypted_content"].as_str().unwrap_or("");
    assert!(!encrypted.is_empty(), "{body}");
    assert!(!encrypted.contains("sig-loop-1") || encrypted.starts_with("gr1:"));
    let call = &output[1];
    assert_eq!(call["name"], "get_weather");
    assert_eq!(
        serde_json::from_str::<Value>(call["arguments"].as_str().unwrap_or("")).ok(),
        Some(json!({"city": "Paris"}))
    );

    // Replay: the items as received (reasoning with encrypted_content, the call), the output.
    let mut input = input;
    input.extend(output.iter().cloned());
    input
        .push(json!({"type": "function_call_output", "call_id": call["call_id"], "output": "21C"}));
    let (status, body) = create(&second, &request(&input)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["output"][0]["content"][0]["text"],
        "It is 21C in Paris."
    );
    let sent = upstream_body(&fake);
    let model_turn = &sent["contents"][1];
    assert_eq!(model_turn["role"], "model");
    assert_eq!(
        model_turn["parts"][0]["thoughtSignature"], "sig-loop-1",
        "{sent}"
    );
    assert_eq!(
        sent["contents"][2]["parts"][0]["functionResponse"]["response"],
        json!({"output": "21C"})
    );
    // The strict schema reached Gemini cleaned.
    let decl = &sent["tools"][0]["functionDeclarations"][0];
    assert_eq!(decl["name"], "get_weather");
    assert!(
        decl["parametersJsonSchema"].get("$schema").is_none(),
        "{decl}"
    );
    assert_eq!(decl["parametersJsonSchema"]["additionalProperties"], false);
}

/// What Codex CLI sends (a developer message with its long system prompt, items with and
/// without `type`, strict function tools with `$schema`, a namespace tool, web_search,
/// `store: false`, encrypted reasoning, `prompt_cache_key`, `client_metadata`, its headers,
/// streaming, the whole history each turn) is accepted, and its loop keeps the signature.
#[tokio::test]
async fn a_codex_like_request_streams_and_keeps_its_signature() {
    let fake = FakeGemini::start().await;
    fake.require_signatures(true);
    let shell_call = json!({"functionCall": {"name": "shell", "args": {"command": ["ls"]}},
                            "thoughtSignature": "sig-codex-1"});
    fake.on_model(TOOL_MODEL)
        .then(Reply::stream(vec![
            chunk_with_parts(
                vec![json!({"text": "I should list files.", "thought": true})],
                None,
            ),
            chunk_with_parts(vec![shell_call], Some("STOP")),
        ]))
        .then(Reply::text("There are two files.").chunks(2));
    let proxy_a = start(&fake, &[fake_key(1)], |c| c).await;
    let proxy_b = start(&fake, &[fake_key(2)], |c| c).await;

    let system_prompt = "You are Codex, a coding agent. ".repeat(400);
    let tools = json!([
        {"type": "function", "name": "shell", "description": "Runs a shell command", "strict": false,
         "parameters": {"$schema": "http://json-schema.org/draft-07/schema#", "type": "object",
                        "properties": {"command": {"type": "array", "items": {"type": "string"}},
                                       "workdir": {"type": "string"}},
                        "required": ["command"], "additionalProperties": false}},
        {"type": "function", "name": "update_plan", "description": "Plan", "strict": true,
         "parameters": {"type": "object", "properties": {"plan": {"type": "array", "items": {"type": "string"}}},
                        "required": ["plan"], "additionalProperties": false}},
        {"type": "namespace", "name": "mcp__docs", "description": "Docs server",
         "tools": [{"type": "function", "name": "search", "description": "Search docs",
                    "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}]},
        {"type": "custom", "name": "apply_patch", "description": "Edit files",
         "format": {"type": "grammar", "syntax": "lark", "definition": "start: begin_patch hunk+ end_patch"}},
        {"type": "web_search", "external_web_access": false}
    ]);
    let mut history = vec![
        json!({"type": "message", "role": "developer",
               "content": [{"type": "input_text", "text": system_prompt}]}),
        json!({"type": "message", "role": "user",
               "content": [{"type": "input_text", "text": "<environment_context>cwd=/w</environment_context>"}]}),
        json!({"role": "user", "content": "list the files"}),
    ];
    let request = |input: &Vec<Value>| {
        json!({"model": TOOL_MODEL, "instructions": "Follow the developer message.",
               "input": input, "tools": tools, "tool_choice": "auto", "parallel_tool_calls": false,
               "reasoning": {"effort": "medium", "summary": "auto"}, "store": false, "stream": true,
               "include": ["reasoning.encrypted_content"], "prompt_cache_key": "0199-thread",
               "client_metadata": {"originator": "codex_cli_rs"}, "text": {"verbosity": "low"}})
    };
    let send = |proxy: &Proxy, body: Value| {
        proxy
            .post("/v1/responses")
            .header("session-id", "0199-session")
            .header("thread-id", "0199-thread")
            .header("x-codex-turn-metadata", "{\"turn\":1}")
            .header("x-codex-beta-features", "unified_exec")
            .header("originator", "codex_cli_rs")
            .json(&body)
            .send()
    };
    let response = send(&proxy_a, request(&history)).await.expect("post");
    assert_eq!(response.status(), 200);
    let events = parse_events(&response.text().await.unwrap_or_default());
    let (last, completed) = events.last().cloned().unwrap_or_default();
    assert_eq!(last, "response.completed", "{events:?}");
    let output = completed["response"]["output"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let kinds: Vec<&str> = output
        .iter()
        .map(|i| i["type"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(kinds, ["reasoning", "function_call"], "{completed}");
    // Codex builds its history from the output_item.done events.
    let done: Vec<Value> = events
        .iter()
        .filter(|(k, _)| k == "response.output_item.done")
        .map(|(_, d)| d["item"].clone())
        .collect();
    assert_eq!(done, output);
    assert!(done[0]["encrypted_content"]
        .as_str()
        .is_some_and(|s| !s.is_empty()));
    let sent = upstream_body(&fake);
    let decls = sent["tools"][0]["functionDeclarations"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let names: Vec<&str> = decls
        .iter()
        .map(|d| d["name"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        names,
        ["shell", "update_plan", "mcp__docs__search", "apply_patch"]
    );
    // web_search beside function tools is dropped: Gemini refuses the mix.
    assert_eq!(sent["tools"].as_array().map(Vec::len), Some(1), "{sent}");
    assert!(sent["systemInstruction"]["parts"][1]["text"]
        .as_str()
        .is_some_and(|t| t.starts_with("You are Codex")));

    // Turn two goes to the other replica with the whole history.
    history.extend(done.iter().cloned());
    history.push(
        json!({"type": "function_call_output", "call_id": done[1]["call_id"],
                        "output": "a.rs\nb.rs"}),
    );
    let response = send(&proxy_b, request(&history)).await.expect("post");
    assert_eq!(response.status(), 200);
    let events = parse_events(&response.text().await.unwrap_or_default());
    assert_eq!(
        events.last().map(|(k, _)| k.as_str()),
        Some("response.completed"),
        "{events:?}"
    );
    let text: String = events
        .iter()
        .filter(|(k, _)| k == "response.output_text.delta")
        .map(|(_, d)| d["delta"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(text, "There are two files.");
    let sent = upstream_body(&fake);
    let model_turn = sent["contents"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["role"] == "model")
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        model_turn["parts"][0]["thoughtSignature"], "sig-codex-1",
        "{sent}"
    );
}

#[tokio::test]
async fn input_tokens_counts_with_gemini() {
    let fake = FakeGemini::start().await;
    let proxy = start(&fake, &[fake_key(1)], |c| c).await;
    let (status, body) = post_json(
        &proxy,
        "/v1/responses/input_tokens",
        &json!({"model": MODEL, "instructions": "Be brief.", "input": "How many tokens is this?",
                "tools": [weather_tool()]}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["object"], "response.input_tokens");
    assert!(body["input_tokens"].as_u64().unwrap_or(0) > 0, "{body}");
    let seen = fake.last_request().expect("a countTokens call");
    assert!(seen.path.ends_with(":countTokens"), "{}", seen.path);
    let sent = seen.body.unwrap_or_default();
    assert_eq!(
        sent["generateContentRequest"]["model"],
        format!("models/{MODEL}")
    );
    assert_eq!(
        sent["generateContentRequest"]["systemInstruction"]["parts"][0]["text"],
        "Be brief."
    );
}

#[tokio::test]
async fn a_429_on_the_first_key_is_invisible_and_all_keys_out_is_a_rate_limit_error() {
    let keys = fake_keys(2);
    for stream_it in [false, true] {
        let fake = FakeGemini::start().await;
        // One key is out for the minute; round robin tries it on one of two requests.
        fake.on(&keys[0], MODEL)
            .always(Reply::quota_per_minute(MODEL, Some("30s")));
        let proxy = start(&fake, &keys, |c| c).await;
        for _ in 0..2 {
            let body = json!({"model": MODEL, "input": "hi", "stream": stream_it});
            if stream_it {
                let events = stream(&proxy, &body).await;
                assert_eq!(
                    events.last().map(|(k, _)| k.as_str()),
                    Some("response.completed")
                );
            } else {
                let (status, body) = create(&proxy, &body).await;
                assert_eq!(status, 200, "{body}");
            }
        }
        assert_eq!(fake.hits(&keys[0], MODEL), 1, "the 429 was met once");
        assert_eq!(fake.hits(&keys[1], MODEL), 2);
    }

    let fake = FakeGemini::start().await;
    fake.on_any()
        .always(Reply::quota_per_minute(MODEL, Some("30s")));
    let proxy = start(&fake, &keys, |c| c).await;
    for stream_it in [false, true] {
        let response = proxy
            .post("/v1/responses")
            .json(&json!({"model": MODEL, "input": "hi", "stream": stream_it}))
            .send()
            .await
            .expect("post");
        assert_eq!(response.status(), 429);
        assert!(response.headers().get("retry-after").is_some());
        openai_error(
            &response.json().await.unwrap_or_default(),
            "rate_limit_error",
        );
    }
}

#[tokio::test]
async fn bad_input_is_a_400_in_openai_shape_before_any_upstream_call() {
    let fake = FakeGemini::start().await;
    let proxy = start(&fake, &[fake_key(1)], |c| c).await;
    for (body, param) in [
        (json!({"input": "hi"}), Some("model")),
        (
            json!({"model": MODEL, "input": "hi", "temperature": "hot"}),
            None,
        ),
        (
            json!({"model": MODEL, "input": [{"role": "wizard", "content": "x"}]}),
            Some("input[0].role"),
        ),
        (
            json!({"model": MODEL, "input": "hi", "max_output_tokens": "many"}),
            None,
        ),
        (
            json!({"model": MODEL, "input": "hi", "tools": [{"type": "function"}]}),
            Some("tools[0].name"),
        ),
        (
            json!({"model": MODEL, "input": "hi", "reasoning": {"effort": "ultra"}}),
            Some("reasoning_effort"),
        ),
        (json!({"model": MODEL}), Some("input")),
        // Nothing Gemini could be sent (it refuses empty contents): refused here.
        (json!({"model": MODEL, "input": ""}), Some("input")),
        (
            json!({"model": MODEL, "input": [{"role": "user", "content": [{"type": "input_text", "text": ""}]}]}),
            Some("input"),
        ),
    ] {
        let (status, got) = create(&proxy, &body).await;
        assert_eq!(status, 400, "{body}: {got}");
        openai_error(&got, "invalid_request_error");
        if let Some(param) = param {
            assert_eq!(got["error"]["param"], param, "{body}: {got}");
        }
    }
    let raw = proxy
        .post("/v1/responses")
        .body("{not json")
        .send()
        .await
        .expect("post");
    assert_eq!(raw.status(), 400);
    assert_eq!(fake.total_hits(), 0);
}

#[tokio::test]
async fn an_upstream_failure_mid_stream_is_response_failed() {
    let fake = FakeGemini::start().await;
    fake.on_any().always(Reply::error_in_stream(
        vec![text_chunk("Partial", None)],
        Reply::overloaded(),
    ));
    let proxy = start(&fake, &[fake_key(1)], |c| c).await;
    let events = stream(
        &proxy,
        &json!({"model": MODEL, "input": "hi", "stream": true}),
    )
    .await;
    let (last, data) = events.last().cloned().unwrap_or_default();
    assert_eq!(last, "response.failed", "{events:?}");
    assert_eq!(data["response"]["status"], "failed");
    assert!(
        data["response"]["error"]["message"].as_str().is_some(),
        "{data}"
    );
    assert!(kinds(&events).contains(&"response.output_text.delta"));
}

/// One loopback HTTP server answering every request with a PNG; its URL.
async fn png_server() -> (String, tokio::task::JoinHandle<()>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/cat.png", listener.local_addr().expect("addr"));
    let task = tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let body = b"\x89PNG\r\n\x1a\nfake image bytes";
                let mut buf = vec![0u8; 8192];
                let wait = std::time::Duration::from_secs(5);
                let _ = tokio::time::timeout(wait, socket.read(&mut buf)).await;
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: image/png\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                let _ = socket.write_all(head.as_bytes()).await;
                let _ = socket.write_all(body).await;
                let _ = socket.shutdown().await;
            });
        }
    });
    (url, task)
}

#[tokio::test]
async fn input_image_urls_are_fetched_and_data_urls_inlined() {
    let (url, server) = png_server().await;
    let fake = FakeGemini::start().await;
    let proxy = start(&fake, &[fake_key(1)], |c| {
        c.set("upstream", "fetch_private_urls = true")
    })
    .await;
    let (status, body) = create(
        &proxy,
        &json!({"model": MODEL, "input": [{"role": "user", "content": [
            {"type": "input_text", "text": "Compare"},
            {"type": "input_image", "image_url": url, "detail": "auto"},
            {"type": "input_image", "image_url": "data:image/jpeg;base64,aGk="},
            {"type": "input_file", "file_url": url}]}]}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let parts = &upstream_body(&fake)["contents"][0]["parts"];
    // An `input_file` by URL is fetched as an image URL is (a PDF or an image).
    assert_eq!(parts[3], parts[1]);
    assert_eq!(
        parts[1],
        json!({"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgpmYWtlIGltYWdlIGJ5dGVz"}})
    );
    assert_eq!(
        parts[2],
        json!({"inlineData": {"mimeType": "image/jpeg", "data": "aGk="}})
    );
    server.abort();
    // A URL that cannot be fetched is the client's 400 naming Responses' own field.
    let hits = fake.total_hits();
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr")
    };
    let (status, body) = create(
        &proxy,
        &json!({"model": MODEL, "input": [{"role": "user", "content": [
            {"type": "input_file", "file_url": format!("http://{closed}/a.pdf")}]}]}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["param"], "input", "{body}");
    assert_eq!(fake.total_hits(), hits);
}

/// A tool choice naming no declared tool is refused before the request's image is fetched.
#[tokio::test]
async fn a_bad_tool_choice_is_refused_before_any_fetch() {
    let fake = FakeGemini::start().await;
    let proxy = start(&fake, &[fake_key(1)], |c| {
        c.set("upstream", "fetch_private_urls = true")
    })
    .await;
    let image = Unfetched::new("cat.png").await;
    let (status, body) = create(
        &proxy,
        &json!({"model": MODEL,
                "tools": [{"type": "function", "name": "read", "parameters": {"type": "object"}}],
                "tool_choice": {"type": "function", "name": "write"},
                "input": [{"role": "user", "content": [
                    {"type": "input_image", "image_url": image.url}]}]}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["type"], "invalid_request_error", "{body}");
    image.assert_unfetched().await;
    assert_eq!(fake.total_hits(), 0);
}

/// The tokens' text of an `output_text.logprobs` list, joined.
fn logprob_text(logprobs: &Value) -> String {
    logprobs
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["token"].as_str())
        .collect()
}

/// `include: ["message.output_text.logprobs"]` and `top_logprobs` ask Gemini for them
/// (`responseLogprobs`, `logprobs`), and its `logprobsResult` comes back on `output_text`,
/// whole and in each streamed delta; without the include nothing is asked; out of range: 400.
#[tokio::test]
async fn logprobs_are_asked_for_and_returned() {
    let fake = FakeGemini::start().await;
    let proxy = start(&fake, &[fake_key(1)], |c| c).await;
    let ask = json!({"model": MODEL, "input": "Say the sentence.",
                     "include": ["message.output_text.logprobs"], "top_logprobs": 2});
    let (status, body) = create(&proxy, &ask).await;
    assert_eq!(status, 200, "{body}");
    let config = &upstream_body(&fake)["generationConfig"];
    assert_eq!(config["responseLogprobs"], true, "{config}");
    assert_eq!(config["logprobs"], 2, "{config}");
    let part = &body["output"][0]["content"][0];
    let text = part["text"].as_str().unwrap_or("");
    assert!(!text.is_empty(), "{body}");
    assert_eq!(logprob_text(&part["logprobs"]), text, "{part}");
    let first = &part["logprobs"][0];
    assert_eq!(first["logprob"], -0.1, "{first}");
    assert_eq!(
        first["top_logprobs"].as_array().map(Vec::len),
        Some(2),
        "{first}"
    );
    assert_eq!(first["top_logprobs"][1]["token"], "alt1", "{first}");
    assert!(first["bytes"].is_array(), "{first}");

    // Streamed: each delta carries its tokens; the done event and the item carry them all.
    let mut streamed = ask.clone();
    streamed["stream"] = json!(true);
    let events = stream(&proxy, &streamed).await;
    let deltas: Vec<&Value> = events
        .iter()
        .filter(|(k, _)| k == "response.output_text.delta")
        .map(|(_, d)| d)
        .collect();
    assert!(!deltas.is_empty(), "{events:?}");
    let from_deltas: String = deltas
        .iter()
        .map(|d| logprob_text(&d["logprobs"]))
        .collect();
    let said: String = deltas.iter().filter_map(|d| d["delta"].as_str()).collect();
    assert_eq!(from_deltas, said);
    let done = events
        .iter()
        .find(|(k, _)| k == "response.output_text.done")
        .map(|(_, d)| d)
        .expect("output_text.done");
    assert_eq!(logprob_text(&done["logprobs"]), said);
    let completed = &events.last().expect("events").1;
    let item = &completed["response"]["output"][0]["content"][0];
    assert_eq!(logprob_text(&item["logprobs"]), said, "{completed}");

    // Not asked: Gemini is not asked either, and the lists stay empty.
    let (status, body) = create(&proxy, &json!({"model": MODEL, "input": "hi"})).await;
    assert_eq!(status, 200, "{body}");
    assert!(upstream_body(&fake)["generationConfig"]
        .get("responseLogprobs")
        .is_none());
    assert_eq!(body["output"][0]["content"][0]["logprobs"], json!([]));

    // Out of OpenAI's range: the client's 400, no upstream call.
    let hits = fake.total_hits();
    let mut wide = ask.clone();
    wide["top_logprobs"] = json!(21);
    let (status, body) = create(&proxy, &wide).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["param"], "top_logprobs", "{body}");
    assert_eq!(fake.total_hits(), hits);
}
