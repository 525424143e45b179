//! `GET /v1/models` and `/v1/models/{id}`: Gemini's model list (every page, cached for
//! `models.refresh`) or the static list, plus the aliases, in OpenAI's shape, or Anthropic's
//! for an Anthropic client (`router::for_client`).
//!
//! The list is fetched with any usable key; a failed refresh keeps serving the last list.

use std::sync::Arc;

use http::{Method, StatusCode};
use serde::Deserialize;
use serde_json::json;

use crate::access::Caller;
use crate::body::json_response;
use crate::clock::unix_now;
use crate::config::ModelList;
use crate::error::ProxyError;
use crate::models_cache::ModelInfo;
use crate::proxy::{self, Call, Delivery, Payload};
use crate::request_log::RequestLog;
use crate::state::{App, Snapshot};

/// Google's page size limit; also bounds how many pages we walk.
const PAGE_SIZE: u32 = 1000;
const MAX_PAGES: usize = 20;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Page {
    #[serde(default)]
    models: Vec<RawModel>,
    #[serde(default)]
    next_page_token: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawModel {
    name: String,
    #[serde(default)]
    input_token_limit: Option<u64>,
    #[serde(default)]
    output_token_limit: Option<u64>,
}

async fn fetch_all(snap: &Snapshot, log: &mut RequestLog) -> Result<Vec<ModelInfo>, ProxyError> {
    let mut out = Vec::new();
    let mut token: Option<String> = None;
    for _ in 0..MAX_PAGES {
        let path = match &token {
            Some(t) => format!(
                "/v1beta/models?pageSize={PAGE_SIZE}&pageToken={}",
                encode(t)
            ),
            None => format!("/v1beta/models?pageSize={PAGE_SIZE}"),
        };
        let call = Call {
            model: None,
            method: Method::GET,
            path_and_query: &path,
            body: None,
            delivery: Delivery::Buffered,
            pinned: None,
            native: None,
        };
        let served = proxy::execute(snap, call, log).await?;
        let Payload::Full(bytes) = served.body else {
            return Err(ProxyError::Internal("model list was not buffered".into()));
        };
        let page: Page =
            serde_json::from_slice(&bytes).map_err(|e| ProxyError::UpstreamFailed {
                status: StatusCode::BAD_GATEWAY,
                message: format!("unreadable model list from Gemini: {e}"),
                raw: bytes::Bytes::new(),
            })?;
        out.extend(page.models.into_iter().map(|m| {
            ModelInfo {
                id: m
                    .name
                    .strip_prefix("models/")
                    .unwrap_or(&m.name)
                    .to_string(),
                input_token_limit: m.input_token_limit,
                output_token_limit: m.output_token_limit,
            }
        }));
        match page.next_page_token.filter(|t| !t.is_empty()) {
            Some(t) => token = Some(t),
            None => return Ok(out),
        }
    }
    Ok(out)
}

/// Percent-encodes a page token for the query string.
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Every model id the proxy offers: aliases first (sorted), then the list.
async fn catalogue(
    app: &App,
    snap: &Snapshot,
    log: &mut RequestLog,
) -> Result<Vec<serde_json::Value>, ProxyError> {
    let (listed, created): (Vec<ModelInfo>, u64) = match &snap.config.models.list {
        ModelList::Static(ids) => (
            ids.iter()
                .map(|id| ModelInfo {
                    id: id.clone(),
                    input_token_limit: None,
                    output_token_limit: None,
                })
                .collect(),
            unix_now(),
        ),
        ModelList::Upstream => {
            let (models, created) = app
                .models
                .get_or_fetch(
                    &snap.config.upstream.base_url,
                    snap.config.models.refresh,
                    || async {
                        let models = fetch_all(snap, log).await?;
                        // Listed names are real: the pool and metrics may keep state for them.
                        snap.pool.learn_models(models.iter().map(|m| m.id.as_str()));
                        Ok::<_, ProxyError>(models)
                    },
                )
                .await?;
            (models.as_ref().clone(), created)
        }
    };
    // A glob key (`claude-*`) is a pattern, not a model id: not listed.
    let mut aliases: Vec<&String> = (snap.config.models.aliases.keys())
        .filter(|k| !crate::config::is_glob(k))
        .collect();
    aliases.sort();
    let mut data: Vec<serde_json::Value> = aliases
        .into_iter()
        .map(|id| json!({"id": id, "object": "model", "created": created, "owned_by": "gemini-rotator"}))
        .collect();
    data.extend(listed.iter().map(|m| {
        let mut v =
            json!({"id": m.id, "object": "model", "created": created, "owned_by": "google"});
        if let Some(n) = m.input_token_limit {
            v["context_length"] = json!(n);
        }
        if let Some(n) = m.output_token_limit {
            v["max_output_tokens"] = json!(n);
        }
        v
    }));
    Ok(data)
}

/// The catalogue entries `caller` may use (OpenAI's shape).
async fn allowed(
    app: &App,
    snap: &Snapshot,
    caller: &Caller,
    log: &mut RequestLog,
) -> Result<Vec<serde_json::Value>, ProxyError> {
    let mut data = catalogue(app, snap, log).await?;
    data.retain(|m| m["id"].as_str().is_some_and(|id| caller.allows(id)));
    Ok(data)
}

pub async fn list(
    app: &Arc<App>,
    snap: &Arc<Snapshot>,
    caller: &Caller,
    log: &mut RequestLog,
) -> Result<http::Response<crate::body::Body>, ProxyError> {
    let data = allowed(app, snap, caller, log).await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"object": "list", "data": data}),
    ))
}

/// Anthropic's `ModelInfo` for one entry of the catalogue (its `created` as `created_at`).
fn anthropic_model(m: &serde_json::Value) -> serde_json::Value {
    let created = m["created"].as_u64().unwrap_or(0);
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(created);
    json!({
        "type": "model",
        "id": m["id"],
        "display_name": m["id"],
        "created_at": crate::clock::rfc3339(at),
    })
}

/// `GET /v1/models` in Anthropic's shape: one page holding the whole catalogue.
pub async fn list_anthropic(
    app: &Arc<App>,
    snap: &Arc<Snapshot>,
    caller: &Caller,
    log: &mut RequestLog,
) -> Result<http::Response<crate::body::Body>, ProxyError> {
    let data: Vec<serde_json::Value> = allowed(app, snap, caller, log)
        .await?
        .iter()
        .map(anthropic_model)
        .collect();
    let first = data.first().map(|m| m["id"].clone());
    let last = data.last().map(|m| m["id"].clone());
    Ok(json_response(
        StatusCode::OK,
        &json!({"data": data, "has_more": false, "first_id": first, "last_id": last}),
    ))
}

/// `GET /v1/models/{id}` in Anthropic's shape.
pub async fn get_anthropic(
    app: &Arc<App>,
    snap: &Arc<Snapshot>,
    caller: &Caller,
    id: &str,
    log: &mut RequestLog,
) -> Result<http::Response<crate::body::Body>, ProxyError> {
    // Anthropic answers an unknown model with a 404 `not_found_error`.
    let model = find(app, snap, caller, id, log)
        .await
        .map_err(|e| match e {
            ProxyError::NotFound { .. } => ProxyError::ModelNotFound {
                model: crate::excerpt::excerpt(id).into_owned(),
            },
            other => other,
        })?;
    Ok(json_response(StatusCode::OK, &anthropic_model(&model)))
}

pub async fn get(
    app: &Arc<App>,
    snap: &Arc<Snapshot>,
    caller: &Caller,
    id: &str,
    log: &mut RequestLog,
) -> Result<http::Response<crate::body::Body>, ProxyError> {
    let model = find(app, snap, caller, id, log).await?;
    Ok(json_response(StatusCode::OK, &model))
}

/// The catalogue's entry for `id` (OpenAI's shape), or a name only a glob alias knows; an
/// unknown or forbidden one is a 404.
async fn find(
    app: &Arc<App>,
    snap: &Arc<Snapshot>,
    caller: &Caller,
    id: &str,
    log: &mut RequestLog,
) -> Result<serde_json::Value, ProxyError> {
    let wanted = id.strip_prefix("models/").unwrap_or(id);
    let found = catalogue(app, snap, log)
        .await?
        .into_iter()
        .find(|m| m["id"].as_str() == Some(wanted) && caller.allows(wanted))
        .or_else(|| {
            // A name only a glob alias knows (`claude-sonnet-4-5`) exists too.
            (snap.config.models.alias(wanted).is_some() && caller.allows(wanted)).then(|| {
                json!({"id": wanted, "object": "model", "created": unix_now(), "owned_by": "gemini-rotator"})
            })
        });
    match found {
        Some(model) => Ok(model),
        None => Err(ProxyError::not_found(format!(
            "The model '{}' does not exist",
            crate::excerpt::excerpt(wanted)
        ))),
    }
}
