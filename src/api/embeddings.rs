//! `POST /v1/embeddings`: OpenAI embeddings over Gemini's `embedContent` /
//! `batchEmbedContents`.
//!
//! One string is one `embedContent` call; a list goes out in batches of at most 100 (Google's
//! limit), one after another, each through `proxy` with its own key choice and failover, and the
//! vectors are put back in input order. A fallback chain restarts from the first batch on the
//! next model: vectors of different models do not mix. Usage is estimated (Gemini reports
//! none).

use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use hyper::body::Incoming;

use crate::access::Caller;
use crate::api::chat::from_translate;
use crate::api::{allowed_chain, chain_exhausted, clean_model_name, next_in_chain, resolve};
use crate::body::json_bytes;
use crate::body::{read_body, Reply};
use crate::error::ProxyError;
use crate::proxy::{self, Call, Delivery, Payload};
use crate::request_log::RequestLog;
use crate::state::{App, Snapshot};
use crate::translate::embeddings::{self, EmbeddingsRequest, MAX_BATCH};

pub async fn create(
    _app: &Arc<App>,
    snap: &Arc<Snapshot>,
    caller: &Caller,
    req: Request<Incoming>,
    log: &mut RequestLog,
) -> Result<Reply, ProxyError> {
    let body = read_body(req, snap.config.server.max_body).await?;
    let request = embeddings::parse_request(&body).map_err(from_translate)?;
    let requested = clean_model_name(&request.model)?;
    log.model = Some(requested.to_string());
    let chain = allowed_chain(caller, requested, resolve(&snap.config.models, requested))?;

    let mut last_error = None;
    for (i, target) in chain.iter().enumerate() {
        match embed_all(snap, &target.model, &request, log).await {
            Ok(vectors) => {
                if chain.len() > 1 {
                    log.model = Some(format!("{requested}->{}", target.model));
                }
                let out = embeddings::openai_response(
                    &request.model,
                    &vectors,
                    request.encoding,
                    embeddings::estimate_tokens(&request.inputs),
                );
                return Ok(Reply::Done(json_bytes(StatusCode::OK, out)));
            }
            Err(e) => last_error = Some(next_in_chain(&chain, i, e)?),
        }
    }
    Err(chain_exhausted(last_error))
}

/// Every input's vector from `model`, in input order.
async fn embed_all(
    snap: &Snapshot,
    model: &str,
    request: &EmbeddingsRequest,
    log: &mut RequestLog,
) -> Result<Vec<Vec<f64>>, ProxyError> {
    let batch = !request.single;
    let path = if batch {
        format!("/v1beta/models/{model}:batchEmbedContents")
    } else {
        format!("/v1beta/models/{model}:embedContent")
    };
    let mut vectors = Vec::with_capacity(request.inputs.len());
    for texts in request.inputs.chunks(MAX_BATCH) {
        let body = embeddings::gemini_body(model, texts, batch, request.dimensions);
        let call = Call {
            model: Some(model),
            method: Method::POST,
            path_and_query: &path,
            body: Some(Bytes::from(body)),
            delivery: Delivery::Buffered,
            pinned: None,
            native: None,
        };
        let served = proxy::execute(snap, call, log).await?;
        let Payload::Full(bytes) = served.body else {
            return Err(ProxyError::Internal(
                "a buffered call returned a stream".into(),
            ));
        };
        vectors.extend(embeddings::read_vectors(&bytes, texts.len()).map_err(from_translate)?);
    }
    Ok(vectors)
}
