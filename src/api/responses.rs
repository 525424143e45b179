//! The OpenAI Responses API (issue #17): `POST /v1/responses` (whole and streamed),
//! `GET` / `DELETE /v1/responses/{id}`, `POST /v1/responses/input_tokens`.
//!
//! Modelled on `chat`: parse (400 before any upstream call), continue a stored conversation
//! (`previous_response_id`, 404 when this token has no such response), resolve the alias chain,
//! fetch media URLs, translate per target model, let `proxy` find a key; streams go to `relay`
//! with a `Shape::Responses`. `store` (default true) keeps the response in
//! `App::stored_responses` with the conversation a follow-up continues. Codex's headers
//! (`session-id`, `thread-id`, `x-codex-*`) need nothing: unknown headers are ignored.

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, StatusCode};
use hyper::body::Incoming;
use serde_json::value::RawValue;
use serde_json::{json, Value};

use crate::access::Caller;
use crate::api::chat::{empty_answer, from_translate};
use crate::api::{
    allowed_chain, chain_exhausted, clean_model_name, count_tokens_on_chain, failed_body,
    generate_path, next_in_chain, resolve,
};
use crate::body::{json_bytes, json_response};
use crate::body::{read_body, Reply};
use crate::clock::unix_now;
use crate::error::ProxyError;
use crate::media;
use crate::proxy::{self, Call, Delivery, Payload};
use crate::relay::{self, Shape};
use crate::request_log::RequestLog;
use crate::state::{App, Snapshot};
use crate::stored_responses::{Stored, Ticket};
use crate::translate::responses::{
    self as wire, Ctx, Entry, Names, ResponsesRequest, ResponsesStream, Shaping,
};
use crate::translate::{self, Extras, Target};

/// `POST /v1/responses`.
pub async fn create(
    app: &Arc<App>,
    snap: &Arc<Snapshot>,
    caller: &Caller,
    req: Request<Incoming>,
    log: &mut RequestLog,
) -> Result<Reply, ProxyError> {
    let body = read_body(req, snap.config.server.max_body).await?;
    let mut resolved = None;
    let request = parse(app, caller, &body, &mut resolved).await?;
    let owner = caller.token_name.clone();
    let previous = previous(app, caller, &request).await?;
    let conversation = conversation(previous.as_deref(), &request)?;

    let requested = clean_model_name(&request.model)?;
    log.model = Some(requested.to_string());
    let chain = allowed_chain(caller, requested, resolve(&snap.config.models, requested))?;

    let id = format!("resp_{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..));
    let mut names = Names::default();
    // Built once for the first model, to list media URLs (and to refuse a bad request before
    // any fetch).
    let first = chain
        .first()
        .ok_or_else(|| ProxyError::Internal("empty model chain".into()))?;
    let probe = wire::to_chat(
        &request,
        &conversation,
        &Shaping {
            model: &first.model,
            alias_effort: first.reasoning_effort.as_deref(),
        },
        body.len(),
        &mut names,
    )
    .map_err(from_translate)?;
    for kind in &names.left_out {
        tracing::debug!(model = %first.model, "hosted tool `{kind}` has no Gemini counterpart: left out");
    }
    let urls = translate::chat::remote_media_urls(&probe);
    let tool_names = translate::chat::tool_names(&probe);
    let media = if urls.is_empty() {
        None
    } else {
        // A refusal of the tools is the client's before any fetch, not after it.
        translate::chat::check_tools(&probe).map_err(from_translate)?;
        Some(media::fetch_all(&urls, snap.config.upstream.fetch_private_urls, "input").await?)
    };
    drop(probe);

    let ctx = Ctx {
        id: id.clone(),
        created_at: unix_now(),
        model: request.model.to_string(),
        echo: wire::echo(&request),
        include_encrypted: request.include_encrypted(),
        names: names.clone(),
        tool_names,
    };
    let ticket = || {
        request.store().then(|| {
            let mut input = previous
                .as_deref()
                .and_then(|p| serde_json::from_slice::<Vec<Value>>(&p.conversation).ok())
                .unwrap_or_default();
            input.extend(wire::input_items(&request));
            Ticket {
                id: id.clone(),
                owner: owner.clone(),
                input,
            }
        })
    };
    let stream = request.stream();
    let delivery = if stream {
        Delivery::Streaming
    } else {
        Delivery::Buffered
    };

    let mut last_error = None;
    for (i, target) in chain.iter().enumerate() {
        let gemini_body = gemini_body(
            app,
            snap,
            &request,
            &conversation,
            target,
            body.len(),
            media.as_ref(),
        )?;
        let path = generate_path(&target.model, stream);
        let call = Call {
            model: Some(&target.model),
            method: Method::POST,
            path_and_query: &path,
            body: Some(Bytes::from(gemini_body)),
            delivery,
            pinned: None,
            native: None,
        };
        match proxy::execute(snap, call, log).await {
            Ok(served) => {
                if chain.len() > 1 {
                    log.model = Some(format!("{requested}->{}", target.model));
                }
                return match served.body {
                    Payload::Full(bytes) => match wire::from_gemini(&bytes, &ctx) {
                        Ok(done) if done.has_output || done.incomplete => {
                            app.signatures.remember(done.signatures);
                            if let Some(ticket) = ticket() {
                                app.stored_responses
                                    .keep(ticket, &done.response, &done.output);
                            }
                            Ok(Reply::Done(json_response(StatusCode::OK, &done.response)))
                        }
                        Ok(_) => Err(empty_answer(&bytes)),
                        Err(e) => Err(failed_body(snap, &served.lease, e)),
                    },
                    Payload::Stream(response) => Ok(Reply::Streaming(
                        relay::start(
                            app.clone(),
                            snap.clone(),
                            served.lease,
                            response,
                            Shape::Responses {
                                stream: Box::new(ResponsesStream::new(ctx)),
                                store: ticket(),
                            },
                            log.hand_off(),
                            HeaderValue::from_static("text/event-stream"),
                        )
                        .await,
                    )),
                };
            }
            Err(e) => last_error = Some(next_in_chain(&chain, i, e)?),
        }
    }
    Err(chain_exhausted(last_error))
}

/// The stored response `previous_response_id` names, if any: 404 when this token has none.
async fn previous(
    app: &App,
    caller: &Caller,
    request: &ResponsesRequest<'_>,
) -> Result<Option<Arc<Stored>>, ProxyError> {
    let Some(id) = request.previous_response_id.as_deref() else {
        return Ok(None);
    };
    app.stored_response(id, caller.token_name.as_deref())
        .await
        .map(Some)
        .ok_or_else(|| not_found(id))
}

/// The request in `body`, its `input`'s item references resolved into `resolved` (which the
/// request then borrows).
async fn parse<'a>(
    app: &App,
    caller: &Caller,
    body: &'a [u8],
    resolved: &'a mut Option<Box<RawValue>>,
) -> Result<ResponsesRequest<'a>, ProxyError> {
    let mut request = wire::parse_request(body).map_err(from_translate)?;
    if let Some(input) = resolve_references(app, caller, request.input).await? {
        request.input = Some(&**resolved.insert(input));
    }
    Ok(request)
}

/// `input` with each `item_reference` replaced by the item it names, when it has any: an
/// item of a response this token stored, by the id this proxy gave it (`{kind}_{suffix}_{n}`
/// is in the conversation of `resp_{suffix}`). A reference nothing answers is a 400.
async fn resolve_references(
    app: &App,
    caller: &Caller,
    input: Option<&RawValue>,
) -> Result<Option<Box<RawValue>>, ProxyError> {
    let Some(raw) = input.filter(|raw| raw.get().contains("\"item_reference\"")) else {
        return Ok(None);
    };
    let Ok(mut items) = serde_json::from_str::<Vec<Value>>(raw.get()) else {
        // Not a list: the input's own parse words the error.
        return Ok(None);
    };
    // Each referenced response's conversation, parsed once however many items it gives.
    let mut conversations: Vec<(String, Vec<Value>)> = Vec::new();
    for (i, item) in items.iter_mut().enumerate() {
        if item.get("type").and_then(Value::as_str) != Some("item_reference") {
            continue;
        }
        let id = item.get("id").and_then(Value::as_str).unwrap_or_default();
        let missing = || ProxyError::BadRequest {
            message: format!("Item with id '{}' not found.", crate::excerpt::excerpt(id)),
            param: Some(format!("input[{i}].id")),
        };
        let response = id
            .split_once('_')
            .and_then(|(_, rest)| rest.rsplit_once('_'))
            .map(|(suffix, _)| format!("resp_{suffix}"))
            .ok_or_else(missing)?;
        let at = match conversations.iter().position(|(r, _)| *r == response) {
            Some(at) => at,
            None => {
                let stored = app
                    .stored_response(&response, caller.token_name.as_deref())
                    .await
                    .ok_or_else(missing)?;
                let all = serde_json::from_slice(&stored.conversation).unwrap_or_default();
                conversations.push((response, all));
                conversations.len() - 1
            }
        };
        let found = conversations[at]
            .1
            .iter()
            .find(|it| it.get("id").and_then(Value::as_str) == Some(id))
            .ok_or_else(missing)?;
        *item = found.clone();
    }
    let text = serde_json::to_string(&items)
        .map_err(|e| ProxyError::Internal(format!("resolved input: {e}")))?;
    RawValue::from_string(text)
        .map(Some)
        .map_err(|e| ProxyError::Internal(format!("resolved input: {e}")))
}

/// The conversation to send: the stored one `previous` continues (if any), then `input`.
fn conversation<'a>(
    previous: Option<&'a Stored>,
    request: &ResponsesRequest<'a>,
) -> Result<Vec<Entry<'a>>, ProxyError> {
    let mut entries = match previous {
        None => Vec::new(),
        Some(previous) => {
            let raw: &RawValue = serde_json::from_slice(&previous.conversation).map_err(|e| {
                ProxyError::Internal(format!("a stored conversation is unreadable: {e}"))
            })?;
            wire::parse_input(Some(raw), "previous_response_id").map_err(from_translate)?
        }
    };
    entries.extend(wire::parse_input(request.input, "input").map_err(from_translate)?);
    Ok(entries)
}

fn not_found(id: &str) -> ProxyError {
    ProxyError::not_found(format!(
        "No response found with id '{}'.",
        crate::excerpt::excerpt(id)
    ))
}

/// The Gemini `generateContent` body for one target model.
fn gemini_body(
    app: &App,
    snap: &Snapshot,
    request: &ResponsesRequest<'_>,
    conversation: &[Entry<'_>],
    target: &crate::api::ChainStep,
    body_len: usize,
    media: Option<&std::collections::HashMap<String, translate::FetchedFile>>,
) -> Result<Vec<u8>, ProxyError> {
    let mut names = Names::default();
    let chat = wire::to_chat(
        request,
        conversation,
        &Shaping {
            model: &target.model,
            alias_effort: target.reasoning_effort.as_deref(),
        },
        body_len,
        &mut names,
    )
    .map_err(from_translate)?;
    let lookup = |id: &str| app.signatures.get(id);
    translate::chat::to_gemini_with(
        &chat,
        &Target {
            model: &target.model,
            reasoning_effort: target.reasoning_effort.as_deref(),
            safety: snap.config.upstream.safety.as_deref(),
        },
        &Extras {
            signatures: Some(&lookup),
            media,
        },
    )
    .map_err(|e| from_translate(input_param(e)))
}

/// Chat's builder names the chat request's `messages`; this request's field is `input` (its
/// messages are not numbered as the input's items are, so the index goes too).
fn input_param(mut e: translate::TranslateError) -> translate::TranslateError {
    if let translate::TranslateError::InvalidRequest { param, .. } = &mut e {
        if param.as_deref().is_some_and(|p| p.starts_with("messages")) {
            *param = Some("input".into());
        }
    }
    e
}

/// `GET` / `DELETE /v1/responses/{id}`: only the token that stored it sees it.
pub async fn stored(
    app: &App,
    caller: &Caller,
    id: &str,
    delete: bool,
) -> Result<http::Response<crate::body::Body>, ProxyError> {
    let owner = caller.token_name.as_deref();
    if delete {
        if !app.delete_stored_response(id, owner).await {
            return Err(not_found(id));
        }
        return Ok(json_response(
            StatusCode::OK,
            &json!({"id": id, "object": "response.deleted", "deleted": true}),
        ));
    }
    let stored = app
        .stored_response(id, owner)
        .await
        .ok_or_else(|| not_found(id))?;
    Ok(json_bytes(StatusCode::OK, stored.response.clone()))
}

/// `GET /v1/responses/{id}/input_items`: the items a stored response was answered from, for
/// the token that stored it only.
pub async fn input_items(
    app: &App,
    caller: &Caller,
    id: &str,
    query: Option<&str>,
) -> Result<http::Response<crate::body::Body>, ProxyError> {
    let stored = app
        .stored_response(id, caller.token_name.as_deref())
        .await
        .ok_or_else(|| not_found(id))?;
    let list = translate::responses::input_item_list(&stored.response, &stored.conversation, query)
        .map_err(from_translate)?;
    Ok(json_response(StatusCode::OK, &list))
}

/// `POST /v1/responses/input_tokens`: Gemini's `countTokens` on the request as it would be
/// sent (system instruction, tools and history included).
pub async fn input_tokens(
    app: &Arc<App>,
    snap: &Arc<Snapshot>,
    caller: &Caller,
    req: Request<Incoming>,
    log: &mut RequestLog,
) -> Result<Reply, ProxyError> {
    let body = read_body(req, snap.config.server.max_body).await?;
    let mut resolved = None;
    let request = parse(app, caller, &body, &mut resolved).await?;
    let previous = previous(app, caller, &request).await?;
    let conversation = conversation(previous.as_deref(), &request)?;
    let requested = clean_model_name(&request.model)?;
    log.model = Some(requested.to_string());
    let chain = allowed_chain(caller, requested, resolve(&snap.config.models, requested))?;
    let counted = count_tokens_on_chain(snap, &chain, log, |target| {
        let generate = gemini_body(app, snap, &request, &conversation, target, body.len(), None)?;
        let mut generate: serde_json::Map<String, Value> = serde_json::from_slice(&generate)
            .map_err(|e| ProxyError::Internal(format!("countTokens body: {e}")))?;
        generate.insert("model".into(), json!(format!("models/{}", target.model)));
        Ok(json!({ "generateContentRequest": generate })
            .to_string()
            .into_bytes())
    })
    .await?;
    let tokens = crate::translate::gemini::total_tokens(&counted).map_err(from_translate)?;
    Ok(Reply::Done(json_response(
        StatusCode::OK,
        &json!({"object": "response.input_tokens", "input_tokens": tokens}),
    )))
}
