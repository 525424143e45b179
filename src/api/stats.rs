//! Usage reports for operators: `GET /stats` (per key per model usage in the shape users of the
//! older tools know: `api_key_stats`, `model_summary`, `global_summary`, `load_balancing`) and
//! `GET /api-key-recommendations` (advice computed from the current pool state).
//!
//! Both are read-only views over `PoolView::status_at`; nothing here changes a key.

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime};

use http::{Response, StatusCode};
use serde_json::{json, Map, Value};

use crate::body::json_response;
use crate::body::Body;
use crate::clock::rfc3339;
use crate::config::Strategy;
use crate::pool::{KeyStatus, ModelStatus, Now};
use crate::state::{App, Snapshot};

/// The time zone Google's daily quotas follow.
const QUOTA_TZ: &str = "America/Los_Angeles";
/// A model with fewer usable keys than this gets a recommendation.
const FEW_KEYS: usize = 2;
/// A key whose error rate (with enough requests to say) is above this gets a recommendation.
const HIGH_ERROR_RATE: f64 = 0.5;
const MIN_REQUESTS_FOR_RATE: u64 = 10;

/// One moment for the whole report, so every number in it agrees.
struct Moment {
    now: Now,
    wall: SystemTime,
    /// How long until the quota day ends.
    day_left: Option<Duration>,
    day: Option<String>,
}

impl Moment {
    fn take(snap: &Snapshot) -> Moment {
        let wall = SystemTime::now();
        let now = Now::new(Instant::now(), wall);
        let (day, day_left) = match snap.pool.quota_day(wall) {
            Some((day, left)) => (Some(day), Some(left)),
            None => (None, None),
        };
        Moment {
            now,
            wall,
            day_left,
            day,
        }
    }

    fn resets_at(&self) -> Option<String> {
        self.day_left.map(|d| rfc3339(self.wall + d))
    }
}

/// Counts over several (key, model) states.
#[derive(Default)]
struct Totals {
    requests: u64,
    daily_requests: u64,
    errors: u64,
    prompt_tokens: u64,
    completion_tokens: u64,
    thoughts_tokens: u64,
    usable: usize,
    cooling: usize,
    exhausted: usize,
    disabled: usize,
}

impl Totals {
    fn add(&mut self, m: &ModelStatus) {
        self.requests += m.successes + m.errors;
        self.daily_requests += m.daily_requests;
        self.errors += m.errors;
        // Token counts are Google's numbers summed over keys: saturate rather than overflow.
        self.prompt_tokens = self.prompt_tokens.saturating_add(m.prompt_tokens);
        self.completion_tokens = self.completion_tokens.saturating_add(m.completion_tokens);
        self.thoughts_tokens = self.thoughts_tokens.saturating_add(m.thoughts_tokens);
        match m.state {
            "ok" => self.usable += 1,
            "cooling" => self.cooling += 1,
            "exhausted" => self.exhausted += 1,
            _ => self.disabled += 1,
        }
    }
}

fn tokens(prompt: u64, completion: u64, thoughts: u64) -> Value {
    json!({"prompt": prompt, "completion": completion, "thoughts": thoughts})
}

fn error_rate(errors: u64, requests: u64) -> f64 {
    if requests == 0 {
        0.0
    } else {
        (errors as f64 / requests as f64 * 1000.0).round() / 1000.0
    }
}

fn strategy_name(s: Strategy) -> &'static str {
    match s {
        Strategy::RoundRobin => "round_robin",
        Strategy::LeastUsed => "least_used",
    }
}

/// The label a key is reported under: its name when configured, else its masked form; a second
/// key with the same label gets `#index` so no key hides another.
fn labels(keys: &[KeyStatus]) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    keys.iter()
        .map(|k| {
            let base = k.label();
            if seen.insert(base.clone()) {
                base
            } else {
                format!("{base}#{}", k.index)
            }
        })
        .collect()
}

fn model_json(m: &ModelStatus, at: &Moment) -> Value {
    let requests = m.successes + m.errors;
    json!({
        "state": m.state,
        "healthy": m.state == "ok",
        "total_requests": requests,
        "daily_requests": m.daily_requests,
        "errors": m.errors,
        "consecutive_errors": m.consecutive_failures,
        "error_rate": error_rate(m.errors, requests),
        "last_error_class": m.last_error,
        "cooldown_until": m.cooldown_remaining.map(|d| rfc3339(at.wall + d)),
        "daily_tokens": tokens(m.prompt_tokens, m.completion_tokens, m.thoughts_tokens),
    })
}

/// Per model: usage and how many keys are in each state.
fn model_summary(per_model: &BTreeMap<&str, Totals>) -> Map<String, Value> {
    per_model
        .iter()
        .map(|(model, t)| {
            (
                (*model).to_string(),
                json!({
                    "total_requests": t.requests,
                    "daily_requests": t.daily_requests,
                    "errors": t.errors,
                    "error_rate": error_rate(t.errors, t.requests),
                    "daily_tokens": tokens(t.prompt_tokens, t.completion_tokens, t.thoughts_tokens),
                    "keys_usable": t.usable,
                    "keys_cooling": t.cooling,
                    "keys_exhausted": t.exhausted,
                    "keys_disabled": t.disabled,
                }),
            )
        })
        .collect()
}

/// `GET /stats`.
pub fn stats(app: &App, snap: &Snapshot) -> Response<Body> {
    let at = Moment::take(snap);
    let keys = snap.pool.status_at(at.now);
    let names = labels(&keys);

    let mut per_key = Map::new();
    let mut per_model: BTreeMap<&str, Totals> = BTreeMap::new();
    let mut global = Totals::default();
    for (k, label) in keys.iter().zip(&names) {
        let mut mine = Totals::default();
        let mut models = Map::new();
        for m in &k.models {
            mine.add(m);
            global.add(m);
            per_model.entry(&m.model).or_default().add(m);
            models.insert(m.model.clone(), model_json(m, &at));
        }
        let last_error = k
            .models
            .iter()
            .filter(|m| m.last_error.is_some())
            .max_by_key(|m| m.consecutive_failures)
            .and_then(|m| m.last_error.clone());
        per_key.insert(
            label.clone(),
            json!({
                "index": k.index,
                "key": k.masked,
                "name": k.name,
                "project": k.project,
                "total_requests": mine.requests,
                "daily_requests": mine.daily_requests,
                "errors": mine.errors,
                "consecutive_errors": k.failure_count,
                "error_rate": error_rate(mine.errors, mine.requests),
                "healthy": k.available,
                "disabled": k.disabled,
                "last_error_class": last_error,
                "last_used": k.last_used.map(rfc3339),
                "quota_day": at.day,
                "daily_reset_at": at.resets_at(),
                "daily_tokens": tokens(mine.prompt_tokens, mine.completion_tokens, mine.thoughts_tokens),
                "models": models,
            }),
        );
    }

    let model_summary = model_summary(&per_model);

    json_response(
        StatusCode::OK,
        &json!({
            "api_key_stats": per_key,
            "model_summary": model_summary,
            "global_summary": {
                "total_keys": keys.len(),
                "available_keys": keys.iter().filter(|k| k.available).count(),
                "disabled_keys": keys.iter().filter(|k| k.disabled.is_some()).count(),
                "total_requests": global.requests,
                "daily_requests": global.daily_requests,
                "errors": global.errors,
                "error_rate": error_rate(global.errors, global.requests),
                "daily_tokens": tokens(global.prompt_tokens, global.completion_tokens, global.thoughts_tokens),
                "models_seen": model_summary.len(),
            },
            "load_balancing": {
                "strategy": strategy_name(snap.config.pool.strategy),
                "quota_day_timezone": QUOTA_TZ,
                "quota_day": at.day,
                "daily_reset_at": at.resets_at(),
                "now": rfc3339(at.wall),
            },
            "clients": client_usage(app),
        }),
    )
}

/// Requests and tokens today per client token name.
fn client_usage(app: &App) -> Value {
    app.usage
        .snapshot()
        .into_iter()
        .map(|(name, t)| {
            (
                name,
                json!({
                    "requests": t.requests,
                    "prompt_tokens": t.prompt_tokens,
                    "completion_tokens": t.completion_tokens,
                    "thoughts_tokens": t.thoughts_tokens,
                }),
            )
        })
        .collect::<Map<String, Value>>()
        .into()
}

/// `GET /api-key-recommendations`: what an operator may want to act on, most urgent first,
/// plus the per-model health the advice is based on.
pub fn recommendations(snap: &Snapshot) -> Response<Body> {
    let at = Moment::take(snap);
    let keys = snap.pool.status_at(at.now);
    let names = labels(&keys);
    let mut advice: Vec<Value> = Vec::new();
    let mut push = |severity: &str, kind: &str, message: String, keys: Vec<&str>| {
        advice.push(json!({"severity": severity, "kind": kind, "message": message, "keys": keys}));
    };

    if keys.is_empty() {
        push(
            "critical",
            "no_keys",
            "the pool has no keys: add some under [pool] keys or key_files".into(),
            vec![],
        );
    }

    for (k, label) in keys.iter().zip(&names) {
        if let Some(why) = &k.disabled {
            push(
                "critical",
                "key_disabled",
                format!(
                    "key {label} is disabled ({why}): replace it, or remove it from the config; \
                     it returns only after a reload or an admin reset"
                ),
                vec![label],
            );
        }
    }

    let mut per_model: BTreeMap<&str, Totals> = BTreeMap::new();
    for k in &keys {
        for m in &k.models {
            per_model.entry(&m.model).or_default().add(m);
        }
    }
    let resets = at
        .resets_at()
        .unwrap_or_else(|| "the next quota day".into());
    for (model, t) in &per_model {
        if t.usable == 0 {
            let when = if t.exhausted > 0 && t.cooling == 0 {
                format!("; the daily quotas reset at {resets}")
            } else {
                String::new()
            };
            push(
                "critical",
                "model_unavailable",
                format!(
                    "no key can serve {model} now ({} cooling, {} out for the day, {} disabled){when}: \
                     clients get 429 until one returns; add keys from other projects",
                    t.cooling, t.exhausted, t.disabled
                ),
                vec![],
            );
        } else if t.usable < FEW_KEYS {
            push(
                "warning",
                "few_usable_keys",
                format!(
                    "only {} key can serve {model} now ({} cooling, {} out for the day): \
                     consider adding keys",
                    t.usable, t.cooling, t.exhausted
                ),
                vec![],
            );
        }
    }

    for (k, label) in keys.iter().zip(&names) {
        let (errors, requests) = k.models.iter().fold((0, 0), |(e, r), m| {
            (e + m.errors, r + m.successes + m.errors)
        });
        let rate = error_rate(errors, requests);
        if requests >= MIN_REQUESTS_FOR_RATE && rate > HIGH_ERROR_RATE {
            push(
                "warning",
                "high_error_rate",
                format!(
                    "key {label} failed {errors} of its {requests} requests ({:.0}%): check its \
                     project's quota and billing",
                    rate * 100.0
                ),
                vec![label],
            );
        }
    }

    let mut projects: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (k, label) in keys.iter().zip(&names) {
        if let Some(p) = &k.project {
            projects.entry(p).or_default().push(label);
        }
    }
    for (project, members) in &projects {
        if members.len() > 1 {
            push(
                "info",
                "shared_project",
                format!(
                    "{} keys belong to project {project} and share one quota: a quota error on one \
                     rests them all, so they add no capacity over a single key",
                    members.len()
                ),
                members.clone(),
            );
        }
    }
    let without_project = keys.iter().filter(|k| k.project.is_none()).count();
    if keys.len() > 1 && without_project > 0 {
        push(
            "info",
            "project_unknown",
            format!(
                "{without_project} keys have no `project`: if several come from the same Google \
                 Cloud project, say so in the config so a quota error rests them together"
            ),
            vec![],
        );
    }

    let health = model_summary(&per_model);

    json_response(
        StatusCode::OK,
        &json!({
            "timestamp": rfc3339(at.wall),
            "total_keys": keys.len(),
            "available_keys": keys.iter().filter(|k| k.available).count(),
            "recommendations": advice,
            "model_health": health,
        }),
    )
}
