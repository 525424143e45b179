//! Per-worker shards: a value of which each thread writes its own copy and readers merge, so
//! what every request records (traffic per minute, token usage, metrics) takes no lock another
//! worker holds and no cache line another core keeps writing.
//!
//! A thread's shard is fixed at its first use, round robin over `SHARDS`: the server's worker
//! threads (one per core, started together) each get their own. Two threads share a shard only
//! past `SHARDS` threads, which costs contention, never correctness: every shard is behind its
//! own lock or made of atomics.

use std::sync::atomic::{AtomicUsize, Ordering};

/// Shards per value: more than the worker threads of any machine this runs on.
pub const SHARDS: usize = 64;

static NEXT: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static INDEX: usize = NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS;
}

/// This thread's shard.
pub fn index() -> usize {
    INDEX.with(|i| *i)
}

/// A value on a cache line (pair) of its own, so neighbours never share one.
#[repr(align(128))]
#[derive(Default)]
struct Padded<T>(T);

/// One `T` per shard.
pub struct Shards<T> {
    cells: Box<[Padded<T>]>,
}

impl<T> Shards<T> {
    pub fn new(mut make: impl FnMut() -> T) -> Self {
        Shards {
            cells: (0..SHARDS).map(|_| Padded(make())).collect(),
        }
    }

    /// This thread's copy.
    pub fn local(&self) -> &T {
        &self.cells[index()].0
    }

    /// Every copy, for readers merging them.
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.cells.iter().map(|c| &c.0)
    }
}

impl<T: Default> Default for Shards<T> {
    fn default() -> Self {
        Shards::new(T::default)
    }
}

impl<T> std::fmt::Debug for Shards<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Shards({})", self.cells.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;

    #[test]
    fn threads_write_their_own_shard_and_readers_see_the_sum() {
        let counts: Shards<AtomicU64> = Shards::default();
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    for _ in 0..1000 {
                        counts.local().fetch_add(1, Ordering::Relaxed);
                    }
                });
            }
        });
        let total: u64 = counts.iter().map(|c| c.load(Ordering::Relaxed)).sum();
        assert_eq!(total, 8000);
        // The first 8 threads of a fresh counter cannot have shared a shard.
        assert!(
            counts
                .iter()
                .filter(|c| c.load(Ordering::Relaxed) > 0)
                .count()
                >= 2
        );
    }

    #[test]
    fn shards_do_not_share_cache_lines() {
        assert!(std::mem::align_of::<Padded<u8>>() >= 128);
    }
}
