//! Prometheus metrics: what happened (counters and histograms, recorded as requests finish)
//! and what is (key states, usable keys, daily requests, config identity, computed from the
//! pool at scrape time).
//!
//! Recorders are process-wide, like the log: the request log line, the attempt loop and the
//! reloader each call one function here. Labels stay low-cardinality: routes are a closed set,
//! a model name gets a label of its own only once the pool knows it (configured, listed by
//! Google, or confirmed by an answer: `pool::KnownModels`, handed over by `follow_models`) and
//! while fewer than 64 are interned; any other name is counted as "other". Keys appear only
//! masked or by name.

use std::borrow::Cow;
use std::collections::HashSet;
use std::sync::{Arc, LazyLock, PoisonError, RwLock};
use std::time::{Duration, Instant};

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::pool::KnownModels;
use crate::state::{App, Snapshot};

/// Distinct model label values kept before the rest are counted as "other".
const MAX_MODELS: usize = 64;

type Labels = Vec<(&'static str, String)>;

/// Labels of the per-request recorders: no allocation per request (routes, classes and
/// status classes are static, model names are interned by `model_label`).
type Fixed<const N: usize> = [(&'static str, Cow<'static, str>); N];

fn latency_buckets() -> impl Iterator<Item = f64> {
    [
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
        60.0, 120.0, 300.0,
    ]
    .into_iter()
}

struct Recorders {
    requests: Family<Fixed<3>, Counter>,
    duration: Family<Fixed<1>, Histogram>,
    upstream_ttfb: Family<Fixed<1>, Histogram>,
    outcomes: Family<Fixed<1>, Counter>,
    attempts: Histogram,
    reloads: Family<Fixed<1>, Counter>,
    /// Interned model names (at most `MAX_MODELS`, kept for the life of the process).
    models_seen: RwLock<HashSet<&'static str>>,
    /// Which names may be interned: the app's known models.
    known: RwLock<Option<Arc<KnownModels>>>,
}

static RECORDERS: LazyLock<Recorders> = LazyLock::new(|| Recorders {
    requests: Family::default(),
    duration: Family::new_with_constructor(|| Histogram::new(latency_buckets())),
    upstream_ttfb: Family::new_with_constructor(|| Histogram::new(latency_buckets())),
    outcomes: Family::default(),
    attempts: Histogram::new([1.0, 2.0, 3.0, 4.0, 5.0, 7.0, 10.0]),
    reloads: Family::default(),
    models_seen: RwLock::new(HashSet::new()),
    known: RwLock::new(None),
});

/// Model names get labels of their own only if `known` knows them (the app calls this once).
pub fn follow_models(known: Arc<KnownModels>) {
    *RECORDERS
        .known
        .write()
        .unwrap_or_else(PoisonError::into_inner) = Some(known);
}

/// A model name as a label value: known names only, capped in number; the rest are "other".
fn model_label(model: &str) -> Cow<'static, str> {
    if model.is_empty() || model == "-" {
        return Cow::Borrowed("-");
    }
    let r = &*RECORDERS;
    if let Some(seen) = r
        .models_seen
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .get(model)
    {
        return Cow::Borrowed(seen);
    }
    let mut seen = r
        .models_seen
        .write()
        .unwrap_or_else(PoisonError::into_inner);
    if let Some(name) = seen.get(model) {
        return Cow::Borrowed(name);
    }
    let known = r
        .known
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .as_ref()
        .is_some_and(|k| k.is_label(model));
    if known && seen.len() < MAX_MODELS {
        // Leaked on purpose: at most MAX_MODELS short names, each a label for good.
        let name: &'static str = Box::leak(model.to_owned().into_boxed_str());
        seen.insert(name);
        return Cow::Borrowed(name);
    }
    Cow::Borrowed("other")
}

fn status_class(status: u16) -> &'static str {
    match status / 100 {
        1 => "1xx",
        2 => "2xx",
        3 => "3xx",
        4 => "4xx",
        _ => "5xx",
    }
}

/// One finished request: counted by route, model and status class; its latency by route.
pub fn record_request(
    route: &'static str,
    model: &str,
    status: u16,
    latency: Duration,
    attempts: u32,
) {
    let r = &*RECORDERS;
    r.requests
        .get_or_create(&[
            ("route", Cow::Borrowed(route)),
            ("model", model_label(model)),
            ("status_class", Cow::Borrowed(status_class(status))),
        ])
        .inc();
    r.duration
        .get_or_create(&[("route", Cow::Borrowed(route))])
        .observe(latency.as_secs_f64());
    if attempts > 0 {
        r.attempts.observe(f64::from(attempts));
    }
}

/// One upstream attempt: how long until its headers, and what it meant for the key.
pub fn record_attempt(model: &str, class: &'static str, ttfb: Option<Duration>) {
    let r = &*RECORDERS;
    r.outcomes
        .get_or_create(&[("class", Cow::Borrowed(class))])
        .inc();
    if let Some(t) = ttfb {
        r.upstream_ttfb
            .get_or_create(&[("model", model_label(model))])
            .observe(t.as_secs_f64());
    }
}

/// One reload attempt that applied or rejected a config.
pub fn record_reload(ok: bool) {
    RECORDERS
        .reloads
        .get_or_create(&[("result", Cow::Borrowed(if ok { "ok" } else { "failed" }))])
        .inc();
}

/// The text exposition for a scrape.
pub fn render(app: &App, snap: &Snapshot) -> Result<String, std::fmt::Error> {
    let r = &*RECORDERS;
    let mut registry = Registry::with_prefix("gemini_rotator");
    registry.register(
        "requests",
        "Requests by route, model and status class",
        r.requests.clone(),
    );
    registry.register(
        "request_duration_seconds",
        "Time from request to the end of the response (streams: to their end)",
        r.duration.clone(),
    );
    registry.register(
        "upstream_ttfb_seconds",
        "Time from sending to Gemini until its response headers",
        r.upstream_ttfb.clone(),
    );
    registry.register(
        "upstream_outcomes",
        "Upstream attempts by outcome class",
        r.outcomes.clone(),
    );
    registry.register(
        "attempts_per_request",
        "Keys tried per request that reached the pool",
        r.attempts.clone(),
    );
    registry.register(
        "config_reloads",
        "Config reloads by result",
        r.reloads.clone(),
    );

    // What is: computed now from the pool and the config.
    let now = Instant::now();
    let key_state: Family<Labels, Gauge> = Family::default();
    let daily: Family<Labels, Gauge> = Family::default();
    let usable: Family<Labels, Gauge> = Family::default();
    for key in snap.pool.status(now) {
        let label = key.label();
        for m in &key.models {
            for state in ["ok", "cooling", "disabled", "exhausted"] {
                key_state
                    .get_or_create(&vec![
                        ("key", label.clone()),
                        ("model", m.model.clone()),
                        ("state", state.to_string()),
                    ])
                    .set(i64::from(m.state == state));
            }
            daily
                .get_or_create(&vec![("key", label.clone()), ("model", m.model.clone())])
                .set(i64::try_from(m.daily_requests).unwrap_or(i64::MAX));
            let usable_now = i64::from(m.state == "ok" && key.disabled.is_none());
            usable
                .get_or_create(&vec![("model", m.model.clone())])
                .inc_by(usable_now);
        }
    }
    registry.register(
        "key_state",
        "1 for the current state of each key x model",
        key_state,
    );
    registry.register(
        "key_daily_requests",
        "Requests today (quota day, America/Los_Angeles) per key x model",
        daily,
    );
    registry.register(
        "usable_keys",
        "Keys usable now per model (models that have been used)",
        usable,
    );
    let keys_total: Gauge = Gauge::default();
    keys_total.set(i64::try_from(snap.pool.len()).unwrap_or(i64::MAX));
    registry.register("keys", "Keys in the pool", keys_total);
    let info: Family<Labels, Gauge> = Family::default();
    info.get_or_create(&vec![("hash", snap.config.hash.clone())])
        .set(1);
    registry.register("config_info", "The active config's content hash", info);
    let last_ok: Gauge = Gauge::default();
    last_ok.set(i64::from(app.reload.last().ok));
    registry.register(
        "config_last_reload_ok",
        "1 if the last reload attempt applied (or there was none), 0 if it was rejected",
        last_ok,
    );
    let state = app.persist.status();
    let store_up: Family<Labels, Gauge> = Family::default();
    store_up
        .get_or_create(&vec![("store", state.store.to_string())])
        .set(i64::from(state.ok));
    registry.register(
        "state_store_up",
        "1 while the state store ([state] store) works, 0 while it is down or failing",
        store_up,
    );

    let mut out = String::new();
    encode(&mut out, &registry)?;
    Ok(out)
}
