//! `store = "redis"`: what the pool and the small ledgers learn, shared by every replica on
//! one Redis server (or Valkey, KeyDB, a managed Redis) and one `prefix`.
//!
//! Nothing here is on the request path. One sync task per store (on the control runtime):
//! - every [`PUSH_EVERY`] it drains what changed (`KeyPool::drain`: rests with their end,
//!   day-outs, disabled keys, failures, and the requests and tokens counted since the last
//!   drain; `TokenUsage::drain_at`) and sends it in one Lua call (`MERGE`), which keeps the
//!   later of two rests, adds the counts (`HINCRBY`, expiring after the quota day), and
//!   publishes the merged result on `{prefix}events`; the reply is applied here too, so a
//!   replica's counts become the fleet's totals;
//! - it applies what the others publish (the pool never shortens a rest nor lowers a count),
//!   and every [`RECONCILE_EVERY`] reads everything back (a backstop for lost messages);
//! - the small ledgers' events (`outbox`: failed credentials, dashboard sessions, thought
//!   signatures, stored responses, resource pins, admin resets) go out as they come.
//!
//! Resource pins (`affinity`) are kept as `{prefix}a:{name}` (the key's and the owner's
//! fingerprints, the expiry, an upload session's upstream path; an upload session's name is
//! already a hash of its id), expiring with the resource, and listed per owner in the sorted
//! set `{prefix}ao:{owner fingerprint}` (scored by expiry, trimmed of expired members and to
//! `affinity::MAX_PER_OWNER`). A replica that misses one asks ([`Lookup::pin`],
//! [`Lookup::pins_of`]; bounded in time and rate); a removal is published so the others drop
//! their copy. After every connect a replica sends every pin it knows (a Redis that lost its
//! data gets them back).
//!
//! Redis is never a single point of failure: every call is bounded by `timeout`; on any error
//! the replica goes on from memory, says so once (a WARN, `/status`, the
//! `gemini_rotator_state_store_up` metric), reconnects with backoff and then merges both ways
//! (its whole state out, everything in). Counts that could not be sent are kept and sent then.
//!
//! No secret reaches Redis: keys, client token names and dashboard session openers appear as
//! fingerprints salted with the deployment's salt (`{prefix}salt`, made once by whichever
//! replica comes first), session ids as hashes. Shared deadlines are on the Redis server's
//! clock (`TIME`): each replica converts with its measured offset.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use futures_util::StreamExt;
use redis::aio::MultiplexedConnection;
use redis::AsyncConnectionConfig;
use serde::{Deserialize, Deserializer, Serialize};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{owner_names, Ledgers, Names, Salt};
use crate::affinity::{Pin, MAX_PER_OWNER};
use crate::config::RedisStore as RedisConfig;
use crate::outbox::Event;
use crate::pool::{KeyPool, Now, SavedKey, SavedModel, SavedRest};
use crate::quota_day::{QuotaClock, QuotaDay};
use crate::secret::{ApiKey, RedisUrl};
use crate::stored_responses::{Stored, TTL as RESPONSE_TTL};
use crate::usage::{TokenTotals, Tokens};

/// How often changes are sent.
pub const PUSH_EVERY: Duration = Duration::from_millis(250);
/// How often everything is read back.
pub const RECONCILE_EVERY: Duration = Duration::from_secs(15);
/// Keys per `MERGE` call (bounds one call's size).
const BATCH: usize = 500;
/// Reconnect backoff.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// How long the last push may take at shutdown, beyond `timeout`.
const FINAL_GRACE: Duration = Duration::from_millis(500);

/// Merges a batch (ARGV[2], JSON) under the prefix ARGV[1]; publishes and returns the merged
/// state. Rests are `until_ms` (server clock) with `|d` for day-outs: the later one wins.
const MERGE: &str = r#"
local P = ARGV[1]
local b = cjson.decode(ARGV[2])
local rests, fails, dis = P .. 'rests', P .. 'fails', P .. 'disabled'
local counts, usage = P .. 'c:' .. b.day, P .. 'u:' .. b.day
local outk, outt = {}, {}
for _, k in ipairs(b.keys) do
  local ok = {k = k.k, m = {}}
  if k.dis then
    redis.call('HSET', dis, k.k, k.dis)
    ok.dis = k.dis
  else
    local d = redis.call('HGET', dis, k.k)
    if d then ok.dis = d end
  end
  for _, m in ipairs(k.m) do
    local f = k.k .. '|' .. m.n
    local om = {n = m.n}
    if m.f then
      if m.f > 0 then redis.call('HSET', fails, f, m.f) else redis.call('HDEL', fails, f) end
      om.f = m.f
    end
    local old = redis.call('HGET', rests, f)
    local oldu, oldd = 0, false
    if old then
      oldu = tonumber(string.match(old, '^(%d+)')) or 0
      oldd = string.sub(old, -2) == '|d'
    end
    if m.r and m.r > oldu then
      redis.call('HSET', rests, f, string.format('%d', m.r) .. (m.d and '|d' or ''))
      om.r = m.r
      om.d = m.d
    elseif oldu > 0 then
      om.r = oldu
      om.d = oldd
    end
    if b.day ~= '' and m.q then
      om.q = redis.call('HINCRBY', counts, f .. '|q', m.q)
      om.p = redis.call('HINCRBY', counts, f .. '|p', m.p)
      om.c = redis.call('HINCRBY', counts, f .. '|c', m.c)
      om.t = redis.call('HINCRBY', counts, f .. '|t', m.t)
    end
    ok.m[#ok.m + 1] = om
  end
  outk[#outk + 1] = ok
end
for _, t in ipairs(b.tokens) do
  local f = t.fp
  outt[#outt + 1] = {
    fp = f,
    q = redis.call('HINCRBY', usage, f .. '|q', t.q),
    p = redis.call('HINCRBY', usage, f .. '|p', t.p),
    c = redis.call('HINCRBY', usage, f .. '|c', t.c),
    t = redis.call('HINCRBY', usage, f .. '|t', t.t),
  }
end
if b.day ~= '' then
  redis.call('EXPIREAT', counts, b.expire_at)
  if #outt > 0 then redis.call('EXPIREAT', usage, b.expire_at) end
end
local msg = cjson.encode({from = b.from, day = b.day, keys = outk, tokens = outt})
redis.call('PUBLISH', P .. 'events', b.from .. ' ' .. msg)
return msg
"#;

/// Clears an admin reset: ARGV = prefix, model ('' = every model), then key fingerprints
/// (none = every key).
const RESET: &str = r#"
local P = ARGV[1]
local model = ARGV[2]
local want = {}
local all = #ARGV < 3
for i = 3, #ARGV do want[ARGV[i]] = true end
for _, h in ipairs({P .. 'rests', P .. 'fails'}) do
  for _, f in ipairs(redis.call('HKEYS', h)) do
    local fp, m = string.match(f, '^([^|]+)|(.*)$')
    if fp and (all or want[fp]) and (model == '' or m == model) then redis.call('HDEL', h, f) end
  end
end
if model == '' then
  if all then redis.call('DEL', P .. 'disabled')
  else for fp, _ in pairs(want) do redis.call('HDEL', P .. 'disabled', fp) end end
end
return 1
"#;

/// Counts a failed credential; publishes a lockout when `limit` is reached. ARGV = prefix,
/// ip, limit, window ms, sender id.
const FAILED: &str = r#"
local k = ARGV[1] .. 'l:' .. ARGV[2]
local n = redis.call('INCR', k)
if n == 1 then redis.call('PEXPIRE', k, ARGV[4]) end
local limit = tonumber(ARGV[3])
if n >= limit and (n == limit or n % 32 == 0) then
  local ms = redis.call('PTTL', k)
  redis.call('PUBLISH', ARGV[1] .. 'events',
    ARGV[5] .. ' ' .. cjson.encode({from = ARGV[5], lock = {ip = ARGV[2], ms = ms}}))
end
return n
"#;

/// Counts one request of a `daily_limit` key fleet-wide: ARGV = prefix, day, key fingerprint,
/// model, limit, expire_at, sender id. Returns the count after it, or `-(count + 1)` when the
/// limit was reached already; publishes the new count.
const CLAIM: &str = r#"
local h = ARGV[1] .. 'c:' .. ARGV[2]
local f = ARGV[3] .. '|' .. ARGV[4] .. '|q'
local c = tonumber(redis.call('HGET', h, f) or '0')
if c >= tonumber(ARGV[5]) then return -c - 1 end
local n = redis.call('HINCRBY', h, f, 1)
redis.call('EXPIREAT', h, ARGV[6])
redis.call('PUBLISH', ARGV[1] .. 'events', ARGV[7] .. ' ' .. cjson.encode({from = ARGV[7], day = ARGV[2],
  keys = {{k = ARGV[3], m = {{n = ARGV[4], q = n}}}}}))
return n
"#;

/// Remembers a pin: ARGV = its key, its JSON, its end (server clock, ms), the owner's index
/// ('' for none), the member, its score (the end on the writer's clock, ms), now on that clock,
/// the index's bound, the server clock's offset (ms).
const PIN: &str = r#"
redis.call('SET', ARGV[1], ARGV[2])
redis.call('PEXPIREAT', ARGV[1], ARGV[3])
local ix = ARGV[4]
if ix ~= '' then
  redis.call('ZADD', ix, ARGV[6], ARGV[5])
  redis.call('ZREMRANGEBYSCORE', ix, '-inf', ARGV[7])
  local n = redis.call('ZCARD', ix)
  local max = tonumber(ARGV[8])
  if n > max then redis.call('ZREMRANGEBYRANK', ix, 0, n - max - 1) end
  local top = redis.call('ZRANGE', ix, -1, -1, 'WITHSCORES')
  if top[2] then
    redis.call('PEXPIREAT', ix, string.format('%d', tonumber(top[2]) + tonumber(ARGV[9])))
  end
end
return 1
"#;

/// What a claim needs of the live connection (set while connected).
struct Link {
    conn: MultiplexedConnection,
    salt: Salt,
    offset_ms: i64,
}

/// `pool::Claimer` over the sync task's connection: one bounded call, `None` while
/// disconnected or when Redis does not answer within `timeout`.
struct RedisClaimer {
    link: Arc<arc_swap::ArcSwapOption<Link>>,
    prefix: String,
    timeout: Duration,
    id: String,
    clock: QuotaClock,
    script: redis::Script,
}

impl crate::pool::Claimer for RedisClaimer {
    fn claim(&self, key: &ApiKey, model: &str, limit: u64) -> crate::pool::ClaimFuture {
        let link = self.link.load_full();
        let now = SystemTime::now();
        let day = self.clock.day(now);
        let (Some(link), Some((day, left))) = (link, day) else {
            return Box::pin(async { None });
        };
        let expire_at = (unix_ms(now + left).saturating_add(link.offset_ms) / 1000).max(0) + 3600;
        let args = (
            self.prefix.clone(),
            day.to_string(),
            link.salt.fingerprint("key", key.expose()),
            model.to_string(),
            self.id.clone(),
        );
        let script = self.script.clone();
        let timeout = self.timeout;
        let mut conn = link.conn.clone();
        Box::pin(async move {
            let (prefix, day, fp, model, id) = args;
            let mut invocation = script.prepare_invoke();
            invocation
                .arg(prefix)
                .arg(day)
                .arg(fp)
                .arg(model)
                .arg(limit)
                .arg(expire_at)
                .arg(id);
            let reply: i64 = match tokio::time::timeout(timeout, invocation.invoke_async(&mut conn))
                .await
            {
                Ok(Ok(n)) => n,
                Ok(Err(e)) => {
                    tracing::info!(error = %describe(&e), "state: a daily_limit count failed; this replica decides alone");
                    return None;
                }
                Err(_) => {
                    tracing::info!(
                        "state: a daily_limit count timed out; this replica decides alone"
                    );
                    return None;
                }
            };
            Some(if reply < 0 {
                Err(u64::try_from(-(reply + 1)).unwrap_or(0))
            } else {
                Ok(u64::try_from(reply).unwrap_or(0))
            })
        })
    }
}

/// How the store is doing, for `/status` and the metric.
#[derive(Debug, Clone)]
pub struct Health {
    pub ok: bool,
    pub last_error: Option<String>,
    /// Since when `ok` has been what it is.
    pub since: SystemTime,
}

/// At most `per_sec` uses a second (lock-free).
struct Budget {
    per_sec: u64,
    /// (the current second, uses in it), packed: second << 32 | count.
    state: std::sync::atomic::AtomicU64,
}

impl Budget {
    fn new(per_sec: u64) -> Budget {
        Budget {
            per_sec,
            state: Default::default(),
        }
    }

    /// One use fits this second's budget.
    fn allowed(&self) -> bool {
        let second = u64::try_from(unix_ms(SystemTime::now()) / 1000).unwrap_or(0) & 0xffff_ffff;
        let mut cur = self.state.load(Ordering::Relaxed);
        loop {
            let (s, n) = (cur >> 32, cur & 0xffff_ffff);
            let next = if s == second {
                if n >= self.per_sec {
                    return false;
                }
                cur + 1
            } else {
                (second << 32) | 1
            };
            match self
                .state
                .compare_exchange_weak(cur, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return true,
                Err(now) => cur = now,
            }
        }
    }
}

/// Fingerprints back to what they stand for under the shared salt: the configured keys and
/// the names a pin's owner may have. Rebuilt when the config (its `Names` generation) or the
/// salt changed; shared by the sync task and the lookups.
#[derive(Clone)]
struct Fingerprints {
    pool: KeyPool,
    names: Arc<ArcSwap<Names>>,
    built: Arc<Mutex<Option<Built>>>,
}

/// The map and the salt and `Names` generation it was built for.
type Built = (Salt, u64, Arc<Known>);

#[derive(Default)]
struct Known {
    keys: HashMap<String, ApiKey>,
    owners: HashMap<String, String>,
}

impl Fingerprints {
    fn current(&self, salt: Salt) -> Arc<Known> {
        let names = self.names.load();
        let mut built = self.built.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((s, g, known)) = &*built {
            if *s == salt && *g == names.generation && !known.keys.is_empty() {
                return known.clone();
            }
        }
        let known = Arc::new(Known {
            keys: self
                .pool
                .keys()
                .into_iter()
                .map(|k| (salt.fingerprint("key", k.expose()), k))
                .collect(),
            owners: owner_names(&names.tokens)
                .map(|n| (salt.fingerprint("token", n), n.to_string()))
                .collect(),
        });
        *built = Some((salt, names.generation, known.clone()));
        known
    }
}

/// Looks up what another replica made: a dashboard session, for a cookie this one has not
/// heard of yet (the login's redirect may land here before the news does), a stored
/// response, a resource pin.
/// Lookups are limited to `LOOKUPS_PER_SEC` (made-up cookies must not turn into Redis load),
/// pins to `PIN_LOOKUPS_PER_SEC` on a budget of their own (a token asking for made-up names
/// must neither load Redis nor starve the dashboard's logins).
#[derive(Clone)]
pub struct Lookup {
    link: Arc<arc_swap::ArcSwapOption<Link>>,
    names: Arc<ArcSwap<Names>>,
    fps: Fingerprints,
    prefix: String,
    timeout: Duration,
    budget: Arc<Budget>,
    pin_budget: Arc<Budget>,
}

/// Lookups in Redis per second and replica, at most.
const LOOKUPS_PER_SEC: u64 = 50;
/// Pin lookups (and per-owner lists) in Redis per second and replica, at most.
const PIN_LOOKUPS_PER_SEC: u64 = 100;

impl Lookup {
    fn allowed(&self) -> bool {
        self.budget.allowed()
    }

    /// The pin of `name` if Redis has it, its key among the configured ones and its owner
    /// among the known names (bounded by `timeout` and `PIN_LOOKUPS_PER_SEC`).
    pub async fn pin(&self, name: &str) -> Option<Pin> {
        let link = self.link.load_full()?;
        if name.is_empty() || name.len() > 512 || !self.pin_budget.allowed() {
            return None;
        }
        let mut conn = link.conn.clone();
        let mut get = redis::cmd("GET");
        get.arg(format!("{}a:{name}", self.prefix));
        let query = get.query_async::<Option<String>>(&mut conn);
        let json = tokio::time::timeout(self.timeout, query)
            .await
            .ok()?
            .ok()??;
        self.pin_of(link.salt, &json, None)
    }

    /// `owner`'s pins in Redis whose names start with `prefix`, but for those `have` has
    /// (bounded by `timeout` and `PIN_LOOKUPS_PER_SEC`; nothing when either runs out).
    pub async fn pins_of(
        &self,
        owner: &str,
        prefix: &str,
        have: impl Fn(&str) -> bool,
    ) -> Vec<(String, Pin)> {
        let Some(link) = self.link.load_full() else {
            return Vec::new();
        };
        if !self.pin_budget.allowed() {
            return Vec::new();
        }
        let owner_fp = link.salt.fingerprint("token", owner);
        let mut conn = link.conn.clone();
        let work = async {
            let mut range = redis::cmd("ZRANGEBYSCORE");
            range
                .arg(format!("{}ao:{owner_fp}", self.prefix))
                .arg(format!("({}", unix_ms(SystemTime::now())))
                .arg("+inf");
            let names: Vec<String> = range.query_async(&mut conn).await.ok()?;
            let missing: Vec<String> = names
                .into_iter()
                .filter(|n| n.starts_with(prefix) && !have(n))
                .take(MAX_PER_OWNER)
                .collect();
            if missing.is_empty() {
                return Some(Vec::new());
            }
            let mut get = redis::cmd("MGET");
            for n in &missing {
                get.arg(format!("{}a:{n}", self.prefix));
            }
            let found: Vec<Option<String>> = get.query_async(&mut conn).await.ok()?;
            Some(
                missing
                    .into_iter()
                    .zip(found)
                    .filter_map(|(n, json)| {
                        let pin = self.pin_of(link.salt, &json?, Some(&owner_fp))?;
                        Some((n, pin))
                    })
                    .collect(),
            )
        };
        tokio::time::timeout(self.timeout, work)
            .await
            .ok()
            .flatten()
            .unwrap_or_default()
    }

    /// A kept pin read back (`owner_fp`: only if that owner's).
    fn pin_of(&self, salt: Salt, json: &str, owner_fp: Option<&str>) -> Option<Pin> {
        let kept: KeptPin = serde_json::from_str(json).ok()?;
        if owner_fp.is_some_and(|o| o != kept.o) {
            return None;
        }
        let known = self.fps.current(salt);
        Some(Pin {
            key: known.keys.get(&kept.k)?.clone(),
            owner: Arc::from(known.owners.get(&kept.o)?.as_str()),
            expires: from_unix_ms(kept.e)?,
            upstream: kept.u.map(Arc::from),
        })
    }

    /// The stored response `id` if Redis has it and `owner` made it (bounded by `timeout`).
    pub async fn response(&self, id: &str, owner: Option<&str>) -> Option<Stored> {
        let link = self.link.load_full()?;
        if id.is_empty() || id.len() > 128 || !self.allowed() {
            return None;
        }
        let key = format!("{}r:{id}", self.prefix);
        let mut conn = link.conn.clone();
        let mut get = redis::cmd("GET");
        get.arg(&key);
        let query = get.query_async::<Option<String>>(&mut conn);
        let json = tokio::time::timeout(self.timeout, query)
            .await
            .ok()?
            .ok()??;
        let kept: KeptResponse = serde_json::from_str(&json).ok()?;
        let want = owner.map(|o| link.salt.fingerprint("token", o));
        if kept.o != want {
            return None;
        }
        Some(Stored {
            owner: owner.map(str::to_string),
            response: kept.r.into_bytes(),
            conversation: kept.c.into_bytes(),
        })
    }

    /// The session's opener and time left, if Redis knows it (bounded by `timeout`).
    pub async fn session(&self, id_hash: [u8; 32]) -> Option<(Option<[u8; 32]>, Duration)> {
        let link = self.link.load_full()?;
        if !self.allowed() {
            return None;
        }
        let key = format!("{}s:{}", self.prefix, hex(&id_hash));
        let mut conn = link.conn.clone();
        let mut pipe = redis::pipe();
        pipe.cmd("GET").arg(&key).cmd("PTTL").arg(&key);
        let query = pipe.query_async::<(Option<String>, i64)>(&mut conn);
        let (json, ttl) = tokio::time::timeout(self.timeout, query).await.ok()?.ok()?;
        let msg: Message = serde_json::from_str(&json?).ok()?;
        let session = msg.session?;
        if ttl <= 0 || unhex32(&session.h) != Some(id_hash) {
            return None;
        }
        let opened_by = match &session.by {
            None => None,
            Some(fp) => Some(
                *self
                    .names
                    .load()
                    .admins
                    .iter()
                    .find(|a| &link.salt.fingerprint("admin", &hex(&a[..])) == fp)?,
            ),
        };
        Some((opened_by, Duration::from_millis(ttl as u64)))
    }
}

/// The running Redis store: its settings and a handle on its sync task.
pub struct RedisStore {
    lookup: Lookup,
    url: RedisUrl,
    prefix: String,
    timeout: Duration,
    stop: CancellationToken,
    done: Arc<AtomicBool>,
    health: Arc<Mutex<Health>>,
}

impl RedisStore {
    /// Starts the sync task on the current tokio runtime (events from `rx`). Without a
    /// runtime (never in the binary) the store stays down and says so.
    pub fn start(
        cfg: &RedisConfig,
        ledgers: Ledgers,
        names: Arc<ArcSwap<Names>>,
        rx: mpsc::Receiver<Event>,
    ) -> RedisStore {
        let health = Arc::new(Mutex::new(Health {
            ok: false,
            last_error: Some("not connected yet".into()),
            since: SystemTime::now(),
        }));
        let link: Arc<arc_swap::ArcSwapOption<Link>> = Arc::default();
        let fps = Fingerprints {
            pool: ledgers.pool.clone(),
            names: names.clone(),
            built: Arc::default(),
        };
        let store = RedisStore {
            lookup: Lookup {
                link: link.clone(),
                names: names.clone(),
                fps: fps.clone(),
                prefix: cfg.prefix.clone(),
                timeout: cfg.timeout,
                budget: Arc::new(Budget::new(LOOKUPS_PER_SEC)),
                pin_budget: Arc::new(Budget::new(PIN_LOOKUPS_PER_SEC)),
            },
            url: cfg.url.clone(),
            prefix: cfg.prefix.clone(),
            timeout: cfg.timeout,
            stop: CancellationToken::new(),
            done: Arc::new(AtomicBool::new(false)),
            health: health.clone(),
        };
        tracing::info!(url = %cfg.url, prefix = %cfg.prefix, "state: shared through Redis (store = \"redis\")");
        let id = replica_id();
        ledgers.pool.set_claimer(Some(Arc::new(RedisClaimer {
            link: link.clone(),
            prefix: cfg.prefix.clone(),
            timeout: cfg.timeout,
            id: id.clone(),
            clock: QuotaClock::new(),
            script: redis::Script::new(CLAIM),
        })));
        let sync = Sync {
            link,
            cfg: cfg.clone(),
            ledgers,
            names,
            health,
            id,
            clock: QuotaClock::new(),
            salt: None,
            offset_ms: 0,
            fps,
            pending: HashMap::new(),
            pending_tokens: HashMap::new(),
            down_logged: false,
            scripts: Scripts {
                merge: redis::Script::new(MERGE),
                reset: redis::Script::new(RESET),
                failed: redis::Script::new(FAILED),
                pin: redis::Script::new(PIN),
            },
        };
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                let stop = store.stop.clone();
                let done = store.done.clone();
                rt.spawn(async move {
                    sync.run(rx, stop).await;
                    done.store(true, Ordering::Release);
                });
            }
            Err(_) => {
                tracing::error!("state: no runtime for the Redis store; state stays in memory");
                store.done.store(true, Ordering::Release);
            }
        }
        store
    }

    /// Whether this store is the one `cfg` asks for.
    pub fn serves(&self, cfg: &RedisConfig) -> bool {
        self.url == cfg.url && self.prefix == cfg.prefix && self.timeout == cfg.timeout
    }

    pub fn lookup(&self) -> Lookup {
        self.lookup.clone()
    }

    pub fn health(&self) -> Health {
        self.health
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Stops the sync task after its last push; waits for it (blocking, bounded by `timeout`
    /// plus a grace) when `wait`. Call from a blocking thread when waiting.
    pub fn stop(&self, wait: bool) {
        self.stop.cancel();
        if !wait {
            return;
        }
        let until = Instant::now() + self.timeout * 2 + FINAL_GRACE;
        while !self.done.load(Ordering::Acquire) && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for RedisStore {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// A random id, so a replica ignores its own messages.
fn replica_id() -> String {
    let mut b = [0u8; 8];
    let _ = getrandom::fill(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unix_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn from_unix_ms(ms: i64) -> Option<SystemTime> {
    UNIX_EPOCH.checked_add(Duration::from_millis(u64::try_from(ms).ok()?))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex32(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Counts not yet added to the fleet's totals.
#[derive(Debug, Clone, Copy, Default)]
struct Pending {
    requests: u64,
    tokens: Tokens,
}

/// The sync task's state.
struct Sync {
    /// The connection claims use, while connected.
    link: Arc<arc_swap::ArcSwapOption<Link>>,
    cfg: RedisConfig,
    ledgers: Ledgers,
    names: Arc<ArcSwap<Names>>,
    health: Arc<Mutex<Health>>,
    id: String,
    clock: QuotaClock,
    salt: Option<Salt>,
    /// Redis server clock minus ours, milliseconds.
    offset_ms: i64,
    /// Key fingerprints -> keys, for what others publish.
    fps: Fingerprints,
    /// By (key, model): counts of the quota day `.0` not yet sent.
    pending: HashMap<(ApiKey, String), (QuotaDay, Pending)>,
    /// By client token name.
    pending_tokens: HashMap<String, (QuotaDay, TokenTotals)>,
    /// The current outage was logged.
    down_logged: bool,
    scripts: Scripts,
}

/// The Lua scripts, hashed once (`EVALSHA`, with `EVAL` when the server lacks them).
struct Scripts {
    merge: redis::Script,
    reset: redis::Script,
    failed: redis::Script,
    pin: redis::Script,
}

/// Why one connection's run ended.
type Failure = String;

fn now() -> Now {
    Now::new(Instant::now(), SystemTime::now())
}

impl Sync {
    async fn run(mut self, mut rx: mpsc::Receiver<Event>, stop: CancellationToken) {
        let client = match redis::Client::open(self.cfg.url.expose()) {
            Ok(c) => c,
            Err(e) => {
                // The config check accepted the URL; the client may still refuse it.
                self.down(&format!("cannot use the Redis URL: {}", describe(&e)));
                return;
            }
        };
        let mut backoff = BACKOFF_MIN;
        loop {
            // Not raced with `stop`: once connected, `connected` sends its last changes when
            // stopped; connecting is bounded by `timeout` per step.
            if stop.is_cancelled() {
                return;
            }
            let result = self.connected(&client, &mut rx, &stop).await;
            match result {
                Ok(()) => return,
                Err(e) => self.down(&e),
            }
            // Events meanwhile: kept in the queue up to its capacity.
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);
            if self.health().ok {
                backoff = BACKOFF_MIN;
            }
        }
    }

    fn health(&self) -> Health {
        self.health
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn set_link(&self, conn: &MultiplexedConnection) {
        if let Some(salt) = self.salt {
            self.link.store(Some(Arc::new(Link {
                conn: conn.clone(),
                salt,
                offset_ms: self.offset_ms,
            })));
        }
    }

    fn down(&mut self, error: &str) {
        self.link.store(None);
        let mut h = self.health.lock().unwrap_or_else(PoisonError::into_inner);
        if h.ok || !self.down_logged {
            tracing::warn!(url = %self.cfg.url, error, "state: Redis unavailable; serving from this replica's memory and reconnecting");
            self.down_logged = true;
            h.since = SystemTime::now();
        }
        h.ok = false;
        h.last_error = Some(error.to_string());
    }

    fn up(&mut self) {
        let mut h = self.health.lock().unwrap_or_else(PoisonError::into_inner);
        if !h.ok {
            if self.down_logged {
                tracing::info!(url = %self.cfg.url, "state: Redis reachable again; state merged both ways");
            } else {
                tracing::info!(url = %self.cfg.url, "state: connected to Redis");
            }
            h.ok = true;
            h.since = SystemTime::now();
        }
        self.down_logged = false;
    }

    fn key(&self, name: &str) -> String {
        format!("{}{name}", self.cfg.prefix)
    }

    /// Bounds a Redis call by `timeout`.
    async fn bounded<T>(
        &self,
        what: &str,
        f: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, Failure> {
        match tokio::time::timeout(self.cfg.timeout, f).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(format!("{what}: {}", describe(&e))),
            Err(_) => Err(format!("{what}: no answer within {:?}", self.cfg.timeout)),
        }
    }

    /// One connection's life: connect, merge both ways, then sync until an error or `stop`.
    async fn connected(
        &mut self,
        client: &redis::Client,
        rx: &mut mpsc::Receiver<Event>,
        stop: &CancellationToken,
    ) -> Result<(), Failure> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.cfg.timeout))
            .set_response_timeout(Some(self.cfg.timeout));
        let mut conn = self
            .bounded(
                "connect",
                client.get_multiplexed_async_connection_with_config(&config),
            )
            .await?;
        let mut pubsub = self.bounded("subscribe", client.get_async_pubsub()).await?;
        let channel = self.key("events");
        self.bounded("subscribe", pubsub.subscribe(&channel))
            .await?;
        let mut messages = pubsub.into_on_message();

        let salt = self.shared_salt(&mut conn).await?;
        // A new salt (a first connect, or a Redis that lost its data) means new fingerprints
        // (`Fingerprints` rebuilds for it).
        self.salt = Some(salt);
        self.measure_clock(&mut conn).await?;
        // Everything out, then everything in.
        self.push(&mut conn, true).await?;
        self.push_pins(&mut conn).await?;
        self.pull(&mut conn).await?;
        self.up();
        self.set_link(&conn);

        let mut push = tokio::time::interval(PUSH_EVERY);
        push.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut reconcile = tokio::time::interval(RECONCILE_EVERY);
        reconcile.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        reconcile.tick().await;
        let mut events_open = true;
        let wake = self.ledgers.pool.wake();
        loop {
            tokio::select! {
                // A burst coalesces: wake-ups during a push leave one permit.
                _ = wake.notified() => self.push(&mut conn, false).await?,
                _ = stop.cancelled() => {
                    // The last changes, bounded: shutdown must not wait on a slow Redis.
                    let _ = self.push(&mut conn, false).await;
                    return Ok(());
                }
                _ = push.tick() => self.push(&mut conn, false).await?,
                _ = reconcile.tick() => {
                    self.measure_clock(&mut conn).await?;
                    self.set_link(&conn);
                    self.pull(&mut conn).await?;
                }
                ev = rx.recv(), if events_open => match ev {
                    Some(ev) => {
                        self.ledgers.outbox.taken(&ev);
                        self.event(&mut conn, ev).await?
                    }
                    None => events_open = false,
                },
                msg = messages.next() => match msg {
                    // "{sender} {json}": a replica's own news is skipped unparsed.
                    Some(msg) => {
                        if let Ok(payload) = msg.get_payload::<String>() {
                            match payload.split_once(' ') {
                                Some((from, json)) if from != self.id => self.apply(json, false),
                                _ => {}
                            }
                        }
                    }
                    None => return Err("the subscription closed".into()),
                },
            }
        }
    }

    /// The deployment's salt: made by the first replica (`SET NX`), read by the rest.
    async fn shared_salt(&self, conn: &mut MultiplexedConnection) -> Result<Salt, Failure> {
        let key = self.key("salt");
        let mine = Salt::random().to_hex();
        let (_, salt): (Option<String>, Option<String>) = self
            .bounded(
                "salt",
                redis::pipe()
                    .cmd("SET")
                    .arg(&key)
                    .arg(&mine)
                    .arg("NX")
                    .cmd("GET")
                    .arg(&key)
                    .query_async(conn),
            )
            .await?;
        salt.as_deref()
            .and_then(Salt::from_hex)
            .ok_or_else(|| format!("{key} does not hold a salt: delete it or use another prefix"))
    }

    /// The Redis server's clock against ours (half the round trip counted).
    async fn measure_clock(&mut self, conn: &mut MultiplexedConnection) -> Result<(), Failure> {
        let before = SystemTime::now();
        let (secs, micros): (i64, i64) = self
            .bounded("TIME", redis::cmd("TIME").query_async(conn))
            .await?;
        let after = SystemTime::now();
        let local = (unix_ms(before) + unix_ms(after)) / 2;
        self.offset_ms = secs * 1000 + micros / 1000 - local;
        Ok(())
    }

    fn local_to_server(&self, t: SystemTime) -> i64 {
        unix_ms(t).saturating_add(self.offset_ms)
    }

    fn server_to_local(&self, ms: i64) -> Option<SystemTime> {
        from_unix_ms(ms.saturating_sub(self.offset_ms))
    }

    /// Sends what changed (`full`: the whole state, after a connect) with the counts not yet
    /// sent, and applies the merged answer.
    async fn push(&mut self, conn: &mut MultiplexedConnection, full: bool) -> Result<(), Failure> {
        let Some(salt) = self.salt else {
            return Ok(());
        };
        let now = now();
        let today = self.clock.day(now.wall);
        let changed = if full {
            // Counts in an export are totals: only the drained increments may be added.
            let mut all = self.ledgers.pool.export(now);
            for k in all.iter_mut() {
                for m in k.models.iter_mut() {
                    m.daily_requests = 0;
                    m.tokens = Tokens::default();
                    m.day = None;
                }
            }
            let drained = self.ledgers.pool.drain(now);
            self.fold(&drained, today.map(|(d, _)| d));
            all
        } else {
            let drained = self.ledgers.pool.drain(now);
            self.fold(&drained, today.map(|(d, _)| d));
            drained
        };
        if let Some((day, totals)) = self.ledgers.usage.drain_at(now.wall) {
            for (name, t) in totals {
                let e = self
                    .pending_tokens
                    .entry(name)
                    .or_insert((day, TokenTotals::default()));
                if e.0 != day {
                    *e = (day, TokenTotals::default());
                }
                add_totals(&mut e.1, &t);
            }
        }
        // Counts of another day than today are dropped: Redis keeps today's.
        let day = today.map(|(d, _)| d);
        self.pending.retain(|_, (d, _)| Some(*d) == day);
        self.pending_tokens.retain(|_, (d, _)| Some(*d) == day);
        if changed.is_empty() && self.pending.is_empty() && self.pending_tokens.is_empty() {
            return Ok(());
        }
        let batch = self.batch(salt, &changed, today);
        // One `MERGE` per BATCH keys (at least one call: the token counts go with the first).
        let chunks: Vec<&[BKey]> = if batch.keys.is_empty() {
            vec![&[]]
        } else {
            batch.keys.chunks(BATCH).collect()
        };
        for (i, chunk) in chunks.into_iter().enumerate() {
            let body = BatchOut {
                from: &batch.from,
                day: &batch.day,
                expire_at: batch.expire_at,
                keys: chunk,
                tokens: if i == 0 { &batch.tokens[..] } else { &[] },
            };
            let json = serde_json::to_string(&body).map_err(|e| format!("encode: {e}"))?;
            let reply: String = self
                .bounded(
                    "merge",
                    self.scripts
                        .merge
                        .arg(&self.cfg.prefix)
                        .arg(json)
                        .invoke_async(&mut conn.clone()),
                )
                .await?;
            self.apply(&reply, true);
            // Sent: these counts are in the fleet's totals now.
            for k in chunk {
                for m in k.m.iter().filter(|m| m.q.is_some()) {
                    self.pending.remove(&(k.key.clone(), m.n.clone()));
                }
            }
            if i == 0 {
                self.pending_tokens.clear();
            }
        }
        Ok(())
    }

    /// Adds drained increments to what is still to be sent.
    fn fold(&mut self, drained: &[SavedKey], today: Option<QuotaDay>) {
        for k in drained {
            for m in &k.models {
                let (Some(day), true) = (m.day, m.day == today) else {
                    continue;
                };
                if m.daily_requests == 0 && m.tokens == Tokens::default() {
                    continue;
                }
                let e = self
                    .pending
                    .entry((k.key.clone(), m.model.clone()))
                    .or_insert((day, Pending::default()));
                if e.0 != day {
                    *e = (day, Pending::default());
                }
                e.1.requests += m.daily_requests;
                e.1.tokens = e.1.tokens.plus(m.tokens);
            }
        }
    }

    fn batch(
        &self,
        salt: Salt,
        changed: &[SavedKey],
        today: Option<(QuotaDay, Duration)>,
    ) -> Batch {
        let day = today.map(|(d, _)| d.to_string()).unwrap_or_default();
        let expire_at = today.map_or(0, |(_, left)| {
            (self.local_to_server(SystemTime::now() + left) / 1000).max(0) as u64 + 3600
        });
        let mut keys: Vec<BKey> = Vec::new();
        let mut index: HashMap<ApiKey, usize> = HashMap::new();
        let counts = |p: Option<&(QuotaDay, Pending)>| -> (Option<u64>, u64, u64, u64) {
            match (p, today.is_some()) {
                (Some((_, p)), true) => (
                    Some(p.requests),
                    p.tokens.prompt,
                    p.tokens.completion,
                    p.tokens.thoughts,
                ),
                (None, true) => (Some(0), 0, 0, 0),
                _ => (None, 0, 0, 0),
            }
        };
        for k in changed {
            let models = k
                .models
                .iter()
                .map(|m| {
                    let (q, p, c, t) = counts(self.pending.get(&(k.key.clone(), m.model.clone())));
                    BModel {
                        n: m.model.clone(),
                        f: Some(m.consecutive_failures),
                        r: m.rest.map(|r| self.local_to_server(r.until)),
                        d: m.rest.is_some_and(|r| r.daily),
                        q,
                        p,
                        c,
                        t,
                    }
                })
                .collect();
            index.insert(k.key.clone(), keys.len());
            keys.push(BKey {
                key: k.key.clone(),
                k: salt.fingerprint("key", k.key.expose()),
                dis: k.disabled.clone(),
                m: models,
            });
        }
        // Counts of models that did not change otherwise this time (an earlier failed send).
        for ((key, model), pending) in &self.pending {
            let i = match index.get(key) {
                Some(&i) => i,
                None => {
                    index.insert(key.clone(), keys.len());
                    keys.push(BKey {
                        key: key.clone(),
                        k: salt.fingerprint("key", key.expose()),
                        dis: None,
                        m: Vec::new(),
                    });
                    keys.len() - 1
                }
            };
            if keys[i].m.iter().any(|m| &m.n == model) {
                continue;
            }
            let (q, p, c, t) = counts(Some(pending));
            keys[i].m.push(BModel {
                n: model.clone(),
                f: None,
                r: None,
                d: false,
                q,
                p,
                c,
                t,
            });
        }
        let tokens = self
            .pending_tokens
            .iter()
            .map(|(name, (_, t))| BToken {
                fp: salt.fingerprint("token", name),
                q: t.requests,
                p: t.prompt_tokens,
                c: t.completion_tokens,
                t: t.thoughts_tokens,
            })
            .collect();
        Batch {
            from: self.id.clone(),
            day,
            expire_at,
            keys,
            tokens,
        }
    }

    /// Reads everything back and merges it (the pool keeps the later rest, the larger count).
    async fn pull(&mut self, conn: &mut MultiplexedConnection) -> Result<(), Failure> {
        let Some(salt) = self.salt else {
            return Ok(());
        };
        let now = now();
        let today = self.clock.day(now.wall).map(|(d, _)| d);
        let day = today.map(|d| d.to_string()).unwrap_or_default();
        type Hash = HashMap<String, String>;
        let (rests, fails, disabled, counts, usage): (Hash, Hash, Hash, Hash, Hash) = self
            .bounded(
                "reconcile",
                redis::pipe()
                    .hgetall(self.key("rests"))
                    .hgetall(self.key("fails"))
                    .hgetall(self.key("disabled"))
                    .hgetall(self.key(&format!("c:{day}")))
                    .hgetall(self.key(&format!("u:{day}")))
                    .query_async(conn),
            )
            .await?;
        let fps = self.fps.current(salt);
        let mut keys: HashMap<&str, SavedKey> = HashMap::new();
        let mut models: HashMap<(&str, &str), SavedModel> = HashMap::new();
        let mut over: Vec<&str> = Vec::new();
        for (field, value) in &rests {
            let Some((fp, model)) = field.split_once('|') else {
                continue;
            };
            let (ms, daily) = match value.strip_suffix("|d") {
                Some(ms) => (ms, true),
                None => (value.as_str(), false),
            };
            let until = ms
                .parse::<i64>()
                .ok()
                .and_then(|ms| self.server_to_local(ms));
            match until {
                Some(until) if until > now.wall => {
                    saved_model(&mut models, fp, model).rest = Some(SavedRest { until, daily });
                }
                _ => over.push(field),
            }
        }
        for (field, value) in &fails {
            if let (Some((fp, model)), Ok(n)) = (field.split_once('|'), value.parse::<u32>()) {
                saved_model(&mut models, fp, model).consecutive_failures = n;
            }
        }
        for (field, value) in &counts {
            let Some((rest, kind)) = field.rsplit_once('|') else {
                continue;
            };
            let (Some((fp, model)), Ok(n)) = (rest.split_once('|'), value.parse::<u64>()) else {
                continue;
            };
            let m = saved_model(&mut models, fp, model);
            m.day = today;
            match kind {
                "q" => m.daily_requests = n,
                "p" => m.tokens.prompt = n,
                "c" => m.tokens.completion = n,
                "t" => m.tokens.thoughts = n,
                _ => {}
            }
        }
        for ((fp, _), m) in models {
            if let Some(key) = fps.keys.get(fp) {
                keys.entry(fp)
                    .or_insert_with(|| SavedKey {
                        key: key.clone(),
                        disabled: None,
                        models: Vec::new(),
                    })
                    .models
                    .push(m);
            }
        }
        for (fp, reason) in &disabled {
            if let Some(key) = fps.keys.get(fp.as_str()) {
                keys.entry(fp)
                    .or_insert_with(|| SavedKey {
                        key: key.clone(),
                        disabled: None,
                        models: Vec::new(),
                    })
                    .disabled = Some(reason.clone());
            }
        }
        let saved: Vec<SavedKey> = keys.into_values().collect();
        self.ledgers.pool.import(&saved, now);
        if let Some(day) = today {
            let totals = self.token_totals(salt, &usage);
            self.ledgers.usage.import_at(day, &totals, now.wall);
        }
        if !over.is_empty() {
            let mut cmd = redis::cmd("HDEL");
            cmd.arg(self.key("rests")).arg(&over);
            let _: i64 = self
                .bounded("sweep", cmd.query_async(conn))
                .await
                .unwrap_or(0);
        }
        Ok(())
    }

    /// The token ledger's totals from `{prefix}u:{day}` fields (`fp|q` ...), by name.
    fn token_totals(
        &self,
        salt: Salt,
        usage: &HashMap<String, String>,
    ) -> Vec<(String, TokenTotals)> {
        let by_fp = self.token_names(salt);
        let mut out: HashMap<&String, TokenTotals> = HashMap::new();
        for (field, value) in usage {
            let (Some((fp, kind)), Ok(n)) = (field.split_once('|'), value.parse::<u64>()) else {
                continue;
            };
            let Some(name) = by_fp.get(fp) else {
                continue;
            };
            let t = out.entry(name).or_default();
            match kind {
                "q" => t.requests = n,
                "p" => t.prompt_tokens = n,
                "c" => t.completion_tokens = n,
                "t" => t.thoughts_tokens = n,
                _ => {}
            }
        }
        out.into_iter().map(|(n, t)| (n.clone(), t)).collect()
    }

    /// Client token names by their fingerprint under `salt`.
    fn token_names(&self, salt: Salt) -> HashMap<String, String> {
        self.names
            .load()
            .tokens
            .iter()
            .map(|n| (salt.fingerprint("token", n), n.clone()))
            .collect()
    }

    /// Applies a published message (or a merge's reply, `own`).
    fn apply(&mut self, payload: &str, own: bool) {
        let Ok(msg) = serde_json::from_str::<Message>(payload) else {
            tracing::debug!("state: an unreadable message on the events channel");
            return;
        };
        if !own && msg.from == self.id {
            return;
        }
        let Some(salt) = self.salt else {
            return;
        };
        let fps = self.fps.current(salt);
        let now = now();
        let today = self.clock.day(now.wall).map(|(d, _)| d);
        let msg_day = msg.day.as_deref().and_then(|d| d.parse::<QuotaDay>().ok());
        if !msg.keys.is_empty() {
            let mut saved = Vec::new();
            for k in &msg.keys {
                let Some(key) = fps.keys.get(&k.k) else {
                    continue;
                };
                let models =
                    k.m.iter()
                        .map(|m| SavedModel {
                            model: m.n.clone(),
                            consecutive_failures: m.f.unwrap_or(0),
                            rest: m.r.and_then(|ms| self.server_to_local(ms)).map(|until| {
                                SavedRest {
                                    until,
                                    daily: m.d.unwrap_or(false),
                                }
                            }),
                            day: m.q.and(msg_day).filter(|d| Some(*d) == today),
                            daily_requests: m.q.unwrap_or(0),
                            tokens: Tokens {
                                prompt: m.p.unwrap_or(0),
                                completion: m.c.unwrap_or(0),
                                thoughts: m.t.unwrap_or(0),
                            },
                        })
                        .collect();
                saved.push(SavedKey {
                    key: key.clone(),
                    disabled: k.dis.clone(),
                    models,
                });
            }
            self.ledgers.pool.import(&saved, now);
        }
        if !msg.tokens.is_empty() {
            if let (Some(day), true) = (today, msg_day == today) {
                let by_fp = self.token_names(salt);
                let totals: Vec<(String, TokenTotals)> = msg
                    .tokens
                    .iter()
                    .filter_map(|t| {
                        let name = by_fp.get(&t.fp)?;
                        Some((
                            name.clone(),
                            TokenTotals {
                                requests: t.q,
                                prompt_tokens: t.p,
                                completion_tokens: t.c,
                                thoughts_tokens: t.t,
                            },
                        ))
                    })
                    .collect();
                self.ledgers.usage.import_at(day, &totals, now.wall);
            }
        }
        if let Some(lock) = &msg.lock {
            if let (Ok(ip), true) = (lock.ip.parse::<IpAddr>(), lock.ms > 0) {
                self.ledgers
                    .lockout
                    .lock_remote(ip, Duration::from_millis(lock.ms as u64));
            }
        }
        if let Some(s) = &msg.session {
            if let Some(hash) = unhex32(&s.h) {
                let opened_by = match &s.by {
                    None => Some(None),
                    Some(fp) => self
                        .names
                        .load()
                        .admins
                        .iter()
                        .find(|a| &salt.fingerprint("admin", &hex(&a[..])) == fp)
                        .map(|a| Some(*a)),
                };
                if let (Some(opened_by), true) = (opened_by, s.ms > 0) {
                    self.ledgers.sessions.insert_remote(
                        hash,
                        opened_by,
                        Duration::from_millis(s.ms as u64),
                    );
                }
            }
        }
        if let Some(h) = msg.session_end.as_deref().and_then(unhex32) {
            self.ledgers.sessions.remove_remote(&h);
        }
        if !msg.sigs.is_empty() {
            self.ledgers.signatures.remember_remote(msg.sigs);
        }
        if let Some(id) = &msg.resp_deleted {
            self.ledgers.stored_responses.forget(id);
        }
        if let Some(name) = &msg.pin_gone {
            self.ledgers.affinity.forget(name);
        }
        if let Some(reset) = &msg.reset {
            let model = reset.model.as_deref();
            match &reset.keys {
                None => {
                    for key in fps.keys.values() {
                        self.ledgers.pool.reset_key(key, model);
                    }
                }
                Some(wanted) => {
                    for fp in wanted {
                        if let Some(key) = fps.keys.get(fp) {
                            self.ledgers.pool.reset_key(key, model);
                        }
                    }
                }
            }
        }
    }

    /// The `PIN` call that keeps one pin (`{prefix}a:{name}` and, but for an upload session,
    /// the owner's index).
    fn pin_invocation(
        &self,
        salt: Salt,
        name: &str,
        key: &ApiKey,
        owner: &str,
        expires: SystemTime,
        upstream: Option<&str>,
    ) -> Result<redis::ScriptInvocation<'_>, Failure> {
        let owner_fp = salt.fingerprint("token", owner);
        let end = unix_ms(expires);
        let kept = KeptPin {
            k: salt.fingerprint("key", key.expose()),
            o: owner_fp.clone(),
            e: end,
            u: upstream.map(str::to_string),
        };
        let json = serde_json::to_string(&kept).map_err(|e| format!("encode: {e}"))?;
        // Upload sessions are looked up by their (hashed) name only, never listed.
        let index = if name.starts_with("uploads/") {
            String::new()
        } else {
            self.key(&format!("ao:{owner_fp}"))
        };
        let mut invocation = self.scripts.pin.prepare_invoke();
        invocation
            .arg(self.key(&format!("a:{name}")))
            .arg(json)
            .arg(self.local_to_server(expires))
            .arg(index)
            .arg(name)
            .arg(end)
            .arg(unix_ms(SystemTime::now()))
            .arg(MAX_PER_OWNER)
            .arg(self.offset_ms);
        Ok(invocation)
    }

    /// Every pin this replica knows, out (after a connect: a Redis that lost its data, or
    /// missed events while down, gets them back), `BATCH` to a pipeline.
    async fn push_pins(&self, conn: &mut MultiplexedConnection) -> Result<(), Failure> {
        let Some(salt) = self.salt else {
            return Ok(());
        };
        let pins = self.ledgers.affinity.export(SystemTime::now());
        for chunk in pins.chunks(BATCH) {
            let mut pipe = redis::pipe();
            pipe.load_script(&self.scripts.pin).ignore();
            for (name, pin) in chunk {
                let invocation = self.pin_invocation(
                    salt,
                    name,
                    &pin.key,
                    &pin.owner,
                    pin.expires,
                    pin.upstream.as_deref(),
                )?;
                pipe.invoke_script(&invocation).ignore();
            }
            let _: () = self.bounded("pins", pipe.query_async(conn)).await?;
        }
        Ok(())
    }

    /// Sends one ledger event: what it stores (one pipeline) and the news the other replicas
    /// apply (`"{sender} {json}"` on `{prefix}events`).
    async fn event(&mut self, conn: &mut MultiplexedConnection, ev: Event) -> Result<(), Failure> {
        let Some(salt) = self.salt else {
            return Ok(());
        };
        let mut pipe = redis::pipe();
        let news = |msg: Message| serde_json::to_string(&msg).map_err(|e| format!("encode: {e}"));
        let from = self.id.clone();
        let what = match &ev {
            Event::CredentialFailed { .. } => "lockout",
            Event::SessionOpened { .. } | Event::SessionEnded { .. } => "session",
            Event::Signatures(_) => "signatures",
            Event::ResponseStored { .. } | Event::ResponseDeleted { .. } => "stored response",
            Event::PinSet { .. } | Event::PinRemoved { .. } => "pin",
            Event::Reset { .. } => "reset",
        };
        let published: Option<String> = match ev {
            Event::CredentialFailed { ip, limit } => {
                // The script publishes the lockout itself, once the limit is reached.
                let _: i64 = self
                    .bounded(
                        what,
                        self.scripts
                            .failed
                            .arg(&self.cfg.prefix)
                            .arg(ip.to_string())
                            .arg(limit)
                            .arg(crate::lockout::WINDOW.as_millis() as u64)
                            .arg(&self.id)
                            .invoke_async(&mut conn.clone()),
                    )
                    .await?;
                None
            }
            Event::SessionOpened {
                id_hash,
                opened_by,
                left,
            } => {
                let json = news(Message {
                    from,
                    session: Some(SessionMsg {
                        h: hex(&id_hash),
                        by: opened_by.map(|a| salt.fingerprint("admin", &hex(&a[..]))),
                        ms: left.as_millis() as i64,
                    }),
                    ..Message::default()
                })?;
                // Kept as published: `Lookup::session` reads it back.
                pipe.cmd("SET")
                    .arg(self.key(&format!("s:{}", hex(&id_hash))))
                    .arg(&json)
                    .arg("PX")
                    .arg(left.as_millis() as u64)
                    .ignore();
                Some(json)
            }
            Event::SessionEnded { id_hash } => {
                pipe.cmd("DEL")
                    .arg(self.key(&format!("s:{}", hex(&id_hash))))
                    .ignore();
                Some(news(Message {
                    from,
                    session_end: Some(hex(&id_hash)),
                    ..Message::default()
                })?)
            }
            Event::Signatures(sigs) => Some(news(Message {
                from,
                sigs,
                ..Message::default()
            })?),
            Event::ResponseStored {
                id,
                owner,
                response,
                conversation,
            } => {
                let (Ok(r), Ok(c)) = (String::from_utf8(response), String::from_utf8(conversation))
                else {
                    return Ok(());
                };
                let kept = KeptResponse {
                    o: owner.map(|o| salt.fingerprint("token", &o)),
                    r,
                    c,
                };
                let json = serde_json::to_string(&kept).map_err(|e| format!("encode: {e}"))?;
                // Looked up on a miss (`Lookup::response`), never published.
                pipe.cmd("SET")
                    .arg(self.key(&format!("r:{id}")))
                    .arg(json)
                    .arg("PX")
                    .arg(RESPONSE_TTL.as_millis() as u64)
                    .ignore();
                None
            }
            Event::ResponseDeleted { id } => {
                pipe.cmd("DEL").arg(self.key(&format!("r:{id}"))).ignore();
                Some(news(Message {
                    from,
                    resp_deleted: Some(id),
                    ..Message::default()
                })?)
            }
            Event::PinSet {
                name,
                key,
                owner,
                expires,
                upstream,
            } => {
                // Looked up on a miss (`Lookup::pin`), never published.
                let invocation =
                    self.pin_invocation(salt, &name, &key, &owner, expires, upstream.as_deref())?;
                let _: i64 = self
                    .bounded(what, invocation.invoke_async(&mut conn.clone()))
                    .await?;
                None
            }
            Event::PinRemoved { name, owner } => {
                let owner_fp = salt.fingerprint("token", &owner);
                pipe.cmd("DEL").arg(self.key(&format!("a:{name}"))).ignore();
                pipe.cmd("ZREM")
                    .arg(self.key(&format!("ao:{owner_fp}")))
                    .arg(&name)
                    .ignore();
                Some(news(Message {
                    from,
                    pin_gone: Some(name),
                    ..Message::default()
                })?)
            }
            Event::Reset { keys, model } => {
                let fps: Option<Vec<String>> = keys.map(|keys| {
                    keys.iter()
                        .map(|k| salt.fingerprint("key", k.expose()))
                        .collect()
                });
                let mut invocation = self.scripts.reset.arg(&self.cfg.prefix);
                invocation.arg(model.as_deref().unwrap_or(""));
                for fp in fps.iter().flatten() {
                    invocation.arg(fp);
                }
                let _: i64 = self
                    .bounded(what, invocation.invoke_async(&mut conn.clone()))
                    .await?;
                Some(news(Message {
                    from,
                    reset: Some(ResetMsg { keys: fps, model }),
                    ..Message::default()
                })?)
            }
        };
        if let Some(json) = published {
            pipe.cmd("PUBLISH")
                .arg(self.key("events"))
                .arg(format!("{} {json}", self.id))
                .ignore();
        }
        if pipe.cmd_iter().next().is_none() {
            return Ok(());
        }
        let _: () = self.bounded(what, pipe.query_async(conn)).await?;
        Ok(())
    }
}

fn saved_model<'m, 'a>(
    models: &'m mut HashMap<(&'a str, &'a str), SavedModel>,
    fp: &'a str,
    model: &'a str,
) -> &'m mut SavedModel {
    models.entry((fp, model)).or_insert_with(|| SavedModel {
        model: model.to_string(),
        consecutive_failures: 0,
        rest: None,
        day: None,
        daily_requests: 0,
        tokens: Tokens::default(),
    })
}

fn add_totals(into: &mut TokenTotals, t: &TokenTotals) {
    into.requests += t.requests;
    into.prompt_tokens = into.prompt_tokens.saturating_add(t.prompt_tokens);
    into.completion_tokens = into.completion_tokens.saturating_add(t.completion_tokens);
    into.thoughts_tokens = into.thoughts_tokens.saturating_add(t.thoughts_tokens);
}

/// A Redis error without anything that could hold a secret (the URL is never in it, but a
/// server message might echo arguments).
fn describe(e: &redis::RedisError) -> String {
    if e.is_timeout() {
        return "timed out".into();
    }
    if e.is_connection_refusal() {
        return "connection refused".into();
    }
    if e.is_connection_dropped() || e.is_io_error() {
        return "connection lost".into();
    }
    match e.code() {
        Some(code) => format!("Redis error {code}"),
        None => format!("{:?}", e.kind()),
    }
}

// ---- wire format of batches and messages ------------------------------------------------------

struct Batch {
    from: String,
    day: String,
    expire_at: u64,
    keys: Vec<BKey>,
    tokens: Vec<BToken>,
}

#[derive(Serialize)]
struct BatchOut<'a> {
    from: &'a str,
    day: &'a str,
    expire_at: u64,
    keys: &'a [BKey],
    tokens: &'a [BToken],
}

#[derive(Serialize)]
struct BKey {
    #[serde(skip)]
    key: ApiKey,
    k: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    dis: Option<String>,
    m: Vec<BModel>,
}

#[derive(Serialize)]
struct BModel {
    n: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    f: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    r: Option<i64>,
    d: bool,
    /// Counts (increments); absent when the quota day is unknown.
    #[serde(skip_serializing_if = "Option::is_none")]
    q: Option<u64>,
    p: u64,
    c: u64,
    t: u64,
}

#[derive(Serialize)]
struct BToken {
    fp: String,
    q: u64,
    p: u64,
    c: u64,
    t: u64,
}

/// A message on `{prefix}events` (from `MERGE`, `FAILED` or an event).
#[derive(Serialize, Deserialize, Default)]
struct Message {
    from: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    day: Option<String>,
    #[serde(
        default,
        deserialize_with = "seq",
        skip_serializing_if = "Vec::is_empty"
    )]
    keys: Vec<MKey>,
    #[serde(
        default,
        deserialize_with = "seq",
        skip_serializing_if = "Vec::is_empty"
    )]
    tokens: Vec<MToken>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    lock: Option<LockMsg>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    session: Option<SessionMsg>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    session_end: Option<String>,
    #[serde(
        default,
        deserialize_with = "seq",
        skip_serializing_if = "Vec::is_empty"
    )]
    sigs: Vec<(String, String)>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reset: Option<ResetMsg>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    resp_deleted: Option<String>,
    /// A pin removed (its name): replicas drop their copy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pin_gone: Option<String>,
}

/// A stored response in Redis (`{prefix}r:{id}`): its owner's salted fingerprint and texts.
#[derive(Serialize, Deserialize)]
struct KeptResponse {
    o: Option<String>,
    r: String,
    c: String,
}

/// A resource pin in Redis (`{prefix}a:{name}`): the key's and the owner's salted
/// fingerprints, the end (Unix ms), an upload session's upstream path.
#[derive(Serialize, Deserialize)]
struct KeptPin {
    k: String,
    o: String,
    e: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    u: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct MKey {
    k: String,
    #[serde(default)]
    dis: Option<String>,
    #[serde(default, deserialize_with = "seq")]
    m: Vec<MModel>,
}

#[derive(Serialize, Deserialize)]
struct MModel {
    n: String,
    #[serde(default)]
    f: Option<u32>,
    #[serde(default)]
    r: Option<i64>,
    #[serde(default)]
    d: Option<bool>,
    #[serde(default)]
    q: Option<u64>,
    #[serde(default)]
    p: Option<u64>,
    #[serde(default)]
    c: Option<u64>,
    #[serde(default)]
    t: Option<u64>,
}

#[derive(Serialize, Deserialize)]
struct MToken {
    fp: String,
    q: u64,
    p: u64,
    c: u64,
    t: u64,
}

#[derive(Serialize, Deserialize)]
struct LockMsg {
    ip: String,
    ms: i64,
}

#[derive(Serialize, Deserialize)]
struct SessionMsg {
    /// The session id's hash, hex.
    h: String,
    /// The opener's salted fingerprint (`None`: no token).
    by: Option<String>,
    ms: i64,
}

#[derive(Serialize, Deserialize)]
struct ResetMsg {
    keys: Option<Vec<String>>,
    model: Option<String>,
}

/// A list, where Lua's `cjson` writes an empty one as `{}`.
fn seq<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum SeqOrEmpty<T> {
        Seq(Vec<T>),
        Map(HashMap<String, serde_json::Value>),
    }
    match SeqOrEmpty::<T>::deserialize(d)? {
        SeqOrEmpty::Seq(v) => Ok(v),
        SeqOrEmpty::Map(m) if m.is_empty() => Ok(Vec::new()),
        SeqOrEmpty::Map(_) => Err(serde::de::Error::custom("expected a list")),
    }
}
