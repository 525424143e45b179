//! One key's health: whether it is disabled, and per model its failures, rest, counters and last
//! error. A `KeyCell` is shared by every config snapshot that holds the key and by in-flight leases.
//!
//! All state sits behind one short mutex per key; nothing here blocks, awaits or looks at a clock
//! (the caller passes `Now`). It knows nothing about other keys: project-wide effects and the
//! choice between keys belong to the view in `mod.rs`.
//!
//! Model names can come from clients, so a model gets an entry only when the caller says it is
//! tracked (known to be real, see `known.rs`): untracked requests are checked against what is
//! there and change nothing. At most `MAX_MODELS_PER_KEY` entries; an entry holding today's
//! counts (or a rest, failures, `limit: 0`) is never recycled: when every entry holds something,
//! further models share one overflow entry, so their counts and rests are shared, not lost.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use super::{ModelStatus, Outcome};
use crate::quota_day::QuotaDay;
use crate::usage::Tokens;

/// Per key, at most this many models have an entry of their own; past the cap, an entry with
/// nothing worth keeping is recycled, else the model shares the overflow entry.
const MAX_MODELS_PER_KEY: usize = 64;

/// How the overflow entry shows in `/status` and metrics.
pub(super) const OVERFLOW: &str = "(other models)";

/// Whether a report may give its model an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Track {
    /// The lease was counted: the model has (or may have) an entry.
    Yes,
    /// Google just confirmed a model the lease did not count: count the request now.
    Late,
    /// An unconfirmed name: only key-wide effects (`disabled`) apply.
    No,
}

/// Locks a std mutex, taking the data even if a panicking thread poisoned it: every update here
/// leaves the state consistent field by field, so a poisoned lock must not take the proxy down.
pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A key that ends a rest gets one request (a probe) before full traffic. A probe whose lease
/// is never reported (the client left and nobody called `abandon`) stops blocking after this.
const PROBE_TIMEOUT: Duration = Duration::from_secs(60);

/// One moment as the cells need it: the monotonic instant for rests, the wall clock for
/// `last_used`, and the quota day with the instant at which it ends.
#[derive(Debug, Clone, Copy)]
pub(super) struct At {
    pub instant: Instant,
    pub wall: SystemTime,
    /// `None` only for wall clocks outside the calendar; daily logic then falls back to
    /// `cooldown` and counters never roll over.
    pub day: Option<(QuotaDay, Instant)>,
}

impl At {
    fn today(&self) -> Option<QuotaDay> {
        self.day.map(|(d, _)| d)
    }
}

/// The settings of one snapshot that decide how outcomes act on a cell.
#[derive(Debug, Clone, Copy)]
pub(super) struct Policy {
    pub failure_threshold: u32,
    pub cooldown: Duration,
}

#[derive(Debug)]
pub(crate) struct KeyCell {
    state: Mutex<KeyState>,
    /// Something a shared store should hear about changed since the last `drain`: one atomic
    /// store per change, so a store that scans for changes skips quiet keys without a lock.
    dirty: AtomicBool,
}

#[derive(Debug, Default)]
struct KeyState {
    /// Why the key is dead for every model (`KeyInvalid`), until reload or reset.
    disabled: Option<String>,
    last_used: Option<SystemTime>,
    models: Vec<ModelState>,
    /// Shared by models that found the table full of entries worth keeping.
    overflow: Option<ModelState>,
}

#[derive(Debug)]
struct ModelState {
    model: Arc<str>,
    consecutive_failures: u32,
    rest: Option<Rest>,
    /// `limit: 0`: this key's project has no quota for the model at all.
    no_quota: bool,
    last_error: Option<String>,
    /// The quota day `daily_requests` counts for.
    day: Option<QuotaDay>,
    daily_requests: u64,
    /// Tokens Gemini reported for the quota day `day` (see `usage::Tokens`).
    daily_tokens: Tokens,
    last_used: Option<Instant>,
    successes: u64,
    errors: u64,
    /// Set by a rest; cleared by the first success after it.
    probe_pending: bool,
    /// When the probe in flight was leased.
    probe_since: Option<Instant>,
    /// Counted since the last `drain` (for the quota day `day`): what a shared store adds to
    /// the fleet's totals.
    unsynced_requests: u64,
    unsynced_tokens: Tokens,
    /// Changed since the last `drain`.
    changed: bool,
}

#[derive(Debug, Clone, Copy)]
struct Rest {
    until: Instant,
    daily: bool,
}

/// Why a key cannot serve a model right now.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Skip {
    Disabled,
    NoQuota,
    /// `daily` rests last until the quota day ends (per-day 429, `daily_limit` reached).
    Resting {
        until: Instant,
        daily: bool,
    },
    /// Back from a rest, with its one probe request still in flight.
    Probing,
}

/// What `least_used` compares: requests today, then least recently used (never used first).
pub(super) type Usage = (u64, Option<Instant>);

impl ModelState {
    fn new(model: Arc<str>) -> Self {
        ModelState {
            model,
            consecutive_failures: 0,
            rest: None,
            no_quota: false,
            last_error: None,
            day: None,
            daily_requests: 0,
            daily_tokens: Tokens::default(),
            last_used: None,
            successes: 0,
            errors: 0,
            probe_pending: false,
            probe_since: None,
            unsynced_requests: 0,
            unsynced_tokens: Tokens::default(),
            changed: false,
        }
    }

    fn requests_today(&self, at: &At) -> u64 {
        if self.counts_today(at) {
            self.daily_requests
        } else {
            0
        }
    }

    fn tokens_today(&self, at: &At) -> Tokens {
        if self.counts_today(at) {
            self.daily_tokens
        } else {
            Tokens::default()
        }
    }

    fn counts_today(&self, at: &At) -> bool {
        self.day.is_some() && self.day == at.today()
    }

    /// Starts the daily counters over when the quota day changed since they last counted.
    fn roll_day(&mut self, at: &At) {
        if self.day != at.today() {
            self.day = at.today();
            self.daily_requests = 0;
            self.daily_tokens = Tokens::default();
            self.unsynced_requests = 0;
            self.unsynced_tokens = Tokens::default();
        }
    }

    /// Nothing worth keeping: no rest, failures, `limit: 0` or counts for today. May be recycled
    /// when the per-key cap is reached (a recycled entry's daily count would start over).
    fn is_recyclable(&self, at: &At) -> bool {
        self.consecutive_failures == 0
            && self.rest.is_none()
            && !self.no_quota
            && self.requests_today(at) == 0
            && self.tokens_today(at) == Tokens::default()
    }

    fn counts_request(&mut self, at: &At) {
        self.counts(at, false);
    }

    /// `fleet`: a shared store counts this request itself (`KeyPool::claim`), so it is not
    /// one to send.
    fn counts(&mut self, at: &At, fleet: bool) {
        self.roll_day(at);
        self.daily_requests += 1;
        if !fleet {
            self.unsynced_requests += 1;
        }
        self.changed = true;
        self.last_used = Some(at.instant);
    }

    fn skip(&self, at: &At, daily_limit: Option<u64>) -> Option<Skip> {
        if self.no_quota {
            return Some(Skip::NoQuota);
        }
        if let Some(r) = self.rest {
            if r.until > at.instant {
                return Some(Skip::Resting {
                    until: r.until,
                    daily: r.daily,
                });
            }
        }
        if let (Some(limit), Some((_, day_ends))) = (daily_limit, at.day) {
            if self.requests_today(at) >= limit {
                return Some(Skip::Resting {
                    until: day_ends,
                    daily: true,
                });
            }
        }
        match self.probe_since {
            Some(since) if self.probe_pending && at.instant < since + PROBE_TIMEOUT => {
                Some(Skip::Probing)
            }
            _ => None,
        }
    }

    fn rest(&mut self, until: Instant, daily: bool) {
        // A later, shorter delay must not cut short a longer rest already in force.
        if !matches!(self.rest, Some(r) if r.until >= until) {
            self.rest = Some(Rest { until, daily });
        }
        self.probe_pending = true;
        self.probe_since = None;
    }

    fn clear(&mut self) {
        self.consecutive_failures = 0;
        self.rest = None;
        self.no_quota = false;
        self.probe_pending = false;
        self.probe_since = None;
    }
}

impl KeyState {
    /// The entry that decides for `model`: its own, else the overflow (if any).
    fn model(&self, model: &str) -> Option<&ModelState> {
        self.own(model).or(self.overflow.as_ref())
    }

    fn own(&self, model: &str) -> Option<&ModelState> {
        self.models.iter().find(|m| &*m.model == model)
    }

    fn model_mut(&mut self, model: &str) -> Option<&mut ModelState> {
        match self.models.iter().position(|m| &*m.model == model) {
            Some(i) => Some(&mut self.models[i]),
            None => self.overflow.as_mut(),
        }
    }

    /// The entry for a tracked `model`, made if needed: its own, a new one (recycling one with
    /// nothing worth keeping), or the overflow when every entry holds something. While the
    /// overflow holds something, new models join it, so none leaves it mid-day with a fresh count.
    fn track(&mut self, model: &str, at: &At) -> &mut ModelState {
        if let Some(i) = self.models.iter().position(|m| &*m.model == model) {
            return &mut self.models[i];
        }
        let overflow_busy = self.overflow.as_ref().is_some_and(|o| !o.is_recyclable(at));
        if !overflow_busy {
            self.overflow = None;
            if self.models.len() >= MAX_MODELS_PER_KEY {
                let oldest = self
                    .models
                    .iter()
                    .enumerate()
                    .filter(|(_, m)| m.is_recyclable(at))
                    .min_by_key(|(_, m)| m.last_used)
                    .map(|(i, _)| i);
                if let Some(i) = oldest {
                    self.models.swap_remove(i);
                }
            }
            if self.models.len() < MAX_MODELS_PER_KEY {
                self.models.push(ModelState::new(Arc::from(model)));
                let last = self.models.len() - 1;
                return &mut self.models[last];
            }
        }
        self.overflow
            .get_or_insert_with(|| ModelState::new(Arc::from(OVERFLOW)))
    }

    fn skip(&self, model: &str, at: &At, daily_limit: Option<u64>) -> Option<Skip> {
        if self.disabled.is_some() {
            return Some(Skip::Disabled);
        }
        self.model(model).and_then(|m| m.skip(at, daily_limit))
    }
}

impl KeyCell {
    pub fn new() -> Self {
        KeyCell {
            state: Mutex::new(KeyState::default()),
            dirty: AtomicBool::new(false),
        }
    }

    /// A shared store answered a claim (`KeyPool::claim`) with the fleet's count for `model`:
    /// the local count is at least that. (A claimed request is not one to send, `counts`; a
    /// denied one was counted here at lease time and not sent, and the fleet's count, at or
    /// past the limit, covers it.)
    pub fn fleet_count(&self, model: &str, count: u64, at: &At) {
        let mut st = lock(&self.state);
        let Some(m) = st.model_mut(model) else {
            return;
        };
        m.roll_day(at);
        m.daily_requests = m.daily_requests.max(count);
    }

    /// The shared store could not count a request in time: this replica sends it later.
    pub fn fleet_count_unknown(&self, model: &str, at: &At) {
        let mut st = lock(&self.state);
        if let Some(m) = st.model_mut(model) {
            if m.counts_today(at) {
                m.unsynced_requests += 1;
                m.changed = true;
            }
        }
        drop(st);
        self.touched();
    }

    /// Changed since the last `drain`.
    pub fn is_dirty(&self) -> bool {
        self.dirty.load(Ordering::Acquire)
    }

    fn touched(&self) {
        self.dirty.store(true, Ordering::Release);
    }

    /// Whether the key could serve `model` now and how much it served today, without taking it.
    pub fn check(&self, model: &str, at: &At, daily_limit: Option<u64>) -> Result<Usage, Skip> {
        let st = lock(&self.state);
        if let Some(skip) = st.skip(model, at, daily_limit) {
            return Err(skip);
        }
        Ok(st
            .model(model)
            .map_or((0, None), |m| (m.requests_today(at), m.last_used)))
    }

    /// Takes the key for one request to `model` if it can serve it, counting the request (at
    /// lease time, so concurrent requests cannot overshoot a `daily_limit`) when the model is
    /// `known` or already has an entry of its own. Returns whether it was counted (tracked).
    pub fn try_lease(
        &self,
        model: &str,
        at: &At,
        daily_limit: Option<u64>,
        known: bool,
        fleet: bool,
    ) -> Result<bool, Skip> {
        let mut st = lock(&self.state);
        if let Some(skip) = st.skip(model, at, daily_limit) {
            return Err(skip);
        }
        st.last_used = Some(at.wall);
        if !known && st.own(model).is_none() {
            return Ok(false);
        }
        let m = st.track(model, at);
        m.rest = None;
        m.counts(at, fleet);
        if m.probe_pending {
            m.probe_since = Some(at.instant);
        }
        drop(st);
        self.touched();
        Ok(true)
    }

    /// Google answered (2xx) for a model the lease did not count: count the request now.
    pub fn count_late(&self, model: &str, at: &At) {
        lock(&self.state).track(model, at).counts_request(at);
        self.touched();
    }

    /// Applies `outcome` for `model` to the key that made the request.
    pub fn report(&self, model: &str, outcome: &Outcome, at: &At, policy: Policy, track: Track) {
        let mut st = lock(&self.state);
        match track {
            Track::Yes => {}
            Track::Late => st.track(model, at).counts_request(at),
            // A dead key, whatever the name: the model shows it (one entry at most, since a
            // disabled key is not picked again until a reload or reset). Calls about no
            // model (`""`) only disable.
            Track::No => match outcome {
                Outcome::KeyInvalid { reason } if model.is_empty() => {
                    st.disabled = Some(reason.clone());
                    drop(st);
                    self.touched();
                    return;
                }
                Outcome::KeyInvalid { .. } => {}
                _ => return,
            },
        }
        match outcome {
            Outcome::Success => {
                let m = st.track(model, at);
                if m.consecutive_failures > 0 {
                    m.changed = true;
                }
                m.consecutive_failures = 0;
                m.successes += 1;
                m.probe_pending = false;
                m.probe_since = None;
            }
            // None says anything about this key: the model is busy, the request was bad, or it
            // never reached Google. A probe ends without proof, so the next request is a probe.
            Outcome::Overloaded | Outcome::ClientError | Outcome::Network { .. } => {
                if let Some(m) = st.model_mut(model) {
                    m.probe_since = None;
                }
            }
            Outcome::KeyInvalid { reason } => {
                st.disabled = Some(reason.clone());
                let m = st.track(model, at);
                m.changed = true;
                m.errors += 1;
                m.last_error = Some(format!("{}: {reason}", outcome.class()));
            }
            Outcome::Transient { reason } => {
                let m = st.track(model, at);
                m.changed = true;
                m.errors += 1;
                m.last_error = Some(format!("{}: {reason}", outcome.class()));
                m.consecutive_failures += 1;
                m.probe_since = None;
                if m.consecutive_failures >= policy.failure_threshold.max(1) {
                    m.consecutive_failures = 0;
                    m.rest(at.instant + policy.cooldown, false);
                }
            }
            Outcome::RateLimited { .. } | Outcome::QuotaDaily | Outcome::NoQuota => {
                let m = st.track(model, at);
                m.changed = true;
                m.errors += 1;
                m.quota_hit(outcome, at, policy);
            }
            Outcome::ModelDenied { reason } => {
                let m = st.track(model, at);
                m.errors += 1;
                m.no_quota = true;
                m.last_error = Some(format!("{}: {reason}", outcome.class()));
            }
        }
        let dirty = st
            .models
            .iter()
            .chain(st.overflow.as_ref())
            .any(|m| m.changed);
        drop(st);
        if dirty {
            self.touched();
        }
    }

    /// Adds what Gemini reported a served request to a tracked `model` cost to today's counts.
    pub fn record_tokens(&self, model: &str, tokens: Tokens, at: &At) {
        let mut st = lock(&self.state);
        let m = st.track(model, at);
        m.roll_day(at);
        // Saturating: the counts come from Google's answers.
        m.daily_tokens = m.daily_tokens.plus(tokens);
        m.unsynced_tokens = m.unsynced_tokens.plus(tokens);
        m.changed = true;
        drop(st);
        self.touched();
    }

    /// A quota 429 seen by another key of the same project: Google's bucket is the project's,
    /// so this key is out just as long. Its own counters are untouched.
    pub fn project_quota_hit(&self, model: &str, outcome: &Outcome, at: &At, policy: Policy) {
        let mut st = lock(&self.state);
        let m = st.track(model, at);
        m.quota_hit(outcome, at, policy);
        m.changed = true;
        drop(st);
        self.touched();
    }

    /// The request ended without an outcome (client gone): frees a probe slot at once.
    pub fn abandon(&self, model: &str) {
        let mut st = lock(&self.state);
        if let Some(m) = st.model_mut(model) {
            m.probe_since = None;
        }
    }

    /// Clears disabled (when `model` is `None`) and the model states matching `model`. Returns
    /// whether there was anything to clear for `model` (always true for the whole key).
    pub fn reset(&self, model: Option<&str>) -> bool {
        let mut st = lock(&self.state);
        if model.is_none() {
            st.disabled = None;
        }
        let mut found = model.is_none();
        for m in st.models.iter_mut() {
            if model.is_none_or(|want| &*m.model == want) {
                m.clear();
                found = true;
            }
        }
        // A model without an entry of its own is decided by the overflow.
        if let Some(o) = st.overflow.as_mut() {
            if model.is_none() || !found {
                o.clear();
                found = true;
            }
        }
        found
    }

    /// What a reload forgives: `disabled` and `limit: 0` last "until reload or admin reset"
    /// (SPEC §6); rests and counters carry on.
    pub fn revive(&self) {
        let mut st = lock(&self.state);
        let st = &mut *st;
        st.disabled = None;
        for m in st.models.iter_mut().chain(st.overflow.as_mut()) {
            m.no_quota = false;
        }
    }

    /// Whether the key could serve at least one model now: not disabled, and an entry that is
    /// usable, or a model among `candidates` (the known models its globs allow) that has no
    /// entry of its own and is not held back by the overflow. A key that has served nothing yet
    /// counts as available. Allocates nothing.
    pub fn available<'a>(
        &self,
        at: &At,
        daily_limit: Option<u64>,
        candidates: impl Iterator<Item = &'a str>,
    ) -> bool {
        lock(&self.state).available(at, daily_limit, candidates)
    }

    /// The key's state for `/status` (its own entries, then the overflow entry if it holds
    /// anything); `available` as in [`KeyCell::available`].
    pub fn status<'a>(
        &self,
        at: &At,
        daily_limit: Option<u64>,
        candidates: impl Iterator<Item = &'a str>,
    ) -> CellStatus {
        let st = lock(&self.state);
        let overflow = st.overflow.as_ref().filter(|o| !o.is_recyclable(at));
        let models = st
            .models
            .iter()
            .chain(overflow)
            .map(|m| {
                let skip = if st.disabled.is_some() {
                    Some(Skip::Disabled)
                } else {
                    m.skip(at, daily_limit)
                };
                ModelStatus {
                    model: m.model.to_string(),
                    state: state_name(skip),
                    consecutive_failures: m.consecutive_failures,
                    cooldown_remaining: match skip {
                        Some(Skip::Resting { until, .. }) => {
                            Some(until.saturating_duration_since(at.instant))
                        }
                        _ => None,
                    },
                    daily_requests: m.requests_today(at),
                    prompt_tokens: m.tokens_today(at).prompt,
                    completion_tokens: m.tokens_today(at).completion,
                    thoughts_tokens: m.tokens_today(at).thoughts,
                    last_error: m.last_error.clone(),
                    successes: m.successes,
                    errors: m.errors,
                }
            })
            .collect::<Vec<_>>();
        CellStatus {
            available: st.available(at, daily_limit, candidates),
            failure_count: st
                .models
                .iter()
                .chain(overflow)
                .map(|m| m.consecutive_failures)
                .sum(),
            disabled: st.disabled.clone(),
            last_used: st.last_used,
            models,
        }
    }
}

impl KeyState {
    fn available<'a>(
        &self,
        at: &At,
        daily_limit: Option<u64>,
        mut candidates: impl Iterator<Item = &'a str>,
    ) -> bool {
        if self.disabled.is_some() {
            return false;
        }
        let usable = |m: &ModelState| matches!(m.skip(at, daily_limit), None | Some(Skip::Probing));
        if self.models.iter().any(usable) {
            return true;
        }
        // Every entry of its own is out; models without one are decided by the overflow.
        if self.overflow.as_ref().is_some_and(|o| !usable(o)) {
            return false;
        }
        self.models.is_empty() || candidates.any(|c| self.own(c).is_none())
    }
}

fn state_name(skip: Option<Skip>) -> &'static str {
    match skip {
        None | Some(Skip::Probing) => "ok",
        Some(Skip::Disabled) => "disabled",
        Some(Skip::NoQuota) | Some(Skip::Resting { daily: true, .. }) => "exhausted",
        Some(Skip::Resting { daily: false, .. }) => "cooling",
    }
}

/// Why a key would not serve a model now, in the detail `/explain` shows.
#[derive(Debug, Clone, PartialEq)]
pub enum Why {
    /// Disabled for every model (Google rejected the key) until reload or admin reset.
    Disabled { reason: String },
    /// `limit: 0`: no quota for this model at all, until reload or admin reset.
    NoQuota { last_error: Option<String> },
    /// Resting after a per-minute 429 or `failure_threshold` failures.
    Cooling {
        left: Duration,
        last_error: Option<String>,
    },
    /// A per-day 429 (its own or its project's): out until the quota day ends.
    OutForDay {
        left: Duration,
        last_error: Option<String>,
    },
    /// `daily_limit` requests made today for this model.
    DailyLimit { limit: u64, left: Duration },
    /// Back from a rest, with its one probe request still in flight.
    Probing,
}

impl KeyCell {
    /// Like `check`, with the reason spelled out; changes nothing.
    pub fn why(&self, model: &str, at: &At, daily_limit: Option<u64>) -> (Result<Usage, Why>, u64) {
        let st = lock(&self.state);
        let m = st.model(model);
        let today = m.map_or(0, |m| m.requests_today(at));
        let last_error = || m.and_then(|m| m.last_error.clone());
        if let Some(reason) = &st.disabled {
            let reason = reason.clone();
            return (Err(Why::Disabled { reason }), today);
        }
        let Some(m) = m else {
            return (Ok((0, None)), 0);
        };
        let why = match m.skip(at, daily_limit) {
            None => return (Ok((today, m.last_used)), today),
            Some(Skip::Disabled) => Why::Disabled {
                reason: String::new(),
            },
            Some(Skip::NoQuota) => Why::NoQuota {
                last_error: last_error(),
            },
            Some(Skip::Probing) => Why::Probing,
            Some(Skip::Resting { until, daily }) => {
                let left = until.saturating_duration_since(at.instant);
                let rested = m.rest.is_some_and(|r| r.until > at.instant);
                match (rested, daily) {
                    (true, true) => Why::OutForDay {
                        left,
                        last_error: last_error(),
                    },
                    (true, false) => Why::Cooling {
                        left,
                        last_error: last_error(),
                    },
                    (false, _) => Why::DailyLimit {
                        limit: daily_limit.unwrap_or(0),
                        left,
                    },
                }
            }
        };
        (Err(why), today)
    }
}

pub(super) struct CellStatus {
    pub available: bool,
    pub failure_count: u32,
    pub disabled: Option<String>,
    pub last_used: Option<SystemTime>,
    pub models: Vec<ModelStatus>,
}

impl ModelState {
    fn quota_hit(&mut self, outcome: &Outcome, at: &At, policy: Policy) {
        self.last_error = Some(outcome.class().to_string());
        match outcome {
            Outcome::RateLimited { retry_after } => {
                self.rest(at.instant + retry_after.unwrap_or(policy.cooldown), false);
            }
            Outcome::QuotaDaily => match at.day {
                Some((_, day_ends)) => self.rest(day_ends, true),
                None => self.rest(at.instant + policy.cooldown, true),
            },
            Outcome::NoQuota => self.no_quota = true,
            _ => {}
        }
    }
}

impl KeyCell {
    /// What this key learned that is worth keeping across a restart (`saved.rs`): disabled,
    /// and per model (own entries only) failures, a rest still running (as a wall-clock end)
    /// and today's counts. `None` when there is nothing.
    pub fn export(&self, at: &At) -> Option<(Option<String>, Vec<super::SavedModel>)> {
        let st = lock(&self.state);
        let models: Vec<super::SavedModel> = st
            .models
            .iter()
            .filter_map(|m| {
                let rest = m
                    .rest
                    .filter(|r| r.until > at.instant)
                    .map(|r| super::SavedRest {
                        until: at.wall + r.until.saturating_duration_since(at.instant),
                        daily: r.daily,
                    });
                let today = m.counts_today(at);
                if rest.is_none() && m.consecutive_failures == 0 && !today {
                    return None;
                }
                Some(super::SavedModel {
                    model: m.model.to_string(),
                    consecutive_failures: m.consecutive_failures,
                    rest,
                    day: if today { m.day } else { None },
                    daily_requests: m.requests_today(at),
                    tokens: m.tokens_today(at),
                })
            })
            .collect();
        if st.disabled.is_none() && models.is_empty() {
            return None;
        }
        Some((st.disabled.clone(), models))
    }

    /// Merges what was saved into this cell: never shortens a rest in force, never lowers a
    /// count. Rests already over and counts of another quota day are dropped.
    pub fn import(&self, disabled: Option<&str>, models: &[super::SavedModel], at: &At) {
        let mut st = lock(&self.state);
        if st.disabled.is_none() {
            st.disabled = disabled.map(str::to_string);
        }
        for saved in models {
            let today = saved.day.is_some() && saved.day == at.today();
            let left = saved
                .rest
                .and_then(|r| {
                    r.until
                        .duration_since(at.wall)
                        .ok()
                        .map(|left| (left, r.daily))
                })
                .filter(|(left, _)| !left.is_zero());
            if !today && left.is_none() && saved.consecutive_failures == 0 {
                continue;
            }
            let m = st.track(&saved.model, at);
            if today {
                m.roll_day(at);
                m.daily_requests = m.daily_requests.max(saved.daily_requests);
                m.daily_tokens = m.daily_tokens.max(saved.tokens);
            }
            m.consecutive_failures = m.consecutive_failures.max(saved.consecutive_failures);
            if let Some((left, daily)) = left {
                m.rest(at.instant + left, daily);
            }
        }
    }

    /// What changed since the last drain, for a shared store (`None`: nothing, or no change
    /// since): disabled, and per changed model its failures, the rest in force (wall-clock
    /// end) and the requests and tokens counted since the last drain (not today's totals).
    /// Clears the change marks and the unsynced counts. One short lock; quiet keys (no
    /// change) cost one atomic swap.
    pub fn drain(&self, at: &At) -> Option<(Option<String>, Vec<super::SavedModel>)> {
        if !self.dirty.swap(false, Ordering::AcqRel) {
            return None;
        }
        let mut st = lock(&self.state);
        let today = at.today();
        let mut models = Vec::new();
        for m in st.models.iter_mut().filter(|m| m.changed) {
            m.changed = false;
            let counted = m.day.is_some() && m.day == today;
            let rest = m
                .rest
                .filter(|r| r.until > at.instant)
                .map(|r| super::SavedRest {
                    until: at.wall + r.until.saturating_duration_since(at.instant),
                    daily: r.daily,
                });
            models.push(super::SavedModel {
                model: m.model.to_string(),
                consecutive_failures: m.consecutive_failures,
                rest,
                day: if counted { m.day } else { None },
                daily_requests: if counted { m.unsynced_requests } else { 0 },
                tokens: if counted {
                    m.unsynced_tokens
                } else {
                    Tokens::default()
                },
            });
            m.unsynced_requests = 0;
            m.unsynced_tokens = Tokens::default();
        }
        // The overflow entry is shared by many names: it stays this replica's own.
        if let Some(o) = st.overflow.as_mut() {
            o.changed = false;
            o.unsynced_requests = 0;
            o.unsynced_tokens = Tokens::default();
        }
        if st.disabled.is_none() && models.is_empty() {
            return None;
        }
        Some((st.disabled.clone(), models))
    }
}
