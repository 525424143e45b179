//! Bodies: the one response body type, the handlers' answer (`Reply`), and reading a client's
//! request body within its limits (size, `server.body_timeout`, the process memory budget).
//!
//! The bottom of the HTTP side: it knows hyper's body types and `admission`'s budget, nothing
//! of routes, dialects or errors. Reading fails with a `BodyError`, which `error` turns into the
//! dialect's response (413, 408, 503, 400).

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;

use crate::admission;

/// Why a request body could not be read whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyError {
    /// Larger than `limit` (declared or while reading), or than the whole memory budget.
    TooLarge { limit: u64 },
    /// Did not arrive whole within `server.body_timeout`.
    Timeout { after: Duration },
    /// Other requests hold the memory budget right now.
    Busy,
    /// The connection failed while reading.
    Unreadable(String),
}

/// The body type of every response.
pub type Body = BoxBody<Bytes, Infallible>;

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed()
}

/// A handler's answer: finished, or a stream whose log line the relay will write.
pub enum Reply {
    Done(Response<Body>),
    Streaming(Response<Body>),
}

/// A JSON response.
pub fn json_response(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    json_bytes(status, value.to_string().into_bytes())
}

pub fn json_bytes(status: StatusCode, bytes: impl Into<bytes::Bytes>) -> Response<Body> {
    let mut response = Response::new(full(bytes.into()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// Reads a request body within `limit`: 413 before reading when Content-Length says it is too
/// big, and while reading when a chunked body grows past it. The body must arrive whole within
/// `server.body_timeout` (else 408), and its bytes are reserved against `server.memory_budget`
/// (a declared length before reading, a chunked body as it grows): 503 with `Retry-After` when
/// other requests hold the budget, 413 when this body alone is larger than all of it.
pub async fn read_body(req: Request<Incoming>, limit: u64) -> Result<Bytes, BodyError> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(BodyError::TooLarge { limit });
    }
    let read = collect_body(req.into_body(), limit, declared);
    match admission::body_timeout() {
        Some(after) => tokio::time::timeout(after, read)
            .await
            .unwrap_or(Err(BodyError::Timeout { after })),
        None => read.await,
    }
}

async fn collect_body(
    body: Incoming,
    limit: u64,
    declared: Option<u64>,
) -> Result<Bytes, BodyError> {
    if let Some(n) = declared {
        reserve_body(n)?;
    }
    let limit_usize = usize::try_from(limit).unwrap_or(usize::MAX);
    let capacity = declared.map_or(0, |n| usize::try_from(n).unwrap_or(0).min(limit_usize));
    // The common single-frame body is kept as it came, without a copy.
    let mut whole = Bytes::new();
    let mut growing: Option<bytes::BytesMut> = None;
    let mut body = Limited::new(body, limit_usize);
    while let Some(frame) = body.frame().await {
        let frame = match frame {
            Ok(frame) => frame,
            Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                return Err(BodyError::TooLarge { limit })
            }
            Err(e) => return Err(BodyError::Unreadable(e.to_string())),
        };
        let Ok(data) = frame.into_data() else {
            continue; // trailers
        };
        if declared.is_none() {
            reserve_body(data.len() as u64)?;
        }
        if let Some(buf) = growing.as_mut() {
            buf.extend_from_slice(&data);
        } else if whole.is_empty() {
            whole = data;
        } else {
            let mut buf = bytes::BytesMut::with_capacity(capacity.max(whole.len() + data.len()));
            buf.extend_from_slice(&whole);
            buf.extend_from_slice(&data);
            whole = Bytes::new();
            growing = Some(buf);
        }
    }
    Ok(growing.map_or(whole, bytes::BytesMut::freeze))
}

fn reserve_body(n: u64) -> Result<(), BodyError> {
    admission::reserve(n).map_err(|refusal| match refusal {
        admission::Refusal::TooBig { limit } => BodyError::TooLarge { limit },
        admission::Refusal::Busy => BodyError::Busy,
    })
}

/// A client's body passed on as it arrives (an upload), never held: at most `limit` bytes
/// (more ends it with `BodyError::TooLarge`), each frame within `idle` of the last (else
/// `BodyError::Timeout`). What went wrong on the client's side is kept in `fault`, so a
/// failed upstream exchange can be told apart from a client that sent too much or stalled.
pub struct Streamed {
    pub stream: futures_util::stream::BoxStream<'static, Result<Bytes, std::io::Error>>,
    /// Fires (or is dropped) when the body has ended, well or not.
    pub sent: tokio::sync::oneshot::Receiver<()>,
    pub fault: std::sync::Arc<std::sync::Mutex<Option<BodyError>>>,
}

impl Streamed {
    /// What the client did wrong, if the body ended because of it.
    pub fn fault_of(fault: &std::sync::Mutex<Option<BodyError>>) -> Option<BodyError> {
        fault
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

pub fn streamed(body: Incoming, limit: u64, idle: Duration) -> Streamed {
    use futures_util::StreamExt;
    let (done, sent) = tokio::sync::oneshot::channel::<()>();
    let fault = std::sync::Arc::new(std::sync::Mutex::new(None));
    struct State {
        body: Incoming,
        seen: u64,
        done: Option<tokio::sync::oneshot::Sender<()>>,
        fault: std::sync::Arc<std::sync::Mutex<Option<BodyError>>>,
        limit: u64,
        idle: Duration,
    }
    impl State {
        fn fail(&mut self, e: BodyError) -> std::io::Error {
            let text = format!("{e:?}");
            *self
                .fault
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(e);
            self.finish();
            std::io::Error::other(text)
        }
        fn finish(&mut self) {
            if let Some(done) = self.done.take() {
                let _ = done.send(());
            }
        }
    }
    let state = State {
        body,
        seen: 0,
        done: Some(done),
        fault: fault.clone(),
        limit,
        idle,
    };
    let stream = futures_util::stream::unfold(Some(state), |state| async move {
        let mut state = state?;
        loop {
            let frame = match tokio::time::timeout(state.idle, state.body.frame()).await {
                Err(_) => {
                    let after = state.idle;
                    let e = state.fail(BodyError::Timeout { after });
                    return Some((Err(e), None));
                }
                Ok(None) => {
                    state.finish();
                    return None;
                }
                Ok(Some(Err(e))) => {
                    let e = state.fail(BodyError::Unreadable(e.to_string()));
                    return Some((Err(e), None));
                }
                Ok(Some(Ok(frame))) => frame,
            };
            let Ok(data) = frame.into_data() else {
                continue; // trailers
            };
            state.seen += data.len() as u64;
            if state.seen > state.limit {
                let limit = state.limit;
                let e = state.fail(BodyError::TooLarge { limit });
                return Some((Err(e), None));
            }
            return Some((Ok(data), Some(state)));
        }
    })
    .boxed();
    Streamed {
        stream,
        sent,
        fault,
    }
}
