//! Relays an upstream stream to the client chunk by chunk, never buffering it whole.
//!
//! The relay is the client response's body (`RelayBody`): hyper polls it as it writes, and
//! each poll reads what the upstream has, with no task or channel in between. It translates
//! Gemini SSE to OpenAI chunks on `/v1`, to Anthropic events on `/v1/messages` and to
//! Responses API events on `/v1/responses` (storing a completed response when asked), or copies
//! bytes untouched on `/v1beta`; sends SSE comment heartbeats on those while the upstream is
//! silent; ends the stream with an error event when the upstream fails, falls silent beyond
//! `idle_timeout`, or the server's grace period runs out. The upstream request is dropped with
//! the body: the moment the client goes away, or once it has stopped reading for
//! `server.write_timeout` (the connection's write deadline closes the connection).
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
//! `Outgoing` (what is ready, held a few turns so that pieces the upstream sent together leave
//! in one write) and `RelayBody` (the polls: reads, heartbeats, idle and shutdown deadlines;
//! `Relay::finish`, once at the end or on drop, reports the lease exactly once).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body::Frame;
use http_body_util::BodyExt;
use tokio::time::Sleep;
use tokio_util::sync::WaitForCancellationFutureOwned;

use crate::body::Body;
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
pub type Learn = Box<dyn FnMut(&[u8]) -> bool + Send + Sync>;

/// How many events a `Learn` sees at most.
const LEARN_EVENTS: usize = 8;

/// The client's response for relaying `response`: the relay is its body, driven by hyper as
/// it writes (no task or channel between the upstream and the client). Before the response is
/// returned, the relay reads what the upstream already has (a few scheduler turns at most, see
/// `Outgoing`), so that the headers and the first events leave in one write; a stream with
/// nothing yet is not waited for.
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
    let mut body = Box::pin(RelayBody::new(
        app, snap, lease, response, shape, log, learn,
    ));
    std::future::poll_fn(|cx| body.as_mut().poll_relay(cx, true).map(|_| ())).await;
    let mut out = Response::new(body.boxed());
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

fn transient(message: &str) -> Outcome {
    Outcome::Transient {
        reason: message.to_string(),
    }
}

pin_project_lite::pin_project! {
    /// The response body that relays: each poll reads what the upstream has, passes it through
    /// the shape and hands hyper the result. A client that stops reading stops the polls, and
    /// the connection's write deadline (`server.write_timeout`, `server::WriteDeadline`) then
    /// closes the connection, which drops this body and the upstream stream with it. The
    /// timers are polled with the upstream: heartbeats while it is silent, the idle deadline,
    /// and the end of the shutdown grace period.
    struct RelayBody {
        relay: Relay,
        #[pin]
        draining: WaitForCancellationFutureOwned,
        #[pin]
        beat: Sleep,
        #[pin]
        silent: Sleep,
    }
}

/// What the relay holds besides its timers: plain data, finished exactly once (`finish`), by
/// the last poll or, when hyper drops the body first (the client left), by `Drop`.
struct Relay {
    app: Arc<App>,
    snap: Arc<Snapshot>,
    /// Reported (or handed back) by `finish`, exactly once.
    lease: Lease,
    upstream: AnswerBody,
    shape: Shape,
    parser: SseParser,
    watch: Watch,
    /// `None` once the stream is finished (logged).
    log: Option<RequestLog>,
    /// What the stream's end means for the key; `None` (client gone, shutdown): nothing.
    verdict: Option<Outcome>,
    idle: Duration,
    heartbeat: Option<Duration>,
    last_data: Instant,
    /// When the next heartbeat is due (`None`: the shape sends none).
    next_beat: Option<tokio::time::Instant>,
    /// The answer's pieces not yet handed to hyper.
    out: Outgoing,
    /// The stream is over: `out` goes out, then the body ends and the relay is finished.
    ended: Option<End>,
}

/// At most this many pieces, or bytes, are held back for one write, and for at most this many
/// scheduler turns without a new piece.
const HELD_FRAMES: usize = 16;
const HELD_BYTES: usize = 64 * 1024;
const HELD_TURNS: u8 = 4;

/// The answer's pieces ready for the client, held back a few scheduler turns after each:
/// hyper's client hands an upstream body over one chunk at a time from its connection's task,
/// which takes about two turns per chunk, so without holding, every chunk Google sent in one
/// packet (a whole short answer, often) would leave in a write of its own, one syscall and one
/// client wake-up each. Once `HELD_TURNS` pass with nothing new (or `HELD_FRAMES`/`HELD_BYTES`
/// are reached, or the stream ends), every piece goes out, to be written together. An event
/// never waits for a later one: the turns pass in microseconds, whatever the upstream does.
#[derive(Default)]
struct Outgoing {
    frames: VecDeque<Bytes>,
    bytes: usize,
    /// Turns given since the last piece arrived.
    held: u8,
    /// Handing the pieces out: nothing else is read until they are all gone.
    releasing: bool,
}

impl Outgoing {
    fn push(&mut self, bytes: Bytes) {
        if !bytes.is_empty() {
            self.bytes += bytes.len();
            self.frames.push_back(bytes);
            self.held = 0;
        }
    }

    /// The next piece to hand out, while releasing.
    fn next(&mut self) -> Option<Bytes> {
        if !self.releasing {
            return None;
        }
        let next = self.frames.pop_front();
        match &next {
            Some(bytes) => self.bytes -= bytes.len(),
            None => self.releasing = false,
        }
        next
    }

    /// Hands every held piece out from the next poll on.
    fn release(&mut self) {
        self.releasing = !self.frames.is_empty();
    }

    /// Nothing new right now: `true` to wait a turn more (the task is woken at once, after
    /// the tasks already due, the upstream connection's among them); otherwise the pieces
    /// are released.
    fn hold(&mut self, cx: &Context<'_>) -> bool {
        if self.frames.is_empty() {
            return false;
        }
        if self.held < HELD_TURNS && self.frames.len() < HELD_FRAMES && self.bytes < HELD_BYTES {
            self.held += 1;
            cx.waker().wake_by_ref();
            return true;
        }
        self.release();
        false
    }
}

impl RelayBody {
    fn new(
        app: Arc<App>,
        snap: Arc<Snapshot>,
        lease: Lease,
        upstream: AnswerBody,
        shape: Shape,
        log: RequestLog,
        learn: Option<Learn>,
    ) -> Self {
        let idle = snap.upstream.idle_timeout;
        let heartbeat = match shape {
            Shape::OpenAi(_) | Shape::Anthropic(_) | Shape::Responses { .. } => {
                snap.upstream.heartbeat
            }
            Shape::Passthrough { .. } | Shape::Raw => None,
        };
        let now = tokio::time::Instant::now();
        let next_beat = heartbeat.map(|d| now + d);
        // The timers are armed at their first deadline and moved only when they fire: data
        // pushes `last_data` and `next_beat` on, and a timer that fires early is re-armed.
        let far = Duration::from_secs(365 * 24 * 3600);
        let beat = tokio::time::sleep_until(next_beat.unwrap_or(now + far));
        let silent = tokio::time::sleep_until(now + idle);
        let draining = app.lifecycle.draining().clone().cancelled_owned();
        RelayBody {
            relay: Relay {
                app,
                snap,
                lease,
                upstream,
                shape,
                parser: SseParser::new(),
                watch: Watch {
                    learn,
                    ..Watch::default()
                },
                log: Some(log),
                verdict: None,
                idle,
                heartbeat,
                last_data: Instant::now(),
                next_beat,
                out: Outgoing::default(),
                ended: None,
            },
            draining,
            beat,
            silent,
        }
    }
}

impl http_body::Body for RelayBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.poll_relay(cx, false)
            .map(|next| next.map(|bytes| Ok(Frame::data(bytes))))
    }
}

impl RelayBody {
    /// The next piece for the client (`None`: the stream is over). With `first`, nothing is
    /// handed out: `Ready(None)` as soon as pieces are ready to go, or the stream ended, or
    /// there is nothing yet; `Pending` only while pieces are held for more (`Outgoing::hold`,
    /// which wakes the task at once).
    fn poll_relay(self: Pin<&mut Self>, cx: &mut Context<'_>, first: bool) -> Poll<Option<Bytes>> {
        let mut this = self.project();
        let relay = this.relay;
        loop {
            if first && (relay.out.releasing || relay.ended.is_some()) {
                return Poll::Ready(None);
            }
            if let Some(bytes) = relay.out.next() {
                return Poll::Ready(Some(bytes));
            }
            if let Some(end) = relay.ended.take() {
                if !relay.out.frames.is_empty() {
                    relay.out.release();
                    relay.ended = Some(end);
                    continue;
                }
                relay.finish(end);
            }
            if relay.log.is_none() {
                return Poll::Ready(None);
            }
            // Biased, as the loop always was: shutdown first, then the upstream, then timers.
            if this.draining.as_mut().poll(cx).is_ready() {
                relay.fail(
                    "the server is shutting down; the stream was cut short",
                    503,
                    "server shutting down".into(),
                );
                continue;
            }
            match http_body::Body::poll_frame(Pin::new(&mut relay.upstream), cx) {
                Poll::Ready(None) => {
                    relay.upstream_ended();
                    continue;
                }
                Poll::Ready(Some(Err(e))) => {
                    relay.fail_transient(format!("the upstream stream broke: {e}"), 502);
                    continue;
                }
                Poll::Ready(Some(Ok(frame))) => {
                    if let Ok(bytes) = frame.into_data() {
                        relay.chunk(bytes);
                    }
                    continue;
                }
                Poll::Pending => {}
            }
            if relay.out.hold(cx) {
                return Poll::Pending;
            }
            if !relay.out.frames.is_empty() {
                continue;
            }
            if let Some(due) = relay.next_beat {
                if this.beat.as_mut().poll(cx).is_ready() {
                    let now = tokio::time::Instant::now();
                    if due <= now {
                        relay.out.push(Bytes::from_static(b": keep-alive\n\n"));
                        relay.next_beat = relay.heartbeat.map(|d| now + d);
                    }
                    if let Some(due) = relay.next_beat {
                        this.beat.as_mut().reset(due);
                    }
                    continue;
                }
            }
            if this.silent.as_mut().poll(cx).is_ready() {
                let due = tokio::time::Instant::from_std(relay.last_data + relay.idle);
                if due > tokio::time::Instant::now() {
                    this.silent.as_mut().reset(due);
                    continue;
                }
                let message = format!(
                    "the upstream was silent for {}s; stream ended",
                    relay.idle.as_secs()
                );
                relay.fail_transient(message, 504);
                continue;
            }
            if first {
                return Poll::Ready(None);
            }
            return Poll::Pending;
        }
    }
}

impl Relay {
    /// One upstream chunk, through the shape.
    fn chunk(&mut self, bytes: Bytes) {
        self.last_data = Instant::now();
        if let Some(d) = self.heartbeat {
            self.next_beat = Some(tokio::time::Instant::now() + d);
        }
        let translated = self.shape.feed(&mut self.parser, &mut self.watch, bytes);
        self.in_stream_error();
        match translated {
            Ok(out) => self.out.push(out),
            Err(e) => self.fail_in_stream(e),
        }
    }

    /// The upstream ended: the shape's tail, what the stream taught, and the end.
    fn upstream_ended(&mut self) {
        let tail = self.shape.finish(&mut self.parser, &mut self.watch);
        self.in_stream_error();
        if let Some(translator) = self.shape.translator() {
            self.app.signatures.remember(translator.take_signatures());
        }
        // A completed Responses API answer is kept for `previous_response_id`.
        if let Shape::Responses { stream, store } = &mut self.shape {
            if let (Some(ticket), Some((response, output))) = (store.take(), stream.take_finished())
            {
                self.app.stored_responses.keep(ticket, &response, &output);
            }
        }
        match tail {
            Ok(bytes) => {
                // A clean end: the key did its part, whether or not the client takes the tail.
                self.verdict.get_or_insert(Outcome::Success);
                self.out.push(bytes);
                self.ended = Some(End::Complete);
            }
            Err(e) => self.fail_in_stream(e),
        }
    }

    /// Ends the stream with a final error event (`message`, `code`) in its dialect.
    fn fail(&mut self, message: &str, code: u16, logged: String) {
        self.out.push(self.shape.error_event(message, code));
        self.ended = Some(End::Failed(logged));
    }

    /// A broken or silent upstream: the key's verdict is a transient failure.
    fn fail_transient(&mut self, message: String, code: u16) {
        self.verdict.get_or_insert_with(|| transient(&message));
        self.fail(&message, code, message.clone());
    }

    /// An error inside a 200 stream: what it means for the key (the verdict), and the
    /// client's final error event.
    fn fail_in_stream(&mut self, error: TranslateError) {
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
        self.verdict.get_or_insert(outcome);
        self.fail(&message, code, message.clone());
    }

    /// An error found inside a passthrough stream (the client got its bytes) becomes the
    /// stream's verdict, reported when the stream ends.
    fn in_stream_error(&mut self) {
        if let Some(outcome) = self.watch.seen.error.take() {
            let lease = &self.lease;
            tracing::debug!(key = %lease.key, model = %lease.model, outcome = outcome.class(), "error inside a passthrough stream");
            if let Some(log) = &mut self.log {
                log.error = Some(format!(
                    "upstream error inside the stream: {}",
                    outcome.class()
                ));
            }
            self.verdict.get_or_insert(outcome);
        }
    }

    /// Reports the lease (the verdict, or handed back when there is none), records the usage
    /// and writes the log line; once.
    fn finish(&mut self, end: End) {
        let Some(mut log) = self.log.take() else {
            return;
        };
        match self.verdict.take() {
            Some(outcome) => self.snap.pool.report(&self.lease, &outcome, Instant::now()),
            None => self.snap.pool.abandon(&self.lease),
        }
        // Gemini answered, whatever happened since: the request and its last usage count.
        self.snap
            .record_usage(&self.lease, log.token.as_deref(), self.watch.seen.tokens());
        match end {
            End::Complete => {}
            End::ClientGone => log.error = Some("client disconnected".into()),
            End::Failed(message) => log.error = Some(message),
        }
        log.emit(StatusCode::OK);
    }
}

/// hyper drops the body before its end when the client left (or stopped reading past the
/// write deadline, or the server's runtime stopped): the stream ends there.
impl Drop for Relay {
    fn drop(&mut self) {
        let end = self.ended.take().unwrap_or(End::ClientGone);
        self.finish(end);
    }
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

#[cfg(test)]
mod tests {
    use super::{Seen, MAX_USAGE_TAIL};

    /// An `interaction.completed` event carries the whole interaction, its outputs before its
    /// usage: past `MAX_USAGE_TAIL` of them, the usage is still read.
    #[test]
    fn an_interactions_usage_is_read_behind_large_outputs() {
        let image = "A".repeat(4 * MAX_USAGE_TAIL);
        let event = format!(
            r#"{{"event_type":"interaction.completed","event_id":"evt_7","interaction":{{"id":"v1_a","outputs":[{{"type":"image","data":"{image}","mime_type":"image/png"}}],"usage":{{"total_input_tokens":8,"total_output_tokens":1290,"total_tokens":1298}}}}}}"#
        );
        let mut seen = Seen::default();
        seen.passthrough_event(br#"{"event_type":"interaction.created","interaction":{"id":"v1_a","status":"in_progress"}}"#);
        assert!(seen.tokens().is_none());
        seen.passthrough_event(event.as_bytes());
        let tokens = seen.tokens().map(|t| (t.prompt, t.completion));
        assert_eq!(tokens, Some((8, 1290)));
        assert!(seen.usage_tail.len() < 1024, "only the usage is kept");
    }
}
