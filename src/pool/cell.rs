//! One key's health: whether it is disabled, and per model its failures, rest, counters and last
//! error. A `Cell` is shared by every config snapshot that holds the key and by in-flight leases.
//!
//! All state sits behind one short mutex per key; nothing here blocks, awaits or looks at a clock
//! (the caller passes `Now`). It knows nothing about other keys: project-wide effects and the
//! choice between keys belong to the view in `mod.rs`.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use super::{ModelStatus, Now, Outcome};

/// Per key, at most this many models are tracked. Model names can come from clients, so junk
/// names must not grow a key's state without bound; past the cap, clean entries are recycled.
const MAX_MODELS_PER_KEY: usize = 64;

/// Locks a std mutex, taking the data even if a panicking thread poisoned it: every update here
/// leaves the state consistent field by field, so a poisoned lock must not take the proxy down.
pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The settings of one snapshot that decide how outcomes act on a cell.
#[derive(Debug, Clone, Copy)]
pub(super) struct Policy {
    pub failure_threshold: u32,
    pub cooldown: Duration,
}

#[derive(Debug)]
pub(crate) struct Cell {
    state: Mutex<KeyState>,
}

#[derive(Debug, Default)]
struct KeyState {
    /// Why the key is dead for every model (`KeyInvalid`), until reload or reset.
    disabled: Option<String>,
    last_used: Option<SystemTime>,
    models: Vec<ModelState>,
}

#[derive(Debug)]
struct ModelState {
    model: Arc<str>,
    consecutive_failures: u32,
    rest: Option<Rest>,
    /// `limit: 0`: this key's project has no quota for the model at all.
    no_quota: bool,
    last_error: Option<String>,
    daily_requests: u64,
    last_used: Option<Instant>,
    successes: u64,
    errors: u64,
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
    Resting { until: Instant, daily: bool },
}

impl ModelState {
    fn new(model: Arc<str>) -> Self {
        ModelState {
            model,
            consecutive_failures: 0,
            rest: None,
            no_quota: false,
            last_error: None,
            daily_requests: 0,
            last_used: None,
            successes: 0,
            errors: 0,
        }
    }

    /// Nothing worth keeping: may be recycled when the per-key cap is reached.
    fn is_clean(&self) -> bool {
        self.consecutive_failures == 0 && self.rest.is_none() && !self.no_quota
    }

    fn skip(&self, now: &Now) -> Option<Skip> {
        if self.no_quota {
            return Some(Skip::NoQuota);
        }
        match self.rest {
            Some(r) if r.until > now.instant => Some(Skip::Resting {
                until: r.until,
                daily: r.daily,
            }),
            _ => None,
        }
    }

    fn clear(&mut self) {
        self.consecutive_failures = 0;
        self.rest = None;
        self.no_quota = false;
    }
}

impl KeyState {
    fn model(&self, model: &str) -> Option<&ModelState> {
        self.models.iter().find(|m| &*m.model == model)
    }

    fn model_mut(&mut self, model: &str) -> &mut ModelState {
        if let Some(i) = self.models.iter().position(|m| &*m.model == model) {
            return &mut self.models[i];
        }
        if self.models.len() >= MAX_MODELS_PER_KEY {
            let oldest_clean = self
                .models
                .iter()
                .enumerate()
                .filter(|(_, m)| m.is_clean())
                .min_by_key(|(_, m)| m.last_used)
                .map(|(i, _)| i);
            if let Some(i) = oldest_clean {
                self.models.swap_remove(i);
            }
        }
        self.models.push(ModelState::new(Arc::from(model)));
        let last = self.models.len() - 1;
        &mut self.models[last]
    }

    fn skip(&self, model: &str, now: &Now) -> Option<Skip> {
        if self.disabled.is_some() {
            return Some(Skip::Disabled);
        }
        self.model(model).and_then(|m| m.skip(now))
    }
}

impl Cell {
    pub fn new() -> Self {
        Cell {
            state: Mutex::new(KeyState::default()),
        }
    }

    /// Whether the key could serve `model` now, without taking it.
    pub fn check(&self, model: &str, now: &Now) -> Result<(), Skip> {
        match lock(&self.state).skip(model, now) {
            Some(skip) => Err(skip),
            None => Ok(()),
        }
    }

    /// Takes the key for one request to `model` if it can serve it, counting the request.
    pub fn try_lease(&self, model: &str, now: &Now) -> Result<(), Skip> {
        let mut st = lock(&self.state);
        if let Some(skip) = st.skip(model, now) {
            return Err(skip);
        }
        st.last_used = Some(now.wall);
        let m = st.model_mut(model);
        m.rest = None;
        m.daily_requests += 1;
        m.last_used = Some(now.instant);
        Ok(())
    }

    /// Applies `outcome` for `model`.
    pub fn report(&self, model: &str, outcome: &Outcome, now: &Now, policy: Policy) {
        let mut st = lock(&self.state);
        match outcome {
            Outcome::Success => {
                let m = st.model_mut(model);
                m.consecutive_failures = 0;
                m.successes += 1;
            }
            // Neither says anything about this key: the model is busy, or the request was bad.
            Outcome::Overloaded | Outcome::ClientError => {}
            Outcome::KeyInvalid { reason } => {
                st.disabled = Some(reason.clone());
                let m = st.model_mut(model);
                m.errors += 1;
                m.last_error = Some(format!("{}: {reason}", outcome.class()));
            }
            Outcome::Transient { reason } => {
                let m = st.model_mut(model);
                m.errors += 1;
                m.last_error = Some(format!("{}: {reason}", outcome.class()));
                m.consecutive_failures += 1;
                if m.consecutive_failures >= policy.failure_threshold.max(1) {
                    m.consecutive_failures = 0;
                    m.rest = Some(Rest {
                        until: now.instant + policy.cooldown,
                        daily: false,
                    });
                }
            }
            Outcome::RateLimited { retry_after } => {
                let until = now.instant + retry_after.unwrap_or(policy.cooldown);
                st.model_mut(model).quota_hit(outcome, Some((until, false)));
            }
            Outcome::QuotaDaily => {
                // Phase 1: the quota day is not known yet, so a per-day 429 rests `cooldown`.
                let until = now.instant + policy.cooldown;
                st.model_mut(model).quota_hit(outcome, Some((until, true)));
            }
            Outcome::NoQuota => {
                let m = st.model_mut(model);
                m.quota_hit(outcome, None);
                m.no_quota = true;
            }
        }
    }

    /// Clears disabled (when `model` is `None`) and the model states matching `model`.
    pub fn reset(&self, model: Option<&str>) {
        let mut st = lock(&self.state);
        if model.is_none() {
            st.disabled = None;
        }
        for m in st.models.iter_mut() {
            if model.is_none_or(|want| &*m.model == want) {
                m.clear();
            }
        }
    }

    /// What a reload forgives: `disabled` and `limit: 0` last "until reload or admin reset"
    /// (SPEC §6); rests and counters carry on.
    pub fn revive(&self) {
        let mut st = lock(&self.state);
        st.disabled = None;
        for m in st.models.iter_mut() {
            m.no_quota = false;
        }
    }

    /// The key's state for `/status`; `available` means not disabled and usable for some tracked
    /// model (a key that has served nothing yet counts as available).
    pub fn status(&self, now: &Now) -> CellStatus {
        let st = lock(&self.state);
        let models = st
            .models
            .iter()
            .map(|m| {
                let skip = if st.disabled.is_some() {
                    Some(Skip::Disabled)
                } else {
                    m.skip(now)
                };
                ModelStatus {
                    model: m.model.to_string(),
                    state: match skip {
                        None => "ok",
                        Some(Skip::Disabled) => "disabled",
                        Some(Skip::NoQuota) | Some(Skip::Resting { daily: true, .. }) => {
                            "exhausted"
                        }
                        Some(Skip::Resting { daily: false, .. }) => "cooling",
                    },
                    consecutive_failures: m.consecutive_failures,
                    cooldown_remaining: match skip {
                        Some(Skip::Resting { until, .. }) => {
                            Some(until.saturating_duration_since(now.instant))
                        }
                        _ => None,
                    },
                    daily_requests: m.daily_requests,
                    last_error: m.last_error.clone(),
                }
            })
            .collect::<Vec<_>>();
        CellStatus {
            available: st.disabled.is_none()
                && (models.is_empty() || models.iter().any(|m| m.state == "ok")),
            failure_count: st.models.iter().map(|m| m.consecutive_failures).sum(),
            disabled: st.disabled.clone(),
            last_used: st.last_used,
            models,
        }
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
    fn quota_hit(&mut self, outcome: &Outcome, rest: Option<(Instant, bool)>) {
        self.errors += 1;
        self.last_error = Some(outcome.class().to_string());
        if let Some((until, daily)) = rest {
            // A later, shorter delay must not cut short a longer rest already in force.
            let keep = matches!(self.rest, Some(r) if r.until >= until);
            if !keep {
                self.rest = Some(Rest { until, daily });
            }
        }
    }
}
