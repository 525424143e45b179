//! The HTTP front end: binds the listening sockets, runs one worker thread per socket (each
//! with its own single-threaded runtime), accepts connections, runs hyper (HTTP/1.1 with
//! keep-alive and a header read timeout), enforces `max_body` and `body_timeout`, cuts a client
//! that stops reading for `write_timeout`, and drains gracefully on shutdown.
//!
//! Admission (`admission`): a connection beyond `max_connections` is served in refusal mode
//! (one request, probes answered, everything else a 503) or, beyond a small reserve, closed at
//! once; a request beyond `max_in_flight` gets a fast 503 with `Retry-After` before its body is
//! read (`/livez`, `/readyz` and `/health` are exempt); a failing `accept()` backs off
//! exponentially instead of spinning.
//!
//! Connections are served `with_upgrades()`: the Live API's WebSocket (`api::live`) takes its
//! connection over after the 101 and runs as a session the shutdown waits for
//! (`Lifecycle::sessions`); connection tasks are tracked with a `TaskTracker` (hyper-util's
//! graceful watcher cannot watch an upgradeable connection) and told to finish on stop.
//!
//! `handle` is where every request starts: it loads the config snapshot once, routes, applies
//! the access rules, calls the route's handler and turns any `ProxyError` into a response in
//! the route's dialect. Nothing below this module sees a raw connection.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{header, Request, Response};
use http_body::Frame;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::oneshot;

use crate::access;
use crate::admission;
use crate::api;
use crate::body::{Body, Reply};
use crate::cors;
use crate::error::ProxyError;
use crate::request_log;
use crate::request_log::RequestLog;
use crate::router::{self, Gate, Route};
use crate::state::App;

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
            Ok(listener) => serve(listener, app, index).await,
            Err(e) => tracing::error!(worker = index, error = %e, "cannot listen on a worker"),
        }
    });
    // Streams cut at shutdown may leave tasks behind; do not wait for them.
    runtime.shutdown_timeout(std::time::Duration::from_millis(200));
}

/// Accepts connections until the lifecycle says stop, then waits for in-flight requests for
/// `shutdown_grace`, then ends the streams still open and returns.
pub async fn serve(listener: TcpListener, app: Arc<App>, worker: usize) {
    // Every connection's task, to wait for at shutdown. (hyper-util's `GracefulShutdown` cannot
    // watch a connection that allows upgrades, which the Live API's WebSocket needs.)
    let connections = tokio_util::task::TaskTracker::new();
    let mut backoff = admission::Backoff::default();
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => {
                    backoff.succeeded();
                    pair
                }
                Err(e) => {
                    // Out of file descriptors and similar: back off (5 ms doubling to 1 s)
                    // instead of spinning; the pending connection waits in the backlog.
                    let wait = backoff.failed();
                    if backoff.failures().is_power_of_two() {
                        tracing::warn!(error = %e, failures = backoff.failures(), wait_ms = wait.as_millis() as u64, "accept failed; backing off");
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = app.lifecycle.stopping().cancelled() => break,
                    }
                    continue;
                }
            },
            _ = app.lifecycle.stopping().cancelled() => break,
        };
        let snap = app.snapshot();
        let server = &snap.config.server;
        let (slot, overflow) = match admission::connection(server.max_connections) {
            admission::Connection::Normal(slot) => (slot, false),
            admission::Connection::Overflow(slot) => {
                warn_full(server.max_connections);
                (slot, true)
            }
            admission::Connection::Refused => {
                warn_full(server.max_connections);
                tracing::debug!(%peer, "connection refused: over max_connections and its reserve");
                drop(stream);
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let mut builder = http1::Builder::new();
        builder.timer(TokioTimer::new());
        if overflow {
            // One request, answered at once: probes as usual, anything else a 503.
            builder
                .header_read_timeout(
                    server
                        .header_timeout
                        .min(admission::OVERFLOW_HEADER_TIMEOUT),
                )
                .keep_alive(false);
        } else {
            builder
                .header_read_timeout(server.header_timeout)
                .keep_alive(true);
        }
        let io = TokioIo::new(WriteDeadline::new(stream, server.write_timeout));
        let conn_app = app.clone();
        let service = service_fn(move |req: Request<Incoming>| {
            let app = conn_app.clone();
            async move {
                if overflow && !always_admitted(&router::route(req.method(), req.uri().path())) {
                    return Ok::<_, Infallible>(refuse_overloaded(
                        &app,
                        &req,
                        "too many connections",
                    ));
                }
                Ok::<_, Infallible>(handle(app, req, peer, worker).await)
            }
        });
        // Upgrades: the Live API's WebSocket (`api::live`) takes the connection over after its
        // 101; every other route answers in HTTP as before.
        let conn = builder.serve_connection(io, service).with_upgrades();
        let stopping = app.lifecycle.stopping().clone();
        connections.spawn(async move {
            // Counted until the connection is gone.
            let _slot = slot;
            let mut conn = std::pin::pin!(conn);
            let ended = tokio::select! {
                ended = conn.as_mut() => ended,
                _ = stopping.cancelled() => {
                    // Requests in flight finish; an idle keep-alive connection closes now.
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = ended {
                tracing::debug!(error = %e, %peer, "connection ended with an error");
            }
        });
    }
    drop(listener);

    let grace = app.snapshot().config.server.shutdown_grace;
    tracing::info!(grace_s = grace.as_secs_f64(), "stopped accepting; draining");
    connections.close();
    // Live API sessions (upgraded connections) too; they end with the drain, like streams.
    let sessions = app.lifecycle.sessions();
    sessions.close();
    let shutdown = async {
        connections.wait().await;
        sessions.wait().await;
    };
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

/// Probes stay cheap and always answer, over any admission limit: a busy proxy is not a dead
/// one, and a kubelet must not restart it for being busy.
fn always_admitted(route: &Route) -> bool {
    matches!(route, Route::Health | Route::Livez | Route::Readyz)
}

/// Says, at most every 10 s, that connections are at `max_connections`.
fn warn_full(max_connections: usize) {
    static LAST: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let last = LAST.load(std::sync::atomic::Ordering::Relaxed);
    if now >= last + 10
        && LAST
            .compare_exchange(
                last,
                now,
                std::sync::atomic::Ordering::Relaxed,
                std::sync::atomic::Ordering::Relaxed,
            )
            .is_ok()
    {
        tracing::warn!(
            max_connections,
            open = admission::connections(),
            "at max_connections: new connections get a 503 or are closed"
        );
    }
}

/// The fast 503 for a request refused at admission, in its route's dialect.
fn refuse_overloaded(app: &App, req: &Request<Incoming>, what: &'static str) -> Response<Body> {
    let route = router::route(req.method(), req.uri().path());
    let mut log = RequestLog::new(
        req.method().clone(),
        logged_path(&route, req.uri().path()),
        route.name(),
    );
    log.timeline = Some(app.timeline.clone());
    log.id = request_log::request_id(req.headers());
    let error = ProxyError::Overloaded { what };
    log.failed(&error);
    let mut response = error.into_response(route.dialect());
    request_log::stamp(&mut response, &log.id, route.dialect());
    log.emit(response.status());
    response
}

/// A connection's IO, whose writes fail after `timeout` without progress: a client that stops
/// reading (its receive window full) is cut off, which ends the response and so frees the
/// stream behind it.
struct WriteDeadline<T> {
    io: T,
    timeout: std::time::Duration,
    /// Set while writes are pending; cleared when one makes progress.
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<T> WriteDeadline<T> {
    fn new(io: T, timeout: std::time::Duration) -> Self {
        WriteDeadline {
            io,
            timeout,
            stalled: None,
        }
    }

    fn check<R>(&mut self, cx: &mut Context<'_>, poll: Poll<io::Result<R>>) -> Poll<io::Result<R>> {
        if poll.is_ready() {
            self.stalled = None;
            return poll;
        }
        let timeout = self.timeout;
        let stalled = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        match stalled.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "the client accepted no bytes for {}s",
                    timeout.as_secs_f64()
                ),
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for WriteDeadline<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for WriteDeadline<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.io).poll_write(cx, buf);
        self.check(cx, poll)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.check(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.io).poll_flush(cx);
        self.check(cx, poll)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.io).poll_shutdown(cx);
        self.check(cx, poll)
    }
}

/// The path as the request log shows it: an upload session's id is its credential, never
/// logged.
fn logged_path<'a>(route: &Route, path: &'a str) -> &'a str {
    match route {
        Route::UploadSession(_) => "/upload/session/…",
        _ => path,
    }
}

/// Every request starts here.
async fn handle(
    app: Arc<App>,
    req: Request<Incoming>,
    peer: SocketAddr,
    worker: usize,
) -> Response<Body> {
    let snap = app.snapshot();
    let route = router::for_client(
        router::route(req.method(), req.uri().path()),
        req.headers(),
        req.uri().query(),
    );
    let dialect = route.dialect();
    // A listed web page's request to the client API is marked readable at the end (its
    // preflight is answered in `serve_route`, past the IP rules).
    let cors = cors::allowed(&snap.config.server.cors_origins, req.headers())
        .filter(|_| route.is_client_api());
    let slot = if always_admitted(&route) {
        None
    } else {
        match admission::request(snap.config.server.max_in_flight) {
            Some(slot) => Some(slot),
            None => {
                let mut refused = refuse_overloaded(&app, &req, "too many requests in flight");
                if let Some(origin) = cors {
                    cors::mark(refused.headers_mut(), origin);
                }
                return refused;
            }
        }
    };
    let mut log = RequestLog::new(
        req.method().clone(),
        logged_path(&route, req.uri().path()),
        route.name(),
    );
    log.timeline = Some(app.timeline.clone());
    log.worker = worker;
    log.id = request_log::request_id(req.headers());

    // The request's share of the memory budget is held until its handler is done.
    let scope = admission::Scope::new(
        snap.config.server.memory_budget,
        snap.config.server.body_timeout,
    );
    let result = scope
        .run(serve_route(&app, &snap, route, req, peer, &mut log))
        .await;
    let mut response = match result {
        Ok(Reply::Done(response)) => {
            log.emit(response.status());
            response
        }
        // The relay owns the log line and writes it when the stream ends.
        Ok(Reply::Streaming(response)) => response,
        Err(error) => {
            log.failed(&error);
            let response = error.into_response(dialect);
            log.emit(response.status());
            response
        }
    };
    request_log::stamp(&mut response, &log.id, dialect);
    if let Some(origin) = cors {
        cors::mark(response.headers_mut(), origin);
    }
    match (slot, response.extensions().get::<admission::Handover>()) {
        // A WebSocket session (`api::live`): in flight until the session ends.
        (Some(slot), Some(handover)) => {
            handover.give(slot);
            response
        }
        // In flight until the last byte of the answer (a stream's end) is written or dropped.
        (Some(slot), None) => response.map(|body| SlotBody { body, _slot: slot }.boxed()),
        (None, _) => response,
    }
}

/// A response body that holds its request's place in `max_in_flight` until it is dropped.
struct SlotBody {
    body: Body,
    _slot: admission::Slot,
}

impl http_body::Body for SlotBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
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
    // A listed web page's preflight for a client API route: no credential comes with one.
    if let Some(method) = cors::preflight_method(req.method(), req.headers()) {
        let origin = cors::allowed(&snap.config.server.cors_origins, req.headers());
        if let Some(origin) =
            origin.filter(|_| router::route(&method, req.uri().path()).is_client_api())
        {
            log.route = "preflight";
            return Ok(Reply::Done(cors::preflight(origin, req.headers())));
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
            .admits_session(req.headers(), &auth.admin_tokens, origin.local)
            .await;
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
