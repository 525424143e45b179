//! `FakeGemini`: a loopback stand-in for Google's Gemini REST API (v1beta) that speaks the real
//! wire format, so integration tests can run the real proxy against it.
//!
//! This file owns the handle and its builder, the shared state, the scripts (per key and model,
//! per key, per model, or for everything: FIFO queues with a sticky fallback), the hyper server,
//! key checks and the dispatch of each request to its surface. Each surface or concern has its
//! own file, named in the `mod` lines below. The fake must never print or embed a full key in a
//! reply: replies name the key masked (`AIza****0001`). It binds 127.0.0.1 only and stops when
//! dropped.
//!
//! Where things go: a new Google error reply (a `Reply` constructor) goes in `errors.rs`; a new
//! success-shaped reply or modifier in `replies.rs`; a new surface (files, interactions, Live…)
//! gets its own file here, a `Route` variant in `route.rs` and an arm in `respond`/`render`.
//!
//! By default it speaks HTTP/1.1; `FakeGeminiBuilder::http2(n)` makes it also accept h2c (HTTP/2
//! with prior knowledge) on the same port, at most `n` concurrent streams per connection, like
//! Google's SETTINGS_MAX_CONCURRENT_STREAMS. It counts accepted TCP connections (`connections`).

mod batches;
mod body;
mod caches;
mod count_tokens;
mod embeddings;
mod errors;
mod files;
mod generate;
mod images;
mod interactions;
mod live;
mod models;
mod recording;
mod replies;
mod route;
mod signatures;
mod stream;

use std::collections::{HashMap, HashSet, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

pub use body::FakeBody;
pub use embeddings::fake_embedding;
pub use errors::google_error;
pub use files::{fnv1a, FNV_START};
pub use generate::{chunk_with_parts, default_text, text_chunk};
pub use images::{fake_image, fake_image_b64, FAKE_IMAGE_BYTES};
pub use live::{LiveSession, LIVE_PROMPT_TOKENS, LIVE_RESPONSE_TOKENS};
pub use models::{model_object, DEFAULT_MODELS};
pub use recording::RecordedRequest;
pub use replies::{Reply, StreamEnd, Success};
pub use signatures::SIGNATURE_STAND_INS;

use body::{full, json_response, JSON_CT};
use recording::{Flight, Log};
use route::{parse_query, Route};
use signatures::remember_signatures;

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
    /// TCP connections accepted (see [`FakeGemini::connections`]).
    connections: AtomicU64,
    /// Requests that arrived over HTTP/2 (see [`FakeGemini::http2_requests`]).
    http2_requests: AtomicU64,
    /// `Some(n)`: h2c accepted too, at most `n` concurrent streams per connection.
    http2_max_streams: Option<u32>,
    /// HTTP/1.1: how long after an answer its connection is dropped, silently (no
    /// `Connection: close`), as a server closing an idle keep-alive connection does.
    close_after_answer: Option<Duration>,
    /// How long an upload's start waits before it is answered (uploads sent at once).
    upload_start_delay: Duration,
    /// `http://127.0.0.1:PORT`: the start of the upload URLs and file URIs it hands out.
    base: String,
    /// Files, caches and upload sessions by project (`files.rs`).
    projects: Mutex<files::Projects>,
    uploaded_bytes: AtomicU64,
    permission_denied: AtomicU64,
    /// Live API sessions (`live.rs`).
    live_sessions: Mutex<Vec<LiveSession>>,
    /// Ephemeral tokens minted, with their keys (`live.rs`).
    live_tokens: Mutex<HashMap<String, String>>,
    /// Keys whose Live handshake is refused: status and body (`live.rs`).
    live_handshake: Mutex<HashMap<String, (u16, Value)>>,
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
    http2_max_streams: Option<u32>,
    /// HTTP/1.1: how long after an answer its connection is dropped, silently (no
    /// `Connection: close`), as a server closing an idle keep-alive connection does.
    close_after_answer: Option<Duration>,
    upload_start_delay: Duration,
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

    /// Also serve h2c (HTTP/2 with prior knowledge) on the same port, at most
    /// `max_concurrent_streams` streams at once per connection (HTTP/1.1 still works).
    pub fn http2(mut self, max_concurrent_streams: u32) -> Self {
        self.http2_max_streams = Some(max_concurrent_streams);
        self
    }

    /// Drops each HTTP/1.1 connection `after` its first answer, without saying so in the
    /// answer: the client finds a kept-alive connection closed under it.
    pub fn close_after_answer(mut self, after: Duration) -> Self {
        self.close_after_answer = Some(after);
        self
    }

    /// Answers each upload's start (`X-Goog-Upload-Command: start`, or a whole upload) only
    /// after `d`, so uploads sent at once are all in flight before the first is answered.
    pub fn upload_start_delay(mut self, d: Duration) -> Self {
        self.upload_start_delay = d;
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
            connections: AtomicU64::new(0),
            http2_requests: AtomicU64::new(0),
            http2_max_streams: self.http2_max_streams,
            close_after_answer: self.close_after_answer,
            upload_start_delay: self.upload_start_delay,
            base: format!("http://{addr}"),
            projects: Mutex::new(files::Projects::default()),
            uploaded_bytes: AtomicU64::new(0),
            permission_denied: AtomicU64::new(0),
            live_sessions: Mutex::new(Vec::new()),
            live_tokens: Mutex::new(HashMap::new()),
            live_handshake: Mutex::new(HashMap::new()),
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
        shared.connections.fetch_add(1, Ordering::SeqCst);
        let http2 = shared.http2_max_streams;
        let close_after = shared.close_after_answer;
        let shared = shared.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let answered = Arc::new(tokio::sync::Notify::new());
            let told = answered.clone();
            let service = service_fn(move |req| {
                let shared = shared.clone();
                let told = told.clone();
                async move {
                    let answer = handle(shared, req).await;
                    told.notify_one();
                    Ok::<_, Infallible>(answer)
                }
            });
            let closing = async {
                match close_after {
                    Some(after) => {
                        answered.notified().await;
                        tokio::time::sleep(after).await;
                    }
                    None => std::future::pending().await,
                }
            };
            match http2 {
                None => {
                    let conn = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .with_upgrades();
                    tokio::select! {
                        _ = conn => {}
                        _ = stop.cancelled() => {}
                        _ = closing => {}
                    }
                }
                Some(max) => {
                    let mut builder = hyper_util::server::conn::auto::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    );
                    builder.http2().max_concurrent_streams(max);
                    let conn =
                        builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                    tokio::select! {
                        _ = conn => {}
                        _ = stop.cancelled() => {}
                    }
                }
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
            http2_max_streams: None,
            close_after_answer: None,
            upload_start_delay: Duration::ZERO,
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
    if req.version() == http::Version::HTTP_2 {
        shared.http2_requests.fetch_add(1, Ordering::SeqCst);
    }
    if live::is_live(req.uri().path()) {
        flight.done = true;
        return live::upgrade(shared.clone(), req);
    }
    let (parts, body) = req.into_parts();
    let query_string = parts.uri.query().map(str::to_owned);
    let query = parse_query(query_string.as_deref());
    let route = Route::parse(&parts.method, parts.uri.path(), &query);
    if let Route::UploadChunk(id) = &route {
        // Streamed, never kept: recorded without its body.
        let key = parts
            .headers
            .get("x-goog-api-key")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        if query.contains_key("key") {
            shared.keys_in_url.fetch_add(1, Ordering::SeqCst);
        }
        lock(&shared.log).requests.push(RecordedRequest {
            method: parts.method.to_string(),
            path: parts.uri.path().to_string(),
            query: query_string.clone(),
            headers: parts.headers.clone(),
            body: None,
            raw_body: Bytes::new(),
            key: key.clone(),
            model: None,
        });
        if let Some(key) = key {
            *lock(&shared.log)
                .hits
                .entry((key, String::new()))
                .or_default() += 1;
        }
        let response = files::chunk(&shared, id, &parts, body).await;
        flight.done = true;
        return response;
    }
    let raw_body = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        // The client left while sending: the flight guard counts it.
        Err(_) => return json_response(400, &json!({})),
    };
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

    let response = respond(&shared, &parts, route, key, body_json, &raw_body, &query).await;
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
    parts: &http::request::Parts,
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

    // A create (an upload's start, a cache) answers an error scripted for its key first (a
    // quota 429, a 500): successes are the create's own.
    let creates = matches!(route, Route::UploadStart)
        || (matches!(route, Route::Caches(None)) && parts.method == http::Method::POST);
    if creates {
        if let Some(reply) = next_reply(shared, &[Scope::Key(key.clone()), Scope::Any])
            .filter(|r| !matches!(r, Reply::Success(_)))
        {
            return render_scripted(reply, route.clone(), key, body, shared).await;
        }
    }
    match &route {
        Route::UploadStart => {
            tokio::time::sleep(shared.upload_start_delay).await;
            return Now(files::start(shared, parts, &key, body.as_ref()));
        }
        Route::Files(rest) => {
            return Now(files::files(shared, &parts.method, rest.as_deref(), &key))
        }
        Route::Caches(rest) => {
            return Now(caches::caches(
                shared,
                &parts.method,
                rest.as_deref(),
                &key,
                body.as_ref(),
            ))
        }
        Route::UploadChunk(_) => return Now(json_response(404, &json!({}))),
        Route::AuthTokens => return Now(live::mint(shared, &key, body.as_ref())),
        Route::BatchCreate(model) => {
            return Now(batches::create(shared, model, &key, body.as_ref()))
        }
        Route::Batches(rest) => {
            return Now(batches::batches(
                shared,
                &parts.method,
                rest.as_deref(),
                &key,
            ))
        }
        Route::Interactions(rest) => {
            // A create answers what is scripted for its key and model first (a quota 429).
            if rest.is_none() && parts.method == http::Method::POST {
                let model = body
                    .as_ref()
                    .and_then(|b| b.get("model"))
                    .and_then(Value::as_str)
                    .map(|m| m.strip_prefix("models/").unwrap_or(m).to_string())
                    .unwrap_or_default();
                let scopes = [
                    Scope::KeyModel(key.clone(), model.clone()),
                    Scope::Key(key.clone()),
                    Scope::Model(model),
                    Scope::Any,
                ];
                if let Some(reply) =
                    next_reply(shared, &scopes).filter(|r| !matches!(r, Reply::Success(_)))
                {
                    return render_scripted(reply, route.clone(), key, body, shared).await;
                }
            }
            return Now(interactions::interactions(
                shared,
                &parts.method,
                rest.as_deref(),
                &key,
                body.as_ref(),
                query,
            ));
        }
        Route::ListModels => {
            let scripted = next_reply(shared, &[Scope::ModelsList]);
            return match scripted {
                None | Some(Reply::Success(_)) => Now(models::list_models(shared, query)),
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
            return Now(models::get_model(shared, model));
        }
        Route::Generate(_) | Route::Stream { .. } => {
            if let Some(refused) = files::refuse_foreign(shared, &key, body.as_ref()) {
                return Now(refused);
            }
            if let Some(refused) = generate::refuse(shared, &route, body.as_ref(), raw_body) {
                return Now(refused);
            }
            let model = route.model().unwrap_or("");
            if let Some(refused) = images::refuse_generate(model, body.as_ref()) {
                return Now(refused);
            }
        }
        Route::Predict(model) => {
            if let Some(refused) = images::refuse_predict(model, body.as_ref()) {
                return Now(refused);
            }
        }
        Route::BatchEmbed(_) => {
            if let Some(refused) = embeddings::refuse_batch(body.as_ref()) {
                return Now(refused);
            }
        }
        Route::CountTokens(_) => {
            if let Some(refused) = files::refuse_foreign(shared, &key, body.as_ref()) {
                return Now(refused);
            }
        }
        Route::Embed(_) | Route::Unknown => {}
    }

    let model = route.model().unwrap_or("").to_string();
    let scopes = [
        Scope::KeyModel(key.clone(), model.clone()),
        Scope::Key(key.clone()),
        Scope::Model(model.clone()),
        Scope::Any,
    ];
    let reply = next_reply(shared, &scopes).unwrap_or_else(|| {
        images::default_reply(&model, body.as_ref())
            .unwrap_or_else(|| Reply::text(default_text(&model, &key)))
    });
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
    use Responded::Now;
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
        } => stream::respond(&events, sse, event_delay, end),
        // Each surface renders a success its own way.
        Reply::Success(success) => match &ctx.route {
            Route::CountTokens(_) => Now(count_tokens::count(ctx)),
            Route::Embed(_) => Now(embeddings::embed(ctx, dims)),
            Route::BatchEmbed(_) => Now(embeddings::batch_embed(ctx, dims)),
            Route::Predict(model) => Now(images::predict(model, ctx.body.as_ref())),
            _ => generate::render_success(success, ctx),
        },
        Reply::Delay(..) | Reply::Hang => unreachable!("resolved before render"),
    }
}
