//! Pure OpenAI <-> Gemini mapping: request bodies, whole responses and stream chunks.
//!
//! No I/O and no clock: ids and timestamps come in through `ResponseCtx`. Unknown OpenAI
//! fields are dropped, never forwarded. (Interface; the implementation is in progress.)

pub mod gemini;
pub mod openai;

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
pub fn parse_chat_request(body: &[u8]) -> Result<ChatRequest, TranslateError> {
    serde_json::from_slice(body).map_err(|e| TranslateError::InvalidRequest {
        message: e.to_string(),
        param: None,
    })
}

/// Builds the Gemini `GenerateContentRequest` JSON body for one target model.
pub fn to_gemini(_req: &ChatRequest, _target: &Target<'_>) -> Result<Vec<u8>, TranslateError> {
    Ok(b"{}".to_vec())
}

/// Turns a Gemini `GenerateContentResponse` body into an OpenAI `chat.completion` body.
pub fn from_gemini(_body: &[u8], _ctx: &ResponseCtx) -> Result<Vec<u8>, TranslateError> {
    Ok(b"{}".to_vec())
}

/// Translates a Gemini SSE stream to OpenAI chunks, one upstream event at a time.
pub struct StreamTranslator {
    _ctx: ResponseCtx,
    _include_usage: bool,
}

impl StreamTranslator {
    pub fn new(ctx: ResponseCtx, include_usage: bool) -> Self {
        StreamTranslator {
            _ctx: ctx,
            _include_usage: include_usage,
        }
    }

    /// One upstream event's data (a whole `GenerateContentResponse` JSON). Returns zero or more
    /// complete OpenAI SSE events (`data: …\n\n`), concatenated.
    pub fn on_event(&mut self, _data: &[u8]) -> Result<Bytes, TranslateError> {
        Ok(Bytes::new())
    }

    /// The upstream ended cleanly: the finish chunk if not yet sent, the usage chunk when asked
    /// for, and `data: [DONE]`.
    pub fn finish(&mut self) -> Bytes {
        Bytes::from_static(b"data: [DONE]\n\n")
    }
}

/// An OpenAI error as one SSE event: `data: {"error":{…}}\n\n`.
pub fn error_event(message: &str, kind: &str, code: Option<&str>) -> Bytes {
    let body = serde_json::json!({
        "error": {"message": message, "type": kind, "param": null, "code": code}
    });
    Bytes::from(format!("data: {body}\n\n"))
}
