//! Every way a request can fail, and the one place each becomes an HTTP response.
//!
//! Handlers return `ProxyError`; `into_response` renders it in the caller's dialect: OpenAI's
//! `{"error":{message,type,param,code}}` on `/v1` and the JSON admin endpoints, Google's
//! `{"error":{code,message,status}}` on `/v1beta`, Anthropic's
//! `{"type":"error","error":{type,message}}` on `/v1/messages` (with its own status codes). Adding a variant forces a decision on its
//! status, its OpenAI type and its log level. Messages never carry a secret, and quote what
//! the client sent only as a short `excerpt` (the whole message is capped too).

use std::borrow::Cow;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use serde_json::json;

use crate::body::{full, Body, BodyError};
use crate::excerpt::excerpt_to;
use crate::router::Dialect;

/// The longest error message a client gets, in characters: a backstop, since every quote of
/// the client's input in a message is already a short `excerpt`.
pub const MAX_MESSAGE_CHARS: usize = 1024;

/// `Retry-After` is capped so clients that honour it literally (Cline) never wait for hours.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("{message}")]
    BadRequest {
        message: String,
        param: Option<String>,
    },
    #[error("request body exceeds the {limit}-byte limit")]
    PayloadTooLarge { limit: u64 },
    /// A body in a content coding (`Content-Encoding: gzip`…): no route decodes one.
    #[error(
        "request bodies in Content-Encoding '{coding}' are not supported: send the body \
         uncompressed"
    )]
    UnsupportedEncoding { coding: String },
    #[error("missing or unknown bearer token")]
    Unauthorized,
    /// Too many missing or wrong credentials from this address lately (`lockout`).
    #[error(
        "too many requests with a missing or wrong token from your address: try again in {}s",
        whole_seconds(*retry_after)
    )]
    LockedOut { retry_after: Duration },
    #[error("your address is not allowed to use this proxy")]
    IpDenied,
    #[error("this token is not allowed to use model '{model}'")]
    ModelNotAllowed { model: String },
    #[error(
        "admin access required: send an admin token (or, with none configured, call from loopback)"
    )]
    AdminOnly,
    /// A state-changing admin request authenticated only by the dashboard's session cookie or
    /// by coming from loopback, without the header a cross-site form or script cannot send.
    #[error(
        "refused: an admin request that changes state from a browser must carry the header \
         `x-dashboard: 1` (or an admin token)"
    )]
    CrossSite,
    #[error("{message}")]
    NotFound { message: String },
    #[error("method not allowed")]
    MethodNotAllowed,
    /// No key can serve the model right now.
    #[error("{message}")]
    NoKey {
        message: String,
        /// `None` when no key will come back by itself (all disabled or not allowed).
        retry_after: Option<Duration>,
        /// All keys are out until the quota day ends.
        all_daily: bool,
    },
    /// The upstream refused the request as the client's fault; passed back as is.
    #[error("{message}")]
    UpstreamClient {
        status: StatusCode,
        message: String,
        /// Google's raw error body, forwarded untouched on `/v1beta`.
        raw: Bytes,
    },
    /// Every attempt failed for reasons that are not the client's.
    #[error("{message}")]
    UpstreamFailed {
        status: StatusCode,
        message: String,
        raw: Bytes,
    },
    /// Gemini answered 200 with nothing to show (thoughts only, no text before the token
    /// limit, a blocked answer, a malformed call): a 502, never an empty success.
    /// `worth_retrying` is false when the same request would stop the same way (the token
    /// limit, a safety block), and goes out as `x-should-retry`, which the OpenAI and
    /// Anthropic SDKs honour.
    #[error("{message}")]
    EmptyAnswer {
        message: String,
        worth_retrying: bool,
    },
    #[error("the upstream did not answer in time")]
    UpstreamTimeout,
    /// No configured key may serve the model (every key's `models` list leaves it out): the
    /// model does not exist here, which waiting will not change. A 404 like OpenAI's and
    /// Google's unknown model, not a 503 that SDKs retry.
    #[error("the model '{model}' does not exist or no key of this proxy may serve it")]
    ModelNotFound { model: String },
    #[error("the server is shutting down")]
    ShuttingDown,
    /// The proxy is at one of its admission limits (connections, requests in flight, memory
    /// budget): a fast 503 the client may retry after `RETRY_AFTER`.
    #[error("the proxy is busy ({what}); retry in a moment")]
    Overloaded { what: &'static str },
    /// The request body did not arrive whole within `server.body_timeout`.
    #[error("the request body did not arrive within {}s", whole_seconds(*after))]
    BodyTimeout { after: Duration },
    /// A named resource lives on one key (the one that created it) and that key rests now.
    #[error(
        "{resource} is pinned to the key that created it, which is resting: retry in {}s",
        whole_seconds(*retry_after)
    )]
    PinnedResting {
        resource: String,
        retry_after: Duration,
    },
    /// A named resource lives on a key that can no longer serve it (removed, disabled, not
    /// allowed the model): waiting will not help.
    #[error("{resource} cannot be used: {why}; create it again")]
    PinnedElsewhere { resource: String, why: String },
    /// A create names a resource that exists already (Google's ALREADY_EXISTS).
    #[error("{message}")]
    Conflict { message: String },
    /// Something this proxy's configuration cannot do (the Live API with `upstream.proxy`).
    #[error("{message}")]
    Unsupported { message: String },
    #[error("internal error: {0}")]
    Internal(String),
    /// A stream already under way failed (Google's error event, a broken or silent
    /// connection, shutdown): rendered as the stream's last event, never as a response.
    #[error("{message}")]
    StreamBroken { code: u16, message: String },
}

impl From<BodyError> for ProxyError {
    fn from(e: BodyError) -> Self {
        match e {
            BodyError::TooLarge { limit } => ProxyError::PayloadTooLarge { limit },
            BodyError::Timeout { after } => ProxyError::BodyTimeout { after },
            BodyError::Busy => ProxyError::Overloaded {
                what: "memory budget for request bodies",
            },
            BodyError::Unreadable(e) => {
                ProxyError::bad_request(format!("could not read the request body: {e}"))
            }
        }
    }
}

impl ProxyError {
    pub fn bad_request(message: impl Into<String>) -> Self {
        ProxyError::BadRequest {
            message: message.into(),
            param: None,
        }
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        ProxyError::NotFound {
            message: message.into(),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            ProxyError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::UnsupportedEncoding { .. } => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ProxyError::Unauthorized => StatusCode::UNAUTHORIZED,
            ProxyError::IpDenied
            | ProxyError::ModelNotAllowed { .. }
            | ProxyError::AdminOnly
            | ProxyError::CrossSite => StatusCode::FORBIDDEN,
            ProxyError::NotFound { .. } | ProxyError::ModelNotFound { .. } => StatusCode::NOT_FOUND,
            ProxyError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ProxyError::LockedOut { .. } | ProxyError::PinnedResting { .. } => {
                StatusCode::TOO_MANY_REQUESTS
            }
            ProxyError::PinnedElsewhere { .. } | ProxyError::Conflict { .. } => {
                StatusCode::CONFLICT
            }
            ProxyError::NoKey { retry_after, .. } => {
                if retry_after.is_some() {
                    StatusCode::TOO_MANY_REQUESTS
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
                }
            }
            ProxyError::UpstreamClient { status, .. }
            | ProxyError::UpstreamFailed { status, .. } => *status,
            ProxyError::EmptyAnswer { .. } => StatusCode::BAD_GATEWAY,
            ProxyError::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::ShuttingDown | ProxyError::Overloaded { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ProxyError::BodyTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            ProxyError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ProxyError::Unsupported { .. } => StatusCode::NOT_IMPLEMENTED,
            ProxyError::StreamBroken { code, .. } => {
                StatusCode::from_u16(*code).unwrap_or(StatusCode::BAD_GATEWAY)
            }
        }
    }

    /// OpenAI's `error.type`.
    pub fn openai_type(&self) -> &'static str {
        match self {
            ProxyError::BadRequest { .. }
            | ProxyError::PayloadTooLarge { .. }
            | ProxyError::UnsupportedEncoding { .. }
            | ProxyError::NotFound { .. }
            | ProxyError::ModelNotFound { .. }
            | ProxyError::MethodNotAllowed
            | ProxyError::Unsupported { .. }
            | ProxyError::BodyTimeout { .. } => "invalid_request_error",
            // Google refusing a named resource (another project's file) is a permission error.
            ProxyError::UpstreamClient { status, .. } if *status == StatusCode::FORBIDDEN => {
                "permission_error"
            }
            ProxyError::UpstreamClient { .. } => "invalid_request_error",
            ProxyError::Unauthorized => "authentication_error",
            ProxyError::LockedOut { .. } | ProxyError::PinnedResting { .. } => "rate_limit_error",
            ProxyError::PinnedElsewhere { .. } | ProxyError::Conflict { .. } => {
                "invalid_request_error"
            }
            ProxyError::IpDenied
            | ProxyError::ModelNotAllowed { .. }
            | ProxyError::AdminOnly
            | ProxyError::CrossSite => "permission_error",
            ProxyError::NoKey { retry_after, .. } => {
                if retry_after.is_some() {
                    "rate_limit_error"
                } else {
                    "server_error"
                }
            }
            ProxyError::StreamBroken { code: 429, .. } => "rate_limit_error",
            ProxyError::UpstreamFailed { .. }
            | ProxyError::EmptyAnswer { .. }
            | ProxyError::UpstreamTimeout
            | ProxyError::ShuttingDown
            | ProxyError::Overloaded { .. }
            | ProxyError::StreamBroken { .. }
            | ProxyError::Internal(_) => "server_error",
        }
    }

    /// OpenAI's `error.code`.
    fn openai_code(&self) -> Option<&'static str> {
        match self {
            ProxyError::PayloadTooLarge { .. } => Some("request_too_large"),
            ProxyError::UnsupportedEncoding { .. } => Some("unsupported_content_encoding"),
            ProxyError::Unauthorized => Some("invalid_api_key"),
            ProxyError::LockedOut { .. } => Some("too_many_failed_credentials"),
            ProxyError::IpDenied => Some("ip_not_allowed"),
            ProxyError::ModelNotAllowed { .. } => Some("model_not_allowed"),
            ProxyError::CrossSite => Some("cross_site_request"),
            ProxyError::NotFound { .. } => Some("not_found"),
            ProxyError::ModelNotFound { .. } => Some("model_not_found"),
            ProxyError::NoKey { retry_after, .. } => Some(if retry_after.is_some() {
                "rate_limit_exceeded"
            } else {
                "no_usable_keys"
            }),
            ProxyError::UpstreamClient { message, .. } if is_context_overflow(message) => {
                Some("context_length_exceeded")
            }
            ProxyError::UpstreamTimeout => Some("upstream_timeout"),
            ProxyError::Overloaded { .. } => Some("overloaded"),
            ProxyError::BodyTimeout { .. } => Some("request_timeout"),
            _ => None,
        }
    }

    /// Google's `error.status`.
    fn google_status(&self) -> &'static str {
        if let ProxyError::Conflict { .. } = self {
            return "ALREADY_EXISTS";
        }
        match self.status() {
            StatusCode::BAD_REQUEST
            | StatusCode::PAYLOAD_TOO_LARGE
            | StatusCode::UNSUPPORTED_MEDIA_TYPE => "INVALID_ARGUMENT",
            StatusCode::UNAUTHORIZED => "UNAUTHENTICATED",
            StatusCode::FORBIDDEN => "PERMISSION_DENIED",
            StatusCode::NOT_FOUND => "NOT_FOUND",
            StatusCode::TOO_MANY_REQUESTS => "RESOURCE_EXHAUSTED",
            StatusCode::SERVICE_UNAVAILABLE => "UNAVAILABLE",
            StatusCode::GATEWAY_TIMEOUT | StatusCode::REQUEST_TIMEOUT => "DEADLINE_EXCEEDED",
            StatusCode::METHOD_NOT_ALLOWED | StatusCode::NOT_IMPLEMENTED => "UNIMPLEMENTED",
            StatusCode::CONFLICT => "FAILED_PRECONDITION",
            _ => "INTERNAL",
        }
    }

    /// How loudly the request log line reports this error.
    /// Every variant says: a new one must decide. The client's own mistakes and refusals
    /// that protect the proxy are INFO (one line per request; a flood of them must not drown
    /// the log in warnings); what the operator should look at (the pool cannot serve, Google
    /// fails, a stream broke) is WARN; a bug is ERROR.
    pub fn log_level(&self) -> tracing::Level {
        match self {
            ProxyError::Internal(_) => tracing::Level::ERROR,
            ProxyError::UpstreamFailed { .. }
            | ProxyError::EmptyAnswer { .. }
            | ProxyError::UpstreamTimeout
            | ProxyError::NoKey { .. }
            | ProxyError::PinnedResting { .. }
            | ProxyError::PinnedElsewhere { .. }
            | ProxyError::StreamBroken { .. } => tracing::Level::WARN,
            ProxyError::BadRequest { .. }
            | ProxyError::PayloadTooLarge { .. }
            | ProxyError::UnsupportedEncoding { .. }
            | ProxyError::Unauthorized
            | ProxyError::LockedOut { .. }
            | ProxyError::IpDenied
            | ProxyError::ModelNotAllowed { .. }
            | ProxyError::AdminOnly
            | ProxyError::CrossSite
            | ProxyError::NotFound { .. }
            | ProxyError::MethodNotAllowed
            | ProxyError::UpstreamClient { .. }
            | ProxyError::Conflict { .. }
            | ProxyError::ModelNotFound { .. }
            | ProxyError::ShuttingDown
            | ProxyError::Overloaded { .. }
            | ProxyError::Unsupported { .. }
            | ProxyError::BodyTimeout { .. } => tracing::Level::INFO,
        }
    }

    /// The message as the client sees it. Gemini's context overflow is reworded so clients that
    /// look for "context length exceeded" (Cline) truncate instead of failing. Whatever a
    /// message quotes, it is cut at `MAX_MESSAGE_CHARS` (each quote of the client's input is
    /// already an `excerpt`; this is the backstop for a quote that was missed).
    pub fn client_message(&self) -> String {
        let message = self.to_string();
        let message = if is_context_overflow(&message) {
            format!("context length exceeded: {message}")
        } else {
            message
        };
        match excerpt_to(&message, MAX_MESSAGE_CHARS) {
            Cow::Borrowed(_) => message,
            Cow::Owned(cut) => cut,
        }
    }

    /// Anthropic's status and `error.type` (issue #17): its own codes (529 for overloaded), and
    /// a 404 only for an unknown model, because Claude Code reports every 404 as "the model
    /// does not exist".
    pub fn anthropic(&self) -> (StatusCode, &'static str) {
        const OVERLOADED: u16 = 529;
        let overloaded =
            StatusCode::from_u16(OVERLOADED).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
        match self {
            ProxyError::BadRequest { .. } | ProxyError::MethodNotAllowed => {
                (StatusCode::BAD_REQUEST, "invalid_request_error")
            }
            // An unknown path on /v1/messages…: not a 404, which Claude Code would misreport.
            ProxyError::NotFound { .. } => (StatusCode::BAD_REQUEST, "invalid_request_error"),
            ProxyError::PayloadTooLarge { .. } => {
                (StatusCode::PAYLOAD_TOO_LARGE, "request_too_large")
            }
            ProxyError::UnsupportedEncoding { .. } => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "invalid_request_error")
            }
            ProxyError::Unauthorized => (StatusCode::UNAUTHORIZED, "authentication_error"),
            ProxyError::IpDenied
            | ProxyError::ModelNotAllowed { .. }
            | ProxyError::AdminOnly
            | ProxyError::CrossSite => (StatusCode::FORBIDDEN, "permission_error"),
            ProxyError::ModelNotFound { .. } => (StatusCode::NOT_FOUND, "not_found_error"),
            ProxyError::LockedOut { .. } | ProxyError::PinnedResting { .. } => {
                (StatusCode::TOO_MANY_REQUESTS, "rate_limit_error")
            }
            ProxyError::PinnedElsewhere { .. } | ProxyError::Conflict { .. } => {
                (StatusCode::CONFLICT, "invalid_request_error")
            }
            ProxyError::NoKey { retry_after, .. } => match retry_after {
                Some(_) => (StatusCode::TOO_MANY_REQUESTS, "rate_limit_error"),
                // No key comes back by itself: overloaded, with x-should-retry: false.
                None => (overloaded, "overloaded_error"),
            },
            ProxyError::UpstreamClient { status, .. } => match status.as_u16() {
                401 => (*status, "authentication_error"),
                403 => (*status, "permission_error"),
                // Google's 404 on a model call is an unknown model.
                404 => (*status, "not_found_error"),
                413 => (*status, "request_too_large"),
                429 => (*status, "rate_limit_error"),
                _ => (StatusCode::BAD_REQUEST, "invalid_request_error"),
            },
            ProxyError::UpstreamFailed { status, .. } => match status.as_u16() {
                429 => (*status, "rate_limit_error"),
                503 | 529 => (overloaded, "overloaded_error"),
                404 => (StatusCode::BAD_GATEWAY, "api_error"),
                _ => (*status, "api_error"),
            },
            ProxyError::EmptyAnswer { .. } => (StatusCode::BAD_GATEWAY, "api_error"),
            ProxyError::UpstreamTimeout => (StatusCode::GATEWAY_TIMEOUT, "api_error"),
            ProxyError::ShuttingDown => (overloaded, "overloaded_error"),
            ProxyError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "api_error"),
            ProxyError::Unsupported { .. } => (StatusCode::NOT_IMPLEMENTED, "api_error"),
            ProxyError::Overloaded { .. } => (overloaded, "overloaded_error"),
            ProxyError::BodyTimeout { .. } => {
                (StatusCode::REQUEST_TIMEOUT, "invalid_request_error")
            }
            ProxyError::StreamBroken { code, .. } => (
                StatusCode::from_u16(*code).unwrap_or(StatusCode::BAD_GATEWAY),
                match code {
                    429 => "rate_limit_error",
                    503 | 529 => "overloaded_error",
                    400 => "invalid_request_error",
                    _ => "api_error",
                },
            ),
        }
    }

    /// The error's JSON body in `dialect`'s shape (Google's own bytes when it sent some).
    fn body(&self, dialect: Dialect) -> Bytes {
        let status = self.status();
        match (self, dialect) {
            (
                ProxyError::UpstreamClient { raw, .. } | ProxyError::UpstreamFailed { raw, .. },
                Dialect::Google,
            ) if !raw.is_empty() => raw.clone(),
            (_, Dialect::Anthropic) => {
                Bytes::from(anthropic_body(self.anthropic().1, &self.client_message()).to_string())
            }
            (
                ProxyError::NoKey {
                    retry_after: Some(wait),
                    all_daily,
                    ..
                },
                Dialect::Google,
            ) => Bytes::from(quota_body(&self.client_message(), *wait, *all_daily).to_string()),
            (_, Dialect::Google) => Bytes::from(
                json!({"error": {
                    "code": status.as_u16(),
                    "message": self.client_message(),
                    "status": self.google_status(),
                }})
                .to_string(),
            ),
            (_, Dialect::OpenAi) => {
                let param = match self {
                    ProxyError::BadRequest { param, .. } => param.clone(),
                    ProxyError::ModelNotAllowed { .. } | ProxyError::ModelNotFound { .. } => {
                        Some("model".to_string())
                    }
                    _ => None,
                };
                Bytes::from(
                    json!({"error": {
                        "message": self.client_message(),
                        "type": self.openai_type(),
                        "param": param,
                        "code": self.openai_code(),
                    }})
                    .to_string(),
                )
            }
        }
    }

    /// The error as the last event of a stream already under way, framed as that stream is:
    /// SSE (`data: …`, with Google's CRLF on `/v1beta`), or the closing element of Google's
    /// JSON-array stream.
    pub fn stream_event(&self, dialect: Dialect, framing: Framing) -> Bytes {
        let body = self.body(dialect);
        let body = String::from_utf8_lossy(&body);
        Bytes::from(match (framing, dialect) {
            (Framing::Sse, Dialect::Google) => format!("data: {body}\r\n\r\n"),
            (Framing::Sse, Dialect::Anthropic) => format!("event: error\ndata: {body}\n\n"),
            (Framing::Sse, _) => format!("data: {body}\n\n"),
            (Framing::JsonArray, _) => format!(",\r\n{body}]"),
        })
    }

    pub fn into_response(self, dialect: Dialect) -> Response<Body> {
        let status = match dialect {
            Dialect::Anthropic => self.anthropic().0,
            _ => self.status(),
        };
        let body = self.body(dialect);
        let mut response = Response::new(full(body));
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        self.add_headers(headers);
        response
    }

    /// The headers that go with the error whatever carries it (`Retry-After`, `x-should-retry`,
    /// `WWW-Authenticate`, `Connection: close`): the dashboard's login page adds them too.
    pub fn add_headers(&self, headers: &mut http::HeaderMap) {
        if let ProxyError::NoKey {
            retry_after,
            all_daily,
            ..
        } = self
        {
            if let Some(wait) = retry_after {
                headers.insert(
                    header::RETRY_AFTER,
                    HeaderValue::from(whole_seconds(*wait.min(&MAX_RETRY_AFTER))),
                );
            }
            // Tell OpenAI's SDKs whether waiting helps: keys resting for minutes come back,
            // keys out for the day (or disabled) do not.
            let worth_retrying = !*all_daily && retry_after.is_some();
            headers.insert(
                "x-should-retry",
                HeaderValue::from_static(if worth_retrying { "true" } else { "false" }),
            );
        }
        if let ProxyError::EmptyAnswer { worth_retrying, .. } = self {
            headers.insert(
                "x-should-retry",
                HeaderValue::from_static(if *worth_retrying { "true" } else { "false" }),
            );
        }
        if let ProxyError::Unauthorized = self {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let ProxyError::LockedOut { retry_after }
        | ProxyError::PinnedResting { retry_after, .. } = self
        {
            headers.insert(
                header::RETRY_AFTER,
                HeaderValue::from(whole_seconds(*retry_after)),
            );
        }
        if let ProxyError::Overloaded { .. } = self {
            headers.insert(
                header::RETRY_AFTER,
                HeaderValue::from(whole_seconds(crate::admission::RETRY_AFTER)),
            );
            headers.insert("x-should-retry", HeaderValue::from_static("true"));
        }
        if let ProxyError::BodyTimeout { .. } = self {
            // The rest of the body is still on its way: the connection cannot be reused.
            headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
    }
}

impl ProxyError {
    /// The `error` of a Responses API `response` object that failed (its stream's
    /// `response.failed` event): `{code, message}`.
    pub fn response_error(&self) -> serde_json::Value {
        let code = match self.status().as_u16() {
            429 => "rate_limit_exceeded",
            _ => "server_error",
        };
        json!({"code": code, "message": self.client_message()})
    }
}

/// Google's 429 for "no key can serve the model now", with the `details` Google's own quota
/// errors carry, since native clients read them rather than `Retry-After`: a `QuotaFailure`
/// whose `quotaId` says per day or per minute (Gemini CLI stops on a `PerDay` id and retries
/// a `PerMinute` one), a `RetryInfo` with the wait (uncapped, unlike the header), and the
/// message's "Please retry in Ns." that the CLI also parses.
fn quota_body(message: &str, wait: Duration, all_daily: bool) -> serde_json::Value {
    let seconds = whole_seconds(wait);
    let (quota_id, metric) = if all_daily {
        (
            "GenerateRequestsPerDayPerProjectPerModel",
            "generativelanguage.googleapis.com/generate_requests_per_model_per_day",
        )
    } else {
        (
            "GenerateRequestsPerMinutePerProjectPerModel",
            "generativelanguage.googleapis.com/generate_requests_per_model",
        )
    };
    json!({"error": {
        "code": 429,
        "message": format!("{message}. Please retry in {seconds}s."),
        "status": "RESOURCE_EXHAUSTED",
        "details": [
            {
                "@type": "type.googleapis.com/google.rpc.QuotaFailure",
                "violations": [{"quotaMetric": metric, "quotaId": quota_id}],
            },
            {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": format!("{seconds}s")},
        ],
    }})
}

/// Anthropic's error body: `{"type":"error","error":{"type":kind,"message":…}}` (also the
/// data of a stream's final `error` event).
fn anthropic_body(kind: &str, message: &str) -> serde_json::Value {
    json!({"type": "error", "error": {"type": kind, "message": message}})
}

/// How a stream in progress carries its events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// Server-sent events.
    Sse,
    /// Google's `alt`-less stream: one JSON array, an element per event.
    JsonArray,
}

/// A wait as `Retry-After` states it: whole seconds, rounded up, at least one.
pub fn whole_seconds(wait: Duration) -> u64 {
    wait.as_secs_f64().ceil().max(1.0) as u64
}

/// Gemini's "The input token count (N) exceeds the maximum number of tokens allowed (M)."
fn is_context_overflow(message: &str) -> bool {
    message.contains("input token count") && message.contains("exceeds the maximum")
}

/// The most a WebSocket close reason holds (RFC 6455: 125 bytes of payload, 2 of them the code).
pub const MAX_CLOSE_REASON: usize = 123;

impl ProxyError {
    /// The error as the close of a Live API WebSocket (issue #18), in Google's codes: 1007 for
    /// input it cannot use, 1009 for a message too large, 1008 for a refusal (credential, model,
    /// address), 1001 at shutdown, 1011 for the rest (Google closes with 1011 on quota too);
    /// the reason is the client message cut to what a close frame holds.
    pub fn close(&self) -> (u16, String) {
        let code = match self {
            ProxyError::PayloadTooLarge { .. } => 1009,
            ProxyError::BadRequest { .. } | ProxyError::UnsupportedEncoding { .. } => 1007,
            ProxyError::UpstreamClient { status, .. } if *status == StatusCode::BAD_REQUEST => 1007,
            ProxyError::ShuttingDown => 1001,
            ProxyError::Unauthorized
            | ProxyError::LockedOut { .. }
            | ProxyError::IpDenied
            | ProxyError::ModelNotAllowed { .. }
            | ProxyError::AdminOnly
            | ProxyError::CrossSite
            | ProxyError::NotFound { .. }
            | ProxyError::MethodNotAllowed
            | ProxyError::ModelNotFound { .. }
            | ProxyError::BodyTimeout { .. }
            | ProxyError::Unsupported { .. }
            | ProxyError::PinnedElsewhere { .. }
            | ProxyError::Conflict { .. }
            | ProxyError::UpstreamClient { .. } => 1008,
            ProxyError::NoKey { .. }
            | ProxyError::UpstreamFailed { .. }
            | ProxyError::EmptyAnswer { .. }
            | ProxyError::UpstreamTimeout
            | ProxyError::Overloaded { .. }
            | ProxyError::PinnedResting { .. }
            | ProxyError::Internal(_)
            | ProxyError::StreamBroken { .. } => 1011,
        };
        (code, close_reason(&self.client_message()).to_string())
    }
}

/// `text` cut to `MAX_CLOSE_REASON` bytes at a character boundary.
pub fn close_reason(text: &str) -> &str {
    if text.len() <= MAX_CLOSE_REASON {
        return text;
    }
    let mut end = MAX_CLOSE_REASON;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use serde_json::Value;

    async fn render(
        err: ProxyError,
        dialect: Dialect,
    ) -> (StatusCode, http::HeaderMap, serde_json::Value) {
        let response = err.into_response(dialect);
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        (
            status,
            headers,
            serde_json::from_slice(&bytes).unwrap_or_default(),
        )
    }

    #[tokio::test]
    async fn no_key_caps_retry_after_and_flags_daily() {
        let (status, headers, body) = render(
            ProxyError::NoKey {
                message: "all keys are resting".into(),
                retry_after: Some(Duration::from_secs(3600)),
                all_daily: true,
            },
            Dialect::OpenAi,
        )
        .await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(headers[header::RETRY_AFTER], "60");
        assert_eq!(headers["x-should-retry"], "false");
        assert_eq!(body["error"]["type"], "rate_limit_error");
    }

    #[tokio::test]
    async fn google_dialect_uses_google_shape() {
        let (status, _, body) = render(ProxyError::Unauthorized, Dialect::Google).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(body["error"]["code"], 401);
        assert_eq!(body["error"]["status"], "UNAUTHENTICATED");
    }

    #[tokio::test]
    async fn a_message_quoting_too_much_is_cut() {
        let long = ProxyError::bad_request(format!("bad value '{}'", "v".repeat(100_000)));
        assert_eq!(long.client_message().chars().count(), MAX_MESSAGE_CHARS + 1);
        assert!(long.client_message().ends_with('…'));
        let (status, _, body) = render(long, Dialect::Google).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(message.starts_with("bad value 'vvv"), "{message}");
        assert!(message.len() < 2 * MAX_MESSAGE_CHARS, "{}", message.len());
        let short = ProxyError::bad_request("short");
        assert_eq!(short.client_message(), "short");
    }

    #[tokio::test]
    async fn a_model_no_key_may_serve_is_not_found() {
        let err = || ProxyError::ModelNotFound {
            model: "gemini-x".into(),
        };
        let (status, headers, body) = render(err(), Dialect::OpenAi).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(headers.get(header::RETRY_AFTER).is_none());
        assert_eq!(body["error"]["type"], "invalid_request_error");
        assert_eq!(body["error"]["code"], "model_not_found");
        assert_eq!(body["error"]["param"], "model");
        let (status, _, body) = render(err(), Dialect::Google).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(body["error"]["code"], 404);
        assert_eq!(body["error"]["status"], "NOT_FOUND");
    }

    #[tokio::test]
    async fn anthropic_dialect_uses_anthropic_shape_and_codes() {
        let check = |err: ProxyError, status: u16, kind: &'static str| async move {
            let (got, headers, body) = render(err, Dialect::Anthropic).await;
            assert_eq!(got.as_u16(), status, "{body}");
            assert_eq!(body["type"], "error", "{body}");
            assert_eq!(body["error"]["type"], kind, "{body}");
            assert!(body["error"]["message"].is_string(), "{body}");
            headers
        };
        check(ProxyError::bad_request("x"), 400, "invalid_request_error").await;
        check(ProxyError::Unauthorized, 401, "authentication_error").await;
        let model = || ProxyError::ModelNotAllowed { model: "m".into() };
        check(model(), 403, "permission_error").await;
        let unknown = ProxyError::ModelNotFound { model: "m".into() };
        check(unknown, 404, "not_found_error").await;
        // Only an unknown model is a 404.
        check(
            ProxyError::not_found("unknown path"),
            400,
            "invalid_request_error",
        )
        .await;
        let no_key = ProxyError::NoKey {
            message: "resting".into(),
            retry_after: Some(Duration::from_secs(7)),
            all_daily: false,
        };
        let headers = check(no_key, 429, "rate_limit_error").await;
        assert_eq!(headers[header::RETRY_AFTER], "7");
        let overloaded = ProxyError::UpstreamFailed {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: "overloaded".into(),
            raw: Bytes::new(),
        };
        check(overloaded, 529, "overloaded_error").await;
        check(ProxyError::Internal("x".into()), 500, "api_error").await;
    }

    #[test]
    fn a_broken_stream_ends_with_one_event_in_its_framing() {
        let broken = |code| ProxyError::StreamBroken {
            code,
            message: "boom".into(),
        };
        let data = |ev: Bytes, end: &str| -> Value {
            let text = String::from_utf8(ev.to_vec()).expect("utf8");
            let inner = text
                .strip_prefix("data: ")
                .and_then(|t| t.strip_suffix(end))
                .unwrap_or_else(|| panic!("framed: {text:?}"));
            serde_json::from_str(inner).expect("json")
        };
        let openai = data(
            broken(502).stream_event(Dialect::OpenAi, Framing::Sse),
            "\n\n",
        );
        assert_eq!(
            openai,
            json!({"error": {"message": "boom", "type": "server_error", "param": null, "code": null}})
        );
        let limited = data(
            broken(429).stream_event(Dialect::OpenAi, Framing::Sse),
            "\n\n",
        );
        assert_eq!(limited["error"]["type"], "rate_limit_error");
        let google = data(
            broken(504).stream_event(Dialect::Google, Framing::Sse),
            "\r\n\r\n",
        );
        assert_eq!(
            google,
            json!({"error": {"code": 504, "message": "boom", "status": "DEADLINE_EXCEEDED"}})
        );
        let array = broken(503).stream_event(Dialect::Google, Framing::JsonArray);
        let text = String::from_utf8(array.to_vec()).expect("utf8");
        let element = text
            .strip_prefix(",\r\n")
            .and_then(|t| t.strip_suffix(']'))
            .expect("closing element");
        let v: Value = serde_json::from_str(element).expect("json");
        assert_eq!(v["error"]["status"], "UNAVAILABLE");
    }

    #[tokio::test]
    async fn context_overflow_is_reworded() {
        let (status, _, body) = render(
            ProxyError::UpstreamClient {
                status: StatusCode::BAD_REQUEST,
                message: "The input token count (1200000) exceeds the maximum number of tokens allowed (1048576).".into(),
                raw: Bytes::new(),
            },
            Dialect::OpenAi,
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains("context length exceeded"), "{message}");
        assert_eq!(body["error"]["code"], "context_length_exceeded");
    }
}
