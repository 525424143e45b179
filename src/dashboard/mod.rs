//! The dashboard: one self-contained page (assets embedded in the binary) and its login.
//! (Not built yet.)

use std::sync::Arc;

use http::{HeaderMap, Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::api::json_response;
use crate::error::ProxyError;
use crate::server::Body;
use crate::state::{App, Snapshot};

pub fn page(_app: &Arc<App>, _asset: &str) -> Result<Response<Body>, ProxyError> {
    Err(ProxyError::not_found(
        "the dashboard is not available in this version",
    ))
}

pub async fn login(
    _app: &Arc<App>,
    _snap: &Arc<Snapshot>,
    _req: Request<Incoming>,
) -> Result<Response<Body>, ProxyError> {
    Err(ProxyError::not_found(
        "the dashboard is not available in this version",
    ))
}

pub fn logout(app: &Arc<App>, headers: &HeaderMap) -> Response<Body> {
    app.sessions.end(headers);
    json_response(StatusCode::OK, &serde_json::json!({"ok": true}))
}
