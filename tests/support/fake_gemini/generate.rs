//! generateContent and streamGenerateContent: the checks Google makes on the body before it
//! answers (valid JSON, function names Gemini accepts, known top-level fields when strict,
//! Gemini 3 thought signatures), and a scripted success rendered as a GenerateContentResponse
//! (usage, model version, response id), whole or as stream events (framed by `stream.rs`).

use bytes::Bytes;
use http::Response;
use serde_json::{json, Value};
use std::sync::atomic::Ordering;

use super::body::{json_response, FakeBody};
use super::count_tokens::{count_text_chars, tokens_for_chars};
use super::errors::{google_error, invalid_json};
use super::replies::{Content, StreamEnd, Success};
use super::route::Route;
use super::signatures::signature_violation;
use super::{lock, mask, stream, Ctx, Responded, Shared};

/// The text of the default success reply, so tests can assert which model and key served.
pub fn default_text(model: &str, key: &str) -> String {
    format!("Hello from {model} served with key {}.", mask(key))
}

/// One streamed GenerateContentResponse carrying `parts`, optionally finishing the turn.
pub fn chunk_with_parts(parts: Vec<Value>, finish_reason: Option<&str>) -> Value {
    let mut candidate = json!({ "content": { "parts": parts, "role": "model" }, "index": 0 });
    if let Some(reason) = finish_reason {
        candidate["finishReason"] = json!(reason);
    }
    json!({ "candidates": [candidate] })
}

/// One streamed GenerateContentResponse with a single text part.
pub fn text_chunk(text: &str, finish_reason: Option<&str>) -> Value {
    chunk_with_parts(vec![json!({ "text": text })], finish_reason)
}

const KNOWN_GENERATE_FIELDS: &[&str] = &[
    "model",
    "contents",
    "systemInstruction",
    "system_instruction",
    "tools",
    "toolConfig",
    "tool_config",
    "safetySettings",
    "safety_settings",
    "generationConfig",
    "generation_config",
    "cachedContent",
    "cached_content",
];

/// Google's refusal of a generate body, if it has one: not a JSON object, a bad thought
/// signature, or (when strict) an unknown top-level field.
pub(super) fn refuse(
    shared: &Shared,
    route: &Route,
    body: Option<&Value>,
    raw_body: &Bytes,
) -> Option<Response<FakeBody>> {
    let Some(Value::Object(map)) = body else {
        let snippet = String::from_utf8_lossy(&raw_body[..raw_body.len().min(16)]).into_owned();
        return Some(invalid_json(&format!(
            "Invalid JSON payload received. Unexpected token.\n{snippet}\n^"
        )));
    };
    if shared.require_signatures.load(Ordering::SeqCst)
        && route.model().is_some_and(|m| m.starts_with("gemini-3"))
    {
        let issued = lock(&shared.issued_signatures);
        if let Some(message) = signature_violation(map, &issued) {
            return Some(json_response(
                400,
                &google_error(400, "INVALID_ARGUMENT", &message, vec![]),
            ));
        }
    }
    if let Some(message) = invalid_function_names(map) {
        return Some(json_response(
            400,
            &google_error(400, "INVALID_ARGUMENT", &message, vec![]),
        ));
    }
    if shared.strict.load(Ordering::SeqCst) {
        if let Some(unknown) = map
            .keys()
            .find(|k| !KNOWN_GENERATE_FIELDS.contains(&k.as_str()))
        {
            return Some(invalid_json(&format!(
                "Invalid JSON payload received. Unknown name \"{unknown}\": Cannot find field."
            )));
        }
    }
    None
}

/// Google's refusal of function declarations it cannot name (the whole request fails, one
/// line per bad name): a name must start with a letter or `_`, hold only a-z A-Z 0-9 `_` `.`
/// `:` `-`, and be at most 64 long.
fn invalid_function_names(map: &serde_json::Map<String, Value>) -> Option<String> {
    let valid = |name: &str| {
        (1..=64).contains(&name.len())
            && name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-'))
    };
    let mut lines = Vec::new();
    for (i, tool) in map.get("tools")?.as_array()?.iter().enumerate() {
        let decls = tool
            .get("functionDeclarations")
            .or_else(|| tool.get("function_declarations"))
            .and_then(Value::as_array);
        for (j, decl) in decls.into_iter().flatten().enumerate() {
            if !decl.get("name").and_then(Value::as_str).is_some_and(valid) {
                lines.push(format!(
                    "* GenerateContentRequest.tools[{i}].function_declarations[{j}].name: \
                     Invalid function name. Must start with a letter or an underscore. Must be \
                     alphameric (a-z, A-Z, 0-9), underscores (_), dots (.), colons (:) or dashes \
                     (-), with a maximum length of 64.\n"
                ));
            }
        }
    }
    (!lines.is_empty()).then(|| lines.concat())
}

/// A success on generateContent (one JSON answer) or streamGenerateContent (one event per
/// piece, the last one carrying the finish reason), with `usageMetadata` counted by
/// [`super::count_tokens`].
pub(super) fn render_success(s: Success, ctx: &Ctx) -> Responded {
    use Responded::Now;
    let prompt_chars = ctx.body.as_ref().map_or(0, count_text_chars);
    let prompt_tokens = tokens_for_chars(prompt_chars);

    // The pieces each stream event carries; non-streamed replies join them.
    let pieces: Vec<Vec<Value>> = match &s.content {
        Content::Text(text) => split_text(text, s.chunks)
            .into_iter()
            .map(|t| vec![json!({ "text": t })])
            .collect(),
        Content::Parts(parts) if parts.is_empty() => vec![vec![]],
        Content::Parts(parts) => parts.iter().map(|p| vec![p.clone()]).collect(),
    };
    let usage = |chars: usize| {
        let candidates = if chars == 0 {
            0
        } else {
            tokens_for_chars(chars)
        };
        let thoughts = s.thoughts_tokens.unwrap_or(0);
        let mut u = json!({
            "promptTokenCount": prompt_tokens,
            "candidatesTokenCount": candidates,
            "totalTokenCount": prompt_tokens + candidates + thoughts,
            "promptTokensDetails": [{ "modality": "TEXT", "tokenCount": prompt_tokens }],
        });
        if let Some(t) = s.thoughts_tokens {
            u["thoughtsTokenCount"] = json!(t);
        }
        u
    };
    // `responseLogprobs`: Google's `logprobsResult` for the event's answer text.
    let config = ctx.body.as_ref().map(|b| &b["generationConfig"]);
    let wants_logprobs = config.is_some_and(|c| c["responseLogprobs"] == json!(true));
    let top = config.and_then(|c| c["logprobs"].as_u64()).unwrap_or(0);
    let with_logprobs = |mut ev: Value| {
        if wants_logprobs {
            let text: String = ev["candidates"][0]["content"]["parts"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|p| p["thought"] != json!(true))
                .filter_map(|p| p["text"].as_str())
                .collect();
            ev["candidates"][0]["logprobsResult"] = logprobs_result(&text, top);
        }
        ev
    };
    let decorate = |ev: Value, chars: usize| {
        let mut ev = with_logprobs(ev);
        ev["usageMetadata"] = usage(chars);
        ev["modelVersion"] = json!(ctx.model);
        ev["responseId"] = json!(ctx.response_id);
        ev
    };

    match &ctx.route {
        Route::Stream { sse, .. } => {
            let n = pieces.len();
            let mut chars = 0;
            let events: Vec<Value> = pieces
                .into_iter()
                .enumerate()
                .map(|(i, parts)| {
                    chars += count_text_chars(&Value::Array(parts.clone()));
                    let finish = (i + 1 == n).then_some(s.finish_reason.as_str());
                    decorate(chunk_with_parts(parts, finish), chars)
                })
                .collect();
            stream::respond(&events, *sse, s.event_delay, StreamEnd::Eof)
        }
        _ => {
            let parts: Vec<Value> = match &s.content {
                Content::Text(text) => vec![json!({ "text": text })],
                Content::Parts(parts) => parts.clone(),
            };
            let chars = count_text_chars(&Value::Array(parts.clone()));
            let mut ev = decorate(chunk_with_parts(parts, Some(&s.finish_reason)), chars);
            ev["candidates"][0]["avgLogprobs"] = json!(-0.12);
            Now(json_response(200, &ev))
        }
    }
}

/// Google's `logprobsResult` for `text`: one token per 4 characters, each chosen with
/// log probability `-0.1 × (its position + 1)`, and `top` candidates per step (the chosen
/// one first, then `alt1`, `alt2`… each less likely).
pub fn logprobs_result(text: &str, top: u64) -> Value {
    let chars: Vec<char> = text.chars().collect();
    let tokens: Vec<String> = chars.chunks(4).map(|c| c.iter().collect()).collect();
    let chosen: Vec<Value> = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| json!({"token": t, "logProbability": -0.1 * (i + 1) as f64}))
        .collect();
    let tops: Vec<Value> = chosen
        .iter()
        .map(|c| {
            let mut candidates = vec![c.clone()];
            for j in 1..top {
                let p = c["logProbability"].as_f64().unwrap_or(0.0) - j as f64;
                candidates.push(json!({"token": format!("alt{j}"), "logProbability": p}));
            }
            json!({ "candidates": if top == 0 { Vec::new() } else { candidates } })
        })
        .collect();
    json!({"topCandidates": tops, "chosenCandidates": chosen})
}

/// Splits `text` into at most `n` non-empty pieces at char boundaries (one empty piece for "").
fn split_text(text: &str, n: usize) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    if chars.is_empty() {
        return vec![String::new()];
    }
    let n = n.clamp(1, chars.len());
    let size = chars.len().div_ceil(n);
    chars.chunks(size).map(|c| c.iter().collect()).collect()
}
