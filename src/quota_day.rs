//! Google's quota day: per-day quotas and our daily counters reset at midnight
//! America/Los_Angeles ("Requests per day (RPD) quotas reset at midnight Pacific time").
//!
//! Owns the time-zone lookup and the wall-clock arithmetic, DST included (a quota day is 23 or
//! 25 hours long twice a year). It must not read the clock itself: callers pass the wall time.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwapOption;

use jiff::civil::Date;
use jiff::tz::{TimeZone, TimeZoneDatabase};
use jiff::Timestamp;

/// A quota day, named by its date in Los Angeles.
pub type QuotaDay = Date;

const ZONE: &str = "America/Los_Angeles";

/// The US rule since 2007, for a machine with neither a system nor a bundled tz database.
const FALLBACK_RULE: &str = "PST8PDT,M3.2.0,M11.1.0";

#[derive(Debug)]
pub struct QuotaClock {
    tz: TimeZone,
    /// The last day computed. Every pick asks, and a time-zone conversion costs more than the
    /// rest of a pick, so the answer is reused while the wall clock stays inside that day.
    cache: ArcSwapOption<CachedDay>,
}

#[derive(Debug)]
struct CachedDay {
    day: QuotaDay,
    start: SystemTime,
    end: SystemTime,
}

impl Default for QuotaClock {
    fn default() -> Self {
        Self::new()
    }
}

impl QuotaClock {
    /// The system's tz database when it has Los Angeles (kept current by the OS), else the copy
    /// bundled into the binary (distroless images have no /usr/share/zoneinfo).
    pub fn new() -> Self {
        let tz = TimeZone::get(ZONE)
            .or_else(|_| TimeZoneDatabase::bundled().get(ZONE))
            .or_else(|_| TimeZone::posix(FALLBACK_RULE))
            .unwrap_or(TimeZone::UTC);
        QuotaClock::with_zone(tz)
    }

    fn with_zone(tz: TimeZone) -> Self {
        QuotaClock {
            tz,
            cache: ArcSwapOption::empty(),
        }
    }

    /// The quota day `wall` falls in, and how long until it ends. `None` only for wall times
    /// outside what a calendar can name (year 10000).
    pub fn day(&self, wall: SystemTime) -> Option<(QuotaDay, Duration)> {
        if let Some(c) = self.cache.load().as_deref() {
            if c.start <= wall && wall < c.end {
                return Some((c.day, c.end.duration_since(wall).ok()?));
            }
        }
        let ts = Timestamp::try_from(wall).ok()?;
        let zoned = ts.to_zoned(self.tz.clone());
        let date = zoned.date();
        let start = date.to_zoned(self.tz.clone()).ok()?.timestamp();
        let end = date.tomorrow().ok()?.to_zoned(self.tz.clone()).ok()?;
        let (start, end) = (SystemTime::from(start), SystemTime::from(end.timestamp()));
        self.cache.store(Some(Arc::new(CachedDay {
            day: date,
            start,
            end,
        })));
        Some((date, end.duration_since(wall).ok()?))
    }

    /// The same without the cache, to test it against.
    #[cfg(test)]
    fn day_uncached(&self, wall: SystemTime) -> Option<(QuotaDay, Duration)> {
        let ts = Timestamp::try_from(wall).ok()?;
        let date = ts.to_zoned(self.tz.clone()).date();
        // Midnight exists in Los Angeles on every date (its switches happen at 02:00), and
        // `to_zoned` would resolve a gap or fold anyway.
        let end = date.tomorrow().ok()?.to_zoned(self.tz.clone()).ok()?;
        let left = end.timestamp().duration_since(ts);
        Some((date, Duration::try_from(left).ok()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Wall time from an RFC 3339 instant with offset.
    pub(crate) fn wall(rfc3339: &str) -> SystemTime {
        let ts: Timestamp = rfc3339.parse().expect("test timestamp");
        SystemTime::from(ts)
    }

    fn check(at: &str, day: &str, hours_left: f64) {
        let (d, left) = QuotaClock::new().day(wall(at)).expect("in range");
        assert_eq!(d.to_string(), day, "{at}");
        assert_eq!(left.as_secs_f64() / 3600.0, hours_left, "{at}");
    }

    #[test]
    fn quota_days() {
        // Winter: midnight LA is 08:00 UTC.
        check("2026-01-15T07:59:00Z", "2026-01-14", 1.0 / 60.0);
        check("2026-01-15T08:00:00Z", "2026-01-15", 24.0);
        // Summer: midnight LA is 07:00 UTC.
        check("2026-07-15T07:30:00Z", "2026-07-15", 23.5);
        // Spring forward on 2026-03-08: that quota day is 23 hours long.
        check("2026-03-08T00:00:00-08:00", "2026-03-08", 23.0);
        check("2026-03-08T00:30:00-08:00", "2026-03-08", 22.5);
        // Fall back on 2026-11-01: 25 hours.
        check("2026-11-01T00:00:00-07:00", "2026-11-01", 25.0);
        check("2026-11-01T00:30:00-07:00", "2026-11-01", 24.5);
        check("2026-10-31T23:30:00-07:00", "2026-10-31", 0.5);
    }

    #[test]
    fn fallback_rule_agrees_with_the_database() {
        let db = QuotaClock::new();
        let rule = QuotaClock::with_zone(TimeZone::posix(FALLBACK_RULE).expect("valid rule"));
        for at in [
            "2026-03-08T09:59:00Z",
            "2026-03-08T10:00:00Z",
            "2026-11-01T08:59:00Z",
            "2026-11-01T09:00:00Z",
            "2027-06-01T00:00:00Z",
        ] {
            assert_eq!(db.day(wall(at)), rule.day(wall(at)), "{at}");
        }
    }

    #[test]
    fn the_cache_agrees_with_a_fresh_computation() {
        let clock = QuotaClock::new();
        let fresh = QuotaClock::new();
        let start = wall("2026-03-07T12:00:00Z");
        // Every 7 minutes over three days around a DST switch, forwards then backwards.
        let steps: Vec<u64> = (0..(3 * 24 * 60 / 7)).collect();
        for &i in steps.iter().chain(steps.iter().rev()) {
            let w = start + Duration::from_secs(i * 7 * 60);
            assert_eq!(clock.day(w), fresh.day_uncached(w));
        }
    }
}
