//! Pure mapping between the client dialects and Gemini: request bodies, whole responses and
//! stream events. One folder per dialect (`chat`: OpenAI chat completions; `anthropic`: the
//! Anthropic Messages API), each with its wire
//! types and its `request`, `response` and `stream` mappings; `embeddings` maps OpenAI's
//! embeddings API. Shared here: Gemini's wire types (`gemini`), the schema cleaner (`schema`),
//! serde helpers (`json`), tool names as Gemini takes them (`tool_name`), and the types every dialect uses (`Target`, `Extras`, `ResponseCtx`,
//! `TranslateError`) and `EventStream`, what the relay drives for any dialect's stream.
//!
//! No I/O and no clock: ids and timestamps come in through `ResponseCtx`, and anything that
//! needs the network (fetching image URLs) is done by the caller. Unknown client fields are
//! dropped, never forwarded.

pub mod anthropic;
pub mod base64;
pub mod chat;
pub mod embeddings;
pub mod gemini;
pub mod images;
mod json;
pub mod responses;
mod schema;
pub mod tool_name;

use std::collections::HashMap;

/// What the client-side response needs that the Gemini response does not carry.
#[derive(Debug, Clone)]
pub struct ResponseCtx {
    /// `chatcmpl-…`, the same on every chunk of a stream.
    pub id: String,
    /// Unix seconds.
    pub created: u64,
    /// The model name the client asked for (an alias stays an alias).
    pub model: String,
    /// `parallel_tool_calls: false`: at most one tool call per choice. Gemini cannot be told,
    /// so the calls it makes after the first are dropped.
    pub one_call: bool,
    /// The request declared legacy `functions` (`ChatRequest::legacy_functions`): its one call
    /// (`single_call`) is the message's `function_call`, ended `function_call`.
    pub legacy_functions: bool,
    /// The declared tool names Gemini got changed (`tool_name`), to give back on its calls.
    pub tool_names: tool_name::ToolNames,
}

impl ResponseCtx {
    /// At most one call per choice: `parallel_tool_calls: false`, or a legacy `functions`
    /// request, whose answer holds one `function_call`.
    pub fn single_call(&self) -> bool {
        self.one_call || self.legacy_functions
    }
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

/// Each `(param, value, low, high)`: a value outside `low..=high` is the client's 400 naming
/// the param, before any upstream call (each dialect's documented ranges).
pub(crate) fn check_ranges(ranges: &[(&str, Option<f64>, f64, f64)]) -> Result<(), TranslateError> {
    for &(name, value, low, high) in ranges {
        if value.is_some_and(|v| !(low..=high).contains(&v)) {
            return Err(invalid(
                &format!("`{name}` must be from {low} to {high}"),
                name.into(),
            ));
        }
    }
    Ok(())
}

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

/// A dialect's stream translator (`/v1` chat chunks, `/v1/messages` events, `/v1/responses`
/// events): what the relay drives, one upstream event at a time.
pub trait EventStream {
    /// One upstream event's data: zero or more complete client events.
    fn on_event(&mut self, data: &[u8]) -> Result<bytes::Bytes, TranslateError>;
    /// The upstream ended cleanly: the closing events, or `EmptyAnswer` when nothing was
    /// answered (blocked, thoughts only, no text before the token limit).
    fn finish(&mut self) -> Result<bytes::Bytes, TranslateError>;
    /// `(tool call id, thought signature)` pairs seen since the last call.
    fn take_signatures(&mut self) -> Vec<(String, String)>;
}

/// What a stream that ended without an answer says.
pub(crate) fn empty_stream() -> TranslateError {
    TranslateError::EmptyAnswer {
        message: "Gemini ended the stream without an answer (blocked, thoughts only, or the \
                  token limit was reached before any text)"
            .into(),
    }
}

impl EventStream for chat::StreamTranslator {
    fn on_event(&mut self, data: &[u8]) -> Result<bytes::Bytes, TranslateError> {
        chat::StreamTranslator::on_event(self, data)
    }
    fn finish(&mut self) -> Result<bytes::Bytes, TranslateError> {
        if !self.has_output() {
            return Err(empty_stream());
        }
        Ok(chat::StreamTranslator::finish(self))
    }
    fn take_signatures(&mut self) -> Vec<(String, String)> {
        chat::StreamTranslator::take_signatures(self)
    }
}

impl EventStream for anthropic::StreamTranslator {
    fn on_event(&mut self, data: &[u8]) -> Result<bytes::Bytes, TranslateError> {
        anthropic::StreamTranslator::on_event(self, data)
    }
    fn finish(&mut self) -> Result<bytes::Bytes, TranslateError> {
        if !self.is_answer() {
            return Err(empty_stream());
        }
        Ok(anthropic::StreamTranslator::finish(self))
    }
    fn take_signatures(&mut self) -> Vec<(String, String)> {
        anthropic::StreamTranslator::take_signatures(self)
    }
}

impl EventStream for responses::ResponsesStream {
    fn on_event(&mut self, data: &[u8]) -> Result<bytes::Bytes, TranslateError> {
        responses::ResponsesStream::on_event(self, data)
    }
    fn finish(&mut self) -> Result<bytes::Bytes, TranslateError> {
        responses::ResponsesStream::finish(self)
    }
    fn take_signatures(&mut self) -> Vec<(String, String)> {
        responses::ResponsesStream::take_signatures(self)
    }
}
