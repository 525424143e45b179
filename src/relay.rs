//! Relays an upstream stream to the client chunk by chunk, never buffering it whole.
//!
//! One task per stream reads the upstream body and writes to the client's body channel. It
//! translates Gemini SSE to OpenAI chunks on `/v1`, to Anthropic events on `/v1/messages` and
//! to Responses API events on `/v1/responses` (storing a completed response when asked), or
//! copies bytes untouched on `/v1beta`; sends SSE comment heartbeats on those while the upstream is silent, ends the stream with an
//! error event when the upstream fails, falls silent beyond `idle_timeout`, or the server's
//! grace period runs out, and drops the upstream request the moment the client goes away or
//! stops reading for `server.write_timeout` (every write is bounded, heartbeats and error
//! events included).
//! The stream's lease is reported to the pool exactly once, when the stream ends (the attempt
//! loop reports nothing at a stream's headers): success for a clean end, transient failure for
//! a broken connection or an idle timeout, and for an error Google sends inside the 200 stream
//! (on `/v1beta` too, where the bytes still reach the client untouched) what `classify` makes of
//! it. A stream cut by the client leaving, by a client that stopped reading, or by shutdown says
//! nothing about the key: its lease is handed back. The last `usageMetadata` seen is recorded
//! when the stream ends. A `Learn` may look at a passthrough stream's first events before the
//! client gets them (the native passthrough learns a streamed interaction's id this way).
//!
//! Parts, one concern each: `Shape` (the dialect side: feed a chunk, finish, frame the last
//! error event), `Watch` (what the passing events teach: usage, the first in-stream error),
//! `Unsettled` (the lease, reported exactly once) and `run` (the I/O loop: reads, bounded
//! writes, heartbeats, idle and shutdown deadlines).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use http::{header, HeaderValue, Response, StatusCode};
use tokio::sync::mpsc;

use crate::body::{channel_body, Body};
use crate::classify::{classify, classify_event};
use crate::error::{Framing, ProxyError};
use crate::pool::{Lease, Outcome};
use crate::request_log::RequestLog;
use crate::router::Dialect;
use crate::sse::{Bracket, JsonDepth, SseParser};
use crate::state::{App, Snapshot};
use crate::stored_responses::Ticket;
use crate::translate::anthropic;
use crate::translate::chat::StreamTranslator;
use crate::translate::responses::ResponsesStream;
use crate::translate::{EventStream, TranslateError};
use crate::upstream::AnswerBody;
use crate::usage::{self, Tokens};

/// What the relay does with upstream bytes.
pub enum Shape {
    /// Gemini SSE in, OpenAI chunks out.
    OpenAi(Box<StreamTranslator>),
    /// Gemini SSE in, Anthropic Messages events out (`/v1/messages`).
    Anthropic(Box<anthropic::StreamTranslator>),
    /// Gemini SSE in, Responses API events out (`/v1/responses`); a completed response is
    /// stored when `store` holds its ticket.
    Responses {
        stream: Box<ResponsesStream>,
        store: Option<Ticket>,
    },
    /// Bytes out as they came in (`/v1beta`); `sse` tells the error-event framing.
    Passthrough { sse: bool },
    /// Bytes out as they came in, not JSON (a file's content, `alt=media`): nothing is
    /// watched and a failure just ends the body.
    Raw,
}

/// The dialect side of a stream: how upstream bytes become the client's, and how the
/// stream's last error event is framed. The rest of the relay is dialect-free.
impl Shape {
    /// The dialect's stream translator, when the shape has one.
    fn translator(&mut self) -> Option<&mut dyn EventStream> {
        match self {
            Shape::OpenAi(t) => Some(t.as_mut()),
            Shape::Anthropic(t) => Some(t.as_mut()),
            Shape::Responses { stream, .. } => Some(stream.as_mut()),
            Shape::Passthrough { .. } | Shape::Raw => None,
        }
    }

    /// Feeds one upstream chunk through the shape.
    fn feed(
        &mut self,
        parser: &mut SseParser,
        watch: &mut Watch,
        bytes: Bytes,
    ) -> Result<Bytes, TranslateError> {
        match self {
            Shape::Passthrough { sse: true } => {
                parser.push_each(&bytes, |event| watch.passthrough_event(event.bytes()));
                Ok(bytes)
            }
            Shape::Passthrough { sse: false } => {
                watch.array.push(&bytes, &mut watch.seen);
                Ok(bytes)
            }
            Shape::Raw => Ok(bytes),
            Shape::OpenAi(_) | Shape::Anthropic(_) | Shape::Responses { .. } => {
                match self.translator() {
                    Some(t) => {
                        let mut out = Translated::default();
                        parser.push_each(&bytes, |event| out.event(t, watch, event.bytes()));
                        out.done()
                    }
                    None => Ok(Bytes::new()),
                }
            }
        }
    }

    /// The upstream ended: whatever the parser still holds, then the translator's tail; a
    /// stream that never answered is an empty answer.
    fn finish(
        &mut self,
        parser: &mut SseParser,
        watch: &mut Watch,
    ) -> Result<Bytes, TranslateError> {
        if let Shape::Raw = self {
            return Ok(Bytes::new());
        }
        if let Shape::Passthrough { sse } = self {
            if *sse {
                parser.finish_each(|event| watch.passthrough_event(event.bytes()));
            }
            return Ok(Bytes::new());
        }
        let Some(translator) = self.translator() else {
            return Ok(Bytes::new());
        };
        let mut out = Translated::default();
        parser.finish_each(|event| out.event(translator, watch, event.bytes()));
        if out.error.is_none() {
            let tail = translator.finish();
            out.add(tail);
        }
        out.done()
    }

    /// A final error event in the stream's own dialect and framing (rendered by `error`).
    fn error_event(&self, message: &str, code: u16) -> Bytes {
        let error = ProxyError::StreamBroken {
            code,
            message: message.to_string(),
        };
        match self {
            Shape::OpenAi(_) => error.stream_event(Dialect::OpenAi, Framing::Sse),
            Shape::Anthropic(_) => error.stream_event(Dialect::Anthropic, Framing::Sse),
            // The Responses API ends a stream with `response.failed`, the error inside it.
            Shape::Responses { stream, .. } => stream.failed(error.response_error()),
            Shape::Passthrough { sse: true } => error.stream_event(Dialect::Google, Framing::Sse),
            Shape::Passthrough { sse: false } => {
                error.stream_event(Dialect::Google, Framing::JsonArray)
            }
            // Nothing can be appended to a file's bytes: the body just ends short.
            Shape::Raw => Bytes::new(),
        }
    }
}

/// Looks at a passthrough stream's first events (their `data`, up to `LEARN_EVENTS` of them)
/// before the client gets each: `true` once it learned what it wanted (an interaction's id
/// from its first event), after which it is dropped.
pub type Learn = Box<dyn FnMut(&[u8]) -> bool + Send>;

/// How many events a `Learn` sees at most.
const LEARN_EVENTS: usize = 8;

/// Starts relaying `response` and returns the client's response without waiting for the
/// upstream: the relay gets one turn of the scheduler first, so that an event which arrived
/// with the upstream's headers is already in the body channel when hyper writes our headers,
/// and both leave in one write (one packet and one client wake-up less before the first
/// byte). A stream with nothing yet is not waited for.
pub async fn start(
    app: Arc<App>,
    snap: Arc<Snapshot>,
    lease: Lease,
    response: AnswerBody,
    shape: Shape,
    log: RequestLog,
    content_type: HeaderValue,
) -> Response<Body> {
    start_learning(app, snap, lease, response, shape, log, content_type, None).await
}

/// `start`, with a `Learn` shown the first events of a passthrough SSE stream.
#[allow(clippy::too_many_arguments)]
pub async fn start_learning(
    app: Arc<App>,
    snap: Arc<Snapshot>,
    lease: Lease,
    response: AnswerBody,
    shape: Shape,
    log: RequestLog,
    content_type: HeaderValue,
    learn: Option<Learn>,
) -> Response<Body> {
    let (tx, rx) = mpsc::channel::<Bytes>(32);
    tokio::spawn(run(app, snap, lease, response, shape, log, tx, learn));
    tokio::task::yield_now().await;
    let mut out = Response::new(channel_body(rx));
    let headers = out.headers_mut();
    headers.insert(header::CONTENT_TYPE, content_type);
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    out
}

/// Hands one piece of the answer to the client's body channel. A client that stops reading
/// fills the channel; after `limit` without room it is cut off (as if gone) instead of being
/// waited for, which ends the relay and drops the upstream stream.
async fn send(tx: &mpsc::Sender<Bytes>, bytes: Bytes, limit: Duration) -> Result<(), ()> {
    let bytes = match tx.try_send(bytes) {
        Ok(()) => return Ok(()),
        Err(mpsc::error::TrySendError::Closed(_)) => return Err(()),
        Err(mpsc::error::TrySendError::Full(bytes)) => bytes,
    };
    match tokio::time::timeout(limit, tx.send(bytes)).await {
        Ok(sent) => sent.map_err(|_| ()),
        Err(_) => {
            tracing::debug!(
                write_timeout_s = limit.as_secs_f64(),
                "the client stopped reading; stream cut"
            );
            Err(())
        }
    }
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

#[allow(clippy::too_many_arguments)]
async fn run(
    app: Arc<App>,
    snap: Arc<Snapshot>,
    lease: Lease,
    response: AnswerBody,
    mut shape: Shape,
    mut log: RequestLog,
    tx: mpsc::Sender<Bytes>,
    learn: Option<Learn>,
) {
    let idle = snap.upstream.idle_timeout;
    let write = snap.config.server.write_timeout;
    let heartbeat = match shape {
        Shape::OpenAi(_) | Shape::Anthropic(_) | Shape::Responses { .. } => snap.upstream.heartbeat,
        Shape::Passthrough { .. } | Shape::Raw => None,
    };
    let mut upstream = http_body_util::BodyDataStream::new(response);
    let mut parser = SseParser::new();
    let mut watch = Watch {
        learn,
        ..Watch::default()
    };
    let mut last_data = Instant::now();
    let mut next_beat = heartbeat.map(|d| tokio::time::Instant::now() + d);
    let far = Duration::from_secs(365 * 24 * 3600);
    let mut unsettled = Unsettled {
        snap: snap.clone(),
        lease: Some(lease.clone()),
    };
    // What the stream's end means for the key; `None` (client gone, shutdown): nothing.
    let mut verdict: Option<Outcome> = None;

    // What the loop waits on besides the upstream, made once for the stream's life. The two
    // timers are armed at their first deadline and moved only when they fire: data pushes
    // `last_data` and `next_beat` on, and a timer that fires before its deadline is re-armed.
    let closed = tx.closed();
    let draining = app.lifecycle.draining().cancelled();
    let beat =
        tokio::time::sleep_until(next_beat.unwrap_or_else(|| tokio::time::Instant::now() + far));
    let silent = tokio::time::sleep_until(tokio::time::Instant::from_std(last_data + idle));
    tokio::pin!(closed, draining, beat, silent);

    let end = loop {
        tokio::select! {
            biased;
            _ = &mut closed => break End::ClientGone,
            _ = &mut draining => {
                let event = shape.error_event("the server is shutting down; the stream was cut short", 503);
                let _ = send(&tx, event, write).await;
                break End::Failed("server shutting down".into());
            }
            chunk = upstream.next() => match chunk {
                None => {
                    let tail = shape.finish(&mut parser, &mut watch);
                    in_stream_error(&lease, &mut watch, &mut log, &mut verdict);
                    if let Some(translator) = shape.translator() {
                        app.signatures.remember(translator.take_signatures());
                    }
                    // A completed Responses API answer is kept for `previous_response_id`.
                    if let Shape::Responses { stream, store } = &mut shape {
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
                            if !bytes.is_empty() && send(&tx, bytes, write).await.is_err() {
                                break End::ClientGone;
                            }
                            break End::Complete;
                        }
                        Err(e) => break fail_in_stream(&shape, &tx, write, e, &mut verdict).await,
                    }
                }
                Some(Err(e)) => {
                    let message = format!("the upstream stream broke: {e}");
                    verdict.get_or_insert_with(|| transient(&message));
                    let _ = send(&tx, shape.error_event(&message, 502), write).await;
                    break End::Failed(message);
                }
                Some(Ok(bytes)) => {
                    last_data = Instant::now();
                    if let Some(d) = heartbeat {
                        next_beat = Some(tokio::time::Instant::now() + d);
                    }
                    let translated = shape.feed(&mut parser, &mut watch, bytes);
                    in_stream_error(&lease, &mut watch, &mut log, &mut verdict);
                    match translated {
                        Ok(out) => {
                            if !out.is_empty() && send(&tx, out, write).await.is_err() {
                                break End::ClientGone;
                            }
                        }
                        Err(e) => break fail_in_stream(&shape, &tx, write, e, &mut verdict).await,
                    }
                }
            },
            _ = &mut beat, if next_beat.is_some() => {
                let now = tokio::time::Instant::now();
                if let Some(due) = next_beat.filter(|&due| due > now) {
                    beat.as_mut().reset(due);
                    continue;
                }
                if send(&tx, Bytes::from_static(b": keep-alive\n\n"), write)
                    .await
                    .is_err() {
                    break End::ClientGone;
                }
                next_beat = heartbeat.map(|d| tokio::time::Instant::now() + d);
                if let Some(due) = next_beat {
                    beat.as_mut().reset(due);
                }
            }
            _ = &mut silent => {
                let due = tokio::time::Instant::from_std(last_data + idle);
                if due > tokio::time::Instant::now() {
                    silent.as_mut().reset(due);
                    continue;
                }
                let message = format!("the upstream was silent for {}s; stream ended", idle.as_secs());
                verdict.get_or_insert_with(|| transient(&message));
                let _ = send(&tx, shape.error_event(&message, 504), write).await;
                break End::Failed(message);
            }
        }
    };

    unsettled.settle(verdict);
    // Gemini answered, whatever happened since: the request and its last usage count.
    snap.record_usage(&lease, log.token.as_deref(), watch.seen.tokens());
    match end {
        End::Complete => {}
        End::ClientGone => log.error = Some("client disconnected".into()),
        End::Failed(message) => log.error = Some(message),
    }
    log.emit(StatusCode::OK);
}

/// What a translator made of one chunk's events (each event's usage watched), kept as the
/// one `Bytes` it returned when only one event had output, joined otherwise. After the first
/// error the chunk's later events are not looked at: the stream ends with that error.
/// Unframed JSON (`Bare`) in a stream is how Google reports errors mid-stream.
#[derive(Default)]
struct Translated {
    out: Bytes,
    joined: Vec<u8>,
    error: Option<TranslateError>,
}

impl Translated {
    fn event(&mut self, translator: &mut dyn EventStream, watch: &mut Watch, event: &[u8]) {
        if self.error.is_some() {
            return;
        }
        watch.seen.usage(event);
        let out = translator.on_event(event);
        self.add(out);
    }

    fn add(&mut self, out: Result<Bytes, TranslateError>) {
        if self.error.is_some() {
            return;
        }
        match out {
            Ok(bytes) if bytes.is_empty() => {}
            Ok(bytes) if self.out.is_empty() && self.joined.is_empty() => self.out = bytes,
            Ok(bytes) => {
                if !self.out.is_empty() {
                    self.joined
                        .extend_from_slice(&std::mem::take(&mut self.out));
                }
                self.joined.extend_from_slice(&bytes);
            }
            Err(e) => self.error = Some(e),
        }
    }

    fn done(self) -> Result<Bytes, TranslateError> {
        match self.error {
            Some(e) => Err(e),
            None if self.joined.is_empty() => Ok(self.out),
            None => Ok(Bytes::from(self.joined)),
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
    /// Shown the first SSE events until it has learned what it wanted.
    learn: Option<Learn>,
    /// Events `learn` was shown.
    learned_from: usize,
}

/// Far more than a `usageMetadata` object and what follows it in an event.
const MAX_USAGE_TAIL: usize = 64 * 1024;

#[derive(Default)]
struct Seen {
    /// The last `usageMetadata` field seen, from its name to its event's end (at most
    /// `MAX_USAGE_TAIL` bytes), parsed once when the stream ends (`tokens`): only the last one
    /// counts, so the earlier ones (every event of a Gemini stream has one) are never parsed.
    usage_tail: Vec<u8>,
    /// An error found in a passthrough stream, not yet reported.
    error: Option<Outcome>,
    /// Only the first error counts: Google ends the stream after it.
    errored: bool,
}

impl Seen {
    fn usage(&mut self, event: &[u8]) {
        if let Some(at) = usage::field_at(event) {
            let tail = &event[at..];
            self.usage_tail.clear();
            self.usage_tail
                .extend_from_slice(&tail[..tail.len().min(MAX_USAGE_TAIL)]);
        }
    }

    /// The stream's usage: the last `usageMetadata` seen.
    fn tokens(&self) -> Option<Tokens> {
        usage::from_json(&self.usage_tail)
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
        if let Some(learn) = &mut self.learn {
            self.learned_from += 1;
            if learn(event) || self.learned_from >= LEARN_EVENTS {
                self.learn = None;
            }
        }
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
    write: Duration,
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
    let _ = send(tx, shape.error_event(&message, code), write).await;
    End::Failed(message)
}
