//! Admin actions: `POST /admin/reload` (alias `/admin/reload-keys`) reloads the config now and
//! answers with the result (what changed, or why the new config was rejected, file:line:col);
//! `POST /admin/reset-keys` and `POST /reset-api-key-health` make keys usable again (on every
//! replica, when the state store is shared).

use std::sync::Arc;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::json;

use crate::body::json_response;
use crate::body::{read_body, Body};
use crate::error::ProxyError;
use crate::reload::{self, Reloaded, Trigger};
use crate::state::{App, Snapshot};

pub async fn reload(app: &Arc<App>) -> Result<Response<Body>, ProxyError> {
    let outcome = reload::reload(app, Trigger::Admin).await;
    let status = match outcome {
        Reloaded::Rejected { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        Reloaded::Applied { .. } | Reloaded::Unchanged => StatusCode::OK,
    };
    Ok(json_response(status, &outcome.to_json()))
}

/// `POST /admin/reset-keys`: every key available again for every model.
pub fn reset_keys(app: &App, snap: &Snapshot) -> Response<Body> {
    let count = snap.pool.reset_all();
    app.reset_fleet(None, None);
    json_response(
        StatusCode::OK,
        &json!({"message": format!("reset {count} keys for every model"), "reset_count": count}),
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ResetRequest {
    #[serde(default)]
    reset_all: bool,
    #[serde(default)]
    api_key_pattern: Option<String>,
    #[serde(default)]
    model: Option<String>,
}

/// `POST /reset-api-key-health`: `{reset_all:true}`, `{api_key_pattern}` (the masked form, or
/// its last characters), `{api_key_pattern, model}` or `{model}`.
pub async fn reset_key_health(
    app: &App,
    snap: &Snapshot,
    req: Request<Incoming>,
) -> Result<Response<Body>, ProxyError> {
    let body = read_body(req, snap.config.server.max_body).await?;
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ProxyError::bad_request(
            "send a JSON body: {\"reset_all\": true}, {\"api_key_pattern\": \"AIza****abcd\"}, \
             {\"api_key_pattern\": …, \"model\": …} or {\"model\": …}",
        ));
    }
    let r: ResetRequest = serde_json::from_slice(&body).map_err(|e| {
        ProxyError::bad_request(format!(
            "invalid reset request: {}",
            crate::excerpt::serde_error(&e)
        ))
    })?;
    let pattern = r.api_key_pattern.as_deref().filter(|p| !p.is_empty());
    let model = r.model.as_deref().filter(|m| !m.is_empty());
    if !r.reset_all && pattern.is_none() && model.is_none() {
        return Err(ProxyError::bad_request(
            "nothing to reset: give reset_all, api_key_pattern and/or model",
        ));
    }
    let count = if r.reset_all {
        let count = snap.pool.reset_all();
        app.reset_fleet(None, None);
        count
    } else {
        let keys = snap.pool.reset_keys(pattern, model);
        let count = keys.len();
        if count > 0 {
            app.reset_fleet(Some(keys), model);
        }
        count
    };
    if count == 0 {
        let message = match (pattern, model) {
            (Some(p), Some(m)) => format!(
                "no key matching {p} has state for model {m} (patterns are the masked form shown \
                 in /status, e.g. AIza****abcd, or its last characters)"
            ),
            (Some(p), None) => format!(
                "no key matches {p} (patterns are the masked form shown in /status, e.g. \
                 AIza****abcd, or its last characters)"
            ),
            (None, Some(m)) => format!("no key has served model {m} yet: nothing to reset"),
            (None, None) => "the pool has no keys".to_string(),
        };
        return Err(ProxyError::not_found(message));
    }
    let what = match (pattern, model) {
        (Some(p), Some(m)) => format!("keys matching {p} for model {m}"),
        (Some(p), None) => format!("keys matching {p} for every model"),
        (None, Some(m)) => format!("every key for model {m}"),
        (None, None) => "every key for every model".to_string(),
    };
    Ok(json_response(
        StatusCode::OK,
        &json!({"message": format!("reset {count} {what}"), "reset_count": count}),
    ))
}
