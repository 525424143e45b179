//! Traffic over the last hour, per minute: how many client requests finished and how many of
//! them failed. A fixed ring of 60 buckets keyed by wall-clock minute, one ring per worker
//! (`shard`: a worker locks only its own, for a few additions, never across an `.await`;
//! readers add the rings up). Recorded from the request log line,
//! the one place every request finishes; read by the dashboard. Lives on `App`, so reloads
//! keep it.
//!
//! Only traffic counts: the operator's own routes (probes, `/status`, `/metrics`, the dashboard
//! and its polling, admin actions) would otherwise drown the picture.

use std::sync::{Mutex, PoisonError};

use crate::shard::Shards;
use std::time::{SystemTime, UNIX_EPOCH};

/// Minutes kept.
pub const MINUTES: usize = 60;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Bucket {
    /// Minutes since the Unix epoch this bucket counts; 0 for a bucket never used.
    minute: u64,
    requests: u64,
    errors: u64,
}

/// One minute of traffic, for readers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Minute {
    /// The minute's start, in seconds since the Unix epoch.
    pub start: u64,
    pub requests: u64,
    /// Responses with a status of 400 or more.
    pub errors: u64,
}

#[derive(Debug)]
pub struct Timeline {
    rings: Shards<Mutex<[Bucket; MINUTES]>>,
}

impl Default for Timeline {
    fn default() -> Self {
        Timeline {
            rings: Shards::new(|| Mutex::new([Bucket::default(); MINUTES])),
        }
    }
}

fn minute_of(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() / 60)
}

/// Whether a route's requests count as traffic (route names from `Route::name`).
pub fn is_traffic(route: &str) -> bool {
    !matches!(
        route,
        "health"
            | "livez"
            | "readyz"
            | "status"
            | "stats"
            | "metrics"
            | "dashboard"
            | "explain"
            | "admin_reload"
            | "reset_keys"
            | "reset_key_health"
            | "recommendations"
            | "ip_config"
            | "test_ip"
    )
}

impl Timeline {
    /// Counts one finished request at `now`.
    pub fn record(&self, now: SystemTime, status: u16) {
        let minute = minute_of(now);
        let mut ring = self
            .rings
            .local()
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let bucket = &mut ring[(minute % MINUTES as u64) as usize];
        if bucket.minute != minute {
            // A clock that stepped back finds a newer minute here; counting into it would be
            // wrong either way, and starting afresh keeps the ring consistent.
            *bucket = Bucket {
                minute,
                ..Bucket::default()
            };
        }
        bucket.requests += 1;
        if status >= 400 {
            bucket.errors += 1;
        }
    }

    /// The last `MINUTES` minutes up to and including `now`'s, oldest first; minutes without
    /// traffic are zeros.
    pub fn minutes(&self, now: SystemTime) -> Vec<Minute> {
        let current = minute_of(now);
        let rings: Vec<[Bucket; MINUTES]> = self
            .rings
            .iter()
            .map(|r| *r.lock().unwrap_or_else(PoisonError::into_inner))
            .collect();
        let first = current.saturating_sub(MINUTES as u64 - 1);
        (first..=current)
            .map(|minute| {
                let slot = (minute % MINUTES as u64) as usize;
                let (mut requests, mut errors) = (0, 0);
                for b in rings.iter().map(|r| r[slot]).filter(|b| b.minute == minute) {
                    requests += b.requests;
                    errors += b.errors;
                }
                Minute {
                    start: minute * 60,
                    requests,
                    errors,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    /// (requests, errors) of the minutes with traffic, as (minutes ago, requests, errors).
    fn busy(t: &Timeline, now: u64) -> Vec<(u64, u64, u64)> {
        let minutes = t.minutes(at(now));
        assert_eq!(minutes.len(), MINUTES);
        minutes
            .iter()
            .filter(|m| m.requests > 0)
            .map(|m| ((now / 60 * 60 - m.start) / 60, m.requests, m.errors))
            .collect()
    }

    #[test]
    fn counts_per_minute_and_forgets_after_an_hour() {
        let t = Timeline::default();
        let base = 1_700_000_000 / 60 * 60;
        t.record(at(base), 200);
        t.record(at(base + 59), 502);
        t.record(at(base + 60), 429);
        t.record(at(base + 61), 200);
        assert_eq!(busy(&t, base + 61), vec![(1, 2, 1), (0, 2, 1)]);
        // 59 minutes later the first minute is still the oldest shown.
        assert_eq!(busy(&t, base + 59 * 60), vec![(59, 2, 1), (58, 2, 1)]);
        // One more minute and it is gone, even though its slot was never reused.
        assert_eq!(busy(&t, base + 60 * 60), vec![(59, 2, 1)]);
        // Reusing the slot starts it afresh.
        t.record(at(base + 60 * 60), 200);
        assert_eq!(busy(&t, base + 60 * 60), vec![(59, 2, 1), (0, 1, 0)]);
    }

    #[test]
    fn operator_routes_are_not_traffic() {
        for route in ["dashboard", "status", "metrics", "health", "reset_keys"] {
            assert!(!is_traffic(route), "{route}");
        }
        for route in [
            "chat_completions",
            "generateContent",
            "embeddings",
            "models",
        ] {
            assert!(is_traffic(route), "{route}");
        }
    }
}
