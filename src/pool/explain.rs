//! `/explain`'s answer: which key would serve a model next and, for every other key, why not.
//!
//! It reads the same cells and follows the same order a pick would (the round-robin cursor, or
//! fewest requests today), but takes no lease, moves no cursor and changes no state, so asking
//! never changes the answer. `peek` is the same read-only look for a request's final answer.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::cell::{Skip, Why};
use super::{NoKey, Now, PoolView, Tally};
use crate::config;

/// The pool's view of one model right now.
#[derive(Debug, Clone)]
pub struct Explanation {
    pub model: String,
    pub strategy: config::Strategy,
    /// Index of the key the next request would get; `None` when no key can serve.
    pub next: Option<usize>,
    /// Why nothing can serve (what a request would be told), when `next` is `None`.
    pub no_key: Option<NoKey>,
    /// Every key of the pool, in config order.
    pub keys: Vec<KeyVerdict>,
}

#[derive(Debug, Clone)]
pub struct KeyVerdict {
    pub index: usize,
    pub masked: String,
    pub name: Option<String>,
    pub project: Option<String>,
    /// Requests leased today for this model.
    pub daily_requests: u64,
    pub verdict: Verdict,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Serves the next request.
    Next,
    /// Usable; others come first in the rotation.
    Ready,
    /// Its `models` globs do not match the model.
    NotAllowed,
    /// Why it cannot serve now.
    Out(Why),
}

impl Verdict {
    /// A short, stable name for the verdict.
    pub fn state(&self) -> &'static str {
        match self {
            Verdict::Next => "next",
            Verdict::Ready => "ready",
            Verdict::NotAllowed => "not_allowed",
            Verdict::Out(Why::Disabled { .. }) => "disabled",
            Verdict::Out(Why::NoQuota { .. }) => "no_quota",
            Verdict::Out(Why::Cooling { .. }) => "cooling",
            Verdict::Out(Why::OutForDay { .. }) => "out_for_day",
            Verdict::Out(Why::DailyLimit { .. }) => "daily_limit",
            Verdict::Out(Why::Probing) => "probing",
        }
    }

    /// How long until the key is back by itself, if it will be.
    pub fn left(&self) -> Option<Duration> {
        match self {
            Verdict::Out(
                Why::Cooling { left, .. }
                | Why::OutForDay { left, .. }
                | Why::DailyLimit { left, .. },
            ) => Some(*left),
            _ => None,
        }
    }
}

impl PoolView {
    /// Explains who would serve `model` now. Changes nothing.
    pub fn explain_at(&self, model: &str, now: Now) -> Explanation {
        let at = self.at(now);
        let route = self.route(model);
        let mut tally = Tally {
            allowed: route.allowed.len(),
            ..Tally::default()
        };
        let mut keys: Vec<KeyVerdict> = self
            .slots
            .iter()
            .enumerate()
            .map(|(index, slot)| KeyVerdict {
                index,
                masked: slot.spec.key.masked().to_string(),
                name: slot.spec.name.clone(),
                project: slot.spec.project.clone(),
                daily_requests: 0,
                verdict: Verdict::NotAllowed,
            })
            .collect();
        // What each allowed key could do, then the one a pick would take among the usable.
        let mut usage: Vec<Option<super::cell::Usage>> = vec![None; self.slots.len()];
        for &index in route.allowed.iter() {
            let slot = &self.slots[index];
            let (verdict, today) = slot.cell.why(model, &at, slot.spec.daily_limit);
            keys[index].daily_requests = today;
            keys[index].verdict = match verdict {
                Ok(u) => {
                    usage[index] = Some(u);
                    Verdict::Ready
                }
                Err(why) => {
                    tally.add(skip_of(&why, at.instant));
                    Verdict::Out(why)
                }
            };
        }
        let n = route.allowed.len();
        let next = match self.strategy {
            config::Strategy::RoundRobin => {
                let start = route.cursor.load(Ordering::Relaxed);
                (0..n)
                    .map(|step| route.allowed[start.wrapping_add(step) % n])
                    .find(|&i| usage[i].is_some())
            }
            // The first of equals wins, as in `least_used`, which scans in config order.
            config::Strategy::LeastUsed => {
                let mut best: Option<(super::cell::Usage, usize)> = None;
                for &i in route.allowed.iter() {
                    if let Some(u) = usage[i] {
                        if best.as_ref().is_none_or(|(b, _)| u < *b) {
                            best = Some((u, i));
                        }
                    }
                }
                best.map(|(_, i)| i)
            }
        };
        if let Some(i) = next {
            keys[i].verdict = Verdict::Next;
        }
        Explanation {
            model: model.to_string(),
            strategy: self.strategy,
            next,
            no_key: next.is_none().then(|| tally.no_key(at.instant)),
            keys,
        }
    }
}

/// The pick-time skip a verdict stands for, so `NoKey` is computed as a pick would.
fn skip_of(why: &Why, now: Instant) -> Skip {
    match why {
        Why::Disabled { .. } => Skip::Disabled,
        Why::NoQuota { .. } => Skip::NoQuota,
        Why::Probing => Skip::Probing,
        Why::Cooling { left, .. } => Skip::Resting {
            until: now + *left,
            daily: false,
        },
        Why::OutForDay { left, .. } | Why::DailyLimit { left, .. } => Skip::Resting {
            until: now + *left,
            daily: true,
        },
    }
}

impl PoolView {
    /// Whether a fresh pick for `model` would find a key now, and if not why (`NoKey`), as
    /// `pick` would say it, but read-only: no lease, no request counted against `daily_limit`,
    /// no probe started, no cursor moved. For answers computed after the attempts (Retry-After).
    pub fn peek(&self, model: &str, now: Now) -> Result<(), NoKey> {
        let at = self.at(now);
        let route = self.route(model);
        let mut tally = Tally {
            allowed: route.allowed.len(),
            ..Tally::default()
        };
        for &index in route.allowed.iter() {
            let slot = &self.slots[index];
            match slot.cell.check(model, &at, slot.spec.daily_limit) {
                Ok(_) => return Ok(()),
                Err(skip) => tally.add(skip),
            }
        }
        Err(tally.no_key(at.instant))
    }
}
