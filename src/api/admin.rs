//! Admin actions: `POST /admin/reload` (alias `/admin/reload-keys`) reloads the config now and
//! answers with the result: what changed, or why the new config was rejected (file:line:col).

use std::sync::Arc;

use http::{Response, StatusCode};
use serde_json::json;

use crate::api::{json_response, rfc3339};
use crate::error::ProxyError;
use crate::reload::{self, Outcome, Trigger};
use crate::server::Body;
use crate::state::App;

pub async fn reload(app: &Arc<App>) -> Result<Response<Body>, ProxyError> {
    let outcome = reload::reload(app, Trigger::Admin).await;
    let status = match outcome {
        Outcome::Rejected { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        Outcome::Applied { .. } | Outcome::Unchanged => StatusCode::OK,
    };
    Ok(json_response(status, &outcome.to_json()))
}

/// `config.last_reload` for `/status`.
pub fn last_reload_json(app: &App) -> serde_json::Value {
    let last = app.reload.last();
    json!({"ok": last.ok, "at": rfc3339(last.at), "error": last.error})
}
