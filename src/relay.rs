//! Relays an upstream stream to the client chunk by chunk, never buffering it whole.
//!
//! One task per stream reads the upstream body and writes to the client's body channel. It
//! translates Gemini SSE to OpenAI chunks on `/v1` (to Responses API events on `/v1/responses`,
//! whose completed response it then stores when asked; or copies bytes untouched on `/v1beta`),
//! sends SSE comment heartbeats on `/v1` while the upstream is silent, ends the stream with an
//! error event when the upstream fails, falls silent beyond `idle_timeout`, or the server's
//! grace period runs out, and drops the upstream request the moment the client goes away.
//! The stream's lease is reported to the pool exactly once, when the stream ends (the attempt
//! loop reports nothing at a stream's headers): success for a clean end, transient failure for
//! a broken connection or an idle timeout, and for an error Google sends inside the 200 stream
//! (on `/v1beta` too, where the bytes still reach the client untouched) what `classify` makes of
//! it. A stream cut by the client leaving or by shutdown says nothing about the key: its lease
//! is handed back. The last `usageMetadata` seen is recorded when the stream ends.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use http::{header, HeaderValue, Response, StatusCode};
use tokio::sync::mpsc;

use crate::classify::{classify, classify_event};
use crate::pool::{Lease, Outcome};
use crate::request_log::RequestLog;
use crate::server::{channel_body, Body};
use crate::sse::{Bracket, JsonDepth, SseItem, SseParser};
use crate::state::{App, Snapshot};
use crate::stored_responses::Ticket;
use crate::translate::responses::ResponsesStream;
use crate::translate::{self, StreamTranslator, TranslateError};
use crate::usage::{self, Tokens};

/// What the relay does with upstream bytes.
pub enum Shape {
    /// Gemini SSE in, OpenAI chunks out.
    OpenAi(Box<StreamTranslator>),
    /// Bytes out as they came in (`/v1beta`); `sse` tells the error-event framing.
    Passthrough { sse: bool },
    /// Gemini SSE in, Responses API events out (issue #17); a completed response is stored
    /// when `store` holds its ticket.
    Responses {
        stream: Box<ResponsesStream>,
        store: Option<Ticket>,
    },
}

/// Starts relaying `response` and returns the client's response without waiting for the
/// upstream: the relay gets one turn of the scheduler first, so that an event which arrived
/// with the upstream's headers is already in the body channel when hyper writes our headers,
/// and both leave in one write (one packet and one client wake-up less before the first
/// byte). A stream with nothing yet is not waited for.
pub async fn start(
    app: Arc<App>,
    snap: Arc<Snapshot>,
    lease: Lease,
    response: reqwest::Response,
    shape: Shape,
    log: RequestLog,
    content_type: HeaderValue,
) -> Response<Body> {
    let (tx, rx) = mpsc::channel::<Bytes>(32);
    tokio::spawn(run(app, snap, lease, response, shape, log, tx));
    tokio::task::yield_now().await;
    let mut out = Response::new(channel_body(rx));
    let headers = out.headers_mut();
    headers.insert(header::CONTENT_TYPE, content_type);
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    out
}

/// How the stream ended, for the log line.
enum End {
    Complete,
    ClientGone,
    Failed(String),
}

/// The stream's lease until its outcome is reported: exactly once, by `settle`, or handed back
/// (abandoned) if the relay ends without one (the task dropped).
struct Unsettled {
    snap: Arc<Snapshot>,
    lease: Option<Lease>,
}

impl Unsettled {
    /// Reports `outcome` for the lease, or hands it back when there is none.
    fn settle(&mut self, outcome: Option<Outcome>) {
        let Some(lease) = self.lease.take() else {
            return;
        };
        match outcome {
            Some(outcome) => self.snap.pool.report(&lease, &outcome, Instant::now()),
            None => self.snap.pool.abandon(&lease),
        }
    }
}

impl Drop for Unsettled {
    fn drop(&mut self) {
        self.settle(None);
    }
}

fn transient(message: &str) -> Outcome {
    Outcome::Transient {
        reason: message.to_string(),
    }
}

async fn run(
    app: Arc<App>,
    snap: Arc<Snapshot>,
    lease: Lease,
    response: reqwest::Response,
    mut shape: Shape,
    mut log: RequestLog,
    tx: mpsc::Sender<Bytes>,
) {
    let idle = snap.upstream.idle_timeout;
    let heartbeat = match shape {
        Shape::OpenAi(_) | Shape::Responses { .. } => snap.upstream.heartbeat,
        Shape::Passthrough { .. } => None,
    };
    let mut upstream = response.bytes_stream();
    let mut parser = SseParser::new();
    let mut watch = Watch::default();
    let mut last_data = Instant::now();
    let mut next_beat = heartbeat.map(|d| tokio::time::Instant::now() + d);
    let far = Duration::from_secs(365 * 24 * 3600);
    let mut unsettled = Unsettled {
        snap: snap.clone(),
        lease: Some(lease.clone()),
    };
    // What the stream's end means for the key; `None` (client gone, shutdown): nothing.
    let mut verdict: Option<Outcome> = None;

    let end = loop {
        let beat_at = next_beat.unwrap_or_else(|| tokio::time::Instant::now() + far);
        let idle_at = tokio::time::Instant::from_std(last_data + idle);
        tokio::select! {
            biased;
            _ = tx.closed() => break End::ClientGone,
            _ = app.lifecycle.draining().cancelled() => {
                let event = error_event(&shape, "the server is shutting down; the stream was cut short", 503);
                let _ = tx.send(event).await;
                break End::Failed("server shutting down".into());
            }
            chunk = upstream.next() => match chunk {
                None => {
                    let tail = finish(&mut shape, &mut parser, &mut watch);
                    in_stream_error(&lease, &mut watch, &mut log, &mut verdict);
                    if let Shape::OpenAi(translator) = &mut shape {
                        app.signatures.remember(translator.take_signatures());
                    }
                    // Responses API (issue #17): signatures cached, the response stored.
                    if let Shape::Responses { stream, store } = &mut shape {
                        app.signatures.remember(stream.take_signatures());
                        if let (Some(ticket), Some((response, output))) =
                            (store.take(), stream.take_finished())
                        {
                            app.stored_responses.keep(ticket, &response, &output);
                        }
                    }
                    match tail {
                        Ok(bytes) => {
                            // A clean end: the key did its part, whether or not the client
                            // takes the tail.
                            verdict.get_or_insert(Outcome::Success);
                            if !bytes.is_empty() && tx.send(bytes).await.is_err() {
                                break End::ClientGone;
                            }
                            break End::Complete;
                        }
                        Err(e) => break fail_in_stream(&shape, &tx, e, &mut verdict).await,
                    }
                }
                Some(Err(e)) => {
                    let message = format!("the upstream stream broke: {e}");
                    verdict.get_or_insert_with(|| transient(&message));
                    let _ = tx.send(error_event(&shape, &message, 502)).await;
                    break End::Failed(message);
                }
                Some(Ok(bytes)) => {
                    last_data = Instant::now();
                    if let Some(d) = heartbeat {
                        next_beat = Some(tokio::time::Instant::now() + d);
                    }
                    let translated = translate_chunk(&mut shape, &mut parser, &mut watch, bytes);
                    in_stream_error(&lease, &mut watch, &mut log, &mut verdict);
                    match translated {
                        Ok(out) => {
                            if !out.is_empty() && tx.send(out).await.is_err() {
                                break End::ClientGone;
                            }
                        }
                        Err(e) => break fail_in_stream(&shape, &tx, e, &mut verdict).await,
                    }
                }
            },
            _ = tokio::time::sleep_until(beat_at), if next_beat.is_some() => {
                if tx.send(Bytes::from_static(b": keep-alive\n\n")).await.is_err() {
                    break End::ClientGone;
                }
                next_beat = heartbeat.map(|d| tokio::time::Instant::now() + d);
            }
            _ = tokio::time::sleep_until(idle_at) => {
                let message = format!("the upstream was silent for {}s; stream ended", idle.as_secs());
                verdict.get_or_insert_with(|| transient(&message));
                let _ = tx.send(error_event(&shape, &message, 504)).await;
                break End::Failed(message);
            }
        }
    };

    unsettled.settle(verdict);
    // Gemini answered, whatever happened since: the request and its last usage count.
    snap.pool
        .record_usage(&lease, log.token.as_deref(), watch.seen.usage);
    match end {
        End::Complete => {}
        End::ClientGone => log.error = Some("client disconnected".into()),
        End::Failed(message) => log.error = Some(message),
    }
    log.emit(StatusCode::OK);
}

/// Feeds one upstream chunk through the shape.
fn translate_chunk(
    shape: &mut Shape,
    parser: &mut SseParser,
    watch: &mut Watch,
    bytes: Bytes,
) -> Result<Bytes, TranslateError> {
    match shape {
        Shape::Passthrough { sse: true } => {
            for item in parser.push(&bytes) {
                watch.passthrough_event(item_bytes(&item));
            }
            Ok(bytes)
        }
        Shape::Passthrough { sse: false } => {
            watch.array.push(&bytes, &mut watch.seen);
            Ok(bytes)
        }
        Shape::OpenAi(translator) => {
            let mut out = Vec::new();
            for item in parser.push(&bytes) {
                watch.seen.usage(item_bytes(&item));
                out.extend_from_slice(&on_item(translator, item)?);
            }
            Ok(Bytes::from(out))
        }
        Shape::Responses { stream, .. } => {
            let mut out = Vec::new();
            for item in parser.push(&bytes) {
                watch.seen.usage(item_bytes(&item));
                out.extend_from_slice(&stream.on_event(item_bytes(&item))?);
            }
            Ok(Bytes::from(out))
        }
    }
}

fn item_bytes(item: &SseItem) -> &[u8] {
    match item {
        SseItem::Data(d) | SseItem::Bare(d) => d,
    }
}

fn on_item(translator: &mut StreamTranslator, item: SseItem) -> Result<Bytes, TranslateError> {
    match item {
        SseItem::Data(data) => translator.on_event(&data),
        // Unframed JSON in a stream is how Google reports errors mid-stream.
        SseItem::Bare(raw) => translator.on_event(&raw),
    }
}

/// The upstream ended: whatever the parser still holds, then the translator's tail.
fn finish(
    shape: &mut Shape,
    parser: &mut SseParser,
    watch: &mut Watch,
) -> Result<Bytes, TranslateError> {
    match shape {
        Shape::Passthrough { sse: true } => {
            for item in parser.finish() {
                watch.passthrough_event(item_bytes(&item));
            }
            Ok(Bytes::new())
        }
        Shape::Passthrough { sse: false } => Ok(Bytes::new()),
        Shape::OpenAi(translator) => {
            let mut out = Vec::new();
            for item in parser.finish() {
                watch.seen.usage(item_bytes(&item));
                out.extend_from_slice(&on_item(translator, item)?);
            }
            if !translator.has_output() {
                return Err(TranslateError::EmptyAnswer {
                    message: "Gemini ended the stream without an answer (blocked, thoughts only, \
                              or the token limit was reached before any text)"
                        .into(),
                });
            }
            out.extend_from_slice(&translator.finish());
            Ok(Bytes::from(out))
        }
        Shape::Responses { stream, .. } => {
            let mut out = Vec::new();
            for item in parser.finish() {
                watch.seen.usage(item_bytes(&item));
                out.extend_from_slice(&stream.on_event(item_bytes(&item))?);
            }
            out.extend_from_slice(&stream.finish()?);
            Ok(Bytes::from(out))
        }
    }
}

/// What the relay learns from the events it passes on: the last `usageMetadata` and, on
/// passthrough streams (whose bytes go out untouched), the first Google error inside the 200.
#[derive(Default)]
struct Watch {
    seen: Seen,
    /// Splits the JSON-array stream (no `alt=sse`) into its elements.
    array: ArrayItems,
}

#[derive(Default)]
struct Seen {
    usage: Option<Tokens>,
    /// An error found in a passthrough stream, not yet reported.
    error: Option<Outcome>,
    /// Only the first error counts: Google ends the stream after it.
    errored: bool,
}

impl Seen {
    fn usage(&mut self, event: &[u8]) {
        if let Some(t) = usage::from_json(event) {
            self.usage = Some(t);
        }
    }

    fn passthrough_event(&mut self, event: &[u8]) {
        if !self.errored {
            if let Some(outcome) = classify_event(event) {
                self.errored = true;
                self.error = Some(outcome);
                return;
            }
        }
        self.usage(event);
    }
}

impl Watch {
    fn passthrough_event(&mut self, event: &[u8]) {
        self.seen.passthrough_event(event);
    }
}

/// An error found inside a passthrough stream (the client got its bytes) becomes the stream's
/// verdict, reported when the stream ends.
fn in_stream_error(
    lease: &Lease,
    watch: &mut Watch,
    log: &mut RequestLog,
    verdict: &mut Option<Outcome>,
) {
    if let Some(outcome) = watch.seen.error.take() {
        tracing::debug!(key = %lease.key, model = %lease.model, outcome = outcome.class(), "error inside a passthrough stream");
        log.error = Some(format!(
            "upstream error inside the stream: {}",
            outcome.class()
        ));
        verdict.get_or_insert(outcome);
    }
}

/// The elements of Gemini's JSON-array stream, as they complete; holds at most one element
/// (up to `MAX_ELEMENT` bytes: a larger one is not watched, only passed on).
#[derive(Default)]
struct ArrayItems {
    depth: JsonDepth,
    item: Vec<u8>,
}

const MAX_ELEMENT: usize = 16 * 1024 * 1024;

impl ArrayItems {
    fn push(&mut self, chunk: &[u8], seen: &mut Seen) {
        for &b in chunk {
            // Depth 1 is the array itself; its elements are at depth 2 and below. A closer
            // belongs to the element it closes, an opener to the element it opens.
            let inside = self.depth.depth() >= 2;
            match self.depth.step(b) {
                Bracket::Open => self.keep(b, self.depth.depth() >= 2),
                Bracket::Close => {
                    self.keep(b, inside);
                    if self.depth.depth() == 1 && !self.item.is_empty() {
                        seen.passthrough_event(&self.item);
                        self.item.clear();
                    }
                }
                Bracket::None => self.keep(b, inside),
            }
        }
    }

    fn keep(&mut self, b: u8, inside: bool) {
        if inside && self.item.len() < MAX_ELEMENT {
            self.item.push(b);
        }
    }
}

/// An error inside a 200 stream: what it means for the key (the verdict), and the client's
/// final error event.
async fn fail_in_stream(
    shape: &Shape,
    tx: &mpsc::Sender<Bytes>,
    error: TranslateError,
    verdict: &mut Option<Outcome>,
) -> End {
    let (outcome, message, code) = match &error {
        TranslateError::UpstreamError {
            code, message, raw, ..
        } => (classify(*code, raw), message.clone(), *code),
        // Gemini ended cleanly with nothing to show (blocked, thoughts only): not the key's
        // fault.
        TranslateError::EmptyAnswer { .. } => (Outcome::Success, error.to_string(), 502),
        TranslateError::InvalidRequest { .. } => (Outcome::ClientError, error.to_string(), 502),
        // Bytes that are not Gemini's events: a broken exchange.
        TranslateError::BadUpstream { .. } => {
            (transient(&error.to_string()), error.to_string(), 502)
        }
    };
    verdict.get_or_insert(outcome);
    let _ = tx.send(error_event(shape, &message, code)).await;
    End::Failed(message)
}

/// A final error event in the stream's own dialect.
fn error_event(shape: &Shape, message: &str, code: u16) -> Bytes {
    match shape {
        Shape::OpenAi(_) => {
            let kind = if code == 429 {
                "rate_limit_error"
            } else {
                "server_error"
            };
            translate::error_event(message, kind, None)
        }
        Shape::Responses { stream, .. } => stream.failed(message, code),
        Shape::Passthrough { sse } => {
            let status = match code {
                429 => "RESOURCE_EXHAUSTED",
                503 => "UNAVAILABLE",
                504 => "DEADLINE_EXCEEDED",
                _ => "INTERNAL",
            };
            let body =
                serde_json::json!({"error": {"code": code, "message": message, "status": status}});
            if *sse {
                Bytes::from(format!("data: {body}\r\n\r\n"))
            } else {
                Bytes::from(format!(",\r\n{body}]"))
            }
        }
    }
}
