//! `POST /v1/embeddings`: OpenAI embeddings over Gemini's `embedContent` /
//! `batchEmbedContents`. (Not built yet.)

use std::sync::Arc;

use http::Request;
use hyper::body::Incoming;

use crate::access::Caller;
use crate::error::ProxyError;
use crate::request_log::RequestLog;
use crate::server::Reply;
use crate::state::{App, Snapshot};

pub async fn create(
    _app: &Arc<App>,
    _snap: &Arc<Snapshot>,
    _caller: &Caller,
    _req: Request<Incoming>,
    _log: &mut RequestLog,
) -> Result<Reply, ProxyError> {
    Err(ProxyError::not_found(
        "/v1/embeddings is not available in this version",
    ))
}
