//! OpenAI Responses API ↔ Gemini: requests (through the chat mapping), whole responses and the
//! Responses stream events.
//!
//! Pure like the rest of `translate`: ids and timestamps come in through `Ctx`, nothing here
//! fetches, logs or reads a clock. Files: `wire` holds the request types, `request` reads items
//! into a `ChatRequest` (so Gemini's turn rules live in one place), `response` builds the
//! `response` object, `stream` the event sequence.
//!
//! Gemini 3 thought signatures travel in `reasoning` items' `encrypted_content` as
//! `gr1:` + a JSON list of `[call_id, signature]` pairs, so a client that replays its items
//! (Codex with `store: false`) gives them back to whichever key and replica serves the next
//! turn. Output items are built with that field; `for_client` drops it unless the client asked
//! for `include: ["reasoning.encrypted_content"]` (the stored copy always keeps it).

mod request;
mod response;
mod stream;
#[cfg(test)]
mod tests;
pub mod wire;

use serde_json::{json, Map, Value};

pub use request::{parse_input, to_chat, Entry, Names, Role, Shaping, NAMESPACE_SEP};
pub use response::{from_gemini, Finished};
pub use stream::ResponsesStream;
pub use wire::ResponsesRequest;

use super::gemini::UsageMetadata;
use super::TranslateError;

/// The prefix of the `encrypted_content` this proxy writes.
const SIGNATURE_PREFIX: &str = "gr1:";

/// Parses a Responses request; malformed JSON and wrong types are `InvalidRequest`.
pub fn parse_request(body: &[u8]) -> Result<ResponsesRequest<'_>, TranslateError> {
    let req: ResponsesRequest =
        serde_json::from_slice(body).map_err(|e| super::invalid_body(&e, |_| true))?;
    if req.model.is_empty() {
        return Err(super::invalid("`model` must not be empty", "model".into()));
    }
    let top = req.top_logprobs.map(|n| n as f64);
    super::check_ranges(&[("top_logprobs", top, 0.0, 20.0)])?;
    Ok(req)
}

pub(crate) fn serde_message(e: &serde_json::Error) -> String {
    crate::excerpt::serde_error(e)
}

/// `[call_id, signature]` pairs as `encrypted_content`.
pub fn encode_signatures(pairs: &[(String, String)]) -> String {
    format!("{SIGNATURE_PREFIX}{}", json!(pairs))
}

/// The pairs `encode_signatures` wrote; anything else (another provider's blob) is none.
pub fn decode_signatures(content: &str) -> Vec<(String, String)> {
    content
        .strip_prefix(SIGNATURE_PREFIX)
        .and_then(|json| serde_json::from_str(json).ok())
        .unwrap_or_default()
}

/// What the response side needs that Gemini's answer does not carry.
#[derive(Debug, Clone)]
pub struct Ctx {
    /// `resp_…`.
    pub id: String,
    /// Unix seconds.
    pub created_at: u64,
    /// The model name the client asked for.
    pub model: String,
    /// The request settings the `response` object echoes (see `echo`).
    pub echo: Map<String, Value>,
    /// Reasoning items keep `encrypted_content` for the client.
    pub include_encrypted: bool,
    /// Flattened namespace tool names.
    pub names: Names,
    /// The declared tool names Gemini got changed (`tool_name`), to give back on its calls.
    pub tool_names: crate::translate::tool_name::ToolNames,
}

impl Ctx {
    fn suffix(&self) -> &str {
        self.id.strip_prefix("resp_").unwrap_or(&self.id)
    }

    fn item_id(&self, kind: &str, n: usize) -> String {
        format!("{kind}_{}_{n}", self.suffix())
    }

    fn call_id(&self, n: usize) -> String {
        format!("call_{}_{n}", self.suffix())
    }

    /// The `response` object around `output`.
    fn response(&self, status: &str, output: Vec<Value>, usage: Option<Value>) -> Value {
        let mut obj = Map::new();
        obj.insert("id".into(), json!(self.id));
        obj.insert("object".into(), json!("response"));
        obj.insert("created_at".into(), json!(self.created_at));
        obj.insert("status".into(), json!(status));
        obj.insert("error".into(), Value::Null);
        obj.insert("incomplete_details".into(), Value::Null);
        obj.insert("model".into(), json!(self.model));
        obj.insert("output".into(), Value::Array(output));
        for (k, v) in &self.echo {
            obj.insert(k.clone(), v.clone());
        }
        obj.insert("usage".into(), usage.unwrap_or(Value::Null));
        Value::Object(obj)
    }

    /// An output item as the client sees it.
    pub fn for_client(&self, item: &Value) -> Value {
        let mut item = item.clone();
        if !self.include_encrypted {
            if let Some(obj) = item.as_object_mut() {
                obj.remove("encrypted_content");
            }
        }
        item
    }

    /// Whether Gemini's call of `name` is a custom tool's.
    fn is_custom(&self, name: &str) -> bool {
        self.names.custom.contains(name)
    }

    /// A call item, `n`th of the output: a `function_call`, or a `custom_tool_call` with its
    /// input taken out of the arguments; a flattened namespace name is split back.
    fn tool_call(&self, n: usize, call_id: &str, name: &str, arguments: &str) -> Value {
        let mut item = if self.is_custom(name) {
            json!({
                "id": self.item_id("ctc", n), "type": "custom_tool_call", "status": "completed",
                "call_id": call_id, "name": name, "input": custom_input(arguments),
            })
        } else {
            json!({
                "id": self.item_id("fc", n), "type": "function_call", "status": "completed",
                "call_id": call_id, "name": name, "arguments": arguments,
            })
        };
        if let Some((ns, inner)) = self.names.namespaced.get(name) {
            item["name"] = json!(inner);
            item["namespace"] = json!(ns);
        }
        item
    }
}

/// The request settings a `response` object repeats (the openai SDK's `Response` requires
/// `tools`, `tool_choice` and `parallel_tool_calls`).
pub fn echo(req: &ResponsesRequest<'_>) -> Map<String, Value> {
    let raw = |r: Option<&serde_json::value::RawValue>| {
        r.and_then(|r| serde_json::from_str::<Value>(r.get()).ok())
    };
    let tools = req
        .tools
        .as_ref()
        .map(|tools| {
            tools
                .iter()
                .map(|t| {
                    json!({"type": t.kind, "name": t.name, "description": t.description,
                                 "parameters": raw(t.parameters), "strict": t.strict})
                })
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    let format =
        req.text
            .as_ref()
            .and_then(|t| t.format.as_ref())
            .map_or(json!({"type": "text"}), |f| {
                let mut v = json!({"type": f.kind});
                if f.kind == "json_schema" {
                    v["name"] = json!(f.name);
                    v["schema"] = raw(f.schema).unwrap_or(Value::Null);
                    v["strict"] = json!(f.strict);
                }
                v
            });
    let mut m = Map::new();
    m.insert("instructions".into(), json!(req.instructions));
    m.insert("max_output_tokens".into(), json!(req.max_output_tokens));
    m.insert(
        "parallel_tool_calls".into(),
        json!(req.parallel_tool_calls.unwrap_or(true)),
    );
    m.insert(
        "previous_response_id".into(),
        json!(req.previous_response_id),
    );
    m.insert(
        "reasoning".into(),
        json!({
            "effort": req.reasoning.as_ref().and_then(|r| r.effort.as_deref()),
            "summary": req.reasoning.as_ref().and_then(|r| r.summary.as_deref()),
        }),
    );
    m.insert("store".into(), json!(req.store()));
    m.insert("temperature".into(), json!(req.temperature));
    m.insert("text".into(), json!({"format": format}));
    m.insert(
        "tool_choice".into(),
        raw(req.tool_choice).unwrap_or(json!("auto")),
    );
    m.insert("tools".into(), Value::Array(tools));
    m.insert("top_p".into(), json!(req.top_p));
    m.insert("truncation".into(), json!("disabled"));
    m.insert("user".into(), json!(req.user));
    m.insert(
        "metadata".into(),
        raw(req.metadata).unwrap_or_else(|| json!({})),
    );
    m.insert("service_tier".into(), json!(req.service_tier));
    m.insert("prompt_cache_key".into(), json!(req.prompt_cache_key));
    m
}

/// Gemini's counts in the Responses shape: reasoning inside output tokens, as OpenAI counts.
fn usage(u: &UsageMetadata) -> Value {
    let input = u.prompt_token_count + u.tool_use_prompt_token_count;
    let output = u.candidates_token_count + u.thoughts_token_count;
    json!({
        "input_tokens": input,
        "input_tokens_details": {"cached_tokens": u.cached_content_token_count,
                                 "cache_write_tokens": 0},
        "output_tokens": output,
        "output_tokens_details": {"reasoning_tokens": u.thoughts_token_count},
        "total_tokens": u.total_token_count.unwrap_or(input + output),
    })
}

/// `incomplete_details.reason` for a Gemini finish reason that cut the answer short.
fn incomplete_reason(finish: &str) -> Option<&'static str> {
    match finish {
        "MAX_TOKENS" => Some("max_output_tokens"),
        f if crate::translate::gemini::is_filtered(f) => Some("content_filter"),
        _ => None,
    }
}

/// The stored conversation for a follow-up: the turn's input items, then its output items.
pub fn conversation(input: Vec<Value>, output: &[Value]) -> Value {
    let mut all = input;
    all.extend(output.iter().cloned());
    Value::Array(all)
}

/// This request's `input` as items (a string becomes one user message), for storing.
pub fn input_items(req: &ResponsesRequest<'_>) -> Vec<Value> {
    match req
        .input
        .and_then(|raw| serde_json::from_str::<Value>(raw.get()).ok())
    {
        Some(Value::String(text)) => {
            vec![json!({"type": "message", "role": "user", "content": text})]
        }
        Some(Value::Array(items)) => items,
        _ => Vec::new(),
    }
}

/// A custom tool's input, out of the arguments Gemini wrote for its one-string function.
fn custom_input(arguments: &str) -> String {
    match serde_json::from_str::<Value>(arguments) {
        Ok(Value::Object(map)) => match map.get("input") {
            Some(Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
            None => String::new(),
        },
        _ => arguments.to_string(),
    }
}

/// Most items one `input_items` page holds, and how many when the client does not say.
const MAX_PAGE: usize = 100;
const DEFAULT_PAGE: usize = 20;

/// `GET /v1/responses/{id}/input_items`: the items a stored response was answered from (its
/// stored conversation without its own output), as OpenAI's `list` object. `query` is the
/// request's: `limit` (1 to 100, default 20), `order` (`desc`, the default, or `asc`), `after`
/// (an item id: the page starts past it) and `include[]=reasoning.encrypted_content`. Items
/// a client sent without an id get a stable one (`{response id}_in_{n}`), and a message's
/// string content becomes its one text part, as OpenAI shows them.
pub fn input_item_list(
    response: &[u8],
    conversation: &[u8],
    query: Option<&str>,
) -> Result<Value, TranslateError> {
    let mut limit = DEFAULT_PAGE;
    let mut ascending = false;
    let mut after = None;
    let mut include_encrypted = false;
    for (name, value) in query
        .unwrap_or("")
        .split('&')
        .filter_map(|pair| pair.split_once('='))
    {
        match name {
            "limit" => {
                limit = value
                    .parse()
                    .ok()
                    .filter(|n| (1..=MAX_PAGE).contains(n))
                    .ok_or_else(|| {
                        super::invalid("`limit` must be an integer from 1 to 100", "limit".into())
                    })?
            }
            "order" => {
                ascending = match value {
                    "asc" => true,
                    "desc" => false,
                    _ => {
                        return Err(super::invalid(
                            "`order` must be `asc` or `desc`",
                            "order".into(),
                        ))
                    }
                }
            }
            "after" => after = Some(value),
            "include" | "include[]" | "include%5B%5D" => {
                include_encrypted |= value == "reasoning.encrypted_content";
            }
            _ => {}
        }
    }
    let unreadable = |what: &str| TranslateError::BadUpstream {
        message: format!("a stored response's {what} is unreadable"),
    };
    let response: Value = serde_json::from_slice(response).map_err(|_| unreadable("object"))?;
    let id = response.get("id").and_then(Value::as_str).unwrap_or("resp");
    let outputs = response
        .get("output")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    let Value::Array(mut items) =
        serde_json::from_slice(conversation).map_err(|_| unreadable("conversation"))?
    else {
        return Err(unreadable("conversation"));
    };
    items.truncate(items.len().saturating_sub(outputs));
    for (n, item) in items.iter_mut().enumerate() {
        shown_as_input(item, id, n, include_encrypted);
    }
    if !ascending {
        items.reverse();
    }
    let item_id = |item: &Value| item.get("id").and_then(Value::as_str).map(str::to_owned);
    let start = match after {
        Some(after) => items
            .iter()
            .position(|item| item.get("id").and_then(Value::as_str) == Some(after))
            .map_or(items.len(), |i| i + 1),
        None => 0,
    };
    let rest = items.len().saturating_sub(start);
    let data: Vec<Value> = items.into_iter().skip(start).take(limit).collect();
    Ok(json!({
        "object": "list",
        "first_id": data.first().and_then(item_id),
        "last_id": data.last().and_then(item_id),
        "has_more": rest > data.len(),
        "data": data,
    }))
}

/// One stored input item as `input_items` lists it.
fn shown_as_input(item: &mut Value, response_id: &str, n: usize, include_encrypted: bool) {
    let Some(obj) = item.as_object_mut() else {
        return;
    };
    if !obj.contains_key("type") && obj.contains_key("role") {
        obj.insert("type".into(), json!("message"));
    }
    if !obj.get("id").is_some_and(Value::is_string) {
        obj.insert("id".into(), json!(format!("{response_id}_in_{n}")));
    }
    if obj.get("type").and_then(Value::as_str) == Some("message") {
        let kind = match obj.get("role").and_then(Value::as_str) {
            Some("assistant") => "output_text",
            _ => "input_text",
        };
        if let Some(Value::String(text)) = obj.get("content") {
            let part = json!([{"type": kind, "text": text}]);
            obj.insert("content".into(), part);
        }
    }
    if !include_encrypted {
        obj.remove("encrypted_content");
    }
}
