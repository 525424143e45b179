//! Admission control and the process-wide memory budget: what bounds the proxy under load.
//!
//! Three process-wide counters (atomics shared by every worker thread): open client
//! connections, requests in flight, and bytes held for request bodies and fetched images. The
//! limits come from the config snapshot each time they are checked (so a reload applies them
//! at once); beyond them the server answers a fast 503 with `Retry-After` instead of queueing.
//!
//! - Connections: up to `server.max_connections` are served; a small overflow reserve beyond
//!   that is served in refusal mode (one request, no keep-alive, short header timeout: probes
//!   answer, everything else gets the 503); beyond the reserve a connection is closed at once.
//! - Requests: up to `server.max_in_flight` at once, a stream counting until its last byte.
//! - Bytes: a request reserves its body (by `Content-Length` before reading, else chunk by chunk)
//!   and its fetched images against `server.memory_budget`; the reservation lives as long as the
//!   request's [`Scope`] (the handler's future), when the bytes and what was parsed from them
//!   are gone. A reservation that would overflow is refused, never waited for.
//!
//! The defaults follow the memory the process may use ([`memory_available`]: the cgroup's limit
//! if set, else the machine's `MemTotal`); see [`Defaults`] for the formula.

use std::cell::Cell;
use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

/// Client connections open now (normal and overflow).
static CONNECTIONS: AtomicUsize = AtomicUsize::new(0);
/// Requests being served now (streams until their last byte).
static IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);
/// Bytes reserved by request bodies and fetched images now.
static BUDGET_USED: AtomicU64 = AtomicU64::new(0);

/// Memory assumed per request in flight, besides its body: connection buffers, the upstream
/// stream's window, the relay's channel and translator.
pub const PER_REQUEST: u64 = 512 * 1024;
/// `max_in_flight` derived from memory stays within this range.
pub const IN_FLIGHT_RANGE: (usize, usize) = (32, 8192);
/// `max_connections` derived from memory stays within this range.
pub const CONNECTIONS_RANGE: (usize, usize) = (64, 32_768);
/// Used when neither the cgroup nor `/proc/meminfo` says how much memory there is.
pub const FALLBACK_MEMORY: u64 = 1024 * 1024 * 1024;
/// How long a refused client is told to wait.
pub const RETRY_AFTER: Duration = Duration::from_secs(1);
/// An overflow connection (beyond `max_connections`) must send its request head within this.
pub const OVERFLOW_HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// The limits derived from memory, for the `0` / `"auto"` settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Defaults {
    /// The memory they were derived from.
    pub memory: u64,
    /// `memory / PER_REQUEST`, within `IN_FLIGHT_RANGE`.
    pub max_in_flight: usize,
    /// `4 × max_in_flight`, at most three quarters of the open-file limit, within
    /// `CONNECTIONS_RANGE`.
    pub max_connections: usize,
    /// A quarter of `memory`.
    pub memory_budget: u64,
}

impl Defaults {
    /// The defaults for `memory` bytes and an open-file limit of `open_files` (if known).
    pub fn for_memory(memory: u64, open_files: Option<u64>) -> Defaults {
        let (lo, hi) = IN_FLIGHT_RANGE;
        let max_in_flight = usize::try_from(memory / PER_REQUEST)
            .unwrap_or(usize::MAX)
            .clamp(lo, hi);
        let mut max_connections = max_in_flight.saturating_mul(4);
        if let Some(files) = open_files {
            let files = usize::try_from(files / 4 * 3).unwrap_or(usize::MAX);
            max_connections = max_connections.min(files);
        }
        let (lo, hi) = CONNECTIONS_RANGE;
        Defaults {
            memory,
            max_in_flight,
            max_connections: max_connections.clamp(lo, hi),
            memory_budget: memory / 4,
        }
    }

    /// The defaults for this process.
    pub fn detect() -> Defaults {
        Defaults::for_memory(
            memory_available().unwrap_or(FALLBACK_MEMORY),
            open_files_limit(),
        )
    }
}

/// The memory this process may use: the smallest of the cgroup limits (v2 `memory.max` up the
/// hierarchy, or v1 `memory.limit_in_bytes`) and `MemTotal`. `None` when nothing says.
pub fn memory_available() -> Option<u64> {
    let total = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| mem_total(&s));
    let cgroup = std::fs::read_to_string("/proc/self/cgroup")
        .ok()
        .and_then(|s| cgroup_limit(&s, &|p| std::fs::read_to_string(p).ok()));
    match (total, cgroup) {
        (Some(t), Some(c)) => Some(t.min(c)),
        (t, c) => t.or(c),
    }
}

/// `MemTotal` from `/proc/meminfo`, in bytes.
fn mem_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// The memory limit of this process's cgroup, given `/proc/self/cgroup` and a file reader.
fn cgroup_limit(self_cgroup: &str, read: &dyn Fn(&str) -> Option<String>) -> Option<u64> {
    // Values at or above this mean "no limit" (cgroup v1 writes a page-rounded i64::MAX).
    const UNLIMITED: u64 = 1 << 60;
    let parse = |s: String| {
        s.trim()
            .parse::<u64>()
            .ok()
            .filter(|&n| n > 0 && n < UNLIMITED)
    };
    let mut best: Option<u64> = None;
    let mut keep = |n: Option<u64>| {
        if let Some(n) = n {
            best = Some(best.map_or(n, |b| b.min(n)));
        }
    };
    for line in self_cgroup.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let path = path.trim_end_matches('/');
        if controllers.is_empty() {
            // v2: the limit is the smallest `memory.max` from this group up to the root.
            let mut dir = path.to_string();
            loop {
                keep(read(&format!("/sys/fs/cgroup{dir}/memory.max")).and_then(parse));
                match dir.rfind('/') {
                    Some(i) => dir.truncate(i),
                    None => break,
                }
            }
        } else if controllers.split(',').any(|c| c == "memory") {
            keep(
                read(&format!(
                    "/sys/fs/cgroup/memory{path}/memory.limit_in_bytes"
                ))
                .and_then(parse),
            );
            // In a cgroup namespace the group is mounted as the root.
            keep(read("/sys/fs/cgroup/memory/memory.limit_in_bytes").and_then(parse));
        }
    }
    best
}

/// The soft open-file limit (`RLIMIT_NOFILE`), from `/proc/self/limits`.
pub fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.trim_start_matches("Max open files")
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// One place in a counter, given back when dropped.
#[derive(Debug)]
pub struct Slot(&'static AtomicUsize);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Where a request that outlives its response (a WebSocket session after the 101) takes its
/// place in `max_in_flight`: the handler puts one in the response's extensions, the server puts
/// the request's slot in it, and the slot is freed when the last holder (the session) drops it.
#[derive(Clone, Default)]
pub struct Handover(std::sync::Arc<std::sync::Mutex<Option<Slot>>>);

impl Handover {
    pub fn new() -> Handover {
        Handover::default()
    }

    /// Called by the server with the request's slot.
    pub fn give(&self, slot: Slot) {
        *self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(slot);
    }
}

fn take(counter: &'static AtomicUsize, limit: usize) -> Option<Slot> {
    counter
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < limit).then_some(n + 1)
        })
        .ok()
        .map(|_| Slot(counter))
}

/// A request's place among the `limit` in flight, or `None` when all are taken.
pub fn request(limit: usize) -> Option<Slot> {
    take(&IN_FLIGHT, limit)
}

/// How an accepted connection is served.
#[derive(Debug)]
pub enum Connection {
    /// Within `max_connections`.
    Normal(Slot),
    /// In the overflow reserve: one request, answered with a 503 unless it is a probe.
    Overflow(Slot),
    /// Beyond the reserve: close it now.
    Refused,
}

/// Connections served in refusal mode beyond `max_connections`: a sixteenth of it, 8 to 1024.
pub fn overflow_reserve(max_connections: usize) -> usize {
    (max_connections / 16).clamp(8, 1024)
}

/// Counts a newly accepted connection against `max_connections`.
pub fn connection(max_connections: usize) -> Connection {
    if let Some(slot) = take(&CONNECTIONS, max_connections) {
        return Connection::Normal(slot);
    }
    let ceiling = max_connections.saturating_add(overflow_reserve(max_connections));
    match take(&CONNECTIONS, ceiling) {
        Some(slot) => Connection::Overflow(slot),
        None => Connection::Refused,
    }
}

/// Open client connections now.
pub fn connections() -> usize {
    CONNECTIONS.load(Ordering::Relaxed)
}

/// Requests in flight now.
pub fn in_flight() -> usize {
    IN_FLIGHT.load(Ordering::Relaxed)
}

/// Bytes reserved against the memory budget now.
pub fn budget_used() -> u64 {
    BUDGET_USED.load(Ordering::Relaxed)
}

/// Waits after a failed `accept()` (out of file descriptors and the like): 5 ms doubling to 1 s,
/// back to the start after a success.
#[derive(Debug, Default)]
pub struct Backoff {
    failures: u32,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(5);
    const MAX: Duration = Duration::from_secs(1);

    /// Records a failure; the wait before the next `accept()`.
    pub fn failed(&mut self) -> Duration {
        let wait = Self::FIRST
            .saturating_mul(1u32 << self.failures.min(16))
            .min(Self::MAX);
        self.failures = self.failures.saturating_add(1);
        wait
    }

    /// Failures in a row so far.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    pub fn succeeded(&mut self) {
        self.failures = 0;
    }
}

tokio::task_local! {
    static SCOPE: Scope;
}

/// One request's share of the memory budget and its body deadline, set by the server around
/// the handler; released when the handler's future ends.
#[derive(Debug)]
pub struct Scope {
    limit: u64,
    body_timeout: Duration,
    held: Cell<u64>,
}

impl Scope {
    pub fn new(memory_budget: u64, body_timeout: Duration) -> Scope {
        Scope {
            limit: memory_budget,
            body_timeout,
            held: Cell::new(0),
        }
    }

    /// Runs `f` with this scope as the current request's.
    pub async fn run<F: Future>(self, f: F) -> F::Output {
        SCOPE.scope(self, f).await
    }
}

impl Drop for Scope {
    fn drop(&mut self) {
        let held = self.held.get();
        if held > 0 {
            BUDGET_USED.fetch_sub(held, Ordering::AcqRel);
        }
    }
}

/// Bytes a long-lived connection (a Live API session) holds against `server.memory_budget`
/// outside any request scope: taken as its reads arrive, given back when what they formed has
/// been passed on, and all given back when it drops. The same budget as request bodies, so
/// sessions sending large messages at once are refused rather than exhausting the process.
#[derive(Debug)]
pub struct Meter {
    limit: u64,
    held: AtomicU64,
}

impl Meter {
    pub fn new(memory_budget: u64) -> Meter {
        Meter {
            limit: memory_budget,
            held: AtomicU64::new(0),
        }
    }

    /// Takes `n` more bytes; false (and nothing taken) when the budget cannot hold them.
    pub fn take(&self, n: u64) -> bool {
        if n == 0 {
            return true;
        }
        let ok = BUDGET_USED
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(n).filter(|&u| u <= self.limit)
            })
            .is_ok();
        if ok {
            self.held.fetch_add(n, Ordering::AcqRel);
        }
        ok
    }

    /// Gives back everything held so far.
    pub fn release(&self) {
        let held = self.held.swap(0, Ordering::AcqRel);
        if held > 0 {
            BUDGET_USED.fetch_sub(held, Ordering::AcqRel);
        }
    }
}

impl Drop for Meter {
    fn drop(&mut self) {
        self.release();
    }
}

/// Why a reservation was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// This request alone would hold more than the whole budget: it can never be served.
    TooBig { limit: u64 },
    /// Other requests hold the budget now: try again shortly.
    Busy,
}

/// Reserves `n` more bytes for the current request. Outside a request scope (unit tests,
/// background work) nothing is counted.
pub fn reserve(n: u64) -> Result<(), Refusal> {
    if n == 0 {
        return Ok(());
    }
    SCOPE
        .try_with(|scope| {
            let held = scope.held.get().saturating_add(n);
            if held > scope.limit {
                return Err(Refusal::TooBig { limit: scope.limit });
            }
            BUDGET_USED
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                    used.checked_add(n).filter(|&u| u <= scope.limit)
                })
                .map_err(|_| Refusal::Busy)?;
            scope.held.set(held);
            Ok(())
        })
        .unwrap_or(Ok(()))
}

/// The current request's body deadline (`server.body_timeout`); `None` outside a request.
pub fn body_timeout() -> Option<Duration> {
    SCOPE.try_with(|scope| scope.body_timeout).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_memory() {
        let gib = 1024 * 1024 * 1024;
        let d = Defaults::for_memory(gib, None);
        assert_eq!(d.max_in_flight, 2048);
        assert_eq!(d.max_connections, 8192);
        assert_eq!(d.memory_budget, gib / 4);
        // A tiny pod still admits some; a big machine is capped.
        let small = Defaults::for_memory(64 * 1024 * 1024, None);
        assert_eq!(small.max_in_flight, 128);
        assert_eq!(
            Defaults::for_memory(8 * 1024 * gib, None).max_in_flight,
            8192
        );
        assert_eq!(Defaults::for_memory(1024, None).max_in_flight, 32);
        // The open-file limit bounds connections.
        assert_eq!(Defaults::for_memory(gib, Some(1024)).max_connections, 768);
        assert_eq!(Defaults::for_memory(gib, Some(16)).max_connections, 64);
    }

    #[test]
    fn reads_meminfo_and_cgroups() {
        assert_eq!(
            mem_total("MemTotal:       2048 kB\nMemFree: 1 kB\n"),
            Some(2048 * 1024)
        );
        let files = |p: &str| -> Option<String> {
            match p {
                "/sys/fs/cgroup/kubepods/pod1/memory.max" => Some("max\n".into()),
                "/sys/fs/cgroup/kubepods/memory.max" => Some("536870912\n".into()),
                "/sys/fs/cgroup/memory/docker/abc/memory.limit_in_bytes" => {
                    Some("9223372036854771712\n".into())
                }
                "/sys/fs/cgroup/memory/memory.limit_in_bytes" => Some("268435456".into()),
                _ => None,
            }
        };
        assert_eq!(
            cgroup_limit("0::/kubepods/pod1\n", &files),
            Some(536_870_912)
        );
        assert_eq!(
            cgroup_limit("4:memory:/docker/abc\n0::/\n", &files),
            Some(268_435_456)
        );
        assert_eq!(cgroup_limit("1:cpu:/\n", &files), None);
        assert_eq!(cgroup_limit("0::/\n", &|_| Some("max".into())), None);
    }

    #[test]
    fn backoff_doubles_to_a_cap() {
        let mut b = Backoff::default();
        let waits: Vec<u128> = (0..10).map(|_| b.failed().as_millis()).collect();
        assert_eq!(waits, [5, 10, 20, 40, 80, 160, 320, 640, 1000, 1000]);
        b.succeeded();
        assert_eq!(b.failed(), Duration::from_millis(5));
    }

    #[test]
    fn connections_overflow_then_refuse() {
        // The counters are process-wide: this is the only unit test that takes connections.
        let limit = connections() + 2;
        let a = connection(limit);
        let b = connection(limit);
        assert!(matches!(a, Connection::Normal(_)) && matches!(b, Connection::Normal(_)));
        let overflow: Vec<Connection> = (0..overflow_reserve(limit))
            .map(|_| connection(limit))
            .collect();
        assert!(overflow
            .iter()
            .all(|c| matches!(c, Connection::Overflow(_))));
        assert!(matches!(connection(limit), Connection::Refused));
        // One counter: a freed place is the reserve's again while the reserve is in use.
        drop(a);
        let c = connection(limit);
        assert!(matches!(c, Connection::Overflow(_)));
        drop((overflow, c));
        assert!(matches!(connection(limit), Connection::Normal(_)));
    }

    #[tokio::test]
    async fn a_scope_reserves_and_releases() {
        let before = budget_used();
        let outcome = Scope::new(1000, Duration::from_secs(1))
            .run(async {
                assert_eq!(reserve(600), Ok(()));
                assert_eq!(reserve(500), Err(Refusal::TooBig { limit: 1000 }));
                assert_eq!(reserve(400), Ok(()));
                // Another request in the same budget finds it full.
                let other = Scope::new(1000, Duration::from_secs(1))
                    .run(async { reserve(1) })
                    .await;
                assert_eq!(body_timeout(), Some(Duration::from_secs(1)));
                other
            })
            .await;
        assert_eq!(outcome, Err(Refusal::Busy));
        assert_eq!(budget_used(), before);
        assert_eq!(
            reserve(u64::MAX),
            Ok(()),
            "outside a scope nothing is counted"
        );
    }
}
