//! The direct transport's connections to Google: one worker's HTTP/1.1 connections to the one
//! origin of `upstream.base_url`, each carrying one call at a time, kept idle for reuse.
//!
//! It replaces hyper-util's legacy client, whose pool serves any number of origins: every call
//! hashed the origin (`Scheme` and `Authority`, byte by byte through SipHash) three times,
//! converted the URI to origin form and spawned a task to watch the connection become idle
//! again, about a tenth of the proxy's instructions per native call (callgrind). One origin
//! needs no key: the idle connections are a stack, the most recently used on top (warm, and
//! the least likely to have been closed by the server).
//!
//! A connection goes back to the stack when its answer's body has been read to the end
//! (`PooledBody`); one dropped mid-answer is closed. A request that a reused connection gives
//! back unsent (the server closed it as the request went out) is sent again on the next one,
//! at most once per idle connection; on a fresh connection it is `NotSent`. It owns no timeout
//! but the idle one: `Upstream::exchange` bounds the whole call.

use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderValue, Uri};
use http_body::{Body, Frame, SizeHint};
use hyper::client::conn::http1::SendRequest;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use tower_service::Service;

use super::{RequestBody, SendError};

/// How long a connection may sit idle before it is closed, and how many may.
const IDLE_FOR: Duration = Duration::from_secs(90);
const MAX_IDLE: usize = 256;
/// How often a worker's idle connections are swept for expired ones while the pool lives.
const SWEEP_EVERY: Duration = Duration::from_secs(30);

/// One worker's connections to the upstream origin.
#[derive(Clone)]
pub(super) struct ConnPool {
    inner: Arc<Inner>,
}

struct Inner {
    connector: HttpsConnector<HttpConnector>,
    /// `scheme://authority/`, what the connector dials.
    origin: Uri,
    /// The `Host` header: the authority, without the scheme's default port.
    host: HeaderValue,
    idle: Mutex<Vec<Idle>>,
    /// Whether the sweeper task has been started (on the first connection, on the worker's
    /// runtime: the pool is built outside any runtime).
    swept: std::sync::Once,
}

struct Idle {
    conn: SendRequest<RequestBody>,
    since: Instant,
}

impl ConnPool {
    pub fn new(
        connector: HttpsConnector<HttpConnector>,
        scheme: &http::uri::Scheme,
        authority: &http::uri::Authority,
    ) -> Result<ConnPool, String> {
        let origin = Uri::builder()
            .scheme(scheme.clone())
            .authority(authority.clone())
            .path_and_query("/")
            .build()
            .map_err(|e| format!("upstream.base_url is not a usable URL: {e}"))?;
        let default_port = match scheme.as_str() {
            "https" => Some(443),
            "http" => Some(80),
            _ => None,
        };
        let host = match authority.port_u16() {
            Some(port) if Some(port) == default_port => authority.host().to_string(),
            _ => authority.as_str().to_string(),
        };
        let host = HeaderValue::from_str(&host)
            .map_err(|e| format!("upstream.base_url's host is not a header value: {e}"))?;
        Ok(ConnPool {
            inner: Arc::new(Inner {
                connector,
                origin,
                host,
                idle: Mutex::new(Vec::new()),
                swept: std::sync::Once::new(),
            }),
        })
    }

    /// Sends `request` (its URI in origin form: path and query) on an idle connection, or a
    /// new one, and answers with the response head; its body hands the connection back.
    pub async fn send(
        &self,
        mut request: http::Request<RequestBody>,
    ) -> Result<http::Response<PooledBody>, SendError> {
        request
            .headers_mut()
            .insert(http::header::HOST, self.inner.host.clone());
        while let Some(mut conn) = self.inner.checkout() {
            match conn.try_send_request(request).await {
                Ok(answer) => return Ok(self.pooled(answer, conn)),
                Err(mut e) => match e.take_message() {
                    // Closed under the request: never written, try the next connection.
                    Some(unsent) => request = unsent,
                    None => return Err(broken(e.error())),
                },
            }
        }
        // Boxed: a connection being set up (TLS state included) is large, and most calls never
        // need one; inline, it would grow every call's future and each copy of it.
        let mut conn = Box::pin(self.connect()).await?;
        match conn.try_send_request(request).await {
            Ok(answer) => Ok(self.pooled(answer, conn)),
            Err(mut e) => {
                let text = describe("request error", e.error());
                match e.take_message() {
                    Some(_) => Err(SendError::NotSent(text)),
                    None => Err(SendError::Broken(text)),
                }
            }
        }
    }

    fn pooled(
        &self,
        answer: http::Response<hyper::body::Incoming>,
        conn: SendRequest<RequestBody>,
    ) -> http::Response<PooledBody> {
        answer.map(|body| {
            let mut body = PooledBody {
                body,
                conn: Some((conn, Arc::downgrade(&self.inner))),
            };
            // An answer without a body (a 204, a `Content-Length: 0`) is done already.
            if body.body.is_end_stream() {
                body.release();
            }
            body
        })
    }

    /// A new connection, its task spawned on the current worker's runtime.
    async fn connect(&self) -> Result<SendRequest<RequestBody>, SendError> {
        self.inner.swept.call_once(|| {
            let pool = Arc::downgrade(&self.inner);
            tokio::spawn(sweep(pool));
        });
        let io = self
            .inner
            .connector
            .clone()
            .call(self.inner.origin.clone())
            .await
            .map_err(|e| SendError::NotSent(describe("connect error", &*e)))?;
        let (mut conn, driver) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(|e| SendError::NotSent(describe("connect error", &e)))?;
        tokio::spawn(async move {
            // Its end (the server closed it, or the last handle went) is seen by the handles.
            let _ = driver.await;
        });
        std::future::poll_fn(|cx| conn.poll_ready(cx))
            .await
            .map_err(|e| SendError::NotSent(describe("connect error", &e)))?;
        Ok(conn)
    }
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Idle>> {
        // A panic while holding the lock leaves a plain Vec: still usable.
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The most recently used idle connection that can take a request now.
    fn checkout(&self) -> Option<SendRequest<RequestBody>> {
        let mut idle = self.lock();
        while let Some(entry) = idle.pop() {
            if entry.conn.is_ready() && entry.since.elapsed() < IDLE_FOR {
                return Some(entry.conn);
            }
        }
        None
    }

    fn put(&self, conn: SendRequest<RequestBody>) {
        let mut idle = self.lock();
        if idle.len() < MAX_IDLE {
            idle.push(Idle {
                conn,
                since: Instant::now(),
            });
        }
    }

    /// Drops the connections idle past `IDLE_FOR` or closed by the server.
    fn sweep(&self) {
        self.lock()
            .retain(|entry| !entry.conn.is_closed() && entry.since.elapsed() < IDLE_FOR);
    }
}

/// While the pool lives, sweeps its idle connections now and then, so a worker that stops
/// calling does not keep sockets open for ever.
async fn sweep(pool: Weak<Inner>) {
    loop {
        tokio::time::sleep(SWEEP_EVERY).await;
        match pool.upgrade() {
            Some(pool) => pool.sweep(),
            None => return,
        }
    }
}

/// An answer's body; read to its end, it hands its connection back to the pool.
pub struct PooledBody {
    body: hyper::body::Incoming,
    conn: Option<(SendRequest<RequestBody>, Weak<Inner>)>,
}

impl PooledBody {
    fn release(&mut self) {
        let Some((mut conn, pool)) = self.conn.take() else {
            return;
        };
        let Some(pool) = pool.upgrade() else {
            return;
        };
        if conn.is_ready() {
            pool.put(conn);
            return;
        }
        // The connection's task has not yet seen the answer's end: wait for it there.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if std::future::poll_fn(|cx| conn.poll_ready(cx)).await.is_ok() {
                    pool.put(conn);
                }
            });
        }
    }
}

impl Drop for PooledBody {
    /// A reader may stop at the last frame without polling for the end: the answer is whole,
    /// the connection reusable. One dropped mid-answer is not handed back (hyper closes it).
    fn drop(&mut self) {
        if self.body.is_end_stream() {
            self.release();
        }
    }
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.body).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => this.release(),
            // A broken answer leaves its connection to close.
            Poll::Ready(Some(Err(_))) => this.conn = None,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// A failure on a reused connection after the request may have gone out.
fn broken(e: &hyper::Error) -> SendError {
    SendError::Broken(describe("request error", e))
}

/// `what` and `e` with its source chain.
fn describe(what: &str, e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = format!("{what}: {e}");
    super::push_sources(&mut text, e);
    text
}
