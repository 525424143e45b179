//! Gemini 3 thought signatures, checked like Google: the signatures the fake hands out in replies
//! (the only real ones it accepts back), Google's documented stand-ins, and the check of the
//! current turn's function calls that answers 400 with Google's wording.

use std::collections::HashSet;
use std::sync::Mutex;

use serde_json::Value;

use super::lock;
use super::replies::{Content, Reply, Success};

/// Google's documented stand-ins for a signature the client no longer has.
pub const SIGNATURE_STAND_INS: &[&str] = &[
    "skip_thought_signature_validator",
    "context_engineering_is_the_way_to_go",
];

/// Records every `thoughtSignature` a reply hands out.
pub(super) fn remember_signatures(reply: &Reply, issued: &Mutex<HashSet<String>>) {
    fn walk(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(map) => {
                for (k, v) in map {
                    match (k.as_str(), v) {
                        ("thoughtSignature", Value::String(s)) => out.push(s.clone()),
                        _ => walk(v, out),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|i| walk(i, out)),
            _ => {}
        }
    }
    let mut found = Vec::new();
    match reply {
        Reply::Success(Success {
            content: Content::Parts(parts),
            ..
        }) => parts.iter().for_each(|p| walk(p, &mut found)),
        Reply::Stream { events, .. } => events.iter().for_each(|e| walk(e, &mut found)),
        _ => {}
    }
    lock(issued).extend(found);
}

/// Google's check of Gemini 3 thought signatures on a generateContent body: only the current
/// turn (model turns after the last user turn that is more than function responses) is
/// validated, and only the first `functionCall` part of each of its model turns. The wording
/// is Google's.
pub(super) fn signature_violation(
    body: &serde_json::Map<String, Value>,
    issued: &HashSet<String>,
) -> Option<String> {
    let contents = body.get("contents")?.as_array()?;
    let is_prompt = |c: &Value| {
        c.get("role").and_then(Value::as_str) == Some("user")
            && c.get("parts")
                .and_then(Value::as_array)
                .is_some_and(|parts| {
                    parts.iter().any(|p| {
                        p.get("functionResponse").is_none() && p.get("function_response").is_none()
                    })
                })
    };
    let start = contents.iter().rposition(is_prompt).map_or(0, |i| i + 1);
    for (position, content) in contents.iter().enumerate().skip(start) {
        if content.get("role").and_then(Value::as_str) != Some("model") {
            continue;
        }
        let parts = content.get("parts").and_then(Value::as_array)?;
        let Some(first) = parts
            .iter()
            .find(|p| p.get("functionCall").is_some() || p.get("function_call").is_some())
        else {
            continue;
        };
        let call = first
            .get("functionCall")
            .or_else(|| first.get("function_call"))?;
        let name = call.get("name").and_then(Value::as_str).unwrap_or("");
        let signature = first
            .get("thoughtSignature")
            .or_else(|| first.get("thought_signature"))
            .and_then(Value::as_str);
        match signature {
            None => {
                return Some(format!(
                    "Function call is missing a thought_signature in functionCall parts. This is required for tools to work correctly, and missing thought_signature may lead to degraded model performance. Additional data, function call `default_api:{name}` , position {}. Please refer to https://ai.google.dev/gemini-api/docs/thought-signatures for more details.",
                    position + 1
                ))
            }
            Some(sig) if !issued.contains(sig) && !SIGNATURE_STAND_INS.contains(&sig) => {
                return Some("Corrupted thought signature.".to_string())
            }
            Some(_) => {}
        }
    }
    None
}
