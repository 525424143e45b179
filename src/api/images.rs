//! `POST /v1/images/generations`: OpenAI's Images API over Gemini image generation.
//!
//! Parses and checks the request (a 400 before any upstream call), resolves the model through
//! aliases, and makes the images through `proxy` (rotation, failover before the first byte,
//! per-model health and stats like every route): an Imagen model in one `:predict` call for
//! all `n`, a Gemini image model in `n` `generateContent` calls, one after another. Each
//! answer (images are MBs of base64) is counted against the memory budget while it is held
//! (`reserve_answer`).

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use hyper::body::Incoming;

use crate::access::Caller;
use crate::api::chat::from_translate;
use crate::api::{
    allowed_chain, chain_exhausted, clean_model_name, failed_body, next_in_chain, resolve,
    ChainStep,
};
use crate::body::{json_bytes, read_body, Reply};
use crate::clock::unix_now;
use crate::error::ProxyError;
use crate::proxy::{self, Call, Delivery, Payload, Served};
use crate::request_log::RequestLog;
use crate::state::Snapshot;
use crate::translate::gemini::UsageMetadata;
use crate::translate::images::{self, Image, ImagesRequest};

pub async fn generations(
    snap: &Snapshot,
    caller: &Caller,
    req: Request<Incoming>,
    log: &mut RequestLog,
) -> Result<Reply, ProxyError> {
    let body = read_body(req, snap.config.server.max_body).await?;
    let request = images::parse_request(&body).map_err(from_translate)?;
    let requested = clean_model_name(&request.model)?;
    log.model = Some(requested.to_string());
    let chain = allowed_chain(caller, requested, resolve(&snap.config.models, requested))?;

    let mut last_error = None;
    for (i, target) in chain.iter().enumerate() {
        match generate(snap, target, &request, log).await {
            Ok((made, usage)) => {
                if chain.len() > 1 {
                    log.model = Some(format!("{requested}->{}", target.model));
                }
                let out = images::openai_response(unix_now(), &made, request.format, &usage);
                return Ok(Reply::Done(json_bytes(StatusCode::OK, out)));
            }
            Err(e) => last_error = Some(next_in_chain(&chain, i, e)?),
        }
    }
    Err(chain_exhausted(last_error))
}

/// The `n` images from one model, with the token counts of the calls that made them.
async fn generate(
    snap: &Snapshot,
    target: &ChainStep,
    request: &ImagesRequest<'_>,
    log: &mut RequestLog,
) -> Result<(Vec<Image>, Vec<UsageMetadata>), ProxyError> {
    let model = target.model.as_str();
    if images::is_imagen(model) {
        let path = format!("/v1beta/models/{model}:predict");
        let served = call(
            snap,
            model,
            &path,
            Bytes::from(images::imagen_body(request)),
            log,
        )
        .await?;
        let bytes = full_body(&served)?;
        reserve_answer(bytes.len())?;
        let mut made =
            images::read_imagen(bytes).map_err(|e| failed_body(snap, &served.lease, e))?;
        made.truncate(request.n as usize);
        return Ok((made, Vec::new()));
    }
    let path = format!("/v1beta/models/{model}:generateContent");
    let body = images::gemini_body(
        request,
        &target.translated(snap.config.upstream.safety.as_deref()),
    )
    .map_err(from_translate)?;
    let body = Bytes::from(body);
    let mut made = Vec::with_capacity(request.n as usize);
    let mut usage = Vec::new();
    for _ in 0..request.n {
        let served = call(snap, model, &path, body.clone(), log).await?;
        let bytes = full_body(&served)?;
        reserve_answer(bytes.len())?;
        let generated =
            images::read_gemini(bytes).map_err(|e| failed_body(snap, &served.lease, e))?;
        // One image per call: a model that draws several drafts still counts as one of `n`.
        made.extend(generated.images.into_iter().take(1));
        usage.extend(generated.usage);
    }
    Ok((made, usage))
}

async fn call(
    snap: &Snapshot,
    model: &str,
    path: &str,
    body: Bytes,
    log: &mut RequestLog,
) -> Result<Served, ProxyError> {
    proxy::execute(
        snap,
        Call {
            model: Some(model),
            method: Method::POST,
            path_and_query: path,
            body: Some(body),
            delivery: Delivery::Buffered,
            pinned: None,
            native: None,
        },
        log,
    )
    .await
}

fn full_body(served: &Served) -> Result<&[u8], ProxyError> {
    match &served.body {
        Payload::Full(bytes) => Ok(bytes),
        Payload::Stream(_) => Err(ProxyError::Internal(
            "a buffered call returned a stream".into(),
        )),
    }
}

/// Counts an image answer of `len` bytes against the memory budget for as long as the request
/// lives (the answer, and the client's copy of its base64, are held together): twice its
/// length. Refused when the budget is full (a 503 to retry) or smaller than the answer.
pub(crate) fn reserve_answer(len: usize) -> Result<(), ProxyError> {
    match crate::admission::reserve((len as u64).saturating_mul(2)) {
        Ok(()) => Ok(()),
        Err(crate::admission::Refusal::Busy) => Err(ProxyError::Overloaded {
            what: "memory budget for image answers",
        }),
        Err(crate::admission::Refusal::TooBig { limit }) => Err(ProxyError::UpstreamFailed {
            status: StatusCode::BAD_GATEWAY,
            message: format!(
                "Gemini's image answer ({len} bytes) does not fit the proxy's memory budget \
                 ({limit} bytes, server.memory_budget)"
            ),
            raw: Bytes::new(),
        }),
    }
}
