//! The Live API (issue #18): Google's `BidiGenerateContent` WebSocket tunnelled through the key
//! pool, and ephemeral tokens for it minted on a pool key (`POST /v1alpha/auth_tokens`).
//!
//! A session: the client's upgrade is checked (its token by the gate, like every client route)
//! and accepted at once; its first message must be a `setup` naming the model (within
//! `server.body_timeout`, at most `server.max_body` bytes); only then is a key picked, for that
//! model (an alias resolves to its chain), and the upstream WebSocket opened on it (the base
//! URL's scheme mapped to `ws`/`wss`, the same path, the key in `x-goog-api-key` only). Google
//! refusing before `setupComplete` (a 4xx/5xx handshake, a close for quota or a bad key) is
//! classified and reported to the pool like any answer, and another key is tried within the
//! usual limits (`pool.max_attempts`, `max_quota_hops`, `request_deadline`, the retry budget):
//! the client sees nothing while a key can serve. After that, frames are pumped both ways, one
//! message at a time in each direction (no queue: a slow side holds the other back), until
//! either side closes, nothing moves for `upstream.idle_timeout`, or the proxy drains; the close
//! code and reason are passed on, cut to a close frame's size, with the key taken out. The
//! session is one request in the stats (one log line, one request and its `usageMetadata` for
//! the token, one outcome for the key) and holds its place in `max_in_flight` to its end.
//!
//! Ephemeral tokens: a token minted through the proxy is remembered (`affinity`, under a hash
//! of its name, never the name itself) with the key that minted it and the client token that
//! asked, until its `expireTime`. Google's token is the credential of the
//! `BidiGenerateContentConstrained` method (google-genai sends it as `Authorization: Token …`,
//! others as `?access_token=`); on that route the proxy accepts only tokens it minted, acts for
//! their client token, and opens the upstream session on the minting key with the ephemeral
//! token (never the key): it belongs to that key's project.
//!
//! `upstream.proxy` is not used by the WebSocket (tungstenite connects directly): with it set,
//! Live sessions are refused (501) rather than sent around the operator's egress proxy.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{header, HeaderMap, HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::WebSocketStream;

use crate::access::Caller;
use crate::admission;
use crate::affinity::Pin;
use crate::api::{
    allowed_chain, chain_exhausted, clean_model_name, next_in_chain, resolve, ChainStep,
};
use crate::body::{full, read_body, Reply};
use crate::classify::{classify, classify_close, classify_pinned, close_status};
use crate::error::{close_reason, ProxyError};
use crate::metrics;
use crate::pool::{Lease, Now, Outcome};
use crate::proxy::{self, Call, Delivery, Payload, Pinned};
use crate::request_log::RequestLog;
use crate::retry_budget;
use crate::router::LiveVersion;
use crate::state::{App, Snapshot};
use crate::usage::Tokens;

/// The largest message Google's side may send (audio and text chunks are far smaller).
const MAX_SERVER_MESSAGE: usize = 16 * 1024 * 1024;
/// How long closing a side waits for its close to be written.
const CLOSE_WAIT: Duration = Duration::from_secs(2);
/// An ephemeral token whose answer names no `expireTime` (Google's default is 30 minutes).
const TOKEN_TTL: Duration = Duration::from_secs(30 * 60);
/// The affinity prefix of minted ephemeral tokens.
const TOKEN_PREFIX: &str = "auth_tokens/";

type ClientWs = WebSocketStream<Metered>;

/// The client's side of a session, its reads taken from `server.memory_budget` as they arrive
/// (`admission::Meter`) and given back once the message they formed has been sent upstream:
/// what tungstenite buffers of a client's messages is always within the budget that bounds
/// request bodies. A read the budget cannot hold fails the session (closed, 1011).
struct Metered {
    io: TokioIo<hyper::upgrade::Upgraded>,
    meter: Arc<admission::Meter>,
}

impl tokio::io::AsyncRead for Metered {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = std::pin::Pin::new(&mut self.io).poll_read(cx, buf);
        let read = buf.filled().len().saturating_sub(before) as u64;
        if matches!(polled, std::task::Poll::Ready(Ok(()))) && !self.meter.take(read) {
            return std::task::Poll::Ready(Err(std::io::Error::other(
                "server.memory_budget is spent",
            )));
        }
        polled
    }
}

impl tokio::io::AsyncWrite for Metered {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
type UpstreamWs = WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// `GET /ws/google.ai.generativelanguage.{version}.GenerativeService.BidiGenerateContent[Constrained]`.
pub async fn connect(
    app: &Arc<App>,
    snap: &Arc<Snapshot>,
    caller: &Caller,
    version: LiveVersion,
    constrained: bool,
    req: Request<Incoming>,
    log: &mut RequestLog,
) -> Result<Reply, ProxyError> {
    if snap.upstream.proxied() {
        return Err(ProxyError::Unsupported {
            message: "the Live API is not available through this proxy while upstream.proxy is \
                      set: its WebSocket would not go through the outbound proxy"
                .into(),
        });
    }
    let accept = accept_key(req.headers())?;
    let (caller, ephemeral) = if constrained {
        let (caller, ephemeral) =
            ephemeral_caller(app, snap, caller, req.headers(), req.uri().query()).await?;
        (caller, Some(ephemeral))
    } else {
        (caller.clone(), None)
    };
    log.token = caller.token_name.clone();

    let handover = admission::Handover::new();
    let mut response = Response::new(full(Bytes::new()));
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    response.extensions_mut().insert(handover.clone());

    let session = Session {
        app: app.clone(),
        snap: snap.clone(),
        caller,
        version,
        ephemeral,
        log: log.hand_off(),
        _slot: handover,
        meter: None,
    };
    app.lifecycle.sessions().spawn(async move {
        let mut session = session;
        match hyper::upgrade::on(req).await {
            Ok(upgraded) => session.run(TokioIo::new(upgraded)).await,
            Err(e) => {
                tracing::debug!(error = %e, "the Live API upgrade failed");
                session.log.error = Some(format!("the WebSocket upgrade failed: {e}"));
                session.log.emit(StatusCode::BAD_REQUEST);
            }
        }
    });
    Ok(Reply::Streaming(response))
}

/// The `Sec-WebSocket-Accept` for a well-formed WebSocket upgrade (RFC 6455 §4.2.1), or a 400.
fn accept_key(headers: &HeaderMap) -> Result<HeaderValue, ProxyError> {
    let has = |name: header::HeaderName, token: &str| {
        headers.get_all(name).iter().any(|v| {
            v.to_str()
                .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    };
    let key = headers
        .get(header::SEC_WEBSOCKET_KEY)
        .map(HeaderValue::as_bytes)
        .filter(|k| !k.is_empty() && k.len() <= 64);
    let version_13 = headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_some_and(|v| v.as_bytes() == b"13");
    match key {
        Some(key)
            if has(header::UPGRADE, "websocket")
                && has(header::CONNECTION, "upgrade")
                && version_13 =>
        {
            HeaderValue::from_str(&tungstenite::handshake::derive_accept_key(key))
                .map_err(|_| ProxyError::Internal("a WebSocket accept key is not a header".into()))
        }
        _ => Err(ProxyError::bad_request(
            "the Live API is a WebSocket: send a WebSocket upgrade (Upgrade: websocket, \
             Sec-WebSocket-Version: 13)",
        )),
    }
}

/// An ephemeral token the proxy minted: which key it lives on and the upstream credential.
struct Ephemeral {
    /// Google's token name (`auth_tokens/…`): the credential sent upstream.
    token: String,
    pin: Pin,
}

/// The ephemeral token a Constrained request presents, if the proxy minted it and it is live,
/// and the caller acting as the client token that minted it. Anything else is a 401 (counted
/// by `lockout` like a wrong token).
async fn ephemeral_caller(
    app: &App,
    snap: &Snapshot,
    caller: &Caller,
    headers: &HeaderMap,
    query: Option<&str>,
) -> Result<(Caller, Ephemeral), ProxyError> {
    let limit = snap.config.access.max_token_failures;
    if let Some(retry_after) = app.lockout.wait(caller.ip, caller.loopback_peer, limit) {
        return Err(ProxyError::LockedOut { retry_after });
    }
    let refuse = || {
        app.lockout.failed(caller.ip, caller.loopback_peer, limit);
        ProxyError::Unauthorized
    };
    let presented = ephemeral_credential(headers, query).ok_or_else(refuse)?;
    // Through the shared store: a token minted on one replica opens a session on any.
    let pin = app
        .pin(&token_entry(&presented), SystemTime::now())
        .await
        .ok_or_else(refuse)?;
    let acting = if pin.owner.is_empty() {
        if !snap.config.auth.open {
            return Err(refuse());
        }
        caller.clone()
    } else {
        // The client token that minted it must still be configured.
        let token = snap
            .config
            .auth
            .tokens
            .iter()
            .find(|t| *t.name == *pin.owner)
            .ok_or_else(refuse)?;
        caller.as_token(token)
    };
    Ok((
        acting,
        Ephemeral {
            token: presented,
            pin,
        },
    ))
}

/// The ephemeral token in `Authorization: Token …` (google-genai), `?access_token=` (the
/// JavaScript SDK), or `x-goog-api-key` / `?key=`; only an `auth_tokens/…` name counts.
fn ephemeral_credential(headers: &HeaderMap, query: Option<&str>) -> Option<String> {
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("token").then(|| token.trim())
        });
    let header_key = headers.get("x-goog-api-key").and_then(|v| v.to_str().ok());
    let from_query = |name| query.and_then(|q| crate::access::query_param(q, name));
    let presented = authorization
        .map(str::to_string)
        .or_else(|| from_query("access_token").map(|c| c.into_owned()))
        .or_else(|| header_key.map(str::to_string))
        .or_else(|| from_query("key").map(|c| c.into_owned()))?;
    let presented = presented.trim();
    let valid = presented.starts_with(TOKEN_PREFIX)
        && presented.len() <= 512
        && presented[TOKEN_PREFIX.len()..]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~'));
    valid.then(|| presented.to_string())
}

/// The affinity name of an ephemeral token: a hash, so the table never holds the credential.
fn token_entry(token: &str) -> String {
    let digest = Sha256::digest(token.as_bytes());
    let mut name = String::with_capacity(TOKEN_PREFIX.len() + 64);
    name.push_str(TOKEN_PREFIX);
    for b in digest {
        name.push_str(&format!("{b:02x}"));
    }
    name
}

/// One Live session, from the 101 to its last close.
struct Session {
    app: Arc<App>,
    snap: Arc<Snapshot>,
    caller: Caller,
    version: LiveVersion,
    ephemeral: Option<Ephemeral>,
    log: RequestLog,
    /// Holds the request's place in `max_in_flight` until the session ends.
    _slot: admission::Handover,
    /// What the client's reads hold of `server.memory_budget` (set when the session starts).
    meter: Option<Arc<admission::Meter>>,
}

/// How a session ended, for its log line and its client's close.
enum End {
    /// It ran, or the client left before its setup: a 101 in the log.
    Done,
    /// The proxy refused it (the setup, no key, a limit): closed with the error's close.
    Refused(ProxyError),
    /// Google refused the setup on the last key tried: its close, passed on.
    Upstream { code: u16, reason: String },
}

/// Why one attempt to open the upstream session failed.
struct Failure {
    outcome: Outcome,
    /// Google's close (or the handshake's status as a close), passed to the client if this
    /// was the last attempt.
    code: u16,
    reason: String,
    /// The REST status of the same error (the log's upstream status).
    status: u16,
}

impl Failure {
    fn network(reason: String) -> Failure {
        Failure {
            outcome: Outcome::Network {
                reason: reason.clone(),
            },
            code: 1011,
            reason,
            status: 502,
        }
    }

    fn transient(reason: String) -> Failure {
        Failure {
            outcome: Outcome::Transient {
                reason: reason.clone(),
            },
            code: 1011,
            reason,
            status: 502,
        }
    }
}

impl Session {
    async fn run(&mut self, io: TokioIo<hyper::upgrade::Upgraded>) {
        let max_body = usize::try_from(self.snap.config.server.max_body).unwrap_or(usize::MAX);
        let meter = Arc::new(admission::Meter::new(self.snap.config.server.memory_budget));
        self.meter = Some(meter.clone());
        let io = Metered { io, meter };
        let mut client =
            WebSocketStream::from_raw_socket(io, Role::Server, Some(ws_config(max_body))).await;
        let end = self.serve(&mut client).await;
        match end {
            End::Done => self.log.emit(StatusCode::SWITCHING_PROTOCOLS),
            End::Refused(error) => {
                let (code, reason) = error.close();
                close(&mut client, code, &reason).await;
                self.log.failed(&error);
                self.log.emit(error.status());
            }
            End::Upstream { code, reason } => {
                close(&mut client, code, &reason).await;
                let status = close_status(code, &reason);
                self.log.error = Some(reason);
                self.log
                    .emit(StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY));
            }
        }
    }

    async fn serve(&mut self, client: &mut ClientWs) -> End {
        let server = &self.snap.config.server;
        let setup_wait = server.body_timeout;
        let limit = server.max_body;
        let first = match tokio::time::timeout(setup_wait, next_data(client)).await {
            Err(_) => return End::Refused(ProxyError::BodyTimeout { after: setup_wait }),
            Ok(Read::Data(bytes)) => bytes,
            Ok(Read::TooLarge) => return End::Refused(ProxyError::PayloadTooLarge { limit }),
            Ok(Read::Closed) => return End::Done,
        };
        let (requested, setup) = match parse_setup(&first) {
            Ok(parsed) => parsed,
            Err(e) => return End::Refused(e),
        };
        let chain = match self.chain(&requested) {
            Ok(chain) => chain,
            Err(e) => return End::Refused(e),
        };
        self.log.model = Some(requested.clone());
        let mut last_error = None;
        let mut opened = None;
        for (i, step) in chain.iter().enumerate() {
            let model = step.model.as_str();
            if model != requested {
                self.log.model = Some(format!("{requested}->{model}"));
            }
            let message = setup_for(&setup, &first, model, model != requested);
            match self.open(model, message).await {
                Ok(upstream) => {
                    opened = Some(upstream);
                    break;
                }
                Err(Opened::Refused(e)) => match next_in_chain(&chain, i, e) {
                    Ok(e) => last_error = Some(End::Refused(e)),
                    Err(e) => return End::Refused(e),
                },
                Err(Opened::Upstream(end)) => return end,
            }
        }
        let Some((upstream, lease, first_reply)) = opened else {
            return last_error.unwrap_or_else(|| End::Refused(chain_exhausted(None)));
        };
        self.pump(client, upstream, lease, first_reply).await
    }

    /// The models to try for `requested`: an alias's chain, narrowed to what the token may use.
    fn chain(&self, requested: &str) -> Result<Vec<ChainStep>, ProxyError> {
        let chain = resolve(&self.snap.config.models, requested);
        allowed_chain(&self.caller, requested, chain)
    }

    /// Opens the upstream session for `model` on the first key that accepts the setup.
    async fn open(
        &mut self,
        model: &str,
        setup: Message,
    ) -> Result<(UpstreamWs, Lease, Message), Opened> {
        let snap = self.snap.clone();
        let pool = &snap.pool;
        let policy = &snap.config.pool.retry;
        let max_attempts = pool.max_attempts().max(1) as usize;
        let max_quota_hops = policy.max_quota_hops.max(1) as usize;
        let budget = retry_budget::global();
        let pinned = match &self.ephemeral {
            Some(e) => match snap
                .config
                .pool
                .keys
                .iter()
                .position(|k| k.key == e.pin.key)
            {
                Some(index) => Some(index),
                None => {
                    return Err(Opened::Refused(ProxyError::PinnedElsewhere {
                        resource: "this ephemeral token".into(),
                        why: "the key that minted it is no longer in the pool".into(),
                    }))
                }
            },
            None => None,
        };
        let mut tried: Vec<usize> = Vec::new();
        let (mut counted, mut hops) = (0usize, 0usize);
        let mut deadline: Option<Instant> = None;
        let mut last: Option<Failure> = None;
        loop {
            if let Some(deadline) = deadline {
                let now = Instant::now();
                if now >= deadline || !budget.try_retry(now) {
                    break;
                }
            }
            let exclude: Vec<usize> = match pinned {
                Some(index) => (0..pool.len())
                    .filter(|&i| i != index || tried.contains(&i))
                    .collect(),
                None => tried.clone(),
            };
            let lease = match pool.pick(model, Instant::now(), &exclude) {
                Ok(lease) => lease,
                Err(no_key) => match (&last, pinned) {
                    (None, Some(_)) => {
                        return Err(Opened::Refused(ProxyError::PinnedResting {
                            resource: "this ephemeral token".into(),
                            retry_after: no_key.retry_after.unwrap_or(Duration::from_secs(1)),
                        }))
                    }
                    (None, None) => {
                        return Err(Opened::Refused(proxy::no_key_error(
                            model,
                            &no_key,
                            pool.len(),
                        )))
                    }
                    (Some(_), _) => break,
                },
            };
            if !pool
                .claim(&lease, Now::new(Instant::now(), SystemTime::now()))
                .await
            {
                tried.push(lease.index);
                continue;
            }
            if deadline.is_none() {
                let now = Instant::now();
                deadline = Some(now + policy.request_deadline);
                budget.record_first(now);
            }
            tried.push(lease.index);
            self.log.attempts += 1;
            self.log.key = Some(lease.key.masked().clone());
            let started = Instant::now();
            match self.attempt(&lease, setup.clone(), pinned.is_some()).await {
                Ok((upstream, first)) => {
                    pool.answered(&lease);
                    metrics::record_attempt(model, "ok", Some(started.elapsed()));
                    return Ok((upstream, lease, first));
                }
                Err(failure) => {
                    self.log.upstream_status = Some(failure.status);
                    pool.report(&lease, &failure.outcome, Instant::now());
                    metrics::record_attempt(model, failure.outcome.class(), None);
                    tracing::debug!(
                        key = %lease.key,
                        model,
                        outcome = failure.outcome.class(),
                        attempt = self.log.attempts,
                        "Live API attempt failed"
                    );
                    if !failure.outcome.retryable() {
                        return Err(Opened::Upstream(End::Upstream {
                            code: failure.code,
                            reason: failure.reason,
                        }));
                    }
                    let quota = matches!(
                        failure.outcome,
                        Outcome::RateLimited { .. }
                            | Outcome::QuotaDaily
                            | Outcome::NoQuota
                            | Outcome::ModelDenied { .. }
                    );
                    last = Some(failure);
                    if quota {
                        hops += 1;
                        if hops >= max_quota_hops {
                            break;
                        }
                    } else {
                        counted += 1;
                        if counted >= max_attempts {
                            break;
                        }
                    }
                }
            }
        }
        let Some(last) = last else {
            return Err(Opened::Refused(ProxyError::Internal(
                "no attempt was made".into(),
            )));
        };
        let quota = last.status == 429;
        if quota {
            // The chain may go on with its next model, as a REST call's would.
            let message = format!(
                "Gemini quota exhausted on every key tried for model '{model}': {}",
                last.reason
            );
            return Err(Opened::Refused(ProxyError::UpstreamFailed {
                status: StatusCode::TOO_MANY_REQUESTS,
                message,
                raw: Bytes::new(),
            }));
        }
        Err(Opened::Upstream(End::Upstream {
            code: last.code,
            reason: last.reason,
        }))
    }

    /// One upstream session on `lease`: connect, send the setup, wait for Google's first
    /// answer (`setupComplete`). A close or a refused handshake is a `Failure`, classified.
    async fn attempt(
        &self,
        lease: &Lease,
        setup: Message,
        pinned: bool,
    ) -> Result<(UpstreamWs, Message), Failure> {
        let upstream = &self.snap.upstream;
        let method = if self.ephemeral.is_some() {
            "BidiGenerateContentConstrained"
        } else {
            "BidiGenerateContent"
        };
        let path = format!(
            "/ws/google.ai.generativelanguage.{}.GenerativeService.{method}",
            self.version.as_str()
        );
        let target = upstream.live_target(&path).map_err(Failure::network)?;
        let mut request = target
            .url
            .as_str()
            .into_client_request()
            .map_err(|e| Failure::network(format!("bad upstream WebSocket URL: {e}")))?;
        match &self.ephemeral {
            Some(e) => {
                let value = HeaderValue::from_str(&format!("Token {}", e.token))
                    .map_err(|_| Failure::network("an ephemeral token is not a header".into()))?;
                request.headers_mut().insert(header::AUTHORIZATION, value);
            }
            None => {
                let key = lease.key.header().cloned().ok_or_else(|| Failure {
                    outcome: Outcome::KeyInvalid {
                        reason: "the API key is not a valid header value".into(),
                    },
                    code: 1011,
                    reason: "the API key is not a valid header value".into(),
                    status: 502,
                })?;
                request.headers_mut().insert("x-goog-api-key", key);
            }
        }
        let tcp = tokio::time::timeout(
            upstream.connect_timeout(),
            tokio::net::TcpStream::connect(target.authority.as_str()),
        )
        .await
        .map_err(|_| Failure::network("connecting to the upstream timed out".into()))?
        .map_err(|e| Failure::network(format!("could not reach the upstream: {e}")))?;
        let _ = tcp.set_nodelay(true);
        let wait = upstream.first_byte_timeout;
        let handshake = tokio_tungstenite::client_async_tls_with_config(
            request,
            tcp,
            Some(ws_config(MAX_SERVER_MESSAGE)),
            None,
        );
        let (mut ws, _) = match tokio::time::timeout(wait, handshake).await {
            Err(_) => {
                return Err(Failure::transient(
                    "the upstream's WebSocket handshake timed out".into(),
                ))
            }
            Ok(Ok(pair)) => pair,
            Ok(Err(tungstenite::Error::Http(response))) => {
                let status = response.status().as_u16();
                let body = response.body().as_deref().unwrap_or_default();
                let outcome = if pinned {
                    classify_pinned(status, body)
                } else {
                    classify(status, body)
                };
                let message = proxy::google_message(body)
                    .unwrap_or_else(|| format!("the upstream refused the WebSocket with {status}"));
                let code = if status == 400 {
                    1007
                } else if status < 500 && status != 429 {
                    1008
                } else {
                    1011
                };
                return Err(Failure {
                    outcome,
                    code,
                    reason: self.sanitise(&message, lease).into_owned(),
                    status,
                });
            }
            Ok(Err(e)) => {
                return Err(Failure::transient(format!(
                    "upstream WebSocket failed: {e}"
                )))
            }
        };
        if let Err(e) = ws.send(setup).await {
            return Err(Failure::transient(format!(
                "sending the setup upstream failed: {e}"
            )));
        }
        loop {
            let next = match tokio::time::timeout(wait, ws.next()).await {
                Err(_) => {
                    return Err(Failure::transient(
                        "no setupComplete from the upstream in time".into(),
                    ))
                }
                Ok(next) => next,
            };
            return match next {
                Some(Ok(message @ (Message::Text(_) | Message::Binary(_)))) => Ok((ws, message)),
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
                Some(Ok(Message::Close(frame))) => {
                    let (code, reason) = match &frame {
                        Some(f) => (u16::from(f.code), f.reason.as_str().to_string()),
                        None => (1005, String::new()),
                    };
                    let status = close_status(code, &reason);
                    let outcome = if pinned && status == 403 {
                        Outcome::ClientError
                    } else {
                        classify_close(code, &reason)
                    };
                    Err(Failure {
                        outcome,
                        code,
                        reason: self.sanitise(&reason, lease).to_string(),
                        status,
                    })
                }
                Some(Err(e)) => Err(Failure::transient(format!(
                    "upstream WebSocket failed: {e}"
                ))),
                None => Err(Failure::transient(
                    "the upstream closed before setupComplete".into(),
                )),
            };
        }
    }

    /// Pumps messages both ways until the session ends; reports the key's outcome and the
    /// session's usage once.
    async fn pump(
        &mut self,
        client: &mut ClientWs,
        upstream: UpstreamWs,
        lease: Lease,
        first: Message,
    ) -> End {
        let idle = self.snap.upstream.idle_timeout;
        let start = Instant::now();
        let last_active = AtomicU64::new(0);
        let touch = || {
            last_active.store(start.elapsed().as_millis() as u64, Ordering::Relaxed);
        };
        let mut tokens = Tokens::default();
        add_usage(&mut tokens, &first);
        // The setup has gone upstream: the client's reads so far are given back.
        let meter = self.meter.clone();
        if let Some(meter) = &meter {
            meter.release();
        }
        let (mut client_tx, mut client_rx) = client.split();
        let (mut up_tx, mut up_rx) = {
            let upstream = upstream;
            upstream.split()
        };
        if client_tx.send(first).await.is_err() {
            self.finish(&lease, &Outcome::Success, tokens);
            return End::Done;
        }
        let key = lease.key.expose().to_string();
        let sanitise = |frame: Option<CloseFrame>| -> Option<CloseFrame> {
            frame.map(|f| close_frame(f.code.into(), &f.reason.as_str().replace(&key, "[key]")))
        };
        enum Side {
            ClientClosed,
            ClientTooLarge,
            UpstreamClosed(Option<(u16, String)>),
            UpstreamBroken(String),
            Idle,
            Draining,
        }
        let side = {
            let from_client = async {
                loop {
                    match client_rx.next().await {
                        Some(Ok(m @ (Message::Text(_) | Message::Binary(_)))) => {
                            touch();
                            if up_tx.send(m).await.is_err() {
                                return Side::UpstreamBroken("writing upstream failed".into());
                            }
                            if let Some(meter) = &meter {
                                meter.release();
                            }
                        }
                        Some(Ok(Message::Close(frame))) => {
                            let _ = tokio::time::timeout(
                                CLOSE_WAIT,
                                up_tx.send(Message::Close(sanitise(frame))),
                            )
                            .await;
                            return Side::ClientClosed;
                        }
                        Some(Ok(_)) => {}
                        Some(Err(tungstenite::Error::Capacity(_))) => return Side::ClientTooLarge,
                        Some(Err(_)) | None => return Side::ClientClosed,
                    }
                }
            };
            let from_upstream = async {
                loop {
                    match up_rx.next().await {
                        Some(Ok(m @ (Message::Text(_) | Message::Binary(_)))) => {
                            touch();
                            add_usage(&mut tokens, &m);
                            if client_tx.send(m).await.is_err() {
                                return Side::ClientClosed;
                            }
                        }
                        Some(Ok(Message::Close(frame))) => {
                            let frame = sanitise(frame);
                            let seen = frame
                                .as_ref()
                                .map(|f| (u16::from(f.code), f.reason.as_str().to_string()));
                            let _ = tokio::time::timeout(
                                CLOSE_WAIT,
                                client_tx.send(Message::Close(frame)),
                            )
                            .await;
                            return Side::UpstreamClosed(seen);
                        }
                        Some(Ok(_)) => {}
                        Some(Err(e)) => return Side::UpstreamBroken(e.to_string()),
                        None => {
                            return Side::UpstreamBroken("the upstream connection closed".into())
                        }
                    }
                }
            };
            let watchdog = async {
                let tick = (idle / 4).clamp(Duration::from_millis(50), Duration::from_secs(5));
                loop {
                    tokio::time::sleep(tick).await;
                    let quiet = start.elapsed().as_millis() as u64
                        - last_active
                            .load(Ordering::Relaxed)
                            .min(start.elapsed().as_millis() as u64);
                    if Duration::from_millis(quiet) >= idle {
                        return Side::Idle;
                    }
                }
            };
            tokio::select! {
                side = from_client => side,
                side = from_upstream => side,
                side = watchdog => side,
                _ = self.app.lifecycle.draining().cancelled() => Side::Draining,
            }
        };
        let (outcome, end) = match side {
            Side::ClientClosed => (Outcome::Success, End::Done),
            Side::ClientTooLarge => {
                let error = ProxyError::PayloadTooLarge {
                    limit: self.snap.config.server.max_body,
                };
                let _ = close_sink(&mut up_tx, 1000, "").await;
                (Outcome::Success, End::Refused(error))
            }
            Side::UpstreamClosed(seen) => {
                let outcome = match &seen {
                    Some((code, reason)) if *code != 1000 => classify_close(*code, reason),
                    _ => Outcome::Success,
                };
                if let Some((code, reason)) = seen.filter(|(code, _)| *code != 1000) {
                    self.log.error = Some(format!("upstream closed with {code}: {reason}"));
                }
                (outcome, End::Done)
            }
            Side::UpstreamBroken(reason) => {
                let _ = close_sink(&mut client_tx, 1011, "the upstream connection failed").await;
                self.log.error = Some(reason.clone());
                (Outcome::Transient { reason }, End::Done)
            }
            Side::Idle => {
                let reason = format!(
                    "no message either way for {}s",
                    crate::error::whole_seconds(idle)
                );
                let _ = close_sink(&mut up_tx, 1000, "").await;
                let _ = close_sink(&mut client_tx, 1008, &reason).await;
                self.log.error = Some(reason);
                (Outcome::Success, End::Done)
            }
            Side::Draining => {
                let _ = close_sink(&mut up_tx, 1001, "").await;
                let _ = close_sink(&mut client_tx, 1001, "the proxy is shutting down").await;
                (Outcome::Success, End::Done)
            }
        };
        self.finish(&lease, &outcome, tokens);
        end
    }

    /// The session's one outcome for its key, and its usage as one request of its token.
    fn finish(&self, lease: &Lease, outcome: &Outcome, tokens: Tokens) {
        self.snap.pool.report(lease, outcome, Instant::now());
        self.snap
            .record_usage(lease, self.log.token.as_deref(), Some(tokens));
    }

    /// `text` without the lease's key in it.
    fn sanitise<'a>(&self, text: &'a str, lease: &Lease) -> std::borrow::Cow<'a, str> {
        let key = lease.key.expose();
        if !key.is_empty() && text.contains(key) {
            text.replace(key, "[key]").into()
        } else {
            text.into()
        }
    }
}

/// Why no upstream session opened on a model.
enum Opened {
    /// The proxy's own refusal (no key, a pinned key out): the chain may move on.
    Refused(ProxyError),
    /// Google refused it: the client gets Google's close.
    Upstream(End),
}

/// What reading a client's first message gave.
enum Read {
    Data(Bytes),
    TooLarge,
    Closed,
}

/// The next text or binary message (pings are answered by tungstenite on the way).
async fn next_data<S: AsyncRead + AsyncWrite + Unpin>(ws: &mut WebSocketStream<S>) -> Read {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(text))) => return Read::Data(Bytes::from(text)),
            Some(Ok(Message::Binary(bytes))) => return Read::Data(bytes),
            Some(Ok(Message::Close(_))) | None => return Read::Closed,
            Some(Ok(_)) => {}
            Some(Err(tungstenite::Error::Capacity(_))) => return Read::TooLarge,
            Some(Err(_)) => return Read::Closed,
        }
    }
}

/// The first message's setup object: `setup` (`BidiGenerateContentSetup`, what google-genai
/// sends) or `config` (the `LiveSessionRequest` spelling of Google's newer WebSocket guide).
fn setup_object(value: &Value) -> Option<&Value> {
    value.get("setup").or_else(|| value.get("config"))
}

/// The model the first message's `setup` names, and the message as JSON (to rewrite the model
/// for an alias). Anything but a `setup` with a model is the client's error (1007).
fn parse_setup(bytes: &[u8]) -> Result<(String, Value), ProxyError> {
    let value: Value = serde_json::from_slice(bytes).map_err(|e| {
        ProxyError::bad_request(format!(
            "the first Live API message must be a JSON setup: {}",
            crate::excerpt::serde_error(&e)
        ))
    })?;
    let model = setup_object(&value)
        .and_then(|s| s.get("model"))
        .and_then(Value::as_str)
        .ok_or_else(|| {
            ProxyError::bad_request(
                "the first Live API message must be {\"setup\": {\"model\": \"models/…\", …}}",
            )
        })?;
    let model = clean_model_name(model)?.to_string();
    Ok((model, value))
}

/// The setup to send for `model`: the client's bytes when its model is used as named, else the
/// setup with `setup.model` set to `models/{model}` (an alias's target).
fn setup_for(setup: &Value, original: &Bytes, model: &str, rewrite: bool) -> Message {
    if !rewrite {
        return match std::str::from_utf8(original) {
            Ok(text) => Message::text(text.to_string()),
            Err(_) => Message::binary(original.clone()),
        };
    }
    let mut setup = setup.clone();
    let field = if setup.get("setup").is_some() {
        "setup"
    } else {
        "config"
    };
    if let Some(s) = setup.get_mut(field).and_then(Value::as_object_mut) {
        s.insert("model".into(), Value::String(format!("models/{model}")));
    }
    Message::text(setup.to_string())
}

/// tungstenite's limits for one side: messages and frames at most `max_message` bytes, and a
/// write buffer that holds one such message and no more (a slow reader holds the sender back).
fn ws_config(max_message: usize) -> WebSocketConfig {
    const WRITE_BUFFER: usize = 128 * 1024;
    WebSocketConfig::default()
        .max_message_size(Some(max_message))
        .max_frame_size(Some(max_message))
        .write_buffer_size(WRITE_BUFFER)
        .max_write_buffer_size(
            WRITE_BUFFER
                .saturating_add(max_message)
                .saturating_add(64 * 1024),
        )
}

/// A close frame with `code` and `reason` cut to what a close frame may carry.
fn close_frame(code: u16, reason: &str) -> CloseFrame {
    CloseFrame {
        code: CloseCode::from(code),
        reason: close_reason(reason).to_string().into(),
    }
}

/// Sends a close on a side and flushes it, bounded.
async fn close(ws: &mut ClientWs, code: u16, reason: &str) {
    let _ = tokio::time::timeout(CLOSE_WAIT, ws.close(Some(close_frame(code, reason)))).await;
}

async fn close_sink<S>(sink: &mut S, code: u16, reason: &str) -> Result<(), ()>
where
    S: futures_util::Sink<Message> + Unpin,
{
    let frame = close_frame(code, reason);
    match tokio::time::timeout(CLOSE_WAIT, sink.send(Message::Close(Some(frame)))).await {
        Ok(Ok(())) => Ok(()),
        _ => Err(()),
    }
}

/// Google's Live usage: a server message's top-level `usageMetadata` (`responseTokenCount` for
/// the model's output), summed over the session.
fn add_usage(total: &mut Tokens, message: &Message) {
    #[derive(serde::Deserialize, Default)]
    #[serde(rename_all = "camelCase", default)]
    struct LiveUsage {
        prompt_token_count: u64,
        response_token_count: u64,
        candidates_token_count: u64,
        thoughts_token_count: u64,
        tool_use_prompt_token_count: u64,
    }
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct WithUsage {
        usage_metadata: Option<LiveUsage>,
    }
    let bytes: &[u8] = match message {
        Message::Text(text) => text.as_bytes(),
        Message::Binary(bytes) => bytes,
        _ => return,
    };
    if !bytes.windows(15).any(|w| w == b"\"usageMetadata\"") {
        return;
    }
    let Ok(WithUsage {
        usage_metadata: Some(u),
    }) = serde_json::from_slice::<WithUsage>(bytes)
    else {
        return;
    };
    *total = total.plus(Tokens {
        prompt: u
            .prompt_token_count
            .saturating_add(u.tool_use_prompt_token_count),
        completion: u.response_token_count.max(u.candidates_token_count),
        thoughts: u.thoughts_token_count,
    });
}

/// `POST /v1alpha/auth_tokens`: mints an ephemeral token on a pool key (for the model its
/// `bidiGenerateContentSetup` names, when it names one) and remembers it for the Constrained
/// route: its key, its client token, its `expireTime`. Google's answer is passed back as is.
pub async fn mint(
    app: &Arc<App>,
    snap: &Arc<Snapshot>,
    caller: &Caller,
    req: Request<Incoming>,
    log: &mut RequestLog,
) -> Result<Reply, ProxyError> {
    let body = read_body(req, snap.config.server.max_body).await?;
    let value: Value = serde_json::from_slice(&body).map_err(|e| {
        ProxyError::bad_request(format!(
            "the body must be an AuthToken JSON object: {}",
            crate::excerpt::serde_error(&e)
        ))
    })?;
    if !value.is_object() {
        return Err(ProxyError::bad_request(
            "the body must be an AuthToken JSON object",
        ));
    }
    let model = match value
        .get("bidiGenerateContentSetup")
        .and_then(|s| s.get("model"))
        .and_then(Value::as_str)
    {
        Some(model) => {
            let model = clean_model_name(model)?.to_string();
            caller.check_model(&model)?;
            Some(model)
        }
        None => None,
    };
    log.model = model.clone();
    let call = Call {
        model: model.as_deref(),
        method: http::Method::POST,
        path_and_query: "/v1alpha/auth_tokens",
        body: Some(body),
        delivery: Delivery::Buffered,
        pinned: None::<Pinned<'_>>,
        native: None,
    };
    let served = proxy::execute(snap, call, log).await?;
    let Payload::Full(bytes) = served.body else {
        return Err(ProxyError::Internal(
            "auth_tokens answered as a stream".into(),
        ));
    };
    let now = SystemTime::now();
    if let Ok(answer) = serde_json::from_slice::<Value>(&bytes) {
        if let Some(name) = answer
            .get("name")
            .and_then(Value::as_str)
            .filter(|n| n.starts_with(TOKEN_PREFIX))
        {
            let expires = answer
                .get("expireTime")
                .and_then(Value::as_str)
                .and_then(crate::api::native::parse_rfc3339)
                .unwrap_or(now + TOKEN_TTL)
                // Never longer than Google's own maximum (20 hours) by a client's say-so.
                .min(now + Duration::from_secs(20 * 3600));
            app.affinity.insert(
                &token_entry(name),
                Pin {
                    key: served.lease.key.clone(),
                    owner: Arc::from(caller.token_name.as_deref().unwrap_or("")),
                    expires,
                    upstream: None,
                },
                now,
            );
        }
    }
    Ok(Reply::Done(crate::api::gemini::respond(
        bytes,
        served
            .content_type
            .unwrap_or_else(|| HeaderValue::from_static("application/json")),
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_setup_is_read_under_either_spelling_and_an_alias_rewrites_it_in_place() {
        for field in ["setup", "config"] {
            let text = format!(r#"{{"{field}": {{"model": "models/gemini-live-x", "x": 1}}}}"#);
            let (model, value) = parse_setup(text.as_bytes()).expect("a setup");
            assert_eq!(model, "gemini-live-x");
            let Message::Text(sent) =
                setup_for(&value, &Bytes::from(text.clone()), "gemini-live-y", true)
            else {
                panic!("a text message");
            };
            let sent: Value = serde_json::from_str(sent.as_str()).expect("json");
            assert_eq!(sent[field]["model"], "models/gemini-live-y");
            assert_eq!(sent[field]["x"], 1);
        }
        assert!(parse_setup(br#"{"clientContent": {}}"#).is_err());
        assert!(parse_setup(br#"{"setup": {}}"#).is_err());
    }
}
