//! `POST /run-gemini`: one prompt through the pool, answered in the seed tool's shape
//! (`{command_executed, stdout, stderr, exit_code, execution_time, success, api_key_used}`). (Not built yet.)

use std::sync::Arc;

use http::Request;
use hyper::body::Incoming;

use crate::access::Caller;
use crate::error::ProxyError;
use crate::request_log::RequestLog;
use crate::server::Reply;
use crate::state::{App, Snapshot};

pub async fn run(
    _app: &Arc<App>,
    _snap: &Arc<Snapshot>,
    _caller: &Caller,
    _req: Request<Incoming>,
    _log: &mut RequestLog,
) -> Result<Reply, ProxyError> {
    Err(ProxyError::not_found(
        "/run-gemini is not available in this version",
    ))
}
