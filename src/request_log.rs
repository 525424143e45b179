//! The one log line per request: method, path, model, masked key, status, upstream status,
//! attempts, latency. Filled in as the request travels; emitted once at its end (for streams,
//! when the stream ends). What the client sent (the path, an error quoting its input) is cut
//! to a bounded excerpt, so no line grows with the request.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use http::StatusCode;

use crate::excerpt::excerpt_to;
use crate::timeline::Timeline;

/// The longest path a line shows, in characters (a real route's path is far shorter).
const MAX_PATH_CHARS: usize = 256;

#[derive(Debug)]
pub struct RequestLog {
    pub method: http::Method,
    pub path: String,
    pub route: &'static str,
    pub start: Instant,
    pub token: Option<String>,
    pub model: Option<String>,
    /// Masked.
    pub key: Option<Arc<str>>,
    pub attempts: u32,
    pub upstream_status: Option<u16>,
    pub error: Option<String>,
    /// Where the dashboard's per-minute traffic is counted (set by the server).
    pub timeline: Option<Arc<Timeline>>,
    /// The server worker serving the request (set by the server): its upstream calls go through
    /// that worker's connection pool.
    pub worker: usize,
    /// How loudly the line is written when the request failed (`ProxyError::log_level`);
    /// otherwise by status: 5xx warn, the rest info.
    pub level: Option<tracing::Level>,
    /// The request's id (`request_id`): on the line and in the answer's `x-request-id`.
    pub id: String,
    emitted: bool,
}

/// The longest client-sent `x-request-id` kept, in bytes.
const MAX_ID_LEN: usize = 64;

/// The id of a request: the client's `x-request-id` when it is a plain token (1 to 64 of
/// `A-Z a-z 0-9 - _ . :`, so it can neither forge nor stretch a log line), else a new
/// `req_` and 24 hex digits.
pub fn request_id(headers: &http::HeaderMap) -> String {
    let sent = headers.get("x-request-id").map(|v| v.as_bytes());
    match sent {
        Some(id)
            if !id.is_empty()
                && id.len() <= MAX_ID_LEN
                && id
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(b)) =>
        {
            String::from_utf8_lossy(id).into_owned()
        }
        _ => format!("req_{:016x}{:08x}", fastrand::u64(..), fastrand::u32(..)),
    }
}

/// Puts the request's id on its answer: `x-request-id` always, and Anthropic's own
/// `request-id` on its routes (the anthropic SDK's `_request_id`).
pub fn stamp(
    response: &mut http::Response<crate::body::Body>,
    id: &str,
    dialect: crate::router::Dialect,
) {
    let Ok(value) = http::HeaderValue::from_str(id) else {
        return;
    };
    let headers = response.headers_mut();
    if dialect == crate::router::Dialect::Anthropic {
        headers.insert("request-id", value.clone());
    }
    headers.insert("x-request-id", value);
}

impl RequestLog {
    pub fn new(method: http::Method, path: &str, route: &'static str) -> Self {
        RequestLog {
            method,
            path: excerpt_to(path, MAX_PATH_CHARS).into_owned(),
            route,
            start: Instant::now(),
            token: None,
            model: None,
            key: None,
            attempts: 0,
            upstream_status: None,
            error: None,
            timeline: None,
            worker: 0,
            level: None,
            id: String::new(),
            emitted: false,
        }
    }

    /// Moves the line's ownership to whoever finishes the request (a stream's relay); this copy
    /// will not write.
    pub fn hand_off(&mut self) -> RequestLog {
        let taken = RequestLog {
            method: self.method.clone(),
            path: std::mem::take(&mut self.path),
            route: self.route,
            start: self.start,
            token: self.token.take(),
            model: self.model.take(),
            key: self.key.take(),
            attempts: self.attempts,
            upstream_status: self.upstream_status,
            error: self.error.take(),
            timeline: self.timeline.take(),
            worker: self.worker,
            level: self.level,
            // Kept here too: the answer's headers are stamped with it after the hand-off.
            id: self.id.clone(),
            emitted: self.emitted,
        };
        self.emitted = true;
        taken
    }

    /// Writes the line. Later calls do nothing.
    /// The request failed with `error`: its message and its log level go on the line.
    pub fn failed(&mut self, error: &crate::error::ProxyError) {
        self.error = Some(error.to_string());
        self.level = Some(error.log_level());
    }

    pub fn emit(&mut self, status: StatusCode) {
        if std::mem::replace(&mut self.emitted, true) {
            return;
        }
        let elapsed = self.start.elapsed();
        let latency_ms = elapsed.as_secs_f64() * 1000.0;
        let model = self.model.as_deref().unwrap_or("-");
        let key = self.key.as_deref().unwrap_or("-");
        let token = self.token.as_deref().unwrap_or("-");
        let upstream_status = self.upstream_status.unwrap_or(0);
        let status = status.as_u16();
        // A fallback shows as "alias->model"; metrics count the name the client asked for.
        let asked = model.split("->").next().unwrap_or(model);
        crate::metrics::record_request(self.route, asked, status, elapsed, self.attempts);
        if let Some(timeline) = self
            .timeline
            .as_ref()
            .filter(|_| crate::timeline::is_traffic(self.route))
        {
            timeline.record(SystemTime::now(), status);
        }
        macro_rules! line {
            ($level:ident) => {
                tracing::$level!(
                    method = %self.method,
                    path = %self.path,
                    request_id = if self.id.is_empty() { "-" } else { &self.id },
                    route = self.route,
                    model,
                    key,
                    token,
                    status,
                    upstream_status,
                    attempts = self.attempts,
                    latency_ms = format_args!("{latency_ms:.2}"),
                    error = &*excerpt_to(
                        self.error.as_deref().unwrap_or(""),
                        crate::error::MAX_MESSAGE_CHARS
                    ),
                    "request"
                )
            };
        }
        let level = self.level.unwrap_or(if status >= 500 {
            tracing::Level::WARN
        } else {
            tracing::Level::INFO
        });
        match level {
            tracing::Level::ERROR => line!(error),
            tracing::Level::WARN => line!(warn),
            tracing::Level::INFO => line!(info),
            tracing::Level::DEBUG => line!(debug),
            tracing::Level::TRACE => line!(trace),
        }
    }
}
