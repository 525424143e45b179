//! The process-wide retry budget: how many upstream calls beyond each request's first attempt
//! (retries on another key, quota hops included) the proxy may make, so that a failing upstream
//! cannot turn every request into `max_attempts` + `max_quota_hops` calls (a retry storm).
//!
//! Over a sliding window of `WINDOW_SECS` seconds, retries may be at most `RATIO_PERCENT` of the
//! first attempts, or `MIN_PER_SEC` per second of the window, whichever is more (so a quiet proxy
//! can still fail over). The window is a ring of one-second buckets of atomic counters: the hot
//! path takes no lock and allocates nothing. Counting is approximate at bucket boundaries (a
//! bucket is zeroed by whoever first sees its second come round, and an increment racing with
//! that may be lost or kept); the bound holds within a few calls, which is all a storm guard needs.
//!
//! Time is an input (`Instant`), so tests drive it; the budget keeps no other state and does no
//! I/O.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::LazyLock;
use std::time::Instant;

/// Length of the sliding window, in one-second buckets.
pub const WINDOW_SECS: u64 = 10;
/// Retries allowed per 100 first attempts in the window.
pub const RATIO_PERCENT: u64 = 20;
/// Retries always allowed per second of the window, whatever the traffic.
pub const MIN_PER_SEC: u64 = 10;

const BUCKETS: usize = WINDOW_SECS as usize;

static GLOBAL: LazyLock<RetryBudget> = LazyLock::new(|| RetryBudget::new(Instant::now()));

/// The budget every request of this process shares.
pub fn global() -> &'static RetryBudget {
    &GLOBAL
}

pub struct RetryBudget {
    origin: Instant,
    buckets: [Bucket; BUCKETS],
}

#[derive(Default)]
struct Bucket {
    /// The second (since `origin`) this bucket counts, plus one; 0 for never used.
    tag: AtomicU64,
    firsts: AtomicU64,
    retries: AtomicU64,
}

impl RetryBudget {
    pub fn new(origin: Instant) -> Self {
        RetryBudget {
            origin,
            buckets: Default::default(),
        }
    }

    /// A request's first upstream attempt (always allowed; it is what retries are measured by).
    pub fn record_first(&self, now: Instant) {
        self.current(now).firsts.fetch_add(1, Ordering::Relaxed);
    }

    /// Takes one retry from the budget if there is one left; `false` means the request should
    /// fail with its last error instead of calling upstream again.
    pub fn try_retry(&self, now: Instant) -> bool {
        let second = self.second(now);
        let (firsts, retries) = self.totals(second);
        let allowed = (firsts * RATIO_PERCENT / 100).max(MIN_PER_SEC * WINDOW_SECS);
        if retries >= allowed {
            return false;
        }
        self.bucket(second).retries.fetch_add(1, Ordering::Relaxed);
        true
    }

    /// First attempts and retries counted in the window ending at `second`.
    fn totals(&self, second: u64) -> (u64, u64) {
        let oldest = second.saturating_sub(WINDOW_SECS - 1);
        self.buckets
            .iter()
            .filter(|b| {
                let tag = b.tag.load(Ordering::Acquire);
                tag > oldest && tag <= second + 1
            })
            .fold((0, 0), |(f, r), b| {
                (
                    f + b.firsts.load(Ordering::Relaxed),
                    r + b.retries.load(Ordering::Relaxed),
                )
            })
    }

    fn second(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.origin).as_secs()
    }

    fn current(&self, now: Instant) -> &Bucket {
        self.bucket(self.second(now))
    }

    /// The bucket of `second`, zeroed first if it last counted an older second.
    fn bucket(&self, second: u64) -> &Bucket {
        let b = &self.buckets[(second % WINDOW_SECS) as usize];
        let tag = second + 1;
        let seen = b.tag.load(Ordering::Acquire);
        if seen < tag
            && b.tag
                .compare_exchange(seen, tag, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            b.firsts.store(0, Ordering::Relaxed);
            b.retries.store(0, Ordering::Relaxed);
        }
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(origin: Instant, ms: u64) -> Instant {
        origin + Duration::from_millis(ms)
    }

    /// Retries granted in a row at `now` until the budget says no (bounded).
    fn drain(budget: &RetryBudget, now: Instant) -> u64 {
        (0..100_000).take_while(|_| budget.try_retry(now)).count() as u64
    }

    #[test]
    fn a_quiet_proxy_gets_the_floor() {
        let t0 = Instant::now();
        let budget = RetryBudget::new(t0);
        budget.record_first(t0);
        assert_eq!(drain(&budget, t0), MIN_PER_SEC * WINDOW_SECS);
        assert!(!budget.try_retry(at(t0, 500)));
    }

    #[test]
    fn busy_traffic_gets_a_fifth_extra() {
        let t0 = Instant::now();
        let budget = RetryBudget::new(t0);
        // 10,000 first attempts over five seconds.
        for ms in 0..5_000 {
            for _ in 0..2 {
                budget.record_first(at(t0, ms));
            }
        }
        let now = at(t0, 5_000);
        assert_eq!(drain(&budget, now), 10_000 * RATIO_PERCENT / 100);
    }

    #[test]
    fn the_window_slides() {
        let t0 = Instant::now();
        let budget = RetryBudget::new(t0);
        assert_eq!(drain(&budget, t0), MIN_PER_SEC * WINDOW_SECS);
        // Still inside the window 9.9 s later: nothing back.
        assert!(!budget.try_retry(at(t0, 9_900)));
        // The bucket of second 0 leaves the window at second 10.
        assert_eq!(drain(&budget, at(t0, 10_000)), MIN_PER_SEC * WINDOW_SECS);
    }

    #[test]
    fn old_buckets_do_not_count_after_a_long_pause() {
        let t0 = Instant::now();
        let budget = RetryBudget::new(t0);
        for _ in 0..10_000 {
            budget.record_first(t0);
        }
        assert_eq!(drain(&budget, t0), 2_000);
        // An hour later the same ring slots hold nothing from then: only the floor.
        let later = at(t0, 3_600_000);
        assert_eq!(drain(&budget, later), MIN_PER_SEC * WINDOW_SECS);
    }

    #[test]
    fn concurrent_use_stays_near_the_bound() {
        let t0 = Instant::now();
        let budget = std::sync::Arc::new(RetryBudget::new(t0));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let budget = budget.clone();
                std::thread::spawn(move || drain(&budget, t0))
            })
            .collect();
        let granted: u64 = threads
            .into_iter()
            .map(|t| t.join().unwrap_or(u64::MAX))
            .sum();
        let bound = MIN_PER_SEC * WINDOW_SECS;
        // Each thread may slip one past the check it raced with.
        assert!((bound..=bound + 4).contains(&granted), "granted {granted}");
    }
}
