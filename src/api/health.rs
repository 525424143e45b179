//! Probes and state reports: `/health` (anyone; the seed's shape, from a count the pool caches
//! for a second), `/livez`, `/readyz`, and
//! `/status` (admin: per key and per model state, today's requests and tokens, config
//! identity).

use std::time::{Instant, SystemTime};

use http::{Response, StatusCode};
use serde_json::json;

use crate::body::json_response;
use crate::body::Body;
use crate::clock::rfc3339;
use crate::state::{App, Snapshot};

pub fn health(snap: &Snapshot) -> Response<Body> {
    let total = snap.pool.len();
    // Cached: computed at most once a second, however often probes come.
    let available = snap.pool.health_count(Instant::now());
    let status = if available > 0 { "healthy" } else { "degraded" };
    json_response(
        StatusCode::OK,
        &json!({
            "status": status,
            "timestamp": rfc3339(SystemTime::now()),
            "totalKeys": total,
            "availableKeys": available,
        }),
    )
}

pub fn livez() -> Response<Body> {
    json_response(StatusCode::OK, &json!({"status": "ok"}))
}

/// Ready while a valid config is loaded (always, once serving) and we are not shutting down.
pub fn readyz(app: &App) -> Response<Body> {
    if app.lifecycle.is_shutting_down() {
        json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({"status": "shutting down"}),
        )
    } else {
        json_response(StatusCode::OK, &json!({"status": "ready"}))
    }
}

pub fn status(app: &App, snap: &Snapshot) -> Response<Body> {
    let now = Instant::now();
    let wall = SystemTime::now();
    let keys: Vec<serde_json::Value> = snap
        .pool
        .status(now)
        .into_iter()
        .map(|k| {
            let models: serde_json::Map<String, serde_json::Value> = k
                .models
                .iter()
                .map(|m| {
                    (
                        m.model.clone(),
                        json!({
                            "state": m.state,
                            "consecutive_failures": m.consecutive_failures,
                            "cooldown_until": m.cooldown_remaining.map(|d| rfc3339(wall + d)),
                            "cooldown_seconds": m.cooldown_remaining.map(|d| d.as_secs_f64().ceil() as u64),
                            "daily_requests": m.daily_requests,
                            "prompt_tokens": m.prompt_tokens,
                            "completion_tokens": m.completion_tokens,
                            "thoughts_tokens": m.thoughts_tokens,
                            "last_error": m.last_error,
                        }),
                    )
                })
                .collect();
            json!({
                "index": k.index,
                "key": k.masked,
                "name": k.name,
                "project": k.project,
                "failureCount": k.failure_count,
                "isAvailable": k.available,
                "disabled": k.disabled,
                "lastUsed": k.last_used.map(rfc3339),
                "models": models,
            })
        })
        .collect();
    json_response(
        StatusCode::OK,
        &json!({
            "timestamp": rfc3339(wall),
            "totalKeys": snap.pool.len(),
            "availableKeys": snap.pool.available_count(now),
            "config": {
                "path": snap.config.path.display().to_string(),
                "hash": snap.config.hash,
                "loaded_at": rfc3339(snap.loaded_at),
                "last_reload": app.reload.last_json(),
                "restart_required": app.reload.restart_required(),
                "workers": snap.config.server.workers,
            },
            "state": state_json(app),
            "keys": keys,
        }),
    )
}

/// The state store in use and how it is doing (`/status` `state`).
fn state_json(app: &App) -> serde_json::Value {
    let s = app.persist.status();
    json!({
        "store": s.store,
        "ok": s.ok,
        "last_error": s.last_error,
        "since": s.since.map(rfc3339),
    })
}
