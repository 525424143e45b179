//! Turns the config file (and the key and token files it names) into a validated [`Config`].
//!
//! It owns the rules of SPEC §2 and the way problems are reported: every problem found is
//! collected, each with `file:line:col`, the field path and a message, so one `--check` run
//! shows everything that is wrong. Positions come from the spans the TOML parser keeps
//! (`toml::de::DeTable`); a field that is absent is reported at its nearest written ancestor.
//! Messages never contain a key or a token, only their masked forms or positions, and never
//! echo a URL (it may carry proxy credentials). It reads files (and their permission bits, to
//! warn about a secret every user may read) and nothing else: no network, no clock, no global
//! state. No rule here lets a config fail open: no client tokens needs `auth.open = true`, and
//! an empty `access.allow` is refused.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use toml::de::{DeTable, ValueDeserializer};
use toml::Spanned;

use super::locate::{line_col, locate, path_at, redact, scrub, secrets_in, At, FieldPath};
use super::raw;
use super::{
    Access, Alias, Auth, ClientToken, Config, ConfigError, CorsOrigins, IpRule, KeySpec, Loaded,
    LogFormat, Logging, ModelGlobs, ModelList, Models, Pool, Problem, RealIpHeader, RedisStore,
    RetryPolicy, Server, State, Store, Strategy, Upstream,
};
use crate::secret::{mask_token, ApiKey, RedisUrl, Token};

const SAFETY_THRESHOLDS: [&str; 5] = [
    "BLOCK_LOW_AND_ABOVE",
    "BLOCK_MEDIUM_AND_ABOVE",
    "BLOCK_ONLY_HIGH",
    "BLOCK_NONE",
    "OFF",
];

/// Efforts the OpenAI API documents; anything else is passed on but warned about, since a
/// typo there would otherwise silently mean "the model's default".
const REASONING_EFFORTS: [&str; 5] = ["none", "minimal", "low", "medium", "high"];

/// Tokens shorter than this are guessable; they are warned about (and their masked form shows
/// none of their characters).
const SHORT_TOKEN: usize = 16;

pub fn load(path: &Path) -> Result<Loaded, ConfigError> {
    let fail = |line, col, message: String| ConfigError {
        problems: vec![Problem {
            file: path.to_path_buf(),
            line,
            col,
            field: String::new(),
            message,
        }],
    };
    let abs_path = std::path::absolute(path)
        .map_err(|e| fail(0, 0, format!("cannot resolve the config path: {e}")))?;
    let bytes =
        std::fs::read(path).map_err(|e| fail(0, 0, format!("cannot read config file: {e}")))?;
    let text = std::str::from_utf8(&bytes).map_err(|e| {
        let (line, col) = line_col(&String::from_utf8_lossy(&bytes), e.valid_up_to());
        fail(line, col, "the config file is not UTF-8 text".into())
    })?;
    // A BOM is not TOML, but Windows editors add one; it is invisible, so columns ignore it.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);

    let (root, errors) = DeTable::parse_recoverable(text);
    let secrets = secrets_in(&root);
    if !errors.is_empty() {
        // After a syntax error the tree is a guess, so validating it would only add noise.
        let problems = errors
            .iter()
            .map(|e| {
                let (line, col) = e.span().map_or((1, 1), |s| line_col(text, s.start));
                Problem {
                    file: path.to_path_buf(),
                    line,
                    col,
                    field: String::new(),
                    message: redact(&scrub(e.message()), &secrets),
                }
            })
            .collect();
        return Err(ConfigError { problems });
    }

    let mut cx = Cx {
        file: path.to_path_buf(),
        given_dir: path.parent().map(Path::to_path_buf).unwrap_or_default(),
        abs_dir: abs_path.parent().map(Path::to_path_buf).unwrap_or_default(),
        text,
        root: &root,
        problems: Vec::new(),
        warnings: Vec::new(),
        key_files: Vec::new(),
        token_files: Vec::new(),
        url_files: Vec::new(),
        inline_password: false,
        secrets,
    };
    let built = cx.build();
    let inline_secrets = !cx.secrets.is_empty()
        || cx.inline_password
        || built
            .as_ref()
            .and_then(|parts| parts.upstream.proxy.as_deref())
            .and_then(|proxy| reqwest::Url::parse(proxy).ok())
            .is_some_and(|url| url.password().is_some());
    if inline_secrets {
        cx.world_readable(path, &abs_path, "", "keys, tokens or a password");
    }
    let Cx {
        mut problems,
        mut warnings,
        key_files,
        token_files,
        url_files,
        ..
    } = cx;
    // The config file first, then each named file, each top to bottom.
    let order = |a: &Problem, b: &Problem| {
        (a.file != path, &a.file, a.line, a.col).cmp(&(b.file != path, &b.file, b.line, b.col))
    };
    problems.sort_by(order);
    warnings.sort_by(order);

    match built {
        Some(parts) if problems.is_empty() => {
            let mut hasher = Sha256::new();
            let mut files = vec![abs_path.clone()];
            hasher.update(&bytes);
            for (file, content) in key_files.into_iter().chain(token_files).chain(url_files) {
                // Length-prefixed, so moving a line from one file to the next changes the hash.
                hasher.update((content.len() as u64).to_le_bytes());
                hasher.update(&content);
                files.push(file);
            }
            let hash = hasher
                .finalize()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            let Parts {
                server,
                upstream,
                auth,
                access,
                pool,
                models,
                logging,
                state,
            } = parts;
            Ok(Loaded {
                config: Config {
                    path: abs_path,
                    hash,
                    files,
                    server,
                    upstream,
                    auth,
                    access,
                    pool,
                    models,
                    logging,
                    state,
                },
                warnings: warnings.iter().map(ToString::to_string).collect(),
            })
        }
        _ => {
            if problems.is_empty() {
                // Every `None` above comes with a problem; this keeps a slip from reading as
                // "rejected for no reason".
                problems.push(Problem {
                    file: path.to_path_buf(),
                    line: 0,
                    col: 0,
                    field: String::new(),
                    message: "rejected without a reported problem (a bug: please report it)".into(),
                });
            }
            Err(ConfigError { problems })
        }
    }
}

/// The validated sections, before the file bookkeeping (`path`, `hash`, `files`) is added.
struct Parts {
    server: Server,
    upstream: Upstream,
    auth: Auth,
    access: Access,
    pool: Pool,
    models: Models,
    logging: Logging,
    state: State,
}

/// What a `key_files` / `token_files` list yielded.
struct Lists {
    /// The non-comment lines, in order.
    entries: Vec<Entry>,
    /// Absolute path and bytes of every file read.
    files: Vec<(PathBuf, Vec<u8>)>,
    /// False when some file could not be read (already reported).
    ok: bool,
}

/// A line read from a key or token file.
struct Entry {
    at: At,
    value: String,
}

struct Cx<'a, 'i> {
    /// The config file as given, for messages.
    file: PathBuf,
    given_dir: PathBuf,
    abs_dir: PathBuf,
    text: &'i str,
    root: &'a Spanned<DeTable<'i>>,
    problems: Vec<Problem>,
    warnings: Vec<Problem>,
    /// Named files in the order read, with their bytes, for `Config.files` and the hash.
    key_files: Vec<(PathBuf, Vec<u8>)>,
    token_files: Vec<(PathBuf, Vec<u8>)>,
    /// `state.url_file`, when read.
    url_files: Vec<(PathBuf, Vec<u8>)>,
    /// The document holds a password in a URL (`state.url`).
    inline_password: bool,
    /// The document's keys and tokens, raw and masked, longest first: our own messages mask
    /// what they mention, but serde messages and table names echo what was written.
    secrets: Vec<(String, String)>,
}

impl Cx<'_, '_> {
    fn build(&mut self) -> Option<Parts> {
        self.unknown_sections();
        let server = self.section::<raw::Server>("server");
        let upstream = self.section::<raw::Upstream>("upstream");
        let auth = self.section::<raw::Auth>("auth");
        let access = self.section::<raw::Access>("access");
        let pool = self.section::<raw::Pool>("pool");
        let models = self.section::<raw::Models>("models");
        let logging = self.section::<raw::Logging>("logging");
        let state = self.section::<raw::State>("state");

        // Sections that did not deserialize were reported already; the others are still
        // validated, so every problem shows up in one run.
        let server = server.and_then(|s| self.server(s));
        let upstream = upstream.and_then(|u| self.upstream(u));
        let access = access.and_then(|a| self.access(a));
        let pool = pool.and_then(|p| self.pool(p));
        let auth = auth.and_then(|a| self.auth(a));
        let models = models.and_then(|m| self.models(m));
        let logging = logging.and_then(|l| self.logging(l));
        let state = state.and_then(|s| self.state(s));
        if let (Some(s), Some(a)) = (&server, &auth) {
            if a.open && a.tokens.is_empty() && s.cors_origins != CorsOrigins::None {
                self.warn(
                    &At::Cfg(FieldPath::root("server").key("cors_origins")),
                    "with an open proxy (auth.open, no client tokens), every listed web page a \
                     browser opens may use the pool: add client tokens, or leave cors_origins empty",
                );
            }
        }
        Some(Parts {
            server: server?,
            upstream: upstream?,
            auth: auth?,
            access: access?,
            pool: pool?,
            models: models?,
            logging: logging?,
            state: state?,
        })
    }

    // ---- reporting -------------------------------------------------------------------------

    fn problem_at(&self, at: &At, message: String) -> Problem {
        match at {
            At::Cfg(path) => {
                let (line, col) = line_col(self.text, self.locate(path));
                Problem {
                    file: self.file.clone(),
                    line,
                    col,
                    field: path.to_string(),
                    message,
                }
            }
            At::Line {
                file,
                line,
                col,
                field,
                ..
            } => Problem {
                file: file.clone(),
                line: *line,
                col: *col,
                field: field.to_string(),
                message,
            },
        }
    }

    fn report(&mut self, at: &At, message: impl Into<String>) {
        let p = self.problem_at(at, message.into());
        self.problems.push(p);
    }

    fn error(&mut self, path: &FieldPath, message: impl Into<String>) {
        self.report(&At::Cfg(path.clone()), message);
    }

    fn warn(&mut self, at: &At, message: impl Into<String>) {
        let p = self.problem_at(at, message.into());
        self.warnings.push(p);
    }

    fn locate(&self, path: &FieldPath) -> usize {
        locate(self.root, path)
    }

    /// Masks any key or token of the document in text that may echo it.
    fn echo(&self, text: &str) -> String {
        redact(text, &self.secrets)
    }

    // ---- sections ----------------------------------------------------------------------------

    fn unknown_sections(&mut self) {
        let mut unknown = Vec::new();
        for (key, _) in self.root.get_ref().iter() {
            let name: &str = key.get_ref();
            if !raw::SECTIONS.contains(&name) {
                unknown.push((name.to_string(), key.span()));
            }
        }
        for (name, span) in unknown {
            let (line, col) = line_col(self.text, span.start);
            let expected = raw::SECTIONS.map(|s| format!("`{s}`")).join(", ");
            self.problems.push(Problem {
                file: self.file.clone(),
                line,
                col,
                field: self.echo(&FieldPath::root(&name).to_string()),
                message: self.echo(&format!(
                    "unknown table `{name}`, expected one of {expected}"
                )),
            });
        }
    }

    /// Deserializes one top-level table on its own, so a bad field in one table does not hide
    /// the problems of the others.
    fn section<T: DeserializeOwned + Default>(&mut self, name: &str) -> Option<T> {
        let Some(value) = self.root.get_ref().get(name) else {
            return Some(T::default());
        };
        match T::deserialize(ValueDeserializer::from(value.clone())) {
            Ok(t) => Some(t),
            Err(e) => {
                let span = e.span().unwrap_or_else(|| value.span());
                let field = path_at(self.root, &span).unwrap_or_else(|| FieldPath::root(name));
                let (line, col) = line_col(self.text, span.start);
                self.problems.push(Problem {
                    file: self.file.clone(),
                    line,
                    col,
                    field: self.echo(&field.to_string()),
                    message: self.echo(&scrub(e.message())),
                });
                None
            }
        }
    }

    fn server(&mut self, s: raw::Server) -> Option<Server> {
        let p = FieldPath::root("server");
        let listen = self.listen(&p.key("listen"), &s.listen);
        let trusted_proxies = self.ip_rules(&p.key("trusted_proxies"), &s.trusted_proxies, false);
        let max_body = self.size(&p.key("max_body"), &s.max_body);
        let header_timeout = self.duration(&p.key("header_timeout"), &s.header_timeout, true);
        let shutdown_grace = self.duration(&p.key("shutdown_grace"), &s.shutdown_grace, false);
        let reload_poll = self.duration(&p.key("reload_poll"), &s.reload_poll, false);
        let workers = self.workers(&p.key("workers"), s.workers);
        let real_ip_header = self.real_ip_header(&p.key("real_ip_header"), &s.real_ip_header);
        let defaults = crate::admission::Defaults::detect();
        let max_connections = self.limit(
            &p.key("max_connections"),
            s.max_connections,
            defaults.max_connections,
        );
        let max_in_flight = self.limit(
            &p.key("max_in_flight"),
            s.max_in_flight,
            defaults.max_in_flight,
        );
        let memory_budget = if s.memory_budget.trim() == "auto" {
            Some(defaults.memory_budget)
        } else {
            self.size(&p.key("memory_budget"), &s.memory_budget)
        };
        if let (Some(budget), Some(body)) = (memory_budget, max_body) {
            if budget < body {
                self.warn(
                    &At::Cfg(p.key("memory_budget")),
                    format!(
                        "is smaller than server.max_body ({budget} < {body} bytes): bodies larger \
                         than the budget are refused with 413"
                    ),
                );
            }
        }
        let body_timeout = self.duration(&p.key("body_timeout"), &s.body_timeout, true);
        let write_timeout = self.duration(&p.key("write_timeout"), &s.write_timeout, true);
        let max_upload = self.size(&p.key("max_upload"), &s.max_upload);
        let public_url = self.public_url(&p.key("public_url"), &s.public_url);
        let cors_origins = self.cors_origins(&p.key("cors_origins"), &s.cors_origins);
        let trusted_proxies = trusted_proxies?
            .into_iter()
            .filter_map(|r| match r {
                IpRule::Net(n) => Some(n),
                IpRule::Any => None,
            })
            .collect();
        Some(Server {
            listen: listen?,
            trusted_proxies,
            max_body: max_body?,
            header_timeout: header_timeout?,
            shutdown_grace: shutdown_grace?,
            metrics_public: s.metrics_public,
            reload_poll: reload_poll?,
            workers: workers?,
            real_ip_header: real_ip_header?,
            max_connections: max_connections?,
            max_in_flight: max_in_flight?,
            memory_budget: memory_budget?,
            body_timeout: body_timeout?,
            write_timeout: write_timeout?,
            max_upload: max_upload?,
            public_url: public_url?,
            cors_origins: cors_origins?,
        })
    }

    /// `server.cors_origins`: `["*"]`, or origins as a browser sends them
    /// (`scheme://host[:port]`, http or https, nothing after the authority), normalised.
    fn cors_origins(&mut self, path: &FieldPath, list: &[String]) -> Option<CorsOrigins> {
        if list.is_empty() {
            return Some(CorsOrigins::None);
        }
        if list.iter().any(|o| o.trim() == "*") {
            if list.len() > 1 {
                self.error(
                    path,
                    "\"*\" allows every origin: write it alone, or list origins",
                );
                return None;
            }
            return Some(CorsOrigins::Any);
        }
        let mut out = Vec::with_capacity(list.len());
        let mut ok = true;
        for (i, raw) in list.iter().enumerate() {
            let origin = reqwest::Url::parse(raw.trim())
                .ok()
                .filter(|u| plain_web_address(u) && u.path() == "/");
            match origin {
                Some(u) => out.push(u.origin().ascii_serialization()),
                None => {
                    self.error(
                        &path.index(i),
                        format!(
                            "{:?} is not an origin: write e.g. \"https://app.example.com\" (scheme and \
                             host, an optional port, no path), or \"*\" alone",
                            crate::excerpt::excerpt(raw)
                        ),
                    );
                    ok = false;
                }
            }
        }
        out.sort();
        out.dedup();
        ok.then_some(CorsOrigins::Listed(out))
    }

    /// `server.public_url`: empty, or an `http(s)://host[:port][/prefix]` URL without query,
    /// fragment or credentials (it is the start of every upload URL the proxy hands out).
    fn public_url(&mut self, path: &FieldPath, s: &str) -> Option<Option<String>> {
        let s = s.trim();
        if s.is_empty() {
            return Some(None);
        }
        let ok = reqwest::Url::parse(s).ok().filter(plain_web_address);
        if ok.is_none() {
            self.error(
                path,
                format!(
                    "{:?} is not a usable public URL: write e.g. \"https://gemini.example.com\"",
                    crate::excerpt::excerpt(s)
                ),
            );
            return None;
        }
        Some(Some(s.trim_end_matches('/').to_string()))
    }

    /// `server.real_ip_header`: `x-forwarded-for`, `forwarded`, or any other header name, read
    /// as holding one address (`x-real-ip`, `cf-connecting-ip`, `true-client-ip`, …).
    fn real_ip_header(&mut self, path: &FieldPath, s: &str) -> Option<RealIpHeader> {
        let name = s.trim().to_ascii_lowercase();
        match name.as_str() {
            "x-forwarded-for" => return Some(RealIpHeader::XForwardedFor),
            "forwarded" => return Some(RealIpHeader::Forwarded),
            _ => {}
        }
        match http::HeaderName::from_bytes(name.as_bytes()) {
            Ok(header) if !name.is_empty() => Some(RealIpHeader::Single(header)),
            _ => {
                self.error(
                    path,
                    format!(
                        "{s:?} is not a header name: use \"x-forwarded-for\", \"forwarded\", \
                         \"x-real-ip\" or the header your proxy sets (e.g. \"cf-connecting-ip\")"
                    ),
                );
                None
            }
        }
    }

    /// `server.max_connections` / `server.max_in_flight`: 0 means `auto` (derived from memory).
    fn limit(&mut self, path: &FieldPath, n: i64, auto: usize) -> Option<usize> {
        const MAX: i64 = 1_000_000;
        match n {
            0 => Some(auto),
            1..=MAX => usize::try_from(n).ok(),
            _ => {
                self.error(
                    path,
                    format!("must be 0 (derived from memory, {auto} here) or 1 to {MAX}, got {n}"),
                );
                None
            }
        }
    }

    /// `server.workers`: 0 means one per CPU this process may use (cgroup limits included).
    fn workers(&mut self, path: &FieldPath, n: i64) -> Option<usize> {
        const MAX_WORKERS: i64 = 1024;
        match n {
            0 => Some(std::thread::available_parallelism().map_or(1, |n| n.get())),
            1..=MAX_WORKERS => usize::try_from(n).ok(),
            _ => {
                self.error(
                    path,
                    format!("must be 0 (one per CPU) or 1 to {MAX_WORKERS}, got {n}"),
                );
                None
            }
        }
    }

    fn upstream(&mut self, u: raw::Upstream) -> Option<Upstream> {
        let p = FieldPath::root("upstream");
        let base_url = self.base_url(&p.key("base_url"), &u.base_url);
        let proxy = self.proxy(&p.key("proxy"), &u.proxy);
        let connect_timeout = self.duration(&p.key("connect_timeout"), &u.connect_timeout, true);
        let first_byte_timeout =
            self.duration(&p.key("first_byte_timeout"), &u.first_byte_timeout, true);
        let idle_timeout = self.duration(&p.key("idle_timeout"), &u.idle_timeout, true);
        let heartbeat = self.duration(&p.key("heartbeat"), &u.heartbeat, false);
        let safety = self.safety(&p.key("safety"), &u.safety);
        Some(Upstream {
            base_url: base_url?,
            proxy: proxy?,
            connect_timeout: connect_timeout?,
            first_byte_timeout: first_byte_timeout?,
            idle_timeout: idle_timeout?,
            heartbeat: heartbeat.map(|d| (!d.is_zero()).then_some(d))?,
            safety: safety?,
            fetch_private_urls: u.fetch_private_urls,
        })
    }

    fn auth(&mut self, a: raw::Auth) -> Option<Auth> {
        let p = FieldPath::root("auth");
        let mut ok = true;
        let mut seen: HashMap<String, At> = HashMap::new();
        let mut tokens = Vec::new();

        for (i, entry) in a.tokens.into_iter().enumerate() {
            let ep = p.key("tokens").index(i);
            let (raw_token, at, name, models) = match entry {
                raw::TokenEntry::Plain(t) => (t, At::Cfg(ep.clone()), None, None),
                raw::TokenEntry::Table(t) => (t.token, At::Cfg(ep.key("token")), t.name, t.models),
            };
            let token = self.token(&at, raw_token, &mut seen);
            let name = self.non_empty(&ep.key("name"), name);
            let models = self.globs(&ep.key("models"), models);
            match (token, name, models) {
                (Some(token), Some(name), Some(models)) => tokens.push(ClientToken {
                    name: name.unwrap_or_else(|| token.masked()),
                    token,
                    models,
                }),
                _ => ok = false,
            }
        }

        let Lists {
            entries,
            files,
            ok: read_ok,
        } = self.read_lists(&p.key("token_files"), &a.token_files, "token");
        self.token_files = files;
        ok &= read_ok;
        for e in entries {
            match self.token(&e.at, e.value, &mut seen) {
                Some(token) => tokens.push(ClientToken {
                    name: token.masked(),
                    token,
                    models: None,
                }),
                None => ok = false,
            }
        }

        // Admin tokens are a separate list: the same token may be both, on purpose.
        let mut seen_admin: HashMap<String, At> = HashMap::new();
        let mut admin_tokens = Vec::new();
        for (i, t) in a.admin_tokens.into_iter().enumerate() {
            let at = At::Cfg(p.key("admin_tokens").index(i));
            match self.token(&at, t, &mut seen_admin) {
                Some(t) => admin_tokens.push(t),
                None => ok = false,
            }
        }

        // An empty token list must never open the proxy by accident (a Secret's tokens.txt
        // emptied by a bad edit): only `open = true` says it is meant.
        if ok && tokens.is_empty() && !a.open {
            let from_files = if a.token_files.is_empty() {
                String::new()
            } else {
                format!(" and none in {}", a.token_files.join(", "))
            };
            self.error(
                &p.key("tokens"),
                format!(
                    "no client tokens: none in `auth.tokens`{from_files}. Add one (e.g. \
                     `openssl rand -hex 24`), or set `auth.open = true` to let every client in \
                     on purpose"
                ),
            );
            ok = false;
        }
        if ok && a.open {
            let message = if tokens.is_empty() {
                "auth.open = true and no client tokens: the proxy is OPEN, anyone who can \
                 reach it may use every key in the pool"
            } else {
                "auth.open = true has no effect: client tokens are configured, so clients \
                 still need one of them"
            };
            self.warn(&At::Cfg(p.key("open")), message);
        }
        ok.then_some(Auth {
            tokens,
            admin_tokens,
            open: a.open,
        })
    }

    fn token(&mut self, at: &At, raw: String, seen: &mut HashMap<String, At>) -> Option<Token> {
        let masked = mask_token(&raw);
        if raw.is_empty() {
            self.report(at, "empty token");
            return None;
        }
        if raw.chars().any(|c| c.is_whitespace() || c.is_control()) {
            self.report(at, format!("token {masked} contains whitespace"));
            return None;
        }
        if let Some(first) = seen.get(&raw) {
            let first = first.describe();
            self.report(at, format!("duplicate token {masked} (first at {first})"));
            return None;
        }
        if raw.chars().count() < SHORT_TOKEN {
            self.warn(
                at,
                format!(
                    "token {masked} is short: use at least {SHORT_TOKEN} random characters \
                     (e.g. `openssl rand -hex 24`)"
                ),
            );
        }
        seen.insert(raw.clone(), at.clone());
        Some(Token::new(raw))
    }

    fn access(&mut self, a: raw::Access) -> Option<Access> {
        let p = FieldPath::root("access");
        if a.allow.is_empty() {
            // Leaving `allow` out means everyone; an empty list written out says nothing clear
            // (nobody? everyone?), so it is refused rather than guessed.
            self.error(
                &p.key("allow"),
                "empty: write `allow = [\"*\"]` to allow every address, list the addresses or \
                 CIDRs to allow, or leave `allow` out (everyone)",
            );
            return None;
        }
        let allow = self.ip_rules(&p.key("allow"), &a.allow, true);
        let deny = self.ip_rules(&p.key("deny"), &a.deny, true);
        Some(Access {
            allow: allow?,
            deny: deny?,
            max_token_failures: a.max_token_failures,
        })
    }

    fn pool(&mut self, r: raw::Pool) -> Option<Pool> {
        let p = FieldPath::root("pool");
        let strategy = match r.strategy.as_str() {
            "round_robin" => Some(Strategy::RoundRobin),
            "least_used" => Some(Strategy::LeastUsed),
            other => {
                self.error(
                    &p.key("strategy"),
                    format!("unknown strategy `{other}`, expected `round_robin` or `least_used`"),
                );
                None
            }
        };
        let failure_threshold = self.at_least_one(&p.key("failure_threshold"), r.failure_threshold);
        let cooldown = self.duration(&p.key("cooldown"), &r.cooldown, true);
        let max_attempts = self.at_least_one(&p.key("max_attempts"), r.max_attempts);
        let max_quota_hops = self.at_least_one(&p.key("max_quota_hops"), r.max_quota_hops);
        let request_deadline = self.duration(&p.key("request_deadline"), &r.request_deadline, true);
        // Zero turns grouping off; beyond a file's lifetime it would mean nothing.
        let upload_group = match self.duration(&p.key("upload_group"), &r.upload_group, false) {
            Some(d) if d > crate::affinity::FILE_TTL => {
                self.error(
                    &p.key("upload_group"),
                    "must be at most 48h (a file lives 48 hours); \"0s\" turns grouping off",
                );
                None
            }
            d => d,
        };

        let mut ok = true;
        let mut seen: HashMap<String, At> = HashMap::new();
        let mut keys = Vec::new();
        let written = r.keys.len();
        for (i, entry) in r.keys.into_iter().enumerate() {
            let ep = p.key("keys").index(i);
            let spec = match entry {
                raw::KeyEntry::Plain(k) => self.key(&At::Cfg(ep), k, &mut seen).map(KeySpec::plain),
                raw::KeyEntry::Table(t) => {
                    let key = self.key(&At::Cfg(ep.key("key")), t.key, &mut seen);
                    let name = self.non_empty(&ep.key("name"), t.name);
                    let project = self.non_empty(&ep.key("project"), t.project);
                    let models = self.globs(&ep.key("models"), t.models);
                    let daily_limit = match t.daily_limit {
                        Some(n) if n < 1 => {
                            self.error(
                                &ep.key("daily_limit"),
                                "must be at least 1 (leave it out for no limit)",
                            );
                            None
                        }
                        n => Some(n.map(|n| n.unsigned_abs())),
                    };
                    (|| {
                        Some(KeySpec {
                            key: key?,
                            name: name?,
                            project: project?,
                            models: models?,
                            daily_limit: daily_limit?,
                        })
                    })()
                }
            };
            match spec {
                Some(s) => keys.push(s),
                None => ok = false,
            }
        }

        let Lists {
            entries,
            files,
            ok: read_ok,
        } = self.read_lists(&p.key("key_files"), &r.key_files, "key");
        self.key_files = files;
        ok &= read_ok;
        let read = entries.len();
        for e in entries {
            match self.key(&e.at, e.value, &mut seen) {
                Some(k) => keys.push(KeySpec::plain(k)),
                None => ok = false,
            }
        }

        // An unreadable key file already explains an empty pool; saying it twice is noise.
        if read_ok && written == 0 && read == 0 {
            let from_files = if r.key_files.is_empty() {
                String::new()
            } else {
                format!(" and none in {}", r.key_files.join(", "))
            };
            self.error(
                &p.key("keys"),
                format!("the key pool is empty: no keys in `pool.keys`{from_files}"),
            );
            ok = false;
        }

        Some(Pool {
            strategy: strategy?,
            keys: ok.then_some(keys)?,
            failure_threshold: failure_threshold?,
            cooldown: cooldown?,
            max_attempts: max_attempts?,
            retry: RetryPolicy {
                max_quota_hops: max_quota_hops?,
                retry_after_send: r.retry_after_send,
                request_deadline: request_deadline?,
            },
            upload_group: upload_group?,
        })
    }

    fn key(&mut self, at: &At, raw: String, seen: &mut HashMap<String, At>) -> Option<ApiKey> {
        let key = ApiKey::new(raw.as_str());
        let masked = key.masked();
        if raw.is_empty() {
            self.report(at, "empty key");
            return None;
        }
        if raw.chars().any(|c| c.is_whitespace() || c.is_control()) {
            self.report(
                at,
                format!("key {masked} contains whitespace (comments go on their own line)"),
            );
            return None;
        }
        if let Some(first) = seen.get(&raw) {
            let first = first.describe();
            self.report(at, format!("duplicate key {masked} (first at {first})"));
            return None;
        }
        if !key.looks_valid() {
            self.warn(
                at,
                format!("key {masked} is in neither Google format (`AIza…` or `AQ.…`)"),
            );
        }
        seen.insert(raw, at.clone());
        Some(key)
    }

    fn models(&mut self, m: raw::Models) -> Option<Models> {
        let p = FieldPath::root("models");
        let list = match m.list.as_str() {
            "upstream" => {
                if !m.static_.is_empty() {
                    self.warn(
                        &At::Cfg(p.key("static")),
                        "ignored: `models.list` is \"upstream\"",
                    );
                }
                Some(ModelList::Upstream)
            }
            "static" => {
                let mut ok = true;
                for (i, name) in m.static_.iter().enumerate() {
                    if name.trim().is_empty() {
                        self.error(&p.key("static").index(i), "empty model name");
                        ok = false;
                    }
                }
                if m.static_.is_empty() && m.aliases.is_empty() {
                    self.warn(
                        &At::Cfg(p.key("static")),
                        "the model list is empty: `models.static` and `models.aliases` are both empty",
                    );
                }
                ok.then(|| ModelList::Static(m.static_.clone()))
            }
            other => {
                self.error(
                    &p.key("list"),
                    format!("unknown model list `{other}`, expected `upstream` or `static`"),
                );
                None
            }
        };
        let refresh = self.duration(&p.key("refresh"), &m.refresh, true);
        let aliases = self.aliases(&p.key("aliases"), m.aliases);
        Some(Models {
            list: list?,
            refresh: refresh?,
            aliases: aliases?,
        })
    }

    fn aliases(
        &mut self,
        p: &FieldPath,
        raw: BTreeMap<String, raw::AliasEntry>,
    ) -> Option<HashMap<String, Alias>> {
        let mut ok = true;
        // `None` marks an alias that is itself broken (already reported): aliases pointing at
        // it fail quietly instead of treating its name as a real model.
        let mut direct: BTreeMap<String, Option<Alias>> = BTreeMap::new();
        for (name, entry) in raw {
            let ap = p.name(&name);
            if name.trim().is_empty() {
                self.error(&ap, "empty alias name");
                ok = false;
            }
            // Glob keys (issue #17): only `*` is special; the rest must be model-name characters.
            if super::is_glob(&name) && !glob_key_ok(&name) {
                self.error(
                    &ap,
                    "a glob alias may hold only letters, digits, `-`, `_`, `.`, `:`, `/`, `@` and `*`",
                );
                ok = false;
            }
            let parsed = match entry {
                raw::AliasEntry::Plain(target) => self.model_name(&ap, &target).then(|| Alias {
                    models: vec![target],
                    reasoning_effort: None,
                }),
                raw::AliasEntry::Table(t) => self.alias_table(&ap, t),
            };
            ok &= parsed.is_some();
            direct.insert(name, parsed);
        }

        let mut marks: HashMap<String, Mark> = HashMap::new();
        let mut loops = Vec::new();
        for name in direct.keys() {
            resolve(name, &direct, &mut marks, &mut Vec::new(), &mut loops);
        }
        for cycle in loops {
            let message = if cycle.len() == 2 {
                "alias points to itself".to_string()
            } else {
                format!("alias loop: {}", cycle.join(" -> "))
            };
            self.error(&p.name(&cycle[0]), message);
            ok = false;
        }

        let mut aliases = HashMap::new();
        for (name, mark) in marks {
            match mark {
                Mark::Done(Some(alias)) => {
                    aliases.insert(name, alias);
                }
                _ => ok = false,
            }
        }
        ok.then_some(aliases)
    }

    fn alias_table(&mut self, ap: &FieldPath, t: raw::AliasTable) -> Option<Alias> {
        let targets = match (t.model, t.models) {
            (Some(m), None) => self.model_name(&ap.key("model"), &m).then(|| vec![m]),
            (None, Some(ms)) if ms.is_empty() => {
                self.error(&ap.key("models"), "empty fallback chain");
                None
            }
            (None, Some(ms)) => {
                let mut ok = true;
                for (i, m) in ms.iter().enumerate() {
                    ok &= self.model_name(&ap.key("models").index(i), m);
                }
                ok.then_some(ms)
            }
            (Some(_), Some(_)) => {
                self.error(ap, "set `model` or `models`, not both");
                None
            }
            (None, None) => {
                self.error(ap, "missing `model` (or `models` for a fallback chain)");
                None
            }
        };
        let effort = match t.reasoning_effort {
            Some(e) if e.is_empty() => {
                self.error(&ap.key("reasoning_effort"), "empty reasoning_effort");
                return None;
            }
            Some(e) => {
                if !REASONING_EFFORTS.contains(&e.as_str()) {
                    self.warn(
                        &At::Cfg(ap.key("reasoning_effort")),
                        format!(
                            "unknown reasoning_effort `{e}` (known: {})",
                            REASONING_EFFORTS.join(", ")
                        ),
                    );
                }
                Some(e)
            }
            None => None,
        };
        Some(Alias {
            models: targets?,
            reasoning_effort: effort,
        })
    }

    fn model_name(&mut self, path: &FieldPath, name: &str) -> bool {
        if name.trim().is_empty() {
            self.error(path, "empty model name");
            return false;
        }
        if super::is_glob(name) {
            self.error(
                path,
                "an alias target is a model or alias name, not a glob (`*` belongs in the key)",
            );
            return false;
        }
        true
    }

    fn logging(&mut self, l: raw::Logging) -> Option<Logging> {
        let p = FieldPath::root("logging");
        let level = if l.level.trim().is_empty() {
            self.error(&p.key("level"), "empty filter: use e.g. \"info\"");
            None
        } else {
            match tracing_subscriber::EnvFilter::try_new(&l.level) {
                Ok(_) => Some(l.level.clone()),
                Err(e) => {
                    self.error(
                        &p.key("level"),
                        format!(
                            "not a tracing filter (e.g. \"info\", \"gemini_rotator=debug\"): {e}"
                        ),
                    );
                    None
                }
            }
        };
        let format = match l.format.as_str() {
            "text" => Some(LogFormat::Text),
            "json" => Some(LogFormat::Json),
            other => {
                self.error(
                    &p.key("format"),
                    format!("unknown log format `{other}`, expected `text` or `json`"),
                );
                None
            }
        };
        let directory = (!l.directory.is_empty()).then(|| self.abs_dir.join(&l.directory));
        let max_files = self.at_least_one(&p.key("max_files"), l.max_files);
        Some(Logging {
            level: level?,
            format: format?,
            directory,
            max_files: max_files? as usize,
        })
    }

    fn state(&mut self, s: raw::State) -> Option<State> {
        let p = FieldPath::root("state");
        let store = match s.store.as_str() {
            "memory" => Store::Memory,
            "file" => {
                if s.path.trim().is_empty() {
                    self.error(
                        &p.key("path"),
                        "empty path: use e.g. \"gemini-rotator.state\"",
                    );
                    return None;
                }
                Store::File {
                    path: self.abs_dir.join(&s.path),
                }
            }
            "redis" => Store::Redis(self.redis(&p, &s)?),
            other => {
                let other = self.echo(other);
                self.error(
                    &p.key("store"),
                    format!("unknown store `{other}`, expected `memory`, `file` or `redis`"),
                );
                return None;
            }
        };
        Some(State { store })
    }

    /// `store = "redis"`: the URL (inline or from `url_file`, exactly one), the prefix and
    /// the per-call timeout.
    fn redis(&mut self, p: &FieldPath, s: &raw::State) -> Option<RedisStore> {
        let timeout = self.duration(&p.key("timeout"), &s.timeout, true);
        let prefix = if s.prefix.is_empty()
            || s.prefix.len() > 64
            || s.prefix.contains(char::is_whitespace)
        {
            self.error(
                &p.key("prefix"),
                "the prefix must be 1 to 64 characters without spaces (default \"gemini-rotator:\")",
            );
            None
        } else {
            Some(s.prefix.clone())
        };
        let (raw, field) = match (s.url.trim(), s.url_file.trim()) {
            ("", "") => {
                self.error(
                    &p.key("store"),
                    "store = \"redis\" needs `url` (redis://host:6379/0) or `url_file`",
                );
                return None;
            }
            (url, "") => (url.to_string(), p.key("url")),
            ("", file) => {
                let given = self.given_dir.join(file);
                let abs = self.abs_dir.join(file);
                let field = p.key("url_file");
                let bytes = match std::fs::read(&abs) {
                    Ok(b) => b,
                    Err(e) => {
                        self.problems.push(Problem {
                            file: given,
                            line: 0,
                            col: 0,
                            field: field.to_string(),
                            message: format!("cannot read the Redis URL file: {e}"),
                        });
                        return None;
                    }
                };
                let url = String::from_utf8_lossy(&bytes).trim().to_string();
                self.world_readable(&given, &abs, &field.to_string(), "a Redis URL");
                self.url_files.push((abs, bytes));
                (url, field)
            }
            _ => {
                self.error(&p.key("url_file"), "set `url` or `url_file`, not both");
                return None;
            }
        };
        let url = RedisUrl::new(raw.as_str());
        let parsed = reqwest::Url::parse(&raw).ok().filter(|u| {
            matches!(u.scheme(), "redis" | "rediss") && u.host_str().is_some_and(|h| !h.is_empty())
        });
        let Some(parsed) = parsed else {
            self.error(
                &field,
                format!(
                    "`{}` is not a Redis URL: expected redis://[user:password@]host[:port][/db] or rediss://",
                    self.echo(&url.masked())
                ),
            );
            return None;
        };
        let db_ok = matches!(parsed.path().trim_start_matches('/'), "")
            || parsed.path().trim_start_matches('/').parse::<u32>().is_ok();
        if !db_ok {
            self.error(
                &field,
                "the URL's path must be a database number (redis://host:6379/0)",
            );
            return None;
        }
        if parsed.password().is_some() && !s.url.trim().is_empty() {
            self.inline_password = true;
        }
        Some(RedisStore {
            url,
            prefix: prefix?,
            timeout: timeout?,
        })
    }

    // ---- values ------------------------------------------------------------------------------

    fn duration(&mut self, path: &FieldPath, s: &str, positive: bool) -> Option<Duration> {
        match humantime::parse_duration(s) {
            Ok(d) if positive && d.is_zero() => {
                self.error(path, "must be greater than zero");
                None
            }
            Ok(d) => Some(d),
            Err(e) => {
                self.error(
                    path,
                    format!("invalid duration {s:?} ({e}): write e.g. \"250ms\", \"60s\", \"10m\""),
                );
                None
            }
        }
    }

    fn size(&mut self, path: &FieldPath, s: &str) -> Option<u64> {
        match s.trim().parse::<bytesize::ByteSize>() {
            Ok(b) if b.as_u64() == 0 => {
                self.error(path, "must be greater than zero");
                None
            }
            Ok(b) => Some(b.as_u64()),
            Err(_) => {
                self.error(
                    path,
                    format!("invalid size {s:?}: write e.g. \"32MiB\", \"512KiB\", \"1GB\""),
                );
                None
            }
        }
    }

    fn at_least_one(&mut self, path: &FieldPath, n: i64) -> Option<u32> {
        if n < 1 {
            self.error(path, format!("must be at least 1, got {n}"));
            return None;
        }
        let n = u32::try_from(n).ok();
        if n.is_none() {
            self.error(path, format!("must be at most {}", u32::MAX));
        }
        n
    }

    /// `Some(None)` for an absent optional string; an empty one is an error, since leaving the
    /// field out says the same thing without ambiguity.
    fn non_empty(&mut self, path: &FieldPath, s: Option<String>) -> Option<Option<String>> {
        match s {
            Some(s) if s.trim().is_empty() => {
                self.error(path, "must not be empty (leave it out instead)");
                None
            }
            s => Some(s),
        }
    }

    fn globs(&mut self, path: &FieldPath, list: Option<Vec<String>>) -> Option<Option<ModelGlobs>> {
        let Some(list) = list else {
            return Some(None);
        };
        if list.is_empty() {
            self.error(
                path,
                "empty list would allow no model: leave `models` out to allow every model",
            );
            return None;
        }
        let mut ok = true;
        let mut patterns = Vec::new();
        for (i, g) in list.iter().enumerate() {
            match glob::Pattern::new(g) {
                Ok(p) => patterns.push(p),
                Err(e) => {
                    self.error(&path.index(i), format!("bad glob `{g}`: {}", e.msg));
                    ok = false;
                }
            }
        }
        ok.then_some(Some(ModelGlobs(patterns)))
    }

    fn listen(&mut self, path: &FieldPath, s: &str) -> Option<String> {
        let valid = s.rsplit_once(':').is_some_and(|(host, port)| {
            let host_ok = match host.strip_prefix('[') {
                Some(v6) => v6
                    .strip_suffix(']')
                    .is_some_and(|a| a.parse::<std::net::Ipv6Addr>().is_ok()),
                None => {
                    !host.is_empty()
                        && host
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_')
                }
            };
            host_ok && port.parse::<u16>().is_ok()
        });
        if valid {
            Some(s.to_string())
        } else {
            self.error(
                path,
                format!("{s:?} is not host:port (e.g. \"127.0.0.1:7860\", \"[::]:7860\")"),
            );
            None
        }
    }

    fn ip_rules(&mut self, path: &FieldPath, list: &[String], any_ok: bool) -> Option<Vec<IpRule>> {
        let mut ok = true;
        let mut rules = Vec::new();
        for (i, s) in list.iter().enumerate() {
            match ip_rule(s, any_ok) {
                Ok(r) => rules.push(r),
                Err(message) => {
                    self.error(&path.index(i), message);
                    ok = false;
                }
            }
        }
        ok.then_some(rules)
    }

    fn base_url(&mut self, path: &FieldPath, s: &str) -> Option<String> {
        let problem = match reqwest::Url::parse(s) {
            Err(e) => Some(format!("not a URL ({e})")),
            Ok(u) if !matches!(u.scheme(), "http" | "https") => {
                Some("must be an http:// or https:// URL".to_string())
            }
            Ok(u) if u.host().is_none() => Some("the URL has no host".to_string()),
            Ok(u) if u.query().is_some() || u.fragment().is_some() => {
                Some("the URL must have no query or fragment".to_string())
            }
            Ok(u) if !u.username().is_empty() || u.password().is_some() => {
                Some("the URL must carry no credentials".to_string())
            }
            Ok(_) => None,
        };
        match problem {
            None => Some(s.trim_end_matches('/').to_string()),
            Some(p) => {
                self.error(
                    path,
                    format!("{p}, e.g. \"https://generativelanguage.googleapis.com\""),
                );
                None
            }
        }
    }

    fn proxy(&mut self, path: &FieldPath, s: &str) -> Option<Option<String>> {
        if s.is_empty() {
            return Some(None);
        }
        // The URL is never echoed: it may hold the proxy's password.
        let ok = reqwest::Url::parse(s).is_ok_and(|u| {
            matches!(u.scheme(), "http" | "https" | "socks5" | "socks5h") && u.host().is_some()
        });
        if ok {
            Some(Some(s.to_string()))
        } else {
            self.error(
                path,
                "must be a URL with scheme http, https, socks5 or socks5h and a host \
                 (e.g. \"http://proxy:3128\"), or \"\" for none",
            );
            None
        }
    }

    fn safety(&mut self, path: &FieldPath, s: &str) -> Option<Option<String>> {
        if s == "default" {
            return Some(None);
        }
        match SAFETY_THRESHOLDS.iter().find(|t| t.eq_ignore_ascii_case(s)) {
            Some(t) => Some(Some(t.to_string())),
            None => {
                self.error(
                    path,
                    format!(
                        "unknown safety threshold `{s}`, expected `default`, {}",
                        SAFETY_THRESHOLDS.map(|t| format!("`{t}`")).join(", ")
                    ),
                );
                None
            }
        }
    }

    // ---- named files -------------------------------------------------------------------------

    /// Reads every file of a `key_files` / `token_files` list. Returns the non-comment lines,
    /// the files' absolute paths and bytes, and whether every file could be read.
    fn read_lists(&mut self, list: &FieldPath, names: &[String], what: &str) -> Lists {
        let mut ok = true;
        let mut entries = Vec::new();
        let mut files: Vec<(PathBuf, Vec<u8>)> = Vec::new();
        let mut seen: HashSet<PathBuf> = HashSet::new();
        for (i, name) in names.iter().enumerate() {
            let field = list.index(i);
            if name.trim().is_empty() {
                self.error(&field, "empty file name");
                ok = false;
                continue;
            }
            let given = self.given_dir.join(name);
            let abs = self.abs_dir.join(name);
            if !seen.insert(abs.clone()) {
                self.error(&field, format!("{name} is listed twice"));
                ok = false;
                continue;
            }
            let unreadable = |message: String| Problem {
                file: given.clone(),
                line: 0,
                col: 0,
                field: field.to_string(),
                message,
            };
            let bytes = match std::fs::read(&abs) {
                Ok(b) => b,
                Err(e) => {
                    self.problems
                        .push(unreadable(format!("cannot read {what} file: {e}")));
                    ok = false;
                    continue;
                }
            };
            let Ok(text) = std::str::from_utf8(&bytes) else {
                self.problems
                    .push(unreadable(format!("the {what} file is not UTF-8 text")));
                ok = false;
                continue;
            };
            let text = text.strip_prefix('\u{feff}').unwrap_or(text);
            self.world_readable(&given, &abs, &field.to_string(), &format!("{what}s"));
            for (n, line) in text.lines().enumerate() {
                let value = line.trim();
                if value.is_empty() || value.starts_with('#') {
                    continue;
                }
                let indent = line.len() - line.trim_start().len();
                entries.push(Entry {
                    at: At::Line {
                        file: given.clone(),
                        shown: name.clone(),
                        line: n + 1,
                        col: line[..indent].chars().count() + 1,
                        field: field.clone(),
                    },
                    value: value.to_string(),
                });
            }
            files.push((abs, bytes));
        }
        Lists { entries, files, ok }
    }
}

impl Cx<'_, '_> {
    /// Warns (naming the file as given, never its content) when every user of this machine may
    /// read the file at `real` that holds `what`.
    fn world_readable(&mut self, shown: &Path, real: &Path, field: &str, what: &str) {
        if let Some(mode) = readable_by_all(real) {
            self.warnings.push(Problem {
                file: shown.to_path_buf(),
                line: 0,
                col: 0,
                field: field.to_string(),
                message: format!(
                    "holds {what} and every user of this machine may read it (mode {mode:04o}): \
                     `chmod o-r` it"
                ),
            });
        }
    }
}

/// The file's mode when every user of the machine may read it: the file is readable by
/// "other" (`mode & 0o004`) and every folder above it lets "other" through (`o+x`), so a file
/// in a private folder is not reported.
#[cfg(unix)]
fn readable_by_all(file: &Path) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt;
    let real = std::fs::canonicalize(file).ok()?;
    let mode = std::fs::metadata(&real).ok()?.permissions().mode() & 0o7777;
    if mode & 0o004 == 0 {
        return None;
    }
    let reachable = real
        .ancestors()
        .skip(1)
        .all(|dir| std::fs::metadata(dir).is_ok_and(|m| m.permissions().mode() & 0o001 != 0));
    reachable.then_some(mode)
}

#[cfg(not(unix))]
fn readable_by_all(_file: &Path) -> Option<u32> {
    None
}

impl KeySpec {
    fn plain(key: ApiKey) -> Self {
        KeySpec {
            key,
            name: None,
            project: None,
            models: None,
            daily_limit: None,
        }
    }
}

/// A glob alias key's characters: `*` and what model names are made of.
fn glob_key_ok(key: &str) -> bool {
    key.bytes().all(|b| {
        b.is_ascii_alphanumeric() || matches!(b, b'*' | b'-' | b'_' | b'.' | b':' | b'/' | b'@')
    })
}

enum Mark {
    Visiting,
    Done(Option<Alias>),
}

/// Resolves `name` through other aliases into real model names, depth first. A loop is
/// recorded once, as the names along it, and every alias on or into it resolves to `None`.
fn resolve(
    name: &str,
    direct: &BTreeMap<String, Option<Alias>>,
    marks: &mut HashMap<String, Mark>,
    stack: &mut Vec<String>,
    loops: &mut Vec<Vec<String>>,
) -> Option<Alias> {
    match marks.get(name) {
        Some(Mark::Done(done)) => return done.clone(),
        Some(Mark::Visiting) => {
            let start = stack.iter().position(|s| s == name).unwrap_or(0);
            let mut cycle = stack[start..].to_vec();
            cycle.push(name.to_string());
            loops.push(cycle);
            return None;
        }
        None => {}
    }
    let Some(Some(Alias {
        models: targets,
        reasoning_effort: effort,
    })) = direct.get(name)
    else {
        marks.insert(name.to_string(), Mark::Done(None));
        return None;
    };
    marks.insert(name.to_string(), Mark::Visiting);
    stack.push(name.to_string());
    let mut models: Vec<String> = Vec::new();
    let mut inherited = None;
    let mut ok = true;
    for t in targets {
        if direct.contains_key(t) {
            match resolve(t, direct, marks, stack, loops) {
                Some(a) => {
                    models.extend(a.models);
                    inherited = a.reasoning_effort;
                }
                None => ok = false,
            }
        } else {
            models.push(t.clone());
        }
    }
    stack.pop();
    let alias = ok.then(|| {
        let mut seen = HashSet::new();
        models.retain(|m| seen.insert(m.clone()));
        // An alias of one other alias inherits its effort; a chain of several has no single
        // effort to inherit.
        let reasoning_effort = effort
            .clone()
            .or(if targets.len() == 1 { inherited } else { None });
        Alias {
            models,
            reasoning_effort,
        }
    });
    marks.insert(name.to_string(), Mark::Done(alias.clone()));
    alias
}

/// `"*"`/`"all"` (when `any_ok`), a single address, or a CIDR. IPv4-mapped IPv6 forms become
/// IPv4, because that is how the access check sees a v4 client on a dual-stack socket.
fn ip_rule(s: &str, any_ok: bool) -> Result<IpRule, String> {
    let t = s.trim();
    if t == "*" || t.eq_ignore_ascii_case("all") {
        return if any_ok {
            Ok(IpRule::Any)
        } else {
            Err(format!(
                "`{t}` is not allowed here: list CIDRs (e.g. \"10.0.0.0/8\") or addresses"
            ))
        };
    }
    let (addr, prefix) = match t.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (t, None),
    };
    let Ok(addr) = addr.parse::<IpAddr>() else {
        return Err(format!("`{t}` is not an IP address or CIDR"));
    };
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let prefix = match prefix {
        None => max,
        Some(p) => match p.parse::<u8>() {
            Ok(n) if n <= max => n,
            _ => {
                return Err(format!(
                    "`{t}` is not a valid CIDR: the prefix length must be 0 to {max}"
                ))
            }
        },
    };
    let net = IpNet::new(addr, prefix)
        .map_err(|_| format!("`{t}` is not a valid CIDR"))?
        .trunc();
    Ok(IpRule::Net(normalize(net)))
}

fn normalize(net: IpNet) -> IpNet {
    match net {
        IpNet::V6(v6) if v6.prefix_len() >= 96 => match v6.addr().to_ipv4_mapped() {
            Some(v4) => ipnet::Ipv4Net::new(v4, v6.prefix_len() - 96)
                .map(IpNet::V4)
                .unwrap_or(net),
            None => net,
        },
        _ => net,
    }
}

/// An http(s) URL with a host and nothing a browser or client would not send as its own
/// address: no query, fragment or credentials (`server.public_url`, `server.cors_origins`).
fn plain_web_address(u: &reqwest::Url) -> bool {
    matches!(u.scheme(), "http" | "https")
        && u.host_str().is_some()
        && u.query().is_none()
        && u.fragment().is_none()
        && u.username().is_empty()
        && u.password().is_none()
}
