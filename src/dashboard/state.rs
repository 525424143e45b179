//! `GET /dashboard/api/state`: everything the page shows, as one JSON document built from the
//! pool's status, the config, the last reload and the per-minute traffic.
//!
//! The grid is keys × models, where the models are those any key has state for, the targets
//! of the aliases and the static model list. A cell is one of `ok`, `cooling`, `exhausted`
//! (out until the quota day ends), `disabled` or `not_allowed` (the key's `models` globs leave
//! it out). Keys appear masked (`AIza****abcd`) or by name, never in full. Fields that are
//! empty are left out: with 1,000 keys most cells are just `{"state":"ok"}`.

use std::collections::BTreeSet;
use std::time::{Instant, SystemTime};

use http::{Response, StatusCode};
use serde::Serialize;

use crate::body::json_bytes;
use crate::body::Body;
use crate::clock::rfc3339;
use crate::config::ModelList;
use crate::error::ProxyError;
use crate::pool::KeyStatus;
use crate::state::{App, Snapshot};
use crate::timeline::Minute;

#[derive(Serialize)]
struct State {
    now: String,
    total_keys: usize,
    available_keys: usize,
    /// The grid's columns.
    models: Vec<String>,
    /// Per column: keys usable now, and keys allowed to serve it at all.
    usable: Vec<Usable>,
    keys: Vec<KeyRow>,
    /// The last 60 minutes, oldest first.
    traffic: Vec<Minute>,
    config: ConfigInfo,
}

#[derive(Serialize)]
struct Usable {
    model: String,
    usable: usize,
    allowed: usize,
}

#[derive(Serialize)]
struct KeyRow {
    index: usize,
    /// Masked.
    key: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    project: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    disabled: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_used: Option<String>,
    /// One per column of `models`, in the same order.
    cells: Vec<GridCell>,
}

#[derive(Serialize, Default)]
struct GridCell {
    state: &'static str,
    /// Seconds until a resting key is back (cooling, or out for the day).
    #[serde(skip_serializing_if = "Option::is_none")]
    left_s: Option<u64>,
    #[serde(skip_serializing_if = "is_zero")]
    today: u64,
    #[serde(skip_serializing_if = "is_zero_u32")]
    failures: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

#[derive(Serialize)]
struct ConfigInfo {
    path: String,
    hash: String,
    loaded_at: String,
    last_reload: serde_json::Value,
    /// Settings changed in the file that only a restart applies (listen address…).
    restart_required: Option<String>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

fn is_zero_u32(n: &u32) -> bool {
    *n == 0
}

/// The grid's columns: models with state, alias targets and the static list, sorted.
fn columns(snap: &Snapshot, keys: &[KeyStatus]) -> Vec<String> {
    let mut models: BTreeSet<&str> = keys
        .iter()
        .flat_map(|k| k.models.iter().map(|m| m.model.as_str()))
        .collect();
    for alias in snap.config.models.aliases.values() {
        models.extend(alias.models.iter().map(String::as_str));
    }
    if let ModelList::Static(list) = &snap.config.models.list {
        models.extend(list.iter().map(String::as_str));
    }
    models.into_iter().map(str::to_string).collect()
}

fn cell(snap: &Snapshot, key: &KeyStatus, model: &str) -> GridCell {
    let allowed = snap
        .config
        .pool
        .keys
        .get(key.index)
        .and_then(|spec| spec.models.as_ref())
        .is_none_or(|globs| globs.matches(model));
    if !allowed {
        return GridCell {
            state: "not_allowed",
            ..GridCell::default()
        };
    }
    let status = key.models.iter().find(|m| m.model == model);
    let state = match (&key.disabled, status) {
        (Some(_), _) => "disabled",
        (None, Some(m)) => m.state,
        (None, None) => "ok",
    };
    let Some(m) = status else {
        return GridCell {
            state,
            ..GridCell::default()
        };
    };
    GridCell {
        state,
        left_s: m
            .cooldown_remaining
            .map(|d| d.as_secs() + u64::from(d.subsec_nanos() > 0)),
        today: m.daily_requests,
        failures: m.consecutive_failures,
        error: m.last_error.clone(),
    }
}

/// `GET /dashboard/api/state`.
pub fn state(app: &App, snap: &Snapshot) -> Result<Response<Body>, ProxyError> {
    let now = Instant::now();
    let wall = SystemTime::now();
    let statuses = snap.pool.status(now);
    let models = columns(snap, &statuses);
    let mut usable: Vec<Usable> = models
        .iter()
        .map(|m| Usable {
            model: m.clone(),
            usable: 0,
            allowed: 0,
        })
        .collect();
    let keys: Vec<KeyRow> = statuses
        .iter()
        .map(|k| {
            let cells: Vec<GridCell> = models.iter().map(|m| cell(snap, k, m)).collect();
            for (count, c) in usable.iter_mut().zip(&cells) {
                count.allowed += usize::from(c.state != "not_allowed");
                count.usable += usize::from(c.state == "ok");
            }
            KeyRow {
                index: k.index,
                key: k.masked.clone(),
                name: k.name.clone(),
                project: k.project.clone(),
                disabled: k.disabled.clone(),
                last_used: k.last_used.map(rfc3339),
                cells,
            }
        })
        .collect();
    let body = State {
        now: rfc3339(wall),
        total_keys: statuses.len(),
        available_keys: statuses.iter().filter(|k| k.available).count(),
        models,
        usable,
        keys,
        traffic: app.timeline.minutes(wall),
        config: ConfigInfo {
            path: snap.config.path.display().to_string(),
            hash: snap.config.hash.clone(),
            loaded_at: rfc3339(snap.loaded_at),
            last_reload: app.reload.last_json(),
            restart_required: app.reload.restart_required(),
        },
    };
    let bytes = serde_json::to_vec(&body)
        .map_err(|e| ProxyError::Internal(format!("dashboard state: {e}")))?;
    Ok(json_bytes(StatusCode::OK, bytes))
}
