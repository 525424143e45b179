//! The live state: the current config snapshot behind an `ArcSwap`, plus what outlives
//! snapshots (key health, token usage, the state store that keeps them across restarts, the
//! models cache, the shutdown lifecycle).
//!
//! A snapshot holds everything the hot path reads for one config: the validated config, the
//! pool view bound to the shared health cells, and the upstream clients. It is built whole
//! (fallibly) before it is stored (infallibly); each request loads it once and keeps that `Arc`
//! to its end, streams included. A reload that leaves `[upstream]` (and `server.workers`) as
//! they were shares the previous snapshot's `Upstream`, so its pooled connections stay warm.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::lockout::Lockout;
use crate::logging::LogHandle;
use crate::models_cache::ModelsCache;
use crate::outbox::Outbox;
use crate::pool::{KeyPool, Lease, PoolView};
use crate::reload_state::ReloadState;
use crate::sessions::Sessions;
use crate::signatures::SignatureCache;
use crate::store::{Ledgers, Persist, Why};
use crate::timeline::Timeline;
use crate::upstream::Upstream;
use crate::usage::{TokenUsage, Tokens};

/// Everything one config produces for the hot path.
pub struct Snapshot {
    pub config: Config,
    pub pool: PoolView,
    /// Shared with the snapshots before and after it while `[upstream]` stays the same
    /// (`Snapshot::rebuild`): its clients' pooled connections outlive such reloads.
    pub upstream: Arc<Upstream>,
    /// Requests and tokens per client token name today: the ledger on `App`, reachable here
    /// from the hot path. It outlives snapshots (every snapshot holds the same one).
    pub usage: Arc<TokenUsage>,
    pub loaded_at: SystemTime,
}

impl Snapshot {
    /// Prepares a snapshot; fails (changing nothing) if the upstream client cannot be built.
    pub fn build(
        config: Config,
        keys: &KeyPool,
        usage: &Arc<TokenUsage>,
    ) -> Result<Snapshot, String> {
        Snapshot::assemble(config, keys, usage, None)
    }

    /// Prepares the snapshot that replaces `previous` (a reload): like `build`, but keeps
    /// `previous`'s upstream clients (and so their open connections) when `[upstream]` and the
    /// worker count did not change.
    pub fn rebuild(
        config: Config,
        keys: &KeyPool,
        usage: &Arc<TokenUsage>,
        previous: &Snapshot,
    ) -> Result<Snapshot, String> {
        Snapshot::assemble(config, keys, usage, Some(previous))
    }

    fn assemble(
        config: Config,
        keys: &KeyPool,
        usage: &Arc<TokenUsage>,
        previous: Option<&Snapshot>,
    ) -> Result<Snapshot, String> {
        let upstream = match previous {
            Some(p) if p.upstream.serves(&config.upstream, config.server.workers) => {
                p.upstream.clone()
            }
            _ => Arc::new(Upstream::new(&config.upstream, config.server.workers)?),
        };
        let pool = keys.bind(&config.pool);
        keys.configure_models(&config.models);
        Ok(Snapshot {
            config,
            pool,
            upstream,
            usage: usage.clone(),
            loaded_at: SystemTime::now(),
        })
    }

    /// A model request Gemini answered: the key's token counts (in the pool) and the client
    /// token's request and tokens (in the ledger, by the token's name).
    pub fn record_usage(&self, lease: &Lease, token: Option<&str>, tokens: Option<Tokens>) {
        if lease.model.is_empty() {
            return;
        }
        self.pool.record_tokens(lease, tokens);
        self.usage.record(token, tokens.unwrap_or_default());
    }
}

/// Shutdown phases: stop accepting and fail readiness, then (after the grace period) tell
/// open streams to end with an error event.
#[derive(Default)]
pub struct Lifecycle {
    shutting_down: AtomicBool,
    stop: CancellationToken,
    drain: CancellationToken,
    /// Live API sessions, which outlive the HTTP connection they upgraded: shutdown waits
    /// for them as for connections.
    sessions: tokio_util::task::TaskTracker,
}

impl Lifecycle {
    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
        self.stop.cancel();
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
    }

    /// Fires when the server must stop accepting connections.
    pub fn stopping(&self) -> &CancellationToken {
        &self.stop
    }

    /// Fires when the grace period is over and open streams must end now.
    pub fn draining(&self) -> &CancellationToken {
        &self.drain
    }

    pub fn begin_drain(&self) {
        self.drain.cancel();
    }

    /// Where Live API sessions run (`api::live`), so that shutdown can wait for them.
    pub fn sessions(&self) -> &tokio_util::task::TaskTracker {
        &self.sessions
    }
}

pub struct App {
    live: ArcSwap<Snapshot>,
    /// Key health by key identity; outlives snapshots.
    pub keys: KeyPool,
    /// Requests and tokens per client token name today (every snapshot holds it too).
    pub usage: Arc<TokenUsage>,
    pub models: ModelsCache,
    pub signatures: Arc<SignatureCache>,
    pub lifecycle: Lifecycle,
    pub reload: ReloadState,
    /// Dashboard logins (server-side session ids).
    pub sessions: Arc<Sessions>,
    /// Addresses that presented too many wrong or missing credentials lately.
    pub lockout: Arc<Lockout>,
    /// Requests and errors per minute over the last hour (the dashboard's charts).
    pub timeline: Arc<Timeline>,
    /// Responses API responses kept for `previous_response_id` and `GET` (issue #17).
    pub stored_responses: Arc<crate::stored_responses::StoredResponses>,
    /// Where key health and the token ledger are kept beyond memory (`[state]`).
    pub persist: Persist,
    /// What the small ledgers tell a shared store (`[state] store = "redis"`).
    pub outbox: Outbox,
    /// Gemini resources (files, caches, batches, upload sessions) by the key that created
    /// them and the client token that owns them (issue #18): this replica's table; `pin` and
    /// `pins_of` add what a shared store knows.
    pub affinity: Arc<crate::affinity::Affinity>,
}

impl App {
    pub fn new(config: Config, log: Option<LogHandle>) -> Result<Arc<App>, String> {
        let keys = KeyPool::new();
        let usage = Arc::new(TokenUsage::default());
        let snapshot = Snapshot::build(config, &keys, &usage)?;
        let outbox = Outbox::default();
        let app = App {
            live: ArcSwap::from_pointee(snapshot),
            usage,
            keys,
            models: ModelsCache::default(),
            signatures: Arc::new(SignatureCache::new(outbox.clone())),
            lifecycle: Lifecycle::default(),
            reload: ReloadState::new(log),
            sessions: Arc::new(Sessions::new(outbox.clone())),
            lockout: Arc::new(Lockout::new(outbox.clone())),
            timeline: Arc::default(),
            stored_responses: Arc::new(crate::stored_responses::StoredResponses::shared(
                outbox.clone(),
            )),
            persist: Persist::default(),
            affinity: Arc::new(crate::affinity::Affinity::shared(outbox.clone())),
            outbox,
        };
        // After `bind`: the saved state is merged into the cells of the configured keys.
        app.configure_state();
        Ok(Arc::new(app))
    }

    /// The current snapshot. Load once per request and pass it down.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.live.load_full()
    }

    /// Swaps in a prepared snapshot.
    pub fn install(&self, snapshot: Snapshot) {
        self.live.store(Arc::new(snapshot));
    }

    /// Applies the current config's `[state]` (a changed store is built and swapped in; see
    /// `store::Persist::configure`). Does file I/O: call it off the request path.
    pub fn configure_state(&self) {
        self.persist
            .configure(&self.snapshot().config, &self.ledgers());
    }

    /// `Sessions::admits`, and for a cookie this replica does not know, the shared store's
    /// word (a session opened on another replica moments ago; one bounded Redis call).
    pub async fn admits_session(
        &self,
        headers: &http::HeaderMap,
        admin_tokens: &[crate::secret::Token],
        local: bool,
    ) -> bool {
        if self.sessions.admits(headers, admin_tokens, local) {
            return true;
        }
        let Some(id) = crate::sessions::session_cookie(headers) else {
            return false;
        };
        let hash = crate::sessions::id_hash(id);
        if self.sessions.knows(&hash) {
            return false;
        }
        let Some(lookup) = self.persist.lookup() else {
            return false;
        };
        let Some((opened_by, left)) = lookup.session(hash).await else {
            return false;
        };
        self.sessions.insert_remote(hash, opened_by, left);
        self.sessions.admits(headers, admin_tokens, local)
    }

    /// The stored response `id` for `owner`: this replica's, else (with a shared store) one
    /// another replica made, kept here from then on.
    pub async fn stored_response(
        &self,
        id: &str,
        owner: Option<&str>,
    ) -> Option<Arc<crate::stored_responses::Stored>> {
        let now = std::time::Instant::now();
        if let Some(found) = self.stored_responses.get(id, owner, now) {
            return Some(found);
        }
        let lookup = self.persist.lookup()?;
        let found = lookup.response(id, owner).await?;
        self.stored_responses.insert(id.to_string(), found, now);
        self.stored_responses.get(id, owner, now)
    }

    /// The live pin of the resource `name`: this replica's, else (with a shared store) the one
    /// another replica made, kept here from then on (one bounded, rate-limited Redis call;
    /// none when Redis is down: this replica's table is the answer then).
    pub async fn pin(
        &self,
        name: &str,
        now: std::time::SystemTime,
    ) -> Option<crate::affinity::Pin> {
        if let Some(pin) = self.affinity.lookup(name, now) {
            return Some(pin);
        }
        let lookup = self.persist.lookup()?;
        let pin = lookup.pin(name).await.filter(|p| p.expires > now)?;
        self.affinity.insert_remote(name, pin.clone(), now);
        Some(pin)
    }

    /// `owner`'s live resources whose names start with `prefix`, sorted by name: this
    /// replica's and (with a shared store) those the others made, kept here from then on.
    pub async fn pins_of(
        &self,
        owner: &str,
        prefix: &str,
        now: std::time::SystemTime,
    ) -> Vec<(String, crate::affinity::Pin)> {
        let mut mine = self.affinity.list_by_owner(owner, prefix, now);
        let Some(lookup) = self.persist.lookup() else {
            return mine;
        };
        let known: std::collections::HashSet<&str> = mine.iter().map(|(n, _)| n.as_str()).collect();
        let more = lookup.pins_of(owner, prefix, |n| known.contains(n)).await;
        let more: Vec<_> = more
            .into_iter()
            .filter(|(_, p)| p.expires > now && &*p.owner == owner)
            .collect();
        if more.is_empty() {
            return mine;
        }
        for (name, pin) in &more {
            self.affinity.insert_remote(name, pin.clone(), now);
        }
        mine.extend(more);
        mine.sort_by(|a, b| a.0.cmp(&b.0));
        mine.dedup_by(|a, b| a.0 == b.0);
        mine
    }

    /// Deletes the stored response `id` for `owner` everywhere; whether it existed.
    pub async fn delete_stored_response(&self, id: &str, owner: Option<&str>) -> bool {
        if self.stored_response(id, owner).await.is_none() {
            return false;
        }
        self.stored_responses
            .delete(id, owner, std::time::Instant::now())
    }

    /// The handles a state store keeps and feeds.
    pub fn ledgers(&self) -> Ledgers {
        Ledgers {
            pool: self.keys.clone(),
            usage: self.usage.clone(),
            sessions: self.sessions.clone(),
            lockout: self.lockout.clone(),
            signatures: self.signatures.clone(),
            stored_responses: self.stored_responses.clone(),
            affinity: self.affinity.clone(),
            outbox: self.outbox.clone(),
        }
    }

    /// An admin reset of `keys` (`None`: every key), `model` only when given, applied by the
    /// other replicas too when the state store is shared.
    pub fn reset_fleet(&self, keys: Option<Vec<crate::secret::ApiKey>>, model: Option<&str>) {
        self.outbox.send(crate::outbox::Event::Reset {
            keys,
            model: model.map(str::to_string),
        });
    }

    /// Saves key health and the token ledger to the state store if they changed (a no-op for
    /// `store = "memory"`). Does file I/O: call it off the request path.
    pub fn save_state(&self, why: Why) {
        self.persist
            .save(&self.keys, &self.usage, &self.affinity, why);
    }
}
