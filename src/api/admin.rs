//! Admin actions: `POST /admin/reload` (alias `/admin/reload-keys`). (Not built yet.)

use std::sync::Arc;

use http::Response;

use crate::error::ProxyError;
use crate::server::Body;
use crate::state::App;

pub async fn reload(_app: &Arc<App>) -> Result<Response<Body>, ProxyError> {
    Err(ProxyError::not_found(
        "/admin/reload is not available in this version",
    ))
}
