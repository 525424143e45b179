//! The rest of the native Gemini API (issue #18): files, uploads, context caches, batches,
//! operations and any other method under `/v1beta/**`, the native `/v1/…` routes
//! (`router::NATIVE_V1_COLLECTIONS`, `/v1/models/{m}:{method}`) and `/upload/v1beta/**`,
//! `/upload/v1/**`, passed through with the client's credential replaced by a pool key.
//!
//! - **Bodies**: an upload's body (`/upload/…` but a resumable session's start, and every chunk
//!   sent to a session) streams through in constant memory, bounded by `server.max_upload`;
//!   other bodies are JSON read within `server.max_body` and checked before any key is used.
//!   Answers to `GET` stream back (a file's bytes included); other answers are small JSON,
//!   read whole (bounded) so the resources they create can be remembered.
//! - **Affinity**: a resource Google returns on a create is remembered (`affinity`) with the
//!   key that made it and the client token that asked; a later call naming it, in its path or
//!   its body (`fileData.fileUri`, `cachedContent`, a batch's `fileName`, an interaction's
//!   content blocks' `uri`), goes with that key only (`proxy::Pinned`), and a 403 there
//!   disables nothing. With a shared state store the pins are the fleet's (`App::pin`,
//!   `App::pins_of`): a file uploaded through one replica is used, listed and deleted through
//!   any.
//! - **Upload groups**: a file upload prefers the key of the token's current upload group
//!   (`affinity::upload_group` over its files, `pool.upload_group`; a hint for
//!   `proxy::execute`, never a pin), so files uploaded together can be named in one request.
//! - **Ownership**: a token reaches only resources it created: any other name, unknown or
//!   another token's, is Google's 404. `GET` of a collection (`files`, `cachedContents`,
//!   `batches`…) lists the caller's own resources across every key, paged by the proxy.
//! - **Resumable uploads**: the `X-Goog-Upload-URL` Google returns is replaced by one of the
//!   proxy's (`/upload/session/{id}`, on `server.public_url` or the address the client used),
//!   its id random (256 bits), bound to the token that started it and pinned to its key (kept
//!   under a hash of the id: `affinity::upload_name`); the SDK sends the chunks there without
//!   a credential, to any replica.
//! - **Interactions**: `POST /v1beta/interactions` rotates over the pool for the body's `model`
//!   (or any key for an `agent`) and fails over before the first byte as `generateContent`
//!   does; with `stream: true` the SSE answer is relayed untouched (`relay`), the interaction's
//!   `id` learned from its first event; either way it is remembered as `interactions/{id}`
//!   (`INTERACTION_TTL`). A create naming `previous_interaction_id`, and `GET` (its
//!   `stream`/`last_event_id` resumption included), `cancel` and `DELETE` of
//!   `interactions/{id}`, go pinned to that interaction's key.
//! - **Repeats** (`proxy::Resend`): `GET`s fail over to another key after a failure (as model
//!   lists do), and model methods that create nothing and interaction creates as generations
//!   do. Other creates, updates, deletes and resumable upload starts go to another key only
//!   when Google refused them (a quota or key refusal, or never sent); an upload's streamed
//!   bytes are sent once.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures_util::StreamExt;
use http::{header, HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::{json, Value};

use crate::access::Caller;
use crate::affinity::{self, Pin};
use crate::api::clean_model_name;
use crate::api::gemini::{check_json_object, is_event_stream, native_query, with_query};
use crate::body::{full, read_body, streamed, Reply};
use crate::error::ProxyError;
use crate::proxy::{self, Call, Delivery, Native, Payload, Pinned, Resend};
use crate::relay::{self, Shape};
use crate::request_log::RequestLog;
use crate::state::{App, Snapshot};

/// Collections whose resources belong to a project, so to a key, and to a client token.
const TRACKED: [&str; 8] = [
    "files",
    "cachedContents",
    "batches",
    "operations",
    "fileSearchStores",
    "tunedModels",
    "corpora",
    "generatedFiles",
];

/// Client request headers that travel upstream (besides the key the proxy sets).
const REQUEST_HEADERS: [&str; 10] = [
    "content-type",
    "api-revision",
    "content-length",
    "x-goog-upload-protocol",
    "x-goog-upload-command",
    "x-goog-upload-offset",
    "x-goog-upload-header-content-length",
    "x-goog-upload-header-content-type",
    "x-goog-upload-file-name",
    "range",
];

/// Upstream response headers that reach the client (the upload URL rewritten).
const RESPONSE_HEADERS: [&str; 6] = [
    "x-goog-upload-status",
    "x-goog-upload-size-received",
    "x-goog-upload-chunk-granularity",
    "content-disposition",
    "content-range",
    "accept-ranges",
];

const UPLOAD_URL: HeaderName = HeaderName::from_static("x-goog-upload-url");

/// Largest page of a proxy-built list, and the default.
const MAX_PAGE: usize = 100;
const DEFAULT_PAGE: usize = 10;
/// Resource reads in flight at once while building one page.
const LIST_CONCURRENCY: usize = 8;

/// What a native path names.
#[derive(Debug, Default, PartialEq, Eq)]
struct Target {
    /// `models/{m}…`: the model, for the pool and the token's model list.
    model: Option<String>,
    /// A tracked resource (`files/abc`, `models/veo/operations/o`).
    resource: Option<String>,
    /// A tracked collection itself (`files`): a list on `GET`, a create otherwise.
    collection: Option<&'static str>,
    /// The names a list of that collection shows (`files/`, `models/veo/operations/`).
    prefix: String,
    /// The `:method` the path ends with, if any.
    action: Option<String>,
}

impl Target {
    /// `rest`: the path after `/v1beta/` or `/v1/` (and `/upload`).
    fn of(rest: &str) -> Target {
        let segments: Vec<&str> = rest.split('/').collect();
        let bare = |s: &str| s.split(':').next().unwrap_or("").to_string();
        let mut target = Target {
            action: segments
                .last()
                .and_then(|s| s.split_once(':'))
                .map(|(_, a)| a.to_string()),
            ..Target::default()
        };
        match segments.as_slice() {
            ["models", model, rest @ ..] => {
                target.model = Some(bare(model));
                match rest {
                    ["operations", op, ..] => {
                        target.resource =
                            Some(format!("models/{}/operations/{}", bare(model), bare(op)));
                    }
                    ["operations"] => {
                        target.collection = Some("operations");
                        target.prefix = format!("models/{}/operations/", bare(model));
                    }
                    _ => {}
                }
            }
            ["interactions", id, ..] => {
                target.resource = Some(format!("interactions/{}", bare(id)));
            }
            [collection] => {
                let c = bare(collection);
                target.collection = TRACKED.iter().copied().find(|t| *t == c);
                target.prefix = format!("{c}/");
            }
            [collection, id, ..] => {
                if let Some(c) = TRACKED.iter().copied().find(|t| t == collection) {
                    target.resource = Some(format!("{c}/{}", bare(id)));
                }
            }
            _ => {}
        }
        target
    }
}

/// Model methods that create a resource (a batch, a long-running operation): sent again only
/// when Google refused them.
const CREATING_ACTIONS: [&str; 3] = [
    "batchGenerateContent",
    "asyncBatchEmbedContent",
    "predictLongRunning",
];

/// Whether a native call may go to another key after a failure: reads (`GET`), and model
/// methods that create nothing (`predict` and the like, under today's rules for generations:
/// no replay once it may have run). Creates, updates, deletes and uploads may not.
fn repeatable(method: &Method, model_method: bool, action: Option<&str>) -> bool {
    *method == Method::GET
        || (*method == Method::POST
            && model_method
            && action.is_some_and(|a| !CREATING_ACTIONS.contains(&a)))
}

/// The client token a resource belongs to (empty for an open proxy's anonymous callers).
fn owner_of(caller: &Caller) -> Arc<str> {
    Arc::from(caller.token_name.as_deref().unwrap_or(""))
}

/// Refuses paths that could reach anything but the method named: only unreserved characters,
/// `/` and `:`, no dot segments, nothing escaped.
fn check_path(path: &str) -> Result<(), ProxyError> {
    let ok = path.len() <= 1024
        && path.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'/' | b':' | b'-' | b'_' | b'.' | b'~')
        })
        && !path.split('/').any(|s| s == "." || s == "..");
    if ok {
        Ok(())
    } else {
        Err(ProxyError::bad_request(format!(
            "'{}' is not a valid Gemini API path",
            crate::excerpt::excerpt(path)
        )))
    }
}

/// `/upload/v1beta/files` -> (`true`, `v1beta`, `files`).
fn split_version(path: &str) -> Option<(bool, &'static str, &str)> {
    let (upload, path) = match path.strip_prefix("/upload") {
        Some(rest) => (true, rest),
        None => (false, path),
    };
    if let Some(rest) = path.strip_prefix("/v1beta/") {
        return Some((upload, "v1beta", rest));
    }
    if let Some(rest) = path.strip_prefix("/v1alpha/") {
        return Some((upload, "v1alpha", rest));
    }
    path.strip_prefix("/v1/").map(|rest| (upload, "v1", rest))
}

/// The client's headers that may travel upstream; `Content-Length` only with a streamed body
/// (bytes get their own from the client library; a body-less call must not announce one).
fn forwarded_headers(headers: &HeaderMap, streamed: bool) -> HeaderMap {
    let mut out = HeaderMap::new();
    for name in REQUEST_HEADERS {
        if name == "content-length" && !streamed {
            continue;
        }
        if let Some(value) = headers.get(name) {
            out.insert(HeaderName::from_static(name), value.clone());
        }
    }
    out
}

fn header_u64(headers: &HeaderMap, name: &str) -> Result<Option<u64>, ProxyError> {
    match headers.get(name) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Some)
            .ok_or_else(|| ProxyError::BadRequest {
                message: format!("the {name} header is not a byte count"),
                param: None,
            }),
    }
}

fn upload_command(headers: &HeaderMap) -> String {
    headers
        .get("x-goog-upload-command")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase()
}

pub async fn passthrough(
    app: &Arc<App>,
    snap: &Arc<Snapshot>,
    caller: &Caller,
    req: Request<Incoming>,
    log: &mut RequestLog,
) -> Result<Reply, ProxyError> {
    let path = crate::router::normalise(req.uri().path()).into_owned();
    check_path(&path)?;
    let Some((upload, version, rest)) = split_version(&path) else {
        return Err(ProxyError::not_found("unknown path"));
    };
    let query = native_query(req.uri().query())?;
    let owner = owner_of(caller);
    let method = req.method().clone();
    let target = Target::of(rest);
    // `POST /v1beta/interactions` (`/v1/…` too: the path is the SDK's `api_version`).
    let creates_interaction = rest == "interactions" && method == Method::POST && !upload;
    if rest == "interactions" && !creates_interaction {
        // No list: one would show every interaction of a key's project, whoever made it.
        return Err(ProxyError::not_found(
            "interactions are read one at a time: GET /v1beta/interactions/{id}",
        ));
    }
    let mut model = match &target.model {
        Some(m) => {
            let m = clean_model_name(m)?.to_string();
            caller.check_model(&m)?;
            log.model = Some(m.clone());
            Some(m)
        }
        None => None,
    };
    let now = SystemTime::now();

    if let (Some(collection), true, false) = (target.collection, method == Method::GET, upload) {
        let prefix = target.prefix.as_str();
        return list(app, snap, &owner, version, collection, prefix, &query, log).await;
    }

    let mut named = Vec::new();
    if let Some(resource) = &target.resource {
        named.push(resource.clone());
    }
    let max_upload = snap.config.server.max_upload;
    let resumable_start = upload && upload_command(req.headers()).contains("start");
    if resumable_start {
        if let Some(total) = header_u64(req.headers(), "x-goog-upload-header-content-length")? {
            if total > max_upload {
                return Err(ProxyError::PayloadTooLarge { limit: max_upload });
            }
        }
    }
    let streams = upload && !resumable_start;
    let headers = forwarded_headers(req.headers(), streams);
    let host = client_host(req.headers(), caller.trusted_peer);
    let mut interaction = None;
    let (body, stream) = if streams {
        if header_u64(req.headers(), "content-length")?.is_some_and(|n| n > max_upload) {
            return Err(ProxyError::PayloadTooLarge { limit: max_upload });
        }
        let idle = snap.config.server.body_timeout;
        (None, Some(streamed(req.into_body(), max_upload, idle)))
    } else if method == Method::GET || method == Method::HEAD {
        (None, None)
    } else {
        let bytes = read_body(req, snap.config.server.max_body).await?;
        if creates_interaction {
            let create = InteractionCreate::read(&bytes)?;
            let named_model = create.model.as_deref().or(create.agent.as_deref());
            if let Some(m) = named_model {
                caller.check_model(m)?;
                log.model = Some(m.to_string());
            }
            model.clone_from(&create.model);
            if let Some(previous) = &create.previous {
                named.push(previous.clone());
            }
            interaction = Some(create);
        }
        if bytes.is_empty() {
            (None, None)
        } else {
            if creates_interaction {
                // `InteractionCreate::read` checked it already.
                named.extend(referenced_by_interaction(&bytes)?);
            } else {
                check_json_object(&bytes)?;
                named.extend(referenced(&bytes)?);
            }
            if target.collection.is_some() && method == Method::POST {
                refuse_taken_name(app, &bytes, now).await?;
            }
            (Some(bytes), None)
        }
    };
    let pin = resolve(app, snap, &owner, &named, now).await?;
    // A new file (an upload's start, or a whole upload) goes with the token's recent ones.
    let prefer = if upload && method == Method::POST && target.collection == Some("files") {
        upload_group_key(app, snap, &owner, now).await
    } else {
        None
    };
    let path_and_query = with_query(path.clone(), &query);
    // An interaction create fails over as a generation does (never once it may have run);
    // other creates only when Google refused them; streamed bytes are gone once sent.
    let resend = if creates_interaction
        || repeatable(&method, target.model.is_some(), target.action.as_deref())
    {
        Resend::AsGeneration
    } else if stream.is_some() {
        Resend::Never
    } else {
        Resend::IfRefused
    };
    // A batch or operation is small JSON naming the files it made: read whole and learned.
    let learns = target
        .resource
        .as_deref()
        .is_some_and(|r| r.starts_with("batches/") || r.contains("operations/"));
    let streams_interaction = interaction.as_ref().is_some_and(|c| c.stream);
    let delivery = if (method == Method::GET && !learns) || streams_interaction {
        Delivery::Streaming
    } else {
        Delivery::Buffered
    };
    let call = Call {
        model: model.as_deref(),
        method: method.clone(),
        path_and_query: &path_and_query,
        body,
        delivery,
        pinned: pin.as_ref().map(|(resource, index)| Pinned {
            index: *index,
            resource,
        }),
        native: Some(Native {
            headers,
            stream: std::sync::Mutex::new(stream),
            resend,
            prefer,
        }),
    };
    let fault = call
        .native
        .as_ref()
        .and_then(|n| n.stream.lock().ok()?.as_ref().map(|s| s.fault.clone()));
    let served = match proxy::execute(snap, call, log).await {
        Ok(served) => served,
        Err(e) => return Err(client_fault(fault.as_deref()).unwrap_or(e)),
    };
    let mut out_headers = answer_headers(&served.headers);
    let content_type = served
        .content_type
        .clone()
        .unwrap_or(HeaderValue::from_static("application/json"));
    let bytes = match served.body {
        Payload::Stream(response) => {
            let shape = if is_event_stream(&content_type) {
                Shape::Passthrough { sse: true }
            } else if is_json(&content_type) {
                Shape::Passthrough { sse: false }
            } else {
                Shape::Raw
            };
            let learn = interaction
                .as_ref()
                .filter(|c| c.store)
                .map(|_| learn_interaction(app.clone(), owner.clone(), served.lease.key.clone()));
            let mut response = relay::start_learning(
                app.clone(),
                snap.clone(),
                served.lease,
                response,
                shape,
                log.hand_off(),
                content_type,
                learn,
            )
            .await;
            *response.status_mut() = served.status;
            response.headers_mut().extend(out_headers);
            return Ok(Reply::Streaming(response));
        }
        Payload::Full(bytes) => bytes,
    };
    if resumable_start {
        let public = public_base(snap, caller, host.as_deref())?;
        let url = start_session(
            app,
            snap,
            &owner,
            &served.lease.key,
            &served.headers,
            &public,
            now,
        )?;
        out_headers.insert(UPLOAD_URL, url);
    } else if let Some(create) = &interaction {
        if create.store {
            if let Some(id) = interaction_id(&bytes) {
                remember_interaction(app, &owner, &served.lease.key, &id, now);
            }
        }
    } else {
        remember_created(app, &owner, &served.lease.key, &bytes, now);
    }
    if method == Method::DELETE {
        if let Some(resource) = &target.resource {
            app.affinity.remove(resource);
        }
    }
    Ok(Reply::Done(answer(
        served.status,
        content_type,
        out_headers,
        bytes,
    )))
}

/// `/upload/session/{id}`: one request of a resumable upload (a chunk, `finalize`, `query`),
/// sent with the key that started it to the upload URL Google gave. The id is the credential.
pub async fn upload_session(
    app: &Arc<App>,
    snap: &Arc<Snapshot>,
    id: &str,
    req: Request<Incoming>,
    log: &mut RequestLog,
) -> Result<Reply, ProxyError> {
    match session_chunk(app, snap, id, req, log).await {
        Ok(reply) => Ok(reply),
        // A refusal the client cannot fix by sending the chunk again says the upload is over
        // (`X-Goog-Upload-Status: final`): google-genai otherwise resends it three times.
        Err(e)
            if e.status().is_client_error()
                && e.status() != StatusCode::TOO_MANY_REQUESTS
                && e.status() != StatusCode::REQUEST_TIMEOUT =>
        {
            log.failed(&e);
            let mut response = e.into_response(crate::router::Dialect::Google);
            response
                .headers_mut()
                .insert("x-goog-upload-status", HeaderValue::from_static("final"));
            Ok(Reply::Done(response))
        }
        Err(e) => Err(e),
    }
}

async fn session_chunk(
    app: &Arc<App>,
    snap: &Arc<Snapshot>,
    id: &str,
    req: Request<Incoming>,
    log: &mut RequestLog,
) -> Result<Reply, ProxyError> {
    let now = SystemTime::now();
    let gone =
        || ProxyError::not_found("upload session not found or expired: start the upload again");
    if id.len() != 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(gone());
    }
    let name = affinity::upload_name(id);
    let session = app.pin(&name, now).await.ok_or_else(gone)?;
    // Bound to the token that started it: a token removed since ends its uploads too.
    let owner_known = session.owner.is_empty()
        || &*session.owner == "admin"
        || snap
            .config
            .auth
            .tokens
            .iter()
            .any(|t| *t.name == *session.owner);
    let Some(upstream_path) = session.upstream.clone().filter(|_| owner_known) else {
        return Err(gone());
    };
    log.token = Some(session.owner.to_string()).filter(|o| !o.is_empty());
    let max_upload = snap.config.server.max_upload;
    let offset = header_u64(req.headers(), "x-goog-upload-offset")?.unwrap_or(0);
    let declared = header_u64(req.headers(), "content-length")?;
    if offset.saturating_add(declared.unwrap_or(0)) > max_upload || offset > max_upload {
        return Err(ProxyError::PayloadTooLarge { limit: max_upload });
    }
    let headers = forwarded_headers(req.headers(), true);
    let stream = streamed(
        req.into_body(),
        max_upload - offset,
        snap.config.server.body_timeout,
    );
    let fault = stream.fault.clone();
    let index = key_index(snap, &session.key).ok_or_else(|| ProxyError::PinnedElsewhere {
        resource: "this upload".into(),
        why: "the key it was started with is no longer in the pool".into(),
    })?;
    let call = Call {
        model: None,
        method: Method::POST,
        path_and_query: &upstream_path,
        body: None,
        delivery: Delivery::Buffered,
        pinned: Some(Pinned {
            index,
            resource: "this upload",
        }),
        native: Some(Native {
            headers,
            stream: std::sync::Mutex::new(Some(stream)),
            resend: Resend::Never,
            prefer: None,
        }),
    };
    let served = match proxy::execute(snap, call, log).await {
        Ok(served) => served,
        Err(e) => return Err(client_fault(Some(&fault)).unwrap_or(e)),
    };
    let out_headers = answer_headers(&served.headers);
    let content_type = served
        .content_type
        .clone()
        .unwrap_or(HeaderValue::from_static("application/json"));
    let Payload::Full(bytes) = served.body else {
        return Err(ProxyError::Internal("expected a buffered body".into()));
    };
    let status = served
        .headers
        .get("x-goog-upload-status")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if status.eq_ignore_ascii_case("final") {
        remember_created(app, &session.owner, &session.key, &bytes, now);
        app.affinity.remove(&name);
    }
    Ok(Reply::Done(answer(
        served.status,
        content_type,
        out_headers,
        bytes,
    )))
}

/// How long an interaction is remembered: Google keeps a stored interaction 55 days on the
/// paid tier (a day on the free tier, after which Google's own 404 answers).
pub const INTERACTION_TTL: Duration = Duration::from_secs(55 * 24 * 3600);

/// What the proxy reads of an interaction create (`POST /v1beta/interactions`); the body
/// itself goes upstream as the client sent it.
#[derive(Debug, PartialEq, Eq)]
struct InteractionCreate {
    /// `model`, cleaned (`models/` dropped): the pool rotates for it.
    model: Option<String>,
    /// `agent` (Deep Research and the like): any key of the pool.
    agent: Option<String>,
    /// `stream: true`: the answer is SSE.
    stream: bool,
    /// `previous_interaction_id`, as the affinity name `interactions/{id}`.
    previous: Option<String>,
    /// `store` (Google's default `true`): a `false` one is not kept by Google, nor here.
    store: bool,
}

impl InteractionCreate {
    /// The create's fields, refused in Google's shape before any key is used when the body
    /// is not a JSON object, names neither `model` nor `agent` (or both), or a field has the
    /// wrong type.
    fn read(body: &[u8]) -> Result<InteractionCreate, ProxyError> {
        #[derive(serde::Deserialize)]
        struct Raw {
            model: Option<Value>,
            agent: Option<Value>,
            stream: Option<Value>,
            previous_interaction_id: Option<Value>,
            store: Option<Value>,
        }
        let bad = |message: String, param: &str| ProxyError::BadRequest {
            message,
            param: Some(param.into()),
        };
        if body.is_empty() {
            return Err(ProxyError::bad_request(
                "an interaction create needs a JSON object body naming a model or an agent",
            ));
        }
        check_json_object(body)?;
        let raw: Raw = serde_json::from_slice(body).map_err(|e| {
            ProxyError::bad_request(format!(
                "the interaction is not valid JSON: {}",
                crate::excerpt::serde_error(&e)
            ))
        })?;
        let text = |v: Option<Value>, param: &str| match v {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(bad(format!("{param} must be a string"), param)),
        };
        let flag = |v: Option<Value>, param: &str, default: bool| match v {
            None | Some(Value::Null) => Ok(default),
            Some(Value::Bool(b)) => Ok(b),
            Some(_) => Err(bad(format!("{param} must be true or false"), param)),
        };
        let model = text(raw.model, "model")?
            .map(|m| clean_model_name(&m).map(str::to_string))
            .transpose()?;
        let agent = text(raw.agent, "agent")?;
        if let Some(a) = &agent {
            if !plain_id(a) || a.len() > 128 {
                return Err(bad(
                    format!("'{}' is not a valid agent name", crate::excerpt::excerpt(a)),
                    "agent",
                ));
            }
        }
        match (&model, &agent) {
            (None, None) => {
                return Err(bad(
                    "an interaction needs a model or an agent".into(),
                    "model",
                ))
            }
            (Some(_), Some(_)) => {
                return Err(bad(
                    "an interaction names a model or an agent, not both".into(),
                    "agent",
                ))
            }
            _ => {}
        }
        let previous = text(raw.previous_interaction_id, "previous_interaction_id")?
            .filter(|p| !p.is_empty())
            .map(|p| {
                if plain_id(&p) {
                    Ok(format!("interactions/{p}"))
                } else {
                    Err(bad(
                        format!("'{}' is not an interaction id", crate::excerpt::excerpt(&p)),
                        "previous_interaction_id",
                    ))
                }
            })
            .transpose()?;
        Ok(InteractionCreate {
            model,
            agent,
            stream: flag(raw.stream, "stream", false)?,
            previous,
            store: flag(raw.store, "store", true)?,
        })
    }
}

/// The interaction an answer or a stream event names: the `id` of an interaction (a create's
/// JSON answer), of the `interaction` an `interaction.created` (or legacy `interaction.start`)
/// event carries, or a status update's `interaction_id`; only a plain id counts.
fn interaction_id(bytes: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Inner {
        id: Option<String>,
    }
    #[derive(serde::Deserialize)]
    struct Named {
        id: Option<String>,
        interaction: Option<Inner>,
        interaction_id: Option<String>,
    }
    let named: Named = serde_json::from_slice(bytes).ok()?;
    named
        .interaction
        .and_then(|i| i.id)
        .or(named.interaction_id)
        .or(named.id)
        .filter(|id| plain_id(id))
}

/// Remembers the interaction `id` for `owner` on `key`.
fn remember_interaction(
    app: &App,
    owner: &Arc<str>,
    key: &crate::secret::ApiKey,
    id: &str,
    now: SystemTime,
) {
    let name = format!("interactions/{id}");
    remember(app, owner, key, &name, now + INTERACTION_TTL, now);
}

/// A streamed create's `Learn`: the interaction its first event names is remembered before
/// the client gets that event (so a `get` right after it finds the pin).
fn learn_interaction(app: Arc<App>, owner: Arc<str>, key: crate::secret::ApiKey) -> relay::Learn {
    Box::new(move |event: &[u8]| match interaction_id(event) {
        Some(id) => {
            remember_interaction(&app, &owner, &key, &id, SystemTime::now());
            true
        }
        None => false,
    })
}

/// A client-side failure of a streamed body, as the client's error.
fn client_fault(
    fault: Option<&std::sync::Mutex<Option<crate::body::BodyError>>>,
) -> Option<ProxyError> {
    crate::body::Streamed::fault_of(fault?).map(ProxyError::from)
}

fn is_json(content_type: &HeaderValue) -> bool {
    content_type
        .to_str()
        .ok()
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
}

fn answer_headers(upstream: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::new();
    for name in RESPONSE_HEADERS {
        if let Some(value) = upstream.get(name) {
            out.insert(HeaderName::from_static(name), value.clone());
        }
    }
    out
}

fn answer(
    status: StatusCode,
    content_type: HeaderValue,
    headers: HeaderMap,
    bytes: Bytes,
) -> Response<crate::body::Body> {
    let mut response = Response::new(full(bytes));
    *response.status_mut() = status;
    response.headers_mut().extend(headers);
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, content_type);
    response
}

/// The key (its index) `owner`'s next file upload prefers: its upload group's
/// (`affinity::upload_group` over its files, this replica's and the shared store's, else the
/// group begun here whose first file is not made yet), when that key is still in the pool;
/// `proxy::execute` takes it only if it can serve.
async fn upload_group_key(
    app: &App,
    snap: &Snapshot,
    owner: &str,
    now: SystemTime,
) -> Option<usize> {
    let window = snap.config.pool.upload_group;
    if window.is_zero() {
        return None;
    }
    let files = app.pins_of(owner, "files/", now).await;
    let key = match affinity::upload_group(&files, window, now) {
        Some(key) => key,
        // No current group: this upload begins one, unless one begun here has not made its
        // first file yet (uploads sent at once).
        None => app.affinity.upload_group_begun(owner, window, now, || {
            let free = snap.pool.pick_any(std::time::Instant::now(), &[]).ok()?;
            Some(free.key)
        })?,
    };
    key_index(snap, &key)
}

/// The position of `key` in the snapshot's pool.
fn key_index(snap: &Snapshot, key: &crate::secret::ApiKey) -> Option<usize> {
    snap.config.pool.keys.iter().position(|k| k.key == *key)
}

/// The one key every named resource lives on, when any is named: each must be the caller's
/// (else Google's 404, the same for another token's and for an unknown name), all on one key,
/// and that key still in the pool.
pub(crate) async fn resolve(
    app: &App,
    snap: &Snapshot,
    owner: &str,
    named: &[String],
    now: SystemTime,
) -> Result<Option<(String, usize)>, ProxyError> {
    let mut found: Option<(String, Pin)> = None;
    for name in named {
        let pin = app
            .pin(name, now)
            .await
            .filter(|p| &*p.owner == owner)
            .ok_or_else(|| {
                ProxyError::not_found(format!(
                    "{} not found (or it was not created through this proxy with your token)",
                    crate::excerpt::excerpt(name)
                ))
            })?;
        match &found {
            Some((first, p)) if p.key != pin.key => {
                return Err(ProxyError::bad_request(different_keys(
                    first,
                    name,
                    snap.config.pool.upload_group,
                )))
            }
            Some(_) => {}
            None => found = Some((name.clone(), pin)),
        }
    }
    let Some((name, pin)) = found else {
        return Ok(None);
    };
    match key_index(snap, &pin.key) {
        Some(index) => Ok(Some((name, index))),
        None => Err(ProxyError::PinnedElsewhere {
            resource: name,
            why: "the key it was created with is no longer in the pool".into(),
        }),
    }
}

/// The refusal of a request naming resources of two keys (two Google projects), with what
/// to do about it: a token's files uploaded within `pool.upload_group` of each other share a
/// key.
fn different_keys(first: &str, second: &str, window: Duration) -> String {
    let (a, b) = (
        crate::excerpt::excerpt(first),
        crate::excerpt::excerpt(second),
    );
    let mut message = format!(
        "{a} and {b} were created with different keys of the pool (each belongs to the Google \
         project of its key) and cannot be used in one request"
    );
    if first.starts_with("files/") || second.starts_with("files/") {
        let grouping = if window.is_zero() {
            "this proxy places every upload on its own key (pool.upload_group = \"0s\")".to_string()
        } else {
            format!(
                "files one token uploads within pool.upload_group ({}) of the first of them \
                 share a key",
                humantime::format_duration(window)
            )
        };
        message.push_str(&format!(
            ": {grouping}; upload the files one request needs together, one after the other, \
             or upload them again"
        ));
    }
    message
}

/// A create that chooses its resource's name (`{"file": {"name": "files/x"}}`) may not take
/// one this proxy already tracks, whoever owns it: names are unique per Google project, not
/// across the pool, and one name must mean one resource here.
async fn refuse_taken_name(app: &App, body: &[u8], now: SystemTime) -> Result<(), ProxyError> {
    #[derive(serde::Deserialize)]
    struct Named {
        name: Option<String>,
    }
    #[derive(serde::Deserialize)]
    struct Create {
        file: Option<Named>,
        name: Option<String>,
    }
    let Ok(create) = serde_json::from_slice::<Create>(body) else {
        return Ok(());
    };
    let Some(name) = create.file.and_then(|f| f.name).or(create.name) else {
        return Ok(());
    };
    let name = if name.contains('/') {
        name.to_string()
    } else {
        format!("files/{name}")
    };
    if app.pin(&name, now).await.is_some() {
        return Err(ProxyError::Conflict {
            message: format!(
                "{} already exists: choose another name",
                crate::excerpt::excerpt(&name)
            ),
        });
    }
    Ok(())
}

/// The most resources one request body may name.
const MAX_NAMED: usize = 1000;

/// The tracked resources a JSON request body names: `fileData.fileUri` (a Files API URI or a
/// bare `files/…`), `cachedContent`, `fileName` (a batch's input file), in either spelling,
/// and a `fileSearch` tool's `fileSearchStoreNames`. Only bodies where one of those fields may
/// appear are scanned (`may_name_resources`), and the scan builds no tree: it walks the JSON
/// and keeps just those strings (at most `MAX_NAMED` distinct names).
///
/// Fails closed: a value in one of those fields that looks like a resource (it mentions
/// `files/`, or any `cachedContent`) but is not in a form this proxy reads is refused, so
/// no spelling Google might resolve slips past the ownership check.
pub(crate) fn referenced(body: &[u8]) -> Result<Vec<String>, ProxyError> {
    scan_names(body, false)
}

/// `referenced` for an interaction create, whose content blocks (`document`, `image`,
/// `audio`, `video`) name a file in `uri`.
fn referenced_by_interaction(body: &[u8]) -> Result<Vec<String>, ProxyError> {
    scan_names(body, true)
}

/// The scan of `referenced`; `uris`: a `uri` field names a file as `fileUri` does.
fn scan_names(body: &[u8], uris: bool) -> Result<Vec<String>, ProxyError> {
    if !may_name_resources(body, uris) {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    let mut de = serde_json::Deserializer::from_slice(body);
    serde::de::DeserializeSeed::deserialize(
        Scan {
            out: &mut out,
            field: Field::Other,
            uris,
        },
        &mut de,
    )
    .map_err(|e| {
        ProxyError::bad_request(format!(
            "the request names a resource this proxy cannot read: {}",
            crate::excerpt::serde_error(&e)
        ))
    })?;
    out.sort();
    out.dedup();
    Ok(out)
}

/// The keys `Field::of` reads, each with its closing quote, by how they start.
const FILE_KEYS: [&[u8]; 6] = [
    b"fileUri\"",
    b"file_uri\"",
    b"fileName\"",
    b"file_name\"",
    b"fileSearchStoreNames\"",
    b"file_search_store_names\"",
];
const CACHED_KEYS: [&[u8]; 2] = [b"cachedContent\"", b"cached_content\""];

/// Whether a JSON body may hold one of the fields the resource scan reads: one of their keys
/// appears right after a quote, or a `\u` escape appears anywhere. A JSON key can spell those
/// letters only literally or as `\u` escapes (every other escape stands for a non-letter), so
/// without either no key of the body is such a field, and the scan would find nothing. Three
/// SIMD substring searches (`\u`, `"file`, `"cached`): the per-request cost of a body that
/// names nothing (a chat's long text mentioning "files" no longer walks the whole JSON). With
/// `uris` (an interaction create), a `"uri"` key anywhere also counts.
fn may_name_resources(body: &[u8], uris: bool) -> bool {
    use memchr::memmem::Finder;
    use std::sync::LazyLock;
    static ESCAPE: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\\u"));
    static FILE: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"file"));
    static CACHED: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"cached"));
    static URI: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"uri\""));
    let keyed = |finder: &Finder<'_>, keys: &[&[u8]]| {
        finder
            .find_iter(body)
            .any(|i| keys.iter().any(|key| body[i + 1..].starts_with(key)))
    };
    ESCAPE.find(body).is_some()
        || keyed(&FILE, &FILE_KEYS)
        || keyed(&CACHED, &CACHED_KEYS)
        || (uris && URI.find(body).is_some())
}

/// Whether `s` mentions the Files API in any case or escape (`files/`, `files%2F`).
fn mentions_files(s: &str) -> bool {
    let lower = s.to_ascii_lowercase();
    lower.contains("files/") || lower.contains("files%2f")
}

/// Which kind of name a JSON field holds.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Field {
    FileUri,
    CachedContent,
    FileName,
    /// `fileSearchStoreNames`: an array of store names.
    StoreNames,
    Other,
}

impl Field {
    fn of(key: &str, uris: bool) -> Field {
        match key {
            "fileUri" | "file_uri" => Field::FileUri,
            "uri" if uris => Field::FileUri,
            "cachedContent" | "cached_content" => Field::CachedContent,
            "fileName" | "file_name" => Field::FileName,
            "fileSearchStoreNames" | "file_search_store_names" => Field::StoreNames,
            _ => Field::Other,
        }
    }
}

/// One JSON value of the scan; `field` says what a string here would name.
struct Scan<'a> {
    out: &'a mut Vec<String>,
    field: Field,
    /// `uri` names a file too (an interaction's content blocks).
    uris: bool,
}

impl<'de> serde::de::DeserializeSeed<'de> for Scan<'_> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

/// A map key, read as the `Field` it names.
struct Key {
    uris: bool,
}

impl<'de> serde::de::DeserializeSeed<'de> for Key {
    type Value = Field;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Field, D::Error> {
        d.deserialize_str(self)
    }
}

impl serde::de::Visitor<'_> for Key {
    type Value = Field;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a field name")
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Field, E> {
        Ok(Field::of(v, self.uris))
    }
}

impl<'de> serde::de::Visitor<'de> for Scan<'_> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JSON")
    }
    fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<(), E> {
        let unreadable = || {
            E::custom(format!(
                "{} is not a resource name",
                crate::excerpt::excerpt(s)
            ))
        };
        let name = match self.field {
            Field::FileUri => match file_in_uri(s) {
                Some(name) => Some(name),
                None if mentions_files(s) => return Err(unreadable()),
                None => None,
            },
            Field::FileName => match s.strip_prefix("files/") {
                Some(id) if plain_id(id) => Some(format!("files/{id}")),
                _ if mentions_files(s) => return Err(unreadable()),
                _ => None,
            },
            Field::CachedContent if s.is_empty() => None,
            Field::CachedContent => match s.strip_prefix("cachedContents/") {
                Some(id) if plain_id(id) => Some(format!("cachedContents/{id}")),
                _ => return Err(unreadable()),
            },
            Field::StoreNames => match s.strip_prefix("fileSearchStores/") {
                Some(id) if plain_id(id) => Some(format!("fileSearchStores/{id}")),
                _ => return Err(unreadable()),
            },
            Field::Other => None,
        };
        if let Some(name) = name {
            if !self.out.contains(&name) {
                if self.out.len() >= MAX_NAMED {
                    return Err(E::custom("too many resources named"));
                }
                self.out.push(name);
            }
        }
        Ok(())
    }
    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        // A list of store names keeps its field; elsewhere an array is plain JSON.
        let field = match self.field {
            Field::StoreNames => Field::StoreNames,
            _ => Field::Other,
        };
        while seq
            .next_element_seed(Scan {
                out: &mut *self.out,
                field,
                uris: self.uris,
            })?
            .is_some()
        {}
        Ok(())
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let uris = self.uris;
        while let Some(field) = map.next_key_seed(Key { uris })? {
            map.next_value_seed(Scan {
                out: &mut *self.out,
                field,
                uris,
            })?;
        }
        Ok(())
    }
}

/// The Files API resource a `fileUri` names: `files/{id}`, or an http(s) URL whose path is
/// exactly `/v1beta/files/{id}` or `/v1/files/{id}` (what Google's `uri` field holds), the
/// id plain. Anything else is `None` (and refused by the caller if it mentions files).
fn file_in_uri(uri: &str) -> Option<String> {
    let id = match uri.strip_prefix("files/") {
        Some(id) => id,
        None => {
            let rest = uri
                .strip_prefix("https://")
                .or_else(|| uri.strip_prefix("http://"))?;
            let path = rest.get(rest.find('/')?..)?;
            let path = path.split(['?', '#']).next().unwrap_or("");
            path.strip_prefix("/v1beta/files/")
                .or_else(|| path.strip_prefix("/v1/files/"))?
        }
    };
    plain_id(id).then(|| format!("files/{id}"))
}

/// A resource id as Google makes them: letters, digits, `-`, `_`, `.`; no `/`.
fn plain_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 256
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Remembers what a create's answer names (`name`, or `file.name` for an upload), with the
/// key that made it, the token that asked, and when it expires (`expireTime` /
/// `expirationTime` when Google says, else the collection's default).
fn remember_created(
    app: &App,
    owner: &Arc<str>,
    key: &crate::secret::ApiKey,
    bytes: &[u8],
    now: SystemTime,
) {
    let Ok(value) = serde_json::from_slice::<Value>(bytes) else {
        return;
    };
    let object = match value.get("file") {
        Some(file @ Value::Object(_)) => file,
        _ => &value,
    };
    let Some(name) = object.get("name").and_then(Value::as_str) else {
        return;
    };
    if !trackable(name) {
        return;
    }
    let expires = ["expireTime", "expirationTime"]
        .iter()
        .find_map(|f| {
            object
                .get(*f)
                .and_then(Value::as_str)
                .and_then(parse_rfc3339)
        })
        .unwrap_or_else(|| now + affinity::default_ttl(name));
    remember(app, owner, key, name, expires, now);
    // A batch's results are a file Google made in the same project.
    let mut results = Vec::new();
    result_files(&value, &mut results, 0);
    for file in results {
        remember(app, owner, key, &file, now + affinity::FILE_TTL, now);
    }
}

/// Remembers `name` for `owner` on `key`, unless another token already holds that name (a
/// collision of two projects' names never hands one token's resource to another).
fn remember(
    app: &App,
    owner: &Arc<str>,
    key: &crate::secret::ApiKey,
    name: &str,
    expires: SystemTime,
    now: SystemTime,
) {
    if let Some(held) = app.affinity.lookup(name, now) {
        if held.owner != *owner {
            tracing::warn!(
                resource = name,
                "a created name is already held by another client token; not remembered"
            );
            return;
        }
    }
    app.affinity.insert(
        name,
        Pin {
            key: key.clone(),
            owner: owner.clone(),
            expires,
            upstream: None,
        },
        now,
    );
}

/// The result files a batch names (`output.responsesFile`, `dest.fileName`).
fn result_files(value: &Value, out: &mut Vec<String>, depth: usize) {
    if depth > 16 {
        return;
    }
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("responsesFile" | "responses_file", Value::String(s))
                        if trackable(s) && s.starts_with("files/") =>
                    {
                        out.push(s.clone())
                    }
                    ("dest", Value::Object(dest)) => {
                        if let Some(Value::String(s)) = dest.get("fileName") {
                            if trackable(s) && s.starts_with("files/") {
                                out.push(s.clone());
                            }
                        }
                    }
                    _ => result_files(v, out, depth + 1),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| result_files(v, out, depth + 1)),
        _ => {}
    }
}

/// A name this proxy tracks: `collection/id` of `TRACKED`, or `models/{m}/operations/{id}`,
/// each segment plain.
fn trackable(name: &str) -> bool {
    let plain = |s: &str| {
        !s.is_empty()
            && s.len() <= 256
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    };
    match name.split('/').collect::<Vec<_>>().as_slice() {
        [c, id] => TRACKED.contains(c) && plain(id),
        ["models", m, "operations", id] => plain(m) && plain(id),
        _ => false,
    }
}

/// RFC 3339 as Google writes it (`2026-12-02T01:02:03.456789Z`, or an offset).
pub(crate) fn parse_rfc3339(s: &str) -> Option<SystemTime> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't') {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut rest = &s[19..];
    // The fraction, to the nanosecond (Google writes 0, 3, 6 or 9 digits): the order of two
    // files created in one second (`affinity::upload_group`) is in it.
    let mut nanos = 0u32;
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        for (i, b) in frac.bytes().take(digits.min(9)).enumerate() {
            nanos += u32::from(b - b'0') * 10u32.pow(8 - i as u32);
        }
        rest = &frac[digits..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ => {
            let sign = match rest.as_bytes().first()? {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let oh = rest.get(1..3)?.parse::<i64>().ok()?;
            let om = rest.get(4..6)?.parse::<i64>().ok()?;
            sign * (oh * 3600 + om * 60)
        }
    };
    // Days from 1970-01-01 (Howard Hinnant's days_from_civil).
    let y = if mo <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + h * 3600 + mi * 60 + sec - offset;
    let secs = u64::try_from(secs).ok()?;
    Some(SystemTime::UNIX_EPOCH + Duration::new(secs, nanos))
}

/// The address clients reach the proxy at: `server.public_url`, else the request's `Host`
/// (a trusted proxy's `X-Forwarded-Host` first), its scheme `https` when the trusted proxy
/// says so.
fn public_base(snap: &Snapshot, caller: &Caller, host: Option<&str>) -> Result<String, ProxyError> {
    if let Some(url) = &snap.config.server.public_url {
        return Ok(url.clone());
    }
    let host = host.ok_or_else(|| {
        ProxyError::bad_request("the request has no usable Host header to build an upload URL on")
    })?;
    let scheme = if caller.https { "https" } else { "http" };
    Ok(format!("{scheme}://{host}"))
}

/// The host the client addressed: a trusted proxy's last `X-Forwarded-Host`, else `Host`;
/// only a plain `host[:port]` (letters, digits, `.-:[]`) counts.
fn client_host(headers: &HeaderMap, trusted_peer: bool) -> Option<String> {
    let forwarded = trusted_peer
        .then(|| {
            headers
                .get_all("x-forwarded-host")
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .last()
                .map(|v| v.trim().to_string())
        })
        .flatten();
    let host = forwarded.or_else(|| {
        headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    })?;
    let plain = !host.is_empty()
        && host.len() <= 255
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'));
    plain.then_some(host)
}

/// A resumable upload Google accepted: its upload URL (checked to point at the upstream) is
/// remembered under a new random id, pinned to `key` and bound to `owner`; the client gets
/// the proxy's URL for it.
fn start_session(
    app: &App,
    snap: &Snapshot,
    owner: &Arc<str>,
    key: &crate::secret::ApiKey,
    upstream: &HeaderMap,
    public: &str,
    now: SystemTime,
) -> Result<HeaderValue, ProxyError> {
    let bad = |why: &str| ProxyError::UpstreamFailed {
        status: StatusCode::BAD_GATEWAY,
        message: format!("the upstream's resumable upload answer {why}"),
        raw: Bytes::new(),
    };
    let url = upstream
        .get(UPLOAD_URL)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| bad("has no X-Goog-Upload-URL"))?;
    // Never send a key anywhere but the upstream.
    let path = snap
        .upstream
        .same_origin(url)
        .ok_or_else(|| bad("points somewhere other than the upstream"))?;
    let mut raw = [0u8; 32];
    getrandom::fill(&mut raw)
        .map_err(|e| ProxyError::Internal(format!("no random source: {e}")))?;
    let id: String = raw.iter().map(|b| format!("{b:02x}")).collect();
    app.affinity.insert(
        &affinity::upload_name(&id),
        Pin {
            key: key.clone(),
            owner: owner.clone(),
            expires: now + affinity::UPLOAD_TTL,
            upstream: Some(Arc::from(path)),
        },
        now,
    );
    HeaderValue::from_str(&format!("{public}/upload/session/{id}"))
        .map_err(|_| ProxyError::bad_request("the request's Host cannot make an upload URL"))
}

#[allow(clippy::too_many_arguments)]
/// `GET /v1beta/{collection}`: the caller's own resources of that collection, across every
/// key, sorted by name and paged here (`pageSize`, default 10, at most 100; `pageToken` is the
/// last name of the previous page). Each is read fresh from Google on its key; one Google no
/// longer has is forgotten.
async fn list(
    app: &Arc<App>,
    snap: &Arc<Snapshot>,
    owner: &str,
    version: &str,
    collection: &'static str,
    prefix: &str,
    query: &str,
    log: &mut RequestLog,
) -> Result<Reply, ProxyError> {
    let param = |name: &str| {
        query
            .split('&')
            .find_map(|p| p.strip_prefix(name)?.strip_prefix('='))
            .map(|v| String::from_utf8_lossy(&super::gemini::percent_decode(v)).into_owned())
    };
    let page_size = match param("pageSize") {
        Some(v) => v
            .parse::<usize>()
            .map_err(|_| ProxyError::BadRequest {
                message: "pageSize must be a whole number".into(),
                param: Some("pageSize".into()),
            })?
            .clamp(1, MAX_PAGE),
        None => DEFAULT_PAGE,
    };
    let after = param("pageToken").filter(|t| !t.is_empty());
    let now = SystemTime::now();
    let mine = app.pins_of(owner, prefix, now).await;
    let start = match &after {
        Some(token) => mine.partition_point(|(n, _)| n.as_str() <= token.as_str()),
        None => 0,
    };
    let page: Vec<(String, Pin)> = mine[start..].iter().take(page_size).cloned().collect();
    let more = mine.len() > start + page.len();
    let worker = log.worker;
    let token = log.token.clone();
    let reads: Vec<_> = page
        .iter()
        .map(|(name, pin)| {
            read_one(
                snap.clone(),
                worker,
                token.clone(),
                name.clone(),
                key_index(snap, &pin.key),
                format!("/{version}/{name}"),
            )
        })
        .collect();
    let reads = futures_util::stream::iter(reads)
        .buffered(LIST_CONCURRENCY)
        .collect::<Vec<_>>()
        .await;
    let mut items = Vec::with_capacity(reads.len());
    let mut failed = 0;
    for (name, got) in reads {
        match got {
            Ok(Some(value)) => items.push(value),
            // Google no longer has it: forgotten.
            Ok(None) => {
                app.affinity.remove(&name);
            }
            // Kept, just not in this page: a transient failure must not lose a resource.
            Err(()) => failed += 1,
        }
    }
    if failed > 0 && items.is_empty() && !page.is_empty() {
        return Err(ProxyError::UpstreamFailed {
            status: StatusCode::BAD_GATEWAY,
            message: format!("could not read your {collection} from the upstream"),
            raw: Bytes::new(),
        });
    }
    let field = if collection == "batches" {
        "operations"
    } else {
        collection
    };
    let mut body = json!({ field: items });
    if more {
        if let Some((last, _)) = page.last() {
            body["nextPageToken"] = Value::String(last.clone());
        }
    }
    Ok(Reply::Done(crate::body::json_response(
        StatusCode::OK,
        &body,
    )))
}

/// One resource of a list page, read on its key: `Ok(None)` when Google (or the pool) no
/// longer has it, `Err` when the read failed otherwise.
async fn read_one(
    snap: Arc<Snapshot>,
    worker: usize,
    token: Option<String>,
    name: String,
    index: Option<usize>,
    path: String,
) -> (String, Result<Option<Value>, ()>) {
    let Some(index) = index else {
        return (name, Ok(None));
    };
    let mut log = RequestLog::new(Method::GET, "", "native");
    log.worker = worker;
    log.token = token;
    let call = Call {
        model: None,
        method: Method::GET,
        path_and_query: &path,
        body: None,
        delivery: Delivery::Buffered,
        pinned: Some(Pinned {
            index,
            resource: &name,
        }),
        native: None,
    };
    let got = match proxy::execute(&snap, call, &mut log).await {
        Ok(served) => match served.body {
            Payload::Full(bytes) => serde_json::from_slice::<Value>(&bytes)
                .map(Some)
                .map_err(|_| ()),
            Payload::Stream(_) => Err(()),
        },
        Err(ProxyError::UpstreamClient { status, .. })
            if status == StatusCode::NOT_FOUND || status == StatusCode::FORBIDDEN =>
        {
            Ok(None)
        }
        Err(_) => Err(()),
    };
    (name, got)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        let t = Target::of("files/abc:download");
        assert_eq!(t.resource.as_deref(), Some("files/abc"));
        assert_eq!(Target::of("files").collection, Some("files"));
        assert_eq!(
            Target::of("cachedContents").collection,
            Some("cachedContents")
        );
        assert_eq!(
            Target::of("batches/b1:cancel").resource.as_deref(),
            Some("batches/b1")
        );
        let t = Target::of("models/veo-3:predictLongRunning");
        assert_eq!(t.model.as_deref(), Some("veo-3"));
        assert_eq!(t.resource, None);
        let t = Target::of("models/veo-3/operations/op1");
        assert_eq!(t.resource.as_deref(), Some("models/veo-3/operations/op1"));
        assert_eq!(Target::of("interactions").collection, None);
        assert_eq!(
            Target::of("interactions/v1_abc/cancel").resource.as_deref(),
            Some("interactions/v1_abc")
        );
        assert_eq!(
            Target::of("interactions/v1_abc:cancel").resource.as_deref(),
            Some("interactions/v1_abc")
        );
        assert_eq!(Target::of("files").prefix, "files/");
        assert_eq!(
            Target::of("batches/b:cancel").action.as_deref(),
            Some("cancel")
        );
        let t = Target::of("models/veo/operations");
        assert_eq!(
            (t.collection, t.prefix.as_str()),
            (Some("operations"), "models/veo/operations/")
        );
    }

    #[test]
    fn only_reads_and_plain_model_methods_fail_over() {
        assert!(repeatable(&Method::GET, false, None));
        assert!(repeatable(&Method::POST, true, Some("predict")));
        assert!(!repeatable(
            &Method::POST,
            true,
            Some("batchGenerateContent")
        ));
        assert!(!repeatable(&Method::POST, true, Some("predictLongRunning")));
        assert!(!repeatable(&Method::POST, false, None), "creates");
        assert!(!repeatable(&Method::DELETE, false, None));
        assert!(!repeatable(&Method::PATCH, false, None));
    }

    #[test]
    fn batch_results_are_learned() {
        let batch = json!({"name": "batches/b1", "metadata": {"output": {"responsesFile": "files/batch-out"}},
                           "response": {"dest": {"fileName": "files/batch-out2"}}});
        let mut out = Vec::new();
        result_files(&batch, &mut out, 0);
        out.sort();
        assert_eq!(out, vec!["files/batch-out", "files/batch-out2"]);
    }

    #[test]
    fn paths_are_plain() {
        assert!(check_path("/v1beta/files/abc:download").is_ok());
        for bad in [
            "/v1beta/files/../models",
            "/v1beta/files/%2e%2e",
            "/v1beta/files/a b",
            "/v1beta/files/a?b",
        ] {
            assert!(check_path(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn body_references() {
        let body = br#"{"contents":[{"parts":[{"fileData":{"fileUri":"https://generativelanguage.googleapis.com/v1beta/files/abc-123","mimeType":"text/plain"}},{"file_data":{"file_uri":"files/def"}},{"fileData":{"fileUri":"https://www.youtube.com/watch?v=x"}}]}],"cachedContent":"cachedContents/cc1"}"#;
        assert_eq!(
            referenced(body).ok(),
            Some(vec![
                "cachedContents/cc1".to_string(),
                "files/abc-123".to_string(),
                "files/def".to_string()
            ])
        );
        let batch = br#"{"batch":{"inputConfig":{"fileName":"files/in1"}}}"#;
        assert_eq!(referenced(batch).ok(), Some(vec!["files/in1".to_string()]));
        assert_eq!(referenced(br#"{"contents":[]}"#).ok(), Some(vec![]));
        let tool = br#"{"tools":[{"fileSearch":{"fileSearchStoreNames":["fileSearchStores/s1","fileSearchStores/s2"]}}]}"#;
        assert_eq!(
            referenced(tool).ok(),
            Some(vec![
                "fileSearchStores/s1".to_string(),
                "fileSearchStores/s2".to_string()
            ])
        );
        // A function's own `fileName` argument is not a resource.
        let args = br#"{"contents":[{"parts":[{"functionCall":{"name":"open","args":{"fileName":"report.pdf"}}}]}]}"#;
        assert_eq!(referenced(args).ok(), Some(vec![]));
        // Spellings Google might resolve but this proxy does not read are refused, not let by.
        for sneaky in [
            r#"{"fileData":{"fileUri":"https://host/v1alpha/files/abc"}}"#,
            r#"{"fileData":{"fileUri":"https://host/v1beta//files/abc"}}"#,
            r#"{"fileData":{"fileUri":"https://host/v1beta/FILES/abc"}}"#,
            r#"{"fileData":{"fileUri":"https://host/v1beta/files%2Fabc"}}"#,
            r#"{"fileData":{"fileUri":"files/abc/../x"}}"#,
            r#"{"fileData":{"file_uri":"generativelanguage.googleapis.com/v1beta/files/abc"}}"#,
            r#"{"cachedContent":"projects/p/cachedContents/x"}"#,
            r#"{"cachedContent":" cachedContents/x"}"#,
            r#"{"batch":{"inputConfig":{"fileName":"files/a/b"}}}"#,
        ] {
            assert!(referenced(sneaky.as_bytes()).is_err(), "{sneaky}");
        }
        // A key or a name spelled with `\u` escapes is read as what it stands for.
        let escaped = br#"{"fileData":{"file\u0055ri":"\u0066iles/abc"}}"#;
        assert_eq!(
            referenced(escaped).ok(),
            Some(vec!["files/abc".to_string()])
        );
        // A body that only talks about files names nothing (and is not walked).
        let talk =
            br#"{"contents":[{"parts":[{"text":"list the files in src/, then files/abc"}]}]}"#;
        assert!(!may_name_resources(talk, false));
        assert_eq!(referenced(talk).ok(), Some(vec![]));
        let many: Vec<String> = (0..=MAX_NAMED)
            .map(|i| format!(r#"{{"fileData":{{"fileUri":"files/f{i}"}}}}"#))
            .collect();
        let many = format!(r#"{{"parts":[{}]}}"#, many.join(","));
        assert!(referenced(many.as_bytes()).is_err(), "too many names");
    }

    #[test]
    fn created_names_and_times() {
        assert!(trackable("files/abc"));
        assert!(trackable("cachedContents/x1"));
        assert!(trackable("models/veo/operations/op"));
        assert!(!trackable("files/../x"));
        assert!(!trackable("users/x"));
        assert!(!trackable("files/a/b"));
        let t = parse_rfc3339("2026-12-02T01:02:03.456789Z");
        assert_eq!(
            t,
            Some(SystemTime::UNIX_EPOCH + Duration::new(1_796_173_323, 456_789_000))
        );
        assert_eq!(
            parse_rfc3339("2026-12-02T01:02:03.123456789123Z"),
            Some(SystemTime::UNIX_EPOCH + Duration::new(1_796_173_323, 123_456_789))
        );
        assert_eq!(
            parse_rfc3339("2026-12-02T01:02:03Z"),
            Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_173_323))
        );
        assert_eq!(
            parse_rfc3339("2026-12-02T03:02:03+02:00"),
            Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_173_323))
        );
        assert_eq!(parse_rfc3339("soon"), None);
        assert_eq!(parse_rfc3339("1960-01-01T00:00:00Z"), None);
    }

    #[test]
    fn interaction_creates() {
        let read = |b: &str| InteractionCreate::read(b.as_bytes());
        assert_eq!(
            read(r#"{"model":"models/gemini-3-flash","input":"hi","stream":true,"previous_interaction_id":"v1_a-b"}"#).ok(),
            Some(InteractionCreate {
                model: Some("gemini-3-flash".into()),
                agent: None,
                stream: true,
                previous: Some("interactions/v1_a-b".into()),
                store: true,
            })
        );
        let agent = read(
            r#"{"agent":"deep-research-pro-preview-12-2025","input":"x","background":true,"store":false}"#,
        );
        assert!(agent
            .as_ref()
            .is_ok_and(|c| c.model.is_none() && !c.store && !c.stream));
        for bad in [
            "",
            "[]",
            "{",
            r#"{"input":"x"}"#,
            r#"{"model":"m","agent":"a","input":"x"}"#,
            r#"{"model":["m"]}"#,
            r#"{"model":"m","stream":1}"#,
            r#"{"model":"m","store":"no"}"#,
            r#"{"agent":"a/b"}"#,
            r#"{"model":"m","previous_interaction_id":"x/../y"}"#,
            r#"{"model":"m","previous_interaction_id":5}"#,
        ] {
            assert!(read(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn interaction_inputs_name_files_in_uri() {
        let body = br#"{"model":"m","input":[{"type":"document","uri":"https://h/v1beta/files/doc1","mime_type":"application/pdf"},{"type":"text","text":"uri"}]}"#;
        assert_eq!(
            referenced_by_interaction(body).ok(),
            Some(vec!["files/doc1".to_string()])
        );
        // Elsewhere `uri` is not a file field.
        assert_eq!(referenced(body).ok(), Some(vec![]));
        assert!(
            referenced_by_interaction(br#"{"input":[{"uri":"https://h/v1alpha/files/x"}]}"#)
                .is_err()
        );
    }

    #[test]
    fn interaction_ids() {
        let created = br#"{"event_type":"interaction.created","event_id":"e1","interaction":{"id":"v1_x","status":"in_progress"}}"#;
        assert_eq!(interaction_id(created).as_deref(), Some("v1_x"));
        let update = br#"{"event_type":"interaction.status_update","interaction_id":"v1_y","status":"in_progress"}"#;
        assert_eq!(interaction_id(update).as_deref(), Some("v1_y"));
        assert_eq!(
            interaction_id(br#"{"id":"v1_z","object":"interaction"}"#).as_deref(),
            Some("v1_z")
        );
        assert_eq!(interaction_id(br#"{"id":"../x"}"#), None);
        assert_eq!(
            interaction_id(br#"{"event_type":"step.delta","delta":{"text":"hi"}}"#),
            None
        );
    }

    #[test]
    fn file_uris() {
        assert_eq!(
            file_in_uri("http://127.0.0.1:9/v1/files/x?alt=media").as_deref(),
            Some("files/x")
        );
        assert_eq!(file_in_uri("gs://bucket/files/x"), None);
        assert_eq!(file_in_uri("https://www.youtube.com/watch?v=x"), None);
    }
}
