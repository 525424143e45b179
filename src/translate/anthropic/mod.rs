//! Pure Anthropic Messages API <-> Gemini mapping (issue #17): the `/v1/messages` dialect.
//!
//! `wire` holds the request types, `request` builds Gemini's `GenerateContentRequest` (and
//! the `countTokens` body), `response` turns a whole Gemini answer into a `message`, `stream`
//! turns Gemini's SSE events into Anthropic's. No I/O and no clock: ids come in through
//! `ResponseCtx`, fetched image bytes and remembered thought signatures through `Extras`.

mod request;
mod response;
mod stream;
#[cfg(test)]
mod tests;
pub mod wire;

pub use response::Whole;
pub use stream::{error_event, StreamTranslator};
pub use wire::MessagesRequest;

use super::{Extras, ResponseCtx, Target, TranslateError};

/// Parses a Messages request: malformed JSON, wrong types in known fields and a missing
/// `model` or `messages` are `InvalidRequest`; unknown fields are ignored. `beta` is the
/// request's `anthropic-beta` header (empty when absent): with `interleaved-thinking` the
/// thinking budget may exceed `max_tokens`, as on Anthropic's API.
pub fn parse<'b>(body: &'b [u8], beta: &str) -> Result<MessagesRequest<'b>, TranslateError> {
    let req: MessagesRequest =
        serde_json::from_slice(body).map_err(|e| super::invalid_body(&e, |_| true))?;
    if req.model.trim().is_empty() {
        return Err(super::invalid("`model` must not be empty", "model".into()));
    }
    if req.messages.is_empty() {
        return Err(super::invalid(
            "`messages` must not be empty",
            "messages".into(),
        ));
    }
    // Anthropic's own ranges (narrower than Gemini's temperature), refused as Anthropic does.
    let as_f64 = |v: Option<i64>| v.map(|v| v as f64);
    let budget = req.thinking.as_ref().filter(|t| t.kind == "enabled");
    let budget = budget.and_then(|t| t.budget_tokens);
    super::check_ranges(&[
        (
            "max_tokens",
            as_f64(req.max_tokens),
            1.0,
            f64::from(u32::MAX),
        ),
        ("temperature", req.temperature, 0.0, 1.0),
        ("top_p", req.top_p, 0.0, 1.0),
        ("top_k", as_f64(req.top_k), 0.0, f64::from(u32::MAX)),
        (
            "thinking.budget_tokens",
            as_f64(budget),
            1024.0,
            f64::from(u32::MAX),
        ),
    ])?;
    let interleaved = beta
        .split(',')
        .any(|b| b.trim().starts_with("interleaved-thinking"));
    if let (Some(budget), Some(max), false) = (budget, req.max_tokens, interleaved) {
        if budget >= max {
            return Err(super::invalid(
                &format!(
                    "`max_tokens` must be greater than `thinking.budget_tokens` ({budget}), \
                     unless the `anthropic-beta` header names interleaved-thinking"
                ),
                "thinking.budget_tokens".into(),
            ));
        }
    }
    Ok(req)
}

/// What building a Gemini body produced besides the bytes.
pub struct Built {
    pub body: Vec<u8>,
    /// Asked-for things Gemini cannot do, left out (for the log).
    pub notes: Vec<String>,
}

/// The Gemini `generateContent` body for one target model.
pub fn to_gemini(
    req: &MessagesRequest<'_>,
    target: &Target<'_>,
    extras: &Extras<'_>,
) -> Result<Built, TranslateError> {
    let built = request::build(req, target, extras)?;
    Ok(Built {
        body: serialise(&built.body)?,
        notes: built.notes,
    })
}

/// The Gemini `countTokens` body: the same contents, system instruction and tools inside a
/// `generateContentRequest` naming its model (sampling and thinking settings left out).
pub fn count_tokens_body(
    req: &MessagesRequest<'_>,
    target: &Target<'_>,
    extras: &Extras<'_>,
) -> Result<Vec<u8>, TranslateError> {
    let mut built = request::build(req, target, extras)?;
    built.body.generation_config = Default::default();
    built.body.safety_settings.clear();
    let inner = serialise(&built.body)?;
    let model = serde_json::to_string(&format!(
        "models/{}",
        super::chat::request::bare_model(target.model)
    ))
    .map_err(|e| super::invalid(&e.to_string(), "model".into()))?;
    // `{...}` → `{"generateContentRequest":{"model":"models/M",...}}`
    let mut out = Vec::with_capacity(inner.len() + model.len() + 48);
    out.extend_from_slice(b"{\"generateContentRequest\":{\"model\":");
    out.extend_from_slice(model.as_bytes());
    if inner.len() > 2 {
        out.push(b',');
    }
    out.extend_from_slice(inner.get(1..).unwrap_or(b"}"));
    out.push(b'}');
    Ok(out)
}

/// Gemini's `countTokens` answer as Anthropic's `{"input_tokens": N}`.
pub fn count_tokens_answer(body: &[u8]) -> Result<Vec<u8>, TranslateError> {
    let total = super::gemini::total_tokens(body)?;
    Ok(serde_json::json!({ "input_tokens": total })
        .to_string()
        .into_bytes())
}

/// The request's tools and tool choice checked, without building the rest (see `build`).
pub fn check_tools(req: &MessagesRequest<'_>) -> Result<(), TranslateError> {
    request::check_tools(req)
}

/// Every http(s) image URL in the request, for the caller to fetch first.
pub fn remote_media_urls<'a>(req: &'a MessagesRequest<'_>) -> Vec<&'a str> {
    request::remote_media_urls(req)
}

/// A whole Gemini answer as an Anthropic `message`.
pub fn from_gemini(body: &[u8], ctx: &ResponseCtx) -> Result<Whole, TranslateError> {
    response::translate(body, ctx)
}

fn serialise(body: &impl serde::Serialize) -> Result<Vec<u8>, TranslateError> {
    serde_json::to_vec(body).map_err(|e| TranslateError::InvalidRequest {
        message: e.to_string(),
        param: None,
    })
}
