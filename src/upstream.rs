//! The connection to Google: per server worker, one HTTP/1.1 client with its own connection
//! pool (hyper-util's, TLS by rustls), timeouts, and the requests it sends. An `Upstream` is
//! built for a config snapshot and shared by the following ones while `[upstream]` stays the
//! same (`Upstream::serves`), so reloads of keys or pool settings keep the warm connections.
//!
//! HTTP/1.1 only, a connection per call in flight (pooled for reuse): over HTTP/2 every call
//! of a worker would share one connection, and calls beyond the server's
//! SETTINGS_MAX_CONCURRENT_STREAMS (commonly 100) would wait inside hyper for a free stream,
//! up to `first_byte_timeout`, then be blamed on a healthy key.
//!
//! Two transports behind one send path: hyper-util's client directly (no outbound proxy: the
//! request is built once as an `http::Request` and handed to the pool, with no URL re-parse,
//! header copies or extra layers per call), or reqwest's client when `[upstream] proxy` is
//! set (HTTP, HTTPS and SOCKS5 proxies, which reqwest implements in full). Both answer as
//! `http::Response<AnswerBody>`.
//!
//! Keys travel only in the `x-goog-api-key` header, never in a URL. This module does not read
//! Google's error bodies beyond collecting them; `classify` decides what they mean. A failed
//! exchange says here, where it is known, whether the request may have reached Google
//! (`SendError::maybe_processed`): `proxy` decides from that whether a repeat could be billed.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use http::{HeaderMap, HeaderValue, Method, Uri};
use http_body::{Frame, SizeHint};
use http_body_util::BodyExt;
use hyper_util::client::legacy::connect::HttpConnector;

use crate::config;
use crate::secret::ApiKey;

mod conn_pool;
use conn_pool::ConnPool;
pub use conn_pool::PooledBody;

/// Error bodies larger than this are cut (they are only classified and quoted).
const MAX_ERROR_BODY: usize = 256 * 1024;

/// An upstream answer: status, headers and the body still to read.
pub type Answer = http::Response<AnswerBody>;

pub struct Upstream {
    /// One client (and so one connection pool) per server worker: a pooled connection's task
    /// lives on the worker that opened it, so a worker using only its own pool never wakes
    /// another thread (see `server::serve_workers`).
    transport: Transport,
    /// `base_url`'s scheme and authority, and its path prefix without the trailing slash
    /// (usually empty): each request's URI is these plus its path and query.
    scheme: http::uri::Scheme,
    authority: http::uri::Authority,
    prefix: String,
    /// `base_url` parsed, to compare the origin of URLs Google hands out.
    base: reqwest::Url,
    pub first_byte_timeout: Duration,
    pub idle_timeout: Duration,
    pub heartbeat: Option<Duration>,
    /// The config it was built from: a reload with the same `[upstream]` (and worker count)
    /// keeps this `Upstream` and its pooled connections (`serves`).
    config: config::Upstream,
}

/// Per worker: a pool of connections straight to Google (`conn_pool`), or reqwest's client
/// through `upstream.proxy`.
enum Transport {
    Direct(Box<[ConnPool]>),
    Proxied(Box<[reqwest::Client]>),
}

impl Transport {
    fn len(&self) -> usize {
        match self {
            Transport::Direct(c) => c.len(),
            Transport::Proxied(c) => c.len(),
        }
    }
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
        let workers = workers.max(1);
        let base = reqwest::Url::parse(&cfg.base_url)
            .map_err(|e| format!("upstream.base_url is not a usable URL: {e}"))?;
        let origin: Uri = base
            .as_str()
            .parse()
            .map_err(|e| format!("upstream.base_url is not a usable URL: {e}"))?;
        let (Some(scheme), Some(authority)) = (origin.scheme(), origin.authority()) else {
            return Err("upstream.base_url needs a scheme and a host".into());
        };
        let transport = match &cfg.proxy {
            None => Transport::Direct(
                (0..workers)
                    .map(|_| ConnPool::new(direct_connector(cfg)?, scheme, authority))
                    .collect::<Result<Box<[_]>, _>>()?,
            ),
            Some(proxy) => Transport::Proxied(
                (0..workers)
                    .map(|_| proxied_client(cfg, proxy))
                    .collect::<Result<Box<[_]>, _>>()?,
            ),
        };
        Ok(Upstream {
            transport,
            scheme: scheme.clone(),
            authority: authority.clone(),
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
        self.config == *cfg && self.transport.len() == workers.max(1)
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
    ) -> Result<Answer, SendError> {
        let mut headers = HeaderMap::with_capacity(4);
        let body = match body {
            Some(body) => {
                headers.insert(
                    http::header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                Outgoing::Bytes(body)
            }
            None => Outgoing::Empty,
        };
        self.exchange(worker, method, path_and_query, key, headers, body)
            .await
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
    ) -> Result<Answer, SendError> {
        self.exchange(worker, method, path_and_query, key, headers.clone(), body)
            .await
    }

    /// The one send path of both transports: the request built once, sent through `worker`'s
    /// pool, its answer's headers waited for within `first_byte_timeout` (for a streamed body,
    /// counted from the body's end).
    async fn exchange(
        &self,
        worker: usize,
        method: Method,
        path_and_query: &str,
        key: &ApiKey,
        mut headers: HeaderMap,
        body: Outgoing,
    ) -> Result<Answer, SendError> {
        headers.insert(API_KEY_HEADER, key_header(key)?);
        headers.insert(
            http::header::USER_AGENT,
            HeaderValue::from_static(USER_AGENT),
        );
        headers
            .entry(http::header::ACCEPT)
            .or_insert(HeaderValue::from_static("*/*"));
        let (body, sent) = match body {
            Outgoing::Empty => (RequestBody::full(Bytes::new()), None),
            Outgoing::Bytes(bytes) => (RequestBody::full(bytes), None),
            Outgoing::Stream { body, sent } => (RequestBody::Stream(body), Some(sent)),
        };
        let mut request = http::Request::new(body);
        *request.method_mut() = method;
        *request.headers_mut() = headers;
        let exchange = self.send_on(worker, request, self.target(path_and_query)?);
        tokio::pin!(exchange);
        let result = match sent {
            // Possibly still connecting, more likely waiting for Google: a timeout assumes the
            // request was sent.
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
        result.unwrap_or(Err(SendError::Timeout))
    }

    /// The base URL's path prefix with `path_and_query` appended: the request's target.
    /// `path_and_query` is built by the proxy from checked parts; one that is not a valid URI
    /// as it stands (a character that needs escaping) is escaped the way a URL parser does.
    fn target(&self, path_and_query: &str) -> Result<http::uri::PathAndQuery, SendError> {
        let joined = if self.prefix.is_empty() {
            path_and_query.parse::<http::uri::PathAndQuery>()
        } else {
            format!("{}{path_and_query}", self.prefix).parse()
        };
        match joined {
            Ok(pq) => Ok(pq),
            Err(_) => self.escaped(path_and_query),
        }
    }

    /// The absolute URI of a target (what the proxied client sends to its proxy).
    fn absolute(&self, target: http::uri::PathAndQuery) -> Result<Uri, SendError> {
        Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(target)
            .build()
            .map_err(|e| SendError::NotSent(format!("invalid upstream URL: {e}")))
    }

    /// `path_and_query` escaped by the URL parser (the slow path of `uri`).
    fn escaped(&self, path_and_query: &str) -> Result<http::uri::PathAndQuery, SendError> {
        let (path, query) = match path_and_query.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (path_and_query, None),
        };
        let mut url = self.base.clone();
        url.set_path(&format!("{}{path}", self.prefix));
        url.set_query(query);
        let tail = match url.query() {
            Some(query) => format!("{}?{query}", url.path()),
            None => url.path().to_string(),
        };
        tail.parse()
            .map_err(|e| SendError::NotSent(format!("invalid upstream URL: {e}")))
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

impl Upstream {
    /// Sends `request` to `target` through `worker`'s pool or client.
    async fn send_on(
        &self,
        worker: usize,
        mut request: http::Request<RequestBody>,
        target: http::uri::PathAndQuery,
    ) -> Result<Answer, SendError> {
        match &self.transport {
            Transport::Direct(pools) => {
                let pool = &pools[worker % pools.len()];
                // HTTP/1.1 to the origin: the request line holds the path and query alone.
                *request.uri_mut() = Uri::from(target);
                // Boxed: inline, the exchange's state would grow every handler's future, which
                // is moved whole (twice per request) into the request's scope (callgrind:
                // 4.4k instructions of memcpy per call).
                let answer = Box::pin(pool.send(request)).await?;
                Ok(answer.map(AnswerBody::Direct))
            }
            Transport::Proxied(clients) => {
                let client = &clients[worker % clients.len()];
                *request.uri_mut() = self.absolute(target)?;
                let request = reqwest::Request::try_from(request.map(RequestBody::into_reqwest))
                    .map_err(|e| SendError::NotSent(describe(&e)))?;
                match client.execute(request).await {
                    Ok(answer) => Ok(http::Response::from(answer).map(AnswerBody::Proxied)),
                    Err(e) => Err(proxied_error(&e)),
                }
            }
        }
    }
}

/// A request body.
pub enum Outgoing {
    Empty,
    Bytes(Bytes),
    /// The client's body, streamed once; `sent` fires (or drops) when it has ended.
    Stream {
        body: BoxStream<'static, Result<Bytes, std::io::Error>>,
        sent: tokio::sync::oneshot::Receiver<()>,
    },
}

/// What hyper sends: bytes known in full (their length is the `Content-Length`), or the
/// client's stream (chunked).
pub enum RequestBody {
    Full(Option<Bytes>),
    Stream(BoxStream<'static, Result<Bytes, std::io::Error>>),
}

impl RequestBody {
    fn full(bytes: Bytes) -> Self {
        RequestBody::Full((!bytes.is_empty()).then_some(bytes))
    }

    fn into_reqwest(self) -> reqwest::Body {
        match self {
            RequestBody::Full(Some(bytes)) => reqwest::Body::from(bytes),
            RequestBody::Full(None) => reqwest::Body::from(Bytes::new()),
            RequestBody::Stream(stream) => reqwest::Body::wrap_stream(stream),
        }
    }
}

impl http_body::Body for RequestBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        match self.get_mut() {
            RequestBody::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            RequestBody::Stream(stream) => stream
                .poll_next_unpin(cx)
                .map(|chunk| chunk.map(|c| c.map(Frame::data))),
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, RequestBody::Full(None))
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RequestBody::Full(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
            RequestBody::Stream(_) => SizeHint::default(),
        }
    }
}

/// An answer's body, from either transport.
pub enum AnswerBody {
    Direct(PooledBody),
    Proxied(reqwest::Body),
}

impl http_body::Body for AnswerBody {
    type Data = Bytes;
    type Error = String;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, String>>> {
        match self.get_mut() {
            AnswerBody::Direct(body) => Pin::new(body).poll_frame(cx).map_err(|e| {
                let mut text = format!("body error: {e}");
                push_sources(&mut text, &e);
                text
            }),
            AnswerBody::Proxied(body) => Pin::new(body).poll_frame(cx).map_err(|e| describe(&e)),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            AnswerBody::Direct(body) => body.is_end_stream(),
            AnswerBody::Proxied(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            AnswerBody::Direct(body) => body.size_hint(),
            AnswerBody::Proxied(body) => body.size_hint(),
        }
    }
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
const USER_AGENT: &str = concat!("gemini-rotator/", env!("CARGO_PKG_VERSION"));

/// The key's header value, made when the key was loaded.
fn key_header(key: &ApiKey) -> Result<HeaderValue, SendError> {
    key.header().cloned().ok_or(SendError::BadKey)
}

/// The same for reqwest's errors (the proxied transport): `is_connect` is checked before
/// `is_timeout`, which a connect timeout also is.
fn proxied_error(e: &reqwest::Error) -> SendError {
    if e.is_connect() || canceled_unsent(e) {
        return SendError::NotSent(describe(e));
    }
    if e.is_timeout() {
        return SendError::Timeout;
    }
    SendError::Broken(describe(e))
}

/// hyper-util's client error of kind `Canceled` (itself or in `e`'s source chain): the
/// connection closed before the request was written, and the request came back unsent. Its
/// kind is only visible through `Display`; if that text ever changes, such errors count as
/// maybe sent, which is the safe side.
fn canceled_unsent(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(e);
    while let Some(s) = source {
        if s.to_string() == "client error (Canceled)" {
            return true;
        }
        source = s.source();
    }
    false
}

/// Pooled connections kept idle per worker by the proxied client, and for how long (the
/// direct pool has its own, the same).
const POOL_IDLE: Duration = Duration::from_secs(90);
const POOL_MAX_IDLE: usize = 256;

/// What one worker's direct pool dials with. TLS by rustls with the bundled webpki roots,
/// offering only `http/1.1` in ALPN: each call in flight has its own connection, so none
/// waits for an HTTP/2 stream slot. The pool follows no redirects (Google's API does not
/// redirect, and a redirect must not carry a key elsewhere) and resends only requests that
/// never left (a pooled connection found closed); the attempt loop in `proxy` decides what
/// else is retried, on which key.
fn direct_connector(
    cfg: &config::Upstream,
) -> Result<hyper_rustls::HttpsConnector<HttpConnector>, String> {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(cfg.connect_timeout));
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_webpki_roots(rustls::crypto::ring::default_provider())
        .map_err(|e| format!("cannot set up TLS for the upstream: {e}"))?
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Ok(https)
}

/// One worker's client through `upstream.proxy`, with the same rules as `direct_client`:
/// HTTP/1.1 only, no redirects, no retries of its own.
fn proxied_client(cfg: &config::Upstream, proxy: &str) -> Result<reqwest::Client, String> {
    let proxy = reqwest::Proxy::all(proxy)
        .map_err(|e| format!("upstream.proxy is not a usable proxy URL: {e}"))?;
    reqwest::Client::builder()
        .http1_only()
        .connect_timeout(cfg.connect_timeout)
        .tcp_nodelay(true)
        .pool_idle_timeout(POOL_IDLE)
        .pool_max_idle_per_host(POOL_MAX_IDLE)
        .redirect(reqwest::redirect::Policy::none())
        .retry(reqwest::retry::never())
        // Environment proxies would silently reroute key-bearing traffic: only the config's.
        .no_proxy()
        .proxy(proxy)
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
    body: AnswerBody,
    idle: Duration,
    limit: usize,
) -> Result<Bytes, SendError> {
    read_bounded(body, idle, limit, Overflow::Fail).await
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
    mut body: AnswerBody,
    idle: Duration,
    limit: usize,
    overflow: Overflow,
) -> Result<Bytes, SendError> {
    // Most answers arrive in one chunk: kept as it came, without a copy.
    let mut first: Option<Bytes> = None;
    let mut out = BytesMut::new();
    loop {
        let chunk = match tokio::time::timeout(idle, body.frame()).await {
            Err(_) => return Err(SendError::Timeout),
            Ok(None) => break,
            // Google answered: the request was processed, whatever happened to the body.
            Ok(Some(Err(e))) => return Err(SendError::Broken(e)),
            Ok(Some(Ok(frame))) => match frame.into_data() {
                Ok(chunk) => chunk,
                Err(_) => continue,
            },
        };
        let held = first.as_ref().map_or(0, Bytes::len) + out.len();
        if held + chunk.len() > limit && overflow == Overflow::Fail {
            return Err(SendError::TooLarge { limit });
        }
        if held >= limit {
            continue;
        }
        let chunk = chunk.slice(..chunk.len().min(limit - held));
        match first.take() {
            None if out.is_empty() => first = Some(chunk),
            Some(earlier) => {
                out.extend_from_slice(&earlier);
                out.extend_from_slice(&chunk);
            }
            None => out.extend_from_slice(&chunk),
        }
    }
    Ok(first.unwrap_or_else(|| out.freeze()))
}

/// Reads an error body (bounded) for classification.
pub async fn read_error_body(body: AnswerBody, idle: Duration) -> Bytes {
    read_bounded(body, idle, MAX_ERROR_BODY, Overflow::Truncate)
        .await
        .unwrap_or_default()
}
