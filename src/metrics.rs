//! Prometheus metrics: what happened (counters and histograms, recorded as requests finish)
//! and what is (key states, usable keys, daily requests, config identity, computed from the
//! pool at scrape time).
//!
//! Recorders are process-wide, like the log: the request log line, the attempt loop and the
//! reloader each call one function here. Each worker records into a shard of its own (`shard`),
//! added up at scrape time: no request takes a lock another worker holds. Labels stay low-cardinality: routes are a closed set,
//! a model name gets a label of its own only once the pool knows it (configured, listed by
//! Google, or confirmed by an answer: `pool::KnownModels`, handed over by `follow_models`) and
//! while fewer than 64 are interned; any other name is counted as "other". Keys appear only
//! masked or by name.

use foldhash::{HashMap, HashMapExt, HashSet};
use std::borrow::Cow;
use std::sync::{Arc, LazyLock, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use arc_swap::{ArcSwap, ArcSwapOption};
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::pool::KnownModels;
use crate::shard::Shards;
use crate::state::{App, Snapshot};

/// Distinct model label values kept before the rest are counted as "other".
const MAX_MODELS: usize = 64;

type Labels = Vec<(&'static str, String)>;

/// Labels as the exposition takes them (all values are static: routes, classes and status
/// classes are, model names are interned by `model_label`).
type Fixed<const N: usize> = [(&'static str, Cow<'static, str>); N];

const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 120.0, 300.0,
];
const ATTEMPT_BUCKETS: &[f64] = &[1.0, 2.0, 3.0, 4.0, 5.0, 7.0, 10.0];

/// A histogram's values: per bucket counts (not cumulative; the last is `+Inf`), sum, count.
#[derive(Debug, Clone)]
struct Hist {
    bounds: &'static [f64],
    counts: Box<[u64]>,
    sum: f64,
    count: u64,
}

impl Hist {
    fn new(bounds: &'static [f64]) -> Self {
        Hist {
            bounds,
            counts: vec![0; bounds.len() + 1].into_boxed_slice(),
            sum: 0.0,
            count: 0,
        }
    }

    fn observe(&mut self, v: f64) {
        self.sum += v;
        self.count += 1;
        // The first bucket whose bound holds `v`; NaN and the largest values go to `+Inf`.
        let i = self
            .bounds
            .iter()
            .position(|b| *b >= v)
            .unwrap_or(self.bounds.len());
        self.counts[i] += 1;
    }

    fn add(&mut self, other: &Hist) {
        self.sum += other.sum;
        self.count += other.count;
        for (a, b) in self.counts.iter_mut().zip(other.counts.iter()) {
            *a += b;
        }
    }
}

impl EncodeMetric for Hist {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let buckets: Vec<(f64, u64)> = self
            .bounds
            .iter()
            .copied()
            .chain(std::iter::once(f64::INFINITY))
            .zip(self.counts.iter().copied())
            .collect();
        encoder.encode_histogram::<NoLabelSet>(self.sum, self.count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// Histograms by one label, merged from the shards at scrape time.
#[derive(Debug)]
struct HistFamily(Vec<(Fixed<1>, Hist)>);

impl EncodeMetric for HistFamily {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        for (labels, hist) in &self.0 {
            hist.encode(encoder.encode_family(labels)?)?;
        }
        Ok(())
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// What one worker recorded (`shard`): plain numbers behind the worker's own lock, added up
/// at scrape time, so no request waits on a lock or a cache line another worker holds.
#[derive(Debug)]
struct Recorded {
    /// By (route, model, status class).
    requests: HashMap<[&'static str; 3], u64>,
    /// By route.
    duration: HashMap<&'static str, Hist>,
    /// By model.
    upstream_ttfb: HashMap<&'static str, Hist>,
    /// By class.
    outcomes: HashMap<&'static str, u64>,
    attempts: Hist,
    /// By result.
    reloads: HashMap<&'static str, u64>,
}

impl Default for Recorded {
    fn default() -> Self {
        Recorded {
            requests: HashMap::new(),
            duration: HashMap::new(),
            upstream_ttfb: HashMap::new(),
            outcomes: HashMap::new(),
            attempts: Hist::new(ATTEMPT_BUCKETS),
            reloads: HashMap::new(),
        }
    }
}

impl Recorded {
    fn add(&mut self, other: &Recorded) {
        for (k, n) in &other.requests {
            *self.requests.entry(*k).or_default() += n;
        }
        for (k, n) in &other.outcomes {
            *self.outcomes.entry(*k).or_default() += n;
        }
        for (k, n) in &other.reloads {
            *self.reloads.entry(*k).or_default() += n;
        }
        for (k, h) in &other.duration {
            self.duration
                .entry(*k)
                .or_insert_with(|| Hist::new(LATENCY_BUCKETS))
                .add(h);
        }
        for (k, h) in &other.upstream_ttfb {
            self.upstream_ttfb
                .entry(*k)
                .or_insert_with(|| Hist::new(LATENCY_BUCKETS))
                .add(h);
        }
        self.attempts.add(&other.attempts);
    }
}

struct Recorders {
    shards: Shards<Mutex<Recorded>>,
    /// Interned model names (at most `MAX_MODELS`, kept for the life of the process).
    /// Read-mostly: a request loads it without a lock; `intern` serialises the additions.
    models_seen: ArcSwap<HashSet<&'static str>>,
    intern: Mutex<()>,
    /// Which names may be interned: the app's known models.
    known: ArcSwapOption<KnownModels>,
}

static RECORDERS: LazyLock<Recorders> = LazyLock::new(|| Recorders {
    shards: Shards::default(),
    models_seen: ArcSwap::default(),
    intern: Mutex::new(()),
    known: ArcSwapOption::empty(),
});

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// This worker's recorders.
fn local() -> MutexGuard<'static, Recorded> {
    lock(RECORDERS.shards.local())
}

/// Model names get labels of their own only if `known` knows them (the app calls this once).
pub fn follow_models(known: Arc<KnownModels>) {
    RECORDERS.known.store(Some(known));
}

/// A model name as a label value: known names only, capped in number; the rest are "other".
fn model_label(model: &str) -> &'static str {
    if model.is_empty() || model == "-" {
        return "-";
    }
    let r = &*RECORDERS;
    if let Some(seen) = r.models_seen.load().get(model) {
        return seen;
    }
    let _interning = lock(&r.intern);
    let seen = r.models_seen.load_full();
    if let Some(name) = seen.get(model) {
        return name;
    }
    let known = r.known.load().as_ref().is_some_and(|k| k.is_label(model));
    if known && seen.len() < MAX_MODELS {
        // Leaked on purpose: at most MAX_MODELS short names, each a label for good.
        let name: &'static str = Box::leak(model.to_owned().into_boxed_str());
        let mut more = HashSet::clone(&seen);
        more.insert(name);
        r.models_seen.store(Arc::new(more));
        return name;
    }
    "other"
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
    let model = model_label(model);
    let mut r = local();
    *r.requests
        .entry([route, model, status_class(status)])
        .or_default() += 1;
    r.duration
        .entry(route)
        .or_insert_with(|| Hist::new(LATENCY_BUCKETS))
        .observe(latency.as_secs_f64());
    if attempts > 0 {
        r.attempts.observe(f64::from(attempts));
    }
}

/// One upstream attempt: how long until its headers, and what it meant for the key.
pub fn record_attempt(model: &str, class: &'static str, ttfb: Option<Duration>) {
    let model = ttfb.is_some().then(|| model_label(model));
    let mut r = local();
    *r.outcomes.entry(class).or_default() += 1;
    if let (Some(t), Some(model)) = (ttfb, model) {
        r.upstream_ttfb
            .entry(model)
            .or_insert_with(|| Hist::new(LATENCY_BUCKETS))
            .observe(t.as_secs_f64());
    }
}

/// One reload attempt that applied or rejected a config.
pub fn record_reload(ok: bool) {
    *local()
        .reloads
        .entry(if ok { "ok" } else { "failed" })
        .or_default() += 1;
}

/// Every worker's recorders, added up.
fn merged() -> Recorded {
    let mut total = Recorded::default();
    for shard in RECORDERS.shards.iter() {
        total.add(&lock(shard));
    }
    total
}

fn counters<const N: usize>(
    names: [&'static str; N],
    values: &HashMap<[&'static str; N], u64>,
) -> Family<Fixed<N>, Counter> {
    let family: Family<Fixed<N>, Counter> = Family::default();
    for (labels, n) in values {
        let set: Fixed<N> = std::array::from_fn(|i| (names[i], Cow::Borrowed(labels[i])));
        family.get_or_create(&set).inc_by(*n);
    }
    family
}

fn histograms(name: &'static str, values: HashMap<&'static str, Hist>) -> HistFamily {
    HistFamily(
        values
            .into_iter()
            .map(|(v, h)| ([(name, Cow::Borrowed(v))], h))
            .collect(),
    )
}

/// The text exposition for a scrape.
pub fn render(app: &App, snap: &Snapshot) -> Result<String, std::fmt::Error> {
    let r = merged();
    let mut registry = Registry::with_prefix("gemini_rotator");
    registry.register(
        "requests",
        "Requests by route, model and status class",
        counters(["route", "model", "status_class"], &r.requests),
    );
    registry.register(
        "request_duration_seconds",
        "Time from request to the end of the response (streams: to their end)",
        histograms("route", r.duration),
    );
    registry.register(
        "upstream_ttfb_seconds",
        "Time from sending to Gemini until its response headers",
        histograms("model", r.upstream_ttfb),
    );
    registry.register(
        "upstream_outcomes",
        "Upstream attempts by outcome class",
        counters(
            ["class"],
            &r.outcomes.iter().map(|(k, n)| ([*k], *n)).collect(),
        ),
    );
    registry.register(
        "attempts_per_request",
        "Keys tried per request that reached the pool",
        r.attempts,
    );
    registry.register(
        "config_reloads",
        "Config reloads by result",
        counters(
            ["result"],
            &r.reloads.iter().map(|(k, n)| ([*k], *n)).collect(),
        ),
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

    // Admission (`admission`): how close the process is to refusing with 503.
    let gauge = |value: u64| {
        let gauge: Gauge = Gauge::default();
        gauge.set(i64::try_from(value).unwrap_or(i64::MAX));
        gauge
    };
    let count = |n: usize| gauge(u64::try_from(n).unwrap_or(u64::MAX));
    registry.register(
        "client_connections",
        "Client connections open now (served, and those in refusal mode)",
        count(crate::admission::connections()),
    );
    registry.register(
        "requests_in_flight",
        "Requests being served now, this scrape included (a stream until its last byte)",
        count(crate::admission::in_flight()),
    );
    registry.register(
        "memory_budget_used_bytes",
        "Bytes request bodies, fetched images and Live sessions hold now against server.memory_budget",
        gauge(crate::admission::budget_used()),
    );
    registry.register(
        "memory_budget_bytes",
        "server.memory_budget",
        gauge(snap.config.server.memory_budget),
    );

    let mut out = String::new();
    encode(&mut out, &registry)?;
    Ok(out)
}
