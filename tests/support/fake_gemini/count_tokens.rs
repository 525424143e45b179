//! countTokens and the fake's token arithmetic: a token is four characters of `text` (at least
//! one), which countTokens answers and every success's `usageMetadata` uses.

use http::Response;
use serde_json::{json, Value};

use super::body::{json_response, FakeBody};
use super::Ctx;

/// The countTokens answer for the request body.
pub(super) fn count(ctx: &Ctx) -> Response<FakeBody> {
    let prompt_chars = ctx.body.as_ref().map_or(0, count_text_chars);
    let prompt_tokens = tokens_for_chars(prompt_chars);
    json_response(
        200,
        &json!({ "totalTokens": prompt_tokens,
                 "promptTokensDetails": [{ "modality": "TEXT", "tokenCount": prompt_tokens }] }),
    )
}

pub(super) fn count_text_chars(v: &Value) -> usize {
    match v {
        Value::Object(map) => map
            .iter()
            .map(|(k, v)| match (k.as_str(), v) {
                ("text", Value::String(s)) => s.chars().count(),
                _ => count_text_chars(v),
            })
            .sum(),
        Value::Array(items) => items.iter().map(count_text_chars).sum(),
        _ => 0,
    }
}

pub(super) fn tokens_for_chars(chars: usize) -> u64 {
    (chars as u64).div_ceil(4).max(1)
}
