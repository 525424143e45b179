//! The connection to Google: one reqwest client per config snapshot (connection pooling,
//! optional outbound proxy, timeouts) and the requests it sends.
//!
//! Keys travel only in the `x-goog-api-key` header, never in a URL. This module does not read
//! Google's error bodies beyond collecting them; `classify` decides what they mean.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use http::Method;

use crate::config;
use crate::secret::ApiKey;

/// Error bodies larger than this are cut (they are only classified and quoted).
const MAX_ERROR_BODY: usize = 256 * 1024;

pub struct Upstream {
    client: reqwest::Client,
    base: String,
    pub first_byte_timeout: Duration,
    pub idle_timeout: Duration,
    pub heartbeat: Option<Duration>,
}

/// A request that never produced a response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendError {
    /// No response headers within `first_byte_timeout`.
    Timeout,
    /// Could not connect, or the connection failed before a response.
    Connect(String),
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SendError::Timeout => f.write_str("timed out waiting for the upstream's response"),
            SendError::Connect(e) => write!(f, "upstream connection failed: {e}"),
        }
    }
}

impl Upstream {
    pub fn new(cfg: &config::Upstream) -> Result<Upstream, String> {
        let mut builder = reqwest::Client::builder()
            .connect_timeout(cfg.connect_timeout)
            .tcp_nodelay(true)
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(256)
            .user_agent(concat!("gemini-rotator/", env!("CARGO_PKG_VERSION")));
        builder = match &cfg.proxy {
            Some(url) => builder.proxy(
                reqwest::Proxy::all(url)
                    .map_err(|e| format!("upstream.proxy is not a usable proxy URL: {e}"))?,
            ),
            // Environment proxies would silently reroute key-bearing traffic: only the config's.
            None => builder.no_proxy(),
        };
        let client = builder
            .build()
            .map_err(|e| format!("cannot build the upstream client: {e}"))?;
        Ok(Upstream {
            client,
            base: cfg.base_url.trim_end_matches('/').to_string(),
            first_byte_timeout: cfg.first_byte_timeout,
            idle_timeout: cfg.idle_timeout,
            heartbeat: cfg.heartbeat,
        })
    }

    /// Sends one request with `key`, waiting at most `first_byte_timeout` for the headers.
    /// `path_and_query` starts with `/v1beta/…` and never carries a key.
    pub async fn send(
        &self,
        method: Method,
        path_and_query: &str,
        key: &ApiKey,
        body: Option<Bytes>,
    ) -> Result<reqwest::Response, SendError> {
        let url = format!("{}{}", self.base, path_and_query);
        let mut request = self
            .client
            .request(method, url)
            .header("x-goog-api-key", key.expose());
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body);
        }
        match tokio::time::timeout(self.first_byte_timeout, request.send()).await {
            Err(_) => Err(SendError::Timeout),
            Ok(Err(e)) if e.is_timeout() => Err(SendError::Timeout),
            Ok(Err(e)) => Err(SendError::Connect(describe(&e))),
            Ok(Ok(response)) => Ok(response),
        }
    }
}

/// A reqwest error as its kind and source chain, without the URL (keeps lines short).
fn describe(e: &reqwest::Error) -> String {
    let mut text = if e.is_connect() {
        "connect error"
    } else if e.is_body() || e.is_decode() {
        "body error"
    } else {
        "request error"
    }
    .to_string();
    push_sources(&mut text, e);
    text
}

/// Appends `e`'s source chain (": cause: deeper cause"), where reqwest keeps the useful part.
pub(crate) fn push_sources(text: &mut String, e: &dyn std::error::Error) {
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
}

/// Reads a whole response body, allowing at most `idle` between chunks and keeping at most
/// `limit` bytes (the rest is drained and dropped).
pub async fn read_body(
    response: reqwest::Response,
    idle: Duration,
    limit: usize,
) -> Result<Bytes, SendError> {
    let mut stream = response.bytes_stream();
    let mut out = BytesMut::new();
    loop {
        match tokio::time::timeout(idle, stream.next()).await {
            Err(_) => return Err(SendError::Timeout),
            Ok(None) => return Ok(out.freeze()),
            Ok(Some(Err(e))) => return Err(SendError::Connect(describe(&e))),
            Ok(Some(Ok(chunk))) => {
                if out.len() < limit {
                    let take = chunk.len().min(limit - out.len());
                    out.extend_from_slice(&chunk[..take]);
                }
            }
        }
    }
}

/// Reads an error body (bounded) for classification.
pub async fn read_error_body(response: reqwest::Response, idle: Duration) -> Bytes {
    read_body(response, idle, MAX_ERROR_BODY)
        .await
        .unwrap_or_default()
}
