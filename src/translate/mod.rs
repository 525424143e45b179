//! Pure OpenAI <-> Gemini mapping: request bodies, whole responses and stream chunks.
//!
//! No I/O and no clock: ids and timestamps come in through `ResponseCtx`, and anything that
//! needs the network (fetching image URLs) is done by the caller. Unknown OpenAI fields are
//! dropped, never forwarded. Files: `openai` and `gemini` hold the wire types, `request` maps
//! requests, `schema` cleans tool and response schemas, `response` whole responses, `stream`
//! SSE events, `embeddings` the embeddings API, `json` the serde helpers they share;
//! `responses/` is the OpenAI Responses API dialect (its own wire types, mapped through `request`).
//!
//! A parsed request borrows from the client's body (strings, and schemas and tool-call
//! arguments as raw JSON), and the Gemini body is serialised straight from those borrows.

pub mod embeddings;
pub mod gemini;
mod json;
pub mod openai;
mod request;
mod response;
pub mod responses;
mod schema;
mod stream;
#[cfg(test)]
mod tests;

use std::collections::HashMap;

use bytes::Bytes;

pub use openai::ChatRequest;

/// What the OpenAI-side response needs that the Gemini response does not carry.
#[derive(Debug, Clone)]
pub struct ResponseCtx {
    /// `chatcmpl-…`, the same on every chunk of a stream.
    pub id: String,
    /// Unix seconds.
    pub created: u64,
    /// The model name the client asked for (an alias stays an alias).
    pub model: String,
}

/// Which Gemini model a request goes to, and the per-alias settings that shape it.
#[derive(Debug, Clone, Default)]
pub struct Target<'a> {
    pub model: &'a str,
    /// From an alias; the request's own `reasoning_effort` wins.
    pub reasoning_effort: Option<&'a str>,
    /// `upstream.safety`; `None` = Gemini's defaults.
    pub safety: Option<&'a str>,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TranslateError {
    /// The client's request is malformed or asks for something we cannot map: 400.
    #[error("{message}")]
    InvalidRequest {
        message: String,
        param: Option<String>,
    },
    /// Gemini answered 200 with something we cannot read.
    #[error("unreadable upstream response: {message}")]
    BadUpstream { message: String },
    /// Gemini answered 200 with nothing to show (blocked, thoughts only, no text before
    /// MAX_TOKENS): an explicit error, never an empty success.
    #[error("{message}")]
    EmptyAnswer { message: String },
    /// Gemini answered 200 with a Google error object (e.g. inside a stream).
    #[error("upstream error {code}: {message}")]
    UpstreamError {
        code: u16,
        status: String,
        message: String,
        /// The raw error JSON, for `classify`.
        raw: Vec<u8>,
    },
}

/// Parses an OpenAI chat request; malformed JSON, wrong types and missing `model`/`messages`
/// are `InvalidRequest`.
pub fn parse_chat_request(body: &[u8]) -> Result<ChatRequest<'_>, TranslateError> {
    let mut req: ChatRequest = serde_json::from_slice(body)
        .map_err(|e| invalid_body(&e, |field| matches!(field, "model" | "messages")))?;
    if req.model.is_empty() {
        return Err(invalid("`model` must not be empty", "model".into()));
    }
    if req.messages.is_empty() {
        return Err(invalid("`messages` must not be empty", "messages".into()));
    }
    req.body_len = body.len();
    Ok(req)
}

/// A request body serde refused, as `InvalidRequest`: serde quotes the offending value (only
/// an excerpt of it comes back) and names a missing field only in its text, lifted out for
/// OpenAI's `param` when `param_field` accepts it.
pub(crate) fn invalid_body(
    e: &serde_json::Error,
    param_field: impl Fn(&str) -> bool,
) -> TranslateError {
    let message = crate::excerpt::serde_error(e);
    let param = message
        .strip_prefix("missing field `")
        .and_then(|rest| rest.split('`').next())
        .filter(|field| param_field(field))
        .map(str::to_owned);
    TranslateError::InvalidRequest {
        message: format!("invalid request body: {message}"),
        param,
    }
}

pub(crate) fn invalid(message: &str, param: String) -> TranslateError {
    TranslateError::InvalidRequest {
        message: message.to_owned(),
        param: Some(param),
    }
}

/// Finds a remembered thought signature by OpenAI tool call id.
pub type SignatureLookup<'a> = dyn Fn(&str) -> Option<String> + 'a;

/// What the caller may add to a request from outside the pure mapping.
#[derive(Default, Clone, Copy)]
pub struct Extras<'a> {
    /// Thought signatures remembered server-side, by OpenAI tool call id: used when the client
    /// dropped `extra_content` (legacy Cline, LangChain, the AI SDK do).
    pub signatures: Option<&'a SignatureLookup<'a>>,
    /// Bytes fetched for the URLs `remote_media_urls` listed, keyed by URL.
    pub media: Option<&'a HashMap<String, FetchedFile>>,
}

/// One fetched media URL.
#[derive(Debug, Clone)]
pub struct FetchedFile {
    pub mime_type: String,
    pub bytes: Vec<u8>,
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

pub use stream::StreamTranslator;

/// An OpenAI error as one SSE event: `data: {"error":{…}}\n\n`.
pub fn error_event(message: &str, kind: &str, code: Option<&str>) -> Bytes {
    let body = serde_json::json!({
        "error": {"message": message, "type": kind, "param": null, "code": code}
    });
    Bytes::from(format!("data: {body}\n\n"))
}
