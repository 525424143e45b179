//! `store = "file"`: the pool's learned state in one JSON file next to the config, written
//! atomically (a temp file in the same folder, fsync, rename, then the folder fsynced) with
//! mode 0600, when its content changed and once at shutdown.
//!
//! The file holds no secret: keys and client token names appear as salted fingerprints (the
//! salt is the file's own, made at random when the file is first written), rests as wall-clock
//! ends in Unix milliseconds, counts with the quota day they are for. On load, entries of an
//! earlier quota day are dropped (counts, and a file written on an earlier day also loses its
//! disabled keys and failure counts), as are rests already over; a missing, unreadable or
//! corrupt file is a WARN and a fresh start.
//!
//! It also holds the resource pins (`affinity`: which key created a file, a cache, a batch,
//! an upload session, for which client token, until when), so an uploaded file stays usable
//! after a restart within its 48 h: by name (an upload session's is a hash of its id), the
//! key's and owner's fingerprints and the end; expired ones and those of keys or client tokens
//! no longer configured are dropped on load. A file without pins is written as before.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::{ledger_names, owner_names, Salt, StoreStatus, Why};
use crate::affinity::{Affinity, Pin};
use crate::config::Config;
use crate::pool::{KeyPool, Now, SavedKey, SavedModel, SavedRest};
use crate::quota_day::{QuotaClock, QuotaDay};
use crate::secret::ApiKey;
use crate::usage::{LedgerDay, TokenTotals, TokenUsage, Tokens};

/// The format's version; a file of another version is treated as corrupt (a fresh start).
const VERSION: u32 = 1;

/// The file, as written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileState {
    pub version: u32,
    /// Hex; the salt of every fingerprint in the file.
    pub salt: String,
    /// The quota day (America/Los_Angeles) the file was written in.
    pub quota_day: Option<String>,
    pub keys: Vec<KeyRecord>,
    /// The client token ledger of `quota_day`.
    pub tokens: Vec<TokenRecord>,
    /// Resource pins (absent when there are none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pins: Vec<PinRecord>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PinRecord {
    /// `files/abc`, `cachedContents/x`, `uploads/{hash of the session id}`…
    pub name: String,
    /// `Salt::fingerprint("key", key)`.
    pub key: String,
    /// `Salt::fingerprint("token", owner)`.
    pub owner: String,
    /// When it expires, Unix milliseconds.
    pub expires_ms: u64,
    /// An upload session's upstream path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyRecord {
    /// `Salt::fingerprint("key", key)`.
    pub fp: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled: Option<String>,
    #[serde(default)]
    pub models: Vec<ModelRecord>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelRecord {
    pub model: String,
    #[serde(default)]
    pub failures: u32,
    /// When the rest ends, Unix milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rest_until_ms: Option<u64>,
    /// The rest is a day-out (until the quota day ends).
    #[serde(default)]
    pub day_out: bool,
    /// The quota day of the counts below.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub day: Option<String>,
    #[serde(default)]
    pub requests: u64,
    #[serde(default)]
    pub prompt_tokens: u64,
    #[serde(default)]
    pub completion_tokens: u64,
    #[serde(default)]
    pub thoughts_tokens: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenRecord {
    /// `Salt::fingerprint("token", name)`: names of unnamed tokens are their masked form.
    pub fp: String,
    pub requests: u64,
    #[serde(default)]
    pub prompt_tokens: u64,
    #[serde(default)]
    pub completion_tokens: u64,
    #[serde(default)]
    pub thoughts_tokens: u64,
}

/// The records of `pins` (sorted by name, as `Affinity::export` gives them) under `salt`.
pub fn pin_records(salt: Salt, pins: &[(String, Pin)]) -> Vec<PinRecord> {
    pins.iter()
        .map(|(name, p)| PinRecord {
            name: name.clone(),
            key: salt.fingerprint("key", p.key.expose()),
            owner: salt.fingerprint("token", &p.owner),
            expires_ms: to_ms(p.expires),
            upstream: p.upstream.as_deref().map(str::to_string),
        })
        .collect()
}

fn to_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn from_ms(ms: u64) -> Option<SystemTime> {
    UNIX_EPOCH.checked_add(Duration::from_millis(ms))
}

fn parse_day(s: &str) -> Option<QuotaDay> {
    s.parse().ok()
}

impl FileState {
    /// The file for an export of the pool and the token ledger.
    pub fn build(
        salt: Salt,
        today: Option<QuotaDay>,
        keys: &[SavedKey],
        tokens: Option<LedgerDay>,
    ) -> FileState {
        let keys = keys
            .iter()
            .map(|k| KeyRecord {
                fp: salt.fingerprint("key", k.key.expose()),
                disabled: k.disabled.clone(),
                models: k
                    .models
                    .iter()
                    .map(|m| ModelRecord {
                        model: m.model.clone(),
                        failures: m.consecutive_failures,
                        rest_until_ms: m.rest.map(|r| to_ms(r.until)),
                        day_out: m.rest.is_some_and(|r| r.daily),
                        day: m.day.map(|d| d.to_string()),
                        requests: m.daily_requests,
                        prompt_tokens: m.tokens.prompt,
                        completion_tokens: m.tokens.completion,
                        thoughts_tokens: m.tokens.thoughts,
                    })
                    .collect(),
            })
            .collect();
        let tokens = tokens
            .filter(|(day, _)| Some(*day) == today)
            .map(|(_, totals)| {
                totals
                    .into_iter()
                    .map(|(name, t)| TokenRecord {
                        fp: salt.fingerprint("token", &name),
                        requests: t.requests,
                        prompt_tokens: t.prompt_tokens,
                        completion_tokens: t.completion_tokens,
                        thoughts_tokens: t.thoughts_tokens,
                    })
                    .collect()
            })
            .unwrap_or_default();
        FileState {
            version: VERSION,
            salt: salt.to_hex(),
            quota_day: today.map(|d| d.to_string()),
            keys,
            tokens,
            pins: Vec::new(),
        }
    }

    /// This file with `pins` (see [`pin_records`]).
    pub fn with_pins(mut self, pins: Vec<PinRecord>) -> FileState {
        self.pins = pins;
        self
    }

    /// The pins still live at `wall` whose key is among `keys` and owner among the names
    /// `owner_names` gives for the ledger's `names`.
    pub fn restore_pins(
        &self,
        keys: &[ApiKey],
        names: &[String],
        wall: SystemTime,
    ) -> Vec<(String, Pin)> {
        let Some(salt) = self.salt() else {
            return Vec::new();
        };
        let by_fp: HashMap<String, &ApiKey> = keys
            .iter()
            .map(|k| (salt.fingerprint("key", k.expose()), k))
            .collect();
        let owners: HashMap<String, &str> = owner_names(names)
            .map(|n| (salt.fingerprint("token", n), n))
            .collect();
        self.pins
            .iter()
            .filter_map(|p| {
                let expires = from_ms(p.expires_ms).filter(|e| *e > wall)?;
                Some((
                    p.name.clone(),
                    Pin {
                        key: (*by_fp.get(&p.key)?).clone(),
                        owner: std::sync::Arc::from(*owners.get(&p.owner)?),
                        expires,
                        upstream: p.upstream.as_deref().map(std::sync::Arc::from),
                    },
                ))
            })
            .collect()
    }

    pub fn encode(&self) -> Result<Vec<u8>, String> {
        let mut out = serde_json::to_vec_pretty(self).map_err(|e| e.to_string())?;
        out.push(b'\n');
        Ok(out)
    }

    pub fn decode(bytes: &[u8]) -> Result<FileState, String> {
        let f: FileState = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        if f.version != VERSION {
            return Err(format!(
                "version {} (this build reads {VERSION})",
                f.version
            ));
        }
        if Salt::from_hex(&f.salt).is_none() {
            return Err("the salt is not 64 hex digits".into());
        }
        Ok(f)
    }

    pub fn salt(&self) -> Option<Salt> {
        Salt::from_hex(&self.salt)
    }

    /// What of the file still holds at `wall` (quota day `today`), for the configured `keys`
    /// and client token `names`: counts of another day, rests already over and, when the file
    /// is from an earlier day, disabled marks and failure counts are dropped; fingerprints that
    /// match no configured key or name are ignored.
    pub fn restore(
        &self,
        keys: &[ApiKey],
        names: &[String],
        today: Option<QuotaDay>,
        wall: SystemTime,
    ) -> (Vec<SavedKey>, Option<LedgerDay>) {
        let Some(salt) = self.salt() else {
            return (Vec::new(), None);
        };
        let same_day = today.is_some() && self.quota_day.as_deref().and_then(parse_day) == today;
        let by_fp: HashMap<String, &ApiKey> = keys
            .iter()
            .map(|k| (salt.fingerprint("key", k.expose()), k))
            .collect();
        let mut out = Vec::new();
        for rec in &self.keys {
            let Some(key) = by_fp.get(&rec.fp) else {
                continue;
            };
            let models: Vec<SavedModel> = rec
                .models
                .iter()
                .filter_map(|m| {
                    let day = m
                        .day
                        .as_deref()
                        .and_then(parse_day)
                        .filter(|d| Some(*d) == today);
                    let rest = m
                        .rest_until_ms
                        .and_then(from_ms)
                        .filter(|until| *until > wall)
                        .map(|until| SavedRest {
                            until,
                            daily: m.day_out,
                        });
                    let failures = if same_day { m.failures } else { 0 };
                    if day.is_none() && rest.is_none() && failures == 0 {
                        return None;
                    }
                    let counts = day.is_some();
                    Some(SavedModel {
                        model: m.model.clone(),
                        consecutive_failures: failures,
                        rest,
                        day,
                        daily_requests: if counts { m.requests } else { 0 },
                        tokens: if counts {
                            Tokens {
                                prompt: m.prompt_tokens,
                                completion: m.completion_tokens,
                                thoughts: m.thoughts_tokens,
                            }
                        } else {
                            Tokens::default()
                        },
                    })
                })
                .collect();
            let disabled = rec.disabled.clone().filter(|_| same_day);
            if disabled.is_none() && models.is_empty() {
                continue;
            }
            out.push(SavedKey {
                key: (*key).clone(),
                disabled,
                models,
            });
        }
        let tokens = match (same_day, today) {
            (true, Some(day)) => {
                let by_fp: HashMap<String, &String> = names
                    .iter()
                    .map(|n| (salt.fingerprint("token", n), n))
                    .collect();
                let totals: Vec<(String, TokenTotals)> = self
                    .tokens
                    .iter()
                    .filter_map(|t| {
                        let name = by_fp.get(&t.fp)?;
                        Some((
                            (*name).clone(),
                            TokenTotals {
                                requests: t.requests,
                                prompt_tokens: t.prompt_tokens,
                                completion_tokens: t.completion_tokens,
                                thoughts_tokens: t.thoughts_tokens,
                            },
                        ))
                    })
                    .collect();
                (!totals.is_empty()).then_some((day, totals))
            }
            _ => None,
        };
        (out, tokens)
    }
}

/// The file store in use.
pub struct FileStore {
    path: PathBuf,
    salt: Salt,
    clock: QuotaClock,
    /// The bytes last written (or loaded): unchanged state is not written again.
    last: Option<Vec<u8>>,
    /// The last write failed (logged once until one succeeds).
    failing: bool,
    /// Since when `failing` has been what it is, and the last error.
    since: SystemTime,
    last_error: Option<String>,
    /// The pins' records and the `Affinity::version` they are of (fingerprinting every pin
    /// every 2 s would cost more than the rest of the file).
    pins: Option<(u64, Vec<PinRecord>)>,
}

impl FileStore {
    /// Loads `path` (if it is there and sound) into the pool and the ledger and returns the
    /// store that keeps writing it.
    pub fn open(
        path: &Path,
        cfg: &Config,
        pool: &KeyPool,
        usage: &TokenUsage,
        affinity: &Affinity,
        now: Now,
    ) -> FileStore {
        let clock = QuotaClock::new();
        let shown = path.display();
        let mut salt = None;
        let mut last = None;
        match std::fs::read(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                tracing::warn!(path = %shown, "state: no state file yet; starting fresh");
            }
            Err(e) => {
                tracing::warn!(path = %shown, error = %e, "state: cannot read the state file; starting fresh");
            }
            Ok(bytes) => match FileState::decode(&bytes) {
                Err(e) => {
                    tracing::warn!(path = %shown, error = %e, "state: corrupt state file; starting fresh (it will be replaced)");
                }
                Ok(file) => {
                    let today = clock.day(now.wall).map(|(d, _)| d);
                    let keys: Vec<ApiKey> = cfg.pool.keys.iter().map(|k| k.key.clone()).collect();
                    let names = ledger_names(cfg);
                    let (saved, tokens) = file.restore(&keys, &names, today, now.wall);
                    pool.import(&saved, now);
                    let pins = file.restore_pins(&keys, &names, now.wall);
                    for (name, pin) in &pins {
                        affinity.insert_remote(name, pin.clone(), now.wall);
                    }
                    if let Some((day, totals)) = &tokens {
                        usage.import_at(*day, totals, now.wall);
                    }
                    let rests = saved
                        .iter()
                        .flat_map(|k| &k.models)
                        .filter(|m| m.rest.is_some())
                        .count();
                    tracing::info!(
                        path = %shown,
                        keys = saved.len(),
                        rests,
                        disabled = saved.iter().filter(|k| k.disabled.is_some()).count(),
                        client_tokens = tokens.as_ref().map_or(0, |(_, t)| t.len()),
                        pins = pins.len(),
                        "state: loaded"
                    );
                    salt = file.salt();
                    last = Some(bytes);
                }
            },
        }
        FileStore {
            path: path.to_path_buf(),
            salt: salt.unwrap_or_else(Salt::random),
            clock,
            last,
            failing: false,
            since: SystemTime::now(),
            last_error: None,
            pins: None,
        }
    }

    pub fn status(&self) -> StoreStatus {
        StoreStatus {
            store: "file",
            ok: !self.failing,
            last_error: self.last_error.clone(),
            since: Some(self.since),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The pins' records, made again only when the table changed.
    fn pin_records(&mut self, affinity: &Affinity, wall: SystemTime) -> Vec<PinRecord> {
        let version = affinity.version();
        match &self.pins {
            Some((v, records)) if *v == version => records.clone(),
            _ => {
                let records = pin_records(self.salt, &affinity.export(wall));
                self.pins = Some((version, records.clone()));
                records
            }
        }
    }

    /// Writes the current state if it differs from what was last written (always at shutdown).
    pub fn save(
        &mut self,
        pool: &KeyPool,
        usage: &TokenUsage,
        affinity: &Affinity,
        now: Now,
        why: Why,
    ) {
        let today = self.clock.day(now.wall).map(|(d, _)| d);
        let file = FileState::build(
            self.salt,
            today,
            &pool.export(now),
            usage.export_at(now.wall),
        )
        .with_pins(self.pin_records(affinity, now.wall));
        let shown = self.path.display();
        let bytes = match file.encode() {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(path = %shown, error = %e, "state: cannot encode the snapshot");
                return;
            }
        };
        // The last snapshot is always written: whatever happened to the file meanwhile, it
        // holds the state the process ended with.
        if why == Why::Periodic && self.last.as_deref() == Some(&bytes[..]) {
            return;
        }
        match write_atomic(&self.path, &bytes) {
            Ok(()) => {
                if self.failing {
                    tracing::info!(path = %shown, "state: writing the state file works again");
                    self.since = SystemTime::now();
                }
                self.failing = false;
                self.last = Some(bytes);
                match why {
                    Why::Shutdown => tracing::info!(path = %shown, "state: final snapshot written"),
                    Why::Periodic => tracing::debug!(path = %shown, "state: snapshot written"),
                }
            }
            Err(e) => {
                if !self.failing || why == Why::Shutdown {
                    tracing::warn!(path = %shown, error = %e, "state: cannot write the state file; the pool keeps serving from memory");
                }
                if !self.failing {
                    self.since = SystemTime::now();
                }
                self.failing = true;
                self.last_error = Some(e.to_string());
            }
        }
    }
}

/// Writes `bytes` to `path` so that a reader (or a crash) sees the old file or the new one,
/// never a mix: a temp file in the same folder (mode 0600), fsync, rename, fsync the folder.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "state".into());
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut f = options.open(&tmp)?;
        #[cfg(unix)]
        {
            // A temp file left by an earlier run keeps its mode on open; make sure.
            use std::os::unix::fs::PermissionsExt;
            f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        }
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
        return result;
    }
    // The rename itself is durable once the folder is synced (best effort: not every
    // filesystem lets a folder be opened for that).
    if let Ok(d) = std::fs::File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(())
}
