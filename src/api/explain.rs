//! `GET /explain?model=M` (admin): which key would serve M next and, for every other key, why
//! not (cooling until when and after what error, out for the day, at its `daily_limit`, no
//! quota for M, disabled, not allowed for M).
//!
//! Aliases resolve as on chat: every model of a fallback chain is explained, in order, and the
//! answer's `next` is the key the first servable model would use. Asking changes nothing (no
//! lease is taken, no cursor moves). Keys appear masked, never whole.

use std::time::{Duration, Instant, SystemTime};

use http::{Response, StatusCode};
use serde_json::{json, Value};

use crate::access::query_param;
use crate::api::{clean_model_name, resolve};
use crate::body::json_response;
use crate::body::Body;
use crate::clock::rfc3339;
use crate::config::Strategy;
use crate::error::ProxyError;
use crate::pool::{Explanation, KeyVerdict, Now, Verdict, Why};
use crate::state::Snapshot;

pub fn explain(snap: &Snapshot, query: Option<&str>) -> Result<Response<Body>, ProxyError> {
    let asked = query
        .and_then(|q| query_param(q, "model"))
        .filter(|m| !m.trim().is_empty())
        .ok_or_else(|| ProxyError::BadRequest {
            message: "missing query parameter 'model' (GET /explain?model=gemini-2.5-flash)".into(),
            param: Some("model".into()),
        })?;
    let model = clean_model_name(&asked)?;
    let now = Now::new(Instant::now(), SystemTime::now());
    let explained: Vec<Explanation> = resolve(&snap.config.models, model)
        .iter()
        .map(|t| snap.pool.explain_at(&t.model, now))
        .collect();
    Ok(json_response(
        StatusCode::OK,
        &render(model, &explained, now.wall),
    ))
}

/// The JSON answer.
fn render(asked: &str, explained: &[Explanation], wall: SystemTime) -> Value {
    let next = explained.iter().find_map(|e| {
        let i = e.next?;
        Some(key_ref(&e.model, &e.keys[i]))
    });
    let mut out = json!({
        "model": asked,
        "timestamp": rfc3339(wall),
        "next": next,
    });
    if next.is_none() {
        // What a request would be told: chat reports the last model of a chain.
        if let Some(no_key) = explained.last().and_then(|e| e.no_key.as_ref()) {
            out["retry_after_seconds"] = json!(no_key.retry_after.map(ceil_secs));
            out["all_out_for_day"] = json!(no_key.all_daily);
        }
    }
    out["models"] = explained
        .iter()
        .map(|e| {
            json!({
                "model": e.model,
                "strategy": match e.strategy {
                    Strategy::RoundRobin => "round_robin",
                    Strategy::LeastUsed => "least_used",
                },
                "next": e.next.map(|i| key_ref(&e.model, &e.keys[i])),
                "keys": e.keys.iter().map(|k| key_json(e, k, wall)).collect::<Vec<_>>(),
            })
        })
        .collect();
    out
}

fn key_ref(model: &str, k: &KeyVerdict) -> Value {
    json!({ "model": model, "index": k.index, "key": k.masked, "name": k.name })
}

fn key_json(e: &Explanation, k: &KeyVerdict, wall: SystemTime) -> Value {
    let mut v = json!({
        "index": k.index,
        "key": k.masked,
        "name": k.name,
        "project": k.project,
        "state": k.verdict.state(),
        "daily_requests": k.daily_requests,
        "reason": reason(e, k, wall),
    });
    if let Some(left) = k.verdict.left() {
        v["until"] = json!(until(wall, left));
        v["seconds_left"] = json!(ceil_secs(left));
    }
    match &k.verdict {
        Verdict::Out(
            Why::Cooling { last_error, .. }
            | Why::OutForDay { last_error, .. }
            | Why::NoQuota { last_error },
        ) => v["last_error"] = json!(last_error),
        Verdict::Out(Why::Disabled { reason }) => v["disabled"] = json!(reason),
        Verdict::Out(Why::DailyLimit { limit, .. }) => v["daily_limit"] = json!(limit),
        _ => {}
    }
    v
}

/// When a key returns, to the second: rests are kept on the monotonic clock, so the wall time
/// is off by the moments between readings (a quota day ends at 08:00:00Z, not 07:59:59.999Z).
fn until(wall: SystemTime, left: Duration) -> String {
    let at = wall + left;
    let secs = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| (d.as_millis() + 500) / 1000) as u64;
    let rounded = SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
    humantime::format_rfc3339_seconds(rounded).to_string()
}

fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// One sentence an operator can read.
fn reason(e: &Explanation, k: &KeyVerdict, wall: SystemTime) -> String {
    let model = &e.model;
    let back = |left: &Duration| format!("{} ({}s left)", until(wall, *left), ceil_secs(*left));
    let after = |last: &Option<String>| match last {
        Some(err) => format!(" after {err}"),
        None => String::new(),
    };
    match &k.verdict {
        Verdict::Next => format!("serves the next request for {model}"),
        Verdict::Ready => match e.strategy {
            Strategy::RoundRobin => "usable; later in the rotation".to_string(),
            Strategy::LeastUsed => format!(
                "usable; {} requests today, not the fewest (or used more recently)",
                k.daily_requests
            ),
        },
        Verdict::NotAllowed => format!("not allowed for {model} (its models globs do not match)"),
        Verdict::Out(Why::Disabled { reason }) => {
            format!("disabled for every model until reload or admin reset: {reason}")
        }
        Verdict::Out(Why::NoQuota { .. }) => format!(
            "no quota for {model} on this key's project (limit: 0); out until reload or admin reset"
        ),
        Verdict::Out(Why::Cooling { left, last_error }) => {
            format!("cooling until {}{}", back(left), after(last_error))
        }
        Verdict::Out(Why::OutForDay { left, last_error }) => format!(
            "out for the day for {model} until midnight America/Los_Angeles, {}{}",
            back(left),
            after(last_error)
        ),
        Verdict::Out(Why::DailyLimit { limit, left }) => format!(
            "at its daily_limit of {limit} requests for {model} until {}",
            back(left)
        ),
        Verdict::Out(Why::Probing) => {
            "back from a rest; its one probe request is in flight".to_string()
        }
    }
}
