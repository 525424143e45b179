//! Guessing tokens is slowed per client address: after `access.max_token_failures` requests with
//! a missing or wrong credential (client token, admin token, dashboard login) within `WINDOW`,
//! that address gets 429 until the window ends, before its credential is even compared, so a
//! right guess during the lockout tells it nothing.
//!
//! A loopback TCP peer is exempt (`exempt`, from `access::Origin::loopback_peer`): it is this
//! machine, and behind a local reverse proxy that is not in `server.trusted_proxies` every client
//! comes from loopback, so one client could lock out all. A loopback address named by a
//! forwarding header is not exempt: the exemption comes from the TCP peer alone.
//! The table is bounded: when it holds `MAX_TRACKED` live addresses, new ones are not tracked
//! (per-address limits do not stop a guesser with that many addresses anyway). While no address
//! has failed recently, a request pays one atomic load here.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::outbox::{Event, Outbox};

/// The window failures are counted in; a locked-out address waits for its end.
pub const WINDOW: Duration = Duration::from_secs(60);
/// Addresses tracked at once.
const MAX_TRACKED: usize = 10_000;

#[derive(Default)]
pub struct Lockout {
    /// Entries in `table`; zero lets `wait` skip the lock.
    tracked: AtomicUsize,
    table: Mutex<Table>,
    /// Failures go to a shared store (when one listens), which counts them fleet-wide.
    outbox: Outbox,
}

#[derive(Default)]
struct Table {
    entries: HashMap<IpAddr, Entry>,
    /// When expired entries are next swept out.
    next_sweep: Option<Instant>,
}

struct Entry {
    since: Instant,
    failures: u32,
}

impl Entry {
    fn end(&self) -> Instant {
        self.since + WINDOW
    }
}

impl Lockout {
    /// A lockout table whose failures are also told to `outbox`.
    pub fn new(outbox: Outbox) -> Self {
        Lockout {
            outbox,
            ..Lockout::default()
        }
    }

    /// Another replica saw `ip` reach the limit: it waits `left` here too.
    pub fn lock_remote(&self, ip: IpAddr, left: Duration) {
        let now = Instant::now();
        let left = left.min(WINDOW);
        let mut table = self.lock();
        self.sweep(&mut table, now);
        if table.entries.len() >= MAX_TRACKED && !table.entries.contains_key(&ip) {
            return;
        }
        let since = now.checked_sub(WINDOW - left).unwrap_or(now);
        table.entries.insert(
            ip,
            Entry {
                since,
                failures: u32::MAX,
            },
        );
        table.next_sweep.get_or_insert(now + WINDOW);
        self.tracked.store(table.entries.len(), Ordering::Relaxed);
    }

    /// How long `ip` must still wait before its credentials are looked at again, if it has
    /// presented `limit` failures this window (0: no limit). An `exempt` caller (a loopback TCP
    /// peer) never waits. Reads no clock while nobody failed.
    pub fn wait(&self, ip: IpAddr, exempt: bool, limit: u32) -> Option<Duration> {
        if self.tracked.load(Ordering::Relaxed) == 0 || exempt || limit == 0 {
            return None;
        }
        self.wait_at(ip, limit, Instant::now())
    }

    /// Counts one missing or wrong credential from `ip`; `exempt` and `limit` as for `wait`.
    pub fn failed(&self, ip: IpAddr, exempt: bool, limit: u32) {
        if exempt {
            return;
        }
        self.failed_at(ip, limit, Instant::now());
        if limit > 0 {
            self.outbox.send(Event::CredentialFailed { ip, limit });
        }
    }

    /// `wait` past its quick checks, at `now`.
    fn wait_at(&self, ip: IpAddr, limit: u32, now: Instant) -> Option<Duration> {
        let mut table = self.lock();
        self.sweep(&mut table, now);
        let entry = table.entries.get(&ip)?;
        (entry.failures >= limit && now < entry.end()).then(|| entry.end() - now)
    }

    fn failed_at(&self, ip: IpAddr, limit: u32, now: Instant) {
        if limit == 0 {
            return;
        }
        let mut table = self.lock();
        self.sweep(&mut table, now);
        if table.entries.len() >= MAX_TRACKED && !table.entries.contains_key(&ip) {
            return;
        }
        let entry = table.entries.entry(ip).or_insert(Entry {
            since: now,
            failures: 0,
        });
        if now >= entry.end() {
            *entry = Entry {
                since: now,
                failures: 0,
            };
        }
        entry.failures = entry.failures.saturating_add(1);
        if entry.failures == limit {
            tracing::warn!(%ip, "too many wrong or missing credentials: locked out for {WINDOW:?}");
        }
        table.next_sweep.get_or_insert(now + WINDOW);
        self.tracked.store(table.entries.len(), Ordering::Relaxed);
    }

    /// Drops expired entries, at most once per window.
    fn sweep(&self, table: &mut Table, now: Instant) {
        if table.next_sweep.is_some_and(|at| now >= at) {
            table.entries.retain(|_, e| now < e.end());
            table.next_sweep = (!table.entries.is_empty()).then_some(now + WINDOW);
            self.tracked.store(table.entries.len(), Ordering::Relaxed);
        }
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: u32 = 10;
    const GUESSER: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(203, 0, 113, 7));
    const OTHER: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(198, 51, 100, 2));

    #[test]
    fn locks_out_after_the_limit_until_the_window_ends() {
        let lockout = Lockout::default();
        let t0 = Instant::now();
        for i in 0..LIMIT {
            assert_eq!(
                lockout.wait_at(GUESSER, LIMIT, t0),
                None,
                "after {i} failures"
            );
            lockout.failed_at(GUESSER, LIMIT, t0);
        }
        let later = t0 + Duration::from_secs(20);
        assert_eq!(
            lockout.wait_at(GUESSER, LIMIT, later),
            Some(WINDOW - Duration::from_secs(20))
        );
        assert_eq!(
            lockout.wait_at(OTHER, LIMIT, later),
            None,
            "only the guesser"
        );
        assert_eq!(
            lockout.wait_at(GUESSER, LIMIT, t0 + WINDOW),
            None,
            "the window ended"
        );
        // A new window starts counting from zero.
        lockout.failed_at(GUESSER, LIMIT, t0 + WINDOW);
        assert_eq!(lockout.wait_at(GUESSER, LIMIT, t0 + WINDOW), None);
    }

    #[test]
    fn a_loopback_peer_is_never_locked_out_a_forwarded_loopback_is() {
        let lockout = Lockout::default();
        let loopback = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);
        for _ in 0..LIMIT * 2 {
            lockout.failed(loopback, true, LIMIT);
        }
        assert_eq!(lockout.wait(loopback, true, LIMIT), None);
        assert_eq!(lockout.tracked.load(Ordering::Relaxed), 0);
        // `127.0.0.1` named by a trusted proxy's header is just another address.
        for _ in 0..LIMIT {
            lockout.failed(loopback, false, LIMIT);
        }
        assert!(lockout.wait(loopback, false, LIMIT).is_some());
        assert_eq!(lockout.wait(loopback, true, LIMIT), None);
    }

    #[test]
    fn a_limit_of_zero_turns_it_off() {
        let lockout = Lockout::default();
        let t0 = Instant::now();
        for _ in 0..LIMIT * 2 {
            lockout.failed_at(GUESSER, 0, t0);
        }
        assert_eq!(lockout.wait(GUESSER, false, 0), None);
        assert_eq!(lockout.tracked.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn expired_entries_are_swept_and_the_table_is_bounded() {
        let lockout = Lockout::default();
        let t0 = Instant::now();
        for i in 0..(MAX_TRACKED as u32 + 10) {
            let ip = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            lockout.failed_at(ip, LIMIT, t0);
        }
        assert_eq!(lockout.tracked.load(Ordering::Relaxed), MAX_TRACKED);
        // After the window, the first look sweeps everything out: back to the lock-free path.
        assert_eq!(lockout.wait_at(GUESSER, LIMIT, t0 + WINDOW), None);
        assert_eq!(lockout.tracked.load(Ordering::Relaxed), 0);
    }
}
