//! The HTTP front end: binds the listening sockets, runs one worker thread per socket (each
//! with its own single-threaded runtime), accepts connections, runs hyper (HTTP/1.1 with
//! keep-alive and a header read timeout), enforces `max_body`, and drains gracefully on
//! shutdown.
//!
//! `handle` is where every request starts: it loads the config snapshot once, routes, applies
//! the access rules, calls the route's handler and turns any `ProxyError` into a response in
//! the route's dialect. Nothing below this module sees a raw connection.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{header, Request, Response};
use http_body::Frame;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::{mpsc, oneshot};

use crate::access;
use crate::api;
use crate::error::ProxyError;
use crate::request_log::RequestLog;
use crate::router::{self, Gate, Route};
use crate::state::App;

/// The body type of every response.
pub type Body = BoxBody<Bytes, Infallible>;

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed()
}

/// A body fed by a channel: each message is written to the client as it arrives. When the
/// client goes away hyper drops the body, which closes the channel and tells the sender.
pub fn channel_body(rx: mpsc::Receiver<Bytes>) -> Body {
    ChannelBody(rx).boxed()
}

struct ChannelBody(mpsc::Receiver<Bytes>);

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|m| m.map(|b| Ok(Frame::data(b))))
    }
}

/// Binds `listen` once per worker. With more than one, every socket has `SO_REUSEPORT` and
/// the kernel spreads new connections over them; a port of 0 is chosen by the first bind.
pub async fn bind(listen: &str, workers: usize) -> io::Result<Vec<std::net::TcpListener>> {
    let mut last = None;
    for addr in tokio::net::lookup_host(listen).await? {
        match bind_group(addr, workers) {
            Ok(listeners) => return Ok(listeners),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no address to bind")))
}

fn bind_group(addr: SocketAddr, workers: usize) -> io::Result<Vec<std::net::TcpListener>> {
    // Without SO_REUSEPORT there is one socket, and so one worker.
    let workers = if cfg!(unix) { workers.max(1) } else { 1 };
    if workers > 1 && addr.port() != 0 {
        // SO_REUSEPORT would let a second proxy started on the same port share it silently:
        // a plain bind first fails on a port anyone holds, as a single socket's bind would.
        drop(bound_socket(addr, false)?);
    }
    let first = listen_socket(addr, workers > 1)?;
    let addr = first.local_addr()?;
    let mut listeners = vec![first];
    for _ in 1..workers {
        listeners.push(listen_socket(addr, true)?);
    }
    Ok(listeners)
}

fn listen_socket(addr: SocketAddr, reuse_port: bool) -> io::Result<std::net::TcpListener> {
    // Registered with the calling runtime here; `into_std` releases it for a worker's runtime.
    bound_socket(addr, reuse_port)?
        .listen(LISTEN_BACKLOG)?
        .into_std()
}

fn bound_socket(addr: SocketAddr, reuse_port: bool) -> io::Result<TcpSocket> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    // As tokio's own `bind`: a restarted proxy can bind while old connections linger.
    socket.set_reuseaddr(true)?;
    #[cfg(unix)]
    socket.set_reuseport(reuse_port)?;
    #[cfg(not(unix))]
    let _ = reuse_port;
    socket.bind(addr)?;
    Ok(socket)
}

/// Pending connections the kernel queues per listening socket.
const LISTEN_BACKLOG: u32 = 1024;

/// Serves `listeners`, each on its own worker thread running a single-threaded runtime: a
/// request, its upstream call (through that worker's connection pool) and its stream relay all
/// run on the thread that accepted the connection, so serving a request never wakes another
/// thread. Returns when every worker has drained (see `serve`).
pub async fn serve_workers(listeners: Vec<std::net::TcpListener>, app: Arc<App>) {
    let mut finished = Vec::with_capacity(listeners.len());
    for (index, listener) in listeners.into_iter().enumerate() {
        let (done, finished_rx) = oneshot::channel::<()>();
        let app = app.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("worker-{index}"))
            .spawn(move || {
                worker(index, listener, app);
                let _ = done.send(());
            });
        match spawned {
            Ok(_) => finished.push(finished_rx),
            Err(e) => tracing::error!(worker = index, error = %e, "cannot start a worker thread"),
        }
    }
    for worker in finished {
        // An error means the worker thread ended without saying so (it panicked): done too.
        let _ = worker.await;
    }
}

fn worker(index: usize, listener: std::net::TcpListener, app: Arc<App>) {
    crate::upstream::set_worker(index);
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            tracing::error!(worker = index, error = %e, "cannot start a worker's runtime");
            return;
        }
    };
    runtime.block_on(async move {
        match TcpListener::from_std(listener) {
            Ok(listener) => serve(listener, app).await,
            Err(e) => tracing::error!(worker = index, error = %e, "cannot listen on a worker"),
        }
    });
    // Streams cut at shutdown may leave tasks behind; do not wait for them.
    runtime.shutdown_timeout(std::time::Duration::from_millis(200));
}

/// Accepts connections until the lifecycle says stop, then waits for in-flight requests for
/// `shutdown_grace`, then ends the streams still open and returns.
pub async fn serve(listener: TcpListener, app: Arc<App>) {
    let graceful = GracefulShutdown::new();
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors and similar: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = app.lifecycle.stopping().cancelled() => break,
        };
        let _ = stream.set_nodelay(true);
        let snap = app.snapshot();
        let mut builder = http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(snap.config.server.header_timeout)
            .keep_alive(true);
        let conn_app = app.clone();
        let service = service_fn(move |req| {
            let app = conn_app.clone();
            async move { Ok::<_, Infallible>(handle(app, req, peer).await) }
        });
        let conn = builder.serve_connection(TokioIo::new(stream), service);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, %peer, "connection ended with an error");
            }
        });
    }
    drop(listener);

    let grace = app.snapshot().config.server.shutdown_grace;
    tracing::info!(grace_s = grace.as_secs_f64(), "stopped accepting; draining");
    let shutdown = graceful.shutdown();
    tokio::pin!(shutdown);
    tokio::select! {
        _ = &mut shutdown => tracing::info!("all connections closed"),
        _ = tokio::time::sleep(grace) => {
            tracing::warn!("grace period over; ending open streams");
            app.lifecycle.begin_drain();
            if tokio::time::timeout(std::time::Duration::from_secs(2), &mut shutdown).await.is_err() {
                tracing::warn!("some connections did not close in time");
            }
        }
    }
}

/// Every request starts here.
async fn handle(app: Arc<App>, req: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
    let snap = app.snapshot();
    let route = router::route(req.method(), req.uri().path());
    let dialect = route.dialect();
    let mut log = RequestLog::new(req.method().clone(), req.uri().path(), route.name());
    log.timeline = Some(app.timeline.clone());

    let result = serve_route(&app, &snap, route, req, peer, &mut log).await;
    match result {
        Ok(Reply::Done(response)) => {
            log.emit(response.status());
            response
        }
        // The relay owns the log line and writes it when the stream ends.
        Ok(Reply::Streaming(response)) => response,
        Err(error) => {
            log.error = Some(error.to_string());
            let response = error.into_response(dialect);
            log.emit(response.status());
            response
        }
    }
}

/// A handler's answer: finished, or a stream whose log line the relay will write.
pub enum Reply {
    Done(Response<Body>),
    Streaming(Response<Body>),
}

async fn serve_route(
    app: &Arc<App>,
    snap: &Arc<crate::state::Snapshot>,
    route: Route,
    req: Request<Incoming>,
    peer: SocketAddr,
    log: &mut RequestLog,
) -> Result<Reply, ProxyError> {
    let gate = match route {
        Route::Metrics if !snap.config.server.metrics_public => Gate::Admin,
        _ => route.gate(),
    };
    let origin = access::origin(peer.ip(), req.headers(), &snap.config.server);
    let ip = origin.ip;
    if gate != Gate::Probe {
        let verdict = access::check_ip(ip, &snap.config.access);
        if !verdict.allowed {
            tracing::debug!(%ip, rule = %verdict.rule, "address refused");
            return Err(ProxyError::IpDenied);
        }
    }
    match &route {
        Route::NotFound(_) => return Err(ProxyError::not_found("unknown path")),
        Route::MethodNotAllowed(_) => return Err(ProxyError::MethodNotAllowed),
        _ => {}
    }
    let auth = &snap.config.auth;
    let session = gate == Gate::Admin
        && app
            .sessions
            .admits(req.headers(), &auth.admin_tokens, origin.local);
    let caller = if session && crate::dashboard::same_site(req.method(), req.headers()) {
        access::Caller::admin_session(&origin)
    } else {
        let limit = snap.config.access.max_token_failures;
        if matches!(gate, Gate::Client | Gate::Admin) {
            if let Some(retry_after) = app.lockout.wait(ip, origin.loopback_peer, limit) {
                return Err(ProxyError::LockedOut { retry_after });
            }
        }
        let authenticated = access::authenticate(
            gate,
            route.dialect(),
            req.headers(),
            req.uri().query(),
            auth,
            &origin,
        );
        let caller = match authenticated {
            // A session cookie alone does not authorise a state change (CSRF); an admin
            // token in the request still does.
            Err(_) if session => return Err(ProxyError::CrossSite),
            Err(ProxyError::Unauthorized) => {
                app.lockout.failed(ip, origin.loopback_peer, limit);
                return Err(ProxyError::Unauthorized);
            }
            other => other?,
        };
        // With no admin tokens, a local client is admin without a credential: a web page open
        // in a browser on this machine must not be able to use that (CSRF against localhost).
        if gate == Gate::Admin
            && caller.token_name.is_none()
            && !crate::dashboard::same_site(req.method(), req.headers())
            && from_another_site(req.headers())
        {
            return Err(ProxyError::CrossSite);
        }
        caller
    };
    log.token = caller.token_name.clone();
    api::dispatch(app, snap, route, req, caller, log).await
}

/// Whether a browser says this request comes from another site's page: `Sec-Fetch-Site` other
/// than same-origin or a direct navigation, or an `Origin` whose host is not the one addressed.
/// Non-browser clients (curl, SDKs, Prometheus) send neither header.
fn from_another_site(headers: &http::HeaderMap) -> bool {
    let fetch_site = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok());
    if fetch_site.is_some_and(|v| !matches!(v, "same-origin" | "none")) {
        return true;
    }
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let origin_host = origin
        .split_once("://")
        .map_or(origin, |(_, rest)| rest)
        .trim_end_matches('/');
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    host != Some(origin_host)
}

/// Reads a request body within `limit`: 413 before reading when Content-Length says it is too
/// big, and while reading when a chunked body grows past it.
pub async fn read_body(req: Request<Incoming>, limit: u64) -> Result<Bytes, ProxyError> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(ProxyError::PayloadTooLarge { limit });
    }
    let limit_usize = usize::try_from(limit).unwrap_or(usize::MAX);
    match Limited::new(req.into_body(), limit_usize).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            Err(ProxyError::PayloadTooLarge { limit })
        }
        Err(e) => Err(ProxyError::bad_request(format!(
            "could not read the request body: {e}"
        ))),
    }
}
