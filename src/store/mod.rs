//! State stores: where what the pool learns (per (key, model) rests with their wall-clock end,
//! day-outs, disabled keys, consecutive failures, daily request and token counts, and the
//! per client token ledger) is kept beyond process memory (`[state]`, issue #16).
//!
//! The pool keeps deciding from memory: nothing here runs on the request path. A background
//! task (`lib.rs`) calls [`Persist::save`] every [`SAVE_EVERY`] and once at shutdown; it reads
//! the pool through `KeyPool::export` and writes only when the state changed. At start and
//! when a reload changes `[state]`, [`Persist::configure`] builds the new store (a file store
//! loads its file and merges it into the pool through `KeyPool::import`) and swaps it in; the
//! store it replaces writes its last snapshot first. No store error ever fails a request or
//! the start: a missing or corrupt file is a WARN and a fresh start.
//!
//! Keys and client token names appear in a store only as fingerprints (`Fingerprint`: SHA-256
//! over a per-deployment random salt and the secret), never raw or masked. `memory` is the
//! no-store case; `file` is `file.rs`; `redis` (`redis.rs`) shares the state with every replica
//! on one Redis server, through a sync task that also carries the small ledgers' events
//! (`outbox`). Resource pins (`affinity`) are kept by both: in the snapshot file (so an
//! uploaded file stays usable across a restart within its 48 h) and in Redis (so every
//! replica can use it).

mod file;
mod redis;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::{ArcSwap, ArcSwapOption};
use sha2::{Digest, Sha256};

use crate::affinity::Affinity;
use crate::config::{Config, Store};
use crate::lockout::Lockout;
use crate::outbox::Outbox;
use crate::pool::{KeyPool, Now};
use crate::sessions::Sessions;
use crate::signatures::SignatureCache;
use crate::stored_responses::StoredResponses;
use crate::usage::{TokenUsage, OPEN, OTHER};

pub use self::redis::{Health, Lookup, PUSH_EVERY, RECONCILE_EVERY};
pub use file::{pin_records, write_atomic, FileState, FileStore};

/// What a store keeps and feeds: the pool, the token ledger and the small ledgers (handles
/// shared with `state::App`).
#[derive(Clone)]
pub struct Ledgers {
    pub pool: KeyPool,
    pub usage: Arc<TokenUsage>,
    pub sessions: Arc<Sessions>,
    pub lockout: Arc<Lockout>,
    pub signatures: Arc<SignatureCache>,
    pub stored_responses: Arc<StoredResponses>,
    /// Gemini resources by the key that created them (`affinity`).
    pub affinity: Arc<Affinity>,
    /// Where the small ledgers queue their events.
    pub outbox: Outbox,
}

/// What of the running config a shared store needs to read what others wrote: client token
/// names (the ledger's fingerprints) and admin token fingerprints (session openers).
#[derive(Debug, Default)]
pub struct Names {
    pub tokens: Vec<String>,
    pub admins: Vec<[u8; 32]>,
    /// Changes with every config applied (the keys may have changed).
    pub generation: u64,
}

/// The store in use and how it is doing, for `/status` and the metrics.
#[derive(Debug, Clone)]
pub struct StoreStatus {
    pub store: &'static str,
    pub ok: bool,
    pub last_error: Option<String>,
    pub since: Option<SystemTime>,
}

/// How often the background task looks for changes to save.
pub const SAVE_EVERY: Duration = Duration::from_secs(2);

/// A per-deployment salt for fingerprints.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Salt(pub [u8; 32]);

impl Salt {
    /// A fresh random salt; all zeros (still no raw secret stored) if the OS has no random
    /// source, which `sessions` would have refused already.
    pub fn random() -> Salt {
        let mut bytes = [0u8; 32];
        if getrandom::fill(&mut bytes).is_err() {
            tracing::warn!("state: no random source for the fingerprint salt");
        }
        Salt(bytes)
    }

    pub fn to_hex(self) -> String {
        hex(&self.0)
    }

    pub fn from_hex(s: &str) -> Option<Salt> {
        if s.len() != 64 {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, b) in out.iter_mut().enumerate() {
            *b = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        Some(Salt(out))
    }

    /// The fingerprint of a secret of `kind` ("key", "token"): 32 hex digits (128 bits) of
    /// SHA-256(domain, salt, kind, secret). Without the salt it cannot be checked against a
    /// guessed key, and two deployments' fingerprints of one key differ.
    pub fn fingerprint(&self, kind: &str, secret: &str) -> String {
        let mut h = Sha256::new();
        h.update(b"gemini-rotator state fingerprint v1\0");
        h.update(self.0);
        h.update(kind.as_bytes());
        h.update([0]);
        h.update(secret.as_bytes());
        hex(&h.finalize()[..16])
    }
}

impl std::fmt::Debug for Salt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Salt(..)")
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The store in use, behind a short mutex taken only by control tasks (the saver, reloads).
pub struct Persist {
    active: Mutex<Active>,
    /// The shared store's lookups, read without the mutex (requests ask it on a miss, while
    /// the saver may hold the mutex through a file write).
    lookup: ArcSwapOption<Lookup>,
    names: Arc<ArcSwap<Names>>,
    generation: AtomicU64,
}

enum Active {
    /// Nothing kept beyond memory.
    Memory,
    File(FileStore),
    Redis(redis::RedisStore),
}

impl Default for Persist {
    fn default() -> Self {
        Persist {
            active: Mutex::new(Active::Memory),
            lookup: ArcSwapOption::empty(),
            names: Arc::default(),
            generation: AtomicU64::new(0),
        }
    }
}

/// The names the token ledger may hold for a config: every client token's name, the open
/// proxy's and the overflow's.
pub(crate) fn ledger_names(cfg: &Config) -> Vec<String> {
    cfg.auth
        .tokens
        .iter()
        .map(|t| t.name.clone())
        .chain([OPEN.to_string(), OTHER.to_string()])
        .collect()
}

/// The names a resource pin's owner may have: the ledger's names, an open proxy's anonymous
/// callers (``), and the loopback admin's and dashboard's callers.
pub(crate) fn owner_names(tokens: &[String]) -> impl Iterator<Item = &str> {
    tokens
        .iter()
        .map(String::as_str)
        .chain(["", "admin", "dashboard"])
}

/// Why a snapshot is saved (what the log line says).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    Periodic,
    Shutdown,
}

fn lock(m: &Mutex<Active>) -> MutexGuard<'_, Active> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn now() -> Now {
    Now::new(Instant::now(), SystemTime::now())
}

impl Persist {
    /// Applies the `[state]` of a config just installed (at start and after each reload):
    /// the same store is kept; another one is built and swapped in, after the one it replaces
    /// wrote its last snapshot. Never fails: problems are logged.
    pub fn configure(&self, cfg: &Config, ledgers: &Ledgers) {
        let generation = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
        self.names.store(Arc::new(Names {
            tokens: ledger_names(cfg),
            admins: cfg
                .auth
                .admin_tokens
                .iter()
                .map(|t| t.fingerprint())
                .collect(),
            generation,
        }));
        let (pool, usage, affinity) = (&ledgers.pool, &*ledgers.usage, &*ledgers.affinity);
        let mut active = lock(&self.active);
        let same = match (&*active, &cfg.state.store) {
            (Active::Memory, Store::Memory) => true,
            (Active::File(f), Store::File { path }) => f.path() == path,
            (Active::Redis(r), Store::Redis(want)) => r.serves(want),
            _ => false,
        };
        if same {
            return;
        }
        match &mut *active {
            Active::File(f) => f.save(pool, usage, affinity, now(), Why::Shutdown),
            // No more events or claims go to it; it sends its last changes on its own (this
            // runs on the control runtime, where its task runs too: no waiting here).
            Active::Redis(r) => {
                self.lookup.store(None);
                ledgers.outbox.close();
                ledgers.pool.set_claimer(None);
                r.stop(false);
            }
            Active::Memory => {}
        }
        *active = match &cfg.state.store {
            Store::Memory => {
                tracing::info!("state: kept in memory only (store = \"memory\")");
                Active::Memory
            }
            Store::File { path } => {
                Active::File(FileStore::open(path, cfg, pool, usage, affinity, now()))
            }
            Store::Redis(r) => {
                let rx = ledgers.outbox.open();
                let store = redis::RedisStore::start(r, ledgers.clone(), self.names.clone(), rx);
                self.lookup.store(Some(Arc::new(store.lookup())));
                Active::Redis(store)
            }
        };
    }

    /// Where to look up what other replicas made (a session, a stored response): a shared
    /// store only.
    pub fn lookup(&self) -> Option<Arc<Lookup>> {
        self.lookup.load_full()
    }

    /// The store in use and whether it works.
    pub fn status(&self) -> StoreStatus {
        match &*lock(&self.active) {
            Active::Memory => StoreStatus {
                store: "memory",
                ok: true,
                last_error: None,
                since: None,
            },
            Active::File(f) => f.status(),
            Active::Redis(r) => {
                let h = r.health();
                StoreStatus {
                    store: "redis",
                    ok: h.ok,
                    last_error: h.last_error,
                    since: Some(h.since),
                }
            }
        }
    }

    /// Writes a snapshot when the state changed since the last one (the memory store writes
    /// nothing). Never fails: a write error is logged once per run of failures.
    pub fn save(&self, pool: &KeyPool, usage: &TokenUsage, affinity: &Affinity, why: Why) {
        match &mut *lock(&self.active) {
            Active::File(f) => f.save(pool, usage, affinity, now(), why),
            // The Redis store sends as it goes; at shutdown, its last push (bounded).
            Active::Redis(r) if why == Why::Shutdown => r.stop(true),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests;
