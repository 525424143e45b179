//! Resource affinity: which pool key created a Gemini resource (`files/…`, `cachedContents/…`,
//! `batches/…`, operations, the proxy's own upload sessions), which client token asked for it,
//! and until when it lives. A resource belongs to the Google project of the key that created
//! it, so every later call naming it goes with that key; and it belongs to the client token
//! that created it, which alone may reach it.
//!
//! The table is in memory, bounded (`MAX_ENTRIES` over all, `MAX_PER_OWNER` per client token:
//! one token filling the table evicts its own entries first, never another token's), and
//! expiring (an expired entry is never returned). Its interface is narrow on purpose (`insert`,
//! `lookup`, `remove`, `list_by_owner`): this replica's table. With a shared state store
//! (`outbox`), `insert` and `remove` are also told to it, and `state::App::pin` / `pins_of`
//! look up there what this table misses (`insert_remote` keeps the answer here, `forget`
//! drops what another replica removed); with `store = "file"` the table is in the snapshot
//! (`export`, `insert_remote` at start). An upload session is kept under
//! [`upload_name`] (a hash of its id: the id is a capability and is kept nowhere).
//! [`upload_group`] reads a token's files for the key its next upload should prefer (so
//! files uploaded together can be used together); [`Affinity::upload_group_begun`] covers the
//! uploads that start before the group's first file exists (uploads sent at once).
//! It does no I/O and reads no clock: `now` is an argument. Keys print masked.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};

use crate::outbox::{Event, Outbox};
use crate::secret::ApiKey;

/// Entries over all client tokens.
pub const MAX_ENTRIES: usize = 200_000;
/// Entries of one client token.
pub const MAX_PER_OWNER: usize = 20_000;

/// How long Google keeps an uploaded file.
pub const FILE_TTL: Duration = Duration::from_secs(48 * 3600);
/// A cache whose answer names no `expireTime` (Google's default TTL is one hour).
pub const CACHE_TTL: Duration = Duration::from_secs(3600);
/// Batches, operations and the rest: kept a week (a batch may run 48 hours, and its results
/// are fetched after that).
pub const OTHER_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
/// A resumable upload session (Google keeps one a week).
pub const UPLOAD_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// One remembered resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pin {
    /// The key that created it.
    pub key: ApiKey,
    /// The client token that asked (its name; empty for an open proxy's anonymous callers).
    pub owner: Arc<str>,
    pub expires: SystemTime,
    /// For an upload session: where its chunks go upstream (path and query, on the base URL).
    pub upstream: Option<Arc<str>>,
}

#[derive(Default)]
struct Table {
    entries: HashMap<Box<str>, Pin>,
    per_owner: HashMap<Arc<str>, usize>,
}

impl Table {
    fn take(&mut self, name: &str) -> Option<Pin> {
        let pin = self.entries.remove(name)?;
        if let Some(n) = self.per_owner.get_mut(&pin.owner) {
            *n -= 1;
            if *n == 0 {
                self.per_owner.remove(&pin.owner);
            }
        }
        Some(pin)
    }

    fn purge(&mut self, now: SystemTime) {
        let expired: Vec<Box<str>> = self
            .entries
            .iter()
            .filter(|(_, p)| p.expires <= now)
            .map(|(n, _)| n.clone())
            .collect();
        for name in expired {
            self.take(&name);
        }
    }

    /// The entry that expires first, among `owner`'s when given.
    fn soonest(&self, owner: Option<&str>) -> Option<Box<str>> {
        self.entries
            .iter()
            .filter(|(_, p)| owner.is_none_or(|o| &*p.owner == o))
            .min_by_key(|(_, p)| p.expires)
            .map(|(n, _)| n.clone())
    }
}

/// The table of remembered resources.
#[derive(Default)]
pub struct Affinity {
    table: Mutex<Table>,
    outbox: Outbox,
    /// Bumped by every insert and removal (a snapshot writer skips work while unchanged).
    version: AtomicU64,
    /// Upload groups begun on this replica, by client token: the key and when it began. One
    /// entry per token at most (tokens are the config's), dropped once older than the window.
    groups_begun: Mutex<HashMap<Arc<str>, (ApiKey, SystemTime)>>,
}

/// The name an upload session is kept under: `uploads/` and the SHA-256 of its id, hex.
pub fn upload_name(id: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"gemini-rotator upload session\0");
    h.update(id.as_bytes());
    let hex: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
    format!("uploads/{hex}")
}

impl Affinity {
    pub fn new() -> Self {
        Affinity::default()
    }

    /// A table whose inserts and removals are also told to `outbox`.
    pub fn shared(outbox: Outbox) -> Self {
        Affinity {
            outbox,
            ..Affinity::default()
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Remembers `name` (replacing what was there). When the table or the owner's share of it
    /// is full, expired entries go first, then the owner's own soonest-expiring one, then
    /// (the table full of live entries of many owners) the soonest-expiring of all.
    pub fn insert(&self, name: &str, pin: Pin, now: SystemTime) {
        if self.outbox.listening() {
            self.outbox.send(Event::PinSet {
                name: name.to_string(),
                key: pin.key.clone(),
                owner: pin.owner.to_string(),
                expires: pin.expires,
                upstream: pin.upstream.as_deref().map(str::to_string),
            });
        }
        self.insert_remote(name, pin, now);
    }

    /// Remembers what the state store knew (not told to it again).
    pub fn insert_remote(&self, name: &str, pin: Pin, now: SystemTime) {
        self.version.fetch_add(1, Ordering::Relaxed);
        let mut t = self.lock();
        t.take(name);
        let owned = t.per_owner.get(&pin.owner).copied().unwrap_or(0);
        if owned >= MAX_PER_OWNER || t.entries.len() >= MAX_ENTRIES {
            t.purge(now);
        }
        if t.per_owner.get(&pin.owner).copied().unwrap_or(0) >= MAX_PER_OWNER {
            if let Some(victim) = t.soonest(Some(&pin.owner)) {
                t.take(&victim);
            }
        }
        if t.entries.len() >= MAX_ENTRIES {
            if let Some(victim) = t.soonest(None) {
                t.take(&victim);
            }
        }
        *t.per_owner.entry(pin.owner.clone()).or_insert(0) += 1;
        t.entries.insert(Box::from(name), pin);
    }

    /// The live entry for `name`.
    pub fn lookup(&self, name: &str, now: SystemTime) -> Option<Pin> {
        let mut t = self.lock();
        match t.entries.get(name) {
            Some(pin) if pin.expires > now => Some(pin.clone()),
            Some(_) => {
                t.take(name);
                None
            }
            None => None,
        }
    }

    /// Forgets `name` here and (with a shared store) on every replica.
    pub fn remove(&self, name: &str) -> Option<Pin> {
        let pin = self.forget(name)?;
        self.outbox.send(Event::PinRemoved {
            name: name.to_string(),
            owner: pin.owner.to_string(),
        });
        Some(pin)
    }

    /// Forgets `name` here only (another replica removed it).
    pub fn forget(&self, name: &str) -> Option<Pin> {
        self.version.fetch_add(1, Ordering::Relaxed);
        self.lock().take(name)
    }

    /// Changes with every insert and removal (not with entries merely expiring).
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Relaxed)
    }

    /// Every live entry, sorted by name (for a snapshot file).
    pub fn export(&self, now: SystemTime) -> Vec<(String, Pin)> {
        let t = self.lock();
        let mut out: Vec<(String, Pin)> = t
            .entries
            .iter()
            .filter(|(_, p)| p.expires > now)
            .map(|(n, p)| (n.to_string(), p.clone()))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// `owner`'s live resources whose names start with `prefix` (`"files/"`), sorted by name.
    pub fn list_by_owner(&self, owner: &str, prefix: &str, now: SystemTime) -> Vec<(String, Pin)> {
        let t = self.lock();
        let mut out: Vec<(String, Pin)> = t
            .entries
            .iter()
            .filter(|(n, p)| &*p.owner == owner && n.starts_with(prefix) && p.expires > now)
            .map(|(n, p)| (n.to_string(), p.clone()))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// The key of `owner`'s upload group begun on this replica less than `window` ago; else
    /// `begin`'s key (the pool's free pick), which begins a group now. The caller asks this
    /// only when the token's files show no current group (`upload_group`), so uploads sent at
    /// once, before the first of them has made its file, still share one key.
    pub fn upload_group_begun(
        &self,
        owner: &str,
        window: Duration,
        now: SystemTime,
        begin: impl FnOnce() -> Option<ApiKey>,
    ) -> Option<ApiKey> {
        let young = |began: &SystemTime| now.duration_since(*began).unwrap_or_default() < window;
        let mut groups = self
            .groups_begun
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some((key, _)) = groups.get(owner).filter(|(_, began)| young(began)) {
            return Some(key.clone());
        }
        groups.retain(|_, (_, began)| young(began));
        let key = begin()?;
        groups.insert(Arc::from(owner), (key.clone(), now));
        Some(key)
    }

    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// When a file was created, from its pin: Google keeps a file `FILE_TTL` from its creation
/// (`expirationTime` is `createTime` plus 48 hours; a file whose answer named no expiry was
/// pinned with `now + FILE_TTL`), so no creation time needs keeping beside the expiry.
fn file_created(pin: &Pin) -> SystemTime {
    pin.expires
        .checked_sub(FILE_TTL)
        .unwrap_or(SystemTime::UNIX_EPOCH)
}

/// The key of a client token's current *upload group*, given that token's live files (any
/// order; `App::pins_of(owner, "files/", now)`): the key its next upload prefers, if any.
///
/// A group is a run of the token's files on one key: it starts at an upload placed freely
/// (the pool's normal pick) and takes every later upload while `now - start < window`; the
/// first upload after that is placed freely again and starts the next group. Derived, not
/// kept: the token's files newest first, while they are on the newest one's key, are the
/// current key's run; that run is cut into windows from its oldest file (a file `window` or
/// more after its window's start begins the next one: a free pick that happened to land on
/// the same key), and the last window's start is the group's. `None`: no file, grouping off
/// (`window` zero), or the group is `window` old (the next upload rotates).
pub fn upload_group(files: &[(String, Pin)], window: Duration, now: SystemTime) -> Option<ApiKey> {
    if window.is_zero() {
        return None;
    }
    let mut newest_first: Vec<(SystemTime, &ApiKey)> = files
        .iter()
        .filter(|(name, p)| name.starts_with("files/") && p.expires > now)
        .map(|(_, p)| (file_created(p), &p.key))
        .collect();
    newest_first.sort_by_key(|(created, _)| std::cmp::Reverse(*created));
    let (_, key) = *newest_first.first()?;
    let run = newest_first.iter().take_while(|(_, k)| *k == key).count();
    let mut start: Option<SystemTime> = None;
    for (created, _) in newest_first[..run].iter().rev() {
        match start {
            Some(s) if created.duration_since(s).unwrap_or_default() < window => {}
            _ => start = Some(*created),
        }
    }
    // A creation time ahead of this clock (Google's clock runs a little ahead) is "just now".
    let age = now.duration_since(start?).unwrap_or_default();
    (age < window).then(|| key.clone())
}

/// The default lifetime of a resource by its name, when Google's answer names none.
pub fn default_ttl(name: &str) -> Duration {
    if name.starts_with("files/") {
        FILE_TTL
    } else if name.starts_with("cachedContents/") {
        CACHE_TTL
    } else if name.starts_with("uploads/") {
        UPLOAD_TTL
    } else {
        OTHER_TTL
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> ApiKey {
        ApiKey::new(format!("AIzaSyFAKE-affinity-test-key-000000{n:02}"))
    }

    fn pin(n: u8, owner: &str, expires: SystemTime) -> Pin {
        Pin {
            key: key(n),
            owner: Arc::from(owner),
            expires,
            upstream: None,
        }
    }

    #[test]
    fn insert_lookup_remove_and_expiry() {
        let t = Affinity::new();
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let later = now + Duration::from_secs(60);
        t.insert("files/a", pin(1, "alice", later), now);
        t.insert("files/b", pin(2, "bob", later), now);
        t.insert("cachedContents/c", pin(1, "alice", later), now);
        assert_eq!(t.lookup("files/a", now).map(|p| p.key), Some(key(1)));
        assert_eq!(t.lookup("files/a", later), None, "expired");
        assert_eq!(
            t.lookup("files/a", now),
            None,
            "an expired entry is dropped"
        );
        let alice: Vec<String> = t
            .list_by_owner("alice", "", now)
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(alice, vec!["cachedContents/c".to_string()]);
        assert_eq!(t.list_by_owner("bob", "files/", now).len(), 1);
        assert_eq!(t.list_by_owner("bob", "cachedContents/", now).len(), 0);
        assert!(t.remove("files/b").is_some());
        assert!(t.lookup("files/b", now).is_none());
        assert_eq!(t.len(), 1);
        assert_eq!(t.export(now).len(), 1);
    }

    #[test]
    fn a_shared_table_tells_inserts_and_removals_but_not_remote_ones() {
        let outbox = Outbox::default();
        let mut rx = outbox.open();
        let t = Affinity::shared(outbox);
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let later = now + Duration::from_secs(60);
        t.insert("files/a", pin(1, "alice", later), now);
        t.insert_remote("files/b", pin(2, "bob", later), now);
        assert!(t.remove("files/a").is_some());
        assert!(t.forget("files/b").is_some());
        assert!(t.remove("files/none").is_none());
        let got: Vec<Event> = std::iter::from_fn(|| rx.try_recv().ok()).collect();
        assert_eq!(
            got,
            vec![
                Event::PinSet {
                    name: "files/a".into(),
                    key: key(1),
                    owner: "alice".into(),
                    expires: later,
                    upstream: None,
                },
                Event::PinRemoved {
                    name: "files/a".into(),
                    owner: "alice".into(),
                },
            ]
        );
    }

    #[test]
    fn upload_sessions_are_kept_by_a_hash_of_their_id() {
        let id = "ab".repeat(32);
        let name = upload_name(&id);
        assert!(name.starts_with("uploads/") && name.len() == 8 + 64);
        assert!(!name.contains(&id));
        assert_eq!(name, upload_name(&id));
        assert_ne!(name, upload_name(&"cd".repeat(32)));
    }

    #[test]
    fn one_owner_filling_its_share_evicts_only_its_own() {
        let t = Affinity::new();
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        t.insert(
            "files/victim",
            pin(1, "bob", now + Duration::from_secs(1)),
            now,
        );
        for i in 0..MAX_PER_OWNER + 10 {
            let expires = now + Duration::from_secs(100 + i as u64);
            t.insert(&format!("files/m{i}"), pin(2, "mallory", expires), now);
        }
        assert!(t.lookup("files/victim", now).is_some());
        assert_eq!(t.list_by_owner("mallory", "", now).len(), MAX_PER_OWNER);
        // The oldest of mallory's went first.
        assert!(t.lookup("files/m0", now).is_none());
        assert!(t
            .lookup(&format!("files/m{}", MAX_PER_OWNER + 9), now)
            .is_some());
    }

    #[test]
    fn an_upload_group_begun_here_holds_its_key_for_its_window() {
        let table = Affinity::new();
        let window = Duration::from_secs(600);
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let k = |s: &str| Some(ApiKey::new(s));
        let begun = |owner: &str, at: SystemTime, pick: &str| {
            table.upload_group_begun(owner, window, at, || k(pick))
        };
        assert_eq!(
            begun("a", now, "K1"),
            k("K1"),
            "a free pick begins the group"
        );
        let later = now + Duration::from_secs(599);
        assert_eq!(
            begun("a", later, "K2"),
            k("K1"),
            "uploads within the window join it"
        );
        assert_eq!(
            begun("b", later, "K3"),
            k("K3"),
            "another token's group is its own"
        );
        let after = now + window;
        assert_eq!(
            begun("a", after, "K2"),
            k("K2"),
            "the window over, a new group"
        );
        assert_eq!(
            table.upload_group_begun("c", window, now, || None),
            None,
            "no key to pick, no group"
        );
    }

    #[test]
    fn an_upload_group_lasts_its_window_from_its_first_file() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(10_000_000);
        let window = Duration::from_secs(600);
        // A file created `ago` seconds before now, on key `k`.
        let file = |name: &str, k: u8, ago: u64| {
            let created = now - Duration::from_secs(ago);
            (format!("files/{name}"), pin(k, "alice", created + FILE_TTL))
        };
        let group = |files: &[(String, Pin)], at: SystemTime| upload_group(files, window, at);
        assert_eq!(group(&[], now), None, "no file: a free pick");
        // One file a minute old: its key, until its window is over.
        let one = [file("a", 1, 60)];
        assert_eq!(group(&one, now), Some(key(1)));
        assert_eq!(group(&one, now + Duration::from_secs(539)), Some(key(1)));
        assert_eq!(group(&one, now + Duration::from_secs(540)), None);
        assert_eq!(
            upload_group(&one, Duration::ZERO, now),
            None,
            "grouping off"
        );
        // The group starts at its oldest file, whatever came later in it.
        let run = [file("a", 1, 590), file("b", 1, 300), file("c", 1, 5)];
        assert_eq!(group(&run, now), Some(key(1)));
        assert_eq!(group(&run, now + Duration::from_secs(10)), None);
        // The newest file on another key (the group's key could not serve): a new group there.
        let moved = [file("a", 1, 100), file("b", 2, 50), file("c", 1, 500)];
        assert_eq!(group(&moved, now), Some(key(2)));
        // A free pick that landed on the old group's key starts a group of its own.
        let again = [file("a", 1, 2000), file("b", 1, 1700), file("c", 1, 30)];
        assert_eq!(group(&again, now), Some(key(1)));
        let old = [file("a", 1, 2000), file("b", 1, 1000)];
        assert_eq!(group(&old, now), None, "the last window is over");
        // Only files count, and only live ones.
        let other = [(
            "cachedContents/x".to_string(),
            pin(3, "alice", now + FILE_TTL),
        )];
        assert_eq!(group(&other, now), None);
        // A creation a little ahead of this clock is just now.
        let ahead = [file("a", 1, 0)];
        assert_eq!(group(&ahead, now - Duration::from_secs(2)), Some(key(1)));
    }

    #[test]
    fn default_lifetimes() {
        assert_eq!(default_ttl("files/x"), FILE_TTL);
        assert_eq!(default_ttl("cachedContents/x"), CACHE_TTL);
        assert_eq!(default_ttl("batches/x"), OTHER_TTL);
    }
}
