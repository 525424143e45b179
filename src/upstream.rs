//! The connection to Google: one reqwest client per server worker (connection pooling,
//! optional outbound proxy, timeouts) and the requests it sends. An `Upstream` is built for a
//! config snapshot and shared by the following ones while `[upstream]` stays the same
//! (`Upstream::serves`), so reloads of keys or pool settings keep the warm connections.
//!
//! HTTP/1.1 only, a connection per call in flight (pooled for reuse): over HTTP/2 every call
//! of a worker would share one connection, and calls beyond the server's
//! SETTINGS_MAX_CONCURRENT_STREAMS (commonly 100) would wait inside hyper for a free stream,
//! up to `first_byte_timeout`, then be blamed on a healthy key.
//!
//! Keys travel only in the `x-goog-api-key` header, never in a URL. This module does not read
//! Google's error bodies beyond collecting them; `classify` decides what they mean. A failed
//! exchange says here, where it is known, whether the request may have reached Google
//! (`SendError::maybe_processed`): `proxy` decides from that whether a repeat could be billed.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use http::{HeaderValue, Method};

use crate::config;
use crate::secret::ApiKey;

/// Error bodies larger than this are cut (they are only classified and quoted).
const MAX_ERROR_BODY: usize = 256 * 1024;

pub struct Upstream {
    /// One client (and so one connection pool) per server worker: a pooled connection's task
    /// lives on the worker that opened it, so a worker using only its own pool never wakes
    /// another thread (see `server::serve_workers`).
    clients: Box<[reqwest::Client]>,
    /// `base_url` parsed once; each request copies it and sets path and query.
    base: reqwest::Url,
    /// The base URL's path prefix without its trailing slash (usually empty).
    prefix: String,
    pub first_byte_timeout: Duration,
    pub idle_timeout: Duration,
    pub heartbeat: Option<Duration>,
    /// The config it was built from: a reload with the same `[upstream]` (and worker count)
    /// keeps this `Upstream` and its pooled connections (`serves`).
    config: config::Upstream,
}

/// An exchange that produced no usable response, and how far the request got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendError {
    /// The request was never written: DNS failure, connection refused or timed out, or a
    /// connection that closed before the request went out (hyper resends those itself on a
    /// reused connection; what reaches here failed on a fresh one). Not the key's doing.
    NotSent(String),
    /// The key has no header value (keys are checked at load; kept so no key is ever sent
    /// some other way).
    BadKey,
    /// No response headers within `first_byte_timeout`, or a body that stalled past
    /// `idle_timeout`: the request may be running at Google.
    Timeout,
    /// The request was (or may have been) written, then the exchange broke: a reset while
    /// waiting for the headers, a body that failed mid-read.
    Broken(String),
    /// Google answered 2xx with a body larger than the proxy reads into memory.
    TooLarge { limit: usize },
}

impl SendError {
    /// Whether Google may have received, run and billed the request, so that replaying it on
    /// another key could run it twice. Only failures that prove otherwise say no.
    pub fn maybe_processed(&self) -> bool {
        !matches!(self, SendError::NotSent(_) | SendError::BadKey)
    }
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SendError::NotSent(e) => write!(f, "could not reach the upstream: {e}"),
            SendError::BadKey => f.write_str("the API key is not a valid header value"),
            SendError::Timeout => f.write_str("timed out waiting for the upstream's response"),
            SendError::Broken(e) => write!(f, "upstream connection failed: {e}"),
            SendError::TooLarge { limit } => {
                write!(f, "the upstream's answer is larger than {limit} bytes")
            }
        }
    }
}

impl Upstream {
    /// `workers`: how many server workers will send through it (one client each).
    pub fn new(cfg: &config::Upstream, workers: usize) -> Result<Upstream, String> {
        let clients = (0..workers.max(1))
            .map(|_| client(cfg))
            .collect::<Result<Box<[_]>, _>>()?;
        let base = reqwest::Url::parse(&cfg.base_url)
            .map_err(|e| format!("upstream.base_url is not a usable URL: {e}"))?;
        Ok(Upstream {
            clients,
            prefix: base.path().trim_end_matches('/').to_string(),
            base,
            first_byte_timeout: cfg.first_byte_timeout,
            idle_timeout: cfg.idle_timeout,
            heartbeat: cfg.heartbeat,
            config: cfg.clone(),
        })
    }

    /// Whether this `Upstream` is what `Upstream::new(cfg, workers)` would build, so a new
    /// snapshot can share it instead of opening cold connections.
    pub fn serves(&self, cfg: &config::Upstream, workers: usize) -> bool {
        self.config == *cfg && self.clients.len() == workers.max(1)
    }

    /// Sends one request with `key` through server worker `worker`'s connection pool, waiting
    /// at most `first_byte_timeout` for the headers.
    /// `path_and_query` starts with `/v1beta/…` and never carries a key.
    pub async fn send(
        &self,
        worker: usize,
        method: Method,
        path_and_query: &str,
        key: &ApiKey,
        body: Option<Bytes>,
    ) -> Result<reqwest::Response, SendError> {
        let client = &self.clients[worker % self.clients.len()];
        let mut request = client
            .request(method, self.url(path_and_query))
            .header(API_KEY_HEADER, key_header(key)?);
        if let Some(body) = body {
            request = request
                .header(
                    http::header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                )
                .body(body);
        }
        match tokio::time::timeout(self.first_byte_timeout, request.send()).await {
            // Possibly still connecting, more likely waiting for Google: assume it was sent.
            Err(_) => Err(SendError::Timeout),
            Ok(Ok(response)) => Ok(response),
            Ok(Err(e)) => Err(send_error(&e)),
        }
    }

    /// `send` for the native passthrough: the client's allowed headers (`headers`, never a
    /// credential: the key is set here), and a body that is either bytes or the client's
    /// stream (an upload). A streamed body may take long to send: `first_byte_timeout` starts
    /// when its last byte went out (`Outgoing::Stream::sent`), not at the start.
    pub async fn send_native(
        &self,
        worker: usize,
        method: Method,
        path_and_query: &str,
        key: &ApiKey,
        headers: &http::HeaderMap,
        body: Outgoing,
    ) -> Result<reqwest::Response, SendError> {
        let client = &self.clients[worker % self.clients.len()];
        let mut request = client.request(method, self.url(path_and_query));
        for (name, value) in headers {
            request = request.header(name, value);
        }
        request = request.header(API_KEY_HEADER, key_header(key)?);
        let sent = match body {
            Outgoing::Empty => None,
            Outgoing::Bytes(bytes) => {
                request = request.body(bytes);
                None
            }
            Outgoing::Stream { body, sent } => {
                request = request.body(body);
                Some(sent)
            }
        };
        let exchange = request.send();
        tokio::pin!(exchange);
        let result = match sent {
            None => tokio::time::timeout(self.first_byte_timeout, &mut exchange).await,
            Some(sent) => {
                tokio::select! {
                    answer = &mut exchange => Ok(answer),
                    // The body ended (or failed, which the exchange reports): now the wait for
                    // Google's answer starts.
                    _ = sent => tokio::time::timeout(self.first_byte_timeout, &mut exchange).await,
                }
            }
        };
        match result {
            Err(_) => Err(SendError::Timeout),
            Ok(Ok(response)) => Ok(response),
            Ok(Err(e)) => Err(send_error(&e)),
        }
    }

    /// The base URL with `path_and_query` appended to its path (no full re-parse per request).
    fn url(&self, path_and_query: &str) -> reqwest::Url {
        let (path, query) = match path_and_query.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (path_and_query, None),
        };
        let mut url = self.base.clone();
        if self.prefix.is_empty() {
            url.set_path(path);
        } else {
            url.set_path(&format!("{}{path}", self.prefix));
        }
        url.set_query(query);
        url
    }
}

/// Where a Live API WebSocket goes (issue #18): the base URL with its scheme mapped (`http` ->
/// `ws`, `https` -> `wss`) and `path` appended, and the address to connect to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveTarget {
    pub url: String,
    /// `host:port` (an IPv6 literal in brackets).
    pub authority: String,
}

impl Upstream {
    /// The WebSocket URL of `path` (`/ws/…`, no query) on the base URL.
    pub fn live_target(&self, path: &str) -> Result<LiveTarget, String> {
        let scheme = match self.base.scheme() {
            "http" => "ws",
            "https" => "wss",
            other => {
                return Err(format!(
                    "upstream.base_url's scheme {other} has no WebSocket form"
                ))
            }
        };
        let host = self
            .base
            .host_str()
            .ok_or("upstream.base_url names no host")?;
        let port = self
            .base
            .port_or_known_default()
            .ok_or("upstream.base_url names no port")?;
        let authority = format!("{host}:{port}");
        Ok(LiveTarget {
            url: format!("{scheme}://{authority}{}{path}", self.prefix),
            authority,
        })
    }

    /// `upstream.connect_timeout`.
    pub fn connect_timeout(&self) -> Duration {
        self.config.connect_timeout
    }

    /// Whether `upstream.proxy` is set (the Live API's WebSocket does not go through it).
    pub fn proxied(&self) -> bool {
        self.config.proxy.is_some()
    }
}

/// A native call's request body.
pub enum Outgoing {
    Empty,
    Bytes(Bytes),
    /// The client's body, streamed once; `sent` fires (or drops) when it has ended.
    Stream {
        body: reqwest::Body,
        sent: tokio::sync::oneshot::Receiver<()>,
    },
}

/// The base URL's scheme and authority, to check that a URL Google hands out (an upload
/// session's) points back at the upstream before the proxy ever sends a key there.
impl Upstream {
    pub fn same_origin(&self, url: &str) -> Option<String> {
        let url = reqwest::Url::parse(url).ok()?;
        if url.scheme() != self.base.scheme()
            || url.host_str() != self.base.host_str()
            || url.port_or_known_default() != self.base.port_or_known_default()
        {
            return None;
        }
        let path = url.path();
        let path = if self.prefix.is_empty() {
            path
        } else {
            path.strip_prefix(self.prefix.as_str())?
        };
        Some(match url.query() {
            Some(q) => format!("{path}?{q}"),
            None => path.to_string(),
        })
    }
}

const API_KEY_HEADER: http::HeaderName = http::HeaderName::from_static("x-goog-api-key");

/// The key's header value, made when the key was loaded.
fn key_header(key: &ApiKey) -> Result<HeaderValue, SendError> {
    key.header().cloned().ok_or(SendError::BadKey)
}

/// What a failed `send` means for a replay. `is_connect` covers DNS, refused and connect
/// timeouts (checked before `is_timeout`, which a connect timeout also is); a request hyper
/// gave back unsent ("canceled") was never written either. Anything else may have reached
/// Google.
fn send_error(e: &reqwest::Error) -> SendError {
    if e.is_connect() || canceled_unsent(e) {
        return SendError::NotSent(describe(e));
    }
    if e.is_timeout() {
        return SendError::Timeout;
    }
    SendError::Broken(describe(e))
}

/// hyper-util's client error of kind `Canceled`: the connection closed before the request was
/// written, and the request came back unsent. Its kind is only visible through `Display`; if
/// that text ever changes, such errors count as maybe sent, which is the safe side.
fn canceled_unsent(e: &reqwest::Error) -> bool {
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if s.to_string() == "client error (Canceled)" {
            return true;
        }
        source = s.source();
    }
    false
}

/// One pooled client as `upstream` configures it. Redirects are not followed (Google's API
/// does not redirect, and a redirect must not carry a key elsewhere) and reqwest's own retries
/// are off: the attempt loop in `proxy` decides what is retried, on which key. HTTP/1.1 only
/// (TLS offers only `http/1.1` in ALPN): each call in flight has its own connection, so none
/// waits for an HTTP/2 stream slot; idle ones are kept for reuse.
fn client(cfg: &config::Upstream) -> Result<reqwest::Client, String> {
    let mut builder = reqwest::Client::builder()
        .http1_only()
        .connect_timeout(cfg.connect_timeout)
        .tcp_nodelay(true)
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(256)
        .redirect(reqwest::redirect::Policy::none())
        .retry(reqwest::retry::never())
        .user_agent(concat!("gemini-rotator/", env!("CARGO_PKG_VERSION")));
    builder = match &cfg.proxy {
        Some(url) => builder.proxy(
            reqwest::Proxy::all(url)
                .map_err(|e| format!("upstream.proxy is not a usable proxy URL: {e}"))?,
        ),
        // Environment proxies would silently reroute key-bearing traffic: only the config's.
        None => builder.no_proxy(),
    };
    builder
        .build()
        .map_err(|e| format!("cannot build the upstream client: {e}"))
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

/// Reads a successful answer whole: at most `limit` bytes (more is `TooLarge`, never a
/// silently cut body), each chunk within `idle` of the last.
pub async fn read_answer(
    response: reqwest::Response,
    idle: Duration,
    limit: usize,
) -> Result<Bytes, SendError> {
    read_bounded(response, idle, limit, Overflow::Fail).await
}

/// What reading does with bytes beyond its limit.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Overflow {
    /// The answer is refused: a cut JSON body would be misread.
    Fail,
    /// The rest is dropped: an error body is read only to classify it.
    Truncate,
}

async fn read_bounded(
    response: reqwest::Response,
    idle: Duration,
    limit: usize,
    overflow: Overflow,
) -> Result<Bytes, SendError> {
    let mut stream = response.bytes_stream();
    let mut out = BytesMut::new();
    loop {
        match tokio::time::timeout(idle, stream.next()).await {
            Err(_) => return Err(SendError::Timeout),
            Ok(None) => return Ok(out.freeze()),
            // Google answered: the request was processed, whatever happened to the body.
            Ok(Some(Err(e))) => return Err(SendError::Broken(describe(&e))),
            Ok(Some(Ok(chunk))) => {
                if out.len() + chunk.len() > limit && overflow == Overflow::Fail {
                    return Err(SendError::TooLarge { limit });
                }
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
    read_bounded(response, idle, MAX_ERROR_BODY, Overflow::Truncate)
        .await
        .unwrap_or_default()
}
