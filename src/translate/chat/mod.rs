//! OpenAI chat completions (`/v1/chat/completions`) <-> Gemini: `wire` holds the OpenAI
//! types, `request` maps a chat request to a `GenerateContentRequest`, `response` a whole
//! answer to a `chat.completion`, `stream` Gemini's SSE events to `chat.completion.chunk`s.
//!
//! A parsed request borrows from the client's body (strings, and schemas and tool-call
//! arguments as raw JSON), and the Gemini body is serialised straight from those borrows.

pub(crate) mod request;
pub(crate) mod response;
mod stream;
#[cfg(test)]
mod tests;
pub mod wire;

use std::borrow::Cow;

use super::{invalid, invalid_body, Extras, ResponseCtx, Target, TranslateError};

pub use request::{cached_content, is_image_model, wants_images};
pub use stream::StreamTranslator;
pub use wire::ChatRequest;

/// Parses an OpenAI chat request; malformed JSON, wrong types and missing `model`/`messages`
/// are `InvalidRequest`.
pub fn parse_chat_request(body: &[u8]) -> Result<ChatRequest<'_>, TranslateError> {
    let mut req: ChatRequest = super::json::from_body(body)
        .map_err(|e| invalid_body(&e, |field| matches!(field, "model" | "messages")))?;
    if req.model.is_empty() {
        return Err(invalid("`model` must not be empty", "model".into()));
    }
    if req.messages.is_empty() {
        return Err(invalid("`messages` must not be empty", "messages".into()));
    }
    req.body_len = body.len();
    legacy_functions(&mut req)?;
    Ok(req)
}

/// OpenAI's deprecated function calling, as older clients still send it: `functions` become
/// `tools` and `function_call` the `tool_choice`; the answer then names its one call
/// `function_call` (`ResponseCtx::legacy_functions`). Both spellings at once is a 400.
fn legacy_functions(req: &mut ChatRequest<'_>) -> Result<(), TranslateError> {
    if let Some(functions) = req.functions.take() {
        if req.tools.is_some() {
            return Err(invalid(
                "send `tools` or the legacy `functions`, not both",
                "functions".into(),
            ));
        }
        req.tools = Some(
            functions
                .into_iter()
                .map(|f| wire::Tool {
                    kind: Cow::Borrowed("function"),
                    function: Some(f),
                })
                .collect(),
        );
        req.legacy_functions = true;
    }
    if let Some(choice) = req.function_call.take() {
        if req.tool_choice.is_some() {
            return Err(invalid(
                "send `tool_choice` or the legacy `function_call`, not both",
                "function_call".into(),
            ));
        }
        #[derive(serde::Deserialize)]
        struct Named<'a> {
            #[serde(borrow)]
            name: Cow<'a, str>,
        }
        let bad = || {
            invalid(
                "`function_call` must be \"none\", \"auto\" or {\"name\": …}",
                "function_call".into(),
            )
        };
        req.tool_choice = Some(match choice.get() {
            "\"none\"" => wire::ToolChoice::Mode("none"),
            "\"auto\"" => wire::ToolChoice::Mode("auto"),
            text if text.starts_with('{') => {
                let named: Named = serde_json::from_str(text).map_err(|_| bad())?;
                wire::ToolChoice::Named(named.name)
            }
            _ => return Err(bad()),
        });
    }
    Ok(())
}

/// Builds the Gemini `GenerateContentRequest` JSON body for one target model. An http(s)
/// image URL is `InvalidRequest` here; use `to_gemini_with` to supply fetched bytes.
pub fn to_gemini(req: &ChatRequest<'_>, target: &Target<'_>) -> Result<Vec<u8>, TranslateError> {
    to_gemini_with(req, target, &Extras::default())
}

/// `to_gemini` with fetched media and remembered thought signatures.
pub fn to_gemini_with(
    req: &ChatRequest<'_>,
    target: &Target<'_>,
    extras: &Extras<'_>,
) -> Result<Vec<u8>, TranslateError> {
    let body = request::build(req, target, extras)?;
    // The Gemini body is about as long as the OpenAI one (plus any fetched media).
    let mut out = Vec::with_capacity(req.body_len + 256);
    serde_json::to_writer(&mut out, &body).map_err(|e| TranslateError::InvalidRequest {
        message: e.to_string(),
        param: None,
    })?;
    Ok(out)
}

/// The request's function tools whose names Gemini gets changed (`tool_name`).
pub fn tool_names(req: &ChatRequest<'_>) -> crate::translate::tool_name::ToolNames {
    let declared = req
        .tools
        .iter()
        .flatten()
        .filter_map(|t| t.function.as_ref());
    crate::translate::tool_name::ToolNames::of(declared.map(|f| f.name.as_ref()))
}

/// The request's tools and tool choice checked, without building the rest (see `build`).
pub fn check_tools(req: &ChatRequest<'_>) -> Result<(), TranslateError> {
    request::check_tools(req)
}

/// Every http(s) image URL in the request's user messages, for the caller to fetch.
pub fn remote_media_urls<'a>(req: &'a ChatRequest<'_>) -> Vec<&'a str> {
    request::remote_media_urls(req)
}

/// Turns a Gemini `GenerateContentResponse` body into an OpenAI `chat.completion` body.
pub fn from_gemini(body: &[u8], ctx: &ResponseCtx) -> Result<Vec<u8>, TranslateError> {
    response::translate(body, ctx).map(|t| t.body)
}

/// `from_gemini` with what the caller may act on besides the body.
pub fn from_gemini_detailed(body: &[u8], ctx: &ResponseCtx) -> Result<Translated, TranslateError> {
    response::translate(body, ctx)
}

/// A translated non-streaming response.
#[derive(Debug, Clone)]
pub struct Translated {
    /// The OpenAI `chat.completion` JSON.
    pub body: Vec<u8>,
    /// `(tool call id, thought signature)` for a server-side signature cache.
    pub signatures: Vec<(String, String)>,
    /// Some choice has text or a tool call. Without one the answer is empty (blocked,
    /// thoughts only, MAX_TOKENS before any text), which SPEC §5 wants reported as an error.
    pub has_output: bool,
}
