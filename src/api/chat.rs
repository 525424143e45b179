//! `POST /v1/chat/completions`: OpenAI chat over Gemini, streaming and not.
//!
//! Parses the request (400 for anything malformed, before any upstream call), resolves the
//! model through aliases (a fallback chain moves to the next model when no key can serve the
//! current one), has `media` fetch any http(s) image URL, translates, and lets `proxy` find a
//! key. Streams go to `relay`.
//!
//! `google.cached_content` names a context cache made through the native API: the caller must
//! own it (else a 404 before any upstream call), and every model of the chain is then tried on
//! the key that made it only (`proxy::Pinned`: its rest is a 429 naming the cache, a 403 there
//! disables nothing). An answer that may carry images (`modalities`, an image model) is
//! counted against the memory budget while held.

use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, StatusCode};
use hyper::body::Incoming;

use crate::access::Caller;
use crate::api::{
    allowed_chain, chain_exhausted, clean_model_name, failed_body, generate_path, next_in_chain,
    resolve,
};
use crate::body::json_bytes;
use crate::body::{read_body, Reply};
use crate::clock::unix_now;
use crate::error::ProxyError;
use crate::media;
use crate::proxy::{self, Call, Delivery, Payload, Pinned};
use crate::relay::{self, Shape};
use crate::request_log::RequestLog;
use crate::state::{App, Snapshot};
use crate::translate::chat::{self, ChatRequest, StreamTranslator};
use crate::translate::{Extras, ResponseCtx, TranslateError};

pub async fn completions(
    app: &Arc<App>,
    snap: &Arc<Snapshot>,
    caller: &Caller,
    req: Request<Incoming>,
    log: &mut RequestLog,
) -> Result<Reply, ProxyError> {
    let body = read_body(req, snap.config.server.max_body).await?;
    let request = chat::parse_chat_request(&body).map_err(from_translate)?;
    Ok(match complete(app, snap, caller, &request, log).await? {
        Answer::Whole(body) => Reply::Done(json_bytes(StatusCode::OK, body)),
        Answer::Streaming(reply) => reply,
    })
}

/// A chat answer: a whole `chat.completion` body, or a stream already handed to `relay`.
pub enum Answer {
    Whole(Vec<u8>),
    Streaming(Reply),
}

/// Runs one parsed chat request: media URLs fetched, the alias chain walked, each model tried
/// through `proxy`. Also serves `/run-gemini`.
pub async fn complete(
    app: &Arc<App>,
    snap: &Arc<Snapshot>,
    caller: &Caller,
    request: &ChatRequest<'_>,
    log: &mut RequestLog,
) -> Result<Answer, ProxyError> {
    let requested = clean_model_name(&request.model)?;
    log.model = Some(requested.to_string());
    let chain = allowed_chain(caller, requested, resolve(&snap.config.models, requested))?;
    let cache = cache_pin(app, snap, caller, request).await?;
    // Fetched once, before any key is used: a bad URL is the client's 400, not a key's fault.
    let urls = chat::remote_media_urls(request);
    let media = if urls.is_empty() {
        None
    } else {
        // A refusal of the tools is the client's before any fetch, not after it.
        chat::check_tools(request).map_err(from_translate)?;
        Some(media::fetch_all(&urls, snap.config.upstream.fetch_private_urls, "messages").await?)
    };

    let ctx = ResponseCtx {
        id: format!(
            "chatcmpl-{:016x}{:08x}",
            fastrand::u64(..),
            fastrand::u32(..)
        ),
        created: unix_now(),
        model: request.model.to_string(),
        one_call: request.parallel_tool_calls == Some(false),
        legacy_functions: request.legacy_functions,
        tool_names: chat::tool_names(request),
    };
    let delivery = if request.stream {
        Delivery::Streaming
    } else {
        Delivery::Buffered
    };

    let mut last_error = None;
    for (i, target) in chain.iter().enumerate() {
        let lookup = |id: &str| app.signatures.get(id);
        let gemini_body = chat::to_gemini_with(
            request,
            &target.translated(snap.config.upstream.safety.as_deref()),
            &Extras {
                signatures: Some(&lookup),
                media: media.as_ref(),
            },
        )
        .map_err(from_translate)?;
        let path = generate_path(&target.model, request.stream);
        let call = Call {
            model: Some(&target.model),
            method: Method::POST,
            path_and_query: &path,
            body: Some(Bytes::from(gemini_body)),
            delivery,
            pinned: cache.as_ref().map(|(resource, index)| Pinned {
                index: *index,
                resource,
            }),
            native: None,
        };
        match proxy::execute(snap, call, log).await {
            Ok(served) => {
                if chain.len() > 1 {
                    log.model = Some(format!("{requested}->{}", target.model));
                }
                return match served.body {
                    Payload::Full(bytes) => match reserve_images(request, &target.model, &bytes)
                        .and_then(|()| {
                            chat::from_gemini_detailed(&bytes, &ctx)
                                .map_err(|e| failed_body(snap, &served.lease, e))
                        }) {
                        Ok(done) if done.has_output => {
                            app.signatures.remember(done.signatures);
                            Ok(Answer::Whole(done.body))
                        }
                        Ok(_) => Err(empty_answer(&bytes)),
                        Err(e) => Err(e),
                    },
                    Payload::Stream(response) => {
                        let translator = StreamTranslator::new(ctx, request.include_usage());
                        Ok(Answer::Streaming(Reply::Streaming(
                            relay::start(
                                app.clone(),
                                snap.clone(),
                                served.lease,
                                response,
                                Shape::OpenAi(Box::new(translator)),
                                log.hand_off(),
                                HeaderValue::from_static("text/event-stream"),
                            )
                            .await,
                        )))
                    }
                };
            }
            Err(e) => last_error = Some(next_in_chain(&chain, i, e)?),
        }
    }
    Err(chain_exhausted(last_error))
}

/// The key `google.cached_content` lives on, when the request names a cache: it must be the
/// caller's (an unknown cache and another token's are the same 404) and its key still in the
/// pool. The one place the chat route reads the affinity table.
async fn cache_pin(
    app: &App,
    snap: &Snapshot,
    caller: &Caller,
    request: &ChatRequest<'_>,
) -> Result<Option<(String, usize)>, ProxyError> {
    let Some(name) = chat::cached_content(request).map_err(from_translate)? else {
        return Ok(None);
    };
    let owner = caller.token_name.as_deref().unwrap_or("");
    crate::api::native::resolve(app, snap, owner, &[name.to_string()], SystemTime::now()).await
}

/// An answer that may hold images is counted against the memory budget while it is held.
fn reserve_images(request: &ChatRequest<'_>, model: &str, bytes: &[u8]) -> Result<(), ProxyError> {
    if chat::wants_images(request, model) {
        crate::api::images::reserve_answer(bytes.len())
    } else {
        Ok(())
    }
}

/// A 200 from Gemini with nothing to show: an explicit error, never an empty success (clients
/// such as Cline fail confusingly on an empty assistant message). A blocked prompt is the
/// client's 400; an answer that stopped at the token limit or on a safety block would stop
/// the same way again, so its 502 says `x-should-retry: false`.
pub(crate) fn empty_answer(gemini_body: &[u8]) -> ProxyError {
    let value: serde_json::Value = serde_json::from_slice(gemini_body).unwrap_or_default();
    if let Some(reason) = value["promptFeedback"]["blockReason"].as_str() {
        return ProxyError::BadRequest {
            message: format!("Gemini blocked the prompt ({reason}); nothing was generated"),
            param: Some("messages".into()),
        };
    }
    let finish = value["candidates"][0]["finishReason"]
        .as_str()
        .unwrap_or("none");
    let hint = if finish == "MAX_TOKENS" {
        " (the token limit was reached before any text: raise max_tokens or lower reasoning_effort)"
    } else {
        ""
    };
    let same_again = finish == "MAX_TOKENS" || crate::translate::gemini::is_filtered(finish);
    ProxyError::EmptyAnswer {
        message: format!("Gemini returned an empty answer (finish reason {finish}){hint}"),
        worth_retrying: !same_again,
    }
}

/// Translation errors as client-facing errors.
pub fn from_translate(error: TranslateError) -> ProxyError {
    match error {
        TranslateError::InvalidRequest { message, param } => {
            ProxyError::BadRequest { message, param }
        }
        TranslateError::EmptyAnswer { message } => ProxyError::EmptyAnswer {
            message,
            worth_retrying: true,
        },
        TranslateError::BadUpstream { message } => ProxyError::UpstreamFailed {
            status: StatusCode::BAD_GATEWAY,
            message: format!("unreadable answer from Gemini: {message}"),
            raw: Bytes::new(),
        },
        TranslateError::UpstreamError { code, message, .. } => {
            let status = StatusCode::from_u16(code)
                .ok()
                .filter(|s| s.is_client_error() || s.is_server_error())
                .unwrap_or(StatusCode::BAD_GATEWAY);
            ProxyError::UpstreamFailed {
                status,
                message,
                raw: Bytes::new(),
            }
        }
    }
}
