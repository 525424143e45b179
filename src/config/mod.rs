//! The configuration: one TOML file plus the key and token files it names.
//!
//! `raw` mirrors the TOML exactly (serde, `deny_unknown_fields`); `validate` turns it, once, into
//! the plain types below, which are what the rest of the proxy reads. Every problem is reported
//! with file, line, column and the field path (`pool.keys[3]`), all of them at once. Nothing in
//! this module keeps state or touches the network.

mod locate;
mod raw;
mod validate;

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;

use crate::secret::{ApiKey, RedisUrl, Token};

/// A validated configuration, ready for the hot path.
#[derive(Debug, Clone)]
pub struct Config {
    /// The config file, as given (made absolute).
    pub path: PathBuf,
    /// Hex digest of the config file and every file it names, in order.
    pub hash: String,
    /// Every file that was read: the config file first, then key files, then token files.
    pub files: Vec<PathBuf>,
    pub server: Server,
    pub upstream: Upstream,
    pub auth: Auth,
    pub access: Access,
    pub pool: Pool,
    pub models: Models,
    pub logging: Logging,
    pub state: State,
}

#[derive(Debug, Clone)]
pub struct Server {
    /// `host:port` as written; resolved when binding.
    pub listen: String,
    pub trusted_proxies: Vec<IpNet>,
    pub max_body: u64,
    pub header_timeout: Duration,
    pub shutdown_grace: Duration,
    pub metrics_public: bool,
    /// How often the config and its files are re-read and hashed, for file systems that send
    /// no change events; `Duration::ZERO` turns the poll off.
    pub reload_poll: Duration,
    /// Threads that serve connections, each with its own event loop and upstream connection
    /// pool (`0` in the file: one per CPU the process may use). Applied at start only.
    pub workers: usize,
    /// The one header `trusted_proxies` set to name the client; any other is ignored.
    pub real_ip_header: RealIpHeader,
    /// Client connections served at once (`0` in the file: derived from memory); a small
    /// reserve beyond it gets a 503, beyond that a connection is closed at once.
    pub max_connections: usize,
    /// Requests served at once, streams until their end (`0` in the file: derived from memory);
    /// beyond it a fast 503 with `Retry-After`. `/livez`, `/readyz` and `/health` are exempt.
    pub max_in_flight: usize,
    /// Bytes that request bodies and fetched images may hold at once, over all requests
    /// (`"auto"` in the file: a quarter of the memory the process may use).
    pub memory_budget: u64,
    /// A request body must arrive whole within this, else 408.
    pub body_timeout: Duration,
    /// A client that accepts no bytes for this long while the proxy writes to it is cut off.
    pub write_timeout: Duration,
    /// Largest upload (`/upload/…` and resumable upload sessions), streamed through in
    /// constant memory; not bounded by `max_body`.
    pub max_upload: u64,
    /// `server.public_url` without a trailing slash: the scheme and authority (and optional
    /// path prefix) of the upload URLs handed to clients. `None`: from the request.
    pub public_url: Option<String>,
    /// Browser origins that may call the API routes (`server.cors_origins`).
    pub cors_origins: CorsOrigins,
}

/// Which web pages may call the API routes from a browser (`server.cors_origins`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum CorsOrigins {
    /// None: no preflight is answered, no answer names an origin.
    #[default]
    None,
    /// `["*"]`: any page (each still needs a client token).
    Any,
    /// These origins, as browsers send them (`https://app.example.com`, lowercase, the port
    /// only when not the scheme's default), sorted and without repeats.
    Listed(Vec<String>),
}

/// Which forwarding header a trusted proxy sets (`server.real_ip_header`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RealIpHeader {
    /// `X-Forwarded-For`: a chain, walked right to left past trusted hops.
    XForwardedFor,
    /// RFC 7239 `Forwarded`: the `for=` of each element, walked like `X-Forwarded-For`.
    Forwarded,
    /// A header holding one address (`X-Real-IP`, `CF-Connecting-IP`, …); when it was sent
    /// more than once, the last value (the nearest proxy's) counts.
    Single(http::HeaderName),
}

impl RealIpHeader {
    /// The header's name, lowercase.
    pub fn name(&self) -> &str {
        match self {
            RealIpHeader::XForwardedFor => "x-forwarded-for",
            RealIpHeader::Forwarded => "forwarded",
            RealIpHeader::Single(name) => name.as_str(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    /// Scheme and authority (and optional path prefix), without a trailing slash.
    pub base_url: String,
    pub proxy: Option<String>,
    pub connect_timeout: Duration,
    pub first_byte_timeout: Duration,
    pub idle_timeout: Duration,
    /// `None` when set to `"0s"`.
    pub heartbeat: Option<Duration>,
    /// Threshold applied to every harm category; `None` means `"default"` (send nothing).
    pub safety: Option<String>,
    pub fetch_private_urls: bool,
}

#[derive(Debug, Clone, Default)]
pub struct Auth {
    pub tokens: Vec<ClientToken>,
    pub admin_tokens: Vec<Token>,
    /// `auth.open = true`: no client tokens, on purpose; every client may use the pool.
    /// Validation accepts an empty `tokens` only with this set.
    pub open: bool,
}

#[derive(Debug, Clone)]
pub struct ClientToken {
    /// Shown in logs and stats; defaults to the masked token.
    pub name: String,
    pub token: Token,
    /// `None`: every model is allowed.
    pub models: Option<ModelGlobs>,
}

/// A list of model-name globs (`gemini-2.5-*`).
#[derive(Debug, Clone)]
pub struct ModelGlobs(pub Vec<glob::Pattern>);

impl ModelGlobs {
    pub fn matches(&self, model: &str) -> bool {
        self.0.iter().any(|p| p.matches(model))
    }
}

#[derive(Debug, Clone)]
pub struct Access {
    pub allow: Vec<IpRule>,
    pub deny: Vec<IpRule>,
    /// Wrong or missing tokens an address may present per minute before `lockout` answers
    /// 429 for the rest of it; 0 turns the lockout off.
    pub max_token_failures: u32,
}

/// One allow/deny entry. A single address is a /32 or /128 network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IpRule {
    Any,
    Net(IpNet),
}

impl IpRule {
    /// Whether `ip` falls under this rule. IPv4-mapped IPv6 addresses (a v4 client on a
    /// dual-stack socket) are compared as IPv4, as the rules themselves were normalised.
    pub fn matches(&self, ip: std::net::IpAddr) -> bool {
        match self {
            IpRule::Any => true,
            IpRule::Net(net) => net.contains(&ip.to_canonical()),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    RoundRobin,
    LeastUsed,
}

#[derive(Debug, Clone)]
pub struct Pool {
    pub strategy: Strategy,
    /// Keys from `keys` then from `key_files`, in order, without duplicates.
    pub keys: Vec<KeySpec>,
    pub failure_threshold: u32,
    pub cooldown: Duration,
    pub max_attempts: u32,
    /// How far the attempt loop may go for one request (read by `proxy` only).
    pub retry: RetryPolicy,
    /// A client token's file uploads prefer the key of its upload group while the group is
    /// younger than this (`affinity::upload_group`); zero: every upload is placed freely.
    pub upload_group: Duration,
}

/// The default `pool.upload_group`.
pub const UPLOAD_GROUP: Duration = Duration::from_secs(600);

/// Bounds on one request's attempts, beyond `max_attempts`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Quota answers (429, model-scoped 403) after which the request stops hopping keys.
    pub max_quota_hops: u32,
    /// Replay a generation on another key after its request may have reached Google (a
    /// timeout or a reset after writing). Off by default: such a call may be billed.
    pub retry_after_send: bool,
    /// No new attempt starts this long after the request's first one.
    pub request_deadline: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_quota_hops: 8,
            retry_after_send: false,
            request_deadline: Duration::from_secs(120),
        }
    }
}

#[derive(Debug, Clone)]
pub struct KeySpec {
    pub key: ApiKey,
    pub name: Option<String>,
    pub project: Option<String>,
    /// `None`: the key serves every model.
    pub models: Option<ModelGlobs>,
    pub daily_limit: Option<u64>,
}

#[derive(Debug, Clone)]
pub enum ModelList {
    Upstream,
    Static(Vec<String>),
}

#[derive(Debug, Clone)]
pub struct Models {
    pub list: ModelList,
    pub refresh: Duration,
    pub aliases: HashMap<String, Alias>,
}

/// An alias, resolved through other aliases to real Gemini model names.
#[derive(Debug, Clone)]
pub struct Alias {
    /// At least one; more than one is a fallback chain, tried in order.
    pub models: Vec<String>,
    pub reasoning_effort: Option<String>,
}

// ---- glob aliases (issue #17): `"claude-*haiku*" = "gemini-2.5-flash"` ----

impl Models {
    /// The alias a requested model name resolves through: an exact key first, else the most
    /// specific glob key that matches the whole name (`glob_beats`); `None` for a plain model.
    pub fn alias(&self, name: &str) -> Option<&Alias> {
        if let Some(alias) = self.aliases.get(name) {
            return Some(alias);
        }
        let mut best: Option<(&str, &Alias)> = None;
        for (key, alias) in &self.aliases {
            if is_glob(key) && glob_matches(key, name) {
                match best {
                    Some((b, _)) if !glob_beats(key, b) => {}
                    _ => best = Some((key, alias)),
                }
            }
        }
        best.map(|(_, alias)| alias)
    }
}

/// An alias key with a `*` is a glob: `*` matches any run of characters (none included);
/// nothing else is special.
pub fn is_glob(key: &str) -> bool {
    key.contains('*')
}

/// Whether `pattern` (`*` wildcards only) matches all of `name`, case-sensitively.
pub fn glob_matches(pattern: &str, name: &str) -> bool {
    let mut pieces = pattern.split('*');
    let first = pieces.next().unwrap_or("");
    let Some(mut rest) = name.strip_prefix(first) else {
        return false;
    };
    let pieces: Vec<&str> = pieces.collect();
    let Some((last, middle)) = pieces.split_last() else {
        return rest.is_empty(); // no `*` at all: an exact match
    };
    for piece in middle {
        match rest.find(piece) {
            Some(at) => rest = &rest[at + piece.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// Whether glob `a` is more specific than glob `b` when both match: more literal (non-`*`)
/// characters wins, then fewer `*`, then the alphabetically first key (so the choice never
/// depends on the table's order).
pub fn glob_beats(a: &str, b: &str) -> bool {
    let rank = |k: &str| {
        let stars = k.matches('*').count();
        (std::cmp::Reverse(k.len() - stars), stars)
    };
    (rank(a), a) < (rank(b), b)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone)]
pub struct Logging {
    /// A tracing `EnvFilter` directive such as `info` or `gemini_rotator=debug`.
    pub level: String,
    pub format: LogFormat,
    pub directory: Option<PathBuf>,
    pub max_files: usize,
}

/// `[state]`: where what the pool learns (rests, day-outs, disabled keys, daily counts) is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct State {
    pub store: Store,
}

/// The state stores this build has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Store {
    /// Process memory only: a restart starts fresh.
    Memory,
    /// Memory, snapshotted to this file (absolute) every few seconds and at shutdown.
    File { path: PathBuf },
    /// Memory, shared with every replica on the same Redis server and prefix.
    Redis(RedisStore),
}

/// `store = "redis"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisStore {
    /// Masked in `Debug`/`Display`; from `url` or the file `url_file`.
    pub url: RedisUrl,
    /// Every Redis key starts with it.
    pub prefix: String,
    /// The most one Redis call may take before the replica goes on without it.
    pub timeout: Duration,
}

/// A successfully loaded config and the warnings worth logging at every load.
#[derive(Debug)]
pub struct Loaded {
    pub config: Config,
    pub warnings: Vec<String>,
}

/// One thing wrong with the config, located as precisely as possible.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub file: PathBuf,
    /// 1-based; 0 when the problem has no position (e.g. a missing file).
    pub line: usize,
    pub col: usize,
    /// Field path such as `pool.keys[3]`; empty for syntax errors.
    pub field: String,
    /// Never contains a secret.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if self.line > 0 {
            write!(f, ":{}:{}", self.line, self.col)?;
        }
        if self.field.is_empty() {
            write!(f, ": {}", self.message)
        } else {
            write!(f, ": {}: {}", self.field, self.message)
        }
    }
}

/// Every problem found; a config with any problem is rejected whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// Reads, parses and validates the config at `path` and every file it names.
pub fn load(path: &Path) -> Result<Loaded, ConfigError> {
    validate::load(path)
}

#[cfg(test)]
mod tests;
