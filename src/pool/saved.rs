//! The pool's learned state as plain values, for a state store (`crate::store`) to keep across
//! restarts: `KeyPool::export` reads every cell (one short lock each, never on the hot path:
//! a background task calls it), `KeyPool::import` merges saved values back into the cells of
//! the keys that are configured. Times are wall-clock (`SystemTime`), since an `Instant` means
//! nothing to another process; keys are `ApiKey`s here and become fingerprints in the store.

use std::sync::Arc;
use std::time::SystemTime;

use super::cell::{lock, At};
use super::{KeyCell, KeyPool, Now};
use crate::quota_day::QuotaDay;
use crate::secret::ApiKey;
use crate::usage::Tokens;

/// One key's saved state.
#[derive(Debug, Clone, PartialEq)]
pub struct SavedKey {
    pub key: ApiKey,
    /// Why Google rejected the key (`KeyInvalid`), if it did.
    pub disabled: Option<String>,
    pub models: Vec<SavedModel>,
}

/// One (key, model)'s saved state.
#[derive(Debug, Clone, PartialEq)]
pub struct SavedModel {
    pub model: String,
    pub consecutive_failures: u32,
    /// A rest still running when saved.
    pub rest: Option<SavedRest>,
    /// The quota day the counts are for (`None`: no counts).
    pub day: Option<QuotaDay>,
    pub daily_requests: u64,
    pub tokens: Tokens,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SavedRest {
    /// When the rest ends, on the wall clock.
    pub until: SystemTime,
    /// A day-out (per-day 429): lasts until the quota day ends.
    pub daily: bool,
}

impl KeyPool {
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

    fn cells(&self) -> Vec<(ApiKey, Arc<KeyCell>)> {
        lock(&self.shared.cells)
            .iter()
            .map(|(k, c)| (k.clone(), c.clone()))
            .collect()
    }

    /// Every configured key that learned something, at `now` (rests as wall-clock ends, counts
    /// of the current quota day only).
    pub fn export(&self, now: Now) -> Vec<SavedKey> {
        let at = self.at(now);
        let mut out: Vec<SavedKey> = self
            .cells()
            .into_iter()
            .filter_map(|(key, cell)| {
                let (disabled, models) = cell.export(&at)?;
                Some(SavedKey {
                    key,
                    disabled,
                    models,
                })
            })
            .collect();
        // Stable output, so an unchanged pool writes the same bytes.
        out.sort_by(|a, b| a.key.expose().cmp(b.key.expose()));
        out
    }

    /// The keys that changed since the last drain (see `KeyCell::drain`), for a shared store:
    /// their counts are the increments since then, not today's totals. Never on the hot path:
    /// the store's sync task calls it a few times a second; a quiet key costs an atomic swap.
    pub fn drain(&self, now: Now) -> Vec<SavedKey> {
        let at = self.at(now);
        let dirty: Vec<(ApiKey, Arc<KeyCell>)> = lock(&self.shared.cells)
            .iter()
            .filter(|(_, c)| c.is_dirty())
            .map(|(k, c)| (k.clone(), c.clone()))
            .collect();
        dirty
            .into_iter()
            .filter_map(|(key, cell)| {
                let (disabled, models) = cell.drain(&at)?;
                Some(SavedKey {
                    key,
                    disabled,
                    models,
                })
            })
            .collect()
    }

    /// The keys of the last bound config.
    pub fn keys(&self) -> Vec<ApiKey> {
        lock(&self.shared.cells).keys().cloned().collect()
    }

    /// Clears what an admin reset on another replica cleared (`reset` by key): the whole key
    /// when `model` is `None`. Returns whether the key is configured here.
    pub fn reset_key(&self, key: &ApiKey, model: Option<&str>) -> bool {
        let cell = lock(&self.shared.cells).get(key).cloned();
        match cell {
            Some(cell) => {
                cell.reset(model);
                true
            }
            None => false,
        }
    }

    /// Merges saved state into the cells of keys in the last bound config (others are
    /// ignored). A rest in force is never shortened and a count never lowered; rests already
    /// over and counts of another quota day are dropped.
    pub fn import(&self, saved: &[SavedKey], now: Now) {
        let at = self.at(now);
        let cells = lock(&self.shared.cells);
        let found: Vec<(Arc<KeyCell>, &SavedKey)> = saved
            .iter()
            .filter_map(|s| cells.get(&s.key).map(|c| (c.clone(), s)))
            .collect();
        drop(cells);
        for (cell, s) in found {
            cell.import(s.disabled.as_deref(), &s.models, &at);
        }
    }
}
