//! `FakeGemini`: a loopback stand-in for Google's Gemini REST API (v1beta) that speaks the real
//! wire format, so integration tests can run the real proxy against it.
//!
//! It owns routing, key checks, scripted replies (per key and model, per key, per model, or for
//! everything: FIFO queues with a sticky fallback), Google's error bodies built from their real
//! anatomy (`QuotaFailure`, `RetryInfo`, `ErrorInfo`…), and the bookkeeping tests assert on: hits
//! per key and model, recorded requests, keys seen in URLs, cancellations and in-flight requests.
//! It must never print or embed a full key in a reply: replies name the key masked
//! (`AIza****0001`). It binds 127.0.0.1 only and stops when dropped.

use std::collections::{HashMap, HashSet, VecDeque};
use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Models served when the builder is given none: chat, embedding and odd ones, enough for
/// pagination tests with small page sizes.
pub const DEFAULT_MODELS: &[&str] = &[
    "gemini-2.5-pro",
    "gemini-2.5-flash",
    "gemini-2.5-flash-lite",
    "gemini-2.0-flash",
    "gemini-2.0-flash-lite",
    "gemini-3-pro-preview",
    "gemini-3-flash-preview",
    "gemini-flash-latest",
    "gemma-3-27b-it",
    "gemini-embedding-001",
    "text-embedding-004",
    "imagen-4.0-generate-001",
];

const JSON_CT: &str = "application/json; charset=UTF-8";
const SSE_CT: &str = "text/event-stream";
const HELP_URL: &str = "https://ai.google.dev/gemini-api/docs/rate-limits";

/// Google's masking: first four characters, `****`, last four. Short values are fully hidden.
pub fn mask(key: &str) -> String {
    let chars: Vec<char> = key.chars().collect();
    if chars.len() < 12 {
        return "****".to_string();
    }
    let head: String = chars[..4].iter().collect();
    let tail: String = chars[chars.len() - 4..].iter().collect();
    format!("{head}****{tail}")
}

/// The text of the default success reply, so tests can assert which model and key served.
pub fn default_text(model: &str, key: &str) -> String {
    format!("Hello from {model} served with key {}.", mask(key))
}

/// Deterministic embedding of `text` with `dims` values in [-1, 1].
pub fn fake_embedding(text: &str, dims: usize) -> Vec<f32> {
    // FNV-1a, so the same text always embeds the same way across runs and processes.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (0..dims as u64)
        .map(|i| {
            let v = h.wrapping_add(i.wrapping_mul(0x9e37_79b9_7f4a_7c15)) >> 33;
            ((v % 2001) as f32 - 1000.0) / 1000.0
        })
        .collect()
}

/// A Google error body: `{"error": {code, message, status, details?}}`.
pub fn google_error(code: u16, status: &str, message: &str, details: Vec<Value>) -> Value {
    let mut error = json!({ "code": code, "message": message, "status": status });
    if !details.is_empty() {
        error["details"] = Value::Array(details);
    }
    json!({ "error": error })
}

/// One streamed GenerateContentResponse carrying `parts`, optionally finishing the turn.
pub fn chunk_with_parts(parts: Vec<Value>, finish_reason: Option<&str>) -> Value {
    let mut candidate = json!({ "content": { "parts": parts, "role": "model" }, "index": 0 });
    if let Some(reason) = finish_reason {
        candidate["finishReason"] = json!(reason);
    }
    json!({ "candidates": [candidate] })
}

/// One streamed GenerateContentResponse with a single text part.
pub fn text_chunk(text: &str, finish_reason: Option<&str>) -> Value {
    chunk_with_parts(vec![json!({ "text": text })], finish_reason)
}

/// A realistic Gemini Model object for `id` (without the `models/` prefix).
pub fn model_object(id: &str) -> Value {
    let embedding = id.contains("embedding");
    let imagen = id.starts_with("imagen");
    let methods: &[&str] = if embedding {
        &[
            "embedContent",
            "batchEmbedContents",
            "countTextTokens",
            "countTokens",
        ]
    } else if imagen {
        &["predict"]
    } else {
        &[
            "generateContent",
            "countTokens",
            "createCachedContent",
            "batchGenerateContent",
        ]
    };
    let display: String = id
        .split('-')
        .map(|w| {
            let mut c = w.chars();
            match c.next() {
                Some(f) => f.to_uppercase().chain(c).collect::<String>(),
                None => String::new(),
            }
        })
        .collect::<Vec<_>>()
        .join(" ");
    let mut m = json!({
        "name": format!("models/{id}"),
        "baseModelId": id,
        "version": "001",
        "displayName": display,
        "description": format!("Fake {display} for tests"),
        "inputTokenLimit": if embedding { 2048 } else { 1_048_576 },
        "outputTokenLimit": if embedding { 1 } else { 65_536 },
        "supportedGenerationMethods": methods,
    });
    if !embedding && !imagen {
        m["temperature"] = json!(1.0);
        m["topP"] = json!(0.95);
        m["topK"] = json!(64);
        m["maxTemperature"] = json!(2.0);
        m["thinking"] = json!(id.contains("2.5") || id.contains("gemini-3"));
    }
    m
}

/// How a scripted stream ends after its last event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamEnd {
    /// Clean end of body (EOF), as Google does.
    Eof,
    /// Keep the connection open and send nothing more until the client leaves.
    Hang,
    /// Cut the connection mid-body (no chunked terminator).
    Abort,
}

#[derive(Clone, Debug)]
enum Content {
    Text(String),
    Parts(Vec<Value>),
}

/// A successful generation: its content, how it streams, and its usage.
#[derive(Clone, Debug)]
pub struct Success {
    content: Content,
    chunks: usize,
    thoughts_tokens: Option<u64>,
    finish_reason: String,
    event_delay: Duration,
}

/// One scripted reply. Build with the constructor functions; most tests never match on it.
#[derive(Clone, Debug)]
pub enum Reply {
    /// A success, rendered per route (JSON, SSE, JSON array, countTokens, embeddings).
    Success(Success),
    /// A raw JSON reply. `google_error` bodies are wrapped in an array on the non-SSE stream
    /// route, as Google does.
    Json {
        status: u16,
        body: Value,
        headers: Vec<(String, String)>,
        google_error: bool,
    },
    /// Raw events: SSE with `alt=sse`, a JSON array on the plain stream route, SSE elsewhere.
    Stream {
        events: Vec<Value>,
        event_delay: Duration,
        end: StreamEnd,
    },
    /// Wait before sending anything (headers included), then reply.
    Delay(Duration, Box<Reply>),
    /// Never answer.
    Hang,
}

impl Reply {
    /// A success whose text is `text`; streams split it into 3 chunks (see [`Reply::chunks`]).
    pub fn text(text: impl Into<String>) -> Reply {
        Reply::Success(Success {
            content: Content::Text(text.into()),
            chunks: 3,
            thoughts_tokens: None,
            finish_reason: "STOP".into(),
            event_delay: Duration::ZERO,
        })
    }

    /// A success made of arbitrary parts (function calls, thoughts…); streams send one part per
    /// event.
    pub fn parts(parts: Vec<Value>) -> Reply {
        Reply::Success(Success {
            content: Content::Parts(parts),
            chunks: 1,
            thoughts_tokens: None,
            finish_reason: "STOP".into(),
            event_delay: Duration::ZERO,
        })
    }

    /// A raw JSON reply with any status.
    pub fn json(status: u16, body: Value) -> Reply {
        Reply::Json {
            status,
            body,
            headers: Vec::new(),
            google_error: false,
        }
    }

    /// Raw stream events, ending cleanly.
    pub fn stream(events: Vec<Value>) -> Reply {
        Reply::Stream {
            events,
            event_delay: Duration::ZERO,
            end: StreamEnd::Eof,
        }
    }

    /// Raw stream events, then silence with the connection held open.
    pub fn stream_then_hang(events: Vec<Value>) -> Reply {
        Reply::Stream {
            events,
            event_delay: Duration::ZERO,
            end: StreamEnd::Hang,
        }
    }

    /// Raw stream events, then an abrupt close of the connection.
    pub fn stream_then_close(events: Vec<Value>) -> Reply {
        Reply::Stream {
            events,
            event_delay: Duration::ZERO,
            end: StreamEnd::Abort,
        }
    }

    /// `reply`, after `d` without sending headers.
    pub fn delay(d: Duration, reply: Reply) -> Reply {
        Reply::Delay(d, Box::new(reply))
    }

    /// Never answers; the client's drop is counted in `cancellations()`.
    pub fn hang() -> Reply {
        Reply::Hang
    }

    /// Streams split the text into `n` chunks (fewer if the text is shorter).
    pub fn chunks(mut self, n: usize) -> Reply {
        match &mut self {
            Reply::Success(s) => s.chunks = n.max(1),
            other => panic!("chunks() applies to Reply::text, not {other:?}"),
        }
        self
    }

    /// Adds `thoughtsTokenCount` to the usage.
    pub fn thoughts_tokens(mut self, n: u64) -> Reply {
        match &mut self {
            Reply::Success(s) => s.thoughts_tokens = Some(n),
            other => panic!("thoughts_tokens() applies to successes, not {other:?}"),
        }
        self
    }

    /// Replaces `STOP` as the finish reason.
    pub fn finish_reason(mut self, reason: &str) -> Reply {
        match &mut self {
            Reply::Success(s) => s.finish_reason = reason.to_string(),
            other => panic!("finish_reason() applies to successes, not {other:?}"),
        }
        self
    }

    /// Pause `d` between stream events.
    pub fn event_delay(mut self, d: Duration) -> Reply {
        match &mut self {
            Reply::Success(s) => s.event_delay = d,
            Reply::Stream { event_delay, .. } => *event_delay = d,
            other => panic!("event_delay() applies to streams, not {other:?}"),
        }
        self
    }

    /// Adds a response header to a JSON reply (e.g. `retry-after`).
    pub fn with_header(mut self, name: &str, value: &str) -> Reply {
        match &mut self {
            Reply::Json { headers, .. } => headers.push((name.into(), value.into())),
            other => panic!("with_header() applies to JSON replies, not {other:?}"),
        }
        self
    }

    /// The JSON body of a JSON reply (error presets included).
    pub fn body(&self) -> &Value {
        match self {
            Reply::Json { body, .. } => body,
            other => panic!("body() applies to JSON replies, not {other:?}"),
        }
    }

    fn google(status: u16, body: Value) -> Reply {
        Reply::Json {
            status,
            body,
            headers: Vec::new(),
            google_error: true,
        }
    }

    /// 429: per-minute free-tier quota (QuotaFailure `…PerMinute…`, Help, optional RetryInfo).
    pub fn quota_per_minute(model: &str, retry_delay: Option<&str>) -> Reply {
        let metric = "generativelanguage.googleapis.com/generate_content_free_tier_requests";
        let mut message = format!(
            "You exceeded your current quota, please check your plan and billing details. For more \
             information on this error, head to: {HELP_URL}. To monitor your current usage, head \
             to: https://ai.dev/usage?tab=rate-limit. \n* Quota exceeded for metric: {metric}, \
             limit: 2, model: {model}"
        );
        let mut details = vec![
            json!({ "@type": "type.googleapis.com/google.rpc.DebugInfo",
                    "detail": "[ORIGINAL ERROR] generic::resource_exhausted: Resource has been exhausted (e.g. check quota)." }),
            quota_failure(
                metric,
                "GenerateRequestsPerMinutePerProjectPerModel-FreeTier",
                model,
                Some("2"),
            ),
            help_detail(),
        ];
        if let Some(delay) = retry_delay {
            let secs = delay.trim_end_matches('s');
            message.push_str(&format!("\nPlease retry in {secs}s."));
            details.push(retry_info(delay));
        }
        Reply::google(
            429,
            google_error(429, "RESOURCE_EXHAUSTED", &message, details),
        )
    }

    /// 429: per-day free-tier quota. Like the real ones, it carries a short RetryInfo (38s):
    /// classifying by the delay alone gets this wrong.
    pub fn quota_per_day(model: &str) -> Reply {
        let metric = "generativelanguage.googleapis.com/generate_content_free_tier_requests";
        let message = format!(
            "You exceeded your current quota, please check your plan and billing details. For more \
             information on this error, head to: {HELP_URL}. To monitor your current usage, head \
             to: https://ai.dev/usage?tab=rate-limit. \n* Quota exceeded for metric: {metric}, \
             limit: 250, model: {model}\nPlease retry in 38.415612318s."
        );
        let details = vec![
            help_detail(),
            quota_failure(
                metric,
                "GenerateRequestsPerDayPerProjectPerModel-FreeTier",
                model,
                Some("250"),
            ),
            retry_info("38s"),
        ];
        Reply::google(
            429,
            google_error(429, "RESOURCE_EXHAUSTED", &message, details),
        )
    }

    /// 429 with "limit: 0": the model has no quota at all on this key's project and tier.
    pub fn no_quota(model: &str) -> Reply {
        let metric = "generativelanguage.googleapis.com/generate_content_free_tier_requests";
        let message = format!(
            "You exceeded your current quota, please check your plan and billing details. For more \
             information on this error, head to: {HELP_URL}. To monitor your current usage, head \
             to: https://ai.dev/usage?tab=rate-limit. \n* Quota exceeded for metric: {metric}, \
             limit: 0, model: {model}\n* Quota exceeded for metric: {metric}, limit: 0, model: \
             {model}\nPlease retry in 47.517970178s."
        );
        let details = vec![
            help_detail(),
            json!({ "@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [
                { "quotaMetric": metric, "quotaId": "GenerateRequestsPerDayPerProjectPerModel-FreeTier",
                  "quotaDimensions": { "model": model, "location": "global" } },
                { "quotaMetric": metric, "quotaId": "GenerateRequestsPerMinutePerProjectPerModel-FreeTier",
                  "quotaDimensions": { "model": model, "location": "global" } }
            ]}),
            retry_info("47s"),
        ];
        Reply::google(
            429,
            google_error(429, "RESOURCE_EXHAUSTED", &message, details),
        )
    }

    /// 400 INVALID_ARGUMENT with ErrorInfo `API_KEY_INVALID`.
    pub fn api_key_invalid() -> Reply {
        let message = "API key not valid. Please pass a valid API key.";
        Reply::google(
            400,
            google_error(
                400,
                "INVALID_ARGUMENT",
                message,
                vec![
                    json!({ "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                            "reason": "API_KEY_INVALID", "domain": "googleapis.com",
                            "metadata": { "service": "generativelanguage.googleapis.com" } }),
                    json!({ "@type": "type.googleapis.com/google.rpc.LocalizedMessage",
                            "locale": "en-US", "message": message }),
                ],
            ),
        )
    }

    /// 403 PERMISSION_DENIED: the key was reported as leaked.
    pub fn leaked_key() -> Reply {
        Reply::google(
            403,
            google_error(
                403,
                "PERMISSION_DENIED",
                "Your API key was reported as leaked. Please use another API key.",
                vec![],
            ),
        )
    }

    /// 403 PERMISSION_DENIED: the request carried no key.
    pub fn unregistered_caller() -> Reply {
        Reply::google(
            403,
            google_error(
                403,
                "PERMISSION_DENIED",
                "Method doesn't allow unregistered callers (callers without established \
                 identity). Please use API Key or other form of API consumer identity to call \
                 this API.",
                vec![],
            ),
        )
    }

    /// 503 UNAVAILABLE: the model (not the key) is overloaded.
    pub fn overloaded() -> Reply {
        Reply::google(
            503,
            google_error(
                503,
                "UNAVAILABLE",
                "The model is overloaded. Please try again later.",
                vec![],
            ),
        )
    }

    /// 500 INTERNAL.
    pub fn internal() -> Reply {
        Reply::google(
            500,
            google_error(
                500,
                "INTERNAL",
                "An internal error has occurred. Please retry or report in \
                 https://developers.generativeai.google/guide/troubleshooting",
                vec![],
            ),
        )
    }

    /// 400 INVALID_ARGUMENT with `message` (the client's fault).
    pub fn bad_request(message: &str) -> Reply {
        Reply::google(400, google_error(400, "INVALID_ARGUMENT", message, vec![]))
    }

    /// 404 NOT_FOUND for an unknown model.
    pub fn model_not_found(model: &str) -> Reply {
        Reply::google(
            404,
            google_error(
                404,
                "NOT_FOUND",
                &format!(
                    "models/{model} is not found for API version v1beta, or is not supported for \
                     generateContent. Call ListModels to see the list of available models and \
                     their supported methods."
                ),
                vec![],
            ),
        )
    }

    /// A 200 SSE stream: the `before` events, then one event holding `error`'s body (a JSON
    /// reply such as [`Reply::overloaded`]), then EOF.
    pub fn error_in_stream(before: Vec<Value>, error: Reply) -> Reply {
        let mut events = before;
        events.push(error.body().clone());
        Reply::stream(events)
    }
}

fn quota_failure(metric: &str, quota_id: &str, model: &str, value: Option<&str>) -> Value {
    let mut v = json!({ "quotaMetric": metric, "quotaId": quota_id,
                        "quotaDimensions": { "location": "global", "model": model } });
    if let Some(value) = value {
        v["quotaValue"] = json!(value);
    }
    json!({ "@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [v] })
}

fn help_detail() -> Value {
    json!({ "@type": "type.googleapis.com/google.rpc.Help",
            "links": [{ "description": "Learn more about Gemini API quotas", "url": HELP_URL }] })
}

fn retry_info(delay: &str) -> Value {
    json!({ "@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": delay })
}

/// One request as the fake saw it.
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    pub headers: HeaderMap,
    /// The body parsed as JSON, when it is JSON.
    pub body: Option<Value>,
    pub raw_body: Bytes,
    /// The key used (header first, else `?key=`).
    pub key: Option<String>,
    /// The model in the path, without `models/`.
    pub model: Option<String>,
}

impl RecordedRequest {
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Scope {
    KeyModel(String, String),
    Key(String),
    Model(String),
    Any,
    ModelsList,
}

#[derive(Default)]
struct Queue {
    queue: VecDeque<Reply>,
    always: Option<Reply>,
}

impl Queue {
    fn next(&mut self) -> Option<Reply> {
        self.queue.pop_front().or_else(|| self.always.clone())
    }
}

#[derive(Default)]
struct Log {
    requests: Vec<RecordedRequest>,
    hits: HashMap<(String, String), u64>,
}

struct Shared {
    keys: Mutex<Option<HashSet<String>>>,
    models: Mutex<Vec<Value>>,
    scripts: Mutex<HashMap<Scope, Queue>>,
    log: Mutex<Log>,
    strict: AtomicBool,
    embedding_dims: AtomicUsize,
    /// Gemini 3 thought-signature validation (see [`FakeGemini::require_signatures`]).
    require_signatures: AtomicBool,
    /// Signatures this fake handed out in replies: the only real ones it accepts back.
    issued_signatures: Mutex<HashSet<String>>,
    in_flight: AtomicU64,
    cancellations: AtomicU64,
    keys_in_url: AtomicU64,
    next_id: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking test thread must not hide every later assertion behind a poisoned lock.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Builder for [`FakeGemini`].
pub struct FakeGeminiBuilder {
    keys: Option<Vec<String>>,
    models: Vec<Value>,
    strict: bool,
    embedding_dims: usize,
}

impl FakeGeminiBuilder {
    /// Only these keys are valid; others get `API_KEY_INVALID`. Without it any key is accepted.
    pub fn keys<I, S>(mut self, keys: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        self.keys = Some(keys.into_iter().map(|k| k.as_ref().to_string()).collect());
        self
    }

    /// The model catalog, by id (`gemini-2.5-flash`).
    pub fn models(mut self, ids: &[&str]) -> Self {
        self.models = ids.iter().map(|id| model_object(id)).collect();
        self
    }

    /// The model catalog, as raw Model objects.
    pub fn model_objects(mut self, models: Vec<Value>) -> Self {
        self.models = models;
        self
    }

    /// Reject unknown top-level fields in generateContent bodies, like Google.
    pub fn strict(mut self, on: bool) -> Self {
        self.strict = on;
        self
    }

    /// Embedding size when the request gives no `outputDimensionality` (Google: 3072).
    pub fn embedding_dims(mut self, dims: usize) -> Self {
        self.embedding_dims = dims;
        self
    }

    /// Binds 127.0.0.1:0 and serves on the current tokio runtime.
    pub async fn start(self) -> FakeGemini {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("fake gemini: bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("fake gemini: local addr");
        let shared = Arc::new(Shared {
            keys: Mutex::new(self.keys.map(|k| k.into_iter().collect())),
            models: Mutex::new(self.models),
            scripts: Mutex::new(HashMap::new()),
            log: Mutex::new(Log::default()),
            strict: AtomicBool::new(self.strict),
            embedding_dims: AtomicUsize::new(self.embedding_dims),
            require_signatures: AtomicBool::new(false),
            issued_signatures: Mutex::new(HashSet::new()),
            in_flight: AtomicU64::new(0),
            cancellations: AtomicU64::new(0),
            keys_in_url: AtomicU64::new(0),
            next_id: AtomicU64::new(1),
        });
        let stop = CancellationToken::new();
        tokio::spawn(accept_loop(listener, shared.clone(), stop.clone()));
        FakeGemini { addr, shared, stop }
    }
}

async fn accept_loop(
    listener: tokio::net::TcpListener,
    shared: Arc<Shared>,
    stop: CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let Ok((stream, _)) = accepted else {
            // Out of descriptors or similar: back off instead of spinning.
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let shared = shared.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let shared = shared.clone();
                async move { Ok::<_, Infallible>(handle(shared, req).await) }
            });
            let conn = http1::Builder::new().serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                _ = conn => {}
                _ = stop.cancelled() => {}
            }
        });
    }
}

/// A fake Gemini upstream on 127.0.0.1. Dropping it stops the server.
pub struct FakeGemini {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: CancellationToken,
}

impl Drop for FakeGemini {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// A scripting handle for one scope, from [`FakeGemini::on`] and friends.
pub struct Script<'a> {
    fake: &'a FakeGemini,
    scope: Scope,
}

impl Script<'_> {
    /// Queues `reply`: served once, in order, before the fallback.
    pub fn then(self, reply: Reply) -> Self {
        lock(&self.fake.shared.scripts)
            .entry(self.scope.clone())
            .or_default()
            .queue
            .push_back(reply);
        self
    }

    /// The sticky fallback once the queue is empty.
    pub fn always(self, reply: Reply) -> Self {
        lock(&self.fake.shared.scripts)
            .entry(self.scope.clone())
            .or_default()
            .always = Some(reply);
        self
    }

    /// Forgets this scope's queue and fallback.
    pub fn clear(self) -> Self {
        lock(&self.fake.shared.scripts).remove(&self.scope);
        self
    }
}

impl FakeGemini {
    pub fn builder() -> FakeGeminiBuilder {
        FakeGeminiBuilder {
            keys: None,
            models: DEFAULT_MODELS.iter().map(|id| model_object(id)).collect(),
            strict: false,
            embedding_dims: 3072,
        }
    }

    /// A fake with default settings: any key, the default catalog.
    pub async fn start() -> FakeGemini {
        FakeGemini::builder().start().await
    }

    /// `http://127.0.0.1:PORT`, the value for the proxy's `upstream.base_url`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Replies for requests with this key to this model (most specific scope).
    pub fn on(&self, key: &str, model: &str) -> Script<'_> {
        self.script(Scope::KeyModel(key.into(), model.into()))
    }

    /// Replies for this key, any model.
    pub fn on_key(&self, key: &str) -> Script<'_> {
        self.script(Scope::Key(key.into()))
    }

    /// Replies for this model, any key.
    pub fn on_model(&self, model: &str) -> Script<'_> {
        self.script(Scope::Model(model.into()))
    }

    /// Replies for every model request not scripted more specifically.
    pub fn on_any(&self) -> Script<'_> {
        self.script(Scope::Any)
    }

    /// Replies for `GET /v1beta/models` (model scripts never apply to it); a success means
    /// "serve the catalog".
    pub fn on_models_list(&self) -> Script<'_> {
        self.script(Scope::ModelsList)
    }

    fn script(&self, scope: Scope) -> Script<'_> {
        Script { fake: self, scope }
    }

    /// Turns Google-like validation of unknown top-level fields on or off.
    pub fn strict(&self, on: bool) {
        self.shared.strict.store(on, Ordering::SeqCst);
    }

    /// Validates Gemini 3 thought signatures like Google: on a `gemini-3*` model, the first
    /// `functionCall` part of every model turn since the last user prompt must carry a
    /// `thoughtSignature` that this fake issued (or a documented stand-in), else 400.
    pub fn require_signatures(&self, on: bool) {
        self.shared.require_signatures.store(on, Ordering::SeqCst);
    }

    /// Makes `key` valid (when a key set is configured).
    pub fn allow_key(&self, key: &str) {
        if let Some(keys) = lock(&self.shared.keys).as_mut() {
            keys.insert(key.to_string());
        }
    }

    /// Makes `key` invalid: it now gets `API_KEY_INVALID` (starts a key set if there was none).
    pub fn revoke_key(&self, key: &str) {
        let mut keys = lock(&self.shared.keys);
        match keys.as_mut() {
            Some(keys) => {
                keys.remove(key);
            }
            None => {
                // Any key was accepted: keep accepting every key seen so far except this one.
                let seen: HashSet<String> = lock(&self.shared.log)
                    .hits
                    .keys()
                    .map(|(k, _)| k.clone())
                    .filter(|k| k != key)
                    .collect();
                *keys = Some(seen);
            }
        }
    }

    /// Replaces the model catalog.
    pub fn set_models(&self, ids: &[&str]) {
        *lock(&self.shared.models) = ids.iter().map(|id| model_object(id)).collect();
    }

    /// Requests that carried `key` for `model` (the list route counts under model "").
    pub fn hits(&self, key: &str, model: &str) -> u64 {
        let log = lock(&self.shared.log);
        log.hits
            .get(&(key.to_string(), model.to_string()))
            .copied()
            .unwrap_or(0)
    }

    /// Requests that carried `key`, any route.
    pub fn hits_for_key(&self, key: &str) -> u64 {
        let log = lock(&self.shared.log);
        log.hits
            .iter()
            .filter(|((k, _), _)| k == key)
            .map(|(_, n)| n)
            .sum()
    }

    /// Requests for `model`, any key.
    pub fn hits_for_model(&self, model: &str) -> u64 {
        let log = lock(&self.shared.log);
        log.hits
            .iter()
            .filter(|((_, m), _)| m == model)
            .map(|(_, n)| n)
            .sum()
    }

    /// Every request received, keyed or not.
    pub fn total_hits(&self) -> u64 {
        lock(&self.shared.log).requests.len() as u64
    }

    /// Every request received, in arrival order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.shared.log).requests.clone()
    }

    pub fn last_request(&self) -> Option<RecordedRequest> {
        lock(&self.shared.log).requests.last().cloned()
    }

    /// Requests whose client left before the fake finished replying.
    pub fn cancellations(&self) -> u64 {
        self.shared.cancellations.load(Ordering::SeqCst)
    }

    /// Requests being answered right now.
    pub fn in_flight(&self) -> u64 {
        self.shared.in_flight.load(Ordering::SeqCst)
    }

    /// Requests that carried `key=` in the query string (the proxy must never do this).
    pub fn keys_in_url(&self) -> u64 {
        self.shared.keys_in_url.load(Ordering::SeqCst)
    }

    /// Forgets recorded requests and counters (scripts stay).
    pub fn reset_counters(&self) {
        *lock(&self.shared.log) = Log::default();
        self.shared.cancellations.store(0, Ordering::SeqCst);
        self.shared.keys_in_url.store(0, Ordering::SeqCst);
    }

    /// Polls `cond` every 10 ms until it holds or `timeout` (wall clock, so a paused tokio clock
    /// cannot end it early) passes; returns whether it held.
    pub async fn wait_for(&self, cond: impl Fn(&FakeGemini) -> bool, timeout: Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if cond(self) {
                return true;
            }
            if std::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Route {
    Generate(String),
    Stream { model: String, sse: bool },
    CountTokens(String),
    Embed(String),
    BatchEmbed(String),
    ListModels,
    GetModel(String),
    Unknown,
}

impl Route {
    fn parse(method: &Method, path: &str, query: &HashMap<String, String>) -> Route {
        let Some(rest) = path.strip_prefix("/v1beta/models") else {
            return Route::Unknown;
        };
        if rest.is_empty() || rest == "/" {
            return if method == Method::GET {
                Route::ListModels
            } else {
                Route::Unknown
            };
        }
        let Some(rest) = rest.strip_prefix('/') else {
            return Route::Unknown;
        };
        if method == Method::GET {
            return Route::GetModel(rest.to_string());
        }
        if method != Method::POST {
            return Route::Unknown;
        }
        let Some((model, action)) = rest.rsplit_once(':') else {
            return Route::Unknown;
        };
        let model = model.to_string();
        match action {
            "generateContent" => Route::Generate(model),
            "streamGenerateContent" => Route::Stream {
                model,
                sse: query.get("alt").map(String::as_str) == Some("sse"),
            },
            "countTokens" => Route::CountTokens(model),
            "embedContent" => Route::Embed(model),
            "batchEmbedContents" => Route::BatchEmbed(model),
            _ => Route::Unknown,
        }
    }

    fn model(&self) -> Option<&str> {
        match self {
            Route::Generate(m)
            | Route::Stream { model: m, .. }
            | Route::CountTokens(m)
            | Route::Embed(m)
            | Route::BatchEmbed(m)
            | Route::GetModel(m) => Some(m),
            Route::ListModels | Route::Unknown => None,
        }
    }
}

fn parse_query(query: Option<&str>) -> HashMap<String, String> {
    let mut out = HashMap::new();
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        out.insert(percent_decode(k), percent_decode(v));
    }
    out
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 3;
                    }
                    Err(_) => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Counts one request in `in_flight`; counts a cancellation if dropped before `done`.
struct Flight {
    shared: Arc<Shared>,
    done: bool,
}

impl Flight {
    fn new(shared: &Arc<Shared>) -> Flight {
        shared.in_flight.fetch_add(1, Ordering::SeqCst);
        Flight {
            shared: shared.clone(),
            done: false,
        }
    }
}

impl Drop for Flight {
    fn drop(&mut self) {
        self.shared.in_flight.fetch_sub(1, Ordering::SeqCst);
        if !self.done {
            self.shared.cancellations.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// The fake's response body: a whole buffer, or frames fed by a producer task.
pub struct FakeBody {
    full: Option<Bytes>,
    frames: Option<mpsc::Receiver<io::Result<Bytes>>>,
    /// An abort waiting one poll, so hyper flushes the frames before it drops the connection.
    abort: Option<io::Error>,
    flight: Option<Flight>,
}

impl FakeBody {
    fn finish(&mut self) {
        if let Some(mut flight) = self.flight.take() {
            flight.done = true;
        }
    }
}

impl Body for FakeBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        if let Some(e) = self.abort.take() {
            self.finish();
            return Poll::Ready(Some(Err(e)));
        }
        if let Some(rx) = self.frames.as_mut() {
            return match rx.poll_recv(cx) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(Some(Ok(bytes))) => Poll::Ready(Some(Ok(Frame::data(bytes)))),
                Poll::Ready(Some(Err(e))) => {
                    // hyper flushes its write buffer when the body is pending; erroring now
                    // would drop the last frames unsent.
                    self.abort = Some(e);
                    cx.waker().wake_by_ref();
                    Poll::Pending
                }
                Poll::Ready(None) => {
                    self.finish();
                    Poll::Ready(None)
                }
            };
        }
        Poll::Ready(self.full.take().map(|b| Ok(Frame::data(b))))
    }

    fn is_end_stream(&self) -> bool {
        self.frames.is_none() && self.full.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        match (&self.frames, &self.full) {
            (None, Some(b)) => SizeHint::with_exact(b.len() as u64),
            (None, None) => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}

fn full(
    status: u16,
    content_type: &str,
    body: Bytes,
    headers: &[(String, String)],
) -> Response<FakeBody> {
    let mut builder = Response::builder()
        .status(StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header("content-type", content_type);
    for (k, v) in headers {
        builder = builder.header(k.as_str(), v.as_str());
    }
    builder
        .body(FakeBody {
            full: Some(body),
            frames: None,
            abort: None,
            flight: None,
        })
        .expect("fake gemini: response head")
}

fn json_response(status: u16, body: &Value) -> Response<FakeBody> {
    full(status, JSON_CT, Bytes::from(body.to_string()), &[])
}

fn streamed(
    content_type: &str,
    frames: Vec<Bytes>,
    delay: Duration,
    end: StreamEnd,
    flight: Flight,
) -> Response<FakeBody> {
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(async move {
        for (i, frame) in frames.into_iter().enumerate() {
            if i > 0 && !delay.is_zero() {
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = tx.closed() => return,
                }
            }
            if tx.send(Ok(frame)).await.is_err() {
                return;
            }
        }
        match end {
            StreamEnd::Eof => {}
            // Ends when the client (or the fake's shutdown) drops the body.
            StreamEnd::Hang => tx.closed().await,
            StreamEnd::Abort => {
                let _ = tx
                    .send(Err(io::Error::new(
                        io::ErrorKind::ConnectionAborted,
                        "fake gemini: abrupt close",
                    )))
                    .await;
            }
        }
    });
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", content_type)
        .body(FakeBody {
            full: None,
            frames: Some(rx),
            abort: None,
            flight: Some(flight),
        })
        .expect("fake gemini: response head")
}

/// SSE frames for events (CRLF framing like Google), or JSON-array frames.
fn stream_frames(events: &[Value], sse: bool, end: StreamEnd) -> Vec<Bytes> {
    let mut frames: Vec<Bytes> = events
        .iter()
        .enumerate()
        .map(|(i, ev)| {
            if sse {
                Bytes::from(format!("data: {ev}\r\n\r\n"))
            } else if i == 0 {
                Bytes::from(format!("[{ev}\n"))
            } else {
                Bytes::from(format!(",\r\n{ev}\n"))
            }
        })
        .collect();
    if !sse && end == StreamEnd::Eof {
        frames.push(Bytes::from_static(if events.is_empty() {
            b"[]"
        } else {
            b"]"
        }));
    }
    frames
}

fn count_text_chars(v: &Value) -> usize {
    match v {
        Value::Object(map) => map
            .iter()
            .map(|(k, v)| match (k.as_str(), v) {
                ("text", Value::String(s)) => s.chars().count(),
                _ => count_text_chars(v),
            })
            .sum(),
        Value::Array(items) => items.iter().map(count_text_chars).sum(),
        _ => 0,
    }
}

fn tokens_for_chars(chars: usize) -> u64 {
    (chars as u64).div_ceil(4).max(1)
}

fn content_text(v: &Value) -> String {
    v.pointer("/content/parts")
        .and_then(Value::as_array)
        .map(|parts| {
            parts
                .iter()
                .filter_map(|p| p.get("text").and_then(Value::as_str))
                .collect::<Vec<_>>()
                .join("")
        })
        .unwrap_or_default()
}

const KNOWN_GENERATE_FIELDS: &[&str] = &[
    "model",
    "contents",
    "systemInstruction",
    "system_instruction",
    "tools",
    "toolConfig",
    "tool_config",
    "safetySettings",
    "safety_settings",
    "generationConfig",
    "generation_config",
    "cachedContent",
    "cached_content",
];

fn invalid_json(message: &str) -> Response<FakeBody> {
    json_response(
        400,
        &google_error(
            400,
            "INVALID_ARGUMENT",
            message,
            vec![
                json!({ "@type": "type.googleapis.com/google.rpc.BadRequest",
                         "fieldViolations": [{ "description": message }] }),
            ],
        ),
    )
}

/// What a request needs to render a reply.
struct Ctx {
    route: Route,
    model: String,
    key: String,
    body: Option<Value>,
    response_id: String,
}

async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Response<FakeBody> {
    let mut flight = Flight::new(&shared);
    let (parts, body) = req.into_parts();
    let raw_body = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        // The client left while sending: the flight guard counts it.
        Err(_) => return json_response(400, &json!({})),
    };
    let query_string = parts.uri.query().map(str::to_owned);
    let query = parse_query(query_string.as_deref());
    let route = Route::parse(&parts.method, parts.uri.path(), &query);

    let header_key = parts
        .headers
        .get("x-goog-api-key")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
        .map(str::to_owned);
    let url_key = query.get("key").filter(|k| !k.is_empty()).cloned();
    if query.contains_key("key") {
        shared.keys_in_url.fetch_add(1, Ordering::SeqCst);
    }
    let key = header_key.or(url_key);
    let body_json: Option<Value> = serde_json::from_slice(&raw_body).ok();
    {
        let mut log = lock(&shared.log);
        log.requests.push(RecordedRequest {
            method: parts.method.to_string(),
            path: parts.uri.path().to_string(),
            query: query_string,
            headers: parts.headers.clone(),
            body: body_json.clone(),
            raw_body: raw_body.clone(),
            key: key.clone(),
            model: route.model().map(str::to_owned),
        });
        if let Some(key) = &key {
            let model = route.model().unwrap_or("").to_string();
            *log.hits.entry((key.clone(), model)).or_default() += 1;
        }
    }

    let response = respond(&shared, route, key, body_json, &raw_body, &query).await;
    match response {
        Responded::Now(resp) => {
            flight.done = true;
            resp
        }
        Responded::Stream(make) => make(flight),
    }
}

enum Responded {
    Now(Response<FakeBody>),
    Stream(Box<dyn FnOnce(Flight) -> Response<FakeBody> + Send>),
}

async fn respond(
    shared: &Arc<Shared>,
    route: Route,
    key: Option<String>,
    body: Option<Value>,
    raw_body: &Bytes,
    query: &HashMap<String, String>,
) -> Responded {
    use Responded::Now;
    if route == Route::Unknown {
        return Now(json_response(
            404,
            &google_error(404, "NOT_FOUND", "Method not found.", vec![]),
        ));
    }
    let Some(key) = key else {
        let reply = Reply::unregistered_caller();
        return Now(json_response(403, reply.body()));
    };
    let known = lock(&shared.keys)
        .as_ref()
        .is_none_or(|keys| keys.contains(&key));
    if !known {
        return Now(json_response(400, Reply::api_key_invalid().body()));
    }

    match &route {
        Route::ListModels => {
            let scripted = next_reply(shared, &[Scope::ModelsList]);
            return match scripted {
                None | Some(Reply::Success(_)) => Now(list_models(shared, query)),
                Some(reply) => render_scripted(reply, route, key, body, shared).await,
            };
        }
        Route::GetModel(model) => {
            // Only the model scopes apply here (key-wide scripts are about generation), and a
            // success means "serve the model object".
            let scripted = next_reply(
                shared,
                &[
                    Scope::KeyModel(key.clone(), model.clone()),
                    Scope::Model(model.clone()),
                ],
            );
            if let Some(reply) = scripted.filter(|r| !matches!(r, Reply::Success(_))) {
                return render_scripted(reply, route.clone(), key, body, shared).await;
            }
            let found = lock(&shared.models)
                .iter()
                .find(|m| m["name"] == json!(format!("models/{model}")))
                .cloned();
            return Now(match found {
                Some(m) => json_response(200, &m),
                None => json_response(
                    404,
                    &google_error(
                        404,
                        "NOT_FOUND",
                        &format!("models/{model} is not found for API version v1beta."),
                        vec![],
                    ),
                ),
            });
        }
        Route::Generate(_) | Route::Stream { .. } => {
            let Some(Value::Object(map)) = &body else {
                let snippet =
                    String::from_utf8_lossy(&raw_body[..raw_body.len().min(16)]).into_owned();
                return Now(invalid_json(&format!(
                    "Invalid JSON payload received. Unexpected token.\n{snippet}\n^"
                )));
            };
            if shared.require_signatures.load(Ordering::SeqCst)
                && route.model().is_some_and(|m| m.starts_with("gemini-3"))
            {
                let issued = lock(&shared.issued_signatures);
                if let Some(message) = signature_violation(map, &issued) {
                    return Now(json_response(
                        400,
                        &google_error(400, "INVALID_ARGUMENT", &message, vec![]),
                    ));
                }
            }
            if shared.strict.load(Ordering::SeqCst) {
                if let Some(unknown) = map
                    .keys()
                    .find(|k| !KNOWN_GENERATE_FIELDS.contains(&k.as_str()))
                {
                    return Now(invalid_json(&format!(
                        "Invalid JSON payload received. Unknown name \"{unknown}\": Cannot find field."
                    )));
                }
            }
        }
        Route::BatchEmbed(_) => {
            let n = body
                .as_ref()
                .and_then(|b| b.get("requests"))
                .and_then(Value::as_array)
                .map_or(0, Vec::len);
            if n > 100 {
                return Now(json_response(
                    400,
                    Reply::bad_request(
                        "* BatchEmbedContentsRequest.requests: at most 100 requests can be in one batch\n",
                    )
                    .body(),
                ));
            }
        }
        Route::CountTokens(_) | Route::Embed(_) | Route::Unknown => {}
    }

    let model = route.model().unwrap_or("").to_string();
    let scopes = [
        Scope::KeyModel(key.clone(), model.clone()),
        Scope::Key(key.clone()),
        Scope::Model(model.clone()),
        Scope::Any,
    ];
    let reply =
        next_reply(shared, &scopes).unwrap_or_else(|| Reply::text(default_text(&model, &key)));
    render_scripted(reply, route, key, body, shared).await
}

fn next_reply(shared: &Shared, scopes: &[Scope]) -> Option<Reply> {
    let mut scripts = lock(&shared.scripts);
    scopes
        .iter()
        .find_map(|scope| scripts.get_mut(scope).and_then(Queue::next))
}

async fn render_scripted(
    mut reply: Reply,
    route: Route,
    key: String,
    body: Option<Value>,
    shared: &Arc<Shared>,
) -> Responded {
    // Delays and hangs happen before any header is sent; dropping this future (client gone)
    // drops the flight guard, which counts the cancellation.
    let mut guard = 0;
    while let Reply::Delay(d, inner) = reply {
        tokio::time::sleep(d).await;
        reply = *inner;
        guard += 1;
        assert!(guard < 1000, "fake gemini: nested delays");
    }
    if let Reply::Hang = reply {
        std::future::pending::<()>().await;
    }
    let id = shared.next_id.fetch_add(1, Ordering::SeqCst);
    let ctx = Ctx {
        model: route.model().unwrap_or("").to_string(),
        route,
        key,
        body,
        response_id: format!("fakeResp{id:06}"),
    };
    let dims = shared.embedding_dims.load(Ordering::SeqCst);
    remember_signatures(&reply, &shared.issued_signatures);
    render(reply, &ctx, dims)
}

fn render(reply: Reply, ctx: &Ctx, dims: usize) -> Responded {
    use Responded::{Now, Stream};
    let sse = match ctx.route {
        Route::Stream { sse, .. } => sse,
        _ => true,
    };
    match reply {
        Reply::Json {
            status,
            body,
            headers,
            google_error,
        } => {
            let body = if google_error && matches!(ctx.route, Route::Stream { sse: false, .. }) {
                Value::Array(vec![body])
            } else {
                body
            };
            Now(full(
                status,
                JSON_CT,
                Bytes::from(body.to_string()),
                &headers,
            ))
        }
        Reply::Stream {
            events,
            event_delay,
            end,
        } => {
            let frames = stream_frames(&events, sse, end);
            let ct = if sse { SSE_CT } else { JSON_CT };
            Stream(Box::new(move |flight| {
                streamed(ct, frames, event_delay, end, flight)
            }))
        }
        Reply::Success(success) => render_success(success, ctx, dims),
        Reply::Delay(..) | Reply::Hang => unreachable!("resolved before render"),
    }
}

fn render_success(s: Success, ctx: &Ctx, dims: usize) -> Responded {
    use Responded::{Now, Stream};
    let prompt_chars = ctx.body.as_ref().map_or(0, count_text_chars);
    let prompt_tokens = tokens_for_chars(prompt_chars);
    match &ctx.route {
        Route::CountTokens(_) => {
            return Now(json_response(
                200,
                &json!({ "totalTokens": prompt_tokens,
                         "promptTokensDetails": [{ "modality": "TEXT", "tokenCount": prompt_tokens }] }),
            ))
        }
        Route::Embed(_) => {
            let body = ctx.body.clone().unwrap_or(Value::Null);
            let d = body
                .get("outputDimensionality")
                .and_then(Value::as_u64)
                .map_or(dims, |d| d as usize);
            let values = fake_embedding(&content_text(&body), d);
            return Now(json_response(
                200,
                &json!({ "embedding": { "values": values } }),
            ));
        }
        Route::BatchEmbed(_) => {
            let requests = ctx
                .body
                .as_ref()
                .and_then(|b| b.get("requests"))
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let embeddings: Vec<Value> = requests
                .iter()
                .map(|r| {
                    let d = r
                        .get("outputDimensionality")
                        .and_then(Value::as_u64)
                        .map_or(dims, |d| d as usize);
                    json!({ "values": fake_embedding(&content_text(r), d) })
                })
                .collect();
            return Now(json_response(200, &json!({ "embeddings": embeddings })));
        }
        _ => {}
    }

    // The pieces each stream event carries; non-streamed replies join them.
    let pieces: Vec<Vec<Value>> = match &s.content {
        Content::Text(text) => split_text(text, s.chunks)
            .into_iter()
            .map(|t| vec![json!({ "text": t })])
            .collect(),
        Content::Parts(parts) if parts.is_empty() => vec![vec![]],
        Content::Parts(parts) => parts.iter().map(|p| vec![p.clone()]).collect(),
    };
    let usage = |chars: usize| {
        let candidates = if chars == 0 {
            0
        } else {
            tokens_for_chars(chars)
        };
        let thoughts = s.thoughts_tokens.unwrap_or(0);
        let mut u = json!({
            "promptTokenCount": prompt_tokens,
            "candidatesTokenCount": candidates,
            "totalTokenCount": prompt_tokens + candidates + thoughts,
            "promptTokensDetails": [{ "modality": "TEXT", "tokenCount": prompt_tokens }],
        });
        if let Some(t) = s.thoughts_tokens {
            u["thoughtsTokenCount"] = json!(t);
        }
        u
    };
    let decorate = |mut ev: Value, chars: usize| {
        ev["usageMetadata"] = usage(chars);
        ev["modelVersion"] = json!(ctx.model);
        ev["responseId"] = json!(ctx.response_id);
        ev
    };

    match &ctx.route {
        Route::Stream { sse, .. } => {
            let n = pieces.len();
            let mut chars = 0;
            let events: Vec<Value> = pieces
                .into_iter()
                .enumerate()
                .map(|(i, parts)| {
                    chars += count_text_chars(&Value::Array(parts.clone()));
                    let finish = (i + 1 == n).then_some(s.finish_reason.as_str());
                    decorate(chunk_with_parts(parts, finish), chars)
                })
                .collect();
            let frames = stream_frames(&events, *sse, StreamEnd::Eof);
            let ct = if *sse { SSE_CT } else { JSON_CT };
            let delay = s.event_delay;
            Stream(Box::new(move |flight| {
                streamed(ct, frames, delay, StreamEnd::Eof, flight)
            }))
        }
        _ => {
            let parts: Vec<Value> = match &s.content {
                Content::Text(text) => vec![json!({ "text": text })],
                Content::Parts(parts) => parts.clone(),
            };
            let chars = count_text_chars(&Value::Array(parts.clone()));
            let mut ev = decorate(chunk_with_parts(parts, Some(&s.finish_reason)), chars);
            ev["candidates"][0]["avgLogprobs"] = json!(-0.12);
            Now(json_response(200, &ev))
        }
    }
}

/// Google's documented stand-ins for a signature the client no longer has.
pub const SIGNATURE_STAND_INS: &[&str] = &[
    "skip_thought_signature_validator",
    "context_engineering_is_the_way_to_go",
];

/// Records every `thoughtSignature` a reply hands out.
fn remember_signatures(reply: &Reply, issued: &Mutex<HashSet<String>>) {
    fn walk(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(map) => {
                for (k, v) in map {
                    match (k.as_str(), v) {
                        ("thoughtSignature", Value::String(s)) => out.push(s.clone()),
                        _ => walk(v, out),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|i| walk(i, out)),
            _ => {}
        }
    }
    let mut found = Vec::new();
    match reply {
        Reply::Success(Success {
            content: Content::Parts(parts),
            ..
        }) => parts.iter().for_each(|p| walk(p, &mut found)),
        Reply::Stream { events, .. } => events.iter().for_each(|e| walk(e, &mut found)),
        _ => {}
    }
    lock(issued).extend(found);
}

/// Google's check of Gemini 3 thought signatures on a generateContent body: only the current
/// turn (model turns after the last user turn that is more than function responses) is
/// validated, and only the first `functionCall` part of each of its model turns. The wording
/// is Google's.
fn signature_violation(
    body: &serde_json::Map<String, Value>,
    issued: &HashSet<String>,
) -> Option<String> {
    let contents = body.get("contents")?.as_array()?;
    let is_prompt = |c: &Value| {
        c.get("role").and_then(Value::as_str) == Some("user")
            && c.get("parts")
                .and_then(Value::as_array)
                .is_some_and(|parts| {
                    parts.iter().any(|p| {
                        p.get("functionResponse").is_none() && p.get("function_response").is_none()
                    })
                })
    };
    let start = contents.iter().rposition(is_prompt).map_or(0, |i| i + 1);
    for (position, content) in contents.iter().enumerate().skip(start) {
        if content.get("role").and_then(Value::as_str) != Some("model") {
            continue;
        }
        let parts = content.get("parts").and_then(Value::as_array)?;
        let Some(first) = parts
            .iter()
            .find(|p| p.get("functionCall").is_some() || p.get("function_call").is_some())
        else {
            continue;
        };
        let call = first
            .get("functionCall")
            .or_else(|| first.get("function_call"))?;
        let name = call.get("name").and_then(Value::as_str).unwrap_or("");
        let signature = first
            .get("thoughtSignature")
            .or_else(|| first.get("thought_signature"))
            .and_then(Value::as_str);
        match signature {
            None => {
                return Some(format!(
                    "Function call is missing a thought_signature in functionCall parts. This is required for tools to work correctly, and missing thought_signature may lead to degraded model performance. Additional data, function call `default_api:{name}` , position {}. Please refer to https://ai.google.dev/gemini-api/docs/thought-signatures for more details.",
                    position + 1
                ))
            }
            Some(sig) if !issued.contains(sig) && !SIGNATURE_STAND_INS.contains(&sig) => {
                return Some("Corrupted thought signature.".to_string())
            }
            Some(_) => {}
        }
    }
    None
}

/// Splits `text` into at most `n` non-empty pieces at char boundaries (one empty piece for "").
fn split_text(text: &str, n: usize) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    if chars.is_empty() {
        return vec![String::new()];
    }
    let n = n.clamp(1, chars.len());
    let size = chars.len().div_ceil(n);
    chars.chunks(size).map(|c| c.iter().collect()).collect()
}

fn list_models(shared: &Shared, query: &HashMap<String, String>) -> Response<FakeBody> {
    let page_size = match query.get("pageSize").map(|s| s.parse::<i64>()) {
        None => 50,
        Some(Ok(n)) if n <= 0 => 50,
        Some(Ok(n)) => n.min(1000) as usize,
        Some(Err(_)) => {
            return invalid_json("Invalid value at 'page_size' (TYPE_INT32), \"x\"");
        }
    };
    let start = match query.get("pageToken").filter(|t| !t.is_empty()) {
        None => 0,
        Some(token) => match token
            .strip_prefix("fakePage")
            .and_then(|n| n.parse::<usize>().ok())
        {
            Some(n) => n,
            None => return json_response(400, Reply::bad_request("Invalid page token.").body()),
        },
    };
    let models = lock(&shared.models);
    let end = (start + page_size).min(models.len());
    let page: Vec<Value> = models.get(start..end).unwrap_or(&[]).to_vec();
    let mut body = json!({ "models": page });
    if end < models.len() {
        body["nextPageToken"] = json!(format!("fakePage{end}"));
    }
    json_response(200, &body)
}

/// 403 shapes (issue #14): what Google answers when a key, a model or a named resource is
/// refused. Bodies follow Google's `PERMISSION_DENIED` errors with `ErrorInfo` details.
impl Reply {
    /// 403: the key may not use `model` (a free-tier key asking for a model its tier lacks);
    /// ErrorInfo names the model as the resource. The key itself is fine for other models.
    pub fn model_denied(model: &str) -> Reply {
        Reply::google(
            403,
            google_error(
                403,
                "PERMISSION_DENIED",
                &format!(
                    "Permission denied on resource models/{model}: the caller does not have \
                     access to this model on its current tier."
                ),
                vec![json!({ "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                             "reason": "IAM_PERMISSION_DENIED", "domain": "googleapis.com",
                             "metadata": { "resource": format!("models/{model}"),
                                           "permission": "generativelanguage.models.generateContent",
                                           "service": "generativelanguage.googleapis.com" } })],
            ),
        )
    }

    /// 403: the request names a file another project uploaded (the client's error).
    pub fn file_denied(file: &str) -> Reply {
        Reply::google(
            403,
            google_error(
                403,
                "PERMISSION_DENIED",
                &format!(
                    "You do not have permission to access the File {file} or it may not exist."
                ),
                vec![],
            ),
        )
    }

    /// 403: the request names a cached content the key's project cannot see.
    pub fn cached_content_denied() -> Reply {
        Reply::google(
            403,
            google_error(
                403,
                "PERMISSION_DENIED",
                "CachedContent not found (or permission denied)",
                vec![],
            ),
        )
    }

    /// 403: the Generative Language API is disabled in the key's project (`SERVICE_DISABLED`).
    pub fn service_disabled() -> Reply {
        let project = "projects/000000000000";
        Reply::google(
            403,
            google_error(
                403,
                "PERMISSION_DENIED",
                "Generative Language API has not been used in project 000000000000 before or it \
                 is disabled. Enable it by visiting https://console.developers.google.com/apis/\
                 api/generativelanguage.googleapis.com/overview?project=000000000000 then retry. \
                 If you enabled this API recently, wait a few minutes for the action to propagate \
                 to our systems and retry.",
                vec![json!({ "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                             "reason": "SERVICE_DISABLED", "domain": "googleapis.com",
                             "metadata": { "consumer": project,
                                           "service": "generativelanguage.googleapis.com",
                                           "serviceTitle": "Generative Language API",
                                           "containerInfo": "000000000000" } })],
            ),
        )
    }
}
