//! `GET /explain?model=M` (admin): which key would serve M next and, for every other key, why
//! not. (Not built yet.)

use http::Response;

use crate::error::ProxyError;
use crate::server::Body;
use crate::state::Snapshot;

pub fn explain(_snap: &Snapshot, _query: Option<&str>) -> Result<Response<Body>, ProxyError> {
    Err(ProxyError::not_found(
        "/explain is not available in this version",
    ))
}
