//! `POST /v1/messages` and `POST /v1/messages/count_tokens`: Anthropic's Messages API over
//! Gemini (issue #17), streaming and not; what Claude Code speaks.
//!
//! The same path as chat (`chat.rs`): parse (400 before any upstream call; unknown fields and
//! the `anthropic-version` / `anthropic-beta` headers accepted), resolve the model through
//! aliases (glob keys such as `claude-*` included; a fallback chain moves on when no key can
//! serve), fetch http(s) image URLs through `media`, translate, and let `proxy` find a key;
//! streams go to `relay` with the Anthropic event translator. Errors render in Anthropic's
//! shape because the route's dialect is `Anthropic` (`error.rs`).

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, StatusCode};
use hyper::body::Incoming;

use crate::access::Caller;
use crate::api::chat::from_translate;
use crate::api::{
    allowed_chain, chain_exhausted, clean_model_name, count_tokens_on_chain, failed_body,
    generate_path, next_in_chain, resolve, ChainStep,
};
use crate::body::json_bytes;
use crate::body::{read_body, Reply};
use crate::error::ProxyError;
use crate::media;
use crate::proxy::{self, Call, Delivery, Payload};
use crate::relay::{self, Shape};
use crate::request_log::RequestLog;
use crate::state::{App, Snapshot};
use crate::translate::anthropic::{self, MessagesRequest, StreamTranslator};
use crate::translate::{Extras, FetchedFile, ResponseCtx};

/// `POST /v1/messages`.
pub async fn messages(
    app: &Arc<App>,
    snap: &Arc<Snapshot>,
    caller: &Caller,
    req: Request<Incoming>,
    log: &mut RequestLog,
) -> Result<Reply, ProxyError> {
    let beta = beta_header(&req);
    let body = read_body(req, snap.config.server.max_body).await?;
    let request = anthropic::parse(&body, &beta).map_err(from_translate)?;
    if request.max_tokens.is_none() {
        return Err(ProxyError::BadRequest {
            message: "max_tokens: Field required".into(),
            param: Some("max_tokens".into()),
        });
    }
    let (requested, chain, media) = prepare(snap, caller, &request, log).await?;
    let stream = request.stream == Some(true);
    let ctx = ResponseCtx {
        id: format!("msg_{:016x}{:08x}", fastrand::u64(..), fastrand::u32(..)),
        created: crate::clock::unix_now(),
        model: request.model.clone(),
        one_call: request
            .tool_choice
            .as_ref()
            .is_some_and(|c| c.disable_parallel_tool_use == Some(true)),
        legacy_functions: false,
        tool_names: crate::translate::tool_name::ToolNames::of(
            request.tools.iter().flatten().map(|t| t.name.as_str()),
        ),
    };

    let mut last_error = None;
    for (i, target) in chain.iter().enumerate() {
        let lookup = |id: &str| app.signatures.get(id);
        let built = anthropic::to_gemini(
            &request,
            &target.translated(snap.config.upstream.safety.as_deref()),
            &Extras {
                signatures: Some(&lookup),
                media: media.as_ref(),
            },
        )
        .map_err(from_translate)?;
        for note in &built.notes {
            tracing::debug!(model = %target.model, "{note}");
        }
        let path = generate_path(&target.model, stream);
        let call = Call {
            model: Some(&target.model),
            method: Method::POST,
            path_and_query: &path,
            body: Some(Bytes::from(built.body)),
            delivery: if stream {
                Delivery::Streaming
            } else {
                Delivery::Buffered
            },
            pinned: None,
            native: None,
        };
        match proxy::execute(snap, call, log).await {
            Ok(served) => {
                if chain.len() > 1 {
                    log.model = Some(format!("{requested}->{}", target.model));
                }
                return match served.body {
                    Payload::Full(bytes) => match anthropic::from_gemini(&bytes, &ctx) {
                        Ok(done) if done.answered => {
                            app.signatures.remember(done.signatures);
                            Ok(Reply::Done(json_bytes(StatusCode::OK, done.body)))
                        }
                        Ok(_) => Err(crate::api::chat::empty_answer(&bytes)),
                        Err(e) => Err(failed_body(snap, &served.lease, e)),
                    },
                    Payload::Stream(response) => Ok(Reply::Streaming(
                        relay::start(
                            app.clone(),
                            snap.clone(),
                            served.lease,
                            response,
                            Shape::Anthropic(Box::new(StreamTranslator::new(ctx))),
                            log.hand_off(),
                            HeaderValue::from_static("text/event-stream; charset=utf-8"),
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

/// `POST /v1/messages/count_tokens`: Gemini's `countTokens` on the same translation, as
/// `{"input_tokens": N}`.
pub async fn count_tokens(
    app: &Arc<App>,
    snap: &Arc<Snapshot>,
    caller: &Caller,
    req: Request<Incoming>,
    log: &mut RequestLog,
) -> Result<Reply, ProxyError> {
    let beta = beta_header(&req);
    let body = read_body(req, snap.config.server.max_body).await?;
    let request = anthropic::parse(&body, &beta).map_err(from_translate)?;
    let (_, chain, media) = prepare(snap, caller, &request, log).await?;
    let counted = count_tokens_on_chain(snap, &chain, log, |target| {
        let lookup = |id: &str| app.signatures.get(id);
        let extras = Extras {
            signatures: Some(&lookup),
            media: media.as_ref(),
        };
        anthropic::count_tokens_body(&request, &target.translated(None), &extras)
            .map_err(from_translate)
    })
    .await?;
    let answer = anthropic::count_tokens_answer(&counted).map_err(from_translate)?;
    Ok(Reply::Done(json_bytes(StatusCode::OK, answer)))
}

/// The model chain this caller may use for the request's model, and the request's image URLs
/// fetched: once, before any key is used, so a bad URL is the client's 400, not a key's fault.
async fn prepare<'r>(
    snap: &Snapshot,
    caller: &Caller,
    request: &'r MessagesRequest<'_>,
    log: &mut RequestLog,
) -> Result<(&'r str, Vec<ChainStep>, Option<Media>), ProxyError> {
    let requested = clean_model_name(&request.model)?;
    log.model = Some(requested.to_string());
    let chain = allowed_chain(caller, requested, resolve(&snap.config.models, requested))?;
    let urls = anthropic::remote_media_urls(request);
    let media = if urls.is_empty() {
        None
    } else {
        // A refusal of the tools is the client's before any fetch, not after it.
        anthropic::check_tools(request).map_err(from_translate)?;
        Some(media::fetch_all(&urls, snap.config.upstream.fetch_private_urls, "messages").await?)
    };
    Ok((requested, chain, media))
}

type Media = std::collections::HashMap<String, FetchedFile>;

/// The request's `anthropic-beta` header (every value, comma-joined; empty when absent).
fn beta_header(req: &Request<Incoming>) -> String {
    let values = req.headers().get_all("anthropic-beta").iter();
    let values: Vec<&str> = values.filter_map(|v| v.to_str().ok()).collect();
    values.join(",")
}
