//! The key pool: which key serves the next request for a model, and what an upstream outcome
//! does to a key's health.
//!
//! Health is kept per (key, model) in cells keyed by the key itself, so it outlives config
//! reloads: `KeyPool::bind` builds the per-snapshot view (`PoolView`) from a config, reusing the
//! cells of keys that stay. The pool never sees an HTTP status: it acts on `Outcome` alone,
//! which `classify` produces. Time is an input (`now`), so tests drive it directly. Locks are
//! short and never held across an `.await`. (Interface; the implementation is in progress.)

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config;
use crate::secret::ApiKey;

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
        }
    }
}

/// Health cells by key identity. Lives in the app state, outside any config snapshot.
#[derive(Default)]
pub struct KeyPool {}

impl KeyPool {
    pub fn new() -> Self {
        KeyPool {}
    }

    /// The view of the pool for one config snapshot.
    pub fn bind(&self, _cfg: &config::Pool) -> PoolView {
        PoolView {}
    }
}

/// The keys of one config snapshot, each with its shared health cell.
pub struct PoolView {}

/// A key chosen for one attempt. Hand it back to `report` with the outcome.
#[derive(Debug, Clone)]
pub struct Lease {
    /// Position of the key in the snapshot (stable for the snapshot's life).
    pub index: usize,
    pub key: ApiKey,
    /// The upstream model this lease is for.
    pub model: Arc<str>,
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

#[derive(Debug, Clone)]
pub struct ModelStatus {
    pub model: String,
    /// "ok" | "cooling" | "disabled" | "exhausted"
    pub state: &'static str,
    pub consecutive_failures: u32,
    /// Remaining rest, if resting.
    pub cooldown_remaining: Option<Duration>,
    pub daily_requests: u64,
    pub last_error: Option<String>,
}

impl PoolView {
    pub fn len(&self) -> usize {
        0
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn max_attempts(&self) -> u32 {
        1
    }

    /// Picks the next key for `model`, skipping keys in `exclude` (indices already tried for
    /// this request), keys not allowed for the model, disabled keys and resting keys.
    pub fn pick(&self, _model: &str, _now: Instant, _exclude: &[usize]) -> Result<Lease, NoKey> {
        Err(NoKey {
            retry_after: None,
            all_daily: false,
            all_disabled: false,
            none_allowed: true,
        })
    }

    /// Picks any key that is not disabled, for calls about no particular model (model lists).
    pub fn pick_any(&self, _now: Instant, _exclude: &[usize]) -> Result<Lease, NoKey> {
        Err(NoKey {
            retry_after: None,
            all_daily: false,
            all_disabled: true,
            none_allowed: false,
        })
    }

    /// Applies an upstream outcome to the leased key.
    pub fn report(&self, _lease: &Lease, _outcome: &Outcome, _now: Instant) {}

    /// Keys usable for at least one model right now (for `/health`).
    pub fn available_count(&self, _now: Instant) -> usize {
        0
    }

    pub fn status(&self, _now: Instant) -> Vec<KeyStatus> {
        Vec::new()
    }
}
