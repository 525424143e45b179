//! The key pool: which key serves the next request for a model, and what an upstream outcome
//! does to a key's health.
//!
//! Health is kept per (key, model) in cells keyed by the key itself, so it outlives config
//! reloads: `KeyPool::bind` builds the per-snapshot view (`PoolView`) from a config, reusing the
//! cells of keys that stay. The pool never sees an HTTP status: it acts on `Outcome` alone,
//! which `classify` produces. Time is an input (`now`, or `Now` with the wall clock that decides
//! the quota day, midnight America/Los_Angeles), so tests drive it directly.
//!
//! Client-chosen model names reach per-key state only once they are known to be real
//! (`KnownModels`: configured, listed by Google, or confirmed by an answer that is not the
//! client's error); a lease for an unknown name is checked like any other but counted only when
//! Google's answer confirms the name (`Lease::confirmed`), so junk names leave no trace.
//!
//! It must not block or await: each key has one short mutex, never held while another is taken,
//! and round-robin selection touches one or two keys when most are usable, whatever the pool's
//! size. It does no I/O and never logs a raw key. What it learned can be read out and merged
//! back as plain values (`saved.rs`: `KeyPool::export` / `import`, rests as wall-clock ends) by
//! a state store, which does the I/O elsewhere (`crate::store`).

mod cell;
mod explain;
mod known;
mod saved;

use foldhash::{HashMap, HashMapExt};
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use std::time::{Duration, Instant, SystemTime};

use crate::config;
use crate::secret::ApiKey;

use crate::quota_day::QuotaClock;
use cell::{lock, At, KeyCell, Policy, Skip, Track};

pub use cell::Why;
pub use explain::{Explanation, KeyVerdict, Verdict};
pub use known::KnownModels;
pub use saved::{SavedKey, SavedModel, SavedRest};

use crate::usage::Tokens;

/// What an upstream response means for the key that made it. Produced by `classify`.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// 2xx.
    Success,
    /// 429 per-minute quota, or any 429 without a per-day marker. `retry_after` from RetryInfo
    /// (or the message's "Please retry in Xs"); `None` means rest `cooldown`.
    RateLimited { retry_after: Option<Duration> },
    /// 429 per-day quota: out for that model until the quota day ends.
    QuotaDaily,
    /// 429 with `limit: 0`: the key has no quota at all for that model.
    NoQuota,
    /// 400 API_KEY_INVALID, 401, 403: the key is dead for every model.
    KeyInvalid { reason: String },
    /// 503 "model overloaded": the model's problem, not the key's.
    Overloaded,
    /// Other 5xx, timeouts, connection errors: counts towards `failure_threshold`.
    Transient { reason: String },
    /// Any other 4xx: the client's fault; no retry, no penalty.
    ClientError,
    /// 403 about access to the model (not the key, not a named resource): out for that model
    /// only, like `NoQuota`, until reload or admin reset; the key keeps serving other models.
    ModelDenied { reason: String },
    /// The call never reached Google (DNS, connect refused or timed out): not the key's fault,
    /// so nothing is held against it.
    Network { reason: String },
}

impl Outcome {
    /// Whether the request may be retried on another key.
    pub fn retryable(&self) -> bool {
        !matches!(self, Outcome::Success | Outcome::ClientError)
    }

    /// A short, stable class name for logs and metrics.
    pub fn class(&self) -> &'static str {
        match self {
            Outcome::Success => "ok",
            Outcome::RateLimited { .. } => "rate_limited",
            Outcome::QuotaDaily => "quota_daily",
            Outcome::NoQuota => "no_quota",
            Outcome::KeyInvalid { .. } => "key_invalid",
            Outcome::Overloaded => "overloaded",
            Outcome::Transient { .. } => "transient",
            Outcome::ClientError => "client_error",
            Outcome::ModelDenied { .. } => "model_denied",
            Outcome::Network { .. } => "network",
        }
    }

    /// Whether Google's answer shows the model name is real (anything but the client's error,
    /// or a verdict on the key that says nothing about the model).
    fn confirms_model(&self) -> bool {
        !matches!(self, Outcome::ClientError | Outcome::KeyInvalid { .. })
    }
}

/// Health cells by key identity. Lives in the app state, outside any config snapshot; clones
/// share it (a state store holds one).
#[derive(Default, Clone)]
pub struct KeyPool {
    shared: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    /// Cells of the keys in the last bound config. Views hold their own `Arc`s, so dropping a
    /// removed key here never pulls a cell from under an in-flight request.
    cells: Mutex<HashMap<ApiKey, Arc<KeyCell>>>,
    /// Round-robin position per model, shared by every view so rotation carries on across
    /// reloads instead of restarting at key 0.
    cursors: Mutex<HashMap<Arc<str>, Arc<AtomicUsize>>>,
    /// Used once `cursors` is full (model names may come from clients).
    overflow_cursor: Arc<AtomicUsize>,
    clock: QuotaClock,
    /// Model names that may have per-key state and metrics labels.
    known: Arc<KnownModels>,
    /// Woken when a shared store should send at once rather than at its next tick: a key
    /// started resting or was disabled.
    wake: Arc<tokio::sync::Notify>,
    /// A shared store's fleet-wide count for `daily_limit` keys, when one is in use.
    claimer: arc_swap::ArcSwapOption<ClaimerSlot>,
    /// `claimer` is set (read per pick of a `daily_limit` key).
    claiming: AtomicBool,
}

/// The shared store's `Claimer`, as `ArcSwapOption` holds it.
struct ClaimerSlot(Arc<dyn Claimer>);

/// Models with their own cursor / cached route; beyond this, junk names share a fallback.
const MAX_ROUTES: usize = 1024;

impl KeyPool {
    pub fn new() -> Self {
        KeyPool::default()
    }

    /// A shared store counts `daily_limit` keys fleet-wide from now on (`None`: no more).
    pub fn set_claimer(&self, claimer: Option<Arc<dyn Claimer>>) {
        self.shared
            .claiming
            .store(claimer.is_some(), Ordering::Release);
        self.shared
            .claimer
            .store(claimer.map(|c| Arc::new(ClaimerSlot(c))));
    }

    /// What a shared store waits on to send changes at once (see `Shared::wake`).
    pub fn wake(&self) -> Arc<tokio::sync::Notify> {
        self.shared.wake.clone()
    }

    /// The model names known to be real (metrics label only these).
    pub fn known_models(&self) -> Arc<KnownModels> {
        self.shared.known.clone()
    }

    /// The config's model names (`models.list`, alias targets, alias names) as known; replaces
    /// the previous config's. Call with each config bound.
    pub fn configure_models(&self, models: &config::Models) {
        self.shared.known.configure(models);
    }

    /// The view of the pool for one config snapshot. Keys that stay keep their cell (rests,
    /// counters); a reload forgives `disabled` and `limit: 0` ("until reload or admin reset").
    pub fn bind(&self, cfg: &config::Pool) -> PoolView {
        let mut cells = lock(&self.shared.cells);
        let mut next: HashMap<ApiKey, Arc<KeyCell>> = HashMap::with_capacity(cfg.keys.len());
        let mut slots = Vec::with_capacity(cfg.keys.len());
        for spec in &cfg.keys {
            let cell = match next.get(&spec.key) {
                Some(cell) => cell.clone(),
                None => {
                    let cell = match cells.remove(&spec.key) {
                        Some(cell) => {
                            cell.revive();
                            cell
                        }
                        None => Arc::new(KeyCell::new()),
                    };
                    next.insert(spec.key.clone(), cell.clone());
                    cell
                }
            };
            slots.push(Slot {
                spec: spec.clone(),
                cell,
            });
        }
        *cells = next;
        drop(cells);
        let mut projects: HashMap<&str, Vec<usize>> = HashMap::new();
        for (i, spec) in cfg.keys.iter().enumerate() {
            if let Some(p) = spec.project.as_deref() {
                projects.entry(p).or_default().push(i);
            }
        }
        let projects = projects
            .into_iter()
            .filter(|(_, keys)| keys.len() > 1)
            .map(|(p, keys)| (Box::from(p), keys.into_boxed_slice()))
            .collect();
        let all_keys = cfg
            .keys
            .iter()
            .all(|k| k.models.is_none())
            .then(|| (0..cfg.keys.len()).collect());
        PoolView {
            all_keys,
            health: Mutex::new(None),
            health_busy: AtomicBool::new(false),
            strategy: cfg.strategy,
            projects,
            slots: slots.into_boxed_slice(),
            policy: Policy {
                failure_threshold: cfg.failure_threshold,
                cooldown: cfg.cooldown,
            },
            max_attempts: cfg.max_attempts,
            routes: ArcSwap::default(),
            shared: self.shared.clone(),
        }
    }
}

impl Shared {
    /// A model just confirmed: its rotation goes on after `next - 1`, the position its first
    /// (unknown, uncounted) pick took, rather than starting over at that key.
    fn seed_cursor(&self, model: &str, next: usize) {
        let mut cursors = lock(&self.cursors);
        if !cursors.contains_key(model) && cursors.len() < MAX_ROUTES {
            cursors.insert(Arc::from(model), Arc::new(AtomicUsize::new(next)));
        }
    }

    fn cursor(&self, model: &str) -> Arc<AtomicUsize> {
        let mut cursors = lock(&self.cursors);
        if let Some(c) = cursors.get(model) {
            return c.clone();
        }
        if cursors.len() >= MAX_ROUTES {
            return self.overflow_cursor.clone();
        }
        let c = Arc::new(AtomicUsize::new(0));
        cursors.insert(Arc::from(model), c.clone());
        c
    }
}

/// The keys of one config snapshot, each with its shared health cell.
pub struct PoolView {
    slots: Box<[Slot]>,
    strategy: config::Strategy,
    /// Keys by `project`, only for projects with more than one key (they share Google's quota).
    projects: HashMap<Box<str>, Box<[usize]>>,
    policy: Policy,
    max_attempts: u32,
    /// Per known model: which keys may serve it, computed once per snapshot (globs are not
    /// free). Unknown names are routed afresh each time and never stored. Read-mostly: a
    /// request loads it without a lock; a new known model copies it (at most `MAX_ROUTES`).
    routes: ArcSwap<HashMap<Box<str>, Arc<ModelRoute>>>,
    /// Every key, when no key has `models` globs (the route of any unknown name).
    all_keys: Option<Arc<[usize]>>,
    /// `/health`'s count and when it was computed (at most once per `HEALTH_TTL`).
    health: Mutex<Option<(Instant, usize)>>,
    health_busy: AtomicBool,
    shared: Arc<Shared>,
}

/// How long `/health`'s available-key count is reused.
const HEALTH_TTL: Duration = Duration::from_secs(1);

struct Slot {
    spec: config::KeySpec,
    cell: Arc<KeyCell>,
}

struct ModelRoute {
    /// Indices into `slots` of keys whose `models` globs allow the model.
    allowed: Arc<[usize]>,
    cursor: Arc<AtomicUsize>,
    /// A known model: leases count at once and the model may get entries.
    known: bool,
}

/// A key chosen for one attempt. Hand it back to `report` with the outcome.
#[derive(Clone)]
pub struct Lease {
    /// Position of the key in the snapshot (stable for the snapshot's life).
    pub index: usize,
    pub key: ApiKey,
    /// The upstream model this lease is for.
    pub model: Arc<str>,
    cell: Arc<KeyCell>,
    /// `None`: counted at lease time. `Some`: an unknown model name, not counted; set (once,
    /// shared by clones) when Google's answer confirms the name and the request is counted.
    confirmed: Option<Arc<AtomicBool>>,
    /// The key's `daily_limit`, when a shared store counts this request fleet-wide before it
    /// is sent (`PoolView::claim`).
    claim: Option<(u64, Arc<ClaimerSlot>)>,
}

/// A shared store's fleet-wide count of `daily_limit` keys (`store/redis.rs`): one request of
/// `key` for `model` is counted against `limit` across every replica. `Some(Ok(n))`: counted,
/// the fleet's count is now `n`; `Some(Err(n))`: the fleet already served `n >= limit`, not
/// counted; `None`: the store cannot say now (down, slow): this replica decides alone.
pub trait Claimer: Send + Sync {
    fn claim(&self, key: &ApiKey, model: &str, limit: u64) -> ClaimFuture;
}

/// What `Claimer::claim` answers (see there).
pub type ClaimFuture =
    std::pin::Pin<Box<dyn std::future::Future<Output = Option<Result<u64, u64>>> + Send>>;

impl Lease {
    /// How a report with `outcome` (`None`: a 2xx at the headers) may touch the model's state.
    fn track(&self, outcome: Option<&Outcome>) -> Track {
        let Some(flag) = &self.confirmed else {
            return Track::Yes;
        };
        if flag.load(Ordering::Acquire) {
            return Track::Yes;
        }
        if !outcome.is_none_or(Outcome::confirms_model) || self.model.is_empty() {
            return Track::No;
        }
        if flag.swap(true, Ordering::AcqRel) {
            Track::Yes
        } else {
            Track::Late
        }
    }

    fn tracked(&self) -> bool {
        self.confirmed
            .as_ref()
            .is_none_or(|f| f.load(Ordering::Acquire))
    }
}

impl fmt::Debug for Lease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lease")
            .field("index", &self.index)
            .field("key", &self.key)
            .field("model", &self.model)
            .finish()
    }
}

/// The time an operation happens at. The monotonic instant drives rests; the wall clock is what
/// `/status` shows (and, with the quota day, what decides daily resets).
#[derive(Debug, Clone, Copy)]
pub struct Now {
    pub instant: Instant,
    pub wall: SystemTime,
}

impl Now {
    pub fn new(instant: Instant, wall: SystemTime) -> Self {
        Now { instant, wall }
    }

    /// `instant` with the current wall clock (what the `Instant`-only methods use).
    pub fn at(instant: Instant) -> Self {
        Now {
            instant,
            wall: SystemTime::now(),
        }
    }
}

/// Why no key could be picked.
#[derive(Debug, Clone, PartialEq)]
pub struct NoKey {
    /// Time until the first resting key returns (uncapped; the caller caps it).
    pub retry_after: Option<Duration>,
    /// Every key that could serve the model is out until the quota day ends.
    pub all_daily: bool,
    /// Every key that could serve the model is disabled (invalid); none will come back by itself.
    pub all_disabled: bool,
    /// No key in the pool is allowed to serve the model at all (per-key `models` globs).
    pub none_allowed: bool,
}

/// A key's state for `/status` and `/health`.
#[derive(Debug, Clone)]
pub struct KeyStatus {
    pub index: usize,
    pub masked: String,
    pub name: Option<String>,
    pub project: Option<String>,
    /// Sum of consecutive failures over models.
    pub failure_count: u32,
    /// Usable for at least one model right now.
    pub available: bool,
    pub disabled: Option<String>,
    pub last_used: Option<std::time::SystemTime>,
    pub models: Vec<ModelStatus>,
}

impl KeyStatus {
    /// How reports name the key: its configured name, else its masked form.
    pub fn label(&self) -> String {
        self.name.clone().unwrap_or_else(|| self.masked.clone())
    }
}

#[derive(Debug, Clone)]
pub struct ModelStatus {
    pub model: String,
    /// "ok" | "cooling" (rest after failures or a per-minute 429) | "disabled" (key invalid) |
    /// "exhausted" (per-day 429 or `daily_limit` until the quota day ends, or `limit: 0`)
    pub state: &'static str,
    pub consecutive_failures: u32,
    /// Remaining rest, if resting.
    pub cooldown_remaining: Option<Duration>,
    /// Requests leased in the current quota day (counted at pick time).
    pub daily_requests: u64,
    /// Tokens Gemini reported for this key and model in the current quota day
    /// (`promptTokenCount` + `toolUsePromptTokenCount`).
    pub prompt_tokens: u64,
    /// `candidatesTokenCount` (visible output; thoughts apart).
    pub completion_tokens: u64,
    /// `thoughtsTokenCount`.
    pub thoughts_tokens: u64,
    pub last_error: Option<String>,
    /// Lifetime counts (since the key joined the pool) for `/stats`.
    pub successes: u64,
    pub errors: u64,
}

/// Why keys were skipped during one pick, to explain a `NoKey`.
#[derive(Default)]
struct Tally {
    allowed: usize,
    disabled: usize,
    /// Out until the quota day ends (or for good: `limit: 0`).
    daily: usize,
    earliest: Option<Instant>,
}

impl Tally {
    fn add(&mut self, skip: Skip) {
        match skip {
            Skip::Disabled => self.disabled += 1,
            Skip::NoQuota => self.daily += 1,
            Skip::Resting { until, daily } => {
                if daily {
                    self.daily += 1;
                }
                self.earliest = Some(self.earliest.map_or(until, |e| e.min(until)));
            }
            // Its probe will report soon; nothing to say about when.
            Skip::Probing => {}
        }
    }

    fn no_key(&self, now: Instant) -> NoKey {
        let all_disabled = self.allowed > 0 && self.disabled == self.allowed;
        NoKey {
            retry_after: self.earliest.map(|e| e.saturating_duration_since(now)),
            all_daily: !all_disabled
                && self.daily > 0
                && self.daily + self.disabled == self.allowed,
            all_disabled,
            none_allowed: self.allowed == 0,
        }
    }
}

impl PoolView {
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn max_attempts(&self) -> u32 {
        self.max_attempts.max(1)
    }

    /// Picks the next key for `model`, skipping keys in `exclude` (indices already tried for
    /// this request), keys not allowed for the model, disabled keys and resting keys.
    pub fn pick(&self, model: &str, now: Instant, exclude: &[usize]) -> Result<Lease, NoKey> {
        self.pick_at(model, Now::at(now), exclude)
    }

    /// `pick` with an explicit wall clock, which decides the quota day.
    pub fn pick_at(&self, model: &str, now: Now, exclude: &[usize]) -> Result<Lease, NoKey> {
        let at = self.at(now);
        let route = self.route(model);
        let mut tally = Tally {
            allowed: route.allowed.len(),
            ..Tally::default()
        };
        if route.allowed.is_empty() {
            return Err(tally.no_key(at.instant));
        }
        let found = match self.strategy {
            config::Strategy::RoundRobin => {
                self.round_robin(&route, model, &at, exclude, &mut tally)
            }
            config::Strategy::LeastUsed => self.least_used(&route, model, &at, exclude, &mut tally),
        };
        match found {
            Some((index, tracked)) => Ok(self.lease(index, model, tracked)),
            None => Err(tally.no_key(at.instant)),
        }
    }

    /// Starts at the model's cursor and takes the first usable key. When most keys are usable
    /// this touches one or two cells, whatever the pool's size.
    fn round_robin(
        &self,
        route: &ModelRoute,
        model: &str,
        at: &At,
        exclude: &[usize],
        tally: &mut Tally,
    ) -> Option<(usize, bool)> {
        let n = route.allowed.len();
        let start = route.cursor.fetch_add(1, Ordering::Relaxed);
        for step in 0..n {
            let index = route.allowed[start.wrapping_add(step) % n];
            let slot = &self.slots[index];
            if exclude.contains(&index) {
                // Tried already for this request: a usable one still keeps `all_*` false.
                if let Err(skip) = slot.cell.check(model, at, slot.spec.daily_limit) {
                    tally.add(skip);
                }
                continue;
            }
            match slot.cell.try_lease(
                model,
                at,
                slot.spec.daily_limit,
                route.known,
                slot.spec.daily_limit.is_some() && self.claiming(),
            ) {
                Ok(tracked) => {
                    if step > 0 {
                        // Skipped keys must not hand their turn to the next key twice.
                        route.cursor.fetch_add(step, Ordering::Relaxed);
                    }
                    return Some((index, tracked));
                }
                Err(skip) => tally.add(skip),
            }
        }
        None
    }

    /// Fewest requests today for the model, ties to the least recently used. This looks at
    /// every allowed key (O(keys) per pick); round robin is the strategy for huge pools.
    fn least_used(
        &self,
        route: &ModelRoute,
        model: &str,
        at: &At,
        exclude: &[usize],
        tally: &mut Tally,
    ) -> Option<(usize, bool)> {
        // A concurrent pick may take the best key between the scan and the lease; a few
        // rescans settle that without holding more than one cell's lock at a time.
        for _ in 0..3 {
            let mut best: Option<(cell::Usage, usize)> = None;
            let mut scan = Tally {
                allowed: tally.allowed,
                ..Tally::default()
            };
            for &index in route.allowed.iter() {
                let slot = &self.slots[index];
                match slot.cell.check(model, at, slot.spec.daily_limit) {
                    Err(skip) => scan.add(skip),
                    Ok(_) if exclude.contains(&index) => {}
                    Ok(usage) => {
                        if best.as_ref().is_none_or(|(b, _)| usage < *b) {
                            best = Some((usage, index));
                        }
                    }
                }
            }
            *tally = scan;
            let (_, index) = best?;
            let slot = &self.slots[index];
            if let Ok(tracked) = slot.cell.try_lease(
                model,
                at,
                slot.spec.daily_limit,
                route.known,
                slot.spec.daily_limit.is_some() && self.claiming(),
            ) {
                return Some((index, tracked));
            }
        }
        None
    }

    fn claiming(&self) -> bool {
        self.shared.claiming.load(Ordering::Acquire)
    }

    fn lease(&self, index: usize, model: &str, tracked: bool) -> Lease {
        let slot = &self.slots[index];
        let claim = match (slot.spec.daily_limit, tracked) {
            (Some(limit), true) => self.shared.claimer.load_full().map(|c| (limit, c)),
            _ => None,
        };
        Lease {
            index,
            key: slot.spec.key.clone(),
            model: Arc::from(model),
            cell: slot.cell.clone(),
            confirmed: (!tracked).then(|| Arc::new(AtomicBool::new(false))),
            claim,
        }
    }

    /// For a lease of a `daily_limit` key while a shared store counts them: counts the request
    /// fleet-wide before it is sent. `false`: the fleet has used the key's limit up today (the
    /// lease is given back and this replica now knows the fleet's count); the caller picks
    /// another key. Without a shared store, or when it cannot answer in time, `true` (the
    /// replica's own count decides, and is sent to the store later).
    pub async fn claim(&self, lease: &Lease, now: Now) -> bool {
        let Some((limit, claimer)) = &lease.claim else {
            return true;
        };
        let answer = claimer.0.claim(&lease.key, &lease.model, *limit).await;
        let at = self.at(now);
        match answer {
            Some(Ok(count)) => {
                lease.cell.fleet_count(&lease.model, count, &at);
                true
            }
            Some(Err(count)) => {
                lease.cell.fleet_count(&lease.model, count, &at);
                self.abandon(lease);
                false
            }
            None => {
                lease.cell.fleet_count_unknown(&lease.model, &at);
                true
            }
        }
    }

    /// Picks a key allowed to serve `model` that is not disabled, for calls Google does not
    /// meter against the model's generation quota (`countTokens`, which has a far higher one
    /// of its own): the model's rests and daily counts are not asked, and nothing is counted.
    pub fn pick_unmetered(
        &self,
        model: &str,
        now: Instant,
        exclude: &[usize],
    ) -> Result<Lease, NoKey> {
        let route = self.route(model);
        let start = route.cursor.fetch_add(1, Ordering::Relaxed);
        self.first_enabled(&route.allowed, start, now, exclude)
    }

    /// Picks any key that is not disabled, for calls about no particular model (model lists).
    /// Counts no request against any model.
    pub fn pick_any(&self, now: Instant, exclude: &[usize]) -> Result<Lease, NoKey> {
        let all: std::borrow::Cow<'_, [usize]> = match &self.all_keys {
            Some(all) => std::borrow::Cow::Borrowed(all),
            None => (0..self.slots.len()).collect(),
        };
        let start = self.shared.cursor("").fetch_add(1, Ordering::Relaxed);
        self.first_enabled(&all, start, now, exclude)
    }

    /// The first of `candidates` (key indexes, from `start` round) that is neither excluded
    /// nor disabled, leased about no model; none: every candidate is disabled, or there is none.
    fn first_enabled(
        &self,
        candidates: &[usize],
        start: usize,
        now: Instant,
        exclude: &[usize],
    ) -> Result<Lease, NoKey> {
        let at = self.at(Now::at(now));
        let n = candidates.len();
        for step in 0..n {
            let index = candidates[start.wrapping_add(step) % n];
            if exclude.contains(&index) {
                continue;
            }
            if self.slots[index].cell.check("", &at, None).is_ok() {
                return Ok(self.lease(index, "", false));
            }
        }
        Err(NoKey {
            retry_after: None,
            all_daily: false,
            all_disabled: true,
            none_allowed: n == 0,
        })
    }

    /// Applies an upstream outcome to the leased key.
    pub fn report(&self, lease: &Lease, outcome: &Outcome, now: Instant) {
        self.report_at(lease, outcome, Now::at(now))
    }

    /// `report` with an explicit wall clock. A quota 429 also rests every other key of the same
    /// `project` for that model, with the same deadline.
    pub fn report_at(&self, lease: &Lease, outcome: &Outcome, now: Now) {
        let at = self.at(now);
        let track = lease.track(Some(outcome));
        if track == Track::Late {
            self.confirm(lease);
        }
        lease
            .cell
            .report(&lease.model, outcome, &at, self.policy, track);
        let quota = matches!(
            outcome,
            Outcome::RateLimited { .. } | Outcome::QuotaDaily | Outcome::NoQuota
        );
        if quota || matches!(outcome, Outcome::KeyInvalid { .. }) {
            self.shared.wake.notify_one();
        }
        if !quota || track == Track::No {
            return;
        }
        // The lease may come from an older snapshot, whose indices mean other keys here.
        let Some(slot) = self.slots.get(lease.index) else {
            return;
        };
        if !Arc::ptr_eq(&slot.cell, &lease.cell) {
            return;
        }
        let Some(siblings) = slot
            .spec
            .project
            .as_deref()
            .and_then(|p| self.projects.get(p))
        else {
            return;
        };
        for &i in siblings.iter().filter(|&&i| i != lease.index) {
            self.slots[i]
                .cell
                .project_quota_hit(&lease.model, outcome, &at, self.policy);
        }
    }

    /// Google answered 2xx at the headers (a stream, whose outcome is reported at its end):
    /// the model name is real. A lease that was not counted is counted now.
    pub fn answered(&self, lease: &Lease) {
        self.answered_at(lease, Now::at(Instant::now()));
    }

    pub fn answered_at(&self, lease: &Lease, now: Now) {
        if lease.track(None) == Track::Late {
            self.confirm(lease);
            lease.cell.count_late(&lease.model, &self.at(now));
        }
    }

    /// Google confirmed the lease's model name: it is known from now on, and its rotation
    /// carries on after the key this lease took.
    fn confirm(&self, lease: &Lease) {
        if !self.shared.known.learn(&lease.model) {
            return;
        }
        let Some(slot) = self.slots.get(lease.index) else {
            return;
        };
        if !Arc::ptr_eq(&slot.cell, &lease.cell) {
            return;
        }
        let position = match &self.all_keys {
            Some(_) => lease.index,
            None => self.slots[..lease.index]
                .iter()
                .filter(|s| {
                    s.spec
                        .models
                        .as_ref()
                        .is_none_or(|g| g.matches(&lease.model))
                })
                .count(),
        };
        self.shared.seed_cursor(&lease.model, position + 1);
    }

    /// Model names Google listed (`/v1/models`): known to be real.
    pub fn learn_models<'a>(&self, names: impl IntoIterator<Item = &'a str>) {
        for name in names {
            if !self.shared.known.learn(name) {
                break;
            }
        }
    }

    /// A model request Gemini answered: adds the response's `usageMetadata`, when it had one,
    /// to the key's counts for the model. (Client tokens are counted apart, in `usage`: the
    /// pool knows keys only.)
    pub fn record_tokens(&self, lease: &Lease, tokens: Option<Tokens>) {
        self.record_tokens_at(lease, tokens, Now::at(Instant::now()));
    }

    pub fn record_tokens_at(&self, lease: &Lease, tokens: Option<Tokens>, now: Now) {
        let Some(tokens) = tokens.filter(|t| *t != Tokens::default()) else {
            return;
        };
        if !lease.model.is_empty() && lease.tracked() {
            lease
                .cell
                .record_tokens(&lease.model, tokens, &self.at(now));
        }
    }

    /// The request ended without an outcome (client disconnected before the upstream
    /// answered). Nothing is held against the key; a probe slot is freed at once.
    pub fn abandon(&self, lease: &Lease) {
        if lease.tracked() {
            lease.cell.abandon(&lease.model);
        }
    }

    fn at(&self, now: Now) -> At {
        let day = self
            .shared
            .clock
            .day(now.wall)
            .map(|(day, left)| (day, now.instant + left));
        At {
            instant: now.instant,
            wall: now.wall,
            day,
        }
    }

    /// Keys usable for at least one model right now: not disabled, and not out for every
    /// known model their globs allow (a key cooling on one model only is available).
    pub fn available_count(&self, now: Instant) -> usize {
        self.available_count_at(Now::at(now))
    }

    pub fn available_count_at(&self, now: Now) -> usize {
        let at = self.at(now);
        let known = self.shared.known.models();
        self.slots
            .iter()
            .filter(|s| {
                s.cell
                    .available(&at, s.spec.daily_limit, candidates(&s.spec, &known))
            })
            .count()
    }

    /// `available_count` for `/health`: computed at most once per second and shared by every
    /// caller meanwhile (reading it allocates nothing). While one caller recomputes, the others
    /// get the previous count.
    pub fn health_count(&self, now: Instant) -> usize {
        let cached = *lock(&self.health);
        if let Some((at, count)) = cached {
            if now.saturating_duration_since(at) < HEALTH_TTL {
                return count;
            }
            if self.health_busy.swap(true, Ordering::Acquire) {
                return count;
            }
        } else {
            self.health_busy.store(true, Ordering::Release);
        }
        let count = self.available_count(now);
        *lock(&self.health) = Some((now, count));
        self.health_busy.store(false, Ordering::Release);
        count
    }

    pub fn status(&self, now: Instant) -> Vec<KeyStatus> {
        self.status_at(Now::at(now))
    }

    pub fn status_at(&self, now: Now) -> Vec<KeyStatus> {
        let at = self.at(now);
        let known = self.shared.known.models();
        self.slots
            .iter()
            .enumerate()
            .map(|(index, slot)| {
                let st =
                    slot.cell
                        .status(&at, slot.spec.daily_limit, candidates(&slot.spec, &known));
                KeyStatus {
                    index,
                    masked: slot.spec.key.masked().to_string(),
                    name: slot.spec.name.clone(),
                    project: slot.spec.project.clone(),
                    failure_count: st.failure_count,
                    available: st.available,
                    disabled: st.disabled,
                    last_used: st.last_used,
                    models: st.models,
                }
            })
            .collect()
    }

    /// The quota day `wall` falls in (`YYYY-MM-DD` in America/Los_Angeles) and how long until
    /// it ends, for reports.
    pub fn quota_day(&self, wall: std::time::SystemTime) -> Option<(String, Duration)> {
        self.shared
            .clock
            .day(wall)
            .map(|(day, left)| (day.to_string(), left))
    }

    /// Every key available again for every model (`POST /admin/reset-keys`). Returns the number
    /// of keys reset.
    pub fn reset_all(&self) -> usize {
        self.reset(None, None)
    }

    /// `POST /reset-api-key-health`: keys whose masked form equals `pattern` (or ends with it,
    /// so "abcd" works too), or all keys when `None`; only `model`'s state when given, else the
    /// whole key including `disabled`. Returns the number of keys that had something to reset (a
    /// key that never served `model` has no state for it).
    pub fn reset(&self, pattern: Option<&str>, model: Option<&str>) -> usize {
        self.reset_keys(pattern, model).len()
    }

    /// `reset`, returning the keys that had something to reset (a shared store tells the
    /// other replicas).
    pub fn reset_keys(&self, pattern: Option<&str>, model: Option<&str>) -> Vec<ApiKey> {
        let mut out = Vec::new();
        for slot in self.slots.iter() {
            let hit = pattern.is_none_or(|p| {
                let masked = slot.spec.key.masked().to_string();
                masked == p || (p.len() >= 4 && masked.ends_with(p))
            });
            if hit && slot.cell.reset(model) && !out.contains(&slot.spec.key) {
                out.push(slot.spec.key.clone());
            }
        }
        out
    }

    /// Keys allowed for `model` in this snapshot, with the model's shared cursor. Only known
    /// models get a cursor of their own and a stored route: unknown names share the overflow
    /// cursor and leave nothing behind.
    fn route(&self, model: &str) -> Arc<ModelRoute> {
        if let Some(r) = read(&self.routes).get(model) {
            return r.clone();
        }
        let known = self.shared.known.is_model(model);
        let allowed = match &self.all_keys {
            Some(all) => all.clone(),
            None => self
                .slots
                .iter()
                .enumerate()
                .filter(|(_, s)| s.spec.models.as_ref().is_none_or(|g| g.matches(model)))
                .map(|(i, _)| i)
                .collect(),
        };
        let route = Arc::new(ModelRoute {
            allowed,
            // An unknown name starts at the first allowed key each time and moves no cursor
            // that lasts.
            cursor: if known {
                self.shared.cursor(model)
            } else {
                Arc::new(AtomicUsize::new(0))
            },
            known,
        });
        if known {
            self.routes.rcu(|routes| {
                if routes.len() >= MAX_ROUTES || routes.contains_key(model) {
                    return routes.clone();
                }
                let mut more = HashMap::clone(routes);
                more.insert(Box::from(model), route.clone());
                Arc::new(more)
            });
        }
        route
    }
}

/// The known models a key's globs allow, as names.
fn candidates<'a>(
    spec: &'a config::KeySpec,
    known: &'a [Arc<str>],
) -> impl Iterator<Item = &'a str> + 'a {
    known
        .iter()
        .map(|m| &**m)
        .filter(move |m| spec.models.as_ref().is_none_or(|g| g.matches(m)))
}

/// A read-mostly table, without a lock.
fn read<T>(l: &ArcSwap<T>) -> arc_swap::Guard<Arc<T>> {
    l.load()
}

#[cfg(test)]
mod tests;
